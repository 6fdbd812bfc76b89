//! The inflating reader (permessage-deflate): compressed messages in any split, with and without context
//! takeover, give messages no larger than the limit once inflated, or one error with its close code; the
//! inflater alone never returns more than its limit nor panics on a corrupt stream.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tickwire_core::deflate::Inflater;
use tickwire_core::ws::{Message, MessageReader};

const MAX: usize = 4096;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk size and whether the client keeps its context (bit 0).
    let Some((&first, rest)) = data.split_first() else { return };
    match Inflater::new().inflate(rest, MAX) {
        Ok(plain) => assert!(plain.len() <= MAX),
        Err(e) => assert!(matches!(e.close_code(), 1007 | 1009)),
    }
    let chunk = usize::from(first >> 1).max(1);
    let mut reader = MessageReader::new(MAX);
    reader.enable_deflate(if first & 1 == 0 { 15 } else { 0x80 | 15 });
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
