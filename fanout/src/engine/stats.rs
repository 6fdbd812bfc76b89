//! A shard's counters and gauges, declared once.
//!
//! Each row of the table below gives a figure's field, its Prometheus type, name and help. From it come the
//! [`Counters`] every shard writes (relaxed atomics, one cache-line-aligned block per shard, in [`Stats`]),
//! the `/metrics` families ([`FAMILIES`]) and the per-shard figures of `/api/ws/status` ([`STATUS`], by
//! field name). Figures with labels or buckets (per channel, per cause, histograms) are rendered by the
//! server's `metrics` beside these.
//!
//! The engine writes the figures of the protocol (subscriptions, sequencing, deliveries); the driver those
//! of sockets and time (connections, writes, queues). Both write into the same [`Stats`], which anyone may
//! read from any thread.

use std::sync::atomic::{AtomicU64, Ordering};

use tickwire_core::protocol::DIALECT_COUNT;
use tickwire_core::Channel;

/// A Prometheus metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// One row of the table: a field of [`Counters`] and its Prometheus family.
#[derive(Debug)]
pub struct Family {
    pub field: &'static str,
    pub name: &'static str,
    /// Its key among each shard's figures of `/api/admin/websocket-stats` (the seed's camelCase), if it is one.
    pub admin: Option<&'static str>,
    pub kind: Kind,
    pub help: &'static str,
    pub get: fn(&Counters) -> &AtomicU64,
}

macro_rules! admin_name {
    () => {
        None
    };
    ($admin:literal) => {
        Some($admin)
    };
}

macro_rules! counters {
    ($( $field:ident: $kind:ident $name:literal $(admin $admin:literal)? $help:literal; )*) => {
        /// The counters and gauges of one shard, one per row of the module's table.
        #[derive(Debug, Default)]
        #[repr(align(128))]
        pub struct Counters {
            $( #[doc = $help] pub $field: AtomicU64, )*
        }

        /// Every row's value at one moment: what a row of the metrics history is computed from.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct Snapshot {
            $( #[doc = $help] pub $field: u64, )*
        }

        impl Counters {
            /// Every row's value now (each read on its own: a moment's figures, not a transaction).
            pub fn snapshot(&self) -> Snapshot {
                Snapshot { $( $field: self.$field.load(Ordering::Relaxed), )* }
            }
        }

        impl Snapshot {
            /// The values in the table's order.
            pub fn values(&self) -> Vec<u64> {
                vec![$( self.$field, )*]
            }
        }

        /// Every row, in the order `/metrics` renders them.
        pub const FAMILIES: &[Family] = &[
            $( Family {
                field: stringify!($field),
                name: $name,
                admin: admin_name!($($admin)?),
                kind: Kind::$kind,
                help: $help,
                get: |c| &c.$field,
            }, )*
        ];
    };
}

counters! {
    connections: Gauge "tickwire_connections" admin "connections" "Open WebSocket connections.";
    sessions: Gauge "tickwire_sessions"
        "WebSocket sessions running: open connections and closed ones still flushing their close frame (each holds its place under the connection limits).";
    connections_opened: Counter "tickwire_connections_opened_total" "WebSocket connections accepted.";
    connections_closed: Counter "tickwire_connections_closed_total" admin "disconnects" "WebSocket connections ended.";
    slow_consumer_closes: Counter "tickwire_slow_consumer_closes_total" admin "slowConsumerCloses"
        "Connections closed with 1013 \"slow consumer\" because their outbound queue passed max_queued_bytes.";
    slow_consumer_conflations: Counter "tickwire_slow_consumer_conflations_total"
        "Times an outbound queue passed max_queued_bytes and its public topics were conflated to their latest frame.";
    conflated_frames: Counter "tickwire_conflated_frames_total"
        "Frames dropped by slow-consumer conflation (a newer frame of the same topic stayed queued).";
    heartbeat_closes: Counter "tickwire_heartbeat_closes_total"
        "Connections closed (4000) after no frame for two heartbeat intervals.";
    replayed_frames: Counter "tickwire_replayed_frames_total"
        "Frames replayed from history to resuming subscribers, and unacknowledged critical messages redelivered.";
    resets: Counter "tickwire_resets_total" "reset frames sent where a resume could not be served.";
    critical_acked: Counter "tickwire_critical_acked_total" "Critical messages released by acks.";
    critical_dropped: Counter "tickwire_critical_dropped_total"
        "Unacknowledged critical messages dropped from full queues (users told with QUEUE_OVERFLOW).";
    connections_refused: Counter "tickwire_connections_refused_total"
        "Upgraded connections closed at once by a connection limit (1013 server or IP at capacity, 1008 per user), or for want of a session token on /ws/portfolio (1008).";
    rate_limited_messages: Counter "tickwire_rate_limited_messages_total"
        "Client messages dropped because their connection passed max_messages_per_s.";
    rate_limited_closes: Counter "tickwire_rate_limited_closes_total"
        "Connections closed with 1008 for persisting over max_messages_per_s.";
    subscriptions: Gauge "tickwire_subscriptions" admin "subscriptions" "Subscriptions (connection, topic) on the shard.";
    topics: Gauge "tickwire_topics" admin "topics" "Topics with at least one subscriber on the shard.";
    messages_in: Counter "tickwire_inbound_messages_total" admin "messagesIn" "WebSocket messages received from clients.";
    ingested: Counter "tickwire_events_ingested_total" admin "eventsIngested" "Updates sequenced by the shard as the owner of their topic.";
    queued_bytes: Gauge "tickwire_outbound_queued_bytes" admin "queuedBytes"
        "Bytes waiting in the shard's connections' outbound queues (sampled every second).";
    queued_frames: Gauge "tickwire_outbound_queued_frames" admin "queuedFrames"
        "Frames waiting in the shard's connections' outbound queues (sampled every second).";
    queued_bytes_max: Gauge "tickwire_outbound_queued_bytes_max"
        "The largest outbound queue of one connection on the shard, in bytes (sampled every second).";
    writes: Counter "tickwire_writes_total" "Socket writes by connection writers (one per flush batch).";
    written_frames: Counter "tickwire_written_frames_total" admin "messagesDelivered" "Frames handed to sockets, replies and snapshots included.";
    written_bytes: Counter "tickwire_written_bytes_total" "Bytes handed to sockets.";
    deflated_frames: Counter "tickwire_deflated_frames_total"
        "Update frames deflated once for the subscribers that agreed to permessage-deflate (one per update and dialect with such subscribers).";
}

/// The figures of each shard in `/api/ws/status` (under their field names), besides its deliveries.
pub const STATUS: &[&str] = &["connections", "subscriptions", "topics", "messages_in", "ingested"];

/// Channels in the catalog, for per-channel figures indexed by `Channel as usize`.
pub const CHANNELS: usize = tickwire_core::channel::CATALOG.len();

/// One shard's figures: the table's counters (reached through `Deref`: `stats.connections`) and the
/// deliveries by channel. Aligned to its own cache lines so that shards never write to a line another shard
/// writes.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Stats {
    pub counters: Counters,
    /// Update frames queued to subscribers, by channel: one add per topic update, not per subscriber.
    pub deliveries_by_channel: [AtomicU64; CHANNELS],
    /// Their bytes (frame length times subscribers), by channel.
    pub delivered_bytes_by_channel: [AtomicU64; CHANNELS],
    /// Update frames rendered by this shard as a topic's owner, by dialect (indexed by `DialectId`): one per
    /// update for each dialect with subscribers of its topic, whatever their number.
    pub renders_by_dialect: [AtomicU64; DIALECT_COUNT],
    /// Open WebSocket connections by the dialect their clients speak (publishers count as canonical).
    pub connections_by_dialect: [AtomicU64; DIALECT_COUNT],
    /// When this shard, as its topics' owner, last sequenced an update of each channel (µs since the Unix
    /// epoch; 0: never).
    pub last_ingest_by_channel: [AtomicU64; CHANNELS],
    /// When it first did since the server started (0: never).
    pub first_ingest_by_channel: [AtomicU64; CHANNELS],
}

impl std::ops::Deref for Stats {
    type Target = Counters;

    fn deref(&self) -> &Counters {
        &self.counters
    }
}

impl Stats {
    /// Update frames queued to subscribers, all channels.
    pub fn deliveries(&self) -> u64 {
        self.deliveries_by_channel.iter().map(|a| a.load(Ordering::Relaxed)).sum()
    }

    /// Their bytes, all channels.
    pub fn delivered_bytes(&self) -> u64 {
        self.delivered_bytes_by_channel.iter().map(|a| a.load(Ordering::Relaxed)).sum()
    }

    /// Notes that the shard sequenced an update of `channel` at `now` (for the streams' health).
    pub fn ingested_at(&self, channel: Channel, now: u64) {
        let c = channel as usize;
        if self.first_ingest_by_channel[c].load(Ordering::Relaxed) == 0 {
            self.first_ingest_by_channel[c].store(now, Ordering::Relaxed);
        }
        self.last_ingest_by_channel[c].store(now, Ordering::Relaxed);
    }

    /// Counts `n` deliveries of `bytes` in all of `channel`: two adds, whatever `n`.
    pub fn delivered(&self, channel: Channel, n: usize, bytes: usize) {
        if n > 0 {
            self.deliveries_by_channel[channel as usize].fetch_add(n as u64, Ordering::Relaxed);
            self.delivered_bytes_by_channel[channel as usize].fetch_add(bytes as u64, Ordering::Relaxed);
        }
    }
}

/// The row of a field.
pub fn family(field: &str) -> Option<&'static Family> {
    FAMILIES.iter().find(|f| f.field == field)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_names_its_own_field_once_and_follows_prometheus_naming() {
        let c = Counters::default();
        for (i, f) in FAMILIES.iter().enumerate() {
            (f.get)(&c).store(i as u64 + 1, Ordering::Relaxed);
        }
        for (i, f) in FAMILIES.iter().enumerate() {
            assert_eq!((f.get)(&c).load(Ordering::Relaxed), i as u64 + 1, "{} reads its own field", f.field);
            assert!(f.name.starts_with("tickwire_"), "{}", f.name);
            assert_eq!(f.kind == Kind::Counter, f.name.ends_with("_total"), "{}: counters end in _total", f.name);
            assert!(f.help.ends_with('.'), "{}", f.name);
            assert_eq!(FAMILIES.iter().filter(|g| g.name == f.name || g.field == f.field).count(), 1);
        }
        let expected: Vec<u64> = (1..=FAMILIES.len() as u64).collect();
        assert_eq!(c.snapshot().values(), expected, "a snapshot reads every row into its own field");
        for field in STATUS {
            assert!(family(field).is_some(), "{field} is a row");
        }
        let admin: Vec<&str> = FAMILIES.iter().filter_map(|f| f.admin).collect();
        for name in &admin {
            assert_eq!(admin.iter().filter(|a| *a == name).count(), 1, "{name} once");
            assert!(name.chars().all(|c| c.is_ascii_alphanumeric()), "{name}: camelCase");
        }
        assert_eq!(admin.len(), 10);
    }
}
