//! The server's side of persistence: opening the store the configuration names, waiting for critical
//! publishes to be durable, and each shard's metrics history. See docs/persistence.md.

use std::rc::Rc;

use std::sync::Arc;
use std::time::Duration;

use tickwire_persistence::{MemoryStore, MetricsRecord, PgOptions, PgStore, Receipt, Store};

use crate::config::Config;
use crate::histogram::LATENCY_BOUNDS_US;
use crate::shard::Shard;
use crate::state::ShardStats;
use crate::util::now_micros;
use tickwire_fanout::engine::stats::Snapshot;

/// Connections the in-memory store keeps.
const MEMORY_CONNECTIONS: usize = 10_000;
/// Its stripes: enough that shards recording connections at the same moment seldom share a lock.
const MEMORY_STRIPES: usize = 64;

/// The store to run with, and the private topics to continue. Without `database_url`, the memory store;
/// with it, PostgreSQL, or a clear error if it cannot be reached.
pub fn open(config: &Config, bus: Option<&crate::bus::Bus>, node: std::net::SocketAddr) -> anyhow::Result<Opened> {
    // An empty URL (DATABASE_URL= in a unit file) means none.
    let Some(url) = config.database_url.as_ref().filter(|u| !u.trim().is_empty()) else {
        let memory = Arc::new(MemoryStore::striped(MEMORY_CONNECTIONS, MEMORY_STRIPES));
        // With a bus and no database, the bus sequences and keeps every update (critical ones included).
        let (Some(bus), Some(bus_url)) = (bus, config.bus.as_deref()) else {
            return Ok((memory, crate::bus::Recovered::default()));
        };
        let recovered =
            crate::bus::recover(bus_url, config).map_err(|e| anyhow::anyhow!("cannot reach the bus: {e}"))?;
        config.say(&format!(
            "persistence: on the bus ({}), epoch {}; each topic's stored updates come when a subscriber first needs them",
            bus.state.url,
            recovered.epoch.as_deref().unwrap_or("-")
        ));
        return Ok((Arc::new(bus.store(memory)), recovered));
    };
    let mut options = PgOptions::new(url.clone());
    options.critical_buffer = config.critical_buffer;
    options.backlog = config.store_backlog;
    options.recover_per_topic = config.critical_queue;
    options.timeout = Duration::from_millis(config.store_timeout_ms.max(1));
    // A node is its address; one on port 0 (any port, tests) has none to hand over or take over.
    options.node = (config.listen.port() != 0).then(|| node.to_string());
    options.retention =
        (config.retention_days > 0).then(|| Duration::from_secs(u64::from(config.retention_days) * 86_400));
    let (store, recovered) = PgStore::open(options).map_err(|e| {
        anyhow::anyhow!("{e}; fix --database-url (or DATABASE_URL), or unset it to run with the in-memory store")
    })?;
    let unacked: usize = recovered.topics.iter().map(|t| t.unacked.len()).sum();
    config.say(&format!(
        "persistence: PostgreSQL at {} (migrations applied); {} private topics continue, {unacked} unacknowledged critical messages queued",
        tickwire_persistence::pg::redact(url),
        recovered.topics.len()
    ));
    if let Some(epoch) = &recovered.epoch {
        tracing::info!(
            epoch,
            public_topics = recovered.public.len(),
            "persistence: continuing the epoch and public topics the previous process at {node} handed over"
        );
    }
    let recovered =
        crate::bus::Recovered { critical: recovered.topics, epoch: recovered.epoch, public: recovered.public };
    Ok((Arc::new(store), recovered))
}

/// The store, and what it continues: the private topics of the database, or what the bus keeps.
pub type Opened = (Arc<dyn Store>, crate::bus::Recovered);

/// What became of a publish request's critical events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// The request had none.
    NoCritical,
    /// Kept in memory only (no database configured).
    Memory,
    /// Committed to the database.
    Committed,
    /// Not confirmed within the timeout, or refused (buffer full, database lost).
    Failed,
}

/// Waits, at most `timeout`, for the receipts of a publish request's critical items.
pub async fn durability(receipts: Vec<Option<Receipt>>, timeout: Duration) -> Durability {
    if receipts.is_empty() {
        return Durability::NoCritical;
    }
    if receipts.iter().all(Option::is_none) {
        return Durability::Memory;
    }
    let all = glommio::timer::timeout(timeout, async move {
        for r in receipts.into_iter().flatten() {
            if r.await.is_none() {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await;
    match all {
        Ok(true) => Durability::Committed,
        _ => Durability::Failed,
    }
}

/// Waits, at most `timeout`, for the sequences of a publish request's items that the cluster's bus
/// sequences ([`tickwire_persistence::Store::sequences`]), in order; `None` if one was not stored in time.
pub async fn sequenced(receipts: Vec<Option<Receipt>>, timeout: Duration) -> Option<Vec<u64>> {
    glommio::timer::timeout(timeout, async move {
        let mut sequences = Vec::with_capacity(receipts.len());
        for r in receipts {
            match r {
                Some(r) => sequences.push(r.await),
                None => sequences.push(None),
            }
        }
        Ok(sequences.into_iter().collect::<Option<Vec<u64>>>())
    })
    .await
    .ok()
    .flatten()
}

/// What a metrics row is computed from, at one moment: every row of the counters table
/// ([`tickwire_fanout::engine::stats::Snapshot`]), the deliveries summed over channels, and the latency
/// histogram.
#[derive(Debug, Clone)]
struct Sample {
    at: tickwire_core::time::Micros,
    counters: Snapshot,
    deliveries: u64,
    bytes: u64,
    latency: [u64; LATENCY_BOUNDS_US.len() + 1],
}

impl Sample {
    fn take(s: &ShardStats) -> Sample {
        Sample {
            at: now_micros(),
            counters: s.counters.snapshot(),
            deliveries: s.deliveries(),
            bytes: s.delivered_bytes(),
            latency: s.flush_latency.snapshot().0,
        }
    }
}

/// Writes the shard's figures to the store every `metrics_interval_s`, until the server stops.
pub async fn record_metrics(shard: Rc<Shard>) {
    let interval = Duration::from_secs(shard.shared.config.metrics_interval_s.max(1));
    let mut last = Sample::take(shard.stats());
    while !shard.stopping() {
        glommio::timer::sleep(interval).await;
        let stats = shard.stats();
        let now = Sample::take(stats);
        shard.shared.store.metrics(metrics_row(shard.id, &last, &now));
        last = now;
    }
}

fn metrics_row(shard: usize, last: &Sample, now: &Sample) -> MetricsRecord {
    let secs = ((now.at - last.at) as f64 / 1e6).max(1e-3);
    let rate = |a: u64, b: u64| b.saturating_sub(a) as f64 / secs;
    let mut latency = [0; LATENCY_BOUNDS_US.len() + 1];
    for (d, (a, b)) in latency.iter_mut().zip(last.latency.iter().zip(&now.latency)) {
        *d = b.saturating_sub(*a);
    }
    let (a, b) = (&last.counters, &now.counters);
    MetricsRecord {
        at: now.at,
        shard,
        interval_s: secs,
        connections: b.connections,
        connections_opened: b.connections_opened.saturating_sub(a.connections_opened),
        subscriptions: b.subscriptions,
        messages_in_per_s: rate(a.messages_in, b.messages_in),
        ingested_per_s: rate(a.ingested, b.ingested),
        deliveries_per_s: rate(last.deliveries, now.deliveries),
        bytes_per_s: rate(last.bytes, now.bytes),
        latency_p50_ms: quantile_ms(&latency, 0.5),
        latency_p99_ms: quantile_ms(&latency, 0.99),
    }
}

/// The upper bound (ms) of the bucket holding quantile `q` of cumulative bucket counts; `None` without
/// samples. Above the largest bound it answers that bound.
fn quantile_ms(cumulative: &[u64; LATENCY_BOUNDS_US.len() + 1], q: f64) -> Option<f64> {
    let total = cumulative[LATENCY_BOUNDS_US.len()];
    if total == 0 {
        return None;
    }
    let rank = (q * total as f64).ceil().max(1.0) as u64;
    let i = cumulative.iter().position(|&c| c >= rank).unwrap_or(LATENCY_BOUNDS_US.len());
    Some(LATENCY_BOUNDS_US[i.min(LATENCY_BOUNDS_US.len() - 1)] as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;

    #[test]
    fn an_unreachable_database_is_one_clear_error_without_the_password_and_an_empty_url_is_none() {
        let config = Config { database_url: Some("postgres://me:pw@127.0.0.1:1/x".into()), ..Config::default() };
        let Err(err) = open(&config, None, "127.0.0.1:1".parse().unwrap()).map(|_| ()) else {
            panic!("no database there")
        };
        let err = err.to_string();
        assert!(err.contains("cannot connect to the database at postgres://me@127.0.0.1:1/x"), "{err}");
        assert!(err.contains("unset it to run with the in-memory store") && !err.contains(":pw@"), "{err}");
        let empty = Config { database_url: Some(" ".into()), ..Config::default() };
        assert!(
            open(&empty, None, "127.0.0.1:1".parse().unwrap()).unwrap().1.critical.is_empty(),
            "an empty URL (DATABASE_URL= in a unit file) is the memory store"
        );
    }

    #[test]
    fn a_metrics_row_is_the_gauges_now_and_the_counters_over_the_interval() {
        let stats = ShardStats::default();
        stats.connections.store(3, Ordering::Relaxed);
        stats.messages_in.store(100, Ordering::Relaxed);
        let mut last = Sample::take(&stats);
        stats.connections.store(5, Ordering::Relaxed);
        stats.subscriptions.store(7, Ordering::Relaxed);
        stats.connections_opened.fetch_add(2, Ordering::Relaxed);
        stats.messages_in.fetch_add(40, Ordering::Relaxed);
        stats.ingested.fetch_add(20, Ordering::Relaxed);
        stats.delivered(tickwire_core::Channel::Quotes, 10, 1000);
        stats.flush_latency.record(70);
        let mut now = Sample::take(&stats);
        (last.at, now.at) = (1_000_000, 3_000_000); // two seconds apart
        let row = metrics_row(1, &last, &now);
        assert_eq!((row.shard, row.interval_s, row.connections, row.subscriptions), (1, 2.0, 5, 7));
        assert_eq!(row.connections_opened, 2);
        assert_eq!((row.messages_in_per_s, row.ingested_per_s), (20.0, 10.0));
        assert_eq!((row.deliveries_per_s, row.bytes_per_s), (5.0, 500.0));
        assert_eq!((row.latency_p50_ms, row.latency_p99_ms), (Some(0.1), Some(0.1)));
    }

    #[test]
    fn quantiles_name_their_bucket_bound() {
        let mut c = [0u64; LATENCY_BOUNDS_US.len() + 1];
        assert_eq!(quantile_ms(&c, 0.5), None);
        // 10 samples: 6 at <= 50 us, 3 at <= 1 ms, 1 in (1 s, 2.5 s].
        for (i, v) in c.iter_mut().enumerate() {
            *v = match i {
                0..=3 => 6,
                4..=15 => 9,
                _ => 10,
            };
        }
        assert_eq!(quantile_ms(&c, 0.5), Some(0.05));
        assert_eq!(quantile_ms(&c, 0.9), Some(1.0));
        assert_eq!(quantile_ms(&c, 0.99), Some(2500.0));
    }
}
