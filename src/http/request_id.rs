//! Request ids: a client's `x-request-id` is kept (logged and echoed) only when it is short and
//! made of safe characters; any other is dropped, and a new one is made in its place. A request
//! id with spaces or braces would otherwise forge fields in text log lines.

use axum::extract::Request;
use axum::http::HeaderName;
use axum::middleware::Next;
use axum::response::Response;

/// The header, as tower-http's request-id layers name it.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest request id kept.
pub const MAX_LEN: usize = 128;

/// Whether `id` is kept as it is: 1 to 128 of `A-Z a-z 0-9 - _ . : / + =`.
pub fn is_acceptable(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id.iter().all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(b))
}

/// Drops a request id that is not acceptable (the next layer makes one).
pub async fn drop_unacceptable(mut req: Request, next: Next) -> Response {
    if req.headers().get(&X_REQUEST_ID).is_some_and(|id| !is_acceptable(id.as_bytes())) {
        req.headers_mut().remove(&X_REQUEST_ID);
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_printable_ids_are_kept() {
        assert!(is_acceptable(b"5c0ffee1-aaaa-bbbb"));
        assert!(is_acceptable(b"trace:abc/1+2="));
        assert!(!is_acceptable(b""));
        assert!(!is_acceptable(b"abc def"));
        assert!(!is_acceptable(b"a{\"user_id\":\"alice\"}"));
        assert!(!is_acceptable(&[b'a'; MAX_LEN + 1]));
    }
}
