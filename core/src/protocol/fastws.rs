//! Seed 003's dialect, `/api/v1/ws` (a FastWS server): `{"type","payload"}` envelopes, `bars.subscribe` and
//! `bars.unsubscribe` answered by `*.response`, `bars.update` broadcasts, and topics named by the seed's
//! topic-builder contract (`bars:{"resolution":"1","symbol":"AAPL"}`).
//!
//! Its errors are closes, as FastWS's are: text that is not JSON (or a binary frame) closes with 1003
//! `Unsupported Data`, an unknown `type` with 1003 `No matching type`, a payload that does not validate with
//! 1003 `Could not validate payload` ([`Dialect::error_close`]).
//!
//! The request's operation, symbol and resolution travel through the engine as the request's `id` (the
//! dialect's own correlation, never sent), so that a reply or an error can name them.

use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value};

use super::records::{record, records};
use super::{
    ClientRequest, Dialect, ErrorCode, Reply, RequestError, SessionLimits, Subscribe, Unsubscribe, Update, UpdateKind,
};
use crate::channel::Channel;
use crate::json::{write_str, write_u64};
use crate::time::{parse_rfc3339, Micros};
use crate::topic::{normalize_symbol, BarInterval};
use crate::ws::{close, write_header, Opcode, MAX_HEADER_LEN};

/// The close of a text that is not JSON.
pub const NOT_JSON: (u16, &str) = (close::UNSUPPORTED_DATA, "Unsupported Data");
/// The close of an unknown operation.
pub const NO_MATCHING_TYPE: (u16, &str) = (close::UNSUPPORTED_DATA, "No matching type");
/// The close of a payload that does not validate.
pub const INVALID_PAYLOAD: (u16, &str) = (close::UNSUPPORTED_DATA, "Could not validate payload");

/// FastWS's liveness rule: a client that sent no message for `heartbeat_s`, or connected for longer than
/// `lifespan_s`, is closed with 1003 and the seed's reason, which names both figures.
pub fn session_limits(heartbeat_s: u32, lifespan_s: u32) -> SessionLimits {
    let reason =
        format!("Connection timed out. Heartbeat interval {heartbeat_s}.0. Max connection lifespan {lifespan_s}.0");
    SessionLimits {
        silent: i64::from(heartbeat_s) * 1_000_000,
        lifespan: i64::from(lifespan_s) * 1_000_000,
        // Made once per server start: a close reason outlives every connection.
        close: (close::UNSUPPORTED_DATA, Box::leak(reason.into_boxed_str())),
    }
}

/// Separates the parts of the correlation carried as a request's `id`.
const SEP: char = '\u{1f}';

/// Seed 003's dialect.
#[derive(Debug, Clone, Copy, Default)]
pub struct FastWs;

/// The seed's resolutions and the server's bar intervals that serve them.
const SERVED: [(&str, BarInterval); 8] = [
    ("1", BarInterval::M1),
    ("5", BarInterval::M5),
    ("15", BarInterval::M15),
    ("30", BarInterval::M30),
    ("60", BarInterval::H1),
    ("D", BarInterval::D1),
    ("W", BarInterval::W1),
    ("M", BarInterval::Mo1),
];

/// The bar interval serving a resolution.
pub fn interval_of(resolution: &str) -> Option<BarInterval> {
    SERVED.iter().find(|(r, _)| *r == resolution).map(|(_, i)| *i)
}

/// The resolution of a bar interval (by its name, `1m`), if the dialect has one for it (not `1s`).
fn resolution_of(interval: &str) -> Option<&'static str> {
    SERVED.iter().find(|(_, i)| i.as_str() == interval).map(|(r, _)| *r)
}

/// Appends the topic of a bars subscription as a JSON string: `bars:` and the sorted compact JSON of its
/// parameters.
fn write_bars_topic(out: &mut Vec<u8>, symbol: &str, resolution: &str) {
    let mut params = Vec::with_capacity(48);
    params.extend_from_slice(b"bars:{\"resolution\":");
    write_str(&mut params, resolution);
    params.extend_from_slice(b",\"symbol\":");
    write_str(&mut params, symbol);
    params.push(b'}');
    // The parts are strings of valid UTF-8 joined by ASCII.
    write_str(out, std::str::from_utf8(&params).unwrap_or_default());
}

/// The private routes of the seed's topic examples (`orders:{"accountId":"TEST-001"}`), each a part of a
/// canonical channel of the user: bit `i` of a connection's parts is entry `i`, and its records in a piece
/// have kind `KINDS[i]`.
pub const PRIVATE: [(&str, Channel); 4] = [
    ("orders", Channel::Orders),
    ("executions", Channel::Executions),
    ("positions", Channel::Portfolio),
    ("equity", Channel::Portfolio),
];

const KINDS: [u8; 4] = [b'o', b'x', b'p', b'q'];

/// Appends the topic of a private route's subscription as a JSON string: `orders:{"accountId":"TEST-001"}`.
fn write_account_topic(out: &mut Vec<u8>, route: &str, account: &str) {
    let mut topic = Vec::with_capacity(48);
    topic.extend_from_slice(route.as_bytes());
    topic.extend_from_slice(b":{\"accountId\":");
    write_str(&mut topic, account);
    topic.push(b'}');
    write_str(out, std::str::from_utf8(&topic).unwrap_or_default());
}

/// A private route's request: its operation and account, carried as the request's id.
fn private_request(op: &str, payload: &Value) -> Result<ClientRequest, RequestError> {
    let (route, action) = op.split_once('.').unwrap_or((op, ""));
    let Some(i) = PRIVATE.iter().position(|(r, _)| *r == route) else {
        return Err(RequestError::new(None, ErrorCode::UnknownAction, "no matching type"));
    };
    let account = payload
        .get("accountId")
        .and_then(|a| a.as_str())
        .filter(|a| !a.is_empty() && a.len() <= 128)
        .ok_or_else(|| invalid(None, "no accountId"))?;
    // The topic is built from the parameters: one the server would not use in it is refused rather than
    // left out of a topic the client then never sees.
    if payload.as_object().is_some_and(|o| o.iter().any(|(k, _)| k != "accountId")) {
        return Err(invalid(None, "unknown parameter"));
    }
    Ok(ClientRequest::Channels {
        subscribe: action == "subscribe",
        parts: 1 << i,
        id: Some(format!("{op}{SEP}{account}")),
    })
}

fn invalid(id: Option<String>, message: impl Into<String>) -> RequestError {
    RequestError::new(id, ErrorCode::InvalidField, message)
}

impl Dialect for FastWs {
    fn decode(&self, text: &[u8]) -> Result<ClientRequest, RequestError> {
        let value: Value = sonic_rs::from_slice(text)
            .map_err(|e| RequestError::new(None, ErrorCode::InvalidJson, format!("malformed JSON: {e}")))?;
        if !value.is_object() {
            return Err(RequestError::new(None, ErrorCode::InvalidJson, "a message must be a JSON object"));
        }
        let op = match value.get("type").and_then(|t| t.as_str()) {
            Some(op @ ("bars.subscribe" | "bars.unsubscribe")) => op,
            Some(op)
                if op.split_once('.').is_some_and(|(route, action)| {
                    PRIVATE.iter().any(|(r, _)| *r == route) && matches!(action, "subscribe" | "unsubscribe")
                }) =>
            {
                op
            }
            _ => return Err(RequestError::new(None, ErrorCode::UnknownAction, "no matching type")),
        };
        let payload = value.get("payload").filter(|p| p.is_object()).ok_or_else(|| invalid(None, "no payload"))?;
        if !op.starts_with("bars.") {
            return private_request(op, payload);
        }
        let raw = payload.get("symbol").and_then(|s| s.as_str()).ok_or_else(|| invalid(None, "no symbol"))?;
        let symbol = normalize_symbol(raw).ok_or_else(|| invalid(None, "invalid symbol"))?;
        let resolution = match payload.get("params") {
            None => "1",
            Some(p) if p.is_null() => "1",
            Some(p) if p.is_object() => match p.get("resolution") {
                None => "1",
                Some(r) => r.as_str().ok_or_else(|| invalid(None, "resolution must be a string"))?,
            },
            Some(_) => return Err(invalid(None, "params must be an object")),
        };
        let Some(interval) = interval_of(resolution) else {
            return Err(invalid(None, "unknown resolution"));
        };
        let id = Some(format!("{op}{SEP}{symbol}{SEP}{resolution}"));
        Ok(if op == "bars.subscribe" {
            ClientRequest::Subscribe(Subscribe {
                id,
                channel: Channel::Bars,
                symbols: vec![symbol],
                throttle_ms: 0,
                interval: Some(interval),
                from_sequence: Vec::new(),
                epoch: None,
                restore: false,
            })
        } else {
            ClientRequest::Unsubscribe(Unsubscribe {
                id,
                channel: Channel::Bars,
                symbols: Some(vec![symbol]),
                interval: Some(interval),
            })
        })
    }

    fn error_close(&self, error: &RequestError) -> Option<(u16, &'static str)> {
        match error.code {
            ErrorCode::InvalidJson | ErrorCode::UnsupportedData => Some(NOT_JSON),
            ErrorCode::UnknownAction => Some(NO_MATCHING_TYPE),
            ErrorCode::InvalidField | ErrorCode::InvalidSymbol | ErrorCode::InvalidMessage => Some(INVALID_PAYLOAD),
            _ => None,
        }
    }

    /// The seed's clients subscribe again to what they have as their heartbeat: that must not interrupt it.
    fn resubscribe_restarts(&self) -> bool {
        false
    }

    fn parts(&self) -> &'static [(&'static str, Channel)] {
        &PRIVATE
    }

    /// An account route is the user's own account only.
    fn admits(&self, id: Option<&str>, user: Option<&str>) -> Result<(), RequestError> {
        let account = id.and_then(|id| id.split(SEP).nth(1)).unwrap_or_default();
        match user {
            Some(u) if u == account => Ok(()),
            Some(_) => Err(RequestError::new(id.map(str::to_owned), ErrorCode::AuthRequired, "not your account")),
            None => Err(RequestError::new(
                id.map(str::to_owned),
                ErrorCode::AuthRequired,
                "account routes need a token of the account's user",
            )),
        }
    }

    fn renders_piece(&self, channel: Channel) -> bool {
        PRIVATE.iter().any(|(_, c)| *c == channel)
    }

    /// Private routes' updates go through windows of no length: each to its connections at once, as the
    /// frames of the routes the connection chose.
    fn batches_per_connection(&self) -> bool {
        true
    }

    /// Each record of a piece is a whole frame of its route: the connection gets those of the routes it
    /// chose, as slices of the piece the owner rendered once.
    fn window_frames(&self, parts: u8, pieces: &[bytes::Bytes], send: &mut dyn FnMut(bytes::Bytes)) {
        for piece in pieces {
            for r in records(piece) {
                let Some(i) = KINDS.iter().position(|k| *k == r.kind) else { continue };
                if parts & (1 << i) != 0 {
                    let at = r.json.as_ptr() as usize - piece.as_ptr() as usize;
                    send(piece.slice(at..at + r.json.len()));
                }
            }
        }
    }

    fn encode_update(&self, u: &Update<'_>, out: &mut Vec<u8>) {
        if self.renders_piece(u.channel) {
            return private_piece(u, out);
        }
        // Live bars only: FastWS sends nothing on subscribe.
        if u.channel != Channel::Bars || u.kind != UpdateKind::Update {
            return;
        }
        let Ok(bar) = sonic_rs::from_slice::<Value>(u.data) else { return };
        let text = |k: &str| bar.get(k).and_then(|v| v.as_str());
        let (Some(symbol), Some(resolution), Some(start)) =
            (text("symbol"), text("interval").and_then(resolution_of), text("start").and_then(parse_rfc3339))
        else {
            return;
        };
        out.extend_from_slice(b"{\"type\":\"bars.update\",\"topic\":");
        write_bars_topic(out, symbol, resolution);
        out.extend_from_slice(b",\"payload\":{\"time\":");
        write_u64(out, (start / 1000).max(0) as u64);
        for key in ["open", "high", "low", "close"] {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(b"\":");
            match bar.get(key).and_then(|v| v.as_f64()) {
                Some(v) => crate::json::write_f64(out, v),
                None => out.extend_from_slice(b"null"),
            }
        }
        out.extend_from_slice(b",\"volume\":");
        let volume = bar.get("volume").and_then(|v| v.as_f64()).unwrap_or(0.0);
        write_u64(out, if volume.is_finite() && volume > 0.0 { volume.round() as u64 } else { 0 });
        out.extend_from_slice(b"}}");
    }

    fn encode_reply(&self, reply: &Reply<'_>, _now: Micros, out: &mut Vec<u8>) {
        let (id, status, message) = match reply {
            Reply::Subscribed { id, .. } | Reply::Unsubscribed { id, .. } | Reply::Channels { id, .. } => {
                (*id, "ok", None)
            }
            Reply::Error { id: Some(id), message, .. } => (Some(*id), "error", Some(*message)),
            Reply::Error { id: None, code, message } => {
                // Not one of the seed's: an error no request caused (the rate limit, a dropped critical message).
                out.extend_from_slice(b"{\"type\":\"error\",\"payload\":{\"code\":");
                write_str(out, code.as_str());
                out.extend_from_slice(b",\"message\":");
                write_str(out, message);
                out.extend_from_slice(b"}}");
                return;
            }
            // No welcome, pong, reset or notice in this dialect.
            _ => return,
        };
        let Some(mut parts) = id.map(|id| id.split(SEP)) else { return };
        let (Some(op), Some(key)) = (parts.next(), parts.next()) else { return };
        let Some(resolution) = parts.next() else {
            return private_response(out, op, key, status, message);
        };
        let symbol = key;
        out.extend_from_slice(b"{\"type\":");
        write_str(out, &format!("{op}.response"));
        out.extend_from_slice(b",\"payload\":{\"status\":\"");
        out.extend_from_slice(status.as_bytes());
        out.extend_from_slice(b"\",\"symbol\":");
        write_str(out, symbol);
        out.extend_from_slice(b",\"message\":");
        let text = match message {
            Some(m) => m.to_owned(),
            None if op == "bars.subscribe" => format!("Subscribed to {symbol}"),
            None => format!("Unsubscribed from {symbol}"),
        };
        write_str(out, &text);
        out.extend_from_slice(b",\"topic\":");
        write_bars_topic(out, symbol, resolution);
        out.extend_from_slice(b"}}");
    }
}

/// A private route's update as a piece: one record per route it feeds (an order, an execution; a
/// portfolio's positions and its equity), each a whole frame `{route}.update` with the route's topic for the
/// topic's user, snapshots included (a subscription starts at the latest state).
fn private_piece(u: &Update<'_>, out: &mut Vec<u8>) {
    let frame = |out: &mut Vec<u8>, kind: usize, payload: &[u8]| {
        let route = PRIVATE[kind].0;
        let mut json = Vec::with_capacity(64 + payload.len());
        json.extend_from_slice(b"{\"type\":\"");
        json.extend_from_slice(route.as_bytes());
        json.extend_from_slice(b".update\",\"topic\":");
        write_account_topic(&mut json, route, u.key);
        json.extend_from_slice(b",\"payload\":");
        json.extend_from_slice(payload);
        json.push(b'}');
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = write_header(Opcode::Text, json.len(), &mut head);
        let mut whole = Vec::with_capacity(n + json.len());
        whole.extend_from_slice(&head[MAX_HEADER_LEN - n..]);
        whole.extend_from_slice(&json);
        record(out, KINDS[kind], u.timestamp, "", &whole);
    };
    match u.channel {
        Channel::Orders => frame(out, 0, u.data),
        Channel::Executions => frame(out, 1, u.data),
        Channel::Portfolio => {
            let Ok(data) = sonic_rs::from_slice::<Value>(u.data) else { return };
            let mut positions = b"{\"positions\":".to_vec();
            match data.get("positions") {
                Some(p) => positions.extend_from_slice(sonic_rs::to_string(p).unwrap_or_default().as_bytes()),
                None => positions.extend_from_slice(b"[]"),
            }
            positions.push(b'}');
            frame(out, 2, &positions);
            let mut equity = Vec::with_capacity(96);
            for key in ["total_value", "cash", "buying_power", "day_pnl"] {
                if let Some(v) = data.get(key) {
                    equity.push(if equity.is_empty() { b'{' } else { b',' });
                    write_str(&mut equity, key);
                    equity.push(b':');
                    equity.extend_from_slice(sonic_rs::to_string(v).unwrap_or_default().as_bytes());
                }
            }
            if equity.is_empty() {
                equity.push(b'{');
            }
            equity.push(b'}');
            frame(out, 3, &equity);
        }
        _ => {}
    }
}

/// `{route}.subscribe.response` (or unsubscribe) of a private route.
fn private_response(out: &mut Vec<u8>, op: &str, account: &str, status: &str, message: Option<&str>) {
    let route = op.split('.').next().unwrap_or_default();
    out.extend_from_slice(b"{\"type\":");
    write_str(out, &format!("{op}.response"));
    out.extend_from_slice(b",\"payload\":{\"status\":");
    write_str(out, status);
    out.extend_from_slice(b",\"accountId\":");
    write_str(out, account);
    out.extend_from_slice(b",\"message\":");
    let text = match message {
        Some(m) => m.to_owned(),
        None if op.ends_with(".subscribe") => format!("Subscribed to {route} of {account}"),
        None => format!("Unsubscribed from {route} of {account}"),
    };
    write_str(out, &text);
    out.extend_from_slice(b",\"topic\":");
    write_account_topic(out, route, account);
    out.extend_from_slice(b"}}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use sonic_rs::json;

    fn reply(r: &Reply<'_>) -> Value {
        let mut out = Vec::new();
        FastWs.encode_reply(r, 0, &mut out);
        sonic_rs::from_slice(&out).unwrap()
    }

    /// The topic of a bars subscription, as the string a client compares.
    fn bars_topic(symbol: &str, resolution: &str) -> String {
        let mut out = Vec::new();
        write_bars_topic(&mut out, symbol, resolution);
        sonic_rs::from_slice(&out).unwrap()
    }

    #[test]
    fn the_topic_follows_the_builder_contract() {
        assert_eq!(bars_topic("AAPL", "1"), r#"bars:{"resolution":"1","symbol":"AAPL"}"#);
    }

    #[test]
    fn the_seeds_subscribe_is_answered_as_the_seed_shows_with_the_contracts_topic() {
        let req = br#"{"type":"bars.subscribe","payload":{"symbol":"AAPL","params":{"resolution":"1"}}}"#;
        let ClientRequest::Subscribe(s) = FastWs.decode(req).unwrap() else { panic!("not a subscribe") };
        assert_eq!(
            (s.channel, s.symbols.as_slice(), s.interval),
            (Channel::Bars, &["AAPL".to_owned()][..], Some(BarInterval::M1))
        );
        let r = reply(&Reply::Subscribed {
            id: s.id.as_deref(),
            channel: s.channel,
            symbols: &s.symbols,
            interval: s.interval,
            throttle_ms: 0,
            subscription_id: "s-0-1-1",
        });
        let topic = r#"bars:{"resolution":"1","symbol":"AAPL"}"#;
        let want = json!({"type":"bars.subscribe.response","payload":{"status":"ok","symbol":"AAPL","message":"Subscribed to AAPL","topic":topic}});
        assert_eq!(r, want);
    }

    #[test]
    fn bad_input_closes_with_the_seeds_codes() {
        let close_of = |text: &[u8]| FastWs.error_close(&FastWs.decode(text).unwrap_err());
        assert_eq!(close_of(b"not json"), Some(NOT_JSON));
        assert_eq!(close_of(b"[1]"), Some(NOT_JSON));
        assert_eq!(close_of(br#"{"type":"quotes.subscribe","payload":{}}"#), Some(NO_MATCHING_TYPE));
        assert_eq!(close_of(br#"{"type":"orders.cancel","payload":{"accountId":"A"}}"#), Some(NO_MATCHING_TYPE));
        assert_eq!(close_of(br#"{"type":"orders.subscribe","payload":{}}"#), Some(INVALID_PAYLOAD));
        let extra = br#"{"type":"executions.subscribe","payload":{"accountId":"A","symbol":"AAPL"}}"#;
        assert_eq!(close_of(extra), Some(INVALID_PAYLOAD), "a parameter the topic would not name");
        assert_eq!(close_of(br#"{"payload":{}}"#), Some(NO_MATCHING_TYPE));
        assert_eq!(close_of(br#"{"type":"bars.subscribe"}"#), Some(INVALID_PAYLOAD));
        assert_eq!(close_of(br#"{"type":"bars.subscribe","payload":{"symbol":7}}"#), Some(INVALID_PAYLOAD));
        assert_eq!(
            close_of(br#"{"type":"bars.subscribe","payload":{"symbol":"AAPL","params":{"resolution":"2"}}}"#),
            Some(INVALID_PAYLOAD)
        );
    }

    #[test]
    fn every_resolution_of_the_seed_is_served_and_named_back() {
        for (resolution, interval) in SERVED {
            let text = format!(
                r#"{{"type":"bars.subscribe","payload":{{"symbol":"msft","params":{{"resolution":"{resolution}"}}}}}}"#
            );
            let ClientRequest::Subscribe(s) = FastWs.decode(text.as_bytes()).unwrap() else { panic!("{text}") };
            assert_eq!(s.interval, Some(interval));
            assert_eq!(resolution_of(interval.as_str()), Some(resolution));
        }
        assert_eq!(resolution_of("1s"), None, "1-second bars have no resolution in this dialect");
    }

    #[test]
    fn an_error_of_a_request_is_its_response_with_status_error() {
        let s = FastWs
            .decode(br#"{"type":"bars.subscribe","payload":{"symbol":"msft","params":{"resolution":"D"}}}"#)
            .unwrap();
        let ClientRequest::Subscribe(s) = s else { panic!("not a subscribe") };
        let r = reply(&Reply::Error { id: s.id.as_deref(), code: ErrorCode::SubscriptionLimit, message: "at most 2" });
        let topic = r#"bars:{"resolution":"D","symbol":"MSFT"}"#;
        let want = json!({"type":"bars.subscribe.response","payload":{"status":"error","symbol":"MSFT","message":"at most 2","topic":topic}});
        assert_eq!(r, want);
    }

    #[test]
    fn a_closed_bar_becomes_a_bars_update_with_milliseconds_and_an_integer_volume() {
        let data = br#"{"symbol":"AAPL","interval":"1m","start":"2023-10-12T08:00:00.000000Z","open":150.0,"high":151.0,"low":149.5,"close":150.5,"volume":1000000.0,"vwap":150.2}"#;
        let mut out = Vec::new();
        let u = Update {
            kind: UpdateKind::Update,
            channel: Channel::Bars,
            sequence: 3,
            timestamp: 0,
            source_ts: None,
            data,
            day: None,
            key: "",
        };
        FastWs.encode_update(&u, &mut out);
        let v: Value = sonic_rs::from_slice(&out).unwrap();
        let want = json!({"type":"bars.update","topic":r#"bars:{"resolution":"1","symbol":"AAPL"}"#,
            "payload":{"time":1697097600000u64,"open":150.0,"high":151.0,"low":149.5,"close":150.5,"volume":1000000u64}});
        assert_eq!(v, want);
        out.clear();
        FastWs.encode_update(&Update { kind: UpdateKind::Snapshot, ..u }, &mut out);
        assert!(out.is_empty(), "no snapshot on subscribe");
        FastWs.encode_update(&Update { channel: Channel::Quotes, ..u }, &mut out);
        assert!(out.is_empty(), "bars only");
    }

    #[test]
    fn private_routes_serve_the_users_own_account_with_the_contracts_topics() {
        let sub = FastWs.decode(br#"{"type":"orders.subscribe","payload":{"accountId":"TEST-001"}}"#).unwrap();
        let ClientRequest::Channels { subscribe: true, parts: 1, id: Some(id) } = sub else { panic!("{sub:?}") };
        assert!(FastWs.admits(Some(&id), Some("TEST-001")).is_ok());
        let mut out = Vec::new();
        FastWs.encode_reply(&Reply::Channels { id: Some(&id), subscribe: true, changed: 1, parts: 1 }, 0, &mut out);
        let want = json!({"type":"orders.subscribe.response","payload":{"status":"ok","accountId":"TEST-001",
            "message":"Subscribed to orders of TEST-001","topic":r#"orders:{"accountId":"TEST-001"}"#}});
        assert_eq!(sonic_rs::from_slice::<Value>(&out).unwrap(), want);
        for user in [Some("someone-else"), None] {
            let e = FastWs.admits(Some(&id), user).unwrap_err();
            assert_eq!(FastWs.error_close(&e), None, "answered, not closed");
            let mut out = Vec::new();
            FastWs.encode_reply(&Reply::Error { id: e.id.as_deref(), code: e.code, message: &e.message }, 0, &mut out);
            let v: Value = sonic_rs::from_slice(&out).unwrap();
            assert_eq!(
                (v["type"].as_str(), v["payload"]["status"].as_str()),
                (Some("orders.subscribe.response"), Some("error"))
            );
        }
        let ClientRequest::Channels { subscribe: false, parts: 8, .. } =
            FastWs.decode(br#"{"type":"equity.unsubscribe","payload":{"accountId":"TEST-001"}}"#).unwrap()
        else {
            panic!()
        };
    }

    #[test]
    fn a_portfolio_is_a_positions_update_and_an_equity_update_each_for_its_route() {
        let data = br#"{"total_value":1515.0,"day_pnl":3.0,"cash":10.0,"buying_power":20.0,"positions":[{"symbol":"AAPL","quantity":10}]}"#;
        let u = Update {
            kind: UpdateKind::Snapshot,
            channel: Channel::Portfolio,
            sequence: 1,
            timestamp: 0,
            source_ts: None,
            data,
            day: None,
            key: "TEST-001",
        };
        let mut piece = Vec::new();
        FastWs.encode_update(&u, &mut piece);
        let pieces = [bytes::Bytes::from(piece)];
        let frames = |parts: u8| -> Vec<Value> {
            let mut out = Vec::new();
            FastWs.window_frames(parts, &pieces, &mut |f| out.push(f));
            let payload = |f: &[u8]| match f[1] & 0x7F {
                126 => f[4..].to_vec(),
                _ => f[2..].to_vec(),
            };
            out.iter().map(|f| sonic_rs::from_slice(&payload(f)).unwrap()).collect()
        };
        let both = frames(0b1100);
        assert_eq!(both.len(), 2);
        assert_eq!(
            both[0],
            json!({"type":"positions.update","topic":r#"positions:{"accountId":"TEST-001"}"#,
            "payload":{"positions":[{"symbol":"AAPL","quantity":10}]}})
        );
        assert_eq!(
            both[1],
            json!({"type":"equity.update","topic":r#"equity:{"accountId":"TEST-001"}"#,
            "payload":{"total_value":1515.0,"cash":10.0,"buying_power":20.0,"day_pnl":3.0}})
        );
        assert_eq!(frames(0b1000), [both[1].clone()], "equity only");
        assert!(frames(0b0011).is_empty(), "orders and executions want none of it");
    }
}
