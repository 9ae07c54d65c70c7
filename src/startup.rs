//! Building the application from its config: store, services, socket and HTTP layers, and the
//! listener. Tests build it on port 0 with a fresh database, exactly as `main` does.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use secrecy::{ExposeSecret, SecretString};
use socketioxide::SocketIo;
use tokio::net::TcpListener;
use tracing::info;

use crate::ai::{AiService, AiSettings, Endpoint, ModelWindow};
use crate::auth::{dev_secret, AuthError, JwtAlgorithm, JwtKeys, MIN_SECRET_BYTES};
use crate::chat::{
    AnswerAudience, AnswerSettings, CacheVersions, ChatController, ChatParts, ChatSessionService,
    ChatSettings, InFlightAnswers, OneProcess, PostService, PreferenceService, RateAsk, SessionCache,
    SpentHere, SpentTokens, TokenBudget,
};
use crate::cluster::{Cluster, Started};
use crate::config::{AiProvider, Config, JwtAlgorithmName};
use crate::domain::{Networks, UserId};
use crate::expansion::{AddressPolicy, FetchLimits, PostExpander};
use crate::http::client_address::TrustedProxies;
use crate::http::connections::{self, ConnectionSettings};
use crate::http::{self, Dependency, HttpState, WriteQuotas};
use crate::limits::{self, CountedHere, RateLimit, SharedCounts, SocketsPerUser};
use crate::socket::{self, SessionRooms, SlowConsumer, SocketLimits, SocketState, TokenExpiries};
use crate::store::{self, PoolOptions, Store, StoreError};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("cannot listen: {0}")]
    Listen(#[from] std::io::Error),
    #[error("invalid HOST/PORT: {0}")]
    Address(#[from] std::net::AddrParseError),
    #[error("cluster mode: {0}")]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("POST_FETCH_ALLOW: {0}")]
    FetchAllow(String),
    #[error("JWT: {0}")]
    Jwt(#[from] AuthError),
    #[error(
        "dev mode (no JWT_SECRET) gives a token for any user to anyone who asks, and HOST={0} is \
         reachable from the network: set JWT_SECRET (32 bytes or more), or listen on 127.0.0.1, \
         or set INSECURE_DEV_MODE_ON_NETWORK=true to accept that anyone reaching the port can act \
         as any user"
    )]
    DevModeOnNetwork(IpAddr),
    #[error("{0}")]
    Setting(String),
}

/// The JWT keys of this config: a public key for RS256/EdDSA, `JWT_SECRET` for HS256, or in dev
/// mode the secret kept in the data folder.
pub fn jwt_keys(config: &Config) -> Result<JwtKeys, AuthError> {
    let (aud, iss) = (config.auth.jwt_audience.clone(), config.auth.jwt_issuer.clone());
    let algorithm = jwt_algorithm(config.auth.jwt_algorithm);
    if algorithm != JwtAlgorithm::Hs256 {
        let path =
            config.auth.jwt_public_key_file.as_ref().ok_or_else(|| {
                AuthError::BadKey("JWT_PUBLIC_KEY_FILE is required for RS256 and EdDSA".into())
            })?;
        let pem = std::fs::read(path)
            .map_err(|e| AuthError::BadKey(format!("cannot read {}: {e}", path.display())))?;
        return Ok(JwtKeys::public_key(algorithm, &pem, aud, iss)?
            .with_clock_skew(config.auth.jwt_clock_skew_secs)
            .with_max_lifetime(config.jwt_max_lifetime()));
    }
    let secret = match config.auth.jwt_secret.as_ref().map(|s| s.expose_secret()) {
        Some(secret) if secret.len() < MIN_SECRET_BYTES => {
            return Err(AuthError::BadKey(format!(
                "JWT_SECRET is {} bytes; HS256 needs at least {MIN_SECRET_BYTES} (RFC 7518, section \
                 3.2): make one with `openssl rand -hex 32`",
                secret.len()
            )))
        }
        Some(secret) => secret.as_bytes().to_vec(),
        None => dev_secret(&config.server.data_dir)
            .map_err(|e| AuthError::BadKey(format!("cannot keep the dev secret: {e}")))?,
    };
    Ok(JwtKeys::hs256(&secret, aud, iss)
        .with_clock_skew(config.auth.jwt_clock_skew_secs)
        .with_max_lifetime(config.jwt_max_lifetime()))
}

/// A built server, bound and ready to run.
pub struct Application {
    listener: TcpListener,
    router: Router,
    connections: ConnectionSettings,
    io: SocketIo,
    controller: Arc<ChatController>,
    store: Arc<dyn Store>,
    grace: Duration,
    /// Cluster mode: shutdown hands the sockets to the other processes first.
    cluster: Option<Arc<Cluster>>,
    /// In dev mode, a token for user `demo`.
    pub demo_token: Option<String>,
}

impl Application {
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        // Every setting is checked before the database is touched.
        refuse_unsafe_settings(&config)?;
        let keys = Arc::new(jwt_keys(&config)?);
        let connections = connection_settings(&config)?;
        crate::telemetry::spawn_metrics_upkeep();
        let ai = ai_service(&config).await?;
        let inflight = Arc::new(InFlightAnswers::default());
        let others = OtherProcesses::of(join_cluster(&config, &inflight).await?);
        let store = open_store(&config, others.cluster.is_some()).await?;
        let chat = ChatServices::new(&config, store.clone(), &others);
        let limits = socket_limits(&config);
        let (socket_layer, io) = socket::layer(&limits);
        let controller = chat_controller(&config, chat.sessions.clone(), ai, &io, inflight, &others);
        register_sockets(&config, &io, controller.clone(), limits, keys.clone(), &others.counts);
        let router = with_request_layers(
            http::router(http_state(&config, chat, keys.clone(), &others)?, config.streams.max_payload_bytes)
                .layer(socket_layer),
            &config,
            &others.counts,
        );
        let demo_token = config.dev_mode().then(|| demo_token(&keys)).transpose()?;
        let listener = TcpListener::bind(config.listen_addr()?).await?;
        Ok(Self {
            listener,
            router,
            connections,
            io,
            controller,
            store,
            grace: Duration::from_secs(config.server.shutdown_grace_secs),
            cluster: others.cluster,
            demo_token,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Serves until `shutdown` resolves, then: refuse new messages, let answers finish within
    /// the grace period, end the rest with SERVER_SHUTDOWN (stored), close every socket, and
    /// close the database. axum alone would not wait for socket tasks.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let Self { listener, router, connections, io, controller, store, grace, cluster, .. } = self;
        let close_listener = tokio_util::sync::CancellationToken::new();
        let (listener_closed, closed) = tokio::sync::oneshot::channel();
        let drained = {
            let (controller, close_listener) = (controller.clone(), close_listener.clone());
            async move {
                shutdown.await;
                if cluster.is_some() {
                    // A rolling restart: new connections go to the other processes, and these
                    // sockets' clients reconnect there (a closed transport, not a disconnect
                    // packet, which clients do not reconnect after) and resume from the
                    // session streams, while the answers generated here go on.
                    info!("draining: sockets sent to the other processes, answers finishing");
                    controller.stop_accepting();
                    close_listener.cancel();
                    // Closed before the clients reconnect, so none reconnects here.
                    let _ = closed.await;
                    io.close().await;
                }
                controller.drain(grace).await;
                if let Some(cluster) = &cluster {
                    cluster.flushed(grace).await;
                }
                io.close().await;
            }
        };
        let stop_accepting = close_listener.cancelled_owned();
        http::connections::serve(listener, router, connections, stop_accepting, listener_closed, drained)
            .await;
        store.close().await;
        info!("stopped");
        Ok(())
    }
}

fn socket_limits(config: &Config) -> SocketLimits {
    SocketLimits {
        max_payload_bytes: config.streams.max_payload_bytes,
        queue_packets: config.streams.socket_queue_packets,
        ws_read_buffer_bytes: config.streams.ws_read_buffer_bytes,
        ping_interval: Duration::from_millis(config.streams.ping_interval_ms),
        ping_timeout: Duration::from_millis(config.streams.ping_timeout_ms),
        max_message_chars: config.streams.max_message_chars,
        max_sessions_per_socket: config.limits.max_sessions_per_socket,
    }
}

/// Dev mode's token for user `demo`, printed at start.
fn demo_token(keys: &JwtKeys) -> Result<String, AuthError> {
    keys.issue(&UserId::parse("demo").expect("'demo' is a valid user id"), 24 * 3600)
}

/// The one algorithm tokens may use, as the auth layer names it.
fn jwt_algorithm(name: JwtAlgorithmName) -> JwtAlgorithm {
    match name {
        JwtAlgorithmName::Hs256 => JwtAlgorithm::Hs256,
        JwtAlgorithmName::Rs256 => JwtAlgorithm::Rs256,
        JwtAlgorithmName::EdDsa => JwtAlgorithm::EdDsa,
    }
}

/// The endpoint of an `openai` or `ollama` provider (`None` for `local`), with each
/// provider's defaults for what is not set.
fn ai_endpoint(config: &Config) -> Option<Endpoint> {
    let ai = &config.ai;
    let (base, model, key) = match ai.ai_provider {
        AiProvider::Local => return None,
        AiProvider::Openai => (Endpoint::OPENAI_BASE_URL, Endpoint::OPENAI_MODEL, ""),
        // Ollama ignores the key, but the OpenAI client wants one.
        AiProvider::Ollama => (Endpoint::OLLAMA_BASE_URL, Endpoint::OLLAMA_MODEL, "ollama"),
    };
    let ollama_host = match ai.ai_provider {
        AiProvider::Ollama => {
            ai.ollama_host.as_ref().map(|host| format!("{}/v1", host.trim_end_matches('/')))
        }
        _ => None,
    };
    Some(Endpoint {
        base_url: ai.ai_base_url.clone().or(ollama_host).unwrap_or_else(|| base.to_owned()),
        api_key: ai.ai_api_key.clone().unwrap_or_else(|| SecretString::from(key)),
        model: ai.ai_model.clone().unwrap_or_else(|| model.to_owned()),
    })
}

/// Settings the server refuses to start with: out-of-range values, or dev mode (tokens for
/// anyone who asks) reachable from the network without the operator saying so.
fn refuse_unsafe_settings(config: &Config) -> Result<(), StartupError> {
    config.check_ranges().map_err(StartupError::Setting)?;
    if config.server.redis_url.is_some() && !config.database_url().expose_secret().starts_with("postgres") {
        // The default SQLite file is each process's own: processes that do not share their
        // sessions cannot act as one server.
        return Err(StartupError::Setting(
            "REDIS_URL (cluster mode) needs a DATABASE_URL every process shares: postgres://...".into(),
        ));
    }
    let ip = config.listen_addr()?.ip();
    if config.dev_mode() && !ip.is_loopback() && !config.server.insecure_dev_mode_on_network {
        return Err(StartupError::DevModeOnNetwork(ip));
    }
    Ok(())
}

/// The bounds on client connections and the trusted proxies; the open-files limit is raised
/// to its hard limit first, and `MAX_CONNECTIONS` must leave a twentieth of it (at least 64)
/// for everything else.
fn connection_settings(config: &Config) -> Result<ConnectionSettings, StartupError> {
    let fd_limit = connections::raise_fd_limit();
    let most = fd_limit.saturating_sub(connections::reserved_descriptors(fd_limit)).max(1);
    let max_open = match config.server.max_connections {
        None => most,
        Some(n) if n >= 1 && n as u64 <= most => n as u64,
        Some(n) => {
            return Err(StartupError::Setting(format!(
                "MAX_CONNECTIONS={n}: must be 1 to {most} (the open-files limit is {fd_limit}; the \
                 rest is kept for the database, page fetches and the model provider)"
            )))
        }
    };
    info!(max_connections = max_open, fd_limit, "client connections bounded");
    let trusted = Networks::parse(&config.server.trusted_proxies)
        .map_err(|e| StartupError::Setting(format!("TRUSTED_PROXIES: {e}")))?;
    Ok(ConnectionSettings {
        max_open: usize::try_from(max_open).unwrap_or(usize::MAX),
        header_timeout: Duration::from_secs(config.server.http_header_timeout_secs),
        trusted_proxies: TrustedProxies::new(trusted),
    })
}

/// The AI service, with the window the provider serves the model with (asked at start, and
/// every few minutes after: a server restarted with another window is followed).
async fn ai_service(config: &Config) -> Result<AiService, StartupError> {
    let started = std::time::Instant::now();
    crate::ai::train_intent_classifier();
    info!(took_ms = started.elapsed().as_millis() as u64, "intent classifier trained");
    // In range: `check_ranges` ran first.
    let window = Arc::new(ModelWindow::new(
        config.ai.model_context_tokens,
        config.context_tokens(),
        config.ai.answer_max_tokens,
    ));
    let ai_settings = AiSettings {
        post_token_budget: config.ai.post_token_budget,
        window: window.clone(),
        intent_timeout: Duration::from_millis(config.ai.intent_timeout_ms),
        first_token_timeout: Duration::from_secs(config.ai.first_token_timeout_secs),
        token_idle_timeout: Duration::from_secs(config.ai.token_idle_timeout_secs),
    };
    let endpoint = ai_endpoint(config);
    let asks_window = endpoint.is_some() && config.ai.model_context_tokens.is_none();
    let ai = match endpoint {
        None => AiService::local(config.local_ai_pacing(), ai_settings),
        Some(endpoint) => AiService::openai_compatible(&endpoint, ai_settings),
    };
    if asks_window {
        if ai.learn_window().await {
            check_learned_window(config, &window)?;
        }
        keep_learning_window(ai.clone());
    }
    let current = window.current();
    info!(
        provider = ?config.ai.ai_provider,
        model = ai.model(),
        context_tokens = current.context_tokens,
        from = window.source().as_str(),
        answer_max_tokens = current.answer_tokens,
        "AI service ready"
    );
    Ok(ai)
}

/// `ANSWER_MAX_TOKENS` must leave the prompt half of the window the provider reported.
fn check_learned_window(config: &Config, window: &ModelWindow) -> Result<(), StartupError> {
    let context_tokens = window.current().context_tokens;
    match config.ai.answer_max_tokens {
        Some(answer) if answer > context_tokens / 2 => Err(StartupError::Setting(format!(
            "ANSWER_MAX_TOKENS={answer}: must be at most half the model's window ({} of {context_tokens}, from {})",
            context_tokens / 2,
            window.source().as_str()
        ))),
        _ => Ok(()),
    }
}

/// How often the provider is asked its window again.
const WINDOW_ASKED_EVERY: Duration = Duration::from_secs(300);

fn keep_learning_window(ai: AiService) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(WINDOW_ASKED_EVERY).await;
            ai.learn_window().await;
        }
    });
}

/// This process's view of the other processes: the ports of chat/, limits/ and http/, over
/// Redis in cluster mode (`REDIS_URL`), trivial in one process. Chosen once, here.
struct OtherProcesses {
    cluster: Option<Arc<Cluster>>,
    versions: Arc<dyn CacheVersions>,
    spent: Arc<dyn SpentTokens>,
    counts: Arc<dyn SharedCounts>,
    dependencies: Arc<[Arc<dyn Dependency>]>,
}

impl OtherProcesses {
    fn of(cluster: Option<Arc<Cluster>>) -> Self {
        match cluster {
            None => Self {
                cluster: None,
                versions: Arc::new(OneProcess),
                spent: Arc::new(SpentHere::default()),
                counts: Arc::new(CountedHere),
                dependencies: Arc::new([]),
            },
            Some(cluster) => Self {
                versions: cluster.clone(),
                spent: cluster.clone(),
                counts: cluster.clone(),
                dependencies: Arc::new([cluster.clone() as Arc<dyn Dependency>]),
                cluster: Some(cluster),
            },
        }
    }

    /// The chat's ports that need its services: where answers go, leases, other watchers.
    fn start(
        &self,
        inflight: &Arc<InFlightAnswers>,
        rooms: Arc<dyn AnswerAudience>,
        sessions: &Arc<ChatSessionService>,
    ) -> Started {
        match &self.cluster {
            None => Started { audience: rooms, leases: Arc::new(OneProcess), watchers: Arc::new(OneProcess) },
            Some(cluster) => cluster.start(inflight.clone(), rooms, sessions.clone()),
        }
    }
}

/// Cluster mode's Redis connection, when `REDIS_URL` is set.
async fn join_cluster(
    config: &Config,
    inflight: &Arc<InFlightAnswers>,
) -> Result<Option<Arc<Cluster>>, StartupError> {
    let Some(url) = &config.server.redis_url else { return Ok(None) };
    // A session's stream outlives its last answer long enough for any reader to finish it.
    let keep = Duration::from_secs(config.ai.answer_timeout_secs.max(3_600) + 600);
    let resume = config.server.resume_answers_on_process_death;
    let prefix = &config.server.redis_prefix;
    Ok(Some(Cluster::connect(url.expose_secret(), prefix, inflight.clone(), keep, resume).await?))
}

/// The store, migrated, with the answers a crash left `streaming` marked `interrupted`. In
/// cluster mode only those older than any answer can last: the others may be other processes'
/// answers in flight (a dead process's are swept through their leases).
async fn open_store(config: &Config, cluster: bool) -> Result<Arc<dyn Store>, StartupError> {
    let pool = PoolOptions {
        max_connections: config.database.database_max_connections,
        acquire_timeout: Duration::from_millis(config.database.database_acquire_timeout_ms),
        statement_timeout: Duration::from_millis(config.database.database_statement_timeout_ms),
    };
    let store = store::connect(config.database_url().expose_secret(), &pool).await?;
    let mut before = crate::domain::now();
    if cluster {
        before -= chrono::Duration::seconds(
            i64::try_from(config.ai.answer_timeout_secs).unwrap_or(i64::MAX / 2) + 60,
        );
    }
    let interrupted = store.interrupt_streaming(before).await?;
    if interrupted > 0 {
        info!(interrupted, "answers left streaming by the last run are marked interrupted");
    }
    Ok(store)
}

fn chat_controller(
    config: &Config,
    sessions: Arc<ChatSessionService>,
    ai: AiService,
    io: &SocketIo,
    inflight: Arc<InFlightAnswers>,
    others: &OtherProcesses,
) -> Arc<ChatController> {
    let slow_consumer = SlowConsumer {
        after: Duration::from_secs(config.streams.slow_consumer_secs),
        bytes: config.streams.slow_consumer_bytes,
    };
    let settings = ChatSettings {
        answers: AnswerSettings {
            answer_timeout: Duration::from_secs(config.ai.answer_timeout_secs),
            watch_grace: Duration::from_secs(config.streams.watch_grace_secs),
            summary_every: config.sessions.summary_every,
            max_model_calls: config.limits.max_model_calls_per_message,
            resume_answers: others.cluster.is_some() && config.server.resume_answers_on_process_death,
        },
        join_history: config.sessions.join_history_messages,
        answers_generating: config.answers_generating(),
        // Across processes a message is counted by its admission (in the claim's round trip);
        // the socket layer counts it in its process either way.
        message_rate: (config.limits.rate_limit_messages_per_minute > 0).then_some(RateAsk {
            per_minute: config.limits.rate_limit_messages_per_minute,
            burst: config.limits.rate_limit_burst,
        }),
    };
    let rooms: Arc<dyn AnswerAudience> = Arc::new(SessionRooms::new(io.clone(), slow_consumer));
    let Started { audience, leases, watchers } = others.start(&inflight, rooms, &sessions);
    let budget = TokenBudget::new(config.limits.daily_token_budget, others.spent.clone());
    let parts = ChatParts { sessions, ai, audience, inflight, budget, leases, watchers };
    let controller = ChatController::new(parts, settings);
    if let Some(cluster) = &others.cluster {
        cluster.resume_with(&controller);
    }
    controller
}

/// The socket events, behind the per-user limits and the token expiry sweep.
fn register_sockets(
    config: &Config,
    io: &SocketIo,
    controller: Arc<ChatController>,
    limits: SocketLimits,
    keys: Arc<JwtKeys>,
    counts: &Arc<dyn SharedCounts>,
) {
    // Counted in this process, before a message is even read, so that messages refused before
    // their admission (unreadable, not the user's session, `BUSY`) are limited too; across
    // processes the admission counts the rest (`ChatSettings::message_rate`).
    let message_limit = Arc::new(RateLimit::new(
        config.limits.rate_limit_messages_per_minute,
        config.limits.rate_limit_burst,
    ));
    limits::spawn_cleanup(message_limit.clone());
    let per_minute = config.limits.rate_limit_joins_per_minute;
    let join_limit = Arc::new(RateLimit::new(per_minute, per_minute).shared(counts, "joins"));
    limits::spawn_cleanup(join_limit.clone());
    let token_expiries = Arc::new(TokenExpiries::default());
    token_expiries.spawn_sweep(io.clone());
    let socket_state = SocketState {
        controller,
        message_limit,
        join_limit,
        sockets_per_user: SocketsPerUser::new(config.limits.max_sockets_per_user, counts.clone()),
        token_expiries,
        limits,
    };
    socket::register(io, Arc::new(socket_state), keys);
}

/// The services of the chat layer, over one store and one cache.
struct ChatServices {
    sessions: Arc<ChatSessionService>,
    posts: Arc<PostService>,
    preferences: Arc<PreferenceService>,
}

impl ChatServices {
    fn new(config: &Config, store: Arc<dyn Store>, others: &OtherProcesses) -> Self {
        let ttl = Duration::from_secs(config.sessions.session_cache_ttl_secs);
        let cache = Arc::new(SessionCache::new(config.sessions.session_cache_capacity, ttl));
        let posts = Arc::new(PostService::new(store.clone()));
        let preferences =
            Arc::new(PreferenceService::new(store.clone(), cache.clone(), others.versions.clone()));
        let sessions = ChatSessionService::new(
            store,
            cache,
            posts.clone(),
            preferences.clone(),
            config.sessions.history_messages,
            others.versions.clone(),
        );
        Self { sessions: Arc::new(sessions), posts, preferences }
    }
}

fn http_state(
    config: &Config,
    chat: ChatServices,
    keys: Arc<JwtKeys>,
    others: &OtherProcesses,
) -> Result<HttpState, StartupError> {
    let policy =
        AddressPolicy::parse(&config.post_fetch.post_fetch_allow).map_err(StartupError::FetchAllow)?;
    let proxy = match &config.post_fetch.post_fetch_proxy {
        None => None,
        Some(raw) => Some(
            reqwest::Url::parse(raw.expose_secret())
                .map_err(|e| StartupError::Setting(format!("POST_FETCH_PROXY: {e}")))?,
        ),
    };
    let limits = FetchLimits {
        max_bytes: config.post_fetch.post_fetch_max_bytes,
        timeout: Duration::from_millis(config.post_fetch.post_fetch_timeout_ms),
        max_redirects: 5,
        proxy,
    };
    // Each user's quota is its rate per minute, as many at once.
    let quota = |per_minute: u32, name: &'static str| {
        let limit = Arc::new(RateLimit::new(per_minute, per_minute).shared(&others.counts, name));
        limits::spawn_cleanup(limit.clone());
        limit
    };
    let quotas = WriteQuotas {
        posts: quota(config.limits.rate_limit_posts_per_minute, "posts"),
        sessions: quota(config.limits.rate_limit_sessions_per_minute, "sessions"),
        page_fetches: quota(config.limits.rate_limit_page_fetches_per_minute, "page-fetches"),
    };
    Ok(HttpState {
        sessions: chat.sessions,
        posts: chat.posts,
        preferences: chat.preferences,
        expander: Arc::new(PostExpander::new(policy, limits)),
        keys,
        dev_tokens: config.dev_mode(),
        quotas: Arc::new(quotas),
        dependencies: others.dependencies.clone(),
    })
}

/// What every request passes through: the HTTP layers (`http::request_layers`) with the
/// handshake limit per address from the config.
fn with_request_layers(router: Router, config: &Config, counts: &Arc<dyn SharedCounts>) -> Router {
    let handshakes_per_ip = Arc::new(
        RateLimit::new(
            config.limits.rate_limit_connections_per_minute,
            config.limits.rate_limit_connections_burst,
        )
        .shared(counts, "handshakes"),
    );
    limits::spawn_cleanup(handshakes_per_ip.clone());
    http::request_layers::wrap(router, config.allowed_origins(), handshakes_per_ip)
}
