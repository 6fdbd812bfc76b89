//! Feeds `data` to `reader` in chunks of `chunk` bytes, taking every message out after each: a message is
//! never larger than `max`, and an error (which ends the reading) always names a close code.

use bytes::BytesMut;
use tickwire_core::ws::{Message, MessageReader};

pub fn read_all(reader: &mut MessageReader, data: &[u8], chunk: usize, max: usize) {
    let mut buf = BytesMut::new();
    for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match reader.read(&mut buf) {
                Ok(Some(msg)) => {
                    let len = match &msg {
                        Message::Text(t) => t.len(),
                        Message::Binary(b) | Message::Ping(b) | Message::Pong(b) => b.len(),
                        _ => 0,
                    };
                    assert!(len <= max);
                }
                Ok(None) => break,
                Err(e) => {
                    assert!(e.close_code() >= 1000);
                    return;
                }
            }
        }
    }
}
