//! Reading a provider's body within a bound, and its error messages without the API key.

use bytes::{Bytes, BytesMut};

use super::ProviderError;

/// Most of an error body read (its message is cut for the log anyway).
pub const ERROR_BODY_BYTES: usize = 64 * 1024;

/// A whole completion's JSON around its text (ids, usage, logprobs the model adds).
pub const COMPLETION_OVERHEAD_BYTES: usize = 64 * 1024;

/// The whole body, refused as soon as it is over `limit` bytes (announced or read).
pub async fn whole(mut response: reqwest::Response, limit: usize) -> Result<Bytes, ProviderError> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(ProviderError::TooLarge(limit));
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| ProviderError::Unreachable(e.to_string()))? {
        if body.len() + chunk.len() > limit {
            return Err(ProviderError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The first `limit` bytes of the body (fewer when it ends or fails first); the rest is never
/// read: dropping the response closes it.
pub async fn start_of(mut response: reqwest::Response, limit: usize) -> Bytes {
    let mut body = BytesMut::new();
    while body.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk[..chunk.len().min(limit - body.len())]),
            Ok(None) | Err(_) => break,
        }
    }
    body.freeze()
}

/// `message` with anything that looks like the API key replaced (providers echo a wrong key,
/// whole or with its middle masked: "Incorrect API key provided: sk-abc1***wxyz").
pub fn without_key(message: &str, key: &str) -> String {
    let head: String = key.chars().take(6).collect();
    let tail: String = key.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
    let looks_like_key = |word: &str| {
        let word = word.trim_matches(|c: char| !c.is_alphanumeric() && c != '-' && c != '_' && c != '*');
        word.starts_with("sk-")
            || (key.chars().count() >= 8
                && (word.contains(&head) || (word.ends_with(&tail) && word.len() >= 8)))
    };
    let mut out = String::with_capacity(message.len());
    for (i, word) in message.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(if looks_like_key(word) { "[REDACTED]" } else { word });
    }
    if key.len() >= 8 {
        out = out.replace(key, "[REDACTED]");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_echoed_whole_or_masked_is_redacted() {
        let key = "sk-proj-abcdefghijklmnopqrstuvwxyz0123";
        let echoed = format!("Incorrect API key provided: {key}. You can find your API key at …");
        let cleaned = without_key(&echoed, key);
        assert!(!cleaned.contains("abcdefghij") && cleaned.contains("[REDACTED]"), "{cleaned}");
        assert!(cleaned.starts_with("Incorrect API key provided:"), "the rest of the message is kept");
        let masked = without_key("Incorrect API key provided: sk-proj-***********************0123.", key);
        assert!(!masked.contains("0123"), "{masked}");
        let custom =
            without_key("bad token \"tok_live_1234567890abcdef\" for model", "tok_live_1234567890abcdef");
        assert!(!custom.contains("1234567890"), "{custom}");
        assert_eq!(without_key("model not found", key), "model not found");
    }
}
