//! WebSocket sessions on a shard, the driver of [`tickwire_fanout::engine::Connection`]: a reader task
//! that feeds the engine what the socket read and carries out its requests on the shard, then ends the
//! connection. Frames go to the socket at once when it takes them; a flush task (one write per batch of
//! queued frames, [`Conn::flush`]) lives only while some wait. The rules (requests, replies, rate limits,
//! heartbeats, slow consumers, the close handshake) are the engine's.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tickwire_core::protocol::{ErrorCode, Subscribe};
use tickwire_core::topic::{BarInterval, ALL};
use tickwire_core::ws::close;
use tickwire_core::{Channel, Topic};
use tickwire_fanout::engine::{Connection, Request};
use tickwire_persistence::{ConnectionRecord, SubscriptionRecord};

pub use tickwire_fanout::engine::Kind;

use crate::auth::Identity;
use crate::conn::{Conn, WriterSlot};
use crate::shard::Shard;
use crate::util::{now_micros, LocalNotify};

/// Bytes read from a client at a time, into the shard's read buffer ([`SCRATCH`]). Small on purpose: a
/// publisher's read is handled whole before the task can yield, and each update in it may go to thousands
/// of subscribers; with 16 KiB reads (about 100 updates) a shard behind its publisher stalled for tens of
/// milliseconds at a time (loop lag up to 250 ms at 50,000 deliveries/s, perf/reports/cpu).
const READ_CHUNK: usize = 512;
/// How long a closed connection waits for the peer's side of the close.
const LINGER: Duration = Duration::from_secs(2);

/// Runs an upgraded connection to its end. `buffered` holds bytes read past the HTTP head; `slot` is the
/// connection's place under the connection limits, freed just before the session counts as ended.
///
/// The connection is set up (registered, recorded, welcomed) at once; the future returned serves it. Only
/// what serving needs goes into that future, which lives as long as the connection: an async fn keeps
/// every argument for its whole life, and these ones (the identity, the ids, the address) would make each
/// idle connection about a hundred bytes heavier.
#[allow(clippy::too_many_arguments)]
pub fn run<S>(
    shard: Rc<Shard>,
    slot: crate::limits::ConnSlot,
    stream: S,
    fd: Option<RawFd>,
    answer: Option<crate::http::AcceptKey>,
    deflate: Option<tickwire_core::deflate::Agreed>,
    buffered: BytesMut,
    kind: Kind,
    identity: Option<Identity>,
    client_id: Option<String>,
    ip: Option<std::net::IpAddr>,
    key: u64,
) -> impl std::future::Future<Output = ()>
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let now = now_micros();
    // Consumed here, so that the session's future does not keep it.
    let user = identity.map(|i| i.user);
    let stats = shard.stats().engine.clone();
    let mut engine = Connection::new(shard.id, key, kind, user.clone(), shard.conn_settings().clone(), stats, now);
    engine.enable_deflate(deflate.map_or(0, |d| d.to_byte()));
    let engine_bits = engine.deflate_bits();
    let (reader, writer) = futures_lite::io::split(stream);
    let conn = Rc::new(Conn {
        key,
        named: client_id.map(String::into_boxed_str),
        engine: RefCell::new(engine),
        writer: WriterSlot::new(Box::new(writer)),
        notify: LocalNotify::default(),
        abort: LocalNotify::default(),
        fd: Cell::new(fd),
        corked: Cell::new(false),
        writer_gone: Cell::new(false),
        dialect: kind.dialect(),
        deflate_bits: engine_bits,
        shared: shard.shared.clone(),
        shard: shard.id,
    });
    shard.add_conn(conn.clone());
    tracing::debug!(conn = %tickwire_fanout::engine::ConnId(shard.id, key), ?ip, user = user.as_deref(), ?kind, "connection upgraded");
    // Made once here for the store's record and the welcome (a made id is not kept by the connection).
    let client_id = conn.client_id().into_owned();
    shard.shared.store.connection_opened(ConnectionRecord {
        id: (shard.id as u64) << 48 | key,
        user: user.map(|u| u.to_string()),
        client_id: client_id.clone(),
        ip,
        shard: shard.id,
        connected_at: now,
    });
    let welcome = |c: &mut Connection| {
        if kind.is_subscriber() {
            c.welcome(now, &client_id);
        }
    };
    match answer {
        // The upgrade's answer (held back on plain sockets only) and the welcome in one `send`.
        Some(answer) => {
            let tail = crate::http::extensions_tail(deflate.as_ref());
            conn.with_head(crate::http::switching_protocols_parts(&answer, &tail), welcome)
        }
        None => conn.with(welcome),
    }
    serve(shard, slot, conn, reader, buffered)
}

/// Serves a connection set up by [`run`] until it ends: reads until the connection closes, then ends it
/// ([`end`]). Only what reading needs lives in this future, for the whole life of the connection; the
/// rest of the ending, allocated when it comes, holds a few hundred bytes more.
async fn serve<R: AsyncRead + Unpin + 'static>(
    shard: Rc<Shard>,
    slot: crate::limits::ConnSlot,
    conn: Rc<Conn>,
    mut reader: R,
    buffered: BytesMut,
) {
    read_loop(&shard, &conn, &mut reader, buffered).await;
    Box::pin(end(shard, slot, conn, reader)).await;
}

/// Ends a connection whose reading is over: closes it, writes what is queued and the close frame
/// (bounded), lingers for the peer's close, and records the end.
async fn end<R: AsyncRead + Unpin>(shard: Rc<Shard>, slot: crate::limits::ConnSlot, conn: Rc<Conn>, mut reader: R) {
    conn.request_close(close::NORMAL, "");
    // Its subscriptions go at once; only the socket waits for the queue to be written and the close frame
    // sent, and a peer that does not read cannot hold even that for long.
    shard.remove_conn(&conn);
    let sent = futures_lite::future::or(
        async {
            // A flush still running finishes first (or is told to give up, below).
            let Some(mut w) = conn.take_writer().await else { return false };
            if !conn.write_queued(&mut w).await {
                return false;
            }
            let close = conn.engine.borrow().close_frame();
            if let Some(frame) = close {
                let _ = w.write_all(&frame).await;
            }
            let _ = w.close().await;
            true
        },
        async {
            glommio::timer::sleep(Duration::from_millis(shard.shared.config.close_flush_ms)).await;
            false
        },
    )
    .await;
    conn.drop_writer();
    if sent {
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
    let (code, messages_in, messages_out) = (engine.close_code(), engine.messages_in(), engine.messages_out());
    let id = (shard.id as u64) << 48 | conn.key;
    shard.shared.store.connection_closed(id, now_micros(), code, messages_in, messages_out);
    tracing::debug!(conn = %engine.id(), code, flushed = sent, "connection closed");
}

async fn read_loop<R: AsyncRead + Unpin>(shard: &Rc<Shard>, conn: &Rc<Conn>, r: &mut R, mut buf: BytesMut) {
    loop {
        // What the read asks for is answered in one write: the replies, and the snapshots and replays of
        // the subscriptions (those of this shard's topics come at once).
        let go_on = conn.corked(|| {
            let go_on = conn.with(|c| c.handle_bytes(now_micros(), &mut buf));
            carry_out(shard, conn);
            go_on
        });
        if !go_on {
            let engine = conn.engine.borrow();
            // A close the server decided (a reason given), not the echo of the client's.
            if let Some((code, reason)) = engine.close_reason().filter(|&(_, reason)| !reason.is_empty()) {
                tracing::info!(conn = %engine.id(), code, reason, "closing the connection");
            }
            return;
        }
        if buf.is_empty() {
            // Nothing left over: an idle connection keeps no buffer of its own.
            buf = BytesMut::new();
        }
        // A read of a busy connection (a publisher's) completes at once, again and again: give the other
        // tasks their turn when the preempt timer says so, or they wait for this connection to go quiet.
        glommio::yield_if_needed().await;
        // One small future for both: it lives as long as the connection is idle.
        let read = std::future::poll_fn(|cx| {
            // The same wakeup tells of a flush ending: only a closing connection stops the reading.
            loop {
                if conn.engine.borrow().is_closing() {
                    return Poll::Ready(None);
                }
                if conn.notify.poll_wait(cx).is_pending() {
                    break;
                }
            }
            poll_read_some(cx, r, &mut buf).map(Some)
        });
        match read.await {
            Some(Ok(n)) if n > 0 => {}
            _ => return,
        }
    }
}

thread_local! {
    /// The shard's read buffer: every read of its connections lands here first (a shard is one thread).
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_CHUNK].into_boxed_slice());
}

/// Reads what the socket has (up to [`READ_CHUNK`] bytes) and appends it to `buf`: the bytes go through
/// the shard's [`SCRATCH`] buffer, so that a connection holds a buffer of its own only while a message of
/// its is incomplete. The scratch buffer is lent to the stream for one poll at a time: the streams read
/// into it only within `poll_read` (glommio's sockets with a plain `recv`, rustls from its own buffer).
fn poll_read_some<R: AsyncRead + Unpin>(
    cx: &mut std::task::Context<'_>,
    r: &mut R,
    buf: &mut BytesMut,
) -> Poll<std::io::Result<usize>> {
    SCRATCH.with_borrow_mut(|scratch| {
        let read = std::pin::Pin::new(&mut *r).poll_read(cx, scratch);
        if let Poll::Ready(Ok(n)) = read {
            buf.extend_from_slice(&scratch[..n]);
        }
        read
    })
}

/// Carries out, in order, what the connection's engine asks of the shard. The engine is not borrowed
/// meanwhile: a subscribe's snapshot may be pushed to the connection at once.
fn carry_out(shard: &Rc<Shard>, conn: &Rc<Conn>) {
    loop {
        let request = conn.engine.borrow_mut().poll_request();
        match request {
            None => return,
            Some(Request::Subscribe { topics, throttle_ms, restore: restore_id }) => {
                for (topic, resume) in topics {
                    subscription_changed(shard, conn, &topic, Some(throttle_ms));
                    shard.subscribe(conn, topic, throttle_ms, resume);
                }
                if let Some(id) = restore_id {
                    restore(shard, conn, id);
                }
            }
            Some(Request::Unsubscribe { topics }) => {
                for t in &topics {
                    subscription_changed(shard, conn, t, None);
                    shard.unsubscribe(conn.key, t);
                }
            }
            Some(Request::Ack { topic, sequence }) => shard.ack(topic, sequence),
            Some(Request::Publish(_)) if shard.stopping() => {
                // As POST /api/publish answers 503: a stopping node sequences nothing more, so that what its
                // clients were told before the shutdown notice is all it sequenced (docs/deploy/restart.md).
                conn.error(None, ErrorCode::Unavailable, crate::shard::STOPPING);
            }
            Some(Request::Publish(_)) if shard.shared.bus.as_ref().is_some_and(|b| !b.usable()) => {
                // As POST /api/publish answers 503: a node cut off from the cluster's bus sequences nothing.
                conn.error(None, ErrorCode::Unavailable, crate::bus::UNAVAILABLE);
            }
            Some(Request::Publish(events)) => {
                shard.stats().published.fetch_add(events.len() as u64, std::sync::atomic::Ordering::Relaxed);
                shard.ingest(events);
            }
        }
    }
}

/// A subscribe made by the server for the connection (a restore): as if the client had sent it.
pub(crate) fn subscribe(shard: &Rc<Shard>, conn: &Rc<Conn>, sub: Subscribe) {
    conn.with(|c| c.subscribe(now_micros(), sub));
    carry_out(shard, conn);
}

/// Records a client's subscription to `topic` (`Some(throttle_ms)`) or its unsubscribe (`None`), for
/// `"restore": true`. Nothing to do (nor allocate) for a store that keeps no subscriptions, nor for a
/// client that did not name itself (`?client_id=`): it could not ask for them back.
pub fn subscription_changed(shard: &Shard, conn: &Conn, topic: &Topic, throttle_ms: Option<u32>) {
    let store = &shard.shared.store;
    if !store.durable() || conn.named.is_none() {
        return;
    }
    let record = SubscriptionRecord {
        user: conn.user().map_or_else(String::new, |u| u.to_string()),
        client_id: conn.client_id().into_owned(),
        channel: topic.channel,
        symbol: if topic.channel.is_private() { String::new() } else { topic.key.to_string() },
        interval: topic.interval.map_or("", |i| i.as_str()).to_owned(),
        throttle_ms: throttle_ms.unwrap_or(0),
    };
    match throttle_ms {
        Some(_) => store.subscription_added(record, now_micros()),
        None => store.subscription_removed(record),
    }
}

/// How long `"restore": true` waits for the database.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(3);

/// `"restore": true` on a connection's first subscribe: loads the subscriptions this user and client id
/// had (in the background: the shard does not wait) and subscribes them again, one `subscribed` per
/// channel, interval and throttle. Those the connection already has are left as they are.
pub fn restore(shard: &Rc<Shard>, conn: &Rc<Conn>, id: Option<String>) {
    let user = conn.user().map_or_else(String::new, |u| u.to_string());
    let Some(pending) = shard.shared.store.subscriptions(&user, &conn.client_id()) else {
        let msg = "restore needs the server to keep subscriptions in a database (--database-url)";
        return conn.error(id.as_deref(), ErrorCode::Unavailable, msg);
    };
    let (shard, conn) = (shard.clone(), conn.clone());
    glommio::spawn_local(async move {
        let found = glommio::timer::timeout(RESTORE_TIMEOUT, async { Ok(pending.await) }).await.ok().flatten();
        if !shard.has_connection(conn.key) {
            return; // gone meanwhile
        }
        let Some(records) = found else {
            let msg = "previous subscriptions could not be loaded (database unavailable): subscribe again";
            return conn.error(id.as_deref(), ErrorCode::Unavailable, msg);
        };
        let mut groups: BTreeMap<(Channel, String, u32), Vec<String>> = BTreeMap::new();
        for r in records {
            let interval = BarInterval::parse(&r.interval);
            let topic = match r.channel.is_private() {
                true => Topic::new(r.channel, user.as_str()),
                false => Topic { channel: r.channel, key: r.symbol.as_str().into(), interval },
            };
            if !conn.subscribes(&topic) {
                let symbols = groups.entry((r.channel, r.interval, r.throttle_ms)).or_default();
                if !r.symbol.is_empty() && r.symbol != ALL {
                    symbols.push(r.symbol);
                }
            }
        }
        for ((channel, interval, throttle_ms), symbols) in groups {
            let sub = Subscribe {
                id: None,
                channel,
                symbols,
                throttle_ms,
                interval: BarInterval::parse(&interval),
                from_sequence: Vec::new(),
                epoch: None,
                restore: false,
            };
            subscribe(&shard, &conn, sub);
        }
    })
    .detach();
}
