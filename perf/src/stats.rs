//! What a run measures: latency from `source_ts` in an HDR histogram, deliveries per second, and loss as
//! sequence jumps per (connection, symbol) plus deliveries that never arrived.

use hdrhistogram::Histogram;

/// Highest latency recorded, in microseconds (larger values are clamped).
const MAX_US: u64 = 60_000_000;

pub fn histogram() -> Histogram<u64> {
    // 3 significant digits over 1 us .. 60 s is a fixed, small allocation.
    Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds")
}

/// One second of a run.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Second {
    pub t: u64,
    pub delivered: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

/// Everything recorded while a step of a scenario runs; shared by the connection tasks of one executor.
#[derive(Debug)]
pub struct Recorder {
    pub total: Histogram<u64>,
    second: Histogram<u64>,
    second_delivered: u64,
    pub timeline: Vec<Second>,
    pub delivered: u64,
    pub gaps: u64,
    pub duplicates: u64,
    /// Whether deliveries count (the measured phase); frames outside it only move the sequence baselines.
    pub recording: bool,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            total: histogram(),
            second: histogram(),
            second_delivered: 0,
            timeline: Vec::new(),
            delivered: 0,
            gaps: 0,
            duplicates: 0,
            recording: false,
        }
    }
}

impl Recorder {
    /// One update received `latency_us` after its source time.
    pub fn delivery(&mut self, latency_us: i64) {
        if !self.recording {
            return;
        }
        let v = latency_us.clamp(1, MAX_US as i64) as u64;
        let _ = self.total.record(v);
        let _ = self.second.record(v);
        self.delivered += 1;
        self.second_delivered += 1;
    }

    /// Closes the current second of the timeline.
    pub fn tick(&mut self, t: u64) {
        let s = &self.second;
        let (p50, p99, max) =
            if s.is_empty() { (0, 0, 0) } else { (s.value_at_quantile(0.5), s.value_at_quantile(0.99), s.max()) };
        self.timeline.push(Second { t, delivered: self.second_delivered, p50_us: p50, p99_us: p99, max_us: max });
        self.second.reset();
        self.second_delivered = 0;
    }

    /// Starts a fresh measured step.
    pub fn reset(&mut self) {
        *self = Recorder { recording: self.recording, ..Recorder::default() };
    }

    pub fn quantile(&self, q: f64) -> u64 {
        if self.total.is_empty() {
            0
        } else {
            self.total.value_at_quantile(q)
        }
    }
}

/// Per-connection sequence tracking for the few symbols one connection holds.
#[derive(Debug, Default)]
pub struct Sequences {
    last: Vec<(Box<[u8]>, u64)>,
}

impl Sequences {
    /// Records `seq` for `symbol`; returns `(gap, duplicate)` where gap counts the missing sequences.
    pub fn observe(&mut self, symbol: &[u8], seq: u64) -> (u64, bool) {
        match self.last.iter_mut().find(|(s, _)| &**s == symbol) {
            None => {
                self.last.push((symbol.into(), seq));
                (0, false)
            }
            Some((_, last)) => {
                if seq <= *last {
                    return (0, true);
                }
                let gap = seq - *last - 1;
                *last = seq;
                (gap, false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_and_duplicates() {
        let mut s = Sequences::default();
        assert_eq!(s.observe(b"A", 10), (0, false), "the first frame is the baseline");
        assert_eq!(s.observe(b"A", 11), (0, false));
        assert_eq!(s.observe(b"A", 14), (2, false));
        assert_eq!(s.observe(b"A", 14), (0, true));
        assert_eq!(s.observe(b"B", 1), (0, false));
    }

    #[test]
    fn records_only_while_recording() {
        let mut r = Recorder::default();
        r.delivery(100);
        assert_eq!(r.delivered, 0);
        r.recording = true;
        for us in [100, 200, 300, 400, 10_000] {
            r.delivery(us);
        }
        r.tick(1);
        assert_eq!(r.delivered, 5);
        assert_eq!(r.timeline[0].delivered, 5);
        assert!(r.quantile(0.99) >= 9_990);
        r.reset();
        assert!(r.recording && r.delivered == 0 && r.timeline.is_empty());
    }
}
