//! Serving: the TLS accept loop (HTTP/1.1 and HTTP/2 by ALPN), the admin listener, and
//! graceful drain.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::limit::ConnectionLimit;
use super::timeouts::{Limits, Phase, TimedIo, Tracked};

/// Largest request body accepted by default: large pods (1,000 containers) stay far below it;
/// the API server caps objects at 3 MiB.
pub const MAX_BODY_BYTES: usize = 6 * 1024 * 1024;

/// A TLS handshake that takes longer than this is dropped (slow or hostile clients).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` over TLS on `listener` until `stop` is cancelled, then stops accepting and
/// gives open connections `drain` to finish in-flight requests (keep-alive connections are
/// closed once idle; HTTP/2 gets GOAWAY). HTTP/1.1 connections get `limits` (see
/// `server/timeouts.rs`); at most `connections.max()` are open at once (`server/limit.rs`).
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    router: Router,
    stop: CancellationToken,
    drain: Duration,
    limits: Limits,
    connection_limit: ConnectionLimit,
) {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's own header timeout would also close idle keep-alive connections: ours instead.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(250);
    let builder = Arc::new(builder);
    // Connections live in a set (not detached) so the ones still open when the drain timeout
    // passes can be closed.
    let mut connections = tokio::task::JoinSet::new();

    loop {
        let slot = tokio::select! {
            _ = stop.cancelled() => break,
            slot = connection_limit.slot() => slot,
        };
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            // Reap finished connections so the set stays the size of the open ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Usually EMFILE: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let builder = builder.clone();
        let router = router.clone();
        let watcher = graceful.watcher();
        connections.spawn(async move {
            // Held until the connection closes.
            let _slot = slot;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            // HTTP/2 (by ALPN) keeps its idle connections: clients multiplex over one for good.
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            let phase = Arc::new(Phase::default());
            let io = TimedIo::new(tls, (!h2).then_some(limits), phase.clone());
            let service = Tracked::new(TowerToHyperService::new(router), phase);
            let conn = builder.serve_connection(TokioIo::new(io), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections drained"),
        _ = tokio::time::sleep(drain) => {
            tracing::warn!(?drain, open = connections.len(), "drain timeout passed; closing remaining connections");
        }
    }
    connections.shutdown().await;
}

/// Serves the admin router over plain HTTP until `stop` is cancelled.
pub async fn serve_admin(listener: TcpListener, router: Router, stop: CancellationToken) {
    let result = axum::serve(listener, router)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "admin server failed");
    }
}

/// Binds a listener, naming the address in the error.
pub async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener, crate::StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| crate::StartError::Bind { what, addr, source })
}
