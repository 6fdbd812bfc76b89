//! Pieces made of records: what a dialect that batches per connection renders once per update (one record
//! per event of its own, with the update's time and a key for folding), and reads back when a
//! connection's window closes. The format is the server's own, never on the wire.

use crate::time::Micros;

/// Appends one record to a piece: its kind, the update's time, its key (for folding) and its JSON.
pub fn record(out: &mut Vec<u8>, kind: u8, at: Micros, key: &str, json: &[u8]) {
    let key = &key.as_bytes()[..key.len().min(255)];
    out.push(kind);
    out.extend_from_slice(&at.to_le_bytes());
    out.push(key.len() as u8);
    out.extend_from_slice(key);
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(json);
}

/// One record of a piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub kind: u8,
    pub at: Micros,
    pub key: &'a [u8],
    pub json: &'a [u8],
}

/// The records of a piece (written by [`record`]; a truncated tail is ignored).
pub fn records(mut piece: &[u8]) -> impl Iterator<Item = Record<'_>> {
    std::iter::from_fn(move || {
        let (&kind, rest) = piece.split_first()?;
        let at = Micros::from_le_bytes(rest.get(..8)?.try_into().ok()?);
        let key_len = usize::from(*rest.get(8)?);
        let key = rest.get(9..9 + key_len)?;
        let rest = &rest[9 + key_len..];
        let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let json = rest.get(4..4 + len)?;
        piece = &rest[4 + len..];
        Some(Record { kind, at, key, json })
    })
}
