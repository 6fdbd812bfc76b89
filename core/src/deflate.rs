//! permessage-deflate (RFC 7692), sans I/O: the negotiation of an upgrade's offers, the compression of
//! server frames, and the bounded inflation of client messages.
//!
//! tickwire always answers with `server_no_context_takeover`: each message it sends is deflated on its
//! own, so one deflated frame of an update can go to every compressing subscriber of its topic
//! ([`compress_frame`], called once per update). Messages from the client are inflated with its context
//! kept between messages unless it agreed to `client_no_context_takeover` ([`Inflater`]).
//!
//! The window a client allows for our frames (`server_max_window_bits`) needs no compressor of its own:
//! without context takeover a back-reference never reaches before the start of its message, so a frame
//! deflated from a payload of at most 2^bits bytes fits any window of `bits` ([`fits_window`]); larger
//! payloads go to such a client uncompressed, which RFC 7692 allows for any message.

use std::cell::RefCell;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::ws::{payload_of, WsError, MAX_HEADER_LEN};

/// The extension's name in `Sec-WebSocket-Extensions`.
pub const NAME: &str = "permessage-deflate";

/// The largest LZ77 window of deflate, in bits.
pub const MAX_WINDOW_BITS: u8 = 15;

/// What a connection agreed to, from the first offer of the client that tickwire accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// The largest window our frames may use (`server_max_window_bits`; 15 when not offered).
    pub server_bits: u8,
    /// The client offered `server_max_window_bits`: the answer must carry it.
    pub server_bits_offered: bool,
    /// The client resets its compressor after each message (`client_no_context_takeover`): its messages
    /// are inflated each on its own, and no inflater is kept between them.
    pub client_no_context_takeover: bool,
}

impl Agreed {
    /// The `Sec-WebSocket-Extensions` value of the answer.
    pub fn response(&self) -> String {
        let mut out = format!("{NAME}; server_no_context_takeover");
        if self.client_no_context_takeover {
            out.push_str("; client_no_context_takeover");
        }
        if self.server_bits_offered {
            out.push_str(&format!("; server_max_window_bits={}", self.server_bits));
        }
        out
    }

    /// One byte for a connection to keep: the window bits of our frames (8 to 15), bit 7 set for
    /// `client_no_context_takeover`. 0 means no compression.
    pub fn to_byte(self) -> u8 {
        self.server_bits | if self.client_no_context_takeover { 0x80 } else { 0 }
    }
}

/// The first acceptable `permessage-deflate` offer among the values of a request's
/// `Sec-WebSocket-Extensions` headers (joined by commas), or `None`: no offer, or none tickwire accepts (an
/// unknown or repeated parameter, a window size out of 8..=15). Offers of other extensions are ignored.
pub fn negotiate(header: &str) -> Option<Agreed> {
    split_outside_quotes(header, ',').find_map(|offer| {
        let mut parts = split_outside_quotes(offer, ';').map(str::trim);
        if !parts.next()?.eq_ignore_ascii_case(NAME) {
            return None;
        }
        let mut agreed =
            Agreed { server_bits: MAX_WINDOW_BITS, server_bits_offered: false, client_no_context_takeover: false };
        let (mut server_nct, mut client_bits) = (false, false);
        for param in parts.filter(|p| !p.is_empty()) {
            let (name, value) = match param.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                None => (param, None),
            };
            let bits = |v: Option<&str>| v.and_then(|v| v.parse::<u8>().ok()).filter(|b| (8..=15).contains(b));
            match name.to_ascii_lowercase().as_str() {
                "server_no_context_takeover" if value.is_none() && !server_nct => server_nct = true,
                "client_no_context_takeover" if value.is_none() && !agreed.client_no_context_takeover => {
                    agreed.client_no_context_takeover = true
                }
                "server_max_window_bits" if !agreed.server_bits_offered => {
                    agreed.server_bits = bits(value)?;
                    agreed.server_bits_offered = true;
                }
                // We inflate with the largest window, whatever the client's: nothing to answer.
                "client_max_window_bits" if !client_bits && (value.is_none() || bits(value).is_some()) => {
                    client_bits = true
                }
                _ => return None,
            }
        }
        Some(agreed)
    })
}

/// Splits `s` at `sep` where it is not inside double quotes.
fn split_outside_quotes(s: &str, sep: char) -> impl Iterator<Item = &str> {
    let mut quoted = false;
    s.split(move |c| {
        if c == '"' {
            quoted = !quoted;
        }
        c == sep && !quoted
    })
}

/// The window bits a deflated message of `len` plain bytes needs at most (no context takeover: its
/// back-references stay within it).
pub fn window_needed(len: usize) -> u8 {
    let bits = usize::BITS - len.saturating_sub(1).leading_zeros();
    (bits as u8).clamp(8, MAX_WINDOW_BITS)
}

/// Whether the deflated form of `plain` (a whole server frame) may go to a client allowing windows of
/// `bits` (0: it does not compress).
#[inline]
pub fn fits_window(plain: &[u8], bits: u8) -> bool {
    bits != 0 && window_needed(payload_of(plain).len()) <= (bits & 0x7F)
}

/// How server frames are compressed: the zlib level (0 to 9) and the least payload worth compressing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    pub level: u32,
    pub threshold: usize,
}

impl Default for Level {
    fn default() -> Self {
        Level { level: 1, threshold: 64 }
    }
}

thread_local! {
    /// The compressor of this thread (a shard), reset for each message, with its level.
    static COMPRESS: RefCell<Option<(u32, Compress)>> = const { RefCell::new(None) };
}

/// The deflated form of `plain`, a whole unmasked server frame (as [`crate::ws::frame`] builds it): the
/// same opcode with RSV1 set, its payload deflated on its own. `None` when the payload is under the
/// threshold, or deflating does not make it smaller: the plain frame is then what everyone gets.
pub fn compress_frame(plain: &[u8], level: Level) -> Option<Bytes> {
    let payload = payload_of(plain);
    if payload.len() < level.threshold.max(1) || plain.len() < 2 {
        return None;
    }
    let opcode = plain[0] & 0x0F;
    let mut out = Vec::with_capacity(MAX_HEADER_LEN + payload.len() / 2 + 64);
    out.resize(MAX_HEADER_LEN, 0);
    COMPRESS.with_borrow_mut(|c| {
        let c = match c {
            Some((l, c)) if *l == level.level => {
                c.reset();
                c
            }
            _ => &mut c.insert((level.level, Compress::new(Compression::new(level.level), false))).1,
        };
        deflate_into(c, payload, &mut out);
    });
    // RFC 7692 7.2.1: the sync flush's empty block (00 00 FF FF) is left off the end.
    if out.ends_with(&[0, 0, 0xFF, 0xFF]) {
        out.truncate(out.len() - 4);
    }
    let len = out.len() - MAX_HEADER_LEN;
    if len >= payload.len() {
        return None;
    }
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = crate::ws::write_header_with(0xC0 | opcode, len, &mut head);
    out[..MAX_HEADER_LEN].copy_from_slice(&head);
    Some(Bytes::from(out).slice(MAX_HEADER_LEN - n..))
}

/// Deflates all of `input` into `out` with a sync flush.
fn deflate_into(c: &mut Compress, input: &[u8], out: &mut Vec<u8>) {
    let start = c.total_in();
    loop {
        let consumed = (c.total_in() - start) as usize;
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(256));
        }
        let before = out.len();
        // Errors cannot happen with a valid level and a growing buffer; stop rather than loop if one did.
        if c.compress_vec(&input[consumed..], out, FlushCompress::Sync).is_err() {
            return;
        }
        let all_in = (c.total_in() - start) as usize == input.len();
        // Done once everything went in and the flush left room to spare (nothing more to write).
        if all_in && out.len() < out.capacity() {
            return;
        }
        if out.len() == before && !all_in && out.len() < out.capacity() {
            return; // no progress with room to write: cannot happen, but never spin
        }
    }
}

/// Inflates a client's compressed messages; see the module docs.
#[derive(Debug)]
pub struct Inflater {
    d: Decompress,
}

impl Default for Inflater {
    fn default() -> Self {
        Inflater::new()
    }
}

impl Inflater {
    pub fn new() -> Inflater {
        Inflater { d: Decompress::new(false) }
    }

    /// Inflates one whole message's payload (the frames' payloads joined, without the sync tail), keeping
    /// the context for the next unless the caller drops this inflater. Fails with `TooBig` as soon as the
    /// output passes `max` bytes (nothing more is inflated), `BadCompression` on a corrupt stream.
    pub fn inflate(&mut self, input: &[u8], max: usize) -> Result<Vec<u8>, WsError> {
        let mut out = Vec::with_capacity((input.len() * 4).max(64).min(max.saturating_add(1)));
        for chunk in [input, &[0, 0, 0xFF, 0xFF][..]] {
            let start = self.d.total_in();
            loop {
                let consumed = (self.d.total_in() - start) as usize;
                if out.len() > max {
                    return Err(WsError::TooBig { limit: max });
                }
                if out.capacity() == out.len() {
                    // Grow, but never past one byte over the limit: a bomb is found without inflating it.
                    let room = out.capacity().max(64).min(max.saturating_add(1).saturating_sub(out.len()).max(1));
                    out.reserve_exact(room);
                }
                let before = out.len();
                let status = self
                    .d
                    .decompress_vec(&chunk[consumed..], &mut out, FlushDecompress::Sync)
                    .map_err(|_| WsError::BadCompression)?;
                let now_consumed = (self.d.total_in() - start) as usize;
                let progressed = out.len() > before || now_consumed > consumed;
                if matches!(status, Status::StreamEnd) {
                    // A final block ends the stream: tickwire's peers use sync flushes, and the next message
                    // would not inflate. Start over for it.
                    self.d.reset(false);
                    break;
                }
                if now_consumed == chunk.len() && out.len() < out.capacity() {
                    break;
                }
                if !progressed {
                    return Err(WsError::BadCompression);
                }
            }
        }
        if out.len() > max {
            return Err(WsError::TooBig { limit: max });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::{frame, Opcode};

    fn client_deflate(msgs: &[&[u8]], takeover: bool) -> Vec<Vec<u8>> {
        let mut c = Compress::new(Compression::default(), false);
        msgs.iter()
            .map(|m| {
                if !takeover {
                    c.reset();
                }
                let mut out = Vec::with_capacity(m.len() + 64);
                deflate_into(&mut c, m, &mut out);
                assert!(out.ends_with(&[0, 0, 0xFF, 0xFF]));
                out.truncate(out.len() - 4);
                out
            })
            .collect()
    }

    #[test]
    fn offers_accepted_declined_and_answered() {
        let a = negotiate("permessage-deflate").unwrap();
        assert_eq!(a.response(), "permessage-deflate; server_no_context_takeover");
        assert_eq!(a.to_byte(), 15);
        let a = negotiate("permessage-deflate; client_max_window_bits; client_no_context_takeover").unwrap();
        assert_eq!(a.response(), "permessage-deflate; server_no_context_takeover; client_no_context_takeover");
        assert_eq!(a.to_byte(), 0x8F);
        let a = negotiate(r#"x-webkit-deflate-frame, permessage-deflate; server_max_window_bits="10""#).unwrap();
        assert_eq!(a.response(), "permessage-deflate; server_no_context_takeover; server_max_window_bits=10");
        // The first offer is declined (window out of range), the second accepted.
        let a = negotiate("permessage-deflate; server_max_window_bits=7, permessage-deflate").unwrap();
        assert_eq!(a.server_bits, 15);
        for declined in [
            "",
            "x-webkit-deflate-frame",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=99",
            "permessage-deflate; mystery",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; client_no_context_takeover=1",
        ] {
            assert_eq!(negotiate(declined), None, "{declined}");
        }
    }

    #[test]
    fn windows_needed_by_length() {
        assert_eq!(window_needed(0), 8);
        assert_eq!(window_needed(256), 8);
        assert_eq!(window_needed(257), 9);
        assert_eq!(window_needed(1024), 10);
        assert_eq!(window_needed(1 << 20), 15);
        let f = frame(Opcode::Text, &[b'a'; 300]);
        assert!(fits_window(&f, 15) && fits_window(&f, 9 | 0x80));
        assert!(!fits_window(&f, 8) && !fits_window(&f, 0));
    }

    #[test]
    fn compressed_frames_inflate_to_the_plain_payload() {
        let json = br#"{"type":"update","channel":"quotes","symbol":"AAPL","sequence":1,"data":{"bid":189.5,"ask":189.52,"bid_size":100,"ask_size":300}}"#;
        let plain = frame(Opcode::Text, json);
        let deflated = compress_frame(&plain, Level::default()).unwrap();
        assert_eq!(deflated[0], 0xC1, "FIN, RSV1, text");
        assert!(deflated.len() < plain.len());
        let body = payload_of(&deflated);
        let mut i = Inflater::new();
        assert_eq!(i.inflate(body, 1 << 16).unwrap(), json);
        // Each frame stands alone: the same bytes again inflate with a fresh inflater, and the context kept.
        assert_eq!(compress_frame(&plain, Level::default()).unwrap(), deflated);
        assert_eq!(Inflater::new().inflate(body, 1 << 16).unwrap(), json);
        assert_eq!(i.inflate(body, 1 << 16).unwrap(), json);
        assert_eq!(compress_frame(&frame(Opcode::Text, b"{\"type\":\"pong\"}"), Level::default()), None);
        let big = frame(Opcode::Binary, &vec![7u8; 100_000]);
        let d = compress_frame(&big, Level { level: 6, threshold: 64 }).unwrap();
        assert_eq!(d[0], 0xC2);
        assert_eq!(Inflater::new().inflate(payload_of(&d), 100_000).unwrap(), vec![7u8; 100_000]);
    }

    #[test]
    fn context_takeover_inflates_messages_that_refer_to_earlier_ones() {
        let msgs: [&[u8]; 3] = [
            b"{\"action\":\"subscribe\",\"channel\":\"quotes\"}",
            b"{\"action\":\"subscribe\",\"channel\":\"quotes\"}",
            b"{\"action\":\"ping\"}",
        ];
        let wire = client_deflate(&msgs, true);
        assert!(wire[1].len() < wire[0].len(), "the second refers to the first");
        let mut i = Inflater::new();
        for (w, m) in wire.iter().zip(msgs) {
            assert_eq!(i.inflate(w, 1024).unwrap(), m);
        }
        assert!(Inflater::new().inflate(&wire[1], 1024).is_err(), "without the context it cannot inflate");
    }

    #[test]
    fn bombs_and_garbage_are_refused() {
        let bomb = client_deflate(&[&vec![0u8; 10_000_000]], false).remove(0);
        assert!(bomb.len() < 20_000);
        assert_eq!(Inflater::new().inflate(&bomb, 65_536), Err(WsError::TooBig { limit: 65_536 }));
        assert_eq!(Inflater::new().inflate(&[0xFF, 0xFF, 0xFF, 0x00, 0x13], 65_536), Err(WsError::BadCompression));
    }
}
