//! Dev mode only: the browser demo page (`client-demo/web`), embedded in the binary so
//! `cargo run` serves it from anywhere, with the socket.io-client bundle it uses (no CDN).

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::HttpState;

const INDEX: &str = include_str!("../../client-demo/web/index.html");
const APP: &str = include_str!("../../client-demo/web/app.js");
const STYLE: &str = include_str!("../../client-demo/web/style.css");
const SOCKET_IO: &str = include_str!("../../client-demo/web/vendor/socket.io.min.js");

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body)
}

/// `/`, `/app.js`, `/style.css`, `/vendor/socket.io.min.js`.
pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX) }))
        .route("/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP) }))
        .route("/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
        .route(
            "/vendor/socket.io.min.js",
            get(|| async { asset("text/javascript; charset=utf-8", SOCKET_IO) }),
        )
}
