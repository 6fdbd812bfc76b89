//! Fanning one frame out to 10,000 live subscribers of a topic through `SubscriptionIndex::deliver` into
//! their outbound queues, alone and with every connection's flush; throughput is per delivery, the number
//! that bounds how many subscribers a shard can feed.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tickwire_benches::{drain, quote_frame, subscribed, write_buffers, NOW};
use tickwire_core::{Channel, Topic};
use tickwire_fanout::frame::Rendered;
use tickwire_fanout::outbound::NO_STAMP;

const SUBSCRIBERS: u64 = 10_000;

fn fanout(c: &mut Criterion) {
    let topic = Topic::new(Channel::Quotes, "AAPL");
    let frame = Rendered::canonical(quote_frame());
    let (mut index, conns) = subscribed(&topic, SUBSCRIBERS, 0);
    let mut bufs = write_buffers(conns.len());

    let mut group = c.benchmark_group("fanout_10k");
    group.throughput(Throughput::Elements(SUBSCRIBERS));
    // The queues are drained outside the timed part, so they never reach their byte bound.
    group.bench_function("deliver", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                black_box(index.deliver(&topic, &frame, NO_STAMP, NOW));
                spent += start.elapsed();
                drain(&conns, &mut bufs);
            }
            spent
        })
    });
    group.bench_function("deliver_and_flush", |b| {
        b.iter(|| {
            black_box(index.deliver(&topic, &frame, NO_STAMP, NOW));
            drain(&conns, &mut bufs)
        })
    });
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
