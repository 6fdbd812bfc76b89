//! The inbound WebSocket frame reader: bytes arriving in any split give messages or one error with a close
//! code, never a panic, and never a message larger than the limit.
#![no_main]

#[path = "common/read_all.rs"]
mod read_all;

use libfuzzer_sys::fuzz_target;
use tickwire_core::ws::MessageReader;

const MAX: usize = 4096;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk size, so frames also arrive split at every boundary.
    let Some((&split, rest)) = data.split_first() else { return };
    read_all::read_all(&mut MessageReader::new(MAX), rest, usize::from(split).max(1), MAX);
});
