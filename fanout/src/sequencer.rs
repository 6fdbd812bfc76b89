//! The sequencer: on the topic's owner shard, each update gets the topic's next sequence, becomes the
//! topic's latest state, and is serialized once into its frame.

use std::collections::HashMap;

use bytes::Bytes;
use tickwire_core::protocol::{Dialect, Update, UpdateKind};
use tickwire_core::time::Micros;
use tickwire_core::Topic;

use crate::frame::update_frame;

/// A sequenced update, ready for fanout.
#[derive(Debug, Clone)]
pub struct Sequenced {
    pub sequence: u64,
    /// The whole WebSocket frame.
    pub frame: Bytes,
}

/// What a new subscriber starts from: the topic's sequence now and, if it has state, its snapshot frame.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub sequence: u64,
    pub frame: Option<Bytes>,
}

#[derive(Debug, Default)]
struct TopicState {
    sequence: u64,
    latest: Option<Latest>,
    /// The snapshot frame of `latest`, built on first demand.
    snapshot: Option<Bytes>,
}

#[derive(Debug)]
struct Latest {
    timestamp: Micros,
    source_ts: Option<Bytes>,
    data: Bytes,
}

/// Per-topic sequences and latest state of the topics one shard owns.
#[derive(Debug)]
pub struct Sequencer<D> {
    dialect: D,
    topics: HashMap<Topic, TopicState>,
}

impl<D: Dialect> Sequencer<D> {
    pub fn new(dialect: D) -> Sequencer<D> {
        Sequencer { dialect, topics: HashMap::new() }
    }

    /// Sequences one update of `topic` and builds its frame.
    pub fn ingest(&mut self, topic: &Topic, data: Bytes, source_ts: Option<Bytes>, now: Micros) -> Sequenced {
        let state = match self.topics.get_mut(topic) {
            Some(s) => s,
            None => self.topics.entry(topic.clone()).or_default(),
        };
        state.sequence += 1;
        let frame = update_frame(
            &self.dialect,
            &Update {
                kind: UpdateKind::Update,
                channel: topic.channel,
                sequence: state.sequence,
                timestamp: now,
                source_ts: source_ts.as_deref(),
                data: &data,
            },
        );
        if topic.channel.info().snapshot {
            state.latest = Some(Latest { timestamp: now, source_ts, data });
            state.snapshot = None;
        }
        Sequenced { sequence: state.sequence, frame }
    }

    /// Where a new subscriber of `topic` starts.
    pub fn snapshot(&mut self, topic: &Topic) -> Snapshot {
        let Some(state) = self.topics.get_mut(topic) else { return Snapshot { sequence: 0, frame: None } };
        let frame = match (&state.snapshot, &state.latest) {
            (Some(f), _) => Some(f.clone()),
            (None, Some(latest)) => {
                let f = update_frame(
                    &self.dialect,
                    &Update {
                        kind: UpdateKind::Snapshot,
                        channel: topic.channel,
                        sequence: state.sequence,
                        timestamp: latest.timestamp,
                        source_ts: latest.source_ts.as_deref(),
                        data: &latest.data,
                    },
                );
                state.snapshot = Some(f.clone());
                Some(f)
            }
            (None, None) => None,
        };
        Snapshot { sequence: state.sequence, frame }
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
        assert!(s.snapshot(&a).frame.is_none());
        s.ingest(&a, Bytes::from_static(br#"{"bid":1}"#), None, 10);
        s.ingest(&a, Bytes::from_static(br#"{"bid":2}"#), Some(Bytes::from_static(b"\"t\"")), 20);
        let snap = s.snapshot(&a);
        assert_eq!(snap.sequence, 2);
        let v = json(&snap.frame.unwrap());
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
        let snap = s.snapshot(&n);
        assert_eq!((snap.sequence, snap.frame.is_none()), (1, true));
    }
}
