//! Conflation for 1,000 subscribers with `throttle_ms` 100: a conflated deliver (each subscriber keeps only
//! the latest frame), and a whole 100 ms window of 10 conflated updates closed by `flush_throttled`, which
//! sends each subscriber the latest. Throughput is per subscriber and update, as for unthrottled fanout.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tickwire_benches::{drain, quote_frame, subscribed, write_buffers};
use tickwire_core::{Channel, Topic};
use tickwire_fanout::frame::Rendered;
use tickwire_fanout::outbound::NO_STAMP;

const SUBSCRIBERS: u64 = 1_000;
const THROTTLE_MS: u32 = 100;
const WINDOW: i64 = THROTTLE_MS as i64 * 1000;
/// Updates per window: all but the latest are dropped, so 90% of updates are conflated away.
const UPDATES: i64 = 10;

fn conflation(c: &mut Criterion) {
    let topic = Topic::new(Channel::Quotes, "AAPL");
    let frame = Rendered::canonical(quote_frame());
    let (mut index, conns) = subscribed(&topic, SUBSCRIBERS, THROTTLE_MS);
    let mut bufs = write_buffers(conns.len());
    // The first update goes out at once and opens everyone's window at 0.
    assert_eq!(index.deliver(&topic, &frame, NO_STAMP, 0).0, SUBSCRIBERS as usize);
    drain(&conns, &mut bufs);

    let mut group = c.benchmark_group("conflation_1k");
    group.throughput(Throughput::Elements(SUBSCRIBERS));
    // Inside the window: every subscriber replaces its pending frame, nothing is queued.
    group.bench_function("deliver_conflated", |b| b.iter(|| black_box(index.deliver(&topic, &frame, NO_STAMP, 1000))));

    group.throughput(Throughput::Elements(SUBSCRIBERS * UPDATES as u64));
    let mut window_start = 0;
    group.bench_function("window_10_updates_then_flush", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                for i in 0..UPDATES {
                    black_box(index.deliver(&topic, &frame, NO_STAMP, window_start + i * WINDOW / UPDATES));
                }
                window_start += WINDOW;
                let sent = index.flush_throttled(window_start);
                spent += start.elapsed();
                assert_eq!(sent, SUBSCRIBERS as usize, "the window's latest update goes to everyone");
                drain(&conns, &mut bufs);
            }
            spent
        })
    });
    group.finish();
}

criterion_group!(benches, conflation);
criterion_main!(benches);
