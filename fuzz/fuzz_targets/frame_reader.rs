//! The inbound WebSocket frame reader: bytes arriving in any split give messages or one error with a close
//! code, never a panic, and never a message larger than the limit.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tickwire_core::ws::{Message, MessageReader};

const MAX: usize = 4096;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk size, so frames also arrive split at every boundary.
    let Some((&split, rest)) = data.split_first() else { return };
    let chunk = usize::from(split).max(1);
    let mut reader = MessageReader::new(MAX);
    let mut buf = BytesMut::new();
    for piece in rest.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match reader.read(&mut buf) {
                Ok(Some(msg)) => {
                    let len = match &msg {
                        Message::Text(t) => t.len(),
                        Message::Binary(b) | Message::Ping(b) | Message::Pong(b) => b.len(),
                        _ => 0,
                    };
                    assert!(len <= MAX);
                }
                Ok(None) => break,
                Err(e) => {
                    assert!(e.close_code() >= 1000);
                    return;
                }
            }
        }
    }
});
