//! The server with the PostgreSQL store, against a real PostgreSQL (a fresh database per test): rows in
//! each table, durable critical messages across restarts (killed, not stopped), acks persisted, sequences
//! continued, subscription restore, and a database outage in the middle of a run.

mod common;
#[path = "../../persistence/tests/support/testdb.rs"]
mod testdb;

use std::time::Duration;

use common::{http, publish, token, Client, Server};
use serde_json::{json, Value};
use testdb::TestDb;

const SECS: Duration = Duration::from_secs(5);

/// A server on `db` without the simulated feed.
fn server(db: &TestDb, extra: &[&str]) -> Server {
    let mut args = vec!["--no-simulator", "--database-url", db.url.as_str()];
    args.extend_from_slice(extra);
    Server::start(&args)
}

fn order(user: &str, id: &str) -> Value {
    json!({"channel":"orders","user_id":user,"data":{"order_id":id,"symbol":"AAPL","side":"buy","status":"new","qty":10}})
}

fn connect_as(server: &Server, user: &str, client_id: &str) -> Client {
    let t = token(user, "user");
    Client::connect(server.addr, &format!("/v1/stream?client_id={client_id}"), Some(&t)).expect("connect")
}

/// Orders received after a subscribe, as `(sequence, order_id)`: the first within 5 s (a loaded machine may
/// be slow to answer), then any more until none came for `quiet`.
fn orders(c: &mut Client, quiet: Duration) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut within = SECS.max(quiet);
    while let Some(v) = c.recv_until(within, |v| v["type"] == "order") {
        out.push((v["sequence"].as_u64().unwrap(), v["data"]["order_id"].as_str().unwrap().to_owned()));
        within = quiet;
    }
    out
}

#[test]
fn critical_event_survives_restarts_and_is_delivered_once_then_not_after_ack() {
    let Some(db) = TestDb::create() else { return };
    let first = server(&db, &[]);
    let body = publish(
        first.addr,
        &json!([order("u-7", "o-1"), {"channel":"portfolio","user_id":"u-7","data":{"total_value":1}}]),
    );
    assert_eq!(body["durable"], true, "{body}");
    assert_eq!(body["sequences"][0]["sequence"], 1);
    // The order is committed (durable: true); the portfolio's sequence is bookkeeping, written just after.
    common::wait_for(SECS, "the portfolio's sequence in the database", || {
        db.count("websocket_topic_sequences WHERE channel = 'portfolio' AND sequence = 1") == 1
    });
    drop(first); // SIGKILL: no graceful flush

    let second = server(&db, &[]);
    let mut alice = connect_as(&second, "u-7", "phone");
    alice.send(json!({"action":"subscribe","channel":"orders"}));
    assert_eq!(orders(&mut alice, Duration::from_secs(1)), [(1, "o-1".to_owned())], "kept across the crash, once");
    alice.send(json!({"action":"ack","channel":"orders","sequence":1}));
    common::wait_for(SECS, "the ack in the database", || {
        db.count("websocket_critical_messages WHERE sequence = 1 AND acked_at IS NOT NULL") == 1
    });
    let body = publish(
        second.addr,
        &json!([order("u-7", "o-2"), {"channel":"portfolio","user_id":"u-7","data":{"total_value":2}}]),
    );
    let seqs: Vec<_> = body["sequences"].as_array().unwrap().iter().map(|s| s["sequence"].as_u64()).collect();
    assert_eq!(seqs, [Some(2), Some(2)], "private sequences continue across the restart: {body}");
    assert_eq!(orders(&mut alice, SECS), [(2, "o-2".to_owned())], "live");
    drop(alice);
    drop(second);

    let third = server(&db, &[]);
    let mut alice = connect_as(&third, "u-7", "phone");
    alice.send(json!({"action":"subscribe","channel":"orders"}));
    assert_eq!(orders(&mut alice, Duration::from_secs(1)), [(2, "o-2".to_owned())], "acked o-1 is not sent again");
}

#[test]
fn bookkeeping_reaches_its_tables_and_a_graceful_stop_writes_the_closes() {
    let Some(db) = TestDb::create() else { return };
    let mut srv = server(&db, &["--metrics-interval-s", "1"]);
    let mut c = connect_as(&srv, "u-3", "desk-1");
    c.send(json!({"action":"subscribe","channel":"quotes","symbols":["AAPL","MSFT"],"throttle_ms":50}));
    c.recv_until(SECS, |v| v["type"] == "subscribed").expect("subscribed");
    c.send(json!({"action":"unsubscribe","channel":"quotes","symbols":["MSFT"]}));
    c.recv_until(SECS, |v| v["type"] == "unsubscribed").expect("unsubscribed");
    c.ws.close(None).unwrap();
    let _ = c.close_code(SECS);
    // Its frames out: welcome, subscribed, unsubscribed at least.
    common::wait_for(SECS, "the connection's row, closed", || {
        db.count(
            "websocket_connections WHERE user_id = 'u-3' AND client_id = 'desk-1' AND ip = '127.0.0.1'
             AND close_code = 1000 AND messages_in >= 2 AND disconnected_at >= connected_at
             AND messages_out >= 3",
        ) == 1
    });
    common::wait_for(SECS, "one subscription kept", || {
        db.count("websocket_subscriptions WHERE user_id = 'u-3' AND client_id = 'desk-1'") == 1
            && db.count("websocket_subscriptions WHERE symbol = 'AAPL' AND throttle_ms = 50") == 1
    });
    common::wait_for(SECS, "metrics rows from both shards", || {
        db.count("(SELECT DISTINCT shard FROM websocket_metrics WHERE connections_opened >= 0) s") == 2
    });
    assert_eq!(common::metric(srv.addr, "tickwire_store_up"), 1.0);
    assert!(common::metric(srv.addr, "tickwire_store_rows_written_total") >= 4.0);

    let report = std::process::Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args(["report", "--since", "1h", "--database-url", &db.url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&report.stdout);
    assert!(report.status.success(), "{}", String::from_utf8_lossy(&report.stderr));
    assert!(text.contains("connections opened: 1 (1 distinct users)"), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("20") && l.split_whitespace().count() >= 8),
        "a row per bucket:\n{text}"
    );
    let mut named = connect_as(&srv, "u-4", "kiosk");
    let mut unnamed = srv.connect(Some(&token("u-4", "user")));
    for c in [&mut named, &mut unnamed] {
        c.send(json!({"action":"subscribe","channel":"quotes","symbols":["AAPL"]}));
        c.recv_until(SECS, |v| v["type"] == "subscribed").expect("subscribed");
    }
    assert!(srv.terminate().success());
    // Written before the process exited: the stop flushes the store.
    assert_eq!(db.count("websocket_connections WHERE user_id = 'u-4' AND close_code = 1001"), 2);
    assert_eq!(db.count("websocket_subscriptions WHERE user_id = 'u-4'"), 1, "only a client that named itself");
    assert_eq!(db.count("websocket_subscriptions WHERE client_id = 'kiosk'"), 1);
}

#[test]
fn database_outage_mid_run_sheds_bookkeeping_refuses_critical_and_recovers() {
    let Some(pg) = testdb::PgInstance::start() else { return };
    let url = pg.url();
    let srv = Server::start_env(
        // 20 connections of one user: no per-user limit here.
        &["--no-simulator", "--database-url", &url, "--metrics-interval-s", "1", "--max-connections-per-user", "0"],
        &[("TICKWIRE_DURABLE_TIMEOUT_MS", "1000"), ("TICKWIRE_STORE_BACKLOG", "8")],
    );
    let publisher = token("oms", "publisher");
    let post = |body: &Value| http(srv.addr, "POST", "/api/publish", Some(&publisher), &body.to_string());
    assert_eq!(post(&order("u-9", "o-1")).1["durable"], true);

    pg.stop();
    common::wait_for(SECS, "the store to notice the outage", || common::metric(srv.addr, "tickwire_store_up") == 0.0);
    // The shards keep serving: connections, subscriptions, public data.
    let mut during: Vec<Client> = (0..20).map(|i| connect_as(&srv, "u-8", &format!("outage-{i}"))).collect();
    during[0].send(json!({"action":"subscribe","channel":"quotes","symbols":["AAPL"]}));
    during[0].recv_until(SECS, |v| v["type"] == "subscribed").expect("subscribed");
    publish(srv.addr, &json!({"channel":"quotes","data":{"symbol":"AAPL","bid":1.5}}));
    // Published right after subscribing, it may come as the subscription's starting snapshot.
    let q = during[0]
        .recv_until(SECS, |v| v["type"] == "quote" || v["type"] == "snapshot")
        .expect("public data flows without the database");
    assert_eq!(q["data"]["bid"], 1.5);
    // Bookkeeping beyond the bounded backlog is shed and counted, never waited for.
    assert!(common::metric(srv.addr, "tickwire_store_shed_total") > 0.0, "20 connections over a backlog of 8");
    // A critical event is refused rather than accepted and lost.
    let (status, body) = post(&order("u-9", "o-2"));
    assert_eq!(status, 503, "{body}");
    assert!(body["error"].as_str().unwrap().contains("database is unavailable"), "{body}");

    pg.start_again();
    common::wait_for(Duration::from_secs(15), "the store to reconnect", || {
        common::metric(srv.addr, "tickwire_store_up") == 1.0
    });
    let (status, body) = post(&order("u-9", "o-3"));
    assert_eq!((status, &body["durable"]), (202, &json!(true)), "{body}");
    let count = |sql: &str| -> i64 {
        postgres::Client::connect(&url, postgres::NoTls).unwrap().query_one(sql, &[]).unwrap().get(0)
    };
    common::wait_for(SECS, "bookkeeping from the outage written after it", || {
        count("SELECT count(*) FROM websocket_connections WHERE client_id LIKE 'outage-%'") >= 1
    });
    assert_eq!(count("SELECT count(*) FROM websocket_critical_messages"), 2, "o-1 and o-3; o-2 was refused");
    let mut alice = connect_as(&srv, "u-9", "app");
    alice.send(json!({"action":"subscribe","channel":"orders"}));
    let got: Vec<String> = orders(&mut alice, Duration::from_secs(1)).into_iter().map(|o| o.1).collect();
    assert_eq!(got, ["o-1", "o-3"]);
    drop(during);
}

#[test]
fn restore_brings_back_the_subscriptions_of_the_same_user_and_client_id() {
    let Some(db) = TestDb::create() else { return };
    let srv = server(&db, &[]);
    let mut before = connect_as(&srv, "u-5", "tab-1");
    for sub in [
        json!({"action":"subscribe","channel":"quotes","symbols":["AAPL","MSFT"],"throttle_ms":20}),
        json!({"action":"subscribe","channel":"bars","symbols":["AAPL"],"interval":"1s"}),
        json!({"action":"subscribe","channel":"orders"}),
        json!({"action":"unsubscribe","channel":"quotes","symbols":["MSFT"]}),
    ] {
        before.send(sub);
        before.recv_until(SECS, |v| v["type"] == "subscribed" || v["type"] == "unsubscribed").expect("answered");
    }
    drop(before);
    common::wait_for(SECS, "three subscriptions kept", || {
        db.count("websocket_subscriptions WHERE user_id = 'u-5' AND client_id = 'tab-1'") == 3
    });
    // The restored ones answer when the database has (a loaded machine may be slow), then none more.
    let restored = |user: &str, client: &str| {
        let mut c = connect_as(&srv, user, client);
        c.send(json!({"action":"subscribe","channel":"news","restore":true,"id":"r1"}));
        let mut subscribed = Vec::new();
        let mut within = SECS;
        while let Some(v) = c.recv_until(within, |v| v["type"] == "subscribed") {
            subscribed.push(format!("{} {} {}", v["channel"], v["symbols"], v["id"]));
            within = if subscribed.len() >= 4 || client != "tab-1" { Duration::from_millis(500) } else { SECS };
        }
        subscribed.sort();
        (c, subscribed)
    };
    let (mut after, subscribed) = restored("u-5", "tab-1");
    let want = ["\"bars\" [\"AAPL\"] null", "\"news\" [] \"r1\"", "\"orders\" [] null", "\"quotes\" [\"AAPL\"] null"];
    assert_eq!(subscribed, want, "MSFT was unsubscribed before: not restored");
    publish(srv.addr, &order("u-5", "o-1"));
    assert_eq!(orders(&mut after, SECS), [(1, "o-1".to_owned())], "the restored private channel is the user's");
    // Another client id of the same user, or another user with the same client id: nothing to restore.
    for (user, client) in [("u-5", "tab-2"), ("u-6", "tab-1")] {
        assert_eq!(restored(user, client).1, ["\"news\" [] \"r1\""], "{user} {client}");
    }
}

#[test]
fn without_a_database_critical_publishes_are_not_durable_and_restore_is_an_error_frame() {
    // An empty DATABASE_URL is no database: the memory store, not an error.
    let srv = Server::start_env(&["--no-simulator"], &[("DATABASE_URL", "")]);
    assert_eq!(publish(srv.addr, &order("u-1", "o"))["durable"], false);
    let body = publish(srv.addr, &json!({"channel":"quotes","data":{"symbol":"AAPL","bid":1}}));
    assert!(body.get("durable").is_none(), "no critical event, no claim: {body}");
    let mut c = connect_as(&srv, "u-1", "x");
    c.send(json!({"action":"subscribe","channel":"news","restore":true,"id":"r"}));
    c.recv_until(SECS, |v| v["type"] == "subscribed").expect("the subscribe itself is served");
    let e = c.recv_until(SECS, |v| v["type"] == "error").expect("an error");
    assert_eq!((e["code"].as_str(), e["id"].as_str()), (Some("UNAVAILABLE"), Some("r")), "{e}");
}

/// `url` with its host and port replaced by `addr`.
fn via(url: &str, addr: std::net::SocketAddr) -> String {
    let start = url.find('@').map_or_else(|| url.find("://").unwrap() + 3, |i| i + 1);
    let end = start + url[start..].find('/').unwrap();
    format!("{}{addr}{}", &url[..start], &url[end..])
}

#[test]
fn a_silent_database_counts_as_lost_and_the_critical_publish_waiting_on_it_gets_503() {
    let Some(db) = TestDb::create() else { return };
    let pg: postgres::Config = db.url.parse().unwrap();
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    let proxy = common::proxy::Proxy::start(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    let url = via(&db.url, proxy.addr);
    let srv = Server::start_env(
        &["--no-simulator", "--database-url", &url],
        &[("TICKWIRE_STORE_TIMEOUT_MS", "1000"), ("TICKWIRE_DURABLE_TIMEOUT_MS", "2500")],
    );
    let publisher = token("oms", "publisher");
    let post = |body: &Value| http(srv.addr, "POST", "/api/publish", Some(&publisher), &body.to_string());
    assert_eq!(post(&order("u-2", "o-1")).1["durable"], true);

    proxy.set_blackhole(true); // packets vanish; no connection closes
    let (status, body) = post(&order("u-2", "o-2"));
    assert_eq!(status, 503, "not confirmed durable in time: {body}");
    common::wait_for(SECS, "the store to count the silence as an outage", || {
        common::metric(srv.addr, "tickwire_store_up") == 0.0
    });

    proxy.set_blackhole(false);
    common::wait_for(Duration::from_secs(15), "the store to reconnect", || {
        common::metric(srv.addr, "tickwire_store_up") == 1.0
    });
    assert_eq!(post(&order("u-2", "o-3")).1["durable"], true);
    // o-2 stayed in the writer's hands and was written once the database answered again.
    common::wait_for(SECS, "o-2 written after all", || db.count("websocket_critical_messages") == 3);
    let mut user = connect_as(&srv, "u-2", "app");
    user.send(json!({"action":"subscribe","channel":"orders"}));
    let got: Vec<(u64, String)> = orders(&mut user, Duration::from_secs(1));
    assert_eq!(got, [(1, "o-1".to_owned()), (2, "o-2".to_owned()), (3, "o-3".to_owned())]);
}
