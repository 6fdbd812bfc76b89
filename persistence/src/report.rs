//! `tickwire report`: connections and throughput over time, from the metrics history and the connection
//! log, for capacity planning.

use std::fmt::Write as _;
use std::time::Duration;

use crate::pg::{connect, Error, CONNECT_TIMEOUT};

/// Parses `90s`, `15m`, `1h`, `7d` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().ok()?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    (secs > 0).then(|| Duration::from_secs(secs))
}

/// The report over the last `since`, one line per `bucket`.
pub fn report(url: &str, since: Duration, bucket: Duration) -> Result<String, Error> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let client = connect(url, CONNECT_TIMEOUT).await?;
        let since_s = since.as_secs_f64();
        let bucket_s = bucket.as_secs_f64().max(1.0);
        let mut out = String::new();
        let totals = client
            .query_one(
                "SELECT count(*), count(DISTINCT user_id), count(disconnected_at),
                        coalesce(avg(extract(epoch FROM disconnected_at - connected_at)), 0)::float8
                 FROM websocket_connections WHERE connected_at >= now() - make_interval(secs => $1)",
                &[&since_s],
            )
            .await?;
        let (opened, users, closed, mean_s): (i64, i64, i64, f64) =
            (totals.get(0), totals.get(1), totals.get(2), totals.get(3));
        let _ = writeln!(
            out,
            "tickwire report: the last {}\nconnections opened: {opened} ({users} distinct users), closed: {closed}, mean duration of the closed: {mean_s:.1} s\n",
            human(since)
        );
        let rows = client
            .query(
                "WITH per_shard AS (
                     SELECT floor(extract(epoch FROM recorded_at)::float8 / $2::float8) AS b, run_id, shard,
                            avg(connections)::float8 AS c, sum(connections_opened)::float8 AS o,
                            avg(ingested_per_s) AS ig, avg(deliveries_per_s) AS d, avg(bytes_per_s) AS by,
                            max(latency_p99_ms) AS p99
                     FROM websocket_metrics WHERE recorded_at >= now() - make_interval(secs => $1)
                     GROUP BY 1, 2, 3)
                 SELECT to_char(to_timestamp(b * $2::float8) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'),
                        sum(c)::float8, sum(o)::float8, sum(ig)::float8, sum(d)::float8, sum(by)::float8,
                        max(p99)::float8
                 FROM per_shard GROUP BY b ORDER BY b",
                &[&since_s, &bucket_s],
            )
            .await?;
        let _ = writeln!(
            out,
            "{:<20} {:>11} {:>9} {:>12} {:>14} {:>10} {:>9}",
            "time (UTC)", "connections", "opened", "ingested/s", "deliveries/s", "MB/s", "p99 ms"
        );
        for r in &rows {
            let (t, c, o, ig, d, by, p99): (String, f64, f64, f64, f64, f64, Option<f64>) =
                (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6));
            let p99 = p99.map_or("-".to_owned(), |p| format!("{p:.2}"));
            let _ = writeln!(out, "{t:<20} {c:>11.0} {o:>9.0} {ig:>12.1} {d:>14.1} {:>10.3} {p99:>9}", by / 1e6);
        }
        if rows.is_empty() {
            let _ = writeln!(out, "(no figures recorded in this window: is the server running with --database-url?)");
        }
        Ok(out)
    })
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s % 86_400 == 0 => format!("{} d", s / 86_400),
        s if s % 3600 == 0 => format!("{} h", s / 3600),
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("2d"), Some(Duration::from_secs(172_800)));
        for bad in ["", "h", "0s", "1y", "-1h", "99999999999999999999d"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
