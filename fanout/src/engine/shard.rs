//! One shard's protocol state, without I/O: the topics it owns (their sequencer, snapshots, history,
//! critical queues and bars), its share of the subscription index and of the interest map, the publish
//! requests it waits on, and the messages it has for its peers.
//!
//! Events come in through methods that take the time (`now`), and what must leave comes out through
//! `poll_*` methods, so that a driver (the server's glommio shards, or the simulation in
//! `tests/simulation.rs`) decides how messages travel and when timers fire:
//!
//! | in | out |
//! |---|---|
//! | [`Shard::publish`] (events from a publisher or the simulator) | [`Shard::poll_shard_msg`]: batches for peers |
//! | [`Shard::handle_shard_msg`] (a peer's message) | [`Shard::poll_completed`], [`Shard::take_published`]: answered publishes |
//! | [`Shard::subscribe`], [`Shard::unsubscribe`], [`Shard::ack`] | frames pushed to subscribers' [`Sink`]s |
//! | [`Shard::handle_timeout`] (throttle windows, bar closes) | [`Shard::poll_timeout`]: when to call it next |
//!
//! What the shard tells persistence goes through a [`Journal`]; its figures go to its [`Stats`].

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use tickwire_core::channel::{Channel, Scope, CATALOG};
use tickwire_core::event::{DayStats, Ingest, QuotePoint, TradePoint};
use tickwire_core::protocol::canonical::Canonical;
use tickwire_core::protocol::DIALECT_COUNT;
use tickwire_core::protocol::{DialectId, ErrorCode, Reply, Update, UpdateKind, DIALECTS};
use tickwire_core::time::Micros;
use tickwire_core::topic::ALL;
use tickwire_core::Topic;

use super::stats::Stats;
use crate::bars::{BarAggregator, ClosedBar};
use crate::board::Board;
use crate::frame::{reply_frame, try_update_frame, Rendered};
use crate::index::{Added, Sink, SubscriptionIndex};
use crate::interest::{wire, InterestMap, ShardInterest, WIRES};
use crate::outbound::NO_STAMP;
use crate::sequencer::{Limits, Resume, Sequenced, Sequencer, SignFn};
use crate::window::Windows;

/// How often bars whose interval ended are closed.
pub const BARS_EVERY: Micros = 100_000;

/// What a shard tells persistence about the topics it owns. Implementations must not block: the server's
/// hands records to a writer thread.
pub trait Journal {
    /// Proof that a critical message is stored, awaited by its publisher.
    type Receipt: std::fmt::Debug;
    /// A critical message was sequenced and queued until acknowledged.
    fn critical_enqueued(&self, topic: &Topic, sequence: u64, frame: &Bytes, now: Micros) -> Option<Self::Receipt>;
    /// A private, not critical, topic has a new sequence.
    fn private_sequenced(&self, topic: &Topic, sequence: u64);
    /// The user acknowledged a critical topic up to `sequence`.
    fn critical_acked(&self, topic: &Topic, sequence: u64, now: Micros);
    /// Whether updates are sequenced elsewhere (the cluster bus: one sequence per topic across nodes). The
    /// owner then hands each update over ([`Journal::sequence`]) instead of sequencing it, and delivers
    /// what comes back stored ([`Shard::apply`]), as every node does.
    fn sequences(&self) -> bool {
        false
    }
    /// Hands one update over to be sequenced and stored; the receipt resolves to its sequence. Called only
    /// when [`Journal::sequences`] says so.
    fn sequence(&self, _topic: &Topic, _data: Bytes, _source_ts: Option<Bytes>, _now: Micros) -> Option<Self::Receipt> {
        None
    }
    /// Where the journal sequences: the shard that owns `topic` needs its updates from now on, after those
    /// already stored (its history, its state, a critical topic's unacknowledged messages), and then
    /// [`Shard::loaded`] with `generation`.
    fn follow(&self, _topic: &Topic, _generation: u64) {}
    /// The shard no longer needs `topic`'s updates (no subscriber of it is left on this node).
    fn unfollow(&self, _topic: &Topic) {}
}

/// A journal that keeps nothing (tests, the simulation).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoJournal;

impl Journal for NoJournal {
    type Receipt = ();

    fn critical_enqueued(&self, _: &Topic, _: u64, _: &Bytes, _: Micros) -> Option<()> {
        None
    }

    fn private_sequenced(&self, _: &Topic, _: u64) {}

    fn critical_acked(&self, _: &Topic, _: u64, _: Micros) {}
}

/// One update for a topic's owner to sequence.
#[derive(Debug)]
pub struct IngestItem {
    /// Position of the event in its publish request.
    pub event: usize,
    pub topic: Topic,
    pub data: Bytes,
    pub source_ts: Option<Bytes>,
    pub trade: Option<TradePoint>,
    pub quote: Option<QuotePoint>,
}

/// Messages between shards, sent in batches. Messages from one shard to another must arrive in the order
/// they were sent; `R` is the [`Journal`]'s receipt.
#[derive(Debug)]
pub enum ShardMsg<R> {
    /// To a topic's owner: sequence these; answer `(origin shard, request)` if set.
    Ingest { items: Vec<IngestItem>, reply: Option<(usize, u64)> },
    /// Back to the origin: the sequences given, as `(event, topic, sequence)`, and one entry per critical
    /// item: its receipt from the journal. Where the journal sequences ([`Journal::sequences`]), the
    /// sequences are 0 and `forwarded` has each item's receipt, which resolves to its sequence.
    Ingested {
        request: u64,
        sequences: Vec<(usize, Topic, u64)>,
        receipts: Vec<Option<R>>,
        forwarded: Vec<(usize, Topic, Option<R>)>,
    },
    /// From a topic's owner to a shard with subscribers: one update sequenced at `ingested`, rendered in
    /// each dialect with subscribers of the topic.
    Fanout { topic: Topic, frames: Rendered, ingested: Micros },
    /// To a topic's owner: connection `conn` of shard `from`, speaking `dialect`, subscribes (its subscribe
    /// `generation`), resuming as asked.
    SnapshotRequest { topic: Topic, from: usize, conn: u64, generation: u64, dialect: DialectId, resume: Resume },
    /// From the owner: what the subscriber gets first (snapshot, replayed history, a `reset`, or unacked
    /// critical messages, see [`crate::sequencer::Start`]); live updates on this channel follow.
    /// The `generation` of the request: the answer to an earlier subscribe that the connection replaced or
    /// ended is dropped.
    Snapshot { topic: Topic, conn: u64, generation: u64, frames: Vec<Bytes>, dropped: u64 },
    /// To a critical topic's owner: the user acknowledged everything up to `sequence`.
    Ack { topic: Topic, sequence: u64 },
    /// To a topic's owner, where the journal sequences: the last subscriber of the topic on the sending
    /// shard left; the owner stops following it if no shard has any.
    Unfollow { topic: Topic },
    /// At shutdown, to every peer: everything this shard sent before has arrived.
    Quiesce,
    /// The driver's own (a test aid): block the receiving shard's thread for this long. The engine ignores it.
    Stall { ms: u64 },
}

/// What a publish request got: its sequences, `(event, topic, sequence)` in event order, and one entry per
/// critical item, its receipt from the journal.
#[derive(Debug)]
pub struct Published<R> {
    pub sequences: Vec<(usize, Topic, u64)>,
    pub receipts: Vec<Option<R>>,
    /// Where the journal sequences: each item's receipt, in the order of `sequences` (whose sequences are
    /// then 0), resolving to its sequence once stored.
    pub forwarded: Vec<(usize, Topic, Option<R>)>,
}

impl<R> Default for Published<R> {
    fn default() -> Self {
        Published { sequences: Vec::new(), receipts: Vec::new(), forwarded: Vec::new() }
    }
}

/// A publish request waiting for its owners' answers.
#[derive(Debug)]
struct Pending<R> {
    remaining: usize,
    done: Published<R>,
}

/// Bugs that can be switched on, to show that the simulation catches them. Never used by the server.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// A resume from sequence n starts after n + 1: one update is skipped.
    ResumeOffByOne,
    /// An ack of sequence n releases n + 1 too: a critical message is lost before it was acknowledged.
    AckReleasesOneMore,
}

/// See the module docs. `S` is a subscriber (a connection, to the server), `J` the journal.
#[derive(Debug)]
pub struct Shard<S, J: Journal> {
    id: usize,
    shards: usize,
    critical_queue: usize,
    index: SubscriptionIndex<S>,
    map: Arc<InterestMap>,
    interest: ShardInterest,
    sequencer: Sequencer<Canonical>,
    bars: BarAggregator,
    pending: HashMap<u64, Pending<J::Receipt>>,
    /// Requests answered since the last [`Shard::poll_completed`].
    completed: Vec<u64>,
    /// Messages for each peer, and the peers with some, in the order they got their first.
    outgoing: Vec<Vec<ShardMsg<J::Receipt>>>,
    ready: Vec<usize>,
    next_id: u64,
    next_bars: Micros,
    quiesced: usize,
    journal: J,
    stats: Arc<Stats>,
    fault: Option<Fault>,
    /// Per channel (catalog order), its wildcard topic `(channel, *)` if it is a per-symbol channel.
    wildcards: Vec<Option<Topic>>,
    /// Per channel, whether this shard has subscribers of its wildcard.
    wild_local: Vec<bool>,
    /// The day statistics of the symbols whose quotes this shard owns.
    days: HashMap<Arc<str>, Option<DayStats>>,
    /// Per dialect, its board of pieces on this shard (batching dialects with members here).
    boards: Vec<Option<Board<S>>>,
    board_every: Micros,
    next_boards: Micros,
    /// Per connection of a dialect that batches per connection (seed 002), its window of pieces.
    windows: Windows<S>,
    /// Per dialect, the length of its connections' windows (0: none, pieces go at once).
    window_every: [Micros; DIALECT_COUNT],
    /// How frames are deflated for subscribers that take deflated frames (permessage-deflate).
    compression: tickwire_core::deflate::Level,
    /// The journal sequences (the cluster bus): see [`Journal::sequences`].
    forwards: bool,
    /// Where the journal sequences: the topics this owner follows, loading (their subscribers' starts
    /// wait) or live.
    followed: HashMap<Topic, Followed>,
}

/// A topic the owner follows on the cluster's bus.
#[derive(Debug)]
enum Followed {
    /// Its stored updates are coming: the starts asked meanwhile wait for [`Shard::loaded`].
    Loading {
        generation: u64,
        waiting: Vec<StartRequest>,
    },
    Live,
}

/// A subscriber's start, asked of the owner.
#[derive(Debug)]
struct StartRequest {
    from: usize,
    conn: u64,
    generation: u64,
    dialect: DialectId,
    resume: Resume,
}

impl<S: Sink + Clone, J: Journal> Shard<S, J> {
    /// Shard `id` of `shards`, sharing the interest `map` with its peers.
    pub fn new(
        id: usize,
        shards: usize,
        map: Arc<InterestMap>,
        limits: Limits,
        signer: Option<SignFn>,
        journal: J,
        stats: Arc<Stats>,
    ) -> Shard<S, J> {
        let journal_sequences = journal.sequences();
        let mut sequencer = Sequencer::with_limits(Canonical, limits);
        if let Some(sign) = signer {
            sequencer = sequencer.with_signer(sign);
        }
        Shard {
            id,
            shards,
            critical_queue: limits.critical_queue,
            index: SubscriptionIndex::new(),
            interest: ShardInterest::new(map.clone(), id),
            map,
            sequencer,
            bars: BarAggregator::new(),
            pending: HashMap::new(),
            completed: Vec::new(),
            outgoing: (0..shards).map(|_| Vec::new()).collect(),
            ready: Vec::new(),
            next_id: 1,
            next_bars: 0,
            quiesced: 0,
            journal,
            stats,
            fault: None,
            wildcards: CATALOG
                .iter()
                .map(|c| (c.scope == Scope::PerSymbol).then(|| Topic::new(c.channel, ALL)))
                .collect(),
            wild_local: vec![false; CATALOG.len()],
            days: HashMap::new(),
            boards: (0..DIALECT_COUNT).map(|_| None).collect(),
            board_every: 3_000_000,
            next_boards: 0,
            windows: Windows::new(),
            window_every: [1_000_000; DIALECT_COUNT],
            compression: tickwire_core::deflate::Level::default(),
            forwards: journal_sequences,
            followed: HashMap::new(),
        }
    }

    /// How frames are deflated for subscribers that agreed to permessage-deflate.
    pub fn set_compression(&mut self, level: tickwire_core::deflate::Level) {
        self.compression = level;
    }

    pub fn id(&self) -> usize {
        self.id
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Continues a private topic this shard owns from an earlier run: its sequence and unacked messages.
    pub fn restore(&mut self, topic: &Topic, sequence: u64, unacked: Vec<(u64, Bytes)>) {
        self.sequencer.restore(topic, sequence, unacked);
    }

    /// The public topics this shard sequenced, with their last sequences.
    pub fn public_sequences(&self) -> Vec<(Topic, u64)> {
        self.sequencer.public_sequences()
    }

    /// Switches a [`Fault`] on (the simulation's proof that it catches bugs).
    #[doc(hidden)]
    pub fn inject_fault(&mut self, fault: Fault) {
        self.fault = Some(fault);
    }

    /// A shard-unique id (connections, subscriptions, requests).
    pub fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Queues a message for `peer`, to leave by [`Shard::poll_shard_msg`].
    fn send(&mut self, peer: usize, msg: ShardMsg<J::Receipt>) {
        if self.outgoing[peer].is_empty() {
            self.ready.push(peer);
        }
        self.outgoing[peer].push(msg);
    }

    /// Handles `msg` here if this shard is `to`, or sends it.
    fn route(&mut self, now: Micros, to: usize, msg: ShardMsg<J::Receipt>) {
        if to == self.id {
            self.handle_shard_msg(now, msg);
        } else {
            self.send(to, msg);
        }
    }

    /// The next batch of messages for a peer: `(peer, messages)`, in the order they were queued.
    pub fn poll_shard_msg(&mut self) -> Option<(usize, Vec<ShardMsg<J::Receipt>>)> {
        if self.ready.is_empty() {
            return None;
        }
        let peer = self.ready.remove(0);
        Some((peer, std::mem::take(&mut self.outgoing[peer])))
    }

    /// A publish request answered since the last call: [`Shard::take_published`] has its result.
    pub fn poll_completed(&mut self) -> Option<u64> {
        self.completed.pop()
    }

    /// The result of a publish request that waited for its sequences, once every owner answered.
    pub fn take_published(&mut self, request: u64) -> Option<Published<J::Receipt>> {
        if self.pending.get(&request)?.remaining > 0 {
            return None;
        }
        let mut done = self.pending.remove(&request)?.done;
        done.sequences.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        done.forwarded.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        Some(done)
    }

    /// Handles a message from a peer (or one this shard sent itself).
    pub fn handle_shard_msg(&mut self, now: Micros, msg: ShardMsg<J::Receipt>) {
        match msg {
            ShardMsg::Ingest { items, reply } => {
                let (mut receipts, mut forwarded) = (Vec::new(), Vec::new());
                let sequences: Vec<_> =
                    items.into_iter().map(|item| self.sequence(item, now, &mut receipts, &mut forwarded)).collect();
                if let Some((origin, request)) = reply {
                    self.route(now, origin, ShardMsg::Ingested { request, sequences, receipts, forwarded });
                }
            }
            ShardMsg::Ingested { request, sequences, receipts, forwarded } => {
                let Some(p) = self.pending.get_mut(&request) else { return };
                p.remaining = p.remaining.saturating_sub(sequences.len());
                p.done.sequences.extend(sequences);
                p.done.receipts.extend(receipts);
                p.done.forwarded.extend(forwarded);
                if p.remaining == 0 {
                    self.completed.push(request);
                }
            }
            ShardMsg::Fanout { topic, frames, ingested } => self.deliver(&topic, &frames, ingested, now),
            ShardMsg::SnapshotRequest { topic, from, conn, generation, dialect, resume } => {
                let request = StartRequest { from, conn, generation, dialect, resume };
                if self.forwards {
                    match self.followed.get_mut(&topic) {
                        Some(Followed::Live) => {}
                        Some(Followed::Loading { waiting, .. }) => return waiting.push(request),
                        None => {
                            // First interest on this node: what the cluster stored comes first.
                            let generation = self.next_id();
                            self.journal.follow(&topic, generation);
                            self.followed.insert(topic, Followed::Loading { generation, waiting: vec![request] });
                            return;
                        }
                    }
                }
                self.start(now, topic, request);
            }
            ShardMsg::Unfollow { topic } => {
                if self.map.shards(&topic) == 0 && self.followed.remove(&topic).is_some() {
                    self.journal.unfollow(&topic);
                    self.sequencer.forget(&topic);
                }
            }
            ShardMsg::Snapshot { topic, conn, generation, mut frames, dropped } => {
                if let Some(sink) = self.index.activate(&topic, conn, generation) {
                    let dialect = sink.dialect();
                    if dialect.codec().renders_piece(topic.channel) && dialect.codec().batches_per_connection() {
                        // Pieces: the subscription's starting state goes through the connection's window.
                        self.windows.add(sink, &frames, now, self.window_every[usize::from(dialect.0)]);
                    } else {
                        if dropped > 0 && dialect == DialectId::CANONICAL {
                            frames.insert(0, queue_overflow_frame(&topic, dropped, self.critical_queue, now));
                        }
                        sink.push_all(&frames);
                    }
                }
            }
            ShardMsg::Ack { topic, mut sequence } => {
                if self.fault == Some(Fault::AckReleasesOneMore) {
                    sequence += 1;
                }
                let released = self.sequencer.ack(&topic, sequence);
                self.stats.critical_acked.fetch_add(released as u64, Ordering::Relaxed);
                self.journal.critical_acked(&topic, sequence, now);
            }
            ShardMsg::Quiesce => self.quiesced += 1,
            ShardMsg::Stall { .. } => {}
        }
    }

    /// Owner side: answers a subscriber's start (snapshot, replay, unacknowledged messages).
    fn start(&mut self, now: Micros, topic: Topic, request: StartRequest) {
        let StartRequest { from, conn, generation, dialect, mut resume } = request;
        if let (Some(Fault::ResumeOffByOne), Resume::After(n)) = (self.fault, resume) {
            resume = Resume::After(n + 1);
        }
        let start = if dialect == DialectId::CANONICAL {
            self.sequencer.start(&topic, resume, now)
        } else {
            self.sequencer.start_in(&topic, dialect.codec())
        };
        self.stats.replayed_frames.fetch_add(start.replayed as u64, Ordering::Relaxed);
        if start.reset.is_some() {
            self.stats.resets.fetch_add(1, Ordering::Relaxed);
        }
        let (frames, dropped) = (start.frames, start.dropped);
        let msg = ShardMsg::Snapshot { topic, conn, generation, frames, dropped };
        self.route(now, from, msg);
    }

    /// Where the journal sequences: everything stored of `topic` when [`Journal::follow`] was asked (with
    /// `generation`) has been applied; the subscribers' starts that waited are answered.
    pub fn loaded(&mut self, now: Micros, topic: &Topic, generation: u64) {
        let Some(Followed::Loading { generation: g, .. }) = self.followed.get(topic) else { return };
        if *g != generation {
            return; // an earlier follow's
        }
        if let Some(Followed::Loading { waiting, .. }) = self.followed.insert(topic.clone(), Followed::Live) {
            for request in waiting {
                self.start(now, topic.clone(), request);
            }
        }
    }

    /// Owner side: sequences one item, fans it out, and aggregates bars from trades. A private topic's
    /// update goes to the journal too: a critical one whole (its receipt joins `receipts`), another as its
    /// sequence. Where the journal sequences, the item is handed to it instead (its receipt joins
    /// `forwarded`; the sequence returned is 0) and delivered when it comes back ([`Shard::apply`]).
    fn sequence(
        &mut self,
        item: IngestItem,
        now: Micros,
        receipts: &mut Vec<Option<J::Receipt>>,
        forwarded: &mut Vec<(usize, Topic, Option<J::Receipt>)>,
    ) -> (usize, Topic, u64) {
        if let Some(q) = item.quote {
            let day = match self.days.get_mut(&item.topic.key) {
                Some(d) => d,
                None => self.days.entry(item.topic.key.clone()).or_default(),
            };
            DayStats::on_quote(day, now, q);
        }
        if self.forwards {
            forwarded.push((
                item.event,
                item.topic.clone(),
                self.journal.sequence(&item.topic, item.data, item.source_ts, now),
            ));
            if let Some(t) = item.trade {
                let mut closed = Vec::new();
                self.bars.on_trade(&item.topic.key, t.price, t.size, now, &mut closed);
                self.publish_bars(closed, now);
            }
            return (item.event, item.topic, 0);
        }
        let (out, frames) = self.ingest(&item.topic, item.data, item.source_ts, now);
        self.stats.ingested.fetch_add(1, Ordering::Relaxed);
        self.stats.ingested_at(item.topic.channel, now.max(1) as u64);
        if item.topic.channel.is_critical() {
            receipts.push(self.journal.critical_enqueued(&item.topic, out.sequence, &out.frame, now));
        } else if item.topic.channel.is_private() {
            self.journal.private_sequenced(&item.topic, out.sequence);
        }
        if out.dropped > 0 {
            self.queue_overflowed(&item.topic, out.dropped, now);
        }
        self.fan_out(&item.topic, frames, now, now);
        if let Some(t) = item.trade {
            let mut closed = Vec::new();
            self.bars.on_trade(&item.topic.key, t.price, t.size, now, &mut closed);
            self.publish_bars(closed, now);
        }
        (item.event, item.topic, out.sequence)
    }

    /// Sequences and fans out bars that closed.
    fn publish_bars(&mut self, closed: Vec<ClosedBar>, now: Micros) {
        for bar in closed {
            if self.forwards {
                // Nobody waits for a bar's sequence: it comes back stored, as every update does.
                let _ = self.journal.sequence(&bar.topic, bar.data, None, now);
                continue;
            }
            let (_, frames) = self.ingest(&bar.topic, bar.data, None, now);
            self.fan_out(&bar.topic, frames, now, now);
        }
    }

    /// Owner side: sequences one update and renders it once in each dialect with subscribers of its topic
    /// (the sequencer's own, always).
    fn ingest(&mut self, topic: &Topic, data: Bytes, source_ts: Option<Bytes>, now: Micros) -> (Sequenced, Rendered) {
        let others = self.other_dialects(topic);
        let kept = others.then(|| (data.clone(), source_ts.clone()));
        let out = self.sequencer.ingest(topic, data, source_ts, now);
        let frames = self.render(topic, out.sequence, &out.frame, kept, now);
        (out, frames)
    }

    /// Whether shards have subscribers of `topic` in another dialect than the canonical one.
    fn other_dialects(&self, topic: &Topic) -> bool {
        let masks = self.interest_in(topic);
        (1..DIALECT_COUNT).any(|d| masks[d] | masks[d + DIALECT_COUNT] != 0)
    }

    /// Renders update `sequence` of `topic` (canonical `frame`; `data` and `source_ts` when other dialects
    /// have subscribers, stamped `at`) once in each dialect with subscribers, deflated once where some take
    /// it deflated.
    fn render(
        &mut self,
        topic: &Topic,
        sequence: u64,
        frame: &Bytes,
        kept: Option<(Bytes, Option<Bytes>)>,
        at: Micros,
    ) -> Rendered {
        let masks = self.interest_in(topic);
        // Per dialect, the shards with subscribers of it, plain or deflating.
        let any = |d: usize| masks[d] | masks[d + DIALECT_COUNT];
        self.stats.renders_by_dialect[0].fetch_add(1, Ordering::Relaxed);
        let mut frames = Rendered::canonical(frame.clone());
        if masks[DIALECT_COUNT] != 0 {
            self.deflate(&mut frames, DialectId::CANONICAL, frame);
        }
        if let Some((data, source_ts)) = kept {
            let update = Update {
                kind: UpdateKind::Update,
                channel: topic.channel,
                sequence,
                timestamp: at,
                source_ts: source_ts.as_deref(),
                data: &data,
                day: self.days.get(&topic.key).and_then(Option::as_ref).filter(|_| topic.channel == Channel::Quotes),
                key: &topic.key,
            };
            for d in (1..DIALECT_COUNT).filter(|&d| any(d) != 0) {
                let codec = DIALECTS[d].codec;
                if codec.renders_piece(topic.channel) {
                    let mut piece = Vec::with_capacity(160);
                    codec.encode_update(&update, &mut piece);
                    if !piece.is_empty() {
                        self.stats.renders_by_dialect[d].fetch_add(1, Ordering::Relaxed);
                        frames.set_piece(DIALECTS[d].id, Bytes::from(piece));
                    }
                } else if let Some(frame) = try_update_frame(codec, &update) {
                    self.stats.renders_by_dialect[d].fetch_add(1, Ordering::Relaxed);
                    if masks[d + DIALECT_COUNT] != 0 {
                        self.deflate(&mut frames, DIALECTS[d].id, &frame);
                    }
                    frames.set(DIALECTS[d].id, frame);
                }
            }
        }
        frames
    }

    /// An update of a topic this shard owns, sequenced and stored elsewhere (the cluster bus, see
    /// [`Journal::sequences`]), wherever it was published: kept as the topic's state, history and critical
    /// queue, rendered once per dialect with subscribers, and delivered. One at or below the topic's
    /// sequence (seen before) is skipped. Returns whether it was taken.
    pub fn apply(&mut self, now: Micros, topic: &Topic, sequence: u64, frame: Bytes) -> bool {
        // Only what this node follows, for itself or for subscribers of its channel's wildcard (whose
        // owner may be another shard): a follow just ended may still have some on the way, which would
        // leave stale state behind.
        let wanted = self.interest_in(topic).iter().any(|&m| m != 0);
        if !wanted && !self.followed.contains_key(topic) {
            return false;
        }
        let Some(dropped) = self.sequencer.apply(topic, sequence, &frame) else { return false };
        let parts = crate::sequencer::frame_parts(&frame);
        let at = parts.as_ref().map_or(now, |p| p.timestamp);
        let kept = parts.filter(|_| self.other_dialects(topic)).map(|p| (p.data, p.source_ts));
        let frames = self.render(topic, sequence, &frame, kept, at);
        self.stats.ingested.fetch_add(1, Ordering::Relaxed);
        self.stats.ingested_at(topic.channel, at.max(1) as u64);
        if dropped > 0 {
            self.queue_overflowed(topic, dropped, now);
        }
        self.fan_out(topic, frames, at, now);
        true
    }

    /// A critical topic this shard owns was acknowledged up to `sequence` on some node (the cluster bus):
    /// released here too, without telling the journal again. Acks of topics this node does not follow are
    /// none of its business (it reads the last one when it starts following).
    pub fn apply_ack(&mut self, topic: &Topic, sequence: u64) {
        if !self.followed.contains_key(topic) {
            return;
        }
        let released = self.sequencer.acked(topic, sequence);
        self.stats.critical_acked.fetch_add(released as u64, Ordering::Relaxed);
    }

    /// Deflates `dialect`'s frame once, for every subscriber of it that takes deflated frames.
    fn deflate(&self, frames: &mut Rendered, dialect: DialectId, frame: &Bytes) {
        if let Some(deflated) = tickwire_core::deflate::compress_frame(frame, self.compression) {
            self.stats.deflated_frames.fetch_add(1, Ordering::Relaxed);
            frames.set_deflated(dialect, deflated);
        }
    }

    /// Owner side: a critical topic's queue dropped its oldest messages. A user online is told now; one
    /// offline is told when they next subscribe (the sequencer keeps the count until then).
    fn queue_overflowed(&mut self, topic: &Topic, dropped: u64, now: Micros) {
        self.stats.critical_dropped.fetch_add(dropped, Ordering::Relaxed);
        if self.map.shards(topic) == 0 {
            return;
        }
        self.sequencer.dropped_told(topic);
        let frame = queue_overflow_frame(topic, dropped, self.critical_queue, now);
        self.fan_out(topic, Rendered::canonical(frame), NO_STAMP, now);
    }

    /// Owner side: sends an update's frames, sequenced at `ingested`, to every shard with subscribers of
    /// `topic`.
    fn fan_out(&mut self, topic: &Topic, frames: Rendered, ingested: Micros, now: Micros) {
        let mut mask = self.interest_in(topic).iter().fold(0, |all, m| all | m);
        while mask != 0 {
            let shard = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            if shard == self.id {
                self.deliver(topic, &frames, ingested, now);
            } else if shard < self.shards {
                self.send(shard, ShardMsg::Fanout { topic: topic.clone(), frames: frames.clone(), ingested });
            }
        }
    }

    /// Subscriber side: pushes an update to every local subscriber, in its dialect, with its ingest stamp.
    fn deliver(&mut self, topic: &Topic, frames: &Rendered, ingested: Micros, now: Micros) {
        let (mut windowed, mut windowed_bytes) = (0, 0);
        for (d, piece) in frames.pieces() {
            if d.codec().batches_per_connection() {
                let every = self.window_every[usize::from(d.0)];
                for sink in self.index.live_of(topic, d) {
                    self.windows.add(sink, std::slice::from_ref(piece), now, every);
                    windowed += 1;
                    windowed_bytes += piece.len();
                }
            } else if let Some(board) = self.boards[usize::from(d.0)].as_mut().filter(|b| b.has_members()) {
                board.store(&topic.key, piece);
            }
        }
        let (mut n, mut bytes) = self.index.deliver(topic, frames, ingested, now);
        (n, bytes) = (n + windowed, bytes + windowed_bytes);
        if !self.wild_local[topic.channel as usize] {
            self.stats.delivered(topic.channel, n, bytes);
            return;
        }
        if let Some(wild) = self.wildcard_of(topic).cloned() {
            let (wn, wb) = self.index.deliver(&wild, frames, ingested, now);
            (n, bytes) = (n + wn, bytes + wb);
        }
        self.stats.delivered(topic.channel, n, bytes);
    }

    /// The "every symbol" topic `(channel, *)` whose subscribers also get `topic`'s updates: per-symbol
    /// channels only (a dialect's subscription to all symbols; the canonical protocol names symbols).
    fn wildcard_of(&self, topic: &Topic) -> Option<&Topic> {
        let wild = self.wildcards[topic.channel as usize].as_ref()?;
        (topic.interval.is_none() && topic.key != wild.key).then_some(wild)
    }

    /// Per wire ([`crate::interest::wire`]), the shards with subscribers of `topic` or of its wildcard.
    fn interest_in(&self, topic: &Topic) -> [u64; WIRES] {
        let mut masks = self.map.shards_by_wire(topic);
        if let Some(wild) = self.wildcard_of(topic) {
            for (m, w) in masks.iter_mut().zip(self.map.shards_by_wire(wild)) {
                *m |= w;
            }
        }
        masks
    }

    /// Routes events to their topics' owners. With `wait`, returns the request whose result
    /// [`Shard::take_published`] gives once every owner answered ([`Shard::poll_completed`] says when).
    pub fn publish(&mut self, now: Micros, events: Vec<Ingest>, wait: bool) -> Option<u64> {
        let mut per_owner: Vec<Vec<IngestItem>> = (0..self.shards).map(|_| Vec::new()).collect();
        let mut total = 0;
        for (event, ev) in events.into_iter().enumerate() {
            let data = Bytes::from(ev.data);
            let source_ts = ev.source_ts.map(Bytes::from);
            for topic in ev.topics {
                let owner = topic.owner(self.shards);
                let item = IngestItem {
                    event,
                    topic,
                    data: data.clone(),
                    source_ts: source_ts.clone(),
                    trade: ev.trade,
                    quote: ev.quote,
                };
                per_owner[owner].push(item);
                total += 1;
            }
        }
        let request = self.next_id();
        if wait {
            self.pending.insert(request, Pending { remaining: total, done: Published::default() });
        }
        let reply = wait.then_some((self.id, request));
        for (owner, items) in per_owner.into_iter().enumerate() {
            if !items.is_empty() {
                self.route(now, owner, ShardMsg::Ingest { items, reply });
            }
        }
        wait.then_some(request)
    }

    /// Subscribes `sink` to `topic`: pending until the owner's answer (snapshot, replay, unacked critical
    /// messages) arrives.
    pub fn subscribe(&mut self, now: Micros, sink: S, topic: Topic, throttle_ms: u32, resume: Resume) {
        let (conn, dialect) = (sink.key(), sink.dialect());
        // Boards are for dialects that batch per shard; those that batch per connection use windows.
        if dialect.codec().renders_piece(topic.channel) && !dialect.codec().batches_per_connection() {
            let symbol = (&*topic.key != ALL).then_some(&topic.key);
            self.boards[usize::from(dialect.0)].get_or_insert_with(Board::default).join(&sink, symbol);
        }
        let generation = self.next_id();
        let wire = wire(dialect, sink.deflate_bits() != 0);
        if self.index.add(&topic, sink, throttle_ms, generation) == Added::FirstOnShard {
            self.interest.add(&topic, wire);
        }
        self.note_wildcard(&topic);
        let owner = topic.owner(self.shards);
        let msg = ShardMsg::SnapshotRequest { topic, from: self.id, conn, generation, dialect, resume };
        self.route(now, owner, msg);
        self.note_index();
    }

    /// Removes one subscription of the connection `conn`.
    pub fn unsubscribe(&mut self, conn: u64, topic: &Topic) {
        let removed = self.index.remove(topic, conn);
        if let Some((dialect, wire, last)) = removed {
            if last {
                self.interest.remove(topic, wire);
                if self.forwards && self.map.shards(topic) == 0 {
                    let owner = topic.owner(self.shards);
                    self.route(0, owner, ShardMsg::Unfollow { topic: topic.clone() });
                }
            }
            if let Some(board) = self.boards[usize::from(dialect.0)].as_mut() {
                board.leave(conn, (&*topic.key != ALL).then_some(&*topic.key));
            }
        }
        self.note_wildcard(topic);
        self.note_index();
    }

    /// Keeps whether this shard has subscribers of a channel's wildcard (so that deliveries look it up only
    /// then).
    fn note_wildcard(&mut self, topic: &Topic) {
        if let Some(wild) = self.wildcards[topic.channel as usize].as_ref().filter(|w| w.key == topic.key) {
            self.wild_local[topic.channel as usize] = topic.interval.is_none() && self.index.has(wild);
        }
    }

    fn note_index(&self) {
        self.stats.subscriptions.store(self.index.subscriptions() as u64, Ordering::Relaxed);
        self.stats.topics.store(self.index.topics() as u64, Ordering::Relaxed);
    }

    /// Acknowledges a critical topic up to `sequence`, at its owner.
    pub fn ack(&mut self, now: Micros, topic: Topic, sequence: u64) {
        let owner = topic.owner(self.shards);
        self.route(now, owner, ShardMsg::Ack { topic, sequence });
    }

    /// Shutdown: tells every peer that everything this shard sent before has been sent.
    pub fn quiesce(&mut self) {
        let me = self.id;
        for peer in (0..self.shards).filter(|&p| p != me) {
            self.send(peer, ShardMsg::Quiesce);
        }
    }

    /// Peers whose [`ShardMsg::Quiesce`] arrived.
    pub fn quiesced(&self) -> usize {
        self.quiesced
    }

    /// A test aid: asks every other shard to stall for `ms`; returns their ids.
    pub fn stall_peers(&mut self, ms: u64) -> Vec<usize> {
        let peers: Vec<usize> = (0..self.shards).filter(|&p| p != self.id).collect();
        for &peer in &peers {
            self.send(peer, ShardMsg::Stall { ms });
        }
        peers
    }

    /// Time passed: throttled subscriptions whose window ended get their latest frame, and bars whose
    /// interval ended are closed (checked every [`BARS_EVERY`]).
    pub fn handle_timeout(&mut self, now: Micros) {
        let stats = &self.stats;
        self.index.flush_throttled_each(now, |topic, n, bytes| stats.delivered(topic.channel, n, bytes));
        if now >= self.next_bars {
            let mut closed = Vec::new();
            self.bars.close_due(now, &mut closed);
            self.publish_bars(closed, now);
            self.next_bars = now + BARS_EVERY;
        }
        if now >= self.next_boards {
            for (d, board) in self.boards.iter_mut().enumerate() {
                if let Some(board) = board.as_mut() {
                    let (n, bytes) = board.flush(DIALECTS[d].codec, self.compression, now);
                    self.stats.delivered(Channel::Quotes, n, bytes);
                }
            }
            self.next_boards = now - now.rem_euclid(self.board_every) + self.board_every;
        }
        self.windows.flush_due(now);
    }

    /// The length of the windows of a dialect that batches per connection (seed 002's
    /// `portfolio_batch_ms`); 0: no window, its pieces go to its connections at once.
    pub fn set_window_interval(&mut self, dialect: DialectId, every: Micros) {
        self.window_every[usize::from(dialect.0)] = every;
    }

    /// How often the boards of batching dialects close their interval (seed 001's price updates).
    pub fn set_board_interval(&mut self, every: Micros) {
        self.board_every = every.max(1);
        self.next_boards = 0;
    }

    /// When [`Shard::handle_timeout`] has work next: the earliest throttle window with a frame waiting, or
    /// the next bar check.
    pub fn poll_timeout(&self) -> Micros {
        let next = self.index.next_throttle_due().map_or(self.next_bars, |t| t.min(self.next_bars));
        let next = self.windows.next_due().map_or(next, |t| t.min(next));
        if self.boards.iter().flatten().any(Board::has_members) {
            next.min(self.next_boards)
        } else {
            next
        }
    }

    /// Subscriptions on this shard.
    pub fn subscriptions(&self) -> usize {
        self.index.subscriptions()
    }

    /// The sequence of a topic this shard owns (0 before its first update).
    /// The day statistics of a symbol whose quotes this shard owns.
    pub fn day_of(&self, symbol: &str) -> Option<DayStats> {
        self.days.get(symbol).copied().flatten()
    }

    pub fn sequence_of(&self, topic: &Topic) -> u64 {
        self.sequencer.sequence(topic)
    }
}

/// `{"type":"error","code":"QUEUE_OVERFLOW",...}` for a critical topic whose queue dropped messages.
pub fn queue_overflow_frame(topic: &Topic, dropped: u64, cap: usize, now: Micros) -> Bytes {
    let message = format!(
        "{dropped} unacknowledged '{}' message(s) were dropped, oldest first: at most {cap} are kept; ack sooner",
        topic.channel
    );
    reply_frame(&Canonical, &Reply::Error { id: None, code: ErrorCode::QueueOverflow, message: &message }, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::payload;
    use crate::index::tests::Bits;
    use std::cell::RefCell;
    use std::rc::Rc;
    use tickwire_core::Channel;

    #[derive(Debug, Clone)]
    struct Inbox(u64, Rc<RefCell<Vec<Bytes>>>);

    impl Sink for Inbox {
        fn key(&self) -> u64 {
            self.0
        }

        fn push(&self, frame: &Bytes, _: Micros, _: u64) {
            self.1.borrow_mut().push(frame.clone());
        }
    }

    /// A subscriber speaking a dialect, keeping what it got.
    #[derive(Debug, Clone)]
    struct Speaker(u64, DialectId, Rc<RefCell<Vec<Bytes>>>);

    impl Sink for Speaker {
        fn key(&self) -> u64 {
            self.0
        }

        fn dialect(&self) -> DialectId {
            self.1
        }

        fn push(&self, frame: &Bytes, _: Micros, _: u64) {
            self.2.borrow_mut().push(frame.clone());
        }

        /// A window's pieces, kept as they came (the test reads them; a connection would write frames).
        fn push_window(&self, pieces: &[Bytes], _: Micros) {
            self.2.borrow_mut().extend_from_slice(pieces);
        }
    }

    /// The cluster's bus as the engine sees it: it sequences, and says what it was asked.
    #[derive(Debug, Default, Clone)]
    struct Bus(Rc<RefCell<Vec<String>>>);

    impl Journal for Bus {
        type Receipt = ();

        fn critical_enqueued(&self, _: &Topic, _: u64, _: &Bytes, _: Micros) -> Option<()> {
            None
        }

        fn private_sequenced(&self, _: &Topic, _: u64) {}

        fn critical_acked(&self, topic: &Topic, sequence: u64, _: Micros) {
            self.0.borrow_mut().push(format!("ack {} {sequence}", topic.key));
        }

        fn sequences(&self) -> bool {
            true
        }

        fn sequence(&self, topic: &Topic, _: Bytes, _: Option<Bytes>, _: Micros) -> Option<()> {
            self.0.borrow_mut().push(format!("sequence {}", topic.key));
            Some(())
        }

        fn follow(&self, topic: &Topic, generation: u64) {
            self.0.borrow_mut().push(format!("follow {} {generation}", topic.key));
        }

        fn unfollow(&self, topic: &Topic) {
            self.0.borrow_mut().push(format!("unfollow {}", topic.key));
        }
    }

    #[test]
    fn where_the_bus_sequences_a_topic_is_followed_while_it_has_subscribers_and_starts_wait_for_it() {
        let bus = Bus::default();
        let mut shard: Shard<Inbox, Bus> =
            Shard::new(0, 1, InterestMap::new(16), Limits::default(), None, bus.clone(), Arc::default());
        let aapl = Topic::new(Channel::Quotes, "AAPL");
        let mut elsewhere = Sequencer::new(Canonical);
        let frames: Vec<Bytes> =
            (0..3).map(|n| elsewhere.ingest(&aapl, Bytes::from(format!("{{\"n\":{n}}}")), None, 0).frame).collect();
        // A publish is handed over, not sequenced nor delivered here.
        let request = shard.publish(1, vec![quote(&aapl, 0)], true).unwrap();
        let published = shard.take_published(request).unwrap();
        assert_eq!((published.sequences[0].2, published.forwarded.len()), (0, 1));
        assert_eq!(shard.sequence_of(&aapl), 0);
        // Nobody follows it yet: what the bus brings of it is not taken.
        assert!(!shard.apply(1, &aapl, 1, frames[0].clone()));

        // The first subscriber: the topic is followed, its start waits until what is stored has come.
        let got = Rc::new(RefCell::new(Vec::new()));
        shard.subscribe(1, Inbox(7, got.clone()), aapl.clone(), 0, Resume::After(0));
        let generation: u64 = bus.0.borrow().last().unwrap().strip_prefix("follow AAPL ").unwrap().parse().unwrap();
        assert!(shard.apply(1, &aapl, 1, frames[0].clone()));
        assert!(shard.apply(1, &aapl, 2, frames[1].clone()));
        assert!(got.borrow().is_empty(), "the start waits");
        shard.loaded(1, &aapl, generation + 1); // another follow's
        assert!(got.borrow().is_empty());
        shard.loaded(1, &aapl, generation);
        assert_eq!(*got.borrow(), frames[..2], "replayed from what the stream keeps");
        assert!(shard.apply(1, &aapl, 3, frames[2].clone()));
        assert_eq!(*got.borrow(), frames, "then live");
        // A second subscriber is answered at once: the topic is followed already.
        let second = Rc::new(RefCell::new(Vec::new()));
        shard.subscribe(1, Inbox(8, second.clone()), aapl.clone(), 0, Resume::After(2));
        assert_eq!(*second.borrow(), frames[2..]);

        // The last one leaves: no longer followed, its state forgotten.
        shard.unsubscribe(7, &aapl);
        assert!(!bus.0.borrow().iter().any(|l| l.starts_with("unfollow")), "one subscriber is left");
        shard.unsubscribe(8, &aapl);
        assert_eq!(bus.0.borrow().last().unwrap(), "unfollow AAPL");
        assert_eq!(shard.sequence_of(&aapl), 0);
        assert!(!shard.apply(1, &aapl, 4, frames[2].clone()));
    }

    fn pair() -> [Shard<Inbox, NoJournal>; 2] {
        let map = InterestMap::new(16);
        [0, 1].map(|id| Shard::new(id, 2, map.clone(), Limits::default(), None, NoJournal, Arc::default()))
    }

    /// Carries every message between the two shards until none is left.
    fn settle<S: Sink + Clone>(shards: &mut [Shard<S, NoJournal>; 2], now: Micros) {
        loop {
            let mut moved = false;
            for from in 0..2 {
                while let Some((to, batch)) = shards[from].poll_shard_msg() {
                    for msg in batch {
                        shards[to].handle_shard_msg(now, msg);
                    }
                    moved = true;
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn quote(topic: &Topic, n: u32) -> Ingest {
        let data = format!("{{\"n\":{n}}}").into_bytes();
        Ingest::on(topic, data)
    }

    fn sequences(frames: &[Bytes]) -> Vec<(String, u64)> {
        frames
            .iter()
            .map(|f| {
                let v: serde_json::Value = serde_json::from_slice(payload(f)).unwrap();
                (v["type"].as_str().unwrap().to_owned(), v["sequence"].as_u64().unwrap_or(0))
            })
            .collect()
    }

    /// Found by the simulation (seed 1234 before the fix): a connection that unsubscribes and subscribes
    /// again before the owner answers its first subscribe must not be started by that stale answer, which
    /// would give it a snapshot older than the updates it then skips, or a second start later.
    #[test]
    fn a_stale_snapshot_does_not_start_a_newer_subscription() {
        let mut shards = pair();
        let topic = (0..).map(|i| Topic::new(Channel::Quotes, format!("S{i}"))).find(|t| t.owner(2) == 1).unwrap();
        let inbox = Inbox(7, Rc::default());
        shards[1].publish(1, vec![quote(&topic, 1)], false);
        shards[0].subscribe(2, inbox.clone(), topic.clone(), 0, Resume::Latest);
        shards[0].unsubscribe(7, &topic);
        shards[0].subscribe(3, inbox.clone(), topic.clone(), 0, Resume::Latest);
        // The first request is answered (snapshot at 1); an update follows; then the second (snapshot at 2).
        let (to, first) = shards[0].poll_shard_msg().unwrap();
        assert_eq!((to, first.len()), (1, 2), "both requests go to the owner, in order");
        let mut first = first.into_iter();
        shards[1].handle_shard_msg(4, first.next().unwrap());
        shards[1].publish(5, vec![quote(&topic, 2)], false);
        shards[1].handle_shard_msg(6, first.next().unwrap());
        settle(&mut shards, 7);
        shards[1].publish(8, vec![quote(&topic, 3)], false);
        settle(&mut shards, 9);
        let got = sequences(&inbox.1.borrow());
        assert_eq!(got, [("snapshot".to_owned(), 2), ("quote".to_owned(), 3)], "one start, then contiguous");
    }

    /// A publish that waits gets its sequences once every owner answered, in event order.
    #[test]
    fn a_publish_across_owners_completes_once_all_answer() {
        let mut shards = pair();
        let topics: Vec<Topic> = (0..6).map(|i| Topic::new(Channel::Quotes, format!("S{i}"))).collect();
        assert!(topics.iter().any(|t| t.owner(2) == 0) && topics.iter().any(|t| t.owner(2) == 1));
        let events: Vec<Ingest> = topics.iter().map(|t| quote(t, 1)).collect();
        let request = shards[0].publish(1, events, true).unwrap();
        assert!(shards[0].take_published(request).is_none(), "the remote owner has not answered yet");
        assert_eq!(shards[0].poll_completed(), None);
        settle(&mut shards, 2);
        assert_eq!(shards[0].poll_completed(), Some(request));
        let done = shards[0].take_published(request).unwrap();
        let events: Vec<usize> = done.sequences.iter().map(|s| s.0).collect();
        assert_eq!(events, [0, 1, 2, 3, 4, 5]);
        assert!(done.sequences.iter().all(|s| s.2 == 1));
        assert!(shards[0].take_published(request).is_none(), "taken once");
    }

    /// Every subscriber of a dialect, on any shard, gets the same bytes, rendered once by the owner; a
    /// dialect without subscribers is not rendered.
    #[test]
    fn an_update_is_rendered_once_per_dialect_with_subscribers() {
        let map = InterestMap::new(16);
        let stats: [Arc<Stats>; 2] = [Arc::default(), Arc::default()];
        let mut shards: [Shard<Speaker, NoJournal>; 2] =
            [0, 1].map(|id| Shard::new(id, 2, map.clone(), Limits::default(), None, NoJournal, stats[id].clone()));
        let topic = (0..)
            .map(|i| Topic::bar(format!("S{i}"), tickwire_core::BarInterval::M1))
            .find(|t| t.owner(2) == 1)
            .unwrap();
        let fastws = tickwire_core::protocol::by_path("/api/v1/ws").unwrap().id;
        let canonical = Speaker(1, DialectId::CANONICAL, Rc::default());
        let remote = [2, 3].map(|k| Speaker(k, fastws, Rc::default()));
        let local = Speaker(4, fastws, Rc::default());
        for s in [&canonical, &remote[0], &remote[1]] {
            shards[0].subscribe(1, s.clone(), topic.clone(), 0, Resume::Latest);
        }
        shards[1].subscribe(1, local.clone(), topic.clone(), 0, Resume::Latest);
        settle(&mut shards, 2);
        let bar = |n: u32| {
            let data = format!(
                r#"{{"symbol":"{}","interval":"1m","start":"2026-12-01T10:0{n}:00.000000Z","open":1.0,"high":2.0,"low":0.5,"close":1.5,"volume":10.0,"vwap":1.2}}"#,
                topic.key
            );
            Ingest::on(&topic, data.into_bytes())
        };
        shards[1].publish(3, vec![bar(1)], false);
        settle(&mut shards, 4);
        let renders = |s: &Stats| s.renders_by_dialect.each_ref().map(|a| a.load(Ordering::Relaxed));
        assert_eq!(renders(&stats[1])[..2], [1, 1], "one render per dialect, on the owner");
        assert_eq!(renders(&stats[0])[..2], [0, 0], "nothing rendered where the subscribers are");
        let got = |s: &Speaker| s.2.borrow().clone();
        let (c, r0, r1, l) = (got(&canonical), got(&remote[0]), got(&remote[1]), got(&local));
        assert_eq!([c.len(), r0.len(), r1.len(), l.len()], [1, 1, 1, 1], "no snapshot: the topic had no state");
        let text = |f: &Bytes| String::from_utf8(payload(f).to_vec()).unwrap();
        assert!(text(&c[0]).starts_with(r#"{"type":"bar","channel":"bars","sequence":1,"#), "{}", text(&c[0]));
        assert!(
            text(&r0[0]).starts_with(r#"{"type":"bars.update","topic":"bars:{\"resolution\":\"1\""#),
            "{}",
            text(&r0[0])
        );
        for other in [&r1[0], &l[0]] {
            assert_eq!(other.as_ptr(), r0[0].as_ptr(), "the same bytes for every subscriber of the dialect");
        }
        // Once the last subscriber of the dialect leaves, it is no longer rendered.
        shards[0].unsubscribe(2, &topic);
        shards[0].unsubscribe(3, &topic);
        shards[1].unsubscribe(4, &topic);
        settle(&mut shards, 5);
        shards[1].publish(6, vec![bar(2)], false);
        settle(&mut shards, 7);
        assert_eq!(renders(&stats[1])[..2], [2, 1]);
        assert_eq!(got(&canonical).len(), 2);
        assert_eq!(got(&local).len(), 1);
    }

    /// permessage-deflate: the owner deflates an update once, and every subscriber that takes deflated
    /// frames, on any shard, gets those same bytes; the others (no compression, or a window too small for
    /// the frame) get the plain frame; with no compressing subscriber left nothing is deflated.
    #[test]
    fn an_update_is_deflated_once_for_every_compressing_subscriber() {
        let map = InterestMap::new(16);
        let stats: [Arc<Stats>; 2] = [Arc::default(), Arc::default()];
        let mut shards: [Shard<Bits, NoJournal>; 2] =
            [0, 1].map(|id| Shard::new(id, 2, map.clone(), Limits::default(), None, NoJournal, stats[id].clone()));
        let topic = (0..).map(|i| Topic::new(Channel::Quotes, format!("S{i}"))).find(|t| t.owner(2) == 1).unwrap();
        let plain = Bits(1, 0, Rc::default());
        let small_window = Bits(2, 8, Rc::default());
        let remote = Bits(3, 15, Rc::default());
        let local = Bits(4, 15 | 0x80, Rc::default());
        for s in [&plain, &small_window, &remote] {
            shards[0].subscribe(1, s.clone(), topic.clone(), 0, Resume::Latest);
        }
        shards[1].subscribe(1, local.clone(), topic.clone(), 0, Resume::Latest);
        settle(&mut shards, 2);
        let update = |n: u32| {
            let pad = "x".repeat(300); // over 256 bytes: too long for a window of 8 bits
            Ingest::on(&topic, format!(r#"{{"n":{n},"pad":"{pad}"}}"#).into_bytes())
        };
        shards[1].publish(3, vec![update(1)], false);
        settle(&mut shards, 4);
        let deflated = |s: &Stats| s.deflated_frames.load(Ordering::Relaxed);
        assert_eq!((deflated(&stats[1]), deflated(&stats[0])), (1, 0), "deflated once, by the owner");
        let last = |s: &Bits| s.2.borrow().last().cloned().unwrap();
        let (p, w, r, l) = (last(&plain), last(&small_window), last(&remote), last(&local));
        assert_eq!((p[0], w[0], r[0], l[0]), (0x81, 0x81, 0xC1, 0xC1), "RSV1 only for those that take it");
        assert_eq!(r.as_ptr(), l.as_ptr(), "the same deflated bytes on both shards");
        assert_eq!(p.as_ptr(), w.as_ptr(), "the plain frame, rendered once too");
        assert!(r.len() < p.len() / 2, "{} bytes deflated from {}", r.len(), p.len());
        let inflated = tickwire_core::deflate::Inflater::new().inflate(payload(&r), 1 << 16).unwrap();
        assert_eq!(inflated, payload(&p), "it inflates to the plain frame's JSON");
        shards[0].unsubscribe(3, &topic);
        shards[1].unsubscribe(4, &topic);
        settle(&mut shards, 5);
        shards[1].publish(6, vec![update(2)], false);
        settle(&mut shards, 7);
        assert_eq!(deflated(&stats[1]), 2, "the small window's subscriber would take a shorter frame deflated");
        shards[0].unsubscribe(2, &topic);
        settle(&mut shards, 8);
        shards[1].publish(9, vec![update(3)], false);
        settle(&mut shards, 10);
        assert_eq!(deflated(&stats[1]), 2, "no compressing subscriber left: nothing deflated");
        assert_eq!(last(&plain)[0], 0x81);
        assert_eq!(plain.2.borrow().len(), 3);
    }

    /// A subscriber of a channel's wildcard `(quotes, *)` gets every symbol's updates, from whichever shard
    /// owns each, the same bytes as the symbol's own subscribers; after it leaves, nothing more is sent.
    #[test]
    fn a_wildcard_subscriber_gets_every_symbols_updates() {
        let map = InterestMap::new(64);
        let mut shards: [Shard<Speaker, NoJournal>; 2] =
            [0, 1].map(|id| Shard::new(id, 2, map.clone(), Limits::default(), None, NoJournal, Arc::default()));
        let owned_by =
            |o: usize| (0..).map(|i| Topic::new(Channel::Quotes, format!("S{i}"))).find(|t| t.owner(2) == o).unwrap();
        let (a, b) = (owned_by(0), owned_by(1));
        let all = Speaker(1, DialectId::CANONICAL, Rc::default());
        let only_a = Speaker(2, DialectId::CANONICAL, Rc::default());
        shards[0].subscribe(1, all.clone(), Topic::new(Channel::Quotes, ALL), 0, Resume::Latest);
        shards[0].subscribe(1, only_a.clone(), a.clone(), 0, Resume::Latest);
        settle(&mut shards, 2);
        for (n, t) in [(1, &a), (2, &b), (3, &a), (4, &b)] {
            shards[t.owner(2)].publish(3, vec![quote(t, n)], false);
            settle(&mut shards, 4);
        }
        let ns = |s: &Speaker| -> Vec<u64> {
            s.2.borrow()
                .iter()
                .map(|f| {
                    serde_json::from_slice::<serde_json::Value>(payload(f)).unwrap()["data"]["n"].as_u64().unwrap()
                })
                .collect()
        };
        assert_eq!(ns(&all), [1, 2, 3, 4], "every symbol, from both owners, in order");
        assert_eq!(ns(&only_a), [1, 3]);
        assert_eq!(all.2.borrow()[0].as_ptr(), only_a.2.borrow()[0].as_ptr(), "the same frame");
        shards[0].unsubscribe(1, &Topic::new(Channel::Quotes, ALL));
        settle(&mut shards, 5);
        shards[1].publish(6, vec![quote(&b, 5)], false);
        settle(&mut shards, 7);
        assert_eq!(ns(&all).len(), 4, "nothing after the wildcard is gone");
        assert_eq!(map.shards(&Topic::new(Channel::Quotes, ALL)), 0, "its interest is cleared");
    }

    /// The owner keeps each quoted symbol's day, from the quotes' last price and volume, whoever publishes.
    #[test]
    fn the_owner_keeps_each_symbols_day_statistics() {
        let mut shards = pair();
        let topic = Topic::new(Channel::Quotes, "AAPL");
        let owner = topic.owner(2);
        let at = |t: &str| tickwire_core::time::parse_rfc3339(t).unwrap();
        for (t, last, volume) in [
            ("2024-12-19T10:00:00Z", 150.0, 100),
            ("2024-12-19T11:00:00Z", 152.0, 300),
            ("2024-12-19T12:00:00Z", 151.0, 700),
        ] {
            let events = tickwire_core::event::parse_publish(
                format!(r#"{{"channel":"quotes","data":{{"symbol":"AAPL","last":{last},"volume":{volume}}}}}"#)
                    .as_bytes(),
            )
            .unwrap();
            shards[1 - owner].publish(at(t), events, false);
            settle(&mut shards, at(t));
        }
        let day = shards[owner].day_of("AAPL").unwrap();
        assert_eq!((day.open, day.high, day.low, day.last, day.volume), (150.0, 152.0, 150.0, 151.0, 700.0));
        assert!(shards[1 - owner].day_of("AAPL").is_none(), "only the owner keeps it");
    }

    /// Seed 001's prices: the owner renders one piece per quote whatever the number of subscribers; each
    /// shard's board assembles them when the interval closes, one frame for all its every-symbol members.
    #[test]
    fn prices_are_pieces_rendered_once_and_assembled_per_interval() {
        let map = InterestMap::new(64);
        let stats: [Arc<Stats>; 2] = [Arc::default(), Arc::default()];
        let mut shards: [Shard<Speaker, NoJournal>; 2] =
            [0, 1].map(|id| Shard::new(id, 2, map.clone(), Limits::default(), None, NoJournal, stats[id].clone()));
        shards.iter_mut().for_each(|s| s.set_board_interval(1_000_000));
        let legacy = tickwire_core::protocol::by_path("/ws").unwrap().id;
        let every = [1, 2].map(|k| Speaker(k, legacy, Rc::default()));
        let named = Speaker(3, legacy, Rc::default());
        let owned_by =
            |o: usize| (0..).map(|i| Topic::new(Channel::Quotes, format!("S{i}"))).find(|t| t.owner(2) == o).unwrap();
        let (a, b) = (owned_by(0), owned_by(1));
        for s in &every {
            shards[0].subscribe(1, s.clone(), Topic::new(Channel::Quotes, ALL), 0, Resume::Latest);
        }
        shards[1].subscribe(1, named.clone(), b.clone(), 0, Resume::Latest);
        settle(&mut shards, 2);
        for (t, last) in [(&a, 10.0), (&b, 20.0), (&b, 21.0)] {
            let data = format!(r#"{{"channel":"quotes","data":{{"symbol":"{}","last":{last}}}}}"#, t.key);
            let events = tickwire_core::event::parse_publish(data.as_bytes()).unwrap();
            shards[t.owner(2)].publish(3, events, false);
            settle(&mut shards, 4);
        }
        let renders = |s: &Stats| s.renders_by_dialect[usize::from(legacy.0)].load(Ordering::Relaxed);
        assert_eq!(renders(&stats[0]) + renders(&stats[1]), 3, "one piece per quote");
        assert!(every[0].2.borrow().is_empty(), "nothing before the interval closes");
        for s in shards.iter_mut() {
            s.handle_timeout(1_000_000);
        }
        let symbols = |s: &Speaker| -> Vec<serde_json::Value> {
            s.2.borrow()
                .iter()
                .map(|f| serde_json::from_slice::<serde_json::Value>(payload(f)).unwrap()["symbols"].clone())
                .collect()
        };
        let all = symbols(&every[0]);
        assert_eq!(all.len(), 1);
        assert_eq!((all[0][&*a.key]["price"].as_f64(), all[0][&*b.key]["price"].as_f64()), (Some(10.0), Some(21.0)));
        assert_eq!(every[0].2.borrow()[0].as_ptr(), every[1].2.borrow()[0].as_ptr(), "one frame for both");
        let mine = symbols(&named);
        assert_eq!(mine.len(), 1);
        assert_eq!(mine[0].as_object().unwrap().len(), 1, "only its symbol: {}", mine[0]);
        assert_eq!(mine[0][&*b.key]["open"].as_f64(), Some(20.0), "the day's first price");
        for s in shards.iter_mut() {
            s.handle_timeout(2_000_000);
        }
        assert_eq!(every[0].2.borrow().len(), 1, "nothing changed: no frame");
    }

    /// Seed 002's and seed 003's account events: the owner renders one piece per update and dialect; a
    /// `/ws/portfolio` connection gets the first at once and the rest of its window at the window's end, a
    /// `/api/v1/ws` connection (windows of no length) each at once; every connection of a dialect gets the
    /// same bytes.
    #[test]
    fn account_events_are_pieces_rendered_once_and_windowed_per_connection() {
        let map = InterestMap::new(64);
        let stats: [Arc<Stats>; 2] = [Arc::default(), Arc::default()];
        let mut shards: [Shard<Speaker, NoJournal>; 2] =
            [0, 1].map(|id| Shard::new(id, 2, map.clone(), Limits::default(), None, NoJournal, stats[id].clone()));
        let (portfolio, fastws) = (
            tickwire_core::protocol::by_path("/ws/portfolio").unwrap().id,
            tickwire_core::protocol::by_path("/api/v1/ws").unwrap().id,
        );
        for s in shards.iter_mut() {
            s.set_window_interval(portfolio, 1_000_000);
            s.set_window_interval(fastws, 0);
        }
        let topic = (0..).map(|i| Topic::new(Channel::Orders, format!("u{i}"))).find(|t| t.owner(2) == 1).unwrap();
        let batched = [Speaker(1, portfolio, Rc::default()), Speaker(2, portfolio, Rc::default())];
        let direct = Speaker(3, fastws, Rc::default());
        shards[0].subscribe(1, batched[0].clone(), topic.clone(), 0, Resume::Latest);
        shards[1].subscribe(1, batched[1].clone(), topic.clone(), 0, Resume::Latest);
        shards[0].subscribe(1, direct.clone(), topic.clone(), 0, Resume::Latest);
        settle(&mut shards, 2);
        let orders: Vec<Ingest> = (1..=3)
            .flat_map(|n| {
                let data = format!(r#"{{"channel":"orders","user_id":"{}","data":{{"order_id":"o-{n}"}}}}"#, topic.key);
                tickwire_core::event::parse_publish(data.as_bytes()).unwrap()
            })
            .collect();
        shards[1].publish(3, orders, false);
        settle(&mut shards, 4);
        let renders = |d: DialectId| stats[1].renders_by_dialect[usize::from(d.0)].load(Ordering::Relaxed);
        assert_eq!((renders(DialectId::CANONICAL), renders(portfolio), renders(fastws)), (3, 3, 3), "once each");
        let got = |s: &Speaker| s.2.borrow().clone();
        assert_eq!(got(&direct).len(), 3, "no window: each at once");
        assert_eq!(got(&batched[0]).len(), 1, "the first at once, the others wait for the window's end");
        for s in shards.iter_mut() {
            s.handle_timeout(4 + 999_999);
        }
        assert_eq!(got(&batched[0]).len(), 1, "not yet: the window opened at 4");
        for s in shards.iter_mut() {
            s.handle_timeout(4 + 1_000_000);
        }
        let (a, b) = (got(&batched[0]), got(&batched[1]));
        assert_eq!((a.len(), b.len()), (3, 3));
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.as_ptr(), y.as_ptr(), "the same piece for every connection of the dialect");
        }
        assert_ne!(a[0].as_ptr(), got(&direct)[0].as_ptr(), "each dialect its own render");
    }
}
