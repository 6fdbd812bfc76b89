//! Load on the PostgreSQL store's writer, as the shards would give it: connection opens and closes and
//! critical messages (with acks) at fixed rates, paced in 10 ms ticks, for a number of seconds. Prints
//! whether the writer kept up (nothing shed or refused, backlog drained), the commit latency of the
//! critical messages, and what reached the tables. It makes a fresh database through DATABASE_URL (default
//! postgres://postgres@127.0.0.1:5432/test) and drops it after.
//!
//! ```text
//! cargo run --release -p tickwire-persistence --example writer_load -- [connects/s] [critical/s] [seconds]
//! ```
#![allow(clippy::print_stdout)]

#[path = "../tests/support/testdb.rs"]
mod testdb;

use std::time::{Duration, Instant};

use bytes::Bytes;
use tickwire_core::Channel;
use tickwire_persistence::{ConnectionRecord, CriticalRecord, PgOptions, PgStore, Receipt, Store};

const TICK: Duration = Duration::from_millis(10);

fn main() {
    let arg = |i: usize, default: u64| std::env::args().nth(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (connects, critical, seconds) = (arg(1, 10_000), arg(2, 1_000), arg(3, 10));
    let Some(db) = testdb::TestDb::create() else { std::process::exit(1) };
    let (store, _) = PgStore::open(PgOptions::new(&db.url)).expect("open the store");
    println!("writer load: {connects} connects/s (each closed a second later), {critical} critical messages/s (each acked), {seconds} s");

    let now_us = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64;
    let frame = Bytes::from_static(br#"{"type":"order","channel":"orders","sequence":1,"timestamp":"2026-11-23T12:00:00.000000Z","data":{"order_id":"o-1","symbol":"AAPL","side":"buy","type":"limit","status":"new","qty":100,"filled_qty":0,"avg_price":null,"limit_price":185.5}}"#);
    let ticks = seconds * 1000 / TICK.as_millis() as u64;
    let per_tick = |rate: u64, t: u64| rate * (t + 1) / 100 - rate * t / 100;
    let (mut next_conn, mut closed, mut seq) = (0u64, 0u64, 0u64);
    // Receipts are awaited as they resolve, on a thread of their own, for each message's commit latency.
    let (receipts, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Receipt)>();
    let waiter = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let mut waits = Vec::new();
            while let Some((at, r)) = rx.recv().await {
                waits.push(tokio::spawn(async move { r.await.map(|_| at.elapsed()) }));
            }
            let mut out = Vec::with_capacity(waits.len());
            for w in waits {
                out.push(w.await.ok().flatten());
            }
            out
        })
    });
    let start = Instant::now();
    let mut max_backlog = 0;
    for t in 0..ticks {
        for _ in 0..per_tick(connects, t) {
            next_conn += 1;
            store.connection_opened(ConnectionRecord {
                id: next_conn,
                user: Some(format!("u-{}", next_conn % 5000)),
                client_id: format!("cl-{next_conn}"),
                ip: "127.0.0.1".parse().ok(),
                shard: (next_conn % 2) as usize,
                connected_at: now_us(),
            });
        }
        // Close what opened a second ago.
        while closed + connects < next_conn {
            closed += 1;
            store.connection_closed(closed, now_us(), 1000, 5, 50);
        }
        for _ in 0..per_tick(critical, t) {
            seq += 1;
            let user = format!("u-{}", seq % 100);
            let sequence = seq / 100 + 1;
            let r = store.critical_enqueued(CriticalRecord {
                user: user.clone(),
                channel: Channel::Orders,
                sequence,
                frame: frame.clone(),
                created_at: now_us(),
            });
            let _ = receipts.send((Instant::now(), r.expect("a receipt")));
            if sequence > 1 {
                store.critical_acked(&user, Channel::Orders, sequence - 1, now_us());
            }
        }
        max_backlog = max_backlog.max(store.stats().backlog);
        let due = start + TICK * (t as u32 + 1);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let offered = start.elapsed();
    drop(receipts);
    let results = waiter.join().unwrap();
    let failed = results.iter().filter(|r| r.is_none()).count();
    let mut latencies: Vec<Duration> = results.into_iter().flatten().collect();
    store.flush();
    let drained = start.elapsed();
    let stats = store.stats();
    latencies.sort();
    let q = |p: f64| latencies.get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)));
    let c = db.count("websocket_connections");
    let closed_rows = db.count("websocket_connections WHERE close_code = 1000");
    let m = db.count("websocket_critical_messages");
    let acked = db.count("websocket_critical_messages WHERE acked_at IS NOT NULL");
    println!(
        "offered in {:.2} s; everything written {:.2} s after the start",
        offered.as_secs_f64(),
        drained.as_secs_f64()
    );
    println!("rows: {c} connections ({closed_rows} closed), {m} critical messages ({acked} acked)");
    println!(
        "shed: {}, critical refused: {}, failed receipts: {failed}, write errors: {}, largest backlog seen: {max_backlog}",
        stats.shed, stats.critical_refused, stats.write_errors
    );
    if let (Some(p50), Some(p99)) = (q(0.5), q(0.99)) {
        let max = latencies.last().unwrap();
        println!("critical commit latency (enqueue to receipt): p50 {p50:?}, p99 {p99:?}, max {max:?}");
    }
    let kept_up = stats.shed == 0
        && stats.critical_refused == 0
        && failed == 0
        && c as u64 == next_conn
        && m as u64 == seq
        && drained < offered + Duration::from_secs(2);
    println!("kept up: {kept_up}");
    if !kept_up {
        std::process::exit(1);
    }
}
