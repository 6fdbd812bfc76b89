//! The rules of one connection, tested in memory: a client's bytes go into the engine's
//! [`Connection`], its requests are carried out on an engine [`Shard`], and what the connection would write
//! is read back as frames. Time is virtual: windows, heartbeats and grace periods are passed exactly, with
//! no sleep and no race. (The binary-level tests in `net/tests` keep what only real sockets show.)

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use serde_json::{json, Value};
use tickwire_core::event::parse_publish;
use tickwire_core::time::Micros;
use tickwire_core::ws::{self, write_client_frame, Opcode};
use tickwire_fanout::engine::conn::RateLimiter;
use tickwire_fanout::engine::conn::Verdict;
use tickwire_fanout::engine::stats::Stats;
use tickwire_fanout::engine::{Connection, Kind, NoJournal, Request, Settings, Shard};
use tickwire_fanout::index::Sink;
use tickwire_fanout::interest::InterestMap;
use tickwire_fanout::sequencer::Limits;

const MASK: [u8; 4] = [1, 2, 3, 4];
const SECOND: Micros = 1_000_000;

/// The shard's handle on a connection: frames pushed by the shard go into the connection's queue.
#[derive(Debug, Clone)]
struct Link {
    key: u64,
    conn: Rc<RefCell<Connection>>,
    clock: Rc<Cell<Micros>>,
}

impl Sink for Link {
    fn key(&self) -> u64 {
        self.key
    }

    fn push(&self, frame: &Bytes, ingested: Micros, conflate: u64) {
        self.conn.borrow_mut().push(self.clock.get(), frame.clone(), ingested, conflate);
    }
}

/// A frame the server would write.
#[derive(Debug, Clone, PartialEq)]
enum Frame {
    Text(Value),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(u16, String),
}

impl Frame {
    fn json(&self) -> &Value {
        match self {
            Frame::Text(v) => v,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

struct Client {
    link: Link,
    /// Read from the socket, not yet a whole message.
    buf: BytesMut,
    /// `handle_bytes` said to stop reading.
    stopped: bool,
}

struct World {
    clock: Rc<Cell<Micros>>,
    settings: Arc<Settings>,
    stats: Arc<Stats>,
    shard: Shard<Link, NoJournal>,
    ping: Bytes,
}

impl World {
    fn new() -> World {
        World::with(|_| {}, Limits::default())
    }

    fn with(tweak: impl FnOnce(&mut Settings), limits: Limits) -> World {
        let mut settings = Settings {
            epoch: "epoch-1".into(),
            max_message_bytes: 64 * 1024,
            max_messages_per_s: 100,
            max_queued_bytes: 4 * 1024 * 1024,
            max_subscriptions: 1024,
            heartbeat_s: 30,
            slow_consumer_grace_ms: 5_000,
            session_limits: Default::default(),
            auto_subscribe: true,
            min_throttle_ms: Default::default(),
            compression: Default::default(),
        };
        tweak(&mut settings);
        let stats = Arc::new(Stats::default());
        let map = InterestMap::new(64);
        World {
            clock: Rc::new(Cell::new(1_700_000_000 * SECOND)),
            settings: Arc::new(settings),
            shard: Shard::new(0, 1, map, limits, None, NoJournal, stats.clone()),
            stats,
            ping: ws::frame(Opcode::Ping, b""),
        }
    }

    fn now(&self) -> Micros {
        self.clock.get()
    }

    fn advance(&self, by: Micros) {
        self.clock.set(self.clock.get() + by);
    }

    fn connect(&mut self, kind: Kind, user: Option<&str>) -> Client {
        let key = self.shard.next_id();
        let conn =
            Connection::new(0, key, kind, user.map(Arc::from), self.settings.clone(), self.stats.clone(), self.now());
        let conn = Rc::new(RefCell::new(conn));
        if kind.is_subscriber() {
            conn.borrow_mut().welcome(self.now(), "client");
        }
        let mut c =
            Client { link: Link { key, conn, clock: self.clock.clone() }, buf: BytesMut::new(), stopped: false };
        if kind == Kind::STREAM {
            assert_eq!(self.recv(&mut c)[0].json()["type"], "welcome");
        }
        c
    }

    /// The client's bytes arrive: the connection acts on them, and its requests are carried out.
    fn bytes(&mut self, c: &mut Client, data: &[u8]) {
        assert!(!c.stopped, "the connection stopped reading");
        c.buf.extend_from_slice(data);
        let now = self.now();
        let go_on = c.link.conn.borrow_mut().handle_bytes(now, &mut c.buf);
        c.stopped = !go_on;
        loop {
            let request = c.link.conn.borrow_mut().poll_request();
            match request {
                None => break,
                Some(Request::Subscribe { topics, throttle_ms, .. }) => {
                    for (topic, resume) in topics {
                        self.shard.subscribe(now, c.link.clone(), topic, throttle_ms, resume);
                    }
                }
                Some(Request::Unsubscribe { topics }) => {
                    for t in &topics {
                        self.shard.unsubscribe(c.link.key, t);
                    }
                }
                Some(Request::Ack { topic, sequence }) => self.shard.ack(now, topic, sequence),
                Some(Request::Publish(events)) => {
                    self.shard.publish(now, events, false);
                }
            }
        }
    }

    fn frame(&mut self, c: &mut Client, fin: bool, opcode: u8, payload: &[u8]) {
        let mut out = Vec::new();
        write_client_frame(&mut out, fin, opcode, payload, MASK);
        self.bytes(c, &out);
    }

    fn send(&mut self, c: &mut Client, v: Value) {
        self.frame(c, true, 1, v.to_string().as_bytes());
    }

    /// What the connection writes now (as its writer would), as frames.
    fn recv(&mut self, c: &mut Client) -> Vec<Frame> {
        let mut wire = Vec::new();
        let mut conn = c.link.conn.borrow_mut();
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let Some((alone, drained)) = conn.take_for_write(&mut buf, 256 * 1024) else { break };
            let bytes = alone.as_deref().unwrap_or(&buf);
            wire.extend_from_slice(bytes);
            conn.written(drained.frames, bytes.len());
        }
        if let Some(close) = conn.close_frame() {
            wire.extend_from_slice(&close);
        }
        parse_frames(&wire)
    }

    /// Text frames written now, as JSON.
    fn texts(&mut self, c: &mut Client) -> Vec<Value> {
        self.recv(c).into_iter().filter_map(|f| if let Frame::Text(v) = f { Some(v) } else { None }).collect()
    }

    fn publish(&mut self, events: Value) {
        let events = parse_publish(events.to_string().as_bytes()).unwrap();
        self.shard.publish(self.now(), events, false);
    }
}

/// Parses what a server wrote into frames.
fn parse_frames(data: &[u8]) -> Vec<Frame> {
    ws::server_frames(data)
        .into_iter()
        .map(|(op, payload)| match op {
            1 => Frame::Text(serde_json::from_slice(payload).unwrap()),
            8 => Frame::Close(
                u16::from_be_bytes([payload[0], payload[1]]),
                String::from_utf8(payload[2..].to_vec()).unwrap(),
            ),
            9 => Frame::Ping(payload.to_vec()),
            10 => Frame::Pong(payload.to_vec()),
            other => panic!("opcode {other}"),
        })
        .collect()
}

fn quotes(symbol: &str, n: usize) -> Value {
    Value::Array((0..n).map(|i| json!({"channel":"quotes","data":{"symbol":symbol,"bid":i}})).collect())
}

fn sequences(frames: &[Value], kind: &str) -> Vec<u64> {
    frames.iter().filter(|v| v["type"] == kind).map(|v| v["sequence"].as_u64().unwrap()).collect()
}

fn close_of(frames: &[Frame]) -> Option<(u16, String)> {
    frames.iter().find_map(|f| if let Frame::Close(c, r) = f { Some((c.to_owned(), r.clone())) } else { None })
}

#[test]
fn ping_gets_pong_with_its_id_and_a_websocket_ping_its_payload() {
    let mut w = World::new();
    let mut c = w.connect(Kind::STREAM, None);
    w.send(&mut c, json!({"action":"ping","id":"p-1"}));
    let pong = w.texts(&mut c).remove(0);
    assert_eq!((pong["type"].as_str(), pong["id"].as_str()), (Some("pong"), Some("p-1")));
    assert!(pong["timestamp"].is_string());
    w.frame(&mut c, true, 9, b"hb");
    assert_eq!(w.recv(&mut c), [Frame::Pong(b"hb".to_vec())]);
}

#[test]
fn bad_input_gets_error_frames_and_the_subscription_goes_on_gapless() {
    let mut w = World::new();
    let mut c = w.connect(Kind::STREAM, None);
    w.send(&mut c, json!({"action":"subscribe","channel":"quotes","symbols":["AAPL"]}));
    assert_eq!(w.texts(&mut c)[0]["type"], "subscribed");
    w.publish(quotes("AAPL", 3));
    let mut quotes_seen = Vec::new();
    let cases: Vec<(u8, &[u8], &str)> = vec![
        (1, b"{not json", "INVALID_JSON"),
        (1, b"[1,2]", "INVALID_MESSAGE"),
        (1, br#"{"action":"dance","id":"a"}"#, "UNKNOWN_ACTION"),
        (1, br#"{"action":"subscribe","channel":"quotez","symbols":["A"],"id":"b"}"#, "UNKNOWN_CHANNEL"),
        (1, br#"{"action":"subscribe","channel":"quotes","symbols":"AAPL"}"#, "INVALID_FIELD"),
        (1, br#"{"action":"subscribe","channel":"quotes","symbols":["AAPL"],"throttle_ms":"x"}"#, "INVALID_FIELD"),
        (1, br#"{"action":"subscribe","channel":"orders"}"#, "AUTH_REQUIRED"),
        (1, br#"{"action":"ack","channel":"quotes","sequence":1}"#, "INVALID_FIELD"),
        (1, br#"{"action":"ack","channel":"orders","sequence":1}"#, "AUTH_REQUIRED"),
        (2, &[1, 2, 3], "UNSUPPORTED_DATA"),
    ];
    for (op, payload, code) in cases {
        w.frame(&mut c, true, op, payload);
        let frames = w.texts(&mut c);
        quotes_seen.extend(sequences(&frames, "quote"));
        let e = frames.iter().find(|v| v["type"] == "error").unwrap_or_else(|| panic!("no error for {code}"));
        assert_eq!(e["code"], code, "{e}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
        w.publish(quotes("AAPL", 1));
    }
    w.publish(quotes("AAPL", 5));
    let all = w.texts(&mut c);
    assert!(all.iter().all(|v| v["type"] == "quote"), "{all:?}");
    quotes_seen.extend(sequences(&all, "quote"));
    assert_eq!(quotes_seen, (1..=18).collect::<Vec<_>>(), "still subscribed, still gapless");
}

#[test]
fn a_message_over_the_limit_is_closed_1009_and_too_many_subscriptions_is_an_error() {
    let mut w = World::with(|s| s.max_subscriptions = 1024, Limits::default());
    let mut c = w.connect(Kind::STREAM, None);
    // 10,000 symbols is larger than a message may be (64 KiB).
    let symbols: Vec<String> = (0..10_000).map(|i| format!("SYM{i}")).collect();
    w.send(&mut c, json!({"action":"subscribe","channel":"quotes","symbols":symbols}));
    assert!(c.stopped);
    assert_eq!(close_of(&w.recv(&mut c)), Some((1009, "message too big".into())));
    // 5,000 fit in a message but not in the subscription limit: an error, and the connection lives.
    let mut c = w.connect(Kind::STREAM, None);
    let symbols: Vec<String> = (0..5_000).map(|i| format!("S{i}")).collect();
    w.send(&mut c, json!({"action":"subscribe","channel":"quotes","symbols":symbols,"id":"big"}));
    let reply = w.texts(&mut c).remove(0);
    assert_eq!((reply["id"].as_str(), reply["code"].as_str()), (Some("big"), Some("SUBSCRIPTION_LIMIT")));
    assert_eq!(w.shard.subscriptions(), 0, "none of them was made");
    w.send(&mut c, json!({"action":"ping","id":"alive"}));
    assert_eq!(w.texts(&mut c)[0]["id"], "alive");
}

#[test]
fn a_clients_close_is_echoed_and_a_code_it_may_not_send_is_1002() {
    let mut w = World::new();
    let mut c = w.connect(Kind::STREAM, None);
    w.frame(&mut c, true, 8, &[0x03, 0xE9, b'b', b'y', b'e']); // 1001 "bye"
    assert!(c.stopped);
    assert_eq!(w.recv(&mut c), [Frame::Close(1001, String::new())]);
    let mut c = w.connect(Kind::STREAM, None);
    w.frame(&mut c, true, 8, &1005u16.to_be_bytes());
    assert_eq!(w.recv(&mut c), [Frame::Close(1002, "invalid close code".into())]);
    let mut c = w.connect(Kind::STREAM, None);
    w.frame(&mut c, true, 8, b"");
    assert_eq!(w.recv(&mut c), [Frame::Close(1000, String::new())]);
}

#[test]
fn frames_the_codec_refuses_close_the_connection_with_their_codes() {
    let mut w = World::new();
    // Each case: the client's frames (fin, opcode, payload), and the close code they get.
    type Frames = Vec<(bool, u8, Vec<u8>)>;
    let cases: Vec<(Frames, u16)> = vec![
        (vec![(true, 1, b"\xff\xfe\xfd".to_vec())], 1007),
        (vec![(true, 1, b"{\"action\":\"ping\",\"id\":\"\xc3\x28\"}".to_vec())], 1007),
        (vec![(true, 0, b"orphan".to_vec())], 1002),
        (vec![(false, 1, b"{\"act".to_vec()), (true, 1, b"ion\"}".to_vec())], 1002),
        (vec![(false, 9, b"ping".to_vec())], 1002),
    ];
    for (frames, code) in cases {
        let mut c = w.connect(Kind::STREAM, None);
        for (fin, op, payload) in frames {
            w.frame(&mut c, fin, op, &payload);
        }
        assert!(c.stopped);
        assert_eq!(close_of(&w.recv(&mut c)).map(|c| c.0), Some(code));
    }
    // Fragments adding up past the message limit: 1009, before the whole arrives.
    let mut c = w.connect(Kind::STREAM, None);
    w.frame(&mut c, false, 1, &[b' '; 1000]);
    for _ in 0..80 {
        if c.stopped {
            break;
        }
        w.frame(&mut c, false, 0, &[b' '; 1000]);
    }
    assert_eq!(close_of(&w.recv(&mut c)).map(|c| c.0), Some(1009));
    // A request in one-byte fragments, with pings between them, is reassembled and answered.
    let mut c = w.connect(Kind::STREAM, None);
    let req = br#"{"action":"ping","id":"frag"}"#;
    for (i, b) in req.iter().enumerate() {
        w.frame(&mut c, i == req.len() - 1, if i == 0 { 1 } else { 0 }, &[*b]);
        if i % 7 == 0 {
            w.frame(&mut c, true, 9, b"hi");
        }
    }
    assert_eq!(w.texts(&mut c).last().unwrap()["id"], "frag");
}

#[test]
fn the_message_rate_warns_once_then_closes_1008_and_is_counted() {
    let mut w = World::with(|s| s.max_messages_per_s = 20, Limits::default());
    let mut c = w.connect(Kind::STREAM, None);
    for i in 0..25 {
        w.send(&mut c, json!({"action":"ping","id":format!("p{i}")}));
    }
    let frames = w.texts(&mut c);
    let pongs: Vec<&str> = frames.iter().filter(|v| v["type"] == "pong").map(|v| v["id"].as_str().unwrap()).collect();
    assert_eq!(pongs, (0..20).map(|i| format!("p{i}")).collect::<Vec<_>>(), "the pings within the rate");
    let errors: Vec<&Value> = frames.iter().filter(|v| v["type"] == "error").collect();
    assert_eq!(errors.len(), 1, "one RATE_LIMITED error for the window, not one per message");
    assert_eq!(errors[0]["code"], "RATE_LIMITED");
    assert_eq!(w.stats.rate_limited_messages.load(Ordering::Relaxed), 5);
    // Still over the rate in the next window, and closed in the third.
    for _ in 0..1 {
        w.advance(SECOND);
        for _ in 0..21 {
            w.send(&mut c, json!({"action":"ping"}));
        }
        assert!(!c.stopped);
    }
    w.advance(SECOND);
    for _ in 0..21 {
        if !c.stopped {
            w.send(&mut c, json!({"action":"ping"}));
        }
    }
    assert_eq!(close_of(&w.recv(&mut c)), Some((1008, "rate limit exceeded".into())));
    assert_eq!(w.stats.rate_limited_closes.load(Ordering::Relaxed), 1);
    // Twice the rate in one window closes at once; WebSocket pings count too.
    let mut flood = w.connect(Kind::STREAM, None);
    let mut pongs = 0;
    for _ in 0..5_000 {
        if flood.stopped {
            break;
        }
        w.frame(&mut flood, true, 9, b"flood");
        pongs += w.recv(&mut flood).iter().filter(|f| matches!(f, Frame::Pong(_))).count();
    }
    assert_eq!(pongs, 20, "the excess is dropped");
    assert_eq!(close_of(&w.recv(&mut flood)).map(|c| c.0), Some(1008));
    // So do subscribes: the excess is dropped, not subscribed.
    let mut flood = w.connect(Kind::STREAM, None);
    let mut frames = Vec::new();
    for i in 0..3_000 {
        if flood.stopped {
            break;
        }
        w.send(
            &mut flood,
            json!({"action":"subscribe","channel":"quotes","symbols":[format!("S{i}")],"id":i.to_string()}),
        );
        frames.extend(w.recv(&mut flood));
    }
    let texts: Vec<&Value> =
        frames.iter().filter_map(|f| if let Frame::Text(v) = f { Some(v) } else { None }).collect();
    assert_eq!(texts.iter().filter(|v| v["type"] == "subscribed").count(), 20);
    assert_eq!(texts.iter().filter(|v| v["code"] == "RATE_LIMITED").count(), 1);
    assert_eq!(close_of(&frames).map(|c| c.0), Some(1008));
    assert_eq!(w.shard.subscriptions(), 20, "the dropped ones made no subscription");
}

#[test]
fn a_calm_window_forgives_the_strikes() {
    let mut r = RateLimiter::new(5);
    let mut t = SECOND;
    for _ in 0..6 {
        r.check(t);
    }
    t += 3 * SECOND; // a quiet gap
    for _ in 0..5 {
        assert_eq!(r.check(t), Verdict::Accept);
    }
    assert_eq!(r.check(t), Verdict::Limit { notify: true });
    let burst: Vec<_> = (0..5).map(|_| r.check(t)).collect();
    assert_eq!(burst.last(), Some(&Verdict::Close), "twice the rate in one window");
}

proptest::proptest! {
    /// Whatever the arrival times, no window accepts more than the rate.
    #[test]
    fn never_more_than_the_rate_per_window(
        per_s in 1u32..50,
        gaps in proptest::collection::vec(0i64..400_000, 1..500),
    ) {
        let mut r = RateLimiter::new(per_s);
        let mut now = 10 * SECOND;
        let mut window = (0, 0u32);
        for gap in gaps {
            now += gap;
            let v = r.check(now);
            if r.window_start() != window.0 {
                window = (r.window_start(), 0);
            }
            if v == Verdict::Accept {
                window.1 += 1;
            }
            proptest::prop_assert!(window.1 <= per_s);
            if v == Verdict::Close {
                break;
            }
        }
    }
}

#[test]
fn publishers_are_not_rate_limited() {
    let mut w = World::with(|s| s.max_messages_per_s = 10, Limits::default());
    let mut sub = w.connect(Kind::STREAM, None);
    w.send(&mut sub, json!({"action":"subscribe","channel":"trades","symbols":["QQQ"]}));
    let mut publisher = w.connect(Kind::Publisher, Some("feed"));
    for i in 0..200 {
        w.send(&mut publisher, json!({"channel":"trades","data":{"symbol":"QQQ","price":1.0 + i as f64,"size":1}}));
    }
    assert!(!publisher.stopped);
    assert_eq!(sequences(&w.texts(&mut sub), "trade"), (1..=200).collect::<Vec<_>>());
    // A publisher's bad event is an error frame, and it goes on.
    w.send(&mut publisher, json!({"channel":"nope","data":{}}));
    assert_eq!(w.texts(&mut publisher)[0]["code"], "INVALID_MESSAGE");
}

#[test]
fn a_silent_client_is_pinged_each_interval_then_closed_4000_while_a_live_one_stays() {
    let mut w = World::with(|s| s.heartbeat_s = 1, Limits::default());
    let mut silent = w.connect(Kind::STREAM, None);
    let mut live = w.connect(Kind::STREAM, None);
    let ping = w.ping.clone();
    let mut visits = 0;
    while !silent.link.conn.borrow().is_closing() {
        w.advance(SECOND);
        visits += 1;
        for c in [&silent, &live] {
            c.link.conn.borrow_mut().heartbeat(w.now(), &ping);
        }
        assert!(matches!(w.recv(&mut live)[..], [Frame::Ping(_)]), "the live client is pinged each interval");
        w.frame(&mut live, true, 10, b""); // and answers
        assert!(visits < 10, "never closed");
    }
    assert_eq!(visits, 2, "closed at the visit two intervals after its last frame");
    let frames = w.recv(&mut silent);
    assert_eq!(frames.iter().filter(|f| matches!(f, Frame::Ping(_))).count(), 1, "{frames:?}");
    assert_eq!(close_of(&frames), Some((4000, "heartbeat timeout".into())));
    assert_eq!(w.stats.heartbeat_closes.load(Ordering::Relaxed), 1);
    assert!(!live.link.conn.borrow().is_closing());
    w.send(&mut live, json!({"action":"ping","id":"p"}));
    assert_eq!(w.texts(&mut live)[0]["type"], "pong");
}

#[test]
fn a_client_behind_gets_each_topics_latest_then_1013_if_it_stays_behind() {
    let mut w = World::with(
        |s| {
            s.max_queued_bytes = 64 * 1024;
            s.slow_consumer_grace_ms = 1_000;
        },
        Limits::default(),
    );
    let mut slow = w.connect(Kind::STREAM, None);
    w.send(&mut slow, json!({"action":"subscribe","channel":"quotes","symbols":["BULK","TINY"]}));
    assert_eq!(w.texts(&mut slow)[0]["type"], "subscribed");
    // Frames of 4 KB on one topic, never read: past 64 KiB the queue conflates to the latest of BULK.
    let pad = "x".repeat(4_000);
    let bulk = |i: usize| Value::Array(vec![json!({"channel":"quotes","data":{"symbol":"BULK","bid":i,"note":pad}})]);
    for i in 0..40 {
        w.publish(bulk(i));
    }
    w.publish(quotes("TINY", 1));
    assert!(w.stats.slow_consumer_conflations.load(Ordering::Relaxed) >= 1);
    assert!(w.stats.conflated_frames.load(Ordering::Relaxed) >= 1);
    // Reading now, it gets BULK in order with jumps, and ends with BULK's latest; TINY's update is kept.
    let frames = w.texts(&mut slow);
    let bulk_seqs: Vec<u64> =
        frames.iter().filter(|v| v["data"]["symbol"] == "BULK").map(|v| v["sequence"].as_u64().unwrap()).collect();
    assert!(bulk_seqs.windows(2).all(|w| w[0] < w[1]), "in order: {bulk_seqs:?}");
    assert!(bulk_seqs[0] > 1 && bulk_seqs.len() < 40, "conflation skipped updates: {bulk_seqs:?}");
    assert_eq!(bulk_seqs.last(), Some(&40), "the latest");
    assert!(frames.iter().any(|v| v["data"]["symbol"] == "TINY"));
    // Drained: no longer behind, so the grace passing closes nothing.
    w.advance(2 * SECOND);
    slow.link.conn.borrow_mut().check_slow(w.now());
    assert!(!slow.link.conn.borrow().is_closing());
    // Behind again, and for longer than the grace: 1013.
    for i in 40..80 {
        w.publish(bulk(i));
    }
    w.advance(999_000);
    slow.link.conn.borrow_mut().check_slow(w.now());
    assert!(!slow.link.conn.borrow().is_closing(), "within the grace");
    w.advance(1_000);
    slow.link.conn.borrow_mut().check_slow(w.now());
    assert_eq!(w.recv(&mut slow), [Frame::Close(1013, "slow consumer".into())], "what was queued is dropped");
    assert_eq!(w.stats.slow_consumer_closes.load(Ordering::Relaxed), 1);
}

#[test]
fn a_queue_past_its_bound_with_nothing_to_conflate_closes_1013_at_once() {
    let mut w = World::with(|s| s.max_queued_bytes = 16 * 1024, Limits::default());
    let mut c = w.connect(Kind::STREAM, Some("alice"));
    w.send(&mut c, json!({"action":"subscribe","channel":"portfolio"}));
    w.recv(&mut c);
    let pad = "x".repeat(4_000);
    for i in 0..10 {
        w.publish(json!({"channel":"portfolio","user_id":"alice","data":{"total_value":i,"note":pad}}));
    }
    assert!(c.link.conn.borrow().is_closing(), "private frames are never conflated");
    assert_eq!(close_of(&w.recv(&mut c)), Some((1013, "slow consumer".into())));
}

#[test]
fn a_throttled_subscription_gets_one_update_per_window_the_latest() {
    let mut w = World::new();
    let mut c = w.connect(Kind::STREAM, None);
    w.send(&mut c, json!({"action":"subscribe","channel":"quotes","symbols":["AAPL"],"throttle_ms":250,"id":"t"}));
    assert_eq!(w.texts(&mut c)[0]["throttle_ms"], 250);
    w.publish(quotes("AAPL", 100));
    assert_eq!(sequences(&w.texts(&mut c), "quote"), [1], "the first opens a window and goes at once");
    w.advance(249_000);
    w.shard.handle_timeout(w.now());
    assert!(w.texts(&mut c).is_empty(), "nothing before the window ends");
    assert_eq!(w.shard.poll_timeout(), w.now() + 1_000, "the engine asks for its timer at the window's end");
    w.advance(1_000);
    w.shard.handle_timeout(w.now());
    assert_eq!(sequences(&w.texts(&mut c), "quote"), [100], "the window's updates conflated to the latest");
    w.advance(250_000);
    w.publish(quotes("AAPL", 1));
    assert_eq!(sequences(&w.texts(&mut c), "quote"), [101]);
}

#[test]
fn a_resume_replays_what_was_missed_once_or_resets_then_snapshots() {
    let mut w = World::with(|_| {}, Limits { history_public: 4, ..Limits::default() });
    w.publish(quotes("AAPL", 10));
    let resume = |from: u64, epoch: &str| json!({"action":"subscribe","channel":"quotes","symbols":["AAPL"],"from_sequence":{"AAPL":from},"epoch":epoch});
    // Beyond the history of 4: reset, then the snapshot.
    let mut c = w.connect(Kind::STREAM, None);
    w.send(&mut c, resume(2, "epoch-1"));
    let frames = w.texts(&mut c);
    assert_eq!(frames[1], json!({"type":"reset","channel":"quotes","symbol":"AAPL","reason":"history_unavailable"}));
    assert_eq!((frames[2]["type"].as_str(), frames[2]["sequence"].as_u64()), (Some("snapshot"), Some(10)));
    // Within it: every missed sequence, once, then live.
    let mut d = w.connect(Kind::STREAM, None);
    w.send(&mut d, resume(6, "epoch-1"));
    w.publish(quotes("AAPL", 2));
    let frames = w.texts(&mut d);
    assert!(frames[1..].iter().all(|v| v["type"] == "quote"), "replay only: {frames:?}");
    assert_eq!(sequences(&frames, "quote"), [7, 8, 9, 10, 11, 12]);
    assert_eq!(w.stats.replayed_frames.load(Ordering::Relaxed), 4);
    // Another epoch's sequences cannot be resumed, even in range; ahead of the topic neither.
    for (from, epoch, reason) in [(10, "another-run", "epoch_changed"), (99, "epoch-1", "sequence_ahead")] {
        let mut e = w.connect(Kind::STREAM, None);
        w.send(&mut e, resume(from, epoch));
        let frames = w.texts(&mut e);
        assert_eq!(frames[1]["reason"], reason);
        assert_eq!((frames[2]["type"].as_str(), frames[2]["sequence"].as_u64()), (Some("snapshot"), Some(12)));
        assert_eq!(frames.len(), 3, "nothing replayed after a reset");
    }
    assert_eq!(w.stats.resets.load(Ordering::Relaxed), 3);
}

fn order(user: &str, id: &str) -> Value {
    json!({"channel":"orders","user_id":user,"data":{"order_id":id,"symbol":"AAPL","side":"buy","status":"new","qty":10}})
}

#[test]
fn a_critical_message_comes_again_on_each_subscribe_until_acknowledged() {
    let mut w = World::new();
    w.publish(order("alice", "o-1"));
    let sub = json!({"action":"subscribe","channel":"orders"});
    let mut first = w.connect(Kind::STREAM, Some("alice"));
    w.send(&mut first, sub.clone());
    let frames = w.texts(&mut first);
    assert_eq!((frames[1]["sequence"].as_u64(), frames[1]["data"]["order_id"].as_str()), (Some(1), Some("o-1")));
    w.bytes(&mut first, &close_frame_from_client());
    // Not acknowledged: delivered again to the next connection of the user.
    let mut second = w.connect(Kind::STREAM, Some("alice"));
    w.send(&mut second, sub.clone());
    assert_eq!(sequences(&w.texts(&mut second), "order"), [1]);
    w.send(&mut second, json!({"action":"ack","channel":"orders","sequence":1}));
    assert_eq!(w.stats.critical_acked.load(Ordering::Relaxed), 1);
    let mut third = w.connect(Kind::STREAM, Some("alice"));
    w.send(&mut third, sub);
    assert_eq!(w.texts(&mut third).len(), 1, "acknowledged: only the subscribed reply");
    w.publish(order("alice", "o-2"));
    assert_eq!(sequences(&w.texts(&mut third), "order"), [2]);
    // Another user's orders are not alice's.
    w.publish(order("bob", "b-1"));
    assert!(w.texts(&mut third).is_empty());
}

fn close_frame_from_client() -> Vec<u8> {
    let mut out = Vec::new();
    write_client_frame(&mut out, true, 8, &1000u16.to_be_bytes(), MASK);
    out
}

#[test]
fn a_full_critical_queue_drops_the_oldest_and_tells_the_user() {
    let mut w = World::with(|_| {}, Limits { critical_queue: 3, ..Limits::default() });
    let alert = |i: u64| json!({"channel":"alerts","user_id":"alice","data":{"alert_id":format!("a-{i}"),"type":"risk","level":"warning","message":"m"}});
    w.publish(Value::Array((1..=5).map(alert).collect()));
    let mut c = w.connect(Kind::STREAM, Some("alice"));
    w.send(&mut c, json!({"action":"subscribe","channel":"alerts"}));
    let frames = w.texts(&mut c);
    assert_eq!(frames[1]["code"], "QUEUE_OVERFLOW", "{frames:?}");
    assert!(frames[1]["message"].as_str().unwrap().starts_with("2 unacknowledged 'alerts'"), "{frames:?}");
    assert_eq!(sequences(&frames, "alert"), [3, 4, 5]);
    // Online, unacknowledged: the next alert pushes out #3, and the user hears of it at once.
    w.publish(alert(6));
    let frames = w.texts(&mut c);
    assert_eq!(frames.iter().filter(|v| v["code"] == "QUEUE_OVERFLOW").count(), 1, "{frames:?}");
    assert_eq!(sequences(&frames, "alert"), [6]);
    assert_eq!(w.stats.critical_dropped.load(Ordering::Relaxed), 3);
}

#[test]
fn private_channels_are_the_users_own_whatever_the_request_names() {
    let mut w = World::new();
    let mut mallory = w.connect(Kind::STREAM, Some("mallory"));
    let mut alice = w.connect(Kind::STREAM, Some("alice"));
    let attempts = [
        json!({"action":"subscribe","channel":"orders","user_id":"alice","id":"m1"}),
        json!({"action":"subscribe","channel":"orders","symbols":["alice","ALICE","Alice"],"id":"m2"}),
        json!({"action":"subscribe","channel":"ORDERS","user_id":"alice","id":"m3"}),
        json!({"action":"subscribe","channel":"executions","symbols":["alice"],"user":"alice","sub":"alice","id":"m4"}),
        json!({"action":"subscribe","channel":"orders","key":"alice","topic":"orders:alice","id":"m5"}),
        json!({"action":"subscribe","channel":"alerts","from_sequence":{"alice":0},"id":"m6"}),
        json!({"action":"subscribe","channel":"portfolio","symbols":["../alice"],"id":"m7"}),
    ];
    for a in &attempts {
        w.send(&mut mallory, a.clone());
        let reply = w.texts(&mut mallory).remove(0);
        assert_eq!(reply["id"], a["id"]);
        assert!(reply["type"] == "subscribed" || reply["type"] == "error", "{reply}");
    }
    w.send(&mut alice, json!({"action":"subscribe","channel":"orders"}));
    w.send(&mut alice, json!({"action":"subscribe","channel":"executions"}));
    w.recv(&mut alice);
    for (channel, data) in [
        ("orders", json!({"order_id":"secret-1","symbol":"AAPL","status":"new"})),
        ("executions", json!({"trade_id":"t-1","order_id":"secret-1","symbol":"AAPL"})),
        ("alerts", json!({"alert_id":"al-1","type":"risk","message":"m"})),
        ("portfolio", json!({"total_value":1})),
    ] {
        for user in ["alice", "Alice", "ALICE"] {
            w.publish(json!({"channel":channel,"user_id":user,"data":data}));
        }
    }
    let got = w.texts(&mut alice);
    assert!(got.iter().any(|v| v["type"] == "order" && v["data"]["order_id"] == "secret-1"), "{got:?}");
    let leaked: Vec<Value> = w.texts(&mut mallory);
    assert!(leaked.is_empty(), "nothing of alice reaches mallory: {leaked:?}");
    w.publish(json!({"channel":"orders","user_id":"mallory","data":{"order_id":"m-own"}}));
    let own = w.texts(&mut mallory);
    assert!(own.iter().any(|v| v["data"]["order_id"] == "m-own"), "mallory's subscriptions were real: {own:?}");
    assert!(w.texts(&mut alice).is_empty(), "alice never sees mallory's");
}

#[test]
fn a_shutdown_sends_a_notice_then_closes_1001_with_the_retry_hint_after_what_is_queued() {
    let mut w = World::new();
    let mut c = w.connect(Kind::STREAM, None);
    w.send(&mut c, json!({"action":"subscribe","channel":"quotes","symbols":["AAPL"]}));
    w.publish(quotes("AAPL", 2));
    let now = w.now();
    c.link.conn.borrow_mut().shutdown(now, 1500);
    let frames = w.recv(&mut c);
    let texts: Vec<&Value> =
        frames.iter().filter_map(|f| if let Frame::Text(v) = f { Some(v) } else { None }).collect();
    assert_eq!(sequences(&texts.iter().map(|v| (*v).clone()).collect::<Vec<_>>(), "quote"), [1, 2], "flushed first");
    let notice = texts.last().unwrap();
    assert_eq!((notice["type"].as_str(), notice["data"]["retry_after_ms"].as_u64()), (Some("system"), Some(1500)));
    assert_eq!(frames.last(), Some(&Frame::Close(1001, "server shutting down; retry_after_ms=1500".into())));
}

/// The fastws dialect of `/api/v1/ws`.
fn fastws() -> Kind {
    Kind::Subscriber(tickwire_core::protocol::by_path("/api/v1/ws").unwrap().id)
}

fn with_fastws_limits(heartbeat_s: u32, lifespan_s: u32) -> World {
    let limits = tickwire_core::protocol::fastws::session_limits(heartbeat_s, lifespan_s);
    World::with(
        |s| {
            s.heartbeat_s = 1;
            s.session_limits[usize::from(fastws().dialect().0)] = Some(limits);
        },
        Limits::default(),
    )
}

/// Seed 003's liveness rule: no pings; a client silent for the heartbeat interval is closed with 1003 and
/// the seed's reason, and so is one connected longer than the lifespan, however live.
#[test]
fn fastws_closes_the_silent_and_the_old_with_1003_and_never_pings() {
    let mut w = with_fastws_limits(3, 6);
    let mut silent = w.connect(fastws(), None);
    let mut live = w.connect(fastws(), None);
    let ping = w.ping.clone();
    let reason = "Connection timed out. Heartbeat interval 3.0. Max connection lifespan 6.0";
    let heartbeat = json!({"type":"bars.subscribe","payload":{"symbol":"AAPL","params":{"resolution":"1"}}});
    let mut closed_at = [None, None];
    for second in 1..=8 {
        w.advance(SECOND);
        for (i, c) in [&mut silent, &mut live].into_iter().enumerate() {
            let was = c.link.conn.borrow().is_closing();
            c.link.conn.borrow_mut().heartbeat(w.now(), &ping);
            if !was && c.link.conn.borrow().is_closing() {
                closed_at[i] = Some(second);
            }
        }
        let frames = w.recv(&mut silent);
        assert!(!frames.iter().any(|f| matches!(f, Frame::Ping(_))), "no pings: {frames:?}");
        if second == 3 {
            assert_eq!(close_of(&frames), Some((1003, reason.into())));
        }
        if !live.link.conn.borrow().is_closing() {
            w.send(&mut live, heartbeat.clone()); // the seed's heartbeat: subscribe again
            let got = w.recv(&mut live);
            assert!(!got.iter().any(|f| matches!(f, Frame::Ping(_))), "{got:?}");
        }
    }
    assert_eq!(closed_at, [Some(3), Some(6)], "silent for 3 s; connected for 6 s");
    assert_eq!(close_of(&w.recv(&mut live)), Some((1003, reason.into())));
    assert_eq!(w.stats.heartbeat_closes.load(Ordering::Relaxed), 2);
}

/// The seed's clients keep their connection alive by subscribing again to what they have: answered, and
/// the subscription goes on as it was (no new start, so no update can fall between the two).
#[test]
fn a_fastws_resubscribe_is_answered_without_restarting_the_subscription() {
    let settings = World::new().settings.clone();
    let mut c = Connection::new(0, 1, fastws(), None, settings, Arc::default(), 0);
    let mut frame = Vec::new();
    let text = br#"{"type":"bars.subscribe","payload":{"symbol":"AAPL","params":{"resolution":"1"}}}"#;
    write_client_frame(&mut frame, true, 1, text, MASK);
    let mut buf = BytesMut::from(&frame[..]);
    assert!(c.handle_bytes(1, &mut buf));
    assert!(matches!(c.poll_request(), Some(Request::Subscribe { ref topics, .. }) if topics.len() == 1));
    let mut buf = BytesMut::from(&frame[..]);
    assert!(c.handle_bytes(2, &mut buf));
    assert!(c.poll_request().is_none(), "nothing for the shard to do");
    assert_eq!(c.queued().1, 2, "both subscribes answered");
}
