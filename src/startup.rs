//! Building the application from its config: store, services, socket and HTTP layers, and the
//! listener. Tests build it on port 0 with a fresh database, exactly as `main` does.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use socketioxide::SocketIo;
use tokio::net::TcpListener;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;
use tracing::info;

use crate::ai::{AiService, AiSettings};
use crate::chat::{ChatController, ChatSessionService, ChatSettings, SessionCache};
use crate::config::{AllowedOrigins, Config};
use crate::domain::UserId;
use crate::http::{self, HttpState};
use crate::middleware::auth::{dev_secret, JwtKeys};
use crate::middleware::rate_limit::MessageRateLimit;
use crate::socket::{self, SessionRooms, SocketLimits, SocketState};
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
    #[error("cannot issue the dev token: {0}")]
    DevToken(#[from] jsonwebtoken::errors::Error),
}

/// The JWT keys of this config: `JWT_SECRET`, or the dev secret kept in the data folder.
pub fn jwt_keys(config: &Config) -> std::io::Result<JwtKeys> {
    let secret = match &config.jwt_secret {
        Some(secret) => secret.as_bytes().to_vec(),
        None => dev_secret(&config.data_dir)?,
    };
    Ok(JwtKeys::hs256(&secret, config.jwt_audience.clone(), config.jwt_issuer.clone()))
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
            max_message_chars: config.max_message_chars,
        };
        let (socket_layer, io) = socket::layer(&limits);
        let controller = ChatController::new(
            sessions.clone(),
            ai,
            Arc::new(SessionRooms::new(io.clone(), Duration::from_secs(config.slow_consumer_secs))),
            ChatSettings {
                answer_timeout: Duration::from_secs(config.answer_timeout_secs),
                first_token_timeout: Duration::from_secs(config.first_token_timeout_secs),
                token_idle_timeout: Duration::from_secs(config.token_idle_timeout_secs),
                summary_every: config.summary_every,
                join_history: config.join_history_messages,
                watch_grace: Duration::from_secs(config.watch_grace_secs),
            },
        );
        let rate_limit =
            Arc::new(MessageRateLimit::new(config.rate_limit_messages_per_minute, config.rate_limit_burst));
        spawn_rate_limit_cleanup(rate_limit.clone());
        let socket_state = SocketState { controller: controller.clone(), rate_limit, limits };
        socket::register(&io, Arc::new(socket_state), keys.clone());

        let origins = config.allowed_origins();
        let http_state = HttpState { sessions, keys: keys.clone(), dev_tokens: config.dev_mode() };
        let router = http::router(http_state, config.max_payload_bytes)
            .layer(socket_layer)
            .layer(axum::middleware::from_fn({
                let origins = origins.clone();
                move |req, next| check_origin(origins.clone(), req, next)
            }))
            .layer(cors(&origins))
            .layer(TraceLayer::new_for_http());

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
        axum::serve(listener, router).with_graceful_shutdown(drained).await?;
        store.close().await;
        info!("stopped");
        Ok(())
    }
}

/// Every minute, forgets users whose rate allowance is full again.
fn spawn_rate_limit_cleanup(limit: Arc<MessageRateLimit>) {
    let weak = Arc::downgrade(&limit);
    drop(limit);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            // Ends with the server: the limiter is dropped with it.
            let Some(limit) = weak.upgrade() else { break };
            limit.forget_idle_users();
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
