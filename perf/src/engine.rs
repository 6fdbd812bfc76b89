//! The load engine on one thread (tokio's current-thread runtime, epoll): subscriber connections that track sequences and latency, and an
//! open-loop publisher: it sends on a fixed schedule whatever the server does, stamps each event with the
//! time it is written (`source_ts`), and reports how far it ever fell behind its schedule
//! (`publisher_max_lag_us`), so a server that pushes back on its publisher cannot hide it.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use memchr::memmem;
use rand::rngs::SmallRng;
use rand::SeedableRng;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::stats::{Recorder, Sequences};
use crate::ws::{self, Kind};

/// How the target is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// tickwire's canonical protocol (also spoken by the peers in perf/peers).
    Tickwire,
    /// NATS over WebSocket (nats-server's websocket listener).
    Nats,
    /// tickwire's `/ws` dialect (seed 001): auto-subscribed clients (they send nothing) that read one
    /// `price_update` per interval. A delivery is a frame; its latency runs from the interval's close (the
    /// frame's `timestamp`, the whole second the interval closed at) to its receipt; an interval with no
    /// frame between two that came is lost. The publisher speaks the canonical protocol.
    Legacy,
    /// tickwire's `/ws/portfolio` dialect (seed 002): clients of one user (`--private-user`, whose token is
    /// `--token`) subscribe `orders`, and the publisher publishes that user's orders; each order's id
    /// carries its number and publish time (`o-SEQ-MICROS`), found in `order_update` and `batch` frames.
    /// Latency includes the dialect's batching window.
    Portfolio,
    /// tickwire's `/api/v1/ws` dialect (seed 003): clients of one user subscribe the `orders` route of
    /// their account; each `orders.update` is an order as published.
    Fastws,
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub protocol: Protocol,
    pub token: Option<String>,
    pub publish_token: Option<String>,
    /// The server's `legacy_price_update_interval_s` ([`Protocol::Legacy`]: frames further apart lost some).
    pub interval_s: u64,
    /// The user whose orders private dialects' clients subscribe and the publisher publishes.
    pub user: String,
    /// Subscribers offer permessage-deflate (and fail if it is not agreed), and inflate what comes deflated.
    pub compress: bool,
    /// The nodes of a cluster that subscribers connect to, in turn (empty: `addr`). The publisher and the
    /// server's figures stay on `addr`.
    pub subscribers: Vec<SocketAddr>,
    /// The other nodes' processes, whose CPU and memory are added to the server's (a cluster's figures).
    pub cluster_pids: Vec<u32>,
}

impl Target {
    /// Where subscriber `n` connects.
    pub fn subscriber_addr(&self, n: usize) -> SocketAddr {
        if self.subscribers.is_empty() {
            self.addr
        } else {
            self.subscribers[n % self.subscribers.len()]
        }
    }

    /// The nodes the run spreads its subscribers over.
    pub fn nodes(&self) -> usize {
        self.subscribers.len().max(1)
    }

    fn stream_path(&self) -> &'static str {
        match self.protocol {
            Protocol::Tickwire => "/v1/stream",
            Protocol::Nats => "/",
            Protocol::Legacy => "/ws",
            Protocol::Portfolio => "/ws/portfolio",
            Protocol::Fastws => "/api/v1/ws",
        }
    }

    fn publish_path(&self) -> &'static str {
        match self.protocol {
            Protocol::Tickwire | Protocol::Legacy | Protocol::Portfolio | Protocol::Fastws => "/v1/publish",
            Protocol::Nats => "/",
        }
    }
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

/// A one-shot signal many tasks wait for. Connections reading under it register their socket
/// ([`Signal::watch`]): firing shuts those sockets down, which ends their pending reads at once. A read
/// therefore needs no waiter of its own (a `Notify` registered and dropped around every read was the
/// generator's largest cost after parsing).
#[derive(Debug, Default)]
pub struct Signal {
    fired: Cell<bool>,
    sockets: RefCell<Vec<RawFd>>,
}

/// A socket registered with a [`Signal`] until this is dropped (before the socket closes: declare it after
/// the stream).
pub struct Watched<'a> {
    signal: &'a Signal,
    fd: RawFd,
}

impl Drop for Watched<'_> {
    fn drop(&mut self) {
        let mut sockets = self.signal.sockets.borrow_mut();
        if let Some(i) = sockets.iter().position(|&fd| fd == self.fd) {
            sockets.swap_remove(i);
        }
    }
}

impl Signal {
    pub fn fire(&self) {
        self.fired.set(true);
        // Taken, not kept: the many `Watched` dropped as their tasks end then find an empty list instead of
        // searching one as long as the run's connections.
        for fd in self.sockets.take() {
            // SAFETY: `fd` is an open socket of a live `TcpStream` (its `Watched` is dropped before it).
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        }
    }

    pub fn fired(&self) -> bool {
        self.fired.get()
    }

    /// Registers `stream`, so that firing ends its reads.
    pub fn watch(&self, stream: &TcpStream) -> Watched<'_> {
        let fd = stream.as_raw_fd();
        self.sockets.borrow_mut().push(fd);
        Watched { signal: self, fd }
    }

    /// Reads what `stream` (registered with [`Signal::watch`]) has, up to `at_most` bytes at a time, straight
    /// onto the end of `buf` (no zeroed chunk, no copy), unless the signal has fired (`None`).
    pub async fn read(
        &self,
        stream: &mut TcpStream,
        buf: &mut BytesMut,
        at_most: usize,
    ) -> Option<std::io::Result<usize>> {
        if self.fired.get() {
            return None;
        }
        if buf.capacity() - buf.len() < at_most / 4 {
            buf.reserve(at_most);
        }
        let r = stream.read_buf(buf).await;
        (!self.fired.get()).then_some(r)
    }
}

/// State shared by the tasks of one run.
#[derive(Debug, Default)]
pub struct Shared {
    pub rec: RefCell<Recorder>,
    /// Connections whose subscriptions are confirmed.
    pub subscribed: Cell<usize>,
    /// Connections that failed, and the first error.
    pub failed: Cell<usize>,
    pub first_error: RefCell<Option<String>>,
    pub errors_from_server: Cell<u64>,
    pub stop: Signal,
    /// The server's epoch, from the first `welcome`.
    pub epoch: RefCell<Option<String>>,
    /// Where subscribers resume (tickwire only): every symbol from one sequence.
    pub resume: RefCell<Option<ResumePoint>>,
    /// Subscribers that got their whole replay.
    pub resumed: Cell<usize>,
}

/// A resume point shared by every subscriber of a run: each of its symbols was seen up to `from`, and the
/// topics have reached `upto`, so each subscription expects `upto - from` replayed updates.
#[derive(Debug, Clone)]
pub struct ResumePoint {
    pub epoch: String,
    pub from: u64,
    pub upto: u64,
}

impl Shared {
    pub fn fail(&self, e: &anyhow::Error) {
        self.failed.set(self.failed.get() + 1);
        self.first_error.borrow_mut().get_or_insert_with(|| format!("{e:#}"));
    }
}

/// The fields of a received frame the engine reads. They are found by scanning for their keys, not by
/// parsing the frame: a generator that parses every byte of every frame spends more per delivery than the
/// servers it measures (a full parse with sonic-rs was over half of its instructions). Each field is an
/// occurrence of its key (`"key"`, optional blanks, `:`); the frames it reads (updates of public topics,
/// and the server's replies) carry each key once, `symbol` inside `data`. The keys are looked for in the
/// order tickwire and the peers write them (`type`, `sequence`, `source_ts`, `symbol`), each from where the
/// one before was found, so that one pass over an update finds them all; a key not found there is looked
/// for from the start. Strings are the bytes between the quotes, with no escapes.
#[derive(Debug, Default, PartialEq, Eq)]
struct Frame<'a> {
    kind: Option<&'a [u8]>,
    sequence: Option<u64>,
    source_ts: Option<i64>,
    symbol: Option<&'a [u8]>,
    epoch: Option<&'a [u8]>,
}

/// Finders of the keys, built once.
struct Keys {
    kind: memmem::Finder<'static>,
    sequence: memmem::Finder<'static>,
    source_ts: memmem::Finder<'static>,
    symbol: memmem::Finder<'static>,
    epoch: memmem::Finder<'static>,
}

static KEYS: LazyLock<Keys> = LazyLock::new(|| Keys {
    kind: memmem::Finder::new(b"\"type\""),
    sequence: memmem::Finder::new(b"\"sequence\""),
    source_ts: memmem::Finder::new(b"\"source_ts\""),
    symbol: memmem::Finder::new(b"\"symbol\""),
    epoch: memmem::Finder::new(b"\"epoch\""),
});

impl<'a> Frame<'a> {
    fn scan(text: &'a [u8]) -> Frame<'a> {
        let k = &*KEYS;
        // tickwire's frames start with their type; a key right after the value before it (the peers relay
        // `"sequence":…,"source_ts":…,"data":{"symbol":…`, tickwire writes `"source_ts":…,"data":{"symbol":…`)
        // is taken where it stands, without a search.
        let mut at = 0;
        let kind = if text.starts_with(b"{\"type\":") {
            at = 8;
            string_at(text, Some(8))
        } else {
            string_at(text, value_at(text, &k.kind, &mut at))
        };
        let (sequence, end) = number_at(text, value_at(text, &k.sequence, &mut at));
        let sequence = sequence.and_then(|n| u64::try_from(n).ok());
        let start = next_key(text, end, b",\"source_ts\":").or_else(|| value_at(text, &k.source_ts, &mut at));
        let (source_ts, end) = number_at(text, start);
        let start = next_key(text, end, b",\"data\":{\"symbol\":").or_else(|| value_at(text, &k.symbol, &mut at));
        let symbol = string_at(text, start);
        let epoch = if kind == Some(b"welcome") { string_at(text, value_at(text, &k.epoch, &mut 0)) } else { None };
        Frame { kind, sequence, source_ts, symbol, epoch }
    }
}

/// Where the value after `key` starts when `key` stands right at `at`.
fn next_key(text: &[u8], at: Option<usize>, key: &[u8]) -> Option<usize> {
    let at = at?;
    text.get(at..)?.starts_with(key).then_some(at + key.len())
}

/// Where the value of `key` starts (after the key, blanks, `:` and blanks), looking from `*from` and then,
/// if not there, from the start; on success `*from` moves to the value.
fn value_at(text: &[u8], key: &memmem::Finder<'_>, from: &mut usize) -> Option<usize> {
    let found = match key.find(&text[*from..]) {
        Some(i) => *from + i,
        None if *from > 0 => key.find(text)?,
        None => return None,
    };
    let blank = |mut i: usize| {
        while text.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
            i += 1;
        }
        i
    };
    let colon = blank(found + key.needle().len());
    if text.get(colon) != Some(&b':') {
        return None;
    }
    *from = blank(colon + 1);
    Some(*from)
}

/// A string value without escapes (types, symbols, epochs): the bytes between its quotes.
fn string_at(text: &[u8], start: Option<usize>) -> Option<&[u8]> {
    let rest = text.get(start?..)?.strip_prefix(b"\"")?;
    let value = &rest[..memchr::memchr(b'"', rest)?];
    (!value.contains(&b'\\')).then_some(value)
}

/// An integer value (at most 18 digits), and where it ends.
fn number_at(text: &[u8], start: Option<usize>) -> (Option<i64>, Option<usize>) {
    let Some(mut i) = start else { return (None, None) };
    let negative = text.get(i) == Some(&b'-');
    i += usize::from(negative);
    let first = i;
    let mut n = 0i64;
    while let Some(d) = text.get(i).filter(|d| d.is_ascii_digit()) {
        if i - first == 18 {
            return (None, None);
        }
        n = n * 10 + i64::from(d - b'0');
        i += 1;
    }
    if i == first {
        return (None, None);
    }
    (Some(if negative { -n } else { n }), Some(i))
}

/// What one message from the server was, as far as the connection's state goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Subscribed,
    Error,
    /// An update (or snapshot) with its sequence.
    Update(u64),
    Other,
}

/// Handles one JSON message from the server.
fn on_json(shared: &Shared, seqs: &mut Sequences, text: &[u8]) -> Seen {
    let f = Frame::scan(text);
    match f.kind {
        Some(b"subscribed") => return Seen::Subscribed,
        Some(b"welcome") => {
            let mut epoch = shared.epoch.borrow_mut();
            if let (Some(e), None) = (f.epoch, epoch.as_ref()) {
                *epoch = Some(String::from_utf8_lossy(e).into_owned());
            }
            return Seen::Other;
        }
        Some(b"error") => {
            shared.errors_from_server.set(shared.errors_from_server.get() + 1);
            return Seen::Error;
        }
        _ => {}
    }
    let (Some(seq), Some(symbol)) = (f.sequence, f.symbol) else { return Seen::Other };
    let (gap, dup) = seqs.observe(symbol, seq);
    let mut rec = shared.rec.borrow_mut();
    if rec.recording {
        rec.gaps += gap;
        rec.duplicates += u64::from(dup);
    }
    if f.kind != Some(b"snapshot") && !dup {
        if let Some(ts) = f.source_ts {
            rec.delivery(now_us() - ts);
        }
    }
    Seen::Update(seq)
}

/// Handles one frame of a `/ws` client: a `price_update` is a delivery timed from the close of its
/// interval (its `timestamp`), and the intervals between it and the connection's last one that brought
/// nothing are gaps; an `error` frame is counted.
fn on_price_update(shared: &Shared, last: &mut Option<i64>, text: &[u8], interval_s: i64) {
    if text.starts_with(b"{\"type\":\"error\"") {
        shared.errors_from_server.set(shared.errors_from_server.get() + 1);
        return;
    }
    if !text.starts_with(b"{\"type\":\"price_update\"") {
        return;
    }
    let Some(at) = memmem::rfind(text, b"\"timestamp\":\"") else { return };
    let Some(closed) = text.get(at + 13..at + 33).and_then(epoch_second) else { return };
    let mut rec = shared.rec.borrow_mut();
    if let (Some(before), true) = (*last, rec.recording) {
        rec.gaps += ((closed - before) / interval_s.max(1) - 1).max(0) as u64;
    }
    *last = Some(closed);
    rec.delivery(now_us() - closed * 1_000_000);
}

/// Seconds since the Unix epoch of `2024-12-19T12:00:00Z` (UTC, to the second, as `/ws` stamps frames).
fn epoch_second(t: &[u8]) -> Option<i64> {
    let t = std::str::from_utf8(t).ok()?;
    if t.len() != 20 || !t.ends_with('Z') {
        return None;
    }
    let n = |r: std::ops::Range<usize>| t.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (hh, mm, ss) = (n(11..13)?, n(14..16)?, n(17..19)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// A subscriber: connects, subscribes to `symbols`, then reads until the run stops.
pub async fn subscriber(target: Rc<Target>, symbols: Vec<String>, shared: Rc<Shared>, n: usize) {
    if let Err(e) = subscriber_inner(&target, target.subscriber_addr(n), &symbols, &shared).await {
        if !shared.stop.fired() {
            shared.fail(&e);
        }
    }
}

async fn connect(target: &Target, path: &str, token: Option<&str>) -> anyhow::Result<(TcpStream, BytesMut)> {
    connect_to(target, target.addr, path, token).await
}

async fn connect_to(
    target: &Target,
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<(TcpStream, BytesMut)> {
    let mut stream = TcpStream::connect(addr).await.map_err(|e| anyhow::anyhow!("connect {addr}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| anyhow::anyhow!("set_nodelay: {e}"))?;
    let mut buf = BytesMut::with_capacity(16 * 1024);
    // Only subscribers compress: publishers and idle connections send and receive little.
    let compress = target.compress && path == target.stream_path();
    ws::handshake(&mut stream, &addr.to_string(), path, token, compress, &mut buf).await?;
    Ok((stream, buf))
}

async fn subscriber_inner(
    target: &Target,
    addr: SocketAddr,
    symbols: &[String],
    shared: &Shared,
) -> anyhow::Result<()> {
    let (mut stream, mut buf) = connect_to(target, addr, target.stream_path(), target.token.as_deref()).await?;
    let _watched = shared.stop.watch(&stream);
    let mut rng = SmallRng::from_os_rng();
    let mut out = Vec::with_capacity(256);
    match target.protocol {
        Protocol::Tickwire => {
            let mut req = serde_json::json!({"action":"subscribe","channel":"quotes","symbols":symbols,"id":"load"});
            if let Some(r) = &*shared.resume.borrow() {
                let from: serde_json::Map<String, serde_json::Value> =
                    symbols.iter().map(|s| (s.clone(), r.from.into())).collect();
                req["from_sequence"] = from.into();
                req["epoch"] = r.epoch.clone().into();
            }
            ws::write_frame(&mut out, 1, req.to_string().as_bytes(), &mut rng);
        }
        Protocol::Nats => {
            let mut cmds = String::from("CONNECT {\"verbose\":false,\"pedantic\":false}\r\n");
            for (i, s) in symbols.iter().enumerate() {
                cmds.push_str(&format!("SUB quotes.{s} {}\r\n", i + 1));
            }
            cmds.push_str("PING\r\n");
            ws::write_frame(&mut out, 1, cmds.as_bytes(), &mut rng);
        }
        // Auto-subscribed: nothing to send, and no confirmation to wait for.
        Protocol::Legacy => {}
        Protocol::Portfolio => ws::write_frame(&mut out, 1, br#"{"type":"subscribe","channels":["orders"]}"#, &mut rng),
        Protocol::Fastws => {
            let req = serde_json::json!({"type":"orders.subscribe","payload":{"accountId":target.user}});
            ws::write_frame(&mut out, 1, req.to_string().as_bytes(), &mut rng)
        }
    }
    if !out.is_empty() {
        stream.write_all(&out).await?;
    }
    let mut seqs = Sequences::default();
    let mut confirmed = false;
    let resume = shared.resume.borrow().clone();
    let mut replay_left = resume.as_ref().map_or(0, |r| symbols.len() as u64 * r.upto.saturating_sub(r.from));
    let mut nats = BytesMut::new();
    let mut last_interval: Option<i64> = None;
    if target.protocol == Protocol::Legacy {
        confirmed = true;
        shared.subscribed.set(shared.subscribed.get() + 1);
    }
    loop {
        while let Some((kind, _fin, head, len)) = ws::parse_frame(&buf)? {
            let deflated = ws::is_deflated(&buf);
            buf.advance(head);
            let payload = buf.split_to(len);
            let payload = if deflated { ws::inflate(&payload)? } else { payload.freeze() };
            match (kind, target.protocol) {
                (Kind::Text | Kind::Binary | Kind::Continuation, Protocol::Tickwire) => {
                    match on_json(shared, &mut seqs, &payload) {
                        Seen::Subscribed if !confirmed => {
                            confirmed = true;
                            shared.subscribed.set(shared.subscribed.get() + 1);
                        }
                        Seen::Error if !confirmed => {
                            anyhow::bail!("the server refused the subscription: {}", String::from_utf8_lossy(&payload))
                        }
                        Seen::Update(seq) if replay_left > 0 && resume.as_ref().is_some_and(|r| seq <= r.upto) => {
                            replay_left -= 1;
                            if replay_left == 0 {
                                shared.resumed.set(shared.resumed.get() + 1);
                            }
                        }
                        _ => {}
                    }
                }
                (Kind::Text | Kind::Binary | Kind::Continuation, Protocol::Legacy) => {
                    on_price_update(shared, &mut last_interval, &payload, target.interval_s as i64)
                }
                (Kind::Text | Kind::Binary | Kind::Continuation, Protocol::Portfolio | Protocol::Fastws) => {
                    match on_orders(shared, &mut seqs, &payload) {
                        Seen::Subscribed if !confirmed => {
                            confirmed = true;
                            shared.subscribed.set(shared.subscribed.get() + 1);
                        }
                        Seen::Error if !confirmed => {
                            anyhow::bail!("the server refused the subscription: {}", String::from_utf8_lossy(&payload))
                        }
                        _ => {}
                    }
                }
                (Kind::Text | Kind::Binary | Kind::Continuation, Protocol::Nats) => {
                    nats.extend_from_slice(&payload);
                    let mut reply = Vec::new();
                    let pongs = nats_messages(
                        &mut nats,
                        |msg| {
                            on_json(shared, &mut seqs, msg);
                        },
                        &mut reply,
                    )?;
                    if pongs > 0 && !confirmed {
                        confirmed = true;
                        shared.subscribed.set(shared.subscribed.get() + 1);
                    }
                    if !reply.is_empty() {
                        out.clear();
                        ws::write_frame(&mut out, 1, &reply, &mut rng);
                        stream.write_all(&out).await?;
                    }
                }
                (Kind::Ping, _) => {
                    out.clear();
                    ws::write_frame(&mut out, 10, &payload, &mut rng);
                    stream.write_all(&out).await?;
                }
                (Kind::Pong, _) => {}
                (Kind::Close, _) => anyhow::bail!("server closed the connection"),
            }
        }
        match shared.stop.read(&mut stream, &mut buf, 64 * 1024).await {
            None => return Ok(()),
            Some(Ok(0)) => anyhow::bail!("server closed the connection"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
        }
    }
}

/// Parses whole NATS protocol messages out of `buf`: `MSG` payloads go to `on_msg`, server `PING`s are
/// answered in `reply`; returns how many `PONG`s were seen.
fn nats_messages(buf: &mut BytesMut, mut on_msg: impl FnMut(&[u8]), reply: &mut Vec<u8>) -> anyhow::Result<usize> {
    let mut pongs = 0;
    loop {
        let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else { return Ok(pongs) };
        let line = std::str::from_utf8(&buf[..eol])?.to_owned();
        if let Some(rest) = line.strip_prefix("MSG ") {
            let len: usize = rest
                .split_whitespace()
                .last()
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| anyhow::anyhow!("bad MSG line"))?;
            if buf.len() < eol + 2 + len + 2 {
                return Ok(pongs);
            }
            on_msg(&buf[eol + 2..eol + 2 + len]);
            buf.advance(eol + 2 + len + 2);
            continue;
        }
        buf.advance(eol + 2);
        if line == "PING" {
            reply.extend_from_slice(b"PONG\r\n");
        } else if line == "PONG" {
            pongs += 1;
        } else if line.starts_with("-ERR") {
            anyhow::bail!("nats: {line}");
        }
    }
}

/// What the publisher sent in the measured phase.
#[derive(Debug, Default, Clone)]
pub struct Published {
    /// Events sent per symbol index.
    pub per_symbol: Vec<u64>,
    pub total: u64,
    /// How far behind its schedule the publisher fell at worst, in microseconds.
    pub max_lag_us: i64,
}

/// The open-loop publisher: `rate` events/s over `symbols` for `duration`, one event per frame.
pub async fn publish(
    target: &Target,
    symbols: &[String],
    rate: f64,
    duration: Duration,
    next_seq: &mut [u64],
) -> anyhow::Result<Published> {
    let (mut stream, _buf) = connect(target, target.publish_path(), target.publish_token.as_deref()).await?;
    let mut rng = SmallRng::from_os_rng();
    let mut out = Vec::with_capacity(64 * 1024);
    if target.protocol == Protocol::Nats {
        ws::write_frame(&mut out, 1, b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\n", &mut rng);
        stream.write_all(&out).await?;
    }
    let mut published = Published { per_symbol: vec![0; symbols.len()], ..Published::default() };
    let start = Instant::now();
    let start_us = now_us();
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let mut sent = 0u64;
    let mut event = Vec::with_capacity(256);
    let mut nats_cmd = Vec::with_capacity(320);
    while sent < total {
        let due = ((rate * start.elapsed().as_secs_f64()) as u64).min(total);
        if due == sent {
            tokio::time::sleep(Duration::from_micros(250)).await;
            continue;
        }
        out.clear();
        while sent < due {
            let i = (sent % symbols.len() as u64) as usize;
            next_seq[i] += 1;
            // The schedule: event n is due at start + n / rate.
            let due_at = start_us + (sent as f64 * 1e6 / rate) as i64;
            let now = now_us();
            published.max_lag_us = published.max_lag_us.max(now - due_at);
            event.clear();
            match target.protocol {
                Protocol::Portfolio | Protocol::Fastws => write_order(&mut event, &target.user, next_seq[i], now),
                _ => write_event(&mut event, &symbols[i], next_seq[i], now),
            }
            match target.protocol {
                Protocol::Tickwire | Protocol::Legacy | Protocol::Portfolio | Protocol::Fastws => {
                    ws::write_frame(&mut out, 1, &event, &mut rng)
                }
                Protocol::Nats => {
                    nats_cmd.clear();
                    nats_cmd.extend_from_slice(format!("PUB quotes.{} {}\r\n", symbols[i], event.len()).as_bytes());
                    nats_cmd.extend_from_slice(&event);
                    nats_cmd.extend_from_slice(b"\r\n");
                    ws::write_frame(&mut out, 1, &nats_cmd, &mut rng);
                }
            }
            published.per_symbol[i] += 1;
            sent += 1;
        }
        stream.write_all(&out).await?;
    }
    published.total = sent;
    Ok(published)
}

/// An order of `user` whose id carries its number and publish time.
fn write_order(out: &mut Vec<u8>, user: &str, seq: u64, now: i64) {
    use std::io::Write;
    let _ = write!(
        out,
        "{{\"channel\":\"orders\",\"user_id\":\"{user}\",\"data\":{{\"order_id\":\"o-{seq}-{now}\",\"symbol\":\"AAPL\",\"side\":\"buy\",\"type\":\"market\",\"status\":\"new\",\"qty\":1}}}}"
    );
}

/// Handles one frame of a private dialect's client (`/ws/portfolio`, `/api/v1/ws`): its subscription's
/// confirmation, an error, or orders, each id `o-SEQ-MICROS` a delivery (several in a batch).
fn on_orders(shared: &Shared, seqs: &mut Sequences, text: &[u8]) -> Seen {
    let head = &text[..text.len().min(64)];
    if memmem::find(head, b"\"type\":\"error\"").is_some() || memmem::find(text, b"\"status\":\"error\"").is_some() {
        shared.errors_from_server.set(shared.errors_from_server.get() + 1);
        return Seen::Error;
    }
    if memmem::find(head, b"\"type\":\"info\"").is_some() || memmem::find(head, b".subscribe.response\"").is_some() {
        return Seen::Subscribed;
    }
    let mut seen = Seen::Other;
    for at in memmem::find_iter(text, b"\"o-") {
        let id = &text[at + 3..];
        let Some(dash) = memchr::memchr(b'-', id) else { continue };
        let (Ok(seq), Some(end)) =
            (std::str::from_utf8(&id[..dash]).unwrap_or("").parse::<u64>(), memchr::memchr(b'"', id))
        else {
            continue;
        };
        let Ok(ts) = std::str::from_utf8(&id[dash + 1..end]).unwrap_or("").parse::<i64>() else { continue };
        let (gap, dup) = seqs.observe(b"orders", seq);
        let mut rec = shared.rec.borrow_mut();
        if rec.recording {
            rec.gaps += gap;
            rec.duplicates += u64::from(dup);
        }
        if !dup {
            rec.delivery(now_us() - ts);
        }
        seen = Seen::Update(seq);
    }
    seen
}

fn write_event(out: &mut Vec<u8>, symbol: &str, seq: u64, source_ts: i64) {
    use std::io::Write;
    let _ = write!(
        out,
        "{{\"channel\":\"quotes\",\"sequence\":{seq},\"source_ts\":{source_ts},\"data\":{{\"symbol\":\"{symbol}\",\"bid\":185.5,\"ask\":185.52,\"last\":185.51,\"bid_size\":300,\"ask_size\":200,\"volume\":45000000}}}}"
    );
}

/// An idle connection: upgrades, then only answers pings until the run stops.
pub async fn idle(target: Rc<Target>, shared: Rc<Shared>) {
    let result = async {
        let (mut stream, mut buf) = connect(&target, target.stream_path(), target.token.as_deref()).await?;
        let _watched = shared.stop.watch(&stream);
        shared.subscribed.set(shared.subscribed.get() + 1);
        let mut rng = SmallRng::from_os_rng();
        loop {
            while let Some((kind, _, head, len)) = ws::parse_frame(&buf)? {
                buf.advance(head);
                let payload = buf.split_to(len);
                if kind == Kind::Ping {
                    let mut out = Vec::new();
                    ws::write_frame(&mut out, 10, &payload, &mut rng);
                    stream.write_all(&out).await?;
                }
            }
            match shared.stop.read(&mut stream, &mut buf, 4096).await {
                None => return Ok(()),
                Some(Ok(0)) => anyhow::bail!("server closed the connection"),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(anyhow::Error::from(e)),
            }
        }
    }
    .await;
    if let Err(e) = result {
        if !shared.stop.fired() {
            shared.fail(&e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firing_the_signal_ends_a_pending_read_and_a_dropped_watch_forgets_its_socket() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let mut client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
            let (_server, _) = listener.accept().await.unwrap(); // open, silent
            let signal = Signal::default();
            let watched = signal.watch(&client);
            let mut buf = BytesMut::new();
            let fire = async {
                tokio::task::yield_now().await;
                signal.fire();
            };
            // A guard against a hang (what a read the signal cannot end would do), not a timing check.
            let both = async { tokio::join!(signal.read(&mut client, &mut buf, 1024), fire) };
            let (read, ()) = tokio::time::timeout(Duration::from_secs(10), both).await.expect("the read ended");
            assert!(read.is_none(), "the pending read ended when the signal fired");
            assert!(signal.read(&mut client, &mut buf, 1024).await.is_none(), "later reads end at once");
            assert!(signal.sockets.borrow().is_empty(), "firing forgets the sockets it shut down");
            drop(watched);
            let late = signal.watch(&client);
            assert_eq!(signal.sockets.borrow().len(), 1);
            drop(late);
            assert!(signal.sockets.borrow().is_empty(), "a dropped watch forgets its socket");
        });
    }

    #[test]
    fn nats_stream_parsing_handles_splits() {
        let wire = b"INFO {}\r\nMSG quotes.A 1 5\r\nhello\r\nPING\r\nPONG\r\nMSG quotes.B 2 3\r\nabc\r\n";
        for cut in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            let mut msgs = Vec::new();
            let mut reply = Vec::new();
            let mut pongs = nats_messages(&mut buf, |m| msgs.push(m.to_vec()), &mut reply).unwrap();
            buf.extend_from_slice(&wire[cut..]);
            pongs += nats_messages(&mut buf, |m| msgs.push(m.to_vec()), &mut reply).unwrap();
            assert_eq!(msgs, [b"hello".to_vec(), b"abc".to_vec()], "cut at {cut}");
            assert_eq!((pongs, reply.as_slice()), (1, &b"PONG\r\n"[..]));
        }
    }

    #[test]
    fn the_scan_finds_the_fields_of_every_frame_the_generator_reads() {
        let tickwire = br#"{"type":"quote","channel":"quotes","sequence":42,"timestamp":"2026-12-01T10:00:00.000001Z","source_ts":1764583200000001,"data":{"symbol":"BRK.B","bid":1.5,"bid_size":3}}"#;
        let want = Frame {
            kind: Some(&b"quote"[..]),
            sequence: Some(42),
            source_ts: Some(1_764_583_200_000_001),
            symbol: Some(&b"BRK.B"[..]),
            epoch: None,
        };
        assert_eq!(Frame::scan(tickwire), want);
        // A peer relaying the generator's own event, and one that writes blanks around the colons.
        let mut relayed = Vec::new();
        write_event(&mut relayed, "AAPL", 7, -3);
        let f = Frame::scan(&relayed);
        assert_eq!((f.kind, f.sequence, f.source_ts, f.symbol), (None, Some(7), Some(-3), Some(&b"AAPL"[..])));
        let spaced = br#"{ "channel" : "quotes", "sequence": 999, "source_ts": 1, "data" : { "symbol" : "MSFT" } }"#;
        let f = Frame::scan(spaced);
        assert_eq!((f.sequence, f.source_ts, f.symbol), (Some(999), Some(1), Some(&b"MSFT"[..])));
        // Keys in another order are found too (from the start, once the ordered pass misses them).
        let shuffled = br#"{"data":{"symbol":"X"},"source_ts":5,"sequence":6,"type":"trade"}"#;
        let f = Frame::scan(shuffled);
        assert_eq!(
            (f.kind, f.sequence, f.source_ts, f.symbol),
            (Some(&b"trade"[..]), Some(6), Some(5), Some(&b"X"[..]))
        );
        let welcome = br#"{"type":"welcome","protocol":1,"connection_id":"c-0-1","epoch":"18f3a","heartbeat_s":30}"#;
        assert_eq!(
            (Frame::scan(welcome).kind, Frame::scan(welcome).epoch),
            (Some(&b"welcome"[..]), Some(&b"18f3a"[..]))
        );
        // What is not there, or not what it should be, is None.
        assert_eq!(Frame::scan(br#"{"type":"pong"}"#).sequence, None);
        assert_eq!(Frame::scan(br#"{"sequence":"7","data":{"symbol":"A\"B"}}"#), Frame::default());
        assert_eq!(Frame::scan(br#"{"sequence":99999999999999999999}"#).sequence, None, "too long");
        assert_eq!(Frame::scan(b"{\"type\":\"quo").kind, None, "cut short");
        assert_eq!(Frame::scan(b"").kind, None);
    }

    #[test]
    fn frames_count_once_and_snapshots_set_the_baseline() {
        let shared = Shared::default();
        shared.rec.borrow_mut().recording = true;
        let mut seqs = Sequences::default();
        let now = now_us();
        let f = |t: &str, seq: u64| {
            format!("{{\"type\":\"{t}\",\"sequence\":{seq},\"source_ts\":{now},\"data\":{{\"symbol\":\"A\"}}}}")
        };
        assert_eq!(on_json(&shared, &mut seqs, br#"{"type":"subscribed","id":"load"}"#), Seen::Subscribed);
        assert_eq!(on_json(&shared, &mut seqs, br#"{"type":"error","code":"X"}"#), Seen::Error);
        assert_eq!(shared.errors_from_server.get(), 1);
        on_json(&shared, &mut seqs, f("snapshot", 5).as_bytes());
        on_json(&shared, &mut seqs, f("quote", 6).as_bytes());
        on_json(&shared, &mut seqs, f("quote", 9).as_bytes());
        on_json(&shared, &mut seqs, f("quote", 9).as_bytes());
        let rec = shared.rec.borrow();
        assert_eq!((rec.delivered, rec.gaps, rec.duplicates), (2, 2, 1));
        let mut ev = Vec::new();
        write_event(&mut ev, "AAPL", 3, 17);
        let v: serde_json::Value = serde_json::from_slice(&ev).unwrap();
        assert_eq!((v["sequence"].as_u64(), v["data"]["symbol"].as_str()), (Some(3), Some("AAPL")));
    }

    #[test]
    fn a_price_update_is_timed_from_its_intervals_close_and_missed_intervals_are_gaps() {
        assert_eq!(epoch_second(b"1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(epoch_second(b"2024-12-19T12:00:00Z"), Some(1_734_609_600));
        assert_eq!(epoch_second(b"2000-03-01T00:00:01Z"), Some(951_868_801));
        assert_eq!(epoch_second(b"2024-12-19T12:00:00"), None);
        let shared = Shared::default();
        shared.rec.borrow_mut().recording = true;
        let mut last = None;
        let frame = |t: &str| format!(r#"{{"type":"price_update","symbols":{{}},"timestamp":"{t}"}}"#);
        for t in ["2024-12-19T12:00:00Z", "2024-12-19T12:00:01Z", "2024-12-19T12:00:04Z"] {
            on_price_update(&shared, &mut last, frame(t).as_bytes(), 1);
        }
        let rec = shared.rec.borrow();
        assert_eq!((rec.delivered, rec.gaps), (3, 2), "12:00:02 and 12:00:03 brought nothing");
        drop(rec);
        on_price_update(&shared, &mut last, br#"{"type":"error","error":"x","timestamp":"2024-12-19T12:00:05Z"}"#, 1);
        assert_eq!(shared.errors_from_server.get(), 1);
    }
}
