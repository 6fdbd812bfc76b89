//! The NATS JetStream bus of a node in a cluster (docs/scale-out.md), with `--bus nats://HOST:PORT`.
//!
//! One thread runs async-nats on a current-thread tokio runtime beside the shards, as the PostgreSQL store
//! does; shards never wait on it: they read its state ([`BusState`], atomics). This first part of the
//! scale-out connects (async-nats reconnects by itself), creates what the cluster shares if it is not there
//! (the streams `TICKWIRE_PUBLIC`, `TICKWIRE_PRIVATE` and `TICKWIRE_ACKS`, the key-value bucket
//! `tickwire-owners`: every node does it at start, idempotently), and says whether the bus is usable. While
//! it is not, the node answers publishes 503: a node cut off from NATS must not sequence on its own. Storing
//! updates in the streams, routing by interest and resuming from them are the next parts (docs/scale-out.md
//! says which).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use tickwire_core::channel::CATALOG;
use tickwire_core::Topic;

use crate::config::Config;

/// The stream of public topics' updates (`history_public` kept per topic).
pub const PUBLIC_STREAM: &str = "TICKWIRE_PUBLIC";
/// The stream of private topics' updates (`history_private` kept per topic).
pub const PRIVATE_STREAM: &str = "TICKWIRE_PRIVATE";
/// The latest acknowledged sequence of each user's critical topic.
pub const ACKS_STREAM: &str = "TICKWIRE_ACKS";
/// Who sequences which partition, under leases.
pub const OWNERS_BUCKET: &str = "tickwire-owners";
/// How long a partition's owner keeps it without renewing.
pub const LEASE: Duration = Duration::from_secs(3);
/// How long a publish retried after a lost ack is recognised as the same (`Nats-Msg-Id`).
const DEDUPE_WINDOW: Duration = Duration::from_secs(120);
/// How often the thread looks at the connection's state (an event also says when it is lost).
const WATCH_EVERY: Duration = Duration::from_millis(100);
/// How often setting up is tried again after it failed.
const SET_UP_RETRY: Duration = Duration::from_secs(1);

/// What the shards and the status endpoints know of the bus.
#[derive(Debug, Default)]
pub struct BusState {
    /// The URL, without credentials.
    pub url: String,
    connected: AtomicBool,
    /// The streams and the bucket are in place.
    ready: AtomicBool,
    /// Connections made (the first one included).
    pub connects: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl BusState {
    /// Connected, with the streams and the bucket in place: the node may accept publishes.
    pub fn usable(&self) -> bool {
        self.connected.load(Ordering::Relaxed) && self.ready.load(Ordering::Relaxed)
    }

    /// `up`, `setting_up` (connected, creating the streams) or `unreachable`.
    pub fn status(&self) -> &'static str {
        match (self.connected.load(Ordering::Relaxed), self.ready.load(Ordering::Relaxed)) {
            (true, true) => "up",
            (true, false) => "setting_up",
            _ => "unreachable",
        }
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_error(&self, e: impl std::fmt::Display) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
    }
}

/// The running bus: its state and its thread, stopped by [`Bus::stop`] (or on drop).
#[derive(Debug)]
pub struct Bus {
    pub state: Arc<BusState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Bus {
    /// Starts the bus thread for `url`; it connects in the background (the node starts either way, and
    /// refuses publishes until the bus is usable).
    pub fn start(url: &str, config: &Config) -> anyhow::Result<Bus> {
        let state = Arc::new(BusState { url: redact(url), ..BusState::default() });
        let streams = streams(config);
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let (url, s) = (url.to_owned(), state.clone());
        let thread = std::thread::Builder::new().name("bus".into()).spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => return s.set_error(format!("cannot start the bus runtime: {e}")),
            };
            runtime.block_on(run(url, s, streams, stopped));
        })?;
        Ok(Bus { state, stop: Some(stop), thread: Some(thread) })
    }

    /// Closes the connection and joins the thread.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The thread's life: connect, set up, watch the connection until told to stop.
async fn run(
    url: String,
    state: Arc<BusState>,
    streams: Vec<stream::Config>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let events = state.clone();
    let options = async_nats::ConnectOptions::new()
        .name("tickwire")
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(2))
        // A silent server (a partition) is noticed within a few seconds, not the default two minutes.
        .ping_interval(Duration::from_secs(1))
        .event_callback(move |event| {
            let state = events.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        state.connected.store(true, Ordering::Relaxed);
                        state.connects.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(url = %state.url, "bus connected");
                    }
                    async_nats::Event::Disconnected => {
                        state.connected.store(false, Ordering::Relaxed);
                        tracing::warn!(url = %state.url, "bus disconnected: publishes are refused until it is back");
                    }
                    other => tracing::debug!(url = %state.url, event = %other, "bus event"),
                }
            }
        });
    let client = match options.connect(url.as_str()).await {
        Ok(c) => c,
        Err(e) => {
            state.set_error(&e);
            tracing::error!(url = %state.url, error = %e, "cannot use the bus");
            return;
        }
    };
    let js = jetstream::new(client.clone());
    let mut watch = tokio::time::interval(WATCH_EVERY);
    let mut next_try = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            _ = watch.tick() => {}
        }
        let connected = client.connection_state() == async_nats::connection::State::Connected;
        state.connected.store(connected, Ordering::Relaxed);
        if connected && !state.ready.load(Ordering::Relaxed) && tokio::time::Instant::now() >= next_try {
            next_try = tokio::time::Instant::now() + SET_UP_RETRY;
            match set_up(&js, &streams).await {
                Ok(()) => {
                    state.ready.store(true, Ordering::Relaxed);
                    tracing::info!(url = %state.url, "bus ready: streams and the owners' bucket in place");
                }
                Err(e) => {
                    // Said once per distinct error, not once a second.
                    if state.last_error().as_deref() != Some(e.to_string().as_str()) {
                        tracing::warn!(url = %state.url, error = %e, "cannot set up the bus streams yet");
                    }
                    state.set_error(&e);
                }
            }
        }
    }
    let _ = client.drain().await;
}

/// Creates the streams and the bucket where they do not exist; checks that existing ones keep what this
/// node was configured to keep.
async fn set_up(js: &jetstream::Context, streams: &[stream::Config]) -> anyhow::Result<()> {
    for config in streams {
        let mut stream = js.get_or_create_stream(config.clone()).await?;
        let info = stream.info().await?;
        anyhow::ensure!(
            info.config.max_messages_per_subject == config.max_messages_per_subject,
            "stream {} keeps {} messages per topic, this node is configured for {}",
            config.name,
            info.config.max_messages_per_subject,
            config.max_messages_per_subject
        );
    }
    // The bucket is made as the stream behind it: async-nats's own `create_key_value` asks the server for
    // account details that nats-server 2.9 does not give, and any client opens the bucket once it exists.
    js.get_or_create_stream(owners_bucket()).await?;
    js.get_key_value(OWNERS_BUCKET).await?;
    Ok(())
}

/// The stream behind the key-value bucket of partition owners: one value per key, gone after [`LEASE`]
/// unless renewed, as a bucket made by `nats kv add --history 1 --ttl 3s` is.
fn owners_bucket() -> stream::Config {
    stream::Config {
        name: format!("KV_{OWNERS_BUCKET}"),
        description: Some("tickwire: which node sequences each partition, under a lease".to_owned()),
        subjects: vec![format!("$KV.{OWNERS_BUCKET}.>")],
        max_messages_per_subject: 1,
        max_age: LEASE,
        duplicate_window: LEASE,
        discard: stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        storage: stream::StorageType::File,
        ..stream::Config::default()
    }
}

/// The streams the cluster shares, as `config` sizes them.
pub fn streams(config: &Config) -> Vec<stream::Config> {
    let subjects = |private: bool| -> Vec<String> {
        CATALOG.iter().filter(|c| c.channel.is_private() == private).map(|c| format!("tw.s.{}.>", c.name)).collect()
    };
    let updates = |name: &str, private: bool, keep: usize| stream::Config {
        name: name.to_owned(),
        description: Some(format!(
            "tickwire: the updates of {} topics, the last {keep} of each",
            if private { "private" } else { "public" }
        )),
        subjects: subjects(private),
        max_messages_per_subject: keep as i64,
        storage: stream::StorageType::File,
        duplicate_window: DEDUPE_WINDOW,
        allow_direct: true,
        ..stream::Config::default()
    };
    vec![
        updates(PUBLIC_STREAM, false, config.history_public),
        updates(PRIVATE_STREAM, true, config.history_private),
        stream::Config {
            name: ACKS_STREAM.to_owned(),
            description: Some("tickwire: each user's latest acknowledged sequence per critical channel".to_owned()),
            subjects: vec!["tw.ack.>".to_owned()],
            max_messages_per_subject: 1,
            storage: stream::StorageType::File,
            allow_direct: true,
            ..stream::Config::default()
        },
    ]
}

/// The subject of a topic's updates: `tw.s.<channel>.<key>`, the key escaped so that it is one NATS token
/// (`.`, `*`, `>`, spaces, controls and `%` as `%XX`); bars add their interval as a token of their own.
pub fn subject(topic: &Topic) -> String {
    let mut s = format!("tw.s.{}.", topic.channel.name());
    escape_token(&topic.key, &mut s);
    if let Some(interval) = topic.interval {
        s.push('.');
        s.push_str(interval.as_str());
    }
    s
}

fn escape_token(key: &str, out: &mut String) {
    if key.is_empty() {
        out.push_str("%00");
    }
    for b in key.bytes() {
        match b {
            b'.' | b'*' | b'>' | b'%' | 0..=b' ' | 0x7f.. => out.push_str(&format!("%{b:02X}")),
            _ => out.push(b as char),
        }
    }
}

/// `url` without a password, for logs and the status page.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickwire_core::BarInterval;
    use tickwire_core::Channel;

    #[test]
    fn subjects_are_one_token_per_key_whatever_the_key() {
        let t = |c, k: &str| Topic::new(c, Arc::from(k));
        assert_eq!(subject(&t(Channel::Quotes, "AAPL")), "tw.s.quotes.AAPL");
        assert_eq!(subject(&t(Channel::Quotes, "BRK.B")), "tw.s.quotes.BRK%2EB");
        assert_eq!(subject(&t(Channel::Orders, "u 1*>%é")), "tw.s.orders.u%201%2A%3E%25%C3%A9");
        assert_eq!(subject(&t(Channel::News, "")), "tw.s.news.%00");
        let mut bar = t(Channel::Bars, "AAPL");
        bar.interval = Some(BarInterval::M1);
        assert_eq!(subject(&bar), "tw.s.bars.AAPL.1m");
        // Distinct keys, distinct subjects: the escape is reversible.
        assert_ne!(subject(&t(Channel::Quotes, "A.B")), subject(&t(Channel::Quotes, "A%2EB")));
    }

    #[test]
    fn the_streams_keep_the_configured_history_and_split_public_from_private() {
        let config = Config { history_public: 500, history_private: 40, ..Config::default() };
        let s = streams(&config);
        assert_eq!(s.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), [PUBLIC_STREAM, PRIVATE_STREAM, ACKS_STREAM]);
        assert_eq!(
            (s[0].max_messages_per_subject, s[1].max_messages_per_subject, s[2].max_messages_per_subject),
            (500, 40, 1)
        );
        assert!(
            s[0].subjects.contains(&"tw.s.quotes.>".to_owned()) && !s[0].subjects.contains(&"tw.s.orders.>".to_owned())
        );
        assert!(
            s[1].subjects.contains(&"tw.s.orders.>".to_owned()) && !s[1].subjects.contains(&"tw.s.quotes.>".to_owned())
        );
        assert_eq!(s[0].subjects.len() + s[1].subjects.len(), CATALOG.len());
    }

    #[test]
    fn passwords_stay_out_of_the_status() {
        assert_eq!(redact("nats://me:secret@10.0.0.1:4222"), "nats://***@10.0.0.1:4222");
        assert_eq!(redact("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
    }
}
