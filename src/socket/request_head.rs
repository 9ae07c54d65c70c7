//! Socket.IO requests with a head of their own. hyper parses the URI and headers without
//! copying: they point into the connection's read buffer (8 KiB and more). socketioxide keeps
//! the handshake's head for the socket's whole life (`req_parts`), so every open connection
//! would pin that buffer; copying the few bytes of the head frees it. Measured in
//! docs/benchmarks.md (idle connections).

use axum::extract::{OriginalUri, Request};
use axum::http::{HeaderMap, HeaderValue, Uri};
use axum::middleware::Next;
use axum::response::Response;

/// Middleware: gives the request a URI (also axum's `OriginalUri` copy of it) and headers that
/// own their bytes.
pub async fn detach_request_head(mut req: Request, next: Next) -> Response {
    if let Ok(uri) = Uri::try_from(req.uri().to_string()) {
        if let Some(original) = req.extensions_mut().get_mut::<OriginalUri>() {
            original.0 = uri.clone();
        }
        *req.uri_mut() = uri;
    }
    *req.headers_mut() = owned_headers(req.headers());
    next.run(req).await
}

fn owned_headers(headers: &HeaderMap) -> HeaderMap {
    let mut owned = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        // A header name is either a static standard one or its own allocation; a value is a
        // slice of the read buffer until copied.
        let mut copy = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        copy.set_sensitive(value.is_sensitive());
        owned.append(name.clone(), copy);
    }
    owned
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_copied_whole() {
        let mut headers = HeaderMap::new();
        headers.append("cookie", HeaderValue::from_static("a=1"));
        headers.append("cookie", HeaderValue::from_static("b=2"));
        let mut secret = HeaderValue::from_static("Bearer x");
        secret.set_sensitive(true);
        headers.insert("authorization", secret);
        let owned = owned_headers(&headers);
        assert_eq!(owned, headers);
        assert_eq!(owned.get_all("cookie").iter().count(), 2);
        assert!(owned.get("authorization").is_some_and(HeaderValue::is_sensitive));
    }
}
