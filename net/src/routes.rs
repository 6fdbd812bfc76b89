//! HTTP on the shard's port: request heads with a deadline, the WebSocket upgrades, and the REST endpoints.

use std::net::IpAddr;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use serde::Serialize;
use tickwire_core::channel::{Scope, CATALOG};
use tickwire_core::event::parse_publish;
use tickwire_core::protocol as dialects;

use crate::auth::{find_token, Identity, Role};
use crate::http::{self, parse_request, HttpError, Request};
use crate::limits::origin_allowed;
use crate::metrics;
use crate::session::{self, Kind};
use crate::shard::Shard;
use crate::store::Durability;
use tickwire_fanout::engine::ConnId;

/// How long a connection refused after its upgrade waits for the client to close.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// Serves one accepted TCP connection: through TLS when configured (the handshake within the handshake
/// deadline), then [`serve`]. `fd` is the plain TCP socket of `stream`; `key` its number on this shard
/// (its id in logs, [`ConnId`]).
pub async fn accept<S>(shard: Rc<Shard>, stream: S, fd: Option<RawFd>, ip: Option<IpAddr>, key: u64)
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let Some(acceptor) = shard.shared.security.tls.clone() else { return serve(shard, stream, fd, ip, key).await };
    let conn = ConnId(shard.id, key);
    let deadline = Duration::from_secs(shard.shared.config.handshake_timeout_s);
    let handshake = glommio::timer::timeout(deadline, async { Ok(acceptor.accept(stream).await) }).await;
    match handshake {
        // Sessions must not write to the socket under TLS: no `fd`.
        Ok(Ok(tls)) => serve(shard, tls, None, ip, key).await,
        Ok(Err(e)) => tracing::debug!(%conn, ?ip, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%conn, ?ip, "TLS handshake timed out"),
    }
}

/// Serves one accepted connection: HTTP requests (kept alive) until an upgrade or the end. `fd` is its
/// plain TCP socket, which WebSocket sessions may write to directly (see [`session::Conn::send_update`]);
/// `None` for streams such as TLS.
pub async fn serve<S>(shard: Rc<Shard>, mut stream: S, fd: Option<RawFd>, ip: Option<IpAddr>, key: u64)
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let config = &shard.shared.config;
    let deadline = Duration::from_secs(config.handshake_timeout_s);
    // Small: the buffer (and what is left of it) stays with a WebSocket session for its life.
    let mut buf = BytesMut::with_capacity(HTTP_READ_CHUNK);
    loop {
        let head = glommio::timer::timeout(deadline, async {
            Ok(read_request(&mut stream, &mut buf, config.max_header_bytes, config.max_body_bytes).await)
        })
        .await;
        let (req, body) = match head {
            Err(_) => {
                let _ = stream.write_all(&http::error(408, "request not received in time", false)).await;
                return;
            }
            Ok(Err(e)) => {
                let _ = stream.write_all(&http::error(e.status, &e.message, false)).await;
                return;
            }
            Ok(Ok(None)) => return,
            Ok(Ok(Some(r))) => r,
        };
        let keep_alive = req.keep_alive();
        if req.method == "GET" {
            let kind = match req.path.as_str() {
                "/v1/publish" => Some(Kind::Publisher),
                path if config.echo_path.as_deref() == Some(path) => Some(Kind::Echo),
                path => dialects::by_path(path)
                    .filter(|d| d.name != "legacy" || shard.shared.config.legacy_enabled)
                    .map(|d| Kind::Subscriber(d.id)),
            };
            if let Some(kind) = kind {
                return upgrade(shard, stream, fd, buf, req, kind, ip, key).await;
            }
        }
        let resp = route(&shard, &req, &body, keep_alive, ConnId(shard.id, key)).await;
        if stream.write_all(&resp).await.is_err() || !keep_alive {
            let _ = stream.close().await;
            return;
        }
    }
}

/// Reads one request head and its body. `Ok(None)`: the peer closed before a request.
async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    max_head: usize,
    max_body: usize,
) -> Result<Option<(Request, BytesMut)>, HttpError> {
    // Reads go straight into `buf`: a buffer inside this future would stay allocated for the whole life of
    // the connection task (a future is as large as its largest state).
    loop {
        if let Some((req, head_len)) = parse_request(buf, max_head, max_body)? {
            buf.advance(head_len);
            while buf.len() < req.content_length {
                if read_more(stream, buf).await? == 0 {
                    return Err(HttpError::new(400, "body shorter than Content-Length"));
                }
            }
            let body = buf.split_to(req.content_length);
            return Ok(Some((req, body)));
        }
        if read_more(stream, buf).await? == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            return Err(HttpError::new(400, "truncated request"));
        }
    }
}

/// Bytes read at a time from an HTTP client; a WebSocket upgrade request usually fits in one read.
const HTTP_READ_CHUNK: usize = 512;

/// Appends what one read returns to `buf`.
async fn read_more<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut BytesMut) -> Result<usize, HttpError> {
    let start = buf.len();
    buf.resize(start + HTTP_READ_CHUNK, 0);
    let n = stream.read(&mut buf[start..]).await.map_err(|e| HttpError::new(400, e.to_string()));
    buf.truncate(start + *n.as_ref().unwrap_or(&0));
    n
}

/// The caller's identity: `Ok(None)` for no token, `Err` for a bad one.
fn authenticate(shard: &Shard, req: &Request) -> Result<Option<Identity>, String> {
    match find_token(req.authorization.as_deref(), req.query("token"), req.cookie.as_deref()) {
        None => Ok(None),
        Some(token) => shard.shared.auth.verify(token).map(Some).map_err(|e| e.to_string()),
    }
}

#[allow(clippy::too_many_arguments)]
async fn upgrade<S>(
    shard: Rc<Shard>,
    mut stream: S,
    fd: Option<RawFd>,
    buf: BytesMut,
    req: Request,
    kind: Kind,
    ip: Option<IpAddr>,
    key: u64,
) where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let refuse = |status: u16, msg: &str| (status, msg.to_owned());
    // Seed 002's endpoint answers a missing or bad token after the upgrade, with a close.
    let session = matches!(kind, Kind::Subscriber(d) if d.entry().auth == dialects::Auth::Session);
    let answer = (|| {
        if !req.is_upgrade() || req.ws_key.is_none() {
            return Err(refuse(400, "expected a WebSocket upgrade (Upgrade: websocket, Sec-WebSocket-Key)"));
        }
        if req.ws_version.as_deref().map(str::trim) != Some("13") {
            return Err(refuse(426, "Sec-WebSocket-Version must be 13"));
        }
        if !origin_allowed(&shard.shared.config.allowed_origins, req.origin.as_deref()) {
            return Err(refuse(403, "origin not allowed"));
        }
        if session {
            return Ok(authenticate(&shard, &req).ok().flatten());
        }
        let identity = authenticate(&shard, &req).map_err(|e| refuse(401, &e))?;
        match (kind, &identity) {
            (Kind::Publisher, None) => {
                return Err(refuse(401, "publishing needs a token with role publisher or admin"))
            }
            (Kind::Publisher, Some(i)) if !i.role.can_publish() => {
                return Err(refuse(403, "publishing needs role publisher or admin"));
            }
            (Kind::Subscriber(d), None)
                if d.entry().auth == dialects::Auth::Required && !shard.shared.config.allow_anonymous =>
            {
                return Err(refuse(401, "a token is required"));
            }
            _ => {}
        }
        Ok(identity)
    })();
    let identity = match answer {
        Ok(identity) => identity,
        Err((status, why)) => {
            // Debug: a client retrying in a loop must not flood the log. The reason names no credential.
            tracing::debug!(conn = %ConnId(shard.id, key), ?ip, status, path = %req.path, "upgrade refused: {why}");
            let _ = stream.write_all(&http::error(status, &why, false)).await;
            let _ = stream.close().await;
            return;
        }
    };
    let ws_key = req.ws_key.as_deref().unwrap_or_default().trim();
    let mut accept: http::AcceptKey = [0; 28];
    accept.copy_from_slice(tungstenite::handshake::derive_accept_key(ws_key.as_bytes()).as_bytes());
    let deflate = req
        .ws_extensions
        .as_deref()
        .filter(|_| shard.shared.config.compression)
        .and_then(tickwire_core::deflate::negotiate);
    // On a plain socket the answer waits, to go out with what follows it in one `send` (the welcome, or the
    // refusal's close frame); through TLS it goes now.
    let answer = if fd.is_some() {
        Some(accept)
    } else {
        let tail = http::extensions_tail(deflate.as_ref());
        if stream.write_all(&http::switching_protocols(&accept, &tail)).await.is_err() {
            return;
        }
        None
    };
    // Connection limits, counted across shards; the slot is held for the whole session.
    let user = identity.as_ref().filter(|_| kind.is_subscriber()).map(|i| &i.user);
    let admitted = if session && identity.is_none() {
        Err(None)
    } else {
        shard.shared.security.limits.admit(ip, user).map_err(Some)
    };
    let slot = match admitted {
        Ok(slot) => slot,
        Err(refusal) => {
            let (code, reason) = match &refusal {
                Some(refusal) => refusal.close(),
                None => (tickwire_core::ws::close::POLICY_VIOLATION, "Authentication required"),
            };
            shard.stats().connections_refused.fetch_add(1, Ordering::Relaxed);
            // Debug, not info: a client retrying in a loop must not turn into a flood of log lines.
            let conn = ConnId(shard.id, key);
            tracing::debug!(%conn, ?ip, user = user.map(|u| &**u), ?refusal, "connection refused: {reason}");
            let mut out = answer.map_or_else(Vec::new, |a| http::switching_protocols(&a, &http::extensions_tail(None)));
            out.extend_from_slice(&tickwire_core::ws::close_frame(code, reason));
            let _ = stream.write_all(&out).await;
            let _ = stream.close().await;
            // Lingering close, briefly: unread input at close would reset the connection and could
            // destroy the close frame before the client reads it.
            let _ = glommio::timer::timeout(REFUSAL_LINGER, async {
                let mut sink = [0u8; 512];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                Ok(())
            })
            .await;
            return;
        }
    };
    let client_id = req.query("client_id").filter(|c| !c.is_empty() && c.len() <= 128).map(str::to_owned);
    // The session runs as a task of its own and this one ends: the HTTP side's state (the largest part of
    // this task, several KiB) is not kept for the life of every WebSocket connection.
    // It holds the connection-limit slot until it ends.
    let session = session::run(shard, slot, stream, fd, answer, deflate, buf, kind, identity, client_id, ip, key);
    glommio::spawn_local(session).detach();
}

async fn route(shard: &Rc<Shard>, req: &Request, body: &[u8], keep_alive: bool, conn: ConnId) -> Vec<u8> {
    if req.method == "GET" {
        if let Some(a) = crate::web::find(&req.path) {
            return asset(a, keep_alive);
        }
    }
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/healthz") => healthz(shard, keep_alive),
        ("GET", "/api/ws/channels") => http::json(200, &channels_json(), keep_alive),
        ("GET", "/api/v1/ws/asyncapi.json") => http::json(200, crate::asyncapi::FASTWS.as_bytes(), keep_alive),
        ("GET", "/api/v1/ws/asyncapi") => asyncapi_page(crate::asyncapi::FASTWS, keep_alive),
        ("GET", "/api/ws/asyncapi.json") => http::json(200, crate::asyncapi::STREAM.as_bytes(), keep_alive),
        ("GET", "/api/ws/asyncapi") => asyncapi_page(crate::asyncapi::STREAM, keep_alive),
        ("GET", "/api/ws/status") => http::json(200, &status_json(shard), keep_alive),
        ("GET", "/api/ws/stats") => http::json(200, &metrics::stats_json(&shard.shared), keep_alive),
        ("GET", "/websocket/status") => http::json(200, &websocket_status_json(shard), keep_alive),
        ("POST", "/api/publish") => publish(shard, req, body, keep_alive).await,
        ("GET", "/metrics") => {
            http::response(200, metrics::CONTENT_TYPE, metrics::render_prometheus(&shard.shared).as_bytes(), keep_alive)
        }
        ("GET", "/api/admin/websocket-stats") => admin_stats(shard, req, keep_alive),
        ("GET", "/api/ws/token") => token(shard, req, keep_alive, conn),
        ("GET", "/api/ws/signing-key") => http::json(200, &shard.shared.security.signer.key_json(), keep_alive),
        ("POST", "/api/admin/debug/stall" | "/api/admin/debug/release") if shard.shared.config.debug_endpoints => {
            debug_stall(shard, req, keep_alive)
        }
        (
            _,
            "/api/ws/token"
            | "/api/ws/signing-key"
            | "/healthz"
            | "/api/ws/channels"
            | "/api/v1/ws/asyncapi.json"
            | "/api/v1/ws/asyncapi"
            | "/api/ws/asyncapi.json"
            | "/api/ws/asyncapi"
            | "/api/ws/status"
            | "/websocket/status"
            | "/api/publish"
            | "/v1/publish"
            | "/metrics"
            | "/api/admin/websocket-stats",
        ) => http::error(405, &format!("method {} not allowed here", req.method), keep_alive),
        // A GET of a dialect's path gets here only when that endpoint is turned off: 404.
        (method, path) if method != "GET" && dialects::by_path(path).is_some() => {
            http::error(405, &format!("method {} not allowed here", req.method), keep_alive)
        }
        _ => http::error(
            404,
            &format!("no such endpoint: {}", req.path.chars().take(80).collect::<String>()),
            keep_alive,
        ),
    }
}

/// The readable page of an AsyncAPI document: static HTML, no script or style, so the strictest policy.
fn asyncapi_page(document: &str, keep_alive: bool) -> Vec<u8> {
    let body = crate::asyncapi::html(document);
    let resp = http::response(200, "text/html; charset=utf-8", body.as_bytes(), keep_alive);
    http::with_headers(resp, b"Content-Security-Policy: default-src 'none'\r\n")
}

/// An embedded web asset (the monitor page, the JavaScript client).
fn asset(asset: &crate::web::Asset, keep_alive: bool) -> Vec<u8> {
    let resp = http::response(200, asset.content_type, asset.body.as_bytes(), keep_alive);
    http::with_headers(resp, crate::web::headers(asset).as_bytes())
}

/// 200 while every shard runs its timers; 503 while one's last tick is over a second old (it recovers by
/// itself when the shard ticks again).
fn healthz(shard: &Shard, keep_alive: bool) -> Vec<u8> {
    let stalled = metrics::stalled_shards(&shard.shared);
    if stalled.is_empty() {
        return http::json(200, b"{\"status\":\"ok\"}", keep_alive);
    }
    #[derive(Serialize)]
    struct Stalled {
        shard: usize,
        lag_ms: u64,
    }
    #[derive(Serialize)]
    struct Unhealthy {
        status: &'static str,
        stalled_shards: Vec<Stalled>,
    }
    let stalled_shards = stalled.into_iter().map(|(shard, lag_ms)| Stalled { shard, lag_ms }).collect();
    http::json(503, &to_json(&Unhealthy { status: "unavailable", stalled_shards }), keep_alive)
}

/// A cold-path answer as JSON (its types are ours: serializing them cannot fail).
fn to_json(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// The admin stats: 401 without a (valid) token, 403 unless its role is admin.
fn admin_stats(shard: &Shard, req: &Request, keep_alive: bool) -> Vec<u8> {
    match authenticate(shard, req) {
        Err(e) => http::error(401, &e, keep_alive),
        Ok(None) => http::error(401, "the admin stats need a token with role admin", keep_alive),
        Ok(Some(i)) if i.role != Role::Admin => http::error(403, "the admin stats need role admin", keep_alive),
        Ok(Some(_)) => http::json(200, &metrics::admin_stats_json(&shard.shared), keep_alive),
    }
}

/// The debug endpoints (only with `debug_endpoints`, admin role): `POST /api/admin/debug/stall?ms=N` blocks
/// every other shard's thread for N ms (at most 10 s) or until `POST /api/admin/debug/release`, answering
/// at once with the shards it stalls.
fn debug_stall(shard: &Shard, req: &Request, keep_alive: bool) -> Vec<u8> {
    match authenticate(shard, req) {
        Err(e) => return http::error(401, &e, keep_alive),
        Ok(None) => return http::error(401, "the debug endpoints need a token with role admin", keep_alive),
        Ok(Some(i)) if i.role != Role::Admin => {
            return http::error(403, "the debug endpoints need role admin", keep_alive)
        }
        Ok(Some(_)) => {}
    }
    if req.path == "/api/admin/debug/release" {
        crate::shard::debug_stall::release();
        return http::json(200, b"{\"released\":true}", keep_alive);
    }
    let Some(ms) = req.query("ms").and_then(|v| v.parse::<u64>().ok()).filter(|&ms| ms <= 10_000) else {
        return http::error(400, "ms must be a number of milliseconds up to 10000", keep_alive);
    };
    #[derive(Serialize)]
    struct Stalling {
        stalled_shards: Vec<usize>,
        ms: u64,
    }
    http::json(200, &to_json(&Stalling { stalled_shards: shard.stall_peers(ms), ms }), keep_alive)
}

/// `GET /api/ws/token`: an API key (`X-API-Key`) exchanged for a short-lived user token.
fn token(shard: &Shard, req: &Request, keep_alive: bool, conn: ConnId) -> Vec<u8> {
    let security = &shard.shared.security;
    let Some(key) = req.api_key.as_deref().filter(|k| !k.is_empty()) else {
        return http::error(401, "send an API key in the X-API-Key header", keep_alive);
    };
    let Some(user) = security.api_keys.user(key) else {
        tracing::info!(%conn, "token request with an unknown API key");
        return http::error(401, "unknown API key", keep_alive);
    };
    let now = crate::util::now_secs();
    let ttl = shard.shared.config.token_ttl_s;
    let token = shard.shared.auth.issue(&user, Role::User, now, ttl);
    // The URL names the host the client reached, when it looks like a host name.
    let host = req
        .host
        .as_deref()
        .map(str::trim)
        .filter(|h| {
            !h.is_empty() && h.len() <= 255 && h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .map_or_else(|| shard.shared.config.listen.to_string(), str::to_owned);
    #[derive(Serialize)]
    struct Issued {
        token: String,
        expires_at: String,
        url: String,
    }
    let mut at = Vec::new();
    tickwire_core::time::write_rfc3339(((now + ttl) * 1_000_000) as i64, &mut at);
    let expires_at = String::from_utf8(at).unwrap_or_default();
    let url = format!("{}://{host}/v1/stream", security.ws_scheme());
    http::json(200, &to_json(&Issued { token, expires_at, url }), keep_alive)
}

/// A critical publish while the database is known to be down.
const DATABASE_UNAVAILABLE: &str =
    "the database is unavailable: critical events (orders, executions, alerts) are not accepted until it returns; retry later";
/// A critical publish whose events were not committed in time.
const NOT_DURABLE: &str = "critical events were not confirmed durable in time (database slow or unavailable); they may have reached online subscribers: retry (delivery is at least once, so a retry may deliver a second copy)";

/// A publish whose events the cluster's bus did not store in time.
const NOT_STORED: &str = "the cluster's bus (NATS JetStream) did not confirm these events stored in time; some may have been stored and delivered: retry (a retry may deliver a second copy)";

async fn publish(shard: &Rc<Shard>, req: &Request, body: &[u8], keep_alive: bool) -> Vec<u8> {
    match authenticate(shard, req) {
        Err(e) => return http::error(401, &e, keep_alive),
        Ok(None) => return http::error(401, "publishing needs a token with role publisher or admin", keep_alive),
        Ok(Some(i)) if !i.role.can_publish() => {
            return http::error(403, "publishing needs role publisher or admin", keep_alive)
        }
        Ok(Some(_)) => {}
    }
    let events = match parse_publish(body) {
        Ok(events) => events,
        Err(e) => {
            count_refused(shard, body);
            return http::error(400, &e.to_string(), keep_alive);
        }
    };
    // Checked with no wait before the events are handed to their owners: this shard's drain, a task of the
    // same thread, sends its `Quiesce` after them.
    if shard.stopping() {
        return http::with_headers(http::error(503, crate::shard::STOPPING, keep_alive), b"Retry-After: 1\r\n");
    }
    if shard.shared.bus.as_ref().is_some_and(|b| !b.usable()) {
        return http::error(503, crate::bus::UNAVAILABLE, keep_alive);
    }
    let n = events.len();
    let store = &shard.shared.store;
    let critical = events.iter().any(|e| e.channel.is_critical());
    if critical && store.durable() && !store.accepts_critical() {
        return http::error(503, DATABASE_UNAVAILABLE, keep_alive);
    }
    shard.stats().published.fetch_add(n as u64, Ordering::Relaxed);
    let mut published = shard.publish(events).await;
    let timeout = Duration::from_millis(shard.shared.config.durable_timeout_ms);
    let mut durability = crate::store::durability(published.receipts, timeout).await;
    if !published.forwarded.is_empty() {
        // The cluster's bus sequences: the answer waits until the stream stored every event.
        let receipts = published.forwarded.into_iter().map(|(_, _, r)| r).collect();
        let Some(sequences) = crate::store::sequenced(receipts, timeout).await else {
            return http::error(503, NOT_STORED, keep_alive);
        };
        for (entry, sequence) in published.sequences.iter_mut().zip(sequences) {
            entry.2 = sequence;
        }
        durability = if critical { Durability::Committed } else { Durability::NoCritical };
    }
    if durability == Durability::Failed {
        return http::error(503, NOT_DURABLE, keep_alive);
    }
    #[derive(Serialize)]
    struct Sequenced<'a> {
        event: usize,
        channel: &'static str,
        key: &'a str,
        sequence: u64,
    }
    #[derive(Serialize)]
    struct Accepted<'a> {
        accepted: usize,
        /// Said only when the request had critical events.
        #[serde(skip_serializing_if = "Option::is_none")]
        durable: Option<bool>,
        sequences: Vec<Sequenced<'a>>,
    }
    let durable = match durability {
        Durability::Committed => Some(true),
        Durability::Memory => Some(false),
        _ => None,
    };
    let sequences = published
        .sequences
        .iter()
        .map(|(event, topic, sequence)| Sequenced {
            event: *event,
            channel: topic.channel.name(),
            key: &topic.key,
            sequence: *sequence,
        })
        .collect();
    http::json(202, &to_json(&Accepted { accepted: n, durable, sequences }), keep_alive)
}

/// Counts the events of a refused publish by the channels they name, where they name one (the streams'
/// health of `/websocket/status`).
fn count_refused(shard: &Shard, body: &[u8]) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else { return };
    let events = match &value {
        serde_json::Value::Array(events) => events.as_slice(),
        one => std::slice::from_ref(one),
    };
    let now = crate::util::now_micros().max(1) as u64;
    for name in events.iter().filter_map(|e| e.get("channel")?.as_str()) {
        if let Some(info) = CATALOG.iter().find(|c| c.name == name) {
            let c = info.channel as usize;
            shard.stats().refused_by_channel[c].fetch_add(1, Ordering::Relaxed);
            shard.stats().last_refused_by_channel[c].store(now, Ordering::Relaxed);
        }
    }
}

/// Seed 001's status (`GET /websocket/status`): its `/ws` settings and connections, and the health of the
/// streams it names (`price_updates` from quotes, `signals`), from every shard's figures.
fn websocket_status_json(shard: &Shard) -> Vec<u8> {
    use tickwire_core::protocol::legacy;
    let s = &shard.shared;
    let config = &s.config;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let legacy_id = dialects::DIALECTS.iter().find(|d| d.name == "legacy").map_or(0, |d| usize::from(d.id.0));
    let time = |micros: u64| {
        (micros > 0).then(|| {
            let full = tickwire_core::time::format_rfc3339(micros as i64);
            format!("{}Z", String::from_utf8_lossy(&full[..19]))
        })
    };
    #[derive(Serialize)]
    struct Health {
        last_update: Option<String>,
        error_count: u64,
        recovery_attempts: u64,
        is_healthy: bool,
        started_at: Option<String>,
    }
    let mut stream_health = serde_json::Map::new();
    for (name, channel) in legacy::CHANNELS.iter().filter(|(_, c)| !c.is_private()) {
        let c = *channel as usize;
        let last = s.stats.iter().map(|st| load(&st.last_ingest_by_channel[c])).max().unwrap_or(0);
        let first = s.stats.iter().map(|st| load(&st.first_ingest_by_channel[c])).filter(|t| *t > 0).min();
        let last_refused = s.stats.iter().map(|st| load(&st.last_refused_by_channel[c])).max().unwrap_or(0);
        let health = Health {
            last_update: time(last),
            error_count: s.stats.iter().map(|st| load(&st.refused_by_channel[c])).sum(),
            // tickwire's sources push to it: there is no provider connection to recover.
            recovery_attempts: 0,
            is_healthy: last > 0 && last_refused < last,
            started_at: first.and_then(time),
        };
        stream_health.insert((*name).to_owned(), serde_json::to_value(health).unwrap_or_default());
    }
    let status = serde_json::json!({
        "enabled": config.legacy_enabled,
        "active_connections": s.stats.iter().map(|st| load(&st.connections_by_dialect[legacy_id])).sum::<u64>(),
        "max_connections": config.max_connections,
        "ping_interval": config.heartbeat_s,
        "price_update_interval": config.legacy_price_update_interval_s,
        "portfolio_update_interval": config.legacy_portfolio_update_interval_s,
        "stream_health": stream_health,
    });
    to_json(&status)
}

/// The channel catalog as JSON.
pub fn channels_json() -> Vec<u8> {
    #[derive(Serialize)]
    struct Row {
        name: &'static str,
        #[serde(rename = "type")]
        update_type: &'static str,
        scope: &'static str,
        private: bool,
        critical: bool,
        snapshot: bool,
        publishable: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        intervals: Option<[&'static str; 3]>,
        fields: &'static [&'static str],
        description: &'static str,
    }
    #[derive(Serialize)]
    struct Catalog {
        channels: Vec<Row>,
    }
    let channels = CATALOG
        .iter()
        .map(|row| Row {
            name: row.name,
            update_type: row.update_type,
            scope: match row.scope {
                Scope::PerSymbol => "symbol",
                Scope::PerSymbolOrAll => "symbol_or_all",
                Scope::Everyone => "everyone",
                _ => "private",
            },
            private: row.scope == Scope::Private,
            critical: row.critical,
            snapshot: row.snapshot,
            publishable: row.publishable,
            intervals: (row.channel == tickwire_core::Channel::Bars).then_some(["1s", "1m", "5m"]),
            fields: row.fields,
            description: row.description,
        })
        .collect();
    to_json(&Catalog { channels })
}

fn status_json(shard: &Shard) -> Vec<u8> {
    let s = &shard.shared;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    // Each shard's figures named in `stats::STATUS`, by field name, and its deliveries.
    let in_status = |f: &crate::stats::Family| crate::stats::STATUS.contains(&f.field).then_some(f.field);
    let shards = crate::metrics::shard_figures(s, in_status, &[("deliveries", crate::state::Stats::deliveries)]);
    let sum = |f: fn(&crate::shard::ShardStats) -> &std::sync::atomic::AtomicU64| -> u64 {
        s.stats.iter().map(|st| load(f(st))).sum()
    };
    #[derive(Serialize)]
    struct Source {
        status: &'static str,
        events: u64,
    }
    #[derive(Serialize)]
    struct StreamHealth {
        simulator: Source,
        publish_api: Source,
    }
    #[derive(Serialize)]
    struct Status {
        enabled: bool,
        active_connections: u64,
        max_connections: usize,
        heartbeat_s: u32,
        uptime_s: u64,
        shards: Vec<serde_json::Value>,
        stream_health: StreamHealth,
        /// `none` (a single node), or the bus's state and URL.
        bus: serde_json::Value,
    }
    let bus = match &s.bus {
        None => serde_json::json!({"status": "none"}),
        Some(b) => serde_json::json!({
            "status": b.status(),
            "url": b.url,
            "connects": b.connects.load(Ordering::Relaxed),
            "last_error": b.last_error(),
            "stored": b.stored.load(Ordering::Relaxed),
            "fenced": b.fenced.load(Ordering::Relaxed),
            "applied": b.applied.load(Ordering::Relaxed),
            "followed": b.followed.load(Ordering::Relaxed),
            "applied_to": {
                "public": b.applied_to[0].load(Ordering::Relaxed),
                "private": b.applied_to[1].load(Ordering::Relaxed),
                "acks": b.applied_to[2].load(Ordering::Relaxed),
            },
        }),
    };
    to_json(&Status {
        enabled: true,
        active_connections: sum(|st| &st.connections),
        max_connections: s.config.max_connections,
        heartbeat_s: s.config.heartbeat_s,
        uptime_s: s.started.elapsed().as_secs(),
        shards,
        stream_health: StreamHealth {
            simulator: Source {
                status: if s.config.simulator { "active" } else { "disabled" },
                events: sum(|st| &st.simulated),
            },
            publish_api: Source { status: "active", events: sum(|st| &st.published) },
        },
        bus,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_json_lists_every_channel() {
        let v: serde_json::Value = serde_json::from_slice(&channels_json()).unwrap();
        let names: Vec<_> =
            v["channels"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_owned()).collect();
        assert_eq!(names.len(), 12);
        assert_eq!(v["channels"][2]["intervals"][0], "1s");
        assert_eq!(v["channels"][6]["private"], true);
    }
}
