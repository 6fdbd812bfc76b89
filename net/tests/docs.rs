//! docs/protocol.md is a contract: every `client` example is sent to a real server and must be accepted,
//! every `publish` example is POSTed and must be accepted, and every `server` example must have exactly the
//! shape (keys and value types, recursively) of a real frame of its type.

mod common;

use std::time::{Duration, Instant};

use common::{http, token, Client, Server};
use serde_json::{json, Map, Value};

/// Fenced blocks of the document with their info strings.
fn blocks(doc: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in doc.lines() {
        match (&mut current, line.strip_prefix("```")) {
            (None, Some(info)) => current = Some((info.trim().to_owned(), String::new())),
            (Some(_), Some(_)) => out.push(current.take().unwrap()),
            (Some((_, body)), None) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    out
}

/// The shape of a JSON value: objects keep their keys, everything else becomes its type.
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect::<Map<_, _>>()),
        Value::Array(a) => json!(["array", a.first().map(shape)]),
        Value::String(_) => json!("string"),
        Value::Number(_) => json!("number"),
        Value::Bool(_) => json!("bool"),
        Value::Null => json!("null"),
    }
}

#[test]
fn every_example_of_the_protocol_doc_holds() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md")).unwrap();
    let blocks = blocks(&doc);
    let examples = |tag: &str| -> Vec<Value> {
        blocks
            .iter()
            .filter(|(i, _)| i == tag)
            .map(|(_, b)| serde_json::from_str(b).expect("example is JSON"))
            .collect()
    };
    let (clients, servers, publishes) = (examples("json client"), examples("json server"), examples("json publish"));
    assert!(clients.len() >= 8 && servers.len() >= 10 && publishes.len() >= 2);

    let server = Server::start(&["--simulator-rate", "6000", "--simulator-symbols", "4"]);
    // Let the feed give every symbol some state first, so that subscriptions get snapshots.
    let deadline = Instant::now() + Duration::from_secs(10);
    while http(server.addr, "GET", "/api/ws/status", None, "").1["stream_health"]["simulator"]["events"].as_u64()
        < Some(400)
    {
        assert!(Instant::now() < deadline, "the simulated feed does not run");
        std::thread::sleep(Duration::from_millis(50));
    }
    let user = token("u-42", "user");
    let mut c = Client::connect(server.addr, &format!("/v1/stream?client_id=bot-7&token={user}"), None).unwrap();
    let mut frames = vec![c.welcome.clone()];
    for req in &clients {
        c.send(req.clone());
    }
    // Wait until every subscription is in place before publishing, so that the published order arrives.
    let deadline = Instant::now() + Duration::from_secs(5);
    while frames.iter().filter(|f| f["type"] == "subscribed").count() < 6 && Instant::now() < deadline {
        frames.extend(c.recv());
    }
    let publisher = token("oms", "publisher");
    for p in &publishes {
        let (status, body) = http(server.addr, "POST", "/api/publish", Some(&publisher), &p.to_string());
        assert_eq!(status, 202, "publish example refused: {body}");
    }
    c.send(json!({"action":"subscribe","channel":"quotez","symbols":["AAPL"],"id":"r1"}));
    let wanted: Vec<&str> = servers.iter().map(|s| s["type"].as_str().unwrap()).collect();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline && !wanted.iter().all(|t| frames.iter().any(|f| f["type"] == *t)) {
        frames.extend(c.recv());
    }
    let errors: Vec<&Value> = frames.iter().filter(|f| f["type"] == "error").collect();
    assert_eq!(errors.len(), 1, "a client example was refused: {errors:?}");

    for example in &servers {
        let candidates: Vec<&Value> = frames
            .iter()
            .filter(|f| f["type"] == example["type"] && (example.get("id").is_none() || f["id"] == example["id"]))
            .collect();
        assert!(!candidates.is_empty(), "no real frame of type {} ({example})", example["type"]);
        assert!(
            candidates.iter().any(|f| shape(f) == shape(example)),
            "the documented {} differs from the real frames:\n doc:  {example}\n real: {}",
            example["type"],
            candidates[0]
        );
    }
}

/// `/api/ws/asyncapi.json` is the committed document and carries exactly docs/protocol.md's examples: the
/// client examples as its requests' (operations the server receives), the server examples as the rest; so
/// the test above, which checks every one of them against a live server, checks the document's too.
#[test]
fn the_stream_asyncapi_document_carries_the_protocol_docs_examples() {
    let committed: Value =
        serde_json::from_str(include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/web/asyncapi-stream.json"))).unwrap();
    let server = Server::start(&["--no-simulator"]);
    let (status, served) = http(server.addr, "GET", "/api/ws/asyncapi.json", None, "");
    assert_eq!((status, &served), (200, &committed));
    let resolve = |r: &Value| -> Value {
        let v = committed.pointer(r["$ref"].as_str().unwrap().strip_prefix('#').unwrap()).unwrap();
        let next = v["$ref"].as_str().unwrap().strip_prefix('#').unwrap();
        committed.pointer(next).unwrap().clone()
    };
    let (mut clients, mut servers) = (Vec::new(), Vec::new());
    let mut seen = std::collections::HashSet::new();
    for op in committed["operations"].as_object().unwrap().values() {
        let mut refs: Vec<(bool, &Value)> =
            op["messages"].as_array().unwrap().iter().map(|m| (op["action"] == "receive", m)).collect();
        refs.extend(op["reply"]["messages"].as_array().into_iter().flatten().map(|m| (false, m)));
        for (from_client, r) in refs {
            if !seen.insert(r["$ref"].as_str().unwrap().to_owned()) {
                continue;
            }
            for ex in resolve(r)["examples"].as_array().into_iter().flatten() {
                if from_client {
                    clients.push(ex["payload"].clone())
                } else {
                    servers.push(ex["payload"].clone())
                }
            }
        }
    }
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md")).unwrap();
    let blocks = blocks(&doc);
    let of = |tag: &str| -> Vec<Value> {
        blocks.iter().filter(|(i, _)| i == tag).map(|(_, b)| serde_json::from_str(b).unwrap()).collect()
    };
    let sorted = |mut v: Vec<Value>| {
        v.sort_by_key(|e| e.to_string());
        v
    };
    let fix = "run python3 net/tests/asyncapi/gen_stream.py";
    assert_eq!(sorted(clients), sorted(of("json client")), "the client examples differ: {fix}");
    assert_eq!(sorted(servers), sorted(of("json server")), "the server examples differ: {fix}");
}

/// docs/dialects.md's examples, per endpoint: each `json client <path>` block is sent as it is and must be
/// accepted (no error frame, no close), each `json server <path>` block must have exactly the shape of a
/// real frame of its type on that endpoint, and the `json http <path>` block that of the real response.
#[test]
fn every_example_of_the_dialects_doc_holds() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/dialects.md")).unwrap();
    let tagged = |kind: &str, path: &str| -> Vec<Value> {
        blocks(&doc)
            .into_iter()
            .filter(|(info, _)| *info == format!("json {kind} {path}"))
            .map(|(_, b)| serde_json::from_str(&b).unwrap_or_else(|e| panic!("{kind} {path}: not JSON: {e}\n{b}")))
            .collect()
    };
    let server = Server::start(&[
        "--simulator-rate",
        "2000",
        "--simulator-symbols",
        "4",
        "--legacy-price-update-interval-s",
        "1",
    ]);
    let user = "TEST-001";
    let t = token(user, "user");
    let mut checked = 0;
    // A real frame of each type the examples show, found among `frames`.
    let mut compare = |path: &str, examples: Vec<Value>, frames: &[Value]| {
        for ex in examples {
            let real = frames
                .iter()
                .find(|f| f["type"] == ex["type"] && (ex["type"] != "error" || f["data"]["code"] == ex["data"]["code"]))
                .unwrap_or_else(|| panic!("{path}: no real {} frame among {frames:?}", ex["type"]));
            let (mut want, mut got) = (ex.clone(), real.clone());
            // A price_update's symbols are keyed by ticker: compare one entry's shape.
            for v in [&mut want, &mut got] {
                if let Some(symbols) = v.get_mut("symbols").and_then(Value::as_object_mut) {
                    let one = symbols.values().next().cloned().expect("a symbol");
                    *symbols = Map::from_iter([("SYMBOL".to_owned(), one)]);
                }
            }
            assert_eq!(shape(&want), shape(&got), "{path}: the example {ex}\nagainst the real {real}");
            checked += 1;
        }
    };

    // /ws: the subscribe example, then a real price_update of what it names.
    let mut c = Client::connect(server.addr, "/ws", Some(&t)).unwrap();
    for req in tagged("client", "/ws") {
        c.send(req);
    }
    let mut frames = Vec::new();
    while !frames.iter().any(|f: &Value| f["type"] == "price_update" && f["symbols"].as_object().unwrap().len() <= 2) {
        let f = c.recv().expect("a price_update");
        assert_ne!(f["type"], "error", "a /ws client example was refused: {f}");
        frames.push(f);
    }
    compare("/ws", tagged("server", "/ws"), &frames[frames.len() - 1..]);
    let status = http(server.addr, "GET", "/websocket/status", None, "").1;
    let examples = tagged("http", "/websocket/status");
    assert_eq!(examples.len(), 1);
    assert_eq!(shape(&examples[0]), shape(&status), "the status example against the real {status}");

    // /ws/portfolio: the subscribe example, an order, then a portfolio and a trade in the order's window.
    let mut p = portfolio_client(server.addr, &t);
    for req in tagged("client", "/ws/portfolio") {
        p.send(req);
    }
    let mut frames = vec![p.recv().expect("info")];
    p.send(json!({"type":"subscribe","channels":["invalid_channel"]}));
    frames.push(p.recv().expect("the error"));
    let order = json!({"channel":"orders","user_id":user,"data":{"order_id":"o-1","symbol":"AAPL","side":"buy",
        "type":"market","status":"filled","qty":10,"filled_qty":10,"avg_price":150.0}});
    let portfolio = json!({"channel":"portfolio","user_id":user,"data":{"total_value":1515.0,"day_pnl":3.0,"cash":10.0,
        "buying_power":20.0,"positions":[{"symbol":"AAPL","quantity":10,"avg_price":150.0,"market_price":151.5,"unrealized_pnl":15.0}]}});
    let trade = json!({"channel":"executions","user_id":user,"data":{"trade_id":"t-1","order_id":"o-1","symbol":"NVDA",
        "side":"sell","quantity":25,"price":520.5,"pnl":1250.0,"executed_at":"2026-01-04T15:30:45.000Z"}});
    let publisher = token("oms", "publisher");
    let (status, _) =
        http(server.addr, "POST", "/api/publish", Some(&publisher), &json!([order, portfolio, trade]).to_string());
    assert_eq!(status, 202);
    frames.push(p.recv().expect("the order, at once"));
    frames.push(p.recv().expect("the rest of its window, as a batch"));
    compare("/ws/portfolio", tagged("server", "/ws/portfolio"), &frames);

    // /api/v1/ws: its client examples with the token of their account, then an order of that account. A
    // real bar takes up to a minute: the bars.update example must be the AsyncAPI document's, which
    // net/tests/dialects.rs checks against a real bar.
    let mut f = Client::connect(server.addr, "/api/v1/ws", Some(&t)).unwrap();
    let clients = tagged("client", "/api/v1/ws");
    for req in &clients {
        f.send(req.clone());
    }
    let mut frames: Vec<Value> = (0..clients.len()).map(|_| f.recv().expect("a response")).collect();
    for r in &frames {
        assert_eq!(r["payload"]["status"], "ok", "a /api/v1/ws client example was refused: {r}");
    }
    let (status, _) = http(server.addr, "POST", "/api/publish", Some(&publisher), &json!([{"channel":"orders","user_id":user,
        "data":{"order_id":"o-2","symbol":"AAPL","side":"buy","type":"market","status":"filled","qty":10,"filled_qty":10,"avg_price":150.0}}]).to_string());
    assert_eq!(status, 202);
    frames.push(f.recv_until(Duration::from_secs(5), |v| v["type"] == "orders.update").expect("the order"));
    let asyncapi: Value =
        serde_json::from_str(include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/web/asyncapi-fastws.json"))).unwrap();
    let bar = &asyncapi["components"]["messages"]["barsUpdate"]["examples"][0]["payload"];
    let (bars, others): (Vec<Value>, Vec<Value>) =
        tagged("server", "/api/v1/ws").into_iter().partition(|v| v["type"] == "bars.update");
    assert_eq!(bars, std::slice::from_ref(bar), "the bars.update example is the AsyncAPI document's");
    compare("/api/v1/ws", others, &frames);
    assert_eq!(checked, 7, "every server example but the bar was compared to a real frame");
}

/// A `/ws/portfolio` client with the seed's session cookie.
fn portfolio_client(addr: std::net::SocketAddr, session: &str) -> Client {
    use tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{addr}/ws/portfolio").into_client_request().unwrap();
    req.headers_mut().insert("Cookie", format!("session={session}").parse().unwrap());
    let stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (ws, _) = tungstenite::client(req, stream).unwrap();
    Client { ws, welcome: Value::Null }
}
