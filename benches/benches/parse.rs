//! Parsing a client's subscribe request: a masked WebSocket text frame through `MessageReader` (header,
//! unmask, UTF-8 check), then `Canonical.decode`; also the decode alone, to show which half dominates.
//! This is the per-request cost on the connection's shard.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use tickwire_benches::client_frame;
use tickwire_core::protocol::canonical::Canonical;
use tickwire_core::protocol::{ClientRequest, Dialect};
use tickwire_core::ws::{Message, MessageReader};

const REQUEST: &[u8] =
    br#"{"action":"subscribe","channel":"quotes","symbols":["AAPL","MSFT","NVDA"],"throttle_ms":0,"id":"r1"}"#;

fn parse(c: &mut Criterion) {
    let wire = client_frame(0x1, REQUEST, [0x37, 0xfa, 0x21, 0x3d]);
    let mut reader = MessageReader::new(64 * 1024);
    let mut group = c.benchmark_group("parse_subscribe");
    // The read consumes its buffer: each iteration gets a fresh copy of the frame, made outside the timing.
    group.bench_function("frame_and_decode", |b| {
        b.iter_batched(
            || BytesMut::from(&wire[..]),
            |mut buf| {
                let Ok(Some(Message::Text(text))) = reader.read(&mut buf) else { panic!("a whole text frame") };
                Canonical.decode(&text)
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("decode_only", |b| b.iter(|| Canonical.decode(black_box(REQUEST))));
    group.finish();
    assert!(matches!(Canonical.decode(REQUEST), Ok(ClientRequest::Subscribe(_))));
}

criterion_group!(benches, parse);
criterion_main!(benches);
