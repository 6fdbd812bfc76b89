//! `tickwire-load`: drives a WebSocket fanout server (tickwire, or a peer) and reports what it measured.

mod engine;
mod plan;
mod procfs;
mod report;
mod scenario;
mod server_metrics;
mod stats;
mod ws;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::engine::{Protocol, Target};
use crate::report::Report;
use crate::scenario::{Search, Setup};

/// Load generator for tickwire and its peers: latency from source, loss, throughput, memory.
///
/// Pin the server and this tool to different CPUs (e.g. `taskset -c 0 tickwire ...` and
/// `taskset -c 1 tickwire-load ...`) and pass --server-pid so the report holds the server's CPU and memory.
#[derive(Debug, Parser)]
#[command(name = "tickwire-load", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// N connections, S symbols, K subscriptions each, an open-loop publisher at R events/s.
    Fanout(FanoutArgs),
    /// Steps the publish rate up until p99 exceeds the limit or anything is lost; reports the best rate.
    Saturate(SaturateArgs),
    /// All clients connect and subscribe at once, then all drop and reconnect at once.
    Storm(ConnArgs),
    /// N idle connections; the server's resident memory per connection.
    Idle(IdleArgs),
    /// Cores and nodes for a workload, from a fanout report and an idle report.
    Plan(PlanArgs),
    /// One Markdown table, with ratios, from reports of the same scenario against several targets.
    Compare(CompareArgs),
}

#[derive(Debug, Clone, Args)]
struct CompareArgs {
    /// JSON reports (one per target) of the same scenario
    #[arg(required = true)]
    reports: Vec<PathBuf>,
    /// The target the ratios are computed for
    #[arg(long, default_value = "tickwire")]
    baseline: String,
    /// Write the table to this file as well as to standard output
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
struct ConnArgs {
    /// Server address
    #[arg(long, default_value = "127.0.0.1:8080")]
    target: SocketAddr,
    /// Name of the target in reports (tickwire, bun, nats, ...)
    #[arg(long, default_value = "tickwire")]
    name: String,
    /// Protocol the target speaks
    #[arg(long, value_enum, default_value_t = Protocol::Tickwire)]
    protocol: Protocol,
    /// Subscriber connections
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Distinct symbols
    #[arg(long, default_value_t = 100)]
    symbols: usize,
    /// Symbols each connection subscribes to
    #[arg(long, default_value_t = 1)]
    subs_per_conn: usize,
    /// Connections opening at the same time while connecting
    #[arg(long, default_value_t = 512)]
    connect_concurrency: usize,
    /// JWT for subscribers (tickwire with --allow-anonymous false; the private dialects' user)
    #[arg(long, env = "TICKWIRE_LOAD_TOKEN")]
    token: Option<String>,
    /// JWT with role publisher, for the publisher connection
    #[arg(long, env = "TICKWIRE_PUBLISH_TOKEN")]
    publish_token: Option<String>,
    /// PID of the server, to report its CPU and memory from /proc
    #[arg(long)]
    server_pid: Option<u32>,
    /// A cluster on the bus: the nodes subscribers connect to, in turn (the publisher and the server's
    /// /metrics stay on --target, which should be one of them)
    #[arg(long, value_delimiter = ',', value_name = "ADDR,...")]
    subscriber_targets: Vec<SocketAddr>,
    /// A cluster: the other nodes' PIDs, whose CPU and memory are added to --server-pid's
    #[arg(long, value_delimiter = ',', value_name = "PID,...")]
    cluster_pids: Vec<u32>,
    /// Write the report as JSON to this file
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write a Markdown report with SVG plots into this directory
    #[arg(long)]
    report: Option<PathBuf>,
    /// --protocol portfolio or fastws: the user whose orders the clients subscribe (give --token of this user)
    /// and the publisher publishes
    #[arg(long, default_value = "load")]
    private_user: String,
    /// --protocol legacy: the server's legacy_price_update_interval_s (frames further apart lost an interval)
    #[arg(long, default_value_t = 1)]
    legacy_interval_s: u64,
    /// Subscribers offer permessage-deflate (RFC 7692) and inflate the frames that come deflated; a server
    /// that does not agree fails the connection
    #[arg(long)]
    compress: bool,
    /// Exit with status 1 if anything was lost, a connection failed or the server sent an error frame (for
    /// CI; no timing is checked)
    #[arg(long)]
    fail_on_loss: bool,
}

#[derive(Debug, Clone, Args)]
struct FanoutArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Events published per second (open loop); 0: publish nothing and only listen for --duration-s (another
    /// process publishes)
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Seconds of publishing
    #[arg(long, default_value_t = 10)]
    duration_s: u64,
    /// Seconds of publishing at the same rate before the measured ones, not measured (a cluster's nodes
    /// start following each topic at its first subscriber, and the first updates wait for that)
    #[arg(long, default_value_t = 0)]
    warmup_s: u64,
}

#[derive(Debug, Clone, Args)]
struct SaturateArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// First publish rate, events/s
    #[arg(long, default_value_t = 1000.0)]
    start_rate: f64,
    /// Each step multiplies the rate by this
    #[arg(long, default_value_t = 1.5)]
    factor: f64,
    /// Highest rate to try
    #[arg(long, default_value_t = 1e7)]
    max_rate: f64,
    /// Seconds per step
    #[arg(long, default_value_t = 5)]
    step_s: u64,
    /// A step passes while p99 stays at or under this many milliseconds (and nothing is lost)
    #[arg(long, default_value_t = 50.0)]
    p99_limit_ms: f64,
}

#[derive(Debug, Clone, Args)]
struct IdleArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Seconds to wait after the last connection before reading the server's memory
    #[arg(long, default_value_t = 2)]
    settle_s: u64,
}

#[derive(Debug, Clone, Args)]
struct PlanArgs {
    /// JSON report of a fanout run made with --server-pid
    #[arg(long)]
    fanout_report: PathBuf,
    /// JSON report of an idle run
    #[arg(long)]
    idle_report: PathBuf,
    /// Connections to plan for
    #[arg(long)]
    connections: u64,
    /// Deliveries per second to plan for (events x subscribers)
    #[arg(long)]
    deliveries_per_s: f64,
    /// Cores per node
    #[arg(long, default_value_t = 16)]
    cores_per_node: u64,
    /// Memory per node, GiB
    #[arg(long, default_value_t = 64.0)]
    mem_per_node_gib: f64,
    /// Plan each core for at most this CPU use, percent (headroom for bursts)
    #[arg(long, default_value_t = 50.0)]
    max_core_pct: f64,
    /// A cluster on the bus: a fanout report of the same scenario over several nodes (made with
    /// --subscriber-targets, --server-pid and --cluster-pids, as perf/cluster.sh does); each node's cost per
    /// update it follows is then part of the plan
    #[arg(long, requires = "updates_per_s")]
    bus_report: Option<PathBuf>,
    /// Updates per second the publishers send (with --bus-report: every node pays for those it follows)
    #[arg(long, default_value_t = 0.0)]
    updates_per_s: f64,
}

impl ConnArgs {
    fn setup(&self) -> Setup {
        Setup {
            target: Target {
                addr: self.target,
                protocol: self.protocol,
                token: self.token.clone(),
                publish_token: self.publish_token.clone(),
                interval_s: self.legacy_interval_s.max(1),
                user: self.private_user.clone(),
                compress: self.compress,
                subscribers: self.subscriber_targets.clone(),
                cluster_pids: self.cluster_pids.clone(),
            },
            name: self.name.clone(),
            connections: self.connections,
            symbols: self.symbols.max(1),
            subs_per_conn: self.subs_per_conn.clamp(1, self.symbols.max(1)),
            concurrency: self.connect_concurrency.max(1),
            server_pid: self.server_pid,
        }
    }
}

/// Runs a scenario on this thread: tokio's current-thread runtime (epoll) drives every connection.
///
/// The server is glommio (io_uring); the generator uses epoll on purpose. Measured here with 10,000
/// connections, io_uring's per-socket poll requests cost the generator about 95% of its core in the kernel
/// and made it the bottleneck, while one epoll_wait reports many ready sockets at once.
fn on_executor<F, Fut>(f: F) -> anyhow::Result<Report>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Report>>,
{
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    tokio::task::LocalSet::new().block_on(&rt, f())
}

fn finish(report: &Report, conn: &ConnArgs) -> anyhow::Result<()> {
    println!("{}", report.table());
    if let Some(path) = &conn.json {
        report.write_json(path)?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(dir) = &conn.report {
        report.write_report(dir)?;
        eprintln!("wrote {}/{}-{}.md", dir.display(), report.scenario, report.target);
    }
    if conn.fail_on_loss {
        anyhow::ensure!(
            report.lost == 0 && report.duplicates == 0 && report.failed_connections == 0 && report.server_errors == 0,
            "lost {}, duplicates {}, failed connections {}, error frames from the server {}",
            report.lost,
            report.duplicates,
            report.failed_connections,
            report.server_errors
        );
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let nofile = procfs::raise_nofile();
    let conns = match &cli.command {
        Cmd::Fanout(a) => a.conn.connections,
        Cmd::Saturate(a) => a.conn.connections,
        Cmd::Storm(a) => a.connections,
        Cmd::Idle(a) => a.conn.connections,
        Cmd::Plan(_) | Cmd::Compare(_) => 0,
    };
    anyhow::ensure!(
        (conns as u64) + 64 <= nofile,
        "{conns} connections need more open files than the limit {nofile} (raise ulimit -n)"
    );
    match cli.command {
        Cmd::Fanout(a) => {
            let (setup, rate, d) = (a.conn.setup(), a.rate, Duration::from_secs(a.duration_s));
            let warmup = Duration::from_secs(a.warmup_s);
            let report = on_executor(move || scenario::fanout(setup, rate, d, warmup))?;
            finish(&report, &a.conn)
        }
        Cmd::Saturate(a) => {
            let search = Search {
                start_rate: a.start_rate,
                factor: a.factor.max(1.01),
                max_rate: a.max_rate,
                step: Duration::from_secs(a.step_s),
                p99_limit_us: (a.p99_limit_ms * 1000.0) as u64,
            };
            let setup = a.conn.setup();
            let report = on_executor(move || scenario::saturate(setup, search))?;
            finish(&report, &a.conn)
        }
        Cmd::Storm(a) => {
            let setup = a.setup();
            let report = on_executor(move || scenario::storm(setup))?;
            finish(&report, &a)
        }
        Cmd::Idle(a) => {
            let (setup, settle) = (a.conn.setup(), Duration::from_secs(a.settle_s));
            let report = on_executor(move || scenario::idle(setup, settle))?;
            finish(&report, &a.conn)
        }
        Cmd::Plan(a) => {
            let w = plan::Workload {
                connections: a.connections,
                deliveries_per_s: a.deliveries_per_s,
                cores_per_node: a.cores_per_node,
                mem_per_node_gib: a.mem_per_node_gib,
                max_core_pct: a.max_core_pct,
                updates_per_s: a.updates_per_s,
            };
            let p = plan::plan(&a.fanout_report, &a.idle_report, a.bus_report.as_deref(), w)?;
            println!("{}", p.table(&w));
            Ok(())
        }
        Cmd::Compare(a) => {
            let reports = a
                .reports
                .iter()
                .map(|p| -> anyhow::Result<Report> { Ok(serde_json::from_slice(&std::fs::read(p)?)?) })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let table = report::compare(&reports, &a.baseline)?;
            println!("{table}");
            if let Some(out) = a.out {
                std::fs::write(&out, &table)?;
            }
            Ok(())
        }
    }
}
