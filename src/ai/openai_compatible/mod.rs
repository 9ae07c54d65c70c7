//! OpenAI-compatible endpoints (`AI_PROVIDER=openai`: OpenAI, vLLM, llama.cpp's server, LM
//! Studio; `AI_PROVIDER=ollama`: Ollama's `/v1`): our own small client behind langchain-rust's
//! `LLM` trait, the seam the offline engine plugs into too.
//!
//! Why not langchain-rust's `OpenAI`: it builds a client per call whose retries (three, on 429
//! and 5xx) swallow `Retry-After` and can be neither bounded nor reported, it always sends the
//! response format it was built with, and it drops `finish_reason`. Here every request is sent
//! once; the AI service decides whether and when to ask again, and tells the user meanwhile.
//! There is no timeout of the client's own beyond connecting: the answer bounds the first token,
//! each gap and the whole answer, and dropping the stream closes the request (that is how a stop
//! stops the provider too). What the provider sends is bounded too: a body read whole (a
//! completion, an error) by its size, a stream by its events' size (`sse.rs`) and by the
//! answer's tokens (`call.rs`). Redirects are not followed: the key is for this endpoint only.

mod body;
mod discovery;
mod refusal;
mod sse;

use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{Stream, StreamExt};
use langchain_rust::language_models::llm::LLM;
use langchain_rust::language_models::{GenerateResult, LLMError, TokenUsage};
use langchain_rust::schemas::{Message as LlmMessage, MessageType, StreamData};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use tracing::warn;

pub use refusal::{Refusal, RefusalKind};

use super::{ModelWindow, WindowSource};

/// Where an OpenAI-compatible provider is and which model to use.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub base_url: String,
    /// Never printed (`SecretString`'s `Debug` says `[REDACTED]`).
    pub api_key: SecretString,
    pub model: String,
}

impl Endpoint {
    pub const OPENAI_BASE_URL: &'static str = "https://api.openai.com/v1";
    pub const OPENAI_MODEL: &'static str = "gpt-4o-mini";
    pub const OLLAMA_BASE_URL: &'static str = "http://127.0.0.1:11434/v1";
    pub const OLLAMA_MODEL: &'static str = "llama3.2";
}

/// Why a request to the provider failed, as the AI service needs to tell it apart.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("cannot reach the provider: {0}")]
    Unreachable(String),
    #[error("the provider answered {}: {}", .0.status, .0.message)]
    Refused(Refusal),
    #[error("the provider's answer is malformed: {0}")]
    Malformed(String),
    #[error("the provider's answer is over {0} bytes")]
    TooLarge(usize),
    #[error("the provider redirected ({status}) to {location}: redirects are not followed, set AI_BASE_URL to the endpoint itself")]
    Redirected { status: u16, location: String },
}

impl ProviderError {
    /// The typed error inside a langchain-rust error, when it came from this client (it travels
    /// as an `io::Error` source, the one variant that carries a foreign error).
    pub fn inside(err: &LLMError) -> Option<&ProviderError> {
        match err {
            LLMError::IoError(io) => io.get_ref()?.downcast_ref::<ProviderError>(),
            _ => None,
        }
    }
}

impl From<ProviderError> for LLMError {
    fn from(err: ProviderError) -> Self {
        LLMError::IoError(std::io::Error::other(err))
    }
}

/// The structured output a call asks for, best first.
#[derive(Debug, Clone, PartialEq)]
pub enum Format {
    JsonSchema { name: &'static str, schema: Value },
    JsonObject,
    Text,
}

impl Format {
    fn rank(&self) -> u8 {
        match self {
            Format::JsonSchema { .. } => 2,
            Format::JsonObject => 1,
            Format::Text => 0,
        }
    }
}

/// The best response format an endpoint has taken, learnt from its first refusal and shared by
/// every model of that endpoint, so only the first message ever pays for the refusal.
#[derive(Debug)]
struct FormatSupport(AtomicU8);

impl FormatSupport {
    /// `wanted`, or the best simpler format the endpoint takes.
    fn usable(&self, wanted: &Format) -> Format {
        match (wanted, self.0.load(Ordering::Relaxed)) {
            (Format::JsonSchema { .. }, 1) | (Format::JsonObject, 1) => Format::JsonObject,
            (_, 0) => Format::Text,
            (wanted, _) => wanted.clone(),
        }
    }

    /// Records that `refused` is not taken; false when there is nothing simpler to try.
    fn refused(&self, refused: &Format) -> bool {
        if refused.rank() == 0 {
            return false;
        }
        self.0.fetch_min(refused.rank() - 1, Ordering::Relaxed);
        true
    }
}

/// One endpoint's connection pool and what it has learnt; each model of it shares them.
#[derive(Clone)]
pub struct Provider {
    http: reqwest::Client,
    endpoint: Arc<Endpoint>,
    formats: Arc<FormatSupport>,
    /// The model's window: answers are sized by it, and a refusal that names it updates it.
    window: Arc<ModelWindow>,
}

impl Provider {
    pub fn new(endpoint: Endpoint, window: Arc<ModelWindow>) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // The key goes to AI_BASE_URL only, and a provider cannot point us at another
            // address (an internal one) whose answer would be streamed to the user.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        let formats = Arc::new(FormatSupport(AtomicU8::new(2)));
        Self { http, endpoint: Arc::new(endpoint), formats, window }
    }

    /// A model of this endpoint called with `options`.
    pub fn model(&self, options: CallOptions) -> OpenAiCompatible {
        OpenAiCompatible { provider: self.clone(), options }
    }
}

/// The `max_tokens` a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxTokens {
    None,
    Fixed(u32),
    /// The answer's room in the model's window as known at the time of the request.
    Answer,
}

/// What each request of a model carries besides the messages.
#[derive(Debug, Clone)]
pub struct CallOptions {
    pub temperature: Option<f32>,
    pub max_tokens: MaxTokens,
    pub format: Format,
    /// Ask for usage in the stream's last chunk.
    pub stream_usage: bool,
    /// The final assistant message is the start of the reply, to continue (vLLM's
    /// `continue_final_message`; llama.cpp's server does it unasked).
    pub continue_final_message: bool,
}

impl Default for CallOptions {
    fn default() -> Self {
        Self {
            temperature: None,
            max_tokens: MaxTokens::None,
            format: Format::Text,
            stream_usage: false,
            continue_final_message: false,
        }
    }
}

/// A model of an OpenAI-compatible endpoint.
#[derive(Clone)]
pub struct OpenAiCompatible {
    provider: Provider,
    options: CallOptions,
}

impl OpenAiCompatible {
    fn max_tokens(&self) -> Option<u32> {
        match self.options.max_tokens {
            MaxTokens::None => None,
            MaxTokens::Fixed(n) => Some(n),
            MaxTokens::Answer => Some(self.provider.window.current().answer_tokens),
        }
    }

    fn body(&self, messages: &[LlmMessage], stream: bool, format: &Format) -> Value {
        let messages: Vec<Value> =
            messages.iter().map(|m| json!({ "role": role(&m.message_type), "content": m.content })).collect();
        let mut body =
            json!({ "model": self.provider.endpoint.model, "messages": messages, "stream": stream });
        let o = &self.options;
        if let Some(t) = o.temperature {
            body["temperature"] = json!(t);
        }
        if let Some(n) = self.max_tokens() {
            body["max_tokens"] = json!(n);
        }
        match format {
            Format::JsonSchema { name, schema } => {
                body["response_format"] = json!({ "type": "json_schema", "json_schema": { "name": name, "schema": schema, "strict": true } })
            }
            Format::JsonObject => body["response_format"] = json!({ "type": "json_object" }),
            Format::Text => {}
        }
        if stream && o.stream_usage {
            body["stream_options"] = json!({ "include_usage": true });
        }
        if o.continue_final_message {
            body["continue_final_message"] = json!(true);
            body["add_generation_prompt"] = json!(false);
        }
        body
    }

    /// Sends the request once (again at once with a simpler format when the endpoint refuses
    /// the format asked for).
    async fn send(&self, messages: &[LlmMessage], stream: bool) -> Result<reqwest::Response, ProviderError> {
        let endpoint = &self.provider.endpoint;
        let url = format!("{}/chat/completions", endpoint.base_url.trim_end_matches('/'));
        loop {
            let format = self.provider.formats.usable(&self.options.format);
            let response = self
                .provider
                .http
                .post(&url)
                .bearer_auth(endpoint.api_key.expose_secret())
                .json(&self.body(messages, stream, &format))
                .send()
                .await
                .map_err(|e| ProviderError::Unreachable(e.to_string()))?;
            if response.status().is_success() {
                return Ok(response);
            }
            let status = response.status().as_u16();
            if response.status().is_redirection() {
                let location = response.headers().get(http::header::LOCATION);
                let location =
                    location.and_then(|l| l.to_str().ok()).unwrap_or("nowhere").chars().take(200).collect();
                return Err(ProviderError::Redirected { status, location });
            }
            let headers = response.headers().clone();
            // Only its start is read: the message is cut for the log anyway.
            let body = body::start_of(response, body::ERROR_BODY_BYTES).await;
            let mut refusal = Refusal::read(status, &headers, &body);
            refusal.message = body::without_key(&refusal.message, endpoint.api_key.expose_secret());
            if let (RefusalKind::ContextTooLong, Some(window)) = (refusal.kind(), refusal.window) {
                self.provider.window.learn(window, WindowSource::Refusal);
            }
            if refusal.kind() == RefusalKind::FormatUnsupported && self.provider.formats.refused(&format) {
                warn!(status, refused = ?format_name(&format), "the provider refuses this response format: using a simpler one from now on");
                continue;
            }
            return Err(ProviderError::Refused(refusal));
        }
    }
}

impl OpenAiCompatible {
    /// Most bytes a whole completion may take: room for its JSON and for `max_tokens` tokens
    /// however escaped (a token is a few characters; one escaped character up to 12 bytes).
    fn completion_bytes(&self) -> usize {
        let tokens = self.max_tokens().unwrap_or(4_096) as usize;
        body::COMPLETION_OVERHEAD_BYTES.saturating_add(tokens.saturating_mul(64))
    }
}

fn format_name(format: &Format) -> &'static str {
    match format {
        Format::JsonSchema { .. } => "json_schema",
        Format::JsonObject => "json_object",
        Format::Text => "text",
    }
}

fn role(kind: &MessageType) -> &'static str {
    match kind {
        MessageType::SystemMessage => "system",
        MessageType::AIMessage => "assistant",
        MessageType::HumanMessage => "user",
        MessageType::ToolMessage => "tool",
    }
}

/// The usage a chunk or a completion reports, if any.
fn usage_of(value: &Value) -> Option<TokenUsage> {
    let usage = value.get("usage")?;
    let count = |name: &str| usage.get(name)?.as_u64().and_then(|n| u32::try_from(n).ok());
    Some(TokenUsage::new(count("prompt_tokens")?, count("completion_tokens").unwrap_or(0)))
}

/// The text of a streamed chunk (`delta.content`) or of a whole completion (`message.content`).
fn text_of(value: &Value) -> String {
    let choice = &value["choices"][0];
    let text = choice["delta"]["content"].as_str().or_else(|| choice["message"]["content"].as_str());
    text.unwrap_or_default().to_owned()
}

/// A chunk (or a whole completion) as langchain-rust streams it, the provider's JSON kept whole.
fn stream_data(value: Value) -> StreamData {
    let (usage, text) = (usage_of(&value), text_of(&value));
    StreamData::new(value, usage, text)
}

type DataStream = Pin<Box<dyn Stream<Item = Result<StreamData, LLMError>> + Send>>;

#[async_trait]
impl LLM for OpenAiCompatible {
    async fn generate(&self, messages: &[LlmMessage]) -> Result<GenerateResult, LLMError> {
        let response = self.send(messages, false).await?;
        let body = body::whole(response, self.completion_bytes()).await?;
        let value: Value = serde_json::from_slice(&body)
            .map_err(|e| ProviderError::Malformed(format!("the completion is not JSON: {e}")))?;
        if value.get("choices").is_none() {
            return Err(ProviderError::Malformed("the completion has no choices".into()).into());
        }
        Ok(GenerateResult { tokens: usage_of(&value), generation: text_of(&value), ..Default::default() })
    }

    /// Streams the answer; each item's `value` is the provider's chunk (its `finish_reason` tells
    /// an answer cut at `max_tokens`). A server that answers a whole completion instead of a
    /// stream gives it as one chunk.
    async fn stream(&self, messages: &[LlmMessage]) -> Result<DataStream, LLMError> {
        let response = self.send(messages, true).await?;
        let is_sse = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !is_sse {
            let body = body::whole(response, self.completion_bytes()).await?;
            let value: Value = serde_json::from_slice(&body)
                .ok()
                .filter(|v: &Value| v.get("choices").is_some())
                .ok_or_else(|| {
                    ProviderError::Malformed("a 200 that is neither a stream nor a completion".into())
                })?;
            let data = stream_data(value);
            return Ok(Box::pin(futures::stream::iter([Ok(data)])));
        }
        let endpoint = self.provider.endpoint.clone();
        let chunks = sse::events(response.bytes_stream()).map(move |event| match event {
            Ok(value) if value.get("error").is_some() => {
                let mut refusal = Refusal::read(500, &http::HeaderMap::new(), value.to_string().as_bytes());
                refusal.message = body::without_key(&refusal.message, endpoint.api_key.expose_secret());
                Err(ProviderError::Refused(refusal).into())
            }
            Ok(value) => Ok(stream_data(value)),
            Err(sse::SseError::Read(e)) => Err(ProviderError::Unreachable(e).into()),
            Err(sse::SseError::Malformed(e)) => Err(ProviderError::Malformed(e).into()),
        });
        Ok(Box::pin(chunks))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_step_down_and_stay_down() {
        let support = FormatSupport(AtomicU8::new(2));
        let schema = Format::JsonSchema { name: "intent", schema: json!({}) };
        assert_eq!(support.usable(&schema), schema);
        assert!(support.refused(&schema));
        assert_eq!(support.usable(&schema), Format::JsonObject);
        assert_eq!(support.usable(&Format::JsonObject), Format::JsonObject);
        assert!(support.refused(&Format::JsonObject));
        assert_eq!(support.usable(&schema), Format::Text);
        assert!(!support.refused(&Format::Text), "nothing simpler than text");
        assert_eq!(support.usable(&Format::Text), Format::Text);
    }

    #[test]
    fn the_api_key_never_prints() {
        let endpoint = Endpoint {
            base_url: "u".into(),
            api_key: SecretString::from("sk-secret-key"),
            model: "m".into(),
        };
        assert!(!format!("{endpoint:?}").contains("sk-secret-key"));
    }

    #[test]
    fn a_provider_error_survives_the_trip_through_langchain_rust() {
        let err: LLMError = ProviderError::Malformed("x".into()).into();
        assert!(matches!(ProviderError::inside(&err), Some(ProviderError::Malformed(_))));
        assert!(ProviderError::inside(&LLMError::OtherError("y".into())).is_none());
    }
}
