//! The frame builder: a WebSocket text frame built in one buffer, header included, with no copy.
//!
//! The JSON is written after [`MAX_HEADER_LEN`] reserved bytes; once its length is known the header is
//! written at the end of the reserved space and the buffer is sliced, so the frame is one contiguous `Bytes`.

use bytes::Bytes;
use tickwire_core::protocol::{Dialect, DialectId, Reply, Update, DIALECT_COUNT};
use tickwire_core::time::Micros;
use tickwire_core::ws::{write_header, Opcode, MAX_HEADER_LEN};

/// One update's frames: one per dialect that has subscribers of its topic, each rendered once and shared
/// by all of that dialect's subscribers; and, where some of them take deflated frames (permessage-deflate),
/// that frame deflated once too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rendered {
    frames: [Option<Bytes>; DIALECT_COUNT],
    /// The deflated frames, per dialect: allocated only for an update with compressing subscribers, and
    /// shared, not copied, with the shards that deliver it.
    deflated: Option<std::sync::Arc<[Option<Bytes>; DIALECT_COUNT]>>,
    /// Dialects (bit `d`) whose entry is a piece for a board ([`crate::board`]), not a frame to push.
    pieces: u8,
}

impl Rendered {
    /// Only `dialect`'s frame.
    pub fn one(dialect: DialectId, frame: Bytes) -> Rendered {
        let mut r = Rendered::default();
        r.set(dialect, frame);
        r
    }

    /// Only the canonical protocol's frame.
    pub fn canonical(frame: Bytes) -> Rendered {
        Rendered::one(DialectId::CANONICAL, frame)
    }

    pub fn set(&mut self, dialect: DialectId, frame: Bytes) {
        self.frames[usize::from(dialect.0)] = Some(frame);
    }

    /// The deflated form of `dialect`'s frame ([`tickwire_core::deflate::compress_frame`]).
    pub fn set_deflated(&mut self, dialect: DialectId, frame: Bytes) {
        let deflated = self.deflated.get_or_insert_with(Default::default);
        std::sync::Arc::make_mut(deflated)[usize::from(dialect.0)] = Some(frame);
    }

    /// The frame of `dialect` for a subscriber taking deflated frames of windows up to `bits` (0: plain
    /// only): the deflated one when there is one and it fits, else the plain one.
    #[inline]
    pub fn get_for(&self, dialect: DialectId, bits: u8) -> Option<&Bytes> {
        let plain = self.get(dialect)?;
        if bits != 0 {
            if let Some(deflated) = self.deflated.as_ref().and_then(|d| d[usize::from(dialect.0)].as_ref()) {
                if tickwire_core::deflate::fits_window(plain, bits) {
                    return Some(deflated);
                }
            }
        }
        Some(plain)
    }

    /// `dialect`'s piece of a batch, for the boards of the shards with its subscribers.
    pub fn set_piece(&mut self, dialect: DialectId, piece: Bytes) {
        self.frames[usize::from(dialect.0)] = Some(piece);
        self.pieces |= 1 << dialect.0;
    }

    /// The frame of `dialect`, if rendered (not a piece).
    #[inline]
    pub fn get(&self, dialect: DialectId) -> Option<&Bytes> {
        if self.pieces & (1 << dialect.0) != 0 {
            return None;
        }
        self.frames[usize::from(dialect.0)].as_ref()
    }

    /// The pieces rendered, with their dialects.
    pub fn pieces(&self) -> impl Iterator<Item = (DialectId, &Bytes)> {
        let mask = self.pieces;
        self.frames
            .iter()
            .enumerate()
            .filter(move |(d, _)| mask & (1 << d) != 0)
            .filter_map(|(d, f)| Some((DialectId(d as u8), f.as_ref()?)))
    }
}

/// Builds a text frame from whatever `write` appends.
pub fn text_frame(capacity: usize, write: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    let mut buf = Vec::with_capacity(MAX_HEADER_LEN + capacity);
    buf.resize(MAX_HEADER_LEN, 0);
    write(&mut buf);
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = write_header(Opcode::Text, buf.len() - MAX_HEADER_LEN, &mut head);
    buf[..MAX_HEADER_LEN].copy_from_slice(&head);
    Bytes::from(buf).slice(MAX_HEADER_LEN - n..)
}

/// An update or snapshot frame.
pub fn update_frame<D: Dialect + ?Sized>(dialect: &D, update: &Update<'_>) -> Bytes {
    text_frame(96 + update.data.len(), |out| dialect.encode_update(update, out))
}

/// An update or snapshot frame, or `None` when the dialect has nothing to say of it (a channel it does not
/// carry).
pub fn try_update_frame<D: Dialect + ?Sized>(dialect: &D, update: &Update<'_>) -> Option<Bytes> {
    let mut written = false;
    let frame = text_frame(96 + update.data.len(), |out| {
        let start = out.len();
        dialect.encode_update(update, out);
        written = out.len() > start;
    });
    written.then_some(frame)
}

/// An update frame with a `"signature"` field after its other fields: the object of [`update_frame`] with
/// `,"signature":"<signature>"` before its closing brace. `signature` must need no JSON escaping (base64).
pub fn signed_update_frame<D: Dialect + ?Sized>(dialect: &D, update: &Update<'_>, signature: &str) -> Bytes {
    text_frame(112 + update.data.len() + signature.len(), |out| {
        let start = out.len();
        dialect.encode_update(update, out);
        if out.len() > start && out.last() == Some(&b'}') {
            out.pop();
            out.extend_from_slice(b",\"signature\":\"");
            out.extend_from_slice(signature.as_bytes());
            out.extend_from_slice(b"\"}");
        }
    })
}

/// A reply frame.
pub fn reply_frame<D: Dialect + ?Sized>(dialect: &D, reply: &Reply<'_>, now: Micros) -> Bytes {
    text_frame(160, |out| dialect.encode_reply(reply, now, out))
}

/// A reply frame, or `None` when the dialect has no such reply (a welcome, a pong).
pub fn try_reply_frame<D: Dialect + ?Sized>(dialect: &D, reply: &Reply<'_>, now: Micros) -> Option<Bytes> {
    try_reply_frame_to(dialect, None, reply, now)
}

/// [`try_reply_frame`] to a connection of `user` ([`Dialect::encode_reply_to`]).
pub fn try_reply_frame_to<D: Dialect + ?Sized>(
    dialect: &D,
    user: Option<&str>,
    reply: &Reply<'_>,
    now: Micros,
) -> Option<Bytes> {
    let mut written = false;
    let frame = text_frame(160, |out| {
        let start = out.len();
        dialect.encode_reply_to(user, reply, now, out);
        written = out.len() > start;
    });
    written.then_some(frame)
}

/// The JSON payload of a server frame built here (skips its header); for tests and tools.
pub fn payload(frame: &[u8]) -> &[u8] {
    tickwire_core::ws::payload_of(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickwire_core::protocol::canonical::Canonical;
    use tickwire_core::protocol::UpdateKind;
    use tickwire_core::Channel;

    #[test]
    fn frames_parse_as_websocket_text_with_json() {
        for size in [10usize, 200, 70_000] {
            let data = format!("{{\"symbol\":\"AAPL\",\"pad\":\"{}\"}}", "x".repeat(size));
            let u = Update {
                kind: UpdateKind::Update,
                channel: Channel::Quotes,
                sequence: 7,
                timestamp: 0,
                source_ts: None,
                data: data.as_bytes(),
                day: None,
                key: "",
            };
            let f = update_frame(&Canonical, &u);
            assert_eq!(f[0], 0x81);
            let body = payload(&f);
            let declared = match f[1] {
                126 => usize::from(u16::from_be_bytes([f[2], f[3]])),
                127 => u64::from_be_bytes(f[2..10].try_into().unwrap()) as usize,
                n => usize::from(n),
            };
            assert_eq!(declared, body.len());
            let v: serde_json::Value = serde_json::from_slice(body).unwrap();
            assert_eq!(v["sequence"], 7);
        }
    }
}
