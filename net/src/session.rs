//! WebSocket sessions on a shard, the driver of [`tickwire_fanout::engine::Connection`]: a reader task
//! that feeds the engine what the socket read and carries out its requests on the shard, and a writer task
//! that flushes the connection's outbound queue with one write per wakeup (corking). The rules (requests,
//! replies, rate limits, heartbeats, slow consumers, the close handshake) are the engine's.

use std::cell::{Cell, RefCell};
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tickwire_core::protocol::{ErrorCode, Subscribe};
use tickwire_core::time::Micros;
use tickwire_core::ws::close;
use tickwire_core::Topic;
use tickwire_fanout::engine::{Connection, Queued, Request};
use tickwire_fanout::index::Sink;
use tickwire_fanout::outbound::{KEEP, NO_STAMP};
use tickwire_persistence::ConnectionRecord;

pub use tickwire_fanout::engine::Kind;

use crate::auth::Identity;
use crate::shard::{Shard, Shared};
use crate::util::{now_micros, LocalNotify};

/// Bytes read from a client at a time.
const READ_CHUNK: usize = 512;
/// Largest write the writer hands the socket at once.
const MAX_WRITE: usize = 256 * 1024;
/// How long a closed connection waits for the peer's side of the close.
const LINGER: Duration = Duration::from_secs(2);

/// A connection on its shard: the engine's [`Connection`] and what the driver needs to serve it, shared by
/// its tasks and the subscription index.
#[derive(Debug)]
pub struct Conn {
    /// Shard-local key.
    pub key: u64,
    /// The client's own id (`?client_id=`), or one the server made.
    pub client_id: String,
    /// Whether the client named itself (`?client_id=`): only then are its subscriptions kept for restore.
    pub named: bool,
    pub identity: Option<Identity>,
    engine: RefCell<Connection>,
    wake: LocalNotify,
    closing: LocalNotify,
    /// The plain TCP socket, for sending a frame at once when nothing waits ([`Conn::send_update`]);
    /// `None` for streams that must go through their writer (TLS), and once the session ends.
    fd: Cell<Option<RawFd>>,
    shared: Arc<Shared>,
    shard: usize,
}

impl Conn {
    /// Runs `f` on the engine, then wakes the writer if frames wait and the reader if the connection is
    /// closing.
    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> T) -> T {
        let mut engine = self.engine.borrow_mut();
        let out = f(&mut engine);
        let (closing, queued) = (engine.is_closing(), engine.queued().1);
        drop(engine);
        if queued > 0 || closing {
            self.wake.notify();
        }
        if closing {
            self.closing.notify();
        }
        out
    }

    /// Queues a frame that is never conflated (replies, snapshots, pings).
    pub fn send(&self, frame: Bytes) {
        self.send_update(frame, NO_STAMP, KEEP);
    }

    /// Queues a frame of a topic that may be conflated under key `conflate` when the client falls behind,
    /// sequenced at `ingested` (so that its flush can be timed).
    ///
    /// When nothing waits to be written (the queue is empty and the writer idle, which is nearly always the
    /// case for a client that keeps up), the frame is sent at once with one non-blocking `send`: no queueing,
    /// no writer wakeup. Whatever the socket does not take is queued for the writer, in order.
    pub fn send_update(&self, frame: Bytes, ingested: Micros, conflate: u64) {
        let mut engine = self.engine.borrow_mut();
        if let Some(fd) = self.fd.get().filter(|_| engine.can_send_now()) {
            match send_now(fd, &frame) {
                Ok(n) => {
                    let wake = engine.sent_at_once(&frame, n, ingested);
                    drop(engine);
                    if n == frame.len() && ingested != NO_STAMP {
                        let stats = &self.shared.stats[self.shard];
                        stats.flush_latency.record(now_micros().saturating_sub(ingested).max(0) as u64);
                    }
                    if wake {
                        self.wake.notify();
                    }
                    return;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    // The connection is gone; the reader will see it too.
                    drop(engine);
                    return self.request_close(close::NORMAL, "");
                }
            }
        }
        // The time the client fell behind, should this push conflate: an update's ingest time is close
        // enough, and spares a clock read per delivery.
        let now = if ingested != NO_STAMP { ingested } else { now_micros() };
        match engine.push(now, frame, ingested, conflate) {
            Queued::Behind => {}
            Queued::Wake => {
                drop(engine);
                self.wake.notify();
            }
            Queued::Dropped => {
                drop(engine);
                self.wake.notify();
                self.closing.notify();
            }
        }
    }

    /// Shutdown: a `system` notice with a reconnect hint, then close 1001 after what is queued.
    pub fn shutdown(&self, retry_after_ms: u64) {
        self.with(|c| c.shutdown(now_micros(), retry_after_ms));
    }

    /// Bytes and frames waiting in the outbound queue.
    pub fn queued(&self) -> (usize, usize) {
        self.engine.borrow().queued()
    }

    /// Whether the connection subscribes `topic`.
    pub fn subscribes(&self, topic: &Topic) -> bool {
        self.engine.borrow().subscribes(topic)
    }

    /// Asks the writer to flush what is queued, send a close frame and stop. The first request wins.
    pub fn request_close(&self, code: u16, reason: &'static str) {
        self.with(|c| c.request_close(code, reason));
    }

    /// The heartbeat's visit (see [`Connection::heartbeat`]).
    pub fn heartbeat(&self, now: Micros, ping: &Bytes) {
        self.with(|c| c.heartbeat(now, ping));
    }

    /// Closes the connection if it stayed behind past the grace (see [`Connection::check_slow`]).
    pub fn check_slow(&self, now: Micros) {
        self.with(|c| c.check_slow(now));
    }

    /// Every subscription, forgotten (the connection is ending).
    pub fn take_subscriptions(&self) -> Vec<Topic> {
        self.engine.borrow_mut().take_subscriptions()
    }

    pub(crate) fn error(&self, id: Option<&str>, code: ErrorCode, message: &str) {
        self.with(|c| c.error(now_micros(), id, code, message));
    }
}

/// The subscription index's handle on a connection.
#[derive(Debug, Clone)]
pub struct ConnRef(pub Rc<Conn>);

impl Sink for ConnRef {
    fn key(&self) -> u64 {
        self.0.key
    }

    fn push(&self, frame: &Bytes) {
        self.0.send(frame.clone());
    }

    fn push_stamped(&self, frame: &Bytes, ingested: Micros) {
        self.0.send_update(frame.clone(), ingested, KEEP);
    }

    fn push_update(&self, frame: &Bytes, ingested: Micros, conflate: u64) {
        self.0.send_update(frame.clone(), ingested, conflate);
    }
}

/// Runs an upgraded connection to its end. `buffered` holds bytes read past the HTTP head; `slot` is the
/// connection's place under the connection limits, freed just before the session counts as ended.
#[allow(clippy::too_many_arguments)]
pub async fn run<S>(
    shard: Rc<Shard>,
    slot: crate::limits::ConnSlot,
    stream: S,
    fd: Option<RawFd>,
    buffered: BytesMut,
    kind: Kind,
    identity: Option<Identity>,
    client_id: Option<String>,
    ip: String,
) where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let key = shard.next_id();
    let named = client_id.is_some();
    let client_id = client_id.unwrap_or_else(|| format!("cl-{}-{key}", shard.id));
    let now = now_micros();
    let user = identity.as_ref().map(|i| i.user.clone());
    let stats = shard.stats().engine.clone();
    let engine = Connection::new(shard.id, key, kind, user.clone(), shard.conn_settings.clone(), stats, now);
    let conn = Rc::new(Conn {
        key,
        client_id,
        named,
        identity,
        engine: RefCell::new(engine),
        wake: LocalNotify::default(),
        closing: LocalNotify::default(),
        fd: Cell::new(fd),
        shared: shard.shared.clone(),
        shard: shard.id,
    });
    shard.add_conn(conn.clone());
    shard.shared.store.connection_opened(ConnectionRecord {
        id: (shard.id as u64) << 48 | key,
        user: user.map(|u| u.to_string()),
        client_id: conn.client_id.clone(),
        ip,
        shard: shard.id,
        connected_at: now,
    });
    if kind == Kind::Subscriber {
        conn.with(|c| c.welcome(now, &conn.client_id));
    }

    let (reader, writer) = futures_lite::io::split(stream);
    let mut writer_task = glommio::spawn_local(write_loop(shard.clone(), conn.clone(), writer)).detach();
    let mut reader = reader;
    read_loop(&shard, &conn, &mut reader, buffered).await;
    conn.request_close(close::NORMAL, "");
    // Its subscriptions go at once; only the socket waits for the writer to flush and send the close
    // frame, and a peer that does not read cannot hold even that for long.
    shard.remove_conn(&conn);
    let sent = futures_lite::future::or(
        async {
            (&mut writer_task).await;
            true
        },
        async {
            glommio::timer::sleep(Duration::from_millis(shard.shared.config.close_flush_ms)).await;
            false
        },
    )
    .await;
    if !sent {
        writer_task.cancel();
    } else {
        // Lingering close: our close frame is out and our side shut; read (and discard) what the peer still
        // sends, its close reply included, until it closes too. Closing a socket with unread input would
        // reset the connection and could destroy what the peer has yet to read, the close frame included.
        let _ = glommio::timer::timeout(LINGER, async {
            let mut sink = [0u8; 512];
            while matches!(reader.read(&mut sink).await, Ok(n) if n > 0) {}
            Ok(())
        })
        .await;
    }
    // The socket closes when this returns: no inline send may use its descriptor from now on.
    conn.fd.set(None);
    // Its place first: once `tickwire_sessions` no longer counts it, a new connection may take the place.
    drop(slot);
    shard.session_ended();
    let engine = conn.engine.borrow();
    let (code, messages_in, queued) = (engine.close_code(), engine.messages_in(), engine.queued().1 as u64);
    shard.shared.store.connection_closed((shard.id as u64) << 48 | key, now_micros(), code, messages_in, queued);
    tracing::debug!(conn = %engine.id(), code, flushed = sent, "connection closed");
}

/// One non-blocking `send` of `data` on a connected TCP socket: the bytes the kernel took.
fn send_now(fd: RawFd, data: &[u8]) -> std::io::Result<usize> {
    // SAFETY: `fd` is the session's open socket (cleared before the session drops its stream), and
    // `data` is a live buffer of `data.len()` bytes that the kernel only reads.
    let n = unsafe { libc::send(fd, data.as_ptr().cast(), data.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Flushes the connection: one write per batch of queued frames. Per batch (not per frame) it records one
/// ingest-to-flush latency sample, that of the batch's earliest update.
async fn write_loop<W: AsyncWrite + Unpin>(shard: Rc<Shard>, conn: Rc<Conn>, mut w: W) {
    // Allocated only while several frames wait at once, and freed after, so that an idle connection
    // holds no write buffer.
    let mut buf = Vec::new();
    loop {
        conn.wake.wait().await;
        loop {
            buf.clear();
            let taken = conn.engine.borrow_mut().take_for_write(&mut buf, MAX_WRITE);
            let Some((alone, drained)) = taken else { break };
            let bytes = alone.as_ref().map_or(buf.len(), |f| f.len());
            let written = match &alone {
                Some(frame) => w.write_all(frame).await,
                None => w.write_all(&buf).await,
            };
            if written.is_err() {
                conn.request_close(close::NORMAL, "");
                return;
            }
            conn.engine.borrow_mut().written(drained.frames, bytes);
            if let Some(ingested) = drained.earliest_ingest {
                shard.stats().flush_latency.record(now_micros().saturating_sub(ingested).max(0) as u64);
            }
        }
        buf = Vec::new();
        let close = conn.engine.borrow().close_frame();
        if let Some(frame) = close {
            let _ = w.write_all(&frame).await;
            let _ = w.close().await;
            return;
        }
    }
}

async fn read_loop<R: AsyncRead + Unpin>(shard: &Rc<Shard>, conn: &Rc<Conn>, r: &mut R, mut buf: BytesMut) {
    loop {
        let go_on = conn.with(|c| c.handle_bytes(now_micros(), &mut buf));
        carry_out(shard, conn).await;
        if !go_on {
            let engine = conn.engine.borrow();
            // A close the server decided (a reason given), not the echo of the client's.
            if let Some((code, reason)) = engine.close_reason().filter(|&(_, reason)| !reason.is_empty()) {
                tracing::info!(conn = %engine.id(), code, reason, "closing the connection");
            }
            return;
        }
        // A read of a busy connection (a publisher's) completes at once, again and again: give the other
        // tasks their turn when the preempt timer says so, or they wait for this connection to go quiet.
        glommio::yield_if_needed().await;
        // Read straight into the message buffer, a little at a time: client messages are small, and an idle
        // connection should hold only a few KiB.
        let start = buf.len();
        buf.resize(start + READ_CHUNK, 0);
        let read = futures_lite::future::or(async { Some(r.read(&mut buf[start..]).await) }, async {
            conn.closing.wait().await;
            None
        });
        match read.await {
            Some(Ok(n)) if n > 0 => buf.truncate(start + n),
            _ => return,
        }
    }
}

/// Carries out, in order, what the connection's engine asks of the shard. The engine is not borrowed
/// meanwhile: a subscribe's snapshot may be pushed to the connection at once.
async fn carry_out(shard: &Rc<Shard>, conn: &Rc<Conn>) {
    loop {
        let request = conn.engine.borrow_mut().poll_request();
        match request {
            None => return,
            Some(Request::Subscribe { topics, throttle_ms, restore }) => {
                for (topic, resume) in topics {
                    crate::store::subscription_changed(shard, conn, &topic, Some(throttle_ms));
                    shard.subscribe(conn, topic, throttle_ms, resume);
                }
                if let Some(id) = restore {
                    crate::store::restore(shard, conn, id);
                }
            }
            Some(Request::Unsubscribe { topics }) => {
                for t in &topics {
                    crate::store::subscription_changed(shard, conn, t, None);
                    shard.unsubscribe(conn.key, t);
                }
            }
            Some(Request::Ack { topic, sequence }) => shard.ack(topic, sequence),
            Some(Request::Publish(events)) => {
                shard.stats().published.fetch_add(events.len() as u64, std::sync::atomic::Ordering::Relaxed);
                shard.ingest(events, false).await;
            }
        }
    }
}

/// A subscribe made by the server for the connection (a restore): as if the client had sent it.
pub(crate) async fn subscribe(shard: &Rc<Shard>, conn: &Rc<Conn>, sub: Subscribe) {
    conn.with(|c| c.subscribe(now_micros(), sub));
    carry_out(shard, conn).await;
}
