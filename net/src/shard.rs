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
use tickwire_core::protocol::{ErrorCode, Reply};
use tickwire_core::time::Micros;
use tickwire_core::ws::{self, close, Opcode};
use tickwire_core::{Channel, Topic};
use tickwire_fanout::bars::{BarAggregator, ClosedBar};
use tickwire_fanout::frame::reply_frame;
use tickwire_fanout::index::SubscriptionIndex;
use tickwire_fanout::interest::{InterestMap, ShardInterest};
use tickwire_fanout::outbound::NO_STAMP;
use tickwire_fanout::sequencer::{Limits, Resume, Sequencer};
use tickwire_persistence::{CriticalRecord, Receipt, RecoveredTopic, Store};

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
    /// Private topics continued from an earlier run (the database store), taken by their owner shards.
    pub recovered: std::sync::Mutex<Vec<RecoveredTopic>>,
    /// Symbols of the simulated feed.
    pub symbols: Vec<Arc<str>>,
    /// Connection limits, TLS, API keys, the order-signing key.
    pub security: crate::security::Security,
}

/// Channels in the catalog, for per-channel figures indexed by `Channel as usize`.
pub const CHANNELS: usize = tickwire_core::channel::CATALOG.len();

/// Per-shard figures, written by the shard, read by anyone (`/metrics`, the status endpoints). Aligned to
/// its own cache lines so that shards never write to a line another shard writes. The plain counters and
/// gauges are declared once in [`crate::stats`] and reached through `Deref` (`stats.connections`).
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct ShardStats {
    pub counters: crate::stats::Counters,
    /// Update frames queued to subscribers, by channel: one add per topic update, not per subscriber.
    pub deliveries_by_channel: [AtomicU64; CHANNELS],
    /// Their bytes (frame length times subscribers), by channel.
    pub delivered_bytes_by_channel: [AtomicU64; CHANNELS],
    /// Events entering the server at the shard, by source.
    pub published: AtomicU64,
    pub simulated: AtomicU64,
    /// Ingest-to-flush latency, one sample per write batch.
    pub flush_latency: LatencyHistogram,
    /// Milliseconds since start at the shard's last tick, for /healthz and the stall observer.
    pub alive_ms: AtomicU64,
    /// The shard thread's id, for the stall observer; 0 until its ticker runs.
    pub tid: AtomicU64,
    /// What the observer saw of the thread during a late tick ([`crate::lag::observe`]).
    pub seen: crate::lag::Seen,
    /// How late the shard's ticker woke, one sample per tick ([`crate::lag`]).
    pub loop_lag: LatencyHistogram,
    /// Ticks later than [`crate::lag::WARN`], by cause: [`crate::lag::Cause::ALL`] in order, then unknown.
    pub stalls: [AtomicU64; 4],
}

impl std::ops::Deref for ShardStats {
    type Target = crate::stats::Counters;

    fn deref(&self) -> &crate::stats::Counters {
        &self.counters
    }
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
    /// Back to the origin: the sequences given, as `(event, topic, sequence)`, and one entry per critical
    /// item: its receipt from a durable store (`None` from the memory store).
    Ingested { request: u64, sequences: Vec<(usize, Topic, u64)>, receipts: Vec<Option<Receipt>> },
    /// From a topic's owner to a shard with subscribers: one sequenced frame, sequenced at `ingested`.
    Fanout { topic: Topic, frame: Bytes, ingested: Micros },
    /// To a topic's owner: connection `conn` of shard `from` subscribes, resuming as asked.
    SnapshotRequest { topic: Topic, from: usize, conn: u64, resume: Resume },
    /// From the owner: what the subscriber gets first (snapshot, replayed history, a `reset`, or unacked
    /// critical messages, see [`tickwire_fanout::sequencer::Start`]); live updates on this channel follow.
    Snapshot { topic: Topic, conn: u64, frames: Vec<Bytes>, dropped: u64 },
    /// To a critical topic's owner: the user acknowledged everything up to `sequence`.
    Ack { topic: Topic, sequence: u64 },
    /// At shutdown, to every peer: everything this shard sent before (fan-out of updates already
    /// acknowledged to their publishers, among others) has arrived. Messages between two shards keep
    /// their order.
    Quiesce,
    /// A test aid (`debug_endpoints`): block this shard's thread for this long.
    Stall { ms: u64 },
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
    receipts: RefCell<Vec<Option<Receipt>>>,
    done: LocalNotify,
}

/// What a publish request got: its sequences, `(event, topic, sequence)` in event order, and one entry per
/// critical item, its receipt from a durable store (`None` from the memory store).
#[derive(Debug, Default)]
pub struct Published {
    pub sequences: Vec<(usize, Topic, u64)>,
    pub receipts: Vec<Option<Receipt>>,
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
    /// Woken when the last session ends (graceful stop).
    pub drained: LocalNotify,
    /// Woken by the ticker once it sees the server stopping: the accept loop ends.
    pub stop: LocalNotify,
    /// Peers whose `Quiesce` arrived, and its notification.
    pub quiesced: Cell<usize>,
    pub quiesce: LocalNotify,
    /// Sessions running, including those whose connection is closing (flushing its close frame).
    sessions: Cell<usize>,
    /// Heartbeat wheel: one slot per second of the interval, each holding the keys of connections that
    /// opened in that second (mod the interval); the ticker visits one slot a second.
    wheel: RefCell<Vec<Vec<u64>>>,
    /// The server's ping, built once.
    ping: Bytes,
}

impl Shard {
    pub fn new(id: usize, shared: Arc<Shared>) -> Shard {
        let interest = ShardInterest::new(shared.interest.clone(), id);
        let mut sequencer = Sequencer::with_limits(
            Canonical,
            Limits {
                history_public: shared.config.history_public,
                history_private: shared.config.history_private,
                critical_queue: shared.config.critical_queue,
            },
        )
        .with_signer(crate::signing::order_signer(&shared));
        {
            // The topics this shard owns, continued from the database; the rest stay for their owners.
            let mut recovered = shared.recovered.lock().unwrap_or_else(|e| e.into_inner());
            recovered.retain_mut(|t| {
                let topic = Topic::new(t.channel, t.user.as_str());
                if topic.owner(shared.shards) != id {
                    return true;
                }
                sequencer.restore(&topic, t.sequence, std::mem::take(&mut t.unacked));
                false
            });
        }
        Shard {
            id,
            outboxes: (0..shared.shards).map(|_| Outbox::default()).collect(),
            index: RefCell::new(SubscriptionIndex::new()),
            interest: RefCell::new(interest),
            sequencer: RefCell::new(sequencer),
            wheel: RefCell::new(vec![Vec::new(); shared.config.heartbeat_s.max(1) as usize]),
            ping: ws::frame(Opcode::Ping, b""),
            shared,
            bars: RefCell::new(BarAggregator::new()),
            conns: RefCell::new(HashMap::new()),
            pending: RefCell::new(HashMap::new()),
            next_id: Cell::new(1),
            drained: LocalNotify::default(),
            stop: LocalNotify::default(),
            quiesced: Cell::new(0),
            quiesce: LocalNotify::default(),
            sessions: Cell::new(0),
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
                let mut receipts = Vec::new();
                let sequences: Vec<_> = items.into_iter().map(|item| self.sequence(item, now, &mut receipts)).collect();
                if let Some((origin, request)) = reply {
                    self.answer(origin, request, sequences, receipts);
                }
            }
            ShardMsg::Ingested { request, sequences, receipts } => {
                let Some(p) = self.pending.borrow().get(&request).cloned() else { return };
                p.remaining.set(p.remaining.get().saturating_sub(sequences.len()));
                p.sequences.borrow_mut().extend(sequences);
                p.receipts.borrow_mut().extend(receipts);
                if p.remaining.get() == 0 {
                    p.done.notify();
                }
            }
            ShardMsg::Fanout { topic, frame, ingested } => self.deliver(&topic, &frame, ingested),
            ShardMsg::SnapshotRequest { topic, from, conn, resume } => {
                let start = self.sequencer.borrow_mut().start(&topic, resume, now_micros());
                self.stats().replayed_frames.fetch_add(start.replayed as u64, Ordering::Relaxed);
                if start.reset.is_some() {
                    self.stats().resets.fetch_add(1, Ordering::Relaxed);
                }
                let (frames, dropped) = (start.frames, start.dropped);
                if from == self.id {
                    self.snapshot_arrived(&topic, conn, frames, dropped);
                } else {
                    self.send(from, ShardMsg::Snapshot { topic, conn, frames, dropped });
                }
            }
            ShardMsg::Snapshot { topic, conn, frames, dropped } => self.snapshot_arrived(&topic, conn, frames, dropped),
            ShardMsg::Ack { topic, sequence } => {
                let released = self.sequencer.borrow_mut().ack(&topic, sequence);
                self.stats().critical_acked.fetch_add(released as u64, Ordering::Relaxed);
                self.shared.store.critical_acked(&topic.key, topic.channel, sequence, now_micros());
            }
            ShardMsg::Quiesce => {
                self.quiesced.set(self.quiesced.get() + 1);
                self.quiesce.notify();
            }
            ShardMsg::Stall { ms } => {
                tracing::warn!(shard = self.id, ms, "debug stall: blocking this shard's thread as asked");
                debug_stall::block(std::time::Duration::from_millis(ms));
            }
        }
    }

    /// A test aid (`debug_endpoints`): blocks every other shard's thread for `ms`; returns their ids.
    pub fn stall_peers(&self, ms: u64) -> Vec<usize> {
        let peers: Vec<usize> = (0..self.shared.shards).filter(|&p| p != self.id).collect();
        for &peer in &peers {
            self.send(peer, ShardMsg::Stall { ms });
        }
        peers
    }

    /// Sends `Quiesce` to every peer. Public for the shutdown in `server`.
    pub fn send_quiesce(&self) {
        for peer in (0..self.shared.shards).filter(|&p| p != self.id) {
            self.send(peer, ShardMsg::Quiesce);
        }
    }

    fn answer(&self, origin: usize, request: u64, sequences: Vec<(usize, Topic, u64)>, receipts: Vec<Option<Receipt>>) {
        let msg = ShardMsg::Ingested { request, sequences, receipts };
        if origin == self.id {
            self.handle(msg);
        } else {
            self.send(origin, msg);
        }
    }

    /// Owner side: sequences one item, fans it out, and aggregates bars from trades. A private topic's
    /// update goes to the store too: a critical one whole (its receipt joins `receipts`), another as its
    /// sequence.
    fn sequence(&self, item: IngestItem, now: Micros, receipts: &mut Vec<Option<Receipt>>) -> (usize, Topic, u64) {
        let out = self.sequencer.borrow_mut().ingest(&item.topic, item.data, item.source_ts, now);
        self.stats().ingested.fetch_add(1, Ordering::Relaxed);
        if item.topic.channel.is_private() {
            let (store, topic) = (&self.shared.store, &item.topic);
            if topic.channel.is_critical() {
                receipts.push(store.critical_enqueued(CriticalRecord {
                    user: topic.key.to_string(),
                    channel: topic.channel,
                    sequence: out.sequence,
                    frame: out.frame.clone(),
                    created_at: now,
                }));
            } else {
                store.private_sequenced(&topic.key, topic.channel, out.sequence);
            }
        }
        if out.dropped > 0 {
            self.queue_overflowed(&item.topic, out.dropped, now);
        }
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

    /// Owner side: a critical topic's queue dropped its oldest messages. A user online is told now; one
    /// offline is told when they next subscribe (the sequencer keeps the count until then).
    fn queue_overflowed(&self, topic: &Topic, dropped: u64, now: Micros) {
        self.stats().critical_dropped.fetch_add(dropped, Ordering::Relaxed);
        if self.shared.interest.shards(topic) == 0 {
            return;
        }
        self.sequencer.borrow_mut().dropped_told(topic);
        self.fan_out(topic, queue_overflow_frame(topic, dropped, self.shared.config.critical_queue, now), NO_STAMP);
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

    fn snapshot_arrived(&self, topic: &Topic, conn: u64, frames: Vec<Bytes>, dropped: u64) {
        let mut index = self.index.borrow_mut();
        if let Some(sink) = index.activate(topic, conn) {
            if dropped > 0 {
                sink.0.send(queue_overflow_frame(topic, dropped, self.shared.config.critical_queue, now_micros()));
            }
            for f in frames {
                sink.0.send(f);
            }
        }
    }

    /// Acknowledges a critical topic up to `sequence`, at its owner.
    pub fn ack(&self, topic: Topic, sequence: u64) {
        let owner = topic.owner(self.shared.shards);
        let msg = ShardMsg::Ack { topic, sequence };
        if owner == self.id {
            self.handle(msg);
        } else {
            self.send(owner, msg);
        }
    }

    /// Subscribes a connection to a topic: pending until the owner's answer (snapshot, replay, unacked
    /// critical messages) arrives.
    pub fn subscribe(&self, conn: &Rc<Conn>, topic: Topic, throttle_ms: u32, resume: Resume) {
        let added = self.index.borrow_mut().add(&topic, ConnRef(conn.clone()), throttle_ms);
        if added == tickwire_fanout::index::Added::FirstOnShard {
            self.interest.borrow_mut().add(&topic);
        }
        let owner = topic.owner(self.shared.shards);
        let request = ShardMsg::SnapshotRequest { topic, from: self.id, conn: conn.key, resume };
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
        self.publish(events, wait).await.sequences
    }

    /// [`Shard::ingest`], with the receipts of the critical items (see [`Published`]).
    pub async fn publish(&self, events: Vec<Ingest>, wait: bool) -> Published {
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
            return Published::default();
        }
        if pending.remaining.get() > 0 {
            pending.done.wait().await;
        }
        self.pending.borrow_mut().remove(&request);
        let mut sequences = pending.sequences.take();
        sequences.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        Published { sequences, receipts: pending.receipts.take() }
    }

    /// Registers a new connection, and puts it on the heartbeat wheel.
    pub fn add_conn(&self, conn: Rc<Conn>) {
        let mut wheel = self.wheel.borrow_mut();
        // The slot of the second before this one was visited already: the first ping comes a whole
        // interval later (less at most a second), never right after the welcome.
        let slot = ((now_micros() / 1_000_000) as usize + wheel.len() - 1) % wheel.len();
        wheel[slot].push(conn.key);
        drop(wheel);
        self.sessions.set(self.sessions.get() + 1);
        self.stats().sessions.fetch_add(1, Ordering::Relaxed);
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
    }

    /// A session ended: its connection is closed and its close frame sent (or given up on).
    pub fn session_ended(&self) {
        self.sessions.set(self.sessions.get().saturating_sub(1));
        self.stats().sessions.fetch_sub(1, Ordering::Relaxed);
        if self.sessions.get() == 0 {
            self.drained.notify();
        }
    }

    /// Sessions still running.
    pub fn sessions(&self) -> usize {
        self.sessions.get()
    }

    /// The ticker woke late: counts the stall by cause and logs it with the shard's state (rate-limited).
    pub fn stalled(&self, probe: &mut crate::lag::LagProbe, stall: &crate::lag::Stall) {
        let stats = self.stats();
        let i = stall.cause.map_or(crate::lag::Cause::ALL.len(), |c| c as usize);
        stats.stalls[i].fetch_add(1, Ordering::Relaxed);
        // The tick that was late started at the last `alive_ms` (the ticker moves it after this call).
        let seen = stats.seen.take(stats.alive_ms.load(Ordering::Relaxed));
        if let Some(unlogged) = probe.should_log(Instant::now(), stall.lag) {
            let connections = stats.connections.load(Ordering::Relaxed);
            let queued: u64 = self.conns.borrow().values().map(|c| c.queued().0 as u64).sum();
            crate::lag::log_stall(self.id, stall, seen.as_deref(), unlogged, connections, queued, self.sessions());
        }
    }

    /// Visits this second's slot of the heartbeat wheel: pings each connection there, and closes those
    /// silent for two intervals. Each connection is visited once per interval, whatever their number.
    pub fn heartbeat_tick(&self, now: Micros) {
        let hb = self.shared.config.heartbeat_s.max(1) as usize;
        let slot = (now / 1_000_000) as usize % hb;
        let silent_after = 2 * hb as i64 * 1_000_000;
        let conns = self.conns.borrow();
        let mut wheel = self.wheel.borrow_mut();
        wheel[slot].retain(|key| {
            let Some(conn) = conns.get(key) else { return false };
            if conn.is_closing() {
                // Closed already (by this wheel a turn ago, or otherwise): neither pinged nor counted again.
                return true;
            }
            if now - conn.last_in.get() >= silent_after {
                self.stats().heartbeat_closes.fetch_add(1, Ordering::Relaxed);
                conn.request_close(close::HEARTBEAT_TIMEOUT, "heartbeat timeout");
            } else {
                conn.send(self.ping.clone());
            }
            true
        });
    }

    /// Closes connections that have stayed behind (conflated and not drained since) past the grace time.
    pub fn sweep_slow_consumers(&self, now: Micros) {
        let grace = self.shared.config.slow_consumer_grace_ms as i64 * 1000;
        for conn in self.conns.borrow().values() {
            if conn.behind_since().is_some_and(|since| now - since >= grace) {
                conn.close_slow();
            }
        }
    }

    /// Whether the server is stopping.
    pub fn stopping(&self) -> bool {
        self.shared.shutdown.load(Ordering::Relaxed)
    }
}

/// The debug stall (`debug_endpoints`): shard threads blocked until a time limit or a release, whichever
/// comes first.
pub mod debug_stall {
    use std::sync::{Condvar, Mutex};
    use std::time::Duration;

    /// Release generation: a blocked thread waits for it to change.
    static RELEASES: Mutex<u64> = Mutex::new(0);
    static RELEASED: Condvar = Condvar::new();

    /// Blocks the calling thread for at most `limit`, or until [`release`].
    pub fn block(limit: Duration) {
        let generation = RELEASES.lock().unwrap_or_else(|e| e.into_inner());
        let seen = *generation;
        let _ = RELEASED.wait_timeout_while(generation, limit, |g| *g == seen);
    }

    /// Ends every block under way.
    pub fn release() {
        *RELEASES.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        RELEASED.notify_all();
    }
}

/// `{"type":"error","code":"QUEUE_OVERFLOW",...}` for a critical topic whose queue dropped messages.
fn queue_overflow_frame(topic: &Topic, dropped: u64, cap: usize, now: Micros) -> Bytes {
    let message = format!(
        "{dropped} unacknowledged '{}' message(s) were dropped, oldest first: at most {cap} are kept; ack sooner",
        topic.channel
    );
    reply_frame(&Canonical, &Reply::Error { id: None, code: ErrorCode::QueueOverflow, message: &message }, now)
}
