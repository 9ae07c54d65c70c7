//! `GET`/`PUT /api/preferences`: the caller's voice and style for social posts.

use axum::extract::State;
use axum::Json;

use super::auth::AuthUser;
use super::error::AppJson;
use super::{ApiError, HttpState};
use crate::domain::Preferences;

pub async fn get_mine(
    State(state): State<HttpState>,
    AuthUser(user): AuthUser,
) -> Result<Json<Preferences>, ApiError> {
    Ok(Json((*state.preferences.of(&user).await?).clone()))
}

pub async fn put_mine(
    State(state): State<HttpState>,
    AuthUser(user): AuthUser,
    AppJson(prefs): AppJson<Preferences>,
) -> Result<Json<Preferences>, ApiError> {
    let prefs = prefs.validated()?;
    Ok(Json((*state.preferences.put(&user, prefs).await?).clone()))
}
