//! `tickwire check-system` on this host (issue 17): one line per item, JSON for automation, the exit status
//! of the worst item, judged against the configured server; the server logs the same at start.

mod common;

use std::process::Command;

use serde_json::Value;

fn check(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .arg("check-system")
        .args(args)
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    (out.status.code().unwrap(), String::from_utf8_lossy(&out.stdout).into_owned())
}

const ITEMS: [&str; 12] = [
    "kernel",
    "io_uring_disabled",
    "io_uring probe",
    "seccomp",
    "RLIMIT_MEMLOCK",
    "RLIMIT_NOFILE",
    "net.core.somaxconn",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_mem",
    "CPUs",
    "transparent huge pages",
    "TLS file",
];

#[test]
fn the_exit_status_is_the_worst_item_and_json_says_each() {
    let (code, out) = check(&["--json", "--max-connections", "100", "--shards", "1"]);
    let checks: Vec<Value> = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let items: Vec<&str> = checks.iter().map(|c| c["item"].as_str().unwrap()).collect();
    assert_eq!(items, ITEMS[..11], "every item, in order (no TLS file configured)");
    let worst =
        checks.iter().map(|c| ["ok", "warn", "fail"].iter().position(|l| c["level"] == *l).unwrap()).max().unwrap();
    assert_eq!(code, worst as i32, "{out}");
    for c in &checks {
        assert_eq!(c["level"] != "ok", c["fix"].is_string(), "a fix for what is not ok, and only then: {c}");
    }
    // This machine runs the tests: its kernel and io_uring work.
    assert!(checks[..3].iter().all(|c| c["level"] == "ok"), "{out}");
}

#[test]
fn what_the_configured_server_cannot_have_fails_with_its_fix() {
    // Unreadable TLS files, and more connections than any descriptor limit here allows.
    let (code, out) = check(&[
        "--tls-cert",
        "/nonexistent/cert.pem",
        "--tls-key",
        "/nonexistent/key.pem",
        "--max-connections",
        "4000000000",
    ]);
    assert_eq!(code, 2, "{out}");
    let fails: Vec<&str> = out.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(fails.iter().any(|l| l.contains("RLIMIT_NOFILE")), "{out}");
    assert_eq!(fails.iter().filter(|l| l.contains("TLS file")).count(), 2, "{out}");
    assert!(out.contains("fix: LimitNOFILE="), "{out}");
    // A configuration that does not load is a failure too, said on stderr.
    let out =
        Command::new(env!("CARGO_BIN_EXE_tickwire")).args(["check-system", "--log-format", "xml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_server_logs_what_the_host_lacks_at_start() {
    let srv = common::Server::start(&["--no-simulator", "--max-connections", "4000000000"]);
    let log = srv.log.lock().unwrap().clone();
    assert!(
        log.iter().any(|l| l.contains("host check failed") && l.contains("RLIMIT_NOFILE")),
        "the start logs it: {log:?}"
    );
}
