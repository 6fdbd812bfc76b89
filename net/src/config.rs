//! Command line and configuration: defaults, then a TOML file (`--config`), then `TICKWIRE_*` environment
//! variables, then flags; each layer overrides the one before.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// tickwire: a thread-per-core WebSocket server for real-time market data and trading events.
#[derive(Debug, Parser)]
#[command(name = "tickwire", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Flags of `serve`, the default subcommand.
    #[command(flatten)]
    pub serve: ServeArgs,
}

// Parsed once at start: the size of the variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default when no subcommand is given).
    Serve(ServeArgs),
    /// Print a JWT signed with the configured secret (--jwt-secret, TICKWIRE_JWT_SECRET or the config file).
    Token(TokenArgs),
    /// Write a self-signed TLS certificate and its key (PEM) for local use with --tls-cert/--tls-key.
    DevCert(DevCertArgs),
    /// Print connections and throughput over time from the database's metrics history.
    Report(ReportArgs),
}

/// Flags of `tickwire serve`. Every flag can also be set in the config file (same name, with `_` for `-`)
/// or as an environment variable `TICKWIRE_<NAME>` (upper case, `_` for `-`).
#[derive(Debug, Clone, Default, Args, Serialize)]
pub struct ServeArgs {
    /// Address to listen on, shared by every shard (SO_REUSEPORT) [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Number of shards (one thread pinned per core) [default: one per online CPU]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shards: Option<usize>,
    /// HS256 secret that signs and checks JWTs (env TICKWIRE_JWT_SECRET). Without one the server makes a
    /// random secret and prints a demo user token and a publisher token.
    #[arg(long, value_name = "SECRET")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_secret: Option<String>,
    /// Events per second produced by the built-in simulated feed [default: 1000]
    #[arg(long, value_name = "EVENTS_PER_S")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub simulator_rate: Option<u64>,
    /// Number of symbols the simulated feed quotes (real tickers first: AAPL, MSFT, GOOGL, ...) [default: 100]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub simulator_symbols: Option<usize>,
    /// Turn the built-in simulated feed off (events then come only from the publish API)
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not", rename = "simulator", serialize_with = "ser_not")]
    pub no_simulator: bool,
    /// Whether clients without a token may connect (public channels only) [default: true]
    #[arg(long, value_name = "BOOL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_anonymous: Option<bool>,
    /// Seconds between the server's WebSocket pings; a client that sends nothing (pongs count) for two
    /// intervals is closed with 4000 [default: 30]
    #[arg(long, value_name = "SECONDS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_s: Option<u32>,
    // Persistence (docs/persistence.md).
    /// PostgreSQL URL (postgres://user:password@host:port/database; env DATABASE_URL too): keeps connections,
    /// subscriptions, metrics history and a durable critical-message queue [default: none, in-memory store]
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    /// Seconds between the rows of the metrics history written to the database [default: 10]
    #[arg(long, value_name = "SECONDS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_interval_s: Option<u64>,
    /// TOML configuration file; flags and TICKWIRE_* environment variables override it
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    #[serde(flatten)]
    pub security: SecurityArgs,
}

/// The security flags of `tickwire serve` (see docs/security.md).
#[derive(Debug, Clone, Default, Args, Serialize)]
pub struct SecurityArgs {
    /// PEM public key that checks RS256 or ES256 JWTs from an identity provider (with --jwt-algorithm);
    /// HS256 tokens signed with the secret stay accepted
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_public_key: Option<PathBuf>,
    /// Algorithm of --jwt-public-key: RS256 or ES256
    #[arg(long, value_name = "ALG")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_algorithm: Option<String>,
    /// API key exchanged at GET /api/ws/token (header X-API-Key) for a short-lived token naming USER;
    /// repeatable
    #[arg(long = "api-key", value_name = "KEY=USER")]
    #[serde(skip_serializing_if = "Vec::is_empty", rename = "api_keys")]
    pub api_keys: Vec<String>,
    /// TLS certificate chain (PEM); with --tls-key the server speaks TLS 1.3 only (https/wss)
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM: PKCS#8, PKCS#1 or SEC1) of --tls-cert
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Also accept TLS 1.2 clients (refused by default: TLS 1.3 only)
    #[arg(long = "tls-allow-1-2")]
    #[serde(skip_serializing_if = "std::ops::Not::not", rename = "tls_allow_1_2")]
    pub tls_allow_1_2: bool,
    /// Most WebSocket connections on the server; over it new ones are closed with 1013 [default: 100000]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// Most stream connections of one user (token `sub`); over it: close 1008 [default: 5; 0: no limit]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections_per_user: Option<usize>,
    /// Most WebSocket connections from one IP address; over it: close 1013 [default: 0, no limit]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections_per_ip: Option<usize>,
    /// Client messages per second per connection; over it: RATE_LIMITED errors, then close 1008
    /// [default: 100]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_messages_per_s: Option<u32>,
    /// Browser origin allowed to open WebSockets (exact, e.g. https://app.example.com); repeatable. When set,
    /// an upgrade with another Origin header gets 403 [default: any]
    #[arg(long = "allowed-origin", value_name = "ORIGIN")]
    #[serde(skip_serializing_if = "Vec::is_empty", rename = "allowed_origins")]
    pub allowed_origins: Vec<String>,
    /// Ed25519 private key (PKCS#8 PEM) that signs order frames [default: a new key each start]
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<PathBuf>,
    /// Seconds a client has to send a whole HTTP request head (and to finish the TLS handshake)
    /// [default: 10]
    #[arg(long, value_name = "SECONDS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handshake_timeout_s: Option<u64>,
}

/// Flags of `tickwire dev-cert`.
#[derive(Debug, Clone, Args)]
pub struct DevCertArgs {
    /// Where to write the certificate (PEM)
    #[arg(long, value_name = "FILE", default_value = "tickwire-dev-cert.pem")]
    pub cert: PathBuf,
    /// Where to write the private key (PEM, PKCS#8)
    #[arg(long, value_name = "FILE", default_value = "tickwire-dev-key.pem")]
    pub key: PathBuf,
    /// Host names (or IP addresses) the certificate is valid for; repeatable
    #[arg(long = "host", value_name = "NAME", default_values_t = ["localhost".to_owned(), "127.0.0.1".to_owned()])]
    pub hosts: Vec<String>,
}

fn ser_not<S: serde::Serializer>(v: &bool, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bool(!*v)
}

/// Flags of `tickwire token`.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The user the token names (`sub`)
    #[arg(long)]
    pub sub: String,
    /// Role: user, publisher or admin
    #[arg(long, default_value = "user")]
    pub role: String,
    /// Lifetime of the token in seconds
    #[arg(long, default_value_t = 86_400)]
    pub ttl_s: u64,
    /// HS256 secret (env TICKWIRE_JWT_SECRET, or `jwt_secret` in --config)
    #[arg(long, value_name = "SECRET")]
    pub jwt_secret: Option<String>,
    /// TOML configuration file to read `jwt_secret` from
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Flags of `tickwire report`.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// How far back to report: 90s, 15m, 1h, 7d
    #[arg(long, default_value = "1h", value_name = "DURATION")]
    pub since: String,
    /// Width of one line of the report, like --since [default: --since / 30, at least 10s]
    #[arg(long, value_name = "DURATION")]
    pub bucket: Option<String>,
    /// PostgreSQL URL of the server's database (env DATABASE_URL, or `database_url` in --config)
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// TOML configuration file to read `database_url` from
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// The server's configuration, all layers merged.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub listen: SocketAddr,
    /// `None`: one per online CPU.
    pub shards: Option<usize>,
    pub jwt_secret: Option<String>,
    pub simulator: bool,
    pub simulator_rate: u64,
    pub simulator_symbols: usize,
    pub allow_anonymous: bool,
    /// Seconds between the server's WebSocket pings; a client silent for two intervals is closed.
    pub heartbeat_s: u32,
    /// Largest client message, in bytes (close 1009 above it).
    pub max_message_bytes: usize,
    /// Most topics one connection may subscribe to.
    pub max_subscriptions: usize,
    /// Bound of a connection's outbound queue in bytes: above it public topics are conflated to their
    /// latest frame; if that does not bring it under half the bound, close 1013 "slow consumer".
    pub max_queued_bytes: usize,
    /// Milliseconds a connection may stay behind (conflated and not yet drained) before it is closed with
    /// 1013 "slow consumer".
    pub slow_consumer_grace_ms: u64,
    /// Frames of history kept per public topic, for `from_sequence` resume.
    pub history_public: usize,
    /// Frames of history kept per private topic.
    pub history_private: usize,
    /// Unacknowledged critical messages (orders, executions, alerts) kept per user and channel.
    pub critical_queue: usize,
    /// Milliseconds after which a shutting-down server closes connections whose queues did not drain.
    pub shutdown_timeout_ms: u64,
    /// How long a closing connection's writer may take to flush its queue and send the close frame before
    /// the connection is dropped with a FIN only (a peer that does not read cannot hold it longer).
    pub close_flush_ms: u64,
    /// Largest HTTP request head, in bytes (431 above it).
    pub max_header_bytes: usize,
    /// Largest HTTP request body, in bytes (413 above it).
    pub max_body_bytes: usize,
    /// Seconds a client has to send a whole HTTP request head.
    pub handshake_timeout_s: u64,
    /// PEM public key for RS256/ES256 JWTs.
    pub jwt_public_key: Option<PathBuf>,
    /// `RS256` or `ES256`, the algorithm of `jwt_public_key`.
    pub jwt_algorithm: Option<String>,
    /// `KEY=USER` pairs exchanged at `GET /api/ws/token`.
    pub api_keys: Vec<String>,
    /// Lifetime of the tokens `GET /api/ws/token` issues, in seconds.
    pub token_ttl_s: u64,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Accept TLS 1.2 as well as 1.3.
    pub tls_allow_1_2: bool,
    /// Most WebSocket connections on the server (close 1013 above it).
    pub max_connections: usize,
    /// Most stream connections per user (close 1008 above it); 0: no limit.
    pub max_connections_per_user: usize,
    /// Most WebSocket connections per IP address (close 1013 above it); 0: no limit.
    pub max_connections_per_ip: usize,
    /// Client messages per second per connection (`RATE_LIMITED`, then close 1008).
    pub max_messages_per_s: u32,
    /// Browser origins allowed to upgrade; empty: any.
    pub allowed_origins: Vec<String>,
    /// Ed25519 PKCS#8 PEM key that signs order frames; `None`: generated at start.
    pub signing_key: Option<PathBuf>,
    /// Microseconds a shard runs tasks before it polls io_uring again (glommio's preempt timer). While a
    /// shard is busy, completed I/O waits up to this long.
    pub preempt_us: u64,
    // Persistence (docs/persistence.md).
    /// PostgreSQL URL; `None`: the in-memory store.
    pub database_url: Option<String>,
    /// Seconds between the rows of the metrics history (with a database).
    pub metrics_interval_s: u64,
    /// Milliseconds a publish of critical events waits for the database to commit them before it is
    /// answered 503.
    pub durable_timeout_ms: u64,
    /// Critical messages (and acks) that may wait for the database; beyond, critical publishes get 503.
    pub critical_buffer: usize,
    /// Bookkeeping records (connections, subscriptions, metrics) that may wait for the database; beyond,
    /// new ones are shed and counted.
    pub store_backlog: usize,
    /// Days the database keeps ended connections, metrics, acknowledged critical messages and subscriptions
    /// not renewed; 0: for ever.
    pub retention_days: u32,
    /// Milliseconds the database may take to accept a connection or answer a write before it counts as
    /// lost (and the store reconnects).
    pub store_timeout_ms: u64,
    /// A test aid, never for production: `POST /api/admin/debug/stall?ms=N` (admin role) blocks the other
    /// shards' threads for N ms or until `POST /api/admin/debug/release`, so that the stall detector and
    /// `/healthz` can be seen at work.
    pub debug_endpoints: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            shards: None,
            jwt_secret: None,
            simulator: true,
            simulator_rate: 1000,
            simulator_symbols: 100,
            allow_anonymous: true,
            heartbeat_s: 30,
            max_message_bytes: 64 * 1024,
            max_subscriptions: 1024,
            max_queued_bytes: 4 << 20,
            slow_consumer_grace_ms: 5000,
            history_public: 1024,
            history_private: 100,
            critical_queue: 100,
            shutdown_timeout_ms: 5000,
            close_flush_ms: 5000,
            max_header_bytes: 16 * 1024,
            max_body_bytes: 1 << 20,
            handshake_timeout_s: 10,
            preempt_us: 1000,
            jwt_public_key: None,
            jwt_algorithm: None,
            api_keys: Vec::new(),
            token_ttl_s: 300,
            tls_cert: None,
            tls_key: None,
            tls_allow_1_2: false,
            max_connections: 100_000,
            max_connections_per_user: 5,
            max_connections_per_ip: 0,
            max_messages_per_s: 100,
            allowed_origins: Vec::new(),
            signing_key: None,
            database_url: None,
            metrics_interval_s: 10,
            durable_timeout_ms: 5000,
            critical_buffer: 10_000,
            store_backlog: 100_000,
            retention_days: 30,
            store_timeout_ms: 10_000,
            debug_endpoints: false,
        }
    }
}

impl Config {
    /// Merges defaults, the config file, `TICKWIRE_*` variables and the flags.
    pub fn load(args: &ServeArgs) -> anyhow::Result<Config> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = &args.config {
            anyhow::ensure!(path.exists(), "config file {} does not exist", path.display());
            fig = fig.merge(Toml::file(path));
        }
        let config: Config = fig
            .merge(Env::raw().only(&["DATABASE_URL"]))
            .merge(Env::prefixed("TICKWIRE_"))
            .merge(Serialized::defaults(args))
            .extract()
            .context("invalid configuration")?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if let Some(n) = self.shards {
            anyhow::ensure!(
                (1..=tickwire_fanout::interest::MAX_SHARDS).contains(&n),
                "--shards must be 1 to 64, not {n}"
            );
        }
        anyhow::ensure!(self.max_message_bytes >= 125, "max_message_bytes must be at least 125");
        anyhow::ensure!(self.tls_cert.is_some() == self.tls_key.is_some(), "--tls-cert and --tls-key go together");
        anyhow::ensure!(
            self.jwt_public_key.is_none()
                || self.jwt_algorithm.as_deref().and_then(crate::auth::parse_algorithm).is_some(),
            "--jwt-public-key needs --jwt-algorithm RS256 or ES256"
        );
        for k in &self.api_keys {
            anyhow::ensure!(
                matches!(k.split_once('='), Some((key, user)) if key.len() >= 8 && !user.is_empty() && user.len() <= 128),
                "--api-key must be KEY=USER with a key of at least 8 characters"
            );
        }
        anyhow::ensure!(self.max_messages_per_s > 0, "max_messages_per_s must be at least 1");
        anyhow::ensure!(self.handshake_timeout_s > 0, "handshake_timeout_s must be at least 1");
        anyhow::ensure!((1..=3600).contains(&self.heartbeat_s), "heartbeat_s must be 1 to 3600");
        anyhow::ensure!((1..=3600).contains(&self.metrics_interval_s), "metrics_interval_s must be 1 to 3600");
        anyhow::ensure!(
            self.critical_buffer >= 1 && self.store_backlog >= 1,
            "critical_buffer and store_backlog must be at least 1"
        );
        Ok(())
    }

    /// The number of shards to run.
    pub fn shard_count(&self) -> usize {
        self.shards.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from).min(64))
    }
}

/// The JWT secret of `tickwire token`: flag, then environment, then config file.
pub fn token_secret(args: &TokenArgs) -> anyhow::Result<String> {
    if let Some(s) = &args.jwt_secret {
        return Ok(s.clone());
    }
    let serve = ServeArgs { config: args.config.clone(), ..ServeArgs::default() };
    Config::load(&serve)?
        .jwt_secret
        .context("no secret configured: pass --jwt-secret, set TICKWIRE_JWT_SECRET or jwt_secret in --config")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file() {
        let dir = std::env::temp_dir().join(format!("tickwire-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("t.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:9000\"\nsimulator_rate = 5\nshards = 3\n").unwrap();
        let args = ServeArgs { config: Some(file.clone()), shards: Some(2), no_simulator: true, ..Default::default() };
        let c = Config::load(&args).unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.simulator_rate, 5);
        assert_eq!(c.shards, Some(2));
        assert!(!c.simulator);
        std::fs::write(&file, "listne = 1\n").unwrap();
        assert!(Config::load(&args).is_err(), "unknown keys are refused");
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's own Jail signature
    fn database_url_comes_from_database_url_too() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("DATABASE_URL", "postgres://a@h/one");
            assert_eq!(
                Config::load(&ServeArgs::default()).unwrap().database_url.as_deref(),
                Some("postgres://a@h/one")
            );
            jail.set_env("TICKWIRE_DATABASE_URL", "postgres://a@h/two");
            assert_eq!(
                Config::load(&ServeArgs::default()).unwrap().database_url.as_deref(),
                Some("postgres://a@h/two")
            );
            let flag = ServeArgs { database_url: Some("postgres://a@h/three".into()), ..Default::default() };
            assert_eq!(Config::load(&flag).unwrap().database_url.as_deref(), Some("postgres://a@h/three"));
            Ok(())
        });
    }
}
