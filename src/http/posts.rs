//! `POST /api/posts`, `GET /api/posts/{id}`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::auth::AuthUser;
use super::error::AppJson;
use super::{ApiError, HttpState, WriteQuotas};
use crate::domain::{InvalidInput, Post, PostExpanded, PostId};

/// Longest post content accepted (characters); the body limit bounds it first.
const MAX_CONTENT_CHARS: usize = 60_000;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatePost {
    url: String,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    summary: Option<String>,
}

/// A post as the API shows it: the expanded content inline.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PostBody {
    id: PostId,
    url: String,
    title: String,
    content: String,
    summary: String,
    created_at: chrono::DateTime<chrono::Utc>,
}

impl From<Post> for PostBody {
    fn from(p: Post) -> Self {
        Self {
            id: p.id,
            url: p.url,
            title: p.title,
            content: p.expanded.content,
            summary: p.expanded.summary,
            created_at: p.created_at,
        }
    }
}

fn check_text(field: &'static str, value: &str, max: usize, required: bool) -> Result<(), InvalidInput> {
    if required && value.trim().is_empty() {
        return Err(InvalidInput::new(field, "is required"));
    }
    if value.contains('\0') {
        return Err(InvalidInput::new(field, "must not contain NUL bytes"));
    }
    if value.chars().count() > max {
        return Err(InvalidInput::new(field, format!("must be at most {max} characters")));
    }
    Ok(())
}

pub async fn create(
    State(state): State<HttpState>,
    AuthUser(user): AuthUser,
    AppJson(req): AppJson<CreatePost>,
) -> Result<(StatusCode, Json<PostBody>), ApiError> {
    check_text("url", &req.url, 2_048, true)?;
    if !(req.url.starts_with("https://") || req.url.starts_with("http://")) {
        return Err(InvalidInput::new("url", "must be an http(s) URL").into());
    }
    let title = req.title.unwrap_or_default();
    check_text("title", &title, 500, false)?;
    let content = req.content.unwrap_or_default();
    let summary = req.summary.unwrap_or_default();
    check_text("content", &content, MAX_CONTENT_CHARS, false)?;
    check_text("summary", &summary, 5_000, false)?;
    let url = req.url.trim().to_owned();
    let fetch_page = content.trim().is_empty();
    // The scarcer quota first: a refused fetch costs no post.
    if fetch_page {
        WriteQuotas::charge(&state.quotas.page_fetches, &user, "page fetches").await?;
    }
    WriteQuotas::charge(&state.quotas.posts, &user, "posts").await?;

    // Without content, the page is fetched and its readable text becomes the post.
    let (title, expanded) = if fetch_page {
        let page = state.expander.expand(&url).await.map_err(|e| ApiError::Unprocessable(e.to_string()))?;
        let title = if title.trim().is_empty() { page.title } else { title };
        let mut expanded = page.expanded;
        expanded.content = expanded.content.chars().take(MAX_CONTENT_CHARS).collect();
        if !summary.trim().is_empty() {
            expanded.summary = summary;
        }
        (title, expanded)
    } else {
        (title, PostExpanded { content, summary })
    };
    let title = match title.trim() {
        "" => url.clone(),
        t => t.to_owned(),
    };
    let post = state.posts.create(&user, url, title, expanded).await?;
    Ok((StatusCode::CREATED, Json(post.into())))
}

pub async fn get_one(
    State(state): State<HttpState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> Result<Json<PostBody>, ApiError> {
    let id = PostId::parse(&id).map_err(|_| ApiError::NotFound)?;
    Ok(Json(state.posts.owned(&user, id).await?.into()))
}
