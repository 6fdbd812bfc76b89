//! Test harness: the real `tickwire` binary on port 0, real WebSocket clients (tungstenite), raw HTTP.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{client::IntoClientRequest, Message, WebSocket};

pub mod proxy;

pub const SECRET: &str = "test-secret";

/// A running server process, stopped (SIGKILL) when dropped.
pub struct Server {
    pub addr: SocketAddr,
    pub child: Child,
    /// Every line the server wrote to stderr so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `tickwire serve` with 2 shards on port 0 and `extra` flags.
    pub fn start(extra: &[&str]) -> Server {
        Server::start_env(extra, &[])
    }

    /// [`Server::start`] with `TICKWIRE_*` settings (or `DATABASE_URL`) in the environment.
    pub fn start_env(extra: &[&str], env: &[(&str, &str)]) -> Server {
        Server::start_until(extra, env, "listening on ")
    }

    /// [`Server::start_env`], returning once the server has logged a line with `marker` (the address line,
    /// or an earlier one: a process waiting to take over an address, `net/tests/restart.rs`). `--listen` in
    /// `extra` replaces port 0.
    pub fn start_until(extra: &[&str], env: &[(&str, &str)], marker: &'static str) -> Server {
        let shards: &[&str] = if extra.contains(&"--shards") { &[] } else { &["--shards", "2"] };
        let listen: &[&str] = if extra.contains(&"--listen") { &[] } else { &["--listen", "127.0.0.1:0"] };
        let given = extra.iter().position(|a| *a == "--listen").map(|i| extra[i + 1].to_owned());
        let mut child = Command::new(env!("CARGO_BIN_EXE_tickwire"))
            .args(listen)
            .args(["--jwt-secret", SECRET])
            .args(shards)
            .args(extra)
            .env("RUST_LOG", "warn")
            // CI exports DATABASE_URL: only the persistence tests, which pass it, use a database.
            .env_remove("DATABASE_URL")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tickwire");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap().to_owned();
                    let _ = tx.send(Some(addr));
                } else if line.contains(marker) {
                    let _ = tx.send(None);
                }
                eprintln!("[server] {line}");
                lines.lock().unwrap().push(line);
            }
        });
        let Ok(addr) = rx.recv_timeout(Duration::from_secs(20)) else {
            let _ = child.kill();
            panic!("the server did not start within 20 s");
        };
        let addr = addr.or(given).expect("the address: logged, or given with --listen");
        Server { addr: addr.parse().unwrap(), child, log }
    }

    /// `ws://addr/v1/stream` with an optional token in the header.
    pub fn connect(&self, token: Option<&str>) -> Client {
        Client::connect(self.addr, "/v1/stream", token).expect("connect")
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.terminate_within(Duration::from_secs(10))
    }

    /// Sends SIGTERM and waits up to `limit` for the exit status (a drain of many clients takes longer).
    pub fn terminate_within(&mut self, limit: Duration) -> std::process::ExitStatus {
        self.sigterm();
        self.exit_within(limit)
    }

    /// Sends SIGTERM (the graceful stop) and returns at once.
    pub fn sigterm(&self) {
        // SAFETY-free: `kill` is a plain command.
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
    }

    /// Waits up to `limit` for the process to exit.
    pub fn exit_within(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "server did not stop within {limit:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A token signed with the test secret, made independently of the server's code.
pub fn token(sub: &str, role: &str) -> String {
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
    let claims = serde_json::json!({"sub": sub, "role": role, "exp": exp});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// A WebSocket client.
pub struct Client {
    pub ws: WebSocket<TcpStream>,
    pub welcome: Value,
}

impl Client {
    pub fn connect(addr: SocketAddr, path: &str, token: Option<&str>) -> Result<Client, tungstenite::Error> {
        let mut req = format!("ws://{addr}{path}").into_client_request()?;
        if let Some(t) = token {
            req.headers_mut().insert("Authorization", format!("Bearer {t}").parse().unwrap());
        }
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let (ws, _) = tungstenite::client(req, stream).map_err(|e| match e {
            tungstenite::HandshakeError::Failure(e) => e,
            tungstenite::HandshakeError::Interrupted(_) => tungstenite::Error::ConnectionClosed,
        })?;
        let mut c = Client { ws, welcome: Value::Null };
        if path.starts_with("/v1/stream") {
            c.welcome = c.recv().expect("welcome");
            assert_eq!(c.welcome["type"], "welcome");
        }
        Ok(c)
    }

    pub fn send(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).unwrap();
    }

    /// The next text frame as JSON and its raw text, or `None` on timeout.
    pub fn recv_text(&mut self, timeout: Duration) -> Option<String> {
        self.ws.get_mut().set_read_timeout(Some(timeout)).unwrap();
        loop {
            match self.ws.read() {
                Ok(Message::Text(t)) => return Some(t.to_string()),
                Ok(Message::Close(f)) => panic!("unexpected close: {f:?}"),
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    return None
                }
                Err(e) => panic!("read failed: {e}"),
            }
        }
    }

    pub fn recv(&mut self) -> Option<Value> {
        self.recv_text(Duration::from_secs(5)).map(|t| serde_json::from_str(&t).unwrap())
    }

    /// The next frame matching `pred`, skipping others, within `timeout`.
    pub fn recv_until(&mut self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let v: Value = serde_json::from_str(&self.recv_text(left.max(Duration::from_millis(1)))?).unwrap();
            if pred(&v) {
                return Some(v);
            }
        }
        None
    }

    /// Reads until the server closes; returns the close code.
    pub fn close_code(&mut self, timeout: Duration) -> Option<u16> {
        self.ws.get_mut().set_read_timeout(Some(timeout)).unwrap();
        loop {
            match self.ws.read() {
                Ok(Message::Close(Some(f))) => return Some(u16::from(f.code)),
                Ok(Message::Close(None)) => return Some(u16::from(CloseCode::Status)),
                Ok(_) => continue,
                Err(e) => {
                    eprintln!("close_code: no close frame: {e}");
                    return None;
                }
            }
        }
    }
}

/// One raw HTTP exchange (the request is sent as given); returns status and body (status 0: no answer).
pub fn http_raw(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(20)).unwrap();
    // Generous: tests run in parallel on two cores, some of them loading the server hard.
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut out = Vec::new();
    if s.write_all(request).is_ok() {
        let _ = s.read_to_end(&mut out);
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// `METHOD path` with an optional bearer token and body; `Connection: close`.
pub fn http(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, Value) {
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, body) = http_raw(addr, req.as_bytes());
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// Publishes events (a JSON array or object) as `publisher`; panics unless the server accepts them.
pub fn publish(addr: SocketAddr, events: &Value) -> Value {
    let (status, body) = http(addr, "POST", "/api/publish", Some(&token("oms", "publisher")), &events.to_string());
    assert_eq!(status, 202, "publish refused: {body}");
    body
}

/// `n` quotes of `symbol`, as one publish body.
pub fn quotes(symbol: &str, n: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|i| serde_json::json!({"channel":"quotes","data":{"symbol":symbol,"bid":100 + i,"ask":101 + i}}))
            .collect(),
    )
}

/// A value of the Prometheus text at `/metrics`, summed over shards.
pub fn metric(addr: SocketAddr, name: &str) -> f64 {
    metric_where(addr, name, &[])
}

/// A value of `/metrics` summed over the samples of `name` that have each of `labels` (`channel="quotes"`).
pub fn metric_where(addr: SocketAddr, name: &str, labels: &[&str]) -> f64 {
    let (status, body) = http_raw(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 200);
    body.lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name) && labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until `cond` holds, polling; panics with `what` after `timeout`.
pub fn wait_for(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the subscriptions `c` has just made to public topics of `symbols` are in place at their owners
/// (`subscribed` comes first, so an update published at once could reach the client folded into its starting
/// snapshot: docs/protocol.md, "Sequences"). Deterministic, not a sleep: `c` subscribes to a barrier topic with
/// the same owner as each symbol's topics (its `news`) from another epoch; the owner answers each in order
/// with a `reset`, so each `reset` comes after the earlier subscriptions are placed. The barrier is then
/// unsubscribed. Publish nothing on those topics meanwhile: any other frame fails the test. Private critical
/// channels need no settling (their messages wait in the user's queue until the subscription is placed).
pub fn settle(c: &mut Client, symbols: &[&str]) {
    let mut symbols: Vec<String> = symbols.iter().map(|s| s.to_ascii_uppercase()).collect();
    symbols.sort();
    symbols.dedup();
    let from: serde_json::Map<String, Value> = symbols.iter().map(|s| (s.clone(), Value::from(0))).collect();
    c.send(serde_json::json!({"action":"subscribe","channel":"news","symbols":symbols,"from_sequence":from,
        "epoch":"settle","id":"settle"}));
    let (mut subscribed, mut resets) = (false, Vec::new());
    while !subscribed || resets.len() < symbols.len() {
        let v = c.recv().unwrap_or_else(|| panic!("settle: no barrier reset; got {resets:?}"));
        match v["type"].as_str() {
            Some("subscribed") if v["id"] == "settle" => subscribed = true,
            Some("reset") if v["channel"] == "news" && v["reason"] == "epoch_changed" => {
                resets.push(v["symbol"].as_str().unwrap_or_default().to_owned())
            }
            _ => panic!("settle: a frame arrived while settling (publish nothing before settling): {v}"),
        }
    }
    resets.sort();
    assert_eq!(resets, symbols, "settle: one barrier reset per symbol");
    c.send(serde_json::json!({"action":"unsubscribe","channel":"news","symbols":symbols,"id":"settled"}));
    let v = c.recv().expect("settle: the barrier's unsubscribed");
    assert!(v["type"] == "unsubscribed" && v["id"] == "settled", "settle: a frame arrived while settling: {v}");
}

/// A WebSocket upgrade request for `/v1/stream`, for tests that speak the protocol over a raw socket.
pub const UPGRADE_REQUEST: &[u8] =
    b"GET /v1/stream HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// What a read of a resuming client's connection gave (net/tests/cluster.rs, restart.rs).
pub enum Got {
    /// A JSON text frame.
    Json(Value),
    /// Nothing within the read timeout, or a frame that is not text.
    Quiet,
    /// The connection ended: connect again.
    Gone,
}

/// Reads one frame of a resuming client.
pub fn read_json(ws: &mut WebSocket<TcpStream>) -> Got {
    match ws.read() {
        Ok(Message::Text(t)) => Got::Json(serde_json::from_str(&t).expect("a JSON frame")),
        Ok(_) => Got::Quiet,
        Err(tungstenite::Error::Io(e))
            if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
        {
            Got::Quiet
        }
        Err(_) => Got::Gone,
    }
}
