//! What every shard shares ([`Shared`]: the configuration, auth, the interest map, the store, security) and
//! each shard's figures ([`ShardStats`]), read by anyone from any thread.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tickwire_persistence::{RecoveredTopic, Store};

use crate::auth::Authenticator;
use crate::config::Config;
use crate::histogram::LatencyHistogram;

pub use tickwire_fanout::engine::stats::{Stats, CHANNELS};

/// State shared by every shard (immutable, or atomics).
#[derive(Debug)]
pub struct Shared {
    pub config: Config,
    pub shards: usize,
    pub auth: Authenticator,
    pub interest: Arc<tickwire_fanout::interest::InterestMap>,
    pub stats: Box<[ShardStats]>,
    pub shutdown: Arc<AtomicBool>,
    /// Names this run's sequence space.
    pub epoch: String,
    pub started: Instant,
    pub store: Arc<dyn Store>,
    /// Private topics continued from an earlier run (the database store), taken by their owner shards.
    pub recovered: std::sync::Mutex<Vec<RecoveredTopic>>,
    /// Public topics continued from the last process at this address (its graceful stop's hand-over).
    pub recovered_public: std::sync::Mutex<Vec<tickwire_persistence::PublicSequence>>,
    /// The public topics' last sequences, put here by each shard when it has drained (for the hand-over).
    pub handover: std::sync::Mutex<Vec<(tickwire_core::topic::Topic, u64)>>,
    /// Symbols of the simulated feed.
    pub symbols: Vec<Arc<str>>,
    /// Connection limits, TLS, API keys, the order-signing key.
    pub security: crate::security::Security,
    /// The cluster bus's state, with `--bus` ([`crate::bus`]).
    pub bus: Option<Arc<crate::bus::BusState>>,
    /// Per shard, where the bus hands it what the streams store (a node the bus sequences for), taken by
    /// the shard at start.
    pub bus_inbox: std::sync::Mutex<Vec<Option<tokio::sync::mpsc::Receiver<crate::bus::Applied>>>>,
}

/// Per-shard figures, written by the shard, read by anyone (`/metrics`, the status endpoints): the
/// engine's [`Stats`] (the counters and gauges declared once in [`crate::stats`], reached through `Deref`:
/// `stats.connections`) and the driver's own timings.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct ShardStats {
    pub engine: Arc<Stats>,
    /// Events entering the server at the shard, by source.
    pub published: AtomicU64,
    pub simulated: AtomicU64,
    /// Events refused by the publish API (`POST /api/publish` answered 400), by the channel they named, and
    /// when the last of each was (µs since the Unix epoch; 0: never): the streams' health.
    pub refused_by_channel: [AtomicU64; CHANNELS],
    pub last_refused_by_channel: [AtomicU64; CHANNELS],
    /// Ingest-to-flush latency, one sample per write batch.
    pub flush_latency: LatencyHistogram,
    /// Milliseconds since start at the shard's last tick, for /healthz and the stall observer.
    pub alive_ms: AtomicU64,
    /// The shard thread's id, for the stall observer; 0 until its ticker runs.
    pub tid: AtomicU64,
    /// What the observer saw of the thread during a late tick ([`crate::lag::observe`]).
    pub seen: Seen,
    /// How late the shard's ticker woke, one sample per tick ([`crate::lag`]).
    pub loop_lag: LatencyHistogram,
    /// Ticks later than [`crate::lag::WARN`], by cause: [`crate::lag::Cause::ALL`] in order, then unknown.
    pub stalls: [AtomicU64; 4],
}

impl std::ops::Deref for ShardStats {
    type Target = Stats;

    fn deref(&self) -> &Stats {
        &self.engine
    }
}

/// What the observer saw of a late shard's thread, for the tick that started at `tick_ms` (milliseconds
/// since the server started, as `alive_ms`).
#[derive(Debug, Default)]
pub struct Seen(Mutex<Option<(u64, String)>>);

impl Seen {
    /// What was seen during the tick that started at `tick_ms`, if anything.
    pub fn take(&self, tick_ms: u64) -> Option<String> {
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match seen.take() {
            Some((t, what)) if t == tick_ms => Some(what),
            _ => None,
        }
    }

    pub fn record(&self, tick_ms: u64, what: impl FnOnce() -> String) {
        let lock = || self.0.lock().unwrap_or_else(|e| e.into_inner());
        // The first look at a stall is kept: it is the closest to where the stall began. The look itself
        // (reading /proc) happens without the lock, which the shard takes when it wakes.
        if lock().as_ref().is_some_and(|(t, _)| *t == tick_ms) {
            return;
        }
        let what = what();
        let mut seen = lock();
        if seen.as_ref().is_none_or(|(t, _)| *t != tick_ms) {
            *seen = Some((tick_ms, what));
        }
    }
}

#[cfg(test)]
impl Shared {
    /// `shards` shards' worth of shared state with the default configuration and the memory store, for
    /// tests of what is rendered from it.
    pub fn for_tests(shards: usize) -> Shared {
        let config = Config::default();
        Shared {
            shards,
            auth: Authenticator::hs256(b"test"),
            interest: tickwire_fanout::interest::InterestMap::new(64),
            stats: (0..shards).map(|_| ShardStats::default()).collect(),
            shutdown: Arc::new(AtomicBool::new(false)),
            epoch: "test".into(),
            started: Instant::now(),
            store: Arc::new(tickwire_persistence::MemoryStore::new(64)),
            recovered: Mutex::new(Vec::new()),
            recovered_public: Mutex::new(Vec::new()),
            handover: Mutex::new(Vec::new()),
            symbols: Vec::new(),
            security: crate::security::Security::from_config(&config).unwrap(),
            bus: None,
            bus_inbox: Mutex::new(Vec::new()),
            config,
        }
    }
}
