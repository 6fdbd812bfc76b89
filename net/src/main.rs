//! `tickwire`: parse the command line and run the server or a subcommand.

use clap::Parser;
use tickwire_net::auth::{Authenticator, Role};
use tickwire_net::config::{token_secret, Cli, Command, Config};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        None => Config::load(&cli.serve).and_then(tickwire_net::server::run),
        Some(Command::Serve(args)) => Config::load(&args).and_then(tickwire_net::server::run),
        Some(Command::Token(args)) => token(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn token(args: &tickwire_net::config::TokenArgs) -> anyhow::Result<()> {
    let role = Role::parse(&args.role).ok_or_else(|| anyhow::anyhow!("--role must be user, publisher or admin"))?;
    let secret = token_secret(args)?;
    let now = tickwire_net::util::now_secs();
    println!("{}", Authenticator::hs256(secret.as_bytes()).issue(&args.sub, role, now, args.ttl_s));
    Ok(())
}
