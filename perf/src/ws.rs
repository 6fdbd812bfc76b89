//! A minimal WebSocket client over any async stream: the upgrade, masked frames out, and a two-phase
//! reader for the server's unmasked frames. Enough to drive tens of thousands of connections from one core.

use bytes::{Buf, BytesMut};
use rand::Rng;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A frame from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Binary,
    Ping,
    Pong,
    Close,
    Continuation,
}

/// Parses one whole server frame at the start of `buf`: `Some((kind, fin, header_len, payload_len))`.
pub fn parse_frame(buf: &[u8]) -> anyhow::Result<Option<(Kind, bool, usize, usize)>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let kind = match buf[0] & 0x0F {
        0 => Kind::Continuation,
        1 => Kind::Text,
        2 => Kind::Binary,
        8 => Kind::Close,
        9 => Kind::Ping,
        10 => Kind::Pong,
        op => anyhow::bail!("server sent opcode {op}"),
    };
    anyhow::ensure!(buf[1] & 0x80 == 0, "server frames must not be masked");
    let (len, head) = match buf[1] & 0x7F {
        126 if buf.len() >= 4 => (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() >= 10 => (u64::from_be_bytes(buf[2..10].try_into()?) as usize, 10),
        126 | 127 => return Ok(None),
        n => (usize::from(n), 2),
    };
    if buf.len() < head + len {
        return Ok(None);
    }
    Ok(Some((kind, buf[0] & 0x80 != 0, head, len)))
}

/// Appends a final client frame of `opcode`, masked with a random key.
pub fn write_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], rng: &mut impl Rng) {
    tickwire_core::ws::write_client_frame(out, true, opcode, payload, rng.random());
}

/// Whether a whole server frame at the start of `buf` is compressed (RSV1, permessage-deflate).
pub fn is_deflated(buf: &[u8]) -> bool {
    buf.first().is_some_and(|b| b & 0x40 != 0)
}

thread_local! {
    /// One inflater for every connection of the thread: the server deflates each message on its own
    /// (server_no_context_takeover), and after a message's sync flush the inflater stands at a block
    /// boundary, so messages of any connection follow each other through it.
    static INFLATER: std::cell::RefCell<tickwire_core::deflate::Inflater> = Default::default();
    /// What the thread inflated lately, by compressed bytes: see [`InflateCache`].
    static INFLATED: std::cell::RefCell<InflateCache> = Default::default();
}

/// Compressed bytes, and their text.
type Inflated = (Box<[u8]>, bytes::Bytes);

/// The messages a generator thread inflated lately, keyed by their compressed bytes.
///
/// The server deflates each update once and sends the same compressed bytes to every compressing
/// subscriber, each message on its own (server_no_context_takeover, which [`handshake`] requires): equal
/// compressed bytes are then equal text, so the thread inflates each distinct message once, not once per
/// connection. A real client inflates every message it gets; this keeps one generator thread, standing in
/// for thousands of clients, from queueing its clients behind its own inflation (the latency measured is
/// the server's). The compressed bytes are compared whole, not by a hash alone.
#[derive(Debug, Default)]
pub struct InflateCache {
    /// By a fingerprint of the compressed bytes (cheap on a 6 KB batch: [`Self::fingerprint`]), each
    /// entry the whole compressed bytes and their text.
    seen: std::collections::HashMap<u64, Vec<Inflated>>,
    kept: usize,
    /// Messages inflated (misses) and found (hits), for the tests.
    pub inflated: u64,
    pub found: u64,
}

impl InflateCache {
    /// At most this many messages are kept; past it the cache starts over (updates are not seen again
    /// once every subscriber had them, so old entries are dead weight).
    const KEEP: usize = 4096;

    /// A cheap hash of the first KiB and the last 64 bytes and the length (compressed messages that
    /// differ mostly differ early: deflate's output follows its input); equal fingerprints are told
    /// apart by comparing the whole bytes.
    fn fingerprint(payload: &[u8]) -> u64 {
        let n = payload.len();
        let head = &payload[..n.min(1024)];
        let tail = &payload[n.saturating_sub(64).max(head.len())..];
        let mut h = n as u64;
        for part in [head, tail] {
            let mut words = part.chunks_exact(8);
            for w in &mut words {
                h = (h.rotate_left(5) ^ u64::from_le_bytes(w.try_into().unwrap())).wrapping_mul(0x517c_c1b7_2722_0a95);
            }
            for &b in words.remainder() {
                h = (h.rotate_left(5) ^ b as u64).wrapping_mul(0x517c_c1b7_2722_0a95);
            }
        }
        h
    }

    /// The text of the compressed message `payload`, inflated by `inflate` unless it was seen before.
    pub fn get(
        &mut self,
        payload: &[u8],
        inflate: impl FnOnce(&[u8]) -> anyhow::Result<Vec<u8>>,
    ) -> anyhow::Result<bytes::Bytes> {
        let key = Self::fingerprint(payload);
        if let Some((_, plain)) = self.seen.get(&key).and_then(|b| b.iter().find(|(c, _)| **c == *payload)) {
            self.found += 1;
            return Ok(plain.clone());
        }
        let plain = bytes::Bytes::from(inflate(payload)?);
        self.inflated += 1;
        if self.kept >= Self::KEEP {
            self.seen.clear();
            self.kept = 0;
        }
        self.seen.entry(key).or_default().push((payload.into(), plain.clone()));
        self.kept += 1;
        Ok(plain)
    }
}

/// The payload of a compressed message, inflated (or found inflated: [`InflateCache`]).
pub fn inflate(payload: &[u8]) -> anyhow::Result<bytes::Bytes> {
    INFLATED.with_borrow_mut(|cache| {
        cache.get(payload, |p| {
            INFLATER.with_borrow_mut(|i| i.inflate(p, 64 << 20)).map_err(|e| anyhow::anyhow!("a compressed frame: {e}"))
        })
    })
}

/// Sends the upgrade request and reads the 101; bytes read past the head are left in `buf`. With
/// `compress`, offers permessage-deflate and fails unless the server agrees to it.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    host: &str,
    path: &str,
    token: Option<&str>,
    compress: bool,
    buf: &mut BytesMut,
) -> anyhow::Result<()> {
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let offer =
        if compress { "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover\r\n" } else { "" };
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{auth}{offer}\r\n"
    );
    stream.write_all(req.as_bytes()).await?;
    let mut chunk = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(n) = resp.parse(buf)? {
            anyhow::ensure!(resp.code == Some(101), "upgrade refused: HTTP {:?}", resp.code);
            // The shared inflater and the cache need each message deflated on its own.
            let agreed = resp.headers.iter().any(|h| {
                let v = String::from_utf8_lossy(h.value);
                h.name.eq_ignore_ascii_case("sec-websocket-extensions")
                    && v.contains("permessage-deflate")
                    && v.contains("server_no_context_takeover")
            });
            anyhow::ensure!(
                agreed || !compress,
                "the server did not agree to permessage-deflate with server_no_context_takeover"
            );
            buf.advance(n);
            return Ok(());
        }
        let n = stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "connection closed during the upgrade");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_key_is_sixteen_bytes() {
        // RFC 6455 4.1: the key is a base64-encoded 16-byte value; strict servers refuse anything else.
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        assert_eq!(key.len(), 24);
        assert!(key.ends_with("=="), "24 base64 characters with two pad characters encode 16 bytes");
    }

    #[test]
    fn parses_server_frames_in_two_phases() {
        let f = tickwire_core::ws::frame(tickwire_core::ws::Opcode::Text, &[b'x'; 300]);
        assert_eq!(parse_frame(&f[..3]).unwrap(), None);
        assert_eq!(parse_frame(&f[..100]).unwrap(), None);
        assert_eq!(parse_frame(&f).unwrap(), Some((Kind::Text, true, 4, 300)));
        assert!(parse_frame(&[0x81, 0x81]).is_err(), "masked server frame");
    }

    /// The payload of `text` as the server deflates it for a text frame.
    fn deflated(text: &[u8]) -> bytes::Bytes {
        let frame = tickwire_core::ws::frame(tickwire_core::ws::Opcode::Text, text);
        let d = tickwire_core::deflate::compress_frame(&frame, tickwire_core::deflate::Level::default())
            .expect("repetitive text deflates");
        assert!(is_deflated(&d));
        let (_, _, head, len) = parse_frame(&d).unwrap().unwrap();
        d.slice(head..head + len)
    }

    #[test]
    fn the_inflate_cache_gives_what_inflating_each_message_gives() {
        let text = |i: usize| {
            format!("{{\"type\":\"quote\",\"seq\":{i},\"symbol\":\"SYM{i}\",\"bid\":{i}.25,\"ask\":{i}.75,\"bid_size\":100,\"ask_size\":100}}").into_bytes()
        };
        let texts: Vec<Vec<u8>> = (0..50).map(text).collect();
        let payloads: Vec<bytes::Bytes> = texts.iter().map(|t| deflated(t)).collect();
        let mut cache = InflateCache::default();
        let mut direct = tickwire_core::deflate::Inflater::new();
        // Each message as 20 subscribers get it, interleaved as a fan-out delivers them.
        for _ in 0..20 {
            for (t, d) in texts.iter().zip(&payloads) {
                let got = cache.get(d, |p| Ok(direct.inflate(p, 1 << 20)?)).unwrap();
                assert_eq!(&got[..], &t[..]);
                assert_eq!(direct.inflate(d, 1 << 20).unwrap(), *t, "the payload inflates on its own too");
            }
        }
        assert_eq!((cache.inflated, cache.found), (50, 950), "each distinct message inflated once");
        // A corrupt message is an error, and is not remembered as anything.
        let bad = [&[0xffu8, 0xff, 0xff][..], &payloads[0][..]].concat();
        assert!(cache.get(&bad, |p| Ok(tickwire_core::deflate::Inflater::new().inflate(p, 1 << 20)?)).is_err());
        assert_eq!(cache.inflated, 50);
        // Past KEEP distinct messages it starts over, and still answers right.
        for i in 50..(InflateCache::KEEP + 60) {
            let t = text(i);
            let got = cache.get(&deflated(&t), |p| Ok(direct.inflate(p, 1 << 20)?)).unwrap();
            assert_eq!(&got[..], &t[..]);
        }
        assert!(cache.kept <= InflateCache::KEEP && cache.seen.values().map(Vec::len).sum::<usize>() == cache.kept);
        let again = cache.get(&payloads[0], |p| Ok(direct.inflate(p, 1 << 20)?)).unwrap();
        assert_eq!(&again[..], &texts[0][..]);
    }

    #[test]
    fn the_inflate_cache_tells_apart_messages_with_the_same_length_and_ends() {
        let a = [vec![7u8; 1100], vec![1], vec![7u8; 100]].concat();
        let b = [vec![7u8; 1100], vec![2], vec![7u8; 100]].concat();
        assert_eq!(InflateCache::fingerprint(&a), InflateCache::fingerprint(&b));
        let mut cache = InflateCache::default();
        assert_eq!(&cache.get(&a, |_| Ok(b"a".to_vec())).unwrap()[..], b"a");
        assert_eq!(&cache.get(&b, |_| Ok(b"b".to_vec())).unwrap()[..], b"b");
        assert_eq!(&cache.get(&a, |_| unreachable!("a was inflated before")).unwrap()[..], b"a");
        assert_eq!(&cache.get(&b, |_| unreachable!("b was inflated before")).unwrap()[..], b"b");
    }

    #[test]
    fn client_frames_read_back_through_the_server_codec() {
        let mut out = Vec::new();
        write_frame(&mut out, 1, b"{\"action\":\"ping\"}", &mut rand::rng());
        let mut buf = BytesMut::from(&out[..]);
        let msg = tickwire_core::ws::MessageReader::new(1024).read(&mut buf).unwrap();
        assert_eq!(msg, Some(tickwire_core::ws::Message::Text(bytes::Bytes::from_static(b"{\"action\":\"ping\"}"))));
    }
}
