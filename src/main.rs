//! The `postchat` binary: config → telemetry → build → run until a signal.

use std::process::ExitCode;

use clap::Parser;
use postchat::config::{Cli, Command, Config};
use postchat::domain::UserId;
use postchat::startup::{jwt_keys, Application};
use postchat::{shutdown, telemetry};

/// jemalloc instead of glibc's malloc: malloc was a visible share of the per-token path's CPU,
/// and chat throughput rose with jemalloc at no cost in memory per idle connection
/// (docs/benchmarks.md has the figures). Rust's allocations only: serving C's `malloc` too
/// (SQLite's) hangs the process at start under an `LD_PRELOAD` that allocates first
/// (libfaketime, which the cluster's clock tests use).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = cli.config;
    telemetry::init(config.server.log_format);
    if let Some(Command::Token { user, ttl_hours }) = cli.command {
        return print_token(&config, &user, ttl_hours);
    }
    let app = match Application::build(config.clone()).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("postchat cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let url = format!("http://{}:{}", config.server.host, app.port());
    if let Some(token) = &app.demo_token {
        print_dev_mode(&config, token, &url);
    }
    // Last, so a script that waits for this line has seen everything above it.
    println!("postchat listening on {url}");
    match app.run_until_stopped(shutdown::signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("postchat stopped with an error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `postchat token --user U`: prints a token for U, signed with the configured secret.
fn print_token(config: &Config, user: &str, ttl_hours: u64) -> ExitCode {
    let token = UserId::parse(user).map_err(|e| e.to_string()).and_then(|user| {
        let keys = jwt_keys(config).map_err(|e| e.to_string())?;
        keys.issue(&user, ttl_hours * 3600).map_err(|e| e.to_string())
    });
    match token {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot make a token: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What dev mode offers: the demo token, the demo page and the Node demo.
fn print_dev_mode(config: &Config, token: &str, url: &str) {
    println!(
        "dev mode (no JWT_SECRET): tokens are signed with the secret in {}",
        config.server.data_dir.display()
    );
    println!("demo token for user 'demo': {token}");
    println!("demo page: {url}/  (sign in as any user)");
    println!("Node demo: (cd client-demo && npm install && node demo.mjs {url})");
}
