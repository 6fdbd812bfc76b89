//! OHLC bars aggregated from trades, on the owner shard of the symbol (trades and bars share an owner).
//!
//! A bar covers `[start, start + interval)` of server time. It is emitted once, when it closes: when a trade
//! falls into a later interval, or when [`BarAggregator::close_due`] runs after the interval ended. An
//! interval without trades has no bar.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use tickwire_core::event::Bar;
use tickwire_core::time::{rfc3339, Micros};
use tickwire_core::{BarInterval, Topic};

/// A closed bar: its topic and its `data` JSON.
#[derive(Debug, Clone)]
pub struct ClosedBar {
    pub topic: Topic,
    pub data: Bytes,
}

#[derive(Debug, Clone, Copy)]
struct Open {
    start: Micros,
    open: f64,
    high: f64,
    low: f64,
    close: f64,
    volume: f64,
    /// Sum of price * size, for the vwap.
    notional: f64,
}

/// Bars in progress for every symbol that has traded, one slot per interval of [`BarInterval::ALL`].
#[derive(Debug, Default)]
pub struct BarAggregator {
    open: HashMap<Arc<str>, [Option<Open>; BarInterval::ALL.len()]>,
}

impl BarAggregator {
    pub fn new() -> BarAggregator {
        BarAggregator::default()
    }

    /// Adds a trade at server time `now`; bars it closes are appended to `closed`.
    pub fn on_trade(&mut self, symbol: &Arc<str>, price: f64, size: f64, now: Micros, closed: &mut Vec<ClosedBar>) {
        let slots = match self.open.get_mut(symbol) {
            Some(slots) => slots,
            None => self.open.entry(symbol.clone()).or_default(),
        };
        for (interval, slot) in BarInterval::ALL.into_iter().zip(slots.iter_mut()) {
            let start = interval.start_of(now);
            match slot {
                Some(bar) if bar.start == start => {
                    bar.high = bar.high.max(price);
                    bar.low = bar.low.min(price);
                    bar.close = price;
                    bar.volume += size;
                    bar.notional += price * size;
                }
                _ => {
                    let fresh = Open {
                        start,
                        open: price,
                        high: price,
                        low: price,
                        close: price,
                        volume: size,
                        notional: price * size,
                    };
                    if let Some(bar) = slot.replace(fresh) {
                        closed.push(finish(symbol, interval, &bar));
                    }
                }
            }
        }
    }

    /// Closes every bar whose interval ended at or before `now`.
    pub fn close_due(&mut self, now: Micros, closed: &mut Vec<ClosedBar>) {
        self.open.retain(|symbol, slots| {
            for (interval, slot) in BarInterval::ALL.into_iter().zip(slots.iter_mut()) {
                if slot.is_some_and(|bar| interval.end_of(bar.start) <= now) {
                    if let Some(bar) = slot.take() {
                        closed.push(finish(symbol, interval, &bar));
                    }
                }
            }
            slots.iter().any(Option::is_some)
        });
    }
}

fn finish(symbol: &Arc<str>, interval: BarInterval, bar: &Open) -> ClosedBar {
    let start = rfc3339(bar.start);
    let vwap = if bar.volume > 0.0 { bar.notional / bar.volume } else { bar.close };
    let data = Bar {
        symbol,
        interval: interval.as_str(),
        start: &start,
        open: bar.open,
        high: bar.high,
        low: bar.low,
        close: bar.close,
        volume: bar.volume,
        vwap: (vwap * 1e4).round() / 1e4,
    };
    // Serializing plain numbers and strings cannot fail; fall back to an empty object on principle.
    let json = sonic_rs::to_vec(&data).unwrap_or_else(|_| b"{}".to_vec());
    ClosedBar { topic: Topic::bar(symbol.clone(), interval), data: Bytes::from(json) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(b: &ClosedBar) -> serde_json::Value {
        serde_json::from_slice(&b.data).unwrap()
    }

    #[test]
    fn one_second_bar_from_trades() {
        let mut agg = BarAggregator::new();
        let sym: Arc<str> = "AAPL".into();
        let mut closed = Vec::new();
        let t0 = 1_000_000_000_000; // on a 5m boundary
        agg.on_trade(&sym, 10.0, 100.0, t0 + 100, &mut closed);
        agg.on_trade(&sym, 12.0, 100.0, t0 + 200, &mut closed);
        agg.on_trade(&sym, 9.0, 200.0, t0 + 300, &mut closed);
        agg.on_trade(&sym, 11.0, 100.0, t0 + 999_999, &mut closed);
        assert!(closed.is_empty());
        agg.on_trade(&sym, 11.5, 1.0, t0 + 1_000_000, &mut closed);
        assert_eq!(closed.len(), 1);
        let b = v(&closed[0]);
        assert_eq!(closed[0].topic, Topic::bar("AAPL", BarInterval::S1));
        assert_eq!(
            (b["open"].as_f64(), b["high"].as_f64(), b["low"].as_f64(), b["close"].as_f64()),
            (Some(10.0), Some(12.0), Some(9.0), Some(11.0))
        );
        assert_eq!(b["volume"], 500.0);
        assert_eq!(b["vwap"], 10.2); // (1000 + 1200 + 1800 + 1100) / 500
        assert_eq!(b["interval"], "1s");
        closed.clear();
        agg.close_due(t0 + 2_000_000, &mut closed);
        assert_eq!(closed.len(), 1, "the second 1s bar closes on time; 1m and 5m stay open");
        agg.close_due(t0 + 300_000_000, &mut closed);
        assert_eq!(closed.len(), 3);
    }

    #[test]
    fn day_week_and_month_bars_close_at_utc_midnight_monday_and_the_first() {
        let mut agg = BarAggregator::new();
        let sym: Arc<str> = "AAPL".into();
        let mut closed = Vec::new();
        let at = |s: &str| tickwire_core::time::parse_rfc3339(s).unwrap();
        agg.on_trade(&sym, 10.0, 1.0, at("2024-02-29T10:00:00Z"), &mut closed); // a Thursday
        agg.on_trade(&sym, 12.0, 3.0, at("2024-02-29T23:59:59Z"), &mut closed);
        // The day, week and month bars among those closed (the shorter ones close along).
        let names = |closed: &[ClosedBar]| -> Vec<String> {
            let long = |i: &&str| ["1d", "1w", "1mo"].contains(i);
            closed.iter().map(|b| v(b)["interval"].as_str().unwrap().to_owned()).filter(|i| long(&i.as_str())).collect()
        };
        closed.clear();
        agg.close_due(at("2024-03-01T00:00:00Z"), &mut closed);
        assert_eq!(names(&closed), ["1d", "1mo"], "midnight of the 1st ends the day and February");
        let day = closed.iter().find(|b| b.topic.interval == Some(BarInterval::D1)).map(v).unwrap();
        assert_eq!(
            (day["start"].as_str(), day["open"].as_f64(), day["close"].as_f64(), day["volume"].as_f64()),
            (Some("2024-02-29T00:00:00.000000Z"), Some(10.0), Some(12.0), Some(4.0))
        );
        closed.clear();
        agg.close_due(at("2024-03-03T23:59:59Z"), &mut closed);
        assert!(closed.is_empty(), "the week runs to Monday");
        agg.close_due(at("2024-03-04T00:00:00Z"), &mut closed);
        assert_eq!(names(&closed), ["1w"]);
        assert_eq!(v(&closed[0])["start"], "2024-02-26T00:00:00.000000Z");
    }

    proptest! {
        #[test]
        fn bars_are_consistent(trades in proptest::collection::vec((1.0f64..1000.0, 1.0f64..1000.0, 0i64..5_000_000), 1..200)) {
            let mut agg = BarAggregator::new();
            let sym: Arc<str> = "X".into();
            let mut closed = Vec::new();
            let mut t = 0;
            for (p, s, dt) in trades {
                t += dt;
                agg.on_trade(&sym, p, s, t, &mut closed);
            }
            agg.close_due(i64::MAX / 2, &mut closed);
            for b in &closed {
                let b = v(b);
                let (o, h, l, c, w) = (b["open"].as_f64().unwrap(), b["high"].as_f64().unwrap(), b["low"].as_f64().unwrap(), b["close"].as_f64().unwrap(), b["vwap"].as_f64().unwrap());
                prop_assert!(l <= o && o <= h && l <= c && c <= h);
                prop_assert!(l - 1e-3 <= w && w <= h + 1e-3);
            }
        }
    }
}
