//! The HTTP API of PROTOCOL.md on axum: posts, sessions, messages, preferences, health. Every
//! `/api` route takes the same JWT as the socket (`Authorization: Bearer`).

mod auth;
pub mod client_address;
pub mod connections;
mod demo_page;
mod dev;
mod error;
mod health;
pub mod origin;
mod posts;
mod preferences;
mod proxy_protocol;
pub mod request_id;
pub mod request_layers;
mod sessions;
mod socket_head;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRef};
use axum::routing::{get, post};
use axum::Router;

use crate::auth::JwtKeys;
use crate::chat::{ChatSessionService, PostService, PreferenceService};
use crate::domain::UserId;
use crate::expansion::PostExpander;
use crate::limits::RateLimit;

pub use error::ApiError;
pub use health::Dependency;

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct HttpState {
    pub sessions: Arc<ChatSessionService>,
    pub posts: Arc<PostService>,
    pub preferences: Arc<PreferenceService>,
    /// Fetches a post's page when only its URL is given.
    pub expander: Arc<PostExpander>,
    pub keys: Arc<JwtKeys>,
    /// Present in dev mode only: the route that hands out demo tokens exists only then.
    pub dev_tokens: bool,
    /// Per-user quotas on creating posts and sessions and on page fetches.
    pub quotas: Arc<WriteQuotas>,
    /// What `/readyz` checks besides the database (cluster mode: Redis).
    pub dependencies: Arc<[Arc<dyn Dependency>]>,
}

/// Per-user quotas on what HTTP writes create: posts, sessions, and pages fetched for posts
/// given by URL only (each an outbound request on the user's behalf).
pub struct WriteQuotas {
    pub posts: Arc<RateLimit<UserId>>,
    pub sessions: Arc<RateLimit<UserId>>,
    pub page_fetches: Arc<RateLimit<UserId>>,
}

impl WriteQuotas {
    /// Charges `user` one of `limit`, or says how long until they may.
    pub(crate) async fn charge(
        limit: &RateLimit<UserId>,
        user: &UserId,
        what: &'static str,
    ) -> Result<(), ApiError> {
        limit.check(user).await.map_err(|retry_after| ApiError::RateLimited { what, retry_after })
    }
}

impl FromRef<HttpState> for Arc<JwtKeys> {
    fn from_ref(state: &HttpState) -> Self {
        state.keys.clone()
    }
}

/// The API routes, with JSON bodies bounded to `max_body_bytes`.
pub fn router(state: HttpState, max_body_bytes: usize) -> Router {
    let mut api = Router::new()
        .route("/api/posts", post(posts::create))
        .route("/api/posts/{id}", get(posts::get_one))
        .route("/api/sessions", get(sessions::list).post(sessions::create))
        .route("/api/sessions/{id}", get(sessions::get_one).delete(sessions::delete))
        .route("/api/sessions/{id}/messages", get(sessions::messages))
        .route("/api/preferences", get(preferences::get_mine).put(preferences::put_mine))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics));
    if state.dev_tokens {
        api = api.route("/dev/token", post(dev::token)).merge(demo_page::routes());
    }
    api.fallback(|| async { ApiError::NotFound })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}
