//! The PostgreSQL store: [`PgStore::open`] connects, applies the migrations, loads what the critical queues
//! need to continue (the last sequence of every private topic, every unacknowledged critical message), then
//! leaves a writer thread (a current-thread tokio runtime) behind two bounded channels: one for critical
//! messages and their acks, one for bookkeeping. The [`Store`] methods only `try_send` on them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use tickwire_core::time::Micros;
use tickwire_core::Channel;
use tokio::sync::{mpsc, oneshot};

use crate::writer::{self, BookOp, CriticalOp};
use crate::{ConnectionRecord, CriticalRecord, MetricsRecord, Pending, Receipt, Store, StoreStats, SubscriptionRecord};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// How long `tickwire report` waits for the database to accept it.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`Store::flush`] waits for the writer at shutdown.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors opening the database. The URL in messages never shows its password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("cannot connect to the database at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("cannot apply the database migrations: {0}")]
    Migrate(String),
    #[error("database query failed: {0}")]
    Query(#[from] tokio_postgres::Error),
    #[error("cannot start the persistence thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// How the PostgreSQL store is set up.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// `postgres://user:password@host:port/database`
    pub url: String,
    /// Critical messages (and acks) that may wait for the database; over that, publishes are refused.
    pub critical_buffer: usize,
    /// Bookkeeping records that may wait for the database; over that, new ones are shed and counted.
    pub backlog: usize,
    /// Unacknowledged messages loaded per critical topic at start (the server's critical queue bound).
    pub recover_per_topic: usize,
    /// How long ended connections, metrics rows, acknowledged critical messages and subscriptions not
    /// renewed are kept; `None`: for ever.
    pub retention: Option<Duration>,
    /// How often the writer deletes what is past `retention` (first right after start).
    pub prune_every: Duration,
    /// How long the database may take to accept a connection or answer a batch (or a read) before it
    /// counts as lost: a network that drops packets rather than closing.
    pub timeout: Duration,
    /// This node's listening address. With it, the store waits at start until no other process holds the
    /// address (an advisory lock held for the process's life), then takes what the last one left at its
    /// graceful stop ([`PgStore::handover`]).
    pub node: Option<String>,
}

impl PgOptions {
    pub fn new(url: impl Into<String>) -> PgOptions {
        PgOptions {
            url: url.into(),
            critical_buffer: 10_000,
            backlog: 100_000,
            recover_per_topic: 100,
            retention: None,
            prune_every: Duration::from_secs(3600),
            timeout: Duration::from_secs(10),
            node: None,
        }
    }
}

/// What a restarted server needs to continue its private topics, and, after a graceful stop of the node
/// at its address, its epoch and public topics.
#[derive(Debug, Default)]
pub struct Recovered {
    pub topics: Vec<RecoveredTopic>,
    /// The epoch the last process at this address left at its graceful stop.
    pub epoch: Option<String>,
    /// Its public topics' last sequences.
    pub public: Vec<PublicSequence>,
}

/// A public topic's last sequence, handed from a stopping process to the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicSequence {
    pub channel: Channel,
    pub symbol: String,
    /// A bar interval's name (`1m`), or empty.
    pub interval: String,
    pub sequence: u64,
}

/// One private topic: its last sequence and, for critical channels, its unacknowledged messages (oldest
/// first, `(sequence, frame)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredTopic {
    pub user: String,
    pub channel: Channel,
    pub sequence: u64,
    pub unacked: Vec<(u64, Bytes)>,
}

/// Figures the writer keeps, read by [`Store::stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub up: AtomicBool,
    pub written: AtomicU64,
    pub shed: AtomicU64,
    pub critical_refused: AtomicU64,
    pub write_errors: AtomicU64,
    pub backlog: AtomicU64,
}

/// See the module docs.
#[derive(Debug)]
pub struct PgStore {
    critical: mpsc::Sender<CriticalOp>,
    book: mpsc::Sender<BookOp>,
    counters: Arc<Counters>,
    url: String,
    timeout: Duration,
    /// The node's address ([`PgOptions::node`]): where the hand-over goes, if anywhere.
    node: Option<String>,
    _thread: Mutex<Option<JoinHandle<()>>>,
}

impl PgStore {
    /// Connects, migrates, recovers, and starts the writer thread. Blocks the caller (start-up only).
    pub fn open(options: PgOptions) -> Result<(PgStore, Recovered), Error> {
        let (critical, critical_rx) = mpsc::channel(options.critical_buffer.max(1));
        let (book, book_rx) = mpsc::channel(options.backlog.max(1));
        let counters = Arc::new(Counters::default());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let c = counters.clone();
        let (url, timeout, node) = (options.url.clone(), options.timeout, options.node.clone());
        let thread = std::thread::Builder::new().name("persistence".into()).spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(Error::Thread(e)));
                    return;
                }
            };
            rt.block_on(async move {
                let opened = async {
                    let mut client = connect(&options.url, options.timeout).await?;
                    migrate(&mut client).await?;
                    // The node's lock, on a connection of its own held as long as this thread runs.
                    let lock = match &options.node {
                        Some(node) => Some(take_over(&options.url, options.timeout, node).await?),
                        None => None,
                    };
                    let mut recovered = recover(&client, options.recover_per_topic).await?;
                    if let Some(node) = &options.node {
                        (recovered.epoch, recovered.public) = handed_over(&mut client, node).await?;
                    }
                    Ok::<_, Error>((client, recovered, lock))
                };
                match opened.await {
                    Ok((client, recovered, _lock)) => {
                        c.up.store(true, Ordering::Relaxed);
                        let _ = ready_tx.send(Ok(recovered));
                        writer::run(options, client, critical_rx, book_rx, c).await;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            });
        })?;
        let recovered =
            ready_rx.recv().unwrap_or_else(|_| Err(Error::Migrate("the persistence thread died".into())))?;
        Ok((PgStore { critical, book, counters, url, timeout, node, _thread: Mutex::new(Some(thread)) }, recovered))
    }

    /// Leaves `epoch` and the public topics' last sequences for the next process at this store's node, in
    /// one transaction on a connection of its own; called once, at the end of a graceful stop, after the
    /// shards drained and flushed. The next process reads them once it holds the node's lock, that is once
    /// this process has exited. `Ok(false)`: a store without a node ([`PgOptions::node`]) writes nothing.
    pub fn write_handover(&self, epoch: &str, public: &[PublicSequence]) -> Result<bool, Error> {
        let Some(node) = &self.node else { return Ok(false) };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(Error::Thread)?;
        rt.block_on(async {
            let mut client = connect(&self.url, self.timeout).await?;
            let tx = client.transaction().await?;
            tx.execute("DELETE FROM websocket_handover_sequences WHERE node = $1", &[&node]).await?;
            tx.execute(
                "INSERT INTO websocket_handover (node, epoch, written_at) VALUES ($1, $2, now())
                 ON CONFLICT (node) DO UPDATE SET epoch = EXCLUDED.epoch, written_at = EXCLUDED.written_at",
                &[&node, &epoch],
            )
            .await?;
            let channels: Vec<&str> = public.iter().map(|p| p.channel.name()).collect();
            let symbols: Vec<&str> = public.iter().map(|p| p.symbol.as_str()).collect();
            let intervals: Vec<&str> = public.iter().map(|p| p.interval.as_str()).collect();
            let sequences: Vec<i64> = public.iter().map(|p| p.sequence as i64).collect();
            tx.execute(
                "INSERT INTO websocket_handover_sequences (node, channel, symbol, bar_interval, sequence)
                 SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::text[], $5::int8[])",
                &[&node, &channels, &symbols, &intervals, &sequences],
            )
            .await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    fn book(&self, op: BookOp) {
        if self.book.try_send(op).is_err() {
            self.counters.shed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Store for PgStore {
    fn connection_opened(&self, record: ConnectionRecord) {
        self.book(BookOp::Opened(record));
    }

    fn connection_closed(&self, id: u64, at: Micros, close_code: u16, messages_in: u64, messages_out: u64) {
        self.book(BookOp::Closed { id, at, close_code, messages_in, messages_out });
    }

    fn durable(&self) -> bool {
        true
    }

    fn accepts_critical(&self) -> bool {
        self.counters.up.load(Ordering::Relaxed) && self.critical.capacity() > 0
    }

    fn critical_enqueued(&self, record: CriticalRecord) -> Option<Receipt> {
        let (tx, rx) = oneshot::channel();
        if self.critical.try_send(CriticalOp::Insert(record, tx)).is_err() {
            self.counters.critical_refused.fetch_add(1, Ordering::Relaxed);
        }
        // A refused op drops its sender: the receipt resolves to `None`.
        Some(Receipt(rx))
    }

    fn critical_acked(&self, user: &str, channel: Channel, sequence: u64, at: Micros) {
        let op = CriticalOp::Ack { user: user.to_owned(), channel, sequence, at };
        if self.critical.try_send(op).is_err() {
            // The messages stay unacknowledged in the database: redelivered after a restart, never lost.
            self.counters.critical_refused.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn private_sequenced(&self, user: &str, channel: Channel, sequence: u64) {
        self.book(BookOp::Sequenced { user: user.to_owned(), channel, sequence });
    }

    fn subscription_added(&self, record: SubscriptionRecord, at: Micros) {
        self.book(BookOp::Subscribed(record, at));
    }

    fn subscription_removed(&self, record: SubscriptionRecord) {
        self.book(BookOp::Unsubscribed(record));
    }

    fn subscriptions(&self, user: &str, client_id: &str) -> Option<Pending<Vec<SubscriptionRecord>>> {
        let (tx, rx) = oneshot::channel();
        // Refused: the sender is dropped and the read answers `None`.
        let _ = self.book.try_send(BookOp::Load { user: user.to_owned(), client_id: client_id.to_owned(), reply: tx });
        Some(Pending(rx))
    }

    fn metrics(&self, record: MetricsRecord) {
        self.book(BookOp::Metrics(record));
    }

    fn handover(&self, epoch: &str, public: &[PublicSequence]) -> Result<bool, String> {
        self.write_handover(epoch, public).map_err(|e| e.to_string())
    }

    fn stats(&self) -> StoreStats {
        let c = &self.counters;
        StoreStats {
            up: c.up.load(Ordering::Relaxed),
            written: c.written.load(Ordering::Relaxed),
            shed: c.shed.load(Ordering::Relaxed),
            critical_refused: c.critical_refused.load(Ordering::Relaxed),
            write_errors: c.write_errors.load(Ordering::Relaxed),
            backlog: c.backlog.load(Ordering::Relaxed)
                + (self.book.max_capacity() - self.book.capacity()) as u64
                + (self.critical.max_capacity() - self.critical.capacity()) as u64,
        }
    }

    fn flush(&self) {
        let (tx, rx) = std::sync::mpsc::channel();
        if self.book.try_send(BookOp::Flush(tx)).is_ok() {
            let _ = rx.recv_timeout(FLUSH_TIMEOUT);
        }
    }
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// Connects and drives the connection on the current runtime.
pub(crate) async fn connect(url: &str, timeout: Duration) -> Result<tokio_postgres::Client, Error> {
    let failed = |reason: String| Error::Connect { url: redact(url), reason };
    let (client, connection) = tokio::time::timeout(timeout, tokio_postgres::connect(url, tokio_postgres::NoTls))
        .await
        .map_err(|_| failed(format!("no answer within {:.1} s", timeout.as_secs_f64())))?
        .map_err(|e| failed(error_text(&e)))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %error_text(&e), "database connection lost");
        }
    });
    Ok(client)
}

/// An error with its cause (tokio-postgres puts the useful part in the source).
pub(crate) fn error_text(e: &tokio_postgres::Error) -> String {
    match std::error::Error::source(e) {
        Some(source) => format!("{e}: {source}"),
        None => e.to_string(),
    }
}

/// Names the advisory lock that serializes migrations of servers starting together on one database.
const MIGRATION_LOCK: i64 = 0x7469_636b_7769_7265; // "tickwire"

/// An error and its sources, for messages ("db error" alone says little).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Applies the embedded migrations not applied yet, one server at a time.
pub(crate) async fn migrate(client: &mut tokio_postgres::Client) -> Result<(), Error> {
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await?;
    let report = embedded::migrations::runner().run_async(client).await.map_err(|e| Error::Migrate(chain(&e)));
    client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await?;
    for m in report?.applied_migrations() {
        tracing::info!(migration = %m, "applied database migration");
    }
    Ok(())
}

/// Takes the lock of `node` (its listening address) on a connection of its own, waiting as long as another
/// process holds it: the process this one replaces, until it has drained and exited. Returns the
/// connection, which holds the lock until it closes.
async fn take_over(url: &str, timeout: Duration, node: &str) -> Result<tokio_postgres::Client, Error> {
    const KEY: &str = "SELECT hashtextextended('tickwire node ' || $1, 0)";
    let client = connect(url, timeout).await?;
    let key: i64 = client.query_one(KEY, &[&node]).await?.get(0);
    let free: bool = client.query_one("SELECT pg_try_advisory_lock($1)", &[&key]).await?.get(0);
    if !free {
        tracing::warn!(
            node,
            "another process serves {node} on this database: waiting for it to stop (SIGTERM it; it drains, hands over and exits)"
        );
        client.execute("SELECT pg_advisory_lock($1)", &[&key]).await?;
        tracing::info!(node, "the previous process has exited: taking over");
    }
    Ok(client)
}

/// What the last process at `node` left at its graceful stop (nothing after a crash), read and deleted.
async fn handed_over(
    client: &mut tokio_postgres::Client,
    node: &str,
) -> Result<(Option<String>, Vec<PublicSequence>), Error> {
    let tx = client.transaction().await?;
    let epoch: Option<String> = tx
        .query_opt("DELETE FROM websocket_handover WHERE node = $1 RETURNING epoch", &[&node])
        .await?
        .map(|r| r.get(0));
    let rows = tx
        .query(
            "DELETE FROM websocket_handover_sequences WHERE node = $1 RETURNING channel, symbol, bar_interval, sequence",
            &[&node],
        )
        .await?;
    tx.commit().await?;
    let public = rows
        .iter()
        .filter_map(|r| {
            let (name, symbol, interval, sequence): (String, String, String, i64) =
                (r.get(0), r.get(1), r.get(2), r.get(3));
            Some(PublicSequence { channel: Channel::from_name(&name)?, symbol, interval, sequence: sequence as u64 })
        })
        .collect();
    // Sequences without their epoch mean nothing: a half-written hand-over is none.
    Ok(if epoch.is_some() { (epoch, public) } else { (None, Vec::new()) })
}

/// Loads every private topic's last sequence and the last `per_topic` unacknowledged critical messages.
async fn recover(client: &tokio_postgres::Client, per_topic: usize) -> Result<Recovered, Error> {
    type Topics = std::collections::BTreeMap<(String, Channel), RecoveredTopic>;
    fn entry<'a>(out: &'a mut Topics, user: String, name: &str) -> Option<&'a mut RecoveredTopic> {
        let channel = Channel::from_name(name)?;
        Some(out.entry((user.clone(), channel)).or_insert_with(|| RecoveredTopic {
            user,
            channel,
            sequence: 0,
            unacked: Vec::new(),
        }))
    }
    let mut out = Topics::new();
    for row in client.query("SELECT user_id, channel, sequence FROM websocket_topic_sequences", &[]).await? {
        let (user, name, seq): (String, String, i64) = (row.get(0), row.get(1), row.get(2));
        if let Some(t) = entry(&mut out, user, &name) {
            t.sequence = t.sequence.max(seq as u64);
        }
    }
    let unacked = client
        .query(
            "SELECT user_id, channel, sequence, frame FROM (
                 SELECT user_id, channel, sequence, frame,
                        row_number() OVER (PARTITION BY user_id, channel ORDER BY sequence DESC) AS n
                 FROM websocket_critical_messages WHERE acked_at IS NULL) t
             WHERE n <= $1 ORDER BY user_id, channel, sequence",
            &[&(per_topic as i64)],
        )
        .await?;
    for row in unacked {
        let (user, name, seq, frame): (String, String, i64, Vec<u8>) = (row.get(0), row.get(1), row.get(2), row.get(3));
        if let Some(t) = entry(&mut out, user, &name) {
            t.sequence = t.sequence.max(seq as u64);
            t.unacked.push((seq as u64, Bytes::from(frame)));
        }
    }
    let topics = out.into_values().collect();
    Ok(Recovered { topics, ..Recovered::default() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_in_messages_hide_the_password() {
        assert_eq!(redact("postgres://me:s3cret@db:5432/x"), "postgres://me@db:5432/x");
        assert_eq!(redact("postgres://me@db/x"), "postgres://me@db/x");
        assert_eq!(redact("host=db user=me"), "host=db user=me");
    }
}
