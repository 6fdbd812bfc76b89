//! Small shard-local helpers: a wakeup flag for one waiting task, and the clock.

use std::cell::Cell;
use std::future::poll_fn;
use std::task::{Poll, Waker};

use tickwire_core::time::Micros;

/// Wakes one waiting task; a notification that finds no waiter is kept until the next wait.
#[derive(Default)]
pub struct LocalNotify {
    notified: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl std::fmt::Debug for LocalNotify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalNotify").field("notified", &self.notified.get()).finish()
    }
}

impl LocalNotify {
    pub fn notify(&self) {
        self.notified.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Polls for the next notification: ready (and consumed) if one is pending, else `cx` is woken by the
    /// next.
    pub fn poll_wait(&self, cx: &mut std::task::Context<'_>) -> Poll<()> {
        if self.notified.replace(false) {
            Poll::Ready(())
        } else {
            self.waker.set(Some(cx.waker().clone()));
            Poll::Pending
        }
    }

    /// Forgets a pending notification and the waiter's waker (a waker keeps its task's memory alive).
    pub fn forget(&self) {
        self.notified.set(false);
        drop(self.waker.take());
    }

    /// Waits for the next notification (returns at once if one is pending).
    pub async fn wait(&self) {
        poll_fn(|cx| self.poll_wait(cx)).await
    }
}

/// Microseconds since the Unix epoch, from the system clock.
pub fn now_micros() -> Micros {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as Micros)
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    (now_micros() / 1_000_000) as u64
}
