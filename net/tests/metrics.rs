//! `GET /metrics` (Prometheus text format, read back with a real parser), the admin stats and `/healthz`
//! against the real server: what its clients did is counted, and a stalled shard is seen. The page's format
//! (every family, per shard, typed, histogram buckets) and the admin JSON's keys are unit tests of
//! `net/src/metrics.rs`.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{http, http_raw, token, Server};
use prometheus_parse::{Sample, Scrape, Value};
use serde_json::json;

const SECS: Duration = Duration::from_secs(5);
/// The simulated feed's first symbols (`--simulator-symbols 8`).
const SYMBOLS: [&str; 8] = ["AAPL", "MSFT", "GOOGL", "AMZN", "NVDA", "TSLA", "META", "BRK.B"];

/// `GET path`; returns status, the head (lowercase) and the body.
fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(SECS)).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8(out).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole response");
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_owned())
}

fn scrape(addr: SocketAddr) -> Scrape {
    let (status, head, body) = get(addr, "/metrics");
    assert_eq!(status, 200, "{body}");
    assert!(head.contains("content-type: text/plain; version=0.0.4"), "{head}");
    Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text format")
}

fn samples<'a>(s: &'a Scrape, name: &str) -> Vec<&'a Sample> {
    s.samples.iter().filter(|x| x.metric == name).collect()
}

/// The sum of a counter or gauge family's samples, optionally only those with `label = value`.
fn total(s: &Scrape, name: &str, filter: Option<(&str, &str)>) -> f64 {
    samples(s, name)
        .iter()
        .filter(|x| filter.is_none_or(|(k, v)| x.labels.get(k) == Some(v)))
        .map(|x| match x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            _ => panic!("{name} is not a number"),
        })
        .sum()
}

#[test]
fn the_live_server_counts_what_its_clients_receive() {
    let server = Server::start(&["--simulator-rate", "4000", "--simulator-symbols", "8"]);
    let mut c = server.connect(None);
    c.send(json!({"action":"subscribe","channel":"quotes","symbols":SYMBOLS,"id":"q"}));
    for _ in 0..20 {
        c.recv_until(SECS, |v| v["type"] == "quote").expect("the feed quotes");
    }
    // A flush is timed just after its write returned, and a delivery counted just after the sends of its
    // update, either of which may be after the client read it: wait until both have caught up.
    let mut page = None;
    common::wait_for(SECS, "the quotes' flushes timed and deliveries counted", || {
        let s = scrape(server.addr);
        let caught_up = total(&s, "tickwire_ingest_to_flush_seconds_count", None) >= 1.0
            && total(&s, "tickwire_deliveries_total", Some(("channel", "quotes"))) >= 20.0;
        page = Some(s);
        caught_up
    });
    let s = page.unwrap();
    for name in ["tickwire_connections", "tickwire_subscriptions", "tickwire_topics", "tickwire_inbound_messages_total"]
    {
        assert!(total(&s, name, None) >= 1.0, "{name}");
    }
    assert!(total(&s, "tickwire_events_received_total", Some(("source", "simulator"))) >= 20.0);
    assert!(total(&s, "tickwire_events_ingested_total", None) >= 20.0);
    let delivered = total(&s, "tickwire_deliveries_total", Some(("channel", "quotes")));
    assert!(total(&s, "tickwire_delivered_bytes_total", Some(("channel", "quotes"))) > delivered * 50.0);
    assert!(total(&s, "tickwire_written_frames_total", None) >= 20.0);
    // Every shard samples its loop lag every 5 ms from the start.
    for shard in ["0", "1"] {
        assert!(total(&s, "tickwire_shard_loop_lag_seconds_count", Some(("shard", shard))) >= 1.0);
    }
}

#[test]
fn admin_stats_take_an_admin_token_from_the_header_the_query_or_the_cookie() {
    let server = Server::start(&["--no-simulator"]);
    let path = "/api/admin/websocket-stats";
    let _c = server.connect(None);
    let admin = token("root", "admin");
    assert_eq!(http(server.addr, "GET", path, Some("not.a.jwt"), "").0, 401);
    assert_eq!(http(server.addr, "POST", path, Some(&admin), "").0, 405);
    let (status, v) = http(server.addr, "GET", path, Some(&admin), "");
    assert_eq!(status, 200, "{v}");
    assert_eq!((&v["status"], &v["activeConnections"]), (&json!("healthy"), &json!(1)));
    let per_shard: u64 = v["shards"].as_array().unwrap().iter().map(|s| s["connections"].as_u64().unwrap()).sum();
    assert_eq!(per_shard, 1);
    assert!(v["totalMessagesDelivered"].as_u64() >= Some(1), "the welcome: {v}");
    assert_eq!(http(server.addr, "GET", &format!("{path}?token={admin}"), None, "").0, 200);
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nCookie: theme=dark; session={admin}\r\nConnection: close\r\n\r\n");
    let (status, body) = http_raw(server.addr, req.as_bytes());
    assert_eq!(status, 200, "{body}");
    assert!(serde_json::from_str::<HashMap<String, serde_json::Value>>(&body)
        .unwrap()
        .contains_key("activeConnections"));
}

/// Polls `/healthz` on `conn` until `done(status, body)`; returns that answer.
fn healthz_until(
    conn: &mut KeepAlive,
    what: &str,
    mut done: impl FnMut(u16, &serde_json::Value) -> bool,
) -> (u16, serde_json::Value) {
    let mut last = (0, serde_json::Value::Null);
    common::wait_for(Duration::from_secs(10), what, || {
        last = conn.request("GET", "/healthz", None);
        done(last.0, &last.1)
    });
    last
}

/// One HTTP/1.1 connection kept open across requests, so that every request reaches the same shard.
struct KeepAlive(TcpStream);

impl KeepAlive {
    fn open(addr: SocketAddr) -> KeepAlive {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        KeepAlive(s)
    }

    /// Sends a request and reads its whole response (by Content-Length): status and body.
    fn request(&mut self, method: &str, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
        let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        let req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\n\r\n");
        self.0.write_all(req.as_bytes()).unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8];
        while !head.ends_with(b"\r\n\r\n") {
            self.0.read_exact(&mut byte).expect("a response head");
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
        let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("a Content-Length");
        let mut body = vec![0; len];
        self.0.read_exact(&mut body).unwrap();
        (status, serde_json::from_slice(&body).expect("a JSON body"))
    }
}

#[test]
fn a_stalled_shard_is_counted_logged_and_unhealthy_until_it_recovers() {
    let server = Server::start_env(&["--no-simulator"], &[("TICKWIRE_DEBUG_ENDPOINTS", "true")]);
    let admin = token("root", "admin");
    // Every request on this connection is served by the one shard that accepted it; the other is stalled.
    let mut conn = KeepAlive::open(server.addr);
    assert_eq!(conn.request("GET", "/healthz", None), (200, json!({"status":"ok"})));
    assert_eq!(conn.request("POST", "/api/admin/debug/stall?ms=2500", Some(&token("u", "user"))).0, 403);
    assert_eq!(conn.request("POST", "/api/admin/debug/stall?ms=99999", Some(&admin)).0, 400);
    // Blocked until released (10 s at most): the test sees the unhealthy state for as long as it looks.
    let (status, v) = conn.request("POST", "/api/admin/debug/stall?ms=10000", Some(&admin));
    assert_eq!(status, 200, "{v}");
    let stalled = v["stalled_shards"].as_array().expect("the stalled shards").clone();
    assert_eq!(stalled.len(), 1, "{v}");
    let shard = stalled[0].as_u64().unwrap();

    // Unhealthy once the stalled shard's last tick is over a second old, naming it...
    let (_, unhealthy) = healthz_until(&mut conn, "/healthz to turn 503", |status, v| {
        assert!(status == 200 || status == 503, "{v}");
        status == 503
    });
    assert_eq!(unhealthy["status"], "unavailable");
    assert_eq!(unhealthy["stalled_shards"][0]["shard"].as_u64(), Some(shard), "{unhealthy}");
    assert!(unhealthy["stalled_shards"][0]["lag_ms"].as_u64() > Some(1000), "{unhealthy}");
    // Still unhealthy while the stall goes on. /healthz counts from the end of the shard's last tick, the
    // lag from the start of its next sleep (a few ms later): hold the stall until /healthz says 1.2 s, so
    // that the stalled tick's own lag is surely over a second too.
    healthz_until(&mut conn, "the stalled shard's lag to reach 1.2 s", |status, v| {
        assert_eq!(status, 503, "still stalled, still unhealthy: {v}");
        v["stalled_shards"][0]["lag_ms"].as_u64() >= Some(1200)
    });
    assert_eq!(conn.request("POST", "/api/admin/debug/release", Some(&admin)), (200, json!({"released":true})));
    // ... and healthy again by itself once the shard runs again.
    healthz_until(&mut conn, "/healthz to recover after the stall", |status, v| {
        assert!(status == 200 || status == 503, "{v}");
        status == 200
    });

    // The stall is counted (the thread slept in the kernel: off_cpu) and logged with the shard's state; how
    // causes are told apart and warnings limited is a unit test of net/src/lag.rs.
    let label = shard.to_string();
    common::wait_for(Duration::from_secs(10), "the stall to be counted", || {
        let off_cpu = samples(&scrape(server.addr), "tickwire_shard_stalls_total")
            .iter()
            .filter(|x| x.labels.get("shard") == Some(&label) && x.labels.get("cause") == Some("off_cpu"))
            .any(|x| matches!(x.value, Value::Counter(v) if v >= 1.0));
        off_cpu
    });
    let log = server.log.lock().unwrap().clone();
    let lag_ms = |l: &str| -> Option<f64> { l.split("lag_ms=").nth(1)?.split_whitespace().next()?.parse().ok() };
    let line = log
        .iter()
        .filter(|l| l.contains("shard loop lag over 20 ms") && l.contains(&format!("shard={shard} ")))
        .find(|l| lag_ms(l).is_some_and(|ms| ms >= 1000.0))
        .unwrap_or_else(|| panic!("no warning of the stall of shard {shard} in {log:#?}"));
    // The observer looked at the blocked thread while it was late: asleep on a futex (the debug stall waits
    // on a condition variable), not in io_uring_enter.
    assert!(line.contains("WARN") && line.contains("cause=\"off_cpu\"") && line.contains("wchan futex"), "{line}");
}

#[test]
fn the_debug_endpoints_are_off_by_default() {
    let server = Server::start(&["--no-simulator"]);
    let mut conn = KeepAlive::open(server.addr);
    assert_eq!(conn.request("POST", "/api/admin/debug/stall?ms=10", Some(&token("root", "admin"))).0, 404);
}
