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

/// A model call with the given options (temperature, max tokens, response format).
pub fn model(endpoint: &Endpoint, options: CallOptions) -> OpenAI<OpenAIConfig> {
    let config = OpenAIConfig::default()
        .with_api_base(endpoint.base_url.trim_end_matches('/'))
        .with_api_key(endpoint.api_key.clone());
    OpenAI::new(config)
        .with_model(endpoint.model.clone())
        .with_options(options)
}

/// What a provider failure means for the client: unavailable (retryable), timed out, or failed.
pub fn classify(err: &LLMError) -> Option<AiError> {
    let LLMError::OpenAIError(err) = err else {
        return None;
    };
    Some(match err {
        OpenAIError::Reqwest(e) if e.is_timeout() => AiError::Timeout,
        OpenAIError::Reqwest(e) => AiError::Unavailable(format!("cannot reach the provider: {e}")),
        OpenAIError::ApiError(resp)
            if resp.status_code.as_u16() == 429 || resp.status_code.is_server_error() =>
        {
            AiError::Unavailable(format!("provider answered {}", resp.status_code))
        }
        OpenAIError::ApiError(resp) => AiError::Failed(format!(
            "provider refused the request: {}",
            resp.status_code
        )),
        OpenAIError::StreamError(e) => AiError::Failed(format!("malformed stream: {e}")),
        OpenAIError::JSONDeserialize(e, _) => AiError::Failed(format!("malformed response: {e}")),
        other => AiError::Failed(other.to_string()),
    })
}
