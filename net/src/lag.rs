//! The stall detector: how late each shard runs a timer that is due (its loop lag), and why.
//!
//! Every shard's ticker sleeps [`TICK`] and measures how much later than that it woke. The lag goes into
//! the shard's histogram (`tickwire_shard_loop_lag_seconds`). A lag over [`WARN`] is a stall: it is counted
//! by cause (`tickwire_shard_stalls_total`) and logged as a warning with the shard's state, at most once a
//! second per shard (the lines in between are counted in the next one). A shard whose last tick is more
//! than [`UNHEALTHY`] old makes `/healthz` answer 503 until it ticks again.
//!
//! The cause comes from the thread's scheduler statistics (`/proc/thread-self/schedstat`: time on a CPU,
//! time runnable but waiting for one) over the late tick:
//! - [`Cause::WaitingForCpu`]: the thread was runnable but not running for most of the lag; the host's
//!   scheduler gave the CPU to something else. Not the server's doing.
//! - [`Cause::OnCpu`]: the thread ran for most of the lag: one task ran that long without yielding, or a
//!   long queue of ready tasks (thousands of connections closing at once) ran before the ticker's turn.
//! - [`Cause::OffCpu`]: the thread slept in the kernel for most of the lag: parked in `io_uring_enter` past
//!   a due timer (the runtime bug that vendor/README.md describes), or a task blocked in a system call.
//!
//! While a shard is late, an observer thread ([`observe`]) looks at its thread from outside, without
//! touching it: its state in `/proc/self/task/<tid>/stat` (R: running or runnable; S: asleep; D: asleep and
//! not interruptible, as in a page fault that reads from disk), the system call it is in
//! (`/proc/self/task/<tid>/syscall`) and where in the kernel it waits (`wchan`). The warning line carries
//! what it saw (`seen=`), which tells a runtime that parked past its timers (S in `io_uring_enter`) from a
//! blocking call (S in `futex`, `accept4`...), a page fault (D) or the host's scheduler (R).
//!
//! Nothing here hides a stall; the detector only watches (the runtime itself is fixed in vendor/glommio).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::state::Shared;

/// The ticker's period: how often a shard's lag is sampled.
pub const TICK: Duration = Duration::from_millis(5);
/// A lag above this is a stall: counted by cause and logged.
pub const WARN: Duration = Duration::from_millis(20);
/// A shard whose last tick is older than this is unhealthy (`/healthz` 503).
pub const UNHEALTHY: Duration = Duration::from_secs(1);
/// At most one warning line per shard per this long.
const LOG_EVERY: Duration = Duration::from_secs(1);
/// How often the observer thread checks whether a shard is late.
const OBSERVE_EVERY: Duration = Duration::from_millis(10);

/// Why a shard was late, from its thread's scheduler statistics (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    OnCpu,
    WaitingForCpu,
    OffCpu,
}

impl Cause {
    pub const ALL: [Cause; 3] = [Cause::OnCpu, Cause::WaitingForCpu, Cause::OffCpu];

    /// The `cause` label of `tickwire_shard_stalls_total` and of the warning line.
    pub fn name(self) -> &'static str {
        match self {
            Cause::OnCpu => "on_cpu",
            Cause::WaitingForCpu => "waiting_for_cpu",
            Cause::OffCpu => "off_cpu",
        }
    }

    /// What the cause means, for the warning line.
    fn meaning(self) -> &'static str {
        match self {
            Cause::OnCpu => "the shard was busy: one long task, or a long queue of ready tasks ahead of the ticker",
            Cause::WaitingForCpu => "the thread was runnable but the host's scheduler ran something else",
            Cause::OffCpu => {
                "the thread slept in the kernel: parked past a due timer, or a task blocked in a system call"
            }
        }
    }

    /// The cause of a late tick that spent `on_cpu` running and `waiting` runnable, out of `elapsed`
    /// (the whole time from the tick's start to its late wakeup). Whichever share is largest wins; what is
    /// neither running nor waiting was spent asleep.
    pub fn of(elapsed: Duration, on_cpu: Duration, waiting: Duration) -> Cause {
        let off_cpu = elapsed.saturating_sub(on_cpu + waiting);
        if waiting >= on_cpu && waiting >= off_cpu {
            Cause::WaitingForCpu
        } else if on_cpu >= off_cpu {
            Cause::OnCpu
        } else {
            Cause::OffCpu
        }
    }
}

/// A thread's cumulative scheduler statistics: time on a CPU and time runnable but waiting for one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedStat {
    pub on_cpu: Duration,
    pub waiting: Duration,
}

impl SchedStat {
    /// Parses `/proc/<pid>/task/<tid>/schedstat`: "on-CPU ns, waiting ns, timeslices".
    pub fn parse(text: &str) -> Option<SchedStat> {
        let mut fields = text.split_ascii_whitespace().map(|f| f.parse::<u64>().ok());
        let on_cpu = fields.next()??;
        let waiting = fields.next()??;
        Some(SchedStat { on_cpu: Duration::from_nanos(on_cpu), waiting: Duration::from_nanos(waiting) })
    }

    fn since(self, earlier: SchedStat) -> SchedStat {
        SchedStat {
            on_cpu: self.on_cpu.saturating_sub(earlier.on_cpu),
            waiting: self.waiting.saturating_sub(earlier.waiting),
        }
    }
}

/// The calling thread's scheduler statistics, read again and again through one open file (one `pread` a
/// read). `None` where the kernel keeps none (schedstats off): stalls are then still measured and logged,
/// with the cause unknown.
#[derive(Debug)]
struct ThreadSchedStat(Option<File>);

impl ThreadSchedStat {
    fn open() -> ThreadSchedStat {
        // /proc/thread-self resolves to this thread when opened; the file stays this thread's.
        ThreadSchedStat(File::open("/proc/thread-self/schedstat").ok())
    }

    fn read(&self) -> Option<SchedStat> {
        let mut buf = [0u8; 128];
        let n = self.0.as_ref()?.read_at(&mut buf, 0).ok()?;
        SchedStat::parse(std::str::from_utf8(&buf[..n]).ok()?)
    }
}

/// One late tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stall {
    pub lag: Duration,
    /// `None` where the thread's scheduler statistics cannot be read.
    pub cause: Option<Cause>,
    pub on_cpu: Duration,
    pub waiting: Duration,
}

/// A shard's lag measurement, owned by its ticker (on the shard's thread).
#[derive(Debug)]
pub struct LagProbe {
    sched: ThreadSchedStat,
    /// When the current tick's sleep began, and the thread's statistics then.
    started: Instant,
    before: Option<SchedStat>,
    last_log: Option<Instant>,
    unlogged: u64,
}

impl LagProbe {
    /// Must be made on the thread it measures.
    pub fn new() -> LagProbe {
        let sched = ThreadSchedStat::open();
        let before = sched.read();
        LagProbe { sched, started: Instant::now(), before, last_log: None, unlogged: 0 }
    }

    /// Marks the start of a tick's sleep.
    pub fn start(&mut self, now: Instant) {
        self.started = now;
        self.before = self.sched.read();
    }

    /// The tick woke at `now`: its lag, and the stall if the lag passes [`WARN`].
    pub fn woke(&mut self, now: Instant) -> (Duration, Option<Stall>) {
        let elapsed = now.saturating_duration_since(self.started);
        let lag = elapsed.saturating_sub(TICK);
        if lag <= WARN {
            return (lag, None);
        }
        let delta = match (self.sched.read(), self.before) {
            (Some(after), Some(before)) => Some(after.since(before)),
            _ => None,
        };
        let stall = Stall {
            lag,
            cause: delta.map(|d| Cause::of(elapsed, d.on_cpu, d.waiting)),
            on_cpu: delta.map_or(Duration::ZERO, |d| d.on_cpu),
            waiting: delta.map_or(Duration::ZERO, |d| d.waiting),
        };
        (lag, Some(stall))
    }

    /// Whether a stall of `lag` seen at `now` is logged, and how many stalls went unlogged since the last
    /// line: at most one line per [`LOG_EVERY`], but a stall long enough to make the shard unhealthy is
    /// always logged.
    pub fn should_log(&mut self, now: Instant, lag: Duration) -> Option<u64> {
        let recent = self.last_log.is_some_and(|t| now.saturating_duration_since(t) < LOG_EVERY);
        if recent && lag < UNHEALTHY {
            self.unlogged += 1;
            return None;
        }
        self.last_log = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

impl Default for LagProbe {
    fn default() -> Self {
        LagProbe::new()
    }
}

/// The observer thread's loop, until the server stops: every [`OBSERVE_EVERY`], each shard whose last tick
/// is more than [`TICK`] + [`WARN`] old has its thread looked at ([`describe_thread`]).
pub fn observe(shared: &Shared) {
    while !shared.shutdown.load(Ordering::Relaxed) {
        std::thread::sleep(OBSERVE_EVERY);
        let now_ms = shared.started.elapsed().as_millis() as u64;
        for stats in shared.stats.iter() {
            let tid = stats.tid.load(Ordering::Acquire);
            let tick_ms = stats.alive_ms.load(Ordering::Relaxed);
            if tid != 0 && now_ms.saturating_sub(tick_ms) > (TICK + WARN).as_millis() as u64 {
                stats.seen.record(tick_ms, || describe_thread(tid));
            }
        }
    }
}

/// A thread of this process as `/proc` shows it: "S in io_uring_enter (426), wchan io_cqring_wait".
pub fn describe_thread(tid: u64) -> String {
    let read = |file: &str| std::fs::read_to_string(format!("/proc/self/task/{tid}/{file}")).unwrap_or_default();
    let stat = read("stat");
    // The state follows the command name, which is in parentheses and may hold spaces.
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()).unwrap_or("?").to_owned();
    let syscall = read("syscall");
    let call = match syscall.split_whitespace().next() {
        Some("running") => "user space".to_owned(),
        Some("-1") => "no system call (a fault or an interrupt)".to_owned(),
        Some(nr) => match nr.parse::<i64>().ok().and_then(syscall_name) {
            Some(name) => format!("{name} ({nr})"),
            None => format!("system call {nr}"),
        },
        None => "unknown".to_owned(),
    };
    let wchan = read("wchan");
    let wchan = if wchan.is_empty() || wchan == "0" { "-" } else { wchan.trim() };
    format!("{state} in {call}, wchan {wchan}")
}

/// Names of the system calls a shard is seen in (x86_64 numbers).
fn syscall_name(nr: i64) -> Option<&'static str> {
    if !cfg!(target_arch = "x86_64") {
        return None;
    }
    Some(match nr {
        0 => "read",
        1 => "write",
        7 => "poll",
        9 => "mmap",
        10 => "mprotect",
        11 => "munmap",
        20 => "writev",
        43 => "accept",
        44 => "sendto",
        45 => "recvfrom",
        202 => "futex",
        219 => "restart_syscall",
        230 => "clock_nanosleep",
        232 => "epoll_wait",
        288 => "accept4",
        324 => "membarrier",
        426 => "io_uring_enter",
        _ => return None,
    })
}

/// The warning line of a stall, with the shard's state and what the observer saw of its thread.
pub fn log_stall(
    shard: usize,
    stall: &Stall,
    seen: Option<&str>,
    unlogged: u64,
    connections: u64,
    queued_bytes: u64,
    sessions: usize,
) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    tracing::warn!(
        shard,
        lag_ms = format_args!("{:.1}", ms(stall.lag)),
        cause = stall.cause.map_or("unknown", Cause::name),
        on_cpu_ms = format_args!("{:.1}", ms(stall.on_cpu)),
        waiting_for_cpu_ms = format_args!("{:.1}", ms(stall.waiting)),
        seen = seen.unwrap_or("-"),
        connections,
        sessions,
        queued_bytes,
        stalls_not_logged = unlogged,
        "shard loop lag over {} ms: {}",
        WARN.as_millis(),
        stall.cause.map_or("cause unknown (no scheduler statistics)", Cause::meaning)
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Seen;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_largest_share_of_a_late_tick_names_its_cause() {
        // 40 ms from the tick's start to its wakeup.
        assert_eq!(Cause::of(40 * MS, 35 * MS, 2 * MS), Cause::OnCpu);
        assert_eq!(Cause::of(40 * MS, 3 * MS, 30 * MS), Cause::WaitingForCpu);
        assert_eq!(Cause::of(40 * MS, MS, 2 * MS), Cause::OffCpu);
        // Statistics that overshoot the elapsed time (read a little after the wakeup) still classify.
        assert_eq!(Cause::of(40 * MS, 45 * MS, Duration::ZERO), Cause::OnCpu);
    }

    #[test]
    fn schedstat_lines_parse_and_junk_does_not() {
        let s = SchedStat::parse("123456789 5000000 42\n").unwrap();
        assert_eq!(s, SchedStat { on_cpu: Duration::from_nanos(123_456_789), waiting: 5 * MS });
        assert_eq!(SchedStat::parse(""), None);
        assert_eq!(SchedStat::parse("12 x 3"), None);
    }

    #[test]
    fn this_threads_schedstat_counts_its_cpu_time() {
        let sched = ThreadSchedStat::open();
        let Some(before) = sched.read() else {
            eprintln!("notice: this kernel keeps no per-thread schedstat; the cause of stalls is logged as unknown");
            return;
        };
        // 20 ms of this thread's own CPU time, however long that takes on a busy machine.
        let cpu_time = || {
            let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            // SAFETY: `ts` is a valid timespec for the call to fill.
            assert_eq!(unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) }, 0);
            Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
        };
        let spin_until = cpu_time() + 20 * MS;
        let mut x = 0u64;
        while cpu_time() < spin_until {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let after = sched.read().expect("read once, read again");
        assert!(after.since(before).on_cpu >= 15 * MS, "{before:?} -> {after:?}");
    }

    #[test]
    fn a_blocked_tick_is_a_stall_off_cpu_and_a_punctual_one_is_not() {
        let mut probe = LagProbe::new();
        let start = Instant::now();
        probe.start(start);
        let (lag, stall) = probe.woke(start + TICK + MS);
        assert_eq!((lag, stall), (MS, None));

        probe.start(Instant::now());
        std::thread::sleep(TICK + 3 * WARN);
        let (lag, stall) = probe.woke(Instant::now());
        assert!(lag > WARN);
        let stall = stall.expect("a lag over WARN is a stall");
        if stall.cause.is_some() {
            assert_eq!(stall.cause, Some(Cause::OffCpu), "{stall:?}");
        }
    }

    #[test]
    fn a_thread_blocked_on_a_pipe_is_seen_asleep_in_read() {
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let mut fds = [0; 2];
        // SAFETY: fds has room for two descriptors.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let reader = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tid_tx.send(unsafe { libc::gettid() } as u64).unwrap();
            let mut byte = 0u8;
            // SAFETY: reads at most one byte into `byte` from the pipe opened above.
            unsafe { libc::read(fds[0], (&mut byte as *mut u8).cast(), 1) }
        });
        let tid = tid_rx.recv().unwrap();
        // Until the reader is asleep in its read (the look is what is tested; this waits for its subject).
        let deadline = Instant::now() + Duration::from_secs(10);
        let seen = loop {
            let seen = describe_thread(tid);
            if seen.starts_with("S ") || Instant::now() > deadline {
                break seen;
            }
            std::thread::yield_now();
        };
        // SAFETY: writes one byte to the pipe opened above, ending the read.
        assert_eq!(unsafe { libc::write(fds[1], b"x".as_ptr().cast(), 1) }, 1);
        assert_eq!(reader.join().unwrap(), 1);
        // SAFETY: both descriptors were opened above and are not used after.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
        assert!(seen.starts_with("S in read (0), wchan "), "{seen}");
    }

    #[test]
    fn a_stall_keeps_its_first_look_and_a_later_tick_does_not_take_it() {
        let seen = Seen::default();
        seen.record(40, || "S in futex (202), wchan futex_do_wait".into());
        seen.record(40, || "R in user space, wchan -".into());
        assert_eq!(seen.take(45), None, "another tick's stall");
        seen.record(40, || "S in futex (202), wchan futex_do_wait".into());
        assert_eq!(seen.take(40).as_deref(), Some("S in futex (202), wchan futex_do_wait"));
        assert_eq!(seen.take(40), None, "taken once");
    }

    #[test]
    fn warnings_are_limited_to_one_a_second_and_count_the_rest() {
        let mut probe = LagProbe::new();
        let t0 = Instant::now();
        let lag = 30 * MS;
        assert_eq!(probe.should_log(t0, lag), Some(0));
        assert_eq!(probe.should_log(t0 + 100 * MS, lag), None);
        assert_eq!(probe.should_log(t0 + 900 * MS, lag), None);
        assert_eq!(probe.should_log(t0 + 1000 * MS, lag), Some(2));
        assert_eq!(probe.should_log(t0 + 1500 * MS, lag), None);
        // A stall that makes the shard unhealthy is never held back.
        assert_eq!(probe.should_log(t0 + 1600 * MS, UNHEALTHY), Some(1));
    }
}
