//! The seed dialects against the real binary, with real WebSocket clients: each dialect's documented client
//! messages, sent literally as its seed shows them, and the replies and closes the seed documents.

mod common;

use std::time::Duration;

use common::{metric_where, Client, Server};
use serde_json::{json, Value};
use tungstenite::Message;

const SECS: Duration = Duration::from_secs(5);

/// Reads until the server closes; returns the close code and reason.
fn close_of(c: &mut Client, what: &str) -> (u16, String) {
    c.ws.get_mut().set_read_timeout(Some(SECS)).unwrap();
    loop {
        match c.ws.read() {
            Ok(Message::Close(Some(f))) => return (u16::from(f.code), f.reason.to_string()),
            Ok(Message::Close(None)) => return (1005, String::new()),
            Ok(_) => continue,
            Err(e) => panic!("no close frame after {what}: {e}"),
        }
    }
}

fn send_raw(c: &mut Client, text: &str) {
    c.ws.send(Message::text(text.to_owned())).unwrap();
}

/// Seed 003 (`/api/v1/ws`), its "Subscribe to Bar Updates" and "Unsubscribe from Updates" examples: the
/// replies have every field the seed shows, with the topic its topic-builder contract gives (the seed's own
/// `bars:AAPL:1` contradicts that contract; docs/dialects.md says so).
#[test]
fn fastws_subscribe_and_unsubscribe_are_answered_as_the_seed_shows() {
    // Anonymous clients of /v1/stream are refused here; the seed's endpoint needs no token.
    let server = Server::start(&["--allow-anonymous", "false", "--no-simulator"]);
    assert!(Client::connect(server.addr, "/v1/stream", None).is_err(), "the canonical endpoint needs a token");
    let mut c = Client::connect(server.addr, "/api/v1/ws", None).expect("connect without a token");
    let topic = r#"bars:{"resolution":"1","symbol":"AAPL"}"#;
    send_raw(
        &mut c,
        r#"{
  "type": "bars.subscribe",
  "payload": {
    "symbol": "AAPL",
    "params": {
      "resolution": "1"
    }
  }
}"#,
    );
    let want = json!({"type":"bars.subscribe.response","payload":{"status":"ok","symbol":"AAPL","message":"Subscribed to AAPL","topic":topic}});
    assert_eq!(c.recv().expect("the subscribe's response"), want, "no welcome or other frame first");
    send_raw(
        &mut c,
        r#"{
  "type": "bars.unsubscribe",
  "payload": {
    "symbol": "AAPL",
    "params": {
      "resolution": "1"
    }
  }
}"#,
    );
    let want = json!({"type":"bars.unsubscribe.response","payload":{"status":"ok","symbol":"AAPL","message":"Unsubscribed from AAPL","topic":topic}});
    assert_eq!(c.recv().unwrap(), want);
    // Every resolution of the seed is served.
    for resolution in ["1", "5", "15", "30", "60", "D", "W", "M"] {
        c.send(json!({"type":"bars.subscribe","payload":{"symbol":"MSFT","params":{"resolution":resolution}}}));
        let r = c.recv().unwrap();
        assert_eq!((&r["type"], &r["payload"]["status"]), (&json!("bars.subscribe.response"), &json!("ok")), "{r}");
        let topic = format!(r#"bars:{{"resolution":"{resolution}","symbol":"MSFT"}}"#);
        assert_eq!(r["payload"]["topic"], topic);
    }
    // The default resolution is "1".
    c.send(json!({"type":"bars.subscribe","payload":{"symbol":"msft"}}));
    let r: Value = c.recv().unwrap();
    assert_eq!(r["payload"]["topic"], r#"bars:{"resolution":"1","symbol":"MSFT"}"#, "{r}");
}

/// Seed 003's closes: not JSON, an unknown type, a payload that does not validate; each closes only its
/// own connection.
#[test]
fn fastws_bad_input_closes_with_1003_and_the_seeds_reasons() {
    let server = Server::start(&["--no-simulator"]);
    let mut bystander = Client::connect(server.addr, "/api/v1/ws", None).unwrap();
    let cases = [
        ("not json", "Unsupported Data"),
        (r#"{"type":"quotes.subscribe","payload":{"symbol":"AAPL"}}"#, "No matching type"),
        (r#"{"type":"bars.subscribe","payload":{"params":{"resolution":"1"}}}"#, "Could not validate payload"),
        (
            r#"{"type":"bars.subscribe","payload":{"symbol":"AAPL","params":{"resolution":"2"}}}"#,
            "Could not validate payload",
        ),
    ];
    for (text, reason) in cases {
        let mut c = Client::connect(server.addr, "/api/v1/ws", None).unwrap();
        send_raw(&mut c, text);
        assert_eq!(close_of(&mut c, text), (1003, reason.to_owned()));
    }
    let mut c = Client::connect(server.addr, "/api/v1/ws", None).unwrap();
    c.ws.send(Message::binary(vec![1u8, 2, 3])).unwrap();
    assert_eq!(close_of(&mut c, "a binary frame"), (1003, "Unsupported Data".to_owned()));
    bystander.send(json!({"type":"bars.subscribe","payload":{"symbol":"AAPL","params":{"resolution":"5"}}}));
    assert_eq!(bystander.recv().unwrap()["payload"]["status"], "ok", "the other connection is untouched");
    // Renders are counted per dialect in /metrics (nothing has been published: none yet).
    assert_eq!(metric_where(server.addr, "tickwire_renders_total", &[r#"dialect="fastws""#]), 0.0);
}

/// Seed 003's heartbeat rule in the binary, with its settings: a client that sends nothing for
/// `--fastws-heartbeat-s` is closed with 1003 and the seed's reason naming the configured figures.
#[test]
fn a_silent_fastws_client_is_closed_with_the_seeds_reason() {
    let server = Server::start(&["--no-simulator", "--heartbeat-s", "1", "--fastws-heartbeat-s", "1"]);
    let mut c = Client::connect(server.addr, "/api/v1/ws", None).unwrap();
    let reason = "Connection timed out. Heartbeat interval 1.0. Max connection lifespan 3600.0";
    assert_eq!(close_of(&mut c, "a second of silence"), (1003, reason.to_owned()));
}

/// The shape of a JSON value: objects by their keys, each value by its shape; numbers as numbers.
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        Value::Array(a) => Value::Array(a.iter().map(shape).collect()),
        Value::Number(_) => json!("number"),
        Value::String(_) => json!("string"),
        other => other.clone(),
    }
}

/// The message an AsyncAPI `$ref` names (through the channel's reference to the component).
fn resolve<'a>(doc: &'a Value, r: &Value) -> &'a Value {
    let mut v = doc.pointer(r["$ref"].as_str().unwrap().strip_prefix('#').unwrap()).unwrap();
    if let Some(next) = v["$ref"].as_str() {
        v = doc.pointer(next.strip_prefix('#').unwrap()).unwrap();
    }
    v
}

/// `/api/v1/ws/asyncapi.json` is the committed document, and it is true: every example a client sends gets
/// exactly the reply of the document's example; the update's example has the fields of a real bar from the
/// simulated feed (which takes up to a minute: 1-minute bars close on the minute).
#[test]
fn the_fastws_asyncapi_examples_hold_against_the_live_server() {
    // The client waits up to 75 s for a bar without a word: longer than the default silence allowed.
    let server =
        Server::start(&["--simulator-rate", "2000", "--simulator-symbols", "2", "--fastws-heartbeat-s", "120"]);
    let (status, served) = common::http(server.addr, "GET", "/api/v1/ws/asyncapi.json", None, "");
    assert_eq!(status, 200);
    let committed: Value =
        serde_json::from_str(include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/web/asyncapi-fastws.json"))).unwrap();
    assert_eq!(served, committed);
    let doc = &committed;
    let (status, page) =
        common::http_raw(server.addr, b"GET /api/v1/ws/asyncapi HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 200);
    assert!(page.contains("<h3 id=\"barsSubscribe\">"), "the readable page");
    // The account routes' examples name the account TEST-001: the client is its user.
    let mut c = Client::connect(server.addr, "/api/v1/ws", Some(&common::token("TEST-001", "user"))).unwrap();
    let mut checked = 0;
    for op in doc["operations"].as_object().unwrap().values().filter(|op| op["action"] == "receive") {
        let message = resolve(doc, &op["messages"][0]);
        let reply = resolve(doc, &op["reply"]["messages"][0]);
        for (example, want) in message["examples"].as_array().unwrap().iter().zip(reply["examples"].as_array().unwrap())
        {
            c.send(example["payload"].clone());
            assert_eq!(c.recv().expect("a reply"), want["payload"], "the reply to {}", example["payload"]);
            checked += 1;
        }
    }
    assert_eq!(checked, 10, "subscribe and unsubscribe, of bars and of the four account routes");

    // Each account route's update example against a real update of the route.
    let example_of = |route: &str| {
        resolve(doc, &doc["operations"][format!("{route}Update")]["messages"][0])["examples"][0]["payload"].clone()
    };
    for route in ["orders", "executions", "positions", "equity"] {
        c.send(json!({"type":format!("{route}.subscribe"),"payload":{"accountId":"TEST-001"}}));
        assert_eq!(c.recv().unwrap()["payload"]["status"], "ok");
    }
    let (orders, executions) = (example_of("orders"), example_of("executions"));
    let positions = example_of("positions")["payload"]["positions"].clone();
    let mut portfolio = example_of("equity")["payload"].clone();
    portfolio["positions"] = positions;
    common::publish(
        server.addr,
        &json!([{"channel":"orders","user_id":"TEST-001","data":orders["payload"]},
            {"channel":"executions","user_id":"TEST-001","data":executions["payload"]},
            {"channel":"portfolio","user_id":"TEST-001","data":portfolio}]),
    );
    for route in ["orders", "executions", "positions", "equity"] {
        let real = c.recv_until(SECS, |v| v["type"] == format!("{route}.update")).expect("the route's update");
        assert_eq!(real, example_of(route), "{route}: the example is the real update of its event");
    }
    let update = resolve(doc, &doc["operations"]["barsUpdate"]["messages"][0]);
    let example = &update["examples"][0]["payload"];
    c.send(json!({"type":"bars.subscribe","payload":{"symbol":"AAPL","params":{"resolution":"1"}}}));
    assert_eq!(c.recv().unwrap()["payload"]["status"], "ok");
    let bar = c.recv_until(Duration::from_secs(75), |v| v["type"] == "bars.update").expect("a closed 1-minute bar");
    assert_eq!(shape(&bar), shape(example), "{bar}");
    assert_eq!(bar["topic"], example["topic"]);
    assert!(bar["payload"]["volume"].is_u64() && bar["payload"]["time"].as_u64().unwrap() % 60_000 == 0, "{bar}");
    let renders = metric_where(server.addr, "tickwire_renders_total", &[r#"dialect="fastws""#]);
    assert!(renders >= 1.0, "the bar was rendered for the dialect: {renders}");
}

/// Seed 001 (`/ws`) with its documented client messages: auto-subscribed, a client gets a `price_update`
/// per interval whose `symbols` map has the seed's fields; `ping` gets `pong`; a bad message gets the
/// seed's error frame and the connection goes on; the first subscribe switches it to exactly that.
#[test]
fn ws_auto_subscription_price_updates_ping_errors_and_the_switch_to_explicit() {
    let server = Server::start(&[
        "--simulator-rate",
        "2000",
        "--simulator-symbols",
        "4",
        "--legacy-price-update-interval-s",
        "1",
    ]);
    let mut c = Client::connect(server.addr, "/ws?client_id=my-client-id", None).expect("no token needed");
    let update = c.recv_until(SECS, |v| v["type"] == "price_update").expect("auto-subscribed: price updates");
    let symbols = update["symbols"].as_object().unwrap();
    assert!(symbols.contains_key("AAPL") && symbols.len() <= 4, "{update}");
    for (symbol, p) in symbols {
        let mut keys: Vec<&str> = p.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["change", "change_pct", "close", "high", "low", "open", "price", "volume"], "{symbol}: {p}");
        assert_eq!(p["price"], p["close"]);
        assert!(p["low"].as_f64() <= p["price"].as_f64() && p["price"].as_f64() <= p["high"].as_f64(), "{p}");
    }
    let ts = update["timestamp"].as_str().unwrap();
    assert!(ts.len() == 20 && ts.ends_with('Z'), "the seed's timestamp, to the second: {ts}");
    c.recv_until(SECS, |v| v["type"] == "signal").expect("auto-subscribed: signals");

    send_raw(&mut c, r#"{"type": "ping"}"#);
    let pong = c.recv_until(SECS, |v| v["type"] == "pong").unwrap();
    assert_eq!(pong, json!({"type":"pong"}));
    send_raw(&mut c, "not json");
    let e = c.recv_until(SECS, |v| v["type"] == "error").unwrap();
    assert_eq!(e["error"], "Invalid message format");
    assert_eq!(e.as_object().unwrap().len(), 3, "type, error, timestamp: {e}");

    send_raw(&mut c, r#"{"type": "subscribe", "channel": "price_updates", "symbols": ["AAPL"]}"#);
    let only_aapl = |v: &Value| v["type"] == "price_update" && v["symbols"].as_object().unwrap().len() == 1;
    c.recv_until(SECS, only_aapl).expect("only AAPL after the first subscribe");
    for _ in 0..2 {
        let v = c.recv().expect("the next interval");
        assert!(only_aapl(&v) && v["symbols"]["AAPL"].is_object(), "no signals and no other symbol any more: {v}");
    }
    let renders = metric_where(server.addr, "tickwire_renders_total", &[r#"dialect="legacy""#]);
    assert!(renders > 0.0, "pieces rendered for the dialect");
}

/// A portfolio of one position of `quantity` shares, as the publish API takes it.
fn portfolio(user: &str, symbol: &str, quantity: i64) -> Value {
    json!({"channel":"portfolio","user_id":user,"data":{"total_value":100.0 * quantity as f64,"day_pnl":0.0,
        "cash":0.0,"buying_power":0.0,"positions":[{"symbol":symbol,"quantity":quantity,"avg_price":100.0,
        "market_price":101.0,"unrealized_pnl":quantity as f64}]}})
}

/// Seed 001 (`/ws`) with a token: auto-subscribed, the client gets its own portfolio (the latest at once,
/// then at most one per `legacy_portfolio_update_interval_s`, the newest of the window) and its own trades
/// (`side` upper case), and nothing of another user's.
#[test]
fn ws_auto_subscription_with_a_token_brings_the_users_own_trades_and_throttled_portfolio() {
    let server = Server::start(&["--no-simulator", "--legacy-portfolio-update-interval-s", "1"]);
    common::publish(server.addr, &json!([portfolio("alice", "AAPL", 1), portfolio("bob", "TSLA", 7)]));
    let alice = common::token("alice", "user");
    let mut c = Client::connect(server.addr, "/ws", Some(&alice)).expect("connect with a token");
    let first = c.recv().expect("the latest portfolio at once");
    assert_eq!(first["type"], "portfolio_update", "{first}");
    assert_eq!(first["data"]["positions"]["AAPL"]["quantity"], 1, "{first}");
    assert_eq!(first["data"]["position_count"], 1);
    // Executions and the portfolio of a user have one owner, which placed the auto-subscriptions in order:
    // the portfolio's snapshot came after the executions' subscription was in place.
    common::publish(
        server.addr,
        &json!([{"channel":"executions","user_id":"alice","data":{"trade_id":"t1","order_id":"o1","symbol":"AAPL",
            "side":"sell","quantity":2,"price":101.5,"pnl":1.0,"executed_at":"2024-12-19T12:00:00Z"}},
            {"channel":"executions","user_id":"bob","data":{"trade_id":"t2","order_id":"o2","symbol":"TSLA",
            "side":"buy","quantity":3,"price":200.0,"pnl":0.0,"executed_at":"2024-12-19T12:00:00Z"}}]),
    );
    let trade = c.recv().expect("alice's trade");
    assert_eq!(
        (&trade["type"], &trade["symbol"], &trade["side"], &trade["quantity"], &trade["price"]),
        (&json!("trade_executed"), &json!("AAPL"), &json!("SELL"), &json!(2), &json!(101.5)),
        "{trade}"
    );
    common::publish(
        server.addr,
        &json!([
            portfolio("alice", "AAPL", 2),
            portfolio("alice", "AAPL", 3),
            portfolio("bob", "TSLA", 8),
            portfolio("alice", "AAPL", 4)
        ]),
    );
    let mut seen = Vec::new();
    while seen.last() != Some(&4) {
        let v = c.recv().expect("portfolio updates");
        assert_eq!(v["type"], "portfolio_update", "only alice's portfolio, no other frame: {v}");
        assert!(v["data"]["positions"]["TSLA"].is_null(), "never bob's: {v}");
        seen.push(v["data"]["positions"]["AAPL"]["quantity"].as_i64().unwrap());
    }
    assert_eq!(seen, [2, 4], "the first at once, then only the newest of the interval");
}

/// Seed 001's status endpoint: every field of its example, with the values the seed's environment
/// variables set, and each stream's health from what the server sequenced and refused.
#[test]
fn websocket_status_has_every_field_of_the_seed_and_honours_its_environment() {
    let env = [
        ("WEBSOCKET_ENABLED", "true"),
        ("WEBSOCKET_PING_INTERVAL", "31"),
        ("WEBSOCKET_PRICE_UPDATE_INTERVAL", "2"),
        ("WEBSOCKET_PORTFOLIO_UPDATE_INTERVAL", "4"),
        ("WEBSOCKET_MAX_CONNECTIONS", "101"),
    ];
    let server = Server::start_env(&["--no-simulator"], &env);
    let status = || common::http(server.addr, "GET", "/websocket/status", None, "").1;
    let before = status();
    assert_eq!(before["stream_health"]["price_updates"]["is_healthy"], false, "nothing yet: {before}");
    assert_eq!(before["stream_health"]["price_updates"]["last_update"], Value::Null);

    let _c = Client::connect(server.addr, "/ws", None).unwrap();
    let _other = server.connect(None);
    common::publish(server.addr, &common::quotes("AAPL", 1));
    common::publish(
        server.addr,
        &json!({"channel":"signals","data":{"signal_type":"BUY","symbol":"AAPL","price":1.0,"quantity":1,"confidence":0.5}}),
    );
    let s = status();
    let mut keys: Vec<&str> = s.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "active_connections",
            "enabled",
            "max_connections",
            "ping_interval",
            "portfolio_update_interval",
            "price_update_interval",
            "stream_health"
        ]
    );
    assert_eq!(
        (
            &s["enabled"],
            &s["active_connections"],
            &s["max_connections"],
            &s["ping_interval"],
            &s["price_update_interval"],
            &s["portfolio_update_interval"]
        ),
        (&json!(true), &json!(1), &json!(101), &json!(31), &json!(2), &json!(4)),
        "one /ws connection (the /v1/stream one is not the seed's): {s}"
    );
    for stream in ["price_updates", "signals"] {
        let h = &s["stream_health"][stream];
        let mut keys: Vec<&str> = h.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["error_count", "is_healthy", "last_update", "recovery_attempts", "started_at"], "{h}");
        assert_eq!(
            (&h["error_count"], &h["recovery_attempts"], &h["is_healthy"]),
            (&json!(0), &json!(0), &json!(true))
        );
        let last = h["last_update"].as_str().unwrap();
        assert!(last.len() == 20 && last.ends_with('Z') && h["started_at"].as_str().unwrap() <= last, "{h}");
    }

    // A refused signal makes the stream unhealthy until the next one is sequenced.
    let (code, _) = common::http(
        server.addr,
        "POST",
        "/api/publish",
        Some(&common::token("feed", "publisher")),
        r#"[{"channel":"signals","data":"not an object"}]"#,
    );
    assert_eq!(code, 400);
    let s = status();
    let h = &s["stream_health"]["signals"];
    assert_eq!((&h["error_count"], &h["is_healthy"]), (&json!(1), &json!(false)), "{s}");
    assert_eq!(s["stream_health"]["price_updates"]["is_healthy"], true, "the other stream is untouched");
}

/// `WEBSOCKET_ENABLED=false` turns `/ws` off: no upgrade there, the status says so, the other endpoints
/// serve on.
#[test]
fn websocket_enabled_false_turns_ws_off() {
    let server = Server::start_env(&[], &[("WEBSOCKET_ENABLED", "false")]);
    match Client::connect(server.addr, "/ws", None) {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 404),
        Err(e) => panic!("expected a 404, got {e}"),
        Ok(_) => panic!("/ws upgraded while turned off"),
    }
    let (_, s) = common::http(server.addr, "GET", "/websocket/status", None, "");
    assert_eq!(s["enabled"], false);
    server.connect(None);
}

/// Connects to seed 002's endpoint with `Cookie: session=<token>` (its browsers' way), or none.
fn portfolio_client(addr: std::net::SocketAddr, session: Option<&str>) -> Client {
    use tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{addr}/ws/portfolio").into_client_request().unwrap();
    if let Some(t) = session {
        req.headers_mut().insert("Cookie", format!("theme=dark; session={t}").parse().unwrap());
    }
    let stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(SECS)).unwrap();
    let (ws, _) = tungstenite::client(req, stream).expect("the upgrade completes, token or not");
    Client { ws, welcome: Value::Null }
}

/// Every `key` id in `frames` (single events and batches), in order.
fn ids_in(frames: &[Value], single: &str, list: &str, id: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for f in frames {
        if f["type"] == single {
            ids.push(f["data"][id].as_str().unwrap().to_owned());
        } else if f["type"] == "batch" {
            ids.extend(f["data"][list].as_array().unwrap().iter().map(|o| o[id].as_str().unwrap().to_owned()));
        }
    }
    ids
}

fn order(user: &str, id: &str) -> Value {
    json!({"channel":"orders","user_id":user,"data":{"order_id":id,"broker_order_id":"alpaca-456","symbol":"TSLA",
        "side":"buy","type":"limit","status":"filled","qty":50,"filled_qty":50,"avg_price":245.75,"limit_price":246.0,
        "submitted_at":"2026-01-04T15:29:30.000Z","filled_at":"2026-01-04T15:30:45.000Z"}})
}

fn trade(user: &str, id: &str) -> Value {
    json!({"channel":"executions","user_id":user,"data":{"trade_id":id,"order_id":"o","symbol":"NVDA","side":"sell",
        "quantity":25,"price":520.5,"pnl":1250.0,"executed_at":"2026-01-04T15:30:45.000Z"}})
}

/// Seed 002 (`/ws/portfolio`) with its documented client messages, sent literally: the session cookie, the
/// `info` confirmation, each event in the seed's envelope with camelCase decimal strings, batches that
/// drop no order or trade, unsubscribe, ping, the SUBSCRIPTION_FAILED error, and the replay of
/// unacknowledged orders and trades to a later subscriber (this dialect's at-least-once).
#[test]
fn ws_portfolio_speaks_the_seeds_messages_with_batches_and_replays() {
    let server = Server::start(&["--no-simulator", "--portfolio-batch-ms", "300"]);
    let user = "user-abc-123";
    let token = common::token(user, "user");
    let mut c = portfolio_client(server.addr, Some(&token));
    send_raw(&mut c, r#"{"type": "subscribe", "channels": ["positions", "orders", "account", "trades"]}"#);
    let info = c.recv().expect("info");
    assert_eq!((&info["type"], &info["userId"]), (&json!("info"), &json!(user)), "{info}");
    assert_eq!(info["data"]["channels"], json!(["positions", "orders", "account", "trades"]));
    let ts = info["timestamp"].as_str().unwrap();
    assert!(ts.len() == 24 && ts.ends_with('Z'), "the seed's timestamp, to the millisecond: {ts}");

    // A quiet connection's first update goes at once: one portfolio is a position and the account.
    let position = json!({"symbol":"AAPL","quantity":100,"avg_price":170.25,"market_price":175.5,"unrealized_pnl":525.0,
        "strategy_id":"strategy-xyz","opened_at":"2026-01-03T09:30:00.000Z"});
    let portfolio = |positions: Value| {
        json!({"channel":"portfolio","user_id":user,"data":{"total_value":104308.75,"day_pnl":1234.56,"cash":50000.0,
            "buying_power":354905.24,"positions":positions}})
    };
    common::publish(server.addr, &json!([portfolio(json!([position]))]));
    let first = c.recv().expect("the portfolio");
    assert_eq!((&first["type"], &first["userId"]), (&json!("batch"), &json!(user)), "{first}");
    assert_eq!(
        first["data"]["positions"],
        json!([{"symbol":"AAPL","quantity":"100","currentPrice":"175.50","entryPrice":"170.25","unrealizedPnl":"525.00",
            "unrealizedPnlPercent":"3.08","marketValue":"17550.00","side":"long","strategyId":"strategy-xyz",
            "openedAt":"2026-01-03T09:30:00.000Z"}]),
        "the seed's position_update data"
    );
    let account = &first["data"]["account"];
    assert_eq!(
        (&account["equity"], &account["buyingPower"], &account["cash"], &account["dayPnl"], &account["dayPnlPercent"]),
        (&json!("104308.75"), &json!("354905.24"), &json!("50000.00"), &json!("1234.56"), &json!("1.20"))
    );
    assert_eq!((&first["data"]["orders"], &first["data"]["trades"]), (&json!([]), &json!([])));

    // One order alone in its window comes as it is: the seed's order_update.
    common::publish(server.addr, &json!([order(user, "order-1")]));
    let alone = c.recv().expect("the order");
    assert_eq!(alone["type"], "order_update", "{alone}");
    assert_eq!(
        alone["data"],
        json!({"orderId":"order-1","brokerOrderId":"alpaca-456","symbol":"TSLA","side":"buy","type":"limit",
            "status":"filled","qty":"50","filledQty":"50","filledAvgPrice":"245.75","limitPrice":"246.00",
            "submittedAt":"2026-01-04T15:29:30.000Z","filledAt":"2026-01-04T15:30:45.000Z"})
    );

    // Several at once: batched, no order or trade dropped, a position's newest state last.
    let aapl = |q: i64| json!({"symbol":"AAPL","quantity":q,"avg_price":170.25,"market_price":175.5});
    common::publish(
        server.addr,
        &json!([
            portfolio(json!([aapl(150)])),
            order(user, "order-2"),
            trade(user, "trade-1"),
            portfolio(json!([aapl(200)])),
            trade(user, "trade-2"),
            order("someone-else", "order-x")
        ]),
    );
    let mut frames = Vec::new();
    while ids_in(&frames, "trade_executed", "trades", "tradeId").len() < 2 {
        frames.push(c.recv().expect("the batch"));
    }
    assert_eq!(ids_in(&frames, "order_update", "orders", "orderId"), ["order-2"], "{frames:?}");
    assert_eq!(ids_in(&frames, "trade_executed", "trades", "tradeId"), ["trade-1", "trade-2"]);
    let last = frames.iter().rev().find_map(|f| f["data"]["positions"].as_array().filter(|p| !p.is_empty())).unwrap();
    assert_eq!((last.len(), &last[0]["quantity"]), (1, &json!("200")), "folded to the newest: {frames:?}");

    // Unsubscribe, ping and a bad channel, as the seed writes them.
    send_raw(&mut c, r#"{"type": "unsubscribe", "channels": ["orders"]}"#);
    let info = c.recv().unwrap();
    assert_eq!(info["data"]["channels"], json!(["positions", "account", "trades"]), "{info}");
    send_raw(&mut c, r#"{"type": "ping"}"#);
    let pong = c.recv().unwrap();
    assert_eq!((&pong["type"], &pong["userId"], &pong["data"]), (&json!("pong"), &json!(user), &json!({})));
    send_raw(&mut c, r#"{"type": "subscribe", "channels": ["invalid_channel"]}"#);
    let e = c.recv().unwrap();
    assert_eq!(
        (&e["type"], &e["data"]),
        (
            &json!("error"),
            &json!({"code":"SUBSCRIPTION_FAILED","message":"Invalid channel name","details":{"channel":"invalid_channel"}})
        )
    );
    common::publish(server.addr, &json!([order(user, "order-3"), trade(user, "trade-3")]));
    let mut frames = Vec::new();
    while !ids_in(&frames, "trade_executed", "trades", "tradeId").contains(&"trade-3".to_owned()) {
        frames.push(c.recv().expect("the trade"));
    }
    assert!(ids_in(&frames, "order_update", "orders", "orderId").is_empty(), "no orders after unsubscribe: {frames:?}");

    // No acks in this dialect: a later subscriber gets every unacknowledged order and trade, with their ids.
    let mut later = portfolio_client(server.addr, Some(&token));
    send_raw(&mut later, r#"{"type":"subscribe","channels":["orders","trades"]}"#);
    assert_eq!(later.recv().unwrap()["type"], "info");
    let mut frames = Vec::new();
    while ids_in(&frames, "order_update", "orders", "orderId").len() < 3
        || ids_in(&frames, "trade_executed", "trades", "tradeId").len() < 3
    {
        frames.push(later.recv().expect("the replay"));
    }
    assert_eq!(ids_in(&frames, "order_update", "orders", "orderId"), ["order-1", "order-2", "order-3"]);
    assert_eq!(ids_in(&frames, "trade_executed", "trades", "tradeId"), ["trade-1", "trade-2", "trade-3"]);
}

/// Seed 002's refusals: no session or a bad one completes the upgrade and closes 1008 "Authentication
/// required"; a user's sixth connection closes 1008; past the server's total, 1013; a client far over 100
/// messages per second is closed 1008.
#[test]
fn ws_portfolio_refuses_as_the_seeds_table_says() {
    let server = Server::start(&["--no-simulator", "--max-connections", "7"]);
    for session in [None, Some("not-a-jwt")] {
        let mut c = portfolio_client(server.addr, session);
        assert_eq!(close_of(&mut c, "no valid session"), (1008, "Authentication required".to_owned()));
    }
    let token = common::token("five", "user");
    let mut five: Vec<Client> = (0..5).map(|_| portfolio_client(server.addr, Some(&token))).collect();
    for c in &mut five {
        send_raw(c, r#"{"type":"ping"}"#);
        assert_eq!(c.recv().unwrap()["type"], "pong", "each of five is served");
    }
    let mut sixth = portfolio_client(server.addr, Some(&token));
    assert_eq!(close_of(&mut sixth, "a sixth connection").0, 1008);
    let other = common::token("other", "user");
    let _two: Vec<Client> = (0..2).map(|_| portfolio_client(server.addr, Some(&other))).collect();
    let mut over = portfolio_client(server.addr, Some(&common::token("third", "user")));
    assert_eq!(close_of(&mut over, "the server's total").0, 1013);

    let c = &mut five[0];
    // Over twice the rate within one second's window (450 messages span at most two of them).
    for _ in 0..450 {
        c.ws.write(Message::text(r#"{"type":"ping"}"#)).unwrap();
    }
    c.ws.flush().unwrap();
    assert_eq!(close_of(c, "a burst of 450 messages").0, 1008);
}

/// Seed 003's private routes (`orders`, `executions`, `positions`, `equity` with `{"accountId"}`): served
/// for the user's own account, each update with its route's topic from the contract; another account, or
/// no token, gets a response with status error; unsubscribing one route of a shared channel keeps the other.
#[test]
fn fastws_private_routes_serve_the_users_own_account() {
    let server = Server::start(&["--no-simulator"]);
    let account = "TEST-001";
    let portfolio = |q: i64| {
        json!({"channel":"portfolio","user_id":account,"data":{"total_value":1515.0,"day_pnl":3.0,"cash":10.0,
            "buying_power":20.0,"positions":[{"symbol":"AAPL","quantity":q,"avg_price":150.0,"market_price":151.5,
            "unrealized_pnl":15.0}]}})
    };
    let token = common::token(account, "user");
    let mut c = Client::connect(server.addr, "/api/v1/ws", Some(&token)).unwrap();
    let topic = |route: &str| format!(r#"{route}:{{"accountId":"{account}"}}"#);
    let routes = ["orders", "executions", "positions", "equity"];
    for route in routes {
        send_raw(&mut c, &format!(r#"{{"type":"{route}.subscribe","payload":{{"accountId":"{account}"}}}}"#));
    }
    for route in routes {
        assert_eq!(
            c.recv().unwrap()["payload"],
            json!({"status":"ok","accountId":account,"message":format!("Subscribed to {route} of {account}"),"topic":topic(route)})
        );
    }
    // A portfolio, as each of its routes' update, live or in the subscription's starting state, whichever
    // came first; its arrival also says every subscription is in place (one owner, requests in order).
    common::publish(server.addr, &json!([portfolio(10)]));
    let positions = c.recv().unwrap();
    assert_eq!((&positions["type"], &positions["topic"]), (&json!("positions.update"), &json!(topic("positions"))));
    assert_eq!(positions["payload"]["positions"][0]["quantity"], 10);
    let equity = c.recv().unwrap();
    assert_eq!(
        (&equity["topic"], &equity["payload"]),
        (&json!(topic("equity")), &json!({"total_value":1515.0,"cash":10.0,"buying_power":20.0,"day_pnl":3.0}))
    );

    let o = json!({"channel":"orders","user_id":account,"data":{"order_id":"o-1","symbol":"AAPL","side":"buy","type":"market",
        "status":"filled","qty":10,"filled_qty":10,"avg_price":150.0}});
    let x = json!({"channel":"executions","user_id":account,"data":{"trade_id":"t-1","order_id":"o-1","symbol":"AAPL",
        "side":"buy","quantity":10,"price":150.0,"pnl":0.0,"executed_at":"2024-12-19T12:00:00Z"}});
    common::publish(server.addr, &json!([o, x]));
    let order = c.recv().unwrap();
    assert_eq!((&order["type"], &order["topic"]), (&json!("orders.update"), &json!(topic("orders"))), "{order}");
    assert_eq!(order["payload"]["order_id"], "o-1");
    let exec = c.recv().unwrap();
    assert_eq!((&exec["type"], &exec["topic"]), (&json!("executions.update"), &json!(topic("executions"))));
    assert_eq!(exec["payload"]["trade_id"], "t-1");

    // Equity off, positions on: the same canonical channel, one route kept.
    send_raw(&mut c, &format!(r#"{{"type":"equity.unsubscribe","payload":{{"accountId":"{account}"}}}}"#));
    let r = c.recv().unwrap();
    assert_eq!((&r["type"], &r["payload"]["status"]), (&json!("equity.unsubscribe.response"), &json!("ok")));
    common::publish(server.addr, &json!([portfolio(20)]));
    let next = c.recv().unwrap();
    assert_eq!((&next["type"], &next["payload"]["positions"][0]["quantity"]), (&json!("positions.update"), &json!(20)));
    send_raw(&mut c, r#"{"type":"orders.subscribe","payload":{"accountId":"OTHER-002"}}"#);
    let refused = c.recv().unwrap();
    assert_eq!(
        (&refused["type"], &refused["payload"]["status"]),
        (&json!("orders.subscribe.response"), &json!("error"))
    );
    assert_eq!(refused["payload"]["topic"], r#"orders:{"accountId":"OTHER-002"}"#);

    let mut anonymous = Client::connect(server.addr, "/api/v1/ws", None).unwrap();
    send_raw(&mut anonymous, &format!(r#"{{"type":"orders.subscribe","payload":{{"accountId":"{account}"}}}}"#));
    assert_eq!(anonymous.recv().unwrap()["payload"]["status"], "error", "no token, no account");
}

/// A `/ws/portfolio` part added to a canonical channel the connection already has (account after
/// positions, both from the user's portfolio) starts at the latest state too.
#[test]
fn ws_portfolio_a_part_added_later_starts_at_the_latest_state() {
    let server = Server::start(&["--no-simulator", "--portfolio-batch-ms", "200"]);
    common::publish(
        server.addr,
        &json!([{"channel":"portfolio","user_id":"ann","data":{"total_value":500.0,"day_pnl":0.0,"cash":100.0,
            "buying_power":200.0,"positions":[{"symbol":"AAPL","quantity":2,"avg_price":200.0,"market_price":200.0}]}}]),
    );
    let mut c = portfolio_client(server.addr, Some(&common::token("ann", "user")));
    send_raw(&mut c, r#"{"type":"subscribe","channels":["positions"]}"#);
    assert_eq!(c.recv().unwrap()["type"], "info");
    let first = c.recv().expect("the latest positions");
    assert_eq!((&first["type"], &first["data"]["symbol"]), (&json!("position_update"), &json!("AAPL")), "{first}");
    send_raw(&mut c, r#"{"type":"subscribe","channels":["account"]}"#);
    let info = c.recv().unwrap();
    assert_eq!(info["data"]["channels"], json!(["positions", "account"]));
    let next = c.recv().expect("the latest account");
    let account = if next["type"] == "batch" { &next["data"]["account"] } else { &next["data"] };
    assert_eq!((account["equity"].as_str(), account["cash"].as_str()), (Some("500.00"), Some("100.00")), "{next}");
}
