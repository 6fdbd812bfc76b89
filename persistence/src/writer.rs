//! The writer thread's loop: takes what the shards queued, in batches, and writes each batch in one
//! transaction per kind with one statement per table (`UNNEST` of arrays, so a batch of any size is one
//! round trip). Critical messages go first and their receipts resolve only after their commit.
//!
//! When the database is lost, the batch in hand is kept and retried with backoff (100 ms doubling to 5 s);
//! meanwhile the channels fill and the shards' `try_send`s fail: bookkeeping is shed and counted, critical
//! publishes are refused (503). Nothing here ever makes a shard wait.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tickwire_core::time::Micros;
use tickwire_core::Channel;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Client;

use crate::pg::{connect, error_text, Counters, PgOptions};
use crate::{ConnectionRecord, CriticalRecord, MetricsRecord, SubscriptionRecord};

/// Critical work: messages (answered once committed) and acks.
#[derive(Debug)]
pub(crate) enum CriticalOp {
    Insert(CriticalRecord, oneshot::Sender<u64>),
    Ack { user: String, channel: Channel, sequence: u64, at: Micros },
}

/// Bookkeeping, reads and flushes, in the order the shards queued them.
#[derive(Debug)]
pub(crate) enum BookOp {
    Opened(ConnectionRecord),
    Closed { id: u64, at: Micros, close_code: u16, messages_in: u64, messages_out: u64 },
    Sequenced { user: String, channel: Channel, sequence: u64 },
    Subscribed(SubscriptionRecord, Micros),
    Unsubscribed(SubscriptionRecord),
    Metrics(MetricsRecord),
    Load { user: String, client_id: String, reply: oneshot::Sender<Vec<SubscriptionRecord>> },
    Flush(std::sync::mpsc::Sender<()>),
}

/// Largest batch taken from each channel at once.
const BATCH: usize = 20_000;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Rows the retention deletes per table and statement.
const PRUNE_CHUNK: u64 = 10_000;
/// Times a critical batch refused by the database (not lost with the connection) is tried.
const CRITICAL_TRIES: u32 = 3;
/// How often an idle writer checks that the database is still there.
const PROBE: Duration = Duration::from_secs(1);

/// A connection's row, its end filled in if it ended within the batch.
#[derive(Debug)]
struct ConnRow {
    record: ConnectionRecord,
    end: Option<(Micros, u16, u64, u64)>,
}

/// Bookkeeping waiting to be written, merged: a connection opened and closed within one batch is one row,
/// a topic's sequences one upsert, a subscription added then removed nothing.
#[derive(Debug, Default)]
struct Book {
    opened: Vec<ConnRow>,
    opened_at: HashMap<u64, usize>,
    closed: Vec<(u64, Micros, u16, u64, u64)>,
    sequences: HashMap<(Channel, String), u64>,
    /// Subscription key -> `Some((throttle, at))` to upsert or `None` to delete.
    subs: HashMap<SubKey, Option<(u32, Micros)>>,
    metrics: Vec<MetricsRecord>,
    reads: Vec<(String, String, oneshot::Sender<Vec<SubscriptionRecord>>)>,
    flushes: Vec<std::sync::mpsc::Sender<()>>,
    len: usize,
}

impl Book {
    fn add(&mut self, op: BookOp) {
        self.len += 1;
        match op {
            BookOp::Opened(mut record) => {
                clean(&mut record.client_id);
                if let Some(u) = &mut record.user {
                    clean(u);
                }
                self.opened_at.insert(record.id, self.opened.len());
                self.opened.push(ConnRow { record, end: None });
            }
            BookOp::Closed { id, at, close_code, messages_in, messages_out } => match self.opened_at.get(&id) {
                Some(&i) => self.opened[i].end = Some((at, close_code, messages_in, messages_out)),
                None => self.closed.push((id, at, close_code, messages_in, messages_out)),
            },
            BookOp::Sequenced { mut user, channel, sequence } => {
                clean(&mut user);
                let s = self.sequences.entry((channel, user)).or_default();
                *s = (*s).max(sequence);
            }
            BookOp::Subscribed(r, at) => {
                self.subs.insert(sub_key(r.clone()), Some((r.throttle_ms, at)));
            }
            BookOp::Unsubscribed(r) => {
                self.subs.insert(sub_key(r), None);
            }
            BookOp::Metrics(m) => self.metrics.push(m),
            BookOp::Load { mut user, mut client_id, reply } => {
                clean(&mut user);
                clean(&mut client_id);
                self.reads.push((user, client_id, reply));
            }
            BookOp::Flush(tx) => self.flushes.push(tx),
        }
    }

    fn writes(&self) -> bool {
        !(self.opened.is_empty()
            && self.closed.is_empty()
            && self.sequences.is_empty()
            && self.subs.is_empty()
            && self.metrics.is_empty())
    }
}

/// A subscription's identity: user, client id, channel, symbol, interval.
type SubKey = (String, String, Channel, String, String);

fn sub_key(mut r: SubscriptionRecord) -> SubKey {
    for s in [&mut r.user, &mut r.client_id, &mut r.symbol, &mut r.interval] {
        clean(s);
    }
    (r.user, r.client_id, r.channel, r.symbol, r.interval)
}

/// PostgreSQL text cannot hold NUL: one from a peer (a client id, a user id) would fail its whole batch.
fn clean(s: &mut String) {
    if s.contains('\0') {
        *s = s.replace('\0', "\u{fffd}");
    }
}

/// Critical work waiting to be written.
#[derive(Debug, Default)]
struct Critical {
    inserts: Vec<(CriticalRecord, oneshot::Sender<u64>)>,
    acks: Vec<(String, Channel, u64, Micros)>,
}

impl Critical {
    fn add(&mut self, op: CriticalOp) {
        match op {
            CriticalOp::Insert(mut r, tx) => {
                clean(&mut r.user);
                self.inserts.push((r, tx));
            }
            CriticalOp::Ack { mut user, channel, sequence, at } => {
                clean(&mut user);
                self.acks.push((user, channel, sequence, at));
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.inserts.is_empty() && self.acks.is_empty()
    }

    fn len(&self) -> usize {
        self.inserts.len() + self.acks.len()
    }
}

/// Runs until both channels are closed and everything taken is written (or given up at the end).
pub(crate) async fn run(
    options: PgOptions,
    client: Client,
    mut critical_rx: mpsc::Receiver<CriticalOp>,
    mut book_rx: mpsc::Receiver<BookOp>,
    counters: Arc<Counters>,
) {
    // Names this run in websocket_connections and websocket_metrics: connection ids are unique per run.
    let run_id = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64);
    let mut client = Some(client);
    let mut critical = Critical::default();
    let mut book = Book::default();
    let mut backoff = BACKOFF_MIN;
    let mut open = true;
    // Consecutive refusals of the critical batch by a database that answers.
    let mut refused = 0;
    // When the retention's next deletes are due (`None`: now).
    let mut prune_at: Option<std::time::Instant> = None;
    loop {
        // Take what is there, or wait for something (or for the next probe).
        if critical.is_empty() && book.len == 0 && open {
            tokio::select! {
                biased;
                op = critical_rx.recv() => match op { Some(op) => critical.add(op), None => open = false },
                op = book_rx.recv() => match op { Some(op) => book.add(op), None => open = false },
                _ = tokio::time::sleep(PROBE) => {}
            }
        }
        take(&mut critical, &mut critical_rx, options.critical_buffer);
        while book.len < BATCH.min(options.backlog.max(1)) {
            match book_rx.try_recv() {
                Ok(op) => book.add(op),
                Err(_) => break,
            }
        }
        // Again: a flush taken above then follows every critical op queued before it.
        take(&mut critical, &mut critical_rx, options.critical_buffer);
        counters.backlog.store((critical.len() + book.len) as u64, Ordering::Relaxed);
        if !open && critical.is_empty() && book.len == 0 {
            return; // the store is gone and everything it gave is written
        }

        if client.as_ref().is_none_or(Client::is_closed) {
            client = None;
            match connect(&options.url, options.timeout).await {
                Ok(c) => {
                    tracing::info!("database connection restored");
                    client = Some(c);
                }
                Err(e) => {
                    if counters.up.swap(false, Ordering::Relaxed) {
                        tracing::warn!(error = %e, "database unreachable: retrying with backoff");
                    }
                    book.reads.clear(); // dropped senders: those reads answer `None`
                    book.flushes.clear();
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            }
        }
        let Some(c) = client.as_mut() else { continue };
        // Critical first, answered as soon as it is committed.
        let mut failure = None;
        if !critical.is_empty() {
            match timed(options.timeout, write_critical(c, &critical)).await {
                Ok(rows) => {
                    counters.written.fetch_add(rows, Ordering::Relaxed);
                    for (record, tx) in critical.inserts.drain(..) {
                        let _ = tx.send(record.sequence);
                    }
                    critical.acks.clear();
                    refused = 0;
                }
                Err(e) => failure = Some((e, true)),
            }
        }
        if failure.is_none() && book.writes() {
            match timed(options.timeout, write_book(c, run_id, &book)).await {
                Ok(rows) => {
                    counters.written.fetch_add(rows, Ordering::Relaxed);
                }
                Err(e) => failure = Some((e, false)),
            }
        }
        let Some((e, in_critical)) = failure else {
            if !counters.up.swap(true, Ordering::Relaxed) {
                tracing::info!("database writes resumed");
            }
            backoff = BACKOFF_MIN;
            counters.backlog.store(0, Ordering::Relaxed);
            if let Some(keep) = options.retention {
                if prune_at.is_none_or(|at| std::time::Instant::now() >= at) {
                    // One chunk per table at a time, so that writes never wait long behind the deletes;
                    // more to delete: the next chunk a second later.
                    let (rows, more) = match timed(options.timeout, prune(c, keep)).await {
                        Ok(done) => done,
                        Err(e) => {
                            tracing::warn!(error = %failure_text(&e), "cannot delete records past the retention");
                            (0, false)
                        }
                    };
                    if rows > 0 {
                        tracing::info!(rows, "deleted records past the retention");
                    }
                    let next = if more { PROBE } else { options.prune_every };
                    prune_at = Some(std::time::Instant::now() + next);
                }
            }
            let reads = std::mem::take(&mut book.reads);
            let flushes = std::mem::take(&mut book.flushes);
            book = Book::default();
            for (user, client_id, reply) in reads {
                match timed(options.timeout, load(c, &user, &client_id)).await {
                    Ok(subs) => {
                        let _ = reply.send(subs);
                    }
                    Err(e) => tracing::warn!(error = %failure_text(&e), "cannot load subscriptions"),
                }
            }
            for f in flushes {
                let _ = f.send(());
            }
            if c.is_closed() {
                client = None;
            }
            continue;
        };
        counters.write_errors.fetch_add(1, Ordering::Relaxed);
        if counters.up.swap(false, Ordering::Relaxed) {
            tracing::warn!(error = %failure_text(&e), "database write failed: retrying with backoff");
        }
        if e.is_none() || c.is_closed() {
            // Lost, or silent (a network that drops packets): reconnect. Every write is idempotent, so a
            // batch that did commit before the silence may be written again.
            client = None;
        } else if in_critical {
            // The database answered but refused the critical batch. Retried a few times (a passing
            // failure), then refused for good so that it cannot block the queue: its publishers get 503.
            refused += 1;
            if refused >= CRITICAL_TRIES {
                tracing::error!(error = %failure_text(&e), messages = critical.inserts.len(), "database refuses critical messages: their publishes get 503");
                counters.critical_refused.fetch_add(critical.len() as u64, Ordering::Relaxed);
                critical = Critical::default(); // dropped senders: the receipts resolve to false
                refused = 0;
            }
        } else {
            // The database refused the bookkeeping batch: drop it so that one bad row cannot block the
            // queue forever.
            tracing::warn!(error = %failure_text(&e), records = book.len, "database refused bookkeeping: shed");
            counters.shed.fetch_add(book.len as u64, Ordering::Relaxed);
            book = Book::default();
        }
        book.reads.clear();
        book.flushes.clear();
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// `f`, given up after `limit`: `Err(None)` then.
async fn timed<T>(
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, Option<tokio_postgres::Error>> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r.map_err(Some),
        Err(_) => Err(None),
    }
}

fn failure_text(e: &Option<tokio_postgres::Error>) -> String {
    e.as_ref().map_or_else(|| "no answer from the database in time".to_owned(), error_text)
}

/// Moves what waits in the critical channel into the batch, up to its bound.
fn take(critical: &mut Critical, rx: &mut mpsc::Receiver<CriticalOp>, bound: usize) {
    while critical.len() < BATCH.min(bound.max(1)) {
        match rx.try_recv() {
            Ok(op) => critical.add(op),
            Err(_) => break,
        }
    }
}

/// Microseconds to `timestamptz` in SQL.
const TS: &str = "to_timestamp(($X)::float8 / 1e6)";

fn ts(param: &str) -> String {
    TS.replace("$X", param)
}

async fn write_critical(c: &mut Client, critical: &Critical) -> Result<u64, tokio_postgres::Error> {
    let tx = c.transaction().await?;
    let mut rows = 0;
    if !critical.inserts.is_empty() {
        let mut users = Vec::with_capacity(critical.inserts.len());
        let mut channels = Vec::with_capacity(critical.inserts.len());
        let mut seqs = Vec::with_capacity(critical.inserts.len());
        let mut frames: Vec<&[u8]> = Vec::with_capacity(critical.inserts.len());
        let mut ats = Vec::with_capacity(critical.inserts.len());
        for (r, _) in &critical.inserts {
            users.push(r.user.as_str());
            channels.push(r.channel.name());
            seqs.push(r.sequence as i64);
            frames.push(&r.frame);
            ats.push(r.created_at);
        }
        rows += tx
            .execute(
                &format!(
                    "INSERT INTO websocket_critical_messages (user_id, channel, sequence, frame, created_at)
                     SELECT u, c, s, f, {} FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::bytea[], $5::int8[])
                         AS x(u, c, s, f, a)
                     ON CONFLICT (user_id, channel, sequence) DO NOTHING",
                    ts("a")
                ),
                &[&users, &channels, &seqs, &frames, &ats],
            )
            .await?;
        let mut last: HashMap<(&str, &str), i64> = HashMap::new();
        for (u, (c, s)) in users.iter().zip(channels.iter().zip(&seqs)) {
            let e = last.entry((u, c)).or_default();
            *e = (*e).max(*s);
        }
        upsert_sequences(&tx, last.into_iter().map(|((u, c), s)| (c, u, s))).await?;
    }
    if !critical.acks.is_empty() {
        let users: Vec<&str> = critical.acks.iter().map(|a| a.0.as_str()).collect();
        let channels: Vec<&str> = critical.acks.iter().map(|a| a.1.name()).collect();
        let seqs: Vec<i64> = critical.acks.iter().map(|a| a.2 as i64).collect();
        let ats: Vec<i64> = critical.acks.iter().map(|a| a.3).collect();
        rows += tx
            .execute(
                &format!(
                    "UPDATE websocket_critical_messages m SET acked_at = {}
                     FROM (SELECT u, c, max(s) AS s, max(a) AS a
                           FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int8[]) AS x(u, c, s, a)
                           GROUP BY u, c) x
                     WHERE m.user_id = x.u AND m.channel = x.c AND m.sequence <= x.s AND m.acked_at IS NULL",
                    ts("x.a")
                ),
                &[&users, &channels, &seqs, &ats],
            )
            .await?;
    }
    tx.commit().await?;
    Ok(rows)
}

async fn upsert_sequences<'a>(
    tx: &tokio_postgres::Transaction<'_>,
    rows: impl Iterator<Item = (&'a str, &'a str, i64)>,
) -> Result<u64, tokio_postgres::Error> {
    let (mut channels, mut users, mut seqs) = (Vec::new(), Vec::new(), Vec::new());
    for (c, u, s) in rows {
        channels.push(c);
        users.push(u);
        seqs.push(s);
    }
    if channels.is_empty() {
        return Ok(0);
    }
    tx.execute(
        "INSERT INTO websocket_topic_sequences (channel, user_id, sequence)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[])
         ON CONFLICT (channel, user_id)
         DO UPDATE SET sequence = GREATEST(websocket_topic_sequences.sequence, EXCLUDED.sequence)",
        &[&channels, &users, &seqs],
    )
    .await
}

async fn write_book(c: &mut Client, run_id: i64, book: &Book) -> Result<u64, tokio_postgres::Error> {
    let tx = c.transaction().await?;
    let mut rows = 0;
    if !book.opened.is_empty() {
        let n = book.opened.len();
        let (mut ids, mut users, mut clients, mut ips, mut shards, mut at) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut ended, mut codes, mut ins, mut outs) =
            (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        for row in &book.opened {
            let r = &row.record;
            ids.push(r.id as i64);
            users.push(r.user.as_deref());
            clients.push(r.client_id.as_str());
            ips.push(r.ip.map_or_else(String::new, |ip| ip.to_string()));
            shards.push(r.shard as i32);
            at.push(r.connected_at);
            ended.push(row.end.map(|e| e.0));
            codes.push(row.end.map(|e| e.1 as i32));
            ins.push(row.end.map_or(0, |e| e.2 as i64));
            outs.push(row.end.map_or(0, |e| e.3 as i64));
        }
        rows += tx
            .execute(
                &format!(
                    "INSERT INTO websocket_connections (run_id, id, user_id, client_id, ip, shard, connected_at,
                         disconnected_at, close_code, messages_in, messages_out)
                     SELECT $1, id, u, cl, ip, sh, {}, {}, code, mi, mo
                     FROM UNNEST($2::int8[], $3::text[], $4::text[], $5::text[], $6::int4[], $7::int8[], $8::int8[],
                                 $9::int4[], $10::int8[], $11::int8[]) AS x(id, u, cl, ip, sh, a, d, code, mi, mo)
                     ON CONFLICT (run_id, id) DO NOTHING",
                    ts("a"),
                    ts("d")
                ),
                &[&run_id, &ids, &users, &clients, &ips, &shards, &at, &ended, &codes, &ins, &outs],
            )
            .await?;
    }
    if !book.closed.is_empty() {
        let ids: Vec<i64> = book.closed.iter().map(|c| c.0 as i64).collect();
        let at: Vec<i64> = book.closed.iter().map(|c| c.1).collect();
        let codes: Vec<i32> = book.closed.iter().map(|c| c.2 as i32).collect();
        let ins: Vec<i64> = book.closed.iter().map(|c| c.3 as i64).collect();
        let outs: Vec<i64> = book.closed.iter().map(|c| c.4 as i64).collect();
        rows += tx
            .execute(
                &format!(
                    "UPDATE websocket_connections c
                     SET disconnected_at = {}, close_code = x.code, messages_in = x.mi, messages_out = x.mo
                     FROM UNNEST($2::int8[], $3::int8[], $4::int4[], $5::int8[], $6::int8[]) AS x(id, d, code, mi, mo)
                     WHERE c.run_id = $1 AND c.id = x.id",
                    ts("x.d")
                ),
                &[&run_id, &ids, &at, &codes, &ins, &outs],
            )
            .await?;
    }
    rows += upsert_sequences(&tx, book.sequences.iter().map(|((c, u), s)| (c.name(), u.as_str(), *s as i64))).await?;
    if !book.subs.is_empty() {
        let (mut up, mut down) = (Vec::new(), Vec::new());
        for (k, v) in &book.subs {
            match v {
                Some(v) => up.push((k, v)),
                None => down.push(k),
            }
        }
        if !up.is_empty() {
            let users: Vec<&str> = up.iter().map(|(k, _)| k.0.as_str()).collect();
            let clients: Vec<&str> = up.iter().map(|(k, _)| k.1.as_str()).collect();
            let channels: Vec<&str> = up.iter().map(|(k, _)| k.2.name()).collect();
            let symbols: Vec<&str> = up.iter().map(|(k, _)| k.3.as_str()).collect();
            let intervals: Vec<&str> = up.iter().map(|(k, _)| k.4.as_str()).collect();
            let throttles: Vec<i32> = up.iter().map(|(_, v)| v.0 as i32).collect();
            let ats: Vec<i64> = up.iter().map(|(_, v)| v.1).collect();
            rows += tx
                .execute(
                    &format!(
                        "INSERT INTO websocket_subscriptions
                             (user_id, client_id, channel, symbol, bar_interval, throttle_ms, subscribed_at)
                         SELECT u, cl, ch, sy, iv, th, {} FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[],
                             $5::text[], $6::int4[], $7::int8[]) AS x(u, cl, ch, sy, iv, th, a)
                         ON CONFLICT (user_id, client_id, channel, symbol, bar_interval)
                         DO UPDATE SET throttle_ms = EXCLUDED.throttle_ms, subscribed_at = EXCLUDED.subscribed_at",
                        ts("a")
                    ),
                    &[&users, &clients, &channels, &symbols, &intervals, &throttles, &ats],
                )
                .await?;
        }
        if !down.is_empty() {
            let users: Vec<&str> = down.iter().map(|k| k.0.as_str()).collect();
            let clients: Vec<&str> = down.iter().map(|k| k.1.as_str()).collect();
            let channels: Vec<&str> = down.iter().map(|k| k.2.name()).collect();
            let symbols: Vec<&str> = down.iter().map(|k| k.3.as_str()).collect();
            let intervals: Vec<&str> = down.iter().map(|k| k.4.as_str()).collect();
            rows += tx
                .execute(
                    "DELETE FROM websocket_subscriptions s
                     USING UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) AS x(u, cl, ch, sy, iv)
                     WHERE s.user_id = x.u AND s.client_id = x.cl AND s.channel = x.ch AND s.symbol = x.sy
                       AND s.bar_interval = x.iv",
                    &[&users, &clients, &channels, &symbols, &intervals],
                )
                .await?;
        }
    }
    if !book.metrics.is_empty() {
        let m = &book.metrics;
        let at: Vec<i64> = m.iter().map(|r| r.at).collect();
        let shard: Vec<i32> = m.iter().map(|r| r.shard as i32).collect();
        let interval: Vec<f64> = m.iter().map(|r| r.interval_s).collect();
        let conns: Vec<i64> = m.iter().map(|r| r.connections as i64).collect();
        let opened: Vec<i64> = m.iter().map(|r| r.connections_opened as i64).collect();
        let subs: Vec<i64> = m.iter().map(|r| r.subscriptions as i64).collect();
        let msgs: Vec<f64> = m.iter().map(|r| r.messages_in_per_s).collect();
        let ingested: Vec<f64> = m.iter().map(|r| r.ingested_per_s).collect();
        let deliveries: Vec<f64> = m.iter().map(|r| r.deliveries_per_s).collect();
        let bytes: Vec<f64> = m.iter().map(|r| r.bytes_per_s).collect();
        let p50: Vec<Option<f64>> = m.iter().map(|r| r.latency_p50_ms).collect();
        let p99: Vec<Option<f64>> = m.iter().map(|r| r.latency_p99_ms).collect();
        rows += tx
            .execute(
                &format!(
                    "INSERT INTO websocket_metrics (recorded_at, run_id, shard, interval_s, connections,
                         connections_opened, subscriptions, messages_in_per_s, ingested_per_s, deliveries_per_s,
                         bytes_per_s, latency_p50_ms, latency_p99_ms)
                     SELECT {}, $1, sh, iv, co, op, su, mi, ig, de, by, p50, p99
                     FROM UNNEST($2::int8[], $3::int4[], $4::float8[], $5::int8[], $6::int8[], $7::int8[],
                                 $8::float8[], $9::float8[], $10::float8[], $11::float8[], $12::float8[],
                                 $13::float8[]) AS x(a, sh, iv, co, op, su, mi, ig, de, by, p50, p99)
                     ON CONFLICT DO NOTHING",
                    ts("a")
                ),
                &[
                    &run_id,
                    &at,
                    &shard,
                    &interval,
                    &conns,
                    &opened,
                    &subs,
                    &msgs,
                    &ingested,
                    &deliveries,
                    &bytes,
                    &p50,
                    &p99,
                ],
            )
            .await?;
    }
    tx.commit().await?;
    Ok(rows)
}

/// Deletes what is older than `keep`: ended connections, metrics rows, acknowledged critical messages and
/// subscriptions not renewed since. Unacknowledged messages and open connections stay.
/// At most [`PRUNE_CHUNK`] rows per table; answers the rows deleted and whether a table has more.
async fn prune(c: &Client, keep: Duration) -> Result<(u64, bool), tokio_postgres::Error> {
    let secs = keep.as_secs_f64();
    let (mut rows, mut more) = (0, false);
    for (table, past) in [
        // By connected_at (indexed): an ended connection that began before the limit.
        ("websocket_connections", "disconnected_at IS NOT NULL AND connected_at"),
        ("websocket_metrics", "recorded_at"),
        ("websocket_critical_messages", "acked_at"),
        ("websocket_subscriptions", "subscribed_at"),
    ] {
        let sql = format!(
            "DELETE FROM {table} WHERE ctid IN (SELECT ctid FROM {table}
                 WHERE {past} < now() - make_interval(secs => $1) LIMIT {PRUNE_CHUNK})"
        );
        let n = c.execute(&sql, &[&secs]).await?;
        rows += n;
        more |= n == PRUNE_CHUNK;
    }
    Ok((rows, more))
}

/// The subscriptions kept for `user` and `client_id`.
async fn load(c: &Client, user: &str, client_id: &str) -> Result<Vec<SubscriptionRecord>, tokio_postgres::Error> {
    let rows = c
        .query(
            "SELECT channel, symbol, bar_interval, throttle_ms FROM websocket_subscriptions
             WHERE user_id = $1 AND client_id = $2 ORDER BY subscribed_at, channel, symbol",
            &[&user, &client_id],
        )
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            let channel = Channel::from_name(row.get(0))?;
            Some(SubscriptionRecord {
                user: user.to_owned(),
                client_id: client_id.to_owned(),
                channel,
                symbol: row.get(1),
                interval: row.get(2),
                throttle_ms: row.get::<_, i32>(3).max(0) as u32,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opened(id: u64) -> BookOp {
        BookOp::Opened(ConnectionRecord {
            id,
            user: Some("u\0".into()),
            client_id: "c".into(),
            ip: "::1".parse().ok(),
            shard: 0,
            connected_at: 1,
        })
    }

    fn sub(symbol: &str, throttle_ms: u32) -> SubscriptionRecord {
        SubscriptionRecord {
            user: "u".into(),
            client_id: "c".into(),
            channel: Channel::Quotes,
            symbol: symbol.into(),
            interval: String::new(),
            throttle_ms,
        }
    }

    #[test]
    fn a_batch_merges_what_it_can() {
        let mut b = Book::default();
        b.add(opened(1));
        b.add(BookOp::Closed { id: 1, at: 2, close_code: 1000, messages_in: 3, messages_out: 4 });
        b.add(BookOp::Closed { id: 9, at: 2, close_code: 1001, messages_in: 0, messages_out: 0 });
        assert_eq!(b.opened.len(), 1, "opened and closed within the batch: one row");
        assert_eq!(b.opened[0].end, Some((2, 1000, 3, 4)));
        assert_eq!(b.opened[0].record.user.as_deref(), Some("u\u{fffd}"), "NUL replaced");
        assert_eq!(b.closed.len(), 1, "opened in an earlier batch: an update");
        for s in [4, 9, 7] {
            b.add(BookOp::Sequenced { user: "u".into(), channel: Channel::Portfolio, sequence: s });
        }
        assert_eq!(b.sequences.get(&(Channel::Portfolio, "u".to_owned())), Some(&9), "one upsert, the highest");
        b.add(BookOp::Subscribed(sub("AAPL", 0), 1));
        b.add(BookOp::Subscribed(sub("AAPL", 50), 2));
        b.add(BookOp::Subscribed(sub("MSFT", 0), 1));
        b.add(BookOp::Unsubscribed(sub("MSFT", 0)));
        assert_eq!(b.subs.len(), 2);
        assert_eq!(b.subs[&sub_key(sub("AAPL", 0))], Some((50, 2)), "the last subscribe wins");
        assert_eq!(b.subs[&sub_key(sub("MSFT", 0))], None, "added then removed: a delete");
        assert!(b.writes());
        assert_eq!(b.len, 10);
        assert!(!Book::default().writes());
    }
}
