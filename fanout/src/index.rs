//! A shard's subscription index: topic to the local subscribers, with `throttle_ms` conflation.
//!
//! Subscribers are kept in a dense `Vec` per topic (with a position map for O(1) removal), so delivering an
//! update is a walk over a slice calling [`Sink::push`]: a refcount increment per subscriber, no allocation,
//! no lock. A subscriber is *pending* from its subscribe until its snapshot arrives from the topic's owner;
//! updates reaching it before then are older than the snapshot and are skipped, so the stream it sees starts
//! right after the snapshot's sequence with no gap and no duplicate.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use tickwire_core::protocol::{DialectId, DIALECT_COUNT};
use tickwire_core::time::Micros;
use tickwire_core::Topic;

use crate::frame::Rendered;
use crate::interest::{wire, WIRES};
use crate::outbound::{KEEP, NO_STAMP};

/// Where a subscriber's frames go (a connection's outbound queue, in the server).
pub trait Sink {
    /// A key unique among the shard's live connections.
    fn key(&self) -> u64;
    /// The dialect its frames are rendered in.
    fn dialect(&self) -> DialectId {
        DialectId::CANONICAL
    }
    /// The window bits of the deflated frames it takes (permessage-deflate), 0 when it takes plain ones only.
    fn deflate_bits(&self) -> u8 {
        0
    }
    /// Queues a frame for this subscriber: `ingested` is when its update was sequenced ([`NO_STAMP`] for a
    /// snapshot, a replay or a throttled frame sent later), `conflate` the key under which a slow consumer's
    /// queue may conflate it ([`KEEP`]: never; see [`crate::outbound::Outbound::push`]).
    fn push(&self, frame: &Bytes, ingested: Micros, conflate: u64);
    /// Queues frames that go together, never conflated and unstamped (a snapshot, a replay, a subscriber's
    /// missed critical messages): one by one unless the sink can hand them to its socket in one write.
    fn push_all(&self, frames: &[Bytes]) {
        for frame in frames {
            self.push(frame, NO_STAMP, KEEP);
        }
    }
    /// Hands over the pieces of a window (a dialect that batches per connection, [`crate::window`]): the
    /// subscriber writes its frame from them. Sinks of other dialects never get any.
    fn push_window(&self, _pieces: &[Bytes], _now: Micros) {}
}

/// Conflation state of a throttled subscription: at most one frame per window, always the latest.
#[derive(Debug, Clone)]
struct Throttle {
    window: Micros,
    last_sent: Option<Micros>,
    pending: Option<Bytes>,
}

#[derive(Debug)]
struct Subscriber<S> {
    sink: S,
    /// Which subscribe of this connection to this topic it is: only that subscribe's snapshot activates it.
    generation: u64,
    dialect: DialectId,
    /// [`Sink::deflate_bits`].
    bits: u8,
    live: bool,
    throttle: Option<Throttle>,
}

#[derive(Debug)]
struct TopicSubs<S> {
    subs: Vec<Subscriber<S>>,
    pos: HashMap<u64, usize>,
    throttled: usize,
    /// Subscribers per wire ([`crate::interest::wire`]).
    wires: [u32; WIRES],
    /// The topic's conflation key ([`KEEP`] for private topics, whose every frame matters).
    conflate: u64,
}

/// What [`SubscriptionIndex::add`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// The topic's first subscriber of its dialect on this shard: register interest.
    FirstOnShard,
    New,
    /// The connection was subscribed already; its throttle was replaced and it waits for a new snapshot.
    Replaced,
}

/// See the module docs.
#[derive(Debug)]
pub struct SubscriptionIndex<S> {
    topics: HashMap<Topic, TopicSubs<S>>,
    /// Topics with at least one throttled subscriber, swept by [`SubscriptionIndex::flush_throttled`].
    throttled_topics: HashSet<Topic>,
    subscriptions: usize,
    /// The last conflation key given to a topic.
    last_key: u64,
}

impl<S> Default for SubscriptionIndex<S> {
    fn default() -> Self {
        SubscriptionIndex { topics: HashMap::new(), throttled_topics: HashSet::new(), subscriptions: 0, last_key: 0 }
    }
}

impl<S: Sink> SubscriptionIndex<S> {
    pub fn new() -> SubscriptionIndex<S> {
        SubscriptionIndex::default()
    }

    /// Adds (or replaces) a pending subscription of `sink` to `topic`, made by the subscribe `generation`
    /// (unique per connection and topic, e.g. a shard-wide counter).
    pub fn add(&mut self, topic: &Topic, sink: S, throttle_ms: u32, generation: u64) -> Added {
        if !self.topics.contains_key(topic) {
            self.last_key += 1;
        }
        // A wildcard of a per-symbol channel carries every symbol: conflating it would drop symbols.
        let wildcard =
            topic.channel.scope() == tickwire_core::Scope::PerSymbol && &*topic.key == tickwire_core::topic::ALL;
        let conflate = if topic.channel.is_private() || wildcard { KEEP } else { self.last_key };
        let entry = self.topics.entry(topic.clone()).or_insert_with(|| TopicSubs {
            subs: Vec::new(),
            pos: HashMap::new(),
            throttled: 0,
            wires: [0; WIRES],
            conflate,
        });
        let throttle = (throttle_ms > 0).then(|| Throttle {
            window: i64::from(throttle_ms) * 1000,
            last_sent: None,
            pending: None,
        });
        let key = sink.key();
        if let Some(&i) = entry.pos.get(&key) {
            let sub = &mut entry.subs[i];
            entry.throttled = entry.throttled + usize::from(throttle.is_some()) - usize::from(sub.throttle.is_some());
            sub.live = false;
            sub.generation = generation;
            sub.throttle = throttle;
            self.note_throttled(topic);
            return Added::Replaced;
        }
        let (dialect, bits) = (sink.dialect(), sink.deflate_bits());
        entry.throttled += usize::from(throttle.is_some());
        entry.pos.insert(key, entry.subs.len());
        entry.subs.push(Subscriber { sink, generation, dialect, bits, live: false, throttle });
        let count = &mut entry.wires[wire(dialect, bits != 0)];
        *count += 1;
        let first = *count == 1;
        self.subscriptions += 1;
        self.note_throttled(topic);
        if first {
            Added::FirstOnShard
        } else {
            Added::New
        }
    }

    /// The snapshot of `topic` asked for by subscribe `generation` reached the connection `key`: from now on
    /// it receives updates. Returns its sink, to send the snapshot to, if that subscribe still stands (not
    /// when the connection unsubscribed, or subscribed again and waits for a newer snapshot).
    pub fn activate(&mut self, topic: &Topic, key: u64, generation: u64) -> Option<&S> {
        let entry = self.topics.get_mut(topic)?;
        let sub = &mut entry.subs[*entry.pos.get(&key)?];
        if sub.generation != generation {
            return None;
        }
        sub.live = true;
        Some(&sub.sink)
    }

    /// Removes a subscription; returns its dialect, its wire, and whether it was the topic's last subscriber
    /// of that wire on this shard.
    pub fn remove(&mut self, topic: &Topic, key: u64) -> Option<(DialectId, usize, bool)> {
        let entry = self.topics.get_mut(topic)?;
        let i = entry.pos.remove(&key)?;
        let sub = entry.subs.swap_remove(i);
        if let Some(moved) = entry.subs.get(i) {
            entry.pos.insert(moved.sink.key(), i);
        }
        entry.throttled -= usize::from(sub.throttle.is_some());
        let w = wire(sub.dialect, sub.bits != 0);
        let count = &mut entry.wires[w];
        *count -= 1;
        let last_of_wire = *count == 0;
        self.subscriptions -= 1;
        if entry.subs.is_empty() {
            self.topics.remove(topic);
        }
        self.note_throttled(topic);
        Some((sub.dialect, w, last_of_wire))
    }

    /// Delivers an update of `topic`, sequenced at `ingested` ([`NO_STAMP`] for none), to its live
    /// subscribers, each getting the frame of its dialect; returns how many got it now, and their bytes. Those get the stamp with it; a throttled subscriber's
    /// conflated frame, sent later by [`SubscriptionIndex::flush_throttled`], goes without it: its delay is
    /// the window the client chose.
    pub fn deliver(&mut self, topic: &Topic, frames: &Rendered, ingested: Micros, now: Micros) -> (usize, usize) {
        let Some(entry) = self.topics.get_mut(topic) else { return (0, 0) };
        // No walk when none of the topic's dialects has a frame of this update: a dialect fed by pieces
        // (the `/ws` interval boards, windows) gets them elsewhere, and its subscribers, all 10,000 of an
        // auto-subscribed wildcard, would each be visited for nothing.
        let (plain, deflating) = entry.wires.split_at(DIALECT_COUNT);
        let framed =
            (0..DIALECT_COUNT).any(|d| plain[d] + deflating[d] > 0 && frames.get(DialectId(d as u8)).is_some());
        if !framed {
            return (0, 0);
        }
        let key = entry.conflate;
        let (mut n, mut bytes) = (0, 0);
        for sub in entry.subs.iter_mut().filter(|s| s.live) {
            let Some(frame) = frames.get_for(sub.dialect, sub.bits) else { continue };
            match &mut sub.throttle {
                None => {
                    sub.sink.push(frame, ingested, key);
                    n += 1;
                    bytes += frame.len();
                }
                Some(t) => {
                    if t.last_sent.is_none_or(|last| now >= last + t.window) {
                        sub.sink.push(frame, ingested, key);
                        t.last_sent = Some(now);
                        t.pending = None;
                        n += 1;
                        bytes += frame.len();
                    } else {
                        t.pending = Some(frame.clone());
                    }
                }
            }
        }
        (n, bytes)
    }

    /// The live subscribers of `topic` that speak `dialect`.
    pub fn live_of(&self, topic: &Topic, dialect: DialectId) -> impl Iterator<Item = &S> {
        self.topics
            .get(topic)
            .into_iter()
            .flat_map(|entry| &entry.subs)
            .filter(move |s| s.live && s.dialect == dialect)
            .map(|s| &s.sink)
    }

    /// Sends each throttled subscription's pending frame whose window has passed; returns how many.
    pub fn flush_throttled(&mut self, now: Micros) -> usize {
        let mut n = 0;
        self.flush_throttled_each(now, |_, frames, _| n += frames);
        n
    }

    /// [`SubscriptionIndex::flush_throttled`], calling `sent(topic, frames, bytes)` once per topic that sent
    /// something (for per-channel counts kept by the caller, once per topic rather than per subscriber).
    pub fn flush_throttled_each(&mut self, now: Micros, mut sent: impl FnMut(&Topic, usize, usize)) {
        for topic in &self.throttled_topics {
            let Some(entry) = self.topics.get_mut(topic) else { continue };
            let (mut frames, mut bytes) = (0, 0);
            let key = entry.conflate;
            for sub in &mut entry.subs {
                let Some(t) = &mut sub.throttle else { continue };
                if t.pending.is_some() && t.last_sent.is_none_or(|last| now >= last + t.window) {
                    if let Some(frame) = t.pending.take() {
                        sub.sink.push(&frame, NO_STAMP, key);
                        t.last_sent = Some(now);
                        frames += 1;
                        bytes += frame.len();
                    }
                }
            }
            if frames > 0 {
                sent(topic, frames, bytes);
            }
        }
    }

    /// When the earliest throttled frame waiting may go ([`SubscriptionIndex::flush_throttled`]), if any waits.
    pub fn next_throttle_due(&self) -> Option<Micros> {
        self.throttled_topics
            .iter()
            .filter_map(|topic| self.topics.get(topic))
            .flat_map(|entry| &entry.subs)
            .filter_map(|sub| sub.throttle.as_ref().filter(|t| t.pending.is_some()))
            .map(|t| t.last_sent.map_or(0, |last| last + t.window))
            .min()
    }

    /// Whether this shard has subscribers of `topic`.
    pub fn has(&self, topic: &Topic) -> bool {
        self.topics.contains_key(topic)
    }

    /// Subscribers of `topic` on this shard (live or pending).
    pub fn subscribers(&self, topic: &Topic) -> usize {
        self.topics.get(topic).map_or(0, |t| t.subs.len())
    }

    /// Subscriptions on this shard.
    pub fn subscriptions(&self) -> usize {
        self.subscriptions
    }

    /// Topics with subscribers on this shard.
    pub fn topics(&self) -> usize {
        self.topics.len()
    }

    fn note_throttled(&mut self, topic: &Topic) {
        let throttled = self.topics.get(topic).is_some_and(|t| t.throttled > 0);
        if throttled {
            if !self.throttled_topics.contains(topic) {
                self.throttled_topics.insert(topic.clone());
            }
        } else {
            self.throttled_topics.remove(topic);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;
    use tickwire_core::Channel;

    /// A subscriber keeping what it got (shared with the board's tests).
    #[derive(Debug, Clone)]
    pub(crate) struct Rec(pub u64, pub Rc<RefCell<Vec<Bytes>>>);

    /// A canonical subscriber that agreed to permessage-deflate with windows of `.1` bits (0: it did not).
    #[derive(Debug, Clone)]
    pub(crate) struct Bits(pub u64, pub u8, pub Rc<RefCell<Vec<Bytes>>>);

    impl Sink for Bits {
        fn key(&self) -> u64 {
            self.0
        }

        fn deflate_bits(&self) -> u8 {
            self.1
        }

        fn push(&self, frame: &Bytes, _: Micros, _: u64) {
            self.2.borrow_mut().push(frame.clone());
        }
    }

    impl Sink for Rec {
        fn key(&self) -> u64 {
            self.0
        }
        fn push(&self, frame: &Bytes, _: Micros, _: u64) {
            self.1.borrow_mut().push(frame.clone());
        }
    }

    fn rec(k: u64) -> Rec {
        Rec(k, Rc::default())
    }

    fn got(r: &Rec) -> Vec<&'static str> {
        r.1.borrow().iter().map(|b| std::str::from_utf8(b).unwrap().to_owned().leak() as &str).collect()
    }

    #[test]
    fn pending_until_snapshot_then_live() {
        let mut idx = SubscriptionIndex::new();
        let t = Topic::new(Channel::Quotes, "AAPL");
        let a = rec(1);
        assert_eq!(idx.add(&t, a.clone(), 0, 0), Added::FirstOnShard);
        idx.deliver(&t, &Rendered::canonical(Bytes::from_static(b"u1")), NO_STAMP, 0);
        assert!(got(&a).is_empty(), "pending subscribers skip updates older than their snapshot");
        idx.activate(&t, 1, 0).unwrap().push(&Bytes::from_static(b"snap"), NO_STAMP, KEEP);
        idx.deliver(&t, &Rendered::canonical(Bytes::from_static(b"u2")), NO_STAMP, 0);
        assert_eq!(got(&a), ["snap", "u2"]);
    }

    /// A subscriber of dialect `.1` taking deflated frames of `.2` bits (0: plain only).
    #[derive(Debug, Clone)]
    struct Of(u64, DialectId, u8, Rc<RefCell<Vec<Bytes>>>);

    impl Sink for Of {
        fn key(&self) -> u64 {
            self.0
        }
        fn dialect(&self) -> DialectId {
            self.1
        }
        fn deflate_bits(&self) -> u8 {
            self.2
        }
        fn push(&self, frame: &Bytes, _: Micros, _: u64) {
            self.3.borrow_mut().push(frame.clone());
        }
    }

    #[test]
    fn an_update_reaches_the_dialects_it_has_frames_for_and_only_those() {
        let t = Topic::new(Channel::Quotes, "AAPL");
        let other = DialectId(1);
        let of = |k, d, bits| Of(k, d, bits, Rc::default());
        // Only subscribers of a dialect the update has no frame for (a piece instead): nothing pushed.
        let mut others = SubscriptionIndex::new();
        let o = of(1, other, 0);
        others.add(&t, o.clone(), 0, 0);
        others.activate(&t, 1, 0);
        let mut piece_only = Rendered::default();
        piece_only.set_piece(other, Bytes::from_static(b"piece"));
        assert_eq!(others.deliver(&t, &piece_only, NO_STAMP, 0), (0, 0));
        assert_eq!(others.deliver(&t, &Rendered::canonical(Bytes::from_static(b"c")), NO_STAMP, 0), (0, 0));
        let mut framed = Rendered::default();
        framed.set(other, Bytes::from_static(b"other"));
        assert_eq!(others.deliver(&t, &framed, NO_STAMP, 0), (1, 5));
        assert_eq!(o.3.borrow().len(), 1);
        // A deflating canonical subscriber and a plain one beside the other dialect's.
        let mut idx = SubscriptionIndex::new();
        let (o, d, p) = (of(1, other, 0), of(2, DialectId::CANONICAL, 15), of(3, DialectId::CANONICAL, 0));
        for s in [&o, &d, &p] {
            idx.add(&t, s.clone(), 0, 0);
            idx.activate(&t, s.0, 0);
        }
        let mut update = Rendered::canonical(Bytes::from_static(b"plain frame"));
        update.set_deflated(DialectId::CANONICAL, Bytes::from_static(b"zz"));
        update.set_piece(other, Bytes::from_static(b"piece"));
        assert_eq!(idx.deliver(&t, &update, NO_STAMP, 0), (2, 13));
        assert!(o.3.borrow().is_empty());
        assert_eq!(d.3.borrow()[..], [Bytes::from_static(b"zz")]);
        assert_eq!(p.3.borrow()[..], [Bytes::from_static(b"plain frame")]);
        // The deflating one alone is still reached.
        idx.remove(&t, 3);
        assert_eq!(idx.deliver(&t, &update, NO_STAMP, 0), (1, 2));
    }

    #[test]
    fn remove_keeps_positions_right() {
        let mut idx = SubscriptionIndex::new();
        let t = Topic::new(Channel::Quotes, "AAPL");
        let subs: Vec<_> = (0..5).map(rec).collect();
        for s in &subs {
            idx.add(&t, s.clone(), 0, 0);
            idx.activate(&t, s.0, 0);
        }
        assert_eq!(idx.remove(&t, 1), Some((DialectId::CANONICAL, 0, false)));
        assert_eq!(idx.remove(&t, 1), None);
        idx.deliver(&t, &Rendered::canonical(Bytes::from_static(b"x")), NO_STAMP, 0);
        let counts: Vec<_> = subs.iter().map(|s| got(s).len()).collect();
        assert_eq!(counts, [1, 0, 1, 1, 1]);
        for k in [0, 4, 2] {
            assert_eq!(idx.remove(&t, k), Some((DialectId::CANONICAL, 0, false)));
        }
        assert_eq!(idx.remove(&t, 3), Some((DialectId::CANONICAL, 0, true)));
        assert!(!idx.has(&t));
        assert_eq!(idx.subscriptions(), 0);
    }

    #[test]
    fn stamps_reach_subscribers_that_get_the_frame_now() {
        #[derive(Clone)]
        struct Stamps(u64, Rc<RefCell<Vec<Micros>>>);
        impl Sink for Stamps {
            fn key(&self) -> u64 {
                self.0
            }
            fn push(&self, _: &Bytes, ingested: Micros, _: u64) {
                self.1.borrow_mut().push(ingested);
            }
        }
        let mut idx = SubscriptionIndex::new();
        let t = Topic::new(Channel::Quotes, "AAPL");
        let (plain, throttled) = (Stamps(1, Rc::default()), Stamps(2, Rc::default()));
        idx.add(&t, plain.clone(), 0, 0);
        idx.add(&t, throttled.clone(), 100, 0);
        idx.activate(&t, 1, 0);
        idx.activate(&t, 2, 0);
        let frame = Rendered::canonical(Bytes::from_static(b"12345"));
        assert_eq!(idx.deliver(&t, &frame, 7, 0).0, 2);
        assert_eq!(idx.deliver(&t, &frame, 8, 1000).0, 1, "the throttled one waits");
        assert_eq!(idx.deliver(&t, &frame, NO_STAMP, 2000).0, 1);
        let mut sent = Vec::new();
        idx.flush_throttled_each(200_000, |topic, frames, bytes| sent.push((topic.clone(), frames, bytes)));
        assert_eq!(sent, [(t.clone(), 1, 5)]);
        assert_eq!(*plain.1.borrow(), [7, 8, NO_STAMP]);
        assert_eq!(*throttled.1.borrow(), [7, NO_STAMP], "a conflated frame is sent unstamped");
    }

    #[test]
    fn throttle_sends_at_most_one_per_window_and_the_latest() {
        let mut idx = SubscriptionIndex::new();
        let t = Topic::new(Channel::Quotes, "AAPL");
        let slow = rec(1);
        let fast = rec(2);
        idx.add(&t, slow.clone(), 100, 0);
        idx.add(&t, fast.clone(), 0, 0);
        idx.activate(&t, 1, 0);
        idx.activate(&t, 2, 0);
        let ms = 1000;
        for (i, name) in ["a", "b", "c", "d"].iter().enumerate() {
            idx.deliver(&t, &Rendered::canonical(Bytes::from_static(name.as_bytes())), NO_STAMP, i as i64 * 30 * ms);
        }
        // a at 0 is sent; b (30ms) and c (60ms) are conflated; d (90ms) replaces them.
        assert_eq!(got(&slow), ["a"]);
        assert_eq!(idx.flush_throttled(99 * ms), 0);
        assert_eq!(idx.flush_throttled(100 * ms), 1);
        assert_eq!(got(&slow), ["a", "d"]);
        assert_eq!(idx.flush_throttled(300 * ms), 0, "nothing pending");
        assert_eq!(got(&fast), ["a", "b", "c", "d"]);
    }
}
