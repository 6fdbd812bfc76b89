//! Seed 002's dialect, `/ws/portfolio` (the portfolio streaming API): `subscribe`/`unsubscribe` with
//! `channels` (`positions`, `orders`, `account`, `trades`) confirmed by `info`, `ping` answered by `pong`,
//! and `position_update`, `order_update`, `account_update`, `trade_executed` and `batch` frames, every one
//! `{"type","timestamp","userId","data"}` with the seed's camelCase fields and decimal strings.
//!
//! Its channels are parts of the canonical ones: `positions` and `account` both come from the user's
//! `portfolio` (its positions, its totals), `orders` from `orders`, `trades` from `executions`. A connection
//! chooses parts ([`ClientRequest::Channels`]); the engine subscribes the canonical channels behind them.
//!
//! Updates are batched per connection in windows (seed: "Events are aggregated in 1-second windows"). The
//! owner renders each update once, as a *piece*: a list of records, each one event of the seed (a portfolio
//! update is one record per position and one for the account). A connection's window collects pieces, and
//! [`Dialect::encode_window`] writes its frame from them: one event as is, several as one `batch`, folding
//! only superseded states (an older position of the same symbol, an older account).

use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value};

use super::records::{record, records, Record};
use super::{ClientRequest, Dialect, ErrorCode, Reply, RequestError, Update};
use crate::channel::Channel;
use crate::json::{write_f64, write_str};
use crate::time::{format_rfc3339, Micros};

/// Seed 002's dialect.
#[derive(Debug, Clone, Copy, Default)]
pub struct Portfolio;

/// The seed's channels, in its order (bit `i` of a connection's parts is entry `i`), and the canonical
/// channels behind them.
pub const PARTS: [(&str, Channel); 4] = [
    ("positions", Channel::Portfolio),
    ("orders", Channel::Orders),
    ("account", Channel::Portfolio),
    ("trades", Channel::Executions),
];

const POSITIONS: u8 = 1;
const ORDERS: u8 = 2;
const ACCOUNT: u8 = 4;
const TRADES: u8 = 8;

/// A record's kind in a piece, and the part it belongs to.
const KINDS: [(u8, u8, &str); 4] = [
    (b'p', POSITIONS, "position_update"),
    (b'o', ORDERS, "order_update"),
    (b'a', ACCOUNT, "account_update"),
    (b't', TRADES, "trade_executed"),
];

/// The seed's timestamp: RFC 3339 to the millisecond, `2026-01-04T15:30:45.123Z`.
pub fn write_timestamp(out: &mut Vec<u8>, micros: Micros) {
    let full = format_rfc3339(micros);
    out.push(b'"');
    out.extend_from_slice(&full[..23]);
    out.extend_from_slice(b"Z\"");
}

/// A figure as the seed writes money: a decimal string with at least two decimals (`"175.50"`), more when
/// the figure has them (`"0.0001"`).
fn money(v: f64) -> String {
    if !v.is_finite() {
        return "0.00".to_owned();
    }
    let cents = (v * 100.0).round() / 100.0;
    if (cents - v).abs() <= f64::EPSILON * v.abs().max(1.0) * 4.0 {
        format!("{cents:.2}")
    } else {
        ryu::Buffer::new().format_finite(v).to_owned()
    }
}

/// A quantity as a decimal string: `"100"`, `"0.5"`.
fn quantity(v: f64) -> String {
    if !v.is_finite() {
        return "0".to_owned();
    }
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        ryu::Buffer::new().format_finite(v).to_owned()
    }
}

/// A percentage to two decimals, `"3.08"`.
fn percent(v: f64) -> String {
    if v.is_finite() {
        format!("{:.2}", (v * 100.0).round() / 100.0)
    } else {
        "0.00".to_owned()
    }
}

fn num(v: &Value, key: &str) -> Option<f64> {
    let f = v.get(key)?;
    f.as_f64().or_else(|| f.as_str()?.parse().ok())
}

/// Writes `,"to":"…"` from `data`'s `key`: a string as it is, a number as a decimal string by `format`;
/// nothing when `data` lacks it.
fn field(out: &mut Vec<u8>, data: &Value, key: &str, to: &str, format: fn(f64) -> String) {
    let Some(v) = data.get(key).filter(|v| !v.is_null()) else { return };
    out.extend_from_slice(b",\"");
    out.extend_from_slice(to.as_bytes());
    out.extend_from_slice(b"\":");
    match (v.as_str(), v.as_f64()) {
        (Some(s), _) => write_str(out, s),
        (None, Some(f)) => write_str(out, &format(f)),
        _ => write_str(out, &sonic_rs::to_string(v).unwrap_or_default()),
    }
}

/// A string field copied as a string (an id given as a number becomes its digits).
fn text(f: f64) -> String {
    quantity(f)
}

fn position_json(p: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"{\"symbol\":");
    write_str(&mut out, p.get("symbol").and_then(|s| s.as_str()).unwrap_or_default());
    let q = num(p, "quantity").unwrap_or(0.0);
    let (avg, market) = (num(p, "avg_price").unwrap_or(0.0), num(p, "market_price").unwrap_or(0.0));
    let pnl = num(p, "unrealized_pnl").unwrap_or((market - avg) * q);
    let cost = (avg * q).abs();
    let side = match p.get("side").and_then(|s| s.as_str()) {
        Some(side) => side.to_owned(),
        None if q < 0.0 => "short".to_owned(),
        None => "long".to_owned(),
    };
    for (key, value) in [
        ("quantity", quantity(q)),
        ("currentPrice", money(market)),
        ("entryPrice", money(avg)),
        ("unrealizedPnl", money(pnl)),
        ("unrealizedPnlPercent", percent(if cost > 0.0 { pnl / cost * 100.0 } else { 0.0 })),
        ("marketValue", money(q * market)),
        ("side", side),
    ] {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
        write_str(&mut out, &value);
    }
    field(&mut out, p, "strategy_id", "strategyId", text);
    field(&mut out, p, "opened_at", "openedAt", text);
    out.push(b'}');
    out
}

fn account_json(data: &Value, at: Micros) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let total = num(data, "total_value").unwrap_or(0.0);
    let day = num(data, "day_pnl").unwrap_or(0.0);
    let base = total - day;
    for (i, (key, value)) in [
        ("equity", money(total)),
        ("buyingPower", money(num(data, "buying_power").unwrap_or(0.0))),
        ("cash", money(num(data, "cash").unwrap_or(0.0))),
        ("portfolioValue", money(total)),
        ("dayPnl", money(day)),
        ("dayPnlPercent", percent(if base > 0.0 { day / base * 100.0 } else { 0.0 })),
    ]
    .into_iter()
    .enumerate()
    {
        out.push(if i == 0 { b'{' } else { b',' });
        write_str(&mut out, key);
        out.push(b':');
        write_str(&mut out, &value);
    }
    out.extend_from_slice(b",\"timestamp\":");
    write_timestamp(&mut out, at);
    out.push(b'}');
    out
}

/// A field of an event's JSON: the canonical key, the seed's key, and how a number is written.
type Field = (&'static str, &'static str, fn(f64) -> String);

/// `order_update`'s data: its id, then the seed's fields in its order.
const ORDER: (&str, &str, &[Field]) = (
    "order_id",
    "orderId",
    &[
        ("broker_order_id", "brokerOrderId", text),
        ("symbol", "symbol", text),
        ("side", "side", text),
        ("type", "type", text),
        ("status", "status", text),
        ("qty", "qty", quantity),
        ("filled_qty", "filledQty", quantity),
        ("avg_price", "filledAvgPrice", money),
        ("limit_price", "limitPrice", money),
        ("submitted_at", "submittedAt", text),
        ("filled_at", "filledAt", text),
    ],
);

/// `trade_executed`'s data.
const TRADE: (&str, &str, &[Field]) = (
    "trade_id",
    "tradeId",
    &[
        ("symbol", "symbol", text),
        ("side", "side", text),
        ("quantity", "quantity", quantity),
        ("price", "price", money),
        ("pnl", "pnl", money),
        ("executed_at", "executedAt", text),
        ("strategy_id", "strategyId", text),
    ],
);

/// An event's data in the seed's shape: the id first (always there), then each field the event has.
fn event_json(data: &Value, (id, id_to, fields): (&str, &str, &[Field])) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.push(b'{');
    write_str(&mut out, id_to);
    out.push(b':');
    write_str(&mut out, &data.get(id).map(value_text).unwrap_or_default());
    for &(key, to, format) in fields {
        field(&mut out, data, key, to, format);
    }
    out.push(b'}');
    out
}

/// A value as text: a string's contents, anything else as JSON.
fn value_text(v: &Value) -> String {
    match v.as_str() {
        Some(s) => s.to_owned(),
        None => sonic_rs::to_string(v).unwrap_or_default(),
    }
}

fn error(code: ErrorCode, message: impl Into<String>) -> RequestError {
    RequestError::new(None, code, message)
}

/// `{"type":…,"timestamp":…,"userId":…,"data":` (the caller writes the data and the closing brace).
fn head(out: &mut Vec<u8>, kind: &str, at: Micros, user: Option<&str>) {
    out.extend_from_slice(b"{\"type\":");
    write_str(out, kind);
    out.extend_from_slice(b",\"timestamp\":");
    write_timestamp(out, at);
    out.extend_from_slice(b",\"userId\":");
    write_str(out, user.unwrap_or_default());
    out.extend_from_slice(b",\"data\":");
}

/// The names of the parts in `parts`, in the seed's order.
fn names(parts: u8) -> impl Iterator<Item = &'static str> {
    PARTS.iter().enumerate().filter(move |(i, _)| parts & (1 << i) != 0).map(|(_, (name, _))| *name)
}

impl Dialect for Portfolio {
    fn decode(&self, text: &[u8]) -> Result<ClientRequest, RequestError> {
        let value: Value =
            sonic_rs::from_slice(text).map_err(|_| error(ErrorCode::InvalidJson, "Invalid message format"))?;
        let kind = value
            .get("type")
            .and_then(|t| t.as_str())
            .ok_or_else(|| error(ErrorCode::InvalidMessage, "Invalid message format"))?;
        let subscribe = match kind {
            "ping" => return Ok(ClientRequest::Ping { id: None }),
            "subscribe" => true,
            "unsubscribe" => false,
            other => {
                let shown: String = other.chars().take(40).collect();
                return Err(error(ErrorCode::UnknownAction, format!("Unknown message type: {shown}")));
            }
        };
        let list = value
            .get("channels")
            .and_then(|c| c.as_array())
            .filter(|c| !c.is_empty())
            .ok_or_else(|| error(ErrorCode::InvalidField, "channels must be a non-empty list of channel names"))?;
        let mut parts = 0u8;
        for name in list.iter() {
            let name = name.as_str().unwrap_or_default();
            match PARTS.iter().position(|(n, _)| *n == name) {
                Some(i) => parts |= 1 << i,
                None => {
                    // The bad channel travels as the error's id, this dialect's own use of it: the reply
                    // names it in `details`.
                    let shown: String = name.chars().take(40).collect();
                    return Err(RequestError::new(Some(shown), ErrorCode::UnknownChannel, "Invalid channel name"));
                }
            }
        }
        Ok(ClientRequest::Channels { subscribe, parts, id: None })
    }

    fn parts(&self) -> &'static [(&'static str, Channel)] {
        &PARTS
    }

    fn renders_piece(&self, channel: Channel) -> bool {
        matches!(channel, Channel::Portfolio | Channel::Orders | Channel::Executions)
    }

    fn batches_per_connection(&self) -> bool {
        true
    }

    fn replays_critical(&self) -> bool {
        true
    }

    fn resubscribe_restarts(&self) -> bool {
        false
    }

    /// The update's piece: its records (snapshots and replays too: a subscriber's starting state).
    fn encode_update(&self, u: &Update<'_>, out: &mut Vec<u8>) {
        let Ok(data) = sonic_rs::from_slice::<Value>(u.data) else { return };
        match u.channel {
            Channel::Portfolio => {
                for p in data.get("positions").and_then(|p| p.as_array()).into_iter().flat_map(|a| a.iter()) {
                    let symbol = p.get("symbol").and_then(|s| s.as_str()).unwrap_or_default();
                    record(out, b'p', u.timestamp, symbol, &position_json(p));
                }
                record(out, b'a', u.timestamp, "", &account_json(&data, u.timestamp));
            }
            Channel::Orders => record(out, b'o', u.timestamp, "", &event_json(&data, ORDER)),
            Channel::Executions => record(out, b't', u.timestamp, "", &event_json(&data, TRADE)),
            _ => {}
        }
    }

    fn encode_window(
        &self,
        user: Option<&str>,
        parts: u8,
        pieces: &[bytes::Bytes],
        now: Micros,
        frames: &mut Vec<Vec<u8>>,
    ) {
        let mut positions: Vec<Record<'_>> = Vec::new();
        let (mut orders, mut trades, mut account) = (Vec::new(), Vec::new(), None);
        for r in pieces.iter().flat_map(|p| records(p)) {
            let Some(&(_, part, _)) = KINDS.iter().find(|(k, _, _)| *k == r.kind) else { continue };
            if parts & part == 0 {
                continue;
            }
            match part {
                POSITIONS => {
                    // A newer state of the same symbol supersedes the older one.
                    positions.retain(|p| p.key != r.key);
                    positions.push(r);
                }
                ACCOUNT => account = Some(r),
                ORDERS => orders.push(r),
                _ => trades.push(r),
            }
        }
        let events = positions.len() + orders.len() + trades.len() + usize::from(account.is_some());
        if events == 0 {
            return;
        }
        let mut out = Vec::with_capacity(256);
        let out = &mut out;
        if events == 1 {
            let r = positions.first().or(orders.first()).or(trades.first()).or(account.as_ref()).copied();
            let Some(r) = r else { return };
            let kind = KINDS.iter().find(|(k, _, _)| *k == r.kind).map_or("", |(_, _, name)| *name);
            head(out, kind, r.at, user);
            out.extend_from_slice(r.json);
            out.push(b'}');
            frames.push(std::mem::take(out));
            return;
        }
        head(out, "batch", now, user);
        for (i, (key, list)) in [("positions", &positions), ("orders", &orders), ("trades", &trades)].iter().enumerate()
        {
            out.extend_from_slice(if i == 0 { b"{\"" } else { b",\"" });
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(b"\":[");
            for (j, r) in list.iter().enumerate() {
                if j > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(r.json);
            }
            out.push(b']');
        }
        if let Some(a) = account {
            out.extend_from_slice(b",\"account\":");
            out.extend_from_slice(a.json);
        }
        out.extend_from_slice(b"}}");
        frames.push(std::mem::take(out));
    }

    fn encode_reply(&self, reply: &Reply<'_>, now: Micros, out: &mut Vec<u8>) {
        self.encode_reply_to(None, reply, now, out);
    }

    fn encode_reply_to(&self, user: Option<&str>, reply: &Reply<'_>, now: Micros, out: &mut Vec<u8>) {
        match reply {
            Reply::Pong { .. } => {
                head(out, "pong", now, user);
                out.extend_from_slice(b"{}}");
            }
            Reply::Error { id, code, message } => {
                head(out, "error", now, user);
                out.extend_from_slice(b"{\"code\":");
                let code = match code {
                    ErrorCode::UnknownChannel => "SUBSCRIPTION_FAILED",
                    other => other.as_str(),
                };
                write_str(out, code);
                out.extend_from_slice(b",\"message\":");
                write_str(out, message);
                if let Some(channel) = id {
                    out.extend_from_slice(b",\"details\":{\"channel\":");
                    write_str(out, channel);
                    out.push(b'}');
                }
                out.extend_from_slice(b"}}");
            }
            Reply::Channels { subscribe, changed, parts, .. } => {
                head(out, "info", now, user);
                let named: Vec<&str> = names(*changed).collect();
                let verb = if *subscribe { "Subscribed to " } else { "Unsubscribed from " };
                out.extend_from_slice(b"{\"message\":");
                write_str(out, &format!("{verb}{}", named.join(", ")));
                out.extend_from_slice(b",\"channels\":[");
                for (i, name) in names(*parts).enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_str(out, name);
                }
                out.extend_from_slice(b"]}}");
            }
            Reply::System { level, message, retry_after_ms } => {
                head(out, "info", now, user);
                out.extend_from_slice(b"{\"level\":");
                write_str(out, level);
                out.extend_from_slice(b",\"message\":");
                write_str(out, message);
                if let Some(ms) = retry_after_ms {
                    out.extend_from_slice(b",\"retryAfterMs\":");
                    write_f64(out, *ms as f64);
                }
                out.extend_from_slice(b"}}");
            }
            // No welcome, no per-channel confirmations (the info frame is the confirmation), no resets.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::UpdateKind;
    use crate::time::parse_rfc3339;
    use bytes::Bytes;
    use sonic_rs::json;

    fn at(ts: &str) -> Micros {
        parse_rfc3339(ts).unwrap()
    }

    fn piece(channel: Channel, data: &[u8], timestamp: Micros) -> Bytes {
        let u = Update {
            kind: UpdateKind::Update,
            channel,
            sequence: 1,
            timestamp,
            source_ts: None,
            data,
            day: None,
            key: "",
        };
        let mut out = Vec::new();
        Portfolio.encode_update(&u, &mut out);
        Bytes::from(out)
    }

    fn window(parts: u8, pieces: &[Bytes]) -> Option<Value> {
        let mut out = Vec::new();
        Portfolio.encode_window(Some("user-abc-123"), parts, pieces, at("2026-01-04T15:30:46.000Z"), &mut out);
        assert!(out.len() <= 1, "one frame per window");
        out.first().map(|f| sonic_rs::from_slice(f).unwrap())
    }

    const ALL: u8 = 0b1111;

    const PORTFOLIO: &[u8] = br#"{"total_value":104308.75,"day_pnl":1234.56,"cash":50000,"buying_power":354905.24,"positions":[{"symbol":"AAPL","quantity":100,"avg_price":170.25,"market_price":175.5,"unrealized_pnl":525,"strategy_id":"strategy-xyz","opened_at":"2026-01-03T09:30:00.000Z"}]}"#;

    #[test]
    fn the_seeds_client_messages_decode() {
        let sub = br#"{"type": "subscribe", "channels": ["positions", "orders", "account", "trades"]}"#;
        assert_eq!(Portfolio.decode(sub).unwrap(), ClientRequest::Channels { subscribe: true, parts: ALL, id: None });
        let unsub = br#"{"type": "unsubscribe", "channels": ["orders"]}"#;
        assert_eq!(
            Portfolio.decode(unsub).unwrap(),
            ClientRequest::Channels { subscribe: false, parts: ORDERS, id: None }
        );
        assert_eq!(Portfolio.decode(br#"{"type": "ping"}"#).unwrap(), ClientRequest::Ping { id: None });
    }

    #[test]
    fn an_unknown_channel_is_the_seeds_subscription_failed_error() {
        let e = Portfolio.decode(br#"{"type":"subscribe","channels":["positions","invalid_channel"]}"#).unwrap_err();
        assert_eq!(Portfolio.error_close(&e), None, "the connection stays open");
        let mut out = Vec::new();
        let reply = Reply::Error { id: e.id.as_deref(), code: e.code, message: &e.message };
        Portfolio.encode_reply_to(Some("user-abc-123"), &reply, at("2026-01-04T15:30:45.123Z"), &mut out);
        let want = json!({"type":"error","timestamp":"2026-01-04T15:30:45.123Z","userId":"user-abc-123",
            "data":{"code":"SUBSCRIPTION_FAILED","message":"Invalid channel name","details":{"channel":"invalid_channel"}}});
        assert_eq!(sonic_rs::from_slice::<Value>(&out).unwrap(), want);
        for bad in
            [&b"nope"[..], br#"{"type":"subscribe"}"#, br#"{"type":"subscribe","channels":[]}"#, br#"{"type":"x"}"#]
        {
            assert!(Portfolio.decode(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn pong_and_info_take_the_seeds_envelope() {
        let now = at("2026-01-04T15:30:45.123Z");
        let mut out = Vec::new();
        Portfolio.encode_reply_to(Some("user-abc-123"), &Reply::Pong { id: None }, now, &mut out);
        let want = json!({"type":"pong","timestamp":"2026-01-04T15:30:45.123Z","userId":"user-abc-123","data":{}});
        assert_eq!(sonic_rs::from_slice::<Value>(&out).unwrap(), want);
        out.clear();
        let info = Reply::Channels {
            id: None,
            subscribe: true,
            changed: POSITIONS | ORDERS,
            parts: POSITIONS | ORDERS | TRADES,
        };
        Portfolio.encode_reply_to(Some("u"), &info, now, &mut out);
        let v: Value = sonic_rs::from_slice(&out).unwrap();
        assert_eq!(v["type"], "info");
        assert_eq!(v["data"]["message"], "Subscribed to positions, orders");
        assert_eq!(v["data"]["channels"], json!(["positions", "orders", "trades"]));
    }

    #[test]
    fn each_event_alone_is_the_seeds_example_field_for_field() {
        let t = at("2026-01-04T15:30:45.123Z");
        let p = piece(Channel::Portfolio, PORTFOLIO, t);
        let position = window(POSITIONS, std::slice::from_ref(&p)).unwrap();
        let want = json!({"type":"position_update","timestamp":"2026-01-04T15:30:45.123Z","userId":"user-abc-123",
            "data":{"symbol":"AAPL","quantity":"100","currentPrice":"175.50","entryPrice":"170.25",
            "unrealizedPnl":"525.00","unrealizedPnlPercent":"3.08","marketValue":"17550.00","side":"long",
            "strategyId":"strategy-xyz","openedAt":"2026-01-03T09:30:00.000Z"}});
        assert_eq!(position, want);
        let account = window(ACCOUNT, std::slice::from_ref(&p)).unwrap();
        let want = json!({"type":"account_update","timestamp":"2026-01-04T15:30:45.123Z","userId":"user-abc-123",
            "data":{"equity":"104308.75","buyingPower":"354905.24","cash":"50000.00","portfolioValue":"104308.75",
            "dayPnl":"1234.56","dayPnlPercent":"1.20","timestamp":"2026-01-04T15:30:45.123Z"}});
        assert_eq!(account, want);
        let order = piece(
            Channel::Orders,
            br#"{"order_id":"order-123","broker_order_id":"alpaca-456","symbol":"TSLA","side":"buy","type":"limit","status":"filled","qty":50,"filled_qty":50,"avg_price":245.75,"limit_price":246,"submitted_at":"2026-01-04T15:29:30.000Z","filled_at":"2026-01-04T15:30:45.000Z"}"#,
            t,
        );
        let want = json!({"type":"order_update","timestamp":"2026-01-04T15:30:45.123Z","userId":"user-abc-123",
            "data":{"orderId":"order-123","brokerOrderId":"alpaca-456","symbol":"TSLA","side":"buy","type":"limit",
            "status":"filled","qty":"50","filledQty":"50","filledAvgPrice":"245.75","limitPrice":"246.00",
            "submittedAt":"2026-01-04T15:29:30.000Z","filledAt":"2026-01-04T15:30:45.000Z"}});
        assert_eq!(window(ALL, &[order]).unwrap(), want);
        let trade = piece(
            Channel::Executions,
            br#"{"trade_id":"trade-789","order_id":"o","symbol":"NVDA","side":"sell","quantity":25,"price":520.5,"pnl":1250,"executed_at":"2026-01-04T15:30:45.000Z","strategy_id":"strategy-xyz"}"#,
            t,
        );
        let want = json!({"type":"trade_executed","timestamp":"2026-01-04T15:30:45.123Z","userId":"user-abc-123",
            "data":{"tradeId":"trade-789","symbol":"NVDA","side":"sell","quantity":"25","price":"520.50",
            "pnl":"1250.00","executedAt":"2026-01-04T15:30:45.000Z","strategyId":"strategy-xyz"}});
        assert_eq!(window(ALL, &[trade]).unwrap(), want);
    }

    #[test]
    fn a_window_of_several_events_is_one_batch_that_folds_only_superseded_states() {
        let t = at("2026-01-04T15:30:45.000Z");
        let portfolio = |q: i64| {
            let data = format!(
                r#"{{"total_value":{},"day_pnl":0,"cash":0,"buying_power":0,"positions":[{{"symbol":"AAPL","quantity":{q},"avg_price":1,"market_price":1}},{{"symbol":"TSLA","quantity":1,"avg_price":1,"market_price":1}}]}}"#,
                q * 10
            );
            piece(Channel::Portfolio, data.as_bytes(), t)
        };
        let order = |id: &str| piece(Channel::Orders, format!(r#"{{"order_id":"{id}","status":"new"}}"#).as_bytes(), t);
        let trade = |id: &str| piece(Channel::Executions, format!(r#"{{"trade_id":"{id}"}}"#).as_bytes(), t);
        let pieces = [portfolio(1), order("o1"), trade("t1"), order("o2"), portfolio(2), trade("t2")];
        let batch = window(ALL, &pieces).unwrap();
        assert_eq!(batch["type"], "batch");
        assert_eq!(batch["timestamp"], "2026-01-04T15:30:46.000Z");
        let symbols: Vec<(&str, &str)> = batch["data"]["positions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["symbol"].as_str().unwrap(), p["quantity"].as_str().unwrap()))
            .collect();
        assert_eq!(symbols, [("AAPL", "2"), ("TSLA", "1")], "the newest of each symbol");
        let ids = |key: &str, id: &str| -> Vec<String> {
            batch["data"][key].as_array().unwrap().iter().map(|o| o[id].as_str().unwrap().to_owned()).collect()
        };
        assert_eq!(ids("orders", "orderId"), ["o1", "o2"], "no order dropped");
        assert_eq!(ids("trades", "tradeId"), ["t1", "t2"], "no trade dropped");
        assert_eq!(batch["data"]["account"]["equity"], "20.00", "the newest account");
        // Parts the connection did not choose are left out; nothing chosen, no frame.
        let orders_only = window(ORDERS, &pieces).unwrap();
        assert_eq!(orders_only["data"]["positions"], json!([]));
        assert!(orders_only["data"]["account"].is_null());
        assert_eq!(window(TRADES, &pieces[..2]), None);
    }

    #[test]
    fn figures_are_decimal_strings() {
        assert_eq!(
            (money(175.5), money(0.0001), money(-3.0), money(f64::NAN)),
            ("175.50".into(), "0.0001".into(), "-3.00".into(), "0.00".into())
        );
        assert_eq!((quantity(100.0), quantity(0.5), quantity(-7.0)), ("100".into(), "0.5".into(), "-7".into()));
        assert_eq!(percent(3.0837), "3.08");
    }

    #[test]
    fn records_survive_any_truncation() {
        let p = piece(Channel::Portfolio, PORTFOLIO, 0);
        for cut in 0..p.len() {
            let _ = window(ALL, &[p.slice(..cut)]);
        }
        assert_eq!(records(&p).count(), 2, "a position and the account");
    }
}
