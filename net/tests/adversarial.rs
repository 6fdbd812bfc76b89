//! Bad and hostile clients against the real binary over real sockets, each while a well-behaved client on
//! the same shard (`--shards 1`) receives its quotes: every bad request gets its error (HTTP 4xx as JSON, or
//! a close code), and the good client must see every sequence (no gap) and keep receiving meanwhile. Raw
//! clients speak bytes: `tickwire_core::ws::write_client_frame` builds their masked frames. The rules behind
//! the close codes (frames the codec refuses, the message rate) are engine tests in
//! `fanout/tests/connection.rs`; here they are seen on the wire, under fire.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{http, http_raw, Server};
use serde_json::{json, Value};
use tickwire_core::ws::write_client_frame;

const SECS: Duration = Duration::from_secs(5);
const MASK: [u8; 4] = [0x12, 0x34, 0x56, 0x78];

/// One shard, a simulated feed of 4 symbols, a short handshake deadline for the slow attacks.
fn server() -> Server {
    let flags =
        "--shards 1 --simulator-rate 800 --simulator-symbols 4 --handshake-timeout-s 1 --max-messages-per-s 100";
    Server::start(&flags.split(' ').collect::<Vec<_>>())
}

/// Runs `attack` on a thread of its own, again and again, while a well-behaved client subscribed to the
/// quotes of AAPL and MSFT reads them; returns once the attack has run and the client has received 10 quotes
/// meanwhile, each the next of its symbol and none more than a second after the one before. A failed check
/// of the attack fails the test.
fn under_attack(server: &Server, attack: impl Fn() + Send + 'static) {
    let mut c = server.connect(None);
    c.send(json!({"action":"subscribe","channel":"quotes","symbols":["AAPL","MSFT"],"id":"w"}));
    c.recv_until(SECS, |v| v["id"] == "w").expect("subscribed");
    let mut last: HashMap<String, u64> = HashMap::new();
    let mut next = |c: &mut common::Client| {
        let v = c.recv_until(SECS, |v| v["sequence"].is_u64()).expect("the well-behaved client kept receiving");
        let (sym, seq) = (v["data"]["symbol"].as_str().unwrap().to_owned(), v["sequence"].as_u64().unwrap());
        if let Some(prev) = last.insert(sym.clone(), seq).filter(|_| v["type"] == "quote") {
            assert_eq!(seq, prev + 1, "a gap in {sym}");
        }
    };
    for _ in 0..5 {
        next(&mut c); // quotes flow before the attack starts
    }
    let (stop, rounds) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let attacker = {
        let (stop, rounds) = (stop.clone(), rounds.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                attack();
                rounds.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let mut quotes = 0;
    while quotes < 10 || (rounds.load(Ordering::Relaxed) == 0 && !attacker.is_finished()) {
        let at = Instant::now();
        next(&mut c);
        assert!(at.elapsed() < Duration::from_secs(1), "the client went {:?} without a quote", at.elapsed());
        quotes += 1;
    }
    stop.store(true, Ordering::Relaxed);
    attacker.join().expect("the attack's own checks");
}

/// A raw upgraded WebSocket: the 101 read, anything after it kept.
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    fn open(addr: SocketAddr) -> Raw {
        Raw::open_with(addr, common::UPGRADE_REQUEST).0
    }

    /// Upgrades with `request`; returns the connection and the 101's head.
    fn open_with(addr: SocketAddr, request: &[u8]) -> (Raw, String) {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(SECS)).unwrap();
        s.write_all(request).unwrap();
        let mut raw = Raw { s, buf: Vec::new() };
        let end = loop {
            assert!(raw.read(), "closed before the 101");
            if let Some(i) = raw.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        assert!(raw.buf.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&raw.buf));
        let head = String::from_utf8_lossy(&raw.buf[..end]).into_owned();
        raw.buf.drain(..end);
        (raw, head)
    }

    fn read(&mut self) -> bool {
        let mut chunk = [0u8; 16384];
        let n = self.s.read(&mut chunk).unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// The server's frames up to its close frame, and the close code; `None` if it never closed.
    fn until_close(&mut self) -> (Vec<(u8, Vec<u8>)>, Option<u16>) {
        loop {
            let frames = tickwire_core::ws::server_frames(&self.buf);
            if let Some(i) = frames.iter().position(|(op, _)| *op == 8) {
                let code = frames[i].1.get(..2).map_or(1005, |b| u16::from_be_bytes([b[0], b[1]]));
                return (frames[..i].iter().map(|(op, p)| (*op, p.to_vec())).collect(), Some(code));
            }
            if !self.read() {
                return (Vec::new(), None);
            }
        }
    }
}

#[test]
fn malformed_http_gets_4xx_as_json() {
    let server = server();
    let addr = server.addr;
    under_attack(&server, move || {
        for bad in [
            &b"\x00\x01\x02\x03 garbage\r\n\r\n"[..],
            b"BLAH\x01 / HTTP/1.1\r\n\r\n",
            b"GET\x7f/ HTTP/1.1\r\n\r\n",
            b"GET / HTTP/9.9\r\n\r\n",
            b"GET /v1/stream HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"POST /api/publish HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"GET /v1/stream HTTP/1.1\r\nUpgrade: websocket\r\nSec-WebSocket-Key: x\r\nSec-WebSocket-Version: 8\r\n\r\n",
            b"GET /v1/stream HTTP/1.1\r\nHeader-Without-Colon\r\n\r\n",
            b"GET /v1/stream HTTP/1.1\r\nHost: x\r\n\r\n", // not an upgrade
        ] {
            let (status, body) = http_raw(addr, bad);
            assert!((400..500).contains(&status), "{:?} got {status}", String::from_utf8_lossy(bad));
            let v: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}"));
            assert!(v["error"].is_string(), "{body}");
        }
        let mut big = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 64 * 1024));
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(http_raw(addr, &big).0, 431);
        let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
        assert_eq!(http_raw(addr, format!("GET /healthz HTTP/1.1\r\n{many}\r\n").as_bytes()).0, 431);
        // Truncated: the head never completes before the client stops sending.
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost:").unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 400"), "{out}");
        let (status, body) = http(addr, "GET", "/nope", None, "");
        assert_eq!(status, 404);
        assert!(body["error"].as_str().unwrap().contains("/nope"));
        assert_eq!(http(addr, "DELETE", "/healthz", None, "").0, 405);
    });
    assert_eq!(http(addr, "GET", "/healthz", None, ""), (200, json!({"status":"ok"})));
}

#[test]
fn unmasked_frames_are_closed_1002() {
    let server = server();
    let addr = server.addr;
    under_attack(&server, move || {
        for _ in 0..20 {
            let mut raw = Raw::open(addr);
            let payload = br#"{"action":"ping"}"#;
            let mut frame = vec![0x81, payload.len() as u8];
            frame.extend_from_slice(payload);
            raw.s.write_all(&frame).unwrap();
            assert_eq!(raw.until_close().1, Some(1002));
        }
    });
}

/// The upgrade of a client offering permessage-deflate without context takeover.
const DEFLATE_UPGRADE: &[u8] = b"GET /v1/stream HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
    Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover; client_max_window_bits\r\n\r\n";

/// `data` deflated on its own, as a client's compressed message carries it (the sync tail left off).
fn deflated(data: &[u8]) -> Vec<u8> {
    let mut c = flate2::Compress::new(flate2::Compression::best(), false);
    let mut out = Vec::with_capacity(data.len() / 100 + 1024);
    loop {
        let done = c.total_in() as usize;
        c.compress_vec(&data[done..], &mut out, flate2::FlushCompress::Sync).unwrap();
        if c.total_in() as usize == data.len() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity());
    }
    out.truncate(out.len() - 4);
    out
}

/// The payload of the first whole server frame in `wire` with RSV1 set (deflated).
fn first_deflated(wire: &[u8]) -> Option<Vec<u8>> {
    let mut i = 0;
    while i + 2 <= wire.len() {
        let (len, skip) = match wire[i + 1] & 0x7F {
            126 if i + 4 <= wire.len() => (usize::from(u16::from_be_bytes([wire[i + 2], wire[i + 3]])), 4),
            126 | 127 => return None, // no frame this test reads is longer
            n => (usize::from(n), 2),
        };
        let end = i + skip + len;
        if end > wire.len() {
            return None;
        }
        if wire[i] & 0x40 != 0 {
            return Some(wire[i + skip..end].to_vec());
        }
        i = end;
    }
    None
}

/// permessage-deflate under attack: a compressed request is understood and updates come deflated; a zip
/// bomb (16 MiB of zeros in a few KiB, under max_message_bytes compressed) is closed 1009 before it is
/// inflated past the limit, a corrupt stream 1007, RSV1 without the extension or on a continuation 1002;
/// meanwhile the well-behaved client misses nothing.
#[test]
fn compressed_attacks_get_their_close_codes_and_compressing_clients_get_deflated_updates() {
    let server = server();
    let addr = server.addr;
    let bomb = deflated(&vec![0u8; 16 << 20]);
    assert!(bomb.len() < 65_536, "the bomb must pass the frame limit: {} bytes", bomb.len());
    under_attack(&server, move || {
        let rsv1 = |mut f: Vec<u8>| {
            f[0] |= 0x40;
            f
        };
        // A compressing client: its deflated subscribe is read, and quotes come deflated.
        let (mut raw, head) = Raw::open_with(addr, DEFLATE_UPGRADE);
        assert!(
            head.contains("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n"),
            "{head}"
        );
        let sub = deflated(br#"{"action":"subscribe","channel":"quotes","symbols":["AAPL"],"id":"z"}"#);
        let mut out = Vec::new();
        write_client_frame(&mut out, true, 1, &sub, MASK);
        raw.s.write_all(&rsv1(out)).unwrap();
        let quote = loop {
            if let Some(p) = first_deflated(&raw.buf) {
                break p;
            }
            assert!(raw.read(), "closed before a deflated quote");
        };
        let plain = tickwire_core::deflate::Inflater::new().inflate(&quote, 1 << 20).unwrap();
        let v: Value = serde_json::from_slice(&plain).unwrap();
        assert!(v["type"] == "quote" || v["type"] == "snapshot", "{v}");
        // The bomb.
        let (mut raw, _) = Raw::open_with(addr, DEFLATE_UPGRADE);
        let mut out = Vec::new();
        write_client_frame(&mut out, true, 1, &bomb, MASK);
        let _ = raw.s.write_all(&rsv1(out));
        assert_eq!(raw.until_close().1, Some(1009));
        // A corrupt stream.
        let (mut raw, _) = Raw::open_with(addr, DEFLATE_UPGRADE);
        let mut out = Vec::new();
        write_client_frame(&mut out, true, 1, &[0xFF, 0xFF, 0xFF, 0x00, 0x13, 0x77], MASK);
        raw.s.write_all(&rsv1(out)).unwrap();
        assert_eq!(raw.until_close().1, Some(1007));
        // RSV1 on a continuation frame.
        let (mut raw, _) = Raw::open_with(addr, DEFLATE_UPGRADE);
        let (a, b) = sub.split_at(sub.len() / 2);
        let mut out = Vec::new();
        write_client_frame(&mut out, false, 1, a, MASK);
        let mut cont = Vec::new();
        write_client_frame(&mut cont, true, 0, b, MASK);
        out.extend(rsv1(cont));
        raw.s.write_all(&rsv1(out)).unwrap();
        assert_eq!(raw.until_close().1, Some(1002));
        // RSV1 without the extension.
        let mut raw = Raw::open(addr);
        let mut out = Vec::new();
        write_client_frame(&mut out, true, 1, &sub, MASK);
        raw.s.write_all(&rsv1(out)).unwrap();
        assert_eq!(raw.until_close().1, Some(1002));
    });
}

#[test]
fn ping_and_subscribe_floods_are_answered_up_to_the_rate_then_closed_1008() {
    let server = server();
    let addr = server.addr;
    under_attack(&server, move || {
        // 5,000 pings in one write: answered up to the rate, the excess dropped.
        let mut raw = Raw::open(addr);
        let mut out = Vec::new();
        for _ in 0..5_000 {
            write_client_frame(&mut out, true, 9, b"flood", MASK);
        }
        let _ = raw.s.write_all(&out);
        let (frames, code) = raw.until_close();
        assert_eq!(code, Some(1008));
        let pongs = frames.iter().filter(|(op, _)| *op == 10).count();
        assert!(pongs <= 100, "{pongs} pongs: the excess must be dropped");
        // 3,000 subscribes: one RATE_LIMITED error, not one per dropped message.
        let mut raw = Raw::open(addr);
        let mut out = Vec::new();
        for i in 0..3_000 {
            let req = format!(r#"{{"action":"subscribe","channel":"quotes","symbols":["S{i}"],"id":"{i}"}}"#);
            write_client_frame(&mut out, true, 1, req.as_bytes(), MASK);
        }
        let _ = raw.s.write_all(&out);
        let (frames, code) = raw.until_close();
        assert_eq!(code, Some(1008), "a persisting flood is closed");
        let replies: Vec<Value> =
            frames.iter().filter(|(op, _)| *op == 1).map(|(_, p)| serde_json::from_slice(p).unwrap()).collect();
        let subscribed = replies.iter().filter(|v| v["type"] == "subscribed").count();
        assert_eq!(replies.iter().filter(|v| v["code"] == "RATE_LIMITED").count(), 1);
        assert!(subscribed <= 100, "{subscribed} subscriptions: the excess must be dropped");
    });
}

#[test]
fn slowloris_clients_get_408_at_the_handshake_deadline() {
    let server = server();
    let addr = server.addr;
    under_attack(&server, move || {
        // 50 clients each trickling a request head, a byte every 50 ms: all dropped at the 1 s deadline.
        let started = Instant::now();
        let mut socks: Vec<Option<TcpStream>> = (0..50)
            .map(|_| {
                let s = TcpStream::connect(addr).unwrap();
                s.set_nonblocking(true).unwrap();
                Some(s)
            })
            .collect();
        let line = b"GET /v1/stream HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let mut i = 0;
        while socks.iter().any(Option::is_some) {
            // A guard against a hang, not a timing check: the deadline is 1 s, a loaded machine runs it late.
            assert!(started.elapsed() < Duration::from_secs(10), "slow clients still connected");
            for slot in socks.iter_mut() {
                let Some(s) = slot else { continue };
                let _ = s.write_all(&line[i % line.len()..i % line.len() + 1]);
                let mut b = [0u8; 256];
                match s.read(&mut b) {
                    Ok(0) => *slot = None,
                    Ok(_) => assert!(b.starts_with(b"HTTP/1.1 408"), "{}", String::from_utf8_lossy(&b)),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => *slot = None,
                }
            }
            i += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(started.elapsed() >= Duration::from_millis(900), "dropped before the deadline");
    });
}
