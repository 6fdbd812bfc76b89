//! The HTTP/1.1 request-head parser: any bytes give a request, "read more" or an error with a status,
//! never a panic; a parsed head never claims more bytes than it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickwire_net::http::parse_request;

fuzz_target!(|data: &[u8]| {
    for (max_head, max_body) in [(16 * 1024, 1 << 20), (64, 16)] {
        match parse_request(data, max_head, max_body) {
            Ok(Some((req, head_len))) => {
                assert!(head_len <= data.len() && head_len <= max_head);
                assert!(req.content_length <= max_body);
                let _ = (req.keep_alive(), req.is_upgrade(), req.query("token"));
            }
            Ok(None) => assert!(data.len() <= max_head),
            Err(e) => assert!((400..500).contains(&e.status)),
        }
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = tickwire_net::http::percent_decode(s);
    }
});
