//! A connection's outbound queue: shared frames waiting for the next flush.
//!
//! Pushing a frame moves a `Bytes` (a refcount, no copy). The flush copies everything queued into the
//! connection's reusable write buffer, so the socket sees one write per connection per loop pass (corking).
//! The queue is bounded in bytes: past the bound it reports [`Pushed::Overflow`] and takes nothing more, and
//! the owner closes the connection as a slow consumer.
//!
//! Each frame may carry the time its update was sequenced ([`Outbound::push_stamped`]), passed in by the
//! caller; a flush reports the earliest such stamp among the frames it took ([`Drained::earliest_ingest`]),
//! so the server can record ingest-to-flush latency once per write rather than once per frame.

use std::collections::VecDeque;

use bytes::Bytes;
use tickwire_core::time::Micros;

/// The stamp of a frame that is not a sequenced update (replies, snapshots, conflated frames).
pub const NO_STAMP: Micros = 0;

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued; `was_empty` tells the caller to wake the writer.
    Queued { was_empty: bool },
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
    /// Frames with their ingest stamps ([`NO_STAMP`] for none).
    queue: VecDeque<(Bytes, Micros)>,
    queued_bytes: usize,
    max_bytes: usize,
    overflowed: bool,
}

impl Outbound {
    /// A queue holding at most `max_bytes`, with room for `frames` frames before it grows.
    pub fn new(max_bytes: usize, frames: usize) -> Outbound {
        Outbound { queue: VecDeque::with_capacity(frames), queued_bytes: 0, max_bytes, overflowed: false }
    }

    /// Queues a frame that carries no ingest stamp.
    pub fn push(&mut self, frame: Bytes) -> Pushed {
        self.push_stamped(frame, NO_STAMP)
    }

    /// Queues a frame of an update sequenced at `ingested` (the caller's clock; [`NO_STAMP`] for none).
    pub fn push_stamped(&mut self, frame: Bytes, ingested: Micros) -> Pushed {
        if self.overflowed || self.queued_bytes + frame.len() > self.max_bytes {
            self.overflowed = true;
            return Pushed::Overflow;
        }
        let was_empty = self.queue.is_empty();
        self.queued_bytes += frame.len();
        self.queue.push_back((frame, ingested));
        Pushed::Queued { was_empty }
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
        let (frame, stamp) = self.queue.pop_front()?;
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
        while let Some((front, stamp)) = self.queue.front() {
            if out.frames > 0 && buf.len() + front.len() > max {
                break;
            }
            buf.extend_from_slice(front);
            self.queued_bytes -= front.len();
            if *stamp != NO_STAMP && out.earliest_ingest.is_none_or(|e| *stamp < e) {
                out.earliest_ingest = Some(*stamp);
            }
            self.queue.pop_front();
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
        q.push_stamped(Bytes::from_static(b"ab"), 7);
        assert_eq!(q.pop_alone(), Some((Bytes::from_static(b"ab"), Some(7))));
        assert_eq!((q.queued_bytes(), q.pop_alone()), (0, None));
        q.push(Bytes::from_static(b"a"));
        q.push(Bytes::from_static(b"b"));
        assert_eq!(q.pop_alone(), None, "two frames are corked into one write instead");
    }

    #[test]
    fn corks_frames_into_one_buffer() {
        let mut q = Outbound::new(1 << 20, 8);
        assert_eq!(q.push(Bytes::from_static(b"ab")), Pushed::Queued { was_empty: true });
        assert_eq!(q.push(Bytes::from_static(b"cd")), Pushed::Queued { was_empty: false });
        q.push(Bytes::from_static(b"ef"));
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
        q.push(Bytes::from_static(b"welcome"));
        q.push_stamped(Bytes::from_static(b"u1"), 300);
        q.push_stamped(Bytes::from_static(b"u2"), 200);
        q.push_stamped(Bytes::from_static(b"u3"), 100);
        let mut buf = Vec::new();
        let d = q.drain(&mut buf, 11);
        assert_eq!(d, Drained { frames: 3, earliest_ingest: Some(200) });
        buf.clear();
        assert_eq!(q.drain(&mut buf, 11), Drained { frames: 1, earliest_ingest: Some(100) });
        q.push(Bytes::from_static(b"pong"));
        assert_eq!(q.drain(&mut buf, 11), Drained { frames: 1, earliest_ingest: None }, "unstamped frames");
        assert_eq!(q.drain(&mut buf, 11), Drained::default());
    }

    #[test]
    fn byte_bound_overflows_once_and_for_all() {
        let mut q = Outbound::new(5, 8);
        q.push(Bytes::from_static(b"abc"));
        assert_eq!(q.push(Bytes::from_static(b"def")), Pushed::Overflow);
        assert_eq!(q.push(Bytes::from_static(b"g")), Pushed::Overflow);
        assert!(q.overflowed());
        assert_eq!(q.len(), 1);
    }
}
