//! What a connection's open and close cost in the locks shared by every shard: `ConnLimits` (the total in
//! an atomic, per-user and per-IP counts in 16 striped mutexes) and the memory store's connection records
//! (64 striped mutexes). Each is taken twice per connection's life (open, close), never per message; the
//! two-thread case is two shards opening and closing connections at the same moment.
//!
//! `cargo bench -p tickwire-benches --bench connection_locks`

use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use tickwire_net::limits::ConnLimits;
use tickwire_persistence::{ConnectionRecord, MemoryStore, Store};

/// One connection's open and close, as a shard does them: its place under the limits, its record.
fn open_and_close(limits: &Arc<ConnLimits>, store: &MemoryStore, shard: usize, i: u64) {
    let user: Arc<str> = format!("u-{}", i % 1000).into();
    let ip = IpAddr::from([10, 0, (i >> 8) as u8, i as u8]);
    let slot = limits.admit(Some(ip), Some(&user)).expect("under the limits");
    let id = (shard as u64) << 48 | i;
    store.connection_opened(ConnectionRecord {
        id,
        user: Some(user.to_string()),
        client_id: String::new(),
        ip: None,
        shard,
        connected_at: 0,
    });
    store.connection_closed(id, 1, 1000, 0, 0);
    drop(black_box(slot));
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("connection_locks");
    group.bench_function("open_close_one_shard", |b| {
        let limits = Arc::new(ConnLimits::new(1_000_000, 100, 100));
        let store = MemoryStore::striped(10_000, 64);
        let mut i = 0;
        b.iter(|| {
            i += 1;
            open_and_close(&limits, &store, 0, i);
        });
    });
    group.bench_function("open_close_two_shards_at_once", |b| {
        let limits = Arc::new(ConnLimits::new(1_000_000, 100, 100));
        let store = Arc::new(MemoryStore::striped(10_000, 64));
        b.iter_custom(|iters| {
            // Both threads open and close `iters` connections each; the time is per connection of one.
            let started = Instant::now();
            std::thread::scope(|s| {
                for shard in 0..2 {
                    let (limits, store) = (limits.clone(), store.clone());
                    s.spawn(move || {
                        for i in 0..iters {
                            open_and_close(&limits, &store, shard, i);
                        }
                    });
                }
            });
            started.elapsed()
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
