//! The scenarios: each runs on one thread (tokio current-thread runtime) and fills a [`Report`].

use std::rc::Rc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::engine::{self, Shared, Target};
use crate::procfs::{rss_kib, CpuMeter};
use crate::report::{Report, Step};
use crate::server_metrics;

/// The symbols of a run: `S0000`, `S0001`, ...
pub fn symbols(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("S{i:04}")).collect()
}

/// The symbols connection `c` subscribes to: `k` consecutive ones, spread evenly.
pub fn assignment(c: usize, k: usize, symbols: usize) -> impl Iterator<Item = usize> {
    (0..k).map(move |j| (c * k + j) % symbols)
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{spinner} {prefix:<12} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.set_prefix(what.to_owned());
    pb
}

/// Opens `n` subscriber connections, at most `concurrency` connecting at once, and waits until every one
/// is subscribed or failed. Returns the tasks and the number of subscribers per symbol.
pub async fn connect_all(
    target: &Rc<Target>,
    shared: &Rc<Shared>,
    n: usize,
    syms: &[String],
    k: usize,
    concurrency: usize,
) -> (Vec<tokio::task::JoinHandle<()>>, Vec<u64>) {
    let pb = bar(n as u64, "connecting");
    let mut per_symbol = vec![0u64; syms.len()];
    let mut tasks = Vec::with_capacity(n);
    let done = |s: &Shared| s.subscribed.get() + s.failed.get();
    for c in 0..n {
        while c - done(shared) >= concurrency {
            tokio::time::sleep(Duration::from_millis(1)).await;
            pb.set_position(done(shared) as u64);
        }
        let mine: Vec<String> = assignment(c, k, syms.len()).map(|i| syms[i].clone()).collect();
        for i in assignment(c, k, syms.len()) {
            per_symbol[i] += 1;
        }
        let task = tokio::task::spawn_local(engine::subscriber(target.clone(), mine, shared.clone(), c));
        tasks.push(task);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while done(shared) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
        pb.set_position(done(shared) as u64);
    }
    pb.finish_and_clear();
    (tasks, per_symbol)
}

/// The period of the generator's loop-lag probe.
const CLIENT_TICK: Duration = Duration::from_millis(5);

/// Parameters of a measured publishing step.
pub struct StepParams<'a> {
    pub target: &'a Target,
    pub shared: &'a Rc<Shared>,
    pub syms: &'a [String],
    pub per_symbol: &'a [u64],
    pub rate: f64,
    pub duration: Duration,
    pub server_pid: Option<u32>,
}

/// Publishes for one step and measures it into `report`.
pub async fn measure(p: StepParams<'_>, next_seq: &mut [u64], report: &mut Report) -> anyhow::Result<()> {
    let shared = p.shared;
    shared.rec.borrow_mut().reset();
    shared.rec.borrow_mut().recording = true;
    let server = p.server_pid.and_then(CpuMeter::start);
    let others: Vec<CpuMeter> = p.target.cluster_pids.iter().filter_map(|&pid| CpuMeter::start(pid)).collect();
    let client = CpuMeter::start(std::process::id());
    let lag_before = match p.target.protocol {
        engine::Protocol::Nats => None,
        _ => server_metrics::read(p.target.addr),
    };
    let secs = p.duration.as_secs().max(1);
    let pb = bar(secs, "publishing");
    let ticking = Rc::new(std::cell::Cell::new(true));
    let ticker = {
        let (shared, ticking, pb) = (shared.clone(), ticking.clone(), pb.clone());
        tokio::task::spawn_local(async move {
            let mut t = 0;
            while ticking.get() {
                tokio::time::sleep(Duration::from_secs(1)).await;
                t += 1;
                let mut rec = shared.rec.borrow_mut();
                rec.tick(t);
                if let Some(s) = rec.timeline.last() {
                    pb.set_message(format!("{}/s p99 {:.2} ms gaps {}", s.delivered, s.p99_us as f64 / 1e3, rec.gaps));
                }
                pb.set_position(t.min(secs));
            }
        })
    };
    // The generator's own loop lag: how late a 5 ms timer of this thread fires while it publishes and
    // receives. A late generator receives late and publishes in bursts, and both show up as latency.
    let lag_probe = {
        let ticking = ticking.clone();
        tokio::task::spawn_local(async move {
            let mut lag = crate::stats::histogram();
            while ticking.get() {
                let started = Instant::now();
                tokio::time::sleep(CLIENT_TICK).await;
                lag.saturating_record(started.elapsed().saturating_sub(CLIENT_TICK).as_micros() as u64);
            }
            lag
        })
    };
    let published = if p.rate > 0.0 {
        engine::publish(p.target, p.syms, p.rate, p.duration, next_seq).await?
    } else {
        // Listening only: another process publishes (a run of several dialects at once).
        tokio::time::sleep(p.duration).await;
        engine::Published::default()
    };
    let legacy = p.target.protocol == engine::Protocol::Legacy;
    let mut expected: u64 = published.per_symbol.iter().zip(p.per_symbol).map(|(e, s)| e * s).sum();
    if legacy {
        // The interval open when publishing stopped still closes and is sent.
        tokio::time::sleep(Duration::from_secs(p.target.interval_s) + Duration::from_millis(500)).await;
    } else {
        let deadline = Instant::now() + Duration::from_secs(5);
        while shared.rec.borrow().delivered < expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    ticking.set(false);
    ticker.abort();
    if let Ok(lag) = lag_probe.await {
        report.client_loop_lag_us = Some([lag.value_at_quantile(0.99), lag.value_at_quantile(0.999), lag.max()]);
    }
    pb.finish_and_clear();
    let mut rec = shared.rec.borrow_mut();
    rec.recording = false;
    if legacy || p.rate <= 0.0 {
        // A frame per interval and connection: what came, and the intervals between frames that did not.
        expected = rec.delivered + rec.gaps;
    }
    report.server_cpu_pct = server.and_then(|m| m.percent());
    if let Some(cpu) = report.server_cpu_pct.as_mut() {
        // A cluster's: every node's.
        *cpu += others.into_iter().filter_map(|m| m.percent()).sum::<f64>();
    }
    report.nodes = p.target.nodes();
    report.client_cpu_pct = client.and_then(|m| m.percent());
    if let Some(before) = lag_before {
        report.server_view = server_metrics::read(p.target.addr).map(|after| server_metrics::between(&before, &after));
    }
    report.server_rss_kib = p.server_pid.and_then(rss_kib);
    if let Some(rss) = report.server_rss_kib.as_mut() {
        *rss += p.target.cluster_pids.iter().filter_map(|&pid| rss_kib(pid)).sum::<u64>();
    }
    report.offered_rate = p.rate;
    report.duration_s = p.duration.as_secs_f64();
    report.delivered_total = rec.delivered;
    report.expected_total = expected;
    report.delivered_per_s = rec.delivered as f64 / p.duration.as_secs_f64();
    report.p50_us = rec.quantile(0.5);
    report.p90_us = rec.quantile(0.9);
    report.p99_us = rec.quantile(0.99);
    report.p999_us = rec.quantile(0.999);
    report.max_us = if rec.total.is_empty() { 0 } else { rec.total.max() };
    report.gaps = rec.gaps;
    report.duplicates = rec.duplicates;
    report.lost = expected.saturating_sub(rec.delivered).max(rec.gaps);
    report.publisher_max_lag_us = published.max_lag_us;
    report.timeline = std::mem::take(&mut rec.timeline);
    Ok(())
}

/// Common settings of the connection scenarios.
#[derive(Debug, Clone)]
pub struct Setup {
    pub target: Target,
    pub name: String,
    pub connections: usize,
    pub symbols: usize,
    pub subs_per_conn: usize,
    pub concurrency: usize,
    pub server_pid: Option<u32>,
}

impl Setup {
    fn report(&self, scenario: &str) -> Report {
        let mut r = Report::new(scenario);
        r.target = self.name.clone();
        r.address = self.target.addr.to_string();
        r.protocol = format!("{:?}", self.target.protocol).to_lowercase();
        r.connections = self.connections;
        r.symbols = self.symbols;
        r.subs_per_conn = self.subs_per_conn;
        r
    }
}

fn note_failures(shared: &Shared, report: &mut Report) {
    report.failed_connections = shared.failed.get();
    report.first_error = shared.first_error.borrow().clone();
    report.server_errors = shared.errors_from_server.get();
}

/// Subscribed connections and the publisher's state, kept across the steps of a run.
struct Session {
    target: Rc<Target>,
    shared: Rc<Shared>,
    syms: Vec<String>,
    per_symbol: Vec<u64>,
    next_seq: Vec<u64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Session {
    /// Connects and subscribes every connection of `setup`; fails if none could subscribe.
    async fn open(setup: &Setup, report: &mut Report) -> anyhow::Result<Session> {
        let target = Rc::new(setup.target.clone());
        let shared = Rc::new(Shared::default());
        let syms = symbols(setup.symbols);
        let (tasks, per_symbol) =
            connect_all(&target, &shared, setup.connections, &syms, setup.subs_per_conn, setup.concurrency).await;
        note_failures(&shared, report);
        anyhow::ensure!(
            shared.subscribed.get() > 0,
            "no connection subscribed: {}",
            report.first_error.clone().unwrap_or_default()
        );
        let next_seq = vec![0u64; syms.len()];
        Ok(Session { target, shared, syms, per_symbol, next_seq, tasks })
    }

    /// One measured step at `rate` into `report`.
    async fn step(
        &mut self,
        rate: f64,
        duration: Duration,
        server_pid: Option<u32>,
        report: &mut Report,
    ) -> anyhow::Result<()> {
        let params = StepParams {
            target: &self.target,
            shared: &self.shared,
            syms: &self.syms,
            per_symbol: &self.per_symbol,
            rate,
            duration,
            server_pid,
        };
        measure(params, &mut self.next_seq, report).await?;
        note_failures(&self.shared, report);
        Ok(())
    }

    async fn close(self) {
        self.shared.stop.fire();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// `fanout`: N connections, S symbols, K subscriptions each, an open-loop publisher at `rate`, after
/// `warmup` of the same, not measured.
pub async fn fanout(setup: Setup, rate: f64, duration: Duration, warmup: Duration) -> anyhow::Result<Report> {
    let mut report = setup.report("fanout");
    let mut session = Session::open(&setup, &mut report).await?;
    if !warmup.is_zero() {
        let mut unmeasured = setup.report("warm-up");
        session.step(rate, warmup, None, &mut unmeasured).await?;
    }
    session.step(rate, duration, setup.server_pid, &mut report).await?;
    session.close().await;
    Ok(report)
}

/// Criteria of the saturation search.
#[derive(Debug, Clone, Copy)]
pub struct Search {
    pub start_rate: f64,
    pub factor: f64,
    pub max_rate: f64,
    pub step: Duration,
    pub p99_limit_us: u64,
}

/// `saturate`: steps the rate up until p99 exceeds the limit or anything is lost.
pub async fn saturate(setup: Setup, search: Search) -> anyhow::Result<Report> {
    let mut report = setup.report("saturate");
    let mut session = Session::open(&setup, &mut report).await?;
    let mut rate = search.start_rate;
    let mut best: Option<Report> = None;
    while rate <= search.max_rate {
        let mut step = report.clone();
        session.step(rate, search.step, setup.server_pid, &mut step).await?;
        let passed = step.lost == 0 && step.p99_us <= search.p99_limit_us && step.failed_connections == 0;
        eprintln!(
            "  step {:>9.0} events/s: {:>10.0} deliveries/s, p99 {:>8.3} ms, lost {}{}",
            rate,
            step.delivered_per_s,
            step.p99_us as f64 / 1e3,
            step.lost,
            if passed { "" } else { "  <- fails" }
        );
        report.steps.push(Step {
            offered_rate: rate,
            delivered_per_s: step.delivered_per_s,
            p50_us: step.p50_us,
            p99_us: step.p99_us,
            max_us: step.max_us,
            lost: step.lost,
            server_cpu_pct: step.server_cpu_pct,
            passed,
        });
        if !passed {
            break;
        }
        best = Some(step);
        rate *= search.factor;
    }
    let steps = std::mem::take(&mut report.steps);
    if let Some(b) = best {
        report = b;
        report.max_passing_rate = Some(report.offered_rate);
    }
    report.scenario = "saturate".into();
    report.steps = steps;
    note_failures(&session.shared, &mut report);
    session.close().await;
    Ok(report)
}

/// Updates per symbol published in a storm: before the drop (seen) and while the clients are away (missed).
const STORM_SEEN: u64 = 5;
const STORM_MISSED: u64 = 5;

/// `storm`: every client connects and subscribes at once; then all drop and come back at once. Against
/// tickwire the second round resumes: each symbol had [`STORM_SEEN`] updates before the drop and
/// [`STORM_MISSED`] more while the clients were away, and a client counts as back once it is subscribed with
/// `from_sequence` and has every missed update replayed.
pub async fn storm(setup: Setup) -> anyhow::Result<Report> {
    let mut report = setup.report("storm");
    let target = Rc::new(setup.target.clone());
    let syms = symbols(setup.symbols);
    let resume = setup.target.protocol == engine::Protocol::Tickwire;
    let mut next_seq = vec![0u64; syms.len()];
    let n = setup.connections;
    let mut times = Vec::new();
    let mut epoch = None;
    for round in 0..2 {
        let shared = Rc::new(Shared::default());
        if round == 1 && resume {
            let epoch = epoch.clone().ok_or_else(|| anyhow::anyhow!("no welcome named the server's epoch"))?;
            *shared.resume.borrow_mut() =
                Some(engine::ResumePoint { epoch, from: STORM_SEEN, upto: STORM_SEEN + STORM_MISSED });
        }
        let start = Instant::now();
        let (tasks, _) = connect_all(&target, &shared, n, &syms, setup.subs_per_conn, n).await;
        if round == 1 && resume {
            let deadline = Instant::now() + Duration::from_secs(60);
            while shared.resumed.get() + shared.failed.get() < n && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            report.storm_resumed = Some(shared.resumed.get());
        }
        times.push(start.elapsed().as_secs_f64());
        note_failures(&shared, &mut report);
        report.server_rss_kib = setup.server_pid.and_then(rss_kib);
        if round == 0 && resume {
            epoch = shared.epoch.borrow().clone();
            publish_each(&target, &syms, STORM_SEEN, &mut next_seq).await?;
            // Let the clients see them before they go.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        shared.stop.fire();
        for t in tasks {
            let _ = t.await;
        }
        if round == 0 && resume {
            publish_each(&target, &syms, STORM_MISSED, &mut next_seq).await?;
        }
    }
    report.storm_connect_s = Some(times[0]);
    report.storm_reconnect_s = Some(times[1]);
    report.upgrades_per_s = Some(n as f64 / times[0].max(1e-9));
    Ok(report)
}

/// Publishes `k` updates of every symbol (round robin), in half a second.
async fn publish_each(target: &Target, syms: &[String], k: u64, next_seq: &mut [u64]) -> anyhow::Result<()> {
    let total = k as f64 * syms.len() as f64;
    engine::publish(target, syms, total * 2.0, Duration::from_millis(500), next_seq).await?;
    Ok(())
}

/// `idle`: N idle connections; the server's RSS per connection.
pub async fn idle(setup: Setup, settle: Duration) -> anyhow::Result<Report> {
    let mut report = setup.report("idle");
    let pid = setup.server_pid.ok_or_else(|| anyhow::anyhow!("idle needs --server-pid to read the server's memory"))?;
    let base = rss_kib(pid).ok_or_else(|| anyhow::anyhow!("cannot read /proc/{pid}/status"))?;
    let target = Rc::new(setup.target.clone());
    let shared = Rc::new(Shared::default());
    let pb = bar(setup.connections as u64, "connecting");
    let mut tasks = Vec::with_capacity(setup.connections);
    for c in 0..setup.connections {
        while c - (shared.subscribed.get() + shared.failed.get()) >= setup.concurrency {
            tokio::time::sleep(Duration::from_millis(1)).await;
            pb.set_position((shared.subscribed.get() + shared.failed.get()) as u64);
        }
        tasks.push(tokio::task::spawn_local(engine::idle(target.clone(), shared.clone())));
    }
    while shared.subscribed.get() + shared.failed.get() < setup.connections {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    pb.finish_and_clear();
    tokio::time::sleep(settle).await;
    let after = rss_kib(pid).ok_or_else(|| anyhow::anyhow!("cannot read /proc/{pid}/status"))?;
    note_failures(&shared, &mut report);
    let open = shared.subscribed.get().max(1);
    report.server_rss_base_kib = Some(base);
    report.server_rss_kib = Some(after);
    report.rss_per_conn_kib = Some(after.saturating_sub(base) as f64 / open as f64);
    shared.stop.fire();
    for t in tasks {
        let _ = t.await;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_spread_evenly() {
        let mut per = vec![0; 10];
        for c in 0..100 {
            for i in assignment(c, 3, 10) {
                per[i] += 1;
            }
        }
        assert!(per.iter().all(|&n| n == 30), "{per:?}");
        assert_eq!(assignment(0, 2, 10).collect::<Vec<_>>(), [0, 1]);
    }
}
