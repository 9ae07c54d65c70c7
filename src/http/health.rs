//! Liveness and readiness.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::HttpState;

/// The process is up.
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// A service besides the database the process cannot serve without (cluster mode: Redis).
#[async_trait::async_trait]
pub trait Dependency: Send + Sync {
    /// As `/readyz` names it (`"<name> unavailable"`).
    fn name(&self) -> &'static str;
    async fn reachable(&self) -> bool;
}

/// The database and every [`Dependency`] answer; 503 while one does not.
pub async fn readyz(State(state): State<HttpState>) -> (StatusCode, Json<Value>) {
    if let Err(e) = state.sessions.ping().await {
        tracing::warn!(error = %e, "not ready");
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "database unavailable" })));
    }
    for dependency in state.dependencies.iter() {
        if !dependency.reachable().await {
            let status = format!("{} unavailable", dependency.name());
            return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": status })));
        }
    }
    (StatusCode::OK, Json(json!({ "status": "ready" })))
}

/// Prometheus text: sockets, events, answers, tokens, latencies, cache, database, errors.
pub async fn metrics() -> ([(axum::http::header::HeaderName, &'static str); 1], String) {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::telemetry::metrics().render())
}
