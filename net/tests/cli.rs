//! The command line: `--help` explains every flag, `tickwire token` signs with the configured secret, and a
//! bad setting or too little locked memory is one clear error. (That the README's example and
//! docs/configuration.md's table match the settings are unit tests of net/src/config.rs.)

use std::process::Command;

use tickwire_net::config::SETTINGS;

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
    let kept = "--listen --shards --jwt-secret --simulator-rate --simulator-symbols --allow-anonymous --heartbeat-s \
        --database-url --metrics-interval-s --jwt-public-key --jwt-algorithm --api-key --tls-cert --tls-key \
        --tls-allow-1-2 --max-connections --max-connections-per-user --max-connections-per-ip \
        --max-messages-per-s --allowed-origin --signing-key --handshake-timeout-s --config --no-simulator";
    let commands = ["serve", "token", "report"];
    for flag in settings.chain(kept.split_whitespace().chain(commands).map(|f| format!("{f} "))) {
        let lines: Vec<&str> = help.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.trim_start().starts_with(&flag) || l.trim() == flag.trim_end())
            .unwrap_or_else(|| panic!("{flag} missing:\n{help}"));
        // The explanation follows on the flag's line, or (clap's layout for long flags) on the next line,
        // indented further.
        let (line, next) = (lines[at], lines.get(at + 1).copied().unwrap_or_default());
        let indent = |l: &str| l.len() - l.trim_start().len();
        let explained = line.trim().len() > flag.len() + 10
            || (indent(next) > indent(line) && next.trim().len() > 10 && !next.trim_start().starts_with('-'));
        assert!(explained, "{flag} has no explanation: {line} / {next}");
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

    // With the secret given, no configuration is read: a stray TICKWIRE_* variable (a test harness's
    // TICKWIRE_BIN) is no error. The issuer and audience come from flags or the environment.
    let claims = |out: std::process::Output| {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        v.validate_aud = false;
        let key = jsonwebtoken::DecodingKey::from_secret(b"s");
        let token = String::from_utf8(out.stdout).unwrap();
        jsonwebtoken::decode::<serde_json::Value>(token.trim(), &key, &v).unwrap().claims
    };
    let run = |args: &[&str], env: &[(&str, &str)]| {
        Command::new(env!("CARGO_BIN_EXE_tickwire")).args(args).envs(env.iter().copied()).output().unwrap()
    };
    let c = claims(run(&["token", "--sub", "x", "--jwt-secret", "s"], &[("TICKWIRE_BIN", "/usr/bin/tickwire")]));
    assert_eq!((c.get("iss"), c.get("aud")), (None, None));
    let c =
        claims(run(&["token", "--sub", "x", "--jwt-secret", "s", "--jwt-issuer", "idp", "--jwt-audience", "tw"], &[]));
    assert_eq!((&c["iss"], &c["aud"]), (&serde_json::json!("idp"), &serde_json::json!("tw")));
    let env = [("TICKWIRE_JWT_ISSUER", "env-idp"), ("TICKWIRE_JWT_AUDIENCE", "env-tw")];
    let c = claims(run(&["token", "--sub", "x", "--jwt-secret", "s"], &env));
    assert_eq!((&c["iss"], &c["aud"]), (&serde_json::json!("env-idp"), &serde_json::json!("env-tw")));
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
