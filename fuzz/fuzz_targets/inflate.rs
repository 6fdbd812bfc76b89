//! The inflating reader (permessage-deflate): compressed messages in any split, with and without context
//! takeover, give messages no larger than the limit once inflated, or one error with its close code; the
//! inflater alone never returns more than its limit nor panics on a corrupt stream.
#![no_main]

#[path = "common/read_all.rs"]
mod read_all;

use libfuzzer_sys::fuzz_target;
use tickwire_core::deflate::Inflater;
use tickwire_core::ws::MessageReader;

const MAX: usize = 4096;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk size and whether the client keeps its context (bit 0).
    let Some((&first, rest)) = data.split_first() else { return };
    match Inflater::new().inflate(rest, MAX) {
        Ok(plain) => assert!(plain.len() <= MAX),
        Err(e) => assert!(matches!(e.close_code(), 1007 | 1009)),
    }
    let mut reader = MessageReader::new(MAX);
    reader.enable_deflate(if first & 1 == 0 { 15 } else { 0x80 | 15 });
    read_all::read_all(&mut reader, rest, usize::from(first >> 1).max(1), MAX);
});
