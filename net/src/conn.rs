//! A WebSocket connection as its shard holds it: the engine's [`Connection`] (the rules) and what the
//! driver needs to serve it: the socket for inline sends, the write half of its stream, the wakeup of its
//! reader. Its reader task is in [`crate::session`]; a writer task exists only while frames wait for a
//! socket that did not take them at once ([`Conn::flush`]).

use std::cell::{Cell, RefCell};
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use futures_lite::io::{AsyncWrite, AsyncWriteExt};
use tickwire_core::protocol::{DialectId, ErrorCode};
use tickwire_core::time::Micros;
use tickwire_core::ws::close;
use tickwire_core::Topic;
use tickwire_fanout::engine::{Connection, Queued};
use tickwire_fanout::index::Sink;
use tickwire_fanout::outbound::{KEEP, NO_STAMP};

use crate::state::Shared;
use crate::util::{now_micros, LocalNotify};

/// A connection on its shard: the engine's [`Connection`] and what the driver needs to serve it, shared by
/// its tasks and the subscription index.
#[derive(Debug)]
pub struct Conn {
    /// Shard-local key.
    pub key: u64,
    /// The client's own id (`?client_id=`), if it named itself: only then are its subscriptions kept for
    /// restore. Otherwise the server's id for it is made from the shard and key when needed
    /// ([`Conn::client_id`]), not kept by every connection.
    pub named: Option<Box<str>>,
    pub(crate) engine: RefCell<Connection>,
    /// The write half of the connection's stream, while no flush (nor the session's end) holds it.
    pub(crate) writer: WriterSlot,
    /// Wakes the session's task: its reader when the connection is closing, its end when a flush handed the
    /// write half back. The waiter checks which.
    pub(crate) notify: LocalNotify,
    /// Tells a running flush to give up (the session is ending and waited long enough).
    pub(crate) abort: LocalNotify,
    /// The plain TCP socket, for sending a frame at once when nothing waits ([`Conn::send_update`]);
    /// `None` for streams that must go through their writer (TLS), and once the session ends.
    pub(crate) fd: Cell<Option<RawFd>>,
    /// Frames queued now wait to go together ([`Conn::corked`]).
    pub(crate) corked: Cell<bool>,
    /// The write half is gone: the socket failed, or the session ended.
    pub(crate) writer_gone: Cell<bool>,
    /// The dialect its client speaks (a publisher's: the canonical one).
    pub(crate) dialect: DialectId,
    /// The window bits of the deflated frames this client takes (permessage-deflate), 0 for none.
    pub(crate) deflate_bits: u8,
    pub(crate) shared: Arc<Shared>,
    pub(crate) shard: usize,
}

impl Conn {
    /// The client's id: its own (`?client_id=`), or a UUID made from the server's epoch, the shard and the
    /// connection's key ([`client_uuid`]): unique in the run, and never stored.
    pub fn client_id(&self) -> std::borrow::Cow<'_, str> {
        match &self.named {
            Some(id) => std::borrow::Cow::Borrowed(id),
            None => std::borrow::Cow::Owned(client_uuid(&self.shared.epoch, self.shard, self.key)),
        }
    }

    /// Runs `f` on the engine, then sends what it queued at once when the writer is idle (one
    /// non-blocking `send`, [`Conn::send_now`]), and wakes the writer if frames still wait and the reader if
    /// the connection is closing. Corked ([`Conn::corked`]), it leaves queued frames for the uncorking.
    pub(crate) fn with<T>(self: &Rc<Self>, f: impl FnOnce(&mut Connection) -> T) -> T {
        self.with_head([&[]; 3], f)
    }

    /// [`Conn::with`], and `head` (bytes that no frame may precede: a new connection's 101 answer, in
    /// parts) goes out first in the same `send`. A head needs the plain socket and an uncorked connection:
    /// only the session's first send has one.
    pub(crate) fn with_head<T>(self: &Rc<Self>, head: [&[u8]; 3], f: impl FnOnce(&mut Connection) -> T) -> T {
        let mut engine = self.engine.borrow_mut();
        let out = f(&mut engine);
        let corked = self.corked.get();
        debug_assert!(head.iter().all(|h| h.is_empty()) || (self.fd.get().is_some() && !corked));
        if let Some(fd) = self.fd.get().filter(|_| !corked) {
            self.send_now(fd, &mut engine, head);
        }
        let (closing, queued) = (engine.is_closing(), engine.queued().1);
        drop(engine);
        if queued > 0 && !corked {
            self.flush();
        }
        if closing {
            self.notify.notify();
        }
        out
    }

    /// Runs `f` with the connection corked: the frames queued meanwhile (a request's replies, a
    /// subscription's snapshot or replay) wait, and then go to the socket together in one `send`, not one
    /// each (a resuming client's replay of n updates is one system call, and one TCP segment, not n).
    pub(crate) fn corked<T>(self: &Rc<Self>, f: impl FnOnce() -> T) -> T {
        let was = self.corked.replace(true);
        let out = f();
        self.corked.set(was);
        if !was {
            self.with(|_| ());
        }
        out
    }

    /// Sends `head` and what is queued (at most [`INLINE_MAX`] bytes) at once with one non-blocking
    /// `sendmsg`, when the writer holds nothing: a lone frame as it is, several copied into one buffer. No
    /// flush task is started for it. What the socket does not take stays queued for a flush, first (the
    /// rest of a head with it, counted as one frame once written).
    fn send_now(&self, fd: RawFd, engine: &mut Connection, head: [&[u8]; 3]) {
        let head_len: usize = head.iter().map(|h| h.len()).sum();
        if (engine.queued().1 == 0 && head_len == 0) || engine.is_writing() || engine.is_closing() {
            return;
        }
        let mut buf = Vec::new();
        let (alone, drained) = engine.take_for_write(&mut buf, INLINE_MAX).unwrap_or_default();
        let data = alone.unwrap_or_else(|| Bytes::from(buf));
        let parts = [head[0], head[1], head[2], &data[..]];
        let rest = |n: usize| if head_len == 0 { data.slice(n..) } else { Bytes::from(parts.concat()).slice(n..) };
        match send_parts_now(fd, &parts) {
            Ok(n) if n == head_len + data.len() => {
                if drained.frames > 0 {
                    engine.written(drained.frames, n - head_len);
                    self.flush_timed(drained.earliest_ingest);
                }
            }
            Ok(n) => engine.unwritten(rest(n), drained.earliest_ingest, n.saturating_sub(head_len)),
            Err(e) => {
                engine.unwritten(rest(0), drained.earliest_ingest, 0);
                if e.kind() != std::io::ErrorKind::WouldBlock {
                    // The connection is gone; the reader will see it too.
                    engine.request_close(close::NORMAL, "");
                }
            }
        }
    }

    /// Records the ingest-to-flush latency of a write whose earliest update was sequenced at `ingested`.
    fn flush_timed(&self, ingested: Option<Micros>) {
        if let Some(ingested) = ingested {
            let stats = &self.shared.stats[self.shard];
            stats.flush_latency.record(now_micros().saturating_sub(ingested).max(0) as u64);
        }
    }

    /// Queues a frame that is never conflated (replies, snapshots, pings).
    pub fn send(self: &Rc<Self>, frame: Bytes) {
        self.send_update(frame, NO_STAMP, KEEP);
    }

    /// Queues a frame of a topic that may be conflated under key `conflate` when the client falls behind,
    /// sequenced at `ingested` (so that its flush can be timed).
    ///
    /// When nothing waits to be written (the queue is empty and the writer idle, which is nearly always the
    /// case for a client that keeps up), the frame is sent at once with one non-blocking `send`: no queueing,
    /// no writer wakeup. Whatever the socket does not take is queued for the writer, in order.
    pub fn send_update(self: &Rc<Self>, frame: Bytes, ingested: Micros, conflate: u64) {
        let mut engine = self.engine.borrow_mut();
        let corked = self.corked.get();
        if let Some(fd) = self.fd.get().filter(|_| !corked && engine.can_send_now()) {
            match send_now(fd, &frame) {
                Ok(n) => {
                    let wake = engine.sent_at_once(&frame, n, ingested);
                    drop(engine);
                    if n == frame.len() && ingested != NO_STAMP {
                        self.flush_timed(Some(ingested));
                    }
                    if wake {
                        self.flush();
                    }
                    return;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    // The connection is gone; the reader will see it too.
                    drop(engine);
                    return self.request_close(close::NORMAL, "");
                }
            }
        }
        // The time the client fell behind, should this push conflate: an update's ingest time is close
        // enough, and spares a clock read per delivery.
        let now = if ingested != NO_STAMP { ingested } else { now_micros() };
        match engine.push(now, frame, ingested, conflate) {
            Queued::Behind => {}
            // Corked: the uncorking sends it, or wakes the writer.
            Queued::Wake if corked => {}
            Queued::Wake => {
                drop(engine);
                self.flush();
            }
            Queued::Dropped => {
                drop(engine);
                self.flush();
                self.notify.notify();
            }
        }
    }

    /// Shutdown: a `system` notice with a reconnect hint, then close 1001 after what is queued.
    pub fn shutdown(self: &Rc<Self>, retry_after_ms: u64) {
        self.with(|c| c.shutdown(now_micros(), retry_after_ms));
    }

    /// Bytes and frames waiting in the outbound queue.
    pub fn queued(&self) -> (usize, usize) {
        self.engine.borrow().queued()
    }

    /// The user of the connection's token, if it had one.
    pub fn user(&self) -> Option<std::sync::Arc<str>> {
        self.engine.borrow().user().cloned()
    }

    /// Whether the connection subscribes `topic`.
    pub fn subscribes(&self, topic: &Topic) -> bool {
        self.engine.borrow().subscribes(topic)
    }

    /// Asks the writer to flush what is queued, send a close frame and stop. The first request wins.
    pub fn request_close(self: &Rc<Self>, code: u16, reason: &'static str) {
        self.with(|c| c.request_close(code, reason));
    }

    /// The heartbeat's visit (see [`Connection::heartbeat`]).
    pub fn heartbeat(self: &Rc<Self>, now: Micros, ping: &Bytes) {
        self.with(|c| c.heartbeat(now, ping));
    }

    /// Closes the connection if it stayed behind past the grace (see [`Connection::check_slow`]).
    pub fn check_slow(self: &Rc<Self>, now: Micros) {
        self.with(|c| c.check_slow(now));
    }

    /// Every subscription, forgotten (the connection is ending).
    pub fn take_subscriptions(&self) -> Vec<Topic> {
        self.engine.borrow_mut().take_subscriptions()
    }

    pub(crate) fn error(self: &Rc<Self>, id: Option<&str>, code: ErrorCode, message: &str) {
        self.with(|c| c.error(now_micros(), id, code, message));
    }
}

/// The write half of a connection's stream.
pub(crate) type WriteHalf = Box<dyn AsyncWrite + Unpin>;

/// A connection's write half, while no flush holds it.
pub(crate) struct WriterSlot(Cell<Option<WriteHalf>>);

impl WriterSlot {
    pub(crate) fn new(w: WriteHalf) -> WriterSlot {
        WriterSlot(Cell::new(Some(w)))
    }
}

impl std::fmt::Debug for WriterSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriterSlot")
    }
}

impl Conn {
    /// Starts a flush task if frames wait and none runs: it writes what is queued (one write per batch),
    /// hands the write half back and ends. A connection that keeps up has no writer task at all (its frames
    /// go out inline, [`Conn::send_update`]); one whose socket pushed back has one until it caught up.
    pub(crate) fn flush(self: &Rc<Self>) {
        // Not there: a flush runs, or the session's end holds it, or it is gone.
        let Some(mut w) = self.writer.0.take() else { return };
        let me = self.clone();
        glommio::spawn_local(async move {
            let ok = futures_lite::future::or(me.write_queued(&mut w), async {
                me.abort.wait().await;
                false
            })
            .await;
            // The wait for an abort left this task's waker behind; it would keep the task's memory.
            me.abort.forget();
            if !ok {
                me.writer_gone.set(true);
            } else if !me.writer_gone.get() {
                me.writer.0.set(Some(w));
            }
            me.notify.notify();
            if !ok {
                // The socket failed (or the end gave up on it); the reader will see it too.
                me.request_close(close::NORMAL, "");
            }
        })
        .detach();
    }

    /// The write half, taken for the session's end: waits for a running flush to hand it back. `None` once
    /// it is gone.
    pub(crate) async fn take_writer(&self) -> Option<WriteHalf> {
        loop {
            if let Some(w) = self.writer.0.take() {
                return Some(w);
            }
            if self.writer_gone.get() {
                return None;
            }
            self.notify.wait().await;
        }
    }

    /// The session ended: a flush stuck on a peer that does not read gives up, and the write half goes.
    pub(crate) fn drop_writer(&self) {
        self.writer_gone.set(true);
        self.abort.notify();
        drop(self.writer.0.take());
    }

    /// Writes what is queued until nothing is: one write per batch of frames (corking), one ingest-to-flush
    /// latency sample per batch, that of its earliest update. `false` when the socket failed.
    pub(crate) async fn write_queued(&self, w: &mut WriteHalf) -> bool {
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let taken = self.engine.borrow_mut().take_for_write(&mut buf, MAX_WRITE);
            let Some((alone, drained)) = taken else { return true };
            let bytes = alone.as_ref().map_or(buf.len(), |f| f.len());
            let written = match &alone {
                Some(frame) => w.write_all(frame).await,
                None => w.write_all(&buf).await,
            };
            if written.is_err() {
                return false;
            }
            self.engine.borrow_mut().written(drained.frames, bytes);
            self.flush_timed(drained.earliest_ingest);
        }
    }
}

/// Largest write a flush hands the socket at once.
const MAX_WRITE: usize = 256 * 1024;

/// The most a corked connection's frames hand the socket in one inline `send`; more waits for the writer.
const INLINE_MAX: usize = 64 * 1024;

/// The subscription index's handle on a connection.
#[derive(Debug, Clone)]
pub struct ConnRef(pub Rc<Conn>);

impl Sink for ConnRef {
    fn key(&self) -> u64 {
        self.0.key
    }

    fn dialect(&self) -> DialectId {
        self.0.dialect
    }

    fn deflate_bits(&self) -> u8 {
        self.0.deflate_bits
    }

    fn push(&self, frame: &Bytes, ingested: Micros, conflate: u64) {
        self.0.send_update(frame.clone(), ingested, conflate);
    }

    fn push_all(&self, frames: &[Bytes]) {
        self.0.corked(|| frames.iter().for_each(|f| self.0.send(f.clone())));
    }

    fn push_window(&self, pieces: &[Bytes], now: Micros) {
        self.0.with(|c| c.window(now, pieces));
    }
}

/// One non-blocking `sendmsg` of `parts`, in order, on a connected TCP socket: the bytes the kernel took.
fn send_parts_now<const N: usize>(fd: RawFd, parts: &[&[u8]; N]) -> std::io::Result<usize> {
    let iov: [libc::iovec; N] = std::array::from_fn(|i| libc::iovec {
        iov_base: parts[i].as_ptr() as *mut libc::c_void,
        iov_len: parts[i].len(),
    });
    // SAFETY: an all-zero msghdr is valid (no address, no control data); its iovecs point into `parts`,
    // live buffers that the kernel only reads, and `iov` outlives the call.
    let n = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = iov.len();
        libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
    };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// One non-blocking `send` of `data` on a connected TCP socket: the bytes the kernel took.
fn send_now(fd: RawFd, data: &[u8]) -> std::io::Result<usize> {
    // SAFETY: `fd` is the session's open socket (cleared before the session drops its stream), and
    // `data` is a live buffer of `data.len()` bytes that the kernel only reads.
    let n = unsafe { libc::send(fd, data.as_ptr().cast(), data.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// A UUID (RFC 9562 version 8, the layout of our choosing) for the connection `key` of `shard`: the high
/// half from the epoch, which names the run; the low half the shard (below 64) and the key (48 bits of
/// it, which a shard never exhausts). Distinct connections of a run get distinct ids.
pub fn client_uuid(epoch: &str, shard: usize, key: u64) -> String {
    let mut high: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in epoch.as_bytes() {
        high ^= u64::from(b);
        high = high.wrapping_mul(0x0100_0000_01b3);
    }
    let high = (high & !0xf000) | 0x8000; // version 8
    let low = ((shard as u64 & 0x3f) << 48) | (key & 0xffff_ffff_ffff) | (0b10 << 62); // variant 10
    let bits = (u128::from(high) << 64) | u128::from(low);
    let mut id = String::with_capacity(36);
    for i in 0..32 {
        if matches!(i, 8 | 12 | 16 | 20) {
            id.push('-');
        }
        let nibble = (bits >> (124 - 4 * i)) as u32 & 0xf;
        id.push(char::from_digit(nibble, 16).unwrap_or('0'));
    }
    id
}

#[cfg(test)]
mod tests {
    use super::client_uuid;

    #[test]
    fn made_client_ids_are_uuids_distinct_per_connection() {
        let id = client_uuid("ep-1", 3, 42);
        let groups: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{id}");
        assert!(id.chars().all(|c| c == '-' || c.is_ascii_hexdigit()), "{id}");
        assert_eq!(&id[14..15], "8", "version 8: {id}");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "variant 10: {id}");
        let ids: std::collections::HashSet<String> =
            (0..64).flat_map(|shard| (0..100).map(move |key| client_uuid("ep-1", shard, key))).collect();
        assert_eq!(ids.len(), 6400);
        assert_ne!(client_uuid("ep-2", 3, 42), id, "another run, another id");
    }
}
