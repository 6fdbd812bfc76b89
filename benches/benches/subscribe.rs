//! Subscribing then unsubscribing one connection on a topic that already has 10,000 subscribers
//! (`SubscriptionIndex::add`, `activate`, `remove`): the cost a popular topic adds to every (un)subscribe.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use tickwire_benches::{subscribed, Conn};
use tickwire_core::{Channel, Topic};

const SUBSCRIBERS: u64 = 10_000;

fn subscribe(c: &mut Criterion) {
    let topic = Topic::new(Channel::Quotes, "AAPL");
    let (mut index, _conns) = subscribed(&topic, SUBSCRIBERS, 0);
    let newcomer = Conn::new(SUBSCRIBERS);
    c.bench_function("subscribe_unsubscribe_10k", |b| {
        b.iter(|| {
            black_box(index.add(&topic, newcomer.clone(), 0, 0));
            black_box(index.activate(&topic, newcomer.key, 0).is_some());
            black_box(index.remove(&topic, newcomer.key))
        })
    });
    assert_eq!(index.subscribers(&topic), SUBSCRIBERS as usize);
}

criterion_group!(benches, subscribe);
criterion_main!(benches);
