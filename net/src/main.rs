//! `tickwire`: parse the command line and run the server or a subcommand.

use clap::Parser;
use tickwire_net::auth::{Authenticator, Role};
use tickwire_net::config::{token_secret, Cli, Command, Config};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(Command::CheckSystem(args)) = &cli.command {
        return check_system(args);
    }
    let result = match cli.command {
        None => Config::load(&cli.serve).and_then(serve),
        Some(Command::Serve(args)) => Config::load(&args).and_then(serve),
        Some(Command::Token(args)) => token(&args),
        Some(Command::DevCert(args)) => dev_cert(&args),
        Some(Command::Report(args)) => {
            logs(false);
            report(&args)
        }
        Some(Command::CheckSystem(_)) => unreachable!("answered above"),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `tickwire check-system`: exit status 0, 1 or 2 for ok, warn or fail (2 too for a configuration that
/// does not load).
fn check_system(args: &tickwire_net::config::CheckSystemArgs) -> std::process::ExitCode {
    use tickwire_net::system::{checks, text, worst, Host, Level};
    let config = match Config::load(&args.serve) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let all = checks(&Host::read(&config), &config);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
    } else {
        print!("{}", text(&all));
    }
    std::process::ExitCode::from(match worst(&all) {
        Level::Ok => 0,
        Level::Warn => 1,
        Level::Fail => 2,
    })
}

/// Logs as configured, then runs the server.
fn serve(config: Config) -> anyhow::Result<()> {
    logs(config.log_format == "json");
    tickwire_net::server::run(config)
}

/// Log lines on standard error, of the levels RUST_LOG asks for (info by default): one JSON object per
/// line, or `key=value` text with colours only on a terminal (log files and journals get none).
fn logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().with_current_span(false).init();
    } else {
        builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init();
    }
}

fn report(args: &tickwire_net::config::ReportArgs) -> anyhow::Result<()> {
    use tickwire_persistence::report::{parse_duration, report};
    let since = parse_duration(&args.since).ok_or_else(|| anyhow::anyhow!("--since: expected 90s, 15m, 1h or 7d"))?;
    let bucket = match &args.bucket {
        Some(b) => parse_duration(b).ok_or_else(|| anyhow::anyhow!("--bucket: expected 10s, 5m or 1h"))?,
        None => (since / 30).max(std::time::Duration::from_secs(10)),
    };
    let url = match &args.database_url {
        Some(url) => url.clone(),
        None => {
            let serve = tickwire_net::config::ServeArgs { config: args.config.clone(), ..Default::default() };
            Config::load(&serve)?.database_url.ok_or_else(|| {
                anyhow::anyhow!(
                    "no database configured: pass --database-url, set DATABASE_URL or database_url in --config"
                )
            })?
        }
    };
    print!("{}", report(&url, since, bucket)?);
    Ok(())
}

fn token(args: &tickwire_net::config::TokenArgs) -> anyhow::Result<()> {
    let role = Role::parse(&args.role).ok_or_else(|| anyhow::anyhow!("--role must be user, publisher or admin"))?;
    let (secret, rules) = token_secret(args)?;
    let now = tickwire_net::util::now_secs();
    println!("{}", Authenticator::new(secret.as_bytes(), rules).issue(&args.sub, role, now, args.ttl_s));
    Ok(())
}

fn dev_cert(args: &tickwire_net::config::DevCertArgs) -> anyhow::Result<()> {
    let (cert, key) = tickwire_net::tls::dev_cert(&args.hosts)?;
    std::fs::write(&args.cert, cert).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", args.cert.display()))?;
    write_private(&args.key, key.as_bytes())?;
    eprintln!(
        "wrote a self-signed certificate for {} to {} and its key to {}; for local use only:\n  tickwire --tls-cert {} --tls-key {}",
        args.hosts.join(", "),
        args.cert.display(),
        args.key.display(),
        args.cert.display(),
        args.key.display()
    );
    Ok(())
}

/// Writes a file only its owner may read.
fn write_private(path: &std::path::Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    f.write_all(data)?;
    Ok(())
}
