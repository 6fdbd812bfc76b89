//! # tickwire-persistence
//!
//! The [`Store`] boundary between the shards and whatever keeps tickwire's records; [`MemoryStore`], the
//! default, which needs nothing else; and [`PgStore`], PostgreSQL through tokio-postgres on a thread of its
//! own. Shards call the store from their event loops, so every method returns at once: [`PgStore`] queues
//! the work on bounded channels for its writer thread, which writes in batches.
//!
//! Layout: this file (the trait, the records, the memory store), [`pg`] (opening the database: migrations,
//! recovery of the critical queues, the handle), `writer` (the writer thread: batching, retries, shedding),
//! [`report`] (`tickwire report`), `migrations/` (the schema, applied by refinery at start).
//!
//! ```
//! use tickwire_persistence::{ConnectionRecord, MemoryStore, Store};
//! let store = MemoryStore::new(1000);
//! store.connection_opened(ConnectionRecord { id: 1, user: Some("u-42".into()), client_id: "c".into(),
//!     ip: "127.0.0.1".parse().ok(), shard: 0, connected_at: 0 });
//! store.connection_closed(1, 10, 1000, 3, 7);
//! assert_eq!(store.connections().len(), 1);
//! ```
#![forbid(unsafe_code)]

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use bytes::Bytes;
use tickwire_core::time::Micros;
use tickwire_core::Channel;

pub mod pg;
pub mod report;
mod writer;

pub use pg::{PgOptions, PgStore, PublicSequence, Recovered, RecoveredTopic};

/// A connection's life, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionRecord {
    pub id: u64,
    pub user: Option<String>,
    pub client_id: String,
    /// The peer's address (`None` when the socket could not tell).
    pub ip: Option<std::net::IpAddr>,
    pub shard: usize,
    pub connected_at: Micros,
}

/// A stored connection with its end, once it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredConnection {
    pub record: ConnectionRecord,
    pub disconnected_at: Option<Micros>,
    pub close_code: Option<u16>,
    pub messages_in: u64,
    pub messages_out: u64,
}

/// One message of a critical topic (a user's orders, executions or alerts), with the frame as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CriticalRecord {
    pub user: String,
    pub channel: Channel,
    pub sequence: u64,
    pub frame: Bytes,
    pub created_at: Micros,
}

/// One subscription of a client, as kept for `"restore": true`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRecord {
    /// `""` for anonymous clients.
    pub user: String,
    pub client_id: String,
    pub channel: Channel,
    /// `""` for private channels, `"*"` for a whole channel.
    pub symbol: String,
    /// `""` except for bars.
    pub interval: String,
    pub throttle_ms: u32,
}

/// One shard's figures over one interval, for the metrics history.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsRecord {
    pub at: Micros,
    pub shard: usize,
    pub interval_s: f64,
    pub connections: u64,
    pub connections_opened: u64,
    pub subscriptions: u64,
    pub messages_in_per_s: f64,
    pub ingested_per_s: f64,
    pub deliveries_per_s: f64,
    pub bytes_per_s: f64,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
}

/// What the store did with the work it was given, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Whether the database answered the last write (always true for the memory store).
    pub up: bool,
    /// Rows written.
    pub written: u64,
    /// Bookkeeping records (connections, subscriptions, metrics, private sequences) dropped because the
    /// buffers toward the database were full.
    pub shed: u64,
    /// Critical messages refused (the publish was answered 503) or acks lost, for a full buffer.
    pub critical_refused: u64,
    /// Failed database writes (each retried with backoff).
    pub write_errors: u64,
    /// Records waiting for the writer.
    pub backlog: u64,
}

/// Resolves once a message is safely stored, to the sequence it was stored under (`Some`), or when it
/// cannot be (`None`: the buffer toward the database is full, the store stopped, the cluster's stream
/// refused it).
#[derive(Debug)]
pub struct Receipt(tokio::sync::oneshot::Receiver<u64>);

impl Receipt {
    /// A receipt resolved through `rx` by another store (the cluster bus's: net/src/bus.rs), with the
    /// sequence the message was stored under; a dropped sender resolves it to `None`.
    pub fn new(rx: tokio::sync::oneshot::Receiver<u64>) -> Receipt {
        Receipt(rx)
    }
}

impl Future for Receipt {
    type Output = Option<u64>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<u64>> {
        Pin::new(&mut self.0).poll(cx).map(Result::ok)
    }
}

/// A read from the store, answered by its thread; `None` if the store could not answer.
#[derive(Debug)]
pub struct Pending<T>(tokio::sync::oneshot::Receiver<T>);

impl<T> Future for Pending<T> {
    type Output = Option<T>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        Pin::new(&mut self.0).poll(cx).map(Result::ok)
    }
}

/// Where the shards record what happened. Every method returns at once and never fails the caller:
/// bookkeeping that cannot be kept is counted by the implementation, not reported to the shard. Only
/// critical messages have an answer ([`Receipt`]), for the publisher.
pub trait Store: Send + Sync + std::fmt::Debug {
    fn connection_opened(&self, record: ConnectionRecord);
    fn connection_closed(&self, id: u64, at: Micros, close_code: u16, messages_in: u64, messages_out: u64);
    /// Whether critical messages are kept across restarts ([`Store::critical_enqueued`] gives receipts).
    fn durable(&self) -> bool {
        false
    }
    /// Whether a critical message given now is likely to be made durable soon (false while the database is
    /// unreachable): the publish API answers 503 rather than accept what it cannot keep.
    fn accepts_critical(&self) -> bool {
        true
    }
    /// Queues a critical message; a durable store answers with a [`Receipt`].
    fn critical_enqueued(&self, _record: CriticalRecord) -> Option<Receipt> {
        None
    }
    /// The user acknowledged `channel` up to `sequence`.
    fn critical_acked(&self, _user: &str, _channel: Channel, _sequence: u64, _at: Micros) {}
    /// A private, non-critical topic's update got `sequence` (kept so that sequences continue).
    fn private_sequenced(&self, _user: &str, _channel: Channel, _sequence: u64) {}
    /// Whether updates are sequenced by the store rather than by the shards (the cluster bus: one sequence
    /// per topic across nodes). Then the shards hand each update over with [`Store::sequence`] and deliver
    /// what the store gives back, stored.
    fn sequences(&self) -> bool {
        false
    }
    /// Sequences and stores one update of `topic` (`data`, the publisher's raw `source_ts`, received `at`);
    /// the receipt resolves to its sequence once stored, or to `None` if it could not be. Called only when
    /// [`Store::sequences`] says so.
    fn sequence(&self, _topic: &tickwire_core::Topic, _data: Bytes, _source_ts: Option<Bytes>, _at: Micros) -> Receipt {
        let (_, rx) = tokio::sync::oneshot::channel();
        Receipt(rx)
    }
    /// Where the store sequences: a shard needs `topic`'s stored updates, then those to come, and to be told
    /// when the stored ones have come (`generation` names this follow).
    fn follow(&self, _topic: &tickwire_core::Topic, _generation: u64) {}
    /// It no longer needs them.
    fn unfollow(&self, _topic: &tickwire_core::Topic) {}
    fn subscription_added(&self, _record: SubscriptionRecord, _at: Micros) {}
    /// The subscription named like `record` (its throttle aside) ended by the client's unsubscribe.
    fn subscription_removed(&self, _record: SubscriptionRecord) {}
    /// The subscriptions last kept for `user` (`""`: anonymous) and `client_id`; `None` if the store keeps
    /// none.
    fn subscriptions(&self, _user: &str, _client_id: &str) -> Option<Pending<Vec<SubscriptionRecord>>> {
        None
    }
    fn metrics(&self, _record: MetricsRecord) {}
    fn stats(&self) -> StoreStats {
        StoreStats { up: true, ..StoreStats::default() }
    }
    /// Writes out whatever is buffered; called once on graceful shutdown, after the connections closed.
    fn flush(&self) {}
    /// Leaves this node's epoch and public topics' sequences for the process that takes over its address
    /// (docs/deploy/restart.md); called once, last, at a graceful stop. `Ok(false)`: this store keeps none
    /// (no database, or a node on port 0).
    fn handover(&self, _epoch: &str, _public: &[PublicSequence]) -> Result<bool, String> {
        Ok(false)
    }
}

/// The in-memory store: the most recent connections, up to a bound.
///
/// Every shard records its connections here at once, so the records are split into stripes by connection
/// id, each behind its own lock: shards seldom wait for one another (one lock for all made a shard sleep on
/// the other's hold during connection storms). Each stripe keeps its share of the bound.
#[derive(Debug)]
pub struct MemoryStore {
    /// Connections kept per stripe.
    capacity: usize,
    stripes: Box<[Mutex<Kept>]>,
}

/// The kept connections, and where each is: `at[id]` is its position counted from the first connection
/// ever kept, so that `at[id] - dropped` indexes `list` (a close finds its record in O(1)).
#[derive(Debug, Default)]
struct Kept {
    list: VecDeque<StoredConnection>,
    at: HashMap<u64, u64>,
    dropped: u64,
}

impl MemoryStore {
    /// A store keeping the last `capacity` connections, behind one lock.
    pub fn new(capacity: usize) -> MemoryStore {
        MemoryStore::striped(capacity, 1)
    }

    /// A store keeping about the last `capacity` connections in `stripes` parts (at least one), each
    /// keeping `capacity / stripes` (at least one) of the connections whose ids fall in it.
    pub fn striped(capacity: usize, stripes: usize) -> MemoryStore {
        let stripes = stripes.max(1);
        MemoryStore {
            capacity: capacity.div_ceil(stripes).max(1),
            stripes: (0..stripes).map(|_| Mutex::new(Kept::default())).collect(),
        }
    }

    /// The connections it keeps, oldest first (by connection time, then id).
    pub fn connections(&self) -> Vec<StoredConnection> {
        let mut all: Vec<StoredConnection> =
            (0..self.stripes.len()).flat_map(|i| self.lock(i).list.iter().cloned().collect::<Vec<_>>()).collect();
        all.sort_by_key(|c| (c.record.connected_at, c.record.id));
        all
    }

    /// The stripe of connection `id`: ids are spread by a multiplicative hash, whatever their layout.
    fn stripe(&self, id: u64) -> usize {
        (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize % self.stripes.len()
    }

    fn lock(&self, stripe: usize) -> std::sync::MutexGuard<'_, Kept> {
        // A panic while holding this lock cannot leave the deque inconsistent; keep using it.
        self.stripes[stripe].lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Store for MemoryStore {
    fn connection_opened(&self, record: ConnectionRecord) {
        let mut k = self.lock(self.stripe(record.id));
        if k.list.len() == self.capacity {
            if let Some(old) = k.list.pop_front() {
                k.at.remove(&old.record.id);
            }
            k.dropped += 1;
        }
        let pos = k.dropped + k.list.len() as u64;
        k.at.insert(record.id, pos);
        k.list.push_back(StoredConnection {
            record,
            disconnected_at: None,
            close_code: None,
            messages_in: 0,
            messages_out: 0,
        });
    }

    fn connection_closed(&self, id: u64, at: Micros, close_code: u16, messages_in: u64, messages_out: u64) {
        let mut k = self.lock(self.stripe(id));
        let Some(&pos) = k.at.get(&id) else { return };
        let i = (pos - k.dropped) as usize;
        if let Some(s) = k.list.get_mut(i).filter(|s| s.record.id == id) {
            s.disconnected_at = Some(at);
            s.close_code = Some(close_code);
            s.messages_in = messages_in;
            s.messages_out = messages_out;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: u64) -> ConnectionRecord {
        ConnectionRecord {
            id,
            user: None,
            client_id: format!("c{id}"),
            ip: "127.0.0.1".parse().ok(),
            shard: 0,
            connected_at: 0,
        }
    }

    #[test]
    fn keeps_the_most_recent_within_capacity() {
        let s = MemoryStore::new(2);
        for id in 1..=3 {
            s.connection_opened(rec(id));
        }
        s.connection_closed(3, 5, 1000, 1, 2);
        s.connection_closed(1, 5, 1000, 1, 2); // evicted: ignored
        let c = s.connections();
        assert_eq!(c.iter().map(|c| c.record.id).collect::<Vec<_>>(), [2, 3]);
        assert_eq!((c[1].close_code, c[1].messages_out), (Some(1000), 2));
        assert_eq!(c[0].close_code, None);
    }

    #[test]
    fn a_striped_store_spreads_ids_keeps_its_share_and_lists_in_connection_order() {
        let s = MemoryStore::striped(400, 8);
        // Ids laid out as the server makes them (shard in the high bits), most from shard 1.
        let ids: Vec<u64> = (1..=40).map(|k| u64::from(k % 4 == 0) << 48 | k).collect();
        for (t, &id) in ids.iter().enumerate() {
            s.connection_opened(ConnectionRecord { connected_at: t as Micros, ..rec(id) });
        }
        let used = (0..8).filter(|&i| !s.lock(i).list.is_empty()).count();
        assert!(used >= 6, "40 ids fall in {used} of 8 stripes");
        s.connection_closed(ids[7], 99, 1001, 4, 5);
        let c = s.connections();
        assert_eq!(c.len(), 40, "within each stripe's share of 50");
        assert_eq!(c.iter().map(|c| c.record.id).collect::<Vec<_>>(), ids, "oldest first");
        assert_eq!((c[7].close_code, c[7].messages_out), (Some(1001), 5));
        // A stripe over its share drops its own oldest.
        let one = MemoryStore::striped(2, 2);
        for id in 1..=100 {
            one.connection_opened(rec(id));
        }
        assert_eq!(one.connections().len(), 2);
    }

    #[test]
    fn closes_find_their_record_after_many_evictions() {
        let s = MemoryStore::new(3);
        for id in 1..=1000 {
            s.connection_opened(rec(id));
            s.connection_closed(id, id as i64, 1000 + (id % 7) as u16, id, 0);
        }
        let c = s.connections();
        assert_eq!(c.iter().map(|c| c.record.id).collect::<Vec<_>>(), [998, 999, 1000]);
        assert!(c
            .iter()
            .all(|c| c.messages_in == c.record.id && c.close_code == Some(1000 + (c.record.id % 7) as u16)));
    }
}
