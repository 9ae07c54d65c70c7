//! What a provider's refusal means: busy (come back later, maybe after `Retry-After`), a prompt
//! over the model's window, a response format it does not support, or a plain refusal.

use std::time::Duration;

use http::HeaderMap;

/// Most of a refusal's body kept for logs (it is never shown to users).
const MESSAGE_CHARS: usize = 300;

/// A non-2xx answer from the provider.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub status: u16,
    /// The provider's `Retry-After` (or `retry-after-ms`), else the wait its message names.
    pub retry_after: Option<Duration>,
    /// The error message (or the start of the body when it is not the usual JSON).
    pub message: String,
    /// The error's `code` or `type`, when the body has one (`context_length_exceeded`).
    pub code: Option<String>,
    /// The model's window, when a context-length refusal names it (see [`named_window`]).
    pub window: Option<u32>,
}

/// How a refusal is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// 429 or 5xx: worth asking again later.
    Busy,
    /// The prompt does not fit the model's context window: trim it and ask again.
    ContextTooLong,
    /// The endpoint does not take the `response_format` sent: ask with a simpler one.
    FormatUnsupported,
    /// Anything else (bad key, unknown model): asking again will not help.
    Refused,
}

impl Refusal {
    /// Reads a refusal's status, headers and body.
    pub fn read(status: u16, headers: &HeaderMap, body: &[u8]) -> Self {
        let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
        let error = json.as_ref().and_then(|j| j.get("error"));
        // OpenAI nests {error: {message, code, type}}; some servers put a string there.
        let message = error
            .and_then(|e| e.get("message").and_then(|m| m.as_str()).or_else(|| e.as_str()))
            .or_else(|| json.as_ref().and_then(|j| j.get("detail")).and_then(|d| d.as_str()))
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
        let code = error
            .and_then(|e| e.get("code").and_then(|c| c.as_str()).or_else(|| e.get("type")?.as_str()))
            .map(str::to_owned);
        let retry_after = header_wait(headers).or_else(|| named_wait(&message));
        // llama.cpp's server says it as a field of the error too.
        let field = error.and_then(|e| e.get("n_ctx")?.as_u64()).and_then(|n| u32::try_from(n).ok());
        let window = field.filter(|n| *n > 0).or_else(|| named_window(&message));
        let message = message.chars().take(MESSAGE_CHARS).collect();
        Refusal { status, retry_after, message, code, window }
    }

    /// What to do about it.
    pub fn kind(&self) -> RefusalKind {
        let text = format!("{} {}", self.message, self.code.as_deref().unwrap_or("")).to_lowercase();
        let client_error = (400..500).contains(&self.status) && self.status != 429;
        if (client_error || self.status >= 500) && names_context_window(&text) {
            RefusalKind::ContextTooLong
        } else if (client_error || self.status >= 500) && names_response_format(&text) {
            RefusalKind::FormatUnsupported
        } else if self.status == 429 || self.status >= 500 {
            RefusalKind::Busy
        } else {
            RefusalKind::Refused
        }
    }
}

/// OpenAI's `context_length_exceeded`, vLLM's "maximum context length", llama.cpp's "exceeds the
/// available context size", llama-cpp-python's "exceed context window", Ollama's "context window".
fn names_context_window(text: &str) -> bool {
    ["context_length_exceeded", "context length", "context window", "context size", "too many tokens"]
        .iter()
        .any(|needle| text.contains(needle))
}

/// The window a context-length refusal names: OpenAI's and vLLM's "maximum context length is
/// 4096 tokens", llama.cpp's "exceeds the available context size (4096 tokens)",
/// llama-cpp-python's "exceed context window of 4096", LM Studio's "loaded with context length of
/// only 4096 tokens".
fn named_window(message: &str) -> Option<u32> {
    let lower = message.to_lowercase();
    [
        "maximum context length is ",
        "available context size (",
        "context window of ",
        "context length of only ",
    ]
    .iter()
    .find_map(|phrase| {
        let rest = &lower[lower.find(phrase)? + phrase.len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u32>().ok().filter(|n| *n > 0)
    })
}

/// llama.cpp: "Input should be 'text' or 'json_object'"; others name the field.
fn names_response_format(text: &str) -> bool {
    ["response_format", "json_schema", "json_object"].iter().any(|needle| text.contains(needle))
}

/// `retry-after-ms` (OpenAI), else `Retry-After` in seconds.
fn header_wait(headers: &HeaderMap) -> Option<Duration> {
    let read = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<f64>().ok();
    let wait = read("retry-after-ms").map(|ms| ms / 1000.0).or_else(|| read("retry-after"))?;
    (wait.is_finite() && wait >= 0.0).then(|| Duration::from_secs_f64(wait.min(86_400.0)))
}

/// The wait a provider names in its message ("Please try again in 1.5s", "… in 20ms").
fn named_wait(message: &str) -> Option<Duration> {
    let lower = message.to_lowercase();
    let rest = &lower[lower.find("try again in ")? + "try again in ".len()..];
    let number: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    let value: f64 = number.parse().ok()?;
    let unit = rest[number.len()..].trim_start();
    let seconds = if unit.starts_with("ms") {
        value / 1000.0
    } else if unit.starts_with('m') {
        value * 60.0
    } else {
        value
    };
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.min(86_400.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(status: u16, headers: &[(&'static str, &str)], body: &str) -> Refusal {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, value.parse().unwrap());
        }
        Refusal::read(status, &map, body.as_bytes())
    }

    #[test]
    fn retry_after_comes_from_the_header_first_then_the_message() {
        let r = refusal(429, &[("retry-after", "7")], r#"{"error":{"message":"slow down"}}"#);
        assert_eq!((r.retry_after, r.kind()), (Some(Duration::from_secs(7)), RefusalKind::Busy));
        let r = refusal(429, &[("retry-after-ms", "250"), ("retry-after", "1")], "{}");
        assert_eq!(r.retry_after, Some(Duration::from_millis(250)));
        let r = refusal(429, &[], r#"{"error":{"message":"Rate limit reached. Please try again in 1.5s."}}"#);
        assert_eq!(r.retry_after, Some(Duration::from_millis(1500)));
        assert_eq!(
            refusal(429, &[], r#"{"error":{"message":"try again in 2m"}}"#).retry_after,
            Some(Duration::from_secs(120))
        );
        assert_eq!(refusal(503, &[("retry-after", "soon")], "busy").retry_after, None);
    }

    #[test]
    fn the_usual_refusals_are_told_apart() {
        let openai = r#"{"error":{"message":"This model's maximum context length is 4096 tokens","code":"context_length_exceeded"}}"#;
        assert_eq!(refusal(400, &[], openai).kind(), RefusalKind::ContextTooLong);
        let llama_cpp = r#"{"error":{"code":400,"message":"the request exceeds the available context size, try increasing it","type":"exceed_context_size_error"}}"#;
        assert_eq!(refusal(400, &[], llama_cpp).kind(), RefusalKind::ContextTooLong);
        let format = r#"{"error":{"message":"Input should be 'text' or 'json_object'"}}"#;
        assert_eq!(refusal(500, &[], format).kind(), RefusalKind::FormatUnsupported);
        assert_eq!(refusal(500, &[], "upstream exploded").kind(), RefusalKind::Busy);
        assert_eq!(refusal(401, &[], r#"{"error":{"message":"bad key"}}"#).kind(), RefusalKind::Refused);
        assert_eq!(refusal(401, &[], r#"{"error":{"message":"bad key"}}"#).message, "bad key");
    }

    #[test]
    fn a_context_length_refusal_names_the_window_in_every_server_we_know() {
        let cases = [
            (
                r#"{"error":{"message":"This model's maximum context length is 128000 tokens. However, your messages resulted in 130000 tokens.","code":"context_length_exceeded"}}"#,
                128_000,
            ),
            (
                r#"{"object":"error","message":"This model's maximum context length is 4096 tokens. However, you requested 5000 tokens (4000 in the messages, 1000 in the completion).","type":"BadRequestError","code":400}"#,
                4_096,
            ),
            (
                r#"{"error":{"code":400,"message":"request (4476 tokens) exceeds the available context size (4096 tokens), try increasing it","type":"exceed_context_size_error","n_prompt_tokens":4476,"n_ctx":4096}}"#,
                4_096,
            ),
            (
                r#"{"error":{"code":400,"message":"the request exceeds the available context size, try increasing it","type":"exceed_context_size_error","n_ctx":2048}}"#,
                2_048,
            ),
            (
                r#"{"error":{"message":"Requested tokens (5012) exceed context window of 4096","type":"internal_server_error"}}"#,
                4_096,
            ),
            (
                r#"{"error":"Trying to keep the first 5000 tokens when context the overflows. However, the model is loaded with context length of only 4096 tokens, which is not enough."}"#,
                4_096,
            ),
        ];
        for (body, window) in cases {
            let r = refusal(400, &[], body);
            assert_eq!((r.kind(), r.window), (RefusalKind::ContextTooLong, Some(window)), "{body}");
        }
        assert_eq!(refusal(400, &[], r#"{"error":{"message":"context window exceeded"}}"#).window, None);
    }
}
