//! Cross-shard interest: which shards have at least one subscriber of a topic, per *wire* (a dialect, as
//! plain frames or deflated ones: [`wire`]).
//!
//! A fixed table of atomic bitmasks (bit `s` for shard `s`), one per wire in each bucket, indexed by a
//! hash of the topic. Each shard keeps its own count per bucket and dialect and flips only its own bits, with
//! `fetch_or`/`fetch_and`; owners read a bucket's masks with acquire loads, from one cache line. No lock
//! anywhere. Two topics may share a bucket: then a shard can receive
//! an update it has no subscriber for, and drops it; it never misses one it has.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tickwire_core::protocol::{DialectId, DIALECT_COUNT};
use tickwire_core::Topic;

/// Most shards the bitmask can name.
pub const MAX_SHARDS: usize = 64;

/// Interest slots: each dialect's subscribers that take plain frames ([`DialectId`] `d`), then those that
/// take deflated ones (`DIALECT_COUNT + d`; permessage-deflate).
pub const WIRES: usize = 2 * DIALECT_COUNT;

/// The interest slot of subscribers of `dialect` that do (`deflate`) or do not take deflated frames.
#[inline]
pub fn wire(dialect: DialectId, deflate: bool) -> usize {
    usize::from(dialect.0) + if deflate { DIALECT_COUNT } else { 0 }
}

/// The shared table; clone the `Arc` into every shard.
#[derive(Debug)]
pub struct InterestMap {
    buckets: Box<[[AtomicU64; WIRES]]>,
}

impl InterestMap {
    /// A table of `buckets` entries (rounded up to a power of two).
    pub fn new(buckets: usize) -> Arc<InterestMap> {
        let n = buckets.max(1).next_power_of_two();
        Arc::new(InterestMap { buckets: (0..n).map(|_| std::array::from_fn(|_| AtomicU64::new(0))).collect() })
    }

    /// The bucket of `topic`.
    pub fn bucket(&self, topic: &Topic) -> usize {
        let mut h = Fnv(0xcbf2_9ce4_8422_2325);
        topic.hash(&mut h);
        (h.0 as usize) & (self.buckets.len() - 1)
    }

    /// Shards that may have subscribers of `topic`, in any wire, as a bitmask.
    pub fn shards(&self, topic: &Topic) -> u64 {
        self.buckets[self.bucket(topic)].iter().fold(0, |all, m| all | m.load(Ordering::Acquire))
    }

    /// Per wire (indexed by [`wire`]), the shards that may have subscribers of `topic` in it.
    pub fn shards_by_wire(&self, topic: &Topic) -> [u64; WIRES] {
        let bucket = &self.buckets[self.bucket(topic)];
        std::array::from_fn(|w| bucket[w].load(Ordering::Acquire))
    }

    fn set(&self, bucket: usize, wire: usize, shard: usize) {
        self.buckets[bucket][wire].fetch_or(1 << shard, Ordering::AcqRel);
    }

    fn clear(&self, bucket: usize, wire: usize, shard: usize) {
        self.buckets[bucket][wire].fetch_and(!(1 << shard), Ordering::AcqRel);
    }
}

/// One shard's side of the table: counts topics with subscribers per bucket and wire, flips its bit on
/// 0 <-> 1.
#[derive(Debug)]
pub struct ShardInterest {
    map: Arc<InterestMap>,
    shard: usize,
    counts: Vec<[u32; WIRES]>,
}

impl ShardInterest {
    pub fn new(map: Arc<InterestMap>, shard: usize) -> ShardInterest {
        assert!(shard < MAX_SHARDS, "at most {MAX_SHARDS} shards");
        let n = map.buckets.len();
        ShardInterest { map, shard, counts: vec![[0; WIRES]; n] }
    }

    /// This shard now has subscribers of `topic` in `wire` (call once per topic and wire, on its first
    /// local subscriber).
    pub fn add(&mut self, topic: &Topic, wire: usize) {
        let b = self.map.bucket(topic);
        let count = &mut self.counts[b][wire];
        *count += 1;
        if *count == 1 {
            self.map.set(b, wire, self.shard);
        }
    }

    /// This shard no longer has subscribers of `topic` in `wire` (on the last one leaving).
    pub fn remove(&mut self, topic: &Topic, wire: usize) {
        let b = self.map.bucket(topic);
        let count = &mut self.counts[b][wire];
        *count = count.saturating_sub(1);
        if *count == 0 {
            self.map.clear(b, wire, self.shard);
        }
    }
}

struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickwire_core::Channel;

    const C: usize = 0; // the canonical dialect's plain frames

    #[test]
    fn bits_follow_counts_even_when_topics_share_a_bucket() {
        let map = InterestMap::new(1); // one bucket: every topic collides
        let mut s0 = ShardInterest::new(map.clone(), 0);
        let mut s3 = ShardInterest::new(map.clone(), 3);
        let a = Topic::new(Channel::Quotes, "AAPL");
        let m = Topic::new(Channel::Quotes, "MSFT");
        s0.add(&a, C);
        s0.add(&m, C);
        s3.add(&m, C);
        assert_eq!(map.shards(&a), 0b1001);
        s0.remove(&a, C);
        assert_eq!(map.shards(&a), 0b1001, "MSFT still holds shard 0's bit");
        s0.remove(&m, C);
        s3.remove(&m, C);
        assert_eq!(map.shards(&m), 0);
    }

    #[test]
    fn concurrent_shards_never_lose_a_bit() {
        let map = InterestMap::new(4);
        let topic = Topic::new(Channel::Trades, "NVDA");
        std::thread::scope(|s| {
            for shard in 0..8 {
                let map = map.clone();
                let topic = topic.clone();
                s.spawn(move || {
                    let mut mine = ShardInterest::new(map, shard);
                    for _ in 0..1000 {
                        mine.add(&topic, C);
                        mine.remove(&topic, C);
                    }
                    mine.add(&topic, C);
                });
            }
        });
        assert_eq!(map.shards(&topic), 0xFF);
    }
}
