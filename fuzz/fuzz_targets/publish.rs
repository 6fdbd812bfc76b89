//! The publish-body parser (POST /api/publish, /v1/publish frames): events or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(events) = tickwire_core::event::parse_publish(data) {
        for e in events {
            assert!(!e.topics.is_empty());
        }
    }
});
