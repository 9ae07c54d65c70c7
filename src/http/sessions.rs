//! Sessions and their messages: `/api/sessions…`.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::auth::AuthUser;
use super::error::AppJson;
use super::{ApiError, HttpState, WriteQuotas};
use crate::domain::{ChatSession, InvalidInput, Message, MessageId, PostId, SessionId};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateSession {
    post_id: String,
    #[serde(default)]
    title: Option<String>,
}

#[derive(Serialize)]
pub struct SessionList {
    sessions: Vec<ChatSession>,
}

#[derive(Serialize)]
pub struct MessageList {
    messages: Vec<Message>,
}

#[derive(Deserialize)]
pub struct MessagesQuery {
    limit: Option<u32>,
    before: Option<String>,
    /// The whole tree of branches instead of the active branch.
    all: Option<bool>,
}

fn session_id(raw: &str) -> Result<SessionId, ApiError> {
    // A malformed id cannot name a session: not found, like any other missing one.
    SessionId::parse(raw).map_err(|_| ApiError::NotFound)
}

pub async fn create(
    State(state): State<HttpState>,
    AuthUser(user): AuthUser,
    AppJson(req): AppJson<CreateSession>,
) -> Result<(StatusCode, Json<ChatSession>), ApiError> {
    let post_id = PostId::parse(&req.post_id)?;
    let title = match req.title.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()) {
        Some(t) if t.chars().count() > 200 || t.contains('\0') => {
            return Err(InvalidInput::new("title", "must be at most 200 characters, without NUL bytes").into())
        }
        other => other,
    };
    WriteQuotas::charge(&state.quotas.sessions, &user, "sessions").await?;
    let session = state.sessions.create_session(&user, post_id, title).await?;
    Ok((StatusCode::CREATED, Json(session)))
}

pub async fn list(
    State(state): State<HttpState>,
    AuthUser(user): AuthUser,
) -> Result<Json<SessionList>, ApiError> {
    Ok(Json(SessionList { sessions: state.sessions.list_sessions(&user).await? }))
}

pub async fn get_one(
    State(state): State<HttpState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> Result<Json<ChatSession>, ApiError> {
    let entry = state.sessions.session(&user, session_id(&id)?).await?;
    Ok(Json(entry.session.clone()))
}

pub async fn delete(
    State(state): State<HttpState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.sessions.delete_session(&user, session_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The active branch, newest last; `before` pages back from a message id along its branch;
/// `limit` 1 to 100 (default 50). With `all=true`, every message of the session (the tree of
/// its branches, by `parentId`), oldest first.
pub async fn messages(
    State(state): State<HttpState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
    query: Result<Query<MessagesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<MessageList>, ApiError> {
    let Query(query) = query?;
    if query.all == Some(true) {
        if query.limit.is_some() || query.before.is_some() {
            return Err(InvalidInput::new("all", "returns the whole tree: without limit or before").into());
        }
        let messages = state.sessions.all_messages(&user, session_id(&id)?).await?;
        return Ok(Json(MessageList { messages }));
    }
    let limit = query.limit.unwrap_or(50);
    if !(1..=100).contains(&limit) {
        return Err(InvalidInput::new("limit", "must be 1 to 100").into());
    }
    let before = query.before.as_deref().map(MessageId::parse).transpose()?;
    let messages = state.sessions.messages(&user, session_id(&id)?, limit, before).await?;
    Ok(Json(MessageList { messages }))
}
