//! Logs for machines and people (issue 17): `--log-format json` writes one JSON object per line (every
//! line of a run, the address line included), plain logs carry no colour codes off a terminal, and no log
//! line of a whole session, at the most verbose level, carries a token, the JWT secret or an API key.

mod common;

use std::time::Duration;

use common::{http, http_raw, token, Client, Server, SECRET};
use serde_json::{json, Value};

const API_KEY: &str = "key-logs-0123456789";

/// A session that handles every kind of credential: tokens in the header and the query string, a bad
/// one, a publisher's, an admin's, an API key exchanged for a token. Returns the credentials it used and
/// the connection ids its two users' welcomes gave.
fn busy_session(srv: &Server) -> (Vec<String>, Vec<String>) {
    let (user, publisher, admin) = (token("u-logs", "user"), token("pub", "publisher"), token("root", "admin"));
    let mut c = Client::connect(srv.addr, "/v1/stream", Some(&user)).unwrap();
    c.send(json!({"action":"subscribe","channel":"orders"}));
    c.recv_until(Duration::from_secs(10), |v| v["type"] == "subscribed").expect("subscribed");
    let order = json!({"channel":"orders","user_id":"u-logs","data":{"order_id":"o-1","symbol":"AAPL","side":"buy","status":"new"}});
    let (code, body) = http(srv.addr, "POST", "/api/publish", Some(&publisher), &order.to_string());
    assert_eq!(code, 202, "{body}");
    let got = c.recv_until(Duration::from_secs(10), |v| v["type"] == "order").expect("the order");
    c.send(json!({"action":"ack","channel":"orders","sequence":got["sequence"]}));
    let mut by_query = Client::connect(srv.addr, &format!("/v1/stream?token={user}"), None).unwrap();
    by_query.send(json!({"action":"ping"}));
    let forged = format!("{user}x");
    let refused = Client::connect(srv.addr, "/v1/stream", Some(&forged));
    assert!(refused.is_err() || refused.unwrap().close_code(Duration::from_secs(5)).is_some());
    let (code, _) = http(srv.addr, "GET", "/api/admin/websocket-stats", Some(&admin), "");
    assert_eq!(code, 200);
    let request = format!("GET /api/ws/token HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\nConnection: close\r\n\r\n");
    let (code, body) = http_raw(srv.addr, request.as_bytes());
    assert_eq!(code, 200, "{body}");
    let issued: Value = serde_json::from_str(&body).unwrap();
    let issued = issued["token"].as_str().expect("a token").to_owned();
    let wrong = "GET /api/ws/token HTTP/1.1\r\nHost: x\r\nX-API-Key: key-wrong-9876543210\r\nConnection: close\r\n\r\n";
    assert_eq!(http_raw(srv.addr, wrong.as_bytes()).0, 401);
    let ids = [&c, &by_query].map(|c| c.welcome["connection_id"].as_str().expect("an id").to_owned()).into();
    drop((c, by_query));
    let secrets = vec![
        user,
        publisher,
        admin,
        forged,
        issued,
        API_KEY.to_owned(),
        "key-wrong-9876543210".to_owned(),
        SECRET.to_owned(),
    ];
    (secrets, ids)
}

/// Every line the server wrote, after it stopped.
fn stopped(mut srv: Server) -> Vec<String> {
    assert!(srv.terminate().success());
    // The harness's reader thread takes the last lines from the pipe after the exit.
    common::wait_for(Duration::from_secs(10), "the last log line", || {
        srv.log.lock().unwrap().iter().any(|l| l.contains("tickwire stopped"))
    });
    let log = srv.log.lock().unwrap().clone();
    log
}

#[test]
fn json_logs_are_one_object_per_line_and_carry_no_credential() {
    let srv = Server::start_env(
        &["--no-simulator", "--log-format", "json", "--api-key", &format!("{API_KEY}=u-logs")],
        &[("RUST_LOG", "debug")],
    );
    let (secrets, connection_ids) = busy_session(&srv);
    let log = stopped(srv);
    assert!(log.len() >= 8, "a debug run says things: {log:?}");
    for line in &log {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["timestamp"].is_string() && v["level"].is_string() && v["fields"]["message"].is_string(), "{line}");
        for s in &secrets {
            assert!(!line.contains(s.as_str()), "a credential in the logs: {line}");
        }
    }
    // Every line about a connection (those of the HTTP side and of the sessions) names it, `c-<shard>-<n>`,
    // the id its welcome says: one id from the accept to the close.
    let parsed: Vec<Value> = log.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let about_connections: Vec<&Value> = parsed
        .iter()
        .filter(|v| matches!(v["target"].as_str(), Some("tickwire_net::routes" | "tickwire_net::session")))
        .collect();
    for v in &about_connections {
        let id = v["fields"]["conn"].as_str().unwrap_or_else(|| panic!("a connection's line without its id: {v}"));
        let mut parts = id.splitn(3, '-');
        assert!(
            parts.next() == Some("c") && parts.all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
            "{v}"
        );
    }
    let message = |v: &Value| v["fields"]["message"].as_str().unwrap_or_default().to_owned();
    let said = |what: &str| about_connections.iter().filter(|v| message(v).starts_with(what)).count();
    // The two upgrades of busy_session's user, the forged token's refusal, the unknown API key, the closes.
    assert!(said("connection upgraded") >= 2, "{about_connections:?}");
    assert_eq!(said("upgrade refused: invalid token"), 1, "{about_connections:?}");
    assert_eq!(said("token request with an unknown API key"), 1, "{about_connections:?}");
    let welcomed = &connection_ids[0];
    let lines_of_it: Vec<String> =
        about_connections.iter().filter(|v| v["fields"]["conn"] == welcomed.as_str()).map(|v| message(v)).collect();
    assert!(
        lines_of_it.iter().any(|m| m == "connection upgraded") && lines_of_it.iter().any(|m| m == "connection closed"),
        "the welcome's id {welcomed} names its upgrade and its close: {lines_of_it:?}"
    );
}

#[test]
fn plain_logs_carry_no_colour_codes_off_a_terminal_nor_any_credential() {
    let srv =
        Server::start_env(&["--no-simulator", "--api-key", &format!("{API_KEY}=u-logs")], &[("RUST_LOG", "debug")]);
    let (secrets, _) = busy_session(&srv);
    let log = stopped(srv);
    for line in &log {
        assert!(!line.contains('\u{1b}'), "an escape sequence in a log that is not a terminal: {line:?}");
        for s in &secrets {
            assert!(!line.contains(s.as_str()), "a credential in the logs: {line}");
        }
    }
}

#[test]
fn an_unknown_log_format_is_refused() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args(["--listen", "127.0.0.1:0", "--log-format", "xml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("log_format must be plain or json"));
}
