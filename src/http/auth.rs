//! The caller of an `/api` route, from `Authorization: Bearer <JWT>`.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use tracing::debug;

use super::ApiError;
use crate::auth::{bearer, JwtKeys};
use crate::domain::UserId;

/// The authenticated user of a request.
pub struct AuthUser(pub UserId);

impl<S> FromRequestParts<S> for AuthUser
where
    Arc<JwtKeys>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let keys = Arc::<JwtKeys>::from_ref(state);
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(bearer)
            .ok_or(ApiError::Unauthorized)?;
        keys.verify(token).map(|v| AuthUser(v.user)).map_err(|reason| {
            debug!(%reason, "request refused");
            ApiError::Unauthorized
        })
    }
}
