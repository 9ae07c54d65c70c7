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

/// The database (and in cluster mode Redis) answers; 503 while either does not.
pub async fn readyz(State(state): State<HttpState>) -> (StatusCode, Json<Value>) {
    if let Err(e) = state.sessions.ping().await {
        tracing::warn!(error = %e, "not ready");
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "database unavailable" })));
    }
    if let Some(cluster) = &state.cluster {
        if !cluster.ping().await {
            return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "redis unavailable" })));
        }
    }
    (StatusCode::OK, Json(json!({ "status": "ready" })))
}

/// Prometheus text: sockets, events, answers, tokens, latencies, cache, database, errors.
pub async fn metrics() -> ([(axum::http::header::HeaderName, &'static str); 1], String) {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::telemetry::metrics().render())
}
