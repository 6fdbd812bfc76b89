//! The deployment files of docs/deploy (issue 17): the systemd unit passes `systemd-analyze verify` and
//! grants what `check-system` asks for at the largest configuration, the environment file names real
//! settings, the sysctl drop-in names keys this kernel has. A machine without systemd-analyze skips the
//! verification with a notice, unless `CI` or `NATS_URL` is set (`.ci/run`): then it fails.

mod common;

use std::path::Path;
use std::process::Command;

fn deploy(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/deploy").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `Key=value` lines of the unit's `[Service]` section.
fn service_value(unit: &str, key: &str) -> Option<String> {
    unit.lines().find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_owned))
}

#[test]
fn the_unit_verifies_and_grants_what_the_largest_server_needs() {
    let unit = deploy("tickwire.service");
    let bytes = |v: &str| -> u64 {
        let (n, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len()));
        n.parse::<u64>().unwrap()
            << match unit {
                "K" => 10,
                "M" => 20,
                "G" => 30,
                _ => 0,
            }
    };
    let memlock = bytes(&service_value(&unit, "LimitMEMLOCK").expect("LimitMEMLOCK"));
    assert!(
        memlock >= tickwire_net::system::memlock_needed(64),
        "64 shards need {}",
        tickwire_net::system::memlock_needed(64)
    );
    let nofile: u64 = service_value(&unit, "LimitNOFILE").expect("LimitNOFILE").parse().unwrap();
    assert!(nofile >= 100_000 + tickwire_net::system::SPARE_DESCRIPTORS as u64, "the default max_connections");
    assert_eq!(service_value(&unit, "ExecReload").as_deref(), Some("/bin/kill -HUP $MAINPID"));
    assert_eq!(service_value(&unit, "Restart").as_deref(), Some("on-failure"));
    for hardening in ["NoNewPrivileges=true", "ProtectSystem=strict", "PrivateTmp=true", "User=tickwire"] {
        assert!(unit.lines().any(|l| l == hardening), "{hardening}");
    }
    assert!(!unit.contains("\nSystemCallFilter="), "a system-call filter may refuse io_uring");

    let have = Command::new("systemd-analyze").arg("--version").output().is_ok_and(|o| o.status.success());
    if !have {
        assert!(
            std::env::var_os("CI").is_none() && std::env::var_os("NATS_URL").is_none(),
            "systemd-analyze is needed in CI"
        );
        eprintln!("NOTICE: systemd-analyze not found: the unit's verification skipped (it runs in CI)");
        return;
    }
    // The unit as installed, its binary where this build put it.
    let dir = std::env::temp_dir().join(format!("tickwire-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tickwire.service");
    std::fs::write(&file, unit.replace("/usr/bin/tickwire", env!("CARGO_BIN_EXE_tickwire"))).unwrap();
    let out = Command::new("systemd-analyze").args(["verify"]).arg(&file).output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // Lines about other units of this machine are not this unit's business.
    let ours: Vec<&str> = said.lines().filter(|l| l.contains("tickwire")).collect();
    assert!(out.status.success() && ours.is_empty(), "systemd-analyze verify: {said}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn the_environment_file_names_real_settings() {
    let table =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md")).unwrap();
    let env = deploy("tickwire.env");
    let mut names = 0;
    for line in env.lines().map(|l| l.trim_start_matches("# ")) {
        let Some((name, _)) = line.split_once('=') else { continue };
        if name.starts_with("TICKWIRE_") {
            assert!(table.contains(&format!("`{name}`")), "{name} is not a setting (docs/configuration.md)");
            names += 1;
        }
    }
    assert!(names >= 5);
}

#[test]
fn the_sysctl_drop_in_names_keys_this_kernel_has() {
    for line in deploy("99-tickwire.conf").lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("not key = value: {line}"));
        let path = Path::new("/proc/sys").join(key.trim().replace('.', "/"));
        assert!(path.exists(), "{} is not a sysctl here", key.trim());
        assert!(value.split_whitespace().all(|v| v.parse::<u64>().is_ok()), "{line}");
    }
}

/// Every metric a panel of the Grafana dashboard queries exists in a live `/metrics`, a cluster node's (so
/// that the bus's are there too: NATS of `NATS_URL`, or skipped outside CI with a notice).
#[test]
fn every_metric_the_dashboard_queries_is_served() {
    let dashboard: serde_json::Value = serde_json::from_str(&deploy("grafana-dashboard.json")).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    let mut names = std::collections::BTreeSet::new();
    for panel in panels {
        assert!(panel["title"].is_string() && panel["gridPos"]["w"].is_u64(), "{panel}");
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for (i, _) in expr.match_indices("tickwire_") {
                let name: String = expr[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .fold(name.clone(), |n, s| n.strip_suffix(s).unwrap_or(&n).to_owned());
                names.insert((name, family));
            }
        }
    }
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let reachable = std::net::TcpStream::connect(url.trim_start_matches("nats://")).is_ok();
    let bus: Vec<&str> = if reachable { vec!["--bus", &url] } else { Vec::new() };
    if !reachable {
        assert!(std::env::var_os("CI").is_none() && std::env::var_os("NATS_URL").is_none(), "NATS is needed in CI");
        eprintln!("NOTICE: NATS not reachable: the bus's metrics are not checked (they are in CI)");
    }
    let srv = common::Server::start(&[&["--no-simulator"][..], &bus].concat());
    let (_, metrics) = common::http_raw(srv.addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    for (name, family) in &names {
        if !reachable && family.starts_with("tickwire_bus_") {
            continue;
        }
        let served = metrics.lines().any(|l| l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{")));
        assert!(served, "the dashboard queries {name}, which /metrics does not serve");
        assert!(metrics.contains(&format!("# TYPE {family} ")), "{family} has no TYPE line");
    }
}
