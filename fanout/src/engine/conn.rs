//! One WebSocket connection's protocol rules, without I/O: the client's frames and requests, the replies,
//! the inbound rate limit, heartbeats, the slow-consumer policy of the outbound queue, and the close
//! handshake.
//!
//! The driver feeds it what the socket read ([`Connection::handle_bytes`]) and the time, carries out what it
//! asks of the shard ([`Connection::poll_request`]: subscriptions, acks, published events), writes what its
//! outbound queue holds (or sends a frame at once when [`Connection::can_send_now`]), and ends the session
//! when it is closing ([`Connection::close_frame`]).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tickwire_core::channel::Scope;
use tickwire_core::event::{parse_publish, Ingest};
use tickwire_core::protocol::{
    ClientRequest, DialectId, ErrorCode, Reply, RequestError, SessionLimits, Subscribe, Unsubscribe, DIALECT_COUNT,
};
use tickwire_core::time::Micros;
use tickwire_core::topic::ALL;
use tickwire_core::ws::{self, close, Message, MessageReader, Opcode};
use tickwire_core::{BarInterval, Channel, Topic};

use super::stats::{Stats, CHANNELS};
use crate::frame::{text_frame, try_reply_frame_to};
use crate::outbound::{Drained, Outbound, Pushed, KEEP, NO_STAMP};
use crate::sequencer::{reset, Resume};

/// The close of a connection whose outbound queue passed `max_queued_bytes`.
pub const SLOW_CONSUMER: (u16, &str) = (close::TRY_AGAIN_LATER, "slow consumer");

/// The bit of [`Connection`]'s `choice` that says it is auto-subscribed.
const AUTO: u8 = 0x80;

/// Windows in a row over the rate after which the connection is closed.
pub const STRIKES: u32 = 3;

/// The rules' settings, shared by every connection of a server.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Names the server's sequence space: a resume from another epoch gets a `reset`.
    pub epoch: Arc<str>,
    pub max_message_bytes: usize,
    pub max_messages_per_s: u32,
    pub max_queued_bytes: usize,
    pub max_subscriptions: usize,
    pub heartbeat_s: u32,
    pub slow_consumer_grace_ms: u64,
    /// Per dialect (indexed by `DialectId`), the silence and lifespan after which its connections are closed
    /// instead of pinged; `None`: the canonical heartbeat (pings, and a close 4000 after two silent
    /// intervals).
    pub session_limits: [Option<SessionLimits>; DIALECT_COUNT],
    /// Whether connections of dialects with auto-subscription (`Dialect::auto_subscribe`, seed 001) start
    /// subscribed to their channels.
    pub auto_subscribe: bool,
    /// Per dialect and channel (`Channel as usize`), the least throttle of a subscription in milliseconds:
    /// its connections get at most one update of a topic per window, the latest (seed 001's portfolio
    /// interval). 0: as the client asks.
    pub min_throttle_ms: [[u32; CHANNELS]; DIALECT_COUNT],
    /// How frames are deflated for connections that agreed to permessage-deflate (level and threshold).
    pub compression: tickwire_core::deflate::Level,
}

/// What a connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Subscribes and receives, speaking a dialect of the table (`/v1/stream`: the canonical protocol).
    Subscriber(DialectId),
    /// `/v1/publish`: sends events (trusted feeds: no message rate limit).
    Publisher,
    /// The conformance aid (`--echo-path`): every text or binary message comes back as it came, through the
    /// same frame reader, writer, limits and close handshake as any connection (no message rate limit:
    /// the test suite sends thousands of messages a second).
    Echo,
}

impl Kind {
    /// A subscriber of `/v1/stream`.
    pub const STREAM: Kind = Kind::Subscriber(DialectId::CANONICAL);

    pub fn is_subscriber(self) -> bool {
        matches!(self, Kind::Subscriber(_))
    }

    /// The dialect its requests and replies are written in (a publisher's errors: the canonical one).
    pub fn dialect(self) -> DialectId {
        match self {
            Kind::Subscriber(d) => d,
            Kind::Publisher | Kind::Echo => DialectId::CANONICAL,
        }
    }
}

/// What the shard must do for the connection, in the order the client asked.
#[derive(Debug)]
pub enum Request {
    /// Subscribe these topics (the `subscribed` reply is queued already), each resuming as given. With
    /// `restore`, the client's stored subscriptions (`id` names the request) are to be subscribed too.
    Subscribe { topics: Vec<(Topic, Resume)>, throttle_ms: u32, restore: Option<Option<String>> },
    /// These topics are no longer subscribed (the `unsubscribed` reply is queued already).
    Unsubscribe { topics: Vec<Topic> },
    /// The user acknowledged a critical topic up to `sequence`.
    Ack { topic: Topic, sequence: u64 },
    /// A publisher's events, validated.
    Publish(Vec<Ingest>),
}

/// What a frame pushed by the shard became.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    /// Queued behind others: the writer has it.
    Behind,
    /// Queued in an empty queue: wake the writer.
    Wake,
    /// Not queued: the queue passed its bound, and the connection is closing as a slow consumer.
    Dropped,
}

/// The inbound message rate of one connection, in fixed one-second windows. A window over the rate drops
/// the excess and sends one `RATE_LIMITED` error; a client that goes on ([`STRIKES`] windows in a row over
/// the rate, or twice the rate in one window) is closed with 1008.
#[derive(Debug)]
pub struct RateLimiter {
    per_s: u32,
    window_start: Micros,
    count: u32,
    strikes: u32,
}

/// What to do with one inbound message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the rate: act on it.
    Accept,
    /// Over the rate: drop it, and tell the client with a `RATE_LIMITED` error (once per window).
    Limit { notify: bool },
    /// Over the rate for too long, or far over it: close 1008.
    Close,
}

impl RateLimiter {
    pub fn new(per_s: u32) -> RateLimiter {
        RateLimiter { per_s: per_s.max(1), window_start: 0, count: 0, strikes: 0 }
    }

    /// Counts one message at `now`.
    pub fn check(&mut self, now: Micros) -> Verdict {
        if now - self.window_start >= 1_000_000 || now < self.window_start {
            let was_over = self.count > self.per_s;
            let consecutive = now - self.window_start < 2_000_000;
            self.strikes = if was_over && consecutive { self.strikes + 1 } else { 0 };
            self.window_start = now;
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        if self.count <= self.per_s {
            return Verdict::Accept;
        }
        if self.strikes + 1 >= STRIKES || self.count > self.per_s.saturating_mul(2) {
            return Verdict::Close;
        }
        Verdict::Limit { notify: self.count == self.per_s + 1 }
    }

    /// When the current window started.
    pub fn window_start(&self) -> Micros {
        self.window_start
    }
}

/// A connection's id in logs, `c-<shard>-<key>`: the key is the shard's count of accepted TCP connections,
/// taken at the accept, so the lines of a connection's HTTP requests, its upgrade and its WebSocket session
/// carry the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnId(pub usize, pub u64);

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "c-{}-{}", self.0, self.1)
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct Connection {
    key: u64,
    shard: u32,
    kind: Kind,
    user: Option<Arc<str>>,
    settings: Arc<Settings>,
    stats: Arc<Stats>,
    reader: MessageReader,
    out: Outbound,
    /// The close asked for; the first request wins.
    close: Option<(u16, &'static str)>,
    /// The reconnect hint of a shutdown close.
    retry_after_ms: Option<u32>,
    /// The driver holds bytes it took from the queue and has not written yet.
    writing: bool,
    /// Bits 0 to 6: the dialect's own channels it chose ([`ClientRequest::Channels`]; bit `i`:
    /// `Dialect::parts()[i]`). Bit 7 ([`AUTO`]): subscribed by its dialect's auto-subscription, until its
    /// first subscribe. One byte for both: every connection holds it (a_connection_stays_small).
    choice: u8,
    rate: RateLimiter,
    /// When the client's last frame arrived (heartbeats).
    last_in: Micros,
    /// When the connection opened, in whole seconds since the epoch (a dialect's lifespan).
    opened_s: u32,
    /// Since when the outbound queue has been conflated and not drained (slow consumers).
    behind: Option<Micros>,
    /// Topics subscribed, each with the number of the subscribe that made it.
    subs: HashMap<Topic, u32>,
    next_sub: u32,
    /// Few and rare: a `Vec` taken from the front.
    requests: Vec<Request>,
    messages_in: u64,
    /// Frames queued (or sent at once) for the client.
    messages_out: u64,
}

impl Connection {
    /// A connection with key `key` on shard `shard`, opened at `now`.
    pub fn new(
        shard: usize,
        key: u64,
        kind: Kind,
        user: Option<Arc<str>>,
        settings: Arc<Settings>,
        stats: Arc<Stats>,
        now: Micros,
    ) -> Connection {
        Connection {
            key,
            shard: shard as u32,
            kind,
            user,
            reader: MessageReader::new(settings.max_message_bytes),
            // No room reserved: frames are sent at once while the client keeps up, so most queues stay empty.
            out: Outbound::new(settings.max_queued_bytes, 0),
            close: None,
            retry_after_ms: None,
            writing: false,
            choice: 0,
            rate: RateLimiter::new(settings.max_messages_per_s),
            last_in: now,
            opened_s: (now / 1_000_000) as u32,
            behind: None,
            subs: HashMap::new(),
            next_sub: 1,
            requests: Vec::new(),
            messages_in: 0,
            messages_out: 0,
            settings,
            stats,
        }
    }

    pub fn key(&self) -> u64 {
        self.key
    }

    /// The client agreed to permessage-deflate ([`tickwire_core::deflate::Agreed::to_byte`]): its compressed
    /// messages are inflated, and frames may go to it deflated.
    pub fn enable_deflate(&mut self, agreed: u8) {
        self.reader.enable_deflate(agreed);
    }

    /// The window bits our deflated frames may use for this client, or 0 when it does not compress.
    pub fn deflate_bits(&self) -> u8 {
        self.reader.deflate_bits()
    }

    /// The connection's id, `c-<shard>-<key>` (written when shown: connections keep no string for it).
    pub fn id(&self) -> ConnId {
        ConnId(self.shard as usize, self.key)
    }

    pub fn user(&self) -> Option<&Arc<str>> {
        self.user.as_ref()
    }

    pub fn messages_in(&self) -> u64 {
        self.messages_in
    }

    pub fn messages_out(&self) -> u64 {
        self.messages_out
    }

    /// Whether the connection subscribes `topic`.
    pub fn subscribes(&self, topic: &Topic) -> bool {
        self.subs.contains_key(topic)
    }

    /// Every topic subscribed, forgotten: the connection is ending.
    pub fn take_subscriptions(&mut self) -> Vec<Topic> {
        self.subs.drain().map(|(t, _)| t).collect()
    }

    /// The `welcome` of a subscriber, first of its frames.
    pub fn welcome(&mut self, now: Micros, client_id: &str) {
        let (user, settings) = (self.user.clone(), self.settings.clone());
        let welcome = Reply::Welcome {
            connection_id: &self.id().to_string(),
            client_id,
            user_id: user.as_deref(),
            epoch: &settings.epoch,
            heartbeat_s: settings.heartbeat_s,
        };
        self.reply(now, &welcome);
        let codec = self.kind.dialect().codec();
        if self.settings.auto_subscribe && !codec.auto_subscribe().is_empty() {
            for &channel in codec.auto_subscribe() {
                if channel.is_private() && self.user.is_none() {
                    continue;
                }
                self.subscribe(now, Subscribe::all(channel));
            }
            self.choice |= AUTO;
        }
    }

    // ---- inbound ----

    /// Acts on every whole message in `buf` (bytes read from the socket; what remains is a partial frame).
    /// Returns `false` once the connection must stop reading: the client closed, broke the protocol, or is
    /// closed for its rate.
    pub fn handle_bytes(&mut self, now: Micros, buf: &mut BytesMut) -> bool {
        loop {
            match self.reader.read(buf) {
                Ok(Some(msg)) => {
                    if !self.handle_message(now, msg) {
                        return false;
                    }
                }
                Ok(None) => return self.close.is_none(),
                Err(e) => {
                    let reason = match e.close_code() {
                        close::MESSAGE_TOO_BIG => "message too big",
                        close::INVALID_PAYLOAD => "invalid UTF-8",
                        _ => "protocol error",
                    };
                    self.request_close(e.close_code(), reason);
                    return false;
                }
            }
        }
    }

    /// Acts on one message; `false` ends reading.
    fn handle_message(&mut self, now: Micros, msg: Message) -> bool {
        self.messages_in += 1;
        self.last_in = now;
        self.stats.messages_in.fetch_add(1, Ordering::Relaxed);
        if self.kind.is_subscriber() && !matches!(msg, Message::Close(_)) {
            match self.rate.check(now) {
                Verdict::Accept => {}
                Verdict::Limit { notify } => {
                    self.stats.rate_limited_messages.fetch_add(1, Ordering::Relaxed);
                    if notify {
                        let message = format!("more than {} messages per second: messages dropped", self.rate.per_s);
                        self.error(now, None, ErrorCode::RateLimited, &message);
                    }
                    return true;
                }
                Verdict::Close => {
                    self.stats.rate_limited_closes.fetch_add(1, Ordering::Relaxed);
                    self.request_close(close::POLICY_VIOLATION, "rate limit exceeded");
                    return false;
                }
            }
        }
        match msg {
            Message::Text(text) => match self.kind {
                Kind::Subscriber(_) => {
                    if !self.handle_request(now, &text) {
                        return false;
                    }
                }
                Kind::Publisher => match parse_publish(&text) {
                    Ok(events) => self.requests.push(Request::Publish(events)),
                    Err(e) => self.error(now, None, ErrorCode::InvalidMessage, &e.to_string()),
                },
                Kind::Echo => self.echo(now, Opcode::Text, &text),
            },
            Message::Binary(data) if self.kind == Kind::Echo => self.echo(now, Opcode::Binary, &data),
            Message::Binary(_) => {
                let e = RequestError::new(
                    None,
                    ErrorCode::UnsupportedData,
                    "binary frames are not supported: send JSON text frames",
                );
                if !self.request_error(now, e) {
                    return false;
                }
            }
            Message::Ping(payload) => {
                self.send(now, ws::frame(Opcode::Pong, &payload));
            }
            Message::Pong(_) => {}
            Message::Close(code) => {
                // RFC 6455 7.4: echo the peer's code; codes it may not send are a protocol error.
                let (echo, reason) = match code {
                    None => (close::NORMAL, ""),
                    Some(c) if ws::is_valid_close_code(c) => (c, ""),
                    Some(_) => (close::PROTOCOL_ERROR, "invalid close code"),
                };
                self.request_close(echo, reason);
                return false;
            }
        }
        true
    }

    fn handle_request(&mut self, now: Micros, text: &[u8]) -> bool {
        let codec = self.kind.dialect().codec();
        match codec.decode(text) {
            Ok(ClientRequest::Subscribe(s)) => {
                if self.choice & AUTO != 0 {
                    self.choice &= !AUTO;
                    // The first subscribe replaces what the dialect subscribed by itself.
                    let topics = self.take_subscriptions();
                    self.requests.push(Request::Unsubscribe { topics });
                }
                self.subscribe(now, s)
            }
            Ok(ClientRequest::Unsubscribe(u)) => self.unsubscribe(now, u),
            Ok(ClientRequest::Ping { id }) => self.reply(now, &Reply::Pong { id: id.as_deref() }),
            Ok(ClientRequest::Ack { id, channel, sequence }) => self.ack(now, id.as_deref(), channel, sequence),
            Ok(ClientRequest::Channels { subscribe, parts, id }) => {
                if let Err(e) = codec.admits(id.as_deref(), self.user.as_deref()) {
                    return self.request_error(now, e);
                }
                self.channels(now, subscribe, parts, id.as_deref())
            }
            Ok(_) => self.error(now, None, ErrorCode::UnknownAction, "unsupported action"),
            Err(e) => return self.request_error(now, e),
        }
        true
    }

    /// A request the connection cannot act on: an error reply, or the close its dialect makes of it
    /// (`false`: stop reading).
    fn request_error(&mut self, now: Micros, e: RequestError) -> bool {
        match self.kind.dialect().codec().error_close(&e) {
            Some((code, reason)) => {
                self.request_close(code, reason);
                false
            }
            None => {
                self.error(now, e.id.as_deref(), e.code, &e.message);
                true
            }
        }
    }

    /// The topics a subscribe (or an unsubscribe with symbols) names for this connection.
    fn topics_of(&self, channel: Channel, symbols: &[String], interval: Option<BarInterval>) -> Vec<Topic> {
        match channel.scope() {
            Scope::Private => self.user.as_ref().map(|u| vec![Topic::new(channel, u.clone())]).unwrap_or_default(),
            Scope::Everyone => vec![Topic::new(channel, ALL)],
            // Per-symbol channels without symbols: every symbol (only dialects that allow it ask for it).
            Scope::PerSymbolOrAll | Scope::PerSymbol if symbols.is_empty() => vec![Topic::new(channel, ALL)],
            _ => symbols.iter().map(|s| Topic { channel, key: s.as_str().into(), interval }).collect(),
        }
    }

    /// A subscribe, from the client or restored from the store: the reply is queued and the shard asked
    /// ([`Request::Subscribe`]), or an error is queued.
    pub fn subscribe(&mut self, now: Micros, s: Subscribe) {
        let id = s.id.as_deref();
        if s.channel.is_private() && self.user.is_none() {
            let msg = format!("channel '{}' is private: connect with a token", s.channel);
            return self.error(now, id, ErrorCode::AuthRequired, &msg);
        }
        let topics = self.topics_of(s.channel, &s.symbols, s.interval);
        let fresh = topics.iter().filter(|t| !self.subs.contains_key(t)).count();
        let limit = self.settings.max_subscriptions;
        if self.subs.len() + fresh > limit {
            let msg = format!("at most {limit} subscriptions per connection");
            return self.error(now, id, ErrorCode::SubscriptionLimit, &msg);
        }
        let restore = (s.restore && self.subs.is_empty()).then(|| s.id.clone());
        let number = self.next_sub;
        self.next_sub += 1;
        let subscription_id = format!("s-{}-{}-{number}", self.shard, self.key);
        self.reply(
            now,
            &Reply::Subscribed {
                id,
                channel: s.channel,
                symbols: &s.symbols,
                interval: s.interval,
                throttle_ms: s.throttle_ms,
                subscription_id: &subscription_id,
            },
        );
        let other_epoch = s.epoch.as_deref().is_some_and(|e| e != &*self.settings.epoch);
        let restarts = self.kind.dialect().codec().resubscribe_restarts();
        let topics: Vec<Topic> = topics.into_iter().filter(|t| restarts || !self.subs.contains_key(t)).collect();
        let topics: Vec<_> = topics
            .into_iter()
            .map(|topic| {
                let resume = match s.from_sequence.iter().find(|(k, _)| resume_key(&topic) == k.as_str()) {
                    None => Resume::Latest,
                    Some(_) if other_epoch => Resume::Reset(reset::EPOCH_CHANGED),
                    Some(&(_, n)) => Resume::After(n),
                };
                self.subs.insert(topic.clone(), number);
                (topic, resume)
            })
            .collect();
        if !topics.is_empty() || restore.is_some() {
            let least = self.settings.min_throttle_ms[usize::from(self.kind.dialect().0)][s.channel as usize];
            self.requests.push(Request::Subscribe { topics, throttle_ms: s.throttle_ms.max(least), restore });
        }
    }

    /// A dialect's choice of parts ([`ClientRequest::Channels`]): subscribes the canonical channels its
    /// parts now need, unsubscribes those no part needs any more, and confirms with the parts it has.
    fn channels(&mut self, now: Micros, subscribe: bool, changed: u8, id: Option<&str>) {
        let table = self.kind.dialect().codec().parts();
        let needed = |parts: u8| -> Vec<Channel> {
            let mut channels = Vec::new();
            for (i, (_, channel)) in table.iter().enumerate() {
                if parts & (1 << i) != 0 && !channels.contains(channel) {
                    channels.push(*channel);
                }
            }
            channels
        };
        let had = self.choice & !AUTO;
        let before = needed(had);
        let parts = if subscribe { had | changed } else { had & !changed } & !AUTO;
        self.choice = (self.choice & AUTO) | parts;
        let after = needed(parts);
        for &channel in after.iter().filter(|c| !before.contains(c)) {
            self.subscribe(now, Subscribe::all(channel));
        }
        // A part added to a channel already subscribed for another starts, like that one did, at the latest
        // state: the subscription is made again, for its snapshot.
        let added = parts & !had;
        let mut again: Vec<Channel> = Vec::new();
        for (i, (_, channel)) in table.iter().enumerate() {
            if added & (1 << i) != 0 && before.contains(channel) && !again.contains(channel) {
                again.push(*channel);
            }
        }
        for channel in again {
            for topic in self.topics_of(channel, &[], None) {
                self.subs.remove(&topic);
            }
            self.subscribe(now, Subscribe::all(channel));
        }
        for &channel in before.iter().filter(|c| !after.contains(c)) {
            self.unsubscribe(now, Unsubscribe { id: None, channel, symbols: None, interval: None });
        }
        self.reply(now, &Reply::Channels { id, subscribe, changed, parts });
    }

    fn unsubscribe(&mut self, now: Micros, u: Unsubscribe) {
        let topics: Vec<Topic> = match &u.symbols {
            None => self.subs.keys().filter(|t| t.channel == u.channel).cloned().collect(),
            Some(symbols) => {
                let named = self.topics_of(u.channel, symbols, None);
                self.subs
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
            self.subs.remove(t);
            if let Some(sym) = t.symbol() {
                if !symbols.iter().any(|s| s == sym) {
                    symbols.push(sym.to_owned());
                }
            }
        }
        self.reply(now, &Reply::Unsubscribed { id: u.id.as_deref(), channel: u.channel, symbols: &symbols });
        self.requests.push(Request::Unsubscribe { topics });
    }

    fn ack(&mut self, now: Micros, id: Option<&str>, channel: Channel, sequence: u64) {
        if !channel.is_critical() {
            let msg =
                format!("channel '{channel}' is not critical: only orders, executions and alerts are acknowledged");
            return self.error(now, id, ErrorCode::InvalidField, &msg);
        }
        let Some(user) = self.user.clone() else {
            let msg = format!("channel '{channel}' is private: connect with a token");
            return self.error(now, id, ErrorCode::AuthRequired, &msg);
        };
        self.requests.push(Request::Ack { topic: Topic::new(channel, user), sequence });
    }

    /// The next thing the shard must do for this connection.
    pub fn poll_request(&mut self) -> Option<Request> {
        if self.requests.is_empty() {
            // Requests are rare: an idle connection keeps no room for them.
            self.requests = Vec::new();
            return None;
        }
        Some(self.requests.remove(0))
    }

    // ---- outbound ----

    fn reply(&mut self, now: Micros, reply: &Reply<'_>) {
        if let Some(frame) = try_reply_frame_to(self.kind.dialect().codec(), self.user.as_deref(), reply, now) {
            self.send(now, frame);
        }
    }

    /// The pieces of a window of its dialect ([`crate::window`]): the frames its dialect writes of them for
    /// the connection's parts, or the slices of them that are whole frames (`Dialect::window_frames`),
    /// queued (none when none of them concerns it); the last one's outcome.
    pub fn window(&mut self, now: Micros, pieces: &[Bytes]) -> Option<Queued> {
        let codec = self.kind.dialect().codec();
        let (user, parts) = (self.user.clone(), self.choice & !AUTO);
        let mut last = None;
        // Frames of the dialect's pieces as they are: no copy, nothing allocated for this connection.
        codec.window_frames(parts, pieces, &mut |frame| last = Some(self.send(now, frame)));
        let mut messages = Vec::new();
        codec.encode_window(user.as_deref(), parts, pieces, now, &mut messages);
        for m in messages {
            last = Some(self.send(now, text_frame(m.len(), |out| out.extend_from_slice(&m))));
        }
        last
    }

    /// Sends a message back as it came (the echo endpoint), deflated when the client takes it so.
    fn echo(&mut self, now: Micros, opcode: Opcode, payload: &[u8]) {
        let plain = ws::frame(opcode, payload);
        let bits = self.deflate_bits();
        let deflated = tickwire_core::deflate::fits_window(&plain, bits)
            .then(|| tickwire_core::deflate::compress_frame(&plain, self.settings.compression))
            .flatten();
        self.send(now, deflated.unwrap_or(plain));
    }

    /// Queues an `error` reply.
    pub fn error(&mut self, now: Micros, id: Option<&str>, code: ErrorCode, message: &str) {
        self.reply(now, &Reply::Error { id, code, message });
    }

    /// Queues a frame that is never conflated (replies, snapshots, pings).
    pub fn send(&mut self, now: Micros, frame: Bytes) -> Queued {
        self.push(now, frame, NO_STAMP, KEEP)
    }

    /// Whether a frame may go to the socket at once, skipping the queue: nothing waits to be written and the
    /// connection is not closing. The driver then reports what the socket took ([`Connection::sent_at_once`]).
    pub fn can_send_now(&self) -> bool {
        !self.writing && self.close.is_none() && self.out.is_empty()
    }

    /// A frame went to the socket at once ([`Connection::can_send_now`]), `written` bytes of it; the rest
    /// is queued first, whole, and the writer must be woken (`true`).
    pub fn sent_at_once(&mut self, frame: &Bytes, written: usize, ingested: Micros) -> bool {
        self.messages_out += 1;
        if written > 0 {
            self.stats.writes.fetch_add(1, Ordering::Relaxed);
            self.stats.written_bytes.fetch_add(written as u64, Ordering::Relaxed);
        }
        if written == frame.len() {
            self.stats.written_frames.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        // As a frame of its own it is never conflated away, and it carries the stamp, so its flush is timed.
        self.out.push_front_partial(frame.slice(written..), ingested);
        true
    }

    /// Queues a frame of an update sequenced at `ingested`, which a slow consumer may get conflated under
    /// key `conflate` ([`KEEP`]: never). Past the queue's bound the connection is closed as a slow consumer.
    /// `now` dates the moment the client fell behind, if this push conflates.
    pub fn push(&mut self, now: Micros, frame: Bytes, ingested: Micros, conflate: u64) -> Queued {
        match self.out.push(frame, ingested, conflate) {
            Pushed::Queued { was_empty } => {
                self.messages_out += 1;
                if was_empty {
                    Queued::Wake
                } else {
                    Queued::Behind
                }
            }
            Pushed::Conflated { dropped } => {
                self.messages_out += 1;
                self.stats.slow_consumer_conflations.fetch_add(1, Ordering::Relaxed);
                self.stats.conflated_frames.fetch_add(dropped as u64, Ordering::Relaxed);
                if self.behind.is_none() {
                    self.behind = Some(now);
                }
                Queued::Behind
            }
            Pushed::Overflow => {
                self.close_slow();
                Queued::Dropped
            }
        }
    }

    /// The writer takes what is queued: the lone frame as it is (no copy), or frames copied into `buf`
    /// (at most `max` bytes, at least one frame). `None` when nothing is queued; the client has caught up.
    pub fn take_for_write(&mut self, buf: &mut Vec<u8>, max: usize) -> Option<(Option<Bytes>, Drained)> {
        if self.close == Some(SLOW_CONSUMER) {
            // Behind for good: what is queued is stale; only the close frame is worth sending.
            self.out.clear();
        }
        if let Some((frame, stamp)) = self.out.pop_alone() {
            self.writing = true;
            return Some((Some(frame), Drained { frames: 1, earliest_ingest: stamp }));
        }
        let drained = self.out.drain(buf, max);
        if drained.frames == 0 {
            self.behind = None;
            self.out.release();
            return None;
        }
        self.writing = true;
        Some((None, drained))
    }

    /// The writer wrote what it took ([`Connection::take_for_write`]): `frames` frames in `bytes` bytes.
    pub fn written(&mut self, frames: usize, bytes: usize) {
        self.writing = false;
        self.out.release();
        self.stats.writes.fetch_add(1, Ordering::Relaxed);
        self.stats.written_frames.fetch_add(frames as u64, Ordering::Relaxed);
        self.stats.written_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// The writer could write only `written` bytes of what it took: `rest` goes back to the head of the
    /// queue, whole and first (a frame cut short must be finished before any other).
    pub fn unwritten(&mut self, rest: Bytes, ingested: Option<Micros>, written: usize) {
        self.writing = false;
        if written > 0 {
            self.stats.writes.fetch_add(1, Ordering::Relaxed);
            self.stats.written_bytes.fetch_add(written as u64, Ordering::Relaxed);
        }
        self.out.push_front_partial(rest, ingested.unwrap_or(NO_STAMP));
    }

    /// Whether the writer holds bytes it took and has not written yet.
    pub fn is_writing(&self) -> bool {
        self.writing
    }

    /// Bytes and frames waiting in the outbound queue.
    pub fn queued(&self) -> (usize, usize) {
        (self.out.queued_bytes(), self.out.len())
    }

    // ---- closing and time ----

    /// Asks for the connection to end with `code`: what is queued is written, then the close frame. The
    /// first request wins.
    pub fn request_close(&mut self, code: u16, reason: &'static str) {
        if self.close.is_none() {
            self.close = Some((code, reason));
        }
    }

    /// Whether a close has been requested (the session is on its way out).
    pub fn is_closing(&self) -> bool {
        self.close.is_some()
    }

    /// The close code the connection ends with.
    pub fn close_code(&self) -> u16 {
        self.close.map_or(close::NORMAL, |(c, _)| c)
    }

    /// The close asked for, if any: its code and reason.
    pub fn close_reason(&self) -> Option<(u16, &'static str)> {
        self.close
    }

    /// Closes the connection with 1013 "slow consumer": what is queued is dropped, the close frame follows
    /// whatever write is under way.
    pub fn close_slow(&mut self) {
        if self.close.is_none() {
            self.stats.slow_consumer_closes.fetch_add(1, Ordering::Relaxed);
            self.request_close(SLOW_CONSUMER.0, SLOW_CONSUMER.1);
        }
    }

    /// Shutdown: a `system` notice with a reconnect hint, then close 1001 after what is queued.
    pub fn shutdown(&mut self, now: Micros, retry_after_ms: u64) {
        if self.close.is_some() {
            return;
        }
        self.retry_after_ms = Some(retry_after_ms.min(u64::from(u32::MAX)) as u32);
        self.reply(
            now,
            &Reply::System {
                level: "warning",
                message: "server shutting down: reconnect after retry_after_ms",
                retry_after_ms: Some(retry_after_ms),
            },
        );
        self.request_close(close::GOING_AWAY, "server shutting down");
    }

    /// The close frame to write once the queue is flushed, when the connection is closing.
    pub fn close_frame(&self) -> Option<Bytes> {
        let (code, reason) = self.close?;
        Some(match self.retry_after_ms {
            Some(ms) => ws::close_frame(code, &format!("{reason}; retry_after_ms={ms}")),
            None => ws::close_frame(code, reason),
        })
    }

    /// The heartbeat's visit, once per interval: a client silent for two intervals is closed with 4000,
    /// another gets `ping` (a frame the driver built once). A dialect with [`SessionLimits`] gets no ping:
    /// its client is closed once silent or connected for longer than they allow.
    pub fn heartbeat(&mut self, now: Micros, ping: &Bytes) {
        if self.close.is_some() {
            return;
        }
        if let Some(limits) = self.settings.session_limits[usize::from(self.kind.dialect().0)] {
            let age = now - i64::from(self.opened_s) * 1_000_000;
            if now - self.last_in >= limits.silent || age >= limits.lifespan {
                self.stats.heartbeat_closes.fetch_add(1, Ordering::Relaxed);
                self.request_close(limits.close.0, limits.close.1);
            }
            return;
        }
        let silent_after = 2 * i64::from(self.settings.heartbeat_s.max(1)) * 1_000_000;
        if now - self.last_in >= silent_after {
            self.stats.heartbeat_closes.fetch_add(1, Ordering::Relaxed);
            self.request_close(close::HEARTBEAT_TIMEOUT, "heartbeat timeout");
        } else {
            self.send(now, ping.clone());
        }
    }

    /// Closes a client that has stayed behind (its queue conflated and not drained since) past the grace.
    pub fn check_slow(&mut self, now: Micros) {
        let grace = self.settings.slow_consumer_grace_ms as i64 * 1000;
        if self.behind.is_some_and(|since| now - since >= grace) {
            self.close_slow();
        }
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
