//! Accepting TCP connections, bounded: at most `max_open` at once (websockets included, for
//! their whole life), a request's headers within `header_timeout` (an idle keep-alive
//! connection waits for its next request's headers, so it is closed after that time too), and
//! the process's file-descriptor limit raised to its hard limit first. Without these, clients
//! that connect and send nothing, or trickle bytes, hold descriptors until the server can
//! accept nothing more, `/healthz` included. Each request carries its [`ClientAddress`]: the
//! peer's, or from a trusted balancer the client's it names (`client_address.rs`).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::Router;
use bytes::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;
use tracing::{debug, warn};

use super::client_address::TrustedProxies;
use super::proxy_protocol;

/// Descriptors kept free for everything but client connections (the database pool, page
/// fetches, the model provider, files): a twentieth of the limit, at least 64.
pub fn reserved_descriptors(limit: u64) -> u64 {
    (limit / 20).max(64).min(limit / 2)
}

/// Raises the soft limit on open files to the hard limit; returns the limit now in force.
pub fn raise_fd_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            warn!(error = %e, "the open-files limit could not be read or raised");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
        }
    }
}

/// How connections are bounded, and whose word on their client is taken (from the config).
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    pub max_open: usize,
    /// For a request's headers, and for a trusted peer's PROXY header.
    pub header_timeout: Duration,
    pub trusted_proxies: TrustedProxies,
}

/// Serves `router` on `listener` until `stop` resolves, then stops accepting and waits for the
/// open HTTP requests to end (websockets are closed by the socket layer's own shutdown).
/// `stop_accepting` closes the listener earlier, while `stop` is still under way;
/// `listener_closed` is told once it is closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: ConnectionSettings,
    stop_accepting: impl Future<Output = ()> + Send + 'static,
    listener_closed: tokio::sync::oneshot::Sender<()>,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let slots = Arc::new(Semaphore::new(settings.max_open));
    let mut http = auto::Builder::new(TokioExecutor::new()).http1_only();
    http.http1().timer(TokioTimer::new()).header_read_timeout(settings.header_timeout);
    let http = Arc::new(http);
    let graceful = GracefulShutdown::new();
    tokio::pin!(stop);
    tokio::pin!(stop_accepting);
    let mut stopped = false;
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => { wait_after_accept_error(e).await; continue; }
            },
            () = &mut stop => { stopped = true; break },
            () = &mut stop_accepting => break,
        };
        // At the cap the connection is closed at once: it costs a descriptor only for now.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics::counter!("postchat_connections_refused_total").increment(1);
            debug!(%peer, "connection refused: at MAX_CONNECTIONS");
            continue;
        };
        // Without TCP_NODELAY, an event sent right after another (the ack, then
        // `chat:stream:start`) waits for the client's delayed ACK: 40 ms on Linux.
        if let Err(e) = tcp.set_nodelay(true) {
            debug!(error = %e, "TCP_NODELAY not set");
        }
        spawn_connection(tcp, peer, slot, router.clone(), http.clone(), graceful.watcher(), settings.clone());
    }
    // Closed first when the process drains in a cluster: a balancer sends new connections to
    // the other processes while this one finishes its answers.
    drop(listener);
    let _ = listener_closed.send(());
    if stopped {
        graceful.shutdown().await;
    } else {
        // Draining: kept-alive HTTP connections close as their requests end (a balancer
        // must not reuse one to reach this process), while `stop` finishes.
        tokio::join!(stop, graceful.shutdown());
    }
}

/// Serves one accepted connection in a task of its own: its PROXY header first when its peer is
/// a trusted proxy, then HTTP, each request carrying the client's address.
fn spawn_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    slot: OwnedSemaphorePermit,
    router: Router,
    http: Arc<auto::Builder<TokioExecutor>>,
    watcher: hyper_util::server::graceful::Watcher,
    settings: ConnectionSettings,
) {
    tokio::spawn(async move {
        let Some(conn) = open(tcp, peer, slot, &settings).await else { return };
        let service = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
            let client = settings.trusted_proxies.client_of(conn.from, req.headers());
            req.extensions_mut().insert(ConnectInfo(peer));
            req.extensions_mut().insert(client);
            router.clone().oneshot(req.map(axum::body::Body::new))
        });
        let connection =
            watcher.watch(http.serve_connection_with_upgrades(TokioIo::new(conn.io), service).into_owned());
        if let Err(e) = connection.await {
            debug!(%peer, error = %e, "connection ended with an error");
        }
    });
}

/// A connection ready for HTTP, and the address it comes from.
struct Opened {
    io: Counted,
    /// The peer, or the client a trusted peer's PROXY header names.
    from: std::net::IpAddr,
}

/// Reads a trusted peer's PROXY header, if it sends one, within the header timeout; `None`
/// when the connection is closed for a malformed, cut or late header.
async fn open(
    tcp: TcpStream,
    peer: SocketAddr,
    slot: OwnedSemaphorePermit,
    settings: &ConnectionSettings,
) -> Option<Opened> {
    let mut io = Counted { tcp, read_first: Bytes::new(), _slot: slot };
    if !settings.trusted_proxies.trusts(peer.ip()) {
        return Some(Opened { io, from: peer.ip() });
    }
    match tokio::time::timeout(settings.header_timeout, proxy_protocol::read_opening(&mut io.tcp)).await {
        Ok(Ok(opening)) => {
            io.read_first = opening.rest;
            Some(Opened { io, from: opening.client.unwrap_or(peer.ip()) })
        }
        Ok(Err(e)) => {
            warn!(%peer, error = %e, "connection from a trusted proxy closed");
            None
        }
        Err(_) => {
            debug!(%peer, "connection from a trusted proxy closed: no PROXY header or request in time");
            None
        }
    }
}

/// An accept error (most often out of descriptors) is logged, then the loop waits a little
/// rather than spin.
async fn wait_after_accept_error(e: io::Error) {
    warn!(error = %e, "accept error");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// A client connection holding its slot: the slot is freed when the connection's socket is,
/// also after an upgrade to websocket, which takes the socket out of the HTTP server.
struct Counted {
    tcp: TcpStream,
    /// Read past a PROXY header: given to HTTP before the socket's next bytes.
    read_first: Bytes,
    _slot: OwnedSemaphorePermit,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.read_first.is_empty() {
            let n = self.read_first.len().min(buf.remaining());
            buf.put_slice(&self.read_first.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::client_address::ClientAddress;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn server(limits: ConnectionSettings) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router =
            Router::new().route("/", axum::routing::get(|| async { "ok" })).route(
                "/client",
                axum::routing::get(
                    |axum::Extension(ClientAddress(ip)): axum::Extension<ClientAddress>| async move {
                        ip.to_string()
                    },
                ),
            );
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (closed, _) = tokio::sync::oneshot::channel();
        let stop = async move { rx.await.unwrap_or(()) };
        tokio::spawn(serve(listener, router, limits, std::future::pending(), closed, stop));
        (addr, tx)
    }

    /// Reads until the server closes the connection; the bytes read.
    async fn until_closed(tcp: &mut TcpStream) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = tcp.read_to_end(&mut out).await;
        out
    }

    fn behind(proxies: &str) -> ConnectionSettings {
        let trusted_proxies = TrustedProxies::new(crate::domain::Networks::parse(proxies).unwrap());
        ConnectionSettings { max_open: 8, header_timeout: Duration::from_millis(500), trusted_proxies }
    }

    /// Sends `opening` then a request for the client's address; the reply, or "" when closed.
    async fn client_seen(addr: SocketAddr, opening: &[u8], xff: &str) -> String {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(opening).await.unwrap();
        let request = format!("GET /client HTTP/1.1\r\nhost: x\r\n{xff}connection: close\r\n\r\n");
        let _ = tcp.write_all(request.as_bytes()).await;
        let reply = String::from_utf8_lossy(&until_closed(&mut tcp).await).into_owned();
        reply.rsplit("\r\n").next().unwrap_or_default().to_owned()
    }

    #[tokio::test]
    async fn a_trusted_peer_names_the_client_by_proxy_header_or_forwarded_for() {
        let (addr, _stop) = server(behind("127.0.0.1")).await;
        let v1 = b"PROXY TCP4 203.0.113.9 127.0.0.1 5000 80\r\n";
        assert_eq!(client_seen(addr, v1, "").await, "203.0.113.9");
        assert_eq!(
            client_seen(addr, b"", "x-forwarded-for: 6.6.6.6, 198.51.100.2\r\n").await,
            "198.51.100.2"
        );
        assert_eq!(client_seen(addr, b"", "").await, "127.0.0.1", "neither: the balancer itself");
        assert_eq!(client_seen(addr, b"PROXY TCP4 bad\r\n", "").await, "", "a malformed header closes");
    }

    #[tokio::test]
    async fn an_untrusted_peer_cannot_name_another_client() {
        let (addr, _stop) = server(behind("10.0.0.1")).await;
        let v1 = b"PROXY TCP4 203.0.113.9 127.0.0.1 5000 80\r\n";
        let seen = client_seen(addr, v1, "").await;
        assert!(!seen.contains("203.0.113.9"), "a PROXY header from anyone else is not HTTP: {seen:?}");
        assert_eq!(client_seen(addr, b"", "x-forwarded-for: 198.51.100.2\r\n").await, "127.0.0.1");
    }

    #[tokio::test]
    async fn a_connection_over_the_cap_is_closed_and_a_freed_slot_is_reused() {
        let limits = ConnectionSettings {
            max_open: 2,
            header_timeout: Duration::from_secs(60),
            trusted_proxies: TrustedProxies::default(),
        };
        let (addr, _stop) = server(limits).await;
        let mut held = vec![TcpStream::connect(addr).await.unwrap(), TcpStream::connect(addr).await.unwrap()];
        // Let the server accept both before the third arrives.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut third = TcpStream::connect(addr).await.unwrap();
        assert!(until_closed(&mut third).await.is_empty(), "closed without an answer");
        held.pop();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut fourth = TcpStream::connect(addr).await.unwrap();
        fourth.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.unwrap();
        let reply = String::from_utf8(until_closed(&mut fourth).await).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    }

    #[tokio::test]
    async fn headers_that_do_not_arrive_in_time_close_the_connection_and_so_does_idling() {
        let limits = ConnectionSettings {
            max_open: 8,
            header_timeout: Duration::from_millis(300),
            trusted_proxies: TrustedProxies::default(),
        };
        let (addr, _stop) = server(limits).await;
        let mut trickling = TcpStream::connect(addr).await.unwrap();
        trickling.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let closed = tokio::time::timeout(Duration::from_secs(5), until_closed(&mut trickling)).await;
        assert!(closed.is_ok(), "a request whose headers never end is closed");

        let mut kept_alive = TcpStream::connect(addr).await.unwrap();
        kept_alive.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(5), until_closed(&mut kept_alive)).await;
        let reply = String::from_utf8(reply.expect("an idle keep-alive connection is closed")).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "answered first: {reply}");
    }
}
