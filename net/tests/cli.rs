//! The command line: `--help` explains every flag, `tickwire token` signs with the configured secret, the
//! README's configuration example is a valid config file with every setting, and docs/configuration.md's
//! table is the one net/src/config.rs declares.

use std::process::Command;

use tickwire_net::config::{settings_table, SETTINGS};

fn tickwire(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tickwire")).args(args).output().expect("run tickwire")
}

#[test]
fn help_explains_every_flag() {
    let out = tickwire(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let settings = SETTINGS.iter().map(|s| format!("--{} ", s.flag));
    // The flags scripts and tests use, spelled out in case a setting is renamed.
    let kept = [
        "--listen ",
        "--shards ",
        "--jwt-secret ",
        "--simulator-rate ",
        "--simulator-symbols ",
        "--allow-anonymous ",
        "--heartbeat-s ",
        "--database-url ",
        "--metrics-interval-s ",
        "--jwt-public-key ",
        "--jwt-algorithm ",
        "--api-key ",
        "--tls-cert ",
        "--tls-key ",
        "--tls-allow-1-2 ",
        "--max-connections ",
        "--max-connections-per-user ",
        "--max-connections-per-ip ",
        "--max-messages-per-s ",
        "--allowed-origin ",
        "--signing-key ",
        "--handshake-timeout-s ",
    ];
    let others = ["--config ", "--no-simulator ", "serve ", "token ", "report "];
    for flag in settings.chain(kept.iter().chain(&others).map(|f| f.to_string())) {
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with(&flag))
            .unwrap_or_else(|| panic!("{flag} missing:\n{help}"));
        assert!(line.trim().len() > flag.len() + 10, "{flag} has no explanation: {line}");
    }
    let token_help = String::from_utf8(tickwire(&["token", "--help"]).stdout).unwrap();
    assert!(token_help.contains("--sub") && token_help.contains("--role"));
}

#[test]
fn token_is_signed_with_the_configured_secret() {
    let out = tickwire(&["token", "--sub", "u-42", "--role", "publisher", "--jwt-secret", "s3cret"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    v.set_required_spec_claims(&["exp", "sub"]);
    let data =
        jsonwebtoken::decode::<serde_json::Value>(token.trim(), &jsonwebtoken::DecodingKey::from_secret(b"s3cret"), &v)
            .unwrap();
    assert_eq!(data.claims["sub"], "u-42");
    assert_eq!(data.claims["role"], "publisher");

    let out = Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args(["token", "--sub", "x"])
        .env_remove("TICKWIRE_JWT_SECRET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no secret configured"));
    assert!(!tickwire(&["token", "--sub", "x", "--role", "king", "--jwt-secret", "s"]).status.success());
}

fn readme_config_example() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let toml = readme.split("```toml\n").nth(1).and_then(|rest| rest.split("```").next()).expect("a toml block");
    toml.to_owned()
}

#[test]
fn readme_config_example_loads() {
    let toml = readme_config_example();
    let dir = std::env::temp_dir().join(format!("tickwire-readme-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tickwire.toml");
    std::fs::write(&file, toml).unwrap();
    let args = tickwire_net::config::ServeArgs { config: Some(file), ..Default::default() };
    let config = tickwire_net::config::Config::load(&args).expect("README example is a valid config");
    assert_eq!(config.listen.port(), 8080);
    assert_eq!(config.max_queued_bytes, 4_194_304);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn readme_config_example_has_every_setting() {
    let toml = readme_config_example();
    let keys: Vec<&str> =
        toml.lines().filter_map(|l| l.trim_start_matches("# ").split_once(" =")).map(|(key, _)| key.trim()).collect();
    let missing: Vec<&str> = SETTINGS.iter().map(|s| s.name).filter(|name| !keys.contains(name)).collect();
    assert!(missing.is_empty(), "README's toml example lacks {missing:?} (a commented `# key = value` line will do)");
}

/// docs/configuration.md's table, between its markers, is what `settings!` in net/src/config.rs renders.
#[test]
fn docs_table_of_settings_is_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let (begin, end) = ("<!-- settings table begin -->\n", "<!-- settings table end -->");
    let committed = doc.split(begin).nth(1).and_then(|rest| rest.split(end).next()).expect("the table's markers");
    let expected = settings_table();
    assert!(
        committed == expected,
        "docs/configuration.md's table differs from net/src/config.rs; put this between its markers:\n{expected}"
    );
}

#[test]
fn bad_configuration_is_one_clear_error() {
    let out = tickwire(&["--shards", "0", "--listen", "127.0.0.1:0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--shards must be 1 to 64"));
}

#[test]
fn locked_memory_too_low_is_one_clear_error_before_listening() {
    let cmd = format!(
        "ulimit -l 0 && exec {} --listen 127.0.0.1:0 --shards 2 --jwt-secret s",
        env!("CARGO_BIN_EXE_tickwire")
    );
    let out = Command::new("bash").args(["-c", &cmd]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("raise the locked-memory limit (ulimit -l"), "{stderr}");
    assert!(!stderr.contains("listening"), "{stderr}");
}
