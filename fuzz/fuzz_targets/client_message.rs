//! Every dialect's client-message decoder (the table's, `DIALECTS`): any text gives a request or an error,
//! never a panic, and the dialect can answer either (its reply, its error frame or its close).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickwire_core::protocol::{ClientRequest, Dialect, Reply, DIALECTS};

fn check(name: &str, codec: &dyn Dialect, data: &[u8]) {
    let mut out = Vec::new();
    match codec.decode(data) {
        Ok(ClientRequest::Subscribe(s)) => codec.encode_reply(
            &Reply::Subscribed {
                id: s.id.as_deref(),
                channel: s.channel,
                symbols: &s.symbols,
                interval: s.interval,
                throttle_ms: s.throttle_ms,
                subscription_id: "s",
            },
            0,
            &mut out,
        ),
        Ok(ClientRequest::Unsubscribe(u)) => codec.encode_reply(
            &Reply::Unsubscribed { id: u.id.as_deref(), channel: u.channel, symbols: &[] },
            0,
            &mut out,
        ),
        Ok(ClientRequest::Channels { subscribe, parts, id }) => {
            assert!(usize::from(parts).leading_zeros() as usize >= usize::BITS as usize - codec.parts().len());
            let admitted = codec.admits(id.as_deref(), Some("u"));
            let reply = match &admitted {
                Ok(()) => Reply::Channels { id: id.as_deref(), subscribe, changed: parts, parts },
                Err(e) => Reply::Error { id: e.id.as_deref(), code: e.code, message: &e.message },
            };
            codec.encode_reply_to(Some("u"), &reply, 0, &mut out)
        }
        Ok(_) => {}
        Err(e) => {
            assert!(!e.code.as_str().is_empty());
            if codec.error_close(&e).is_none() {
                let reply = Reply::Error { id: e.id.as_deref(), code: e.code, message: &e.message };
                codec.encode_reply_to(Some("u"), &reply, 0, &mut out);
            }
        }
    }
    assert!(std::str::from_utf8(&out).is_ok(), "{name}: a reply that is not UTF-8");
}

fuzz_target!(|data: &[u8]| {
    for d in &DIALECTS {
        check(d.name, d.codec, data);
    }
});
