//! A board: one shard's latest *pieces* of a batching dialect (seed 001's per-symbol `price_update`
//! entries), and the connections they are assembled for when an interval closes.
//!
//! A topic's owner renders a piece once per update; a shard with members stores it once, whatever their
//! number (the latest per symbol, until the interval closes). At the close, members with every symbol share
//! one frame; a member with named symbols gets a frame of the changed pieces it names, copied from the
//! rendered bytes. A member whose symbols did not change gets nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use tickwire_core::deflate::{compress_frame, fits_window, Level};
use tickwire_core::protocol::Dialect;
use tickwire_core::time::Micros;

use crate::frame::text_frame;
use crate::index::Sink;
use crate::outbound::{KEEP, NO_STAMP};

/// See the module docs. `S` is a subscriber, as in the subscription index.
#[derive(Debug)]
pub struct Board<S> {
    /// The latest piece of each symbol that changed in the current interval, by symbol (frames list them in
    /// symbol order).
    changed: BTreeMap<Arc<str>, Bytes>,
    /// Members with every symbol, by key.
    every: HashMap<u64, S>,
    /// Members with named symbols, by key.
    named: HashMap<u64, (S, HashSet<Arc<str>>)>,
}

impl<S> Default for Board<S> {
    fn default() -> Self {
        Board { changed: BTreeMap::new(), every: HashMap::new(), named: HashMap::new() }
    }
}

impl<S: Sink + Clone> Board<S> {
    /// `sink` now wants `symbol`'s pieces (`None`: every symbol's).
    pub fn join(&mut self, sink: &S, symbol: Option<&Arc<str>>) {
        match symbol {
            None => {
                self.every.insert(sink.key(), sink.clone());
            }
            Some(symbol) => {
                self.named.entry(sink.key()).or_insert_with(|| (sink.clone(), HashSet::new())).1.insert(symbol.clone());
            }
        }
    }

    /// Connection `key` no longer wants `symbol` (`None`: the every-symbol membership).
    pub fn leave(&mut self, key: u64, symbol: Option<&str>) {
        match symbol {
            None => {
                self.every.remove(&key);
            }
            Some(symbol) => {
                if let Some((_, symbols)) = self.named.get_mut(&key) {
                    symbols.remove(symbol);
                    if symbols.is_empty() {
                        self.named.remove(&key);
                    }
                }
            }
        }
    }

    /// Whether any connection is a member.
    pub fn has_members(&self) -> bool {
        !self.every.is_empty() || !self.named.is_empty()
    }

    /// A symbol's new piece: the latest of the interval.
    pub fn store(&mut self, symbol: &Arc<str>, piece: &Bytes) {
        match self.changed.get_mut(symbol) {
            Some(p) => *p = piece.clone(),
            None => {
                self.changed.insert(symbol.clone(), piece.clone());
            }
        }
    }

    /// Closes the interval: pushes each member its frame of the changed pieces (written by `codec`), and
    /// forgets them. A frame goes deflated (at `level`, once) to members that take deflated frames. Returns
    /// the frames pushed and their bytes.
    pub fn flush(&mut self, codec: &dyn Dialect, level: Level, now: Micros) -> (usize, usize) {
        if self.changed.is_empty() {
            return (0, 0);
        }
        let (mut frames, mut bytes) = (0, 0);
        let every: Vec<&Bytes> = self.changed.values().collect();
        if !self.every.is_empty() {
            let frame = batch_frame(codec, &every, now);
            let mut deflated: Option<Option<Bytes>> = None;
            for sink in self.every.values() {
                let bits = sink.deflate_bits();
                let out = match fits_window(&frame, bits) {
                    true => deflated.get_or_insert_with(|| compress_frame(&frame, level)).as_ref().unwrap_or(&frame),
                    false => &frame,
                };
                sink.push(out, NO_STAMP, KEEP);
                bytes += out.len();
            }
            frames += self.every.len();
        }
        for (key, (sink, symbols)) in &self.named {
            if self.every.contains_key(key) {
                continue; // it has every symbol already
            }
            let mine: Vec<&Bytes> = self.changed.iter().filter(|(s, _)| symbols.contains(*s)).map(|(_, p)| p).collect();
            if !mine.is_empty() {
                let mut frame = batch_frame(codec, &mine, now);
                if fits_window(&frame, sink.deflate_bits()) {
                    frame = compress_frame(&frame, level).unwrap_or(frame);
                }
                sink.push(&frame, NO_STAMP, KEEP);
                frames += 1;
                bytes += frame.len();
            }
        }
        self.changed.clear();
        (frames, bytes)
    }
}

fn batch_frame(codec: &dyn Dialect, pieces: &[&Bytes], now: Micros) -> Bytes {
    let len: usize = pieces.iter().map(|p| p.len() + 1).sum();
    text_frame(64 + len, |out| codec.encode_batch(pieces, now, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::tests::{Bits, Rec};
    use std::rc::Rc;
    use tickwire_core::protocol::legacy::Legacy;

    fn symbols(frame: &Bytes) -> Vec<String> {
        let v: serde_json::Value = serde_json::from_slice(crate::frame::payload(frame)).unwrap();
        assert_eq!(v["type"], "price_update");
        v["symbols"].as_object().unwrap().iter().map(|(k, p)| format!("{k}={}", p["n"])).collect()
    }

    #[test]
    fn each_member_gets_the_changed_pieces_it_wants_once_per_interval() {
        let mut board = Board::default();
        let (all, also_all, some) = (Rec(1, Rc::default()), Rec(2, Rc::default()), Rec(3, Rc::default()));
        let (aapl, msft, nvda): (Arc<str>, Arc<str>, Arc<str>) = ("AAPL".into(), "MSFT".into(), "NVDA".into());
        board.join(&all, None);
        board.join(&also_all, None);
        board.join(&some, Some(&msft));
        board.join(&some, Some(&nvda));
        let piece = |s: &str, n: u32| Bytes::from(format!(r#""{s}":{{"n":{n}}}"#));
        board.store(&aapl, &piece("AAPL", 1));
        board.store(&msft, &piece("MSFT", 1));
        board.store(&msft, &piece("MSFT", 2));
        assert_eq!(board.flush(&Legacy, Level::default(), 0).0, 3);
        assert_eq!(symbols(&all.1.borrow()[0]), ["AAPL=1", "MSFT=2"], "the latest piece of each changed symbol");
        assert_eq!(all.1.borrow()[0].as_ptr(), also_all.1.borrow()[0].as_ptr(), "one frame for every-symbol members");
        assert_eq!(symbols(&some.1.borrow()[0]), ["MSFT=2"], "only what it names");
        assert_eq!(board.flush(&Legacy, Level::default(), 1), (0, 0), "nothing changed: nothing sent");
        board.store(&aapl, &piece("AAPL", 2));
        board.flush(&Legacy, Level::default(), 2);
        assert_eq!((all.1.borrow().len(), some.1.borrow().len()), (2, 1), "AAPL is not one of its symbols");
        board.leave(3, Some("MSFT"));
        board.leave(3, Some("NVDA"));
        board.leave(1, None);
        board.leave(2, None);
        assert!(!board.has_members());
    }

    #[test]
    fn compressing_members_share_one_deflated_frame() {
        let mut board = Board::default();
        let members = [0u8, 15, 15, 9].map(|bits| Bits(u64::from(bits) * 10 + 1, bits, Rc::default()));
        let members = [members[0].clone(), members[1].clone(), Bits(99, 15, Rc::default()), members[3].clone()];
        for m in &members {
            board.join(m, None);
        }
        for i in 0..20 {
            let symbol: Arc<str> = format!("SYM{i}").into();
            board.store(&symbol, &Bytes::from(format!(r#""SYM{i}":{{"price":{i}.5,"change":0.1}}"#)));
        }
        board.flush(&Legacy, Level::default(), 0);
        let got: Vec<Bytes> = members.iter().map(|m| m.2.borrow()[0].clone()).collect();
        assert_eq!(got[0][0], 0x81, "plain for the member that does not compress");
        assert_eq!((got[1][0], got[2][0]), (0xC1, 0xC1));
        assert_eq!(got[1].as_ptr(), got[2].as_ptr(), "deflated once for both");
        assert_eq!(got[3].as_ptr(), got[0].as_ptr(), "a 512-byte window is too small for this frame: plain");
        let inflated = tickwire_core::deflate::Inflater::new().inflate(crate::frame::payload(&got[1]), 1 << 16);
        assert_eq!(inflated.unwrap(), crate::frame::payload(&got[0]));
    }
}
