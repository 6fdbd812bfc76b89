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
}

/// The payload of a compressed message, inflated.
pub fn inflate(payload: &[u8]) -> anyhow::Result<BytesMut> {
    let plain = INFLATER.with_borrow_mut(|i| i.inflate(payload, 64 << 20));
    Ok(BytesMut::from(&plain.map_err(|e| anyhow::anyhow!("a compressed frame: {e}"))?[..]))
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
            let agreed = resp.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("sec-websocket-extensions")
                    && String::from_utf8_lossy(h.value).contains("permessage-deflate")
            });
            anyhow::ensure!(agreed || !compress, "the server did not agree to permessage-deflate");
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

    #[test]
    fn client_frames_read_back_through_the_server_codec() {
        let mut out = Vec::new();
        write_frame(&mut out, 1, b"{\"action\":\"ping\"}", &mut rand::rng());
        let mut buf = BytesMut::from(&out[..]);
        let msg = tickwire_core::ws::MessageReader::new(1024).read(&mut buf).unwrap();
        assert_eq!(msg, Some(tickwire_core::ws::Message::Text(bytes::Bytes::from_static(b"{\"action\":\"ping\"}"))));
    }
}
