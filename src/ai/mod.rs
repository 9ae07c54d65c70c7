//! The AI service: intent detection, streamed answers, streamed social posts and session
//! summaries, on top of langchain-rust's `LLM` trait, the seam every provider plugs into.
//!
//! The prompts are built once (`prompt.rs`), within the model's window (`window.rs`), and sent
//! to whichever `LLM` is configured: an OpenAI-compatible endpoint (`openai_compatible`) or the
//! offline `local` engine (`local.rs`), which reads the same prompts, so the server runs the
//! same path either way. `call.rs` runs one streamed request: waits on a busy provider (told to
//! the user), deadlines, cost.

mod answer;
mod bm25;
mod budget;
mod call;
mod continuation;
mod intent;
mod local;
mod model_window;
mod openai_compatible;
mod posts;
mod posts_scanner;
mod prompt;
mod reading_pace;
mod social;
mod usage;
mod window;

use std::sync::Arc;
use std::time::Duration;

use langchain_rust::language_models::llm::LLM;
use langchain_rust::language_models::LLMError;
use tracing::warn;

use crate::domain::{Exchange, IntentType, Platform, Post, Preferences, SocialPost};

pub use budget::count_tokens;
pub use intent::{detect_intent, labelled, stored_intent, IntentRequest};

/// Trains the intent classifier now (milliseconds) rather than on the first message.
pub fn train_intent_classifier() {
    detect_intent("");
}
pub use local::LocalEngine;
pub use model_window::{answer_share, ModelWindow, WindowSource, ANSWER_TOKENS_DEFAULT};
pub use openai_compatible::Endpoint;
/// The incremental reader of a posts reply (public for the fuzz target and property tests).
pub use posts_scanner::PostsScanner;
pub use reading_pace::ReadingPace;
pub use usage::{Allowance, UsageMeter};
pub use window::ContextWindow;

use continuation::{ContinueStyle, ContinueStyleCell};
use openai_compatible::{CallOptions, Format, MaxTokens, Provider, ProviderError, RefusalKind};

/// The prompt reading pace assumed of a self-hosted server until one call is measured: a small
/// model on a few CPU cores (a GPU reads far faster; the first call measures it).
const SELF_HOSTED_TOKENS_PER_SECOND: f64 = 50.0;

/// Why the model could not answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AiError {
    /// The provider could not be reached or is busy (connect error, 5xx, 429); `retry_after`
    /// when it said when to come back.
    #[error("the AI provider is unavailable: {message}")]
    Unavailable { message: String, retry_after: Option<Duration> },
    /// The provider did not answer in time.
    #[error("the AI provider timed out")]
    Timeout,
    /// The prompt is over the model's context window (trimmed and asked again once first).
    #[error("the prompt is over the model's context window: {0}")]
    ContextTooLong(String),
    /// The provider answered with something unusable (malformed stream, empty answer, refusal).
    #[error("the AI provider failed: {0}")]
    Failed(String),
    /// The user's daily token budget ran out during the answer: no further call is made.
    #[error("the daily token budget is spent")]
    BudgetSpent,
    /// The answer needed more calls to the model than one message may make.
    #[error("the message needed more than {0} calls to the model (MAX_MODEL_CALLS_PER_MESSAGE)")]
    TooManyCalls(u32),
}

impl AiError {
    /// The message's allowance ran out (no provider failed).
    pub fn is_allowance_spent(&self) -> bool {
        matches!(self, AiError::BudgetSpent | AiError::TooManyCalls(_))
    }
}

impl AiError {
    pub fn unavailable(message: impl Into<String>) -> Self {
        AiError::Unavailable { message: message.into(), retry_after: None }
    }
}

impl From<LLMError> for AiError {
    fn from(err: LLMError) -> Self {
        match ProviderError::inside(&err) {
            Some(ProviderError::Unreachable(e)) => return AiError::unavailable(e.clone()),
            Some(ProviderError::Malformed(e)) => return AiError::Failed(e.clone()),
            Some(e @ (ProviderError::TooLarge(_) | ProviderError::Redirected { .. })) => {
                return AiError::Failed(e.to_string())
            }
            Some(ProviderError::Refused(refusal)) => {
                let message = format!("provider answered {}: {}", refusal.status, refusal.message);
                return match refusal.kind() {
                    RefusalKind::Busy => AiError::Unavailable { message, retry_after: refusal.retry_after },
                    RefusalKind::ContextTooLong => AiError::ContextTooLong(message),
                    RefusalKind::FormatUnsupported | RefusalKind::Refused => AiError::Failed(message),
                };
            }
            None => {}
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
    /// The model's context window and the room kept in it for an answer, as known so far.
    pub window: Arc<ModelWindow>,
    /// How long the intent classifier may take before the rules decide.
    pub intent_timeout: Duration,
    /// Longest wait for a call's first token, waits on a busy provider included
    /// (`FIRST_TOKEN_TIMEOUT_SECS`); a long prompt to a slow reader gets more (`ReadingPace`).
    pub first_token_timeout: Duration,
    /// Longest gap between two tokens.
    pub token_idle_timeout: Duration,
}

/// What the user sees of an answer while it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress<'a> {
    /// More of the answer (of the posts: their text, under each platform's name).
    Text(&'a str),
    /// The provider is busy: the answer is asked for again after this wait.
    Waiting { retry_after: Duration },
    /// The provider is reading a long prompt: about this long, at its pace so far.
    Reading { prompt_tokens: usize, expected: Duration },
}

/// Where an answer's progress goes (the session's room).
pub type Show<'a> = &'a (dyn Fn(Progress<'_>) + Send + Sync);

/// What one message asks the model for.
pub struct Request<'a> {
    pub ctx: &'a AiContext,
    /// The user's message.
    pub text: &'a str,
    pub intent: IntentType,
    /// The posts asked for (social posts), in order.
    pub platforms: &'a [Platform],
    /// The answer's text so far, written and logged by a process that died: the answer goes
    /// on from it (see `continuation.rs`).
    pub continued: Option<&'a str>,
}

/// A finished answer: its posts (social posts) and whether it stopped at `ANSWER_MAX_TOKENS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written {
    pub posts: Option<Vec<SocialPost>>,
    pub cut: bool,
}

/// The configured model behind the chains this server runs.
#[derive(Clone)]
pub struct AiService {
    /// Streams answers (plain text, at most `ANSWER_MAX_TOKENS`).
    llm: Arc<dyn LLM>,
    /// Streams posts, asked for as JSON.
    posts_llm: Arc<dyn LLM>,
    /// Classifies messages the rules are unsure of (none for the offline engine).
    classifier: Option<Arc<dyn LLM>>,
    model: String,
    settings: AiSettings,
    /// The provider's prompt reading pace, for first-token deadlines.
    pace: Arc<ReadingPace>,
    /// The endpoint asked for its window (none for the offline engine).
    provider: Option<Provider>,
    /// How the provider continues a reply begun elsewhere.
    continue_style: Arc<ContinueStyleCell>,
}

impl AiService {
    /// The offline extractive engine (`AI_PROVIDER=local`).
    pub fn local(pacing: Duration, settings: AiSettings) -> Self {
        let engine: Arc<dyn LLM> =
            Arc::new(LocalEngine::new(pacing, settings.window.current().answer_tokens));
        Self {
            llm: engine.clone(),
            posts_llm: engine,
            classifier: None,
            model: LocalEngine::MODEL_NAME.into(),
            pace: Arc::new(ReadingPace::new(settings.first_token_timeout, None)),
            settings,
            provider: None,
            continue_style: Arc::new(ContinueStyleCell::new(ContinueStyle::Prefill)),
        }
    }

    /// An OpenAI-compatible endpoint (`AI_PROVIDER=openai` or `ollama`).
    pub fn openai_compatible(endpoint: &Endpoint, settings: AiSettings) -> Self {
        let provider = Provider::new(endpoint.clone(), settings.window.clone());
        let answers =
            CallOptions { max_tokens: MaxTokens::Answer, stream_usage: true, ..CallOptions::default() };
        let posts = CallOptions { format: Format::JsonObject, ..answers.clone() };
        let classifier = CallOptions {
            temperature: Some(0.0),
            max_tokens: MaxTokens::Fixed(60),
            format: Format::JsonSchema { name: "intent", schema: intent::classifier_schema() },
            ..CallOptions::default()
        };
        Self {
            llm: Arc::new(provider.model(answers)),
            posts_llm: Arc::new(provider.model(posts)),
            classifier: Some(Arc::new(provider.model(classifier))),
            model: endpoint.model.clone(),
            pace: Arc::new(ReadingPace::new(settings.first_token_timeout, None)),
            settings,
            provider: Some(provider),
            // Until the server says what it is: the way every chat model understands.
            continue_style: Arc::new(ContinueStyleCell::new(ContinueStyle::Instruction)),
        }
    }

    /// Asks the provider which window it serves the model with, and takes it (a server that
    /// answers is self-hosted: its reading pace is assumed slow until measured). True when the
    /// provider told.
    pub async fn learn_window(&self) -> bool {
        let Some(provider) = &self.provider else { return false };
        match provider.served_window().await {
            Some(served) => {
                self.settings.window.learn(served.tokens, WindowSource::Reported(served.source));
                self.pace.assume(SELF_HOSTED_TOKENS_PER_SECOND);
                self.continue_style.learn_from(served.source);
                true
            }
            None => false,
        }
    }

    /// The window prompts are built for now.
    pub fn window(&self) -> &ModelWindow {
        &self.settings.window
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
            Ok(Err(e)) => Err(AiError::from(e).to_string()),
            Ok(Ok(result)) => intent::read_classifier_reply(&result.generation)
                .ok_or_else(|| "the reply names no intent".to_owned()),
        };
        match parsed {
            Ok(decided) => decided,
            Err(reason) => {
                warn!(%reason, "intent classifier failed: the rules decide");
                rules
            }
        }
    }

    /// Writes the answer to `request`, showing it as it is written: a question's answer, or
    /// the posts asked for. What the calls cost goes to `meter` as it is spent.
    pub async fn write(
        &self,
        request: &Request<'_>,
        meter: &UsageMeter,
        show: Show<'_>,
    ) -> Result<Written, AiError> {
        match (request.intent, request.continued) {
            (IntentType::Question, None) => self.answer(request, meter, show).await,
            (IntentType::SocialPost, None) => self.posts(request, meter, show).await,
            (IntentType::Question, Some(logged)) => self.answer_continued(request, logged, meter, show).await,
            (IntentType::SocialPost, Some(logged)) => {
                self.posts_continued(request, logged, meter, show).await
            }
        }
    }

    /// A new running summary of the conversation, from the old one and the recent exchanges.
    pub async fn summarize(&self, ctx: &AiContext) -> Result<String, AiError> {
        let mut trimmed = ctx.clone();
        let budget = self.settings.window.current().prompt_budget(false);
        let keep = window::newest_that_fit(&ctx.history, budget / 2).len();
        trimmed.history.drain(..ctx.history.len() - keep);
        let reply = self.background_call(&prompt::summary(&trimmed)).await?;
        let summary = reply.generation.trim().to_owned();
        if summary.is_empty() {
            return Err(AiError::Failed("empty summary".into()));
        }
        Ok(summary)
    }

    /// A short title for a session, from its post and first question.
    pub async fn title(&self, ctx: &AiContext, question: &str) -> Result<String, AiError> {
        let reply = self.background_call(&prompt::title(ctx, question)).await?;
        let title: String = reply.generation.trim().trim_matches('"').chars().take(MAX_TITLE_CHARS).collect();
        if title.trim().is_empty() {
            return Err(AiError::Failed("empty title".into()));
        }
        Ok(title.trim().to_owned())
    }
}

impl AiService {
    /// How the provider continues a reply begun elsewhere.
    fn continue_style(&self) -> ContinueStyle {
        self.continue_style.get()
    }

    /// The answers' model, writing at most `room` tokens and continuing a final assistant
    /// message when the provider must be asked to.
    fn continuing_llm(&self, room: u32) -> Arc<dyn LLM> {
        let Some(provider) = &self.provider else { return self.llm.clone() };
        let options = CallOptions {
            max_tokens: MaxTokens::Fixed(room),
            stream_usage: true,
            continue_final_message: self.continue_style() == ContinueStyle::PrefillAskedFor,
            ..CallOptions::default()
        };
        Arc::new(provider.model(options))
    }

    /// A whole completion for a background task (title, summary), within the first-token
    /// deadline: a provider that trickles its body does not hold the task and its connection.
    async fn background_call(
        &self,
        messages: &[langchain_rust::schemas::Message],
    ) -> Result<langchain_rust::language_models::GenerateResult, AiError> {
        let deadline = self.pace.deadline(window::prompt_tokens(messages));
        match tokio::time::timeout(deadline, self.llm.generate(messages)).await {
            Ok(reply) => Ok(reply?),
            Err(_) => Err(AiError::Timeout),
        }
    }
}

/// Longest session title kept.
const MAX_TITLE_CHARS: usize = 80;
