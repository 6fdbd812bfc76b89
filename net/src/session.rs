//! WebSocket sessions on a shard: a reader task that decodes client frames and acts on them, and a writer
//! task that flushes the connection's outbound queue with one write per wakeup (corking).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tickwire_core::channel::Scope;
use tickwire_core::event::parse_publish;
use tickwire_core::protocol::canonical::Canonical;
use tickwire_core::protocol::{ClientRequest, Dialect, ErrorCode, Reply, Subscribe, Unsubscribe};
use tickwire_core::time::Micros;
use tickwire_core::topic::ALL;
use tickwire_core::ws::{self, close, Message, MessageReader, Opcode};
use tickwire_core::{Channel, Topic};
use tickwire_fanout::frame::reply_frame;
use tickwire_fanout::index::Sink;
use tickwire_fanout::outbound::{Outbound, Pushed, KEEP, NO_STAMP};
use tickwire_fanout::sequencer::{reset, Resume};
use tickwire_persistence::ConnectionRecord;

use crate::auth::Identity;
use crate::shard::{Shard, Shared};
use crate::util::{now_micros, LocalNotify};

/// Bytes read from a client at a time.
const READ_CHUNK: usize = 512;
/// Largest write the writer hands the socket at once.
const MAX_WRITE: usize = 256 * 1024;
/// The close of a connection whose outbound queue passed `max_queued_bytes`.
const SLOW_CONSUMER: (u16, &str) = (close::TRY_AGAIN_LATER, "slow consumer");
/// How long a closed connection waits for the peer's side of the close.
const LINGER: Duration = Duration::from_secs(2);

/// What a WebSocket connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `/v1/stream`: subscribes and receives.
    Subscriber,
    /// `/v1/publish`: sends events.
    Publisher,
}

/// A connection's shard-local state, shared by its tasks and the subscription index.
#[derive(Debug)]
pub struct Conn {
    /// Shard-local key.
    pub key: u64,
    pub id: String,
    /// The client's own id (`?client_id=`), or one the server made.
    pub client_id: String,
    /// Whether the client named itself (`?client_id=`): only then are its subscriptions kept for restore.
    pub named: bool,
    pub identity: Option<Identity>,
    out: RefCell<Outbound>,
    wake: LocalNotify,
    closing: LocalNotify,
    close: Cell<Option<(u16, &'static str)>>,
    /// Topics subscribed, with their subscription ids.
    pub subs: RefCell<HashMap<Topic, u64>>,
    pub messages_in: Cell<u64>,
    /// Frames queued for the client.
    pub messages_out: Cell<u64>,
    /// The inbound message rate limit.
    pub rate: crate::limits::RateLimiter,
    /// When the client's last frame arrived (heartbeats).
    pub last_in: Cell<Micros>,
    /// Since when the outbound queue has been conflated and not drained (slow consumers).
    behind: Cell<Option<Micros>>,
    /// The reconnect hint of a shutdown close.
    retry_after_ms: Cell<Option<u64>>,
    /// The plain TCP socket, for sending a frame at once when nothing waits ([`Conn::send_update`]);
    /// `None` for streams that must go through their writer (TLS), and once the session ends.
    fd: Cell<Option<RawFd>>,
    /// The writer holds bytes it took from the queue and has not written yet.
    writing: Cell<bool>,
    shared: Arc<Shared>,
    shard: usize,
}

impl Conn {
    fn user(&self) -> Option<&Arc<str>> {
        self.identity.as_ref().map(|i| &i.user)
    }

    /// Queues a frame; over the byte bound the connection is closed as a slow consumer.
    pub fn send(&self, frame: Bytes) {
        self.send_stamped(frame, NO_STAMP);
    }

    /// [`Conn::send`] for an update sequenced at `ingested`, so that its flush can be timed.
    pub fn send_stamped(&self, frame: Bytes, ingested: Micros) {
        self.send_update(frame, ingested, KEEP);
    }

    /// Queues a frame of a topic that may be conflated under key `conflate` when the client falls behind.
    ///
    /// When nothing waits to be written (the queue is empty and the writer idle, which is nearly always the
    /// case for a client that keeps up), the frame is sent at once with one non-blocking `send`: no queueing,
    /// no writer wakeup. Whatever the socket does not take is queued for the writer, in order.
    pub fn send_update(&self, frame: Bytes, ingested: Micros, conflate: u64) {
        let frame = match self.fd.get() {
            Some(fd) if !self.writing.get() && self.close.get().is_none() && self.out.borrow().is_empty() => {
                match send_now(fd, &frame) {
                    Ok(n) => {
                        self.messages_out.set(self.messages_out.get() + 1);
                        let stats = &self.shared.stats[self.shard];
                        if n > 0 {
                            stats.writes.fetch_add(1, Ordering::Relaxed);
                            stats.written_bytes.fetch_add(n as u64, Ordering::Relaxed);
                        }
                        if n == frame.len() {
                            stats.written_frames.fetch_add(1, Ordering::Relaxed);
                            if ingested != NO_STAMP {
                                stats.flush_latency.record(now_micros().saturating_sub(ingested).max(0) as u64);
                            }
                            return;
                        }
                        // The rest goes first in the (empty) queue; as a frame of its own it is never
                        // conflated away, and it carries the stamp, so its flush is timed.
                        let rest = frame.slice(n..);
                        self.out.borrow_mut().push_front_partial(rest, ingested);
                        self.wake.notify();
                        return;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => frame,
                    Err(_) => {
                        // The connection is gone; the reader will see it too.
                        self.request_close(close::NORMAL, "");
                        return;
                    }
                }
            }
            _ => frame,
        };
        let pushed = self.out.borrow_mut().push_update(frame, ingested, conflate);
        match pushed {
            Pushed::Queued { was_empty } => {
                self.messages_out.set(self.messages_out.get() + 1);
                if was_empty {
                    self.wake.notify();
                }
            }
            Pushed::Conflated { dropped } => {
                self.messages_out.set(self.messages_out.get() + 1);
                let stats = &self.shared.stats[self.shard];
                stats.slow_consumer_conflations.fetch_add(1, Ordering::Relaxed);
                stats.conflated_frames.fetch_add(dropped as u64, Ordering::Relaxed);
                if self.behind.get().is_none() {
                    self.behind.set(Some(now_micros()));
                }
            }
            Pushed::Overflow => self.close_slow(),
        }
    }

    /// Since when the client has been behind (its queue conflated and not drained since), if it is.
    pub fn behind_since(&self) -> Option<Micros> {
        self.behind.get()
    }

    /// Closes the connection with 1013 "slow consumer": what is queued is dropped, the close frame follows
    /// whatever write is under way.
    pub fn close_slow(&self) {
        if self.close.get().is_none() {
            self.shared.stats[self.shard].slow_consumer_closes.fetch_add(1, Ordering::Relaxed);
            self.request_close(SLOW_CONSUMER.0, SLOW_CONSUMER.1);
        }
    }

    /// Shutdown: a `system` notice with a reconnect hint, then close 1001 after what is queued.
    pub fn shutdown(&self, retry_after_ms: u64) {
        if self.close.get().is_some() {
            return;
        }
        self.retry_after_ms.set(Some(retry_after_ms));
        self.reply(&Reply::System {
            level: "warning",
            message: "server shutting down: reconnect after retry_after_ms",
            retry_after_ms: Some(retry_after_ms),
        });
        self.request_close(close::GOING_AWAY, "server shutting down");
    }

    /// Bytes and frames waiting in the outbound queue.
    pub fn queued(&self) -> (usize, usize) {
        let out = self.out.borrow();
        (out.queued_bytes(), out.len())
    }

    /// Whether a close has been requested (the session is on its way out).
    pub fn is_closing(&self) -> bool {
        self.close.get().is_some()
    }

    /// Asks the writer to flush what is queued, send a close frame and stop. The first request wins.
    pub fn request_close(&self, code: u16, reason: &'static str) {
        if self.close.get().is_none() {
            self.close.set(Some((code, reason)));
        }
        self.wake.notify();
        self.closing.notify();
    }

    fn reply(&self, reply: &Reply<'_>) {
        self.send(reply_frame(&Canonical, reply, now_micros()));
    }

    pub(crate) fn error(&self, id: Option<&str>, code: ErrorCode, message: &str) {
        self.reply(&Reply::Error { id, code, message });
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
        self.0.send_stamped(frame.clone(), ingested);
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
    let id = format!("c-{}-{key}", shard.id);
    let named = client_id.is_some();
    let client_id = client_id.unwrap_or_else(|| format!("cl-{}-{key}", shard.id));
    let config = &shard.shared.config;
    let conn = Rc::new(Conn {
        key,
        id,
        client_id,
        named,
        identity,
        // No room reserved: frames are sent at once while the client keeps up, so most queues stay empty.
        out: RefCell::new(Outbound::new(config.max_queued_bytes, 0)),
        wake: LocalNotify::default(),
        closing: LocalNotify::default(),
        close: Cell::new(None),
        subs: RefCell::new(HashMap::new()),
        messages_in: Cell::new(0),
        messages_out: Cell::new(0),
        rate: crate::limits::RateLimiter::new(config.max_messages_per_s),
        last_in: Cell::new(now_micros()),
        behind: Cell::new(None),
        retry_after_ms: Cell::new(None),
        fd: Cell::new(fd),
        writing: Cell::new(false),
        shared: shard.shared.clone(),
        shard: shard.id,
    });
    shard.add_conn(conn.clone());
    let connected_at = now_micros();
    shard.shared.store.connection_opened(ConnectionRecord {
        id: (shard.id as u64) << 48 | key,
        user: conn.user().map(|u| u.to_string()),
        client_id: conn.client_id.clone(),
        ip,
        shard: shard.id,
        connected_at,
    });
    if kind == Kind::Subscriber {
        conn.reply(&Reply::Welcome {
            connection_id: &conn.id,
            client_id: &conn.client_id,
            user_id: conn.user().map(|u| &**u),
            epoch: &shard.shared.epoch,
            heartbeat_s: config.heartbeat_s,
        });
    }

    let (reader, writer) = futures_lite::io::split(stream);
    let mut writer_task = glommio::spawn_local(write_loop(shard.clone(), conn.clone(), writer)).detach();
    let mut reader = reader;
    read_loop(&shard, &conn, &mut reader, buffered, kind).await;
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
    let code = conn.close.get().map_or(close::NORMAL, |(c, _)| c);
    let out = conn.out.borrow().len() as u64;
    shard.shared.store.connection_closed(
        (shard.id as u64) << 48 | key,
        now_micros(),
        code,
        conn.messages_in.get(),
        out,
    );
    tracing::debug!(conn = %conn.id, code, flushed = sent, "connection closed");
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

/// Flushes the connection: one write per batch of queued frames. Per batch (not per frame) it counts the
/// write and records one ingest-to-flush latency sample, that of the batch's earliest update.
async fn write_loop<W: AsyncWrite + Unpin>(shard: Rc<Shard>, conn: Rc<Conn>, mut w: W) {
    // Allocated only while several frames wait at once, and freed after, so that an idle connection
    // holds no write buffer.
    let mut buf = Vec::new();
    loop {
        conn.wake.wait().await;
        loop {
            if conn.close.get() == Some(SLOW_CONSUMER) {
                // Behind for good: what is queued is stale; only the close frame is worth sending.
                conn.out.borrow_mut().clear();
            }
            let alone = conn.out.borrow_mut().pop_alone();
            let (frames, bytes, earliest) = match alone {
                Some((frame, stamp)) => {
                    conn.writing.set(true);
                    let written = w.write_all(&frame).await;
                    conn.writing.set(false);
                    if written.is_err() {
                        conn.request_close(close::NORMAL, "");
                        return;
                    }
                    (1, frame.len(), stamp)
                }
                None => {
                    buf.clear();
                    let drained = conn.out.borrow_mut().drain(&mut buf, MAX_WRITE);
                    if drained.frames == 0 {
                        conn.behind.set(None);
                        break;
                    }
                    conn.writing.set(true);
                    let written = w.write_all(&buf).await;
                    conn.writing.set(false);
                    if written.is_err() {
                        conn.request_close(close::NORMAL, "");
                        return;
                    }
                    (drained.frames, buf.len(), drained.earliest_ingest)
                }
            };
            let stats = shard.stats();
            if let Some(ingested) = earliest {
                stats.flush_latency.record(now_micros().saturating_sub(ingested).max(0) as u64);
            }
            stats.writes.fetch_add(1, Ordering::Relaxed);
            stats.written_frames.fetch_add(frames as u64, Ordering::Relaxed);
            stats.written_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        }
        buf = Vec::new();
        if let Some((code, reason)) = conn.close.get() {
            let frame = match conn.retry_after_ms.get() {
                Some(ms) => ws::close_frame(code, &format!("{reason}; retry_after_ms={ms}")),
                None => ws::close_frame(code, reason),
            };
            let _ = w.write_all(&frame).await;
            let _ = w.close().await;
            return;
        }
    }
}

async fn read_loop<R: AsyncRead + Unpin>(shard: &Rc<Shard>, conn: &Rc<Conn>, r: &mut R, mut buf: BytesMut, kind: Kind) {
    let mut reader = MessageReader::new(shard.shared.config.max_message_bytes);
    loop {
        loop {
            match reader.read(&mut buf) {
                Ok(Some(msg)) => {
                    if !on_message(shard, conn, msg, kind).await {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let reason = match e.close_code() {
                        close::MESSAGE_TOO_BIG => "message too big",
                        close::INVALID_PAYLOAD => "invalid UTF-8",
                        _ => "protocol error",
                    };
                    conn.request_close(e.close_code(), reason);
                    return;
                }
            }
        }
        if conn.close.get().is_some() {
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

/// Acts on one message; `false` ends the session.
async fn on_message(shard: &Rc<Shard>, conn: &Rc<Conn>, msg: Message, kind: Kind) -> bool {
    conn.messages_in.set(conn.messages_in.get() + 1);
    conn.last_in.set(now_micros());
    shard.stats().messages_in.fetch_add(1, Ordering::Relaxed);
    // Publishers (role publisher or admin) are trusted feeds: no message rate limit.
    if kind == Kind::Subscriber {
        if let Some(go_on) = crate::limits::admit_message(conn, &msg, now_micros(), shard.stats()) {
            return go_on;
        }
    }
    match msg {
        Message::Text(text) => match kind {
            Kind::Subscriber => on_request(shard, conn, &text),
            Kind::Publisher => on_publish(shard, conn, &text).await,
        },
        Message::Binary(_) => {
            conn.error(None, ErrorCode::UnsupportedData, "binary frames are not supported: send JSON text frames")
        }
        Message::Ping(payload) => conn.send(ws::frame(Opcode::Pong, &payload)),
        Message::Pong(_) => {}
        Message::Close(code) => {
            // RFC 6455 7.4: echo the peer's code; codes it may not send are a protocol error.
            let (echo, reason) = match code {
                None => (close::NORMAL, ""),
                Some(c) if ws::is_valid_close_code(c) => (c, ""),
                Some(_) => (close::PROTOCOL_ERROR, "invalid close code"),
            };
            conn.request_close(echo, reason);
            return false;
        }
    }
    true
}

async fn on_publish(shard: &Rc<Shard>, conn: &Rc<Conn>, text: &[u8]) {
    match parse_publish(text) {
        Ok(events) => {
            shard.stats().published.fetch_add(events.len() as u64, Ordering::Relaxed);
            shard.ingest(events, false).await;
        }
        Err(e) => conn.error(None, ErrorCode::InvalidMessage, &e.to_string()),
    }
}

fn on_request(shard: &Rc<Shard>, conn: &Rc<Conn>, text: &[u8]) {
    match Canonical.decode(text) {
        Ok(ClientRequest::Subscribe(s)) => subscribe(shard, conn, s),
        Ok(ClientRequest::Unsubscribe(u)) => unsubscribe(shard, conn, u),
        Ok(ClientRequest::Ping { id }) => conn.reply(&Reply::Pong { id: id.as_deref() }),
        Ok(ClientRequest::Ack { id, channel, sequence }) => ack(shard, conn, id.as_deref(), channel, sequence),
        Ok(_) => conn.error(None, ErrorCode::UnknownAction, "unsupported action"),
        Err(e) => conn.error(e.id.as_deref(), e.code, &e.message),
    }
}

/// The topics a subscribe (or unsubscribe with symbols) names for this connection.
fn topics_of(
    conn: &Conn,
    channel: Channel,
    symbols: &[String],
    interval: Option<tickwire_core::BarInterval>,
) -> Vec<Topic> {
    match channel.scope() {
        Scope::Private => conn.user().map(|u| vec![Topic::new(channel, u.clone())]).unwrap_or_default(),
        Scope::Everyone => vec![Topic::new(channel, ALL)],
        Scope::PerSymbolOrAll if symbols.is_empty() => vec![Topic::new(channel, ALL)],
        _ => symbols.iter().map(|s| Topic { channel, key: s.as_str().into(), interval }).collect(),
    }
}

pub(crate) fn subscribe(shard: &Rc<Shard>, conn: &Rc<Conn>, s: Subscribe) {
    let id = s.id.as_deref();
    let restore = s.restore && conn.subs.borrow().is_empty();
    if s.channel.is_private() && conn.user().is_none() {
        let msg = format!("channel '{}' is private: connect with a token", s.channel);
        return conn.error(id, ErrorCode::AuthRequired, &msg);
    }
    let topics = topics_of(conn, s.channel, &s.symbols, s.interval);
    let fresh = topics.iter().filter(|t| !conn.subs.borrow().contains_key(t)).count();
    let limit = shard.shared.config.max_subscriptions;
    if conn.subs.borrow().len() + fresh > limit {
        let msg = format!("at most {limit} subscriptions per connection");
        return conn.error(id, ErrorCode::SubscriptionLimit, &msg);
    }
    let sub_id = shard.next_id();
    let subscription_id = format!("s-{}-{sub_id}", shard.id);
    conn.reply(&Reply::Subscribed {
        id,
        channel: s.channel,
        symbols: &s.symbols,
        interval: s.interval,
        throttle_ms: s.throttle_ms,
        subscription_id: &subscription_id,
    });
    let other_epoch = s.epoch.as_deref().is_some_and(|e| e != shard.shared.epoch);
    for topic in topics {
        let resume = match s.from_sequence.iter().find(|(k, _)| resume_key(&topic) == k.as_str()) {
            None => Resume::Latest,
            Some(_) if other_epoch => Resume::Reset(reset::EPOCH_CHANGED),
            Some(&(_, n)) => Resume::After(n),
        };
        conn.subs.borrow_mut().insert(topic.clone(), sub_id);
        crate::store::subscription_changed(shard, conn, &topic, Some(s.throttle_ms));
        shard.subscribe(conn, topic, s.throttle_ms, resume);
    }
    if restore {
        crate::store::restore(shard, conn, s.id);
    }
}

/// The `from_sequence` key naming a topic: its symbol, or `*` for private and keyless topics.
fn resume_key(topic: &Topic) -> &str {
    if topic.channel.is_private() {
        ALL
    } else {
        &topic.key
    }
}

fn ack(shard: &Rc<Shard>, conn: &Rc<Conn>, id: Option<&str>, channel: Channel, sequence: u64) {
    if !channel.is_critical() {
        let msg = format!("channel '{channel}' is not critical: only orders, executions and alerts are acknowledged");
        return conn.error(id, ErrorCode::InvalidField, &msg);
    }
    let Some(user) = conn.user() else {
        let msg = format!("channel '{channel}' is private: connect with a token");
        return conn.error(id, ErrorCode::AuthRequired, &msg);
    };
    shard.ack(Topic::new(channel, user.clone()), sequence);
}

fn unsubscribe(shard: &Rc<Shard>, conn: &Rc<Conn>, u: Unsubscribe) {
    let topics: Vec<Topic> = match &u.symbols {
        None => conn.subs.borrow().keys().filter(|t| t.channel == u.channel).cloned().collect(),
        Some(symbols) => {
            let named = topics_of(conn, u.channel, symbols, None);
            conn.subs
                .borrow()
                .keys()
                .filter(|t| {
                    named.iter().any(|n| n.channel == t.channel && n.key == t.key)
                        && (u.interval.is_none() || t.interval == u.interval)
                })
                .cloned()
                .collect()
        }
    };
    let mut symbols: Vec<String> = Vec::new();
    for t in &topics {
        conn.subs.borrow_mut().remove(t);
        crate::store::subscription_changed(shard, conn, t, None);
        shard.unsubscribe(conn.key, t);
        if let Some(sym) = t.symbol() {
            if !symbols.iter().any(|s| s == sym) {
                symbols.push(sym.to_owned());
            }
        }
    }
    conn.reply(&Reply::Unsubscribed { id: u.id.as_deref(), channel: u.channel, symbols: &symbols });
}
