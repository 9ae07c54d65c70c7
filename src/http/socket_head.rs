//! A Socket.IO request keeps only the head it needs. socketioxide keeps the handshake's head
//! (`req_parts`: URI, headers, extensions) for the socket's whole life. As hyper parsed them,
//! the URI and headers point into the connection's read buffer (8 KiB and more), so every open
//! connection would pin that buffer; and the headers are sized by the client (cookies, user
//! agent: often kilobytes; hyper reads up to about 400 KiB of head). So the head is rebuilt,
//! owning its bytes, with only what the socket layer reads after the handshake. Measured in
//! docs/benchmarks.md (idle connections).

use axum::extract::Request;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, SEC_WEBSOCKET_KEY};
use axum::http::{Extensions, HeaderMap, HeaderName, HeaderValue, Uri};
use axum::middleware::Next;
use axum::response::Response;
use hyper::upgrade::OnUpgrade;

/// The headers read after this middleware: engineioxide reads the websocket key (upgrade) and a
/// polling POST's content type; the connect handler reads a token in `Authorization`
/// (`connect.rs`). Everything before this middleware (Origin check, CORS, request id, rate
/// limit) has read what it needs.
const KEPT_HEADERS: [HeaderName; 3] = [SEC_WEBSOCKET_KEY, CONTENT_TYPE, AUTHORIZATION];

/// Middleware: gives a Socket.IO request a URI and the [`KEPT_HEADERS`] that own their bytes,
/// and of its extensions only hyper's upgrade handle (the websocket upgrade needs it). Other
/// requests pass untouched: nothing keeps them.
pub async fn keep_socket_head(mut req: Request, next: Next) -> Response {
    if req.uri().path().starts_with("/socket.io") {
        if let Ok(uri) = Uri::try_from(req.uri().to_string()) {
            *req.uri_mut() = uri;
        }
        *req.headers_mut() = kept_headers(req.headers());
        *req.extensions_mut() = kept_extensions(req.extensions_mut());
    }
    next.run(req).await
}

fn kept_headers(headers: &HeaderMap) -> HeaderMap {
    // Sized to what is there (usually the one websocket key): the map is held for life.
    let present = KEPT_HEADERS.iter().map(|name| headers.get_all(name).iter().count()).sum();
    let mut kept = HeaderMap::with_capacity(present);
    for name in KEPT_HEADERS {
        for value in headers.get_all(&name) {
            // A value is a slice of the read buffer until copied.
            let mut copy = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
            copy.set_sensitive(value.is_sensitive());
            kept.append(name.clone(), copy);
        }
    }
    kept
}

fn kept_extensions(extensions: &mut Extensions) -> Extensions {
    let mut kept = Extensions::new();
    if let Some(upgrade) = extensions.remove::<OnUpgrade>() {
        kept.insert(upgrade);
    }
    kept
}

#[cfg(test)]
mod tests {
    use axum::extract::OriginalUri;

    use super::*;

    #[test]
    fn only_the_read_headers_are_kept_each_value_whole() {
        let mut headers = HeaderMap::new();
        headers.append("cookie", HeaderValue::from_static("a=1"));
        headers.append("user-agent", HeaderValue::from_static("Mozilla/5.0"));
        headers.insert(SEC_WEBSOCKET_KEY, HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let mut secret = HeaderValue::from_static("Bearer x");
        secret.set_sensitive(true);
        headers.insert(AUTHORIZATION, secret);
        let kept = kept_headers(&headers);
        assert_eq!(kept.len(), 3);
        assert!(kept.get("cookie").is_none() && kept.get("user-agent").is_none());
        assert_eq!(kept.get(SEC_WEBSOCKET_KEY), headers.get(SEC_WEBSOCKET_KEY));
        assert_eq!(kept.get(CONTENT_TYPE).map(HeaderValue::as_bytes), Some(&b"text/plain"[..]));
        assert!(kept.get(AUTHORIZATION).is_some_and(HeaderValue::is_sensitive));
    }

    #[test]
    fn of_the_extensions_only_the_upgrade_is_kept() {
        // An upgrade handle as hyper makes one (here one that never upgrades).
        let upgrade = hyper::upgrade::on(axum::http::Request::new(()));
        let mut extensions = Extensions::new();
        extensions.insert(OriginalUri(Uri::from_static("/socket.io/?EIO=4")));
        extensions.insert(42u32);
        extensions.insert(upgrade);
        let kept = kept_extensions(&mut extensions);
        assert!(kept.get::<OnUpgrade>().is_some(), "the upgrade handle is kept");
        assert_eq!(kept.len(), 1, "and nothing else");
        assert!(kept_extensions(&mut Extensions::new()).is_empty());
    }
}
