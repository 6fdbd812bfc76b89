//! `tickwire check-system`: whether this host can run the configured server (docs/deploy), one line per
//! item with ok, warn or fail and the exact fix. The server runs the same checks at start and logs the
//! warnings and failures.
//!
//! What is read from the host ([`Host::read`]) is kept apart from the judgement ([`checks`]), so that each
//! rule is tested with made-up hosts.

use std::path::PathBuf;

use crate::config::Config;

/// Registered I/O memory per shard. tickwire does no file I/O, so glommio's 10 MiB default would only
/// count against the locked-memory limit (often 8 MiB in total).
pub const IO_MEMORY: usize = 256 * 1024;
/// Locked memory each shard needs in all: its buffers, and on kernels before 5.12 its rings too.
const MEMLOCK_PER_SHARD: u64 = IO_MEMORY as u64 + 1024 * 1024;
/// Descriptors beyond `max_connections` for listeners, rings, the store and connections still closing.
pub const SPARE_DESCRIPTORS: usize = 1024;
/// Kernel memory a connection's socket holds at least (send and receive buffers, lightly used), bytes.
const TCP_BYTES_PER_CONNECTION: u64 = 8 * 1024;

/// How an item stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

/// One item: what was found and, unless ok, what to do.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    pub item: &'static str,
    pub level: Level,
    pub found: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// What the checks read from this host.
#[derive(Debug, Clone)]
pub struct Host {
    /// `uname -r`.
    pub kernel: String,
    /// `kernel.io_uring_disabled` (absent before Linux 6.6).
    pub io_uring_disabled: Option<u32>,
    /// Whether an io_uring executor could be made here: `Err` says why not (seccomp, memlock, kernel).
    pub ring_probe: Result<(), String>,
    /// This process's seccomp mode (`Seccomp:` of /proc/self/status): 0 none, 1 strict, 2 a filter (a
    /// container's profile).
    pub seccomp: Option<u8>,
    /// `RLIMIT_MEMLOCK` soft limit in bytes (`None`: unlimited).
    pub memlock: Option<u64>,
    /// `RLIMIT_NOFILE`: soft, hard.
    pub nofile: (u64, u64),
    pub somaxconn: Option<u64>,
    pub port_range: Option<(u64, u64)>,
    /// `net.ipv4.tcp_mem` in pages: low, pressure, high.
    pub tcp_mem: Option<[u64; 3]>,
    pub page_size: u64,
    /// CPUs this process may run on.
    pub cpus: usize,
    /// The selected mode of transparent huge pages (`always`, `madvise`, `never`).
    pub thp: Option<String>,
    /// The TLS files configured, and whether each could be read.
    pub tls_files: Vec<(PathBuf, Result<(), String>)>,
}

impl Host {
    /// Reads this host, for `config`'s server.
    pub fn read(config: &Config) -> Host {
        let sysctl = |path: &str| std::fs::read_to_string(path).ok().map(|s| s.trim().to_owned());
        let numbers = |s: String| s.split_whitespace().filter_map(|n| n.parse().ok()).collect::<Vec<u64>>();
        let rlimit = |resource| {
            // SAFETY: getrlimit writes into `limit`, a plain struct owned by this frame.
            let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
            // SAFETY: as above; `resource` is one of the RLIMIT_* constants.
            let ok = unsafe { libc::getrlimit(resource, &mut limit) } == 0;
            ok.then_some((limit.rlim_cur, limit.rlim_max))
        };
        let unlimited = |v: u64| (v != libc::RLIM_INFINITY).then_some(v);
        let thp = sysctl("/sys/kernel/mm/transparent_hugepage/enabled").and_then(|s| {
            s.split_whitespace().find(|w| w.starts_with('['))?.trim_matches(['[', ']']).to_owned().into()
        });
        // SAFETY: sysconf has no preconditions.
        let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
        Host {
            kernel: sysctl("/proc/sys/kernel/osrelease").unwrap_or_default(),
            io_uring_disabled: sysctl("/proc/sys/kernel/io_uring_disabled").and_then(|s| s.parse().ok()),
            ring_probe: probe_ring(),
            seccomp: std::fs::read_to_string("/proc/self/status").ok().and_then(|status| {
                status.lines().find_map(|l| l.strip_prefix("Seccomp:")).and_then(|v| v.trim().parse().ok())
            }),
            memlock: rlimit(libc::RLIMIT_MEMLOCK).and_then(|l| unlimited(l.0)),
            nofile: rlimit(libc::RLIMIT_NOFILE).unwrap_or((0, 0)),
            somaxconn: sysctl("/proc/sys/net/core/somaxconn").and_then(|s| s.parse().ok()),
            port_range: sysctl("/proc/sys/net/ipv4/ip_local_port_range")
                .map(numbers)
                .and_then(|v| Some((*v.first()?, *v.get(1)?))),
            tcp_mem: sysctl("/proc/sys/net/ipv4/tcp_mem").map(numbers).and_then(|v| v.try_into().ok()),
            page_size,
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            thp,
            tls_files: [&config.tls_cert, &config.tls_key]
                .into_iter()
                .flatten()
                .map(|p| (p.clone(), std::fs::read(p).map(|_| ()).map_err(|e| e.to_string())))
                .collect(),
        }
    }
}

/// Makes (and drops) one io_uring executor, as each shard does at start.
fn probe_ring() -> Result<(), String> {
    let made = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound).io_memory(IO_MEMORY).make();
    made.map(drop).map_err(|e| e.to_string())
}

/// `major.minor` of a kernel release (`6.1.0-18-amd64` is 6.1).
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(['.', '-']);
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The locked memory `shards` shards need, bytes.
pub fn memlock_needed(shards: u64) -> u64 {
    shards * MEMLOCK_PER_SHARD
}

/// Judges `host` for `config`'s server.
pub fn checks(host: &Host, config: &Config) -> Vec<Check> {
    let shards = config.shard_count() as u64;
    let conns = config.max_connections as u64;
    let mut out = Vec::new();
    let mut add = |item, level, found: String, fix: Option<String>| out.push(Check { item, level, found, fix });
    let kernel = kernel_version(&host.kernel);
    match kernel {
        Some(v) if v >= (5, 8) => add("kernel", Level::Ok, host.kernel.clone(), None),
        _ => add(
            "kernel",
            Level::Fail,
            format!("{} (io_uring as the shards use it needs 5.8 or later)", host.kernel),
            Some("run on Linux 5.8 or later (Debian 11+, Ubuntu 22.04+, RHEL 9+)".into()),
        ),
    }
    match host.io_uring_disabled {
        None | Some(0) => add("io_uring_disabled", Level::Ok, format!("{}", host.io_uring_disabled.unwrap_or(0)), None),
        Some(1) => add(
            "io_uring_disabled",
            Level::Warn,
            "1 (io_uring only for the io_uring_group and privileged processes)".into(),
            Some("sysctl -w kernel.io_uring_disabled=0, or run tickwire in kernel.io_uring_group".into()),
        ),
        Some(n) => add(
            "io_uring_disabled",
            Level::Fail,
            format!("{n} (io_uring off for everyone)"),
            Some("sysctl -w kernel.io_uring_disabled=0 (and in /etc/sysctl.d/ to keep it)".into()),
        ),
    }
    match &host.ring_probe {
        Ok(()) => add("io_uring probe", Level::Ok, "a ring was made".into(), None),
        Err(e) => add(
            "io_uring probe",
            Level::Fail,
            format!("no ring: {e}"),
            Some("in a container, allow io_uring_setup, io_uring_enter and io_uring_register in its seccomp profile (docs/deploy/README.md, Containers); raise the locked-memory limit".into()),
        ),
    }
    // A seccomp filter is how containers refuse io_uring: said apart, so that a refused probe is explained.
    match (host.seccomp, &host.ring_probe) {
        (None | Some(0), _) => add("seccomp", Level::Ok, "no filter".into(), None),
        (Some(2), Ok(())) => add("seccomp", Level::Ok, "a filter that allows io_uring (the probe ring was made)".into(), None),
        (Some(mode), _) => add(
            "seccomp",
            Level::Fail,
            format!("mode {mode}: {}", if mode == 2 { "a filter, and the probe ring was refused" } else { "strict" }),
            Some("run with a seccomp profile that allows io_uring_setup, io_uring_enter and io_uring_register (docker --security-opt seccomp=PROFILE; docs/deploy/README.md, Containers)".into()),
        ),
    }
    let memlock_needed = memlock_needed(shards);
    match host.memlock {
        None => add("RLIMIT_MEMLOCK", Level::Ok, "unlimited".into(), None),
        Some(have) if have >= memlock_needed => {
            add("RLIMIT_MEMLOCK", Level::Ok, format!("{} KiB, {} shards need {} KiB", have / 1024, shards, memlock_needed / 1024), None)
        }
        Some(have) => add(
            "RLIMIT_MEMLOCK",
            Level::Fail,
            format!("{} KiB, {} shards need {} KiB", have / 1024, shards, memlock_needed / 1024),
            Some(format!(
                "LimitMEMLOCK={}K in the unit (docs/deploy/tickwire.service), or ulimit -l {} in the shell that starts it",
                memlock_needed / 1024,
                memlock_needed / 1024
            )),
        ),
    }
    let fds = conns + SPARE_DESCRIPTORS as u64;
    // The server raises its soft limit up to the hard one at start.
    let (soft, hard) = host.nofile;
    if hard >= fds {
        add("RLIMIT_NOFILE", Level::Ok, format!("{soft} (hard {hard}), max_connections {conns} need {fds}"), None);
    } else {
        add(
            "RLIMIT_NOFILE",
            Level::Fail,
            format!(
                "{soft} (hard {hard}), max_connections {conns} need {fds}: connections beyond {} are refused",
                hard.saturating_sub(SPARE_DESCRIPTORS as u64)
            ),
            Some(format!("LimitNOFILE={fds} in the unit, or ulimit -Hn {fds}; or lower max_connections")),
        );
    }
    let backlog = (conns / 10).clamp(1024, 65_535);
    match host.somaxconn {
        Some(n) if n >= backlog => add("net.core.somaxconn", Level::Ok, n.to_string(), None),
        found => add(
            "net.core.somaxconn",
            Level::Warn,
            format!(
                "{} (a reconnect storm of {conns} clients wants {backlog})",
                found.map_or("unknown".into(), |n| n.to_string())
            ),
            Some(format!("sysctl -w net.core.somaxconn={backlog} (docs/deploy/99-tickwire.conf)")),
        ),
    }
    match host.port_range {
        Some((lo, hi)) if hi.saturating_sub(lo) + 1 >= conns.min(28_000) => {
            add("net.ipv4.ip_local_port_range", Level::Ok, format!("{lo} {hi}"), None)
        }
        found => add(
            "net.ipv4.ip_local_port_range",
            Level::Warn,
            format!(
                "{} (clients on this host, such as a load generator or a balancer's backends, open one port each)",
                found.map_or("unknown".into(), |(lo, hi)| format!("{lo} {hi}"))
            ),
            Some("sysctl -w net.ipv4.ip_local_port_range=\"1024 65535\"".into()),
        ),
    }
    let tcp_needed = conns * TCP_BYTES_PER_CONNECTION;
    match host.tcp_mem {
        Some([_, _, high]) if high * host.page_size >= tcp_needed => add(
            "net.ipv4.tcp_mem",
            Level::Ok,
            format!(
                "{} MiB at most, {conns} connections need about {} MiB",
                (high * host.page_size) >> 20,
                tcp_needed >> 20
            ),
            None,
        ),
        found => add(
            "net.ipv4.tcp_mem",
            Level::Warn,
            format!(
                "{} MiB at most, {conns} connections need about {} MiB",
                found.map_or(0, |m| (m[2] * host.page_size) >> 20),
                tcp_needed >> 20
            ),
            Some(format!(
                "sysctl -w net.ipv4.tcp_mem=\"{p} {p} {p}\" (pages of {} bytes)",
                host.page_size,
                p = tcp_needed.div_ceil(host.page_size.max(1)) * 2
            )),
        ),
    }
    if shards as usize <= host.cpus {
        add("CPUs", Level::Ok, format!("{} for {shards} shards", host.cpus), None);
    } else {
        add(
            "CPUs",
            Level::Warn,
            format!("{} for {shards} shards: shards would share cores", host.cpus),
            Some(format!("--shards {} (one per CPU), or give the process more CPUs", host.cpus)),
        );
    }
    match host.thp.as_deref() {
        Some("always") => add(
            "transparent huge pages",
            Level::Warn,
            "always (compaction stalls show up as latency spikes)".into(),
            Some("echo madvise > /sys/kernel/mm/transparent_hugepage/enabled".into()),
        ),
        found => add("transparent huge pages", Level::Ok, found.unwrap_or("not available").into(), None),
    }
    for (path, read) in &host.tls_files {
        match read {
            Ok(()) => add("TLS file", Level::Ok, format!("{} readable", path.display()), None),
            Err(e) => add(
                "TLS file",
                Level::Fail,
                format!("{}: {e}", path.display()),
                Some("give the service's user read access to it (the unit's user, group tickwire)".into()),
            ),
        }
    }
    out
}

/// The worst level of `checks`.
pub fn worst(checks: &[Check]) -> Level {
    checks.iter().map(|c| c.level).max().unwrap_or(Level::Ok)
}

/// The checks as lines for a person: `ok   item  found` and, under those that are not ok, `fix: ...`.
pub fn text(checks: &[Check]) -> String {
    let mut out = String::new();
    for c in checks {
        let level = match c.level {
            Level::Ok => "ok  ",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        };
        out.push_str(&format!("{level}  {:<30} {}\n", c.item, c.found));
        if let Some(fix) = &c.fix {
            out.push_str(&format!("      {:<30} fix: {fix}\n", ""));
        }
    }
    out
}

/// At start: logs what is not ok (the server goes on; what would stop it stops it with its own error).
pub fn log_at_start(config: &Config) {
    for c in checks(&Host::read(config), config).into_iter().filter(|c| c.level != Level::Ok) {
        let fix = c.fix.as_deref().unwrap_or("");
        match c.level {
            Level::Fail => tracing::error!(item = c.item, found = %c.found, fix, "host check failed"),
            _ => tracing::warn!(item = c.item, found = %c.found, fix, "host check"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host fit for 10,000 connections on 4 shards.
    fn good() -> Host {
        Host {
            kernel: "6.1.0-18-amd64".into(),
            io_uring_disabled: Some(0),
            ring_probe: Ok(()),
            seccomp: Some(0),
            memlock: Some(64 << 20),
            nofile: (1 << 20, 1 << 20),
            somaxconn: Some(4096),
            port_range: Some((1024, 65535)),
            tcp_mem: Some([1 << 20, 1 << 21, 1 << 22]),
            page_size: 4096,
            cpus: 8,
            thp: Some("madvise".into()),
            tls_files: Vec::new(),
        }
    }

    fn config() -> Config {
        Config { shards: Some(4), max_connections: 10_000, ..Config::default() }
    }

    fn level_of(host: &Host, item: &str) -> Level {
        checks(host, &config()).into_iter().find(|c| c.item == item).unwrap_or_else(|| panic!("no {item}")).level
    }

    #[test]
    fn a_fit_host_passes_every_check() {
        let all = checks(&good(), &config());
        assert_eq!(worst(&all), Level::Ok, "{}", text(&all));
        assert!(all.iter().all(|c| c.fix.is_none()));
        // A container's filter that lets the ring be made is fine.
        assert_eq!(level_of(&Host { seccomp: Some(2), ..good() }, "seccomp"), Level::Ok);
    }

    #[test]
    fn each_unfit_item_is_named_with_its_fix() {
        let cases: Vec<(&str, Host, Level)> = vec![
            ("kernel", Host { kernel: "5.4.0-150-generic".into(), ..good() }, Level::Fail),
            ("io_uring_disabled", Host { io_uring_disabled: Some(2), ..good() }, Level::Fail),
            ("io_uring_disabled", Host { io_uring_disabled: Some(1), ..good() }, Level::Warn),
            ("io_uring probe", Host { ring_probe: Err("Operation not permitted".into()), ..good() }, Level::Fail),
            (
                "seccomp",
                Host { seccomp: Some(2), ring_probe: Err("Operation not permitted".into()), ..good() },
                Level::Fail,
            ),
            ("seccomp", Host { seccomp: Some(1), ..good() }, Level::Fail),
            ("RLIMIT_MEMLOCK", Host { memlock: Some(64 * 1024), ..good() }, Level::Fail),
            ("RLIMIT_NOFILE", Host { nofile: (1024, 4096), ..good() }, Level::Fail),
            ("net.core.somaxconn", Host { somaxconn: Some(128), ..good() }, Level::Warn),
            ("net.ipv4.ip_local_port_range", Host { port_range: Some((32768, 32800)), ..good() }, Level::Warn),
            ("net.ipv4.tcp_mem", Host { tcp_mem: Some([100, 200, 300]), ..good() }, Level::Warn),
            ("CPUs", Host { cpus: 2, ..good() }, Level::Warn),
            ("transparent huge pages", Host { thp: Some("always".into()), ..good() }, Level::Warn),
            (
                "TLS file",
                Host { tls_files: vec![("k.pem".into(), Err("Permission denied".into()))], ..good() },
                Level::Fail,
            ),
        ];
        for (item, host, level) in cases {
            let all = checks(&host, &config());
            let c = all.iter().find(|c| c.item == item && c.level != Level::Ok).unwrap_or_else(|| panic!("{item}"));
            assert_eq!(c.level, level, "{item}: {}", text(&all));
            assert!(c.fix.as_deref().is_some_and(|f| !f.is_empty()), "{item} says how to fix it");
            assert_eq!(worst(&all), level, "{item}");
        }
        // What the limits are judged against: the configured server.
        assert_eq!(level_of(&Host { memlock: Some(4 * MEMLOCK_PER_SHARD), ..good() }, "RLIMIT_MEMLOCK"), Level::Ok);
        assert_eq!(
            level_of(&Host { memlock: Some(4 * MEMLOCK_PER_SHARD - 1), ..good() }, "RLIMIT_MEMLOCK"),
            Level::Fail
        );
        assert_eq!(level_of(&Host { memlock: None, ..good() }, "RLIMIT_MEMLOCK"), Level::Ok);
        assert_eq!(level_of(&Host { nofile: (1024, 11_024), ..good() }, "RLIMIT_NOFILE"), Level::Ok, "raised at start");
        assert_eq!(level_of(&Host { nofile: (11_023, 11_023), ..good() }, "RLIMIT_NOFILE"), Level::Fail);
    }

    #[test]
    fn kernel_releases_read_as_major_minor() {
        assert_eq!(kernel_version("6.18.44-fc-v1045"), Some((6, 18)));
        assert_eq!(kernel_version("5.8.0"), Some((5, 8)));
        assert_eq!(kernel_version("garbage"), None);
    }
}
