//! Run reports: the JSON record, the summary table, and Markdown with SVG plots for capacity planning.

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::stats::Second;

/// One saturation step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    pub offered_rate: f64,
    pub delivered_per_s: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub lost: u64,
    pub server_cpu_pct: Option<f64>,
    pub passed: bool,
}

/// Everything a run reports. Scenario-specific figures are optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    pub scenario: String,
    /// The target's name (tickwire, bun, ...) and address.
    pub target: String,
    pub address: String,
    pub protocol: String,
    pub connections: usize,
    pub symbols: usize,
    pub subs_per_conn: usize,
    pub duration_s: f64,
    /// Events per second published.
    pub offered_rate: f64,
    pub delivered_total: u64,
    pub expected_total: u64,
    pub delivered_per_s: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// Deliveries that never arrived (expected minus received) or sequence jumps, whichever is larger.
    pub lost: u64,
    pub gaps: u64,
    pub duplicates: u64,
    /// The nodes the subscribers were spread over (a cluster on the bus; 1: one server). The server's CPU and
    /// memory are then every node's.
    #[serde(default = "one")]
    pub nodes: usize,
    pub server_cpu_pct: Option<f64>,
    pub client_cpu_pct: Option<f64>,
    pub server_rss_kib: Option<u64>,
    pub publisher_max_lag_us: i64,
    /// The generator's own loop lag over the step (a 5 ms timer's lateness): p99, p99.9, max in µs.
    #[serde(default)]
    pub client_loop_lag_us: Option<[u64; 3]>,
    pub failed_connections: usize,
    pub first_error: Option<String>,
    /// `error` frames the server sent to subscribers (a refused request, for example).
    #[serde(default)]
    pub server_errors: u64,
    #[serde(default)]
    pub timeline: Vec<Second>,
    #[serde(default)]
    pub steps: Vec<Step>,
    /// saturate: the highest rate that passed.
    pub max_passing_rate: Option<f64>,
    /// storm: seconds until every client was subscribed, first connect and after the forced reconnect.
    pub storm_connect_s: Option<f64>,
    pub storm_reconnect_s: Option<f64>,
    /// storm against tickwire: clients back with every missed update replayed (resume).
    #[serde(default)]
    pub storm_resumed: Option<usize>,
    pub upgrades_per_s: Option<f64>,
    /// fanout and saturate against tickwire: the shards' loop lag, stalls and ingest-to-flush latency over
    /// the measured step, from the server's `/metrics`.
    #[serde(default)]
    pub server_view: Option<crate::server_metrics::ServerView>,
    /// idle: server RSS with no connections and per idle connection.
    pub server_rss_base_kib: Option<u64>,
    pub rss_per_conn_kib: Option<f64>,
    pub command: String,
    pub commit: String,
    pub machine: String,
    pub date: String,
}

fn sh(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

impl Report {
    /// A report stamped with the command line, commit, machine and date.
    pub fn new(scenario: &str) -> Report {
        // The machine's CPUs, not this process's affinity (the tool is usually pinned to one).
        // SAFETY: sysconf has no preconditions.
        let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
        Report {
            scenario: scenario.to_owned(),
            command: std::env::args().collect::<Vec<_>>().join(" "),
            commit: sh("git", &["rev-parse", "--short", "HEAD"]),
            machine: format!("{cpus} CPUs, Linux {}", sh("uname", &["-r"])),
            date: sh("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
            ..Report::default()
        }
    }

    /// The summary table printed at the end of a run.
    pub fn table(&self) -> String {
        let pct = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}%"));
        let ms = |us: u64| format!("{:.3} ms", us as f64 / 1000.0);
        let mut rows: Vec<(&str, String)> = vec![
            ("scenario", self.scenario.clone()),
            ("target", format!("{} ({})", self.target, self.address)),
            ("connections", self.connections.to_string()),
        ];
        if self.scenario == "fanout" || self.scenario == "saturate" {
            rows.extend([
                ("symbols x subs/conn", format!("{} x {}", self.symbols, self.subs_per_conn)),
                ("offered", format!("{:.0} events/s", self.offered_rate)),
                ("delivered", format!("{} ({:.0}/s)", self.delivered_total, self.delivered_per_s)),
                ("latency p50 / p90", format!("{} / {}", ms(self.p50_us), ms(self.p90_us))),
                ("latency p99 / p99.9", format!("{} / {}", ms(self.p99_us), ms(self.p999_us))),
                ("latency max", ms(self.max_us)),
                ("lost", format!("{} (gaps {}, duplicates {})", self.lost, self.gaps, self.duplicates)),
            ]);
        }
        if let Some(r) = self.max_passing_rate {
            rows.push(("max passing rate", format!("{r:.0} events/s")));
        }
        if let (Some(a), Some(b)) = (self.storm_connect_s, self.storm_reconnect_s) {
            rows.push(("all subscribed after", format!("{a:.3} s (reconnect: {b:.3} s)")));
            rows.push(("upgrades/s", format!("{:.0}", self.upgrades_per_s.unwrap_or(0.0))));
            if let Some(r) = self.storm_resumed {
                rows.push(("resumed (replay complete)", format!("{r} of {}", self.connections)));
            }
        }
        if let Some(per) = self.rss_per_conn_kib {
            rows.push(("server RSS per connection", format!("{per:.2} KiB")));
        }
        rows.push(("server CPU / client CPU", format!("{} / {}", pct(self.server_cpu_pct), pct(self.client_cpu_pct))));
        if let Some([p99, p999, max]) = self.client_loop_lag_us {
            rows.push(("generator loop lag p99 / p99.9 / max", format!("{} / {} / {}", ms(p99), ms(p999), ms(max))));
            rows.push(("publisher max lag behind schedule", ms(self.publisher_max_lag_us.max(0) as u64)));
        }
        if let Some(view) = self.server_view.as_ref().filter(|v| v.flush_samples > 0) {
            use crate::server_metrics::bound;
            let (p99, p999) = (bound(view.flush_p99_us), bound(view.flush_p999_us));
            rows.push(("server ingest to flush p99 / p99.9", format!("{p99} / {p999}")));
        }
        if let Some(lag) = self.server_view.as_ref().filter(|l| l.samples > 0) {
            use crate::server_metrics::bound;
            let (p99, p999, max) = (bound(lag.p99_us), bound(lag.p999_us), bound(lag.max_us));
            rows.push(("server loop lag p99 / p99.9 / max", format!("{p99} / {p999} / {max} ({} ticks)", lag.samples)));
            let stalls: Vec<String> = lag.stalls.iter().map(|(cause, n)| format!("{cause} {n}")).collect();
            rows.push(("server stalls > 20 ms", stalls.join(", ")));
        }
        if let Some(n) = self.server_view.as_ref().and_then(|l| l.watchdog_wakeups) {
            rows.push(("server watchdog signals (> 50 ms late)", n.to_string()));
        }
        if let Some(rss) = self.server_rss_kib {
            rows.push(("server RSS", format!("{:.1} MiB", rss as f64 / 1024.0)));
        }
        if self.server_errors > 0 {
            rows.push(("error frames from server", self.server_errors.to_string()));
        }
        if self.failed_connections > 0 {
            rows.push((
                "failed connections",
                format!("{} ({})", self.failed_connections, self.first_error.clone().unwrap_or_default()),
            ));
        }
        let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        rows.iter().map(|(k, v)| format!("  {k:<w$}  {v}\n")).collect()
    }

    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, serde_json::to_vec_pretty(self)?).with_context(|| format!("writing {}", path.display()))
    }

    /// Markdown plus SVG plots in `dir`, named after the scenario and target.
    pub fn write_report(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        let stem = format!("{}-{}", self.scenario, self.target);
        let mut md = format!("# {} against {}\n\n", self.scenario, self.target);
        md.push_str(&format!(
            "- command: `{}`\n- commit: {}\n- machine: {}\n- date: {}\n\n```\n{}```\n\n",
            self.command,
            self.commit,
            self.machine,
            self.date,
            self.table()
        ));
        if !self.timeline.is_empty() {
            let lat = format!("{stem}-latency.svg");
            let thr = format!("{stem}-throughput.svg");
            latency_plot(self, &dir.join(&lat))?;
            throughput_plot(self, &dir.join(&thr))?;
            md.push_str(&format!("![latency percentiles]({lat})\n\n![throughput and p99 over time]({thr})\n"));
        }
        if !self.steps.is_empty() {
            let sat = format!("{stem}-steps.svg");
            steps_plot(self, &dir.join(&sat))?;
            md.push_str("| offered events/s | delivered/s | p50 ms | p99 ms | max ms | lost | server CPU | passed |\n|---|---|---|---|---|---|---|---|\n");
            for s in &self.steps {
                md.push_str(&format!(
                    "| {:.0} | {:.0} | {:.3} | {:.3} | {:.3} | {} | {} | {} |\n",
                    s.offered_rate,
                    s.delivered_per_s,
                    s.p50_us as f64 / 1e3,
                    s.p99_us as f64 / 1e3,
                    s.max_us as f64 / 1e3,
                    s.lost,
                    s.server_cpu_pct.map_or("-".into(), |c| format!("{c:.0}%")),
                    if s.passed { "yes" } else { "no" }
                ));
            }
            md.push_str(&format!("\n![saturation steps]({sat})\n"));
        }
        std::fs::write(dir.join(format!("{stem}.md")), md)?;
        Ok(())
    }
}

/// The figure a report is ranked by: the highest passing rate of a saturation search, or the delivery
/// rate of a fixed-rate run.
fn headline(r: &Report) -> f64 {
    match r.max_passing_rate {
        Some(rate) => r
            .steps
            .iter()
            .filter(|s| s.passed && s.offered_rate == rate)
            .map(|s| s.delivered_per_s)
            .next()
            .unwrap_or(0.0),
        None if r.steps.is_empty() => r.delivered_per_s,
        // A search whose first step failed.
        None => 0.0,
    }
}

/// Generator CPU at or above which a run measured the generator rather than the server.
pub const GENERATOR_BOUND_PCT: f64 = 95.0;

fn generator_bound(r: &Report) -> bool {
    r.client_cpu_pct.is_some_and(|c| c >= GENERATOR_BOUND_PCT)
}

/// A Markdown table of several targets' reports of one scenario, with `baseline / target` ratios.
///
/// A run whose generator was saturated measured the generator: then the baseline's figure is only a lower
/// bound, its ratio to a server-bound target is written `>= x`, and to another generator-bound target it
/// cannot be told.
pub fn compare(reports: &[Report], baseline: &str) -> anyhow::Result<String> {
    let base =
        reports.iter().find(|r| r.target == baseline).ok_or_else(|| anyhow::anyhow!("no report for {baseline}"))?;
    if base.scenario == "fanout" {
        return Ok(compare_fixed(reports, base));
    }
    let b = headline(base);
    let mut rows: Vec<&Report> = reports.iter().collect();
    rows.sort_by(|x, y| headline(y).total_cmp(&headline(x)));
    let mut out = format!(
        "Scenario `{}`: {} connections, {} symbols, {} per connection; each server pinned to CPU 0, tickwire-load \
         to CPU 1; a step passes while p99 <= 50 ms with nothing lost. Commit {}, {}, {}.\n\n",
        base.scenario, base.connections, base.symbols, base.subs_per_conn, base.commit, base.machine, base.date
    );
    out.push_str("| target | max deliveries/s (p99 <= 50 ms, 0 lost) | events/s | p50 ms | p99 ms | server CPU | generator CPU | tickwire / target |\n");
    out.push_str("|---|---|---|---|---|---|---|---|\n");
    let pct = |v: Option<f64>| v.map_or("-".to_owned(), |c| format!("{c:.0}%"));
    for r in rows {
        let h = headline(r);
        let ratio = if r.target == baseline {
            "1.00x".to_owned()
        } else if h <= 0.0 {
            "-".to_owned()
        } else {
            match (generator_bound(base), generator_bound(r)) {
                (false, false) => format!("{:.2}x", b / h),
                (true, false) => format!(">= {:.2}x", b / h),
                (false, true) => format!("<= {:.2}x", b / h),
                (true, true) => "undetermined (both generator-bound)".to_owned(),
            }
        };
        out.push_str(&format!(
            "| {} | {:.0} | {} | {:.3} | {:.3} | {} | {}{} | {} |\n",
            r.target,
            h,
            r.max_passing_rate.map_or("-".into(), |x| format!("{x:.0}")),
            r.p50_us as f64 / 1e3,
            r.p99_us as f64 / 1e3,
            pct(r.server_cpu_pct),
            pct(r.client_cpu_pct),
            if generator_bound(r) { " (bound)" } else { "" },
            ratio
        ));
    }
    if reports.iter().any(generator_bound) {
        out.push_str(&format!(
            "\n`(bound)`: the generator used >= {GENERATOR_BOUND_PCT:.0}% of its core at that step, so the run measured \
             the generator, not the server; that target can do at least this much.\n"
        ));
    }
    Ok(out)
}

/// The same fixed load against several targets: who kept up, at what latency and CPU. The ratio is the
/// target's server CPU over the baseline's (how much more CPU the same work took).
fn compare_fixed(reports: &[Report], base: &Report) -> String {
    let mut out = format!(
        "Scenario `fanout`: {} connections, {} symbols, {} per connection, {:.0} events/s = {:.0} deliveries/s for \
         {:.0} s; each server pinned to CPU 0, tickwire-load to CPU 1. Commit {}, {}, {}.\n\n",
        base.connections,
        base.symbols,
        base.subs_per_conn,
        base.offered_rate,
        base.expected_total as f64 / base.duration_s.max(1e-9),
        base.duration_s,
        base.commit,
        base.machine,
        base.date
    );
    out.push_str("| target | delivered | lost | p50 ms | p99 ms | p99.9 ms | server CPU | generator CPU | server RSS MiB | CPU vs tickwire |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    let pct = |v: Option<f64>| v.map_or("-".to_owned(), |c| format!("{c:.0}%"));
    let mut rows: Vec<&Report> = reports.iter().collect();
    // Who did the same work with nothing lost, for the least CPU.
    let cpu = |r: &Report| r.server_cpu_pct.unwrap_or(f64::MAX);
    rows.sort_by(|x, y| x.lost.cmp(&y.lost).then(cpu(x).total_cmp(&cpu(y))));
    for r in rows {
        let ratio = match (r.server_cpu_pct, base.server_cpu_pct) {
            (Some(c), Some(b)) if b > 0.0 => format!("{:.2}x", c / b),
            _ => "-".to_owned(),
        };
        out.push_str(&format!(
            "| {} | {} of {} | {} | {:.3} | {:.3} | {:.3} | {} | {} | {} | {} |\n",
            r.target,
            r.delivered_total,
            r.expected_total,
            r.lost,
            r.p50_us as f64 / 1e3,
            r.p99_us as f64 / 1e3,
            r.p999_us as f64 / 1e3,
            pct(r.server_cpu_pct),
            pct(r.client_cpu_pct),
            r.server_rss_kib.map_or("-".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
            ratio
        ));
    }
    out
}

fn latency_plot(r: &Report, path: &Path) -> anyhow::Result<()> {
    let bars = [("p50", r.p50_us), ("p90", r.p90_us), ("p99", r.p99_us), ("p99.9", r.p999_us), ("max", r.max_us)];
    let top = bars.iter().map(|b| b.1).max().unwrap_or(1).max(1) as f64 / 1000.0 * 1.15;
    let root = SVGBackend::new(path, (640, 360)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{}: latency from source (ms)", r.target), ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d((0..bars.len()).into_segmented(), 0.0..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) => bars.get(*i).map_or(String::new(), |b| b.0.to_owned()),
            _ => String::new(),
        })
        .y_desc("ms")
        .draw()?;
    chart.draw_series(
        Histogram::vertical(&chart)
            .style(BLUE.mix(0.7).filled())
            .margin(20)
            .data(bars.iter().enumerate().map(|(i, b)| (i, b.1 as f64 / 1000.0))),
    )?;
    root.present()?;
    Ok(())
}

fn throughput_plot(r: &Report, path: &Path) -> anyhow::Result<()> {
    let t_max = r.timeline.iter().map(|s| s.t).max().unwrap_or(1).max(1);
    let d_max = r.timeline.iter().map(|s| s.delivered).max().unwrap_or(1).max(1) as f64 * 1.15;
    let p_max = r.timeline.iter().map(|s| s.p99_us).max().unwrap_or(1).max(1) as f64 / 1000.0 * 1.15;
    let root = SVGBackend::new(path, (640, 360)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{}: deliveries/s and p99 over time", r.target), ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(80)
        .right_y_label_area_size(50)
        .build_cartesian_2d(0u64..t_max, 0.0..d_max)?
        .set_secondary_coord(0u64..t_max, 0.0..p_max);
    chart.configure_mesh().x_desc("s").y_desc("deliveries/s").y_label_formatter(&|y| format!("{y:.0}")).draw()?;
    chart.configure_secondary_axes().y_desc("p99 ms").draw()?;
    chart
        .draw_series(LineSeries::new(r.timeline.iter().map(|s| (s.t, s.delivered as f64)), &BLUE))?
        .label("deliveries/s")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE));
    chart
        .draw_secondary_series(LineSeries::new(r.timeline.iter().map(|s| (s.t, s.p99_us as f64 / 1000.0)), &RED))?
        .label("p99 ms")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED));
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}

fn steps_plot(r: &Report, path: &Path) -> anyhow::Result<()> {
    let x_max = r.steps.iter().map(|s| s.offered_rate).fold(1.0, f64::max) * 1.1;
    let d_max = r.steps.iter().map(|s| s.delivered_per_s).fold(1.0, f64::max) * 1.15;
    let p_max = r.steps.iter().map(|s| s.p99_us as f64 / 1000.0).fold(1.0, f64::max) * 1.15;
    let root = SVGBackend::new(path, (640, 360)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{}: saturation search", r.target), ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(80)
        .right_y_label_area_size(50)
        .build_cartesian_2d(0.0..x_max, 0.0..d_max)?
        .set_secondary_coord(0.0..x_max, 0.0..p_max);
    chart.configure_mesh().x_desc("offered events/s").y_desc("deliveries/s").draw()?;
    chart.configure_secondary_axes().y_desc("p99 ms").draw()?;
    chart.draw_series(
        LineSeries::new(r.steps.iter().map(|s| (s.offered_rate, s.delivered_per_s)), &BLUE).point_size(3),
    )?;
    chart.draw_secondary_series(
        LineSeries::new(r.steps.iter().map(|s| (s.offered_rate, s.p99_us as f64 / 1000.0)), &RED).point_size(3),
    )?;
    root.present()?;
    Ok(())
}

/// A report of one server (those written before reports named their nodes).
fn one() -> usize {
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_ranks_and_computes_ratios() {
        let step = |rate: f64, d: f64, passed| Step {
            offered_rate: rate,
            delivered_per_s: d,
            p50_us: 1,
            p99_us: 2,
            max_us: 3,
            lost: 0,
            server_cpu_pct: None,
            passed,
        };
        let mk = |name: &str, best: Option<f64>, steps: Vec<Step>| Report {
            target: name.into(),
            max_passing_rate: best,
            steps,
            client_cpu_pct: Some(50.0),
            ..Report::new("saturate")
        };
        let reports = [
            mk("slow", Some(100.0), vec![step(100.0, 1e4, true), step(150.0, 1.5e4, false)]),
            mk("tickwire", Some(1000.0), vec![step(1000.0, 1e5, true), step(1500.0, 1.5e5, false)]),
            mk("broken", None, vec![step(100.0, 0.0, false)]),
        ];
        let t = compare(&reports, "tickwire").unwrap();
        let lines: Vec<&str> = t.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| target")).collect();
        assert!(lines[0].starts_with("| tickwire | 100000 |") && lines[0].ends_with("| 1.00x |"), "{t}");
        assert!(lines[1].starts_with("| slow | 10000 |") && lines[1].ends_with("| 10.00x |"), "{t}");
        assert!(lines[2].ends_with("| - |"), "{t}");
        assert!(compare(&reports, "nobody").is_err());
        // A saturated generator turns the ratios into bounds.
        let mut bound = reports.clone();
        bound[1].client_cpu_pct = Some(99.0);
        let t = compare(&bound, "tickwire").unwrap();
        assert!(t.contains("| >= 10.00x |") && t.contains("99% (bound)"), "{t}");
        bound[0].client_cpu_pct = Some(100.0);
        assert!(compare(&bound, "tickwire").unwrap().contains("undetermined"));
        // Fixed-rate runs compare CPU for the same work.
        let fixed = |name: &str, cpu: f64, lost: u64| Report {
            target: name.into(),
            server_cpu_pct: Some(cpu),
            lost,
            expected_total: 100,
            delivered_total: 100 - lost,
            duration_s: 1.0,
            ..Report::new("fanout")
        };
        let t =
            compare(&[fixed("node", 90.0, 0), fixed("tickwire", 30.0, 0), fixed("py", 99.0, 7)], "tickwire").unwrap();
        let rows: Vec<&str> = t.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| target")).collect();
        assert!(rows[0].starts_with("| tickwire") && rows[0].ends_with("| 1.00x |"), "{t}");
        assert!(rows[1].starts_with("| node") && rows[1].ends_with("| 3.00x |"), "{t}");
        assert!(rows[2].starts_with("| py | 93 of 100 | 7 |"), "{t}");
    }

    #[test]
    fn report_round_trips_and_renders() {
        let mut r = Report::new("fanout");
        r.target = "tickwire".into();
        r.p99_us = 4200;
        r.timeline =
            (1..=3).map(|t| Second { t, delivered: 1000 * t, p50_us: 100, p99_us: 400, max_us: 900 }).collect();
        r.steps = vec![Step {
            offered_rate: 1000.0,
            delivered_per_s: 1e5,
            p50_us: 1,
            p99_us: 2,
            max_us: 3,
            lost: 0,
            server_cpu_pct: Some(10.0),
            passed: true,
        }];
        let dir = std::env::temp_dir().join(format!("tickwire-report-{}", std::process::id()));
        r.write_report(&dir).unwrap();
        r.write_json(&dir.join("r.json")).unwrap();
        let back: Report = serde_json::from_slice(&std::fs::read(dir.join("r.json")).unwrap()).unwrap();
        assert_eq!(back.p99_us, 4200);
        let md = std::fs::read_to_string(dir.join("fanout-tickwire.md")).unwrap();
        assert!(md.contains("4.200 ms") && md.contains("fanout-tickwire-latency.svg"));
        assert!(std::fs::read_to_string(dir.join("fanout-tickwire-throughput.svg")).unwrap().contains("<svg"));
        std::fs::remove_dir_all(dir).ok();
    }
}
