//! Dev mode only: tokens for the demo clients (the route does not exist outside dev mode).
//!
//! Only the server's own page may ask: with `CORS_ORIGINS=*` (dev mode's default) any web page
//! could otherwise mint tokens through its visitor's browser. A request that names an origin
//! must name this server's own, reached by an address or `localhost` (a domain name could be
//! rebound by its owner's DNS to this server); clients that send no `Origin` (curl, Node) are
//! not browsers acting for another site.

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::AppJson;
use super::origin::is_same_origin;
use super::{ApiError, HttpState};
use crate::domain::UserId;

#[derive(Deserialize)]
pub struct TokenRequest {
    user: String,
}

/// `POST /dev/token { user }` → `{ token }`, valid for a day.
pub async fn token(
    State(state): State<HttpState>,
    headers: HeaderMap,
    AppJson(req): AppJson<TokenRequest>,
) -> Result<Json<Value>, ApiError> {
    if !from_own_page(&headers) {
        return Err(ApiError::Forbidden("dev tokens are given to this server's own page only"));
    }
    let user = UserId::parse(&req.user)?;
    let token = state
        .keys
        .issue(&user, 24 * 3600)
        .map_err(|e| ApiError::InvalidInput(format!("cannot issue a token: {e}")))?;
    Ok(Json(json!({ "token": token, "user": user })))
}

/// No `Origin`, or this server's own, reached by an address or `localhost`.
fn from_own_page(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else { return true };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    origin.to_str().is_ok_and(|origin| is_same_origin(origin, host)) && is_address_or_localhost(host)
}

fn is_address_or_localhost(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, host.parse().unwrap());
        if let Some(o) = origin {
            h.insert(header::ORIGIN, o.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_the_servers_own_page_or_no_browser_may_ask() {
        assert!(from_own_page(&headers(None, "127.0.0.1:3000")));
        assert!(from_own_page(&headers(Some("http://127.0.0.1:3000"), "127.0.0.1:3000")));
        assert!(from_own_page(&headers(Some("http://localhost:3000"), "localhost:3000")));
        assert!(from_own_page(&headers(Some("http://[::1]:3000"), "[::1]:3000")));
        assert!(!from_own_page(&headers(Some("https://evil.example"), "127.0.0.1:3000")));
        assert!(!from_own_page(&headers(Some("http://127.0.0.1:3001"), "127.0.0.1:3000")));
        assert!(!from_own_page(&headers(Some("null"), "127.0.0.1:3000")));
        // DNS rebinding: the attacker's name, pointed at this server.
        assert!(!from_own_page(&headers(Some("http://evil.example:3000"), "evil.example:3000")));
    }
}
