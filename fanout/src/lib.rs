//! # tickwire-fanout
//!
//! The data structures of the fanout path, with no sockets and no clock, so each is unit-testable and
//! benchable on its own:
//!
//! - [`frame`]: builds a whole WebSocket frame (header + JSON) once, into `Bytes` shared by all subscribers.
//! - [`sequencer`]: the owner shard's per-topic sequence numbers and latest state (snapshots).
//! - [`bars`]: OHLC bars aggregated from trades.
//! - [`board`]: a shard's latest pieces of a batching dialect, assembled per member when an interval closes.
//! - [`interest`]: which shards have subscribers of a topic, read and written without locks.
//! - [`index`]: a shard's subscription index, topic to subscribers, with `throttle_ms` conflation.
//! - [`outbound`]: a connection's outbound queue, corked into one write per flush.
//! - [`engine`]: the protocol rules of a shard as a state machine driven by events and time passed in.
//!
//! ```
//! use bytes::Bytes;
//! use tickwire_core::{protocol::canonical::Canonical, Channel, Topic};
//! use tickwire_fanout::sequencer::Sequencer;
//!
//! let mut seq = Sequencer::new(Canonical);
//! let topic = Topic::new(Channel::Quotes, "AAPL");
//! let out = seq.ingest(&topic, Bytes::from_static(br#"{"symbol":"AAPL","bid":1.0}"#), None, 0);
//! assert_eq!(out.sequence, 1);
//! assert!(out.frame.starts_with(&[0x81])); // a final text frame, ready for the socket
//! ```
#![forbid(unsafe_code)]

pub mod bars;
pub mod board;
pub mod engine;
pub mod frame;
pub mod index;
pub mod interest;
pub mod outbound;
pub mod sequencer;
pub mod window;
