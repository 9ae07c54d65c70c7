//! The chat layer's error, mapped once to the wire codes of PROTOCOL.md (Errors).

use serde::Serialize;

use crate::ai::AiError;
use crate::domain::InvalidInput;
use crate::store::StoreError;

/// The `code` of an error on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    Unauthorized,
    NotFound,
    InvalidInput,
    RateLimited,
    Busy,
    Conflict,
    AiUnavailable,
    AiTimeout,
    AiError,
    StorageUnavailable,
    SlowConsumer,
    ServerShutdown,
    ClusterUnavailable,
    Internal,
}

impl ErrorCode {
    /// The wire spelling, also the `code` label of `postchat_errors_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::InvalidInput => "INVALID_INPUT",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::Busy => "BUSY",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::AiUnavailable => "AI_UNAVAILABLE",
            ErrorCode::AiTimeout => "AI_TIMEOUT",
            ErrorCode::AiError => "AI_ERROR",
            ErrorCode::StorageUnavailable => "STORAGE_UNAVAILABLE",
            ErrorCode::SlowConsumer => "SLOW_CONSUMER",
            ErrorCode::ServerShutdown => "SERVER_SHUTDOWN",
            ErrorCode::ClusterUnavailable => "CLUSTER_UNAVAILABLE",
            ErrorCode::Internal => "INTERNAL",
        }
    }
}

/// Anything that can go wrong handling a chat request.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("unauthorized")]
    Unauthorized,
    #[error("{0}")]
    InvalidInput(#[from] InvalidInput),
    /// Missing, or owned by someone else: the two are never told apart.
    #[error("not found")]
    NotFound,
    #[error("too many messages: retry in {} ms", retry_after.as_millis())]
    RateLimited { retry_after: std::time::Duration },
    #[error("an answer is already being generated for this session")]
    Busy,
    #[error("this clientMessageId was already used with different content")]
    Conflict,
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The socket could not keep up with the stream.
    #[error("this connection could not keep up with the stream; reconnect and join the session to resume")]
    SlowConsumer,
    /// Cluster mode: Redis, which the processes share, cannot be reached.
    #[error("the servers cannot reach each other (Redis is unreachable); try again shortly")]
    ClusterUnavailable,
    /// Cluster mode: the process generating an answer stopped without ending it.
    #[error("the server generating this answer stopped; the text so far is stored as interrupted")]
    ProcessLost,
    /// An error another process reported for an answer it generates (cluster mode), as its
    /// clients see it there.
    #[error("{message}")]
    Relayed { code: ErrorCode, message: String, retry_after_ms: Option<u64> },
    /// A bug on our side; the cause is in the log.
    #[error("internal error")]
    Internal,
    #[error(transparent)]
    Ai(#[from] AiError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ChatError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ChatError::Unauthorized => ErrorCode::Unauthorized,
            ChatError::InvalidInput(_) => ErrorCode::InvalidInput,
            ChatError::NotFound => ErrorCode::NotFound,
            ChatError::RateLimited { .. } => ErrorCode::RateLimited,
            ChatError::Busy => ErrorCode::Busy,
            ChatError::Conflict => ErrorCode::Conflict,
            ChatError::ShuttingDown | ChatError::ProcessLost => ErrorCode::ServerShutdown,
            ChatError::ClusterUnavailable => ErrorCode::ClusterUnavailable,
            ChatError::Relayed { code, .. } => *code,
            ChatError::Internal => ErrorCode::Internal,
            ChatError::SlowConsumer => ErrorCode::SlowConsumer,
            ChatError::Ai(AiError::Unavailable { .. }) => ErrorCode::AiUnavailable,
            ChatError::Ai(AiError::Timeout) => ErrorCode::AiTimeout,
            ChatError::Ai(AiError::Failed(_) | AiError::ContextTooLong(_) | AiError::TooManyCalls(_)) => {
                ErrorCode::AiError
            }
            ChatError::Ai(AiError::BudgetSpent) => ErrorCode::RateLimited,
            ChatError::Store(StoreError::Unavailable(_)) => ErrorCode::StorageUnavailable,
            ChatError::Store(_) => ErrorCode::Internal,
        }
    }

    /// Whether sending the same request again later may succeed.
    pub fn retryable(&self) -> bool {
        matches!(
            self.code(),
            ErrorCode::Busy
                | ErrorCode::SlowConsumer
                | ErrorCode::RateLimited
                | ErrorCode::AiUnavailable
                | ErrorCode::AiTimeout
                | ErrorCode::StorageUnavailable
                | ErrorCode::ServerShutdown
                | ErrorCode::ClusterUnavailable
        )
    }

    /// When to retry: for `RATE_LIMITED`, and for `AI_UNAVAILABLE` when the provider said.
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            ChatError::RateLimited { retry_after }
            | ChatError::Ai(AiError::Unavailable { retry_after: Some(retry_after), .. }) => {
                Some(retry_after.as_millis().max(1) as u64)
            }
            ChatError::Relayed { retry_after_ms, .. } => *retry_after_ms,
            _ => None,
        }
    }

    /// The text a client may see. Errors with an internal cause (SQL, provider bodies, bugs) are
    /// logged here, once, with a fresh reference; the client sees only a plain sentence and the
    /// reference, which finds the log line.
    pub fn client_message(&self) -> String {
        let plain = match self {
            ChatError::Ai(AiError::Unavailable { .. }) => "the AI provider is unavailable",
            ChatError::Ai(AiError::Timeout) => "the AI provider timed out",
            ChatError::Ai(AiError::Failed(_)) => "the AI provider failed to answer",
            ChatError::Ai(AiError::ContextTooLong(_)) => "the conversation is too long for the model",
            ChatError::Store(StoreError::Unavailable(_)) => "storage is unavailable",
            ChatError::Store(_) | ChatError::Internal => "internal error",
            other => return other.to_string(),
        };
        let reference = reference();
        tracing::warn!(%reference, code = ?self.code(), error = %self, "error reported to a client");
        format!("{plain} (ref {reference})")
    }
}

/// A short random reference that ties a client's error to its log line.
fn reference() -> String {
    format!("{:08x}", rand::random::<u32>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_causes_are_replaced_by_a_reference() {
        let err = ChatError::Store(StoreError::Corrupt("row 42 has status 'zzz' in table messages".into()));
        let message = err.client_message();
        assert!(message.starts_with("internal error (ref "), "{message}");
        assert!(!message.contains("messages"));
        let provider = ChatError::Ai(AiError::Failed("upstream said: secret-key-123 invalid".into()));
        assert!(!provider.client_message().contains("secret-key-123"));
    }

    #[test]
    fn client_errors_keep_their_own_words() {
        assert_eq!(ChatError::NotFound.client_message(), "not found");
        assert_eq!(ChatError::Busy.client_message(), "an answer is already being generated for this session");
    }
}
