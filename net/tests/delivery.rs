//! Delivery guarantees against the real binary, where only real sockets show them: a stalled reader among a
//! thousand (kernel buffers, backpressure), graceful shutdown, reset and vanished peers, and a client cut off mid-stream that resumes on a new
//! connection. The rules themselves (resume, critical queues, heartbeats, the slow-consumer policy) are engine tests: `fanout/tests/connection.rs` and the seeded
//! simulation `fanout/tests/simulation.rs`.

mod common;

use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::proxy::Proxy;
use common::{metric, publish, quotes, token, wait_for, Client, Server};
use serde_json::{json, Value};

const SECS: Duration = Duration::from_secs(5);

fn order(user: &str, id: &str) -> Value {
    json!({"channel":"orders","user_id":user,"data":{"order_id":id,"symbol":"AAPL","side":"buy","status":"new","qty":10}})
}

#[test]
fn a_stalled_client_is_closed_1013_while_a_thousand_others_miss_nothing() {
    const READERS: usize = 1000;
    const QUOTES: usize = 200;
    let server = Server::start_env(
        &["--no-simulator"],
        // The stalled client starts reading only once its close is counted: the close frame waits for it.
        &[
            ("TICKWIRE_MAX_QUEUED_BYTES", "65536"),
            ("TICKWIRE_SLOW_CONSUMER_GRACE_MS", "500"),
            ("TICKWIRE_CLOSE_FLUSH_MS", "60000"),
        ],
    );
    // The stalled client: a small receive buffer, subscribed to 40 symbols of big frames (so that conflating
    // to the latest frame per symbol cannot bring its queue back under the bound), then never reads.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&server.addr.into()).unwrap();
    let stream: TcpStream = sock.into();
    stream.set_read_timeout(Some(SECS)).unwrap();
    let (ws, _) = tungstenite::client(format!("ws://{}/v1/stream", server.addr), stream).unwrap();
    let mut stalled = Client { ws, welcome: Value::Null };
    stalled.recv().unwrap();
    let bulk: Vec<String> = (0..40).map(|i| format!("BULK{i}")).collect();
    stalled.send(json!({"action":"subscribe","channel":"quotes","symbols":bulk,"id":"s"}));
    stalled.recv_until(SECS, |v| v["id"] == "s").unwrap();
    let bulk_refs: Vec<&str> = bulk.iter().map(String::as_str).collect();
    common::settle(&mut stalled, &bulk_refs);

    let ready = Arc::new(Barrier::new(READERS + 1));
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let mut c = server.connect(None);
            let ready = ready.clone();
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    c.send(json!({"action":"subscribe","channel":"quotes","symbols":["AAPL"],"id":"s"}));
                    c.recv_until(SECS, |v| v["id"] == "s").unwrap();
                    common::settle(&mut c, &["AAPL"]);
                    ready.wait();
                    let mut seqs = Vec::with_capacity(QUOTES);
                    while seqs.len() < QUOTES {
                        let Some(v) = c.recv_until(Duration::from_secs(30), |v| v["type"] == "quote") else { break };
                        seqs.push(v["sequence"].as_u64().unwrap());
                    }
                    seqs
                })
                .unwrap()
        })
        .collect();
    ready.wait();
    // Once the server gives up on the stalled client, it waits `close_flush_ms` (here 60 s) for the write under
    // way to finish before it sends the close frame; a peer that reads nothing by then gets only a FIN. So the
    // stalled client starts reading as soon as the close is counted, not after the readers are done.
    let addr = server.addr;
    let stalled_close = std::thread::spawn(move || {
        wait_for(Duration::from_secs(30), "the slow-consumer close", || {
            metric(addr, "tickwire_slow_consumer_closes_total") == 1.0
        });
        // Reading again, it finds the close after what the kernel buffered.
        stalled.close_code(SECS)
    });
    // 10 rounds of 40 frames of 32 KB: 12.8 MB, more than the kernel buffers (4 MB at most each way) hide.
    let pad = "x".repeat(32_000);
    for round in 0..10 {
        publish(server.addr, &quotes("AAPL", QUOTES / 10));
        for half in bulk.chunks(20) {
            let frames: Vec<Value> =
                half.iter().map(|s| json!({"channel":"quotes","data":{"symbol":s,"bid":round,"note":pad}})).collect();
            publish(server.addr, &Value::Array(frames));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let expected: Vec<u64> = (1..=QUOTES as u64).collect();
    for r in readers {
        assert_eq!(r.join().unwrap(), expected, "a reading client lost or repeated something");
    }
    assert_eq!(stalled_close.join().unwrap(), Some(1013));
    assert_eq!(metric(server.addr, "tickwire_slow_consumer_closes_total"), 1.0, "only the stalled client");
}

#[test]
fn sigterm_warns_flushes_and_closes_1001_with_a_retry_hint() {
    let mut server = Server::start(&["--no-simulator"]);
    let mut clients: Vec<Client> = (0..4).map(|_| server.connect(None)).collect();
    for c in &mut clients {
        c.send(json!({"action":"subscribe","channel":"quotes","symbols":["AAPL"],"id":"s"}));
        c.recv_until(SECS, |v| v["id"] == "s").unwrap();
        common::settle(c, &["AAPL"]);
    }
    // SIGTERM right after the 202: the fan-out to subscribers on another shard may still be on its way
    // between shards; the shutdown lets it arrive, and flushes what is queued, before the close.
    publish(server.addr, &quotes("AAPL", 200));
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    let mut hints = Vec::new();
    for c in &mut clients {
        let mut quotes = 0;
        let mut notice = None;
        c.ws.get_mut().set_read_timeout(Some(SECS)).unwrap();
        let close = loop {
            match c.ws.read().expect("the close frame") {
                tungstenite::Message::Text(t) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    match v["type"].as_str().unwrap() {
                        "quote" => quotes += 1,
                        "system" => notice = Some(v),
                        other => panic!("unexpected {other}"),
                    }
                }
                tungstenite::Message::Close(f) => break f.expect("a close code"),
                _ => {}
            }
        };
        assert_eq!(quotes, 200, "everything queued is flushed before the close");
        let notice = notice.expect("a system notice before the close");
        assert_eq!(notice["data"]["level"], "warning");
        let hint = notice["data"]["retry_after_ms"].as_u64().unwrap();
        assert!((500..=5000).contains(&hint), "{hint}");
        assert_eq!(u16::from(close.code), 1001);
        assert_eq!(close.reason.as_str(), format!("server shutting down; retry_after_ms={hint}"));
        hints.push(hint);
    }
    hints.dedup();
    assert!(hints.len() > 1, "hints are jittered: {hints:?}");
}

#[test]
fn reset_and_vanished_peers_are_cleaned_up_and_the_shard_keeps_serving() {
    let server = Server::start_env(&["--no-simulator", "--shards", "1"], &[("TICKWIRE_HEARTBEAT_S", "1")]);
    let proxy = Proxy::start(server.addr);
    let mut direct = server.connect(None);
    direct.send(json!({"action":"subscribe","channel":"quotes","symbols":["AAPL"],"id":"s"}));
    direct.recv_until(SECS, |v| v["id"] == "s").unwrap();
    common::settle(&mut direct, &["AAPL"]);
    // The well-behaved client reads all along (and so answers the server's pings).
    let direct = std::thread::spawn(move || {
        let mut seqs = Vec::new();
        while seqs.len() < 15 {
            let Some(v) = direct.recv_until(Duration::from_secs(15), |v| v["type"] == "quote") else { break };
            seqs.push(v["sequence"].as_u64().unwrap());
        }
        seqs
    });
    let mut proxied = Client::connect(proxy.addr, "/v1/stream", None).unwrap();
    proxied.send(json!({"action":"subscribe","channel":"quotes","symbols":["AAPL"],"id":"s"}));
    proxied.recv_until(SECS, |v| v["id"] == "s").unwrap();
    common::settle(&mut proxied, &["AAPL"]);
    assert_eq!(metric(server.addr, "tickwire_connections"), 2.0);
    publish(server.addr, &quotes("AAPL", 5));
    // Killed mid-stream: RST.
    proxy.reset();
    publish(server.addr, &quotes("AAPL", 5));
    wait_for(SECS, "the reset connection removed", || metric(server.addr, "tickwire_connections") == 1.0);
    // Vanished: no FIN, no data, both sockets open. Only the heartbeat can tell.
    let _vanished = Client::connect(proxy.addr, "/v1/stream", None).unwrap();
    assert_eq!(metric(server.addr, "tickwire_connections"), 2.0);
    proxy.set_blackhole(true);
    wait_for(Duration::from_secs(6), "the vanished connection removed", || {
        metric(server.addr, "tickwire_connections") == 1.0
    });
    assert!(metric(server.addr, "tickwire_heartbeat_closes_total") >= 1.0);
    publish(server.addr, &quotes("AAPL", 5));
    assert_eq!(direct.join().unwrap(), (1..=15).collect::<Vec<_>>(), "the shard served on, gapless");
    assert_eq!(metric(server.addr, "tickwire_heartbeat_closes_total"), 1.0, "only the vanished one was silent");
}

#[test]
fn a_client_cut_off_mid_stream_resumes_on_a_new_connection_with_every_sequence_once() {
    let server = Server::start(&["--no-simulator"]);
    let proxy = Proxy::start(server.addr);
    let alice = token("alice", "user");
    let mut c = Client::connect(proxy.addr, "/v1/stream", Some(&alice)).unwrap();
    let epoch = c.welcome["epoch"].clone();
    c.send(json!({"action":"subscribe","channel":"quotes","symbols":["AAPL"],"id":"q"}));
    c.send(json!({"action":"subscribe","channel":"orders","id":"o"}));
    c.recv_until(SECS, |v| v["id"] == "o").unwrap();
    common::settle(&mut c, &["AAPL"]);
    let (mut quotes, mut orders) = (Vec::new(), Vec::new());
    // One update: processed if it is past the last one of its topic; an order (critical) acknowledged too.
    let take = |c: &mut Client, v: Value, quotes: &mut Vec<u64>, orders: &mut Vec<u64>| {
        let seq = v["sequence"].as_u64().unwrap();
        let seen = if v["type"] == "order" { orders } else { quotes };
        if seq > seen.last().copied().unwrap_or(0) {
            seen.push(seq);
        }
        if v["type"] == "order" {
            c.send(json!({"action":"ack","channel":"orders","sequence":seq}));
        }
    };
    let batch = |from: usize| {
        let mut b: Vec<Value> =
            (from..from + 10).map(|i| json!({"channel":"quotes","data":{"symbol":"AAPL","bid":i}})).collect();
        b.push(order("alice", &format!("o-{from}")));
        Value::Array(b)
    };
    publish(server.addr, &batch(0));
    while quotes.len() < 5 {
        let v = c.recv_until(SECS, |v| v["type"] == "quote" || v["type"] == "order").expect("an update");
        take(&mut c, v, &mut quotes, &mut orders);
    }
    // Cut (FIN both ways): whatever was in flight is lost with the connection; more is published meanwhile.
    proxy.cut();
    assert_eq!(c.close_code(SECS), None, "a cut, not a close");
    publish(server.addr, &batch(10));
    let mut c = Client::connect(proxy.addr, "/v1/stream", Some(&alice)).unwrap();
    let last = *quotes.last().unwrap();
    c.send(
        json!({"action":"subscribe","channel":"quotes","symbols":["AAPL"],"from_sequence":{"AAPL":last},"epoch":epoch}),
    );
    c.send(json!({"action":"subscribe","channel":"orders"}));
    while quotes.len() < 20 || orders.len() < 2 {
        let v = c.recv_until(SECS, |v| v["sequence"].is_u64()).expect("the missed updates");
        assert_ne!(v["type"], "reset", "history reaches: {v}");
        take(&mut c, v, &mut quotes, &mut orders);
    }
    assert_eq!(quotes, (1..=20).collect::<Vec<u64>>(), "every quote once, in order");
    assert_eq!(orders, [1, 2], "every order, in order");
    assert!(c.recv_until(Duration::from_millis(300), |v| v["type"] == "quote").is_none(), "nothing more");
}

#[test]
fn a_resumed_subscription_gets_its_reply_and_replay_in_one_write_per_shard() {
    // One shard: the reply and the replay are one write. Two: the replay may come from the other shard,
    // after the reply went; still one write for all of it, not one per frame.
    for (shards, most) in [("1", 1.0), ("2", 2.0)] {
        let server = Server::start(&["--no-simulator", "--shards", shards]);
        let admin = token("root", "admin");
        let stats = |what: &str| {
            let (status, body) = common::http(server.addr, "GET", "/api/admin/websocket-stats", Some(&admin), "");
            assert_eq!(status, 200);
            body[what].as_f64().unwrap()
        };
        let mut c = server.connect(None);
        let epoch = c.welcome["epoch"].clone();
        publish(server.addr, &quotes("AAPL", 10));
        wait_for(SECS, "the welcome written", || stats("totalMessagesDelivered") == 1.0);
        let (writes, frames) = (stats("totalWrites"), stats("totalMessagesDelivered"));
        c.send(json!({"action":"subscribe","channel":"quotes","symbols":["AAPL"],"from_sequence":{"AAPL":0},
            "epoch":epoch,"id":"r"}));
        let mut seqs = Vec::new();
        while seqs.len() < 10 {
            let v = c.recv_until(SECS, |v| v["type"] == "quote").expect("the replay");
            seqs.push(v["sequence"].as_u64().unwrap());
        }
        assert_eq!(seqs, (1..=10).collect::<Vec<u64>>(), "{shards} shard(s): the whole history, in order");
        assert_eq!(stats("totalMessagesDelivered") - frames, 11.0, "the reply and ten updates");
        let written = stats("totalWrites") - writes;
        assert!((1.0..=most).contains(&written), "{shards} shard(s): {written} writes for 11 frames");
    }
}
