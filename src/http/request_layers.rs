//! The layers every request passes before a route or the socket layer, outermost last: for
//! Socket.IO the socket's kept head, the origin check (CORS does not cover the websocket
//! upgrade) and the handshake limit per address; then CORS, request ids (a client's kept only
//! when printable and short) and the request's log span.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use super::client_address::ClientAddress;
use crate::config::AllowedOrigins;
use crate::limits::RateLimit;
use crate::telemetry::Untrusted;

/// What every request passes through before a route or the socket layer, outermost last:
/// origins, handshake limits and the socket's kept head for Socket.IO; CORS; request ids
/// (a client's kept only when printable and short) and the request's log span.
pub fn wrap(router: Router, origins: AllowedOrigins, handshakes_per_ip: Arc<RateLimit<IpAddr>>) -> Router {
    router
        .layer(axum::middleware::from_fn(super::socket_head::keep_socket_head))
        .layer(axum::middleware::from_fn({
            let origins = origins.clone();
            move |req, next| check_origin(origins.clone(), req, next)
        }))
        .layer(axum::middleware::from_fn(move |req, next| {
            limit_handshakes(handshakes_per_ip.clone(), req, next)
        }))
        .layer(cors(&origins))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
            let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
            let path = Untrusted(req.uri().path());
            let client = req.extensions().get::<ClientAddress>().map(|c| c.0.to_string()).unwrap_or_default();
            tracing::info_span!("http", method = %req.method(), path = %path, request_id = %id, client = %client)
        }))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(axum::middleware::from_fn(super::request_id::drop_unacceptable))
}

fn cors(origins: &AllowedOrigins) -> CorsLayer {
    let allow = match origins {
        AllowedOrigins::Any => AllowOrigin::any(),
        AllowedOrigins::List(list) => {
            AllowOrigin::list(list.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
        }
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
}

/// Whether a request opens a new Engine.IO session: a Socket.IO request without a `sid`
/// parameter. (One with a `sid` of no open session is refused by Engine.IO, making nothing.)
fn is_handshake(uri: &axum::http::Uri) -> bool {
    let query = uri.query().unwrap_or("").as_bytes();
    uri.path().starts_with("/socket.io")
        && !form_urlencoded::parse(query).any(|(key, value)| key == "sid" && !value.is_empty())
}

/// New Socket.IO connections (handshakes) per client address (behind trusted proxies, the
/// client's, not the balancer's); requests of established connections pass. Over the limit:
/// 429 with `RATE_LIMITED` and `Retry-After`.
async fn limit_handshakes(limit: Arc<RateLimit<IpAddr>>, req: Request, next: Next) -> Response {
    let is_handshake = is_handshake(req.uri());
    let peer = req.extensions().get::<ClientAddress>().map(|c| c.0);
    if let (true, Some(ip)) = (is_handshake, peer) {
        if let Err(wait) = limit.check(&ip).await {
            let retry_after_ms = wait.as_millis().max(1) as u64;
            let body = serde_json::json!({ "error": {
                "code": "RATE_LIMITED",
                "message": "too many new connections from this address",
                "retryAfterMs": retry_after_ms,
            }});
            let retry_secs = retry_after_ms.div_ceil(1000).to_string();
            return (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, retry_secs)], axum::Json(body))
                .into_response();
        }
    }
    next.run(req).await
}

/// CORS does not cover the websocket upgrade (nor a non-browser polling client that sends an
/// Origin): a Socket.IO request from an origin not allowed is refused before any socket exists.
/// A same-origin request (its `Origin` is its own `Host`'s) is always allowed: it is no other
/// site acting through a browser.
async fn check_origin(origins: AllowedOrigins, req: Request, next: Next) -> Response {
    if req.uri().path().starts_with("/socket.io") {
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
            let allowed =
                origin.to_str().is_ok_and(|o| origins.allows(o) || super::origin::is_same_origin(o, host));
            if !allowed {
                return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
            }
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_real_sid_parameter_makes_a_request_part_of_an_open_session() {
        let handshake = |uri: &str| is_handshake(&uri.parse().unwrap());
        assert!(handshake("/socket.io/?EIO=4&transport=polling"));
        assert!(!handshake("/socket.io/?EIO=4&transport=polling&sid=abc"));
        assert!(!handshake("/socket.io/?sid=abc&EIO=4&transport=websocket"));
        assert!(handshake("/socket.io/?EIO=4&transport=polling&xsid=1"), "another parameter ending in sid");
        assert!(handshake("/socket.io/?EIO=4&token=sid%3D1"), "sid= inside a value");
        assert!(handshake("/socket.io/?EIO=4&sid="), "an empty sid");
        assert!(!handshake("/api/sessions?sid=1"), "not Socket.IO");
    }
}
