//! Wakes shards that overslept.
//!
//! glommio parks an idle shard in `io_uring_enter`, waiting for a completion on its main ring that is linked
//! (by a poll on the ring's fd) to the ring holding its timers. On a loaded machine that wakeup has been seen
//! to go missing: the shard sleeps with timers long due, and connections it owns wait until something else
//! (a signal, a debugger attaching) interrupts the wait. Each shard therefore bumps a tick every
//! [`TICK`]; a watchdog thread checks the ticks every [`CHECK`] and sends a signal (with an empty handler,
//! installed without `SA_RESTART`) to a shard thread whose tick is older than [`LATE`]. The signal ends its
//! wait with `EINTR`, which glommio treats as a spurious wakeup: it runs its due timers and ready tasks and
//! goes back to sleep. A busy shard that is late only because a task runs long gets a harmless signal.
//! Each nudge is counted (`tickwire_shard_wakeups_total`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a shard bumps its tick.
const TICK: Duration = Duration::from_millis(10);
/// How often the watchdog looks.
const CHECK: Duration = Duration::from_millis(10);
/// A tick older than this is late: the shard is asleep past its timers (or busy in one task that long).
const LATE: Duration = Duration::from_millis(50);
/// The signal: ignored by default, so a stray one harms nothing, and used by nothing else here.
const SIGNAL: libc::c_int = libc::SIGURG;

/// One shard's liveness as the watchdog sees it.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Watch {
    /// The shard thread's kernel thread id; 0 while none runs.
    tid: AtomicU64,
    /// Milliseconds since the watchdog's start at the shard's last tick.
    tick_ms: AtomicU64,
    /// Signals sent to wake the shard.
    pub wakeups: AtomicU64,
}

/// The watched shards and the thread that watches them.
#[derive(Debug)]
pub struct Watchdog {
    watches: Box<[Watch]>,
    started: Instant,
    stop: AtomicBool,
}

impl Watchdog {
    pub fn new(shards: usize) -> Arc<Watchdog> {
        Arc::new(Watchdog {
            watches: (0..shards).map(|_| Watch::default()).collect(),
            started: Instant::now(),
            stop: AtomicBool::new(false),
        })
    }

    pub fn watches(&self) -> &[Watch] {
        &self.watches
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Called on the shard's thread: from now on it is watched.
    pub fn enter(&self, shard: usize) {
        let w = &self.watches[shard];
        w.tick_ms.store(self.now_ms(), Ordering::Relaxed);
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        w.tid.store(tid as u64, Ordering::Release);
    }

    /// Called on the shard's thread before it ends: it is no longer watched (nor signalled).
    pub fn leave(&self, shard: usize) {
        self.watches[shard].tid.store(0, Ordering::Release);
    }

    /// The shard's tick, every [`TICK`] from a task on the shard, for as long as the shard runs.
    pub async fn tick(self: Arc<Self>, shard: usize) {
        loop {
            self.watches[shard].tick_ms.store(self.now_ms(), Ordering::Relaxed);
            glommio::timer::sleep(TICK).await;
        }
    }

    /// Starts the watching thread; it ends after [`Watchdog::stop`].
    pub fn spawn(self: &Arc<Self>) -> std::io::Result<std::thread::JoinHandle<()>> {
        install_handler()?;
        let dog = self.clone();
        std::thread::Builder::new().name("shard-watchdog".into()).spawn(move || dog.run())
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    fn run(&self) {
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() };
        while !self.stop.load(Ordering::Relaxed) {
            std::thread::sleep(CHECK);
            let now = self.now_ms();
            for w in self.watches.iter() {
                let tid = w.tid.load(Ordering::Acquire);
                if tid == 0 || now.saturating_sub(w.tick_ms.load(Ordering::Relaxed)) <= LATE.as_millis() as u64 {
                    continue;
                }
                // Counted first: the woken thread may look at once.
                w.wakeups.fetch_add(1, Ordering::Relaxed);
                // SAFETY: tgkill only sends a signal; the thread id belongs to this process (checked by the
                // kernel through `pid`), and the signal's handler does nothing.
                unsafe { libc::syscall(libc::SYS_tgkill, pid, tid as libc::pid_t, SIGNAL) };
            }
        }
    }
}

extern "C" fn on_signal(_: libc::c_int) {}

/// An empty handler for [`SIGNAL`], without `SA_RESTART`, so that a blocked `io_uring_enter` returns.
fn install_handler() -> std::io::Result<()> {
    // SAFETY: a zeroed sigaction is valid; the handler is async-signal-safe (it does nothing).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
        action.sa_flags = 0;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(SIGNAL, &action, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_that_stops_ticking_is_signalled_and_its_blocked_call_interrupted() {
        let dog = Watchdog::new(1);
        let handle = dog.spawn().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let d = dog.clone();
        let sleeper = std::thread::spawn(move || {
            d.enter(0);
            // A blocking wait with nothing to end it but a signal: read on a pipe no one writes.
            let mut fds = [0; 2];
            // SAFETY: fds has room for two descriptors.
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            let mut byte = 0u8;
            // SAFETY: reads at most one byte into `byte`.
            let n = unsafe { libc::read(fds[0], (&mut byte as *mut u8).cast(), 1) };
            let err = std::io::Error::last_os_error();
            d.leave(0);
            // SAFETY: both descriptors were opened above and are not used after.
            unsafe {
                libc::close(fds[0]);
                libc::close(fds[1]);
            }
            tx.send((n, err.raw_os_error())).unwrap();
        });
        let (n, errno) = rx.recv_timeout(Duration::from_secs(5)).expect("the blocked read was interrupted");
        assert_eq!((n, errno), (-1, Some(libc::EINTR)));
        assert!(dog.watches()[0].wakeups.load(Ordering::Relaxed) >= 1);
        sleeper.join().unwrap();
        dog.stop();
        handle.join().unwrap();
    }
}
