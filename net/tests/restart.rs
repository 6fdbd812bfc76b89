//! A restart with no loss (issue 17, docs/deploy/restart.md), against the real binary and a real PostgreSQL:
//! a new process starts beside the old one on the same address (SO_REUSEPORT) and waits; the old one, sent
//! SIGTERM, stops taking publishes (503, `Retry-After`) and connections, delivers what it sequenced, sends
//! each client its shutdown notice, drains, hands its epoch and public sequences over and exits; the new one
//! takes over. 2,000 resuming clients and a publisher sending back to back go through it, each subscribed to a
//! public topic (quotes), a private one (portfolio) and a private critical one (orders): every client ends
//! with every sequence of its topics once, in order (orders at least once), with no reset.

mod common;
#[path = "../../persistence/tests/support/testdb.rs"]
mod testdb;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::{http, token, Server};
use serde_json::{json, Value};
use testdb::TestDb;
use tungstenite::client::IntoClientRequest;
use tungstenite::Message;

const CLIENTS: usize = 2_000;
const SYMBOLS: usize = 20;
const USERS: usize = 50;
/// Events published at least: a quote, an order and a portfolio in turn.
const EVENTS: usize = 1_200;
/// The restart begins after this many events.
const RESTART_AT: usize = 400;
/// Events published at least once the old process has been sent SIGTERM: through its stop and the take-over.
const AFTER_STOP: usize = 400;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// What a client saw: quote and portfolio sequences in the order they came, order sequences (repeats
/// included: orders are delivered at least once), resets, connections, and the epochs of its welcomes.
#[derive(Default)]
struct Seen {
    quotes: Vec<u64>,
    portfolio: Vec<u64>,
    orders: Vec<u64>,
    resets: u32,
    connections: u32,
    epochs: BTreeSet<String>,
    /// The `retry_after_ms` of each shutdown notice.
    notices: Vec<u64>,
}

/// The last sequence of each topic, known once the publisher is done.
#[derive(Default)]
struct Ends {
    quotes: BTreeMap<String, u64>,
    orders: BTreeMap<String, u64>,
    portfolio: BTreeMap<String, u64>,
}

/// A client of the reference recipe (docs/protocol.md) as user `user`: subscribes to `symbol`'s quotes, its
/// portfolio and its orders, from the last sequences it has, with the epoch of its first welcome; acks each order;
/// when its connection ends it connects again at once and resumes. Ends once it has both topics' last
/// sequences (known when `ends` is filled).
fn client(
    addr: SocketAddr,
    user: String,
    symbol: String,
    ends: Arc<Mutex<Option<Ends>>>,
    ready: mpsc::Sender<()>,
) -> Seen {
    let mut seen = Seen::default();
    let mut epoch: Option<String> = None;
    let mut ready = Some(ready);
    let deadline = Instant::now() + Duration::from_secs(120);
    let user_token = token(&user, "user");
    'connect: loop {
        assert!(Instant::now() < deadline, "{user}/{symbol}: not every update within 120 s");
        let Ok(stream) = TcpStream::connect(addr) else { continue };
        // The handshake may wait in the new process's backlog until it takes over.
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut request = format!("ws://{addr}/v1/stream").into_client_request().unwrap();
        request.headers_mut().insert("Authorization", format!("Bearer {user_token}").parse().unwrap());
        let Ok((mut ws, _)) = tungstenite::client(request, stream) else { continue };
        ws.get_ref().set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        seen.connections += 1;
        loop {
            if let Some(ends) = &*ends.lock().unwrap() {
                let (q, o, p) = (ends.quotes.get(&symbol), ends.orders.get(&user), ends.portfolio.get(&user));
                if seen.quotes.last() >= q && seen.orders.iter().max() >= o && seen.portfolio.last() >= p {
                    return seen;
                }
            }
            let v = match common::read_json(&mut ws) {
                common::Got::Json(v) => v,
                common::Got::Quiet => continue,
                // The old process closed (1001 after its notice): connect again.
                common::Got::Gone => continue 'connect,
            };
            match v["type"].as_str().unwrap_or("") {
                "welcome" => {
                    let e = epoch.get_or_insert_with(|| v["epoch"].as_str().unwrap().to_owned()).clone();
                    seen.epochs.insert(v["epoch"].as_str().unwrap().to_owned());
                    let quotes = json!({"action":"subscribe","channel":"quotes","symbols":[symbol],
                        "from_sequence":{symbol.as_str(): seen.quotes.last().copied().unwrap_or(0)},"epoch":e});
                    let portfolio = json!({"action":"subscribe","channel":"portfolio",
                        "from_sequence":{"*": seen.portfolio.last().copied().unwrap_or(0)},"epoch":e});
                    let orders = json!({"action":"subscribe","channel":"orders",
                        "from_sequence":{"*": seen.orders.iter().max().copied().unwrap_or(0)},"epoch":e});
                    for s in [quotes, portfolio, orders] {
                        if ws.send(Message::text(s.to_string())).is_err() {
                            continue 'connect;
                        }
                    }
                }
                "subscribed" if v["channel"] == "orders" => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                "quote" => seen.quotes.push(v["sequence"].as_u64().unwrap()),
                "portfolio" => seen.portfolio.push(v["sequence"].as_u64().unwrap()),
                "order" => {
                    let sequence = v["sequence"].as_u64().unwrap();
                    seen.orders.push(sequence);
                    let ack = json!({"action":"ack","channel":"orders","sequence":sequence});
                    if ws.send(Message::text(ack.to_string())).is_err() {
                        continue 'connect;
                    }
                }
                "reset" => seen.resets += 1,
                "system" if v["data"]["retry_after_ms"].is_u64() => {
                    seen.notices.push(v["data"]["retry_after_ms"].as_u64().unwrap());
                }
                _ => {}
            }
        }
    }
}

#[test]
fn a_new_process_beside_the_old_one_takes_over_and_no_client_misses_an_update() {
    let Some(db) = TestDb::create() else { return };
    let listen = format!("127.0.0.1:{}", free_port());
    let args = [
        "--no-simulator",
        "--listen",
        listen.as_str(),
        "--database-url",
        db.url.as_str(),
        "--max-connections-per-user",
        "1000",
        "--shutdown-timeout-ms",
        "30000",
    ];
    let env = [("RUST_LOG", "info")];
    let mut old = Server::start_env(&args, &env);
    let addr = old.addr;

    // The clients, each ready once subscribed.
    let ends: Arc<Mutex<Option<Ends>>> = Arc::default();
    let (ready_tx, ready_rx) = mpsc::channel();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (user, symbol) = (format!("u-{}", i % USERS), format!("S{}", i % SYMBOLS));
            let (ends, ready) = (ends.clone(), ready_tx.clone());
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || client(addr, user, symbol, ends, ready))
                .unwrap()
        })
        .collect();
    for _ in 0..CLIENTS {
        ready_rx.recv_timeout(Duration::from_secs(60)).expect("every client subscribed");
    }

    // The publisher, one publish after another without a pause, before, through and after the restart: it
    // says when the restart's turn has come and goes on until it has published AFTER_STOP events since the
    // old process was sent SIGTERM. A publish refused by the stopping process (503) is sent again; one sent
    // while no process accepts waits in the new one's backlog.
    let (turn_tx, turn_rx) = mpsc::channel();
    let stop_sent = Arc::new(AtomicBool::new(false));
    let publisher = {
        let stop_sent = stop_sent.clone();
        std::thread::spawn(move || {
            let publisher = token("pub", "publisher");
            let mut ends = Ends::default();
            let (mut refused, mut after_stop) = (0u32, 0);
            let mut k = 0;
            while k < EVENTS || after_stop < AFTER_STOP {
                if k == RESTART_AT {
                    turn_tx.send(()).unwrap();
                }
                if stop_sent.load(Ordering::Acquire) {
                    after_stop += 1;
                }
                let (event, topics, key) = match k % 3 {
                    0 => {
                        let symbol = format!("S{}", (k / 3) % SYMBOLS);
                        let quote = json!({"channel":"quotes","data":{"symbol":symbol,"bid":k,"ask":k,"last":k}});
                        (quote, &mut ends.quotes, symbol)
                    }
                    1 => {
                        let user = format!("u-{}", (k / 3) % USERS);
                        let order = json!({"channel":"orders","user_id":user,
                            "data":{"order_id":format!("o-{k}"),"symbol":"AAPL","side":"buy","status":"new"}});
                        (order, &mut ends.orders, user)
                    }
                    _ => {
                        let user = format!("u-{}", (k / 3) % USERS);
                        let portfolio = json!({"channel":"portfolio","user_id":user,"data":{"total_value":k,
                            "day_pnl":0.0,"cash":k,"buying_power":k,"positions":[]}});
                        (portfolio, &mut ends.portfolio, user)
                    }
                };
                let deadline = Instant::now() + Duration::from_secs(60);
                let sequence = loop {
                    let (code, body) = http(addr, "POST", "/api/publish", Some(&publisher), &event.to_string());
                    match code {
                        202 => break body["sequences"][0]["sequence"].as_u64().unwrap(),
                        // Refused by the stopping process; or no answer at all (a connection the old
                        // process never accepted, reset when it closed its listener).
                        503 | 0 => refused += 1,
                        other => panic!("publish {k}: {other} {body}"),
                    }
                    assert!(Instant::now() < deadline, "publish {k} not taken within 60 s");
                };
                let last = topics.entry(key).or_default();
                assert!(sequence > *last, "publish {k}: sequence {sequence} after {last}");
                *last = sequence;
                k += 1;
            }
            (ends, refused, k)
        })
    };

    // The restart, by the publisher's count: the new process beside the old one (it binds the address and
    // waits for the old one's lock), then SIGTERM to the old one.
    turn_rx.recv_timeout(Duration::from_secs(60)).expect("the restart's turn");
    let new = Server::start_until(&args, &env, "waiting for it to stop");
    old.sigterm();
    stop_sent.store(true, Ordering::Release);
    let stopped = old.exit_within(Duration::from_secs(60));
    assert!(stopped.success(), "the old process exits cleanly: {stopped}");
    common::wait_for(Duration::from_secs(30), "the new process to take over", || {
        new.log.lock().unwrap().iter().any(|l| l.contains("listening on"))
    });

    let (published, refused, events) = publisher.join().unwrap();
    *ends.lock().unwrap() = Some(published);
    let seen: Vec<Seen> = clients.into_iter().map(|c| c.join().unwrap()).collect();

    let ends = ends.lock().unwrap();
    let ends = ends.as_ref().unwrap();
    let mut epochs = BTreeSet::new();
    let mut repeats = 0;
    for (i, s) in seen.iter().enumerate() {
        let (user, symbol) = (format!("u-{}", i % USERS), format!("S{}", i % SYMBOLS));
        let last = ends.quotes[&symbol];
        assert_eq!(s.quotes, (1..=last).collect::<Vec<_>>(), "client {i}: every quote of {symbol} once, in order");
        // Orders at least once: a repeat is an order whose ack the old process had not stored; the first
        // sight of each comes in order.
        let mut firsts: Vec<u64> = Vec::new();
        for &o in &s.orders {
            if firsts.contains(&o) {
                repeats += 1;
            } else {
                firsts.push(o);
            }
        }
        assert_eq!(firsts, (1..=ends.orders[&user]).collect::<Vec<_>>(), "client {i}: every order of {user}, in order");
        let last = ends.portfolio[&user];
        assert_eq!(s.portfolio, (1..=last).collect::<Vec<_>>(), "client {i}: every portfolio of {user} once, in order");
        assert_eq!(s.resets, 0, "client {i}: resumed, never reset");
        assert!(s.connections >= 2, "client {i} went through the restart");
        // The old process told it before closing, with a reconnect hint in the documented range.
        assert!(
            s.notices.len() == 1 && (500..=5000).contains(&s.notices[0]),
            "client {i}: one shutdown notice: {:?}",
            s.notices
        );
        epochs.extend(s.epochs.iter().cloned());
    }
    assert_eq!(epochs.len(), 1, "the new process continues the old one's epoch: {epochs:?}");
    let log = old.log.lock().unwrap().clone();
    assert!(log.iter().any(|l| l.contains("handed over to the next process")), "the old process handed over");
    eprintln!(
        "restart: {CLIENTS} clients, {events} events back to back, {refused} publishes refused while stopping \
         and sent again, {repeats} orders delivered twice (unacknowledged at the stop)"
    );
}

/// One request on a kept-alive connection: the status line and headers, and the body.
fn request(stream: &mut TcpStream, request: &str) -> (String, String) {
    use std::io::{BufRead, BufReader, Read, Write};
    stream.write_all(request.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    let (mut head, mut length) = (String::new(), 0);
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    (head, String::from_utf8(body).unwrap())
}

#[test]
fn a_stopping_process_refuses_publishes_with_retry_after() {
    // One shard: the kept-alive connection and the subscriber that holds the drain are on the same one (a
    // shard that has drained ends, and its connections with it). The drain lasts as long as that subscriber
    // neither reads nor goes: its close cannot be flushed (the waits below are far beyond the test's).
    let mut server = Server::start_env(
        &[
            "--no-simulator",
            "--shards",
            "1",
            "--close-flush-ms",
            "120000",
            "--shutdown-timeout-ms",
            "120000",
            "--slow-consumer-grace-ms",
            "120000",
            "--max-queued-bytes",
            "67108864",
        ],
        &[("RUST_LOG", "info")],
    );
    let publisher = token("pub", "publisher");
    let post = |body: &str| {
        format!(
            "POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {publisher}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    // The subscriber that holds the drain: a small receive buffer, subscribed, then never read again.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&server.addr.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut upgrade = format!("ws://{}/v1/stream", server.addr).into_client_request().unwrap();
    upgrade.headers_mut().insert("Authorization", format!("Bearer {}", token("silent", "user")).parse().unwrap());
    let (mut silent, _) = tungstenite::client(upgrade, stream).unwrap();
    // A private channel: its updates are never conflated, so they pile up.
    silent.send(Message::text(r#"{"action":"subscribe","channel":"portfolio","id":"s"}"#)).unwrap();
    while !matches!(silent.read().unwrap(), Message::Text(t) if t.contains("\"subscribed\"")) {}
    // More updates for it than the kernel's buffers hold (the sender's grows to 4 MiB), on a connection
    // kept alive for what follows: about 12 MB, in requests under the body limit.
    let mut kept = TcpStream::connect(server.addr).unwrap();
    kept.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let position = json!({"symbol":"STOP","quantity":1,"avg_price":100.0,"market_price":101.0,"unrealized_pnl":1.0});
    let update = json!({"channel":"portfolio","user_id":"silent","data":{"total_value":1,"day_pnl":0.0,"cash":1,
        "buying_power":1,"positions":vec![position; 30]}});
    for _ in 0..14 {
        let (head, body) = request(&mut kept, &post(&Value::from(vec![update.clone(); 300]).to_string()));
        assert!(head.starts_with("HTTP/1.1 202"), "{head}{body}");
    }
    server.sigterm();
    common::wait_for(Duration::from_secs(30), "the drain", || {
        server.log.lock().unwrap().iter().any(|l| l.contains("stopping"))
    });
    let one = json!({"channel":"quotes","data":{"symbol":"STOP","bid":1,"ask":2}}).to_string();
    let (head, body) = request(&mut kept, &post(&one));
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(head.contains("Retry-After: 1\r\n"), "{head}");
    assert!(body.contains("the server is stopping: nothing was published"), "{body}");
    // The subscriber goes: the drain ends and the process exits cleanly.
    drop(silent);
    assert!(server.terminate_within(Duration::from_secs(30)).success());
}
