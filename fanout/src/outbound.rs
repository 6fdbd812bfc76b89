//! A connection's outbound queue: shared frames waiting for the next flush.
//!
//! Pushing a frame moves a `Bytes` (a refcount, no copy). The flush copies everything queued into the
//! connection's reusable write buffer, so the socket sees one write per connection per loop pass (corking).
//! The queue is bounded in bytes: past the bound it reports [`Pushed::Overflow`] and takes nothing more, and
//! the owner closes the connection as a slow consumer.

use std::collections::VecDeque;

use bytes::Bytes;

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued; `was_empty` tells the caller to wake the writer.
    Queued { was_empty: bool },
    /// Over the byte bound: the frame was not queued, and no frame will be.
    Overflow,
}

/// See the module docs.
#[derive(Debug)]
pub struct Outbound {
    queue: VecDeque<Bytes>,
    queued_bytes: usize,
    max_bytes: usize,
    overflowed: bool,
}

impl Outbound {
    /// A queue holding at most `max_bytes`, with room for `frames` frames before it grows.
    pub fn new(max_bytes: usize, frames: usize) -> Outbound {
        Outbound { queue: VecDeque::with_capacity(frames), queued_bytes: 0, max_bytes, overflowed: false }
    }

    pub fn push(&mut self, frame: Bytes) -> Pushed {
        if self.overflowed || self.queued_bytes + frame.len() > self.max_bytes {
            self.overflowed = true;
            return Pushed::Overflow;
        }
        let was_empty = self.queue.is_empty();
        self.queued_bytes += frame.len();
        self.queue.push_back(frame);
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

    /// Moves queued frames into `buf` while it stays within `max` bytes (always at least one frame);
    /// returns how many frames moved.
    pub fn drain_into(&mut self, buf: &mut Vec<u8>, max: usize) -> usize {
        let mut n = 0;
        while let Some(front) = self.queue.front() {
            if n > 0 && buf.len() + front.len() > max {
                break;
            }
            buf.extend_from_slice(front);
            self.queued_bytes -= front.len();
            self.queue.pop_front();
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn byte_bound_overflows_once_and_for_all() {
        let mut q = Outbound::new(5, 8);
        q.push(Bytes::from_static(b"abc"));
        assert_eq!(q.push(Bytes::from_static(b"def")), Pushed::Overflow);
        assert_eq!(q.push(Bytes::from_static(b"g")), Pushed::Overflow);
        assert!(q.overflowed());
        assert_eq!(q.len(), 1);
    }
}
