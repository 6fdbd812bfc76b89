//! Encoding one quote frame, sonic-rs against serde_json: the data is serialized, then wrapped by the same
//! canonical frame builder. Every update is encoded once per topic (not per subscriber), so this is the
//! per-update serialization cost on the owner shard.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use tickwire_benches::{quote, quote_update};
use tickwire_core::protocol::canonical::Canonical;
use tickwire_fanout::frame::update_frame;

fn encode(c: &mut Criterion) {
    let q = quote();
    let mut group = c.benchmark_group("encode_quote_frame");
    group.bench_function("sonic_rs", |b| {
        b.iter(|| {
            let data = sonic_rs::to_vec(black_box(&q)).expect("a quote serializes");
            update_frame(&Canonical, &quote_update(&data, black_box(1042)))
        })
    });
    group.bench_function("serde_json", |b| {
        b.iter(|| {
            let data = serde_json::to_vec(black_box(&q)).expect("a quote serializes");
            update_frame(&Canonical, &quote_update(&data, black_box(1042)))
        })
    });
    group.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
