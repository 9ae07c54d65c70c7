//! OpenAI-compatible endpoints (`AI_PROVIDER=openai`: OpenAI, vLLM, llama.cpp server, LM Studio;
//! `AI_PROVIDER=ollama`: Ollama's `/v1`), through langchain-rust's `OpenAI` LLM.
//!
//! The client has no timeout of its own: the answer job bounds the first token, each gap and
//! the whole answer, and dropping the stream closes the HTTP request (that is how a stop stops
//! the provider too). The client retries 429, 5xx and refused connections up to three times,
//! honouring `Retry-After`, before an error reaches us.

use async_openai::error::OpenAIError;
use langchain_rust::language_models::options::CallOptions;
use langchain_rust::language_models::LLMError;
use langchain_rust::llm::{OpenAI, OpenAIConfig};
use langchain_rust::schemas::ResponseFormat;

use super::AiError;

/// Where an OpenAI-compatible provider is and which model to use.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub base_url: String,
    pub api_key: String,
    pub model: String,
}

impl Endpoint {
    pub const OPENAI_BASE_URL: &'static str = "https://api.openai.com/v1";
    pub const OPENAI_MODEL: &'static str = "gpt-4o-mini";
    pub const OLLAMA_BASE_URL: &'static str = "http://127.0.0.1:11434/v1";
    pub const OLLAMA_MODEL: &'static str = "llama3.2";
}

/// The streaming chat model for answers (usage reported in the stream when the server can).
pub fn chat_model(endpoint: &Endpoint) -> OpenAI<OpenAIConfig> {
    model(endpoint, CallOptions::default().with_stream_usage(true))
}

/// The intent classifier: temperature 0, a few tokens, answers in the intent JSON schema.
pub fn classifier_model(endpoint: &Endpoint) -> OpenAI<OpenAIConfig> {
    let format = ResponseFormat::JsonSchema {
        name: "intent".into(),
        description: Some("What the user's message asks for".into()),
        schema: Some(super::intent::classifier_schema()),
        strict: Some(true),
    };
    model(
        endpoint,
        CallOptions::default().with_temperature(0.0).with_max_tokens(60).with_response_format(format),
    )
}

/// The posts writer: asked for a JSON object.
pub fn posts_model(endpoint: &Endpoint) -> OpenAI<OpenAIConfig> {
    model(endpoint, CallOptions::default().with_response_format(ResponseFormat::JsonObject))
}

/// A model call with the given options (temperature, max tokens, response format).
fn model(endpoint: &Endpoint, options: CallOptions) -> OpenAI<OpenAIConfig> {
    let config = OpenAIConfig::default()
        .with_api_base(endpoint.base_url.trim_end_matches('/'))
        .with_api_key(endpoint.api_key.clone());
    OpenAI::new(config).with_model(endpoint.model.clone()).with_options(options)
}

/// What a provider failure means for the client: unavailable (retryable), timed out, or failed.
pub fn classify(err: &LLMError) -> Option<AiError> {
    let LLMError::OpenAIError(err) = err else {
        return None;
    };
    Some(match err {
        OpenAIError::Reqwest(e) if e.is_timeout() => AiError::Timeout,
        OpenAIError::Reqwest(e) => AiError::unavailable(format!("cannot reach the provider: {e}")),
        OpenAIError::ApiError(resp)
            if resp.status_code.as_u16() == 429 || resp.status_code.is_server_error() =>
        {
            AiError::Unavailable {
                message: format!("provider answered {}", resp.status_code),
                retry_after: retry_after_in(&resp.api_error.message),
            }
        }
        OpenAIError::ApiError(resp) => {
            AiError::Failed(format!("provider refused the request: {}", resp.status_code))
        }
        OpenAIError::StreamError(e) => AiError::Failed(format!("malformed stream: {e}")),
        OpenAIError::JSONDeserialize(e, _) => AiError::Failed(format!("malformed response: {e}")),
        other => AiError::Failed(other.to_string()),
    })
}

/// The wait a provider names in its error message ("Please try again in 1.5s", "… in 20ms").
/// The client consumes the `Retry-After` header in its own retries and does not pass it on, so
/// the message is where the provider's word reaches us.
fn retry_after_in(message: &str) -> Option<std::time::Duration> {
    let lower = message.to_lowercase();
    let rest = &lower[lower.find("try again in ")? + "try again in ".len()..];
    let number: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    let value: f64 = number.parse().ok()?;
    let unit = rest[number.len()..].trim_start();
    let seconds = if unit.starts_with("ms") {
        value / 1000.0
    } else if unit.starts_with('m') && !unit.starts_with("ms") {
        value * 60.0
    } else {
        value
    };
    (seconds.is_finite() && seconds >= 0.0).then(|| std::time::Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn reads_the_wait_a_provider_names() {
        assert_eq!(
            retry_after_in("Rate limit reached. Please try again in 1.5s."),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(retry_after_in("Please try again in 20ms"), Some(Duration::from_millis(20)));
        assert_eq!(retry_after_in("try again in 2m"), Some(Duration::from_secs(120)));
        assert_eq!(retry_after_in("slow down"), None);
    }
}
