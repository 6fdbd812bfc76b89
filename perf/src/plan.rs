//! `plan`: cores and nodes for a workload, from measured figures (CPU per delivery from a fanout report,
//! memory per connection from an idle report), naming the report each input came from.

use std::path::Path;

use anyhow::Context;

use crate::report::Report;

/// The workload to plan for and the node size.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    pub connections: u64,
    pub deliveries_per_s: f64,
    pub cores_per_node: u64,
    pub mem_per_node_gib: f64,
    /// Highest CPU use to plan a core for, in percent (headroom for bursts).
    pub max_core_pct: f64,
}

/// The plan and how it was derived.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Plan {
    pub cpu_us_per_delivery: f64,
    pub kib_per_connection: f64,
    pub base_rss_mib: f64,
    pub cores: f64,
    pub memory_gib: f64,
    pub nodes: u64,
    pub fanout_report: String,
    pub idle_report: String,
}

fn load(path: &Path) -> anyhow::Result<Report> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not a tickwire-load report", path.display()))
}

/// Computes the plan from two reports.
pub fn plan(fanout: &Path, idle: &Path, w: Workload) -> anyhow::Result<Plan> {
    let f = load(fanout)?;
    let i = load(idle)?;
    let cpu = f.server_cpu_pct.context("the fanout report has no server_cpu_pct (run it with --server-pid)")?;
    anyhow::ensure!(f.delivered_per_s > 0.0, "the fanout report delivered nothing");
    let per_conn = i.rss_per_conn_kib.context("the idle report has no rss_per_conn_kib")?;
    let base = i.server_rss_base_kib.unwrap_or(0) as f64 / 1024.0;
    Ok(compute(cpu, f.delivered_per_s, per_conn, base, w, fanout, idle))
}

fn compute(
    cpu_pct: f64,
    delivered_per_s: f64,
    kib_per_conn: f64,
    base_mib: f64,
    w: Workload,
    fanout: &Path,
    idle: &Path,
) -> Plan {
    let cpu_us_per_delivery = cpu_pct / 100.0 / delivered_per_s * 1e6;
    let cores = w.deliveries_per_s * cpu_us_per_delivery / 1e6 / (w.max_core_pct / 100.0);
    let memory_gib = (base_mib + w.connections as f64 * kib_per_conn / 1024.0) / 1024.0;
    let by_cpu = (cores / w.cores_per_node as f64).ceil();
    let by_mem = (memory_gib / w.mem_per_node_gib).ceil();
    Plan {
        cpu_us_per_delivery,
        kib_per_connection: kib_per_conn,
        base_rss_mib: base_mib,
        cores,
        memory_gib,
        nodes: by_cpu.max(by_mem).max(1.0) as u64,
        fanout_report: fanout.display().to_string(),
        idle_report: idle.display().to_string(),
    }
}

impl Plan {
    pub fn table(&self, w: &Workload) -> String {
        format!(
            "  workload              {} connections, {:.0} deliveries/s\n\
             \x20 CPU per delivery      {:.3} core-us   (from {})\n\
             \x20 memory per connection {:.2} KiB       (from {})\n\
             \x20 cores needed          {:.2} at <= {:.0}% each\n\
             \x20 memory needed         {:.2} GiB\n\
             \x20 nodes                 {} of {} cores / {:.0} GiB\n",
            w.connections,
            w.deliveries_per_s,
            self.cpu_us_per_delivery,
            self.fanout_report,
            self.kib_per_connection,
            self.idle_report,
            self.cores,
            w.max_core_pct,
            self.memory_gib,
            self.nodes,
            w.cores_per_node,
            w.mem_per_node_gib
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic() {
        let w = Workload {
            connections: 1_000_000,
            deliveries_per_s: 2e6,
            cores_per_node: 16,
            mem_per_node_gib: 64.0,
            max_core_pct: 50.0,
        };
        // 20% of a core for 100k deliveries/s: 2 us each; 2M/s needs 4 cores busy, 8 at 50%.
        let p = compute(20.0, 1e5, 4.0, 10.0, w, Path::new("f.json"), Path::new("i.json"));
        assert!((p.cpu_us_per_delivery - 2.0).abs() < 1e-9);
        assert!((p.cores - 8.0).abs() < 1e-9);
        assert!((p.memory_gib - (10.0 + 1e6 * 4.0 / 1024.0) / 1024.0).abs() < 1e-9);
        assert_eq!(p.nodes, 1);
        let big = Workload { deliveries_per_s: 2e7, ..w };
        assert_eq!(compute(20.0, 1e5, 4.0, 10.0, big, Path::new("f"), Path::new("i")).nodes, 5);
    }
}
