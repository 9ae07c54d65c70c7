//! Building the application from its config: store, services, socket and HTTP layers, and the
//! listener. Tests build it on port 0 with a fresh database, exactly as `main` does.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use axum::Router;
use socketioxide::SocketIo;
use tokio::net::TcpListener;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use tracing::info;

use crate::ai::{AiService, AiSettings};
use crate::chat::{ChatController, ChatSessionService, ChatSettings, SessionCache, TokenBudget};
use crate::config::{AllowedOrigins, Config};
use crate::domain::UserId;
use crate::expansion::{AddressPolicy, FetchLimits, PostExpander};
use crate::http::{self, HttpState};
use crate::middleware::auth::{dev_secret, AuthError, JwtAlgorithm, JwtKeys};
use crate::middleware::connection_limit::SocketsPerUser;
use crate::middleware::rate_limit::RateLimit;
use crate::socket::{self, SessionRooms, SlowConsumer, SocketLimits, SocketState};
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
    #[error("REDIS_URL is set, but sharing rooms and streams across processes is not available yet: run one process without REDIS_URL")]
    RedisUnsupported,
    #[error("POST_FETCH_ALLOW: {0}")]
    FetchAllow(String),
    #[error("JWT: {0}")]
    Jwt(#[from] AuthError),
}

/// The JWT keys of this config: a public key for RS256/EdDSA, `JWT_SECRET` for HS256, or in dev
/// mode the secret kept in the data folder.
pub fn jwt_keys(config: &Config) -> Result<JwtKeys, AuthError> {
    let (aud, iss) = (config.jwt_audience.clone(), config.jwt_issuer.clone());
    let algorithm = config.jwt_algorithm.into();
    if algorithm != JwtAlgorithm::Hs256 {
        let path = config
            .jwt_public_key_file
            .as_ref()
            .ok_or_else(|| AuthError::BadKey("JWT_PUBLIC_KEY_FILE is required for RS256 and EdDSA".into()))?;
        let pem = std::fs::read(path)
            .map_err(|e| AuthError::BadKey(format!("cannot read {}: {e}", path.display())))?;
        return Ok(
            JwtKeys::public_key(algorithm, &pem, aud, iss)?.with_clock_skew(config.jwt_clock_skew_secs)
        );
    }
    let secret = match &config.jwt_secret {
        Some(secret) => secret.as_bytes().to_vec(),
        None => dev_secret(&config.data_dir)
            .map_err(|e| AuthError::BadKey(format!("cannot keep the dev secret: {e}")))?,
    };
    Ok(JwtKeys::hs256(&secret, aud, iss).with_clock_skew(config.jwt_clock_skew_secs))
}

/// A built server, bound and ready to run.
pub struct Application {
    listener: TcpListener,
    router: Router,
    io: SocketIo,
    controller: Arc<ChatController>,
    store: Arc<dyn Store>,
    grace: Duration,
    /// In dev mode, a token for user `demo`.
    pub demo_token: Option<String>,
}

impl Application {
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        crate::telemetry::metrics();
        if config.redis_url.is_some() {
            return Err(StartupError::RedisUnsupported);
        }
        let ai_settings = AiSettings {
            post_token_budget: config.post_token_budget,
            intent_timeout: Duration::from_millis(config.intent_timeout_ms),
        };
        let ai = match config.ai_endpoint() {
            None => AiService::local(config.local_ai_pacing(), ai_settings),
            Some(endpoint) => AiService::openai_compatible(&endpoint, ai_settings),
        };
        info!(provider = ?config.ai_provider, model = ai.model(), "AI service ready");
        let pool = PoolOptions {
            max_connections: config.database_max_connections.max(1),
            acquire_timeout: Duration::from_millis(config.database_acquire_timeout_ms),
            statement_timeout: Duration::from_millis(config.database_statement_timeout_ms),
        };
        let store = store::connect(&config.database_url(), &pool).await?;
        let interrupted = store.interrupt_streaming().await?;
        if interrupted > 0 {
            info!(interrupted, "answers left streaming by the last run are marked interrupted");
        }

        let keys = Arc::new(jwt_keys(&config)?);
        let cache = SessionCache::new(
            config.session_cache_capacity,
            Duration::from_secs(config.session_cache_ttl_secs),
        );
        let sessions = Arc::new(ChatSessionService::new(store.clone(), cache, config.history_messages));

        let limits = SocketLimits {
            max_payload_bytes: config.max_payload_bytes,
            queue_packets: config.socket_queue_packets.max(16),
            ws_read_buffer_bytes: config.ws_read_buffer_bytes.max(256),
            max_message_chars: config.max_message_chars,
        };
        let (socket_layer, io) = socket::layer(&limits);
        let controller = ChatController::new(
            sessions.clone(),
            ai,
            Arc::new(SessionRooms::new(
                io.clone(),
                SlowConsumer {
                    after: Duration::from_secs(config.slow_consumer_secs),
                    bytes: config.slow_consumer_bytes,
                },
            )),
            ChatSettings {
                answer_timeout: Duration::from_secs(config.answer_timeout_secs),
                first_token_timeout: Duration::from_secs(config.first_token_timeout_secs),
                token_idle_timeout: Duration::from_secs(config.token_idle_timeout_secs),
                summary_every: config.summary_every,
                join_history: config.join_history_messages,
                watch_grace: Duration::from_secs(config.watch_grace_secs),
                answers_generating: config.answers_generating(),
            },
            TokenBudget::new(config.daily_token_budget),
        );
        let message_limit =
            Arc::new(RateLimit::new(config.rate_limit_messages_per_minute, config.rate_limit_burst));
        spawn_rate_limit_cleanup(message_limit.clone());
        let socket_state = SocketState {
            controller: controller.clone(),
            message_limit,
            sockets_per_user: SocketsPerUser::new(config.max_sockets_per_user),
            limits,
        };
        socket::register(&io, Arc::new(socket_state), keys.clone());

        let origins = config.allowed_origins();
        let handshakes_per_ip = Arc::new(RateLimit::new(
            config.rate_limit_connections_per_minute,
            config.rate_limit_connections_burst,
        ));
        spawn_rate_limit_cleanup(handshakes_per_ip.clone());
        let policy = AddressPolicy::parse(&config.post_fetch_allow).map_err(StartupError::FetchAllow)?;
        let expander = Arc::new(PostExpander::new(
            policy,
            FetchLimits {
                max_bytes: config.post_fetch_max_bytes,
                timeout: Duration::from_millis(config.post_fetch_timeout_ms),
                max_redirects: 5,
            },
        ));
        let http_state = HttpState { sessions, expander, keys: keys.clone(), dev_tokens: config.dev_mode() };
        let router = http::router(http_state, config.max_payload_bytes)
            .layer(socket_layer)
            .layer(axum::middleware::from_fn(socket::keep_socket_head))
            .layer(axum::middleware::from_fn({
                let origins = origins.clone();
                move |req, next| check_origin(origins.clone(), req, next)
            }))
            .layer(axum::middleware::from_fn(move |req, next| {
                limit_handshakes(handshakes_per_ip.clone(), req, next)
            }))
            .layer(cors(&origins))
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
                tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id = %id)
            }))
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid));

        let demo_token = if config.dev_mode() {
            Some(keys.issue(&UserId::parse("demo").expect("'demo' is a valid user id"), 24 * 3600)?)
        } else {
            None
        };
        let listener = TcpListener::bind(config.listen_addr()?).await?;
        Ok(Self {
            listener,
            router,
            io,
            controller,
            store,
            grace: Duration::from_secs(config.shutdown_grace_secs),
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
        let Self { listener, router, io, controller, store, grace, .. } = self;
        let drained = {
            let controller = controller.clone();
            async move {
                shutdown.await;
                controller.drain(grace).await;
                io.close().await;
            }
        };
        // Without TCP_NODELAY, an event sent right after another (the ack, then
        // `chat:stream:start`) waits for the client's delayed ACK: 40 ms on Linux.
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "TCP_NODELAY not set");
            }
        });
        axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(drained)
            .await?;
        store.close().await;
        info!("stopped");
        Ok(())
    }
}

/// Every minute, forgets keys whose rate allowance is full again.
fn spawn_rate_limit_cleanup<K: std::hash::Hash + Eq + Clone + Send + Sync + 'static>(
    limit: Arc<RateLimit<K>>,
) {
    let weak = Arc::downgrade(&limit);
    drop(limit);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            // Ends with the server: the limiter is dropped with it.
            let Some(limit) = weak.upgrade() else { break };
            limit.forget_idle();
        }
    });
}

fn cors(origins: &AllowedOrigins) -> CorsLayer {
    let allow = match origins {
        AllowedOrigins::Any => AllowOrigin::any(),
        AllowedOrigins::List(list) => {
            AllowOrigin::list(list.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
        }
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
}

/// New Socket.IO connections (handshakes: no `sid` yet) per client IP address; requests of
/// established connections pass. Over the limit: 429 with `RATE_LIMITED` and `Retry-After`.
async fn limit_handshakes(limit: Arc<RateLimit<IpAddr>>, req: Request, next: Next) -> Response {
    let is_handshake =
        req.uri().path().starts_with("/socket.io") && !req.uri().query().unwrap_or("").contains("sid=");
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    if let (true, Some(ip)) = (is_handshake, peer) {
        if let Err(wait) = limit.check(&ip) {
            let retry_after_ms = wait.as_millis().max(1) as u64;
            let body = serde_json::json!({ "error": {
                "code": "RATE_LIMITED",
                "message": "too many new connections from this address",
                "retryAfterMs": retry_after_ms,
            }});
            let retry_secs = retry_after_ms.div_ceil(1000).to_string();
            return (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, retry_secs)], axum::Json(body))
                .into_response();
        }
    }
    next.run(req).await
}

/// CORS does not cover the websocket upgrade (nor a non-browser polling client that sends an
/// Origin): a Socket.IO request from an origin not allowed is refused before any socket exists.
async fn check_origin(origins: AllowedOrigins, req: Request, next: Next) -> Response {
    if req.uri().path().starts_with("/socket.io") {
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            let allowed = origin.to_str().is_ok_and(|o| origins.allows(o));
            if !allowed {
                return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
            }
        }
    }
    next.run(req).await
}
