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

/// Real tickers, most traded first.
const TICKERS: &[&str] = &[
    "AAPL", "MSFT", "GOOGL", "AMZN", "NVDA", "TSLA", "META", "BRK.B", "JPM", "V", "UNH", "XOM", "JNJ", "WMT", "MA",
    "PG", "LLY", "AVGO", "HD", "CVX", "MRK", "ABBV", "KO", "PEP", "COST", "ADBE", "CSCO", "TMO", "MCD", "CRM", "BAC",
    "ACN", "NFLX", "ABT", "LIN", "AMD", "DHR", "ORCL", "DIS", "WFC", "TXN", "CMCSA", "PM", "VZ", "NEE", "INTC", "RTX",
    "UPS", "QCOM", "HON", "INTU", "IBM", "AMGN", "LOW", "SPGI", "UNP", "CAT", "BA", "GS", "ELV", "SBUX", "PLD", "DE",
    "MS", "BLK", "AMAT", "GE", "ISRG", "MDT", "BKNG", "GILD", "ADP", "LMT", "AXP", "SYK", "TJX", "C", "MMC", "VRTX",
    "ADI", "CVS", "MDLZ", "REGN", "NOW", "PYPL", "SCHW", "TMUS", "ZTS", "CI", "MO", "SO", "PGR", "DUK", "BSX", "FI",
    "SLB", "EOG", "CB", "LRCX", "UBER",
];

/// The first `n` symbols of the simulated feed: the real tickers, then `SIM0100`, `SIM0101`, ...
pub fn symbols(n: usize) -> Vec<Arc<str>> {
    (0..n).map(|i| TICKERS.get(i).map_or_else(|| Arc::from(format!("SIM{i:04}")), |t| Arc::from(*t))).collect()
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
        .map(|(i, s)| SymbolState { symbol: s.clone(), price: 50.0 + (i as f64 * 37.0) % 400.0, volume: 1_000_000 })
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
    let step: f64 = rng.random_range(-0.0005..0.0005);
    s.price = (s.price * (1.0 + step)).max(1.0);
    let price = (s.price * 100.0).round() / 100.0;
    let kind: f64 = rng.random();
    let sym = &*s.symbol;
    if kind < 0.75 {
        let spread = (price * 0.0002).max(0.01);
        let q = Quote {
            symbol: sym,
            bid: ((price - spread / 2.0) * 100.0).round() / 100.0,
            ask: ((price + spread / 2.0) * 100.0).round() / 100.0,
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
        let price = 100.0 + self.order as f64 % 50.0;
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
