//! # tickwire-persistence
//!
//! The [`Store`] boundary between the shards and whatever keeps tickwire's records, and [`MemoryStore`],
//! the default, which needs nothing else. Shards call the store from their event loops, so every method
//! must return at once: an implementation that talks to a database queues the work for its own thread.
//!
//! ```
//! use tickwire_persistence::{ConnectionRecord, MemoryStore, Store};
//! let store = MemoryStore::new(1000);
//! store.connection_opened(ConnectionRecord { id: 1, user: Some("u-42".into()), client_id: "c".into(),
//!     ip: "127.0.0.1".into(), shard: 0, connected_at: 0 });
//! store.connection_closed(1, 10, 1000, 3, 7);
//! assert_eq!(store.connections().len(), 1);
//! ```
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::sync::Mutex;

use tickwire_core::time::Micros;

/// A connection's life, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionRecord {
    pub id: u64,
    pub user: Option<String>,
    pub client_id: String,
    pub ip: String,
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

/// Where the shards record what happened. Every method returns at once and never fails the caller:
/// bookkeeping that cannot be kept is counted by the implementation, not reported to the shard.
pub trait Store: Send + Sync + std::fmt::Debug {
    fn connection_opened(&self, record: ConnectionRecord);
    fn connection_closed(&self, id: u64, at: Micros, close_code: u16, messages_in: u64, messages_out: u64);
}

/// The in-memory store: the most recent connections, up to a bound.
#[derive(Debug)]
pub struct MemoryStore {
    capacity: usize,
    connections: Mutex<VecDeque<StoredConnection>>,
}

impl MemoryStore {
    /// A store keeping the last `capacity` connections.
    pub fn new(capacity: usize) -> MemoryStore {
        MemoryStore { capacity, connections: Mutex::new(VecDeque::new()) }
    }

    /// The connections it keeps, oldest first.
    pub fn connections(&self) -> Vec<StoredConnection> {
        self.lock().iter().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<StoredConnection>> {
        // A panic while holding this lock cannot leave the deque inconsistent; keep using it.
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Store for MemoryStore {
    fn connection_opened(&self, record: ConnectionRecord) {
        let mut c = self.lock();
        if c.len() == self.capacity {
            c.pop_front();
        }
        c.push_back(StoredConnection {
            record,
            disconnected_at: None,
            close_code: None,
            messages_in: 0,
            messages_out: 0,
        });
    }

    fn connection_closed(&self, id: u64, at: Micros, close_code: u16, messages_in: u64, messages_out: u64) {
        let mut c = self.lock();
        if let Some(s) = c.iter_mut().rev().find(|s| s.record.id == id) {
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
            ip: "127.0.0.1".into(),
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
}
