//! A shard: one executor on one core, with the connections it accepted, the topics it owns and its share
//! of the subscription index. Shards talk only through the mesh of bounded channels ([`ShardMsg`] batches);
//! interest is read lock-free from the shared [`InterestMap`].

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tickwire_core::event::{Ingest, TradePoint};
use tickwire_core::protocol::canonical::Canonical;
use tickwire_core::time::Micros;
use tickwire_core::{Channel, Topic};
use tickwire_fanout::bars::{BarAggregator, ClosedBar};
use tickwire_fanout::index::SubscriptionIndex;
use tickwire_fanout::interest::{InterestMap, ShardInterest};
use tickwire_fanout::sequencer::Sequencer;
use tickwire_persistence::Store;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::metrics::LatencyHistogram;
use crate::session::{Conn, ConnRef};
use crate::util::{now_micros, LocalNotify};

/// State shared by every shard (immutable, or atomics).
#[derive(Debug)]
pub struct Shared {
    pub config: Config,
    pub shards: usize,
    pub auth: Authenticator,
    pub interest: Arc<InterestMap>,
    pub stats: Box<[ShardStats]>,
    pub shutdown: Arc<AtomicBool>,
    /// Names this run's sequence space.
    pub epoch: String,
    pub started: Instant,
    pub store: Arc<dyn Store>,
    /// Symbols of the simulated feed.
    pub symbols: Vec<Arc<str>>,
}

/// Channels in the catalog, for per-channel figures indexed by `Channel as usize`.
pub const CHANNELS: usize = tickwire_core::channel::CATALOG.len();

/// Per-shard figures, written by the shard, read by anyone (`/metrics`, the status endpoints). Aligned to
/// its own cache lines so that shards never write to a line another shard writes.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct ShardStats {
    pub connections: AtomicU64,
    pub connections_opened: AtomicU64,
    pub connections_closed: AtomicU64,
    /// Connections closed with 1013 "slow consumer" (counted when the connection ends).
    pub slow_consumer_closes: AtomicU64,
    pub subscriptions: AtomicU64,
    pub topics: AtomicU64,
    /// Update frames queued to subscribers, by channel: one add per topic update, not per subscriber.
    pub deliveries_by_channel: [AtomicU64; CHANNELS],
    /// Their bytes (frame length times subscribers), by channel.
    pub delivered_bytes_by_channel: [AtomicU64; CHANNELS],
    pub messages_in: AtomicU64,
    pub ingested: AtomicU64,
    pub published: AtomicU64,
    pub simulated: AtomicU64,
    /// Socket writes by the connections' writers, and the frames and bytes they carried.
    pub writes: AtomicU64,
    pub written_frames: AtomicU64,
    pub written_bytes: AtomicU64,
    /// Outbound queues summed over the shard's connections, and the largest one, sampled by the ticker.
    pub queued_bytes: AtomicU64,
    pub queued_frames: AtomicU64,
    pub queued_bytes_max: AtomicU64,
    /// Ingest-to-flush latency, one sample per write batch.
    pub flush_latency: LatencyHistogram,
    /// Milliseconds since start at the shard's last tick, for /healthz.
    pub alive_ms: AtomicU64,
}

impl ShardStats {
    /// Update frames queued to subscribers, all channels.
    pub fn deliveries(&self) -> u64 {
        self.deliveries_by_channel.iter().map(|a| a.load(Ordering::Relaxed)).sum()
    }

    /// Their bytes, all channels.
    pub fn delivered_bytes(&self) -> u64 {
        self.delivered_bytes_by_channel.iter().map(|a| a.load(Ordering::Relaxed)).sum()
    }

    /// Counts `n` deliveries of a `len`-byte frame of `channel`: two adds, whatever `n`.
    fn delivered(&self, channel: Channel, n: usize, bytes: usize) {
        if n > 0 {
            self.deliveries_by_channel[channel as usize].fetch_add(n as u64, Ordering::Relaxed);
            self.delivered_bytes_by_channel[channel as usize].fetch_add(bytes as u64, Ordering::Relaxed);
        }
    }
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
}

/// Messages between shards, sent in batches.
#[derive(Debug)]
pub enum ShardMsg {
    /// To a topic's owner: sequence these; answer `(origin shard, request)` if set.
    Ingest { items: Vec<IngestItem>, reply: Option<(usize, u64)> },
    /// Back to the origin: the sequences given, as `(event, topic, sequence)`.
    Ingested { request: u64, sequences: Vec<(usize, Topic, u64)> },
    /// From a topic's owner to a shard with subscribers: one sequenced frame, sequenced at `ingested`.
    Fanout { topic: Topic, frame: Bytes, ingested: Micros },
    /// To a topic's owner: connection `conn` of shard `from` wants the snapshot.
    SnapshotRequest { topic: Topic, from: usize, conn: u64 },
    /// From the owner: the snapshot (or none yet); updates after it on this channel follow it.
    Snapshot { topic: Topic, conn: u64, frame: Option<Bytes> },
}

/// Messages waiting to be sent to one peer, flushed by its pump task.
#[derive(Debug, Default)]
pub struct Outbox {
    pub queue: RefCell<Vec<ShardMsg>>,
    pub ready: LocalNotify,
}

/// A publish request waiting for its owners' answers.
#[derive(Debug, Default)]
struct PendingPublish {
    remaining: Cell<usize>,
    sequences: RefCell<Vec<(usize, Topic, u64)>>,
    done: LocalNotify,
}

/// See the module docs.
#[derive(Debug)]
pub struct Shard {
    pub id: usize,
    pub shared: Arc<Shared>,
    pub index: RefCell<SubscriptionIndex<ConnRef>>,
    interest: RefCell<ShardInterest>,
    sequencer: RefCell<Sequencer<Canonical>>,
    bars: RefCell<BarAggregator>,
    pub conns: RefCell<HashMap<u64, Rc<Conn>>>,
    pub outboxes: Vec<Outbox>,
    pending: RefCell<HashMap<u64, Rc<PendingPublish>>>,
    next_id: Cell<u64>,
    /// Woken when the last connection leaves (graceful stop).
    pub drained: LocalNotify,
}

impl Shard {
    pub fn new(id: usize, shared: Arc<Shared>) -> Shard {
        let interest = ShardInterest::new(shared.interest.clone(), id);
        Shard {
            id,
            outboxes: (0..shared.shards).map(|_| Outbox::default()).collect(),
            shared,
            index: RefCell::new(SubscriptionIndex::new()),
            interest: RefCell::new(interest),
            sequencer: RefCell::new(Sequencer::new(Canonical)),
            bars: RefCell::new(BarAggregator::new()),
            conns: RefCell::new(HashMap::new()),
            pending: RefCell::new(HashMap::new()),
            next_id: Cell::new(1),
            drained: LocalNotify::default(),
        }
    }

    pub fn stats(&self) -> &ShardStats {
        &self.shared.stats[self.id]
    }

    /// A shard-unique id.
    pub fn next_id(&self) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        id
    }

    /// Queues a message for `peer` and wakes its pump.
    fn send(&self, peer: usize, msg: ShardMsg) {
        let outbox = &self.outboxes[peer];
        outbox.queue.borrow_mut().push(msg);
        outbox.ready.notify();
    }

    /// Handles a message from a peer (or from this shard itself).
    pub fn handle(&self, msg: ShardMsg) {
        match msg {
            ShardMsg::Ingest { items, reply } => {
                let now = now_micros();
                let sequences: Vec<_> = items.into_iter().map(|item| self.sequence(item, now)).collect();
                if let Some((origin, request)) = reply {
                    self.answer(origin, request, sequences);
                }
            }
            ShardMsg::Ingested { request, sequences } => {
                let Some(p) = self.pending.borrow().get(&request).cloned() else { return };
                p.remaining.set(p.remaining.get().saturating_sub(sequences.len()));
                p.sequences.borrow_mut().extend(sequences);
                if p.remaining.get() == 0 {
                    p.done.notify();
                }
            }
            ShardMsg::Fanout { topic, frame, ingested } => self.deliver(&topic, &frame, ingested),
            ShardMsg::SnapshotRequest { topic, from, conn } => {
                let frame = self.sequencer.borrow_mut().snapshot(&topic).frame;
                if from == self.id {
                    self.snapshot_arrived(&topic, conn, frame);
                } else {
                    self.send(from, ShardMsg::Snapshot { topic, conn, frame });
                }
            }
            ShardMsg::Snapshot { topic, conn, frame } => self.snapshot_arrived(&topic, conn, frame),
        }
    }

    fn answer(&self, origin: usize, request: u64, sequences: Vec<(usize, Topic, u64)>) {
        if origin == self.id {
            self.handle(ShardMsg::Ingested { request, sequences });
        } else {
            self.send(origin, ShardMsg::Ingested { request, sequences });
        }
    }

    /// Owner side: sequences one item, fans it out, and aggregates bars from trades.
    fn sequence(&self, item: IngestItem, now: Micros) -> (usize, Topic, u64) {
        let out = self.sequencer.borrow_mut().ingest(&item.topic, item.data, item.source_ts, now);
        self.stats().ingested.fetch_add(1, Ordering::Relaxed);
        self.fan_out(&item.topic, out.frame, now);
        if let Some(t) = item.trade {
            let mut closed = Vec::new();
            self.bars.borrow_mut().on_trade(&item.topic.key, t.price, t.size, now, &mut closed);
            self.publish_bars(closed, now);
        }
        (item.event, item.topic, out.sequence)
    }

    /// Sequences and fans out bars that closed.
    pub fn publish_bars(&self, closed: Vec<ClosedBar>, now: Micros) {
        for bar in closed {
            let out = self.sequencer.borrow_mut().ingest(&bar.topic, bar.data, None, now);
            self.fan_out(&bar.topic, out.frame, now);
        }
    }

    /// Closes bars whose interval has ended.
    pub fn close_due_bars(&self, now: Micros) {
        let mut closed = Vec::new();
        self.bars.borrow_mut().close_due(now, &mut closed);
        self.publish_bars(closed, now);
    }

    /// Owner side: sends a frame, sequenced at `ingested`, to every shard with subscribers of `topic`.
    fn fan_out(&self, topic: &Topic, frame: Bytes, ingested: Micros) {
        let mut mask = self.shared.interest.shards(topic);
        while mask != 0 {
            let shard = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            if shard == self.id {
                self.deliver(topic, &frame, ingested);
            } else if shard < self.shared.shards {
                self.send(shard, ShardMsg::Fanout { topic: topic.clone(), frame: frame.clone(), ingested });
            }
        }
    }

    /// Subscriber side: queues a frame on every local subscriber's connection, with its ingest stamp.
    fn deliver(&self, topic: &Topic, frame: &Bytes, ingested: Micros) {
        let n = self.index.borrow_mut().deliver_stamped(topic, frame, ingested, now_micros());
        self.stats().delivered(topic.channel, n, n * frame.len());
    }

    /// Sends throttled subscriptions' pending frames whose window passed.
    pub fn flush_throttled(&self, now: Micros) {
        let stats = self.stats();
        self.index.borrow_mut().flush_throttled_each(now, |topic, n, bytes| stats.delivered(topic.channel, n, bytes));
    }

    /// Samples the outbound queues of the shard's connections into the stats' gauges.
    pub fn sample_queues(&self) {
        let (mut bytes, mut frames, mut max) = (0, 0, 0);
        for conn in self.conns.borrow().values() {
            let (b, f) = conn.queued();
            bytes += b;
            frames += f;
            max = max.max(b);
        }
        let stats = self.stats();
        stats.queued_bytes.store(bytes as u64, Ordering::Relaxed);
        stats.queued_frames.store(frames as u64, Ordering::Relaxed);
        stats.queued_bytes_max.store(max as u64, Ordering::Relaxed);
    }

    fn snapshot_arrived(&self, topic: &Topic, conn: u64, frame: Option<Bytes>) {
        let mut index = self.index.borrow_mut();
        if let Some(sink) = index.activate(topic, conn) {
            if let Some(f) = frame {
                sink.0.send(f);
            }
        }
    }

    /// Subscribes a connection to a topic: pending until the owner's snapshot arrives.
    pub fn subscribe(&self, conn: &Rc<Conn>, topic: Topic, throttle_ms: u32) {
        let added = self.index.borrow_mut().add(&topic, ConnRef(conn.clone()), throttle_ms);
        if added == tickwire_fanout::index::Added::FirstOnShard {
            self.interest.borrow_mut().add(&topic);
        }
        let owner = topic.owner(self.shared.shards);
        let request = ShardMsg::SnapshotRequest { topic, from: self.id, conn: conn.key };
        if owner == self.id {
            self.handle(request);
        } else {
            self.send(owner, request);
        }
        self.note_index();
    }

    /// Removes one subscription of a connection.
    pub fn unsubscribe(&self, conn_key: u64, topic: &Topic) {
        if self.index.borrow_mut().remove(topic, conn_key) == Some(true) {
            self.interest.borrow_mut().remove(topic);
        }
        self.note_index();
    }

    fn note_index(&self) {
        let index = self.index.borrow();
        self.stats().subscriptions.store(index.subscriptions() as u64, Ordering::Relaxed);
        self.stats().topics.store(index.topics() as u64, Ordering::Relaxed);
    }

    /// Routes events to their topics' owners. With `wait`, returns the sequences given once every owner
    /// answered: `(event, topic, sequence)`, in event order.
    pub async fn ingest(&self, events: Vec<Ingest>, wait: bool) -> Vec<(usize, Topic, u64)> {
        let shards = self.shared.shards;
        let mut per_owner: Vec<Vec<IngestItem>> = (0..shards).map(|_| Vec::new()).collect();
        let mut total = 0;
        for (event, ev) in events.into_iter().enumerate() {
            let data = Bytes::from(ev.data);
            let source_ts = ev.source_ts.map(Bytes::from);
            for topic in ev.topics {
                let owner = topic.owner(shards);
                per_owner[owner].push(IngestItem {
                    event,
                    topic,
                    data: data.clone(),
                    source_ts: source_ts.clone(),
                    trade: ev.trade,
                });
                total += 1;
            }
        }
        let request = self.next_id();
        let pending = Rc::new(PendingPublish::default());
        pending.remaining.set(total);
        if wait {
            self.pending.borrow_mut().insert(request, pending.clone());
        }
        let reply = wait.then_some((self.id, request));
        for (owner, items) in per_owner.into_iter().enumerate() {
            if items.is_empty() {
                continue;
            }
            if owner == self.id {
                self.handle(ShardMsg::Ingest { items, reply });
            } else {
                self.send(owner, ShardMsg::Ingest { items, reply });
            }
        }
        if !wait {
            return Vec::new();
        }
        if pending.remaining.get() > 0 {
            pending.done.wait().await;
        }
        self.pending.borrow_mut().remove(&request);
        let mut sequences = pending.sequences.take();
        sequences.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        sequences
    }

    /// Registers a new connection.
    pub fn add_conn(&self, conn: Rc<Conn>) {
        self.conns.borrow_mut().insert(conn.key, conn);
        self.stats().connections.fetch_add(1, Ordering::Relaxed);
        self.stats().connections_opened.fetch_add(1, Ordering::Relaxed);
    }

    /// Forgets a connection and all its subscriptions.
    pub fn remove_conn(&self, conn: &Conn) {
        let topics: Vec<Topic> = conn.subs.borrow_mut().drain().map(|(t, _)| t).collect();
        for t in &topics {
            self.unsubscribe(conn.key, t);
        }
        if self.conns.borrow_mut().remove(&conn.key).is_some() {
            self.stats().connections.fetch_sub(1, Ordering::Relaxed);
            self.stats().connections_closed.fetch_add(1, Ordering::Relaxed);
        }
        if self.conns.borrow().is_empty() {
            self.drained.notify();
        }
    }

    /// Whether the server is stopping.
    pub fn stopping(&self) -> bool {
        self.shared.shutdown.load(Ordering::Relaxed)
    }
}
