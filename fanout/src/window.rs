//! Windows: per connection, the pieces of a dialect that batches per connection (seed 002's portfolio
//! stream), collected for a window and then handed to the connection, which writes its frame from them
//! ([`tickwire_core::protocol::Dialect::encode_window`]).
//!
//! The first piece for a quiet connection goes at once (a lone event is not held back); it opens a window,
//! and what comes during it waits for its end, to go as one frame. A window that collected nothing closes
//! quietly, and the next piece goes at once again. A dialect's windows have one length (each dialect has
//! its own), so they end in the order they opened: a queue per length, not a timer per connection.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use tickwire_core::time::Micros;

use crate::index::Sink;

#[derive(Debug)]
struct Open<S> {
    sink: S,
    pieces: Vec<Bytes>,
    ends: Micros,
}

/// See the module docs. `S` is a subscriber, as in the subscription index.
#[derive(Debug)]
pub struct Windows<S> {
    open: HashMap<u64, Open<S>>,
    /// Per window length, `(end, connection)` in the order the windows end.
    ends: Vec<(Micros, VecDeque<(Micros, u64)>)>,
}

impl<S: Sink + Clone> Default for Windows<S> {
    fn default() -> Self {
        Windows::new()
    }
}

impl<S: Sink + Clone> Windows<S> {
    pub fn new() -> Windows<S> {
        Windows { open: HashMap::new(), ends: Vec::new() }
    }

    /// Pieces for `sink` (one update's, or a subscription's starting state): handed over at once if it has
    /// no window open, which opens one `every` long (none when `every` is 0); otherwise kept for the end of
    /// its window. Returns whether they went at once.
    pub fn add(&mut self, sink: &S, pieces: &[Bytes], now: Micros, every: Micros) -> bool {
        if pieces.is_empty() {
            return false;
        }
        let key = sink.key();
        if let Some(w) = self.open.get_mut(&key) {
            w.pieces.extend_from_slice(pieces);
            return false;
        }
        sink.push_window(pieces, now);
        if every > 0 {
            let ends = now + every;
            self.open.insert(key, Open { sink: sink.clone(), pieces: Vec::new(), ends });
            self.queue(every).push_back((ends, key));
        }
        true
    }

    fn queue(&mut self, every: Micros) -> &mut VecDeque<(Micros, u64)> {
        let i = match self.ends.iter().position(|(e, _)| *e == every) {
            Some(i) => i,
            None => {
                self.ends.push((every, VecDeque::new()));
                self.ends.len() - 1
            }
        };
        &mut self.ends[i].1
    }

    /// Ends the windows due by `now`: each hands its pieces to its connection in one go and opens the next
    /// window, or, empty, closes. Returns how many handed pieces.
    pub fn flush_due(&mut self, now: Micros) -> usize {
        let mut handed = 0;
        for (every, queue) in &mut self.ends {
            while let Some(&(ends, key)) = queue.front() {
                if ends > now {
                    break;
                }
                queue.pop_front();
                let Some(w) = self.open.get_mut(&key).filter(|w| w.ends == ends) else { continue };
                if w.pieces.is_empty() {
                    self.open.remove(&key);
                    continue;
                }
                let pieces = std::mem::take(&mut w.pieces);
                w.sink.push_window(&pieces, now);
                handed += 1;
                w.ends = now + *every;
                queue.push_back((w.ends, key));
            }
        }
        handed
    }

    /// When the next window ends, if one is open.
    pub fn next_due(&self) -> Option<Micros> {
        self.ends.iter().filter_map(|(_, q)| q.front()).map(|&(ends, _)| ends).min()
    }

    /// Windows open now.
    pub fn open(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// Each hand-over: when, and its pieces.
    type Got = Rc<RefCell<Vec<(Micros, Vec<Bytes>)>>>;

    /// A connection that keeps what each hand-over brought.
    #[derive(Debug, Clone)]
    struct Conn(u64, Got);

    impl Sink for Conn {
        fn key(&self) -> u64 {
            self.0
        }
        fn push(&self, _: &Bytes, _: Micros, _: u64) {
            unreachable!("windows hand pieces over, never frames")
        }
        fn push_window(&self, pieces: &[Bytes], now: Micros) {
            self.1.borrow_mut().push((now, pieces.to_vec()));
        }
    }

    const EVERY: Micros = 1_000;

    fn p(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[test]
    fn the_first_piece_goes_at_once_the_rest_of_its_window_together_at_its_end() {
        let mut w = Windows::new();
        let got = Rc::new(RefCell::new(Vec::new()));
        let c = Conn(7, got.clone());
        assert!(w.add(&c, &[p("a")], 10, EVERY), "a quiet connection's first piece goes at once");
        assert!(!w.add(&c, &[p("b")], 20, EVERY));
        assert!(!w.add(&c, &[p("c"), p("d")], 500, EVERY));
        assert_eq!(w.next_due(), Some(1_010));
        assert_eq!(w.flush_due(1_009), 0, "not yet");
        assert_eq!(w.flush_due(1_010), 1);
        assert_eq!(*got.borrow(), [(10, vec![p("a")]), (1_010, vec![p("b"), p("c"), p("d")])]);
        // The next window opened at the hand-over; it collects nothing, closes, and the connection is quiet.
        assert_eq!((w.open(), w.next_due()), (1, Some(2_010)));
        assert_eq!(w.flush_due(2_010), 0);
        assert_eq!((w.open(), w.next_due()), (0, None));
        assert!(w.add(&c, &[p("e")], 3_000, EVERY), "quiet again: at once");
        assert_eq!(got.borrow().len(), 3);
    }

    #[test]
    fn windows_of_connections_end_in_the_order_they_opened() {
        let mut w = Windows::new();
        let got = Rc::new(RefCell::new(Vec::new()));
        let (a, b) = (Conn(1, got.clone()), Conn(2, got.clone()));
        w.add(&a, &[p("a1")], 0, 100);
        w.add(&b, &[p("b1")], 50, 100);
        w.add(&a, &[p("a2")], 60, 100);
        w.add(&b, &[p("b2")], 60, 100);
        assert_eq!(w.flush_due(100), 1, "a's window ends first");
        assert_eq!(w.flush_due(150), 1);
        let order: Vec<Bytes> = got.borrow().iter().flat_map(|(_, ps)| ps.clone()).collect();
        assert_eq!(order, [p("a1"), p("b1"), p("a2"), p("b2")]);
    }

    #[test]
    fn no_window_means_at_once_and_each_length_keeps_its_own_order() {
        let mut w = Windows::new();
        let got = Rc::new(RefCell::new(Vec::new()));
        let (a, b, c) = (Conn(1, got.clone()), Conn(2, got.clone()), Conn(3, got.clone()));
        for t in [0, 1, 2] {
            assert!(w.add(&a, &[p("a")], t, 0), "no window: every piece at once");
        }
        assert_eq!((w.open(), w.next_due()), (0, None));
        w.add(&b, &[p("b1")], 0, 1_000);
        w.add(&c, &[p("c1")], 10, 100);
        w.add(&b, &[p("b2")], 20, 1_000);
        w.add(&c, &[p("c2")], 20, 100);
        assert_eq!(w.next_due(), Some(110), "the shorter window ends first");
        assert_eq!(w.flush_due(110), 1);
        assert_eq!(w.flush_due(1_000), 1);
        let last: Vec<Bytes> = got.borrow().iter().rev().take(2).flat_map(|(_, ps)| ps.clone()).collect();
        assert_eq!(last, [p("b2"), p("c2")]);
    }
}
