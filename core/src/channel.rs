//! The channel catalog: every channel of PROTOCOL.md as one row of data.
//!
//! Adding a channel is adding a variant and its row in [`CATALOG`]; routing, sequencing and fanout read the
//! row and need no new plumbing.

use std::fmt;

/// Who may see a channel's topics and how they are keyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Scope {
    /// Public, one topic per symbol (and per interval for bars).
    PerSymbol,
    /// Public, one topic per symbol, plus the "all symbols" topic when `symbols` is omitted.
    PerSymbolOrAll,
    /// Public, one topic for everyone.
    Everyone,
    /// Private: one topic per user, reachable only by connections authenticated as that user.
    Private,
}

/// A channel of the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
#[non_exhaustive]
pub enum Channel {
    Quotes,
    Trades,
    Bars,
    News,
    Signals,
    System,
    Orders,
    Executions,
    Portfolio,
    Alerts,
    Sessions,
    Decisions,
}

/// One row of the catalog.
#[derive(Debug, Clone, Copy)]
pub struct ChannelInfo {
    pub channel: Channel,
    /// Wire name of the channel (`"quotes"`).
    pub name: &'static str,
    /// `type` of its update frames (`"quote"`).
    pub update_type: &'static str,
    pub scope: Scope,
    /// Delivered at least once (orders, executions, alerts).
    pub critical: bool,
    /// Whether publishers may publish to it (bars are aggregated by the server from trades).
    pub publishable: bool,
    /// Whether a new subscriber gets the latest update as a `snapshot` (state, not a stream of events).
    pub snapshot: bool,
    /// Fields of `data`, for the catalog endpoint and documentation.
    pub fields: &'static [&'static str],
    pub description: &'static str,
}

/// The catalog, in wire order.
pub const CATALOG: &[ChannelInfo] = &[
    ChannelInfo {
        channel: Channel::Quotes,
        name: "quotes",
        update_type: "quote",
        scope: Scope::PerSymbol,
        critical: false,
        publishable: true,
        snapshot: true,
        fields: &["symbol", "bid", "ask", "last", "bid_size", "ask_size", "volume"],
        description: "top-of-book quotes per symbol",
    },
    ChannelInfo {
        channel: Channel::Trades,
        name: "trades",
        update_type: "trade",
        scope: Scope::PerSymbol,
        critical: false,
        publishable: true,
        snapshot: true,
        fields: &["symbol", "price", "size", "timestamp", "exchange"],
        description: "trades per symbol",
    },
    ChannelInfo {
        channel: Channel::Bars,
        name: "bars",
        update_type: "bar",
        scope: Scope::PerSymbol,
        critical: false,
        publishable: false,
        snapshot: true,
        fields: &["symbol", "interval", "start", "open", "high", "low", "close", "volume", "vwap"],
        description: "OHLC bars (1s, 1m, 5m, 15m, 30m, 1h, 1d, 1w, 1mo) aggregated by the server from trades",
    },
    ChannelInfo {
        channel: Channel::News,
        name: "news",
        update_type: "news",
        scope: Scope::PerSymbolOrAll,
        critical: false,
        publishable: true,
        snapshot: false,
        fields: &["headline", "source", "symbols", "sentiment", "timestamp"],
        description: "news per symbol; without symbols, all news",
    },
    ChannelInfo {
        channel: Channel::Signals,
        name: "signals",
        update_type: "signal",
        scope: Scope::PerSymbol,
        critical: false,
        publishable: true,
        snapshot: true,
        fields: &["signal_type", "symbol", "price", "quantity", "confidence"],
        description: "trading signals per symbol",
    },
    ChannelInfo {
        channel: Channel::System,
        name: "system",
        update_type: "system",
        scope: Scope::Everyone,
        critical: false,
        publishable: true,
        snapshot: false,
        fields: &["level", "message"],
        description: "system notifications for everyone",
    },
    ChannelInfo {
        channel: Channel::Orders,
        name: "orders",
        update_type: "order",
        scope: Scope::Private,
        critical: true,
        publishable: true,
        snapshot: false,
        fields: &["order_id", "symbol", "side", "type", "status", "qty", "filled_qty", "avg_price", "limit_price"],
        description: "the user's order updates",
    },
    ChannelInfo {
        channel: Channel::Executions,
        name: "executions",
        update_type: "execution",
        scope: Scope::Private,
        critical: true,
        publishable: true,
        snapshot: false,
        fields: &["trade_id", "order_id", "symbol", "side", "quantity", "price", "pnl", "executed_at"],
        description: "the user's executions",
    },
    ChannelInfo {
        channel: Channel::Portfolio,
        name: "portfolio",
        update_type: "portfolio",
        scope: Scope::Private,
        critical: false,
        publishable: true,
        snapshot: true,
        fields: &["total_value", "day_pnl", "cash", "buying_power", "positions"],
        description: "the user's portfolio",
    },
    ChannelInfo {
        channel: Channel::Alerts,
        name: "alerts",
        update_type: "alert",
        scope: Scope::Private,
        critical: true,
        publishable: true,
        snapshot: false,
        fields: &["alert_id", "type", "level", "message", "symbol", "triggered_at"],
        description: "the user's alerts (risk alerts have type \"risk\")",
    },
    ChannelInfo {
        channel: Channel::Sessions,
        name: "sessions",
        update_type: "session_status",
        scope: Scope::Private,
        critical: false,
        publishable: true,
        snapshot: true,
        fields: &["session_id", "status", "data"],
        description: "the user's trading session status",
    },
    ChannelInfo {
        channel: Channel::Decisions,
        name: "decisions",
        update_type: "algorithm_decision",
        scope: Scope::Private,
        critical: false,
        publishable: true,
        snapshot: false,
        fields: &["session_id", "algorithm_id", "decision", "reasoning", "confidence", "symbol", "price"],
        description: "the user's algorithm decisions",
    },
];

impl Channel {
    /// Every channel, in catalog order.
    pub fn all() -> impl Iterator<Item = Channel> {
        CATALOG.iter().map(|row| row.channel)
    }

    /// The channel with this wire name (exact, lower case).
    pub fn from_name(name: &str) -> Option<Channel> {
        CATALOG.iter().find(|row| row.name == name).map(|row| row.channel)
    }

    /// This channel's catalog row.
    pub fn info(self) -> &'static ChannelInfo {
        // CATALOG lists the variants in declaration order; `catalog_is_in_variant_order` checks it.
        &CATALOG[self as usize]
    }

    pub fn name(self) -> &'static str {
        self.info().name
    }

    pub fn update_type(self) -> &'static str {
        self.info().update_type
    }

    pub fn scope(self) -> Scope {
        self.info().scope
    }

    pub fn is_private(self) -> bool {
        self.scope() == Scope::Private
    }

    pub fn is_critical(self) -> bool {
        self.info().critical
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_is_in_variant_order() {
        for (i, row) in CATALOG.iter().enumerate() {
            assert_eq!(row.channel as usize, i, "{} out of order", row.name);
            assert_eq!(Channel::from_name(row.name), Some(row.channel));
        }
        assert_eq!(CATALOG.len(), 12);
    }

    #[test]
    fn scopes_match_protocol() {
        let private: Vec<_> = Channel::all().filter(|c| c.is_private()).map(Channel::name).collect();
        assert_eq!(private, ["orders", "executions", "portfolio", "alerts", "sessions", "decisions"]);
        let critical: Vec<_> = Channel::all().filter(|c| c.is_critical()).map(Channel::name).collect();
        assert_eq!(critical, ["orders", "executions", "alerts"]);
        assert_eq!(Channel::from_name("quotez"), None);
        assert_eq!(Channel::from_name("Quotes"), None);
    }
}
