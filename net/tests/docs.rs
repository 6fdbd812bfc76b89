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
