//! `plan`: cores and nodes for a workload, from measured figures (CPU per delivery from a fanout report,
//! memory per connection from an idle report, and for a cluster on the bus what each node pays per update
//! it follows, from a fanout report of several nodes), naming the report each input came from.

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
    /// Updates per second the publishers send (a cluster: every node pays for each update it follows).
    pub updates_per_s: f64,
}

/// What a node of a cluster on the bus pays besides its deliveries: each update it follows is stored by
/// its sequencer or read from the stream and rendered once.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BusShare {
    /// CPU per update, per node (core-microseconds).
    pub cpu_us_per_update: f64,
    pub nodes_measured: usize,
    pub bus_report: String,
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
    /// Planned as a cluster on the bus: what each node pays per update.
    pub bus: Option<BusShare>,
}

fn load(path: &Path) -> anyhow::Result<Report> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not a tickwire-load report", path.display()))
}

/// Computes the plan from two reports, and for a cluster on the bus a third: a fanout report of the same
/// scenario over several nodes (`--subscriber-targets`, every node's CPU counted).
pub fn plan(fanout: &Path, idle: &Path, bus: Option<&Path>, w: Workload) -> anyhow::Result<Plan> {
    let f = load(fanout)?;
    let i = load(idle)?;
    let cpu = f.server_cpu_pct.context("the fanout report has no server_cpu_pct (run it with --server-pid)")?;
    anyhow::ensure!(f.delivered_per_s > 0.0, "the fanout report delivered nothing");
    let per_conn = i.rss_per_conn_kib.context("the idle report has no rss_per_conn_kib")?;
    let base = i.server_rss_base_kib.unwrap_or(0) as f64 / 1024.0;
    let mut plan = compute(cpu, f.delivered_per_s, per_conn, base, w, fanout, idle);
    if let Some(path) = bus {
        let b = load(path)?;
        let cluster_cpu =
            b.server_cpu_pct.context("the bus report has no server_cpu_pct (--server-pid and --cluster-pids)")?;
        anyhow::ensure!(b.nodes > 1 && b.offered_rate > 0.0, "the bus report is not of several nodes with a publisher");
        let share = bus_share(cluster_cpu, b.delivered_per_s, b.offered_rate, b.nodes, plan.cpu_us_per_delivery);
        plan = with_bus(plan, share, b.nodes, path, w)?;
    }
    Ok(plan)
}

/// CPU per update per node (core-us): what the cluster spent beyond its deliveries (at the single node's
/// cost each), over the updates every node followed. Never below zero (noise).
fn bus_share(
    cluster_cpu_pct: f64,
    delivered_per_s: f64,
    updates_per_s: f64,
    nodes: usize,
    us_per_delivery: f64,
) -> f64 {
    let beyond = cluster_cpu_pct / 100.0 * 1e6 - delivered_per_s * us_per_delivery;
    (beyond / (nodes as f64 * updates_per_s)).max(0.0)
}

/// The node count for a cluster: each node delivers its share and pays for every update it follows, so
/// `nodes x (capacity - updates x share) >= deliveries x cost`.
fn with_bus(mut p: Plan, us_per_update: f64, measured: usize, report: &Path, w: Workload) -> anyhow::Result<Plan> {
    let capacity = w.cores_per_node as f64 * w.max_core_pct / 100.0 * 1e6;
    let left = capacity - w.updates_per_s * us_per_update;
    anyhow::ensure!(
        left > 0.0,
        "{:.0} updates/s at {us_per_update:.2} core-us each per node fill a node before any delivery: larger nodes, or fewer updates per node",
        w.updates_per_s
    );
    let by_cpu = (w.deliveries_per_s * p.cpu_us_per_delivery / left).ceil();
    let by_mem = (p.memory_gib / w.mem_per_node_gib).ceil();
    p.nodes = by_cpu.max(by_mem).max(1.0) as u64;
    p.cores = (w.deliveries_per_s * p.cpu_us_per_delivery + p.nodes as f64 * w.updates_per_s * us_per_update)
        / 1e6
        / (w.max_core_pct / 100.0);
    p.bus = Some(BusShare {
        cpu_us_per_update: us_per_update,
        nodes_measured: measured,
        bus_report: report.display().to_string(),
    });
    Ok(p)
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
        bus: None,
    }
}

impl Plan {
    pub fn table(&self, w: &Workload) -> String {
        let bus = match &self.bus {
            Some(b) => format!(
                "  bus, per node         {:.3} core-us per update, {:.0} updates/s   (from {}, {} nodes)\n",
                b.cpu_us_per_update, w.updates_per_s, b.bus_report, b.nodes_measured
            ),
            None => String::new(),
        };
        bus + &format!(
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
            updates_per_s: 1e4,
        };
        // 20% of a core for 100k deliveries/s: 2 us each; 2M/s needs 4 cores busy, 8 at 50%.
        let p = compute(20.0, 1e5, 4.0, 10.0, w, Path::new("f.json"), Path::new("i.json"));
        assert!((p.cpu_us_per_delivery - 2.0).abs() < 1e-9);
        assert!((p.cores - 8.0).abs() < 1e-9);
        assert!((p.memory_gib - (10.0 + 1e6 * 4.0 / 1024.0) / 1024.0).abs() < 1e-9);
        assert_eq!(p.nodes, 1);
        let big = Workload { deliveries_per_s: 2e7, ..w };
        assert_eq!(compute(20.0, 1e5, 4.0, 10.0, big, Path::new("f"), Path::new("i")).nodes, 5);

        // A cluster: 2 nodes spent 60% of a core for 100k deliveries/s (2 us each: 20%) and 10k updates/s:
        // 40% for 2 x 10k updates, 20 us each per node.
        let share = bus_share(60.0, 1e5, 1e4, 2, 2.0);
        assert!((share - 20.0).abs() < 1e-9);
        // 20M deliveries/s (40 cores busy) over nodes of 16 cores at 50% (8), each paying 10k x 20 us =
        // 0.2 core for the bus: 40 / 7.8 = 5.1, so 6 nodes (5 without the bus).
        let p = compute(20.0, 1e5, 4.0, 10.0, big, Path::new("f"), Path::new("i"));
        let p = with_bus(p, share, 2, Path::new("b"), big).unwrap();
        assert_eq!(p.nodes, 6);
        assert!(
            with_bus(p, 1e3, 2, Path::new("b"), big).is_err(),
            "10k updates at 1 ms each fill a node (10 cores of 8)"
        );
    }
}
