//! Command line and configuration: defaults, then a TOML file (`--config`), then `TICKWIRE_*` environment
//! variables, then flags; each layer overrides the one before.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::builder::ValueParser;
use clap::{value_parser, Arg, ArgAction, ArgMatches, Args, Parser, Subcommand};
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
    /// Check this host for the configured server (the same flags, environment and --config as serve): one
    /// line per item with ok, warn or fail and the fix; exit status 0, 1 or 2 for the worst of them.
    CheckSystem(CheckSystemArgs),
}

/// Flags of `tickwire check-system`: the server's, and the output's.
#[derive(Debug, Clone, Default, Args)]
pub struct CheckSystemArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Print the checks as JSON (an array of {item, level, found, fix}) for automation
    #[arg(long)]
    pub json: bool,
}

/// Flags of `tickwire serve`: one per setting ([`SettingFlags`], declared in `settings!`), the config
/// file, and `--no-simulator`, a shorthand kept for the scripts that use it.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML configuration file with any of the settings; TICKWIRE_* environment variables and flags override it
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub settings: SettingFlags,
    /// Turn the built-in simulated feed off: the same as --simulator false
    #[arg(long, conflicts_with = "simulator")]
    pub no_simulator: bool,
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
    /// Issuer the token names in `iss`, as the server's --jwt-issuer checks it (env TICKWIRE_JWT_ISSUER,
    /// or `jwt_issuer` in --config)
    #[arg(long, value_name = "ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Audience the token names in `aud`, as the server's --jwt-audience checks it (env
    /// TICKWIRE_JWT_AUDIENCE, or `jwt_audience` in --config)
    #[arg(long, value_name = "AUDIENCE")]
    pub jwt_audience: Option<String>,
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

/// Declares every setting of the server once. From the table come the [`Config`] struct and its `Default`,
/// the flags of `tickwire serve` ([`SettingFlags`]), the layer those flags put over the file and the
/// environment, and [`SETTINGS`], from which `--help` and the table of docs/configuration.md are written.
///
/// An entry is a doc comment (the field's doc, the flag's help and the docs' explanation), then
/// `name: Type = default, value "VALUE_NAME"`, then, where needed, `, flag "spelling"` for a flag that is
/// not the name in kebab case and `, shown "text"` for a default that says nothing as a value (`None`, `[]`).
macro_rules! settings {
    (@flag $name:ident) => { kebab!($name) };
    (@flag $name:ident $flag:literal) => { $flag };
    (@shown) => { None };
    (@shown $shown:literal) => { Some($shown) };
    ($(
        $(#[doc = $doc:literal])+
        $name:ident: $ty:ty = $default:expr, value $value:literal $(, flag $flag:literal)? $(, shown $shown:literal)?;
    )*) => {
        /// The server's configuration, all layers merged: defaults, the file, the environment, the flags.
        #[derive(Debug, Clone, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct Config {
            $($(#[doc = $doc])+ pub $name: $ty,)*
        }

        impl Default for Config {
            fn default() -> Config {
                Config { $($name: $default,)* }
            }
        }

        /// The settings given as flags. `None`: not given, so the file, the environment or the default
        /// decides; that is why the layer skips them.
        #[derive(Debug, Clone, Default, Serialize)]
        pub struct SettingFlags {
            $(
                #[serde(skip_serializing_if = "Option::is_none")]
                pub $name: Option<$ty>,
            )*
        }

        impl clap::FromArgMatches for SettingFlags {
            fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
                Ok(SettingFlags { $($name: <$ty as FlagValue>::get(m, stringify!($name)),)* })
            }

            fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
                $(
                    if let Some(v) = <$ty as FlagValue>::get(m, stringify!($name)) {
                        self.$name = Some(v);
                    }
                )*
                Ok(())
            }
        }

        /// Every setting, in the order of [`Config`].
        pub static SETTINGS: &[Setting] = &[$(
            Setting {
                name: stringify!($name),
                flag: settings!(@flag $name $($flag)?),
                value_name: $value,
                help: concat!($($doc),+),
                shown_default: settings!(@shown $($shown)?),
                configure: <$ty as FlagValue>::configure,
            },
        )*];
    };
}

/// A name in kebab case, as a `&'static str`, which is what clap takes for a flag.
macro_rules! kebab {
    ($name:ident) => {{
        const KEBAB: [u8; stringify!($name).len()] = kebab_case(stringify!($name));
        match std::str::from_utf8(&KEBAB) {
            Ok(flag) => flag,
            Err(_) => panic!("a setting's name is ASCII"),
        }
    }};
}

/// `snake` with `-` for `_`; `N` is its length.
const fn kebab_case<const N: usize>(snake: &str) -> [u8; N] {
    let mut out = [0; N];
    let mut i = 0;
    while i < N {
        out[i] = match snake.as_bytes()[i] {
            b'_' => b'-',
            c => c,
        };
        i += 1;
    }
    out
}

settings! {
    /// Address to listen on, shared by every shard (SO_REUSEPORT)
    listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8080)), value "ADDR";
    /// Number of shards, each a thread pinned to a CPU (1 to 64)
    shards: Option<usize> = None, value "N", shown "one per online CPU";
    /// HS256 secret that signs and checks JWTs; without one the server makes a random secret and prints a
    /// demo user token and a publisher token
    jwt_secret: Option<String> = None, value "SECRET", shown "random, tokens printed";
    /// Run the built-in simulated feed; without it events come only from the publish API (--no-simulator is
    /// --simulator false)
    simulator: bool = true, value "BOOL";
    /// Events per second produced by the simulated feed
    simulator_rate: u64 = 1000, value "EVENTS_PER_S";
    /// Number of symbols the simulated feed quotes (real tickers first: AAPL, MSFT, GOOGL, ...)
    simulator_symbols: usize = 100, value "N";
    /// Whether clients without a token may connect to /v1/stream (public channels only); /api/v1/ws admits
    /// them whatever this says, as its seed does
    allow_anonymous: bool = true, value "BOOL";
    /// Seconds between the server's WebSocket pings; a client that sends nothing (pongs count) for two
    /// intervals is closed with 4000
    heartbeat_s: u32 = 30, value "SECONDS";
    /// /api/v1/ws (seed 003): a client that sends no message for this long is closed with 1003 (checked at
    /// each heartbeat_s visit, so the close comes within heartbeat_s after it)
    fastws_heartbeat_s: u32 = 30, value "SECONDS";
    /// /api/v1/ws (seed 003): a connection older than this is closed with 1003
    fastws_lifespan_s: u32 = 3600, value "SECONDS";
    /// /ws (seed 001): whether the endpoint is served (false: 404, and /websocket/status says enabled false)
    legacy_enabled: bool = true, value "BOOL";
    /// /ws (seed 001): new connections get every price update and signal (and, with a token, their own
    /// trades and portfolio) until their first subscribe, as the seed's MVP mode
    legacy_auto_subscribe: bool = true, value "BOOL";
    /// /ws (seed 001): seconds between price_update frames (each holds the symbols that changed)
    legacy_price_update_interval_s: u32 = 3, value "SECONDS";
    /// /ws (seed 001): a connection gets at most one portfolio_update per this many seconds (the latest; the
    /// ones between are superseded)
    legacy_portfolio_update_interval_s: u32 = 5, value "SECONDS";
    /// /ws/portfolio (seed 002): a connection's events are batched in windows of this many milliseconds
    /// (the first of a quiet connection goes at once; what follows within the window goes together at its
    /// end, several as one batch frame)
    portfolio_batch_ms: u32 = 1000, value "MS";
    /// permessage-deflate (RFC 7692): offered by a client, it is agreed (with server_no_context_takeover), and
    /// each update is deflated once for every compressing subscriber of its topic; false: never agreed
    compression: bool = true, value "BOOL";
    /// zlib level of deflated frames: 1 fastest, 9 smallest (docs/compression.md has the measurements)
    compression_level: u32 = 1, value "0-9";
    /// Frames whose payload is shorter than this many bytes go uncompressed even to compressing clients
    compression_threshold: usize = 64, value "BYTES";
    /// A test aid, off by default: a path (e.g. /echo) where WebSocket connections get every text and binary
    /// message back, through the server's own frame codec, limits and close handling, for the
    /// Autobahn|Testsuite (docs/conformance)
    echo_path: Option<String> = None, value "PATH", shown "none";
    /// Largest client message, in bytes (after inflation when compressed); a larger one is closed with 1009
    max_message_bytes: usize = 64 * 1024, value "BYTES";
    /// Most topics one connection may subscribe to (more: SUBSCRIPTION_LIMIT errors)
    max_subscriptions: usize = 1024, value "N";
    /// Bound of a connection's outbound queue in bytes: above it public topics are conflated to their latest
    /// frame; if that does not bring it under half the bound, close 1013 "slow consumer"
    max_queued_bytes: usize = 4 << 20, value "BYTES";
    /// Milliseconds a connection may stay behind (conflated and not yet drained) before it is closed with
    /// 1013 "slow consumer"
    slow_consumer_grace_ms: u64 = 5000, value "MS";
    /// Frames of history kept per public topic, for `from_sequence` resume
    history_public: usize = 1024, value "N";
    /// Frames of history kept per private topic
    history_private: usize = 100, value "N";
    /// Unacknowledged critical messages (orders, executions, alerts) kept per user and channel
    critical_queue: usize = 100, value "N";
    /// Milliseconds after which a shutting-down server closes connections whose queues did not drain
    shutdown_timeout_ms: u64 = 5000, value "MS";
    /// Milliseconds a closing connection's writer may take to flush its queue and send the close frame
    /// before the connection is dropped with a FIN only (a peer that does not read cannot hold it longer)
    close_flush_ms: u64 = 5000, value "MS";
    /// Largest HTTP request head, in bytes (431 above it)
    max_header_bytes: usize = 16 * 1024, value "BYTES";
    /// Largest HTTP request body, in bytes (413 above it)
    max_body_bytes: usize = 1 << 20, value "BYTES";
    /// Seconds a client has to send a whole HTTP request head (and to finish the TLS handshake)
    handshake_timeout_s: u64 = 10, value "SECONDS";
    // Security (docs/security.md).
    /// PEM public key that checks RS256 or ES256 JWTs from an identity provider (with --jwt-algorithm);
    /// HS256 tokens signed with the secret stay accepted
    jwt_public_key: Option<PathBuf> = None, value "FILE", shown "none";
    /// Algorithm of --jwt-public-key: RS256 or ES256
    jwt_algorithm: Option<String> = None, value "ALG", shown "none";
    /// JWK set file of an identity provider (its published keys: RS*, PS*, ES256, ES384, EdDSA; a token's
    /// `kid` picks the key); read again on SIGHUP, so keys rotate without a restart
    jwt_jwks: Option<PathBuf> = None, value "FILE", shown "none";
    /// Issuer every token must name in `iss` (the server's own tokens carry it)
    jwt_issuer: Option<String> = None, value "ISSUER", shown "none: not checked";
    /// Audience every token must name in `aud` (the server's own tokens carry it)
    jwt_audience: Option<String> = None, value "AUDIENCE", shown "none: not checked";
    /// API key exchanged at GET /api/ws/token (header X-API-Key) for a short-lived token naming USER;
    /// repeatable
    api_keys: Vec<String> = Vec::new(), value "KEY=USER", flag "api-key", shown "none";
    /// Lifetime of the tokens GET /api/ws/token issues, in seconds
    token_ttl_s: u64 = 300, value "SECONDS";
    /// TLS certificate chain (PEM); with --tls-key the server speaks TLS 1.3 only (https/wss)
    tls_cert: Option<PathBuf> = None, value "FILE", shown "none: plain TCP";
    /// TLS private key (PEM: PKCS#8, PKCS#1 or SEC1) of --tls-cert
    tls_key: Option<PathBuf> = None, value "FILE", shown "none";
    /// Also accept TLS 1.2 clients (TLS 1.3 only otherwise)
    tls_allow_1_2: bool = false, value "BOOL";
    /// Most WebSocket connections on the server; over it new ones are closed with 1013
    max_connections: usize = 100_000, value "N";
    /// Most stream connections of one user (token `sub`); over it: close 1008; 0: no limit
    max_connections_per_user: usize = 5, value "N";
    /// Most WebSocket connections from one IP address; over it: close 1013; 0: no limit
    max_connections_per_ip: usize = 0, value "N";
    /// Client messages per second per connection; over it: RATE_LIMITED errors, then close 1008
    max_messages_per_s: u32 = 100, value "N";
    /// Browser origin allowed to open WebSockets (exact, e.g. `https://app.example.com`); repeatable; when set,
    /// an upgrade with another Origin header gets 403
    allowed_origins: Vec<String> = Vec::new(), value "ORIGIN", flag "allowed-origin", shown "any";
    /// Ed25519 private key (PKCS#8 PEM) that signs order frames
    signing_key: Option<PathBuf> = None, value "FILE", shown "a new key each start";
    /// Microseconds a shard runs tasks before it polls io_uring again (glommio's preempt timer); while a
    /// shard is busy, completed I/O waits up to this long
    preempt_us: u64 = 1000, value "MICROSECONDS";
    // Persistence (docs/persistence.md).
    /// PostgreSQL URL (postgres://user:password@host:port/database): keeps connections, subscriptions,
    /// metrics history and a durable critical-message queue
    database_url: Option<String> = None, value "URL", shown "none: the in-memory store";
    /// Seconds between the rows of the metrics history written to the database
    metrics_interval_s: u64 = 10, value "SECONDS";
    /// Milliseconds a publish of critical events waits for the database to commit them before it is
    /// answered 503
    durable_timeout_ms: u64 = 5000, value "MS";
    /// Critical messages (and acks) that may wait for the database; beyond, critical publishes get 503
    critical_buffer: usize = 10_000, value "N";
    /// Bookkeeping records (connections, subscriptions, metrics) that may wait for the database; beyond, new
    /// ones are shed and counted
    store_backlog: usize = 100_000, value "N";
    /// Days the database keeps ended connections, metrics, acknowledged critical messages and subscriptions
    /// not renewed; 0: for ever
    retention_days: u32 = 30, value "DAYS";
    /// Milliseconds the database may take to accept a connection or answer a write before it counts as lost
    /// (and the store reconnects)
    store_timeout_ms: u64 = 10_000, value "MS";
    // Scale-out (docs/scale-out.md).
    /// NATS URL (nats://host:4222) of the JetStream bus that joins the nodes of a cluster behind a TCP
    /// balancer: each topic keeps one sequence across the nodes, updates and critical messages are stored
    /// there, a node follows the topics its clients subscribe to, and refuses publishes (503) while it
    /// cannot reach NATS. Not with --database-url. Without it, a single node
    bus: Option<String> = None, value "URL", shown "none: a single node";
    // Operations (docs/deploy).
    /// How log lines are written to standard error: plain (key=value; colours only on a terminal) or json
    /// (one object per line, for journald and log collectors); RUST_LOG picks what is logged
    log_format: String = "plain".to_owned(), value "plain|json";
    /// A test aid, never for production: POST /api/admin/debug/stall?ms=N (admin role) blocks the other
    /// shards' threads for N ms or until POST /api/admin/debug/release, so that the stall detector and
    /// /healthz can be seen at work
    debug_endpoints: bool = false, value "BOOL";
}

/// Environment variables read without the `TICKWIRE_` prefix, each the name of its setting in upper case.
const UNPREFIXED_ENV: &[&str] = &["DATABASE_URL"];

/// Seed 001's environment variables (its "Configuration" section), honoured as aliases of the settings they
/// match so that an existing deployment's environment works; a `TICKWIRE_*` variable overrides its alias.
pub const ENV_ALIASES: [(&str, &str); 5] = [
    ("WEBSOCKET_ENABLED", "legacy_enabled"),
    ("WEBSOCKET_PING_INTERVAL", "heartbeat_s"),
    ("WEBSOCKET_PRICE_UPDATE_INTERVAL", "legacy_price_update_interval_s"),
    ("WEBSOCKET_PORTFOLIO_UPDATE_INTERVAL", "legacy_portfolio_update_interval_s"),
    ("WEBSOCKET_MAX_CONNECTIONS", "max_connections"),
];

/// One setting, as its flag and the docs show it.
#[derive(Debug)]
pub struct Setting {
    /// The field of [`Config`] and the key of the config file.
    pub name: &'static str,
    /// The flag, without its `--`.
    pub flag: &'static str,
    /// What the flag's value is called in `--help`.
    pub value_name: &'static str,
    /// The doc comment, its lines joined.
    help: &'static str,
    /// How a default that says nothing as a value (`None`, `[]`) is shown.
    shown_default: Option<&'static str>,
    /// Sets the flag's parser and how many values it takes, which depend on the setting's type.
    configure: fn(Arg) -> Arg,
}

impl Setting {
    /// What the setting does.
    pub fn help(&self) -> &'static str {
        self.help.trim()
    }

    /// The environment variables that set it.
    pub fn env(&self) -> Vec<String> {
        let name = self.name.to_ascii_uppercase();
        let unprefixed = UNPREFIXED_ENV.iter().filter(|v| **v == name).map(|v| (*v).to_owned());
        let aliases = ENV_ALIASES.iter().filter(|(_, setting)| *setting == self.name).map(|(v, _)| (*v).to_owned());
        unprefixed.chain([format!("TICKWIRE_{name}")]).chain(aliases).collect()
    }

    /// The default, as `--help` and the docs show it: the value of `Config::default()` unless the entry
    /// words it.
    pub fn default_shown(&self) -> String {
        if let Some(shown) = self.shown_default {
            return shown.to_owned();
        }
        match &serde_json::to_value(Config::default()).expect("a Config serializes")[self.name] {
            serde_json::Value::String(s) => s.clone(),
            v => v.to_string(),
        }
    }

    /// The flag, with its help ending in the default.
    pub fn arg(&self) -> Arg {
        let help = format!("{} [default: {}]", self.help(), self.default_shown());
        (self.configure)(Arg::new(self.name).long(self.flag).value_name(self.value_name).help(help))
    }
}

/// The flags of every setting, from [`SETTINGS`].
impl Args for SettingFlags {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        SETTINGS.iter().fold(cmd, |cmd, s| cmd.arg(s.arg()))
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        SettingFlags::augment_args(cmd)
    }
}

/// How a setting of this type is given on the command line.
trait FlagValue: Sized {
    /// Sets the flag's parser and how many values it takes.
    fn configure(arg: Arg) -> Arg;
    /// The value the command line gives, if it gives one.
    fn get(m: &ArgMatches, id: &str) -> Option<Self>;
}

/// A type clap parses from one value.
trait Scalar: Clone + Send + Sync + 'static {
    fn parser() -> ValueParser;
}

macro_rules! scalars {
    ($($t:ty),*) => {$(
        impl Scalar for $t {
            fn parser() -> ValueParser {
                value_parser!($t).into()
            }
        }
    )*};
}
scalars!(u32, u64, usize, String, PathBuf, SocketAddr);

impl<T: Scalar> FlagValue for T {
    fn configure(arg: Arg) -> Arg {
        arg.value_parser(T::parser()).action(ArgAction::Set)
    }
    fn get(m: &ArgMatches, id: &str) -> Option<T> {
        m.get_one::<T>(id).cloned()
    }
}

/// A setting that may be unset (`None` as its default): the flag sets it, `--shards 4` is `Some(4)`.
impl<T: Scalar> FlagValue for Option<T> {
    fn configure(arg: Arg) -> Arg {
        T::configure(arg)
    }
    fn get(m: &ArgMatches, id: &str) -> Option<Option<T>> {
        T::get(m, id).map(Some)
    }
}

/// A repeatable flag: `--flag A --flag B` is `[A, B]`, and replaces the list of the file or environment.
impl<T: Scalar> FlagValue for Vec<T> {
    fn configure(arg: Arg) -> Arg {
        arg.value_parser(T::parser()).action(ArgAction::Append)
    }
    fn get(m: &ArgMatches, id: &str) -> Option<Vec<T>> {
        m.get_many::<T>(id).map(|values| values.cloned().collect())
    }
}

/// `--flag BOOL`, or a bare `--flag` for true. The value name says BOOL: clap's list of possible values would
/// come after the default, which ends the help of the others.
impl FlagValue for bool {
    fn configure(arg: Arg) -> Arg {
        let arg = arg.value_parser(value_parser!(bool)).action(ArgAction::Set).hide_possible_values(true);
        arg.num_args(0..=1).default_missing_value("true")
    }
    fn get(m: &ArgMatches, id: &str) -> Option<bool> {
        m.get_one::<bool>(id).copied()
    }
}

/// The table of docs/configuration.md: every setting with its file key, flag, variables, default and help.
pub fn settings_table() -> String {
    let mut table = String::from("| key | flag | env | default | what |\n|---|---|---|---|---|\n");
    for s in SETTINGS {
        let arg = s.arg();
        let optional = arg.get_num_args().is_some_and(|n| n.min_values() == 0);
        let value = if optional { format!("[{}]", s.value_name) } else { s.value_name.to_owned() };
        let env: Vec<String> = s.env().iter().map(|v| format!("`{v}`")).collect();
        table += &format!(
            "| `{}` | `--{} {value}` | {} | {} | {} |\n",
            s.name,
            s.flag,
            env.join(", "),
            s.default_shown(),
            s.help().replace('|', "\\|")
        );
    }
    table
}

impl Config {
    /// Merges defaults, the config file, `TICKWIRE_*` variables and the flags.
    pub fn load(args: &ServeArgs) -> anyhow::Result<Config> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = &args.config {
            anyhow::ensure!(path.exists(), "config file {} does not exist", path.display());
            fig = fig.merge(Toml::file(path));
        }
        fig = fig
            .merge(Env::raw().only(UNPREFIXED_ENV))
            .merge(Env::raw().only(&ENV_ALIASES.map(|(v, _)| v)).map(|key| {
                let setting = ENV_ALIASES.iter().find(|(v, _)| key == *v).map_or("", |(_, s)| s);
                setting.into()
            }))
            .merge(Env::prefixed("TICKWIRE_"))
            .merge(Serialized::defaults(&args.settings));
        if args.no_simulator {
            fig = fig.merge(Serialized::default("simulator", false));
        }
        let config: Config = fig.extract().context("invalid configuration")?;
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
        anyhow::ensure!(self.compression_level <= 9, "compression_level must be 0 to 9");
        if let Some(path) = &self.echo_path {
            anyhow::ensure!(
                path.starts_with('/') && tickwire_core::protocol::by_path(path).is_none() && path != "/v1/publish",
                "--echo-path must start with / and not be a stream or publish path"
            );
        }
        anyhow::ensure!(self.handshake_timeout_s > 0, "handshake_timeout_s must be at least 1");
        anyhow::ensure!((1..=3600).contains(&self.heartbeat_s), "heartbeat_s must be 1 to 3600");
        anyhow::ensure!(
            self.fastws_heartbeat_s >= 1 && self.fastws_lifespan_s >= 1,
            "fastws_heartbeat_s and fastws_lifespan_s must be at least 1"
        );
        anyhow::ensure!(
            (1..=3600).contains(&self.legacy_price_update_interval_s),
            "legacy_price_update_interval_s must be 1 to 3600"
        );
        anyhow::ensure!((1..=60_000).contains(&self.portfolio_batch_ms), "portfolio_batch_ms must be 1 to 60000");
        anyhow::ensure!(
            (1..=3600).contains(&self.legacy_portfolio_update_interval_s),
            "legacy_portfolio_update_interval_s must be 1 to 3600"
        );
        anyhow::ensure!((1..=3600).contains(&self.metrics_interval_s), "metrics_interval_s must be 1 to 3600");
        anyhow::ensure!(
            self.critical_buffer >= 1 && self.store_backlog >= 1,
            "critical_buffer and store_backlog must be at least 1"
        );
        anyhow::ensure!(
            matches!(self.log_format.as_str(), "plain" | "json"),
            "log_format must be plain or json, not {:?}",
            self.log_format
        );
        let set = |o: &Option<String>| o.as_deref().is_some_and(|u| !u.trim().is_empty());
        // A node with a database sequences its topics alone: beside a cluster's nodes it would diverge.
        anyhow::ensure!(
            !(set(&self.bus) && set(&self.database_url)),
            "--bus and --database-url (or DATABASE_URL) do not go together: the nodes of a cluster keep their topics on the bus, not in a database (docs/scale-out.md)"
        );
        Ok(())
    }

    /// Says `line` to the person who started the server (its address, where the page is): on standard
    /// error as it is, or with `--log-format json` as an info event, so that a log collector reads JSON only.
    pub fn say(&self, line: &str) {
        if self.log_format == "json" {
            tracing::info!(target: "tickwire", "{line}");
        } else {
            eprintln!("{line}");
        }
    }

    /// The number of shards to run.
    pub fn shard_count(&self) -> usize {
        self.shards.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from).min(64))
    }
}

/// The JWT secret of `tickwire token` and the issuer and audience its tokens carry: each from its flag, then
/// the environment, then the config file (read only when a flag and the environment leave the secret
/// unsaid or `--config` is given, so that `--jwt-secret` alone needs no valid configuration).
pub fn token_secret(args: &TokenArgs) -> anyhow::Result<(String, crate::auth::ClaimRules)> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let mut rules = crate::auth::ClaimRules {
        issuer: args.jwt_issuer.clone().or_else(|| env("TICKWIRE_JWT_ISSUER")),
        audience: args.jwt_audience.clone().or_else(|| env("TICKWIRE_JWT_AUDIENCE")),
    };
    if let (Some(s), None) = (&args.jwt_secret, &args.config) {
        return Ok((s.clone(), rules));
    }
    let serve = ServeArgs { config: args.config.clone(), ..ServeArgs::default() };
    let config = Config::load(&serve)?;
    rules.issuer = rules.issuer.or(config.jwt_issuer);
    rules.audience = rules.audience.or(config.jwt_audience);
    let secret = match &args.jwt_secret {
        Some(s) => s.clone(),
        None => config
            .jwt_secret
            .context("no secret configured: pass --jwt-secret, set TICKWIRE_JWT_SECRET or jwt_secret in --config")?,
    };
    Ok((secret, rules))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `ServeArgs` of `tickwire ARGS...`.
    fn parse(args: &[&str]) -> ServeArgs {
        Cli::try_parse_from(["tickwire"].iter().chain(args)).unwrap().serve
    }

    #[test]
    fn flags_override_file() {
        let dir = std::env::temp_dir().join(format!("tickwire-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("t.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:9000\"\nsimulator_rate = 5\nshards = 3\n").unwrap();
        let settings = SettingFlags { shards: Some(Some(2)), ..Default::default() };
        let args = ServeArgs { config: Some(file.clone()), settings, no_simulator: true };
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
    fn a_cluster_node_has_no_database() {
        figment::Jail::expect_with(|jail| {
            // (CI exports DATABASE_URL for the tests that use one: none here at first.)
            jail.set_env("DATABASE_URL", "");
            let bus = parse(&["--bus", "nats://127.0.0.1:4222"]);
            assert!(Config::load(&bus).is_ok());
            jail.set_env("DATABASE_URL", "postgres://a@h/one");
            let e = Config::load(&bus).unwrap_err().to_string();
            assert!(e.contains("do not go together"), "{e}");
            jail.set_env("DATABASE_URL", "");
            assert!(Config::load(&bus).is_ok(), "an empty URL is none");
            Ok(())
        });
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
            let flag = parse(&["--database-url", "postgres://a@h/three"]);
            assert_eq!(Config::load(&flag).unwrap().database_url.as_deref(), Some("postgres://a@h/three"));
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's own Jail signature
    fn seed_001s_environment_variables_set_their_settings_under_tickwires_own() {
        figment::Jail::expect_with(|jail| {
            for (var, value) in [
                ("WEBSOCKET_ENABLED", "false"),
                ("WEBSOCKET_PING_INTERVAL", "31"),
                ("WEBSOCKET_PRICE_UPDATE_INTERVAL", "4"),
                ("WEBSOCKET_PORTFOLIO_UPDATE_INTERVAL", "6"),
                ("WEBSOCKET_MAX_CONNECTIONS", "101"),
            ] {
                jail.set_env(var, value);
            }
            let c = Config::load(&ServeArgs::default()).unwrap();
            assert_eq!(
                (
                    c.legacy_enabled,
                    c.heartbeat_s,
                    c.legacy_price_update_interval_s,
                    c.legacy_portfolio_update_interval_s,
                    c.max_connections
                ),
                (false, 31, 4, 6, 101)
            );
            jail.set_env("TICKWIRE_HEARTBEAT_S", "32");
            assert_eq!(Config::load(&ServeArgs::default()).unwrap().heartbeat_s, 32, "TICKWIRE_* wins");
            assert_eq!(Config::load(&parse(&["--heartbeat-s", "33"])).unwrap().heartbeat_s, 33, "a flag wins");
            let documented = SETTINGS.iter().find(|s| s.name == "max_connections").unwrap().env();
            assert_eq!(documented, ["TICKWIRE_MAX_CONNECTIONS", "WEBSOCKET_MAX_CONNECTIONS"]);
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's own Jail signature
    fn a_setting_that_had_no_flag_comes_from_the_file_the_environment_and_its_flag() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("t.toml", "max_queued_bytes = 1000\napi_keys = [\"file-key-1=ann\"]\n")?;
            let file = || parse(&["--config", "t.toml"]);
            assert_eq!(Config::load(&file()).unwrap().max_queued_bytes, 1000);
            jail.set_env("TICKWIRE_MAX_QUEUED_BYTES", "2000");
            // A list in the environment is written as in TOML, without the quotes.
            jail.set_env("TICKWIRE_API_KEYS", "[env-key-1=bob, env-key-2=cy]");
            let config = Config::load(&file()).unwrap();
            assert_eq!(
                (config.max_queued_bytes, config.api_keys),
                (2000, vec!["env-key-1=bob".into(), "env-key-2=cy".into()])
            );
            let config = Config::load(&parse(&[
                "--config",
                "t.toml",
                "--max-queued-bytes",
                "3000",
                "--api-key",
                "flag-key-1=di",
            ]))
            .unwrap();
            assert_eq!((config.max_queued_bytes, config.api_keys), (3000, vec!["flag-key-1=di".into()]));
            Ok(())
        });
    }

    #[test]
    fn the_flags_scripts_use_keep_their_spelling() {
        let args = parse(&[
            "--listen",
            "127.0.0.1:9001",
            "--shards",
            "3",
            "--jwt-secret",
            "s",
            "--simulator-rate",
            "7",
            "--simulator-symbols",
            "8",
            "--no-simulator",
            "--allow-anonymous",
            "false",
            "--heartbeat-s",
            "9",
            "--database-url",
            "postgres://a@h/d",
            "--metrics-interval-s",
            "11",
            "--jwt-public-key",
            "pub.pem",
            "--jwt-algorithm",
            "ES256",
            "--api-key",
            "key-0001=ann",
            "--api-key",
            "key-0002=bob",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--tls-allow-1-2",
            "--max-connections",
            "12",
            "--max-connections-per-user",
            "13",
            "--max-connections-per-ip",
            "14",
            "--max-messages-per-s",
            "15",
            "--allowed-origin",
            "https://a.example",
            "--allowed-origin",
            "https://b.example",
            "--signing-key",
            "sign.pem",
            "--handshake-timeout-s",
            "16",
        ]);
        let c = Config::load(&args).unwrap();
        assert_eq!((c.listen.port(), c.shards, c.jwt_secret.as_deref()), (9001, Some(3), Some("s")));
        assert_eq!((c.simulator_rate, c.simulator_symbols, c.simulator, c.allow_anonymous), (7, 8, false, false));
        assert_eq!((c.heartbeat_s, c.database_url.as_deref(), c.metrics_interval_s), (9, Some("postgres://a@h/d"), 11));
        assert_eq!((c.jwt_public_key, c.jwt_algorithm.as_deref()), (Some("pub.pem".into()), Some("ES256")));
        assert_eq!(c.api_keys, ["key-0001=ann", "key-0002=bob"]);
        assert_eq!((c.tls_cert, c.tls_key, c.tls_allow_1_2), (Some("c.pem".into()), Some("k.pem".into()), true));
        assert_eq!((c.max_connections, c.max_connections_per_user, c.max_connections_per_ip), (12, 13, 14));
        assert_eq!((c.max_messages_per_s, c.handshake_timeout_s), (15, 16));
        assert_eq!(c.allowed_origins, ["https://a.example", "https://b.example"]);
        assert_eq!(c.signing_key, Some("sign.pem".into()));
        // A bool flag takes a value or stands alone for true; --no-simulator is --simulator false.
        assert!(!Config::load(&parse(&["--tls-allow-1-2", "false"])).unwrap().tls_allow_1_2);
        assert!(Config::load(&parse(&["--debug-endpoints"])).unwrap().debug_endpoints);
        assert!(Cli::try_parse_from(["tickwire", "--no-simulator", "--simulator", "true"]).is_err());
        // The subcommand takes the same flags.
        let Some(Command::Serve(serve)) =
            Cli::try_parse_from(["tickwire", "serve", "--preempt-us", "50"]).unwrap().command
        else {
            panic!("serve")
        };
        assert_eq!(Config::load(&serve).unwrap().preempt_us, 50);
    }

    #[test]
    fn every_setting_has_a_help_and_a_default_that_say_something() {
        for s in SETTINGS {
            assert!(s.help().len() > 10, "{} has no help", s.name);
            let default = s.default_shown();
            assert!(!["null", "[]", ""].contains(&default.as_str()), "{}: word its default with `shown`", s.name);
            assert!(s.flag == s.name.replace('_', "-") || ["api_keys", "allowed_origins"].contains(&s.name));
        }
        assert_eq!(
            SETTINGS.iter().find(|s| s.name == "database_url").unwrap().env(),
            ["DATABASE_URL", "TICKWIRE_DATABASE_URL"]
        );
    }

    fn readme_config_example() -> String {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
        let toml = readme.split("```toml\n").nth(1).and_then(|rest| rest.split("```").next()).expect("a toml block");
        toml.to_owned()
    }

    #[test]
    fn readme_config_example_loads() {
        let toml = readme_config_example();
        let dir = std::env::temp_dir().join(format!("tickwire-readme-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("tickwire.toml");
        std::fs::write(&file, toml).unwrap();
        let args = ServeArgs { config: Some(file), ..Default::default() };
        let config = Config::load(&args).expect("README example is a valid config");
        assert_eq!(config.listen.port(), 8080);
        assert_eq!(config.max_queued_bytes, 4_194_304);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn readme_config_example_has_every_setting() {
        let toml = readme_config_example();
        let keys: Vec<&str> = toml
            .lines()
            .filter_map(|l| l.trim_start_matches("# ").split_once(" ="))
            .map(|(key, _)| key.trim())
            .collect();
        let missing: Vec<&str> = SETTINGS.iter().map(|s| s.name).filter(|name| !keys.contains(name)).collect();
        assert!(
            missing.is_empty(),
            "README's toml example lacks {missing:?} (a commented `# key = value` line will do)"
        );
    }

    /// docs/configuration.md's table, between its markers, is what `settings!` in net/src/config.rs renders.
    #[test]
    fn docs_table_of_settings_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");
        let doc = std::fs::read_to_string(path).unwrap();
        let (begin, end) = ("<!-- settings table begin -->\n", "<!-- settings table end -->");
        let committed = doc.split(begin).nth(1).and_then(|rest| rest.split(end).next()).expect("the table's markers");
        let expected = settings_table();
        assert!(
            committed == expected,
            "docs/configuration.md's table differs from net/src/config.rs; put this between its markers:\n{expected}"
        );
    }
}
