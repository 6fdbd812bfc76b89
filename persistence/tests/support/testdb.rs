//! A fresh PostgreSQL database per test, dropped after it, made through `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). Outside CI a test without PostgreSQL is skipped with a
//! notice; in CI (`CI` set) it fails. Shared by the persistence and the server tests (`#[path]`).
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A database that exists for the life of this value.
pub struct TestDb {
    pub url: String,
    pub name: String,
    admin: String,
}

impl TestDb {
    /// A new empty database, or `None` (skip the test) where PostgreSQL is not reachable outside CI.
    pub fn create() -> Option<TestDb> {
        let admin = std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
        Self::create_on(&admin)
    }

    /// [`TestDb::create`] through the given server's admin URL.
    pub fn create_on(admin: &str) -> Option<TestDb> {
        let mut client = match postgres::Client::connect(admin, postgres::NoTls) {
            Ok(c) => c,
            Err(e) if std::env::var_os("CI").is_none() => {
                eprintln!("NOTICE: PostgreSQL not reachable at {admin} ({e}): test skipped (it runs in CI)");
                return None;
            }
            Err(e) => panic!("PostgreSQL not reachable at {admin} in CI: {e}"),
        };
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let name = format!("tickwire_test_{}_{}_{nanos}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        client.batch_execute(&format!("CREATE DATABASE {name}")).expect("create the test database");
        Some(TestDb { url: with_database(admin, &name), name, admin: admin.to_owned() })
    }

    /// A client on the test database.
    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).expect("connect to the test database")
    }

    /// `SELECT count(*) FROM <from_where>`.
    pub fn count(&self, from_where: &str) -> i64 {
        self.client().query_one(&format!("SELECT count(*) FROM {from_where}"), &[]).unwrap().get(0)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&self.admin, postgres::NoTls) {
            let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }
}

/// `url` naming database `name` instead of its own.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let base = match base[after_scheme..].find('/') {
        Some(i) => &base[..after_scheme + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// A PostgreSQL server of the test's own (initdb in a temporary folder, a free port), so that a test can
/// stop and start it without touching the shared one. Stopped and removed when dropped.
pub struct PgInstance {
    pub dir: std::path::PathBuf,
    pub port: u16,
    bin: std::path::PathBuf,
}

impl PgInstance {
    /// A running instance, or `None` (skip the test, with a notice) where PostgreSQL's server programs are
    /// not installed, outside CI; in CI that fails.
    pub fn start() -> Option<PgInstance> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|d| d.filter_map(Result::ok).map(|e| e.path().join("bin")).find(|b| b.join("initdb").exists()));
        let Some(bin) = bin else {
            assert!(std::env::var_os("CI").is_none(), "CI needs PostgreSQL's server programs (initdb, pg_ctl)");
            eprintln!("NOTICE: no /usr/lib/postgresql/*/bin/initdb: test skipped (it runs in CI)");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = std::env::temp_dir().join(format!("tickwire-pg-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let pg = PgInstance { dir, port, bin };
        pg.chown();
        let data = pg.dir.join("data");
        pg.run("initdb", &["-D", data.to_str().unwrap(), "-A", "trust", "-U", "postgres", "--no-sync"]);
        pg.start_again();
        Some(pg)
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the (stopped) server and waits until it accepts connections.
    pub fn start_again(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off",
            self.port,
            self.dir.display()
        );
        let data = self.dir.join("data");
        let log = self.dir.join("log");
        self.run("pg_ctl", &["-D", data.to_str().unwrap(), "-l", log.to_str().unwrap(), "-o", &opts, "-w", "start"]);
    }

    /// Stops the server (fast: clients are disconnected at once) and waits until it is down.
    pub fn stop(&self) {
        let data = self.dir.join("data");
        self.run("pg_ctl", &["-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"]);
    }

    /// Makes the folder the `postgres` user's when running as root (initdb refuses root).
    fn chown(&self) {
        if Self::root() {
            let ok = std::process::Command::new("chown").args(["-R", "postgres:postgres"]).arg(&self.dir).status();
            assert!(ok.is_ok_and(|s| s.success()), "chown the instance's folder");
        }
    }

    fn root() -> bool {
        std::process::Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
    }

    /// Runs one of PostgreSQL's programs, as `postgres` when root; panics with its output if it fails.
    fn run(&self, program: &str, args: &[&str]) {
        let path = self.bin.join(program);
        let mut cmd = if Self::root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            std::process::Command::new(&path)
        };
        let out = cmd.args(args).output().unwrap_or_else(|e| panic!("run {program}: {e}"));
        assert!(
            out.status.success(),
            "{program} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PgInstance {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let stop = |pg: &PgInstance| {
            let mut cmd = if Self::root() {
                let mut c = std::process::Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(pg.bin.join("pg_ctl"));
                c
            } else {
                std::process::Command::new(pg.bin.join("pg_ctl"))
            };
            let _ = cmd.args(["-D", data.to_str().unwrap(), "-m", "immediate", "-w", "stop"]).output();
        };
        stop(self);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
