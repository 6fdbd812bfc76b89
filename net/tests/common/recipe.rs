//! The reference client recipe of docs/protocol.md ("Reference client: reconnect, resume, detect gaps,
//! acknowledge"), step for step; the delivery tests use exactly this client.
//!
//! 1. Connect; remember the `epoch` of `welcome` and its `heartbeat_s`.
//! 2. Subscribe. If it has seen sequences of the channel's topics, add `from_sequence` with the last one per
//!    topic and the `epoch` they belong to.
//! 3. For each frame: `reset` forgets the topic's last sequence (its `snapshot` follows); a `snapshot` sets
//!    it; an update whose sequence is not above the last one is a duplicate (skipped, and on a critical
//!    channel acknowledged again); one more than the last is processed; a larger jump is a gap.
//! 4. On a critical channel, `ack` each message once processed.
//! 5. When the connection ends, or nothing arrives for two heartbeat intervals, reconnect after a jittered
//!    exponential backoff (100 ms doubling to 5 s, times a random factor in [0.5, 1]); a `retry_after_ms`
//!    from the server (shutdown) replaces the backoff. Go to 1, resuming.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;
use tungstenite::Message;

/// Channels whose messages are acknowledged.
const CRITICAL: [&str; 3] = ["orders", "executions", "alerts"];

/// What the client has seen, for the test to check.
#[derive(Debug, Default)]
pub struct Seen {
    /// Processed update sequences per topic `(channel, symbol or "*")`, in arrival order.
    pub sequences: HashMap<(String, String), Vec<u64>>,
    /// Sequence jumps seen (never expected without throttle or conflation).
    pub gaps: Vec<((String, String), u64, u64)>,
    pub duplicates_skipped: usize,
    /// Snapshot sequences per topic, in arrival order.
    pub snapshots: HashMap<(String, String), Vec<u64>>,
    pub resets: usize,
    pub connections: usize,
    pub queue_overflows: usize,
    /// `retry_after_ms` hints received.
    pub retry_hints: Vec<u64>,
}

/// A recipe client running on its own thread until stopped.
pub struct RecipeClient {
    pub seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RecipeClient {
    /// Starts a client of `addr` with `token` that keeps the subscribe requests `subs` alive.
    pub fn start(addr: SocketAddr, token: Option<String>, subs: Vec<Value>) -> RecipeClient {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || run(addr, token, subs, &s, &st));
        RecipeClient { seen, stop, thread: Some(thread) }
    }

    /// Processed sequences of one topic.
    pub fn sequences(&self, channel: &str, key: &str) -> Vec<u64> {
        self.seen.lock().unwrap().sequences.get(&(channel.to_owned(), key.to_owned())).cloned().unwrap_or_default()
    }

    /// Snapshot sequences of one topic.
    pub fn snapshots(&self, channel: &str, key: &str) -> Vec<u64> {
        self.seen.lock().unwrap().snapshots.get(&(channel.to_owned(), key.to_owned())).cloned().unwrap_or_default()
    }

    /// Stops the client and returns what it saw.
    pub fn stop(mut self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

impl Drop for RecipeClient {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The state kept across connections: step 2 and 3's last sequences and the epoch they belong to.
#[derive(Default)]
struct Resume {
    epoch: Option<String>,
    last: HashMap<(String, String), u64>,
}

fn run(addr: SocketAddr, token: Option<String>, subs: Vec<Value>, seen: &Mutex<Seen>, stop: &AtomicBool) {
    let mut resume = Resume::default();
    let mut attempt = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let hint = session(addr, token.as_deref(), &subs, &mut resume, seen, stop);
        if stop.load(Ordering::Relaxed) {
            return;
        }
        // Step 5: jittered exponential backoff, or the server's hint.
        let wait = match hint {
            Session::Ended { retry_after_ms: Some(ms) } => Duration::from_millis(ms),
            Session::Ended { retry_after_ms: None } => {
                attempt = 0;
                backoff(0)
            }
            Session::Failed => {
                attempt += 1;
                backoff(attempt)
            }
        };
        let until = Instant::now() + wait;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// 100 ms doubling per failed attempt up to 5 s, times a random factor in [0.5, 1].
pub fn backoff(attempt: u32) -> Duration {
    let base = (100u64 << attempt.min(6)).min(5000);
    let jitter = 0.5 + 0.5 * rand_unit();
    Duration::from_millis((base as f64 * jitter) as u64)
}

fn rand_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    (h.finish() % 10_000) as f64 / 10_000.0
}

enum Session {
    /// Connected, then the connection ended (with the server's reconnect hint, if it gave one).
    Ended { retry_after_ms: Option<u64> },
    /// Could not connect.
    Failed,
}

fn session(
    addr: SocketAddr,
    token: Option<&str>,
    subs: &[Value],
    resume: &mut Resume,
    seen: &Mutex<Seen>,
    stop: &AtomicBool,
) -> Session {
    // Step 1.
    let mut req = format!("ws://{addr}/v1/stream").into_client_request().unwrap();
    if let Some(t) = token {
        req.headers_mut().insert("Authorization", format!("Bearer {t}").parse().unwrap());
    }
    let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else { return Session::Failed };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let Ok((mut ws, _)) = tungstenite::client(req, stream) else { return Session::Failed };
    let welcome = match ws.read() {
        Ok(Message::Text(t)) => serde_json::from_str::<Value>(&t).unwrap_or(Value::Null),
        _ => return Session::Failed,
    };
    if welcome["type"] != "welcome" {
        return Session::Failed;
    }
    seen.lock().unwrap().connections += 1;
    let heartbeat = Duration::from_secs(welcome["heartbeat_s"].as_u64().unwrap_or(30));
    let epoch = welcome["epoch"].as_str().unwrap_or_default().to_owned();
    // Step 2.
    for sub in subs {
        let mut sub = sub.clone();
        let channel = sub["channel"].as_str().unwrap_or_default().to_owned();
        let from: serde_json::Map<String, Value> = resume
            .last
            .iter()
            .filter(|((c, _), _)| *c == channel)
            .map(|((_, key), seq)| (key.clone(), json!(seq)))
            .collect();
        if !from.is_empty() {
            sub["from_sequence"] = Value::Object(from);
            sub["epoch"] = json!(resume.epoch);
        }
        if ws.send(Message::text(sub.to_string())).is_err() {
            return Session::Ended { retry_after_ms: None };
        }
    }
    resume.epoch = Some(epoch);
    let _ = ws.get_mut().set_read_timeout(Some(Duration::from_millis(100)));
    let mut last_frame = Instant::now();
    let mut retry_after_ms = None;
    while !stop.load(Ordering::Relaxed) {
        let msg = match ws.read() {
            Ok(m) => m,
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
            {
                // Step 5: silence for two heartbeat intervals means the connection is dead.
                if last_frame.elapsed() > 2 * heartbeat {
                    return Session::Ended { retry_after_ms };
                }
                continue;
            }
            Err(_) => return Session::Ended { retry_after_ms },
        };
        last_frame = Instant::now();
        let text = match msg {
            Message::Text(t) => t,
            Message::Close(frame) => {
                if let Some(f) = frame {
                    retry_after_ms = retry_after_ms.or_else(|| hint_in(&f.reason));
                }
                return Session::Ended { retry_after_ms };
            }
            _ => continue,
        };
        let Ok(v) = serde_json::from_str::<Value>(&text) else { continue };
        let mut seen = seen.lock().unwrap();
        match v["type"].as_str().unwrap_or_default() {
            "system" => {
                if let Some(ms) = v["data"]["retry_after_ms"].as_u64() {
                    seen.retry_hints.push(ms);
                    retry_after_ms = Some(ms);
                }
            }
            "error" if v["code"] == "QUEUE_OVERFLOW" => seen.queue_overflows += 1,
            "reset" => {
                // Step 3: the topic's history is gone; its snapshot (if it has state) follows.
                let key = (
                    v["channel"].as_str().unwrap_or_default().to_owned(),
                    v["symbol"].as_str().unwrap_or("*").to_owned(),
                );
                resume.last.remove(&key);
                seen.resets += 1;
            }
            "snapshot" => {
                let key = topic_of(&v);
                let seq = v["sequence"].as_u64().unwrap_or(0);
                seen.snapshots.entry(key.clone()).or_default().push(seq);
                resume.last.insert(key, seq);
            }
            _ if v.get("sequence").is_some() => {
                let key = topic_of(&v);
                let seq = v["sequence"].as_u64().unwrap_or(0);
                let critical = CRITICAL.contains(&key.0.as_str());
                match resume.last.get(&key).copied() {
                    Some(last) if seq <= last => seen.duplicates_skipped += 1,
                    last => {
                        if let Some(last) = last.filter(|l| seq > l + 1) {
                            seen.gaps.push((key.clone(), last, seq));
                        }
                        seen.sequences.entry(key.clone()).or_default().push(seq);
                        resume.last.insert(key.clone(), seq);
                    }
                }
                drop(seen);
                // Step 4 (and again for a duplicate: the earlier ack may have been lost).
                if critical {
                    let ack = json!({"action":"ack","channel":key.0,"sequence":seq});
                    if ws.send(Message::text(ack.to_string())).is_err() {
                        return Session::Ended { retry_after_ms };
                    }
                }
            }
            _ => {}
        }
    }
    let _ = ws.close(None);
    Session::Ended { retry_after_ms }
}

/// `(channel, symbol)` of an update or snapshot; `*` for private and keyless topics.
fn topic_of(v: &Value) -> (String, String) {
    let channel = v["channel"].as_str().unwrap_or_default().to_owned();
    let private = ["orders", "executions", "portfolio", "alerts", "sessions", "decisions"].contains(&channel.as_str());
    let key = if private { "*" } else { v["data"]["symbol"].as_str().unwrap_or("*") };
    (channel, key.to_owned())
}

/// `retry_after_ms=N` in a close reason.
fn hint_in(reason: &str) -> Option<u64> {
    reason.split("retry_after_ms=").nth(1)?.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}
