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
];

#[test]
fn metrics_are_prometheus_text_per_shard_and_count_deliveries() {
    let server = Server::start(&["--simulator-rate", "4000", "--simulator-symbols", "8"]);
    let mut c = server.connect(None);
    c.send(json!({"action":"subscribe","channel":"quotes","symbols":SYMBOLS,"id":"q"}));
    for _ in 0..20 {
        c.recv_until(SECS, |v| v["type"] == "quote").expect("the feed quotes");
    }

    // A flush is timed just after its write returned, which may be after the client read it: wait for one.
    let deadline = Instant::now() + SECS;
    let first = loop {
        let s = scrape(server.addr);
        if total(&s, "tickwire_ingest_to_flush_seconds_count", None) >= 1.0 {
            break s;
        }
        assert!(Instant::now() < deadline, "the quotes' flushes were not timed");
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

    for _ in 0..20 {
        c.recv_until(SECS, |v| v["type"] == "quote").expect("the feed quotes");
    }
    // Deliveries are counted as they are queued; a flush once its write returned, so allow it a moment.
    let deadline = Instant::now() + SECS;
    loop {
        let second = scrape(server.addr);
        let later = total(&second, "tickwire_deliveries_total", Some(("channel", "quotes")));
        assert!(later >= delivered + 20.0, "deliveries grew: {delivered} then {later}");
        let later_flushes = total(&second, "tickwire_ingest_to_flush_seconds_count", None);
        if later_flushes > flushes {
            break;
        }
        assert!(Instant::now() < deadline, "flushes did not grow from {flushes}");
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

    // The same token by query parameter and by session cookie.
    assert_eq!(http(server.addr, "GET", &format!("{path}?token={admin}"), None, "").0, 200);
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nCookie: theme=dark; session={admin}\r\nConnection: close\r\n\r\n");
    let (status, body) = http_raw(server.addr, req.as_bytes());
    assert_eq!(status, 200, "{body}");
    let v: HashMap<String, serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert!(v.contains_key("activeConnections"));
}
