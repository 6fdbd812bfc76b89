//! End to end: the real server with 2 shards, real WebSocket clients, the canonical protocol. What the engine's
//! rules do is tested in memory (`fanout/tests/connection.rs`, `fanout/tests/simulation.rs`); here, that the
//! binary wires them to its feed, its publish API, its endpoints and its metrics.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{http, token, Client, Server};
use serde_json::{json, Value};

const SECS: Duration = Duration::from_secs(5);

#[test]
fn the_simulated_feed_streams_quotes_trades_bars_and_news() {
    let server = Server::start(&["--simulator-rate", "8000", "--simulator-symbols", "4"]);
    let mut c = server.connect(None);
    let w = &c.welcome;
    assert_eq!((&w["protocol"], &w["user_id"], &w["heartbeat_s"]), (&json!(1), &Value::Null, &json!(30)));
    assert!(
        w["connection_id"].as_str().unwrap().starts_with("c-") && w["epoch"].as_str().is_some_and(|e| !e.is_empty())
    );
    assert_eq!(w["timestamp"].as_str().unwrap().len(), 27, "RFC 3339 with microseconds");
    // Let the feed give both symbols state first, so that each has a snapshot to start from.
    let mut warm = server.connect(None);
    warm.send(json!({"action":"subscribe","channel":"quotes","symbols":["AAPL","MSFT"]}));
    for sym in ["AAPL", "MSFT"] {
        warm.recv_until(SECS, |v| v["type"] == "quote" && v["data"]["symbol"] == sym).expect("the feed quotes");
    }
    c.send(json!({"action":"subscribe","channel":"quotes","symbols":["AAPL","msft"],"id":"q"}));
    let sub = c.recv_until(SECS, |v| v["id"] == "q").unwrap();
    assert_eq!((&sub["type"], &sub["symbols"]), (&json!("subscribed"), &json!(["AAPL", "MSFT"])));
    assert!(sub["subscription_id"].as_str().is_some());
    let syms = ["AAPL", "MSFT", "GOOGL", "AMZN"];
    c.send(json!({"action":"subscribe","channel":"trades","symbols":syms}));
    c.send(json!({"action":"subscribe","channel":"bars","symbols":syms,"interval":"1s","id":"bars"}));
    c.send(json!({"action":"subscribe","channel":"news"}));
    let mut last: HashMap<String, u64> = HashMap::new();
    let (mut quotes, mut trades, mut bars, mut news) = (0, 0, 0, 0);
    let deadline = Instant::now() + Duration::from_secs(15);
    while (quotes < 60 || trades < 10 || bars < 2 || news < 1) && Instant::now() < deadline {
        let Some(v) = c.recv() else { continue };
        let d = &v["data"];
        let f = |k: &str| d[k].as_f64().unwrap();
        match v["type"].as_str().unwrap() {
            "snapshot" if v["channel"] == "quotes" => {
                let sym = d["symbol"].as_str().unwrap().to_owned();
                assert!(last.insert(sym, v["sequence"].as_u64().unwrap()).is_none(), "one snapshot, first: {v}");
            }
            "snapshot" => {}
            "quote" => {
                let sym = d["symbol"].as_str().unwrap();
                let prev = last.get(sym).copied().expect("the snapshot comes before the updates");
                assert_eq!(v["sequence"].as_u64(), Some(prev + 1), "gap or duplicate on {sym}");
                last.insert(sym.to_owned(), prev + 1);
                quotes += 1;
            }
            "trade" => {
                assert!(f("price") > 0.0 && f("size") > 0.0 && d["exchange"].is_string(), "{d}");
                trades += 1;
            }
            "bar" => {
                assert_eq!(d["interval"], "1s");
                for k in ["open", "close", "vwap"] {
                    assert!(f("low") <= f(k) && f(k) <= f("high"), "{k}: {d}");
                }
                assert!(f("volume") > 0.0);
                bars += 1;
            }
            "news" => {
                assert!(d["headline"].is_string());
                news += 1;
            }
            "subscribed" => assert_eq!(v["id"] == "bars", v["interval"] == "1s", "{v}"),
            other => panic!("unexpected {other}: {v}"),
        }
    }
    assert!(quotes >= 60 && trades >= 10 && bars >= 2 && news >= 1, "{quotes} {trades} {bars} {news} in 15 s");
    // What the client received is counted (a delivery just after its send, a flush once its write returned:
    // either may come after the client read it) in /metrics; the page's format is a unit test of metrics.rs.
    let quoted = |what: &str| common::metric_where(server.addr, what, &["channel=\"quotes\""]);
    common::wait_for(SECS, "the quotes' deliveries counted and flushes timed", || {
        quoted("tickwire_deliveries_total") >= 60.0
            && common::metric(server.addr, "tickwire_ingest_to_flush_seconds_count") >= 1.0
    });
    assert!(quoted("tickwire_delivered_bytes_total") > 60.0 * 50.0);
    assert!(common::metric_where(server.addr, "tickwire_events_received_total", &["simulator"]) >= 60.0);
    for name in ["tickwire_subscriptions", "tickwire_topics", "tickwire_inbound_messages_total"] {
        assert!(common::metric(server.addr, name) >= 1.0, "{name}");
    }
    for shard in ["shard=\"0\"", "shard=\"1\""] {
        let ticks = common::metric_where(server.addr, "tickwire_shard_loop_lag_seconds_count", &[shard]);
        assert!(ticks >= 1.0, "every shard samples its loop lag from the start");
    }
    c.send(json!({"action":"unsubscribe","channel":"quotes","symbols":["AAPL"],"id":"u"}));
    let un = c.recv_until(SECS, |v| v["type"] == "unsubscribed").expect("unsubscribed");
    assert_eq!((&un["id"], &un["symbols"]), (&json!("u"), &json!(["AAPL"])));
}

#[test]
fn publishes_over_http_and_websocket_reach_subscribers_in_sequence() {
    let server = Server::start(&["--no-simulator"]);
    let t = token("u-42", "user");
    let mut c = Client::connect(server.addr, &format!("/v1/stream?client_id=bot-7&token={t}"), None).unwrap();
    assert_eq!((&c.welcome["user_id"], &c.welcome["client_id"]), (&json!("u-42"), &json!("bot-7")));
    c.send(json!({"action":"subscribe","channel":"quotes","symbols":["ZZZ"],"id":"s"}));
    c.recv_until(SECS, |v| v["id"] == "s").unwrap();
    common::settle(&mut c, &["ZZZ"]);
    let event = json!({"channel":"quotes","data":{"symbol":"ZZZ","bid":1.5,"ask":1.6},"source_ts":"2026-02-07T14:30:00.120000Z"});
    let body = common::publish(server.addr, &event);
    assert_eq!((&body["accepted"], &body["sequences"][0]["sequence"]), (&json!(1), &json!(1)), "{body}");
    let q = c.recv_until(SECS, |v| v["type"] == "quote").expect("the published quote");
    assert_eq!((&q["source_ts"], &q["sequence"], &q["data"]), (&event["source_ts"], &json!(1), &event["data"]));
    let publisher = token("feed-1", "publisher");
    let (status, body) = http(server.addr, "POST", "/api/publish", Some(&publisher), "{\"channel\":");
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("malformed"));
    // An array and NDJSON both work and keep the sequence contiguous.
    assert_eq!(common::publish(server.addr, &json!([event, event]))["sequences"][1]["sequence"], 3);
    let nd = format!("{event}\n{event}\n");
    assert_eq!(http(server.addr, "POST", "/api/publish", Some(&publisher), &nd).1["sequences"][1]["sequence"], 5);
    // A streaming publisher on /v1/publish: one frame per event, an error frame for a bad one.
    let mut feed = Client::connect(server.addr, "/v1/publish", Some(&publisher)).unwrap();
    for i in 0..20 {
        feed.send(json!({"channel":"quotes","data":{"symbol":"ZZZ","bid":i},"source_ts":i}));
    }
    feed.send(json!({"channel":"nope","data":{}}));
    assert_eq!(feed.recv().expect("an error frame for the bad event")["type"], "error");
    for expected in 2..=25u64 {
        let q = c.recv_until(SECS, |v| v["type"] == "quote").expect("every quote");
        assert_eq!(q["sequence"], expected);
        if expected > 5 {
            assert_eq!(q["source_ts"], expected - 6);
        }
    }
}

#[test]
fn catalog_and_status_endpoints() {
    let server = Server::start(&["--simulator-rate", "100"]);
    let (s, cat) = http(server.addr, "GET", "/api/ws/channels", None, "");
    assert_eq!(s, 200);
    let names: Vec<&str> = cat["channels"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    let all = "quotes trades bars news signals system orders executions portfolio alerts sessions decisions";
    assert_eq!(names, all.split(' ').collect::<Vec<_>>());
    let _c = server.connect(None);
    let (s, st) = http(server.addr, "GET", "/api/ws/status", None, "");
    assert_eq!(s, 200);
    assert_eq!((&st["enabled"], &st["active_connections"]), (&json!(true), &json!(1)), "{st}");
    assert_eq!(st["shards"].as_array().unwrap().len(), 2);
    assert_eq!(st["stream_health"]["simulator"]["status"], "active");
}

/// `--echo-path` (the conformance aid): off by default; on, every text and binary message comes back as it
/// came, and the server's limits and close handling hold there too.
#[test]
fn the_echo_endpoint_is_off_by_default_and_echoes_through_the_servers_codec() {
    use tungstenite::Message;
    let plain = Server::start(&["--no-simulator"]);
    assert!(Client::connect(plain.addr, "/echo", None).is_err(), "no echo endpoint unless asked for");
    let server = Server::start(&["--no-simulator", "--echo-path", "/echo", "--max-message-bytes", "1000"]);
    let mut c = Client::connect(server.addr, "/echo", None).expect("the echo endpoint upgrades");
    let text = "héllo, wörld ".repeat(20);
    c.ws.send(Message::text(text.clone())).unwrap();
    assert_eq!(c.ws.read().unwrap(), Message::text(text));
    let bytes: Vec<u8> = (0..=255).collect();
    c.ws.send(Message::binary(bytes.clone())).unwrap();
    assert_eq!(c.ws.read().unwrap(), Message::binary(bytes));
    c.ws.send(Message::text("x".repeat(1001))).unwrap();
    assert_eq!(c.close_code(SECS), Some(1009), "its limits are the server's");
}
