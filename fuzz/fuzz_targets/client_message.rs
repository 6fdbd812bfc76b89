//! The canonical client-message decoder: any text gives a request or an error frame's code, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickwire_core::protocol::canonical::Canonical;
use tickwire_core::protocol::Dialect;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = Canonical.decode(data) {
        assert!(!e.code.as_str().is_empty());
    }
});
