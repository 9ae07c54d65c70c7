//! The load generator: scenarios against a running postchat server, measured at the client.
//!
//! ```sh
//! JWT_SECRET=bench-secret-of-32-bytes-or-more-0123 RATE_LIMIT_MESSAGES_PER_MINUTE=0 RATE_LIMIT_CONNECTIONS_PER_MINUTE=0 RATE_LIMIT_JOINS_PER_MINUTE=0 \
//!   MAX_SOCKETS_PER_USER=0 DAILY_TOKEN_BUDGET=0 LOCAL_AI_PACING_MS=0 cargo run --release &
//! cargo run --release --bin loadgen -- --jwt-secret bench-secret-of-32-bytes-or-more-0123 chat --users 100 --seconds 20
//! ```
//!
//! Every answer is checked (tokens in order, no gap or double, final content = the tokens): a
//! run with any violation exits non-zero, so a benchmark is also a correctness check under load.

mod scenarios;

mod soak;
mod stats;
mod tokens;
mod watchers;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

// The server's allocator: the load generator allocates per token too.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(name = "loadgen", about = "Load scenarios for the postchat server")]
pub struct Cli {
    /// Server address (host:port), or several comma-separated (the processes of a cluster):
    /// users' sockets are spread over them in turn.
    #[arg(long, default_value = "127.0.0.1:3000")]
    addr: String,
    /// The server's JWT_SECRET, to sign the users' tokens.
    #[arg(long, env = "JWT_SECRET")]
    jwt_secret: String,
    /// The server's process id, to read its memory from /proc (idle scenario).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Write the results as JSON here too.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// Hold N authenticated connections; report connect rate and server memory per connection.
    Idle {
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// Seconds to hold them once all are open.
        #[arg(long, default_value_t = 5)]
        hold: u64,
        /// Open them with the headers a browser sends (user agent, origin
        /// http://localhost:5173, ...), not only the handshake's own.
        #[arg(long)]
        browser_headers: bool,
    },
    /// M users, each on its own session, sending messages back to back.
    Chat {
        #[arg(long, default_value_t = 100)]
        users: usize,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Pause of each user between an answer's end and its next message (a user reading):
        /// 0 sends back to back and saturates the machine; the users' starts are spread over it.
        #[arg(long, default_value_t = 0)]
        think_ms: u64,
        /// Offered answers per second across all users, an open loop: each user sends on a
        /// fixed schedule (every users/rate seconds, the users spread over it), or as soon as
        /// its last answer ended when that ended late. The load is the same whatever the
        /// server's speed, so CPU per answer compares across setups.
        #[arg(long, conflicts_with = "think_ms")]
        rate: Option<f64>,
        /// Seconds before `seconds` during which answers are checked but not measured: the
        /// users' first messages arrive at once, on sessions the server has not cached yet
        /// (a start-up burst, not the steady load the figures describe).
        #[arg(long, default_value_t = 2)]
        warmup_secs: u64,
        /// Watch each user's session from a second socket on the next address (another
        /// process of a cluster): every answer checked there too, and the delay of each token
        /// there after the sender's socket got it measured.
        #[arg(long)]
        watch_elsewhere: bool,
    },
    /// The long run: idle sockets held, users chatting with a pause between answers; the
    /// server's memory (needs --server-pid) and answers/s sampled every interval.
    Soak {
        #[arg(long, default_value_t = 200)]
        users: usize,
        #[arg(long, default_value_t = 2000)]
        idle: usize,
        #[arg(long, default_value_t = 1000)]
        think_ms: u64,
        #[arg(long, default_value_t = 30)]
        minutes: u64,
        #[arg(long, default_value_t = 60)]
        sample_secs: u64,
        /// Samples before this are left out of the comparison (caches and pools fill).
        #[arg(long, default_value_t = 60)]
        warmup_secs: u64,
    },
    /// One answer stream watched by K sockets of one user.
    Fanout {
        #[arg(long, default_value_t = 100)]
        sockets: usize,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
}

impl Cli {
    /// The address the `i`-th user (or connection) uses: the addresses in turn.
    pub fn addr_for(&self, i: usize) -> &str {
        let addrs: Vec<&str> = self.addr.split(',').map(str::trim).filter(|a| !a.is_empty()).collect();
        addrs.get(i % addrs.len().max(1)).copied().unwrap_or(self.addr.as_str())
    }

    /// How many addresses were given.
    pub fn addr_count(&self) -> usize {
        self.addr.split(',').filter(|a| !a.trim().is_empty()).count().max(1)
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.scenario {
        Scenario::Idle { connections, hold, browser_headers } => {
            scenarios::idle(&cli, connections, hold, browser_headers).await
        }
        Scenario::Chat { users, seconds, think_ms, rate, warmup_secs, watch_elsewhere } => {
            let length = scenarios::Length {
                warmup: Duration::from_secs(warmup_secs),
                measured: Duration::from_secs(seconds),
            };
            match scenarios::Pace::of(users, think_ms, rate) {
                Ok(pace) => scenarios::chat(&cli, users, length, pace, watch_elsewhere).await,
                Err(e) => Err(e),
            }
        }
        Scenario::Fanout { sockets, seconds } => scenarios::fanout(&cli, sockets, seconds).await,
        Scenario::Soak { users, idle, think_ms, minutes, sample_secs, warmup_secs } => {
            let plan = soak::SoakPlan {
                users,
                idle,
                think: Duration::from_millis(think_ms),
                length: Duration::from_secs(minutes * 60),
                sample_every: Duration::from_secs(sample_secs),
                warmup: Duration::from_secs(warmup_secs),
            };
            soak::soak(&cli, plan).await
        }
    };
    match result {
        Ok(report) => {
            println!("{}", report.table());
            if let Some(path) = &cli.json {
                if let Err(e) = std::fs::write(path, report.json().to_string()) {
                    eprintln!("cannot write {}: {e}", path.display());
                }
            }
            if report.violations > 0 {
                eprintln!("{} answers were lost, doubled or out of order", report.violations);
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}
