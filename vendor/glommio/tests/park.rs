//! Regression tests for tickwire's patch (see tickwire's vendor/README.md): the
//! executor must never park while a task queue is runnable.
//!
//! A preempt timer of 1 ns fires before every pass of the executor loop, so
//! each pass finds `need_preempt()` already true. Unpatched 0.9.0 then reported
//! "nothing ran" and parked in `io_uring_enter` with no timeout while tasks
//! were runnable: both tests below hang there (they fail at their deadline).

use std::{sync::mpsc, thread, time::Duration};

use glommio::{LocalExecutor, LocalExecutorBuilder, Placement};

const DEADLINE: Duration = Duration::from_secs(20);

fn finishes_in_time(what: &str, work: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let worker = thread::spawn(move || {
        work();
        let _ = tx.send(());
    });
    rx.recv_timeout(DEADLINE)
        .unwrap_or_else(|_| panic!("{what}: the executor stopped making progress with runnable work"));
    worker.join().unwrap();
}

fn preempted_before_every_pass() -> LocalExecutor {
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(256 << 10)
        .preempt_timer(Duration::from_nanos(1))
        .make()
        .unwrap()
}

#[test]
fn runnable_work_survives_early_preemption() {
    finishes_in_time("1,000 runs", || {
        let ex = preempted_before_every_pass();
        for _ in 0..1_000 {
            ex.run(async {});
        }
    });
}

#[test]
fn timers_fire_under_early_preemption() {
    finishes_in_time("a timer loop", || {
        let ex = preempted_before_every_pass();
        let fired = ex.run(async {
            let mut fired = 0;
            for _ in 0..200 {
                glommio::timer::sleep(Duration::from_micros(50)).await;
                fired += 1;
            }
            fired
        });
        assert_eq!(fired, 200);
    });
}

#[test]
fn a_task_woken_by_a_timer_runs_while_another_queue_spins() {
    // Two task queues: one yields in a loop (always runnable), the other waits
    // on timers. The waiting one must still be woken and run on time-ish.
    finishes_in_time("timers beside a busy queue", || {
        let ex = preempted_before_every_pass();
        ex.run(async {
            let busy = glommio::executor().create_task_queue(
                glommio::Shares::default(),
                glommio::Latency::NotImportant,
                "busy",
            );
            let stop = std::rc::Rc::new(std::cell::Cell::new(false));
            let spinner = {
                let stop = stop.clone();
                glommio::spawn_local_into(
                    async move {
                        while !stop.get() {
                            glommio::yield_if_needed().await;
                            glommio::executor().yield_task_queue_now().await;
                        }
                    },
                    busy,
                )
                .unwrap()
            };
            for _ in 0..100 {
                glommio::timer::sleep(Duration::from_micros(100)).await;
            }
            stop.set(true);
            spinner.await;
        });
    });
}
