//! The AI service: intent detection, streamed answers, social posts and session summaries,
//! on top of langchain-rust's `LLM` trait, the seam every provider plugs into.
//!
//! The prompts are built once (`prompt.rs`) and sent to whichever `LLM` is configured; the
//! offline `local` engine (`local.rs`) reads the same prompts, so the server runs the same path
//! with or without a real model.

mod bm25;
mod intent;
mod local;
mod openai_compatible;
mod prompt;
mod social;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use langchain_rust::language_models::llm::LLM;
use langchain_rust::language_models::LLMError;

use crate::domain::{Message, Platform, Post, Preferences, SocialPost};

pub use intent::{detect_intent, IntentRequest};
pub use local::LocalEngine;
pub use openai_compatible::Endpoint;

/// The answer text as it arrives, one chunk (token) at a time.
pub type TokenStream = Pin<Box<dyn Stream<Item = Result<String, AiError>> + Send>>;

/// Why the model could not answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AiError {
    /// The provider could not be reached or refused (connect error, 5xx, 429).
    #[error("the AI provider is unavailable: {0}")]
    Unavailable(String),
    /// The provider did not answer in time.
    #[error("the AI provider timed out")]
    Timeout,
    /// The provider answered with something unusable (malformed stream, empty answer).
    #[error("the AI provider failed: {0}")]
    Failed(String),
}

impl From<LLMError> for AiError {
    fn from(err: LLMError) -> Self {
        if let Some(classified) = openai_compatible::classify(&err) {
            return classified;
        }
        match err {
            LLMError::RequestError(e) => AiError::Unavailable(e.to_string()),
            LLMError::Timeout(_) => AiError::Timeout,
            other => AiError::Failed(other.to_string()),
        }
    }
}

/// What the model needs to know for one exchange.
#[derive(Debug, Clone)]
pub struct AiContext {
    pub post: Arc<Post>,
    /// The running summary of the conversation so far.
    pub session_summary: String,
    /// Earlier exchanges of the session, oldest first.
    pub history: Vec<Message>,
    pub preferences: Arc<Preferences>,
}

/// The configured model behind the chains this server runs.
#[derive(Clone)]
pub struct AiService {
    llm: Arc<dyn LLM>,
    model: String,
}

impl AiService {
    pub fn new(llm: Arc<dyn LLM>, model: impl Into<String>) -> Self {
        Self {
            llm,
            model: model.into(),
        }
    }

    /// The offline extractive engine (`AI_PROVIDER=local`).
    pub fn local(pacing: Duration) -> Self {
        Self::new(Arc::new(LocalEngine::new(pacing)), LocalEngine::MODEL_NAME)
    }

    /// An OpenAI-compatible endpoint (`AI_PROVIDER=openai` or `ollama`).
    pub fn openai_compatible(endpoint: &Endpoint) -> Self {
        Self::new(
            Arc::new(openai_compatible::chat_model(endpoint)),
            endpoint.model.clone(),
        )
    }

    /// The model's name, as reported in logs.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// What the user asked for: rules for clear cases.
    pub fn detect_intent(&self, text: &str) -> IntentRequest {
        detect_intent(text)
    }

    /// Streams the answer to a question about the post. Empty chunks are skipped; the user's
    /// text goes in as a message of its own, never into a template.
    pub async fn answer_stream(
        &self,
        ctx: &AiContext,
        question: &str,
    ) -> Result<TokenStream, AiError> {
        let messages = prompt::answer(ctx, question);
        let stream = self.llm.stream(&messages).await?;
        Ok(Box::pin(stream.filter_map(|item| async move {
            match item {
                Ok(data) if data.content.is_empty() => None,
                Ok(data) => Some(Ok(data.content)),
                Err(e) => Some(Err(AiError::from(e))),
            }
        })))
    }

    /// Writes one post per platform, each fitted to its platform's limit as that platform counts.
    pub async fn social_posts(
        &self,
        ctx: &AiContext,
        request: &str,
        platforms: &[Platform],
    ) -> Result<Vec<SocialPost>, AiError> {
        let messages = prompt::social_posts(ctx, request, platforms);
        let reply = self.llm.generate(&messages).await?;
        social::parse_posts(&reply.generation, platforms)
    }

    /// A new running summary of the conversation, from the old one and the recent exchanges.
    pub async fn summarize(&self, ctx: &AiContext) -> Result<String, AiError> {
        let messages = prompt::summary(ctx);
        let reply = self.llm.generate(&messages).await?;
        let summary = reply.generation.trim().to_owned();
        if summary.is_empty() {
            return Err(AiError::Failed("empty summary".into()));
        }
        Ok(summary)
    }
}
