//! # tickwire-core
//!
//! The pure heart of tickwire: domain events, the channel catalog, topics, and the wire protocol as codecs.
//! Nothing here touches a socket, a runtime or a clock: time is passed in as microseconds since the Unix
//! epoch, bytes come in and frames go out. That keeps every part deterministic to test and to fuzz.
//!
//! Layout:
//! - [`time`]: RFC 3339 timestamps with microseconds, written without allocation.
//! - [`channel`]: the channel catalog (the table of PROTOCOL.md, as data).
//! - [`topic`]: what a sequence is attached to: `(channel, symbol[, interval])` or `(channel, user)`.
//! - [`event`]: typed payloads the server itself produces (simulator, bars) and the publish-event parser.
//! - [`ws`]: the WebSocket frame codec (RFC 6455) for frames read from clients and headers for frames sent.
//! - [`protocol`]: the [`protocol::Dialect`] boundary and the canonical v1 codec.
//!
//! ```
//! use tickwire_core::protocol::{canonical::Canonical, ClientRequest, Dialect};
//! let req = Canonical.decode(br#"{"action":"ping","id":"p1"}"#).unwrap();
//! assert!(matches!(req, ClientRequest::Ping { id: Some(ref id) } if id == "p1"));
//! ```
#![forbid(unsafe_code)]

pub mod channel;
pub mod deflate;
pub mod event;
pub mod json;
pub mod protocol;
pub mod time;
pub mod topic;
pub mod ws;

pub use channel::{Channel, Scope};
pub use topic::{BarInterval, Topic};
