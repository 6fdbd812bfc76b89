//! The engine's delivery guarantees, checked by simulation: N shards and M clients driven in memory with a
//! virtual clock and a schedule drawn from a seeded random generator, the invariants checked after every
//! step. Each seed is reproducible: a failure names its seed, and `SIM_SEED=<seed> cargo test -p
//! tickwire-fanout --test simulation -- one_seed` replays it alone (`SIM_TRACE=1` prints every step).
//!
//! What the schedule varies: which shard-to-shard message is delivered next (messages between two shards
//! keep their order, as the server's channels do), when frames cross the wire to clients (and their loss
//! when a connection drops), publishes on any shard, subscribes with and without resume, unsubscribes,
//! acks, disconnects and reconnects to another shard, and time passing.
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

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tickwire_core::event::Ingest;
use tickwire_core::time::Micros;
use tickwire_core::{Channel, Topic};
use tickwire_fanout::engine::stats::Stats;
use tickwire_fanout::engine::{Fault, NoJournal, Shard, ShardMsg};
use tickwire_fanout::frame::payload;
use tickwire_fanout::index::Sink;
use tickwire_fanout::interest::InterestMap;
use tickwire_fanout::sequencer::{Limits, Resume};

/// Frames on their way to a client: `(topic, frame, virtual time sent)`, lost if the connection drops.
type Wire = Rc<RefCell<VecDeque<(Topic, Bytes, Micros)>>>;

/// One subscription of a connection, as the shard's index holds it.
#[derive(Debug)]
struct SimSink {
    key: u64,
    topic: Topic,
    wire: Wire,
    clock: Rc<Cell<Micros>>,
}

impl Sink for SimSink {
    fn key(&self) -> u64 {
        self.key
    }

    fn push(&self, frame: &Bytes) {
        self.wire.borrow_mut().push_back((self.topic.clone(), frame.clone(), self.clock.get()));
    }
}

type SimShard = Shard<SimSink, NoJournal>;

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
}

#[derive(Debug)]
struct Conn {
    shard: usize,
    key: u64,
    wire: Wire,
}

#[derive(Debug)]
struct Client {
    user: String,
    conn: Option<Conn>,
    /// Topics the client wants, with their throttle (ms), and how each stands.
    subs: HashMap<Topic, (u32, SubState)>,
    /// Critical topics: the highest sequence received, and the last acknowledged.
    acked: HashMap<Topic, u64>,
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
            })
            .collect();
        let sim = Sim {
            seed,
            rng,
            now: 1_700_000_000_000_000,
            clock: Rc::new(Cell::new(1_700_000_000_000_000)),
            mesh: (0..setup.shards).map(|_| (0..setup.shards).map(|_| VecDeque::new()).collect()).collect(),
            shards,
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
        let data = format!("{{\"k\":\"{}\",\"n\":{n}}}", topic.key).into_bytes();
        let event = Ingest { channel: topic.channel, topics: vec![topic.clone()], data, source_ts: None, trade: None };
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

    /// Lets a few frames of one random connection's wire reach its client.
    fn deliver_wire(&mut self) -> Result<bool, String> {
        let busy: Vec<usize> = (0..self.clients.len())
            .filter(|&c| self.clients[c].conn.as_ref().is_some_and(|k| !k.wire.borrow().is_empty()))
            .collect();
        if busy.is_empty() {
            return Ok(false);
        }
        let c = busy[self.rng.random_range(0..busy.len())];
        let n = self.rng.random_range(1..=4);
        for _ in 0..n {
            let Some((topic, frame, sent)) =
                self.clients[c].conn.as_ref().and_then(|k| k.wire.borrow_mut().pop_front())
            else {
                break;
            };
            self.receive(c, &topic, frame, sent)?;
        }
        Ok(true)
    }

    /// A client receives one frame of `topic`: the invariants of a subscription's stream.
    fn receive(&mut self, c: usize, topic: &Topic, frame: Bytes, sent: Micros) -> Result<(), String> {
        let (seed, step) = (self.seed, self.step);
        let fail = |what: String| format!("seed {seed} step {step}: {what}");
        let json: serde_json::Value = serde_json::from_slice(payload(&frame))
            .map_err(|e| fail(format!("client {c}: a frame that is not JSON: {e}")))?;
        let kind = json["type"].as_str().unwrap_or_default().to_owned();
        let seq = json["sequence"].as_u64();
        self.log(|| format!("client {c} gets {topic:?} {kind} {seq:?}"));
        let Some((_, state)) = self.clients[c].subs.get_mut(topic) else {
            return Err(fail(format!("client {c}: a frame of {topic:?}, which it does not subscribe")));
        };
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
            "error" => return Err(fail(format!("client {c}: an error frame: {json}"))),
            _ => {}
        }
        let Some(seq) = seq else { return Err(fail(format!("client {c}: an update without a sequence: {json}"))) };
        // Invariant 2: one serialization per update.
        match self.frames.get(&(topic.clone(), seq)) {
            Some(seen) if *seen != frame => {
                return Err(fail(format!("{topic:?} {seq}: subscribers got different bytes")));
            }
            Some(_) => {}
            None => {
                self.frames.insert((topic.clone(), seq), frame.clone());
            }
        }
        if critical {
            self.user_received.entry(topic.clone()).or_default().insert(seq);
        }
        let Some((_, state)) = self.clients[c].subs.get_mut(topic) else { unreachable!() };
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
        self.clients[c].conn = Some(Conn { shard: s, key, wire: Wire::default() });
        let topics: Vec<Topic> = self.clients[c].subs.keys().cloned().collect();
        for t in topics {
            self.subscribe(c, t)?;
        }
        Ok(())
    }

    /// (Re)subscribes client `c` to `topic` on its connection, resuming after what it has.
    fn subscribe(&mut self, c: usize, topic: Topic) -> Result<(), String> {
        let Some(conn) = &self.clients[c].conn else { return Ok(()) };
        let (s, key, wire) = (conn.shard, conn.key, conn.wire.clone());
        let (throttle_ms, state) = self.clients[c].subs.entry(topic.clone()).or_default();
        let resume = match state.last {
            Some(n) if state.throttle.is_none() => Resume::After(n),
            _ => Resume::Latest,
        };
        state.starting = true;
        state.reset = false;
        state.resumed_from = match resume {
            Resume::After(n) => Some(n),
            _ => None,
        };
        if let Some((_, at)) = &mut state.throttle {
            // A throttled stream restarts from its snapshot (contiguity does not apply), its window afresh.
            state.last = None;
            *at = None;
        }
        let throttle_ms = *throttle_ms;
        self.log(|| format!("client {c} subscribes {topic:?} on {s}/{key} ({resume:?}, throttle {throttle_ms})"));
        let sink = SimSink { key, topic: topic.clone(), wire, clock: self.clock.clone() };
        self.shards[s].subscribe(self.now, sink, topic, throttle_ms, resume);
        self.collect(s)
    }

    fn disconnect(&mut self, c: usize) -> Result<(), String> {
        let Some(conn) = self.clients[c].conn.take() else { return Ok(()) };
        self.log(|| format!("client {c} drops its connection ({} frames lost)", conn.wire.borrow().len()));
        let topics: Vec<Topic> = self.clients[c].subs.keys().cloned().collect();
        for t in &topics {
            self.shards[conn.shard].unsubscribe(conn.key, t);
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
                // Unsubscribe a topic: its frames still on the wire are dropped with it.
                let Some(topic) = self.clients[c].subs.keys().next().cloned() else { return Ok(()) };
                self.clients[c].subs.remove(&topic);
                if let Some(conn) = &self.clients[c].conn {
                    conn.wire.borrow_mut().retain(|(t, _, _)| *t != topic);
                    let (s, key) = (conn.shard, conn.key);
                    self.log(|| format!("client {c} unsubscribes {topic:?}"));
                    self.shards[s].unsubscribe(key, &topic);
                    self.collect(s)?;
                }
                Ok(())
            }
            _ => {
                // Acknowledge what was received of a critical topic (cumulative, as clients do).
                let Some(conn) = &self.clients[c].conn else { return Ok(()) };
                let s = conn.shard;
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
                    self.log(|| format!("client {c} acks {topic:?} {seq}"));
                    self.shards[s].ack(self.now, topic, seq);
                    self.collect(s)?;
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
