//! WebSocket sessions on a shard: a reader task that decodes client frames and acts on them, and a writer
//! task that flushes the connection's outbound queue with one write per wakeup (corking).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
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
use tickwire_fanout::outbound::{Outbound, Pushed, NO_STAMP};
use tickwire_persistence::ConnectionRecord;

use crate::auth::Identity;
use crate::shard::Shard;
use crate::util::{now_micros, LocalNotify};

/// Bytes read from a client at a time.
const READ_CHUNK: usize = 1024;
/// Largest write the writer hands the socket at once.
const MAX_WRITE: usize = 256 * 1024;
/// The close of a connection whose outbound queue passed `max_queued_bytes`.
const SLOW_CONSUMER: (u16, &str) = (close::TRY_AGAIN_LATER, "slow consumer");

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
        let pushed = self.out.borrow_mut().push_stamped(frame, ingested);
        match pushed {
            Pushed::Queued { was_empty } => {
                self.messages_out.set(self.messages_out.get() + 1);
                if was_empty {
                    self.wake.notify();
                }
            }
            Pushed::Overflow => self.request_close(SLOW_CONSUMER.0, SLOW_CONSUMER.1),
        }
    }

    /// Bytes and frames waiting in the outbound queue.
    pub fn queued(&self) -> (usize, usize) {
        let out = self.out.borrow();
        (out.queued_bytes(), out.len())
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

    fn error(&self, id: Option<&str>, code: ErrorCode, message: &str) {
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
}

/// Runs an upgraded connection to its end. `buffered` holds bytes read past the HTTP head.
pub async fn run<S>(
    shard: Rc<Shard>,
    stream: S,
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
    let client_id = client_id.unwrap_or_else(|| format!("cl-{}-{key}", shard.id));
    let config = &shard.shared.config;
    let conn = Rc::new(Conn {
        key,
        id,
        identity,
        out: RefCell::new(Outbound::new(config.max_queued_bytes, 4)),
        wake: LocalNotify::default(),
        closing: LocalNotify::default(),
        close: Cell::new(None),
        subs: RefCell::new(HashMap::new()),
        messages_in: Cell::new(0),
        messages_out: Cell::new(0),
    });
    shard.add_conn(conn.clone());
    let connected_at = now_micros();
    shard.shared.store.connection_opened(ConnectionRecord {
        id: (shard.id as u64) << 48 | key,
        user: conn.user().map(|u| u.to_string()),
        client_id: client_id.clone(),
        ip,
        shard: shard.id,
        connected_at,
    });
    if kind == Kind::Subscriber {
        conn.reply(&Reply::Welcome {
            connection_id: &conn.id,
            client_id: &client_id,
            user_id: conn.user().map(|u| &**u),
            epoch: &shard.shared.epoch,
            heartbeat_s: config.heartbeat_s,
        });
    }

    let (reader, writer) = futures_lite::io::split(stream);
    let writer_task = glommio::spawn_local(write_loop(shard.clone(), conn.clone(), writer));
    read_loop(&shard, &conn, reader, buffered, kind).await;
    conn.request_close(close::NORMAL, "");
    // The writer flushes and sends its close frame; a peer that does not read cannot hold us.
    let sent = glommio::timer::timeout(Duration::from_secs(2), async {
        writer_task.await;
        Ok(())
    })
    .await;
    let code = conn.close.get().map_or(close::NORMAL, |(c, _)| c);
    if conn.close.get() == Some(SLOW_CONSUMER) {
        shard.stats().slow_consumer_closes.fetch_add(1, Ordering::Relaxed);
    }
    shard.remove_conn(&conn);
    let out = conn.out.borrow().len() as u64;
    shard.shared.store.connection_closed(
        (shard.id as u64) << 48 | key,
        now_micros(),
        code,
        conn.messages_in.get(),
        out,
    );
    tracing::debug!(conn = %conn.id, code, flushed = sent.is_ok(), "connection closed");
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
            let alone = conn.out.borrow_mut().pop_alone();
            let (frames, bytes, earliest) = match alone {
                Some((frame, stamp)) => {
                    if w.write_all(&frame).await.is_err() {
                        conn.request_close(close::NORMAL, "");
                        return;
                    }
                    (1, frame.len(), stamp)
                }
                None => {
                    buf.clear();
                    let drained = conn.out.borrow_mut().drain(&mut buf, MAX_WRITE);
                    if drained.frames == 0 {
                        break;
                    }
                    if w.write_all(&buf).await.is_err() {
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
            let _ = w.write_all(&ws::close_frame(code, reason)).await;
            let _ = w.close().await;
            return;
        }
    }
}

async fn read_loop<R: AsyncRead + Unpin>(shard: &Rc<Shard>, conn: &Rc<Conn>, mut r: R, mut buf: BytesMut, kind: Kind) {
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
    shard.stats().messages_in.fetch_add(1, Ordering::Relaxed);
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
        // Acknowledgements release critical messages; the at-least-once queue keeps none yet.
        Ok(ClientRequest::Ack { .. }) => {}
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

fn subscribe(shard: &Rc<Shard>, conn: &Rc<Conn>, s: Subscribe) {
    let id = s.id.as_deref();
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
    for topic in topics {
        conn.subs.borrow_mut().insert(topic.clone(), sub_id);
        shard.subscribe(conn, topic, s.throttle_ms);
    }
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
        shard.unsubscribe(conn.key, t);
        if let Some(sym) = t.symbol() {
            if !symbols.iter().any(|s| s == sym) {
                symbols.push(sym.to_owned());
            }
        }
    }
    conn.reply(&Reply::Unsubscribed { id: u.id.as_deref(), channel: u.channel, symbols: &symbols });
}
