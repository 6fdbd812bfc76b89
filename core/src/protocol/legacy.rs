//! Seed 001's dialect, `/ws` (the trading bot's stream): `{"type":"ping"}`, `subscribe`/`unsubscribe` by
//! `channel` (`price_updates`, `signals`, `trades`, `portfolio`) and optional `symbols`; `pong`, `signal`,
//! `trade_executed`, `portfolio_update` and `error` frames, stamped to the second as the seed shows them.
//!
//! Its `price_update` is a batch per interval, assembled by each shard's board from per-symbol pieces that
//! the quotes' owners render once ([`Dialect::renders_piece`], [`Dialect::encode_batch`]).

use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value};

use super::{ClientRequest, Dialect, ErrorCode, Reply, RequestError, Subscribe, Unsubscribe, Update, UpdateKind};
use crate::channel::Channel;
use crate::event::DayStats;
use crate::json::{write_f64, write_str, write_u64};
use crate::time::{format_rfc3339, Micros};
use crate::topic::normalize_symbol;

/// Seed 001's dialect.
#[derive(Debug, Clone, Copy, Default)]
pub struct Legacy;

/// The seed's channels and the canonical channels that feed them.
pub const CHANNELS: [(&str, Channel); 4] = [
    ("price_updates", Channel::Quotes),
    ("signals", Channel::Signals),
    ("trades", Channel::Executions),
    ("portfolio", Channel::Portfolio),
];

/// The seed's timestamp: RFC 3339 to the second, `2024-12-19T12:00:00Z`.
pub fn write_timestamp(out: &mut Vec<u8>, now: Micros) {
    let full = format_rfc3339(now);
    out.push(b'"');
    out.extend_from_slice(&full[..19]);
    out.extend_from_slice(b"Z\"");
}

fn error(message: impl Into<String>) -> RequestError {
    RequestError::new(None, ErrorCode::InvalidMessage, message)
}

/// Rounds to cents (and percents to two decimals), as the seed's figures are.
fn cents(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// One symbol's entry of a `price_update`'s `symbols` map, `"AAPL":{"price":...,"close":...}`, from its day
/// statistics (the price is the last).
pub fn write_price_piece(out: &mut Vec<u8>, symbol: &str, day: &DayStats) {
    let last = day.last;
    write_str(out, symbol);
    out.extend_from_slice(b":{\"price\":");
    write_f64(out, last);
    let change = last - day.open;
    out.extend_from_slice(b",\"change\":");
    write_f64(out, cents(change));
    out.extend_from_slice(b",\"change_pct\":");
    write_f64(out, if day.open != 0.0 { cents(change / day.open * 100.0) } else { 0.0 });
    out.extend_from_slice(b",\"volume\":");
    write_u64(out, if day.volume.is_finite() && day.volume > 0.0 { day.volume.round() as u64 } else { 0 });
    for (key, v) in [("high", day.high), ("low", day.low), ("open", day.open), ("close", last)] {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
        write_f64(out, v);
    }
    out.push(b'}');
}

impl Dialect for Legacy {
    fn decode(&self, text: &[u8]) -> Result<ClientRequest, RequestError> {
        let value: Value = sonic_rs::from_slice(text).map_err(|_| error("Invalid message format"))?;
        let kind = value.get("type").and_then(|t| t.as_str()).ok_or_else(|| error("Invalid message format"))?;
        let subscribe = match kind {
            "ping" => return Ok(ClientRequest::Ping { id: None }),
            "subscribe" => true,
            "unsubscribe" => false,
            other => {
                let shown: String = other.chars().take(40).collect();
                return Err(RequestError::new(
                    None,
                    ErrorCode::UnknownAction,
                    format!("Unknown message type: {shown}"),
                ));
            }
        };
        let name = value.get("channel").and_then(|c| c.as_str()).unwrap_or_default();
        let Some(&(_, channel)) = CHANNELS.iter().find(|(n, _)| *n == name) else {
            let msg = "channel must be one of price_updates, signals, trades, portfolio";
            return Err(RequestError::new(None, ErrorCode::UnknownChannel, msg));
        };
        let mut symbols = Vec::new();
        if !channel.is_private() {
            if let Some(list) = value.get("symbols").filter(|s| !s.is_null()) {
                let list = list.as_array().ok_or_else(|| error("symbols must be a list of tickers"))?;
                for s in list.iter() {
                    let s = s.as_str().and_then(normalize_symbol).ok_or_else(|| error("invalid symbol"))?;
                    if !symbols.contains(&s) {
                        symbols.push(s);
                    }
                }
            }
        }
        Ok(if subscribe {
            ClientRequest::Subscribe(Subscribe {
                id: None,
                channel,
                symbols,
                throttle_ms: 0,
                interval: None,
                from_sequence: Vec::new(),
                epoch: None,
                restore: false,
            })
        } else {
            let symbols = (!symbols.is_empty()).then_some(symbols);
            ClientRequest::Unsubscribe(Unsubscribe { id: None, channel, symbols, interval: None })
        })
    }

    fn resubscribe_restarts(&self) -> bool {
        false
    }

    /// The seed's MVP mode: every price and signal, and the user's own executions and portfolio.
    fn auto_subscribe(&self) -> &'static [Channel] {
        &[Channel::Quotes, Channel::Signals, Channel::Executions, Channel::Portfolio]
    }

    fn renders_piece(&self, channel: Channel) -> bool {
        channel == Channel::Quotes
    }

    /// The interval's `price_update`: `{"type":"price_update","symbols":{...},"timestamp":"..."}`.
    fn encode_batch(&self, pieces: &[&bytes::Bytes], now: Micros, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"type\":\"price_update\",\"symbols\":{");
        for (i, piece) in pieces.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(piece);
        }
        out.extend_from_slice(b"},\"timestamp\":");
        write_timestamp(out, now);
        out.push(b'}');
    }

    fn encode_update(&self, u: &Update<'_>, out: &mut Vec<u8>) {
        // No snapshots but the portfolio's (a state, which the seed's server sends on its interval from the
        // start): a trading bot must not act on a signal or a trade of before it connected.
        if u.kind != UpdateKind::Update && u.channel != Channel::Portfolio {
            return;
        }
        let Ok(data) = sonic_rs::from_slice::<Value>(u.data) else { return };
        match u.channel {
            Channel::Signals => {
                out.extend_from_slice(b"{\"type\":\"signal\"");
                for key in ["signal_type", "symbol", "price", "quantity", "confidence"] {
                    copy_field(out, &data, key, key);
                }
                out.extend_from_slice(b",\"timestamp\":");
                write_timestamp(out, u.timestamp);
                out.push(b'}');
            }
            Channel::Executions => {
                out.extend_from_slice(b"{\"type\":\"trade_executed\"");
                copy_field(out, &data, "symbol", "symbol");
                out.extend_from_slice(b",\"side\":");
                write_str(out, &data.get("side").and_then(|s| s.as_str()).unwrap_or_default().to_uppercase());
                copy_field(out, &data, "quantity", "quantity");
                copy_field(out, &data, "price", "price");
                out.extend_from_slice(b",\"timestamp\":");
                write_timestamp(out, u.timestamp);
                out.push(b'}');
            }
            Channel::Portfolio => write_portfolio(out, &data, u.timestamp),
            // A piece of the interval's price_update, not a frame (docs/dialects.md: boards).
            Channel::Quotes => {
                if let (Some(day), Some(symbol)) = (u.day, data.get("symbol").and_then(|s| s.as_str())) {
                    write_price_piece(out, symbol, day);
                }
            }
            _ => {}
        }
    }

    fn encode_reply(&self, reply: &Reply<'_>, now: Micros, out: &mut Vec<u8>) {
        match reply {
            Reply::Pong { .. } => out.extend_from_slice(b"{\"type\":\"pong\"}"),
            Reply::Error { message, .. } => {
                out.extend_from_slice(b"{\"type\":\"error\",\"error\":");
                write_str(out, message);
                out.extend_from_slice(b",\"timestamp\":");
                write_timestamp(out, now);
                out.push(b'}');
            }
            // The seed answers nothing else: no welcome, no confirmation of a subscription.
            _ => {}
        }
    }
}

/// `,"to":<the value of data's key>` when data has it.
fn copy_field(out: &mut Vec<u8>, data: &Value, key: &str, to: &str) {
    if let Some(v) = data.get(key) {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(to.as_bytes());
        out.extend_from_slice(b"\":");
        out.extend_from_slice(sonic_rs::to_string(v).unwrap_or_else(|_| "null".into()).as_bytes());
    }
}

/// The seed's `portfolio_update`: positions keyed by symbol, with their P&L in percent, the total P&L and
/// the count.
fn write_portfolio(out: &mut Vec<u8>, data: &Value, now: Micros) {
    out.extend_from_slice(b"{\"type\":\"portfolio_update\",\"channel\":\"portfolio\",\"timestamp\":");
    write_timestamp(out, now);
    out.extend_from_slice(b",\"data\":{\"positions\":{");
    let mut total = 0.0;
    let mut count = 0u64;
    for p in data.get("positions").and_then(|p| p.as_array()).into_iter().flat_map(|a| a.iter()) {
        let Some(symbol) = p.get("symbol").and_then(|s| s.as_str()) else { continue };
        let num = |k: &str| p.get(k).and_then(|v| v.as_f64()).unwrap_or(0.0);
        let (quantity, avg, market, pnl) =
            (num("quantity"), num("avg_price"), num("market_price"), num("unrealized_pnl"));
        if count > 0 {
            out.push(b',');
        }
        count += 1;
        total += pnl;
        write_str(out, symbol);
        out.extend_from_slice(b":{\"symbol\":");
        write_str(out, symbol);
        out.extend_from_slice(b",\"quantity\":");
        match p.get("quantity").and_then(|v| v.as_i64()) {
            Some(q) => out.extend_from_slice(itoa::Buffer::new().format(q).as_bytes()),
            None => write_f64(out, quantity),
        }
        out.extend_from_slice(b",\"average_price\":");
        write_f64(out, avg);
        out.extend_from_slice(b",\"market_price\":");
        write_f64(out, market);
        out.extend_from_slice(b",\"unrealized_pnl\":");
        write_f64(out, pnl);
        let cost = (avg * quantity).abs();
        out.extend_from_slice(b",\"unrealized_pnl_pct\":");
        write_f64(out, if cost > 0.0 { cents(pnl / cost * 100.0) } else { 0.0 });
        out.push(b'}');
    }
    out.extend_from_slice(b"},\"total_pnl\":");
    write_f64(out, cents(total));
    out.extend_from_slice(b",\"position_count\":");
    write_u64(out, count);
    out.extend_from_slice(b"}}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse_rfc3339;
    use sonic_rs::json;

    fn update(channel: Channel, data: &[u8]) -> Value {
        let timestamp = parse_rfc3339("2024-12-19T12:00:00.250Z").unwrap();
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
        Legacy.encode_update(&u, &mut out);
        sonic_rs::from_slice(&out).unwrap()
    }

    #[test]
    fn the_seeds_client_messages_decode() {
        assert_eq!(Legacy.decode(br#"{"type": "ping"}"#).unwrap(), ClientRequest::Ping { id: None });
        let sub = br#"{"type": "subscribe", "channel": "price_updates", "symbols": ["AAPL", "MSFT"]}"#;
        let ClientRequest::Subscribe(s) = Legacy.decode(sub).unwrap() else { panic!() };
        assert_eq!((s.channel, s.symbols), (Channel::Quotes, vec!["AAPL".to_owned(), "MSFT".to_owned()]));
        let unsub = br#"{"type": "unsubscribe", "channel": "price_updates", "symbols": ["AAPL"]}"#;
        let ClientRequest::Unsubscribe(u) = Legacy.decode(unsub).unwrap() else { panic!() };
        assert_eq!((u.channel, u.symbols), (Channel::Quotes, Some(vec!["AAPL".to_owned()])));
        let ClientRequest::Subscribe(t) = Legacy.decode(br#"{"type":"subscribe","channel":"trades"}"#).unwrap() else {
            panic!()
        };
        assert_eq!((t.channel, t.symbols.len()), (Channel::Executions, 0));
    }

    #[test]
    fn bad_input_is_an_error_frame_as_the_seed_shows() {
        for (text, message) in [
            (&b"not json"[..], "Invalid message format"),
            (br#"{"no":"type"}"#, "Invalid message format"),
            (br#"{"type":"dance"}"#, "Unknown message type: dance"),
        ] {
            let e = Legacy.decode(text).unwrap_err();
            assert_eq!(Legacy.error_close(&e), None, "the connection stays open");
            assert_eq!(e.message, message);
            let mut out = Vec::new();
            let now = parse_rfc3339("2024-12-19T12:00:00.999Z").unwrap();
            Legacy.encode_reply(&Reply::Error { id: None, code: e.code, message: &e.message }, now, &mut out);
            let want = json!({"type":"error","error":message,"timestamp":"2024-12-19T12:00:00Z"});
            assert_eq!(sonic_rs::from_slice::<Value>(&out).unwrap(), want);
        }
        let mut out = Vec::new();
        Legacy.encode_reply(&Reply::Pong { id: None }, 0, &mut out);
        assert_eq!(out, br#"{"type":"pong"}"#);
        out.clear();
        let welcome = Reply::Welcome { connection_id: "c", client_id: "c", user_id: None, epoch: "e", heartbeat_s: 30 };
        Legacy.encode_reply(&welcome, 0, &mut out);
        assert!(out.is_empty(), "no welcome in this dialect");
    }

    #[test]
    fn signals_executions_and_portfolios_take_the_seeds_shapes() {
        let signal = update(
            Channel::Signals,
            br#"{"signal_type":"BUY","symbol":"AAPL","price":150.25,"quantity":10,"confidence":0.85}"#,
        );
        let want = json!({"type":"signal","signal_type":"BUY","symbol":"AAPL","price":150.25,"quantity":10,"confidence":0.85,"timestamp":"2024-12-19T12:00:00Z"});
        assert_eq!(signal, want);
        let exec = update(
            Channel::Executions,
            br#"{"trade_id":"t1","order_id":"o1","symbol":"AAPL","side":"buy","quantity":10,"price":150.25,"pnl":0.0,"executed_at":"2024-12-19T12:00:00Z"}"#,
        );
        let want = json!({"type":"trade_executed","symbol":"AAPL","side":"BUY","quantity":10,"price":150.25,"timestamp":"2024-12-19T12:00:00Z"});
        assert_eq!(exec, want);
        let portfolio = update(
            Channel::Portfolio,
            br#"{"total_value":1515.0,"day_pnl":3.0,"cash":0.0,"buying_power":0.0,"positions":[{"symbol":"AAPL","quantity":10,"avg_price":150.25,"market_price":151.5,"unrealized_pnl":12.5}]}"#,
        );
        let want = json!({"type":"portfolio_update","channel":"portfolio","timestamp":"2024-12-19T12:00:00Z","data":{
            "positions":{"AAPL":{"symbol":"AAPL","quantity":10,"average_price":150.25,"market_price":151.5,"unrealized_pnl":12.5,"unrealized_pnl_pct":0.83}},
            "total_pnl":12.5,"position_count":1}});
        assert_eq!(portfolio, want, "the seed's example, field for field");
    }

    #[test]
    fn only_the_portfolio_has_a_snapshot() {
        let data = br#"{"positions":[]}"#;
        for (channel, renders) in [(Channel::Portfolio, true), (Channel::Signals, false), (Channel::Executions, false)]
        {
            let u = Update {
                kind: UpdateKind::Snapshot,
                channel,
                sequence: 1,
                timestamp: 0,
                source_ts: None,
                data,
                day: None,
                key: "",
            };
            let mut out = Vec::new();
            Legacy.encode_update(&u, &mut out);
            assert_eq!(!out.is_empty(), renders, "{channel:?}");
        }
    }

    #[test]
    fn a_price_piece_is_the_seeds_symbol_entry() {
        let mut out = b"{".to_vec();
        let day = DayStats { day: 0, open: 149.75, high: 151.0, low: 149.5, last: 150.25, volume: 1_000_000.0 };
        write_price_piece(&mut out, "AAPL", &day);
        out.push(b'}');
        let want = json!({"AAPL":{"price":150.25,"change":0.5,"change_pct":0.33,"volume":1000000,"high":151.0,"low":149.5,"open":149.75,"close":150.25}});
        assert_eq!(sonic_rs::from_slice::<Value>(&out).unwrap(), want);
        // A quote with its day statistics renders as that piece.
        let mut piece = Vec::new();
        let data = br#"{"symbol":"AAPL","bid":150.2,"ask":150.3,"last":150.25}"#;
        let u = Update {
            kind: UpdateKind::Update,
            channel: Channel::Quotes,
            sequence: 1,
            timestamp: 0,
            source_ts: None,
            data,
            day: Some(&day),
            key: "",
        };
        Legacy.encode_update(&u, &mut piece);
        assert_eq!(&piece[..], &out[1..out.len() - 1]);
    }
}
