//! Dev mode only: tokens for the demo clients (the route does not exist outside dev mode).

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::AppJson;
use super::{ApiError, HttpState};
use crate::domain::UserId;

#[derive(Deserialize)]
pub struct TokenRequest {
    user: String,
}

/// `POST /dev/token { user }` → `{ token }`, valid for a day.
pub async fn token(
    State(state): State<HttpState>,
    AppJson(req): AppJson<TokenRequest>,
) -> Result<Json<Value>, ApiError> {
    let user = UserId::parse(&req.user)?;
    let token = state
        .keys
        .issue(&user, 24 * 3600)
        .map_err(|e| ApiError::InvalidInput(format!("cannot issue a token: {e}")))?;
    Ok(Json(json!({ "token": token, "user": user })))
}
