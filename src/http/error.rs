//! The API's one error type: status and code chosen once, causes logged, never sent.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
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
            ApiError::InvalidInput(m) => (ErrorCode::InvalidInput, m.clone()),
            ApiError::TooLarge | ApiError::Unprocessable(_) => (ErrorCode::InvalidInput, self.to_string()),
            ApiError::Chat(e) => (e.code(), e.client_message()),
        };
        let status = match code {
            _ if matches!(self, ApiError::TooLarge) => StatusCode::PAYLOAD_TOO_LARGE,
            _ if matches!(self, ApiError::Unprocessable(_)) => StatusCode::UNPROCESSABLE_ENTITY,
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
        (status, Json(json!({ "error": { "code": code, "message": message } }))).into_response()
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
