//! All settings in one place: each is an environment variable and the matching command-line
//! flag (the flag wins). The README lists them with their defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use secrecy::SecretString;

/// The command line: the server (default) or the `token` subcommand.
#[derive(Debug, Parser)]
#[command(
    name = "postchat",
    version,
    about = "Socket.IO AI chat server for questions and social posts about a post"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: Config,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a JWT for USER, signed with JWT_SECRET or, in dev mode, the dev secret.
    Token {
        #[arg(long)]
        user: String,
        /// Hours until the token expires.
        #[arg(long, default_value_t = 24)]
        ttl_hours: u64,
    },
}

/// Where answers come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AiProvider {
    /// The offline extractive engine (`local-extractive`): no network, no model.
    Local,
    /// Any OpenAI-compatible endpoint.
    Openai,
    /// Ollama's OpenAI-compatible endpoint.
    Ollama,
}

/// The algorithm JWTs must be signed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JwtAlgorithmName {
    #[value(name = "HS256", alias = "hs256")]
    Hs256,
    #[value(name = "RS256", alias = "rs256")]
    Rs256,
    #[value(name = "EdDSA", alias = "eddsa")]
    EdDsa,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// A secret from the command line or the environment: kept in a type that never prints.
fn secret(value: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(value))
}

/// The server's settings, grouped by concern (each group's flags under its own heading in
/// `--help`).
#[derive(Debug, Clone, Args)]
pub struct Config {
    #[command(flatten, next_help_heading = "Server")]
    pub server: ServerConfig,
    #[command(flatten, next_help_heading = "Database")]
    pub database: DatabaseConfig,
    #[command(flatten, next_help_heading = "Auth")]
    pub auth: AuthConfig,
    #[command(flatten, next_help_heading = "AI")]
    pub ai: AiConfig,
    #[command(flatten, next_help_heading = "Limits")]
    pub limits: LimitsConfig,
    #[command(flatten, next_help_heading = "Streams")]
    pub streams: StreamsConfig,
    #[command(flatten, next_help_heading = "Sessions")]
    pub sessions: SessionsConfig,
    #[command(flatten, next_help_heading = "Post fetching")]
    pub post_fetch: PostFetchConfig,
}

/// Where and how the server listens and stops.
#[derive(Debug, Clone, Args)]
pub struct ServerConfig {
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0 picks a free one; the chosen port is printed).
    #[arg(long, env = "PORT", default_value_t = 3000)]
    pub port: u16,
    /// Most client connections open at once (websockets included); past it new connections are
    /// closed at once. Unset: the open-files limit (raised to its hard limit at start) less a
    /// twentieth of it (at least 64), kept for the database, page fetches and the model provider.
    #[arg(long, env = "MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Longest wait for a request's headers, and for the next request on a kept-alive
    /// connection (s).
    #[arg(long, env = "HTTP_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    pub http_header_timeout_secs: u64,
    /// Run dev mode (no JWT_SECRET: tokens for anyone who asks) on a non-loopback HOST. Insecure:
    /// anyone who can reach the port can act as any user.
    #[arg(long, env = "INSECURE_DEV_MODE_ON_NETWORK")]
    pub insecure_dev_mode_on_network: bool,
    /// Folder for the default SQLite database and the dev-mode JWT secret.
    #[arg(long, env = "DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Balancers (addresses or CIDR networks, comma-separated) whose word on the client's address
    /// is taken: from these peers only, a connection may open with a PROXY protocol header (v2
    /// or v1) naming the client, and the right-most `X-Forwarded-For` entry that is not one of
    /// them is the client. Every per-address limit and log uses that address. Unset: the TCP peer.
    #[arg(long, env = "TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: String,
    /// Allowed browser origins, comma-separated, `*` for any. Default: `*` in dev mode, none otherwise.
    #[arg(long, env = "CORS_ORIGINS")]
    pub cors_origins: Option<String>,
    /// Redis (`redis://host:port/db`) for cluster mode: several server processes sharing one
    /// database and one Redis behave as one server. Unset: one process, no Redis.
    #[arg(long, env = "REDIS_URL", hide_env_values = true, value_parser = secret)]
    pub redis_url: Option<SecretString>,
    /// Prefix of every Redis key, so deployments (or test runs) can share a Redis.
    #[arg(long, env = "REDIS_PREFIX", default_value = "postchat")]
    pub redis_prefix: String,
    /// At shutdown, how long answers in flight may take to finish (s).
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,
    /// Cluster mode: another process continues the answers of a process that died, and a
    /// process told to stop hands its answers over instead of finishing them (`false`: they
    /// end `interrupted`, and a stopping process finishes them within SHUTDOWN_GRACE_SECS).
    #[arg(long, env = "RESUME_ANSWERS_ON_PROCESS_DEATH", default_value_t = true, action = clap::ArgAction::Set)]
    pub resume_answers_on_process_death: bool,
    /// Log lines as text or JSON (the filter is RUST_LOG, default `info`).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The database and its pool.
#[derive(Debug, Clone, Args)]
pub struct DatabaseConfig {
    /// `postgres://…` or `sqlite://…`; default: a SQLite file in DATA_DIR.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_parser = secret)]
    pub database_url: Option<SecretString>,
    /// Most database connections at once.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 10)]
    pub database_max_connections: u32,
    /// How long a query waits for a connection before failing with STORAGE_UNAVAILABLE (ms).
    #[arg(long, env = "DATABASE_ACQUIRE_TIMEOUT_MS", default_value_t = 3_000)]
    pub database_acquire_timeout_ms: u64,
    /// How long a statement may take (waiting for a lock included) before it fails with
    /// STORAGE_UNAVAILABLE (ms; 0: no limit).
    #[arg(long, env = "DATABASE_STATEMENT_TIMEOUT_MS", default_value_t = 5_000)]
    pub database_statement_timeout_ms: u64,
}

/// Who may connect: the JWTs accepted.
#[derive(Debug, Clone, Args)]
pub struct AuthConfig {
    /// HS256 secret for JWTs; unset means dev mode (random secret kept in DATA_DIR).
    #[arg(long, env = "JWT_SECRET", hide_env_values = true, value_parser = secret)]
    pub jwt_secret: Option<SecretString>,
    /// The one algorithm tokens may use: HS256 (JWT_SECRET), RS256 or EdDSA (JWT_PUBLIC_KEY_FILE).
    #[arg(long, env = "JWT_ALGORITHM", value_enum, default_value_t = JwtAlgorithmName::Hs256)]
    pub jwt_algorithm: JwtAlgorithmName,
    /// PEM public key for RS256 or EdDSA.
    #[arg(long, env = "JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,
    /// Clock skew allowed on `exp` and `nbf` (s).
    #[arg(long, env = "JWT_CLOCK_SKEW_SECS", default_value_t = 30)]
    pub jwt_clock_skew_secs: u64,
    /// Required `aud` claim, when set.
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Required `iss` claim, when set.
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Longest lifetime a token may have left (`exp` from now, and from `iat` when given); 0 for
    /// no cap.
    #[arg(long, env = "JWT_MAX_LIFETIME_SECS", default_value_t = 0)]
    pub jwt_max_lifetime_secs: u64,
}

/// The model: provider, window, prompts and how long it may take.
#[derive(Debug, Clone, Args)]
pub struct AiConfig {
    /// Where answers come from.
    #[arg(long, env = "AI_PROVIDER", value_enum, default_value_t = AiProvider::Local)]
    pub ai_provider: AiProvider,
    /// Endpoint of the `openai` and `ollama` providers.
    #[arg(long, env = "AI_BASE_URL", hide_env_values = true)]
    pub ai_base_url: Option<String>,
    /// Where Ollama listens (Ollama's own variable), for `ollama` when AI_BASE_URL is unset:
    /// its OpenAI-compatible endpoint is this plus `/v1`.
    #[arg(long, env = "OLLAMA_HOST", hide_env_values = true)]
    pub ollama_host: Option<String>,
    /// API key of the `openai` provider.
    #[arg(long, env = "AI_API_KEY", hide_env_values = true, value_parser = secret)]
    pub ai_api_key: Option<SecretString>,
    /// Model name for the `openai` and `ollama` providers.
    #[arg(long, env = "AI_MODEL")]
    pub ai_model: Option<String>,
    /// Pause between streamed words of the local engine (ms), so demos look like streaming.
    #[arg(long, env = "LOCAL_AI_PACING_MS", default_value_t = 15)]
    pub local_ai_pacing_ms: u64,
    /// Most tokens of post content in a prompt; a longer post keeps its opening and the parts
    /// most relevant to the question.
    #[arg(long, env = "POST_TOKEN_BUDGET", default_value_t = 6_000)]
    pub post_token_budget: usize,
    /// Most tokens an answer (or a post) may take; sent as `max_tokens`. An answer cut there is
    /// stored complete and marked `cut`. Unset: an eighth of the model's window, up to 1024
    /// (`ai::answer_share`), following the window as it is learned.
    #[arg(long, env = "ANSWER_MAX_TOKENS")]
    pub answer_max_tokens: Option<u32>,
    /// The model's context window in tokens; every prompt is built to fit it with room for the
    /// answer. Unset: asked of the provider at start (llama.cpp, vLLM, Ollama, LM Studio) or
    /// learned from a refusal that names it; until then 128000 for `openai`, 4096 for `ollama`
    /// (its default `num_ctx`), 128000 for `local`.
    #[arg(long, env = "MODEL_CONTEXT_TOKENS")]
    pub model_context_tokens: Option<u32>,
    /// How long the intent classifier (real providers only) may take before the rules decide (ms).
    #[arg(long, env = "INTENT_TIMEOUT_MS", default_value_t = 3_000)]
    pub intent_timeout_ms: u64,
    /// Longest an answer may take in all (s).
    #[arg(long, env = "ANSWER_TIMEOUT_SECS", default_value_t = 120)]
    pub answer_timeout_secs: u64,
    /// Longest wait for the first token of an answer (s).
    #[arg(long, env = "FIRST_TOKEN_TIMEOUT_SECS", default_value_t = 30)]
    pub first_token_timeout_secs: u64,
    /// Longest gap between two tokens (s).
    #[arg(long, env = "TOKEN_IDLE_TIMEOUT_SECS", default_value_t = 20)]
    pub token_idle_timeout_secs: u64,
    /// Most answers generated at once; the others wait, after `chat:stream:start`, for one to
    /// finish. 0 for no bound. Unset: 6 per core with the local engine at full speed
    /// (`LOCAL_AI_PACING_MS=0`), whose answers are computed on the server's own cores; no bound
    /// otherwise (see [`Config::answers_generating`]).
    #[arg(long, env = "MAX_ANSWERS_GENERATING")]
    pub max_answers_generating: Option<usize>,
}

/// What one user or address may do, and how fast.
#[derive(Debug, Clone, Args)]
pub struct LimitsConfig {
    /// Per-user `chat:message` rate (per minute); 0 turns the limit off.
    #[arg(long, env = "RATE_LIMIT_MESSAGES_PER_MINUTE", default_value_t = 20)]
    pub rate_limit_messages_per_minute: u32,
    /// Messages a user may send at once before the rate applies.
    #[arg(long, env = "RATE_LIMIT_BURST", default_value_t = 5)]
    pub rate_limit_burst: u32,
    /// New Socket.IO connections per minute from one IP address; 0 turns the limit off.
    #[arg(long, env = "RATE_LIMIT_CONNECTIONS_PER_MINUTE", default_value_t = 120)]
    pub rate_limit_connections_per_minute: u32,
    /// New connections one IP address may open at once before that rate applies.
    #[arg(long, env = "RATE_LIMIT_CONNECTIONS_BURST", default_value_t = 30)]
    pub rate_limit_connections_burst: u32,
    /// Posts one user may create per minute (as many at once); 0 turns the limit off.
    #[arg(long, env = "RATE_LIMIT_POSTS_PER_MINUTE", default_value_t = 10)]
    pub rate_limit_posts_per_minute: u32,
    /// Chat sessions one user may create per minute (as many at once); 0 turns the limit off.
    #[arg(long, env = "RATE_LIMIT_SESSIONS_PER_MINUTE", default_value_t = 30)]
    pub rate_limit_sessions_per_minute: u32,
    /// Pages one user may have fetched (posts given by URL only) per minute; 0 turns it off.
    #[arg(long, env = "RATE_LIMIT_PAGE_FETCHES_PER_MINUTE", default_value_t = 5)]
    pub rate_limit_page_fetches_per_minute: u32,
    /// `chat:join`s one user may send per minute (as many at once); 0 turns the limit off.
    #[arg(long, env = "RATE_LIMIT_JOINS_PER_MINUTE", default_value_t = 60)]
    pub rate_limit_joins_per_minute: u32,
    /// Most sessions one socket may follow at once (joined, or sent a message); a socket at
    /// the cap leaves one (`chat:leave`) before it follows another.
    #[arg(long, env = "MAX_SESSIONS_PER_SOCKET", default_value_t = 50)]
    pub max_sessions_per_socket: usize,
    /// Most sockets one user may hold open at once; 0 for no cap.
    #[arg(long, env = "MAX_SOCKETS_PER_USER", default_value_t = 20)]
    pub max_sockets_per_user: usize,
    /// Model tokens (prompt and completion) one user may spend a day (UTC); 0 for no budget.
    /// Checked before a message and before each further call to the model for it.
    #[arg(long, env = "DAILY_TOKEN_BUDGET", default_value_t = 500_000)]
    pub daily_token_budget: u64,
    /// Most requests to the model for one message (posts asked for one by one, rewrites of
    /// posts over their limit, prompts retried trimmed); past it the answer keeps what it has.
    #[arg(long, env = "MAX_MODEL_CALLS_PER_MESSAGE", default_value_t = 16)]
    pub max_model_calls_per_message: u32,
}

/// Sockets and the answers they watch: sizes, queues, the slow and the absent.
#[derive(Debug, Clone, Args)]
pub struct StreamsConfig {
    /// An answer nobody watches (no socket in its session) for this long is cancelled (s).
    #[arg(long, env = "WATCH_GRACE_SECS", default_value_t = 60)]
    pub watch_grace_secs: u64,
    /// A socket that cannot take tokens for this long is disconnected as a slow consumer (s).
    #[arg(long, env = "SLOW_CONSUMER_SECS", default_value_t = 10)]
    pub slow_consumer_secs: u64,
    /// A socket this many bytes behind (events waiting in its outbox) is a slow consumer too.
    #[arg(long, env = "SLOW_CONSUMER_BYTES", default_value_t = 1 << 20)]
    pub slow_consumer_bytes: usize,
    /// Longest `content` of a chat message (characters).
    #[arg(long, env = "MAX_MESSAGE_CHARS", default_value_t = 8_000)]
    pub max_message_chars: usize,
    /// Largest polling body, websocket message, websocket frame and HTTP JSON body (bytes).
    #[arg(long, env = "MAX_PAYLOAD_BYTES", default_value_t = 64 * 1024)]
    pub max_payload_bytes: usize,
    /// Packets queued per socket; a socket that lets its queue fill is disconnected.
    #[arg(long, env = "SOCKET_QUEUE_PACKETS", default_value_t = 1_024)]
    pub socket_queue_packets: usize,
    /// Bytes a websocket reads at a time; every open connection holds one such buffer, and
    /// what clients send is small (larger messages take several reads).
    #[arg(long, env = "WS_READ_BUFFER_BYTES", default_value_t = 512)]
    pub ws_read_buffer_bytes: usize,
    /// How often Engine.IO pings each connection (ms); told to clients at the handshake.
    #[arg(long, env = "PING_INTERVAL_MS", default_value_t = 25_000)]
    pub ping_interval_ms: u64,
    /// How long a ping waits for its pong before the connection is closed (ms).
    #[arg(long, env = "PING_TIMEOUT_MS", default_value_t = 20_000)]
    pub ping_timeout_ms: u64,
}

/// Sessions: their cache, history and summaries.
#[derive(Debug, Clone, Args)]
pub struct SessionsConfig {
    /// How long a session stays in the session cache (s).
    #[arg(long, env = "SESSION_CACHE_TTL_SECS", default_value_t = 3_600)]
    pub session_cache_ttl_secs: u64,
    /// Most sessions in the session cache.
    #[arg(long, env = "SESSION_CACHE_CAPACITY", default_value_t = 10_000)]
    pub session_cache_capacity: usize,
    /// Earlier exchanges given to the model as context.
    #[arg(long, env = "HISTORY_MESSAGES", default_value_t = 10)]
    pub history_messages: u32,
    /// Exchanges in the `chat:join` ack.
    #[arg(long, env = "JOIN_HISTORY_MESSAGES", default_value_t = 50)]
    pub join_history_messages: u32,
    /// Refresh the session summary every this many exchanges (0: never).
    #[arg(long, env = "SUMMARY_EVERY", default_value_t = 5)]
    pub summary_every: usize,
}

/// Fetching a post's page when only its URL is given.
#[derive(Debug, Clone, Args)]
pub struct PostFetchConfig {
    /// Addresses (or CIDR networks), comma-separated, that post expansion may fetch from besides
    /// public ones; private, loopback and link-local ones are refused otherwise.
    #[arg(long, env = "POST_FETCH_ALLOW", default_value = "")]
    pub post_fetch_allow: String,
    /// Proxy for page fetches (`http://host:port`). Unset: pages are fetched directly, whatever
    /// HTTP_PROXY says, since a proxy resolves and connects by itself, past the address checks.
    #[arg(long, env = "POST_FETCH_PROXY", hide_env_values = true, value_parser = secret)]
    pub post_fetch_proxy: Option<SecretString>,
    /// Largest page post expansion reads (bytes).
    #[arg(long, env = "POST_FETCH_MAX_BYTES", default_value_t = 2 * 1024 * 1024)]
    pub post_fetch_max_bytes: usize,
    /// Longest a page fetch may take, redirects included (ms).
    #[arg(long, env = "POST_FETCH_TIMEOUT_MS", default_value_t = 10_000)]
    pub post_fetch_timeout_ms: u64,
}

/// Which browser origins may connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigins {
    Any,
    List(Vec<String>),
}

impl AllowedOrigins {
    pub fn allows(&self, origin: &str) -> bool {
        match self {
            AllowedOrigins::Any => true,
            AllowedOrigins::List(list) => list.iter().any(|o| o == origin),
        }
    }
}

impl Config {
    /// No JWT_SECRET and no public key: the server makes its own secret and hands out tokens.
    pub fn dev_mode(&self) -> bool {
        self.auth.jwt_secret.is_none() && self.auth.jwt_algorithm == JwtAlgorithmName::Hs256
    }

    /// `DATABASE_URL` (it may hold a password: never printed), or the default SQLite file.
    pub fn database_url(&self) -> SecretString {
        self.database.database_url.clone().unwrap_or_else(|| {
            SecretString::from(format!("sqlite://{}", self.server.data_dir.join("postchat.db").display()))
        })
    }

    pub fn allowed_origins(&self) -> AllowedOrigins {
        match self.server.cors_origins.as_deref().map(str::trim) {
            Some("*") => AllowedOrigins::Any,
            Some(list) => AllowedOrigins::List(
                list.split(',')
                    .map(|o| o.trim().trim_end_matches('/').to_owned())
                    .filter(|o| !o.is_empty())
                    .collect(),
            ),
            None if self.dev_mode() => AllowedOrigins::Any,
            None => AllowedOrigins::List(vec![]),
        }
    }

    /// The bound on answers generated at once (`None`: none), `MAX_ANSWERS_GENERATING` or its
    /// default for the provider: only the local engine at full speed computes answers on the
    /// server's cores, where more answers at once than a few per core only queue the acks
    /// (docs/benchmarks.md measures several bounds per core).
    pub fn answers_generating(&self) -> Option<usize> {
        const PER_CORE: usize = 6;
        match self.ai.max_answers_generating {
            Some(0) => None,
            Some(n) => Some(n),
            None if self.ai.ai_provider == AiProvider::Local && self.ai.local_ai_pacing_ms == 0 => {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                Some(PER_CORE * cores)
            }
            None => None,
        }
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, std::net::AddrParseError> {
        format!("{}:{}", self.server.host, self.server.port)
            .parse()
            .or_else(|_| format!("[{}]:{}", self.server.host, self.server.port).parse())
    }

    /// The cap on a token's remaining lifetime (`JWT_MAX_LIFETIME_SECS`, 0: none).
    pub fn jwt_max_lifetime(&self) -> Option<u64> {
        (self.auth.jwt_max_lifetime_secs > 0).then_some(self.auth.jwt_max_lifetime_secs)
    }

    /// Refuses a number outside the range it works in, naming the variable (nothing is
    /// clamped silently).
    pub fn check_ranges(&self) -> Result<(), String> {
        for (name, value, min, max) in self.numeric_settings() {
            if !(min..=max).contains(&value) {
                return Err(format!("{name}={value}: must be {min} to {max}"));
            }
        }
        self.check_window()
    }

    /// Every numeric setting (set, for the optional ones) with the range it must be in.
    fn numeric_settings(&self) -> Vec<(&'static str, u64, u64, u64)> {
        let (server, db, auth, ai) = (&self.server, &self.database, &self.auth, &self.ai);
        let (limits, streams, sessions) = (&self.limits, &self.streams, &self.sessions);
        let n = |v: usize| v as u64;
        let mut all = vec![
            ("HTTP_HEADER_TIMEOUT_SECS", server.http_header_timeout_secs, 1, 3_600),
            ("SHUTDOWN_GRACE_SECS", server.shutdown_grace_secs, 0, 86_400),
            ("DATABASE_MAX_CONNECTIONS", db.database_max_connections.into(), 1, 1_000),
            ("DATABASE_ACQUIRE_TIMEOUT_MS", db.database_acquire_timeout_ms, 1, 600_000),
            ("DATABASE_STATEMENT_TIMEOUT_MS", db.database_statement_timeout_ms, 0, 3_600_000),
            ("JWT_CLOCK_SKEW_SECS", auth.jwt_clock_skew_secs, 0, 3_600),
            ("JWT_MAX_LIFETIME_SECS", auth.jwt_max_lifetime_secs, 0, 10 * 365 * 86_400),
            ("LOCAL_AI_PACING_MS", ai.local_ai_pacing_ms, 0, 60_000),
            ("POST_TOKEN_BUDGET", n(ai.post_token_budget), 64, 10_000_000),
            ("INTENT_TIMEOUT_MS", ai.intent_timeout_ms, 1, 600_000),
            ("ANSWER_TIMEOUT_SECS", ai.answer_timeout_secs, 1, 86_400),
            ("FIRST_TOKEN_TIMEOUT_SECS", ai.first_token_timeout_secs, 1, 3_600),
            ("TOKEN_IDLE_TIMEOUT_SECS", ai.token_idle_timeout_secs, 1, 3_600),
            ("RATE_LIMIT_MESSAGES_PER_MINUTE", limits.rate_limit_messages_per_minute.into(), 0, 1_000_000),
            ("RATE_LIMIT_BURST", limits.rate_limit_burst.into(), 1, 1_000_000),
            (
                "RATE_LIMIT_CONNECTIONS_PER_MINUTE",
                limits.rate_limit_connections_per_minute.into(),
                0,
                1_000_000,
            ),
            ("RATE_LIMIT_CONNECTIONS_BURST", limits.rate_limit_connections_burst.into(), 1, 1_000_000),
            ("RATE_LIMIT_POSTS_PER_MINUTE", limits.rate_limit_posts_per_minute.into(), 0, 1_000_000),
            ("RATE_LIMIT_SESSIONS_PER_MINUTE", limits.rate_limit_sessions_per_minute.into(), 0, 1_000_000),
            (
                "RATE_LIMIT_PAGE_FETCHES_PER_MINUTE",
                limits.rate_limit_page_fetches_per_minute.into(),
                0,
                1_000_000,
            ),
            ("RATE_LIMIT_JOINS_PER_MINUTE", limits.rate_limit_joins_per_minute.into(), 0, 1_000_000),
            ("MAX_SESSIONS_PER_SOCKET", n(limits.max_sessions_per_socket), 1, 100_000),
            ("MAX_SOCKETS_PER_USER", n(limits.max_sockets_per_user), 0, 1_000_000),
            ("DAILY_TOKEN_BUDGET", limits.daily_token_budget, 0, 1_000_000_000_000),
            ("MAX_MODEL_CALLS_PER_MESSAGE", limits.max_model_calls_per_message.into(), 1, 1_000),
            ("WATCH_GRACE_SECS", streams.watch_grace_secs, 1, 86_400),
            ("SLOW_CONSUMER_SECS", streams.slow_consumer_secs, 1, 3_600),
            ("SLOW_CONSUMER_BYTES", n(streams.slow_consumer_bytes), 1_024, 1 << 30),
            ("MAX_MESSAGE_CHARS", n(streams.max_message_chars), 1, 1_000_000),
            ("MAX_PAYLOAD_BYTES", n(streams.max_payload_bytes), 1_024, 64 << 20),
            ("SOCKET_QUEUE_PACKETS", n(streams.socket_queue_packets), 16, 1_000_000),
            ("WS_READ_BUFFER_BYTES", n(streams.ws_read_buffer_bytes), 256, 16 << 20),
            ("PING_INTERVAL_MS", streams.ping_interval_ms, 100, 3_600_000),
            ("PING_TIMEOUT_MS", streams.ping_timeout_ms, 100, 3_600_000),
            ("SESSION_CACHE_TTL_SECS", sessions.session_cache_ttl_secs, 1, 86_400),
            ("SESSION_CACHE_CAPACITY", n(sessions.session_cache_capacity), 1, 100_000_000),
            ("HISTORY_MESSAGES", sessions.history_messages.into(), 0, 1_000),
            ("JOIN_HISTORY_MESSAGES", sessions.join_history_messages.into(), 0, 1_000),
            ("SUMMARY_EVERY", n(sessions.summary_every), 0, 100_000),
            ("POST_FETCH_MAX_BYTES", n(self.post_fetch.post_fetch_max_bytes), 1_024, 1 << 30),
            ("POST_FETCH_TIMEOUT_MS", self.post_fetch.post_fetch_timeout_ms, 1, 600_000),
        ];
        if let Some(max) = server.max_connections {
            all.push(("MAX_CONNECTIONS", n(max), 1, 10_000_000));
        }
        if let Some(max) = ai.max_answers_generating {
            all.push(("MAX_ANSWERS_GENERATING", n(max), 0, 1_000_000));
        }
        all
    }

    /// The model's context window in tokens to start with: `MODEL_CONTEXT_TOKENS`, else the
    /// provider's usual default (until the provider tells its own).
    pub fn context_tokens(&self) -> u32 {
        self.ai.model_context_tokens.unwrap_or(match self.ai.ai_provider {
            AiProvider::Ollama => 4_096,
            AiProvider::Openai | AiProvider::Local => 128_000,
        })
    }

    /// The window must hold the answer and leave the prompt at least half of it.
    fn check_window(&self) -> Result<(), String> {
        let context_tokens = self.context_tokens();
        if !(512..=10_000_000).contains(&context_tokens) {
            return Err(format!("MODEL_CONTEXT_TOKENS={context_tokens}: must be 512 to 10000000"));
        }
        // Unset, it is a share of the window that always fits (`ai::answer_share`).
        let Some(answer) = self.ai.answer_max_tokens else { return Ok(()) };
        if answer < 16 || answer > context_tokens / 2 {
            return Err(format!(
                "ANSWER_MAX_TOKENS={answer}: must be 16 to half the context window ({} of MODEL_CONTEXT_TOKENS={context_tokens})",
                context_tokens / 2
            ));
        }
        Ok(())
    }

    pub fn local_ai_pacing(&self) -> Duration {
        Duration::from_millis(self.ai.local_ai_pacing_ms)
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    fn parse(args: &[&str]) -> Config {
        let mut all = vec!["postchat"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).unwrap().config
    }

    #[test]
    fn defaults_follow_the_operators_contract() {
        let c = parse(&[]);
        assert_eq!((c.server.host.as_str(), c.server.port), ("127.0.0.1", 3000));
        assert_eq!(c.ai.ai_provider, AiProvider::Local);
        assert!(c.database_url().expose_secret().starts_with("sqlite://"));
        assert_eq!(c.streams.max_payload_bytes, 65_536);
        assert_eq!(c.sessions.session_cache_ttl_secs, 3_600);
    }

    #[test]
    fn origins_are_any_in_dev_mode_and_none_otherwise_unless_listed() {
        assert_eq!(parse(&[]).allowed_origins(), AllowedOrigins::Any);
        assert_eq!(parse(&["--jwt-secret", "s"]).allowed_origins(), AllowedOrigins::List(vec![]));
        let listed = parse(&["--jwt-secret", "s", "--cors-origins", "https://a.example, https://b.example/"]);
        assert!(listed.allowed_origins().allows("https://b.example"));
        assert!(!listed.allowed_origins().allows("https://c.example"));
    }

    #[test]
    fn answers_generating_is_bounded_by_default_only_for_the_local_engine_at_full_speed() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(parse(&[]).answers_generating(), None, "paced local engine: no bound");
        assert_eq!(parse(&["--local-ai-pacing-ms", "0"]).answers_generating(), Some(6 * cores));
        let remote = ["--ai-provider", "openai", "--local-ai-pacing-ms", "0"];
        assert_eq!(parse(&remote).answers_generating(), None);
        assert_eq!(parse(&["--max-answers-generating", "3"]).answers_generating(), Some(3));
        let off = ["--local-ai-pacing-ms", "0", "--max-answers-generating", "0"];
        assert_eq!(parse(&off).answers_generating(), None, "0 turns the bound off");
    }

    #[test]
    fn the_context_window_has_a_default_per_provider_and_refuses_what_cannot_work() {
        let window = |args: &[&str]| parse(args).check_ranges();
        assert_eq!(parse(&[]).context_tokens(), 128_000);
        assert_eq!(parse(&["--ai-provider", "ollama"]).context_tokens(), 4_096);
        assert_eq!(parse(&[]).ai.answer_max_tokens, None, "a share of the window (ai::answer_share)");
        assert_eq!(parse(&["--answer-max-tokens", "100"]).ai.answer_max_tokens, Some(100));
        assert!(window(&[]).is_ok());
        let small = window(&["--model-context-tokens", "1024", "--answer-max-tokens", "1000"]).unwrap_err();
        assert!(small.starts_with("ANSWER_MAX_TOKENS=1000"), "{small}");
        assert!(window(&["--model-context-tokens", "100"])
            .unwrap_err()
            .starts_with("MODEL_CONTEXT_TOKENS=100"));
        assert!(window(&["--answer-max-tokens", "0"]).is_err());
    }

    #[test]
    fn numbers_out_of_range_are_refused_by_name_not_clamped() {
        assert_eq!(parse(&[]).check_ranges(), Ok(()));
        let small_queue = parse(&["--socket-queue-packets", "8"]).check_ranges().unwrap_err();
        assert_eq!(small_queue, "SOCKET_QUEUE_PACKETS=8: must be 16 to 1000000");
        assert!(parse(&["--ws-read-buffer-bytes", "100"])
            .check_ranges()
            .unwrap_err()
            .starts_with("WS_READ_BUFFER_BYTES=100"));
        let eager = parse(&["--ping-interval-ms", "50"]).check_ranges().unwrap_err();
        assert_eq!(eager, "PING_INTERVAL_MS=50: must be 100 to 3600000");
        assert!(parse(&["--ping-timeout-ms", "0"])
            .check_ranges()
            .unwrap_err()
            .starts_with("PING_TIMEOUT_MS=0"));
        assert!(parse(&["--database-max-connections", "0"])
            .check_ranges()
            .unwrap_err()
            .starts_with("DATABASE_MAX_CONNECTIONS=0"));
        assert!(parse(&["--first-token-timeout-secs", "0"]).check_ranges().is_err());
        // A burst of 0 used to become 1 silently.
        let burst = parse(&["--rate-limit-burst", "0"]).check_ranges().unwrap_err();
        assert_eq!(burst, "RATE_LIMIT_BURST=0: must be 1 to 1000000");
        let grace = parse(&["--watch-grace-secs", "0"]).check_ranges().unwrap_err();
        assert_eq!(grace, "WATCH_GRACE_SECS=0: must be 1 to 86400");
        assert!(parse(&["--max-connections", "0"]).check_ranges().is_err());
    }

    #[test]
    fn secrets_never_print() {
        let c = parse(&[
            "--jwt-secret",
            "hunter2-hunter2-hunter2-hunter2-x",
            "--ai-api-key",
            "sk-secret-key",
            "--database-url",
            "postgres://app:pg-password@db/app",
            "--redis-url",
            "redis://:redis-password@cache:6379",
            "--post-fetch-proxy",
            "http://user:proxy-password@proxy:3128",
        ]);
        let printed = format!("{c:?}");
        for secret in ["hunter2", "sk-secret-key", "pg-password", "redis-password", "proxy-password"] {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
    }

    /// `--help` shows the environment's values of settings, except those that can hold a
    /// secret (a URL's password, a key).
    #[test]
    fn help_shows_no_value_that_can_hold_a_secret() {
        use clap::CommandFactory;
        let secret_holders = [
            "JWT_SECRET",
            "AI_API_KEY",
            "DATABASE_URL",
            "REDIS_URL",
            "AI_BASE_URL",
            "OLLAMA_HOST",
            "POST_FETCH_PROXY",
        ];
        for arg in Cli::command().get_arguments() {
            let Some(env) = arg.get_env().and_then(|e| e.to_str()) else { continue };
            if secret_holders.contains(&env) {
                assert!(arg.is_hide_env_values_set(), "{env}: its value would show in --help");
            }
        }
    }

    #[test]
    fn the_token_subcommand_parses() {
        let cli = Cli::try_parse_from(["postchat", "token", "--user", "alice"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Token { ref user, ttl_hours: 24 }) if user == "alice"));
    }
}

#[cfg(test)]
mod readme_tests {
    use clap::CommandFactory;

    use super::Cli;

    /// The README's configuration table: each row's variables (first column) and defaults (last
    /// column), in backticks.
    fn readme_rows() -> Vec<(Vec<String>, Vec<String>)> {
        let ticked =
            |cell: &str| -> Vec<String> { cell.split('`').skip(1).step_by(2).map(str::to_owned).collect() };
        include_str!("../README.md")
            .lines()
            .filter(|line| line.starts_with("| `"))
            .filter_map(|line| {
                let cells: Vec<&str> = line.split(" | ").collect();
                Some((ticked(cells.first()?), ticked(cells.last()?)))
            })
            .collect()
    }

    #[test]
    fn the_readme_lists_every_setting_with_its_default() {
        let rows = readme_rows();
        let mut wrong = Vec::new();
        for arg in Cli::command().get_arguments() {
            let Some(env) = arg.get_env().and_then(|e| e.to_str()) else { continue };
            let Some((names, defaults)) = rows.iter().find(|(names, _)| names.iter().any(|n| n == env))
            else {
                wrong.push(format!("{env}: not in the table"));
                continue;
            };
            // (An empty default reads "empty" there.)
            let Some(default) = arg.get_default_values().first().and_then(|d| d.to_str()) else { continue };
            let at = names.iter().position(|n| n == env).unwrap_or(0);
            if !default.is_empty() && defaults.get(at).map(String::as_str) != Some(default) {
                wrong.push(format!("{env}: {default} in the code, {:?} in the README", defaults.get(at)));
            }
        }
        assert!(wrong.is_empty(), "the README's configuration table is out of date: {wrong:#?}");
    }
}
