//! The simulated feed: random-walk quotes, trades, signals and occasional news for real tickers, plus a demo
//! user's private events (orders moving through their statuses, executions, portfolio, alerts, session status,
//! algorithm decisions). Each shard simulates the symbols it owns, so events enter at their owner.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tickwire_core::event::{
    Alert, Execution, Ingest, News, Order, Portfolio, Position, Quote, QuotePoint, Trade, TradePoint,
};
use tickwire_core::time::rfc3339;
use tickwire_core::topic::{owner_of, ALL};
use tickwire_core::{Channel, Topic};

use crate::shard::Shard;
use crate::util::now_micros;

/// The user whose private events the simulator produces.
pub const DEMO_USER: &str = "demo-user";

/// The real tickers, most traded first, with the price each starts near (US dollars, late 2025) and its
/// typical daily volume in shares: the one table of the demo market's starting point.
const TICKERS: &[(&str, f64, u64)] = &[
    ("AAPL", 232.0, 55_000_000),
    ("MSFT", 425.0, 20_000_000),
    ("GOOGL", 172.0, 25_000_000),
    ("AMZN", 201.0, 40_000_000),
    ("NVDA", 136.0, 250_000_000),
    ("TSLA", 252.0, 90_000_000),
    ("META", 582.0, 12_000_000),
    ("BRK.B", 462.0, 4_000_000),
    ("JPM", 231.0, 9_000_000),
    ("V", 301.0, 6_000_000),
    ("UNH", 558.0, 4_000_000),
    ("XOM", 116.0, 15_000_000),
    ("JNJ", 156.0, 7_000_000),
    ("WMT", 81.0, 15_000_000),
    ("MA", 512.0, 3_000_000),
    ("PG", 169.0, 7_000_000),
    ("LLY", 805.0, 3_000_000),
    ("AVGO", 171.0, 25_000_000),
    ("HD", 402.0, 3_000_000),
    ("CVX", 151.0, 7_000_000),
    ("MRK", 99.0, 9_000_000),
    ("ABBV", 188.0, 6_000_000),
    ("KO", 69.0, 13_000_000),
    ("PEP", 154.0, 6_000_000),
    ("COST", 905.0, 2_000_000),
    ("ADBE", 498.0, 3_000_000),
    ("CSCO", 58.0, 18_000_000),
    ("TMO", 548.0, 2_000_000),
    ("MCD", 296.0, 3_000_000),
    ("CRM", 301.0, 6_000_000),
    ("BAC", 44.0, 35_000_000),
    ("ACN", 352.0, 2_500_000),
    ("NFLX", 798.0, 3_000_000),
    ("ABT", 116.0, 6_000_000),
    ("LIN", 461.0, 2_000_000),
    ("AMD", 152.0, 40_000_000),
    ("DHR", 241.0, 3_000_000),
    ("ORCL", 171.0, 9_000_000),
    ("DIS", 111.0, 9_000_000),
    ("WFC", 71.0, 16_000_000),
    ("TXN", 199.0, 6_000_000),
    ("CMCSA", 38.0, 20_000_000),
    ("PM", 126.0, 6_000_000),
    ("VZ", 41.0, 17_000_000),
    ("NEE", 76.0, 10_000_000),
    ("INTC", 22.0, 60_000_000),
    ("RTX", 121.0, 5_000_000),
    ("UPS", 131.0, 4_000_000),
    ("QCOM", 161.0, 8_000_000),
    ("HON", 211.0, 3_000_000),
    ("INTU", 642.0, 1_500_000),
    ("IBM", 221.0, 4_000_000),
    ("AMGN", 302.0, 3_000_000),
    ("LOW", 262.0, 3_000_000),
    ("SPGI", 501.0, 1_300_000),
    ("UNP", 236.0, 3_000_000),
    ("CAT", 381.0, 2_500_000),
    ("BA", 158.0, 8_000_000),
    ("GS", 572.0, 2_500_000),
    ("ELV", 402.0, 2_000_000),
    ("SBUX", 96.0, 9_000_000),
    ("PLD", 114.0, 4_000_000),
    ("DE", 421.0, 1_500_000),
    ("MS", 126.0, 7_000_000),
    ("BLK", 1_002.0, 700_000),
    ("AMAT", 181.0, 6_000_000),
    ("GE", 179.0, 6_000_000),
    ("ISRG", 522.0, 1_500_000),
    ("MDT", 88.0, 6_000_000),
    ("BKNG", 4_910.0, 250_000),
    ("GILD", 91.0, 8_000_000),
    ("ADP", 301.0, 1_800_000),
    ("LMT", 502.0, 1_300_000),
    ("AXP", 291.0, 3_000_000),
    ("SYK", 371.0, 1_300_000),
    ("TJX", 121.0, 5_000_000),
    ("C", 70.0, 14_000_000),
    ("MMC", 221.0, 2_000_000),
    ("VRTX", 472.0, 1_300_000),
    ("ADI", 226.0, 3_000_000),
    ("CVS", 59.0, 9_000_000),
    ("MDLZ", 64.0, 8_000_000),
    ("REGN", 748.0, 800_000),
    ("NOW", 1_004.0, 1_200_000),
    ("PYPL", 81.0, 14_000_000),
    ("SCHW", 76.0, 9_000_000),
    ("TMUS", 241.0, 4_000_000),
    ("ZTS", 171.0, 3_000_000),
    ("CI", 322.0, 1_500_000),
    ("MO", 56.0, 9_000_000),
    ("SO", 88.0, 4_000_000),
    ("PGR", 251.0, 3_000_000),
    ("DUK", 114.0, 3_500_000),
    ("BSX", 94.0, 6_000_000),
    ("FI", 201.0, 3_000_000),
    ("SLB", 41.0, 13_000_000),
    ("EOG", 126.0, 3_000_000),
    ("CB", 281.0, 1_800_000),
    ("LRCX", 81.0, 11_000_000),
    ("UBER", 76.0, 18_000_000),
];

/// The first `n` symbols of the simulated feed: the real tickers, then `SIM0100`, `SIM0101`, ...
pub fn symbols(n: usize) -> Vec<Arc<str>> {
    (0..n).map(|i| TICKERS.get(i).map_or_else(|| Arc::from(format!("SIM{i:04}")), |t| Arc::from(t.0))).collect()
}

/// Where `symbol` (the `i`th of the feed) starts: its price and the volume already traded when the
/// simulation starts (a third of a typical day, as around midday). Synthetic symbols get made-up ones.
fn start_of(i: usize, symbol: &str) -> (f64, u64) {
    match TICKERS.iter().find(|t| t.0 == symbol) {
        Some(&(_, price, daily)) => (price, daily / 3),
        None => (20.0 + (i as f64 * 37.0) % 400.0, 300_000),
    }
}

/// The quoted spread at `price`: a cent for most large caps, about half a basis point for the dearest.
fn spread_at(price: f64) -> f64 {
    ((price * 0.00005 * 100.0).round() / 100.0).max(0.01)
}

struct SymbolState {
    symbol: Arc<str>,
    price: f64,
    volume: u64,
}

const ORDER_STATUSES: &[&str] = &["pending_new", "new", "accepted", "partially_filled", "filled"];
const EXCHANGES: &[&str] = &["XNAS", "XNYS", "ARCX", "BATS", "IEXG"];
const HEADLINES: &[&str] = &[
    "beats earnings estimates",
    "announces share buyback",
    "guides revenue lower",
    "names new chief executive",
    "wins regulatory approval",
    "faces supply chain delays",
];

/// Runs the simulator on `shard` until the server stops.
pub async fn run(shard: Rc<Shard>) {
    let shared = shard.shared.clone();
    let shards = shared.shards;
    let mut states: Vec<SymbolState> = shared
        .symbols
        .iter()
        .enumerate()
        .filter(|(_, s)| owner_of(s, shards) == shard.id)
        .map(|(i, s)| {
            let (price, volume) = start_of(i, s);
            SymbolState { symbol: s.clone(), price, volume }
        })
        .collect();
    let demo = owner_of(DEMO_USER, shards) == shard.id;
    if states.is_empty() && !demo {
        return;
    }
    let total = shared.symbols.len().max(1);
    let rate = shared.config.simulator_rate as f64 * states.len() as f64 / total as f64;
    let mut rng = SmallRng::seed_from_u64(0x5eed_u64 ^ shard.id as u64);
    let mut budget = 0.0f64;
    let mut last = std::time::Instant::now();
    let mut demo_state = DemoUser::default();
    let tick = Duration::from_millis(10);
    while !shard.stopping() {
        glommio::timer::sleep(tick).await;
        let now_i = std::time::Instant::now();
        budget += rate * now_i.duration_since(last).as_secs_f64();
        last = now_i;
        // Never let a stall turn into a burst of more than one second of events.
        budget = budget.min(rate.max(1.0));
        let mut events = Vec::new();
        while budget >= 1.0 && !states.is_empty() {
            budget -= 1.0;
            let i = rng.random_range(0..states.len());
            events.push(market_event(&mut rng, &mut states[i]));
        }
        if demo {
            demo_state.step(&mut rng, &shared.symbols, &mut events);
        }
        if !events.is_empty() {
            shared.stats[shard.id].simulated.fetch_add(events.len() as u64, Ordering::Relaxed);
            shard.ingest(events);
        }
    }
}

fn event<T: Serialize>(channel: Channel, topics: Vec<Topic>, data: &T, trade: Option<TradePoint>) -> Ingest {
    // Plain structs of numbers and strings always serialize.
    let data = sonic_rs::to_vec(data).unwrap_or_else(|_| b"{}".to_vec());
    Ingest { channel, topics, data, source_ts: None, trade, quote: None }
}

fn market_event(rng: &mut SmallRng, s: &mut SymbolState) -> Ingest {
    // About a basis point a step: a few tenths of a percent a minute at the default rate, like a real day.
    let step: f64 = rng.random_range(-0.0001..0.0001);
    s.price = (s.price * (1.0 + step)).max(1.0);
    let price = (s.price * 100.0).round() / 100.0;
    let kind: f64 = rng.random();
    let sym = &*s.symbol;
    if kind < 0.75 {
        let spread = spread_at(price);
        let bid = ((price - spread / 2.0) * 100.0).floor() / 100.0;
        let q = Quote {
            symbol: sym,
            bid,
            ask: ((bid + spread) * 100.0).round() / 100.0,
            last: price,
            bid_size: rng.random_range(1..50) * 100,
            ask_size: rng.random_range(1..50) * 100,
            volume: s.volume,
        };
        let mut quote = event(Channel::Quotes, vec![Topic::new(Channel::Quotes, s.symbol.clone())], &q, None);
        quote.quote = Some(QuotePoint { last: price, volume: Some(s.volume as f64) });
        quote
    } else if kind < 0.988 {
        let size = rng.random_range(1..20) * 10;
        s.volume += size;
        let ts = rfc3339(now_micros());
        let t = Trade {
            symbol: sym,
            price,
            size,
            timestamp: &ts,
            exchange: EXCHANGES[rng.random_range(0..EXCHANGES.len())],
        };
        let point = TradePoint { price, size: size as f64 };
        event(Channel::Trades, vec![Topic::new(Channel::Trades, s.symbol.clone())], &t, Some(point))
    } else if kind < 0.998 {
        #[derive(Serialize)]
        struct Signal<'a> {
            signal_type: &'a str,
            symbol: &'a str,
            price: f64,
            quantity: u64,
            confidence: f64,
        }
        let sig = Signal {
            signal_type: if rng.random_bool(0.5) { "buy" } else { "sell" },
            symbol: sym,
            price,
            quantity: rng.random_range(1..10) * 100,
            confidence: (rng.random_range(0.5..0.99f64) * 100.0).round() / 100.0,
        };
        event(Channel::Signals, vec![Topic::new(Channel::Signals, s.symbol.clone())], &sig, None)
    } else {
        let headline = format!("{sym} {}", HEADLINES[rng.random_range(0..HEADLINES.len())]);
        let ts = rfc3339(now_micros());
        let n = News {
            headline: &headline,
            source: "tickwire-sim",
            symbols: &[sym],
            sentiment: (rng.random_range(-1.0..1.0f64) * 100.0).round() / 100.0,
            timestamp: &ts,
        };
        let topics = vec![Topic::new(Channel::News, ALL), Topic::new(Channel::News, s.symbol.clone())];
        event(Channel::News, topics, &n, None)
    }
}

/// The demo user's trading life: one order at a time walking through its statuses, about one step a second.
#[derive(Default)]
struct DemoUser {
    ticks: u64,
    order: u64,
    status: usize,
    symbol: usize,
    cash: f64,
}

impl DemoUser {
    fn step(&mut self, rng: &mut SmallRng, symbols: &[Arc<str>], out: &mut Vec<Ingest>) {
        self.ticks += 1;
        if self.ticks % 100 != 1 || symbols.is_empty() {
            return;
        }
        let user: Arc<str> = Arc::from(DEMO_USER);
        let topic = |c: Channel| vec![Topic::new(c, user.clone())];
        let now = rfc3339(now_micros());
        if self.status == 0 {
            self.order += 1;
            self.symbol = rng.random_range(0..symbols.len().min(7));
        }
        let sym = &*symbols[self.symbol];
        let order_id = format!("ord-{}", self.order);
        let qty = 100;
        let status = ORDER_STATUSES[self.status];
        let filled = match status {
            "partially_filled" => 50,
            "filled" => 100,
            _ => 0,
        };
        // A limit a few cents inside the symbol's starting price.
        let price = ((start_of(self.symbol, sym).0 - 0.05) * 100.0).round() / 100.0;
        let order = Order {
            order_id: &order_id,
            symbol: sym,
            side: if self.order % 2 == 0 { "sell" } else { "buy" },
            order_type: "limit",
            status,
            qty,
            filled_qty: filled,
            avg_price: (filled > 0).then_some(price),
            limit_price: Some(price),
        };
        out.push(event(Channel::Orders, topic(Channel::Orders), &order, None));
        if filled > 0 {
            let trade_id = format!("exe-{}-{}", self.order, self.status);
            let e = Execution {
                trade_id: &trade_id,
                order_id: &order_id,
                symbol: sym,
                side: order.side,
                quantity: 50,
                price,
                pnl: 0.0,
                executed_at: &now,
            };
            out.push(event(Channel::Executions, topic(Channel::Executions), &e, None));
        }
        self.status = (self.status + 1) % ORDER_STATUSES.len();
        self.cash = 100_000.0 - self.order as f64 * 10.0;
        let positions = [Position {
            symbol: sym,
            quantity: filled as i64,
            avg_price: price,
            market_price: price * 1.001,
            unrealized_pnl: filled as f64 * price * 0.001,
        }];
        let p = Portfolio {
            total_value: self.cash + filled as f64 * price,
            day_pnl: self.order as f64 * 1.5,
            cash: self.cash,
            buying_power: self.cash * 2.0,
            positions: &positions,
        };
        out.push(event(Channel::Portfolio, topic(Channel::Portfolio), &p, None));
        if self.ticks % 1000 == 1 {
            let alert_id = format!("alt-{}", self.ticks / 1000);
            let a = Alert {
                alert_id: &alert_id,
                alert_type: "risk",
                level: "warning",
                message: "position concentration above 20%",
                symbol: Some(sym),
                triggered_at: &now,
            };
            out.push(event(Channel::Alerts, topic(Channel::Alerts), &a, None));
        }
        if self.ticks % 500 == 1 {
            #[derive(Serialize)]
            struct Status<'a> {
                session_id: &'a str,
                status: &'a str,
                data: SessionData,
            }
            #[derive(Serialize)]
            struct SessionData {
                current_pnl: f64,
                total_trades: u64,
                loss_limit_utilization: f64,
            }
            let s = Status {
                session_id: "sess-1",
                status: "running",
                data: SessionData {
                    current_pnl: self.order as f64 * 1.5,
                    total_trades: self.order,
                    loss_limit_utilization: 0.12,
                },
            };
            out.push(event(Channel::Sessions, topic(Channel::Sessions), &s, None));
        }
        if self.ticks % 300 == 1 {
            #[derive(Serialize)]
            struct Decision<'a> {
                session_id: &'a str,
                algorithm_id: &'a str,
                decision: &'a str,
                reasoning: &'a str,
                confidence: f64,
                symbol: &'a str,
                price: f64,
            }
            let d = Decision {
                session_id: "sess-1",
                algorithm_id: "mean-reversion",
                decision: "buy",
                reasoning: "price below 20-period mean",
                confidence: 0.71,
                symbol: sym,
                price,
            };
            out.push(event(Channel::Decisions, topic(Channel::Decisions), &d, None));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The demo market looks like one: each real ticker's first quotes are near its table price, with a
    /// spread of a few cents at most and the bid below the ask.
    #[test]
    fn the_simulated_tickers_start_near_their_real_prices_with_tight_spreads() {
        let mut rng = SmallRng::seed_from_u64(7);
        let names = symbols(TICKERS.len() + 2);
        assert_eq!(&*names[0], "AAPL");
        assert_eq!(&*names[TICKERS.len()], "SIM0100");
        for (i, name) in names.iter().enumerate() {
            let (price, volume) = start_of(i, name);
            let mut state = SymbolState { symbol: name.clone(), price, volume };
            let mut quotes = 0;
            while quotes < 20 {
                let e = market_event(&mut rng, &mut state);
                if e.channel != Channel::Quotes {
                    continue;
                }
                quotes += 1;
                let q: serde_json::Value = serde_json::from_slice(&e.data).unwrap();
                let (bid, ask, last) =
                    (q["bid"].as_f64().unwrap(), q["ask"].as_f64().unwrap(), q["last"].as_f64().unwrap());
                assert!(bid < ask && ask - bid <= 0.3 + 1e-9, "{name}: bid {bid} ask {ask}");
                assert!(bid <= last + 0.01 && last <= ask + 0.01, "{name}: last {last} outside {bid}..{ask}");
                assert!((last / price - 1.0).abs() < 0.01, "{name}: {last} is far from its start {price}");
            }
        }
        let (aapl, volume) = start_of(0, "AAPL");
        assert!((150.0..400.0).contains(&aapl) && volume > 1_000_000, "AAPL starts at {aapl}, volume {volume}");
    }
}
