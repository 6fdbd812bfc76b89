//! A shard's driver: one executor on one core, with the connections it accepted. The protocol state of
//! the shard (its topics, its share of the subscription index, the messages it has for peers) is the
//! engine's ([`tickwire_fanout::engine::Shard`]); this side feeds it time and messages, carries its messages
//! to peers over the mesh of bounded channels ([`ShardMsg`] batches), and wakes the tasks waiting on it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tickwire_core::event::Ingest;
use tickwire_core::protocol::{self as dialects, DIALECT_COUNT};
use tickwire_core::time::Micros;
use tickwire_core::ws::{self, Opcode};
use tickwire_core::{Channel, Topic};
use tickwire_fanout::engine::{self, Journal};
use tickwire_fanout::sequencer::{Limits, Resume};
use tickwire_persistence::{CriticalRecord, Receipt, Store};

use crate::conn::{Conn, ConnRef};
use crate::util::{now_micros, LocalNotify};

pub use crate::state::{ShardStats, Shared};

/// Why a publish that reached a stopping server was refused (`503` with `Retry-After: 1`; an `UNAVAILABLE`
/// error for a WebSocket publisher).
pub const STOPPING: &str =
    "the server is stopping: nothing was published; publish again (a restarted or another node takes it)";
/// What the engine tells the store: critical messages, private sequences, acks.
#[derive(Debug)]
pub struct StoreJournal(Arc<dyn Store>);

impl Journal for StoreJournal {
    type Receipt = Receipt;

    fn critical_enqueued(&self, topic: &Topic, sequence: u64, frame: &Bytes, now: Micros) -> Option<Receipt> {
        self.0.critical_enqueued(CriticalRecord {
            user: topic.key.to_string(),
            channel: topic.channel,
            sequence,
            frame: frame.clone(),
            created_at: now,
        })
    }

    fn private_sequenced(&self, topic: &Topic, sequence: u64) {
        self.0.private_sequenced(&topic.key, topic.channel, sequence);
    }

    fn critical_acked(&self, topic: &Topic, sequence: u64, now: Micros) {
        self.0.critical_acked(&topic.key, topic.channel, sequence, now);
    }

    fn sequences(&self) -> bool {
        self.0.sequences()
    }

    fn sequence(&self, topic: &Topic, data: Bytes, source_ts: Option<Bytes>, now: Micros) -> Option<Receipt> {
        Some(self.0.sequence(topic, data, source_ts, now))
    }

    fn follow(&self, topic: &Topic, generation: u64) {
        self.0.follow(topic, generation);
    }

    fn unfollow(&self, topic: &Topic) {
        self.0.unfollow(topic);
    }
}

/// The engine of a shard of the server.
pub type Engine = engine::Shard<ConnRef, StoreJournal>;

/// Messages between shards.
pub type ShardMsg = engine::ShardMsg<Receipt>;

/// What a publish request got.
pub type Published = engine::Published<Receipt>;

/// Messages waiting to be sent to one peer, flushed by its pump task.
#[derive(Debug, Default)]
pub struct Outbox {
    queue: RefCell<Vec<ShardMsg>>,
    ready: LocalNotify,
}

impl Outbox {
    /// Waits until messages are queued (returns at once if some were queued since the last wait).
    pub async fn ready(&self) {
        self.ready.wait().await;
    }

    /// Takes every message queued, as one batch.
    pub fn take(&self) -> Vec<ShardMsg> {
        std::mem::take(&mut *self.queue.borrow_mut())
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct Shard {
    pub id: usize,
    pub shared: Arc<Shared>,
    engine: RefCell<Engine>,
    conns: RefCell<HashMap<u64, Rc<Conn>>>,
    outboxes: Vec<Outbox>,
    /// Publish requests waited on, woken when the engine answers them.
    waiters: RefCell<HashMap<u64, Rc<LocalNotify>>>,
    /// Woken when the last session ends (graceful stop).
    drained: LocalNotify,
    /// Woken by the ticker once it sees the server stopping: the accept loop ends.
    stop: LocalNotify,
    /// Woken when a peer's `Quiesce` arrives.
    quiesce: LocalNotify,
    /// Sessions running, including those whose connection is closing (flushing its close frame).
    sessions: Cell<usize>,
    /// Heartbeat wheel: one slot per second of the interval, each holding the keys of connections that
    /// opened in that second (mod the interval); the ticker visits one slot a second.
    wheel: RefCell<Vec<Vec<u64>>>,
    /// The server's ping, built once.
    ping: Bytes,
    /// The connection rules' settings, shared by the shard's connections.
    conn_settings: Arc<engine::Settings>,
}

impl Shard {
    pub fn new(id: usize, shared: Arc<Shared>) -> Shard {
        let limits = Limits {
            history_public: shared.config.history_public,
            history_private: shared.config.history_private,
            critical_queue: shared.config.critical_queue,
        };
        let journal = StoreJournal(shared.store.clone());
        let signer = Some(crate::signing::order_signer(shared.security.signer.clone()));
        let stats = shared.stats[id].engine.clone();
        let mut engine = Engine::new(id, shared.shards, shared.interest.clone(), limits, signer, journal, stats);
        engine.set_board_interval(i64::from(shared.config.legacy_price_update_interval_s) * 1_000_000);
        engine.set_compression(compression(&shared.config));
        for d in &dialects::DIALECTS {
            // Seed 002 batches in windows; seed 003's private routes send each event as it comes.
            let every = if d.name == "portfolio" { i64::from(shared.config.portfolio_batch_ms) * 1_000 } else { 0 };
            engine.set_window_interval(d.id, every);
        }
        {
            // The topics this shard owns, continued from the database; the rest stay for their owners.
            let mut recovered = shared.recovered.lock().unwrap_or_else(|e| e.into_inner());
            recovered.retain_mut(|t| {
                let topic = Topic::new(t.channel, t.user.as_str());
                if topic.owner(shared.shards) != id {
                    return true;
                }
                engine.restore(&topic, t.sequence, std::mem::take(&mut t.unacked));
                false
            });
            let mut public = shared.recovered_public.lock().unwrap_or_else(|e| e.into_inner());
            public.retain(|p| {
                let mut topic = Topic::new(p.channel, p.symbol.as_str());
                topic.interval = tickwire_core::topic::BarInterval::parse(&p.interval);
                if topic.owner(shared.shards) != id {
                    return true;
                }
                engine.restore(&topic, p.sequence, Vec::new());
                false
            });
        }
        let config = &shared.config;
        let conn_settings = Arc::new(engine::Settings {
            epoch: shared.epoch.as_str().into(),
            max_message_bytes: config.max_message_bytes,
            max_messages_per_s: config.max_messages_per_s,
            max_queued_bytes: config.max_queued_bytes,
            max_subscriptions: config.max_subscriptions,
            heartbeat_s: config.heartbeat_s,
            slow_consumer_grace_ms: config.slow_consumer_grace_ms,
            session_limits: session_limits(config),
            auto_subscribe: config.legacy_auto_subscribe,
            min_throttle_ms: min_throttle_ms(config),
            compression: compression(config),
        });
        Shard {
            id,
            conn_settings,
            outboxes: (0..shared.shards).map(|_| Outbox::default()).collect(),
            engine: RefCell::new(engine),
            wheel: RefCell::new(vec![Vec::new(); shared.config.heartbeat_s.max(1) as usize]),
            ping: ws::frame(Opcode::Ping, b""),
            shared,
            conns: RefCell::new(HashMap::new()),
            waiters: RefCell::new(HashMap::new()),
            drained: LocalNotify::default(),
            stop: LocalNotify::default(),
            quiesce: LocalNotify::default(),
            sessions: Cell::new(0),
        }
    }

    /// The connection rules' settings, shared by the shard's connections.
    pub fn conn_settings(&self) -> &Arc<engine::Settings> {
        &self.conn_settings
    }

    /// The messages waiting for `peer`.
    pub fn outbox(&self, peer: usize) -> &Outbox {
        &self.outboxes[peer]
    }

    /// The shard's connections now.
    pub fn connections(&self) -> Vec<Rc<Conn>> {
        self.conns.borrow().values().cloned().collect()
    }

    /// Whether connection `key` is still open.
    pub fn has_connection(&self, key: u64) -> bool {
        self.conns.borrow().contains_key(&key)
    }

    /// The server is stopping: the accept loop may end ([`Shard::stopped`]).
    pub fn notify_stop(&self) {
        self.stop.notify();
    }

    /// Waits for [`Shard::notify_stop`].
    pub async fn stopped(&self) {
        self.stop.wait().await;
    }

    /// Waits for a peer's `Quiesce` (or returns at once if one came since the last wait).
    pub async fn quiesce_arrived(&self) {
        self.quiesce.wait().await;
    }

    /// Waits for the last session to end (or returns at once if it did since the last wait).
    pub async fn drained(&self) {
        self.drained.wait().await;
    }

    pub fn stats(&self) -> &ShardStats {
        &self.shared.stats[self.id]
    }

    /// Runs `f` on the engine, then carries out what it asks for: its messages for peers go to their
    /// outboxes (and their pumps are woken), answered publish requests wake their waiters.
    fn engine<T>(&self, f: impl FnOnce(&mut Engine) -> T) -> T {
        let mut engine = self.engine.borrow_mut();
        let out = f(&mut engine);
        while let Some((peer, batch)) = engine.poll_shard_msg() {
            let outbox = &self.outboxes[peer];
            outbox.queue.borrow_mut().extend(batch);
            outbox.ready.notify();
        }
        while let Some(request) = engine.poll_completed() {
            if let Some(waiter) = self.waiters.borrow().get(&request) {
                waiter.notify();
            }
        }
        out
    }

    /// A shard-unique id.
    pub fn next_id(&self) -> u64 {
        self.engine.borrow_mut().next_id()
    }

    /// Handles a message from a peer.
    pub fn handle(&self, msg: ShardMsg) {
        match msg {
            ShardMsg::Stall { ms } => {
                tracing::warn!(shard = self.id, ms, "debug stall: blocking this shard's thread as asked");
                debug_stall::block(std::time::Duration::from_millis(ms));
            }
            ShardMsg::Quiesce => {
                self.engine(|e| e.handle_shard_msg(now_micros(), ShardMsg::Quiesce));
                self.quiesce.notify();
            }
            msg => self.engine(|e| e.handle_shard_msg(now_micros(), msg)),
        }
    }

    /// A test aid (`debug_endpoints`): blocks every other shard's thread for `ms`; returns their ids.
    pub fn stall_peers(&self, ms: u64) -> Vec<usize> {
        self.engine(|e| e.stall_peers(ms))
    }

    /// The public topics this shard sequenced, with their last sequences (the hand-over at a graceful stop).
    pub fn public_sequences(&self) -> Vec<(Topic, u64)> {
        self.engine.borrow().public_sequences()
    }

    /// Sends `Quiesce` to every peer. Public for the shutdown in `server`.
    pub fn send_quiesce(&self) {
        self.engine(|e| e.quiesce());
    }

    /// Peers whose `Quiesce` arrived.
    pub fn quiesced(&self) -> usize {
        self.engine.borrow().quiesced()
    }

    /// Time passed: throttled flushes and bar closes that are due.
    pub fn tick(&self, now: Micros) {
        self.engine(|e| e.handle_timeout(now));
    }

    /// What the cluster's streams stored, for a topic this shard owns: kept and delivered (an update), or
    /// released (an ack made on some node).
    pub fn apply(&self, applied: crate::bus::Applied) {
        let at = match applied {
            crate::bus::Applied::Update { topic, sequence, frame, at } => {
                self.engine(|e| e.apply(now_micros(), &topic, sequence, frame));
                at
            }
            crate::bus::Applied::Ack { topic, sequence, at } => {
                self.engine(|e| e.apply_ack(&topic, sequence));
                at
            }
            crate::bus::Applied::Loaded { topic, generation } => {
                return self.engine(|e| e.loaded(now_micros(), &topic, generation));
            }
        };
        if let Some(bus) = &self.shared.bus {
            bus.applied(at);
        }
    }

    /// Acknowledges a critical topic up to `sequence`, at its owner.
    pub fn ack(&self, topic: Topic, sequence: u64) {
        self.engine(|e| e.ack(now_micros(), topic, sequence));
    }

    /// Subscribes a connection to a topic: pending until the owner's answer (snapshot, replay, unacked
    /// critical messages) arrives.
    pub fn subscribe(&self, conn: &Rc<Conn>, topic: Topic, throttle_ms: u32, resume: Resume) {
        self.engine(|e| e.subscribe(now_micros(), ConnRef(conn.clone()), topic, throttle_ms, resume));
    }

    /// Removes one subscription of a connection.
    pub fn unsubscribe(&self, conn_key: u64, topic: &Topic) {
        self.engine(|e| e.unsubscribe(conn_key, topic));
    }

    /// Routes events to their topics' owners, not waiting for their sequences (feeds, streaming publishers).
    pub fn ingest(&self, events: Vec<Ingest>) {
        self.engine(|e| e.publish(now_micros(), events, false));
    }

    /// Routes events to their topics' owners and waits for every owner's answer: the sequences given,
    /// `(event, topic, sequence)` in event order, and the receipts of the critical items (see [`Published`]).
    pub async fn publish(&self, events: Vec<Ingest>) -> Published {
        let Some(request) = self.engine(|e| e.publish(now_micros(), events, true)) else {
            return Published::default();
        };
        let waiter = Rc::new(LocalNotify::default());
        self.waiters.borrow_mut().insert(request, waiter.clone());
        loop {
            if let Some(done) = self.engine.borrow_mut().take_published(request) {
                self.waiters.borrow_mut().remove(&request);
                return done;
            }
            waiter.wait().await;
        }
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
        self.stats().connections_by_dialect[usize::from(conn.dialect.0)].fetch_add(1, Ordering::Relaxed);
        self.conns.borrow_mut().insert(conn.key, conn);
        self.stats().connections.fetch_add(1, Ordering::Relaxed);
        self.stats().connections_opened.fetch_add(1, Ordering::Relaxed);
    }

    /// Forgets a connection and all its subscriptions.
    pub fn remove_conn(&self, conn: &Conn) {
        let topics = conn.take_subscriptions();
        for t in &topics {
            self.unsubscribe(conn.key, t);
        }
        if self.conns.borrow_mut().remove(&conn.key).is_some() {
            self.stats().connections.fetch_sub(1, Ordering::Relaxed);
            self.stats().connections_by_dialect[usize::from(conn.dialect.0)].fetch_sub(1, Ordering::Relaxed);
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

    /// Visits this second's slot of the heartbeat wheel: each connection there gets its heartbeat (a ping,
    /// or a close after two silent intervals). Each connection is visited once per interval, whatever
    /// their number.
    pub fn heartbeat_tick(&self, now: Micros) {
        let hb = self.shared.config.heartbeat_s.max(1) as usize;
        let slot = (now / 1_000_000) as usize % hb;
        let conns = self.conns.borrow();
        let mut wheel = self.wheel.borrow_mut();
        wheel[slot].retain(|key| {
            let Some(conn) = conns.get(key) else { return false };
            conn.heartbeat(now, &self.ping);
            true
        });
    }

    /// Closes connections that have stayed behind (conflated and not drained since) past the grace time.
    pub fn sweep_slow_consumers(&self, now: Micros) {
        for conn in self.conns.borrow().values() {
            conn.check_slow(now);
        }
    }

    /// Whether the server is stopping: it sequences nothing more ([`STOPPING`]).
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

/// The dialects' own throttles: seed 001's portfolio interval.
fn compression(config: &crate::config::Config) -> tickwire_core::deflate::Level {
    tickwire_core::deflate::Level { level: config.compression_level, threshold: config.compression_threshold }
}

fn min_throttle_ms(config: &crate::config::Config) -> [[u32; crate::stats::CHANNELS]; DIALECT_COUNT] {
    let mut least = [[0; crate::stats::CHANNELS]; DIALECT_COUNT];
    if let Some(d) = dialects::DIALECTS.iter().find(|d| d.name == "legacy") {
        least[usize::from(d.id.0)][Channel::Portfolio as usize] = config.legacy_portfolio_update_interval_s * 1000;
    }
    least
}

/// Each dialect's liveness rule, from its settings (the table's dialects without one use the heartbeat).
fn session_limits(config: &crate::config::Config) -> [Option<engine::SessionLimits>; DIALECT_COUNT] {
    let mut limits = [None; DIALECT_COUNT];
    if let Some(d) = dialects::DIALECTS.iter().find(|d| d.name == "fastws") {
        let fastws = dialects::fastws::session_limits(config.fastws_heartbeat_s, config.fastws_lifespan_s);
        limits[usize::from(d.id.0)] = Some(fastws);
    }
    limits
}
