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

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default when no subcommand is given).
    Serve(ServeArgs),
    /// Print a JWT signed with the configured secret (--jwt-secret, TICKWIRE_JWT_SECRET or the config file).
    Token(TokenArgs),
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
    /// TOML configuration file; flags and TICKWIRE_* environment variables override it
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
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
    /// Interval the server announces in `welcome`.
    pub heartbeat_s: u32,
    /// Largest client message, in bytes (close 1009 above it).
    pub max_message_bytes: usize,
    /// Most topics one connection may subscribe to.
    pub max_subscriptions: usize,
    /// Bound of a connection's outbound queue in bytes (close 1013 "slow consumer" above it).
    pub max_queued_bytes: usize,
    /// Largest HTTP request head, in bytes (431 above it).
    pub max_header_bytes: usize,
    /// Largest HTTP request body, in bytes (413 above it).
    pub max_body_bytes: usize,
    /// Seconds a client has to send a whole HTTP request head.
    pub handshake_timeout_s: u64,
    /// Microseconds a shard runs tasks before it polls io_uring again (glommio's preempt timer). While a
    /// shard is busy, completed I/O waits up to this long.
    pub preempt_us: u64,
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
            max_header_bytes: 16 * 1024,
            max_body_bytes: 1 << 20,
            handshake_timeout_s: 10,
            preempt_us: 1000,
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
}
