//! A stalled shard seen from outside, against the real binary: `/healthz` turns 503 naming it, the stall is
//! counted in `/metrics` and logged, and all recovers by itself (the debug endpoint that stalls it is off by default: `security.rs`). How causes are told apart and warnings
//! limited is a unit test of `net/src/lag.rs`; the metrics page's format, of `net/src/metrics.rs`; what the
//! live server counts is checked in `stream.rs`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{token, Server};
use serde_json::json;

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
    let cause = [format!("shard=\"{shard}\""), "cause=\"off_cpu\"".to_owned()];
    let labels: Vec<&str> = cause.iter().map(String::as_str).collect();
    common::wait_for(Duration::from_secs(10), "the stall to be counted", || {
        common::metric_where(server.addr, "tickwire_shard_stalls_total", &labels) >= 1.0
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
