//! CPU time and resident memory of a process, from /proc.

use std::time::Instant;

/// CPU seconds (user + system) used so far by `pid`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((utime + stime) / hz)
}

/// Resident memory of `pid` in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Measures one process's CPU use between `start` and `percent`.
#[derive(Debug, Clone, Copy)]
pub struct CpuMeter {
    pid: u32,
    cpu: f64,
    at: Instant,
}

impl CpuMeter {
    pub fn start(pid: u32) -> Option<CpuMeter> {
        Some(CpuMeter { pid, cpu: cpu_seconds(pid)?, at: Instant::now() })
    }

    /// Percent of one core used since `start`.
    pub fn percent(&self) -> Option<f64> {
        let used = cpu_seconds(self.pid)? - self.cpu;
        Some(100.0 * used / self.at.elapsed().as_secs_f64().max(1e-9))
    }
}

/// Raises the open-file limit to its hard maximum; returns the new soft limit.
pub fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid rlimit for getrlimit/setrlimit to read and write.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    lim.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(rss_kib(me).unwrap() > 0);
        let m = CpuMeter::start(me).unwrap();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        assert!(m.percent().unwrap() > 0.0);
    }
}
