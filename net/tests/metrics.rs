//! `GET /metrics` (Prometheus text format, read back with a real parser) and the admin stats endpoint,
//! against the real server.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

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

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

const FAMILIES: &[(&str, Kind)] = &[
    ("tickwire_connections", Kind::Gauge),
    ("tickwire_connections_opened_total", Kind::Counter),
    ("tickwire_connections_closed_total", Kind::Counter),
    ("tickwire_slow_consumer_closes_total", Kind::Counter),
    ("tickwire_subscriptions", Kind::Gauge),
    ("tickwire_topics", Kind::Gauge),
    ("tickwire_deliveries_total", Kind::Counter),
    ("tickwire_delivered_bytes_total", Kind::Counter),
    ("tickwire_inbound_messages_total", Kind::Counter),
    ("tickwire_events_ingested_total", Kind::Counter),
    ("tickwire_events_received_total", Kind::Counter),
    ("tickwire_outbound_queued_bytes", Kind::Gauge),
    ("tickwire_outbound_queued_frames", Kind::Gauge),
    ("tickwire_outbound_queued_bytes_max", Kind::Gauge),
    ("tickwire_writes_total", Kind::Counter),
    ("tickwire_written_frames_total", Kind::Counter),
    ("tickwire_written_bytes_total", Kind::Counter),
    ("tickwire_ingest_to_flush_seconds", Kind::Histogram),
    ("tickwire_shard_loop_lag_seconds", Kind::Histogram),
    ("tickwire_shard_stalls_total", Kind::Counter),
];

#[test]
fn metrics_are_prometheus_text_per_shard_and_count_deliveries() {
    let server = Server::start(&["--simulator-rate", "4000", "--simulator-symbols", "8"]);
    let mut c = server.connect(None);
    c.send(json!({"action":"subscribe","channel":"quotes","symbols":SYMBOLS,"id":"q"}));
    for _ in 0..20 {
        c.recv_until(SECS, |v| v["type"] == "quote").expect("the feed quotes");
    }

    // A flush is timed just after its write returned, and a delivery counted just after the sends of its
    // update, either of which may be after the client read it: wait until both have caught up.
    let deadline = Instant::now() + SECS;
    let first = loop {
        let s = scrape(server.addr);
        if total(&s, "tickwire_ingest_to_flush_seconds_count", None) >= 1.0
            && total(&s, "tickwire_deliveries_total", Some(("channel", "quotes"))) >= 20.0
        {
            break s;
        }
        assert!(Instant::now() < deadline, "the quotes' flushes were not timed or their deliveries not counted");
        std::thread::sleep(Duration::from_millis(20));
    };
    for &(name, kind) in FAMILIES {
        let found = samples(&first, name);
        assert!(first.docs.contains_key(name), "{name} has no HELP");
        for shard in ["0", "1"] {
            assert!(found.iter().any(|s| s.labels.get("shard") == Some(shard)), "{name} has no shard {shard}");
        }
        for s in &found {
            let ok = match (kind, &s.value) {
                (Kind::Counter, Value::Counter(v)) | (Kind::Gauge, Value::Gauge(v)) => *v >= 0.0,
                (Kind::Histogram, Value::Histogram(_)) => true,
                _ => false,
            };
            assert!(ok, "{name} should be a {kind:?}: {s:?}");
        }
    }
    for name in ["tickwire_deliveries_total", "tickwire_delivered_bytes_total"] {
        let channels: Vec<_> = samples(&first, name).iter().filter_map(|s| s.labels.get("channel")).collect();
        assert!(channels.contains(&"quotes") && channels.contains(&"orders"), "{name} per channel: {channels:?}");
    }
    assert!(total(&first, "tickwire_connections", None) >= 1.0);
    assert!(total(&first, "tickwire_subscriptions", None) >= 1.0);
    assert!(total(&first, "tickwire_topics", None) >= 1.0);
    assert!(total(&first, "tickwire_inbound_messages_total", None) >= 1.0);
    assert!(total(&first, "tickwire_events_ingested_total", None) >= 20.0);
    assert!(total(&first, "tickwire_events_received_total", Some(("source", "simulator"))) >= 20.0);
    assert!(total(&first, "tickwire_written_frames_total", None) >= 1.0);
    let delivered = total(&first, "tickwire_deliveries_total", Some(("channel", "quotes")));
    assert!(delivered >= 20.0, "20 quotes were received, {delivered} counted");
    assert!(total(&first, "tickwire_delivered_bytes_total", Some(("channel", "quotes"))) > delivered * 50.0);

    // The latency histogram: cumulative buckets from 50 µs to 1 s and +Inf, and the flushes counted.
    let mut flushes = 0.0;
    for h in samples(&first, "tickwire_ingest_to_flush_seconds") {
        let Value::Histogram(buckets) = &h.value else { unreachable!() };
        let bounds: Vec<f64> = buckets.iter().map(|b| b.less_than).collect();
        assert_eq!(bounds.first(), Some(&0.00005));
        assert!(bounds.contains(&1.0) && bounds.last() == Some(&f64::INFINITY), "{bounds:?}");
        assert!(buckets.windows(2).all(|w| w[0].less_than < w[1].less_than && w[0].count <= w[1].count));
        let shard = h.labels.get("shard").unwrap();
        let count = total(&first, "tickwire_ingest_to_flush_seconds_count", Some(("shard", shard)));
        assert_eq!(buckets.last().unwrap().count, count, "+Inf bucket == _count");
        flushes += count;
    }
    assert!(flushes >= 1.0, "the quotes' flushes were timed");
    // Every shard samples its loop lag every 5 ms from the start.
    for shard in ["0", "1"] {
        assert!(total(&first, "tickwire_shard_loop_lag_seconds_count", Some(("shard", shard))) >= 1.0);
        let causes: Vec<_> = samples(&first, "tickwire_shard_stalls_total")
            .iter()
            .filter(|s| s.labels.get("shard") == Some(shard))
            .filter_map(|s| s.labels.get("cause"))
            .collect();
        assert_eq!(causes, ["on_cpu", "waiting_for_cpu", "off_cpu", "unknown"]);
    }

    for _ in 0..20 {
        c.recv_until(SECS, |v| v["type"] == "quote").expect("the feed quotes");
    }
    // Deliveries are counted just after their sends, a flush once its write returned, and the 20 quotes just
    // read may have been sent before the first scrape: wait until both counts have grown (never shrunk).
    let deadline = Instant::now() + SECS;
    loop {
        let second = scrape(server.addr);
        let later = total(&second, "tickwire_deliveries_total", Some(("channel", "quotes")));
        assert!(later >= delivered, "deliveries never go back: {delivered} then {later}");
        let later_flushes = total(&second, "tickwire_ingest_to_flush_seconds_count", None);
        if later >= delivered + 20.0 && later_flushes > flushes {
            break;
        }
        assert!(Instant::now() < deadline, "deliveries ({delivered} then {later}) or flushes ({flushes}) did not grow");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn slow_consumer_closes_are_counted() {
    let config = std::env::temp_dir().join(format!("tickwire-metrics-{}.toml", std::process::id()));
    std::fs::write(&config, "max_queued_bytes = 16384\n").unwrap();
    let server =
        Server::start(&["--simulator-rate", "10000", "--simulator-symbols", "8", "--config", config.to_str().unwrap()]);
    // A client that subscribes and then never reads, with a small receive buffer so the server's queue fills.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&server.addr.into()).unwrap();
    let mut stream: TcpStream = sock.into();
    let handshake = "GET /v1/stream HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    stream.write_all(handshake.as_bytes()).unwrap();
    for channel in ["quotes", "trades"] {
        let subscribe = json!({"action":"subscribe","channel":channel,"symbols":SYMBOLS}).to_string();
        // A masked text frame (mask 0), payload under 126 bytes.
        let mut frame = vec![0x81, 0x80 | subscribe.len() as u8, 0, 0, 0, 0];
        frame.extend_from_slice(subscribe.as_bytes());
        stream.write_all(&frame).unwrap();
    }

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = scrape(server.addr);
        if total(&s, "tickwire_slow_consumer_closes_total", None) >= 1.0 {
            assert!(total(&s, "tickwire_connections_closed_total", None) >= 1.0);
            break;
        }
        assert!(Instant::now() < deadline, "no slow-consumer close was counted");
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = std::fs::remove_file(config);
    drop(stream);
}

#[test]
fn admin_stats_need_an_admin_token() {
    let server = Server::start(&["--simulator-rate", "2000", "--simulator-symbols", "4"]);
    let path = "/api/admin/websocket-stats";
    let mut c = server.connect(None);
    c.send(json!({"action":"subscribe","channel":"quotes","symbols":SYMBOLS,"id":"q"}));
    c.recv_until(SECS, |v| v["type"] == "quote").expect("the feed quotes");

    let (status, body) = http(server.addr, "GET", path, None, "");
    assert_eq!(status, 401, "{body}");
    assert!(body["error"].is_string());
    assert_eq!(http(server.addr, "GET", path, Some("not.a.jwt"), "").0, 401);
    assert_eq!(http(server.addr, "GET", path, Some(&token("u-42", "user")), "").0, 403);
    assert_eq!(http(server.addr, "GET", path, Some(&token("oms", "publisher")), "").0, 403);
    assert_eq!(http(server.addr, "POST", path, Some(&token("root", "admin")), "").0, 405);

    let admin = token("root", "admin");
    let (status, v) = http(server.addr, "GET", path, Some(&admin), "");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "healthy");
    assert_eq!(v["enabled"], true);
    assert!(v["activeConnections"].as_u64() >= Some(1));
    assert!(v["totalMessagesDelivered"].as_u64() >= Some(2), "welcome, subscribed, a quote: {v}");
    let efficiency = v["performance"]["batchEfficiency"].as_str().unwrap();
    let pct: f64 = efficiency.strip_suffix('%').expect("a percentage").parse().unwrap();
    assert!((0.0..=100.0).contains(&pct), "{efficiency}");
    let rate: f64 = v["performance"]["disconnectRatePerMinute"].as_str().unwrap().parse().unwrap();
    assert!(rate >= 0.0);
    let shards = v["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 2);
    let per_shard: u64 = shards.iter().map(|s| s["connections"].as_u64().unwrap()).sum();
    assert_eq!(Some(per_shard), v["activeConnections"].as_u64());
    assert!(shards.iter().map(|s| s["deliveries"].as_u64().unwrap()).sum::<u64>() >= 1);
    let mut keys: Vec<&str> = shards[0].as_object().unwrap().keys().map(|k| k.as_str()).collect();
    keys.sort();
    let expected = [
        "bytesDelivered",
        "connections",
        "deliveries",
        "disconnects",
        "eventsIngested",
        "messagesDelivered",
        "messagesIn",
        "queuedBytes",
        "queuedFrames",
        "shard",
        "slowConsumerCloses",
        "subscriptions",
        "topics",
    ];
    assert_eq!(keys, expected, "each shard's figures");

    // The same token by query parameter and by session cookie.
    assert_eq!(http(server.addr, "GET", &format!("{path}?token={admin}"), None, "").0, 200);
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nCookie: theme=dark; session={admin}\r\nConnection: close\r\n\r\n");
    let (status, body) = http_raw(server.addr, req.as_bytes());
    assert_eq!(status, 200, "{body}");
    let v: HashMap<String, serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert!(v.contains_key("activeConnections"));
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

    // The stall is counted (the thread slept in the kernel: off_cpu), in the lag histogram above 1 s, and
    // logged with the shard's state.
    let label = shard.to_string();
    let shard_label = Some(("shard", label.as_str()));
    let mut page = None;
    common::wait_for(Duration::from_secs(10), "the stall to be counted", || {
        let s = scrape(server.addr);
        let counted = total(&s, "tickwire_shard_stalls_total", shard_label) >= 1.0;
        page = Some(s);
        counted
    });
    let s = page.expect("scraped");
    let off_cpu: f64 = samples(&s, "tickwire_shard_stalls_total")
        .iter()
        .filter(|x| x.labels.get("shard") == Some(&label) && x.labels.get("cause") == Some("off_cpu"))
        .map(|x| match x.value {
            Value::Counter(v) => v,
            _ => 0.0,
        })
        .sum();
    assert!(off_cpu >= 1.0, "a blocked thread is off CPU");
    let lag = samples(&s, "tickwire_shard_loop_lag_seconds")
        .into_iter()
        .find(|x| x.labels.get("shard") == Some(&label))
        .expect("the stalled shard's lag histogram");
    let Value::Histogram(buckets) = &lag.value else { panic!("a histogram") };
    let under_1s = buckets.iter().find(|b| b.less_than == 1.0).unwrap().count;
    let all = buckets.last().unwrap().count;
    assert!(all - under_1s >= 1.0, "one tick was over a second late: {buckets:?}");
    // The stall's own line (a loaded machine may have logged shorter stalls of other causes before it).
    let log = server.log.lock().unwrap().clone();
    let lag_ms = |l: &str| -> Option<f64> { l.split("lag_ms=").nth(1)?.split_whitespace().next()?.parse().ok() };
    let line = log
        .iter()
        .filter(|l| l.contains("shard loop lag over 20 ms") && l.contains(&format!("shard={shard} ")))
        .find(|l| lag_ms(l).is_some_and(|ms| ms >= 1000.0))
        .unwrap_or_else(|| panic!("no warning of the stall of shard {shard} in {log:#?}"));
    assert!(line.contains("WARN") && line.contains("cause=\"off_cpu\"") && line.contains("connections="), "{line}");
    // The observer looked at the blocked thread while it was late: asleep on a futex (the debug stall waits
    // on a condition variable), not in io_uring_enter.
    assert!(line.contains("seen=\"S in ") && line.contains("wchan futex"), "{line}");
}

#[test]
fn the_debug_endpoints_are_off_by_default() {
    let server = Server::start(&["--no-simulator"]);
    let mut conn = KeepAlive::open(server.addr);
    assert_eq!(conn.request("POST", "/api/admin/debug/stall?ms=10", Some(&token("root", "admin"))).0, 404);
}
