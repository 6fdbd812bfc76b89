//! Faults of a cluster (issue 15, docs/scale-out.md): three nodes on loopback, each with `--bus`, behind a
//! real TCP balancer (HAProxy from Debian's packages, started here), on a nats-server of the test's own
//! (so that it can be restarted, and starts empty). Resuming clients connect through the balancer; a
//! publisher publishes through it. Each test ends with every client having seen every sequence once, in
//! order.
//!
//! Needs `haproxy` and `nats-server` on the PATH: a machine without them skips with a notice, unless
//! `NATS_URL` or `CI` is set (`.ci/run` installs HAProxy and exports `NATS_URL`): then it fails.

mod common;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::{http, token, wait_for, Server};
use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;
use tungstenite::Message;

/// Whether `program` can be run here; outside CI a missing one skips the test.
fn have(program: &str) -> bool {
    let found = Command::new(program).arg("-v").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    if !found {
        if std::env::var_os("CI").is_some() || std::env::var_os("NATS_URL").is_some() {
            panic!("{program} is needed by the cluster tests in CI (.ci/run installs it)");
        }
        eprintln!("NOTICE: {program} not found: cluster test skipped (it runs in CI)");
    }
    found
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}{}x{}", std::process::id(), nanos % 1_000_000_000_000)
}

/// A nats-server with JetStream of the test's own, on a port and a store directory of its own.
struct Nats {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl Nats {
    fn start() -> Nats {
        let dir = std::env::temp_dir().join(unique("tickwire-nats-"));
        let mut nats = Nats { child: None, port: free_port(), dir };
        nats.run();
        nats
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts it (again, on the same port and store) and waits until it takes connections.
    fn run(&mut self) {
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        wait_for(Duration::from_secs(10), "nats-server to listen", || TcpStream::connect(addr).is_ok());
    }

    /// Stops it as an operator would (SIGTERM: JetStream writes out what it holds) and waits for the exit.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// HAProxy in TCP mode, round robin over `nodes`, each checked every 100 ms; a connection to a dead node
/// is dispatched to another.
struct Balancer {
    child: Child,
    addr: SocketAddr,
    config: PathBuf,
}

impl Balancer {
    fn start(nodes: &[SocketAddr]) -> Balancer {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let servers: String = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| format!("  server node{i} {n} check inter 100ms fall 1 rise 1\n"))
            .collect();
        let config = std::env::temp_dir().join(unique("tickwire-haproxy-") + ".cfg");
        std::fs::write(
            &config,
            format!(
                "global\n  maxconn 4096\ndefaults\n  mode tcp\n  timeout connect 1s\n  timeout client 60s\n  \
                 timeout server 60s\n  retries 3\n  option redispatch\nlisten tickwire\n  bind {addr}\n  \
                 balance roundrobin\n{servers}"
            ),
        )
        .unwrap();
        let child = Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start haproxy");
        wait_for(Duration::from_secs(10), "haproxy to listen", || TcpStream::connect(addr).is_ok());
        Balancer { child, addr, config }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}

fn bus_status(addr: SocketAddr) -> Value {
    http(addr, "GET", "/api/ws/status", None, "").1["bus"].clone()
}

fn node(url: &str) -> Server {
    Server::start(&["--no-simulator", "--bus", url, "--shards", "1"])
}

/// What a resuming client saw: each quote's `(sequence, last)` in the order they came, and its connections.
struct Seen {
    quotes: Vec<(u64, f64)>,
    connections: u32,
    resets: u32,
}

/// A client of the reference recipe (docs/protocol.md): through the balancer, subscribes to `symbol` from
/// the last sequence it has (0 at first) with the epoch of its first welcome; when its connection drops it
/// connects again, wherever the balancer sends it, and resumes. Says on `ready` once first subscribed; ends
/// once it has `until` (set when the publisher is done).
fn resuming_client(lb: SocketAddr, symbol: String, until: Arc<AtomicU64>, ready: mpsc::Sender<()>) -> Seen {
    let mut seen = Seen { quotes: Vec::new(), connections: 0, resets: 0 };
    let mut epoch: Option<Value> = None;
    let mut ready = Some(ready);
    let deadline = Instant::now() + Duration::from_secs(60);
    'connect: loop {
        assert!(Instant::now() < deadline, "the client did not get every update within 60 s");
        let Ok(stream) = TcpStream::connect(lb) else { continue };
        stream.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let request = format!("ws://{lb}/v1/stream").into_client_request().unwrap();
        let Ok((mut ws, _)) = tungstenite::client(request, stream) else { continue };
        seen.connections += 1;
        let last = seen.quotes.last().map_or(0, |q| q.0);
        let mut subscribe = json!({"action":"subscribe","channel":"quotes","symbols":[symbol],
            "from_sequence":{symbol.as_str(): last}});
        loop {
            if until.load(Ordering::Relaxed) > 0
                && seen.quotes.last().map_or(0, |q| q.0) >= until.load(Ordering::Relaxed)
            {
                return seen;
            }
            let v = match common::read_json(&mut ws) {
                common::Got::Json(v) => v,
                common::Got::Quiet => continue,
                // The node went away: connect again.
                common::Got::Gone => continue 'connect,
            };
            match v["type"].as_str().unwrap_or("") {
                "welcome" => {
                    let e = epoch.get_or_insert_with(|| v["epoch"].clone());
                    assert_eq!(&v["epoch"], e, "every node speaks the cluster's epoch");
                    subscribe["epoch"] = e.clone();
                    if ws.send(Message::text(subscribe.to_string())).is_err() {
                        continue 'connect;
                    }
                }
                "subscribed" => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                "quote" => seen.quotes.push((v["sequence"].as_u64().unwrap(), v["data"]["last"].as_f64().unwrap())),
                "reset" => seen.resets += 1,
                _ => {}
            }
        }
    }
}

/// Publishes `n` quotes of `symbol` through the balancer, one at a time, each tried until a node answers
/// 202 (a node that died or lost NATS answers nothing, or 503). `at(k)` runs before the k-th (from 0).
/// Returns the answers: `last` price by sequence.
fn publish_through(lb: SocketAddr, symbol: &str, n: usize, mut at: impl FnMut(usize)) -> HashMap<u64, f64> {
    let publisher = token("pub", "publisher");
    let mut answered = HashMap::new();
    for k in 0..n {
        at(k);
        let last = 100.0 + k as f64;
        let quote = json!({"channel":"quotes","data":{"symbol":symbol,"bid":last,"ask":last,"last":last}});
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (code, body) = http(lb, "POST", "/api/publish", Some(&publisher), &quote.to_string());
            if code == 202 {
                let sequence = body["sequences"][0]["sequence"].as_u64().unwrap();
                assert!(answered.insert(sequence, last).is_none(), "sequence {sequence} answered twice");
                break;
            }
            assert!(Instant::now() < deadline, "no node took quote {k} within 30 s: {code} {body}");
            // Refused (a node cut off from NATS) or no answer (a node killed): the balancer sends the
            // next try to the next node.
        }
        // The faults come mid-stream by count (`at`), not by time: no pacing is needed.
    }
    answered
}

/// Every client saw sequences 1..=last once each, in order, and each answered publish with its price.
fn check(clients: Vec<Seen>, answered: &HashMap<u64, f64>) {
    let last = *answered.keys().max().unwrap();
    for (i, seen) in clients.iter().enumerate() {
        let sequences: Vec<u64> = seen.quotes.iter().map(|q| q.0).collect();
        assert_eq!(sequences, (1..=last).collect::<Vec<_>>(), "client {i}: every sequence once, in order");
        assert_eq!(seen.resets, 0, "client {i}: resumed from history, never reset");
        for (sequence, price) in &seen.quotes {
            if let Some(answered) = answered.get(sequence) {
                assert_eq!(price, answered, "client {i}: sequence {sequence} is what its publisher was told");
            }
        }
    }
}

const CLIENTS: usize = 30;
const QUOTES: usize = 300;

/// Starts `CLIENTS` resuming clients through `lb`, returns once each is subscribed.
fn clients(lb: SocketAddr, symbol: &str, until: &Arc<AtomicU64>) -> Vec<std::thread::JoinHandle<Seen>> {
    let (ready_tx, ready) = mpsc::channel();
    let handles = (0..CLIENTS)
        .map(|_| {
            let (symbol, until, ready) = (symbol.to_owned(), until.clone(), ready_tx.clone());
            std::thread::spawn(move || resuming_client(lb, symbol, until, ready))
        })
        .collect();
    for _ in 0..CLIENTS {
        ready.recv_timeout(Duration::from_secs(30)).expect("every client subscribed");
    }
    handles
}

#[test]
fn a_node_killed_mid_stream_loses_no_client_an_update() {
    if !have("haproxy") || !have("nats-server") {
        return;
    }
    let nats = Nats::start();
    let mut nodes: Vec<Option<Server>> = (0..3).map(|_| Some(node(&nats.url()))).collect();
    let addrs: Vec<SocketAddr> = nodes.iter().flatten().map(|n| n.addr).collect();
    for &a in &addrs {
        wait_for(Duration::from_secs(20), "the bus to be up", || bus_status(a)["status"] == "up");
    }
    let lb = Balancer::start(&addrs);
    let symbol = unique("K");
    let until = Arc::new(AtomicU64::new(0));
    let handles = clients(lb.addr, &symbol, &until);
    let connected: Vec<f64> = addrs.iter().map(|&a| common::metric(a, "tickwire_connections")).collect();
    assert!(connected[0] > 0.0, "the balancer gave the node to be killed some clients: {connected:?}");

    let answered = publish_through(lb.addr, &symbol, QUOTES, |k| {
        if k == QUOTES / 2 {
            drop(nodes[0].take()); // SIGKILL, mid-stream
        }
    });
    until.store(*answered.keys().max().unwrap(), Ordering::Relaxed);
    let seen: Vec<Seen> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let moved = seen.iter().filter(|s| s.connections > 1).count();
    eprintln!("{moved} of {CLIENTS} clients came back through the balancer on another node");
    assert!(moved as f64 >= connected[0], "the killed node's clients all connected again: {moved}");
    check(seen, &answered);
}

#[test]
fn nats_restarted_mid_stream_loses_nothing_acknowledged() {
    if !have("haproxy") || !have("nats-server") {
        return;
    }
    let mut nats = Nats::start();
    let nodes: Vec<Server> = (0..3).map(|_| node(&nats.url())).collect();
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    for &a in &addrs {
        wait_for(Duration::from_secs(20), "the bus to be up", || bus_status(a)["status"] == "up");
    }
    let lb = Balancer::start(&addrs);
    let symbol = unique("R");
    let until = Arc::new(AtomicU64::new(0));
    let handles = clients(lb.addr, &symbol, &until);

    let answered = publish_through(lb.addr, &symbol, QUOTES, |k| {
        if k == QUOTES / 2 {
            nats.stop();
            // Every node sees NATS gone and refuses publishes (503) rather than sequence alone...
            for &a in &addrs {
                wait_for(Duration::from_secs(20), "the bus to be unreachable", || {
                    bus_status(a)["status"] == "unreachable"
                });
            }
            let other = json!({"channel":"quotes","data":{"symbol":unique("X"),"bid":1.0,"ask":1.0,"last":1.0}});
            let (code, body) =
                http(lb.addr, "POST", "/api/publish", Some(&token("pub", "publisher")), &other.to_string());
            assert_eq!(code, 503, "{body}");
            // ...until it is back, on the same store.
            nats.run();
            for &a in &addrs {
                wait_for(Duration::from_secs(30), "the bus to be up again", || bus_status(a)["status"] == "up");
            }
        }
    });
    until.store(*answered.keys().max().unwrap(), Ordering::Relaxed);
    let seen: Vec<Seen> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    check(seen, &answered);
    for &a in &addrs {
        assert!(bus_status(a)["connects"].as_u64().unwrap() >= 2, "{}", bus_status(a));
    }
}

#[test]
fn streams_made_again_are_a_new_epoch_and_every_resume_is_reset() {
    if !have("nats-server") {
        return;
    }
    let nats = Nats::start();
    let symbol = unique("E");
    let first = node(&nats.url());
    wait_for(Duration::from_secs(20), "the bus to be up", || bus_status(first.addr)["status"] == "up");
    let quote = json!({"channel":"quotes","data":{"symbol":symbol,"bid":1.0,"ask":1.0,"last":1.0}});
    let (code, body) = http(first.addr, "POST", "/api/publish", Some(&token("pub", "publisher")), &quote.to_string());
    assert_eq!(code, 202, "{body}");
    let old = first.connect(None).welcome["epoch"].clone();
    drop(first);
    // Another node on the same streams: the same epoch.
    let again = node(&nats.url());
    assert_eq!(again.connect(None).welcome["epoch"], old, "the epoch is the streams', not the node's");
    drop(again);

    // The streams are lost (deleted here, as an operator might): the next node makes them again.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
        for name in ["TICKWIRE_PUBLIC", "TICKWIRE_PRIVATE", "TICKWIRE_ACKS"] {
            js.delete_stream(name).await.unwrap_or_else(|e| panic!("delete {name}: {e}"));
        }
    });
    let fresh = node(&nats.url());
    wait_for(Duration::from_secs(20), "the bus to be up", || bus_status(fresh.addr)["status"] == "up");
    let mut c = fresh.connect(None);
    assert_ne!(c.welcome["epoch"], old, "a new epoch");
    c.send(json!({"action":"subscribe","channel":"quotes","symbols":[symbol],"from_sequence":{symbol.as_str(): 1},
        "epoch": old}));
    let reset = c.recv_until(Duration::from_secs(10), |v| v["type"] == "reset").expect("a reset");
    assert_eq!(reset["reason"], "epoch_changed", "{reset}");
}

#[test]
fn a_node_cut_off_from_nats_refuses_publishes_and_its_clients_miss_nothing() {
    if !have("haproxy") || !have("nats-server") {
        return;
    }
    let nats = Nats::start();
    // The first node reaches NATS through a proxy that can cut it off; the others directly.
    let proxy = common::proxy::Proxy::start(format!("127.0.0.1:{}", nats.port).parse().unwrap());
    let nodes = [node(&format!("nats://{}", proxy.addr)), node(&nats.url()), node(&nats.url())];
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    for &a in &addrs {
        wait_for(Duration::from_secs(20), "the bus to be up", || bus_status(a)["status"] == "up");
    }
    let lb = Balancer::start(&addrs);
    let symbol = unique("P");
    let until = Arc::new(AtomicU64::new(0));
    let handles = clients(lb.addr, &symbol, &until);
    let cut_off = addrs[0];

    let answered = publish_through(lb.addr, &symbol, QUOTES, |k| {
        if k == QUOTES / 3 {
            proxy.set_blackhole(true);
            proxy.cut();
            wait_for(Duration::from_secs(20), "the node to see NATS gone", || {
                bus_status(cut_off)["status"] == "unreachable"
            });
            // It refuses rather than sequence alone; the balancer's other nodes take the publisher's retries.
            let quote = json!({"channel":"quotes","data":{"symbol":symbol,"bid":1.0,"ask":1.0,"last":1.0}});
            let (code, body) =
                http(cut_off, "POST", "/api/publish", Some(&token("pub", "publisher")), &quote.to_string());
            assert_eq!(code, 503, "{body}");
        }
        if k == 2 * QUOTES / 3 {
            proxy.set_blackhole(false);
            wait_for(Duration::from_secs(30), "the node to be back", || bus_status(cut_off)["status"] == "up");
        }
    });
    until.store(*answered.keys().max().unwrap(), Ordering::Relaxed);
    let seen: Vec<Seen> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    // The cut-off node's clients stayed connected and got what was stored meanwhile once it was back.
    check(seen, &answered);
}
