//! # tickwire-net
//!
//! The server: glommio shards (one per core, each with its own SO_REUSEPORT listener), HTTP/1.1 with the
//! WebSocket upgrade and the REST endpoints on the same port, sessions, JWT auth, the simulated feed and the
//! publish API, the CLI and configuration. Everything platform-specific lives here; protocol logic is in
//! `tickwire-core` and fanout data structures in `tickwire-fanout`.
//!
//! Layout: [`config`] (CLI, TOML, env), [`server`] (start, shards, stop), [`shard`] (routing, sequencing,
//! fanout on one core), [`lag`] (the stall detector), [`routes`] (HTTP), [`session`] (WebSocket connections), [`auth`], [`http`] (request
//! parsing), [`stats`] (a shard's counters, declared once), [`metrics`] (`/metrics` and the admin stats), [`feed`] (the simulator), [`store`] (persistence: the store,
//! durable publishes, the metrics history), and security: [`limits`], [`tls`], [`signing`], [`security`] (their shared state).
//!
//! ```no_run
//! let config = tickwire_net::config::Config::default();
//! tickwire_net::server::run(config).unwrap(); // serves until SIGINT/SIGTERM
//! ```

pub mod auth;
pub mod config;
pub mod feed;
pub mod http;
pub mod lag;
pub mod limits;
pub mod metrics;
pub mod routes;
pub mod security;
pub mod server;
pub mod session;
pub mod shard;
pub mod signing;
pub use tickwire_fanout::engine::stats;
pub mod store;
pub mod tls;
pub mod util;
