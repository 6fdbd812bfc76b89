//! The engine's delivery guarantees, checked by simulation: N shards and M clients driven in memory with a
//! virtual clock and a schedule drawn from a seeded random generator, the invariants checked after every
//! step. Clients speak the protocol: their requests are WebSocket frames fed to engine [`Connection`]s, and
//! what they receive is what each connection would write to its socket. Each seed is reproducible: a failure names its seed, and `SIM_SEED=<seed> cargo test -p
//! tickwire-fanout --test simulation -- one_seed` replays it alone (`SIM_TRACE=1` prints every step).
//!
//! What the schedule varies: which shard-to-shard message is delivered next (messages between two shards
//! keep their order, as the server's channels do), when a connection's writer flushes and how much (what is
//! queued is lost when a connection drops), publishes on any shard, subscribes with and without resume,
//! unsubscribes, acks, disconnects and reconnects to another shard, and time passing.
//!
//! The invariants:
//! 1. per topic and subscriber, sequences are contiguous: after the first frame of a subscription (a
//!    snapshot, a replay from the resume point, or a `reset` then a snapshot), each update is the next one;
//! 2. the same sequence of a topic is the same bytes for every subscriber (serialized once);
//! 3. a resume from sequence n that history can serve continues at n + 1, with no `reset`;
//! 4. critical messages arrive at least once and in order: across reconnects, a client that acknowledges
//!    what it received never misses one, whatever was in flight when its connection dropped;
//! 5. nothing acknowledged to a publisher is lost: once everything in flight has arrived, every subscriber
//!    holds its topics' last sequence;
//! 6. throttled subscriptions get at most one frame per window, at the virtual time the window allows, and
//!    their topic's latest frame once the window has passed.

use std::cell::{Cell, RefCell};
use std::collections::hash_map::DefaultHasher;
use std::collections::VecDeque;
use std::hash::BuildHasherDefault;
use std::rc::Rc;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tickwire_core::event::Ingest;
use tickwire_core::time::Micros;
use tickwire_core::ws::{server_frames, write_client_frame};
use tickwire_core::{Channel, Topic};
use tickwire_fanout::engine::stats::Stats;
use tickwire_fanout::engine::{Connection, Fault, Kind, NoJournal, Request, Settings, Shard, ShardMsg};
use tickwire_fanout::index::Sink;
use tickwire_fanout::interest::InterestMap;
use tickwire_fanout::sequencer::Limits;

/// The virtual times at which the shard pushed frames to a connection, in order (for throttle windows).
type Pushes = Rc<RefCell<VecDeque<Micros>>>;

/// The shard's handle on a connection: frames pushed go into the engine connection's outbound queue.
#[derive(Debug, Clone)]
struct Link {
    key: u64,
    conn: Rc<RefCell<Connection>>,
    clock: Rc<Cell<Micros>>,
    pushes: Pushes,
}

impl Sink for Link {
    fn key(&self) -> u64 {
        self.key
    }

    fn push(&self, frame: &Bytes, ingested: Micros, conflate: u64) {
        self.pushes.borrow_mut().push_back(self.clock.get());
        self.conn.borrow_mut().push(self.clock.get(), frame.clone(), ingested, conflate);
    }
}

type SimShard = Shard<Link, NoJournal>;

/// Maps iterated in the same order on every run, so that a seed replays exactly.
type HashMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<DefaultHasher>>;

/// How one subscription of a client stands.
#[derive(Debug, Clone, Default)]
struct SubState {
    /// The last sequence received (the base for contiguity and for `from_sequence`).
    last: Option<u64>,
    /// Waiting for the subscription's first frame.
    starting: bool,
    /// The resume asked for, when `starting`.
    resumed_from: Option<u64>,
    /// Throttled subscriptions: the window, and when its last frame arrived.
    throttle: Option<(Micros, Option<Micros>)>,
    /// Whether the reset of a failed resume came, and a snapshot may follow.
    reset: bool,
    /// The id of the subscribe whose `subscribed` reply has not come yet: frames of the topic before it
    /// belong to an earlier subscription.
    awaiting: Option<String>,
}

#[derive(Debug)]
struct Conn {
    shard: usize,
    link: Link,
}

#[derive(Debug)]
struct Client {
    user: String,
    conn: Option<Conn>,
    /// Topics the client wants, with their throttle (ms), and how each stands.
    subs: HashMap<Topic, (u32, SubState)>,
    /// Critical topics: the last sequence acknowledged.
    acked: HashMap<Topic, u64>,
    /// Requests sent, to name each.
    requests: u64,
}

/// The parameters of one run, drawn from its seed.
#[derive(Debug, Clone, Copy)]
struct Setup {
    shards: usize,
    clients: usize,
    steps: usize,
    history: usize,
}

struct Sim {
    seed: u64,
    rng: SmallRng,
    now: Micros,
    /// The virtual clock as sinks read it.
    clock: Rc<Cell<Micros>>,
    shards: Vec<SimShard>,
    /// The connection rules' settings.
    settings: Arc<Settings>,
    /// Messages between shards: `mesh[from][to]`, each in order.
    mesh: Vec<Vec<VecDeque<ShardMsg<()>>>>,
    clients: Vec<Client>,
    topics: Vec<Topic>,
    /// Update frames seen, by topic and sequence: every subscriber must get the same bytes.
    frames: HashMap<(Topic, u64), Bytes>,
    /// Publish requests waiting for their sequences: `(shard, request)`.
    waiting: Vec<(usize, u64)>,
    /// Critical topics: every sequence any connection of the topic's user received.
    user_received: HashMap<Topic, std::collections::BTreeSet<u64>>,
    /// The last sequence a publisher was told, per topic.
    acknowledged: HashMap<Topic, u64>,
    trace: bool,
    step: usize,
}

const SYMBOLS: [&str; 3] = ["AAA", "BBB", "CCC"];
const USERS: [&str; 2] = ["u1", "u2"];
const TICK: Micros = 1_000;

impl Sim {
    fn new(seed: u64, faults: &[(usize, Fault)]) -> (Sim, Setup) {
        let mut rng = SmallRng::seed_from_u64(seed);
        let setup = Setup {
            shards: rng.random_range(1..=4),
            clients: rng.random_range(1..=6),
            steps: rng.random_range(100..400),
            history: rng.random_range(2..16),
        };
        let map = InterestMap::new(64);
        let limits = Limits { history_public: setup.history, history_private: setup.history, critical_queue: 10_000 };
        let settings = Arc::new(Settings {
            epoch: "sim".into(),
            max_message_bytes: 64 * 1024,
            max_messages_per_s: 1_000_000,
            max_queued_bytes: 64 * 1024 * 1024,
            max_subscriptions: 1024,
            heartbeat_s: 30,
            slow_consumer_grace_ms: 60_000,
            session_limits: Default::default(),
            auto_subscribe: true,
            min_throttle_ms: Default::default(),
            compression: Default::default(),
        });
        let mut shards: Vec<SimShard> = (0..setup.shards)
            .map(|id| {
                let stats = Arc::new(Stats::default());
                Shard::new(id, setup.shards, map.clone(), limits, None, NoJournal, stats)
            })
            .collect();
        for &(shard, fault) in faults {
            for (i, s) in shards.iter_mut().enumerate() {
                if i == shard % setup.shards {
                    s.inject_fault(fault);
                }
            }
        }
        let mut topics: Vec<Topic> = SYMBOLS.iter().map(|s| Topic::new(Channel::Quotes, *s)).collect();
        for u in USERS {
            topics.push(Topic::new(Channel::Orders, u));
            topics.push(Topic::new(Channel::Portfolio, u));
        }
        let clients = (0..setup.clients)
            .map(|i| Client {
                user: USERS[i % USERS.len()].to_owned(),
                conn: None,
                subs: HashMap::default(),
                acked: HashMap::default(),
                requests: 0,
            })
            .collect();
        let sim = Sim {
            seed,
            rng,
            now: 1_700_000_000_000_000,
            clock: Rc::new(Cell::new(1_700_000_000_000_000)),
            mesh: (0..setup.shards).map(|_| (0..setup.shards).map(|_| VecDeque::new()).collect()).collect(),
            shards,
            settings,
            clients,
            topics,
            frames: HashMap::default(),
            waiting: Vec::new(),
            acknowledged: HashMap::default(),
            user_received: HashMap::default(),
            trace: std::env::var_os("SIM_TRACE").is_some(),
            step: 0,
        };
        (sim, setup)
    }

    fn fail(&self, what: String) -> String {
        format!("seed {} step {}: {what}", self.seed, self.step)
    }

    fn log(&self, what: impl FnOnce() -> String) {
        if self.trace {
            eprintln!("[{} t={}] {}", self.step, self.now, what());
        }
    }

    /// Moves what shard `s` has for its peers onto the mesh, and notes publishes it answered.
    fn collect(&mut self, s: usize) -> Result<(), String> {
        while let Some((peer, batch)) = self.shards[s].poll_shard_msg() {
            self.mesh[s][peer].extend(batch);
        }
        while let Some(request) = self.shards[s].poll_completed() {
            self.publish_answered(s, request)?;
        }
        Ok(())
    }

    fn publish_answered(&mut self, s: usize, request: u64) -> Result<(), String> {
        let Some(done) = self.shards[s].take_published(request) else {
            return Err(self.fail(format!("request {request} said complete but has no result")));
        };
        self.waiting.retain(|&w| w != (s, request));
        for (_, topic, seq) in done.sequences {
            let last = self.acknowledged.entry(topic).or_insert(0);
            *last = (*last).max(seq);
        }
        Ok(())
    }

    fn publish(&mut self) -> Result<(), String> {
        let s = self.rng.random_range(0..self.shards.len());
        let topic = self.topics[self.rng.random_range(0..self.topics.len())].clone();
        let n: u32 = self.rng.random();
        let event = Ingest::on(&topic, format!("{{\"k\":\"{}\",\"n\":{n}}}", topic.key).into_bytes());
        self.log(|| format!("publish {topic:?} on shard {s}"));
        if let Some(request) = self.shards[s].publish(self.now, vec![event], true) {
            self.waiting.push((s, request));
        }
        self.collect(s)?;
        // A request answered at once (its owner is this shard) is complete already.
        let pending: Vec<u64> = self.waiting.iter().filter(|w| w.0 == s).map(|w| w.1).collect();
        for request in pending {
            if let Some(done) = self.shards[s].take_published(request) {
                self.waiting.retain(|&w| w != (s, request));
                for (_, topic, seq) in done.sequences {
                    let last = self.acknowledged.entry(topic).or_insert(0);
                    *last = (*last).max(seq);
                }
            }
        }
        Ok(())
    }

    /// Delivers the next message of one random shard-to-shard queue.
    fn deliver_mesh(&mut self) -> Result<bool, String> {
        let queues: Vec<(usize, usize)> = (0..self.shards.len())
            .flat_map(|f| (0..self.shards.len()).map(move |t| (f, t)))
            .filter(|&(f, t)| !self.mesh[f][t].is_empty())
            .collect();
        if queues.is_empty() {
            return Ok(false);
        }
        let (from, to) = queues[self.rng.random_range(0..queues.len())];
        let Some(msg) = self.mesh[from][to].pop_front() else { return Ok(false) };
        self.log(|| format!("mesh {from}->{to}: {}", msg_name(&msg)));
        self.shards[to].handle_shard_msg(self.now, msg);
        self.collect(to)?;
        Ok(true)
    }

    /// One random connection's writer flushes part of what is queued, and its client reads it.
    fn deliver_wire(&mut self) -> Result<bool, String> {
        let busy: Vec<usize> = (0..self.clients.len())
            .filter(|&c| self.clients[c].conn.as_ref().is_some_and(|k| k.link.conn.borrow().queued().1 > 0))
            .collect();
        if busy.is_empty() {
            return Ok(false);
        }
        let c = busy[self.rng.random_range(0..busy.len())];
        // One write of at most this many bytes (always at least one frame).
        let max = self.rng.random_range(1..4096);
        let mut buf = Vec::new();
        let wire = {
            let Some(conn) = &self.clients[c].conn else { return Ok(false) };
            let mut engine = conn.link.conn.borrow_mut();
            let Some((alone, drained)) = engine.take_for_write(&mut buf, max) else { return Ok(false) };
            let wire = alone.map_or(buf, |f| f.to_vec());
            engine.written(drained.frames, wire.len());
            wire
        };
        for payload in text_frames(&wire) {
            self.receive(c, payload)?;
        }
        Ok(true)
    }

    /// A client reads one text frame: replies start subscriptions; updates must keep the invariants.
    fn receive(&mut self, c: usize, payload: Bytes) -> Result<(), String> {
        let (seed, step) = (self.seed, self.step);
        let fail = |what: String| format!("seed {seed} step {step}: {what}");
        let json: serde_json::Value =
            serde_json::from_slice(&payload).map_err(|e| fail(format!("client {c}: a frame that is not JSON: {e}")))?;
        let kind = json["type"].as_str().unwrap_or_default().to_owned();
        match kind.as_str() {
            "welcome" | "unsubscribed" => return Ok(()),
            "subscribed" => {
                let id = json["id"].as_str().unwrap_or_default();
                for (_, state) in self.clients[c].subs.values_mut() {
                    if state.awaiting.as_deref() == Some(id) {
                        state.awaiting = None;
                    }
                }
                return Ok(());
            }
            "error" => return Err(fail(format!("client {c}: an error frame: {json}"))),
            _ => {}
        }
        // Every other frame was pushed by the shard: the time it was pushed.
        let Some(sent) = self.clients[c].conn.as_ref().and_then(|k| k.link.pushes.borrow_mut().pop_front()) else {
            return Err(fail(format!("client {c}: a {kind} frame the shard never pushed")));
        };
        let Some(channel) = json["channel"].as_str().and_then(Channel::from_name) else {
            return Err(fail(format!("client {c}: a frame without a channel: {json}")));
        };
        let key = match (json["data"]["k"].as_str(), json["symbol"].as_str()) {
            (Some(k), _) | (None, Some(k)) => k.to_owned(),
            (None, None) => self.clients[c].user.clone(),
        };
        let topic = Topic::new(channel, key);
        let seq = json["sequence"].as_u64();
        self.log(|| format!("client {c} gets {topic:?} {kind} {seq:?}"));
        match self.clients[c].subs.get(&topic) {
            // An earlier subscription's frame, queued before its unsubscribe: the client drops it.
            None => return Ok(()),
            Some((_, state)) if state.awaiting.is_some() => return Ok(()),
            Some(_) => {}
        }
        let Some((_, state)) = self.clients[c].subs.get_mut(&topic) else { unreachable!() };
        let critical = topic.channel.is_critical();
        match kind.as_str() {
            "reset" => {
                if !state.starting {
                    return Err(fail(format!("client {c}: a reset of {topic:?} outside a subscription's start")));
                }
                if let (Some(from), false) = (state.resumed_from, critical) {
                    let reason = json["reason"].as_str().unwrap_or_default();
                    if reason != "history_unavailable" {
                        return Err(fail(format!("client {c}: reset of {topic:?} from {from}: {reason}")));
                    }
                }
                state.reset = true;
                return Ok(());
            }
            "snapshot" => {
                let Some(seq) = seq else { return Err(fail("a snapshot without a sequence".into())) };
                if !state.starting {
                    return Err(fail(format!("client {c}: a snapshot of {topic:?} outside a start")));
                }
                // A resume history could serve must not fall back to a snapshot (invariant 3); one it could
                // not serve comes after a reset.
                if state.resumed_from.is_some() && !state.reset {
                    return Err(fail(format!(
                        "client {c}: a snapshot of {topic:?} at {seq} without a reset, resuming from {:?}",
                        state.resumed_from
                    )));
                }
                state.starting = false;
                state.reset = false;
                state.last = Some(seq);
                return Ok(());
            }
            _ => {}
        }
        let Some(seq) = seq else { return Err(fail(format!("client {c}: an update without a sequence: {json}"))) };
        // Invariant 2: one serialization per update.
        match self.frames.get(&(topic.clone(), seq)) {
            Some(seen) if *seen != payload => {
                return Err(fail(format!("{topic:?} {seq}: subscribers got different bytes")));
            }
            Some(_) => {}
            None => {
                self.frames.insert((topic.clone(), seq), payload.clone());
            }
        }
        if critical {
            self.user_received.entry(topic.clone()).or_default().insert(seq);
        }
        let Some((_, state)) = self.clients[c].subs.get_mut(&topic) else { unreachable!() };
        if let Some((window, at)) = &mut state.throttle {
            // Invariant 6: one frame per window at most (by the virtual time it was sent), and sequences
            // only move forward.
            if let Some(prev) = *at {
                if sent < prev + *window {
                    let msg =
                        format!("client {c}: {topic:?} {seq} sent {} µs after the last, window {window}", sent - prev);
                    return Err(fail(msg));
                }
            }
            *at = Some(sent);
            if state.last.is_some_and(|l| seq <= l) {
                return Err(fail(format!("client {c}: throttled {topic:?} went back to {seq}")));
            }
            state.starting = false;
            state.last = Some(seq);
            return Ok(());
        }
        let expected = if critical {
            // A critical topic is the user's, acknowledged by any of the user's connections: a subscription
            // starts with every message not acknowledged yet (one this connection received already is a
            // redelivery it skips), then each new one must be the next. That the user got every one is
            // checked at the end, over all its connections.
            let last = state.last.unwrap_or(0);
            match (seq > last, state.starting) {
                (false, _) => None,
                (true, true) => Some(seq),
                (true, false) => Some(last + 1),
            }
        } else {
            match (state.starting, state.last, state.resumed_from) {
                (true, _, Some(from)) => Some(from + 1),
                // A new subscription with no snapshot: the topic had no update yet.
                (true, None, None) => Some(1),
                (_, Some(last), _) => Some(last + 1),
                (false, None, _) => return Err(fail(format!("client {c}: {topic:?} live with no start"))),
            }
        };
        if let Some(expected) = expected {
            if seq != expected {
                let msg = format!("client {c}: {topic:?} sequence {seq}, expected {expected} (a gap or a repeat)");
                return Err(fail(msg));
            }
            state.last = Some(seq);
        }
        state.starting = false;
        Ok(())
    }

    fn connect(&mut self, c: usize) -> Result<(), String> {
        if self.clients[c].conn.is_some() {
            return Ok(());
        }
        let s = self.rng.random_range(0..self.shards.len());
        let key = self.shards[s].next_id();
        self.log(|| format!("client {c} connects to shard {s} as {key}"));
        let user = Arc::<str>::from(self.clients[c].user.as_str());
        let stats = Arc::new(Stats::default());
        let mut engine = Connection::new(s, key, Kind::STREAM, Some(user), self.settings.clone(), stats, self.now);
        engine.welcome(self.now, "client");
        let conn = Rc::new(RefCell::new(engine));
        let link = Link { key, conn, clock: self.clock.clone(), pushes: Pushes::default() };
        self.clients[c].conn = Some(Conn { shard: s, link });
        let topics: Vec<Topic> = self.clients[c].subs.keys().cloned().collect();
        for t in topics {
            self.subscribe(c, t)?;
        }
        Ok(())
    }

    /// The client sends a request: its connection acts on it, and the shard carries out what it asks.
    fn request(&mut self, c: usize, request: serde_json::Value) -> Result<(), String> {
        let Some(conn) = &self.clients[c].conn else { return Ok(()) };
        let (s, link) = (conn.shard, conn.link.clone());
        let mut frame = Vec::new();
        write_client_frame(&mut frame, true, 1, request.to_string().as_bytes(), [7, 7, 7, 7]);
        let mut buf = BytesMut::from(&frame[..]);
        if !link.conn.borrow_mut().handle_bytes(self.now, &mut buf) {
            return Err(self.fail(format!("client {c}: the connection stopped reading after {request}")));
        }
        loop {
            let next = link.conn.borrow_mut().poll_request();
            match next {
                None => break,
                Some(Request::Subscribe { topics, throttle_ms, .. }) => {
                    for (topic, resume) in topics {
                        self.log(|| format!("shard {s} subscribes {}: {topic:?} {resume:?}", link.key));
                        self.shards[s].subscribe(self.now, link.clone(), topic, throttle_ms, resume);
                    }
                }
                Some(Request::Unsubscribe { topics }) => {
                    for t in &topics {
                        self.shards[s].unsubscribe(link.key, t);
                    }
                }
                Some(Request::Ack { topic, sequence }) => self.shards[s].ack(self.now, topic, sequence),
                Some(Request::Publish(_)) => return Err(self.fail("a subscriber published".into())),
            }
            self.collect(s)?;
        }
        Ok(())
    }

    /// (Re)subscribes client `c` to `topic` on its connection, resuming after what it has.
    fn subscribe(&mut self, c: usize, topic: Topic) -> Result<(), String> {
        if self.clients[c].conn.is_none() {
            return Ok(());
        }
        self.clients[c].requests += 1;
        let id = format!("{c}-{}", self.clients[c].requests);
        let (throttle_ms, state) = self.clients[c].subs.entry(topic.clone()).or_default();
        let from = state.last.filter(|_| state.throttle.is_none());
        state.starting = true;
        state.reset = false;
        state.resumed_from = from;
        state.awaiting = Some(id.clone());
        if let Some((_, at)) = &mut state.throttle {
            // A throttled stream restarts from its snapshot (contiguity does not apply), its window afresh.
            state.last = None;
            *at = None;
        }
        let throttle_ms = *throttle_ms;
        let mut req = serde_json::json!({"action":"subscribe","channel":topic.channel.name(),"id":id});
        let resume_key = if topic.channel.is_private() { "*" } else { &*topic.key };
        if !topic.channel.is_private() {
            req["symbols"] = serde_json::json!([&*topic.key]);
        }
        if throttle_ms > 0 {
            req["throttle_ms"] = throttle_ms.into();
        }
        if let Some(n) = from {
            req["from_sequence"] = serde_json::json!({ resume_key: n });
            req["epoch"] = "sim".into();
        }
        self.log(|| format!("client {c} sends {req}"));
        self.request(c, req)
    }

    fn disconnect(&mut self, c: usize) -> Result<(), String> {
        let Some(conn) = self.clients[c].conn.take() else { return Ok(()) };
        let lost = conn.link.conn.borrow().queued().1;
        self.log(|| format!("client {c} drops its connection ({lost} frames lost)"));
        let topics = conn.link.conn.borrow_mut().take_subscriptions();
        for t in &topics {
            self.shards[conn.shard].unsubscribe(conn.link.key, t);
        }
        self.collect(conn.shard)
    }

    fn client_action(&mut self, c: usize) -> Result<(), String> {
        let roll = self.rng.random_range(0..100);
        match roll {
            0..=14 => self.connect(c),
            15..=24 => self.disconnect(c),
            25..=54 => {
                // Subscribe a topic: public ones by anyone, private ones by their user only.
                let user = self.clients[c].user.clone();
                let choices: Vec<Topic> =
                    self.topics.iter().filter(|t| !t.channel.is_private() || *t.key == *user).cloned().collect();
                let topic = choices[self.rng.random_range(0..choices.len())].clone();
                if self.clients[c].subs.contains_key(&topic) {
                    return Ok(());
                }
                let throttle_ms = if !topic.channel.is_private() && self.rng.random_range(0..4) == 0 { 20 } else { 0 };
                let state = SubState {
                    throttle: (throttle_ms > 0).then_some((Micros::from(throttle_ms) * 1000, None)),
                    ..SubState::default()
                };
                self.clients[c].subs.insert(topic.clone(), (throttle_ms, state));
                self.subscribe(c, topic)
            }
            55..=64 => {
                // Unsubscribe a topic: frames of it still queued are dropped by the client as they come.
                let Some(topic) = self.clients[c].subs.keys().next().cloned() else { return Ok(()) };
                self.clients[c].subs.remove(&topic);
                let mut req = serde_json::json!({"action":"unsubscribe","channel":topic.channel.name()});
                if !topic.channel.is_private() {
                    req["symbols"] = serde_json::json!([&*topic.key]);
                }
                self.log(|| format!("client {c} sends {req}"));
                self.request(c, req)
            }
            _ => {
                // Acknowledge what was received of a critical topic (cumulative, as clients do).
                if self.clients[c].conn.is_none() {
                    return Ok(());
                }
                let acks: Vec<(Topic, u64)> = self.clients[c]
                    .subs
                    .iter()
                    .filter(|(t, _)| t.channel.is_critical())
                    .filter_map(|(t, (_, st))| st.last.map(|l| (t.clone(), l)))
                    .collect();
                for (topic, seq) in acks {
                    if self.clients[c].acked.get(&topic).is_some_and(|&a| a >= seq) {
                        continue;
                    }
                    self.clients[c].acked.insert(topic.clone(), seq);
                    let req = serde_json::json!({"action":"ack","channel":topic.channel.name(),"sequence":seq});
                    self.log(|| format!("client {c} sends {req}"));
                    self.request(c, req)?;
                }
                Ok(())
            }
        }
    }

    /// Time passes: each shard whose timer is due gets it.
    fn advance(&mut self, by: Micros) -> Result<(), String> {
        self.now += by;
        self.clock.set(self.now);
        for s in 0..self.shards.len() {
            if self.shards[s].poll_timeout() <= self.now {
                self.shards[s].handle_timeout(self.now);
                self.collect(s)?;
            }
        }
        Ok(())
    }

    fn step_once(&mut self) -> Result<(), String> {
        self.step += 1;
        match self.rng.random_range(0..100) {
            0..=24 => self.publish(),
            25..=54 => self.deliver_mesh().map(|_| ()),
            55..=74 => self.deliver_wire().map(|_| ()),
            75..=89 => {
                let c = self.rng.random_range(0..self.clients.len());
                self.client_action(c)
            }
            _ => {
                let by = self.rng.random_range(0..20) * TICK;
                self.advance(by)
            }
        }
    }

    /// Everything in flight arrives: messages, frames, throttle windows.
    fn settle(&mut self) -> Result<(), String> {
        for _ in 0..100_000 {
            if self.deliver_mesh()? || self.deliver_wire()? {
                continue;
            }
            // Nothing in flight: let time run past every throttle window, once; done if nothing moves.
            self.advance(100 * TICK)?;
            if !(self.deliver_mesh()? || self.deliver_wire()?) {
                return Ok(());
            }
        }
        Err(self.fail("the system did not settle".into()))
    }

    fn run(&mut self, steps: usize) -> Result<(), String> {
        for _ in 0..steps {
            self.step_once()?;
        }
        // The end: everyone connects and subscribes its user's critical topics (whatever was not
        // acknowledged must come), everything in flight arrives.
        for c in 0..self.clients.len() {
            self.connect(c)?;
            let user = self.clients[c].user.clone();
            let critical: Vec<Topic> =
                self.topics.iter().filter(|t| t.channel.is_critical() && *t.key == *user).cloned().collect();
            for topic in critical {
                if !self.clients[c].subs.contains_key(&topic) {
                    self.clients[c].subs.insert(topic.clone(), (0, SubState::default()));
                    self.subscribe(c, topic)?;
                }
            }
        }
        self.settle()?;
        if !self.waiting.is_empty() {
            return Err(self.fail(format!("publishes never answered: {:?}", self.waiting)));
        }
        // Invariant 4: the user of a critical topic got each of its messages at least once.
        for (topic, received) in &self.user_received {
            let latest = self.shards[topic.owner(self.shards.len())].sequence_of(topic);
            if let Some(missed) = (1..=latest).find(|s| !received.contains(s)) {
                return Err(self.fail(format!("{topic:?}: message {missed} of {latest} never reached its user")));
            }
        }
        // Invariant 5: every subscriber holds its topics' last sequence (critical topics: checked above, per user).
        for (c, client) in self.clients.iter().enumerate() {
            for (topic, (_, state)) in client.subs.iter().filter(|(t, _)| !t.channel.is_critical()) {
                let owner = topic.owner(self.shards.len());
                let latest = self.shards[owner].sequence_of(topic);
                let told = self.acknowledged.get(topic).copied().unwrap_or(0);
                if told > latest {
                    return Err(self.fail(format!("{topic:?}: a publisher was told {told}, the owner is at {latest}")));
                }
                if state.last.unwrap_or(0) != latest {
                    return Err(self.fail(format!(
                        "client {c}: {topic:?} ends at {:?}, the topic at {latest} (starting: {})",
                        state.last, state.starting
                    )));
                }
            }
        }
        Ok(())
    }
}

/// The payloads of the text frames in what a connection wrote.
fn text_frames(wire: &[u8]) -> Vec<Bytes> {
    server_frames(wire).into_iter().filter(|(op, _)| *op == 1).map(|(_, p)| Bytes::copy_from_slice(p)).collect()
}

fn msg_name(msg: &ShardMsg<()>) -> String {
    match msg {
        ShardMsg::Ingest { items, .. } => format!("ingest {}", items.len()),
        ShardMsg::Ingested { request, .. } => format!("ingested {request}"),
        ShardMsg::Fanout { topic, .. } => format!("fanout {topic:?}"),
        ShardMsg::SnapshotRequest { topic, conn, generation, resume, .. } => {
            format!("snapshot? {topic:?} {conn}#{generation} {resume:?}")
        }
        ShardMsg::Snapshot { topic, conn, generation, frames, .. } => {
            format!("snapshot {topic:?} {conn}#{generation} ({} frames)", frames.len())
        }
        ShardMsg::Ack { topic, sequence } => format!("ack {topic:?} {sequence}"),
        ShardMsg::Unfollow { topic } => format!("unfollow {topic:?}"),
        ShardMsg::Quiesce => "quiesce".into(),
        ShardMsg::Stall { ms } => format!("stall {ms}"),
    }
}

/// Runs one seed; the error names the seed, the step and the broken invariant.
fn run_seed(seed: u64, faults: &[(usize, Fault)]) -> Result<Setup, String> {
    let (mut sim, setup) = Sim::new(seed, faults);
    sim.run(setup.steps)?;
    Ok(setup)
}

/// How many seeds a run covers: `SIM_SEEDS`, or 2,000.
fn seeds() -> u64 {
    std::env::var("SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(2_000)
}

#[test]
fn thousands_of_seeds_keep_every_invariant() {
    let first = std::env::var("SIM_FIRST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut shards = [0usize; 5];
    for seed in first..first + seeds() {
        match run_seed(seed, &[]) {
            Ok(setup) => shards[setup.shards] += 1,
            Err(e) => panic!("{e}\nreplay: SIM_SEED={seed} SIM_TRACE=1 cargo test -p tickwire-fanout --test simulation -- one_seed --nocapture"),
        }
    }
    // The seeds cover every shard count.
    assert!(shards[1..].iter().all(|&n| n > 0), "runs per shard count: {shards:?}");
}

#[test]
fn one_seed() {
    let Some(seed) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) else { return };
    if let Err(e) = run_seed(seed, &[]) {
        panic!("{e}");
    }
}

/// The simulation is deterministic: one seed, run twice, takes the same steps to the same end.
#[test]
fn a_seed_replays_exactly() {
    for seed in [7, 1234, 99_999] {
        let (mut a, setup) = Sim::new(seed, &[]);
        let (mut b, _) = Sim::new(seed, &[]);
        a.run(setup.steps).unwrap();
        b.run(setup.steps).unwrap();
        assert_eq!(a.now, b.now);
        assert_eq!(a.step, b.step);
        let mut fa: Vec<_> = a.frames.iter().map(|((t, s), f)| (format!("{t:?}"), *s, f.clone())).collect();
        let mut fb: Vec<_> = b.frames.iter().map(|((t, s), f)| (format!("{t:?}"), *s, f.clone())).collect();
        fa.sort();
        fb.sort();
        assert_eq!(fa, fb);
    }
}

/// A bug switched on in the engine is caught: each fault breaks an invariant within a few hundred seeds.
#[test]
fn injected_bugs_are_caught() {
    for fault in [Fault::ResumeOffByOne, Fault::AckReleasesOneMore] {
        let caught = (0..500u64).find_map(|seed| {
            // The fault on every shard, so that whichever owns the topic has it.
            let faults: Vec<(usize, Fault)> = (0..4).map(|s| (s, fault)).collect();
            run_seed(seed, &faults).err()
        });
        let Some(failure) = caught else { panic!("{fault:?} was not caught by 500 seeds") };
        eprintln!("{fault:?} caught: {failure}");
    }
}
