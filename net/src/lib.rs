//! # tickwire-net
//!
//! The server, the driver of the engine (`tickwire_fanout::engine`): glommio shards (one per core, each with
//! its own SO_REUSEPORT listener), sockets and io_uring, TLS, HTTP/1.1 with the WebSocket upgrade and the
//! REST endpoints on the same port, timers, JWT auth, the simulated feed and the publish API, persistence
//! threads, the CLI and configuration. The protocol's rules are the engine's; docs/architecture.md shows how
//! an update travels through both.
//!
//! Layout, in the order modules may use each other (each only those before it; a test holds it):
//! [`stats`] (a shard's counters, declared once, from the engine), [`util`], [`http`] (request parsing),
//! [`asyncapi`] (the endpoints' AsyncAPI documents and their pages), [`web`] (the JavaScript client and the
//! monitor page, embedded),
//! [`tls`], [`auth`], [`histogram`], [`config`] (CLI, TOML, env), [`bus`] (the NATS JetStream bus of a
//! cluster), [`limits`] (connection limits),
//! [`signing`], [`security`] (their shared state), [`state`] (what shards share, their figures), [`lag`]
//! (the stall detector), [`metrics`] (`/metrics` and the admin stats), [`conn`] (a connection as its shard
//! holds it), [`shard`] (the engine's driver on one core), [`store`] (opening the store, durable publishes,
//! the metrics history), [`session`] (a connection's reader and writer tasks, restore), [`feed`] (the
//! simulator), [`routes`] (HTTP), [`server`] (start, shards, stop).
//!
//! ```no_run
//! let config = tickwire_net::config::Config::default();
//! tickwire_net::server::run(config).unwrap(); // serves until SIGINT/SIGTERM
//! ```

pub mod asyncapi;
pub mod auth;
pub mod bus;
pub mod config;
pub mod conn;
pub mod feed;
pub mod histogram;
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
pub mod state;
pub use tickwire_fanout::engine::stats;
pub mod store;
pub mod system;
pub mod tls;
pub mod util;
pub mod web;

/// The order of the modules: each may use only those before it (the crate's imports run one way).
#[cfg(test)]
#[rustfmt::skip]
const LAYERS: &[&str] = &[
    "stats", "util", "http", "asyncapi", "web", "tls", "auth", "histogram", "config", "system", "signing", "bus", "limits", "security",
    "state", "lag", "metrics", "conn", "shard", "store", "session", "feed", "routes", "server",
];

#[cfg(test)]
mod tests {
    /// Every `crate::<module>` a module's code names (comments aside) comes before it in [`super::LAYERS`].
    #[test]
    fn modules_import_one_way() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files: Vec<(String, std::path::PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(&src).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
            if path.is_dir() {
                for f in std::fs::read_dir(&path).unwrap() {
                    files.push((name.clone(), f.unwrap().path()));
                }
            } else if name != "lib" && name != "main" {
                files.push((name, path));
            }
        }
        let rank = |m: &str| super::LAYERS.iter().position(|l| *l == m);
        for (module, path) in files {
            let Some(mine) = rank(&module) else { panic!("{module} is not in LAYERS") };
            let text = std::fs::read_to_string(&path).unwrap();
            for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for used in line.split("crate::").skip(1) {
                    let name: String = used.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                    if name.is_empty() || name == module {
                        continue;
                    }
                    let theirs = rank(&name).unwrap_or_else(|| panic!("{module} uses crate::{name}, not in LAYERS"));
                    assert!(theirs < mine, "{module} uses crate::{name}, which comes after it: {line}");
                }
            }
        }
    }
}

/// Every connection holds one `Conn` (the engine's `Connection` inside it): idle memory per connection
/// (perf/reports/engine) grows with it. It holds its stream's write half (16 bytes) since there is no
/// writer task that lived as long as it did (336 bytes), and a client id only if the client named itself.
#[cfg(all(test, target_pointer_width = "64"))]
mod size {
    #[test]
    fn a_connection_stays_small() {
        let conn = std::mem::size_of::<crate::conn::Conn>();
        assert!(conn <= 424, "Conn is {conn} bytes");
        assert!(std::mem::size_of::<tickwire_core::ws::MessageReader>() <= 16);
    }
}
