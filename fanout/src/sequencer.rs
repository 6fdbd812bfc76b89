//! The sequencer: on the topic's owner shard, each update gets the topic's next sequence, becomes the
//! topic's latest state, and is serialized once into its frame.
//!
//! It also keeps, per topic, the history of ready frames (for `from_sequence` resume: replayed as they are,
//! never re-encoded) and, for critical channels, the queue of frames the user has not acknowledged yet
//! (at-least-once delivery). Both hold the very `Bytes` fanned out, so keeping them costs a refcount per
//! update, not a copy.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use tickwire_core::protocol::{Dialect, Reply, Update, UpdateKind};
use tickwire_core::time::Micros;
use tickwire_core::topic::ALL;
use tickwire_core::Topic;

use crate::frame::{reply_frame, signed_update_frame, try_update_frame, update_frame};

/// How much each topic keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Frames of history per public topic.
    pub history_public: usize,
    /// Frames of history per private topic.
    pub history_private: usize,
    /// Unacknowledged messages kept per critical topic (one user's orders, executions or alerts).
    pub critical_queue: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { history_public: 1024, history_private: 100, critical_queue: 100 }
    }
}

/// A sequenced update, ready for fanout.
#[derive(Debug, Clone)]
pub struct Sequenced {
    pub sequence: u64,
    /// The whole WebSocket frame.
    pub frame: Bytes,
    /// Critical topics: unacknowledged messages dropped (oldest first) to make room for this one.
    pub dropped: u64,
}

/// Where a subscriber wants to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// From the latest state (its snapshot).
    Latest,
    /// After this sequence, from history.
    After(u64),
    /// The client's sequences cannot be resumed (another epoch): `reset`, then the latest state.
    Reset(&'static str),
}

/// What a new subscriber gets before live updates, in order: replayed history or a snapshot (after a
/// `reset` when history could not serve the resume), or, on critical topics, every unacknowledged message.
#[derive(Debug, Clone, Default)]
pub struct Start {
    /// The topic's sequence now: live updates continue after it.
    pub sequence: u64,
    pub frames: Vec<Bytes>,
    /// Critical topics: messages dropped from the queue since the user was last told.
    pub dropped: u64,
    /// Why the resume could not be served, when `frames` starts with a `reset`.
    pub reset: Option<&'static str>,
    /// Frames replayed from history (a resume that was served).
    pub replayed: usize,
}

/// Why a resume could not be served.
pub mod reset {
    /// The history no longer reaches back to the requested sequence.
    pub const HISTORY_UNAVAILABLE: &str = "history_unavailable";
    /// The requested sequence is beyond the topic's latest (sequences of an earlier server run).
    pub const SEQUENCE_AHEAD: &str = "sequence_ahead";
    /// The client's epoch is not the server's.
    pub const EPOCH_CHANGED: &str = "epoch_changed";
}

#[derive(Debug, Default)]
struct TopicState {
    sequence: u64,
    latest: Option<Latest>,
    /// The snapshot frame of `latest`, built on first demand.
    snapshot: Option<Bytes>,
    /// The last frames, oldest first; the last one is `sequence`'s.
    history: VecDeque<Bytes>,
    critical: Option<Critical>,
}

#[derive(Debug)]
struct Latest {
    timestamp: Micros,
    source_ts: Option<Bytes>,
    data: Bytes,
}

impl Latest {
    /// The topic's state at `sequence`, as a snapshot to render.
    fn snapshot<'a>(&'a self, topic: &'a Topic, sequence: u64) -> Update<'a> {
        Update {
            kind: UpdateKind::Snapshot,
            channel: topic.channel,
            sequence,
            timestamp: self.timestamp,
            source_ts: self.source_ts.as_deref(),
            data: &self.data,
            day: None,
            key: &topic.key,
        }
    }
}

/// Signs the `data` of updates of some topics: `None` for a topic whose frames carry no signature.
pub type SignFn = Box<dyn Fn(&Topic, &[u8]) -> Option<String>>;

/// The optional signer of a sequencer.
#[derive(Default)]
struct Signing(Option<SignFn>);

impl std::fmt::Debug for Signing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Signing(on)" } else { "Signing(off)" })
    }
}

/// A critical topic's unacknowledged frames.
#[derive(Debug, Default)]
struct Critical {
    acked: u64,
    /// `(sequence, frame)`, oldest first, all after `acked`.
    unacked: VecDeque<(u64, Bytes)>,
    /// Dropped for room since the user was last told.
    dropped: u64,
}

/// Per-topic sequences, latest state, history and critical queues of the topics one shard owns.
#[derive(Debug)]
pub struct Sequencer<D> {
    dialect: D,
    limits: Limits,
    topics: HashMap<Topic, TopicState>,
    signing: Signing,
}

impl<D: Dialect> Sequencer<D> {
    /// A sequencer with the default [`Limits`].
    pub fn new(dialect: D) -> Sequencer<D> {
        Sequencer::with_limits(dialect, Limits::default())
    }

    pub fn with_limits(dialect: D, limits: Limits) -> Sequencer<D> {
        Sequencer { dialect, limits, topics: HashMap::new(), signing: Signing::default() }
    }

    /// Signs updates: frames of the topics `sign` returns a signature for carry it as `"signature"`.
    pub fn with_signer(mut self, sign: SignFn) -> Sequencer<D> {
        self.signing = Signing(Some(sign));
        self
    }

    /// Sequences one update of `topic` and builds its frame.
    pub fn ingest(&mut self, topic: &Topic, data: Bytes, source_ts: Option<Bytes>, now: Micros) -> Sequenced {
        let state = match self.topics.get_mut(topic) {
            Some(s) => s,
            None => self.topics.entry(topic.clone()).or_default(),
        };
        state.sequence += 1;
        let update = Update {
            kind: UpdateKind::Update,
            channel: topic.channel,
            sequence: state.sequence,
            timestamp: now,
            source_ts: source_ts.as_deref(),
            data: &data,
            day: None,
            key: &topic.key,
        };
        let frame = match self.signing.0.as_ref().and_then(|sign| sign(topic, &data)) {
            Some(signature) => signed_update_frame(&self.dialect, &update, &signature),
            None => update_frame(&self.dialect, &update),
        };
        if topic.channel.info().snapshot {
            state.latest = Some(Latest { timestamp: now, source_ts, data });
            state.snapshot = None;
        }
        let dropped = keep(&self.limits, topic, state, &frame);
        Sequenced { sequence: state.sequence, frame, dropped }
    }

    /// Takes an update sequenced elsewhere (the cluster bus, which stored it): `sequence` and its canonical
    /// `frame` become the topic's latest state, history and, on critical channels, an unacknowledged
    /// message. Returns the messages dropped from a critical queue for room, or `None` if the topic is
    /// already at or past `sequence` (delivered before). A gap before it cuts the history: a resume from
    /// before the gap gets a `reset`, never a hole.
    pub fn apply(&mut self, topic: &Topic, sequence: u64, frame: &Bytes) -> Option<u64> {
        let state = match self.topics.get_mut(topic) {
            Some(s) => s,
            None => self.topics.entry(topic.clone()).or_default(),
        };
        if sequence <= state.sequence {
            return None;
        }
        if sequence != state.sequence + 1 {
            state.history.clear();
        }
        state.sequence = sequence;
        if topic.channel.info().snapshot {
            if let Some(parts) = frame_parts(frame) {
                state.latest =
                    Some(Latest { timestamp: parts.timestamp, source_ts: parts.source_ts, data: parts.data });
                state.snapshot = None;
            }
        }
        Some(keep(&self.limits, topic, state, frame))
    }

    /// Where a new subscriber of `topic` starts, resuming as asked if history allows.
    pub fn start(&mut self, topic: &Topic, resume: Resume, now: Micros) -> Start {
        let Some(state) = self.topics.get_mut(topic) else {
            return match resume {
                // Nothing was ever published here: a client ahead of us holds another run's sequences.
                Resume::After(n) if n > 0 => Start {
                    frames: vec![reset_frame(&self.dialect, topic, reset::SEQUENCE_AHEAD, now)],
                    ..Start::default()
                },
                Resume::Reset(reason) => {
                    Start { frames: vec![reset_frame(&self.dialect, topic, reason, now)], ..Start::default() }
                }
                _ => Start::default(),
            };
        };
        let sequence = state.sequence;
        if let Some(q) = &mut state.critical {
            // At least once: everything not acknowledged, whatever the client says it has seen; and, as on
            // any private topic, what came after the client's `from_sequence` from history, acknowledged
            // or not (another connection of the user may have acknowledged it before this one came back).
            // In sequence order, each once.
            let mut replay: std::collections::BTreeMap<u64, &Bytes> = q.unacked.iter().map(|(n, f)| (*n, f)).collect();
            let mut reset = match resume {
                Resume::Reset(reason) => Some(reason),
                _ => None,
            };
            if let Resume::After(n) = resume {
                let len = state.history.len() as u64;
                if n < sequence && sequence - n > len && reset.is_none() {
                    // Some of what came after `n` is no longer kept.
                    reset = Some(reset::HISTORY_UNAVAILABLE);
                }
                for (i, f) in state.history.iter().enumerate() {
                    let at = sequence + 1 + i as u64 - len;
                    if at > n {
                        replay.entry(at).or_insert(f);
                    }
                }
            }
            let mut frames = Vec::with_capacity(replay.len() + 1);
            if let Some(reason) = reset {
                frames.push(reset_frame(&self.dialect, topic, reason, now));
            }
            let replayed = replay.len();
            frames.extend(replay.into_values().cloned());
            return Start { sequence, frames, dropped: std::mem::take(&mut q.dropped), reset, replayed };
        }
        let reason = match resume {
            Resume::Latest => None,
            Resume::After(n) if n > sequence => Some(reset::SEQUENCE_AHEAD),
            Resume::After(n) => {
                let missing = (sequence - n) as usize;
                if missing <= state.history.len() {
                    let from = state.history.len() - missing;
                    let frames: Vec<Bytes> = state.history.range(from..).cloned().collect();
                    return Start { sequence, replayed: frames.len(), frames, ..Start::default() };
                }
                Some(reset::HISTORY_UNAVAILABLE)
            }
            Resume::Reset(reason) => Some(reason),
        };
        let mut frames = Vec::with_capacity(2);
        if let Some(reason) = reason {
            frames.push(reset_frame(&self.dialect, topic, reason, now));
        }
        if let Some(snapshot) = snapshot_of(&self.dialect, topic, state) {
            frames.push(snapshot);
        }
        Start { sequence, frames, reset: reason, ..Start::default() }
    }

    /// Where a new subscriber of `topic` in another dialect than this sequencer's starts: at the latest
    /// state, rendered by `codec` as a snapshot (other dialects have no resume; history and critical queues
    /// hold this sequencer's frames).
    ///
    /// A dialect that renders the channel as pieces gets pieces, not frames; one that replays critical
    /// messages ([`Dialect::replays_critical`]) gets the topic's unacknowledged ones after, oldest first,
    /// rendered from the frames the queue keeps.
    pub fn start_in(&self, topic: &Topic, codec: &dyn Dialect) -> Start {
        let Some(state) = self.topics.get(topic) else { return Start::default() };
        let piece = codec.renders_piece(topic.channel);
        let render = |u: &Update<'_>| {
            if piece {
                let mut out = Vec::new();
                codec.encode_update(u, &mut out);
                (!out.is_empty()).then(|| Bytes::from(out))
            } else {
                try_update_frame(codec, u)
            }
        };
        let mut frames: Vec<Bytes> = state
            .latest
            .as_ref()
            .and_then(|latest| render(&latest.snapshot(topic, state.sequence)))
            .into_iter()
            .collect();
        if let Some(q) = state.critical.as_ref().filter(|_| codec.replays_critical()) {
            for (sequence, frame) in &q.unacked {
                let Some((timestamp, data)) = frame_data(frame) else { continue };
                let u = Update {
                    kind: UpdateKind::Update,
                    channel: topic.channel,
                    sequence: *sequence,
                    timestamp,
                    source_ts: None,
                    data: data.as_bytes(),
                    day: None,
                    key: &topic.key,
                };
                frames.extend(render(&u));
            }
        }
        Start { sequence: state.sequence, frames, ..Start::default() }
    }

    /// Acknowledges a critical topic's messages up to `sequence`; returns how many were released.
    pub fn ack(&mut self, topic: &Topic, sequence: u64) -> usize {
        let Some(q) = self.topics.get_mut(topic).and_then(|s| s.critical.as_mut()) else { return 0 };
        q.acked = q.acked.max(sequence);
        let before = q.unacked.len();
        while q.unacked.front().is_some_and(|(s, _)| *s <= q.acked) {
            q.unacked.pop_front();
        }
        before - q.unacked.len()
    }

    /// A critical topic was acknowledged up to `sequence` elsewhere (on another node of the cluster), maybe
    /// before any of its messages reached this sequencer: remembered, so that those at or below it are
    /// never queued as unacknowledged. Returns how many queued ones were released.
    pub fn acked(&mut self, topic: &Topic, sequence: u64) -> usize {
        let state = self.topics.entry(topic.clone()).or_default();
        state.critical.get_or_insert_with(Critical::default);
        self.ack(topic, sequence)
    }

    /// Forgets a topic (a node that no longer follows it: what it has would go stale).
    pub fn forget(&mut self, topic: &Topic) {
        self.topics.remove(topic);
    }

    /// Continues a topic from an earlier run (the persistence store's recovery): its last `sequence` and,
    /// on critical channels, its unacknowledged `(sequence, frame)`s, oldest first, within the queue bound.
    pub fn restore(&mut self, topic: &Topic, sequence: u64, unacked: Vec<(u64, Bytes)>) {
        let state = self.topics.entry(topic.clone()).or_default();
        state.sequence = state.sequence.max(sequence);
        if topic.channel.info().critical && self.limits.critical_queue > 0 {
            let q = state.critical.get_or_insert_with(Critical::default);
            for (seq, frame) in unacked {
                if seq > q.acked && q.unacked.back().is_none_or(|(last, _)| *last < seq) {
                    q.unacked.push_back((seq, frame));
                }
            }
            while q.unacked.len() > self.limits.critical_queue {
                q.unacked.pop_front();
            }
        }
    }

    /// Unacknowledged messages of a critical topic.
    pub fn unacked(&self, topic: &Topic) -> usize {
        self.topics.get(topic).and_then(|s| s.critical.as_ref()).map_or(0, |q| q.unacked.len())
    }

    /// Marks a critical topic's dropped messages as told to its user (who was online to hear it).
    pub fn dropped_told(&mut self, topic: &Topic) {
        if let Some(q) = self.topics.get_mut(topic).and_then(|s| s.critical.as_mut()) {
            q.dropped = 0;
        }
    }

    /// Every public topic with updates, and its last sequence (what a stopping node hands over).
    pub fn public_sequences(&self) -> Vec<(Topic, u64)> {
        self.topics
            .iter()
            .filter(|(t, s)| !t.channel.is_private() && s.sequence > 0)
            .map(|(t, s)| (t.clone(), s.sequence))
            .collect()
    }

    /// The current sequence of `topic` (0 before its first update).
    pub fn sequence(&self, topic: &Topic) -> u64 {
        self.topics.get(topic).map_or(0, |s| s.sequence)
    }

    /// Number of topics this sequencer has seen.
    pub fn len(&self) -> usize {
        self.topics.len()
    }

    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }
}

/// The topic's snapshot frame (built once per state), if it has state.
fn snapshot_of<D: Dialect>(dialect: &D, topic: &Topic, state: &mut TopicState) -> Option<Bytes> {
    if state.snapshot.is_none() {
        let latest = state.latest.as_ref()?;
        state.snapshot = Some(update_frame(dialect, &latest.snapshot(topic, state.sequence)));
    }
    state.snapshot.clone()
}

/// Keeps a topic's new `frame` (its `state.sequence`'s) as history and, on critical channels, as an
/// unacknowledged message; returns how many of those were dropped for room.
fn keep(limits: &Limits, topic: &Topic, state: &mut TopicState, frame: &Bytes) -> u64 {
    let keep = if topic.channel.is_private() { limits.history_private } else { limits.history_public };
    if keep > 0 {
        if state.history.len() >= keep {
            state.history.pop_front();
        }
        state.history.push_back(frame.clone());
    }
    let mut dropped = 0;
    if topic.channel.info().critical && limits.critical_queue > 0 {
        let q = state.critical.get_or_insert_with(Critical::default);
        if state.sequence <= q.acked {
            return 0; // acknowledged already (on another node, before it came here)
        }
        while q.unacked.len() >= limits.critical_queue {
            q.unacked.pop_front();
            dropped += 1;
        }
        q.dropped += dropped;
        q.unacked.push_back((state.sequence, frame.clone()));
    }
    dropped
}

/// The time and raw `data` of a canonical update frame (a critical queue keeps frames, not data).
fn frame_data(frame: &[u8]) -> Option<(Micros, String)> {
    let json = crate::frame::payload(frame);
    let data = sonic_rs::get(json, ["data"]).ok()?.as_raw_str().to_owned();
    let ts = sonic_rs::get(json, ["timestamp"]).ok()?;
    use sonic_rs::JsonValueTrait;
    let timestamp = tickwire_core::time::parse_rfc3339(ts.as_str()?)?;
    Some((timestamp, data))
}

/// What a canonical update frame says of its update: its time, raw `data` and raw `source_ts`.
#[derive(Debug, Clone)]
pub struct FrameParts {
    pub timestamp: Micros,
    pub data: Bytes,
    pub source_ts: Option<Bytes>,
}

/// Reads a canonical update frame back into its parts (an update sequenced on another node).
pub fn frame_parts(frame: &[u8]) -> Option<FrameParts> {
    let (timestamp, data) = frame_data(frame)?;
    let json = crate::frame::payload(frame);
    let source_ts = sonic_rs::get(json, ["source_ts"]).ok().map(|v| Bytes::copy_from_slice(v.as_raw_str().as_bytes()));
    Some(FrameParts { timestamp, data: Bytes::from(data), source_ts })
}

/// `{"type":"reset",...}` for one topic; private and keyless topics name no symbol.
pub fn reset_frame<D: Dialect>(dialect: &D, topic: &Topic, reason: &str, now: Micros) -> Bytes {
    let symbol = (!topic.channel.is_private() && &*topic.key != ALL).then_some(&*topic.key);
    reply_frame(dialect, &Reply::Reset { channel: topic.channel, symbol, reason }, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::payload;
    use tickwire_core::protocol::canonical::Canonical;
    use tickwire_core::Channel;

    fn json(frame: &[u8]) -> serde_json::Value {
        serde_json::from_slice(payload(frame)).unwrap()
    }

    #[test]
    fn sequences_have_no_gaps_per_topic() {
        let mut s = Sequencer::new(Canonical);
        let a = Topic::new(Channel::Quotes, "AAPL");
        let m = Topic::new(Channel::Quotes, "MSFT");
        for i in 1..=5u64 {
            assert_eq!(s.ingest(&a, Bytes::from_static(b"{}"), None, 0).sequence, i);
        }
        assert_eq!(s.ingest(&m, Bytes::from_static(b"{}"), None, 0).sequence, 1);
        assert_eq!(s.sequence(&a), 5);
    }

    #[test]
    fn snapshot_is_the_latest_state_with_its_sequence() {
        let mut s = Sequencer::new(Canonical);
        let a = Topic::new(Channel::Quotes, "AAPL");
        assert!(s.start(&a, Resume::Latest, 0).frames.is_empty());
        s.ingest(&a, Bytes::from_static(br#"{"bid":1}"#), None, 10);
        s.ingest(&a, Bytes::from_static(br#"{"bid":2}"#), Some(Bytes::from_static(b"\"t\"")), 20);
        let snap = s.start(&a, Resume::Latest, 0);
        assert_eq!((snap.sequence, snap.frames.len()), (2, 1));
        let v = json(&snap.frames[0]);
        assert_eq!(v["type"], "snapshot");
        assert_eq!(v["sequence"], 2);
        assert_eq!(v["data"]["bid"], 2);
        assert_eq!(v["source_ts"], "t");
    }

    #[test]
    fn event_channels_have_no_snapshot_but_a_sequence() {
        let mut s = Sequencer::new(Canonical);
        let n = Topic::new(Channel::News, "*");
        s.ingest(&n, Bytes::from_static(br#"{"headline":"h"}"#), None, 0);
        let snap = s.start(&n, Resume::Latest, 0);
        assert_eq!((snap.sequence, snap.frames.is_empty()), (1, true));
    }
}

#[cfg(test)]
mod resume_tests {
    use super::*;
    use crate::frame::payload;
    use serde_json::json;
    use tickwire_core::protocol::canonical::Canonical;
    use tickwire_core::Channel;

    fn seqs(frames: &[Bytes]) -> Vec<serde_json::Value> {
        frames
            .iter()
            .map(|f| {
                let v: serde_json::Value = serde_json::from_slice(payload(f)).unwrap();
                if v["type"] == "reset" || v["type"] == "snapshot" {
                    serde_json::json!([v["type"], v["sequence"]])
                } else {
                    v["sequence"].clone()
                }
            })
            .collect()
    }

    fn small() -> Sequencer<Canonical> {
        Sequencer::with_limits(Canonical, Limits { history_public: 4, history_private: 2, critical_queue: 3 })
    }

    #[test]
    fn resume_replays_the_very_frames_after_the_point() {
        let mut s = small();
        let a = Topic::new(Channel::Quotes, "AAPL");
        let sent: Vec<Bytes> = (0..6).map(|_| s.ingest(&a, Bytes::from_static(b"{}"), None, 0).frame).collect();
        let start = s.start(&a, Resume::After(3), 0);
        assert_eq!(start.sequence, 6);
        assert_eq!(start.frames, sent[3..], "the same frames, not re-encoded");
        assert!(s.start(&a, Resume::After(6), 0).frames.is_empty(), "up to date: nothing to replay");
        assert_eq!(
            seqs(&s.start(&a, Resume::After(2), 0).frames),
            [serde_json::json!(3), 4.into(), 5.into(), 6.into()]
        );
    }

    #[test]
    fn out_of_range_or_other_epoch_resets_then_snapshots() {
        let mut s = small();
        let a = Topic::new(Channel::Quotes, "AAPL");
        for _ in 0..6 {
            s.ingest(&a, Bytes::from_static(b"{}"), None, 0);
        }
        assert_eq!(seqs(&s.start(&a, Resume::After(1), 0).frames), [json!(["reset", null]), json!(["snapshot", 6])]);
        assert_eq!(seqs(&s.start(&a, Resume::After(9), 0).frames), [json!(["reset", null]), json!(["snapshot", 6])]);
        let reset = s.start(&a, Resume::Reset(reset::EPOCH_CHANGED), 0).frames;
        let v: serde_json::Value = serde_json::from_slice(payload(&reset[0])).unwrap();
        assert_eq!(v, json!({"type":"reset","channel":"quotes","symbol":"AAPL","reason":"epoch_changed"}));
        let unknown = Topic::new(Channel::Quotes, "MSFT");
        assert_eq!(seqs(&s.start(&unknown, Resume::After(5), 0).frames), [json!(["reset", null])]);
        assert!(s.start(&unknown, Resume::After(0), 0).frames.is_empty());
    }

    #[test]
    fn private_topics_keep_their_own_history_length() {
        let mut s = small();
        let p = Topic::new(Channel::Portfolio, "u-1");
        for _ in 0..5 {
            s.ingest(&p, Bytes::from_static(b"{}"), None, 0);
        }
        assert_eq!(s.start(&p, Resume::After(3), 0).frames.len(), 2);
        let v: serde_json::Value =
            serde_json::from_slice(payload(&s.start(&p, Resume::After(2), 0).frames[0])).unwrap();
        assert_eq!(v, serde_json::json!({"type":"reset","channel":"portfolio","reason":"history_unavailable"}));
    }

    #[test]
    fn a_critical_resume_gets_what_another_connection_acknowledged_meanwhile() {
        use serde_json::json;
        let mut s = small();
        let o = Topic::new(Channel::Orders, "u-1");
        for _ in 0..3 {
            s.ingest(&o, Bytes::from_static(b"{}"), None, 0);
        }
        // One connection of the user saw 1 and left; another saw 2 and 3 and acknowledged all three.
        assert_eq!(s.ack(&o, 3), 3);
        // The first comes back from 1: 2 and 3 from history (2 kept), though nothing is unacknowledged.
        let start = s.start(&o, Resume::After(1), 0);
        assert_eq!((seqs(&start.frames), start.reset, start.replayed), (vec![json!(2), 3.into()], None, 2));
        assert!(s.start(&o, Resume::After(3), 0).frames.is_empty(), "up to date, all acknowledged");
        // Unacknowledged messages and history after `n` merge, in order, each once.
        s.ingest(&o, Bytes::from_static(b"{}"), None, 0);
        assert_eq!(seqs(&s.start(&o, Resume::After(2), 0).frames), [json!(3), 4.into()]);
        assert_eq!(seqs(&s.start(&o, Resume::After(4), 0).frames), [json!(4)], "unacknowledged, seen or not");
        // From further back than history keeps: a reset says so, then what is kept.
        let start = s.start(&o, Resume::After(1), 0);
        assert_eq!(start.reset, Some(reset::HISTORY_UNAVAILABLE));
        assert_eq!(seqs(&start.frames), [json!(["reset", null]), json!(3), 4.into()]);
    }

    #[test]
    fn critical_topics_redeliver_unacked_until_acked_and_count_drops() {
        let mut s = small();
        let o = Topic::new(Channel::Orders, "u-1");
        assert_eq!(s.ingest(&o, Bytes::from_static(b"{}"), None, 0).dropped, 0);
        s.ingest(&o, Bytes::from_static(b"{}"), None, 0);
        // Redelivered on every subscription, whatever the client claims to have seen.
        assert_eq!(seqs(&s.start(&o, Resume::Latest, 0).frames), [serde_json::json!(1), 2.into()]);
        assert_eq!(seqs(&s.start(&o, Resume::After(2), 0).frames), [serde_json::json!(1), 2.into()]);
        assert_eq!(s.ack(&o, 1), 1);
        assert_eq!(seqs(&s.start(&o, Resume::Latest, 0).frames), [serde_json::json!(2)]);
        assert_eq!(s.ack(&o, 1), 0, "acks are idempotent");
        s.ingest(&o, Bytes::from_static(b"{}"), None, 0);
        s.ingest(&o, Bytes::from_static(b"{}"), None, 0);
        assert_eq!(s.ingest(&o, Bytes::from_static(b"{}"), None, 0).dropped, 1, "queue of 3: the oldest goes");
        let start = s.start(&o, Resume::Latest, 0);
        assert_eq!((seqs(&start.frames), start.dropped), (vec![serde_json::json!(3), 4.into(), 5.into()], 1));
        assert_eq!(s.start(&o, Resume::Latest, 0).dropped, 0, "told once");
        assert_eq!(s.ack(&o, 5), 3);
        assert_eq!(s.unacked(&o), 0);
        assert!(s.start(&o, Resume::Latest, 0).frames.is_empty());
    }

    #[test]
    fn signed_topics_carry_the_signature_of_their_data() {
        let mut s = Sequencer::new(Canonical).with_signer(Box::new(|topic: &Topic, data: &[u8]| {
            (topic.channel == Channel::Orders).then(|| format!("sig{}", data.len()))
        }));
        let frame_json = |f: &Bytes| serde_json::from_slice::<serde_json::Value>(crate::frame::payload(f)).unwrap();
        let orders = Topic::new(Channel::Orders, "u-1");
        let data = Bytes::from_static(br#"{"order_id":"o-1","status":"new"}"#);
        let v = frame_json(&s.ingest(&orders, data.clone(), None, 0).frame);
        assert_eq!(v["signature"], format!("sig{}", data.len()));
        assert_eq!(v["data"]["order_id"], "o-1");
        assert_eq!(v["sequence"], 1);
        let quotes = Topic::new(Channel::Quotes, "AAPL");
        let v = frame_json(&s.ingest(&quotes, Bytes::from_static(br#"{"symbol":"AAPL"}"#), None, 0).frame);
        assert!(v.get("signature").is_none());
    }

    #[test]
    fn restored_topics_continue_their_sequences_and_redeliver_unacked() {
        let mut s = small();
        let o = Topic::new(Channel::Orders, "u-1");
        let frames: Vec<(u64, Bytes)> = (5..=8).map(|i| (i, Bytes::from(format!("f{i}")))).collect();
        s.restore(&o, 8, frames.clone());
        assert_eq!(s.unacked(&o), 3, "within the queue bound: the newest three");
        assert_eq!(s.start(&o, Resume::Latest, 0).frames, frames[1..].iter().map(|f| f.1.clone()).collect::<Vec<_>>());
        assert_eq!(s.ingest(&o, Bytes::from_static(b"{}"), None, 0).sequence, 9);
        assert_eq!(s.ack(&o, 8), 2, "7 and 8 (6 made room for 9)");
        let p = Topic::new(Channel::Portfolio, "u-1");
        s.restore(&p, 41, Vec::new());
        assert_eq!(s.ingest(&p, Bytes::from_static(b"{}"), None, 0).sequence, 42);
        assert_eq!(s.unacked(&p), 0);
    }

    #[test]
    fn updates_sequenced_on_another_node_become_state_history_and_critical_queue() {
        let parse = |f: &[u8]| serde_json::from_slice::<serde_json::Value>(crate::frame::payload(f)).unwrap();
        // Frames another node sequenced, as the cluster bus hands them over.
        let mut other = small();
        let quotes = Topic::new(Channel::Quotes, "AAPL");
        let frames: Vec<Bytes> = (1..=4)
            .map(|last| other.ingest(&quotes, Bytes::from(format!(r#"{{"symbol":"AAPL","last":{last}}}"#)), None, last))
            .map(|out| out.frame)
            .collect();
        let mut s = small();
        for (i, frame) in frames.iter().enumerate().skip(1) {
            assert_eq!(s.apply(&quotes, i as u64 + 1, frame), Some(0));
        }
        assert_eq!(s.apply(&quotes, 3, &frames[2]), None, "seen before: skipped");
        let start = s.start(&quotes, Resume::Latest, 9_000_000);
        let snap = parse(&start.frames[0]);
        assert_eq!(
            (&snap["type"], &snap["sequence"], &snap["data"]["last"]),
            (&json!("snapshot"), &json!(4), &json!(4))
        );
        assert_eq!(snap["timestamp"], parse(&frames[3])["timestamp"], "the state's time is the update's");
        let from_2 = s.start(&quotes, Resume::After(2), 9_000_000);
        assert_eq!(from_2.frames, frames[2..], "a resume replays the very frames");
        let from_0 = s.start(&quotes, Resume::After(0), 9_000_000);
        assert_eq!(parse(&from_0.frames[0])["type"], "reset", "before what came (1 never did)");
        // A gap cuts the history: a resume across it is reset, never served with a hole.
        other.ingest(&quotes, Bytes::from_static(b"{}"), None, 5); // never comes here
        let sixth = other.ingest(&quotes, Bytes::from_static(b"{}"), None, 6).frame;
        assert_eq!(s.apply(&quotes, 6, &sixth), Some(0));
        assert_eq!(parse(&s.start(&quotes, Resume::After(4), 0).frames[0])["type"], "reset");

        // A critical topic acknowledged on another node before its messages came: only those after the ack
        // wait for the user.
        let orders = Topic::new(Channel::Orders, "u-1");
        let sent: Vec<Bytes> =
            (1..=3).map(|_| other.ingest(&orders, Bytes::from_static(b"{}"), None, 0).frame).collect();
        assert_eq!(s.acked(&orders, 2), 0);
        for (i, frame) in sent.iter().enumerate() {
            s.apply(&orders, i as u64 + 1, frame);
        }
        assert_eq!(s.unacked(&orders), 1);
        assert_eq!(s.start(&orders, Resume::Latest, 0).frames, sent[2..]);
        s.forget(&orders);
        assert_eq!(s.sequence(&orders), 0, "forgotten");
    }
}
