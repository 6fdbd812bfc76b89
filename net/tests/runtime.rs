//! The runtime under the shards never parks while it has work to run.
//!
//! glommio 0.9.0 parked an executor in `io_uring_enter`, with no timeout, when its preempt timer had already
//! fired before it ran its task queues: the queues still held runnable tasks, but nothing was left to wake
//! the thread (vendor/README.md). tickwire carries a patched copy; these tests pin the fix. A preempt timer
//! of 1 ns makes the timer fire before every pass, so each pass takes the path that hung. On unpatched
//! 0.9.0 both tests fail at their deadline (the executor thread is left parked; the test process still
//! ends).

use std::sync::mpsc;
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};

/// Far beyond what the work takes (milliseconds), short enough to fail a hung run promptly.
const DEADLINE: Duration = Duration::from_secs(20);

/// Runs `work` on a thread of its own and fails the test if it does not finish by [`DEADLINE`].
fn finishes_in_time(what: &str, work: impl FnOnce() + Send + 'static) {
    let (done_tx, done_rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        work();
        let _ = done_tx.send(());
    });
    match done_rx.recv_timeout(DEADLINE) {
        Ok(()) => worker.join().expect("the executor thread panicked"),
        Err(_) => panic!("{what}: no progress within {DEADLINE:?}; the executor parked with runnable work"),
    }
}

fn executor_preempted_every_pass() -> glommio::LocalExecutor {
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(256 * 1024)
        .preempt_timer(Duration::from_nanos(1))
        .make()
        .expect("an executor starts (io_uring and the locked-memory limit allow it)")
}

#[test]
fn a_thousand_runs_complete_when_the_preempt_timer_fires_before_each_pass() {
    finishes_in_time("1,000 empty runs", || {
        let ex = executor_preempted_every_pass();
        for _ in 0..1_000 {
            ex.run(async {});
        }
    });
}

#[test]
fn timers_and_spawned_tasks_complete_when_the_preempt_timer_fires_before_each_pass() {
    finishes_in_time("a timer loop beside spawned tasks", || {
        let ex = executor_preempted_every_pass();
        let (fired, spawned) = ex.run(async {
            let mut fired = 0u32;
            let mut spawned = 0u32;
            for i in 0..200u32 {
                glommio::timer::sleep(Duration::from_micros(50)).await;
                fired += 1;
                spawned += glommio::spawn_local(async move { i % 2 }).await;
            }
            (fired, spawned)
        });
        assert_eq!((fired, spawned), (200, 100));
    });
}

mod common;

/// A field of `/proc/<pid>/status` or a row of `/proc/<pid>/limits`, as a number.
fn proc_number(pid: u32, file: &str, prefix: &str, field: usize) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap();
    let line = text.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix} in {file}"));
    let value = line[prefix.len()..].split_whitespace().nth(field).unwrap();
    if value == "unlimited" {
        u64::MAX
    } else {
        value.parse().unwrap()
    }
}

#[test]
fn the_descriptor_table_is_grown_before_the_shards_start() {
    // Growing it later, with the shards running, makes an accepting shard wait for an RCU grace period at
    // each doubling (net/src/server.rs, `reserve_descriptors`).
    let server = common::Server::start(&["--no-simulator", "--max-connections", "3000"]);
    let pid = server.child.id();
    let soft_limit = proc_number(pid, "limits", "Max open files", 0);
    let table = proc_number(pid, "status", "FDSize:", 0);
    let wanted = (3000 + 1024).min(soft_limit);
    assert!(table >= wanted, "descriptor table of {table} slots, wanted {wanted} (soft limit {soft_limit})");
}
