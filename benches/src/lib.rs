//! # tickwire-benches
//!
//! Criterion benchmarks of the hot path live in `benches/` (`cargo bench` at the root runs them all); this
//! library holds their shared fixtures, so each bench file stays a few lines of setup and one measured loop:
//!
//! - [`quote`] and [`quote_update`]: the payload and the update of one `quotes` frame.
//! - [`client_frame`]: a masked client frame, as a browser or a client library sends it.
//! - [`Conn`] and [`subscribed`]: connections with a real [`Outbound`] queue each, subscribed and live on a
//!   topic of a [`SubscriptionIndex`], the same calls a shard makes.
//! - [`drain`]: the flush of every connection, which keeps the bounded queues from overflowing between
//!   iterations.
//!
//! Sizes follow the server's defaults (4 MiB queue bound, 64 frames, 16 KiB write buffer, 256 KiB writes).

use std::cell::RefCell;
use std::rc::Rc;

use bytes::Bytes;
use tickwire_core::event::Quote;
use tickwire_core::protocol::canonical::Canonical;
use tickwire_core::protocol::{Update, UpdateKind};
use tickwire_core::time::Micros;
use tickwire_core::{Channel, Topic};
use tickwire_fanout::frame::update_frame;
use tickwire_fanout::index::{Sink, SubscriptionIndex};
use tickwire_fanout::outbound::Outbound;

/// A connection's outbound byte bound (the server's default `max_queued_bytes`).
pub const MAX_QUEUED_BYTES: usize = 4 << 20;
/// Frames a connection's queue holds before it grows.
pub const QUEUE_FRAMES: usize = 64;
/// Initial capacity of a connection's write buffer.
pub const WRITE_BUF: usize = 16 * 1024;
/// Most bytes one write takes from a queue.
pub const MAX_WRITE: usize = 256 * 1024;
/// A fixed ingest time (2026-02-07T14:30:00.120Z), so every frame has the same length.
pub const NOW: Micros = 1_770_474_600_120_000;

/// A typical quote.
pub fn quote() -> Quote<'static> {
    Quote { symbol: "AAPL", bid: 185.5, ask: 185.52, last: 185.51, bid_size: 300, ask_size: 200, volume: 45_000_000 }
}

/// The update of a `quotes` topic carrying `data` (raw JSON).
pub fn quote_update(data: &[u8], sequence: u64) -> Update<'_> {
    Update {
        kind: UpdateKind::Update,
        channel: Channel::Quotes,
        sequence,
        timestamp: NOW,
        source_ts: None,
        data,
        day: None,
        key: "AAPL",
    }
}

/// A whole canonical quote frame, header included, as fanout shares it.
pub fn quote_frame() -> Bytes {
    let data =
        br#"{"symbol":"AAPL","bid":185.5,"ask":185.52,"last":185.51,"bid_size":300,"ask_size":200,"volume":45000000}"#;
    update_frame(&Canonical, &quote_update(data, 1042))
}

/// A final client frame of `opcode` carrying `payload`, masked with `mask` (RFC 6455 5.3).
pub fn client_frame(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    tickwire_core::ws::write_client_frame(&mut out, true, opcode, payload, mask);
    out
}

/// A connection as the index sees it: its key and its outbound queue.
#[derive(Debug, Clone)]
pub struct Conn {
    pub key: u64,
    pub out: Rc<RefCell<Outbound>>,
}

impl Conn {
    /// A connection with an empty queue of the server's default size.
    pub fn new(key: u64) -> Conn {
        Conn { key, out: Rc::new(RefCell::new(Outbound::new(MAX_QUEUED_BYTES, QUEUE_FRAMES))) }
    }
}

impl Sink for Conn {
    fn key(&self) -> u64 {
        self.key
    }

    fn push(&self, frame: &Bytes, ingested: Micros, conflate: u64) {
        self.out.borrow_mut().push(frame.clone(), ingested, conflate);
    }
}

/// An index with `n` connections (keys `0..n`) subscribed to `topic` with `throttle_ms`, all live.
pub fn subscribed(topic: &Topic, n: u64, throttle_ms: u32) -> (SubscriptionIndex<Conn>, Vec<Conn>) {
    let mut index = SubscriptionIndex::new();
    let conns: Vec<Conn> = (0..n).map(Conn::new).collect();
    for c in &conns {
        index.add(topic, c.clone(), throttle_ms, 0);
        index.activate(topic, c.key, 0);
    }
    (index, conns)
}

/// One write buffer per connection, as each connection's writer keeps one.
pub fn write_buffers(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|_| Vec::with_capacity(WRITE_BUF)).collect()
}

/// Flushes every connection's queue into its own write buffer, as the writers do; returns the frames moved.
pub fn drain(conns: &[Conn], bufs: &mut [Vec<u8>]) -> usize {
    let mut frames = 0;
    for (c, buf) in conns.iter().zip(bufs) {
        let mut out = c.out.borrow_mut();
        while !out.is_empty() {
            buf.clear();
            frames += out.drain_into(buf, MAX_WRITE);
        }
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use tickwire_core::ws::{Message, MessageReader};
    use tickwire_fanout::frame::payload;
    use tickwire_fanout::outbound::NO_STAMP;

    #[test]
    fn client_frames_read_back() {
        for len in [5usize, 300, 70_000] {
            let text = "x".repeat(len);
            let mut buf = BytesMut::from(&client_frame(1, text.as_bytes(), [7, 1, 2, 9])[..]);
            let got = MessageReader::new(1 << 20).read(&mut buf).unwrap();
            assert_eq!(got, Some(Message::Text(Bytes::from(text))));
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn quote_frame_is_a_quote_update() {
        let frame = quote_frame();
        assert_eq!(frame[0], 0x81);
        let body = std::str::from_utf8(payload(&frame)).unwrap();
        assert!(body.starts_with(r#"{"type":"quote","channel":"quotes","sequence":1042,"#), "{body}");
        assert!(body.ends_with(r#""volume":45000000}}"#), "{body}");
    }

    #[test]
    fn subscribed_connections_get_and_flush_frames() {
        let topic = Topic::new(Channel::Quotes, "AAPL");
        let (mut index, conns) = subscribed(&topic, 3, 0);
        let frame = tickwire_fanout::frame::Rendered::canonical(quote_frame());
        assert_eq!(index.deliver(&topic, &frame, NO_STAMP, NOW).0, 3);
        assert_eq!(index.deliver(&topic, &frame, NO_STAMP, NOW).0, 3);
        let mut bufs = write_buffers(conns.len());
        assert_eq!(drain(&conns, &mut bufs), 6);
        assert!(conns.iter().all(|c| c.out.borrow().is_empty()));
        assert_eq!(bufs[2].len(), 2 * quote_frame().len());
    }
}
