//! Events: the typed payloads the server produces itself (simulator, bars), and [`parse_publish`], which
//! validates what publishers send and keeps its `data` as raw JSON to pass through untouched.

use serde::Serialize;
use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value};

use crate::channel::{Channel, Scope};
use crate::topic::{normalize_symbol, Topic, ALL};

/// Most symbols a news item may name.
pub const MAX_NEWS_SYMBOLS: usize = 32;
/// Longest user id.
pub const MAX_USER_LEN: usize = 128;

/// An event accepted for ingest: where it goes and its raw JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Ingest {
    pub channel: Channel,
    /// Topics it is sequenced on: one, or for news one per named symbol plus the "all news" topic.
    pub topics: Vec<Topic>,
    /// Raw JSON object.
    pub data: Vec<u8>,
    /// Raw JSON of `source_ts` (a string or a number), passed through.
    pub source_ts: Option<Vec<u8>>,
    /// Price and size of a trade, for bar aggregation.
    pub trade: Option<TradePoint>,
    /// Last price and day volume of a quote, for the symbol's day statistics.
    pub quote: Option<QuotePoint>,
}

impl Ingest {
    /// An event of `topic`'s channel sequenced on that topic alone, with no source timestamp, trade or quote
    /// figures (tests and tools; the publish parser and the simulator fill those).
    pub fn on(topic: &Topic, data: Vec<u8>) -> Ingest {
        Ingest { channel: topic.channel, topics: vec![topic.clone()], data, source_ts: None, trade: None, quote: None }
    }
}

/// What bar aggregation needs of a trade.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TradePoint {
    pub price: f64,
    pub size: f64,
}

/// What a symbol's day statistics need of a quote: its last price (the mid when it has none) and the
/// day's volume, when the feed reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuotePoint {
    pub last: f64,
    pub volume: Option<f64>,
}

impl QuotePoint {
    /// The point of a quote's data, if it has a price.
    pub fn of(data: &Value) -> Option<QuotePoint> {
        let num = |k: &str| data.get(k).and_then(|x| x.as_f64()).filter(|x| x.is_finite() && *x >= 0.0);
        let mid = || Some((num("bid")? + num("ask")?) / 2.0);
        Some(QuotePoint { last: num("last").or_else(mid)?, volume: num("volume") })
    }
}

/// A symbol's figures of the current UTC day, from its quotes: the open (the day's first price), high, low,
/// last and volume. Kept by the symbol's owner shard, so computed once per quote.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DayStats {
    /// Days since the epoch (UTC).
    pub day: i64,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub last: f64,
    pub volume: f64,
}

impl DayStats {
    /// Folds a quote at `now` in; the first quote of a UTC day starts the day again.
    pub fn on_quote(slot: &mut Option<DayStats>, now: i64, q: QuotePoint) {
        let day = now.div_euclid(86_400_000_000);
        match slot {
            Some(d) if d.day == day => {
                d.high = d.high.max(q.last);
                d.low = d.low.min(q.last);
                d.last = q.last;
                d.volume = q.volume.unwrap_or(d.volume);
            }
            _ => {
                let volume = q.volume.unwrap_or(0.0);
                *slot = Some(DayStats { day, open: q.last, high: q.last, low: q.last, last: q.last, volume });
            }
        }
    }
}

/// Why a published event was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event {index}: {message}")]
pub struct PublishError {
    /// Position of the event in the request (0 for a single event).
    pub index: usize,
    pub message: String,
}

/// Parses a publish body: one event object, an array of them, or NDJSON (one object per line).
pub fn parse_publish(body: &[u8]) -> Result<Vec<Ingest>, PublishError> {
    let text = body.trim_ascii();
    if text.is_empty() {
        return Err(PublishError { index: 0, message: "empty body".into() });
    }
    if text[0] == b'[' {
        let value: Value = sonic_rs::from_slice(text).map_err(|e| malformed(0, &e))?;
        let arr = value.as_array().ok_or_else(|| PublishError { index: 0, message: "expected an array".into() })?;
        return arr.iter().enumerate().map(|(i, v)| parse_event(i, v)).collect();
    }
    match sonic_rs::from_slice::<Value>(text) {
        Ok(value) => Ok(vec![parse_event(0, &value)?]),
        Err(first) => {
            if !text.contains(&b'\n') {
                return Err(malformed(0, &first));
            }
            text.split(|&b| b == b'\n')
                .map(<[u8]>::trim_ascii)
                .filter(|line| !line.is_empty())
                .enumerate()
                .map(|(i, line)| {
                    let v: Value = sonic_rs::from_slice(line).map_err(|e| malformed(i, &e))?;
                    parse_event(i, &v)
                })
                .collect()
        }
    }
}

fn malformed(index: usize, e: &sonic_rs::Error) -> PublishError {
    PublishError { index, message: format!("malformed JSON: {e}") }
}

/// Validates one event object.
pub fn parse_event(index: usize, v: &Value) -> Result<Ingest, PublishError> {
    let err = |m: String| PublishError { index, message: m };
    if !v.is_object() {
        return Err(err("an event must be a JSON object".into()));
    }
    let name =
        v.get("channel").and_then(|c| c.as_str()).ok_or_else(|| err("field 'channel' must be a string".into()))?;
    let channel = Channel::from_name(name)
        .ok_or_else(|| err(format!("unknown channel '{}'", name.chars().take(40).collect::<String>())))?;
    if !channel.info().publishable {
        return Err(err(format!("channel '{channel}' is produced by the server and cannot be published")));
    }
    let data =
        v.get("data").filter(|d| d.is_object()).ok_or_else(|| err("field 'data' must be a JSON object".into()))?;
    let source_ts = match v.get("source_ts") {
        None => None,
        Some(ts) if ts.is_null() => None,
        Some(ts) if ts.is_str() || ts.is_number() => Some(sonic_rs::to_vec(ts).map_err(|e| err(e.to_string()))?),
        Some(_) => return Err(err("field 'source_ts' must be a string or a number".into())),
    };
    let symbol = || -> Result<String, PublishError> {
        let s =
            data.get("symbol").and_then(|s| s.as_str()).ok_or_else(|| err("data.symbol must be a string".into()))?;
        normalize_symbol(s).ok_or_else(|| err(format!("invalid symbol '{}'", s.chars().take(40).collect::<String>())))
    };
    let topics = match channel.scope() {
        Scope::PerSymbol => vec![Topic::new(channel, symbol()?)],
        Scope::PerSymbolOrAll => {
            let mut topics = vec![Topic::new(channel, ALL)];
            if let Some(list) = data.get("symbols").filter(|s| !s.is_null()) {
                let arr = list.as_array().ok_or_else(|| err("data.symbols must be an array of strings".into()))?;
                if arr.len() > MAX_NEWS_SYMBOLS {
                    return Err(err(format!("data.symbols names more than {MAX_NEWS_SYMBOLS} symbols")));
                }
                for s in arr.iter() {
                    let s = s.as_str().ok_or_else(|| err("data.symbols must be an array of strings".into()))?;
                    let sym = normalize_symbol(s)
                        .ok_or_else(|| err(format!("invalid symbol '{}'", s.chars().take(40).collect::<String>())))?;
                    let t = Topic::new(channel, sym);
                    if !topics.contains(&t) {
                        topics.push(t);
                    }
                }
            }
            topics
        }
        Scope::Everyone => vec![Topic::new(channel, ALL)],
        Scope::Private => {
            let user = v.get("user_id").and_then(|u| u.as_str()).filter(|u| !u.is_empty() && u.len() <= MAX_USER_LEN);
            let user = user.ok_or_else(|| err(format!("private channel '{channel}' needs a 'user_id' string")))?;
            vec![Topic::new(channel, user)]
        }
    };
    let trade = if channel == Channel::Trades {
        let num = |k: &str| data.get(k).and_then(|x| x.as_f64()).filter(|x| x.is_finite() && *x >= 0.0);
        let price = num("price").ok_or_else(|| err("data.price must be a non-negative number".into()))?;
        let size = num("size").ok_or_else(|| err("data.size must be a non-negative number".into()))?;
        Some(TradePoint { price, size })
    } else {
        None
    };
    let quote = if channel == Channel::Quotes { QuotePoint::of(data) } else { None };
    let data = sonic_rs::to_vec(data).map_err(|e| err(e.to_string()))?;
    Ok(Ingest { channel, topics, data, source_ts, trade, quote })
}

/// `quotes` data.
#[derive(Debug, Clone, Serialize)]
pub struct Quote<'a> {
    pub symbol: &'a str,
    pub bid: f64,
    pub ask: f64,
    pub last: f64,
    pub bid_size: u64,
    pub ask_size: u64,
    pub volume: u64,
}

/// `trades` data.
#[derive(Debug, Clone, Serialize)]
pub struct Trade<'a> {
    pub symbol: &'a str,
    pub price: f64,
    pub size: u64,
    pub timestamp: &'a str,
    pub exchange: &'a str,
}

/// `bars` data.
#[derive(Debug, Clone, Serialize)]
pub struct Bar<'a> {
    pub symbol: &'a str,
    pub interval: &'a str,
    pub start: &'a str,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub volume: f64,
    pub vwap: f64,
}

/// `news` data.
#[derive(Debug, Clone, Serialize)]
pub struct News<'a> {
    pub headline: &'a str,
    pub source: &'a str,
    pub symbols: &'a [&'a str],
    pub sentiment: f64,
    pub timestamp: &'a str,
}

/// `orders` data.
#[derive(Debug, Clone, Serialize)]
pub struct Order<'a> {
    pub order_id: &'a str,
    pub symbol: &'a str,
    pub side: &'a str,
    #[serde(rename = "type")]
    pub order_type: &'a str,
    pub status: &'a str,
    pub qty: u64,
    pub filled_qty: u64,
    pub avg_price: Option<f64>,
    pub limit_price: Option<f64>,
}

/// `executions` data.
#[derive(Debug, Clone, Serialize)]
pub struct Execution<'a> {
    pub trade_id: &'a str,
    pub order_id: &'a str,
    pub symbol: &'a str,
    pub side: &'a str,
    pub quantity: u64,
    pub price: f64,
    pub pnl: f64,
    pub executed_at: &'a str,
}

/// One position of a `portfolio` update.
#[derive(Debug, Clone, Serialize)]
pub struct Position<'a> {
    pub symbol: &'a str,
    pub quantity: i64,
    pub avg_price: f64,
    pub market_price: f64,
    pub unrealized_pnl: f64,
}

/// `portfolio` data.
#[derive(Debug, Clone, Serialize)]
pub struct Portfolio<'a> {
    pub total_value: f64,
    pub day_pnl: f64,
    pub cash: f64,
    pub buying_power: f64,
    pub positions: &'a [Position<'a>],
}

/// `alerts` data.
#[derive(Debug, Clone, Serialize)]
pub struct Alert<'a> {
    pub alert_id: &'a str,
    #[serde(rename = "type")]
    pub alert_type: &'a str,
    pub level: &'a str,
    pub message: &'a str,
    pub symbol: Option<&'a str>,
    pub triggered_at: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_statistics_start_again_each_utc_day() {
        let at = |t: &str| crate::time::parse_rfc3339(t).unwrap();
        let q = |last: f64, volume: Option<f64>| QuotePoint { last, volume };
        let mut day = None;
        DayStats::on_quote(&mut day, at("2024-12-19T09:30:00Z"), q(150.0, Some(100.0)));
        DayStats::on_quote(&mut day, at("2024-12-19T10:00:00Z"), q(151.0, None));
        DayStats::on_quote(&mut day, at("2024-12-19T23:59:59Z"), q(149.5, Some(900.0)));
        let d = day.unwrap();
        assert_eq!((d.open, d.high, d.low, d.last, d.volume), (150.0, 151.0, 149.5, 149.5, 900.0));
        DayStats::on_quote(&mut day, at("2024-12-20T00:00:00Z"), q(149.0, None));
        let d = day.unwrap();
        assert_eq!((d.open, d.high, d.low, d.last, d.volume), (149.0, 149.0, 149.0, 149.0, 0.0), "a new day");
        let published =
            parse_publish(br#"{"channel":"quotes","data":{"symbol":"AAPL","bid":10.0,"ask":10.5}}"#).unwrap();
        assert_eq!(published[0].quote, Some(q(10.25, None)), "the mid, without a last");
    }

    #[test]
    fn single_array_and_ndjson() {
        let one = parse_publish(
            br#"{"channel":"quotes","data":{"symbol":"aapl","bid":1.5},"source_ts":"2026-02-07T14:30:00Z"}"#,
        )
        .unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].topics, [Topic::new(Channel::Quotes, "AAPL")]);
        assert_eq!(one[0].source_ts.as_deref(), Some(&b"\"2026-02-07T14:30:00Z\""[..]));
        let v: serde_json::Value = serde_json::from_slice(&one[0].data).unwrap();
        assert_eq!(v["bid"], 1.5);

        let arr = parse_publish(
            br#"[{"channel":"system","data":{"level":"info","message":"hi"}},
            {"channel":"orders","user_id":"u-42","data":{"order_id":"o1"}}]"#,
        )
        .unwrap();
        assert_eq!(arr[1].topics, [Topic::new(Channel::Orders, "u-42")]);

        let nd = parse_publish(b"{\"channel\":\"trades\",\"data\":{\"symbol\":\"MSFT\",\"price\":10,\"size\":5}}\n\n{\"channel\":\"news\",\"data\":{\"headline\":\"h\",\"symbols\":[\"AAPL\",\"msft\"]}}\n").unwrap();
        assert_eq!(nd[0].trade, Some(TradePoint { price: 10.0, size: 5.0 }));
        let keys: Vec<_> = nd[1].topics.iter().map(|t| t.key.to_string()).collect();
        assert_eq!(keys, ["*", "AAPL", "MSFT"]);
    }

    #[test]
    fn refusals_name_the_event() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "empty"),
            (b"{", "malformed"),
            (br#"{"channel":"quotez","data":{}}"#, "unknown channel"),
            (br#"{"channel":"bars","data":{"symbol":"A"}}"#, "cannot be published"),
            (br#"{"channel":"quotes","data":[1]}"#, "data"),
            (br#"{"channel":"quotes","data":{}}"#, "symbol"),
            (br#"{"channel":"quotes","data":{"symbol":"A B"}}"#, "invalid symbol"),
            (br#"{"channel":"orders","data":{}}"#, "user_id"),
            (br#"{"channel":"trades","data":{"symbol":"A","price":"x","size":1}}"#, "price"),
            (br#"{"channel":"quotes","data":{"symbol":"A"},"source_ts":{}}"#, "source_ts"),
            (br#"[{"channel":"system","data":{}},{"channel":1}]"#, "event 1"),
        ];
        for (body, needle) in cases {
            let e = parse_publish(body).unwrap_err();
            assert!(e.to_string().contains(needle), "{:?} -> {e}", String::from_utf8_lossy(body));
        }
    }
}
