//! A fixed-bucket latency histogram, written by one shard with relaxed atomics and read by anyone.

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the latency buckets (ingest to flush, loop lag), in microseconds: 50 µs to 2.5 s, with
/// each millisecond up to 5 ms so that a tail around the 5 ms goal can be read.
pub const LATENCY_BOUNDS_US: [u64; 17] = [
    50, 100, 250, 500, 1_000, 2_000, 3_000, 4_000, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000,
];

/// A fixed-bucket latency histogram written by one shard: a record is a search over 14 bounds and two
/// relaxed atomic adds (no allocation, no clock).
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Samples per bucket (not cumulative); the last one is above the largest bound.
    buckets: [AtomicU64; LATENCY_BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
}

impl LatencyHistogram {
    /// Records one sample of `micros` microseconds.
    pub fn record(&self, micros: u64) {
        let i = LATENCY_BOUNDS_US.partition_point(|&b| b < micros);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(micros, Ordering::Relaxed);
    }

    /// Cumulative counts per bound (the last is `+Inf`, the total) and the sum in microseconds.
    pub fn snapshot(&self) -> ([u64; LATENCY_BOUNDS_US.len() + 1], u64) {
        let mut out = [0; LATENCY_BOUNDS_US.len() + 1];
        let mut total = 0;
        for (o, b) in out.iter_mut().zip(&self.buckets) {
            total += b.load(Ordering::Relaxed);
            *o = total;
        }
        (out, self.sum_us.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_inclusive_upper_bounds() {
        let h = LatencyHistogram::default();
        for us in [0, 50, 51, 1_000, 999_999, 1_000_000, 5_000_000] {
            h.record(us);
        }
        let (c, sum) = h.snapshot();
        assert_eq!(c[0], 2, "0 and 50 are <= 50 µs");
        assert_eq!(c[1], 3, "51 is <= 100 µs");
        assert_eq!(c[4], 4, "1 ms");
        assert_eq!(c[15], 6, "<= 1 s");
        assert_eq!(c[16], 6, "<= 2.5 s");
        assert_eq!(c[17], 7, "+Inf counts all");
        assert_eq!(sum, 50 + 51 + 1_000 + 999_999 + 1_000_000 + 5_000_000);
        assert!(LATENCY_BOUNDS_US.windows(2).all(|w| w[0] < w[1]));
    }
}
