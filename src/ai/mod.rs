//! The AI service: intent detection, streamed answers, social posts and session summaries,
//! on top of langchain-rust's `LLM` trait, the seam every provider plugs into.
//!
//! The prompts are built once (`prompt.rs`) and sent to whichever `LLM` is configured: an
//! OpenAI-compatible endpoint (`openai_compatible.rs`) or the offline `local` engine
//! (`local.rs`), which reads the same prompts, so the server runs the same path either way.

mod bm25;
mod budget;
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
use langchain_rust::language_models::{GenerateResult, LLMError};
use langchain_rust::schemas::Message as LlmMessage;
use tracing::warn;

use crate::domain::{Exchange, IntentType, Platform, Post, Preferences, SocialPost, TokenUsage};

pub use budget::count_tokens;
pub use intent::{detect_intent, IntentRequest};
pub use local::LocalEngine;
pub use openai_compatible::Endpoint;

/// A piece of an answer as it arrives: text (possibly empty) and, at the end, the provider's
/// token counts when it reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub text: String,
    pub usage: Option<TokenUsage>,
}

/// The answer as it arrives.
pub type TokenStream = Pin<Box<dyn Stream<Item = Result<Chunk, AiError>> + Send>>;

/// A streaming answer and the prompt's size, to estimate usage when the provider does not say.
pub struct AnswerStream {
    pub chunks: TokenStream,
    pub prompt_tokens: u32,
}

/// Posts and what they cost.
pub struct SocialAnswer {
    pub posts: Vec<SocialPost>,
    pub usage: TokenUsage,
}

/// Why the model could not answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AiError {
    /// The provider could not be reached or refused (connect error, 5xx, 429); `retry_after`
    /// when it said when to come back.
    #[error("the AI provider is unavailable: {message}")]
    Unavailable { message: String, retry_after: Option<Duration> },
    /// The provider did not answer in time.
    #[error("the AI provider timed out")]
    Timeout,
    /// The provider answered with something unusable (malformed stream, empty answer).
    #[error("the AI provider failed: {0}")]
    Failed(String),
}

impl AiError {
    pub fn unavailable(message: impl Into<String>) -> Self {
        AiError::Unavailable { message: message.into(), retry_after: None }
    }
}

impl From<LLMError> for AiError {
    fn from(err: LLMError) -> Self {
        if let Some(classified) = openai_compatible::classify(&err) {
            return classified;
        }
        match err {
            LLMError::RequestError(e) => AiError::unavailable(e.to_string()),
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
    pub history: Vec<Exchange>,
    pub preferences: Arc<Preferences>,
}

/// Tunables of the AI service (from the config).
#[derive(Debug, Clone)]
pub struct AiSettings {
    /// Most tokens of post content in a prompt; longer posts keep their most relevant parts.
    pub post_token_budget: usize,
    /// How long the intent classifier may take before the rules decide.
    pub intent_timeout: Duration,
}

/// The configured model behind the chains this server runs.
#[derive(Clone)]
pub struct AiService {
    /// Streams answers.
    llm: Arc<dyn LLM>,
    /// Writes posts (asked for JSON).
    posts_llm: Arc<dyn LLM>,
    /// Classifies messages the rules are unsure of (none for the offline engine).
    classifier: Option<Arc<dyn LLM>>,
    model: String,
    settings: AiSettings,
}

impl AiService {
    /// The offline extractive engine (`AI_PROVIDER=local`).
    pub fn local(pacing: Duration, settings: AiSettings) -> Self {
        let engine: Arc<dyn LLM> = Arc::new(LocalEngine::new(pacing));
        Self {
            llm: engine.clone(),
            posts_llm: engine,
            classifier: None,
            model: LocalEngine::MODEL_NAME.into(),
            settings,
        }
    }

    /// An OpenAI-compatible endpoint (`AI_PROVIDER=openai` or `ollama`).
    pub fn openai_compatible(endpoint: &Endpoint, settings: AiSettings) -> Self {
        Self {
            llm: Arc::new(openai_compatible::chat_model(endpoint)),
            posts_llm: Arc::new(openai_compatible::posts_model(endpoint)),
            classifier: Some(Arc::new(openai_compatible::classifier_model(endpoint))),
            model: endpoint.model.clone(),
            settings,
        }
    }

    /// The model's name, as reported in logs.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// What the user asked for: the rules for clear cases; for the rest, the classifier when
    /// there is one, falling back to the rules on any failure or timeout.
    pub async fn detect_intent(&self, text: &str) -> IntentRequest {
        let rules = detect_intent(text);
        let Some(classifier) = self.classifier.as_ref().filter(|_| !rules.confident) else {
            return rules;
        };
        let reply = tokio::time::timeout(
            self.settings.intent_timeout,
            classifier.generate(&prompt::classifier(text)),
        )
        .await;
        let parsed = match reply {
            Err(_) => Err("timed out".to_owned()),
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok(result)) => serde_json::from_str::<intent::ClassifierReply>(result.generation.trim())
                .map_err(|e| format!("reply is not the JSON asked for: {e}")),
        };
        match parsed {
            Ok(reply) => IntentRequest {
                platforms: if reply.intent == IntentType::SocialPost { reply.platforms } else { vec![] },
                intent: reply.intent,
                confident: true,
            },
            Err(reason) => {
                warn!(%reason, "intent classifier failed: the rules decide");
                rules
            }
        }
    }

    /// Streams the answer to a question about the post. Empty chunks are skipped; the user's
    /// text goes in as a message of its own, never into a template.
    pub async fn answer_stream(&self, ctx: &AiContext, question: &str) -> Result<AnswerStream, AiError> {
        let content =
            budget::fit_to_budget(&ctx.post.expanded.content, question, self.settings.post_token_budget);
        let messages = prompt::answer(ctx, question, &content);
        let prompt_tokens = prompt_tokens(&messages);
        let stream = self.llm.stream(&messages).await?;
        let chunks = stream.filter_map(|item| async move {
            match item {
                Err(e) => Some(Err(AiError::from(e))),
                Ok(data) => {
                    let usage =
                        data.tokens.map(|t| TokenUsage::reported(t.prompt_tokens, t.completion_tokens));
                    (!data.content.is_empty() || usage.is_some())
                        .then_some(Ok(Chunk { text: data.content, usage }))
                }
            }
        });
        Ok(AnswerStream { chunks: Box::pin(chunks), prompt_tokens })
    }

    /// Writes one post per entry of `platforms`. Unreadable JSON is asked for once more; posts
    /// over their limits are regenerated once with the overflow named; what still does not fit
    /// is shortened at a sentence or word boundary.
    pub async fn social_posts(
        &self,
        ctx: &AiContext,
        request: &str,
        platforms: &[Platform],
    ) -> Result<SocialAnswer, AiError> {
        let content = budget::fit_to_budget(
            &ctx.post.expanded.content,
            &ctx.post.title,
            self.settings.post_token_budget,
        );
        let mut messages = prompt::social_posts(ctx, request, platforms, &content);
        let mut usage = TokenUsage::default();

        let reply = self.generate(&messages, &mut usage).await?;
        let drafts = match social::parse_drafts(&reply, platforms) {
            Ok(drafts) => drafts,
            Err(e) => {
                warn!(error = %e, "posts unreadable: asking again");
                messages.push(LlmMessage::new_ai_message(&reply));
                messages.push(LlmMessage::new_human_message(
                    "That reply was not the JSON asked for. Reply with the JSON object only.",
                ));
                let retry = self.generate(&messages, &mut usage).await?;
                social::parse_drafts(&retry, platforms)?
            }
        };
        let drafts = match social::overflow_note(&drafts) {
            None => drafts,
            Some(note) => {
                messages.push(LlmMessage::new_ai_message(drafts_json(&drafts)));
                messages.push(LlmMessage::new_human_message(note));
                match self
                    .generate(&messages, &mut usage)
                    .await
                    .and_then(|r| social::parse_drafts(&r, platforms))
                {
                    Ok(shorter) if shorter.len() == drafts.len() => shorter,
                    Ok(_) | Err(_) => drafts,
                }
            }
        };
        Ok(SocialAnswer { posts: drafts.iter().map(social::Draft::fitted).collect(), usage })
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

    /// A short title for a session, from its post and first question.
    pub async fn title(&self, ctx: &AiContext, question: &str) -> Result<String, AiError> {
        let reply = self.llm.generate(&prompt::title(ctx, question)).await?;
        let title: String = reply.generation.trim().trim_matches('"').chars().take(MAX_TITLE_CHARS).collect();
        if title.trim().is_empty() {
            return Err(AiError::Failed("empty title".into()));
        }
        Ok(title.trim().to_owned())
    }

    /// One whole completion from the posts model, adding what it cost to `usage`.
    async fn generate(&self, messages: &[LlmMessage], usage: &mut TokenUsage) -> Result<String, AiError> {
        let GenerateResult { tokens, generation, .. } = self.posts_llm.generate(messages).await?;
        let cost = match tokens {
            Some(t) => TokenUsage::reported(t.prompt_tokens, t.completion_tokens),
            None => TokenUsage::estimated(prompt_tokens(messages), count_tokens(&generation) as u32),
        };
        *usage = usage.plus(cost);
        Ok(generation)
    }
}

/// Longest session title kept.
const MAX_TITLE_CHARS: usize = 80;

fn prompt_tokens(messages: &[LlmMessage]) -> u32 {
    messages.iter().map(|m| count_tokens(&m.content) as u32 + 4).sum()
}

fn drafts_json(drafts: &[social::Draft]) -> String {
    let posts: Vec<_> = drafts
        .iter()
        .map(|d| serde_json::json!({ "platform": d.platform.as_str(), "content": d.content, "hashtags": d.hashtags }))
        .collect();
    serde_json::json!({ "posts": posts }).to_string()
}
