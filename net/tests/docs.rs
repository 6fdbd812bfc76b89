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
