//! Topics: the unit of sequencing. Public topics are `(channel, symbol[, interval])`, private ones
//! `(channel, user)`. The [`Topic::partition`] key decides the owner shard: a symbol's quotes, trades and bars
//! share one owner, so bars aggregate from trades without crossing shards.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::channel::{Channel, Scope};

/// Key of the "all symbols" topic of a [`Scope::PerSymbolOrAll`] channel and of [`Scope::Everyone`] channels.
pub const ALL: &str = "*";

/// Longest accepted symbol.
pub const MAX_SYMBOL_LEN: usize = 24;

/// Bar intervals the server aggregates: fixed lengths aligned to the Unix epoch (so hours and days start on
/// the UTC hour and midnight), weeks from Monday 00:00 UTC, months from the 1st 00:00 UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum BarInterval {
    S1,
    M1,
    M5,
    M15,
    M30,
    H1,
    D1,
    W1,
    Mo1,
}

const MINUTE: i64 = 60_000_000;
const DAY: i64 = 1440 * MINUTE;

impl BarInterval {
    pub const ALL: [BarInterval; 9] = [
        BarInterval::S1,
        BarInterval::M1,
        BarInterval::M5,
        BarInterval::M15,
        BarInterval::M30,
        BarInterval::H1,
        BarInterval::D1,
        BarInterval::W1,
        BarInterval::Mo1,
    ];

    pub fn parse(s: &str) -> Option<BarInterval> {
        BarInterval::ALL.into_iter().find(|i| i.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BarInterval::S1 => "1s",
            BarInterval::M1 => "1m",
            BarInterval::M5 => "5m",
            BarInterval::M15 => "15m",
            BarInterval::M30 => "30m",
            BarInterval::H1 => "1h",
            BarInterval::D1 => "1d",
            BarInterval::W1 => "1w",
            BarInterval::Mo1 => "1mo",
        }
    }

    /// The start of the interval holding `t` (microseconds since the epoch).
    pub fn start_of(self, t: i64) -> i64 {
        match self {
            BarInterval::Mo1 => crate::time::month_start(t),
            // 1970-01-01 was a Thursday: Mondays fall 3 days before each multiple of 7 days.
            BarInterval::W1 => t - (t + 3 * DAY).rem_euclid(7 * DAY),
            fixed => t - t.rem_euclid(fixed.fixed_len()),
        }
    }

    /// The end of the interval that starts at `start` (the start of the next).
    pub fn end_of(self, start: i64) -> i64 {
        match self {
            BarInterval::Mo1 => crate::time::next_month_start(start),
            BarInterval::W1 => start + 7 * DAY,
            fixed => start + fixed.fixed_len(),
        }
    }

    fn fixed_len(self) -> i64 {
        match self {
            BarInterval::S1 => 1_000_000,
            BarInterval::M1 => MINUTE,
            BarInterval::M5 => 5 * MINUTE,
            BarInterval::M15 => 15 * MINUTE,
            BarInterval::M30 => 30 * MINUTE,
            BarInterval::H1 => 60 * MINUTE,
            BarInterval::D1 | BarInterval::W1 | BarInterval::Mo1 => DAY,
        }
    }
}

/// A sequenced stream of updates.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Topic {
    pub channel: Channel,
    /// Symbol (public), user id (private) or [`ALL`].
    pub key: Arc<str>,
    /// Set for bars only.
    pub interval: Option<BarInterval>,
}

impl Hash for Topic {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self.channel as u8).hash(state);
        self.key.hash(state);
        self.interval.hash(state);
    }
}

impl Topic {
    pub fn new(channel: Channel, key: impl Into<Arc<str>>) -> Topic {
        Topic { channel, key: key.into(), interval: None }
    }

    pub fn bar(symbol: impl Into<Arc<str>>, interval: BarInterval) -> Topic {
        Topic { channel: Channel::Bars, key: symbol.into(), interval: Some(interval) }
    }

    /// The symbol of a public per-symbol topic.
    pub fn symbol(&self) -> Option<&str> {
        match self.channel.scope() {
            Scope::PerSymbol | Scope::PerSymbolOrAll if &*self.key != ALL => Some(&self.key),
            _ => None,
        }
    }

    /// The key that picks the owner shard: symbol or user, so related topics share an owner.
    pub fn partition(&self) -> &str {
        &self.key
    }

    /// The owner shard among `shards`, by a stable FNV-1a hash of [`Topic::partition`].
    pub fn owner(&self, shards: usize) -> usize {
        owner_of(self.partition(), shards)
    }
}

/// The owner shard of a partition key (symbol or user) among `shards`.
pub fn owner_of(partition: &str, shards: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in partition.as_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % shards.max(1) as u64) as usize
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.channel, self.key)?;
        if let Some(i) = self.interval {
            write!(f, ":{}", i.as_str())?;
        }
        Ok(())
    }
}

/// Checks and normalizes a symbol: ASCII letters, digits and `.-_/:` only, 1 to [`MAX_SYMBOL_LEN`] long,
/// upper-cased. `None` if it is not a valid symbol.
pub fn normalize_symbol(raw: &str) -> Option<String> {
    if raw.is_empty() || raw.len() > MAX_SYMBOL_LEN {
        return None;
    }
    if !raw.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'/' | b':')) {
        return None;
    }
    Some(raw.to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{parse_rfc3339, rfc3339};

    #[test]
    fn intervals_start_on_the_utc_hour_day_monday_and_first_of_the_month() {
        let t = parse_rfc3339("2024-02-29T13:47:12.5Z").unwrap(); // a Thursday of a leap February
        let cases = [
            (BarInterval::S1, "2024-02-29T13:47:12.000000Z", "2024-02-29T13:47:13.000000Z"),
            (BarInterval::M15, "2024-02-29T13:45:00.000000Z", "2024-02-29T14:00:00.000000Z"),
            (BarInterval::M30, "2024-02-29T13:30:00.000000Z", "2024-02-29T14:00:00.000000Z"),
            (BarInterval::H1, "2024-02-29T13:00:00.000000Z", "2024-02-29T14:00:00.000000Z"),
            (BarInterval::D1, "2024-02-29T00:00:00.000000Z", "2024-03-01T00:00:00.000000Z"),
            (BarInterval::W1, "2024-02-26T00:00:00.000000Z", "2024-03-04T00:00:00.000000Z"),
            (BarInterval::Mo1, "2024-02-01T00:00:00.000000Z", "2024-03-01T00:00:00.000000Z"),
        ];
        for (interval, start, end) in cases {
            let s = interval.start_of(t);
            assert_eq!((rfc3339(s).as_str(), rfc3339(interval.end_of(s)).as_str()), (start, end), "{interval:?}");
        }
        let dec = parse_rfc3339("2023-12-31T23:59:59Z").unwrap();
        assert_eq!(rfc3339(BarInterval::Mo1.end_of(BarInterval::Mo1.start_of(dec))), "2024-01-01T00:00:00.000000Z");
        let monday = parse_rfc3339("2024-03-04T00:00:00Z").unwrap();
        assert_eq!(BarInterval::W1.start_of(monday), monday, "a Monday midnight starts its own week");
        for i in BarInterval::ALL {
            assert_eq!(BarInterval::parse(i.as_str()), Some(i));
        }
    }

    #[test]
    fn related_topics_share_an_owner() {
        let q = Topic::new(Channel::Quotes, "AAPL");
        let t = Topic::new(Channel::Trades, "AAPL");
        let b = Topic::bar("AAPL", BarInterval::S1);
        for shards in 1..9 {
            assert_eq!(q.owner(shards), t.owner(shards));
            assert_eq!(q.owner(shards), b.owner(shards));
            assert!(q.owner(shards) < shards);
        }
        assert_eq!(b.to_string(), "bars:AAPL:1s");
    }

    #[test]
    fn symbols_are_checked() {
        assert_eq!(normalize_symbol("aapl").as_deref(), Some("AAPL"));
        assert_eq!(normalize_symbol("BRK.B").as_deref(), Some("BRK.B"));
        assert_eq!(normalize_symbol(""), None);
        assert_eq!(normalize_symbol("A B"), None);
        assert_eq!(normalize_symbol(&"X".repeat(25)), None);
        assert_eq!(Topic::new(Channel::News, ALL).symbol(), None);
        assert_eq!(Topic::new(Channel::News, "AAPL").symbol(), Some("AAPL"));
    }
}
