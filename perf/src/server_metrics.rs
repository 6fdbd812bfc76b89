//! The server's own view of a measured step, from tickwire's `GET /metrics`: how late its shards ran their
//! timers (`tickwire_shard_loop_lag_seconds`), the stalls it counted (`tickwire_shard_stalls_total`), and
//! how long its updates took from sequencing to the socket (`tickwire_ingest_to_flush_seconds`), which
//! tells the server's share of the latency from the kernel's and the load generator's.
//! Builds before the stall detector had a watchdog that signalled a shard whose timers were over 50 ms
//! late (`tickwire_shard_wakeups_total`); its count is read too, so that an A/B against such a build
//! compares stalls on both sides. Read once before and once after the step; the report holds the
//! difference. Peers have no such page: their reports simply lack these figures.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde::{Deserialize, Serialize};

const LAG: &str = "tickwire_shard_loop_lag_seconds_bucket";
const FLUSH: &str = "tickwire_ingest_to_flush_seconds_bucket";
const STALLS: &str = "tickwire_shard_stalls_total";
const WAKEUPS: &str = "tickwire_shard_wakeups_total";

/// One reading of the families, summed over shards.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    /// Cumulative buckets of the lag and the ingest-to-flush histograms: (upper bound in µs, `u64::MAX` for
    /// `+Inf`; count).
    lag: BTreeMap<u64, u64>,
    flush: BTreeMap<u64, u64>,
    stalls: BTreeMap<String, u64>,
    wakeups: Option<u64>,
}

/// The server's figures over a step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerView {
    /// Ticks measured (every shard ticks every 5 ms).
    pub samples: u64,
    /// Upper bounds (µs) of the buckets holding p99, p99.9 and the largest sample; `u64::MAX`: above the
    /// largest bound.
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// Ticks over 20 ms late, by cause.
    pub stalls: BTreeMap<String, u64>,
    /// Builds with the old watchdog: its signals to shards over 50 ms late.
    #[serde(default)]
    pub watchdog_wakeups: Option<u64>,
    /// Ingest to flush (one sample per write batch): bucket bounds (µs) of p99 and p99.9, and the samples.
    #[serde(default)]
    pub flush_p99_us: u64,
    #[serde(default)]
    pub flush_p999_us: u64,
    #[serde(default)]
    pub flush_samples: u64,
}

/// Reads `/metrics` of the server at `addr`; `None` when it cannot be read or has none of the families.
pub fn read(addr: SocketAddr) -> Option<Reading> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: tickwire-load\r\nConnection: close\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let reading = parse(&body);
    (!reading.lag.is_empty() || reading.wakeups.is_some()).then_some(reading)
}

/// Sums the two families over shards from Prometheus text.
pub fn parse(text: &str) -> Reading {
    let mut r = Reading::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let Ok(value) = value.parse::<f64>() else { continue };
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let label =
            |key: &str| labels.split(',').find_map(|kv| kv.strip_prefix(key)?.strip_prefix("=\"")?.split('"').next());
        if name == LAG || name == FLUSH {
            let bound = match label("le") {
                Some("+Inf") => u64::MAX,
                Some(le) => match le.parse::<f64>() {
                    Ok(secs) => (secs * 1e6).round() as u64,
                    Err(_) => continue,
                },
                None => continue,
            };
            let buckets = if name == LAG { &mut r.lag } else { &mut r.flush };
            *buckets.entry(bound).or_default() += value as u64;
        } else if name == WAKEUPS {
            *r.wakeups.get_or_insert(0) += value as u64;
        } else if name == STALLS {
            if let Some(cause) = label("cause") {
                *r.stalls.entry(cause.to_owned()).or_default() += value as u64;
            }
        }
    }
    r
}

/// What happened between two readings.
pub fn between(before: &Reading, after: &Reading) -> ServerView {
    let (samples, lag) = quantiles(&before.lag, &after.lag);
    let (flush_samples, flush) = quantiles(&before.flush, &after.flush);
    let stalls = after
        .stalls
        .iter()
        .map(|(cause, &n)| (cause.clone(), n.saturating_sub(before.stalls.get(cause).copied().unwrap_or(0))))
        .collect();
    ServerView {
        samples,
        p99_us: lag(0.99),
        p999_us: lag(0.999),
        max_us: lag(1.0),
        stalls,
        watchdog_wakeups: after.wakeups.map(|n| n.saturating_sub(before.wakeups.unwrap_or(0))),
        flush_p99_us: flush(0.99),
        flush_p999_us: flush(0.999),
        flush_samples,
    }
}

/// The samples between two readings of a histogram, and its quantiles as bucket bounds (0 without samples).
fn quantiles(before: &BTreeMap<u64, u64>, after: &BTreeMap<u64, u64>) -> (u64, impl Fn(f64) -> u64) {
    let cumulative: Vec<(u64, u64)> =
        after.iter().map(|(&bound, &n)| (bound, n.saturating_sub(before.get(&bound).copied().unwrap_or(0)))).collect();
    let samples = cumulative.last().map_or(0, |&(_, n)| n);
    let quantile = move |q: f64| {
        if samples == 0 {
            return 0;
        }
        let rank = ((q * samples as f64).ceil() as u64).max(1);
        cumulative.iter().find(|&&(_, n)| n >= rank).map_or(0, |&(bound, _)| bound)
    };
    (samples, quantile)
}

/// "≤ 2 ms" for a bucket bound.
pub fn bound(us: u64) -> String {
    match us {
        u64::MAX => "> 2.5 s".to_owned(),
        us if us < 1_000 => format!("≤ {us} µs"),
        us => format!("≤ {} ms", us as f64 / 1e3),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(lag: &[(&str, u64)], stalls: u64) -> String {
        let mut out = String::from("# HELP tickwire_shard_loop_lag_seconds x\n");
        for shard in 0..2 {
            for (le, n) in lag {
                out.push_str(&format!("{LAG}{{shard=\"{shard}\",le=\"{le}\"}} {n}\n"));
            }
            out.push_str(&format!("{STALLS}{{shard=\"{shard}\",cause=\"off_cpu\"}} {stalls}\n"));
            out.push_str(&format!("{STALLS}{{shard=\"{shard}\",cause=\"on_cpu\"}} 0\n"));
        }
        out.push_str("tickwire_shard_loop_lag_seconds_count{shard=\"0\"} 5\n");
        out
    }

    #[test]
    fn the_ingest_to_flush_histogram_is_read_beside_the_lag() {
        let page = |fast: u64, slow: u64| {
            let mut out = String::new();
            for (le, n) in [("0.00005", fast), ("0.005", fast + slow), ("+Inf", fast + slow)] {
                out.push_str(&format!("{FLUSH}{{shard=\"0\",le=\"{le}\"}} {n}\n"));
            }
            out + &format!("{LAG}{{shard=\"0\",le=\"+Inf\"}} 0\n")
        };
        let view = between(&parse(&page(10, 0)), &parse(&page(1000, 20)));
        assert_eq!((view.flush_samples, view.flush_p99_us, view.flush_p999_us), (1010, 5_000, 5_000));
        let view = between(&parse(&page(0, 0)), &parse(&page(1000, 5)));
        assert_eq!((view.flush_p99_us, view.flush_p999_us), (50, 5_000));
    }

    #[test]
    fn quantiles_and_stalls_come_from_the_difference_of_two_readings() {
        let before = parse(&page(&[("0.0001", 10), ("0.002", 10), ("0.005", 10), ("+Inf", 10)], 1));
        // Per shard, 1,000 more ticks: 990 under 100 µs, 9 more by 2 ms, 1 by 5 ms.
        let after = parse(&page(&[("0.0001", 1000), ("0.002", 1009), ("0.005", 1010), ("+Inf", 1010)], 3));
        let lag = between(&before, &after);
        assert_eq!((lag.flush_samples, lag.flush_p99_us), (0, 0), "no flush histogram on this page");
        assert_eq!(lag.samples, 2000);
        assert_eq!((lag.p99_us, lag.p999_us, lag.max_us), (100, 2_000, 5_000));
        assert_eq!(lag.stalls, BTreeMap::from([("off_cpu".to_owned(), 4), ("on_cpu".to_owned(), 0)]));
        assert_eq!(bound(lag.p999_us), "≤ 2 ms");
        assert_eq!(bound(100), "≤ 100 µs");
        assert_eq!(bound(u64::MAX), "> 2.5 s");
    }

    #[test]
    fn an_old_build_reports_its_watchdog_signals() {
        let page = |n: u64| format!("{WAKEUPS}{{thread=\"0\"}} {n}\n{WAKEUPS}{{thread=\"1\"}} 1\n");
        let lag = between(&parse(&page(2)), &parse(&page(9)));
        assert_eq!((lag.samples, lag.watchdog_wakeups), (0, Some(7)));
        assert!(lag.stalls.is_empty());
    }

    #[test]
    fn a_page_without_the_families_reads_empty() {
        assert_eq!(parse("tickwire_connections{shard=\"0\"} 3\nnot a metric line\n"), Reading::default());
    }
}
