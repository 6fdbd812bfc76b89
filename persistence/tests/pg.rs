//! The PostgreSQL store against a real PostgreSQL (a fresh database per test): migrations, rows in each
//! table, receipts only after commit, acks, and what a new store recovers.

#[path = "support/testdb.rs"]
mod testdb;

use std::time::Duration;

use bytes::Bytes;
use testdb::TestDb;
use tickwire_core::Channel;
use tickwire_persistence::{
    ConnectionRecord, CriticalRecord, MetricsRecord, PgOptions, PgStore, PublicSequence, Store, SubscriptionRecord,
};

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

fn open(db: &TestDb) -> (PgStore, tickwire_persistence::Recovered) {
    PgStore::open(PgOptions::new(&db.url)).expect("open the store")
}

fn order(user: &str, sequence: u64) -> CriticalRecord {
    CriticalRecord {
        user: user.into(),
        channel: Channel::Orders,
        sequence,
        frame: Bytes::from(format!("frame-{user}-{sequence}")),
        created_at: 1_700_000_000_000_000 + sequence as i64,
    }
}

#[test]
fn migrations_apply_to_an_empty_database_and_are_idempotent() {
    let Some(db) = TestDb::create() else { return };
    let (store, recovered) = open(&db);
    assert!(recovered.topics.is_empty());
    drop(store);
    let (_store, _) = open(&db); // again: nothing to apply, no error
    let tables: Vec<String> = db
        .client()
        .query("SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for t in [
        "websocket_connections",
        "websocket_critical_messages",
        "websocket_metrics",
        "websocket_subscriptions",
        "websocket_topic_sequences",
        "websocket_handover",
        "websocket_handover_sequences",
    ] {
        assert!(tables.iter().any(|x| x == t), "{t} missing from {tables:?}");
    }
    assert_eq!(db.count("refinery_schema_history"), 3, "each migration applied once");
}

#[test]
fn a_node_hands_its_epoch_and_public_sequences_to_the_next_process_at_its_address_once() {
    let Some(db) = TestDb::create() else { return };
    let node = |name: &str| {
        let mut options = PgOptions::new(db.url.clone());
        options.node = Some(name.to_owned());
        PgStore::open(options).unwrap()
    };
    let (first, recovered) = node("127.0.0.1:9001");
    assert_eq!((recovered.epoch, recovered.public.len()), (None, 0), "nothing handed over yet");
    let public = vec![
        PublicSequence { channel: Channel::Quotes, symbol: "AAPL".into(), interval: String::new(), sequence: 41 },
        PublicSequence { channel: Channel::Bars, symbol: "AAPL".into(), interval: "1m".into(), sequence: 7 },
    ];
    assert!(first.write_handover("18a2b3c4d5e6f", &public).unwrap());
    // A store without a node (a server on port 0) leaves nothing.
    assert!(!open(&db).0.write_handover("other-epoch", &public).unwrap());
    // Another address is another node: it takes nothing (and does not wait for the first).
    let (_other, recovered) = node("127.0.0.1:9002");
    assert_eq!(recovered.epoch, None);
    // The next process at the address waits for the first to go, then takes what it left.
    drop(first);
    let (second, recovered) = node("127.0.0.1:9001");
    assert_eq!(recovered.epoch.as_deref(), Some("18a2b3c4d5e6f"));
    let mut got = recovered.public;
    got.sort_by(|a, b| a.channel.name().cmp(b.channel.name()));
    let mut want = public;
    want.sort_by(|a, b| a.channel.name().cmp(b.channel.name()));
    assert_eq!(got, want);
    // Read once: a later process (after a crash of this one) starts a new epoch.
    drop(second);
    let (_third, recovered) = node("127.0.0.1:9001");
    assert_eq!((recovered.epoch, recovered.public.len()), (None, 0));
}

#[test]
fn servers_starting_together_on_an_empty_database_both_migrate() {
    let Some(db) = TestDb::create() else { return };
    let opened: Vec<_> = (0..3)
        .map(|_| {
            let url = db.url.clone();
            std::thread::spawn(move || PgStore::open(PgOptions::new(url)).map(|_| ()).map_err(|e| e.to_string()))
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    assert!(opened.iter().all(Result::is_ok), "{opened:?}");
    assert_eq!(db.count("refinery_schema_history"), 3);
}

#[test]
fn rows_reach_each_table() {
    let Some(db) = TestDb::create() else { return };
    let (store, _) = open(&db);
    assert!(store.durable() && store.accepts_critical());
    let rec = |id: u64| ConnectionRecord {
        id,
        user: Some("u-1".into()),
        client_id: format!("c{id}"),
        ip: "127.0.0.1".parse().ok(),
        shard: 1,
        connected_at: 1_700_000_000_000_000,
    };
    store.connection_opened(rec(1));
    store.connection_opened(rec(2));
    store.connection_closed(1, 1_700_000_001_000_000, 1000, 3, 7); // same batch or not: one row either way
    store.flush();
    store.connection_closed(2, 1_700_000_002_000_000, 1001, 1, 2); // a later batch: an update
    let sub = SubscriptionRecord {
        user: "u-1".into(),
        client_id: "c1".into(),
        channel: Channel::Quotes,
        symbol: "AAPL".into(),
        interval: String::new(),
        throttle_ms: 100,
    };
    store.subscription_added(sub.clone(), 1_700_000_000_000_000);
    store.subscription_added(SubscriptionRecord { symbol: "MSFT".into(), ..sub.clone() }, 1_700_000_000_000_001);
    store.subscription_removed(SubscriptionRecord { symbol: "MSFT".into(), ..sub.clone() });
    store.metrics(MetricsRecord {
        at: 1_700_000_000_000_000,
        shard: 0,
        interval_s: 10.0,
        connections: 5,
        connections_opened: 6,
        subscriptions: 7,
        messages_in_per_s: 1.0,
        ingested_per_s: 2.0,
        deliveries_per_s: 3.0,
        bytes_per_s: 4.0,
        latency_p50_ms: Some(0.5),
        latency_p99_ms: None,
    });
    let receipt = store.critical_enqueued(order("u-1", 1)).expect("a durable store gives receipts");
    assert_eq!(block_on(receipt), Some(1), "committed, under its sequence");
    store.flush();

    let c = &mut db.client();
    let rows = c
        .query(
            "SELECT id, user_id, client_id, shard, close_code, messages_in, messages_out,
                    extract(epoch FROM disconnected_at - connected_at)::float8
             FROM websocket_connections ORDER BY id",
            &[],
        )
        .unwrap();
    assert_eq!(rows.len(), 2);
    let row = |i: usize| {
        let r = &rows[i];
        (
            r.get::<_, i64>(0),
            r.get::<_, String>(2),
            r.get::<_, i32>(3),
            r.get::<_, Option<i32>>(4),
            r.get::<_, i64>(5),
            r.get::<_, i64>(6),
            r.get::<_, Option<f64>>(7),
        )
    };
    assert_eq!(row(0), (1, "c1".into(), 1, Some(1000), 3, 7, Some(1.0)));
    assert_eq!(row(1), (2, "c2".into(), 1, Some(1001), 1, 2, Some(2.0)));
    let subs = block_on(store.subscriptions("u-1", "c1").unwrap()).expect("answered");
    assert_eq!(subs, vec![sub]);
    assert!(block_on(store.subscriptions("u-1", "other").unwrap()).unwrap().is_empty());
    assert_eq!(db.count("websocket_metrics WHERE connections = 5 AND latency_p99_ms IS NULL"), 1);
    assert_eq!(db.count("websocket_critical_messages WHERE frame = 'frame-u-1-1'::bytea AND acked_at IS NULL"), 1);
    assert_eq!(db.count("websocket_topic_sequences WHERE user_id = 'u-1' AND channel = 'orders' AND sequence = 1"), 1);
    let stats = store.stats();
    assert!(stats.up && stats.written > 0 && stats.shed == 0 && stats.write_errors == 0, "{stats:?}");
}

#[test]
fn a_new_store_recovers_sequences_and_unacked_messages() {
    let Some(db) = TestDb::create() else { return };
    let (store, _) = open(&db);
    for seq in 1..=4 {
        assert_eq!(block_on(store.critical_enqueued(order("u-1", seq)).unwrap()), Some(seq));
    }
    assert_eq!(block_on(store.critical_enqueued(order("u-2", 1)).unwrap()), Some(1));
    store.critical_acked("u-1", Channel::Orders, 2, 1_700_000_000_100_000);
    store.critical_acked("u-2", Channel::Orders, 1, 1_700_000_000_100_000);
    store.private_sequenced("u-1", Channel::Portfolio, 9);
    store.private_sequenced("u-1", Channel::Portfolio, 8); // out of order: the highest stays
    store.flush();
    drop(store);

    let mut opts = PgOptions::new(&db.url);
    opts.recover_per_topic = 1; // the queue bound: only the newest unacked message per topic
    let (_store, recovered) = PgStore::open(opts).unwrap();
    let t: Vec<_> =
        recovered.topics.iter().map(|t| (t.user.as_str(), t.channel, t.sequence, t.unacked.clone())).collect();
    assert_eq!(
        t,
        vec![
            ("u-1", Channel::Orders, 4, vec![(4, Bytes::from_static(b"frame-u-1-4"))]),
            ("u-1", Channel::Portfolio, 9, vec![]),
            ("u-2", Channel::Orders, 1, vec![]),
        ]
    );
    let (_store, recovered) = open(&db);
    assert_eq!(recovered.topics[0].unacked.iter().map(|u| u.0).collect::<Vec<_>>(), [3, 4]);
    assert_eq!(db.count("websocket_critical_messages WHERE acked_at IS NOT NULL"), 3);
}

#[test]
fn records_past_the_retention_are_deleted_and_unacked_messages_stay() {
    let Some(db) = TestDb::create() else { return };
    let (store, _) = open(&db);
    let day = 86_400_000_000i64;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64;
    for (id, at) in [(1, now - 3 * day), (2, now)] {
        store.connection_opened(ConnectionRecord {
            id,
            user: None,
            client_id: format!("c{id}"),
            ip: "127.0.0.1".parse().ok(),
            shard: 0,
            connected_at: at,
        });
        store.connection_closed(id, at, 1000, 0, 0);
    }
    for seq in 1..=2 {
        let mut old = order("u-1", seq);
        old.created_at = now - 3 * day;
        assert!(block_on(store.critical_enqueued(old).unwrap()).is_some());
    }
    store.critical_acked("u-1", Channel::Orders, 1, now - 3 * day);
    store.flush();
    drop(store);
    let mut opts = PgOptions::new(&db.url);
    opts.retention = Some(Duration::from_secs(86_400));
    let (store, _) = PgStore::open(opts).unwrap();
    store.connection_opened(ConnectionRecord {
        id: 3,
        user: None,
        client_id: "c3".into(),
        ip: "127.0.0.1".parse().ok(),
        shard: 0,
        connected_at: now,
    });
    store.flush(); // the first successful write prunes
    assert_eq!(db.count("websocket_connections"), 2, "the 3-day-old ended connection went");
    assert_eq!(db.count("websocket_critical_messages"), 1, "the acked old message went, the unacked one stays");
}

#[test]
fn batches_the_database_refuses_cannot_wedge_the_queues() {
    let Some(db) = TestDb::create() else { return };
    let (store, _) = open(&db);
    let mut c = db.client();
    c.batch_execute(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$;
         CREATE TRIGGER refuse BEFORE INSERT ON websocket_critical_messages FOR EACH ROW EXECUTE FUNCTION refuse();
         CREATE TRIGGER refuse BEFORE INSERT ON websocket_connections FOR EACH ROW EXECUTE FUNCTION refuse();",
    )
    .unwrap();
    // A critical batch is tried a few times, then refused: its publisher is told (503), not left waiting.
    let receipt = store.critical_enqueued(order("u-1", 1)).unwrap();
    let answer = block_on(async { tokio::time::timeout(Duration::from_secs(10), receipt).await });
    assert_eq!(answer, Ok(None), "refused, in time");
    assert_eq!(store.stats().critical_refused, 1);
    // A bookkeeping batch is shed at once and counted.
    store.connection_opened(ConnectionRecord {
        id: 1,
        user: None,
        client_id: "c".into(),
        ip: "127.0.0.1".parse().ok(),
        shard: 0,
        connected_at: 0,
    });
    store.flush();
    assert!(store.stats().shed >= 1, "{:?}", store.stats());
    // Once the database takes rows again, so does the store.
    c.batch_execute("DROP TRIGGER refuse ON websocket_critical_messages; DROP TRIGGER refuse ON websocket_connections")
        .unwrap();
    assert_eq!(block_on(store.critical_enqueued(order("u-1", 2)).unwrap()), Some(2), "accepted again");
    assert_eq!(db.count("websocket_critical_messages"), 1);
}

#[test]
fn text_from_peers_with_nul_cannot_wedge_the_queues() {
    let Some(db) = TestDb::create() else { return };
    let (store, _) = open(&db);
    store.connection_opened(ConnectionRecord {
        id: 1,
        user: Some("u\0x".into()),
        client_id: "c\0".into(),
        ip: "127.0.0.1".parse().ok(),
        shard: 0,
        connected_at: 0,
    });
    assert_eq!(block_on(store.critical_enqueued(order("u\0x", 1)).unwrap()), Some(1), "committed, NUL replaced");
    store.flush();
    assert_eq!(db.count("websocket_connections WHERE user_id = 'u\u{fffd}x'"), 1);
    assert_eq!(store.stats().write_errors, 0);
}

#[test]
fn an_unreachable_database_is_a_clear_error_without_the_password() {
    // Port 1 on loopback: nothing listens there.
    let err = PgStore::open(PgOptions::new("postgres://me:s3cret@127.0.0.1:1/x")).unwrap_err().to_string();
    assert!(err.contains("cannot connect to the database at postgres://me@127.0.0.1:1/x"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
}
