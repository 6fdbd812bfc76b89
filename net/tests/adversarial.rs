//! Attacks on the real binary over real sockets, each while a well-behaved client on the same shard
//! (`--shards 1`) receives its quotes: it must see every sequence (no gap) and keep receiving during the
//! attack. Raw clients speak bytes: `tickwire_core::ws::write_client_frame` builds their masked frames.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{http_raw, Server};
use serde_json::{json, Value};
use tickwire_core::ws::write_client_frame;

const SECS: Duration = Duration::from_secs(5);
const MASK: [u8; 4] = [0x12, 0x34, 0x56, 0x78];

/// One shard, a simulated feed of 4 symbols, a short handshake deadline for the slow attacks.
fn server() -> Server {
    Server::start_shards(
        1,
        &[
            "--simulator-rate",
            "800",
            "--simulator-symbols",
            "4",
            "--handshake-timeout-s",
            "1",
            "--max-messages-per-s",
            "100",
        ],
    )
}

/// The well-behaved client: subscribed to the quotes of AAPL and MSFT, checking every sequence.
struct Watcher {
    stop: Arc<AtomicBool>,
    quotes: Arc<AtomicU64>,
    /// Longest silence between two quotes, and gaps seen.
    worst: Arc<Mutex<(Duration, Vec<String>)>>,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    fn start(server: &Server) -> Watcher {
        let mut c = server.connect(None);
        c.send(json!({"action":"subscribe","channel":"quotes","symbols":["AAPL","MSFT"],"id":"w"}));
        c.recv_until(SECS, |v| v["id"] == "w").expect("subscribed");
        let stop = Arc::new(AtomicBool::new(false));
        let quotes = Arc::new(AtomicU64::new(0));
        let worst = Arc::new(Mutex::new((Duration::ZERO, Vec::new())));
        let thread = {
            let (stop, quotes, worst) = (stop.clone(), quotes.clone(), worst.clone());
            std::thread::spawn(move || {
                let mut last: HashMap<String, u64> = HashMap::new();
                let mut at = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let Some(text) = c.recv_text(Duration::from_millis(200)) else { continue };
                    let v: Value = serde_json::from_str(&text).unwrap();
                    let (Some(sym), Some(seq)) = (v["data"]["symbol"].as_str(), v["sequence"].as_u64()) else {
                        continue;
                    };
                    if let Some(prev) = last.insert(sym.to_owned(), seq) {
                        if v["type"] == "quote" && seq != prev + 1 {
                            worst.lock().unwrap().1.push(format!("{sym}: {prev} -> {seq}"));
                        }
                    }
                    if v["type"] == "quote" {
                        let gap = at.elapsed();
                        at = Instant::now();
                        let mut w = worst.lock().unwrap();
                        w.0 = w.0.max(gap);
                        quotes.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        // Warm: quotes flow before the attack starts.
        let w = Watcher { stop, quotes, worst, thread: Some(thread) };
        w.wait_for_quotes(5);
        *w.worst.lock().unwrap() = (Duration::ZERO, Vec::new());
        w
    }

    fn wait_for_quotes(&self, n: u64) {
        let start = self.quotes.load(Ordering::Relaxed);
        let deadline = Instant::now() + SECS;
        while self.quotes.load(Ordering::Relaxed) < start + n {
            assert!(Instant::now() < deadline, "the well-behaved client stopped receiving quotes");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Runs `attack`, again and again until the client has received 5 quotes meanwhile, and checks that
    /// it kept receiving, gap-free, during and after it.
    fn during(mut self, mut attack: impl FnMut()) {
        let before = self.quotes.load(Ordering::Relaxed);
        let deadline = Instant::now() + SECS;
        let mut rounds = 0;
        while self.quotes.load(Ordering::Relaxed) < before + 5 && Instant::now() < deadline {
            attack();
            rounds += 1;
        }
        let during = self.quotes.load(Ordering::Relaxed) - before;
        self.wait_for_quotes(5);
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().expect("watcher thread");
        let (silence, gaps) = self.worst.lock().unwrap().clone();
        assert!(gaps.is_empty(), "sequence gaps during the attack: {gaps:?}");
        assert!(during >= 5, "only {during} quotes arrived during {rounds} rounds of the attack");
        assert!(silence < Duration::from_millis(1000), "the client went {silence:?} without a quote");
    }
}

/// A raw upgraded WebSocket: the 101 read, anything after it kept.
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    fn open(addr: SocketAddr) -> Raw {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(SECS)).unwrap();
        s.write_all(common::UPGRADE_REQUEST).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let end = loop {
            let n = s.read(&mut chunk).unwrap();
            assert!(n > 0, "closed before the 101");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        assert!(buf.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&buf));
        buf.drain(..end);
        Raw { s, buf }
    }

    /// The next server frame, `(opcode, payload)`; `None` at end of stream or timeout.
    fn frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.buf.len() >= 2 {
                let len7 = (self.buf[1] & 0x7F) as usize;
                let (hdr, len) = match len7 {
                    126 if self.buf.len() >= 4 => (4, u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize),
                    127 if self.buf.len() >= 10 => {
                        (10, u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize)
                    }
                    126 | 127 => (usize::MAX, 0),
                    n => (2, n),
                };
                if hdr != usize::MAX && self.buf.len() >= hdr + len {
                    let op = self.buf[0] & 0x0F;
                    let payload = self.buf[hdr..hdr + len].to_vec();
                    self.buf.drain(..hdr + len);
                    return Some((op, payload));
                }
            }
            let mut chunk = [0u8; 8192];
            match self.s.read(&mut chunk) {
                Ok(n) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
    }

    /// The close code the server sends, skipping other frames.
    fn close_code(&mut self) -> Option<u16> {
        while let Some((op, payload)) = self.frame() {
            if op == 8 {
                return Some(payload.get(..2).map_or(1005, |b| u16::from_be_bytes([b[0], b[1]])));
            }
        }
        None
    }
}

#[test]
fn malformed_http() {
    let server = server();
    let addr = server.addr;
    Watcher::start(&server).during(|| {
        for bad in [
            &b"\x00\x01\x02\x03 garbage\r\n\r\n"[..],
            b"GET\x7f/ HTTP/1.1\r\n\r\n",
            b"GET / HTTP/9.9\r\n\r\n",
            b"GET /v1/stream HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"POST /api/publish HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"GET /v1/stream HTTP/1.1\r\nUpgrade: websocket\r\nSec-WebSocket-Key: x\r\nSec-WebSocket-Version: 8\r\n\r\n",
            b"GET /v1/stream HTTP/1.1\r\nHeader-Without-Colon\r\n\r\n",
        ] {
            for _ in 0..20 {
                let (status, _) = http_raw(addr, bad);
                assert!((400..500).contains(&status), "{:?} got {status}", String::from_utf8_lossy(bad));
            }
        }
    });
}

#[test]
fn oversized_headers() {
    let server = server();
    let addr = server.addr;
    Watcher::start(&server).during(|| {
        for _ in 0..20 {
            let mut req = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
            req.extend(std::iter::repeat_n(b'a', 64 * 1024));
            req.extend_from_slice(b"\r\n\r\n");
            assert_eq!(http_raw(addr, &req).0, 431);
            let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
            let req = format!("GET /healthz HTTP/1.1\r\n{many}\r\n");
            assert_eq!(http_raw(addr, req.as_bytes()).0, 431);
        }
    });
}

#[test]
fn unmasked_client_frames() {
    let server = server();
    let addr = server.addr;
    Watcher::start(&server).during(|| {
        for _ in 0..20 {
            let mut raw = Raw::open(addr);
            let payload = br#"{"action":"ping"}"#;
            let mut frame = vec![0x81, payload.len() as u8];
            frame.extend_from_slice(payload);
            raw.s.write_all(&frame).unwrap();
            assert_eq!(raw.close_code(), Some(1002));
        }
    });
}

#[test]
fn ping_floods() {
    let server = server();
    let addr = server.addr;
    Watcher::start(&server).during(|| {
        let mut raw = Raw::open(addr);
        // 5,000 pings in one write: answered up to the rate, then the connection is closed with 1008.
        let mut out = Vec::new();
        for _ in 0..5_000 {
            write_client_frame(&mut out, true, 9, b"flood", MASK);
        }
        let _ = raw.s.write_all(&out);
        let mut pongs = 0;
        let code = loop {
            match raw.frame() {
                Some((10, _)) => pongs += 1,
                Some((8, p)) => break Some(u16::from_be_bytes([p[0], p[1]])),
                Some(_) => {}
                None => break None,
            }
        };
        assert_eq!(code, Some(1008));
        assert!(pongs <= 100, "{pongs} pongs: the excess must be dropped");
    });
}

#[test]
fn subscribe_floods() {
    let server = server();
    let addr = server.addr;
    Watcher::start(&server).during(|| {
        let mut raw = Raw::open(addr);
        let mut out = Vec::new();
        for i in 0..3_000 {
            let req = format!(r#"{{"action":"subscribe","channel":"quotes","symbols":["S{i}"],"id":"{i}"}}"#);
            write_client_frame(&mut out, true, 1, req.as_bytes(), MASK);
        }
        let _ = raw.s.write_all(&out);
        let (mut subscribed, mut limited) = (0, 0);
        let code = loop {
            match raw.frame() {
                Some((1, p)) => {
                    let v: Value = serde_json::from_slice(&p).unwrap();
                    match v["type"].as_str() {
                        Some("subscribed") => subscribed += 1,
                        Some("error") if v["code"] == "RATE_LIMITED" => limited += 1,
                        _ => {}
                    }
                }
                Some((8, p)) => break Some(u16::from_be_bytes([p[0], p[1]])),
                Some(_) => {}
                None => break None,
            }
        };
        assert_eq!(code, Some(1008), "a persisting flood is closed");
        assert_eq!(limited, 1, "one RATE_LIMITED error, not one per dropped message");
        assert!(subscribed <= 100, "{subscribed} subscriptions: the excess must be dropped");
    });
}

#[test]
fn slowloris() {
    let server = server();
    let addr = server.addr;
    Watcher::start(&server).during(|| {
        // 50 clients each trickling a request head, a byte every 100 ms: all dropped at the 1 s deadline.
        let started = Instant::now();
        let mut socks: Vec<TcpStream> = (0..50)
            .map(|_| {
                let s = TcpStream::connect(addr).unwrap();
                s.set_nonblocking(true).unwrap();
                s
            })
            .collect();
        let mut open = socks.len();
        let mut closed = vec![false; socks.len()];
        let line = b"GET /v1/stream HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let mut i = 0;
        while open > 0 {
            // A guard against a hang, not a timing check: the deadline is 1 s, a loaded machine runs it late.
            assert!(started.elapsed() < Duration::from_secs(10), "{open} slow clients still connected");
            for (k, s) in socks.iter_mut().enumerate() {
                if closed[k] {
                    continue;
                }
                let _ = s.write_all(&line[i % line.len()..i % line.len() + 1]);
                let mut b = [0u8; 256];
                match s.read(&mut b) {
                    Ok(0) => {
                        closed[k] = true;
                        open -= 1;
                    }
                    Ok(_) => {
                        assert!(b.starts_with(b"HTTP/1.1 408"), "{}", String::from_utf8_lossy(&b));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => {
                        closed[k] = true;
                        open -= 1;
                    }
                }
            }
            i += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(started.elapsed() >= Duration::from_millis(900), "dropped before the deadline");
    });
}
