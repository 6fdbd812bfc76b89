//! The WebSocket frame codec (RFC 6455), sans I/O.
//!
//! [`MessageReader`] turns bytes read from a client into whole messages in two phases: it first checks that a
//! whole frame is buffered (returning `Ok(None)` otherwise, allocating nothing), then unmasks and takes it.
//! Every violation is a [`WsError`] that names the close code to send. [`write_header`] writes the header of
//! an unmasked server frame, so a frame can be built once and shared by every subscriber.

use bytes::{Buf, Bytes, BytesMut};
use thiserror::Error;

/// Longest header of a server (unmasked) frame.
pub const MAX_HEADER_LEN: usize = 10;

/// Close codes used by tickwire.
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const UNSUPPORTED_DATA: u16 = 1003;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const POLICY_VIOLATION: u16 = 1008;
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    pub const INTERNAL_ERROR: u16 = 1011;
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// tickwire's own (RFC 6455 private range): no frame from the client for two heartbeat intervals.
    pub const HEARTBEAT_TIMEOUT: u16 = 4000;
}

/// Frame opcodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Opcode {
    Continuation = 0x0,
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

impl Opcode {
    fn from_u8(b: u8) -> Option<Opcode> {
        Some(match b {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            _ => return None,
        })
    }

    fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// A violation of RFC 6455 or of our limits by the peer; each maps to a close code.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum WsError {
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    #[error("message larger than {limit} bytes")]
    TooBig { limit: usize },
    #[error("text frame is not valid UTF-8")]
    InvalidUtf8,
    /// A compressed message that does not inflate (permessage-deflate).
    #[error("compressed message does not inflate")]
    BadCompression,
}

impl WsError {
    /// The close code this error is answered with.
    pub fn close_code(&self) -> u16 {
        match self {
            WsError::Protocol(_) => close::PROTOCOL_ERROR,
            WsError::TooBig { .. } => close::MESSAGE_TOO_BIG,
            WsError::InvalidUtf8 | WsError::BadCompression => close::INVALID_PAYLOAD,
        }
    }
}

/// A whole message from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message; its bytes are valid UTF-8.
    Text(Bytes),
    Binary(Bytes),
    Ping(Bytes),
    Pong(Bytes),
    /// A close frame with its code, if any.
    Close(Option<u16>),
}

/// Reassembles client messages from frames; see the module docs. With permessage-deflate
/// ([`MessageReader::enable_deflate`]), messages whose first frame has RSV1 set are inflated, bounded by the
/// same limit after inflation.
#[derive(Debug)]
pub struct MessageReader {
    max_message: u32,
    /// 0: no compression; else the window bits of the server's frames (8 to 15), bit 7 set for
    /// `client_no_context_takeover` ([`crate::deflate::Agreed::to_byte`]).
    deflate: u8,
    /// A fragmented message in progress, and the inflater kept between compressed messages (boxed: rare,
    /// and every connection holds a reader).
    state: Option<Box<State>>,
}

#[derive(Debug, Default)]
struct State {
    /// The opcode and payload so far of a fragmented message, and whether it is compressed.
    partial: Option<(Opcode, BytesMut, bool)>,
    inflater: Option<crate::deflate::Inflater>,
    /// An uncompressed text message arriving in pieces (fragments, or a frame over several reads): its
    /// UTF-8 checked as it comes, so that invalid text is refused where it turns invalid (Autobahn 6.4.*).
    utf8: Utf8Stream,
    /// Payload bytes of the frame at the head of the buffer, not whole yet, fed to `utf8` so far.
    checked: usize,
}

/// UTF-8 checked piece by piece: a character cut between pieces is carried over.
#[derive(Debug, Default, Clone, Copy)]
struct Utf8Stream {
    carry: [u8; 4],
    carry_len: u8,
}

impl Utf8Stream {
    /// The next piece: an error when the text so far cannot be valid UTF-8, whatever follows.
    fn feed(&mut self, mut bytes: &[u8]) -> Result<(), WsError> {
        if self.carry_len > 0 {
            let have = usize::from(self.carry_len);
            // The carried bytes are a valid prefix of a character: its lead byte says how long it is.
            let need = match self.carry[0] {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                _ => 4,
            };
            let take = (need - have).min(bytes.len());
            self.carry[have..have + take].copy_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            let len = have + take;
            self.carry_len = len as u8;
            match std::str::from_utf8(&self.carry[..len]) {
                Ok(_) => self.carry_len = 0,
                Err(e) if e.error_len().is_some() => return Err(WsError::InvalidUtf8),
                Err(_) => return Ok(()), // still a prefix: the piece ended inside the character
            }
        }
        match std::str::from_utf8(bytes) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(WsError::InvalidUtf8),
            Err(e) => {
                let rest = &bytes[e.valid_up_to()..];
                self.carry[..rest.len()].copy_from_slice(rest);
                self.carry_len = rest.len() as u8;
                Ok(())
            }
        }
    }
}

impl MessageReader {
    /// A reader refusing messages (or fragment sums) larger than `max_message` bytes.
    pub fn new(max_message: usize) -> MessageReader {
        MessageReader { max_message: max_message.min(u32::MAX as usize) as u32, deflate: 0, state: None }
    }

    /// permessage-deflate was agreed ([`crate::deflate::Agreed::to_byte`]; 0: it was not).
    pub fn enable_deflate(&mut self, agreed: u8) {
        self.deflate = agreed;
    }

    /// The window bits our frames may use if the client takes compressed frames, else 0.
    pub fn deflate_bits(&self) -> u8 {
        self.deflate & 0x7F
    }

    /// Whether `head` carries uncompressed text of the message in progress: a text frame starting one, or
    /// a continuation of a text message. (A text frame inside a fragmented message is a protocol error,
    /// told as such when it is whole: its bytes are no part of the text checked so far.)
    fn is_plain_text(&self, head: &Header) -> bool {
        let partial = self.state.as_ref().and_then(|s| s.partial.as_ref());
        match head.opcode {
            Opcode::Text => !head.rsv1 && partial.is_none(),
            Opcode::Continuation => partial.is_some_and(|(op, _, compressed)| *op == Opcode::Text && !compressed),
            _ => false,
        }
    }

    fn partial_len(&self) -> usize {
        self.state.as_ref().and_then(|s| s.partial.as_ref()).map_or(0, |p| p.1.len())
    }

    /// Takes the next whole message out of `buf`, or `Ok(None)` when more bytes are needed.
    pub fn read(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, WsError> {
        let max = self.max_message as usize;
        loop {
            let Some(head) = parse_header(buf, max, self.deflate != 0)? else { return Ok(None) };
            if head.rsv1 && (head.opcode.is_control() || head.opcode == Opcode::Continuation) {
                return Err(WsError::Protocol("RSV1 set on a control or continuation frame"));
            }
            let so_far = self.partial_len();
            if !head.opcode.is_control() && so_far + head.len > max {
                return Err(WsError::TooBig { limit: max });
            }
            let text = self.is_plain_text(&head);
            if buf.len() < head.header_len + head.len {
                if text {
                    // What has come of the frame so far, checked now rather than when the rest arrives.
                    let avail = buf.len().saturating_sub(head.header_len);
                    let state = self.state.get_or_insert_with(Box::default);
                    if avail > state.checked {
                        let mut piece = buf[head.header_len + state.checked..head.header_len + avail].to_vec();
                        unmask_at(&mut piece, head.mask, state.checked);
                        state.utf8.feed(&piece)?;
                        state.checked = avail;
                    }
                }
                return Ok(None);
            }
            buf.advance(head.header_len);
            let mut payload = buf.split_to(head.len);
            unmask(&mut payload, head.mask);
            // A text message in pieces: this frame's unchecked rest (a single whole frame is checked whole,
            // when it is taken, with nothing kept).
            let mut checked = false;
            if text && (!head.fin || self.state.is_some()) {
                let state = self.state.get_or_insert_with(Box::default);
                let from = std::mem::take(&mut state.checked);
                state.utf8.feed(&payload[from..])?;
                if head.fin {
                    // The message ends here: a character cut at its end is invalid; else it is all checked.
                    if std::mem::take(&mut state.utf8).carry_len != 0 {
                        return Err(WsError::InvalidUtf8);
                    }
                    checked = true;
                }
            }
            match head.opcode {
                Opcode::Ping => return Ok(Some(Message::Ping(payload.freeze()))),
                Opcode::Pong => return Ok(Some(Message::Pong(payload.freeze()))),
                Opcode::Close => return parse_close(&payload).map(|code| Some(Message::Close(code))),
                Opcode::Text | Opcode::Binary => {
                    if self.state.as_ref().is_some_and(|s| s.partial.is_some()) {
                        return Err(WsError::Protocol("new data frame inside a fragmented message"));
                    }
                    if head.fin {
                        return self.finish(head.opcode, payload, head.rsv1, checked).map(Some);
                    }
                    self.state.get_or_insert_with(Box::default).partial = Some((head.opcode, payload, head.rsv1));
                }
                Opcode::Continuation => {
                    let Some((op, mut acc, compressed)) = self.state.as_mut().and_then(|s| s.partial.take()) else {
                        return Err(WsError::Protocol("continuation frame without a message"));
                    };
                    acc.extend_from_slice(&payload);
                    if head.fin {
                        return self.finish(op, acc, compressed, checked).map(Some);
                    }
                    self.state.get_or_insert_with(Box::default).partial = Some((op, acc, compressed));
                }
            }
        }
    }

    /// A whole message: inflated if compressed, its text checked (unless it was, piece by piece: `checked`).
    fn finish(
        &mut self,
        opcode: Opcode,
        payload: BytesMut,
        compressed: bool,
        checked: bool,
    ) -> Result<Message, WsError> {
        let payload = if compressed {
            let state = self.state.get_or_insert_with(Box::default);
            let inflater = state.inflater.get_or_insert_with(crate::deflate::Inflater::new);
            let plain = inflater.inflate(&payload, self.max_message as usize);
            // Without context takeover nothing needs keeping between messages.
            if self.deflate & 0x80 != 0 || plain.is_err() {
                state.inflater = None;
            }
            Bytes::from(plain?)
        } else {
            payload.freeze()
        };
        if self.state.as_ref().is_some_and(|s| s.partial.is_none() && s.inflater.is_none()) {
            self.state = None;
        }
        if checked {
            return Ok(Message::Text(payload));
        }
        finish(opcode, payload)
    }
}

struct Header {
    fin: bool,
    /// RSV1: a compressed message (permessage-deflate).
    rsv1: bool,
    opcode: Opcode,
    mask: [u8; 4],
    header_len: usize,
    len: usize,
}

/// Phase one: is a whole header there, and is it legal?
fn parse_header(buf: &[u8], max_message: usize, deflate: bool) -> Result<Option<Header>, WsError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & if deflate { 0x30 } else { 0x70 } != 0 {
        return Err(WsError::Protocol("reserved bits set without a negotiated extension"));
    }
    let rsv1 = b0 & 0x40 != 0;
    let opcode = Opcode::from_u8(b0 & 0x0F).ok_or(WsError::Protocol("unknown opcode"))?;
    let fin = b0 & 0x80 != 0;
    if b1 & 0x80 == 0 {
        return Err(WsError::Protocol("client frames must be masked"));
    }
    let (len, mut header_len) = match b1 & 0x7F {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            let len = u64::from_be_bytes(b);
            if len >> 63 != 0 {
                return Err(WsError::Protocol("payload length has its top bit set"));
            }
            (len, 10)
        }
        n => (u64::from(n), 2),
    };
    if opcode.is_control() && (!fin || len > 125) {
        return Err(WsError::Protocol("control frames must be whole and at most 125 bytes"));
    }
    if len > max_message as u64 {
        return Err(WsError::TooBig { limit: max_message });
    }
    if buf.len() < header_len + 4 {
        return Ok(None);
    }
    let mask = [buf[header_len], buf[header_len + 1], buf[header_len + 2], buf[header_len + 3]];
    header_len += 4;
    Ok(Some(Header { fin, rsv1, opcode, mask, header_len, len: len as usize }))
}

fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    unmask_at(payload, mask, 0);
}

/// Unmasks bytes that start `offset` bytes into a frame's payload.
fn unmask_at(payload: &mut [u8], mask: [u8; 4], offset: usize) {
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[(offset + i) & 3];
    }
}

fn finish(opcode: Opcode, payload: Bytes) -> Result<Message, WsError> {
    if opcode == Opcode::Text {
        if std::str::from_utf8(&payload).is_err() {
            return Err(WsError::InvalidUtf8);
        }
        Ok(Message::Text(payload))
    } else {
        Ok(Message::Binary(payload))
    }
}

fn parse_close(payload: &[u8]) -> Result<Option<u16>, WsError> {
    match payload.len() {
        0 => Ok(None),
        1 => Err(WsError::Protocol("close payload of one byte")),
        _ => {
            if std::str::from_utf8(&payload[2..]).is_err() {
                return Err(WsError::InvalidUtf8);
            }
            Ok(Some(u16::from_be_bytes([payload[0], payload[1]])))
        }
    }
}

/// Whether a peer may send `code` in a close frame (RFC 6455 7.4.1: 1000-1003, 1007-1011, 3000-4999).
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

/// Writes the header of an unmasked, final server frame into the end of `dst` and returns its length.
/// Writing at the end lets a frame builder reserve [`MAX_HEADER_LEN`] bytes before the payload and slice.
pub fn write_header(opcode: Opcode, len: usize, dst: &mut [u8; MAX_HEADER_LEN]) -> usize {
    write_header_with(0x80 | opcode as u8, len, dst)
}

/// [`write_header`] with the whole first byte given (FIN, RSV bits and opcode): a compressed frame's.
pub fn write_header_with(b0: u8, len: usize, dst: &mut [u8; MAX_HEADER_LEN]) -> usize {
    let (n, bytes): (usize, [u8; MAX_HEADER_LEN]) = if len < 126 {
        (2, [b0, len as u8, 0, 0, 0, 0, 0, 0, 0, 0])
    } else if len <= 0xFFFF {
        let l = (len as u16).to_be_bytes();
        (4, [b0, 126, l[0], l[1], 0, 0, 0, 0, 0, 0])
    } else {
        let l = (len as u64).to_be_bytes();
        (10, [b0, 127, l[0], l[1], l[2], l[3], l[4], l[5], l[6], l[7]])
    };
    dst[MAX_HEADER_LEN - n..].copy_from_slice(&bytes[..n]);
    n
}

/// Appends a masked client frame (RFC 6455 5.3): the `fin` bit, a raw 4-bit `opcode` (not checked, so tests
/// can send illegal ones) and `payload` masked with `mask`. Servers never send these; clients, tests, benches
/// and the load generator do.
pub fn write_client_frame(out: &mut Vec<u8>, fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(if fin { 0x80 } else { 0 } | (opcode & 0x0F));
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
}

/// The payload of an unmasked server frame (its header skipped; empty if the header is cut short).
pub fn payload_of(frame: &[u8]) -> &[u8] {
    let skip = match frame.get(1).map(|b| b & 0x7F) {
        Some(126) => 4,
        Some(127) => 10,
        Some(_) => 2,
        None => return &[],
    };
    frame.get(skip..).unwrap_or(&[])
}

/// A whole unmasked server frame: header then `payload`, in one buffer.
pub fn frame(opcode: Opcode, payload: &[u8]) -> Bytes {
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = write_header(opcode, payload.len(), &mut head);
    let mut out = Vec::with_capacity(n + payload.len());
    out.extend_from_slice(&head[MAX_HEADER_LEN - n..]);
    out.extend_from_slice(payload);
    Bytes::from(out)
}

/// Splits what a server wrote (unmasked frames, as [`frame`] makes them) into `(opcode, payload)` pairs, the
/// way a client reads them; a frame cut short at the end is left out. For clients and tests.
pub fn server_frames(data: &[u8]) -> Vec<(u8, &[u8])> {
    let mut frames = Vec::new();
    let mut i = 0;
    while i + 2 <= data.len() {
        let (len, skip) = match data[i + 1] & 0x7F {
            126 if i + 4 <= data.len() => (u16::from_be_bytes([data[i + 2], data[i + 3]]) as usize, 4),
            127 if i + 10 <= data.len() => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&data[i + 2..i + 10]);
                (u64::from_be_bytes(n) as usize, 10)
            }
            126 | 127 => break,
            n => (usize::from(n), 2),
        };
        let Some(end) = (i + skip).checked_add(len).filter(|&end| end <= data.len()) else { break };
        frames.push((data[i] & 0x0F, &data[i + skip..end]));
        i = end;
    }
    frames
}

/// A close frame with `code` and a short `reason` (cut to fit the 125-byte control frame limit).
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut payload = code.to_be_bytes().to_vec();
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    payload.extend_from_slice(&reason.as_bytes()[..cut]);
    frame(Opcode::Close, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_frames_split_what_frame_writes() {
        let mut wire = frame(Opcode::Text, b"hello").to_vec();
        wire.extend_from_slice(&frame(Opcode::Binary, &[7; 300]));
        wire.extend_from_slice(&close_frame(1000, "bye"));
        let cut = frame(Opcode::Text, b"cut short");
        wire.extend_from_slice(&cut[..cut.len() - 1]);
        let frames = server_frames(&wire);
        assert_eq!(frames.len(), 3, "the frame cut short is left out");
        assert_eq!(frames[0], (1, &b"hello"[..]));
        assert_eq!((frames[1].0, frames[1].1.len()), (2, 300));
        assert_eq!(frames[2], (8, &b"\x03\xe8bye"[..]));
    }
    use proptest::prelude::*;

    /// A masked client frame, as a browser would send it.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut out = Vec::new();
        write_client_frame(&mut out, fin, opcode, payload, mask);
        out
    }

    #[test]
    fn reads_text_byte_by_byte() {
        let wire = client_frame(true, 1, b"{\"action\":\"ping\"}", [1, 2, 3, 4]);
        let mut reader = MessageReader::new(1024);
        let mut buf = BytesMut::new();
        for (i, b) in wire.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            let got = reader.read(&mut buf).unwrap();
            if i + 1 < wire.len() {
                assert_eq!(got, None, "message before its last byte");
            } else {
                assert_eq!(got, Some(Message::Text(Bytes::from_static(b"{\"action\":\"ping\"}"))));
            }
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn reassembles_fragments_with_interleaved_ping() {
        let mut wire = client_frame(false, 1, b"hel", [9, 9, 9, 9]);
        wire.extend(client_frame(true, 9, b"p", [1, 1, 1, 1]));
        wire.extend(client_frame(true, 0, b"lo", [7, 7, 7, 7]));
        let mut buf = BytesMut::from(&wire[..]);
        let mut reader = MessageReader::new(1024);
        assert_eq!(reader.read(&mut buf).unwrap(), Some(Message::Ping(Bytes::from_static(b"p"))));
        assert_eq!(reader.read(&mut buf).unwrap(), Some(Message::Text(Bytes::from_static(b"hello"))));
    }

    #[test]
    fn violations_map_to_close_codes() {
        let cases: Vec<(Vec<u8>, u16)> = vec![
            (vec![0x81, 0x02, b'h', b'i'], close::PROTOCOL_ERROR), // unmasked
            (client_frame(true, 3, b"", [0; 4]), close::PROTOCOL_ERROR), // reserved opcode
            (client_frame(true, 0, b"x", [0; 4]), close::PROTOCOL_ERROR), // orphan continuation
            (client_frame(false, 9, b"x", [0; 4]), close::PROTOCOL_ERROR), // fragmented ping
            (client_frame(true, 1, &[0xff, 0xfe], [0; 4]), close::INVALID_PAYLOAD),
            (client_frame(true, 1, &[b'a'; 2000], [0; 4]), close::MESSAGE_TOO_BIG),
            (
                {
                    let mut f = client_frame(true, 1, b"x", [0; 4]);
                    f[0] |= 0x40;
                    f
                },
                close::PROTOCOL_ERROR,
            ),
        ];
        for (wire, code) in cases {
            let mut reader = MessageReader::new(1024);
            let err = reader.read(&mut BytesMut::from(&wire[..])).unwrap_err();
            assert_eq!(err.close_code(), code, "{err}");
        }
    }

    /// The payload of a message deflated on its own, as a client sends it (no sync tail).
    fn deflated(msg: &[u8]) -> Vec<u8> {
        let mut c = flate2::Compress::new(flate2::Compression::default(), false);
        let mut out = Vec::with_capacity(msg.len() + 64);
        c.compress_vec(msg, &mut out, flate2::FlushCompress::Sync).unwrap();
        assert!(out.ends_with(&[0, 0, 0xFF, 0xFF]));
        out.truncate(out.len() - 4);
        out
    }

    #[test]
    fn compressed_messages_inflate_whole_or_in_fragments_and_break_the_rules_with_their_codes() {
        let msg = br#"{"action":"subscribe","channel":"quotes","symbols":["AAPL","MSFT","AAPL","MSFT"]}"#;
        let z = deflated(msg);
        let with_rsv1 = |mut f: Vec<u8>| {
            f[0] |= 0x40;
            f
        };
        let mut whole = with_rsv1(client_frame(true, 1, &z, [1, 2, 3, 4]));
        // The same message in three fragments: RSV1 on the first only.
        let (a, b) = z.split_at(z.len() / 3);
        let (b, c) = b.split_at(b.len() / 2);
        whole.extend(with_rsv1(client_frame(false, 1, a, [5; 4])));
        whole.extend(client_frame(true, 9, b"p", [0; 4]));
        whole.extend(client_frame(false, 0, b, [6; 4]));
        whole.extend(client_frame(true, 0, c, [7; 4]));
        whole.extend(client_frame(true, 1, b"plain", [8; 4]));
        let mut reader = MessageReader::new(1024);
        reader.enable_deflate(0x80 | 15); // client_no_context_takeover
        let mut buf = BytesMut::from(&whole[..]);
        let text = |m: &[u8]| Some(Message::Text(Bytes::copy_from_slice(m)));
        assert_eq!(reader.read(&mut buf).unwrap(), text(msg));
        assert_eq!(reader.read(&mut buf).unwrap(), Some(Message::Ping(Bytes::from_static(b"p"))));
        assert_eq!(reader.read(&mut buf).unwrap(), text(msg));
        assert_eq!(reader.read(&mut buf).unwrap(), text(b"plain"), "an uncompressed message may follow");
        assert!(reader.state.is_none(), "nothing kept once a message of a no-context client is whole");

        let bomb_payload = {
            let mut c = flate2::Compress::new(flate2::Compression::best(), false);
            let mut out = Vec::with_capacity(1 << 16);
            c.compress_vec(&vec![b'a'; 4 << 20], &mut out, flate2::FlushCompress::Sync).unwrap();
            out
        };
        let cases: Vec<(u8, Vec<u8>, u16)> = vec![
            (0, with_rsv1(client_frame(true, 1, &z, [0; 4])), close::PROTOCOL_ERROR), // not negotiated
            (15, with_rsv1(client_frame(true, 9, b"", [0; 4])), close::PROTOCOL_ERROR), // control frame
            (
                15,
                // (an uncompressed first fragment of valid text: invalid text would be refused first, 1007)
                [client_frame(false, 1, b"valid text", [0; 4]), with_rsv1(client_frame(true, 0, b, [0; 4]))].concat(),
                close::PROTOCOL_ERROR,
            ),
            (
                15,
                {
                    let mut f = with_rsv1(client_frame(true, 1, &z, [0; 4]));
                    f[0] |= 0x20;
                    f
                },
                close::PROTOCOL_ERROR,
            ),
            (15, with_rsv1(client_frame(true, 1, &[0xFF, 0xFF, 0xFF, 0, 0x13, 9], [0; 4])), close::INVALID_PAYLOAD),
            (15, with_rsv1(client_frame(true, 1, &bomb_payload, [0; 4])), close::MESSAGE_TOO_BIG),
            (
                15,
                with_rsv1(client_frame(true, 1, &deflated(&[0xC3, 0x28, b'x', b'y']), [0; 4])),
                close::INVALID_PAYLOAD,
            ),
        ];
        for (i, (agreed, wire, code)) in cases.into_iter().enumerate() {
            let mut reader = MessageReader::new(1 << 16);
            reader.enable_deflate(agreed);
            let err = reader.read(&mut BytesMut::from(&wire[..])).unwrap_err();
            assert_eq!(err.close_code(), code, "case {i}: {err}");
        }
    }

    #[test]
    fn utf8_is_checked_piece_by_piece_with_characters_cut_anywhere() {
        let text = "añ€𝄞 κόσμε ok".as_bytes();
        for piece in 1..=5 {
            let mut s = Utf8Stream::default();
            for chunk in text.chunks(piece) {
                s.feed(chunk).unwrap();
            }
            assert_eq!(s.carry_len, 0, "pieces of {piece} bytes end on a whole character");
        }
        // Refused at the byte that makes them invalid, whatever follows.
        for bad in [&[0xC0u8][..], &[0xF4, 0x90], &[0xED, 0xA0], &[0xE0, 0x80], &[0xC3, 0x28], &[0xFF]] {
            let mut s = Utf8Stream::default();
            s.feed(b"ok ").unwrap();
            let fed: Result<(), _> = bad.iter().try_for_each(|b| s.feed(std::slice::from_ref(b)));
            assert!(matches!(fed, Err(WsError::InvalidUtf8)), "{bad:02x?}");
        }
    }

    #[test]
    fn invalid_text_is_refused_at_the_fragment_or_piece_where_it_turns_invalid() {
        // Fragments (Autobahn 6.4.1/6.4.2): the second makes the text invalid; the third never comes.
        let mut wire = client_frame(false, 1, "κόσμε".as_bytes(), [1, 2, 3, 4]);
        wire.extend(client_frame(false, 0, &[0xCE, 0xBA, 0xF4, 0x90, 0x80, 0x80], [5, 6, 7, 8]));
        let mut reader = MessageReader::new(1024);
        let err = reader.read(&mut BytesMut::from(&wire[..])).unwrap_err();
        assert_eq!(err.close_code(), close::INVALID_PAYLOAD);

        // One frame arriving in pieces (6.4.3/6.4.4): refused once the bad bytes are in, before the rest.
        let mut payload = "κόσμε".as_bytes().to_vec();
        payload.extend([0xED, 0xA0, 0x80]);
        payload.extend(b"edited");
        let frame = client_frame(true, 1, &payload, [9, 8, 7, 6]);
        let mut reader = MessageReader::new(1024);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&frame[..6 + 5]);
        assert_eq!(reader.read(&mut buf).unwrap(), None, "a valid start waits for the rest");
        buf.extend_from_slice(&frame[6 + 5..6 + 12]);
        assert_eq!(reader.read(&mut buf).unwrap_err().close_code(), close::INVALID_PAYLOAD);

        // A new text frame inside a fragmented message is a protocol error, whatever its bytes, whole or
        // in pieces: they are not fed to the text in progress.
        let mut wire = client_frame(false, 1, b"ab", [1, 1, 1, 1]);
        wire.extend(client_frame(true, 1, &[0xFF, 0xFE, b'x', b'y'], [2, 2, 2, 2]));
        let err = MessageReader::new(1024).read(&mut BytesMut::from(&wire[..])).unwrap_err();
        assert_eq!(err.close_code(), close::PROTOCOL_ERROR, "{err}");
        let mut reader = MessageReader::new(1024);
        let mut buf = BytesMut::from(&wire[..wire.len() - 2]);
        assert_eq!(reader.read(&mut buf).unwrap(), None);
        buf.extend_from_slice(&wire[wire.len() - 2..]);
        assert_eq!(reader.read(&mut buf).unwrap_err().close_code(), close::PROTOCOL_ERROR);

        // A character cut at the end of the message is still refused when it ends.
        let mut wire = client_frame(false, 1, &[b'a', 0xC3], [1, 1, 1, 1]);
        wire.extend(client_frame(true, 0, b"", [2, 2, 2, 2]));
        let err = MessageReader::new(1024).read(&mut BytesMut::from(&wire[..])).unwrap_err();
        assert_eq!(err.close_code(), close::INVALID_PAYLOAD);
    }

    #[test]
    fn valid_text_in_pieces_and_fragments_reads_whole_and_leaves_nothing_kept() {
        let text = "price € 101.25 — 𝄞 ok".as_bytes();
        // One frame, byte by byte: every character cut at every place.
        let frame = client_frame(true, 1, text, [3, 1, 4, 1]);
        let mut reader = MessageReader::new(1024);
        let mut buf = BytesMut::new();
        for (i, b) in frame.iter().enumerate() {
            buf.extend_from_slice(std::slice::from_ref(b));
            let got = reader.read(&mut buf).unwrap();
            if i + 1 < frame.len() {
                assert_eq!(got, None);
            } else {
                assert_eq!(got, Some(Message::Text(Bytes::copy_from_slice(text))));
            }
        }
        assert!(reader.state.is_none(), "nothing kept once the message is whole");
        // Fragments cut inside characters, a ping between them, each fragment arriving in two pieces.
        let (a, rest) = text.split_at(8); // inside the euro sign
        let (b, c) = rest.split_at(rest.len() - 4); // inside the clef
        let mut wire = client_frame(false, 1, a, [1, 2, 3, 4]);
        wire.extend(client_frame(true, 9, b"p", [0; 4]));
        wire.extend(client_frame(false, 0, b, [5, 6, 7, 8]));
        wire.extend(client_frame(true, 0, c, [9, 9, 9, 9]));
        let mut got = Vec::new();
        let mut buf = BytesMut::new();
        for piece in wire.chunks(5) {
            buf.extend_from_slice(piece);
            while let Some(m) = reader.read(&mut buf).unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got, [Message::Ping(Bytes::from_static(b"p")), Message::Text(Bytes::copy_from_slice(text))]);
        assert!(reader.state.is_none());
    }

    #[test]
    fn too_big_is_known_from_the_header_alone() {
        // Only the header of a 1 MiB frame has arrived: refuse it without waiting for the payload.
        let mut wire = vec![0x81, 0x80 | 127];
        wire.extend_from_slice(&(1u64 << 20).to_be_bytes());
        let err = MessageReader::new(65_536).read(&mut BytesMut::from(&wire[..])).unwrap_err();
        assert_eq!(err, WsError::TooBig { limit: 65_536 });
    }

    #[test]
    fn fragments_add_up_against_the_limit() {
        let mut wire = client_frame(false, 1, &[b'a'; 600], [0; 4]);
        wire.extend(client_frame(true, 0, &[b'a'; 600], [0; 4]));
        let err = MessageReader::new(1024).read(&mut BytesMut::from(&wire[..])).unwrap_err();
        assert_eq!(err.close_code(), close::MESSAGE_TOO_BIG);
    }

    #[test]
    fn close_codes_a_peer_may_send() {
        for ok in [1000, 1001, 1003, 1007, 1011, 3000, 4999] {
            assert!(is_valid_close_code(ok), "{ok}");
        }
        for bad in [0, 999, 1004, 1005, 1006, 1012, 1015, 2999, 5000] {
            assert!(!is_valid_close_code(bad), "{bad}");
        }
    }

    #[test]
    fn server_headers() {
        for (len, hlen) in [(0usize, 2usize), (125, 2), (126, 4), (65_535, 4), (65_536, 10)] {
            let f = frame(Opcode::Text, &vec![b'x'; len]);
            assert_eq!(f.len(), len + hlen);
            assert_eq!(f[0], 0x81);
        }
        let c = close_frame(1013, "slow consumer");
        assert_eq!(&c[..4], &[0x88, 15, 0x03, 0xF5]);
    }

    proptest! {
        #[test]
        fn masked_round_trip(payload in proptest::collection::vec(any::<u8>(), 0..70_000), mask in any::<[u8; 4]>()) {
            let wire = client_frame(true, 2, &payload, mask);
            let mut reader = MessageReader::new(100_000);
            let got = reader.read(&mut BytesMut::from(&wire[..])).unwrap();
            prop_assert_eq!(got, Some(Message::Binary(Bytes::from(payload))));
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut reader = MessageReader::new(256);
            let mut buf = BytesMut::from(&data[..]);
            for _ in 0..64 {
                match reader.read(&mut buf) {
                    Ok(Some(_)) => continue,
                    _ => break,
                }
            }
        }
    }
}
