//! The API's one error type: status and code chosen once, causes logged, never sent.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::warn;

use crate::chat::{ChatError, ErrorCode};
use crate::domain::InvalidInput;

/// An error answered as `{ "error": { "code", "message" } }` with the matching status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("not found")]
    NotFound,
    #[error("unauthorized")]
    Unauthorized,
    #[error("{0}")]
    InvalidInput(String),
    /// Well-formed but not doable, e.g. a page that cannot be fetched (422, code INVALID_INPUT).
    #[error("{0}")]
    Unprocessable(String),
    /// The body is over `MAX_PAYLOAD_BYTES` (413, code INVALID_INPUT).
    #[error("request body too large")]
    TooLarge,
    /// A per-user quota on creating things (429, code RATE_LIMITED, `retryAfterMs`).
    #[error("too many {what}: retry in {} ms", retry_after.as_millis().max(1))]
    RateLimited { what: &'static str, retry_after: std::time::Duration },
    /// A request this route never serves to its sender (403), e.g. dev tokens to another origin.
    #[error("{0}")]
    Forbidden(&'static str),
    #[error(transparent)]
    Chat(#[from] ChatError),
}

impl From<InvalidInput> for ApiError {
    fn from(e: InvalidInput) -> Self {
        ApiError::InvalidInput(e.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge
        } else {
            ApiError::InvalidInput(e.body_text())
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        ApiError::InvalidInput(e.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        ApiError::InvalidInput(e.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, message) = match &self {
            ApiError::NotFound => (ErrorCode::NotFound, "not found".to_owned()),
            ApiError::Unauthorized => (ErrorCode::Unauthorized, "unauthorized".to_owned()),
            ApiError::Forbidden(m) => (ErrorCode::Unauthorized, (*m).to_owned()),
            ApiError::RateLimited { .. } => (ErrorCode::RateLimited, self.to_string()),
            ApiError::InvalidInput(m) => (ErrorCode::InvalidInput, m.clone()),
            ApiError::TooLarge | ApiError::Unprocessable(_) => (ErrorCode::InvalidInput, self.to_string()),
            ApiError::Chat(e) => (e.code(), e.client_message()),
        };
        let status = match code {
            _ if matches!(self, ApiError::TooLarge) => StatusCode::PAYLOAD_TOO_LARGE,
            _ if matches!(self, ApiError::Unprocessable(_)) => StatusCode::UNPROCESSABLE_ENTITY,
            _ if matches!(self, ApiError::Forbidden(_)) => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::InvalidInput => StatusCode::BAD_REQUEST,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Busy | ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::StorageUnavailable | ErrorCode::AiUnavailable | ErrorCode::ServerShutdown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ErrorCode::AiTimeout => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        metrics::counter!("postchat_errors_total", "code" => code.as_str()).increment(1);
        if status.is_server_error() {
            warn!(error = %self, "request failed");
        }
        let mut body = json!({ "code": code, "message": message });
        let Some(retry_after_ms) = self.retry_after_ms() else {
            return (status, Json(json!({ "error": body }))).into_response();
        };
        body["retryAfterMs"] = retry_after_ms.into();
        let retry_secs = retry_after_ms.div_ceil(1000).to_string();
        (status, [(header::RETRY_AFTER, retry_secs)], Json(json!({ "error": body }))).into_response()
    }
}

impl ApiError {
    /// How long the client should wait before trying again, when that is known.
    fn retry_after_ms(&self) -> Option<u64> {
        match self {
            ApiError::RateLimited { retry_after, .. } => Some(retry_after.as_millis().max(1) as u64),
            ApiError::Chat(e) => e.retry_after_ms(),
            _ => None,
        }
    }
}

/// `Json<T>` whose rejections (bad JSON, wrong types, body too large) answer in our format.
pub struct AppJson<T>(pub T);

impl<S, T> FromRequest<S> for AppJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(value) = Json::<T>::from_request(req, state).await?;
        Ok(AppJson(value))
    }
}
