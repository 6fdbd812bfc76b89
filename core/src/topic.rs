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

/// Bar intervals the server aggregates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum BarInterval {
    S1,
    M1,
    M5,
}

impl BarInterval {
    pub const ALL: [BarInterval; 3] = [BarInterval::S1, BarInterval::M1, BarInterval::M5];

    pub fn parse(s: &str) -> Option<BarInterval> {
        match s {
            "1s" => Some(BarInterval::S1),
            "1m" => Some(BarInterval::M1),
            "5m" => Some(BarInterval::M5),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BarInterval::S1 => "1s",
            BarInterval::M1 => "1m",
            BarInterval::M5 => "5m",
        }
    }

    /// Length of the interval in microseconds.
    pub fn micros(self) -> i64 {
        match self {
            BarInterval::S1 => 1_000_000,
            BarInterval::M1 => 60_000_000,
            BarInterval::M5 => 300_000_000,
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
