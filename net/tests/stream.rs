//! End-to-end: the real server with 2 shards, real WebSocket clients, the canonical protocol.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{clients_on_two_shards, http, http_raw, token, Client, Server};
use serde_json::{json, Value};

const FAST_FEED: &[&str] = &["--simulator-rate", "4000", "--simulator-symbols", "8"];
const SECS: Duration = Duration::from_secs(5);

fn quiet() -> Server {
    Server::start(&["--no-simulator"])
}

#[test]
fn welcome_names_the_connection() {
    let server = quiet();
    let anon = server.connect(None);
    let w = &anon.welcome;
    assert_eq!(w["protocol"], 1);
    assert!(w["connection_id"].as_str().unwrap().starts_with("c-"));
    assert!(w["epoch"].as_str().is_some_and(|e| !e.is_empty()));
    assert_eq!(w["user_id"], Value::Null);
    assert_eq!(w["heartbeat_s"], 30);
    assert_eq!(w["timestamp"].as_str().unwrap().len(), 27, "RFC 3339 with microseconds");

    let t = token("u-42", "user");
    let c = Client::connect(server.addr, &format!("/v1/stream?client_id=bot-7&token={t}"), None).unwrap();
    assert_eq!(c.welcome["user_id"], "u-42");
    assert_eq!(c.welcome["client_id"], "bot-7");
}

#[test]
fn subscribe_snapshot_then_gapless_updates_then_unsubscribe() {
    let server = Server::start(FAST_FEED);
    // Wait until both symbols have state, so that each has a snapshot to give.
    let mut warm = server.connect(None);
    warm.send(json!({"action":"subscribe","channel":"quotes","symbols":["AAPL","MSFT"]}));
    for sym in ["AAPL", "MSFT"] {
        warm.recv_until(SECS, |v| v["type"] == "quote" && v["data"]["symbol"] == sym).expect("the feed quotes");
    }
    let mut c = server.connect(None);
    c.send(json!({"action":"subscribe","channel":"quotes","symbols":["AAPL","msft"],"id":"r1"}));
    let sub = c.recv().unwrap();
    assert_eq!(sub["type"], "subscribed");
    assert_eq!(sub["id"], "r1");
    assert_eq!(sub["symbols"], json!(["AAPL", "MSFT"]));
    assert!(sub["subscription_id"].as_str().is_some());

    let mut last: HashMap<String, u64> = HashMap::new();
    let mut snapshots = 0;
    let mut updates = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while (updates < 60 || snapshots < 2) && Instant::now() < deadline {
        let v = c.recv().expect("a frame");
        let sym = v["data"]["symbol"].as_str().unwrap_or_else(|| panic!("no symbol: {v}")).to_owned();
        let seq = v["sequence"].as_u64().unwrap();
        match v["type"].as_str().unwrap() {
            "snapshot" => {
                assert!(!last.contains_key(&sym), "one snapshot per symbol, before its updates");
                snapshots += 1;
                last.insert(sym, seq);
            }
            "quote" => {
                let prev =
                    last.get(&sym).copied().expect("snapshot comes before updates (the feed ran before we subscribed)");
                assert_eq!(seq, prev + 1, "gap or duplicate on {sym}");
                assert_eq!(v["channel"], "quotes");
                assert_eq!(v["timestamp"].as_str().unwrap().len(), 27);
                last.insert(sym, seq);
                updates += 1;
            }
            other => panic!("unexpected {other}: {v}"),
        }
    }
    assert_eq!(snapshots, 2);
    assert!(updates >= 60, "only {updates} quotes in 10 s");

    c.send(json!({"action":"unsubscribe","channel":"quotes","symbols":["AAPL"],"id":"r2"}));
    let un = c.recv_until(SECS, |v| v["type"] == "unsubscribed").expect("unsubscribed");
    assert_eq!(un["id"], "r2");
    assert_eq!(un["symbols"], json!(["AAPL"]));
    // For 800 ms no AAPL, and MSFT goes on: read on past them until an MSFT quote came (a loaded machine may
    // hold the feed up for a while), failing only if nothing comes for 5 s.
    let started = Instant::now();
    let mut msft = 0;
    while started.elapsed() < Duration::from_millis(800) || msft == 0 {
        let t = c.recv_text(SECS).expect("MSFT stopped too");
        let v: Value = serde_json::from_str(&t).unwrap();
        assert_ne!(v["data"]["symbol"], "AAPL", "AAPL after unsubscribe: {v}");
        assert_eq!(v["data"]["symbol"], "MSFT", "{v}");
        msft += 1;
    }
    c.send(json!({"action":"unsubscribe","channel":"quotes"}));
    c.recv_until(SECS, |v| v["type"] == "unsubscribed").expect("unsubscribed");
    assert!(c.recv_text(Duration::from_millis(500)).is_none(), "updates after unsubscribing the channel");
}

#[test]
fn http_errors_are_json() {
    let server = quiet();
    let (s, body) = http(server.addr, "GET", "/nope", None, "");
    assert_eq!(s, 404);
    assert!(body["error"].as_str().unwrap().contains("/nope"));
    let (s, body) = http_raw(server.addr, b"BLAH\x01 / HTTP/1.1\r\n\r\n");
    assert_eq!(s, 400, "{body}");
    let mut big = b"GET /healthz HTTP/1.1\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 20_000));
    big.extend_from_slice(b"\r\n\r\n");
    assert_eq!(http_raw(server.addr, &big).0, 431);
    // Truncated: the head never completes before the client stops sending.
    let mut s = std::net::TcpStream::connect(server.addr).unwrap();
    use std::io::{Read, Write};
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost:").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    // A plain GET on the stream path is not an upgrade.
    assert_eq!(http(server.addr, "GET", "/v1/stream", None, "").0, 400);
    assert_eq!(http(server.addr, "DELETE", "/healthz", None, "").0, 405);
    // The server is still healthy after all of that.
    assert_eq!(http(server.addr, "GET", "/healthz", None, ""), (200, json!({"status":"ok"})));
}

#[test]
fn bad_token_is_refused_before_upgrade() {
    let server = Server::start(&["--no-simulator", "--allow-anonymous", "false"]);
    for tok in [
        "garbage",
        &jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &json!({"sub":"u","exp": 4_000_000_000u64}),
            &jsonwebtoken::EncodingKey::from_secret(b"wrong-secret"),
        )
        .unwrap(),
    ] {
        match Client::connect(server.addr, "/v1/stream", Some(tok)) {
            Err(tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 401);
                let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap()).unwrap();
                assert!(body["error"].is_string());
            }
            other => panic!("expected 401, got {:?}", other.map(|_| ())),
        }
    }
    match Client::connect(server.addr, "/v1/stream", None) {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("anonymous must be refused: {:?}", other.map(|_| ())),
    }
    assert!(Client::connect(server.addr, "/v1/stream", Some(&token("u-1", "user"))).is_ok());
}

#[test]
fn clients_on_different_shards_get_byte_identical_frames() {
    let server = Server::start(FAST_FEED);
    let (mut a, mut b) = clients_on_two_shards(&server);
    assert_ne!(a.shard(), b.shard());
    let mut frames: [HashMap<u64, String>; 2] = [HashMap::new(), HashMap::new()];
    for (i, c) in [&mut a, &mut b].into_iter().enumerate() {
        c.send(json!({"action":"subscribe","channel":"quotes","symbols":["NVDA"]}));
        c.recv_until(SECS, |v| v["type"] == "subscribed").unwrap();
        let _ = i;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && frames.iter().map(|f| f.len()).min().unwrap() < 40 {
        for (i, c) in [&mut a, &mut b].into_iter().enumerate() {
            if let Some(t) = c.recv_text(Duration::from_millis(50)) {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "quote" {
                    frames[i].insert(v["sequence"].as_u64().unwrap(), t);
                }
            }
        }
    }
    let common: Vec<u64> = frames[0].keys().filter(|k| frames[1].contains_key(k)).copied().collect();
    assert!(common.len() >= 20, "only {} common sequences", common.len());
    for seq in common {
        assert_eq!(frames[0][&seq], frames[1][&seq], "sequence {seq} differs between shards");
    }
}

#[test]
fn trades_bars_and_news_flow_from_the_simulator() {
    let server = Server::start(&["--simulator-rate", "8000", "--simulator-symbols", "4"]);
    let mut c = server.connect(None);
    let syms = ["AAPL", "MSFT", "GOOGL", "AMZN"];
    c.send(json!({"action":"subscribe","channel":"trades","symbols":syms}));
    c.send(json!({"action":"subscribe","channel":"bars","symbols":syms,"interval":"1s","id":"bars"}));
    c.send(json!({"action":"subscribe","channel":"news"}));
    let bar_sub = c.recv_until(SECS, |v| v["id"] == "bars").unwrap();
    assert_eq!(bar_sub["interval"], "1s");
    let (mut trades, mut bars, mut news) = (0, 0, 0);
    let deadline = Instant::now() + Duration::from_secs(15);
    while (trades < 10 || bars < 2 || news < 1) && Instant::now() < deadline {
        let Some(v) = c.recv() else { continue };
        match v["type"].as_str().unwrap() {
            "trade" => {
                let d = &v["data"];
                assert!(d["price"].as_f64().unwrap() > 0.0 && d["size"].as_u64().unwrap() > 0);
                assert!(d["exchange"].is_string() && d["timestamp"].is_string());
                trades += 1;
            }
            "bar" => {
                let d = &v["data"];
                let f = |k: &str| d[k].as_f64().unwrap();
                assert_eq!(d["interval"], "1s");
                assert!(f("low") <= f("open") && f("open") <= f("high"), "{d}");
                assert!(f("low") <= f("close") && f("close") <= f("high"), "{d}");
                assert!(f("low") <= f("vwap") && f("vwap") <= f("high"), "{d}");
                assert!(f("volume") > 0.0);
                bars += 1;
            }
            "news" => {
                assert!(v["data"]["headline"].is_string());
                news += 1;
            }
            _ => {}
        }
    }
    assert!(trades >= 10 && bars >= 2 && news >= 1, "trades {trades}, bars {bars}, news {news}");
}

#[test]
fn publish_api_reaches_subscribers_with_source_ts() {
    let server = quiet();
    let mut c = server.connect(None);
    c.send(json!({"action":"subscribe","channel":"quotes","symbols":["ZZZ"],"id":"s"}));
    c.recv_until(SECS, |v| v["id"] == "s").unwrap();
    let event = json!({"channel":"quotes","data":{"symbol":"ZZZ","bid":1.5,"ask":1.6},"source_ts":"2026-02-07T14:30:00.120000Z"});
    let publisher = token("feed-1", "publisher");
    let (status, body) = http(server.addr, "POST", "/api/publish", Some(&publisher), &event.to_string());
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], 1);
    assert_eq!(body["sequences"][0]["sequence"], 1);
    // "subscribed" comes before the topic's owner has placed the subscription: an update published at once
    // may be sequenced first, and then arrives as the snapshot the subscription starts from.
    let q = c.recv_until(SECS, |v| v["type"] == "quote" || v["type"] == "snapshot").expect("published quote");
    assert_eq!(q["source_ts"], "2026-02-07T14:30:00.120000Z");
    assert_eq!(q["sequence"], 1);
    assert_eq!(q["data"], event["data"]);

    assert_eq!(http(server.addr, "POST", "/api/publish", None, &event.to_string()).0, 401);
    assert_eq!(http(server.addr, "POST", "/api/publish", Some(&token("u", "user")), &event.to_string()).0, 403);
    let (status, body) = http(server.addr, "POST", "/api/publish", Some(&publisher), "{\"channel\":");
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("malformed"));
    // An array and NDJSON both work and keep sequences contiguous.
    let arr = json!([event, event]).to_string();
    assert_eq!(http(server.addr, "POST", "/api/publish", Some(&publisher), &arr).1["sequences"][1]["sequence"], 3);
    let nd = format!("{event}\n{event}\n");
    assert_eq!(http(server.addr, "POST", "/api/publish", Some(&publisher), &nd).1["sequences"][1]["sequence"], 5);
    for expected in 2..=5 {
        assert_eq!(c.recv_until(SECS, |v| v["type"] == "quote").unwrap()["sequence"], expected);
    }
}

#[test]
fn private_events_reach_their_user_only() {
    let server = quiet();
    let mut alice = server.connect(Some(&token("alice", "user")));
    let mut bob = server.connect(Some(&token("bob", "user")));
    let mut anon = server.connect(None);
    // Bob names Alice in every way he can think of; he still gets only his own orders.
    bob.send(json!({"action":"subscribe","channel":"orders","user_id":"alice","symbols":["alice"],"id":"b"}));
    alice.send(json!({"action":"subscribe","channel":"orders","id":"a"}));
    anon.send(json!({"action":"subscribe","channel":"orders","id":"x"}));
    assert_eq!(bob.recv_until(SECS, |v| v["id"] == "b").unwrap()["type"], "subscribed");
    assert_eq!(alice.recv_until(SECS, |v| v["id"] == "a").unwrap()["type"], "subscribed");
    assert_eq!(anon.recv_until(SECS, |v| v["id"] == "x").unwrap()["code"], "AUTH_REQUIRED");
    let publisher = token("oms", "publisher");
    let event = json!({"channel":"orders","user_id":"alice","data":{"order_id":"o-1","symbol":"AAPL","status":"new"}});
    assert_eq!(http(server.addr, "POST", "/api/publish", Some(&publisher), &event.to_string()).0, 202);
    let o = alice.recv_until(SECS, |v| v["type"] == "order").expect("alice gets her order");
    assert_eq!(o["data"]["order_id"], "o-1");
    assert_eq!(o["channel"], "orders");
    assert!(bob.recv_text(Duration::from_millis(500)).is_none(), "bob must see nothing");
    assert!(anon.recv_text(Duration::from_millis(100)).is_none());
}

#[test]
fn streaming_publisher_over_websocket() {
    let server = quiet();
    let mut sub = server.connect(None);
    sub.send(json!({"action":"subscribe","channel":"trades","symbols":["QQQ"],"id":"s"}));
    sub.recv_until(SECS, |v| v["id"] == "s").unwrap();
    common::settle(&mut sub, &["QQQ"]);
    assert!(Client::connect(server.addr, "/v1/publish", None).is_err(), "publishing needs a token");
    let mut publisher = Client::connect(server.addr, "/v1/publish", Some(&token("feed", "publisher"))).unwrap();
    for i in 0..50 {
        publisher
            .send(json!({"channel":"trades","data":{"symbol":"QQQ","price":400.0 + i as f64,"size":10},"source_ts":i}));
    }
    publisher.send(json!({"channel":"nope","data":{}}));
    let err = publisher.recv().expect("error frame for a bad event");
    assert_eq!(err["type"], "error");
    for i in 0..50u64 {
        let t = sub.recv_until(SECS, |v| v["type"] == "trade").expect("trade");
        assert_eq!(t["sequence"], i + 1);
        assert_eq!(t["source_ts"], i);
    }
}

#[test]
fn catalog_and_status_endpoints() {
    let server = Server::start(FAST_FEED);
    let (s, cat) = http(server.addr, "GET", "/api/ws/channels", None, "");
    assert_eq!(s, 200);
    let names: Vec<&str> = cat["channels"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "quotes",
            "trades",
            "bars",
            "news",
            "signals",
            "system",
            "orders",
            "executions",
            "portfolio",
            "alerts",
            "sessions",
            "decisions"
        ]
    );
    let _c = server.connect(None);
    let (s, st) = http(server.addr, "GET", "/api/ws/status", None, "");
    assert_eq!(s, 200);
    assert_eq!(st["enabled"], true);
    assert_eq!(st["active_connections"], 1);
    assert_eq!(st["shards"].as_array().unwrap().len(), 2);
    assert_eq!(st["stream_health"]["simulator"]["status"], "active");
}

#[test]
fn sigterm_closes_clients_with_1001_and_exits_zero() {
    let mut server = quiet();
    let mut c = server.connect(None);
    let status = server.terminate();
    assert_eq!(c.close_code(SECS), Some(1001));
    assert!(status.success(), "{status:?}");
}

#[test]
fn client_close_is_echoed() {
    let server = quiet();
    let mut c = server.connect(None);
    c.ws.close(Some(tungstenite::protocol::CloseFrame {
        code: tungstenite::protocol::frame::coding::CloseCode::Away,
        reason: "bye".into(),
    }))
    .unwrap();
    assert_eq!(c.close_code(SECS), Some(1001));
    // The server forgets the connection.
    let deadline = Instant::now() + SECS;
    while http(server.addr, "GET", "/api/ws/status", None, "").1["active_connections"] != 0 {
        assert!(Instant::now() < deadline, "connection still counted after close");
        std::thread::sleep(Duration::from_millis(20));
    }
}
