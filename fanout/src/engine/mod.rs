//! The engine: tickwire's protocol rules as state machines with no I/O and no clock.
//!
//! Time comes in as a parameter (`now`, microseconds since the Unix epoch), messages between shards come in
//! through `handle_*` methods and leave through `poll_*` methods, frames for subscribers leave through their
//! [`crate::index::Sink`]. The server (`tickwire-net`) drives it with glommio tasks, io_uring sockets and
//! timers; the simulation in `tests/simulation.rs` drives many shards and clients in memory with a virtual
//! clock and a seeded schedule, and checks the delivery guarantees after every step.
//!
//! - [`conn`]: one connection's rules: client frames and requests, replies, the rate limit, heartbeats,
//!   the slow-consumer policy of its outbound queue, the close handshake.
//! - [`shard`]: one shard's topics (sequencer, snapshots, history, critical queues, bars), its share of
//!   the subscription index and the messages shards exchange.
//! - [`stats`]: a shard's figures, declared once (fields, `/metrics` names, types and help).

pub mod conn;
pub mod shard;
pub mod stats;

pub use conn::{ConnId, Connection, Kind, Queued, Request, Settings};
pub use shard::{Fault, IngestItem, Journal, NoJournal, Published, Shard, ShardMsg};
pub use tickwire_core::protocol::SessionLimits;
