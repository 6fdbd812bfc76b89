//! The wire protocol boundary.
//!
//! A [`Dialect`] turns a client's text message into a [`ClientRequest`] and writes every server frame:
//! updates and snapshots (once per topic update, shared by all subscribers) and replies. The canonical v1
//! protocol of PROTOCOL.md is [`canonical::Canonical`]; the seed systems' dialects implement the same trait,
//! so fanout never learns which dialect a connection speaks.
//!
//! Every dialect the server speaks is one entry of [`DIALECTS`], the only place that names them: the server
//! routes an upgrade by its path to an entry ([`by_path`]) and carries the entry's [`DialectId`] from then on.

pub mod canonical;
pub mod fastws;
pub mod legacy;
pub mod portfolio;
pub mod records;

use std::fmt;

use crate::channel::Channel;
use crate::time::Micros;
use crate::topic::BarInterval;

/// Error codes carried by `error` frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The text is not JSON.
    InvalidJson,
    /// JSON, but not an object.
    InvalidMessage,
    UnknownAction,
    UnknownChannel,
    /// A field is missing, of the wrong type or out of range.
    InvalidField,
    InvalidSymbol,
    /// A binary frame: only text frames carry requests.
    UnsupportedData,
    /// A private channel without an authenticated user.
    AuthRequired,
    /// Over the connection's subscription limit.
    SubscriptionLimit,
    /// The server cannot take the request now.
    Unavailable,
    /// More client messages than the connection's rate allows; the excess is dropped.
    RateLimited,
    /// Unacknowledged critical messages were dropped, oldest first, because the user's queue was full.
    QueueOverflow,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "INVALID_JSON",
            ErrorCode::InvalidMessage => "INVALID_MESSAGE",
            ErrorCode::UnknownAction => "UNKNOWN_ACTION",
            ErrorCode::UnknownChannel => "UNKNOWN_CHANNEL",
            ErrorCode::InvalidField => "INVALID_FIELD",
            ErrorCode::InvalidSymbol => "INVALID_SYMBOL",
            ErrorCode::UnsupportedData => "UNSUPPORTED_DATA",
            ErrorCode::AuthRequired => "AUTH_REQUIRED",
            ErrorCode::SubscriptionLimit => "SUBSCRIPTION_LIMIT",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::QueueOverflow => "QUEUE_OVERFLOW",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request the server cannot act on: answered with an `error` frame, the connection stays open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct RequestError {
    /// The request's `id`, when it could be read.
    pub id: Option<String>,
    pub code: ErrorCode,
    pub message: String,
}

impl RequestError {
    pub fn new(id: Option<String>, code: ErrorCode, message: impl Into<String>) -> RequestError {
        RequestError { id, code, message: message.into() }
    }
}

/// A decoded client request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientRequest {
    Subscribe(Subscribe),
    Unsubscribe(Unsubscribe),
    Ping {
        id: Option<String>,
    },
    Ack {
        id: Option<String>,
        channel: Channel,
        sequence: u64,
    },
    /// A dialect's choice of what the connection receives, by its own channels ([`Dialect::parts`], bit `i`
    /// for entry `i`): added to the connection's parts, or taken from them. The connection subscribes the
    /// canonical channels behind its parts, and unsubscribes those no part needs any more.
    /// `id`: the dialect's own correlation, carried to its reply (and to [`Dialect::admits`]).
    Channels {
        subscribe: bool,
        parts: u8,
        id: Option<String>,
    },
}

/// `subscribe`, validated: symbols normalized, the interval set for bars.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    pub id: Option<String>,
    pub channel: Channel,
    /// Normalized symbols; empty for private and everyone channels and for "all news".
    pub symbols: Vec<String>,
    pub throttle_ms: u32,
    /// Bars only (default 1m).
    pub interval: Option<BarInterval>,
    /// Resume points: symbol (or `*` for keyless topics) to the last sequence the client has.
    pub from_sequence: Vec<(String, u64)>,
    /// The epoch the resume points belong to (from the `welcome` the client had); another epoch means
    /// the sequences cannot be resumed.
    pub epoch: Option<String>,
    /// `"restore": true`: also bring back the subscriptions this user and client id had before (with a
    /// database store), when this is the connection's first subscribe.
    pub restore: bool,
}

impl Subscribe {
    /// A subscribe of every symbol of `channel` (the user's topic, for a private one), with nothing else.
    pub fn all(channel: Channel) -> Subscribe {
        Subscribe {
            id: None,
            channel,
            symbols: Vec::new(),
            throttle_ms: 0,
            interval: None,
            from_sequence: Vec::new(),
            epoch: None,
            restore: false,
        }
    }
}

/// `unsubscribe`; no symbols means the whole channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    pub id: Option<String>,
    pub channel: Channel,
    pub symbols: Option<Vec<String>>,
    pub interval: Option<BarInterval>,
}

/// Whether an update frame is a live update or a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateKind {
    Update,
    Snapshot,
}

/// One topic update, ready to encode: `data` and `source_ts` are raw JSON, passed through as they came.
#[derive(Debug, Clone, Copy)]
pub struct Update<'a> {
    pub kind: UpdateKind,
    pub channel: Channel,
    pub sequence: u64,
    /// Server ingest time.
    pub timestamp: Micros,
    /// Raw JSON value of the publisher's `source_ts`.
    pub source_ts: Option<&'a [u8]>,
    /// Raw JSON object.
    pub data: &'a [u8],
    /// A quote's symbol's day statistics (quotes only, on the owner: for dialects that report them).
    pub day: Option<&'a crate::event::DayStats>,
    /// The topic's key: its symbol, its user for a private topic (for dialects whose frames name it).
    pub key: &'a str,
}

/// Control replies.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Reply<'a> {
    Welcome {
        connection_id: &'a str,
        client_id: &'a str,
        user_id: Option<&'a str>,
        epoch: &'a str,
        heartbeat_s: u32,
    },
    Subscribed {
        id: Option<&'a str>,
        channel: Channel,
        symbols: &'a [String],
        interval: Option<BarInterval>,
        throttle_ms: u32,
        subscription_id: &'a str,
    },
    Unsubscribed {
        id: Option<&'a str>,
        channel: Channel,
        symbols: &'a [String],
    },
    Pong {
        id: Option<&'a str>,
    },
    Error {
        id: Option<&'a str>,
        code: ErrorCode,
        message: &'a str,
    },
    Reset {
        channel: Channel,
        symbol: Option<&'a str>,
        reason: &'a str,
    },
    /// A notice from the server to this connection (not a topic update, so no sequence), such as the
    /// shutdown warning with its reconnect hint.
    System {
        level: &'a str,
        message: &'a str,
        retry_after_ms: Option<u64>,
    },
    /// The answer to [`ClientRequest::Channels`]: the parts it named (`changed`) and the connection's parts
    /// now.
    Channels {
        id: Option<&'a str>,
        subscribe: bool,
        changed: u8,
        parts: u8,
    },
}

/// A wire dialect: how requests are read and frames are written.
pub trait Dialect {
    /// Decodes one text message.
    fn decode(&self, text: &[u8]) -> Result<ClientRequest, RequestError>;
    /// Appends the JSON of an update or snapshot frame to `out`.
    fn encode_update(&self, update: &Update<'_>, out: &mut Vec<u8>);
    /// Appends the JSON of a reply to `out`; `now` stamps replies that carry a time. A reply the dialect
    /// does not have (a welcome, a pong) appends nothing and is not sent.
    fn encode_reply(&self, reply: &Reply<'_>, now: Micros, out: &mut Vec<u8>);
    /// [`Dialect::encode_reply`] to a connection of `user`, for dialects whose replies name the user.
    fn encode_reply_to(&self, _user: Option<&str>, reply: &Reply<'_>, now: Micros, out: &mut Vec<u8>) {
        self.encode_reply(reply, now, out);
    }
    /// The dialect's own channels, when they are parts of the canonical ones that a connection chooses by
    /// name ([`ClientRequest::Channels`]): each name and the canonical channel behind it.
    fn parts(&self) -> &'static [(&'static str, Channel)] {
        &[]
    }
    /// Whether this dialect's pieces ([`Dialect::renders_piece`]) go to a window per connection, whose
    /// frame [`Dialect::encode_window`] writes when the window closes, rather than to a shard's board.
    fn batches_per_connection(&self) -> bool {
        false
    }
    /// Appends to `out` the JSON of each message of a connection's window (one frame each): from `pieces`
    /// in the order they came, of which the connection wants the parts `parts`; nothing when none of them
    /// concerns it.
    fn encode_window(
        &self,
        _user: Option<&str>,
        _parts: u8,
        _pieces: &[bytes::Bytes],
        _now: Micros,
        _out: &mut Vec<Vec<u8>>,
    ) {
    }
    /// Gives `send` the ready WebSocket frames of a connection's window: slices of `pieces` (no copy), for
    /// dialects whose pieces hold whole frames, of the parts `parts` the connection chose.
    fn window_frames(&self, _parts: u8, _pieces: &[bytes::Bytes], _send: &mut dyn FnMut(bytes::Bytes)) {}
    /// Whether a connection of `user` may have what a [`ClientRequest::Channels`] with this `id` asks
    /// (a dialect whose requests name an account checks it is the user's own).
    fn admits(&self, _id: Option<&str>, _user: Option<&str>) -> Result<(), RequestError> {
        Ok(())
    }
    /// Whether a new subscriber of a critical channel in this dialect gets the user's unacknowledged
    /// messages, rendered in the dialect, as the canonical protocol's does (a dialect without acks: on
    /// every subscribe).
    fn replays_critical(&self) -> bool {
        false
    }
    /// Whether a request error closes the connection (with this code and reason) rather than being answered
    /// with an error reply.
    fn error_close(&self, _error: &RequestError) -> Option<(u16, &'static str)> {
        None
    }
    /// The channels a new connection is subscribed to before it asks for anything (all their symbols; the
    /// private ones only with a user), when the server's `auto_subscribe` is on; its first subscribe
    /// replaces them all.
    fn auto_subscribe(&self) -> &'static [Channel] {
        &[]
    }
    /// Whether this dialect renders `channel`'s updates as pieces of a batch (written into the batch frame
    /// of an interval by [`Dialect::encode_batch`]) rather than as frames.
    fn renders_piece(&self, _channel: Channel) -> bool {
        false
    }
    /// Appends the JSON of a batch frame made of `pieces` (rendered by [`Dialect::encode_update`]).
    fn encode_batch(&self, _pieces: &[&bytes::Bytes], _now: Micros, _out: &mut Vec<u8>) {}
    /// Whether a subscribe of a topic the connection has already restarts it (a new snapshot, or a resume),
    /// as the canonical protocol's does; otherwise it is only answered, and the subscription goes on.
    fn resubscribe_restarts(&self) -> bool {
        true
    }
}

/// A dialect's own liveness rule, checked at each heartbeat visit: a client that sent nothing for `silent`
/// microseconds, or connected longer than `lifespan`, is closed with `close` (and is not pinged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    pub silent: Micros,
    pub lifespan: Micros,
    pub close: (u16, &'static str),
}

/// A dialect's place in [`DIALECTS`]: what connections, subscriptions and rendered frames carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DialectId(pub u8);

impl DialectId {
    /// The canonical v1 protocol of `/v1/stream`.
    pub const CANONICAL: DialectId = DialectId(0);

    /// This dialect's entry.
    pub fn entry(self) -> &'static DialectEntry {
        &DIALECTS[usize::from(self.0)]
    }

    /// This dialect's codec.
    pub fn codec(self) -> &'static (dyn Dialect + Sync) {
        self.entry().codec
    }
}

/// How a dialect's endpoint authenticates its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// A token is needed unless the server allows anonymous subscribers (`allow_anonymous`).
    Required,
    /// A token is optional: an anonymous client gets public channels only.
    Optional,
    /// A valid token is needed; without one the upgrade completes and the connection is closed with 1008
    /// `Authentication required` (seed 002).
    Session,
}

/// One dialect the server speaks: the path its clients upgrade at, and its codec.
pub struct DialectEntry {
    pub id: DialectId,
    /// Its name in logs, metrics (`dialect` label) and the configuration.
    pub name: &'static str,
    /// The request path whose WebSocket upgrade speaks it.
    pub path: &'static str,
    pub auth: Auth,
    pub codec: &'static (dyn Dialect + Sync),
}

impl fmt::Debug for DialectEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DialectEntry")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("path", &self.path)
            .finish()
    }
}

/// How many dialects [`DIALECTS`] has.
pub const DIALECT_COUNT: usize = 4;

/// The dialect table: entry `i` has id `DialectId(i)`.
pub static DIALECTS: [DialectEntry; DIALECT_COUNT] = [
    DialectEntry {
        id: DialectId::CANONICAL,
        name: "canonical",
        path: "/v1/stream",
        auth: Auth::Required,
        codec: &canonical::Canonical,
    },
    DialectEntry { id: DialectId(1), name: "fastws", path: "/api/v1/ws", auth: Auth::Optional, codec: &fastws::FastWs },
    DialectEntry { id: DialectId(2), name: "legacy", path: "/ws", auth: Auth::Optional, codec: &legacy::Legacy },
    DialectEntry {
        id: DialectId(3),
        name: "portfolio",
        path: "/ws/portfolio",
        auth: Auth::Session,
        codec: &portfolio::Portfolio,
    },
];

/// The dialect whose clients upgrade at `path`.
pub fn by_path(path: &str) -> Option<&'static DialectEntry> {
    DIALECTS.iter().find(|d| d.path == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_indexed_by_id_with_one_entry_per_path_and_name() {
        for (i, d) in DIALECTS.iter().enumerate() {
            assert_eq!(usize::from(d.id.0), i, "{} is at {i} with id {:?}", d.name, d.id);
            assert_eq!(by_path(d.path).map(|e| e.id), Some(d.id), "path {} is served by another entry", d.path);
            assert_eq!(DIALECTS.iter().filter(|e| e.name == d.name).count(), 1, "name {} twice", d.name);
            assert!(d.path.starts_with('/'), "{}: path {}", d.name, d.path);
        }
        for d in &DIALECTS {
            assert!(d.codec.parts().len() <= 7, "{}: a connection keeps its parts in 7 bits", d.name);
        }
        assert_eq!(DialectId::CANONICAL.entry().path, "/v1/stream");
        assert!(by_path("/v1/publish").is_none(), "publishing is not a dialect");
    }
}
