//! Server metrics: `GET /metrics` in the Prometheus text format (0.0.4) and the admin stats JSON, both
//! rendered on request from the shards' own atomics ([`ShardStats`]).
//!
//! Imports run one way in `net`: leaves (`util`, `http`, `tls`, `auth`, `histogram`, `config`, `limits`,
//! `signing`), then `security`, `state`, `lag`, `metrics`, `conn`, `shard`, `store`, `session`, `routes`,
//! `server`; no module imports one after it.
//!
//! Nothing here runs per subscriber. The fanout path adds one count and one byte total per topic update
//! and channel ([`crate::shard::Shard`]); writers add their figures and one latency sample per write batch;
//! the outbound queue gauges are sampled by each shard's ticker once a second.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use tickwire_core::channel::CATALOG;

use crate::histogram::{LatencyHistogram, LATENCY_BOUNDS_US};
use crate::state::{ShardStats, Shared, Stats};

/// A bound as a Prometheus `le` label, in seconds (`50` µs is `0.00005`).
fn le(bound_us: u64) -> String {
    (bound_us as f64 / 1e6).to_string()
}

/// The Content-Type of `/metrics`.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Writes one metric family: HELP, TYPE, and one sample per shard from `value`.
fn family(out: &mut String, shared: &Shared, name: &str, kind: &str, help: &str, value: impl Fn(&ShardStats) -> u64) {
    header(out, name, kind, help);
    for (i, s) in shared.stats.iter().enumerate() {
        let _ = writeln!(out, "{name}{{shard=\"{i}\"}} {}", value(s));
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// A per-channel family: one sample per shard and channel.
fn per_channel(out: &mut String, shared: &Shared, name: &str, help: &str, values: fn(&ShardStats) -> &[AtomicU64]) {
    header(out, name, "counter", help);
    for (i, s) in shared.stats.iter().enumerate() {
        for (row, v) in CATALOG.iter().zip(values(s)) {
            let _ = writeln!(out, "{name}{{shard=\"{i}\",channel=\"{}\"}} {}", row.name, load(v));
        }
    }
}

/// The whole `/metrics` page: every row of [`crate::stats`], then the families with labels or buckets.
pub fn render_prometheus(shared: &Shared) -> String {
    let mut out = String::with_capacity(4096 + shared.shards * 4096);
    header(&mut out, "tickwire_uptime_seconds", "gauge", "Seconds since the server started.");
    let _ = writeln!(out, "tickwire_uptime_seconds {}", shared.started.elapsed().as_secs_f64());
    for f in crate::stats::FAMILIES {
        family(&mut out, shared, f.name, f.kind.name(), f.help, |s| load((f.get)(&s.counters)));
    }
    per_channel(
        &mut out,
        shared,
        "tickwire_deliveries_total",
        "Update frames queued to subscribers (one per subscriber), by channel; sum without (channel) for the total.",
        |s| &s.deliveries_by_channel,
    );
    per_channel(
        &mut out,
        shared,
        "tickwire_delivered_bytes_total",
        "Bytes of the update frames queued to subscribers, by channel.",
        |s| &s.delivered_bytes_by_channel,
    );
    header(
        &mut out,
        "tickwire_renders_total",
        "counter",
        "Update frames rendered by topics' owner shards, by dialect: one per update for each dialect with subscribers of its topic (the canonical one always: history keeps it), however many subscribers share it.",
    );
    for (i, s) in shared.stats.iter().enumerate() {
        for (d, n) in tickwire_core::protocol::DIALECTS.iter().zip(&s.renders_by_dialect) {
            let _ = writeln!(out, "tickwire_renders_total{{shard=\"{i}\",dialect=\"{}\"}} {}", d.name, load(n));
        }
    }
    header(
        &mut out,
        "tickwire_dialect_connections",
        "gauge",
        "Open WebSocket connections by the dialect their clients speak (publishers count as canonical).",
    );
    for (i, s) in shared.stats.iter().enumerate() {
        for (d, n) in tickwire_core::protocol::DIALECTS.iter().zip(&s.connections_by_dialect) {
            let _ = writeln!(out, "tickwire_dialect_connections{{shard=\"{i}\",dialect=\"{}\"}} {}", d.name, load(n));
        }
    }
    header(
        &mut out,
        "tickwire_events_received_total",
        "counter",
        "Events entering the server at the shard, by source (before routing to their topics' owners).",
    );
    for (i, s) in shared.stats.iter().enumerate() {
        for (source, n) in [("simulator", &s.simulated), ("publish", &s.published)] {
            let _ = writeln!(out, "tickwire_events_received_total{{shard=\"{i}\",source=\"{source}\"}} {}", load(n));
        }
    }
    histogram(
        &mut out,
        shared,
        "tickwire_ingest_to_flush_seconds",
        "Time from an update's sequencing on its owner shard to the writer handing it to the socket; one sample per write batch (its earliest update); conflated frames are not counted.",
        |s| &s.flush_latency,
    );
    histogram(
        &mut out,
        shared,
        "tickwire_shard_loop_lag_seconds",
        "How much later than due each shard ran its 5 ms ticker: one sample per tick. A stall of the shard (a long task, a parked wait, the host's scheduler) shows here.",
        |s| &s.loop_lag,
    );
    header(
        &mut out,
        "tickwire_shard_stalls_total",
        "counter",
        "Ticks later than 20 ms, by cause from the shard thread's scheduler statistics: on_cpu (a task ran that long), waiting_for_cpu (runnable, the host ran something else), off_cpu (asleep in the kernel: a parked wait or a blocking call), unknown (no statistics).",
    );
    for (i, s) in shared.stats.iter().enumerate() {
        let causes = crate::lag::Cause::ALL.iter().map(|c| c.name()).chain(["unknown"]);
        for (cause, n) in causes.zip(&s.stalls) {
            let _ = writeln!(out, "tickwire_shard_stalls_total{{shard=\"{i}\",cause=\"{cause}\"}} {}", load(n));
        }
    }
    store_families(&mut out, shared);
    if let Some(bus) = &shared.bus {
        header(
            &mut out,
            "tickwire_bus_up",
            "gauge",
            "1 while the cluster bus (NATS JetStream) is usable: connected, streams in place; 0 while publishes are refused.",
        );
        let _ = writeln!(out, "tickwire_bus_up {}", u8::from(bus.usable()));
        for (name, help, n) in [
            ("tickwire_bus_stored_total", "Updates this node sequenced and the cluster's stream stored.", &bus.stored),
            (
                "tickwire_bus_fenced_total",
                "Publishes the stream refused because another node had stored an update of the topic meanwhile (each tried again with the next sequence).",
                &bus.fenced,
            ),
            ("tickwire_bus_applied_total", "Updates and acks read from the cluster's streams (every node's) and taken by this node's shards.", &bus.applied),
        ] {
            header(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {}", n.load(Ordering::Relaxed));
        }
        header(
            &mut out,
            "tickwire_bus_followed_topics",
            "gauge",
            "Topics this node follows on the bus: those its clients subscribe to.",
        );
        let _ = writeln!(out, "tickwire_bus_followed_topics {}", bus.followed.load(Ordering::Relaxed));
    }
    out
}

/// A per-shard histogram family from one [`LatencyHistogram`] of each shard.
fn histogram(out: &mut String, shared: &Shared, name: &str, help: &str, field: fn(&ShardStats) -> &LatencyHistogram) {
    header(out, name, "histogram", help);
    for (i, s) in shared.stats.iter().enumerate() {
        let (cumulative, sum_us) = field(s).snapshot();
        for (bound, n) in LATENCY_BOUNDS_US.iter().zip(&cumulative) {
            let _ = writeln!(out, "{name}_bucket{{shard=\"{i}\",le=\"{}\"}} {n}", le(*bound));
        }
        let total = cumulative[LATENCY_BOUNDS_US.len()];
        let _ = writeln!(out, "{name}_bucket{{shard=\"{i}\",le=\"+Inf\"}} {total}");
        let _ = writeln!(out, "{name}_sum{{shard=\"{i}\"}} {}", sum_us as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{{shard=\"{i}\"}} {total}");
    }
}

/// The persistence store's figures (docs/persistence.md).
fn store_families(out: &mut String, shared: &Shared) {
    let st = shared.store.stats();
    let families: [(&str, &str, &str, u64); 6] = [
        ("tickwire_store_up", "gauge", "1 while the store's last database write succeeded (always 1 in memory).", st.up as u64),
        ("tickwire_store_rows_written_total", "counter", "Rows the store wrote to the database.", st.written),
        (
            "tickwire_store_shed_total",
            "counter",
            "Bookkeeping records (connections, subscriptions, metrics, sequences) dropped because the buffer toward the database was full.",
            st.shed,
        ),
        (
            "tickwire_store_critical_refused_total",
            "counter",
            "Critical messages refused (their publish got 503) or acks not recorded, for a full buffer toward the database.",
            st.critical_refused,
        ),
        ("tickwire_store_write_errors_total", "counter", "Failed database writes, each retried with backoff.", st.write_errors),
        ("tickwire_store_backlog", "gauge", "Records waiting to be written to the database.", st.backlog),
    ];
    for (name, kind, help, value) in families {
        header(out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
}

/// Shards whose last tick is older than [`crate::lag::UNHEALTHY`] (a loop lag over a second, as `/healthz`
/// judges), with that age in milliseconds.
pub fn stalled_shards(shared: &Shared) -> Vec<(usize, u64)> {
    let now_ms = shared.started.elapsed().as_millis() as u64;
    let limit = crate::lag::UNHEALTHY.as_millis() as u64;
    (0..shared.shards)
        .map(|s| (s, now_ms.saturating_sub(load(&shared.stats[s].alive_ms))))
        .filter(|&(_, age)| age > limit)
        .collect()
}

/// A figure of a shard that is not a row of the counters table: its key and how to read it.
pub type Extra = (&'static str, fn(&Stats) -> u64);

/// Each shard's figures as JSON objects: `shard`, then every row of the counters table that `name` names
/// (under that name), then the `extra` figures.
pub fn shard_figures(
    shared: &Shared,
    name: impl Fn(&crate::stats::Family) -> Option<&'static str>,
    extra: &[Extra],
) -> Vec<serde_json::Value> {
    let rows: Vec<_> = crate::stats::FAMILIES.iter().filter_map(|f| Some((name(f)?, f.get))).collect();
    shared
        .stats
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut figures = serde_json::Map::new();
            figures.insert("shard".into(), i.into());
            for (key, get) in &rows {
                figures.insert((*key).into(), load(get(&s.counters)).into());
            }
            for (key, value) in extra {
                figures.insert((*key).into(), value(s).into());
            }
            figures.into()
        })
        .collect()
}

/// `GET /api/admin/websocket-stats`: the admin stats of the seed's portfolio stream (`status`, `enabled`,
/// `activeConnections`, `totalMessagesDelivered`, `performance`), then tickwire's own totals and per-shard
/// figures.
pub fn admin_stats_json(shared: &Shared) -> Vec<u8> {
    let sum = |f: fn(&ShardStats) -> u64| -> u64 { shared.stats.iter().map(f).sum() };
    let connections = sum(|s| load(&s.connections));
    let written_frames = sum(|s| load(&s.written_frames));
    let writes = sum(|s| load(&s.writes));
    let closed = sum(|s| load(&s.connections_closed));
    let uptime = shared.started.elapsed().as_secs_f64();
    // Corking: the share of frames that did not need a write of their own.
    let batch_efficiency = if written_frames == 0 {
        0.0
    } else {
        100.0 * (written_frames - writes.min(written_frames)) as f64 / written_frames as f64
    };
    // Disconnects per minute since start, averaged over at least one minute.
    let disconnect_rate = closed as f64 * 60.0 / uptime.max(60.0);
    let status = if stalled_shards(shared).is_empty() { "healthy" } else { "degraded" };
    let shards = shard_figures(
        shared,
        |f| f.admin,
        &[("deliveries", Stats::deliveries), ("bytesDelivered", Stats::delivered_bytes)],
    );
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Performance {
        batch_efficiency: String,
        disconnect_rate_per_minute: String,
    }
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct AdminStats {
        status: &'static str,
        enabled: bool,
        active_connections: u64,
        total_messages_delivered: u64,
        performance: Performance,
        uptime_seconds: u64,
        total_connections_opened: u64,
        total_disconnects: u64,
        slow_consumer_closes: u64,
        total_deliveries: u64,
        total_writes: u64,
        shards: Vec<serde_json::Value>,
    }
    let body = AdminStats {
        status,
        enabled: true,
        active_connections: connections,
        total_messages_delivered: written_frames,
        performance: Performance {
            batch_efficiency: format!("{batch_efficiency:.1}%"),
            disconnect_rate_per_minute: format!("{disconnect_rate:.2}"),
        },
        uptime_seconds: uptime as u64,
        total_connections_opened: sum(|s| load(&s.connections_opened)),
        total_disconnects: closed,
        slow_consumer_closes: sum(|s| load(&s.slow_consumer_closes)),
        total_deliveries: sum(|s| s.deliveries()),
        total_writes: writes,
        shards,
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

/// A histogram of every shard merged, as the stats feed gives it: the bucket bounds (µs), the cumulative
/// count at each (the last is everything) and the sum (µs). Clients take percentiles of the difference
/// between two reads, so that they chart the last interval rather than the whole run.
#[derive(serde::Serialize)]
struct MergedHistogram {
    bounds_us: &'static [u64],
    cumulative: Vec<u64>,
    sum_us: u64,
}

fn merged(shared: &Shared, field: fn(&ShardStats) -> &LatencyHistogram) -> MergedHistogram {
    let mut cumulative = vec![0; LATENCY_BOUNDS_US.len() + 1];
    let mut sum_us = 0;
    for s in shared.stats.iter() {
        let (c, sum) = field(s).snapshot();
        cumulative.iter_mut().zip(c).for_each(|(a, b)| *a += b);
        sum_us += sum;
    }
    MergedHistogram { bounds_us: &LATENCY_BOUNDS_US, cumulative, sum_us }
}

/// `GET /api/ws/stats`: the figures the monitor page charts, as JSON: totals (counters since start, for
/// rates between two reads), gauges, the latency histograms and each shard's figures.
pub fn stats_json(shared: &Shared) -> Vec<u8> {
    let sum = |f: fn(&ShardStats) -> u64| -> u64 { shared.stats.iter().map(f).sum() };
    let mut by_channel = serde_json::Map::new();
    for (c, row) in CATALOG.iter().enumerate() {
        let n: u64 = shared.stats.iter().map(|s| load(&s.deliveries_by_channel[c])).sum();
        by_channel.insert(row.name.into(), n.into());
    }
    let shards = shard_figures(
        shared,
        |f| crate::stats::STATUS.contains(&f.field).then_some(f.field),
        &[("deliveries", Stats::deliveries), ("delivered_bytes", Stats::delivered_bytes)],
    );
    let shards: Vec<serde_json::Value> = shards
        .into_iter()
        .zip(shared.stats.iter())
        .map(|(mut figures, s)| {
            let lag = s.loop_lag.snapshot();
            figures["loop_lag_p99_us"] = percentile(&lag.0, 0.99).into();
            figures["stalls"] = s.stalls.iter().map(load).sum::<u64>().into();
            figures
        })
        .collect();
    let body = serde_json::json!({
        "timestamp_ms": crate::util::now_micros() / 1000,
        "uptime_s": shared.started.elapsed().as_secs_f64(),
        "epoch": shared.epoch,
        "status": if stalled_shards(shared).is_empty() { "healthy" } else { "degraded" },
        "max_connections": shared.config.max_connections,
        "heartbeat_s": shared.config.heartbeat_s,
        "connections": sum(|s| load(&s.connections)),
        "subscriptions": sum(|s| load(&s.subscriptions)),
        "topics": sum(|s| load(&s.topics)),
        "totals": {
            "ingested": sum(|s| load(&s.ingested)),
            "messages_in": sum(|s| load(&s.messages_in)),
            "deliveries": sum(|s| s.deliveries()),
            "delivered_bytes": sum(|s| s.delivered_bytes()),
            "writes": sum(|s| load(&s.writes)),
            "connections_opened": sum(|s| load(&s.connections_opened)),
            "connections_closed": sum(|s| load(&s.connections_closed)),
            "slow_consumer_closes": sum(|s| load(&s.slow_consumer_closes)),
            "published": sum(|s| load(&s.published)),
            "simulated": sum(|s| load(&s.simulated)),
        },
        "deliveries_by_channel": by_channel,
        "ingest_to_flush": merged(shared, |s| &s.flush_latency),
        "loop_lag": merged(shared, |s| &s.loop_lag),
        "shards": shards,
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The bound (µs) under which `q` of a histogram's samples fall (cumulative counts per
/// [`LATENCY_BOUNDS_US`], the last one the total); 0 without samples, the largest bound past it.
pub fn percentile(cumulative: &[u64], q: f64) -> u64 {
    let total = *cumulative.last().unwrap_or(&0);
    if total == 0 {
        return 0;
    }
    let rank = (q * total as f64).ceil() as u64;
    let i = cumulative.iter().position(|&c| c >= rank).unwrap_or(cumulative.len() - 1);
    *LATENCY_BOUNDS_US.get(i).unwrap_or(&LATENCY_BOUNDS_US[LATENCY_BOUNDS_US.len() - 1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_parse::{Scrape, Value};

    /// Two shards with some figures: deliveries of quotes on shard 1, two flushes timed on shard 0.
    fn shared() -> Shared {
        let shared = Shared::for_tests(2);
        shared.stats[1].connections.fetch_add(3, Ordering::Relaxed);
        shared.stats[1].deliveries_by_channel[0].fetch_add(20, Ordering::Relaxed);
        shared.stats[1].delivered_bytes_by_channel[0].fetch_add(2000, Ordering::Relaxed);
        shared.stats[0].flush_latency.record(70);
        shared.stats[0].flush_latency.record(2_000_000);
        shared.stats[1].stalls[2].fetch_add(1, Ordering::Relaxed);
        shared
    }

    #[test]
    fn the_stats_feed_sums_the_shards_and_merges_their_histograms() {
        let shared = shared();
        shared.stats[0].connections.fetch_add(2, Ordering::Relaxed);
        shared.stats[1].flush_latency.record(3_000);
        let v: serde_json::Value = serde_json::from_slice(&stats_json(&shared)).unwrap();
        assert_eq!(v["connections"], 5);
        assert_eq!(v["shards"].as_array().unwrap().len(), 2);
        assert_eq!((&v["shards"][0]["connections"], &v["shards"][1]["connections"]), (&2.into(), &3.into()));
        assert_eq!(v["shards"][1]["stalls"], 1);
        assert_eq!((&v["totals"]["deliveries"], &v["totals"]["delivered_bytes"]), (&20.into(), &2000.into()));
        assert_eq!(v["deliveries_by_channel"]["quotes"], 20);
        assert_eq!(v["deliveries_by_channel"]["orders"], 0);
        let h = &v["ingest_to_flush"];
        let cumulative: Vec<u64> = serde_json::from_value(h["cumulative"].clone()).unwrap();
        assert_eq!(cumulative.len(), h["bounds_us"].as_array().unwrap().len() + 1);
        // 70 µs (shard 0) is under 100 µs; 3 ms (shard 1) under 3 ms; 2 s (shard 0) under 2.5 s.
        assert_eq!((cumulative[0], cumulative[1], cumulative[6], cumulative[16], cumulative[17]), (0, 1, 2, 3, 3));
        assert_eq!(h["sum_us"], 2_003_070);
        assert_eq!(v["epoch"], shared.epoch.as_str());
    }

    #[test]
    fn percentiles_are_read_from_cumulative_counts() {
        let h = LatencyHistogram::default();
        assert_eq!(percentile(&h.snapshot().0, 0.99), 0, "no samples");
        for us in (0..98).map(|_| 80).chain([4_500, 4_000_000]) {
            h.record(us);
        }
        let c = h.snapshot().0;
        assert_eq!(percentile(&c, 0.5), 100);
        assert_eq!(percentile(&c, 0.98), 100);
        assert_eq!(percentile(&c, 0.99), 5_000);
        assert_eq!(percentile(&c, 1.0), 2_500_000, "past the largest bound: the largest bound");
    }

    #[test]
    fn the_metrics_page_is_prometheus_text_with_every_family_per_shard() {
        let page = render_prometheus(&shared());
        let scrape = Scrape::parse(page.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text format");
        let of = |name: &str| scrape.samples.iter().filter(|s| s.metric == name).collect::<Vec<_>>();
        let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
            let s = of(name).into_iter().find(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)));
            match s.unwrap_or_else(|| panic!("{name} {labels:?}")).value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
                _ => panic!("{name} is not a number"),
            }
        };
        let histograms = ["tickwire_ingest_to_flush_seconds", "tickwire_shard_loop_lag_seconds"];
        let names = crate::stats::FAMILIES.iter().map(|f| f.name);
        let labelled =
            ["tickwire_deliveries_total", "tickwire_delivered_bytes_total", "tickwire_events_received_total"];
        for name in names.chain(labelled).chain(histograms).chain(["tickwire_shard_stalls_total"]) {
            assert!(scrape.docs.contains_key(name), "{name} has no HELP");
            for shard in ["0", "1"] {
                assert!(of(name).iter().any(|s| s.labels.get("shard") == Some(shard)), "{name} has no shard {shard}");
            }
        }
        for f in crate::stats::FAMILIES {
            let typed = of(f.name).iter().all(|s| match s.value {
                Value::Counter(_) => f.kind.name() == "counter",
                Value::Gauge(_) => f.kind.name() == "gauge",
                _ => false,
            });
            assert!(typed, "{} is not a {}", f.name, f.kind.name());
        }
        assert_eq!(value("tickwire_connections", &[("shard", "1")]), 3.0);
        assert_eq!(value("tickwire_deliveries_total", &[("shard", "1"), ("channel", "quotes")]), 20.0);
        assert_eq!(value("tickwire_delivered_bytes_total", &[("shard", "1"), ("channel", "quotes")]), 2000.0);
        assert_eq!(value("tickwire_deliveries_total", &[("shard", "1"), ("channel", "orders")]), 0.0);
        assert_eq!(value("tickwire_events_received_total", &[("shard", "0"), ("source", "simulator")]), 0.0);
        assert_eq!(value("tickwire_shard_stalls_total", &[("shard", "1"), ("cause", "off_cpu")]), 1.0);
        let causes: Vec<_> = of("tickwire_shard_stalls_total")
            .iter()
            .filter(|s| s.labels.get("shard") == Some("0"))
            .filter_map(|s| s.labels.get("cause"))
            .collect();
        assert_eq!(causes, ["on_cpu", "waiting_for_cpu", "off_cpu", "unknown"]);
        assert_eq!(value("tickwire_store_up", &[]), 1.0, "the memory store is always up");
        // Cumulative buckets from 50 µs to 1 s and +Inf, +Inf equal to _count, _sum in seconds.
        let flush = of("tickwire_ingest_to_flush_seconds");
        let h = flush.iter().find(|s| s.labels.get("shard") == Some("0")).unwrap();
        let Value::Histogram(buckets) = &h.value else { panic!("a histogram") };
        let bounds: Vec<f64> = buckets.iter().map(|b| b.less_than).collect();
        assert_eq!(bounds.first(), Some(&0.00005));
        assert!(bounds.contains(&1.0) && bounds.last() == Some(&f64::INFINITY), "{bounds:?}");
        assert!(buckets.windows(2).all(|w| w[0].less_than < w[1].less_than && w[0].count <= w[1].count));
        let at = |le: f64| buckets.iter().find(|b| b.less_than == le).unwrap().count;
        assert_eq!((at(0.0001), at(1.0), at(f64::INFINITY)), (1.0, 1.0, 2.0), "70 µs and 2 s");
        assert_eq!(value("tickwire_ingest_to_flush_seconds_count", &[("shard", "0")]), 2.0);
        assert!((value("tickwire_ingest_to_flush_seconds_sum", &[("shard", "0")]) - 2.00007).abs() < 1e-9);
    }

    #[test]
    fn the_admin_stats_name_each_shards_figures() {
        let v: serde_json::Value = serde_json::from_slice(&admin_stats_json(&shared())).unwrap();
        assert_eq!(
            (&v["status"], &v["enabled"], &v["activeConnections"]),
            (&"healthy".into(), &true.into(), &3.into())
        );
        assert_eq!(v["totalDeliveries"], 20);
        assert_eq!(v["performance"]["batchEfficiency"], "0.0%");
        assert_eq!(v["performance"]["disconnectRatePerMinute"], "0.00");
        let shards = v["shards"].as_array().unwrap();
        assert_eq!(shards.len(), 2);
        assert_eq!(
            (&shards[1]["connections"], &shards[1]["deliveries"], &shards[1]["bytesDelivered"]),
            (&3.into(), &20.into(), &2000.into())
        );
        let mut keys: Vec<&str> = shards[0].as_object().unwrap().keys().map(|k| k.as_str()).collect();
        keys.sort();
        let expected = "bytesDelivered connections deliveries disconnects eventsIngested messagesDelivered messagesIn \
                        queuedBytes queuedFrames shard slowConsumerCloses subscriptions topics";
        assert_eq!(keys, expected.split_whitespace().collect::<Vec<_>>(), "each shard's figures");
    }

    #[test]
    fn le_labels_are_seconds() {
        assert_eq!(le(50), "0.00005");
        assert_eq!(le(4_000), "0.004");
        assert_eq!(le(1_000_000), "1");
    }
}
