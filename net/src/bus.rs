//! The NATS JetStream bus of a node in a cluster (docs/scale-out.md), with `--bus nats://HOST:PORT`.
//!
//! One thread runs async-nats on a current-thread tokio runtime beside the shards, as the PostgreSQL store
//! does; shards never wait on it: they read its state ([`BusState`], atomics) and hand it work through a
//! bounded channel. It connects (async-nats reconnects by itself), creates what the cluster shares if it
//! is not there (the streams `TICKWIRE_PUBLIC`, `TICKWIRE_PRIVATE` and `TICKWIRE_ACKS`: every node does it
//! at start, idempotently), and says whether the bus is usable. While it is not, the node answers publishes
//! 503: a node cut off from NATS must not sequence on its own.
//!
//! With no database, the bus sequences: each update a shard hands over ([`BusStore`]'s
//! [`Store::sequence`]) gets its topic's next sequence and is stored on the topic's subject with
//! `Nats-Expected-Last-Subject-Sequence`, the fence that makes JetStream refuse it if another node stored
//! an update of the topic meanwhile (then the node reads the message the refusal names and tries again
//! with the next sequence). Only then is the publish answered. A node follows each topic its clients
//! subscribe to, from the first update the stream keeps of it, while they do ([`Applied`], to the shard
//! that owns the topic), so every subscriber on every node gets the same sequences and the same bytes, and
//! a node takes only the topics its clients want; acks made on any node release the message on all.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use tickwire_core::channel::CATALOG;
use tickwire_core::time::Micros;
use tickwire_core::{Channel, Topic};
use tickwire_persistence::{ConnectionRecord, MetricsRecord, Receipt, RecoveredTopic, Store, StoreStats};
use tokio::sync::{mpsc, oneshot};

use crate::config::Config;

/// The stream of public topics' updates (`history_public` kept per topic).
pub const PUBLIC_STREAM: &str = "TICKWIRE_PUBLIC";
/// The stream of private topics' updates (`history_private` kept per topic).
pub const PRIVATE_STREAM: &str = "TICKWIRE_PRIVATE";
/// The latest acknowledged sequence of each user's critical topic.
pub const ACKS_STREAM: &str = "TICKWIRE_ACKS";
/// What a publish gets while the bus is not usable (503 on POST /api/publish, an `UNAVAILABLE` error frame on
/// /v1/publish).
pub const UNAVAILABLE: &str = "this node cannot reach the cluster's bus (NATS): it accepts no publishes until it can, so that no topic is sequenced twice; retry, or publish through another node";
/// How long a publish retried after a lost ack is recognised as the same (`Nats-Msg-Id`).
const DEDUPE_WINDOW: Duration = Duration::from_secs(120);
/// How often the thread looks at the connection's state (an event also says when it is lost).
const WATCH_EVERY: Duration = Duration::from_millis(100);
/// How often setting up is tried again after it failed.
const SET_UP_RETRY: Duration = Duration::from_secs(1);

/// What the shards and the status endpoints know of the bus.
#[derive(Debug, Default)]
pub struct BusState {
    /// The URL, without credentials.
    pub url: String,
    connected: AtomicBool,
    /// The streams are in place.
    ready: AtomicBool,
    /// Connections made (the first one included).
    pub connects: AtomicU64,
    /// Updates this node sequenced and the stream stored.
    pub stored: AtomicU64,
    /// Publishes the fence refused (another node had stored an update of the topic), each tried again.
    pub fenced: AtomicU64,
    /// Updates and acks read from the streams and handed to the shards (from every node).
    pub applied: AtomicU64,
    /// Per stream (public, private, acks), the latest stream sequence a shard has applied: a node at or
    /// past a message's stream sequence has taken it.
    pub applied_to: [AtomicU64; 3],
    /// Topics this node follows (those its clients subscribe to).
    pub followed: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl BusState {
    /// Connected, with the streams in place: the node may accept publishes.
    pub fn usable(&self) -> bool {
        self.connected.load(Ordering::Relaxed) && self.ready.load(Ordering::Relaxed)
    }

    /// `up`, `setting_up` (connected, creating the streams) or `unreachable`.
    pub fn status(&self) -> &'static str {
        match (self.connected.load(Ordering::Relaxed), self.ready.load(Ordering::Relaxed)) {
            (true, true) => "up",
            (true, false) => "setting_up",
            _ => "unreachable",
        }
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_error(&self, e: impl std::fmt::Display) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
    }
}

/// Work for the bus thread, from the shards through [`BusStore`].
#[derive(Debug)]
enum Op {
    /// Sequence and store one update; say its sequence on the sender once the stream has it (a dropped
    /// sender: it could not be stored).
    Publish(Publish),
    /// The user acknowledged `channel` up to `sequence`.
    Ack { user: String, channel: Channel, sequence: u64 },
    /// The shards to hand what the streams store to (each topic's to its owner); acks made anywhere from
    /// now on start coming.
    Attach(Vec<mpsc::Sender<Applied>>),
    /// A shard needs `topic`'s updates: what is stored, then what comes ([`Applied::Loaded`] in between).
    Follow(Topic, u64),
    /// It no longer does.
    Unfollow(Topic),
}

/// An update waiting for its sequence.
#[derive(Debug)]
struct Publish {
    topic: Topic,
    data: bytes::Bytes,
    source_ts: Option<bytes::Bytes>,
    at: Micros,
    done: oneshot::Sender<u64>,
}

/// What the streams stored, for the shard that owns the topic: an update (from any node), or an
/// acknowledgement (made on any node).
#[derive(Debug)]
pub enum Applied {
    Update {
        topic: Topic,
        sequence: u64,
        frame: bytes::Bytes,
        at: StreamAt,
    },
    Ack {
        topic: Topic,
        sequence: u64,
        at: StreamAt,
    },
    /// Everything stored of `topic` when its follow (`generation`) began has come.
    Loaded {
        topic: Topic,
        generation: u64,
    },
}

/// Where a message sits: its stream (0 public, 1 private, 2 acks, as [`BusState::applied_to`]) and its
/// stream sequence.
#[derive(Debug, Clone, Copy)]
pub struct StreamAt(pub usize, pub u64);

impl BusState {
    /// A shard has applied the message at `at`.
    pub fn applied(&self, at: StreamAt) {
        self.applied_to[at.0].fetch_max(at.1, Ordering::Relaxed);
    }
}

/// How many times a publish is tried again after the fence refused it (another node stored an update of
/// the topic meanwhile) before it is answered 503 (its publisher's `durable_timeout_ms` bounds it too).
/// After the first few, each retry waits a random moment of up to a millisecond per refusal (10 at most),
/// so that a node that keeps losing to another publishing the same topic back to back gets its turn (16
/// tries without the wait were seen to run out under load).
const FENCE_TRIES: u32 = 100;

/// What a node continues from the bus ([`recover`]): the cluster's epoch. Topics come when first needed
/// (a subscriber's start waits until what the streams keep of its topic has come).
#[derive(Debug, Default)]
pub struct Recovered {
    /// Private topics continued from the database (a node with one; the bus keeps none then).
    pub critical: Vec<RecoveredTopic>,
    /// The cluster's epoch: when the streams were made (hex microseconds), so that sequences resume
    /// across nodes and restarts; `None` without a bus. With a database: the epoch the last process at
    /// this address left at its graceful stop, if it did.
    pub epoch: Option<String>,
    /// With a database: that process's public topics' last sequences.
    pub public: Vec<tickwire_persistence::PublicSequence>,
}

/// The running bus: its state and its thread, stopped by [`Bus::stop`] (or on drop).
#[derive(Debug)]
pub struct Bus {
    pub state: Arc<BusState>,
    ops: mpsc::Sender<Op>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Bus {
    /// Starts the bus thread for `url`; it connects in the background (the node starts either way, and
    /// refuses publishes until the bus is usable).
    pub fn start(url: &str, config: &Config, signer: Arc<crate::signing::Signer>) -> anyhow::Result<Bus> {
        let state = Arc::new(BusState { url: redact(url), ..BusState::default() });
        let streams = streams(config);
        let (ops, ops_rx) = mpsc::channel(config.critical_buffer.max(1));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let (url, s) = (url.to_owned(), state.clone());
        let thread = std::thread::Builder::new().name("bus".into()).spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => return s.set_error(format!("cannot start the bus runtime: {e}")),
            };
            runtime.block_on(run(url, s, streams, ops_rx, stopped, signer));
        })?;
        Ok(Bus { state, ops, stop: Some(stop), thread: Some(thread) })
    }

    /// The store of a node with a bus and no database: critical messages are kept in the stream
    /// `TICKWIRE_PRIVATE` before their publish is answered, acknowledgements in `TICKWIRE_ACKS`; the rest
    /// (connections, metrics) goes to `inner`.
    pub fn store(&self, inner: Arc<dyn Store>) -> BusStore {
        BusStore { inner, state: self.state.clone(), ops: self.ops.clone(), refused: AtomicU64::new(0) }
    }

    /// The shards' senders: each topic's updates (once followed) and acks go to the shard that owns it.
    pub fn attach(&self, shards: Vec<mpsc::Sender<Applied>>) -> anyhow::Result<()> {
        self.ops.try_send(Op::Attach(shards)).map_err(|_| anyhow::anyhow!("the bus thread has stopped"))
    }

    /// Closes the connection and joins the thread.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The thread's life: connect, set up, watch the connection until told to stop.
async fn run(
    url: String,
    state: Arc<BusState>,
    streams: Vec<stream::Config>,
    mut ops: mpsc::Receiver<Op>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
    signer: Arc<crate::signing::Signer>,
) {
    let events = state.clone();
    let options = async_nats::ConnectOptions::new()
        .name("tickwire")
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(2))
        // A silent server (a partition) is noticed within a few seconds, not the default two minutes.
        .ping_interval(Duration::from_secs(1))
        .event_callback(move |event| {
            let state = events.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        state.connected.store(true, Ordering::Relaxed);
                        state.connects.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(url = %state.url, "bus connected");
                    }
                    async_nats::Event::Disconnected => {
                        state.connected.store(false, Ordering::Relaxed);
                        tracing::warn!(url = %state.url, "bus disconnected: publishes are refused until it is back");
                    }
                    other => tracing::debug!(url = %state.url, event = %other, "bus event"),
                }
            }
        });
    let client = match options.connect(url.as_str()).await {
        Ok(c) => c,
        Err(e) => {
            state.set_error(&e);
            tracing::error!(url = %state.url, error = %e, "cannot use the bus");
            return;
        }
    };
    let js = jetstream::new(client.clone());
    let mut watch = tokio::time::interval(WATCH_EVERY);
    let mut next_try = tokio::time::Instant::now();
    let (back_tx, mut back) = mpsc::unbounded_channel();
    let mut sequencer = BusSequencer {
        js: js.clone(),
        slots: HashMap::new(),
        heads: Arc::new(Mutex::new(HashMap::new())),
        back: back_tx,
        state: state.clone(),
        signer,
        node: format!("{:016x}", rand::random::<u64>()),
        attempts: 0,
    };
    let mut followers = Vec::new();
    let mut shards = Arc::new(Vec::new());
    let mut topics: HashMap<Topic, tokio::task::JoinHandle<()>> = HashMap::new();
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            Some(op) = ops.recv() => {
                match op {
                    Op::Publish(p) => sequencer.publish(p),
                    Op::Ack { user, channel, sequence } => {
                        // Lost acks are not lost messages: the messages are delivered again, and acked again.
                        if let Ok(ack) = js.publish(ack_subject(channel, &user), sequence.to_string().into()).await {
                            tokio::spawn(async move {
                                let _ = ack.await;
                            });
                        }
                    }
                    Op::Attach(senders) => {
                        shards = Arc::new(senders);
                        let follow = follow(js.clone(), Following::Acks, shards.clone(), sequencer.heads.clone(), state.clone());
                        followers.push(tokio::spawn(follow));
                    }
                    Op::Follow(topic, generation) => {
                        let following = Following::Topic(topic.clone(), generation);
                        let follow = follow(js.clone(), following, shards.clone(), sequencer.heads.clone(), state.clone());
                        if let Some(old) = topics.insert(topic, tokio::spawn(follow)) {
                            old.abort();
                        }
                        state.followed.store(topics.len() as u64, Ordering::Relaxed);
                    }
                    Op::Unfollow(topic) => {
                        if let Some(old) = topics.remove(&topic) {
                            old.abort();
                        }
                        state.followed.store(topics.len() as u64, Ordering::Relaxed);
                    }
                }
                continue;
            }
            Some(b) = back.recv() => {
                sequencer.back(b);
                continue;
            }
            _ = watch.tick() => {}
        }
        let connected = client.connection_state() == async_nats::connection::State::Connected;
        state.connected.store(connected, Ordering::Relaxed);
        if connected && !state.ready.load(Ordering::Relaxed) && tokio::time::Instant::now() >= next_try {
            next_try = tokio::time::Instant::now() + SET_UP_RETRY;
            match set_up(&js, &streams).await {
                Ok(()) => {
                    state.ready.store(true, Ordering::Relaxed);
                    tracing::info!(url = %state.url, "bus ready: streams in place");
                }
                Err(e) => {
                    // Said once per distinct error, not once a second.
                    if state.last_error().as_deref() != Some(e.to_string().as_str()) {
                        tracing::warn!(url = %state.url, error = %e, "cannot set up the bus streams yet");
                    }
                    state.set_error(&e);
                }
            }
        }
    }
    for f in followers.into_iter().chain(topics.into_values()) {
        f.abort();
    }
    let _ = client.drain().await;
}

/// The node's side of each topic's sequence: the last `(sequence, stream sequence)` it knows of each
/// subject, and the updates waiting for theirs, one in flight per subject (the fence needs the stream
/// sequence of the previous one).
struct BusSequencer {
    js: jetstream::Context,
    slots: HashMap<String, Slot>,
    /// What the followers read from the streams, per subject: `(sequence, stream sequence)`.
    heads: Arc<Mutex<HashMap<String, (u64, u64)>>>,
    back: mpsc::UnboundedSender<Back>,
    state: Arc<BusState>,
    signer: Arc<crate::signing::Signer>,
    /// Names this node's publishes (`Nats-Msg-Id` = `<node>:<attempt>`): no two attempts share an id, so
    /// that JetStream's deduplication (checked before the fence) never answers one with another's ack.
    node: String,
    attempts: u64,
}

#[derive(Debug, Default)]
struct Slot {
    sequence: u64,
    stream: u64,
    busy: bool,
    tries: u32,
    waiting: std::collections::VecDeque<Publish>,
}

/// What became of a subject's store in flight.
#[derive(Debug)]
enum Back {
    Stored {
        subject: String,
        sequence: u64,
        stream: u64,
    },
    /// The fence refused it: another node stored an update of the topic since, whose stream sequence the
    /// refusal says (`last`).
    Fenced {
        subject: String,
        last: Option<u64>,
    },
    /// The subject's last message, read after a refusal.
    Head {
        subject: String,
        sequence: u64,
        stream: u64,
    },
    Failed {
        subject: String,
        error: String,
    },
}

impl BusSequencer {
    fn publish(&mut self, p: Publish) {
        let subject = subject(&p.topic);
        self.slots.entry(subject.clone()).or_default().waiting.push_back(p);
        self.next(subject);
    }

    /// Sends the subject's next waiting update, if none is in flight, with the next sequence after the
    /// last one known (its own, or what the followers read, whichever is later in the stream).
    fn next(&mut self, subject: String) {
        let Some(slot) = self.slots.get_mut(&subject) else { return };
        if slot.busy {
            return;
        }
        let Some(p) = slot.waiting.front() else {
            self.slots.remove(&subject);
            return;
        };
        if let Some(&(sequence, stream)) = self.heads.lock().unwrap_or_else(|e| e.into_inner()).get(&subject) {
            if stream > slot.stream {
                (slot.sequence, slot.stream) = (sequence, stream);
            }
        }
        slot.busy = true;
        let sequence = slot.sequence + 1;
        let frame = render(&p.topic, sequence, p.at, &p.data, p.source_ts.as_deref(), &self.signer);
        let mut headers = update_headers(sequence, p.at);
        self.attempts += 1;
        headers.insert(async_nats::header::NATS_MESSAGE_ID, format!("{}:{}", self.node, self.attempts).as_str());
        headers.insert(async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, slot.stream.to_string().as_str());
        let (js, back) = (self.js.clone(), self.back.clone());
        tokio::spawn(async move {
            let result = match js.publish_with_headers(subject.clone(), headers, frame).await {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            let _ = back.send(match result {
                // An id of its own per attempt: a duplicate would be an ack for something else.
                Ok(ack) if ack.duplicate => Back::Failed { subject, error: "acknowledged as a duplicate".into() },
                Ok(ack) => Back::Stored { subject, sequence, stream: ack.sequence },
                Err(e) if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence => {
                    Back::Fenced { last: wrong_last_sequence(&e.to_string()), subject }
                }
                Err(e) => Back::Failed { subject, error: e.to_string() },
            });
        });
    }

    fn back(&mut self, b: Back) {
        match b {
            Back::Stored { subject, sequence, stream } => {
                if let Some(slot) = self.slots.get_mut(&subject) {
                    (slot.sequence, slot.stream, slot.busy, slot.tries) = (sequence, stream, false, 0);
                    if let Some(p) = slot.waiting.pop_front() {
                        let _ = p.done.send(sequence);
                    }
                    self.state.stored.fetch_add(1, Ordering::Relaxed);
                }
                self.next(subject);
            }
            Back::Fenced { subject, last } => {
                self.state.fenced.fetch_add(1, Ordering::Relaxed);
                let Some(slot) = self.slots.get_mut(&subject) else { return };
                slot.tries += 1;
                if slot.tries > FENCE_TRIES {
                    return self.back(Back::Failed { subject, error: "the fence refused it too often".into() });
                }
                let stream = match slot.waiting.front() {
                    Some(p) if p.topic.channel.is_private() => PRIVATE_STREAM,
                    _ => PUBLIC_STREAM,
                };
                let (js, back) = (self.js.clone(), self.back.clone());
                let wait = (slot.tries > 2)
                    .then(|| Duration::from_micros(rand::random_range(0..1000 * u64::from(slot.tries.min(10)))));
                tokio::spawn(async move {
                    if let Some(wait) = wait {
                        tokio::time::sleep(wait).await;
                    }
                    // The message the fence compared with, read by its stream sequence (the per-subject
                    // lookups of nats-server 2.9 can miss messages after a restart; this cannot).
                    let last = async {
                        let stream = js.get_stream_no_info(stream).await.map_err(|e| e.to_string())?;
                        let message = match last {
                            Some(0) => return Ok((0, 0)),
                            Some(at) => stream.get_raw_message(at).await.map_err(|e| e.to_string())?,
                            None => {
                                stream.get_last_raw_message_by_subject(&subject).await.map_err(|e| e.to_string())?
                            }
                        };
                        Ok((tw_seq(Some(&message.headers)).unwrap_or(0), message.sequence))
                    };
                    let _ = back.send(match last.await {
                        Ok((sequence, stream)) => Back::Head { subject, sequence, stream },
                        Err(error) => Back::Failed { subject, error },
                    });
                });
            }
            Back::Head { subject, sequence, stream } => {
                if let Some(slot) = self.slots.get_mut(&subject) {
                    (slot.sequence, slot.stream, slot.busy) = (sequence, stream, false);
                }
                self.next(subject);
            }
            Back::Failed { subject, error } => {
                tracing::warn!(%subject, %error, "an update was not stored on the bus: its publisher is answered 503");
                if let Some(slot) = self.slots.get_mut(&subject) {
                    // The dropped sender answers the publisher.
                    slot.waiting.pop_front();
                    (slot.busy, slot.tries) = (false, 0);
                }
                self.next(subject);
            }
        }
    }
}

/// The canonical frame of update `sequence` of `topic`, as a shard would render it (orders signed).
fn render(
    topic: &Topic,
    sequence: u64,
    at: Micros,
    data: &[u8],
    source_ts: Option<&[u8]>,
    signer: &crate::signing::Signer,
) -> bytes::Bytes {
    use tickwire_core::protocol::{canonical::Canonical, Update, UpdateKind};
    let update = Update {
        kind: UpdateKind::Update,
        channel: topic.channel,
        sequence,
        timestamp: at,
        source_ts,
        data,
        day: None,
        key: &topic.key,
    };
    if topic.channel == Channel::Orders {
        tickwire_fanout::frame::signed_update_frame(&Canonical, &update, &signer.sign_b64(data))
    } else {
        tickwire_fanout::frame::update_frame(&Canonical, &update)
    }
}

/// The stream sequence a fence's refusal names: `... wrong last sequence: 153 (code 400, ...)`.
fn wrong_last_sequence(error: &str) -> Option<u64> {
    let (_, rest) = error.rsplit_once("wrong last sequence: ")?;
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// A message's `Tw-Seq` header.
fn tw_seq(headers: Option<&async_nats::HeaderMap>) -> Option<u64> {
    headers?.get("Tw-Seq")?.as_str().parse().ok()
}

/// What a follower reads.
#[derive(Debug, Clone)]
enum Following {
    /// Acks made on any node from now on (a topic followed later reads its last one first).
    Acks,
    /// One topic's updates (its subject, or for a wildcard topic every key's), from the first one stored.
    Topic(Topic, u64),
}

/// Follows what `following` names for as long as the node needs it: each update to the shard that owns
/// its topic (updates of every node, this one's included: a node delivers its own publishes from the
/// stream, as the others do), each ack likewise, and each subject's last sequence to the sequencer. A
/// topic's follower first hands over a critical topic's last ack, then every message the stream keeps of
/// it, then [`Applied::Loaded`], then what comes. The consumer is made again, from the next message,
/// whenever it fails or the connection is new (a restarted nats-server keeps no consumer).
async fn follow(
    js: jetstream::Context,
    following: Following,
    shards: Arc<Vec<mpsc::Sender<Applied>>>,
    heads: Arc<Mutex<HashMap<String, (u64, u64)>>>,
    state: Arc<BusState>,
) {
    use futures_lite::StreamExt;
    // The acks' follower starts at the stream's end (and, made again before its first ack, at the end
    // again: an ack missed then only means a message delivered once more, never one lost).
    let (name, filter, mut from) = match &following {
        Following::Acks => (ACKS_STREAM, "tw.ack.>".to_owned(), None),
        Following::Topic(t, _) if t.channel.is_private() => (PRIVATE_STREAM, follow_subject(t), Some(1)),
        Following::Topic(t, _) => (PUBLIC_STREAM, follow_subject(t), Some(1)),
    };
    let index = [PUBLIC_STREAM, PRIVATE_STREAM, ACKS_STREAM].iter().position(|n| *n == name).unwrap_or(0);
    let send = |applied: Applied| {
        let topic = match &applied {
            Applied::Update { topic, .. } | Applied::Ack { topic, .. } | Applied::Loaded { topic, .. } => topic,
        };
        let shard = shards.get(topic.owner(shards.len().max(1))).cloned();
        async move {
            match shard {
                Some(shard) => shard.send(applied).await.is_ok(),
                None => false,
            }
        }
    };
    let mut loaded = false;
    loop {
        let connects = state.connects.load(Ordering::Relaxed);
        let messages = async {
            if let (Following::Topic(topic, _), false) = (&following, loaded) {
                if topic.channel.is_critical() {
                    // The user's last ack, before the messages: those at or below it are not queued again.
                    let acks = js.get_stream(ACKS_STREAM).await?;
                    if let Ok(m) = acks.get_last_raw_message_by_subject(&ack_subject(topic.channel, &topic.key)).await {
                        if let Some(sequence) = std::str::from_utf8(&m.payload).ok().and_then(|s| s.parse().ok()) {
                            let at = StreamAt(2, m.sequence);
                            send(Applied::Ack { topic: topic.clone(), sequence, at }).await;
                        }
                    }
                }
            }
            let stream = js.get_stream(name).await?;
            let deliver_policy = match from {
                Some(start_sequence) => jetstream::consumer::DeliverPolicy::ByStartSequence { start_sequence },
                None => jetstream::consumer::DeliverPolicy::New,
            };
            let mut consumer = stream
                .create_consumer(jetstream::consumer::pull::OrderedConfig {
                    filter_subject: filter.clone(),
                    deliver_policy,
                    ..Default::default()
                })
                .await?;
            let pending = consumer.info().await?.num_pending;
            anyhow::Ok((consumer.messages().await?, pending))
        };
        let (mut messages, pending) = match messages.await {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(stream = name, error = %e, "cannot follow the stream yet");
                tokio::time::sleep(SET_UP_RETRY).await;
                continue;
            }
        };
        if let (Following::Topic(topic, generation), false, 0) = (&following, loaded, pending) {
            loaded = true;
            if !send(Applied::Loaded { topic: topic.clone(), generation: *generation }).await {
                return;
            }
        }
        // A consumer does not outlive a restarted nats-server, and its pulls would notice only after a
        // few missed heartbeats: a new connection makes it again at once.
        let mut watch = tokio::time::interval(WATCH_EVERY);
        loop {
            let message = tokio::select! {
                m = messages.next() => m,
                _ = watch.tick() => {
                    if state.connects.load(Ordering::Relaxed) != connects {
                        break;
                    }
                    continue;
                }
            };
            let message = match message {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    tracing::debug!(stream = name, error = %e, "following the stream again");
                    break;
                }
                None => break,
            };
            let Ok(info) = message.info() else { continue };
            let (at, left) = (StreamAt(index, info.stream_sequence), info.pending);
            from = Some(info.stream_sequence + 1);
            let subject = message.subject.to_string();
            let applied = match &following {
                Following::Acks => {
                    let Some((channel, user)) = subject.strip_prefix("tw.ack.").and_then(|s| s.split_once('.')) else {
                        continue;
                    };
                    let Some(channel) = Channel::from_name(channel) else { continue };
                    let Some(sequence) = std::str::from_utf8(&message.payload).ok().and_then(|s| s.parse().ok()) else {
                        continue;
                    };
                    Applied::Ack { topic: Topic::new(channel, unescape_token(user).as_str()), sequence, at }
                }
                Following::Topic(..) => {
                    let Some(sequence) = tw_seq(message.headers.as_ref()) else { continue };
                    let Some(topic) = topic_of_subject(&subject) else { continue };
                    {
                        let mut heads = heads.lock().unwrap_or_else(|e| e.into_inner());
                        let head = heads.entry(subject).or_default();
                        if info.stream_sequence > head.1 {
                            *head = (sequence, info.stream_sequence);
                        }
                    }
                    Applied::Update { topic, sequence, frame: message.payload.clone(), at }
                }
            };
            state.applied.fetch_add(1, Ordering::Relaxed);
            if !send(applied).await {
                return; // the shards stopped
            }
            if let (Following::Topic(topic, generation), false, 0) = (&following, loaded, left) {
                loaded = true;
                if !send(Applied::Loaded { topic: topic.clone(), generation: *generation }).await {
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The subject a topic's follower reads: its own, or for a wildcard topic (`key` = `*`) every key's.
fn follow_subject(topic: &Topic) -> String {
    if &*topic.key == tickwire_core::topic::ALL && topic.interval.is_none() {
        format!("tw.s.{}.*", topic.channel.name())
    } else {
        subject(topic)
    }
}

/// The topic of a `tw.s.<channel>.<key>[.<interval>]` subject.
fn topic_of_subject(subject: &str) -> Option<Topic> {
    let (channel, rest) = subject.strip_prefix("tw.s.")?.split_once('.')?;
    topic_of(Channel::from_name(channel)?, rest)
}

/// The headers of a topic's update on its subject: its sequence and its time.
fn update_headers(sequence: u64, at: Micros) -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Tw-Seq", sequence.to_string().as_str());
    headers.insert("Tw-Ts", at.to_string().as_str());
    headers
}

/// Creates the streams where they do not exist; checks that existing ones keep what this
/// node was configured to keep.
async fn set_up(js: &jetstream::Context, streams: &[stream::Config]) -> anyhow::Result<()> {
    for config in streams {
        let mut stream = js.get_or_create_stream(config.clone()).await?;
        let info = stream.info().await?;
        anyhow::ensure!(
            info.config.max_messages_per_subject == config.max_messages_per_subject,
            "stream {} keeps {} messages per topic, this node is configured for {}",
            config.name,
            info.config.max_messages_per_subject,
            config.max_messages_per_subject
        );
    }
    Ok(())
}

/// The streams the cluster shares, as `config` sizes them.
pub fn streams(config: &Config) -> Vec<stream::Config> {
    let subjects = |private: bool| -> Vec<String> {
        CATALOG.iter().filter(|c| c.channel.is_private() == private).map(|c| format!("tw.s.{}.>", c.name)).collect()
    };
    let updates = |name: &str, private: bool, keep: usize| stream::Config {
        name: name.to_owned(),
        description: Some(format!(
            "tickwire: the updates of {} topics, the last {keep} of each",
            if private { "private" } else { "public" }
        )),
        subjects: subjects(private),
        max_messages_per_subject: keep as i64,
        storage: stream::StorageType::File,
        duplicate_window: DEDUPE_WINDOW,
        allow_direct: true,
        ..stream::Config::default()
    };
    vec![
        updates(PUBLIC_STREAM, false, config.history_public),
        updates(PRIVATE_STREAM, true, config.history_private),
        stream::Config {
            name: ACKS_STREAM.to_owned(),
            description: Some("tickwire: each user's latest acknowledged sequence per critical channel".to_owned()),
            subjects: vec!["tw.ack.>".to_owned()],
            max_messages_per_subject: 1,
            storage: stream::StorageType::File,
            allow_direct: true,
            ..stream::Config::default()
        },
    ]
}

/// The subject of a topic's updates: `tw.s.<channel>.<key>`, the key escaped so that it is one NATS token
/// (`.`, `*`, `>`, spaces, controls and `%` as `%XX`); bars add their interval as a token of their own.
pub fn subject(topic: &Topic) -> String {
    let mut s = format!("tw.s.{}.", topic.channel.name());
    escape_token(&topic.key, &mut s);
    if let Some(interval) = topic.interval {
        s.push('.');
        s.push_str(interval.as_str());
    }
    s
}

fn escape_token(key: &str, out: &mut String) {
    if key.is_empty() {
        out.push_str("%00");
    }
    for b in key.bytes() {
        match b {
            b'.' | b'*' | b'>' | b'%' | 0..=b' ' | 0x7f.. => out.push_str(&format!("%{b:02X}")),
            _ => out.push(b as char),
        }
    }
}

/// The subject of `user`'s latest acknowledged sequence of `channel`: `tw.ack.<channel>.<user>`.
pub fn ack_subject(channel: Channel, user: &str) -> String {
    let mut s = format!("tw.ack.{}.", channel.name());
    escape_token(user, &mut s);
    s
}

/// The key that [`escape_token`] wrote as `token`.
fn unescape_token(token: &str) -> String {
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%').then(|| token.get(i + 1..i + 3)).flatten();
        match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
            Some(0) => i += 3,
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cluster's epoch, for a node that starts with a bus and no database: when the streams were made
/// (made here first if this is the cluster's first node). Nothing else is read at start: a topic's stored
/// updates come when a subscriber of it first needs them.
pub fn recover(url: &str, config: &Config) -> anyhow::Result<Recovered> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // The timer is made inside the runtime (tokio's timers need it).
    let read = runtime.block_on(async { tokio::time::timeout(RECOVER_TIMEOUT, epoch(url, config)).await });
    read.map_err(|_| anyhow::anyhow!("NATS at {} did not answer within {} s", redact(url), RECOVER_TIMEOUT.as_secs()))?
}

/// How long a starting node waits for NATS.
const RECOVER_TIMEOUT: Duration = Duration::from_secs(10);

async fn epoch(url: &str, config: &Config) -> anyhow::Result<Recovered> {
    let client = async_nats::ConnectOptions::new().connection_timeout(Duration::from_secs(5)).connect(url).await?;
    let js = jetstream::new(client);
    // The streams are made first, if this is the cluster's first node, so that its epoch is theirs from
    // the start. A failure is the bus thread's to report (it tries again).
    let _ = set_up(&js, &streams(config)).await;
    let Ok(mut private) = js.get_stream(PRIVATE_STREAM).await else { return Ok(Recovered::default()) };
    let created = private.info().await?.created;
    Ok(Recovered { epoch: Some(format!("{:x}", created.unix_timestamp_nanos() / 1000)), ..Recovered::default() })
}

/// The topic of `channel` whose subject ends with `rest` (`<key>` or, for bars, `<key>.<interval>`).
fn topic_of(channel: Channel, rest: &str) -> Option<Topic> {
    let (key, interval) = match rest.split_once('.') {
        Some((key, interval)) => (key, Some(tickwire_core::BarInterval::parse(interval)?)),
        None => (rest, None),
    };
    let mut topic = Topic::new(channel, unescape_token(key).as_str());
    topic.interval = interval;
    Some(topic)
}

/// The store of a node with a bus and no database ([`Bus::store`]).
#[derive(Debug)]
pub struct BusStore {
    inner: Arc<dyn Store>,
    state: Arc<BusState>,
    ops: mpsc::Sender<Op>,
    /// Updates and acks refused for a full queue toward the bus.
    refused: AtomicU64,
}

impl Store for BusStore {
    fn connection_opened(&self, record: ConnectionRecord) {
        self.inner.connection_opened(record);
    }

    fn connection_closed(&self, id: u64, at: Micros, close_code: u16, messages_in: u64, messages_out: u64) {
        self.inner.connection_closed(id, at, close_code, messages_in, messages_out);
    }

    fn durable(&self) -> bool {
        true
    }

    fn accepts_critical(&self) -> bool {
        self.state.usable() && self.ops.capacity() > 0
    }

    fn sequences(&self) -> bool {
        true
    }

    fn sequence(&self, topic: &Topic, data: bytes::Bytes, source_ts: Option<bytes::Bytes>, at: Micros) -> Receipt {
        let (done, rx) = oneshot::channel();
        if self.ops.try_send(Op::Publish(Publish { topic: topic.clone(), data, source_ts, at, done })).is_err() {
            // The dropped sender resolves the receipt to `None`: a waiting publisher is answered 503.
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        Receipt::new(rx)
    }

    fn critical_acked(&self, user: &str, channel: Channel, sequence: u64, _at: Micros) {
        if self.ops.try_send(Op::Ack { user: user.to_owned(), channel, sequence }).is_err() {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn follow(&self, topic: &Topic, generation: u64) {
        // A follow that cannot be queued leaves the subscriber's start waiting: it is told nothing rather
        // than something wrong; the bus thread's queue is sized for every publish in flight.
        if self.ops.try_send(Op::Follow(topic.clone(), generation)).is_err() {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn unfollow(&self, topic: &Topic) {
        if self.ops.try_send(Op::Unfollow(topic.clone())).is_err() {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn metrics(&self, record: MetricsRecord) {
        self.inner.metrics(record);
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            up: self.state.usable(),
            critical_refused: self.refused.load(Ordering::Relaxed),
            backlog: (self.ops.max_capacity() - self.ops.capacity()) as u64,
            ..self.inner.stats()
        }
    }
}

/// `url` without a password, for logs and the status page.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickwire_core::BarInterval;
    use tickwire_core::Channel;

    #[test]
    fn subjects_are_one_token_per_key_whatever_the_key() {
        let t = |c, k: &str| Topic::new(c, Arc::from(k));
        assert_eq!(subject(&t(Channel::Quotes, "AAPL")), "tw.s.quotes.AAPL");
        assert_eq!(subject(&t(Channel::Quotes, "BRK.B")), "tw.s.quotes.BRK%2EB");
        assert_eq!(subject(&t(Channel::Orders, "u 1*>%é")), "tw.s.orders.u%201%2A%3E%25%C3%A9");
        assert_eq!(subject(&t(Channel::News, "")), "tw.s.news.%00");
        let mut bar = t(Channel::Bars, "AAPL");
        bar.interval = Some(BarInterval::M1);
        assert_eq!(subject(&bar), "tw.s.bars.AAPL.1m");
        // Distinct keys, distinct subjects: the escape is reversible.
        assert_ne!(subject(&t(Channel::Quotes, "A.B")), subject(&t(Channel::Quotes, "A%2EB")));
        for key in ["AAPL", "BRK.B", "u 1*>%é", "", "%41", "a%"] {
            let subject = subject(&t(Channel::Orders, key));
            assert_eq!(unescape_token(&subject["tw.s.orders.".len()..]), key, "{subject}");
        }
        assert_eq!(ack_subject(Channel::Alerts, "u.1"), "tw.ack.alerts.u%2E1");
    }

    #[test]
    fn the_streams_keep_the_configured_history_and_split_public_from_private() {
        let config = Config { history_public: 500, history_private: 40, ..Config::default() };
        let s = streams(&config);
        assert_eq!(s.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), [PUBLIC_STREAM, PRIVATE_STREAM, ACKS_STREAM]);
        assert_eq!(
            (s[0].max_messages_per_subject, s[1].max_messages_per_subject, s[2].max_messages_per_subject),
            (500, 40, 1)
        );
        assert!(
            s[0].subjects.contains(&"tw.s.quotes.>".to_owned()) && !s[0].subjects.contains(&"tw.s.orders.>".to_owned())
        );
        assert!(
            s[1].subjects.contains(&"tw.s.orders.>".to_owned()) && !s[1].subjects.contains(&"tw.s.quotes.>".to_owned())
        );
        assert_eq!(s[0].subjects.len() + s[1].subjects.len(), CATALOG.len());
    }

    #[test]
    fn a_refusal_by_the_fence_says_where_the_subject_is() {
        let e = "wrong last sequence: wrong last sequence: 153 (code 400, error code 10071)";
        assert_eq!(wrong_last_sequence(e), Some(153));
        assert_eq!(wrong_last_sequence("wrong last sequence: 0 (code 400, error code 10071)"), Some(0));
        assert_eq!(wrong_last_sequence("timed out"), None);
    }

    #[test]
    fn passwords_stay_out_of_the_status() {
        assert_eq!(redact("nats://me:secret@10.0.0.1:4222"), "nats://***@10.0.0.1:4222");
        assert_eq!(redact("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
    }
}
