//! The canonical protocol v1 (PROTOCOL.md): `action`/`channel`/`symbols` in,
//! `type`/`channel`/`sequence`/`timestamp`/`data` out.

use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value};

use super::{ClientRequest, Dialect, ErrorCode, Reply, RequestError, Subscribe, Unsubscribe, Update, UpdateKind};
use crate::channel::{Channel, Scope};
use crate::json::{write_key, write_str, write_u64};
use crate::time::{write_rfc3339, Micros};
use crate::topic::{normalize_symbol, BarInterval};

/// Longest accepted request `id`.
pub const MAX_ID_LEN: usize = 64;
/// Longest accepted `throttle_ms`.
pub const MAX_THROTTLE_MS: u64 = 60_000;

/// The canonical v1 dialect.
#[derive(Debug, Clone, Copy, Default)]
pub struct Canonical;

impl Dialect for Canonical {
    fn decode(&self, text: &[u8]) -> Result<ClientRequest, RequestError> {
        let value: Value = sonic_rs::from_slice(text)
            .map_err(|e| RequestError::new(None, ErrorCode::InvalidJson, format!("malformed JSON: {e}")))?;
        if !value.is_object() {
            return Err(RequestError::new(None, ErrorCode::InvalidMessage, "a request must be a JSON object"));
        }
        let id = match value.get("id") {
            None => None,
            Some(v) if v.is_null() => None,
            Some(v) => match v.as_str() {
                Some(s) if s.len() <= MAX_ID_LEN => Some(s.to_owned()),
                _ => {
                    let msg = format!("field 'id' must be a string of at most {MAX_ID_LEN} bytes");
                    return Err(RequestError::new(None, ErrorCode::InvalidField, msg));
                }
            },
        };
        let r = Request { value: &value, id };
        let action = r.str_field("action")?.ok_or_else(|| r.err(ErrorCode::InvalidField, "missing field 'action'"))?;
        match action {
            "subscribe" => r.subscribe().map(ClientRequest::Subscribe),
            "unsubscribe" => r.unsubscribe().map(ClientRequest::Unsubscribe),
            "ping" => Ok(ClientRequest::Ping { id: r.id }),
            "ack" => {
                let channel = r.channel()?;
                if !channel.is_critical() {
                    let msg = format!("channel '{channel}' has no acknowledgements");
                    return Err(r.err(ErrorCode::InvalidField, &msg));
                }
                let sequence = r
                    .u64_field("sequence")?
                    .ok_or_else(|| r.err(ErrorCode::InvalidField, "missing field 'sequence'"))?;
                Ok(ClientRequest::Ack { id: r.id, channel, sequence })
            }
            other => Err(r.err(ErrorCode::UnknownAction, &format!("unknown action '{}'", clip(other)))),
        }
    }

    fn encode_update(&self, u: &Update<'_>, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"type\":\"");
        out.extend_from_slice(match u.kind {
            UpdateKind::Update => u.channel.update_type().as_bytes(),
            UpdateKind::Snapshot => b"snapshot",
        });
        out.extend_from_slice(b"\",\"channel\":\"");
        out.extend_from_slice(u.channel.name().as_bytes());
        out.extend_from_slice(b"\",\"sequence\":");
        write_u64(out, u.sequence);
        out.extend_from_slice(b",\"timestamp\":\"");
        write_rfc3339(u.timestamp, out);
        out.push(b'"');
        if let Some(ts) = u.source_ts {
            out.extend_from_slice(b",\"source_ts\":");
            out.extend_from_slice(ts);
        }
        out.extend_from_slice(b",\"data\":");
        out.extend_from_slice(u.data);
        out.push(b'}');
    }

    fn encode_reply(&self, reply: &Reply<'_>, now: Micros, out: &mut Vec<u8>) {
        match reply {
            // The canonical protocol chooses channels by subscribe, never by parts.
            Reply::Channels { .. } => return,
            Reply::Welcome { connection_id, client_id, user_id, epoch, heartbeat_s } => {
                out.extend_from_slice(b"{\"type\":\"welcome\",");
                str_field(out, "connection_id", connection_id);
                str_field(out, "client_id", client_id);
                write_key(out, "user_id");
                match user_id {
                    Some(u) => write_str(out, u),
                    None => out.extend_from_slice(b"null"),
                }
                out.push(b',');
                str_field(out, "epoch", epoch);
                write_key(out, "heartbeat_s");
                write_u64(out, u64::from(*heartbeat_s));
                out.extend_from_slice(b",\"protocol\":1,");
                timestamp(out, now);
            }
            Reply::Subscribed { id, channel, symbols, interval, throttle_ms, subscription_id } => {
                out.extend_from_slice(b"{\"type\":\"subscribed\",");
                id_field(out, *id);
                str_field(out, "channel", channel.name());
                symbols_field(out, symbols);
                if let Some(i) = interval {
                    str_field(out, "interval", i.as_str());
                }
                write_key(out, "throttle_ms");
                write_u64(out, u64::from(*throttle_ms));
                out.push(b',');
                write_key(out, "subscription_id");
                write_str(out, subscription_id);
            }
            Reply::Unsubscribed { id, channel, symbols } => {
                out.extend_from_slice(b"{\"type\":\"unsubscribed\",");
                id_field(out, *id);
                str_field(out, "channel", channel.name());
                write_key(out, "symbols");
                write_symbols(out, symbols);
            }
            Reply::Pong { id } => {
                out.extend_from_slice(b"{\"type\":\"pong\",");
                id_field(out, *id);
                timestamp(out, now);
            }
            Reply::Error { id, code, message } => {
                out.extend_from_slice(b"{\"type\":\"error\",");
                id_field(out, *id);
                str_field(out, "code", code.as_str());
                str_field(out, "message", message);
                timestamp(out, now);
            }
            Reply::Reset { channel, symbol, reason } => {
                out.extend_from_slice(b"{\"type\":\"reset\",");
                str_field(out, "channel", channel.name());
                if let Some(s) = symbol {
                    str_field(out, "symbol", s);
                }
                write_key(out, "reason");
                write_str(out, reason);
            }
            Reply::System { level, message, retry_after_ms } => {
                out.extend_from_slice(b"{\"type\":\"system\",\"channel\":\"system\",");
                timestamp(out, now);
                out.extend_from_slice(b",\"data\":{");
                str_field(out, "level", level);
                write_key(out, "message");
                write_str(out, message);
                if let Some(ms) = retry_after_ms {
                    out.push(b',');
                    write_key(out, "retry_after_ms");
                    write_u64(out, *ms);
                }
                out.push(b'}');
            }
        }
        out.push(b'}');
    }
}

/// Field access with typed errors that carry the request's id.
struct Request<'v> {
    value: &'v Value,
    id: Option<String>,
}

impl<'v> Request<'v> {
    fn err(&self, code: ErrorCode, msg: &str) -> RequestError {
        RequestError::new(self.id.clone(), code, msg)
    }

    fn present(&self, key: &str) -> Option<&'v Value> {
        self.value.get(key).filter(|v| !v.is_null())
    }

    fn str_field(&self, key: &str) -> Result<Option<&'v str>, RequestError> {
        match self.present(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.err(ErrorCode::InvalidField, &format!("field '{key}' must be a string"))),
        }
    }

    fn u64_field(&self, key: &str) -> Result<Option<u64>, RequestError> {
        match self.present(key) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                self.err(ErrorCode::InvalidField, &format!("field '{key}' must be a non-negative integer"))
            }),
        }
    }

    fn channel(&self) -> Result<Channel, RequestError> {
        let name =
            self.str_field("channel")?.ok_or_else(|| self.err(ErrorCode::InvalidField, "missing field 'channel'"))?;
        Channel::from_name(name)
            .ok_or_else(|| self.err(ErrorCode::UnknownChannel, &format!("unknown channel '{}'", clip(name))))
    }

    /// `symbols`, normalized; `None` when absent.
    fn symbols(&self) -> Result<Option<Vec<String>>, RequestError> {
        let Some(v) = self.present("symbols") else { return Ok(None) };
        let bad = || self.err(ErrorCode::InvalidField, "field 'symbols' must be an array of strings");
        let arr = v.as_array().ok_or_else(bad)?;
        let mut out = Vec::with_capacity(arr.len());
        for item in arr.iter() {
            let s = item.as_str().ok_or_else(bad)?;
            let sym = normalize_symbol(s)
                .ok_or_else(|| self.err(ErrorCode::InvalidSymbol, &format!("invalid symbol '{}'", clip(s))))?;
            if !out.contains(&sym) {
                out.push(sym);
            }
        }
        Ok(Some(out))
    }

    fn interval(&self, channel: Channel) -> Result<Option<BarInterval>, RequestError> {
        let raw = self.str_field("interval")?;
        if channel != Channel::Bars {
            return Ok(None);
        }
        match raw {
            None => Ok(Some(BarInterval::M1)),
            Some(s) => BarInterval::parse(s).map(Some).ok_or_else(|| {
                self.err(
                    ErrorCode::InvalidField,
                    "field 'interval' must be one of 1s, 1m, 5m, 15m, 30m, 1h, 1d, 1w, 1mo",
                )
            }),
        }
    }

    fn subscribe(self) -> Result<Subscribe, RequestError> {
        let channel = self.channel()?;
        let symbols = self.symbols()?;
        let interval = self.interval(channel)?;
        let throttle = self.u64_field("throttle_ms")?.unwrap_or(0);
        if throttle > MAX_THROTTLE_MS {
            return Err(
                self.err(ErrorCode::InvalidField, &format!("field 'throttle_ms' must be at most {MAX_THROTTLE_MS}"))
            );
        }
        let symbols = match channel.scope() {
            Scope::PerSymbol => match symbols {
                Some(s) if !s.is_empty() => s,
                _ => {
                    let msg = format!("channel '{channel}' needs a non-empty 'symbols' array");
                    return Err(self.err(ErrorCode::InvalidField, &msg));
                }
            },
            Scope::PerSymbolOrAll => symbols.unwrap_or_default(),
            // Private topics are the token's user's, whatever else the request names.
            _ => Vec::new(),
        };
        let mut from_sequence = Vec::new();
        if let Some(v) = self.present("from_sequence") {
            let bad = || self.err(ErrorCode::InvalidField, "field 'from_sequence' must map symbols to sequences");
            let obj = v.as_object().ok_or_else(bad)?;
            for (k, seq) in obj.iter() {
                let seq = seq.as_u64().ok_or_else(bad)?;
                let key = if k == "*" { "*".to_owned() } else { normalize_symbol(k).ok_or_else(bad)? };
                from_sequence.push((key, seq));
            }
        }
        let epoch = self.str_field("epoch")?.map(str::to_owned);
        let restore = match self.present("restore") {
            None => false,
            Some(v) => {
                v.as_bool().ok_or_else(|| self.err(ErrorCode::InvalidField, "field 'restore' must be a boolean"))?
            }
        };
        Ok(Subscribe {
            id: self.id,
            channel,
            symbols,
            throttle_ms: throttle as u32,
            interval,
            from_sequence,
            epoch,
            restore,
        })
    }

    fn unsubscribe(self) -> Result<Unsubscribe, RequestError> {
        let channel = self.channel()?;
        let symbols = self.symbols()?;
        let interval = match self.present("interval") {
            None => None,
            Some(_) => self.interval(channel)?,
        };
        Ok(Unsubscribe { id: self.id, channel, symbols, interval })
    }
}

/// Cuts untrusted text echoed in error messages.
fn clip(s: &str) -> &str {
    let mut end = s.len().min(40);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn str_field(out: &mut Vec<u8>, key: &str, value: &str) {
    write_key(out, key);
    write_str(out, value);
    out.push(b',');
}

fn id_field(out: &mut Vec<u8>, id: Option<&str>) {
    if let Some(id) = id {
        str_field(out, "id", id);
    }
}

fn symbols_field(out: &mut Vec<u8>, symbols: &[String]) {
    write_key(out, "symbols");
    write_symbols(out, symbols);
    out.push(b',');
}

fn write_symbols(out: &mut Vec<u8>, symbols: &[String]) {
    out.push(b'[');
    for (i, s) in symbols.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, s);
    }
    out.push(b']');
}

fn timestamp(out: &mut Vec<u8>, now: Micros) {
    out.extend_from_slice(b"\"timestamp\":\"");
    write_rfc3339(now, out);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value as J};

    fn decode(s: &str) -> Result<ClientRequest, RequestError> {
        Canonical.decode(s.as_bytes())
    }

    fn reply(r: &Reply<'_>) -> J {
        let mut out = Vec::new();
        Canonical.encode_reply(r, 1_770_474_600_123_456, &mut out);
        serde_json::from_slice(&out).expect("reply is JSON")
    }

    #[test]
    fn decodes_protocol_examples() {
        let r = decode(
            r#"{"action":"subscribe","channel":"quotes","symbols":["AAPL","msft"],"throttle_ms":100,"id":"r1"}"#,
        );
        let ClientRequest::Subscribe(s) = r.unwrap() else { panic!("not a subscribe") };
        assert_eq!(s.symbols, ["AAPL", "MSFT"]);
        assert_eq!((s.throttle_ms, s.id.as_deref(), s.interval), (100, Some("r1"), None));

        let ClientRequest::Subscribe(s) =
            decode(r#"{"action":"subscribe","channel":"bars","symbols":["AAPL"]}"#).unwrap()
        else {
            panic!()
        };
        assert_eq!(s.interval, Some(BarInterval::M1));

        let ClientRequest::Subscribe(s) =
            decode(r#"{"action":"subscribe","channel":"quotes","symbols":["AAPL"],"from_sequence":{"AAPL":1041}}"#)
                .unwrap()
        else {
            panic!()
        };
        assert_eq!(s.from_sequence, [("AAPL".to_owned(), 1041)]);
        assert_eq!(s.epoch, None);

        let ClientRequest::Subscribe(s) =
            decode(r#"{"action":"subscribe","channel":"orders","from_sequence":{"*":7},"epoch":"e-9"}"#).unwrap()
        else {
            panic!()
        };
        assert_eq!((s.from_sequence, s.epoch.as_deref()), (vec![("*".to_owned(), 7)], Some("e-9")));
        let ClientRequest::Subscribe(s) =
            decode(r#"{"action":"subscribe","channel":"quotes","symbols":["A"],"restore":true}"#).unwrap()
        else {
            panic!()
        };
        assert!(s.restore);
        let e = decode(r#"{"action":"subscribe","channel":"quotes","symbols":["A"],"restore":"yes"}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidField);
        let e = decode(r#"{"action":"subscribe","channel":"quotes","symbols":["A"],"epoch":5}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidField);

        let ClientRequest::Subscribe(s) =
            decode(r#"{"action":"subscribe","channel":"orders","symbols":["X"],"user_id":"u-1"}"#).unwrap()
        else {
            panic!()
        };
        assert!(s.symbols.is_empty(), "private subscriptions ignore symbols");

        assert_eq!(
            decode(r#"{"action":"unsubscribe","channel":"quotes"}"#).unwrap(),
            ClientRequest::Unsubscribe(Unsubscribe {
                id: None,
                channel: Channel::Quotes,
                symbols: None,
                interval: None
            })
        );
        assert_eq!(
            decode(r#"{"action":"ack","channel":"orders","sequence":57}"#).unwrap(),
            ClientRequest::Ack { id: None, channel: Channel::Orders, sequence: 57 }
        );
    }

    #[test]
    fn bad_requests_get_codes_and_keep_the_id() {
        let cases = [
            ("{", ErrorCode::InvalidJson, None),
            ("[1]", ErrorCode::InvalidMessage, None),
            (r#"{"action":"fly","id":"x"}"#, ErrorCode::UnknownAction, Some("x")),
            (
                r#"{"action":"subscribe","channel":"quotez","symbols":["A"],"id":"r1"}"#,
                ErrorCode::UnknownChannel,
                Some("r1"),
            ),
            (
                r#"{"action":"subscribe","channel":"quotes","symbols":"AAPL","id":"r2"}"#,
                ErrorCode::InvalidField,
                Some("r2"),
            ),
            (r#"{"action":"subscribe","channel":"quotes","symbols":[1]}"#, ErrorCode::InvalidField, None),
            (r#"{"action":"subscribe","channel":"quotes"}"#, ErrorCode::InvalidField, None),
            (r#"{"action":"subscribe","channel":"quotes","symbols":["A B"]}"#, ErrorCode::InvalidSymbol, None),
            (
                r#"{"action":"subscribe","channel":"quotes","symbols":["A"],"throttle_ms":"fast"}"#,
                ErrorCode::InvalidField,
                None,
            ),
            (
                r#"{"action":"subscribe","channel":"quotes","symbols":["A"],"throttle_ms":-1}"#,
                ErrorCode::InvalidField,
                None,
            ),
            (
                r#"{"action":"subscribe","channel":"bars","symbols":["A"],"interval":"2h"}"#,
                ErrorCode::InvalidField,
                None,
            ),
            (r#"{"action":7}"#, ErrorCode::InvalidField, None),
            (r#"{"channel":"quotes"}"#, ErrorCode::InvalidField, None),
            (r#"{"action":"ping","id":5}"#, ErrorCode::InvalidField, None),
            (r#"{"action":"ack","channel":"quotes","sequence":1}"#, ErrorCode::InvalidField, None),
        ];
        for (text, code, id) in cases {
            let err = decode(text).unwrap_err();
            assert_eq!(err.code, code, "{text}: {err}");
            assert_eq!(err.id.as_deref(), id, "{text}");
        }
    }

    #[test]
    fn encodes_update_with_source_ts() {
        let mut out = Vec::new();
        let data = br#"{"symbol":"AAPL","bid":185.5}"#;
        let u = Update {
            kind: UpdateKind::Update,
            channel: Channel::Quotes,
            sequence: 1042,
            timestamp: 1_770_474_600_123_456,
            source_ts: Some(b"\"2026-02-07T14:30:00.120000Z\""),
            data,
            day: None,
            key: "",
        };
        Canonical.encode_update(&u, &mut out);
        let v: J = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            json!({"type":"quote","channel":"quotes","sequence":1042,"timestamp":"2026-02-07T14:30:00.123456Z",
                   "source_ts":"2026-02-07T14:30:00.120000Z","data":{"symbol":"AAPL","bid":185.5}})
        );
        out.clear();
        Canonical.encode_update(&Update { kind: UpdateKind::Snapshot, source_ts: None, ..u }, &mut out);
        let v: J = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["type"], "snapshot");
        assert!(v.get("source_ts").is_none());
    }

    #[test]
    fn encodes_replies() {
        let w = reply(&Reply::Welcome {
            connection_id: "c-1",
            client_id: "cl",
            user_id: Some("u-42"),
            epoch: "e1",
            heartbeat_s: 30,
        });
        assert_eq!(w["type"], "welcome");
        assert_eq!(w["user_id"], "u-42");
        assert_eq!(w["protocol"], 1);
        assert_eq!(w["timestamp"], "2026-02-07T14:30:00.123456Z");
        let syms = vec!["AAPL".to_owned(), "MSFT".to_owned()];
        let s = reply(&Reply::Subscribed {
            id: Some("r1"),
            channel: Channel::Quotes,
            symbols: &syms,
            interval: None,
            throttle_ms: 100,
            subscription_id: "s-1",
        });
        assert_eq!(
            s,
            json!({"type":"subscribed","id":"r1","channel":"quotes","symbols":["AAPL","MSFT"],"throttle_ms":100,"subscription_id":"s-1"})
        );
        let e = reply(&Reply::Error {
            id: None,
            code: ErrorCode::UnknownChannel,
            message: "unknown channel 'quotez' \"x\"",
        });
        assert_eq!(e["code"], "UNKNOWN_CHANNEL");
        assert_eq!(e["message"], "unknown channel 'quotez' \"x\"");
        assert_eq!(reply(&Reply::Pong { id: Some("p") })["id"], "p");
        let r = reply(&Reply::Reset { channel: Channel::Quotes, symbol: Some("AAPL"), reason: "history_unavailable" });
        assert_eq!(r, json!({"type":"reset","channel":"quotes","symbol":"AAPL","reason":"history_unavailable"}));
        let sys =
            reply(&Reply::System { level: "warning", message: "server shutting down", retry_after_ms: Some(1500) });
        assert_eq!(
            sys,
            json!({"type":"system","channel":"system","timestamp":"2026-02-07T14:30:00.123456Z",
                   "data":{"level":"warning","message":"server shutting down","retry_after_ms":1500}})
        );
        let u = reply(&Reply::Unsubscribed { id: None, channel: Channel::News, symbols: &[] });
        assert_eq!(u, json!({"type":"unsubscribed","channel":"news","symbols":[]}));
    }

    proptest! {
        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Canonical.decode(&data);
        }

        #[test]
        fn decode_never_panics_on_near_valid(action in "[a-z]{0,12}", channel in "[a-z]{0,10}", sym in ".{0,30}", t in any::<i64>()) {
            let text = serde_json::json!({"action": action, "channel": channel, "symbols": [sym], "throttle_ms": t}).to_string();
            let _ = Canonical.decode(text.as_bytes());
        }

        #[test]
        fn error_replies_are_always_json(msg in ".{0,80}", id in proptest::option::of("[ -~]{0,20}")) {
            let mut out = Vec::new();
            Canonical.encode_reply(&Reply::Error { id: id.as_deref(), code: ErrorCode::InvalidField, message: &msg }, 0, &mut out);
            let v: J = serde_json::from_slice(&out).unwrap();
            prop_assert_eq!(v["message"].as_str(), Some(msg.as_str()));
        }
    }
}
