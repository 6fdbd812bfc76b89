//! A connection's outbound queue: shared frames waiting for the next flush.
//!
//! Pushing a frame moves a `Bytes` (a refcount, no copy). The flush copies everything queued into the
//! connection's reusable write buffer, so the socket sees one write per connection per loop pass (corking).
//! The queue is bounded in bytes. A push past the bound first *conflates*: frames of public topics (those
//! pushed with a nonzero conflation key) are dropped but for the latest of each topic, the new frame
//! superseding any queued one of its topic ([`Pushed::Conflated`]); a client that is behind then sees each
//! topic's latest state rather than every step. Only if that leaves the queue above half its bound (so a
//! client cannot make us conflate on every push) does it report [`Pushed::Overflow`] and take nothing more,
//! and the owner closes the connection as a slow consumer.
//!
//! Each frame may carry the time its update was sequenced ([`Outbound::push`]), passed in by the
//! caller; a flush reports the earliest such stamp among the frames it took ([`Drained::earliest_ingest`]),
//! so the server can record ingest-to-flush latency once per write rather than once per frame.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use tickwire_core::time::Micros;

/// The stamp of a frame that is not a sequenced update (replies, snapshots, conflated frames).
pub const NO_STAMP: Micros = 0;

/// The conflation key of frames that are never conflated away (replies, private and critical topics).
pub const KEEP: u64 = 0;

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued; `was_empty` tells the caller to wake the writer.
    Queued { was_empty: bool },
    /// Over the bound: older frames of public topics were dropped to make room, then this one was queued.
    Conflated { dropped: usize },
    /// Over the byte bound: the frame was not queued, and no frame will be.
    Overflow,
}

/// What a flush took from the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Drained {
    /// Frames moved into the write buffer.
    pub frames: usize,
    /// The earliest ingest stamp among them, if any was stamped.
    pub earliest_ingest: Option<Micros>,
}

/// See the module docs.
#[derive(Debug)]
pub struct Outbound {
    /// Frames with their ingest stamps ([`NO_STAMP`] for none) and conflation keys ([`KEEP`] for none).
    queue: VecDeque<(Bytes, Micros, u64)>,
    queued_bytes: usize,
    max_bytes: usize,
    overflowed: bool,
    /// The head of the queue is the rest of a frame whose start was written: it must go, whole.
    partial_head: bool,
}

impl Outbound {
    /// A queue holding at most `max_bytes`, with room for `frames` frames before it grows.
    pub fn new(max_bytes: usize, frames: usize) -> Outbound {
        Outbound {
            queue: VecDeque::with_capacity(frames),
            queued_bytes: 0,
            max_bytes,
            overflowed: false,
            partial_head: false,
        }
    }

    /// Queues a frame: of an update sequenced at `ingested` (the caller's clock; [`NO_STAMP`] for none), of
    /// a topic whose frames may be conflated under key `conflate` ([`KEEP`]: never, as for replies).
    pub fn push(&mut self, frame: Bytes, ingested: Micros, conflate: u64) -> Pushed {
        if self.overflowed {
            return Pushed::Overflow;
        }
        if self.queued_bytes + frame.len() > self.max_bytes {
            let dropped = self.conflate(conflate);
            if self.queued_bytes + frame.len() > self.max_bytes / 2 {
                self.overflowed = true;
                return Pushed::Overflow;
            }
            self.queued_bytes += frame.len();
            self.queue.push_back((frame, ingested, conflate));
            return Pushed::Conflated { dropped };
        }
        let was_empty = self.queue.is_empty();
        self.queued_bytes += frame.len();
        self.queue.push_back((frame, ingested, conflate));
        Pushed::Queued { was_empty }
    }

    /// Drops every queued frame of a conflatable topic but its latest, and all of `superseded`'s (a new
    /// frame of that topic is about to be queued); returns how many frames went.
    fn conflate(&mut self, superseded: u64) -> usize {
        let mut last: HashMap<u64, usize> = HashMap::new();
        for (i, (_, _, key)) in self.queue.iter().enumerate() {
            if *key != KEEP {
                last.insert(*key, i);
            }
        }
        let before = self.queue.len();
        let mut i = 0;
        let mut freed = 0;
        self.queue.retain(|(frame, _, key)| {
            let keep = *key == KEEP || (*key != superseded && last.get(key) == Some(&i));
            i += 1;
            if !keep {
                freed += frame.len();
            }
            keep
        });
        self.queued_bytes -= freed;
        before - self.queue.len()
    }

    /// Puts the unsent rest of a frame at the head of the queue (its start was written already, so it must
    /// go first and whole); it is never conflated.
    pub fn push_front_partial(&mut self, rest: Bytes, ingested: Micros) {
        self.queued_bytes += rest.len();
        self.queue.push_front((rest, ingested, KEEP));
        self.partial_head = true;
    }

    /// Drops everything queued (a slow consumer being closed: only the close frame is still worth sending).
    /// The rest of a partly written frame stays: cutting a frame would corrupt the stream.
    pub fn clear(&mut self) {
        let head = if self.partial_head { self.queue.pop_front() } else { None };
        self.queue.clear();
        self.queued_bytes = 0;
        if let Some(h) = head {
            self.queued_bytes = h.0.len();
            self.queue.push_back(h);
        }
    }

    /// Frees the queue's room once it is empty, so that a connection that is idle again (its replies
    /// written, or its backlog drained) holds none.
    pub fn release(&mut self) {
        if self.queue.is_empty() && self.queue.capacity() > 0 {
            self.queue = VecDeque::new();
        }
    }

    /// Whether the byte bound was crossed.
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Takes the queued frame if it is the only one, with its ingest stamp: a lone frame is written as it
    /// is, shared, with no copy into a write buffer.
    pub fn pop_alone(&mut self) -> Option<(Bytes, Option<Micros>)> {
        if self.queue.len() != 1 {
            return None;
        }
        let (frame, stamp, _) = self.queue.pop_front()?;
        self.partial_head = false;
        self.queued_bytes -= frame.len();
        Some((frame, (stamp != NO_STAMP).then_some(stamp)))
    }

    /// Moves queued frames into `buf` while it stays within `max` bytes (always at least one frame);
    /// returns how many frames moved.
    pub fn drain_into(&mut self, buf: &mut Vec<u8>, max: usize) -> usize {
        self.drain(buf, max).frames
    }

    /// Like [`Outbound::drain_into`], also telling the earliest ingest stamp among the frames moved.
    pub fn drain(&mut self, buf: &mut Vec<u8>, max: usize) -> Drained {
        let mut out = Drained::default();
        while let Some((front, stamp, _)) = self.queue.front() {
            if out.frames > 0 && buf.len() + front.len() > max {
                break;
            }
            buf.extend_from_slice(front);
            self.queued_bytes -= front.len();
            if *stamp != NO_STAMP && out.earliest_ingest.is_none_or(|e| *stamp < e) {
                out.earliest_ingest = Some(*stamp);
            }
            self.queue.pop_front();
            self.partial_head = false;
            out.frames += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_frame_is_taken_as_it_is() {
        let mut q = Outbound::new(1 << 20, 8);
        q.push(Bytes::from_static(b"ab"), 7, KEEP);
        assert_eq!(q.pop_alone(), Some((Bytes::from_static(b"ab"), Some(7))));
        assert_eq!((q.queued_bytes(), q.pop_alone()), (0, None));
        q.push(Bytes::from_static(b"a"), NO_STAMP, KEEP);
        q.push(Bytes::from_static(b"b"), NO_STAMP, KEEP);
        assert_eq!(q.pop_alone(), None, "two frames are corked into one write instead");
    }

    #[test]
    fn corks_frames_into_one_buffer() {
        let mut q = Outbound::new(1 << 20, 8);
        assert_eq!(q.push(Bytes::from_static(b"ab"), NO_STAMP, KEEP), Pushed::Queued { was_empty: true });
        assert_eq!(q.push(Bytes::from_static(b"cd"), NO_STAMP, KEEP), Pushed::Queued { was_empty: false });
        q.push(Bytes::from_static(b"ef"), NO_STAMP, KEEP);
        let mut buf = Vec::new();
        assert_eq!(q.drain_into(&mut buf, 4), 2);
        assert_eq!(buf, b"abcd");
        assert_eq!(q.queued_bytes(), 2);
        assert_eq!(q.drain_into(&mut buf, 4), 1, "at least one frame even past max");
        assert!(q.is_empty());
    }

    #[test]
    fn a_flush_reports_the_earliest_stamp_of_the_frames_it_took() {
        let mut q = Outbound::new(1 << 20, 8);
        q.push(Bytes::from_static(b"welcome"), NO_STAMP, KEEP);
        q.push(Bytes::from_static(b"u1"), 300, KEEP);
        q.push(Bytes::from_static(b"u2"), 200, KEEP);
        q.push(Bytes::from_static(b"u3"), 100, KEEP);
        let mut buf = Vec::new();
        let d = q.drain(&mut buf, 11);
        assert_eq!(d, Drained { frames: 3, earliest_ingest: Some(200) });
        buf.clear();
        assert_eq!(q.drain(&mut buf, 11), Drained { frames: 1, earliest_ingest: Some(100) });
        q.push(Bytes::from_static(b"pong"), NO_STAMP, KEEP);
        assert_eq!(q.drain(&mut buf, 11), Drained { frames: 1, earliest_ingest: None }, "unstamped frames");
        assert_eq!(q.drain(&mut buf, 11), Drained::default());
    }

    #[test]
    fn over_the_bound_public_topics_conflate_to_their_latest_frame() {
        let mut q = Outbound::new(16, 8);
        q.push(Bytes::from_static(b"r1"), NO_STAMP, KEEP);
        q.push(Bytes::from_static(b"a1"), 1, 7);
        q.push(Bytes::from_static(b"b1"), 2, 8);
        q.push(Bytes::from_static(b"a2"), 3, 7);
        q.push(Bytes::from_static(b"o1"), 4, KEEP);
        q.push(Bytes::from_static(b"b2"), 5, 8);
        q.push(Bytes::from_static(b"a3"), 6, 7);
        q.push(Bytes::from_static(b"b3"), 7, 8);
        assert_eq!(q.queued_bytes(), 16);
        // a4 supersedes a1..a3; b1 and b2 go for b3; the reply and the private frame stay.
        assert_eq!(q.push(Bytes::from_static(b"a4"), 8, 7), Pushed::Conflated { dropped: 5 });
        let mut buf = Vec::new();
        q.drain_into(&mut buf, 100);
        assert_eq!(buf, b"r1o1b3a4", "order kept, each topic at its latest");
        assert_eq!(q.queued_bytes(), 0);
    }

    #[test]
    fn still_over_half_the_bound_after_conflating_overflows() {
        let mut q = Outbound::new(8, 8);
        for f in [b"k1", b"k2", b"k3", b"k4"] {
            q.push(Bytes::from_static(f), 1, KEEP);
        }
        assert_eq!(q.push(Bytes::from_static(b"a1"), 1, 7), Pushed::Overflow, "nothing could go");
        assert!(q.overflowed());
    }

    #[test]
    fn the_rest_of_a_partly_written_frame_goes_first_and_survives_a_clear() {
        let mut q = Outbound::new(1 << 20, 8);
        q.push(Bytes::from_static(b"next"), NO_STAMP, KEEP);
        q.push_front_partial(Bytes::from_static(b"st"), 5);
        q.clear();
        assert_eq!((q.len(), q.queued_bytes()), (1, 2), "only the partial rest is kept");
        q.push(Bytes::from_static(b"x"), NO_STAMP, KEEP);
        let mut buf = Vec::new();
        q.drain_into(&mut buf, 100);
        assert_eq!(buf, b"stx");
        q.push(Bytes::from_static(b"y"), NO_STAMP, KEEP);
        q.clear();
        assert!(q.is_empty(), "no partial head any more");
    }

    #[test]
    fn byte_bound_overflows_once_and_for_all() {
        let mut q = Outbound::new(5, 8);
        q.push(Bytes::from_static(b"abc"), NO_STAMP, KEEP);
        assert_eq!(q.push(Bytes::from_static(b"def"), NO_STAMP, KEEP), Pushed::Overflow);
        assert_eq!(q.push(Bytes::from_static(b"g"), NO_STAMP, KEEP), Pushed::Overflow);
        assert!(q.overflowed());
        assert_eq!(q.len(), 1);
    }
}
