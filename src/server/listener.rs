//! Serving: the accept loops of the HTTPS port (HTTP/1.1 and HTTP/2 by ALPN) and of the admin
//! port (plain HTTP/1.1), each connection's deadlines, and graceful drain.
//!
//! Every step a client controls has a deadline, so no client holds a connection slot longer
//! than a bound without making progress: the TLS handshake (`handshakeTimeout`); an HTTP/1.1
//! request head from its first byte (`headerReadTimeout`) and an idle keep-alive connection
//! (`idleTimeout`, see `timeouts.rs`); an HTTP/2 connection's first request
//! (`headerReadTimeout`) and an HTTP/2 connection without requests in flight (`idleTimeout`,
//! then GOAWAY), with keep-alive PINGs that close dead peers; request bodies (`body.rs`). Both
//! ports cap their open connections; at its cap the admin port closes its longest-idle
//! connection to let a new one in (`idle.rs`), so probes are never starved.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::idle::{Forget, IdleConnections, MarkBusy, Watched};
use super::limit::{ConnectionLimit, Slot};
use super::limits_reached::LimitsReached;
use super::timeouts::{Activity, Expired, Limits, Phase, TimedIo, Tracked};

/// Largest request body accepted by default: large pods (1,000 containers) stay far below it;
/// the API server caps objects at 3 MiB.
pub const MAX_BODY_BYTES: usize = 6 * 1024 * 1024;

/// How each connection of a port is served.
#[derive(Debug, Clone)]
pub struct Options {
    /// `https` or `admin`, for metrics and logs.
    pub port: &'static str,
    pub handshake: Duration,
    pub limits: Limits,
    pub http2_keep_alive_interval: Duration,
    pub http2_keep_alive_timeout: Duration,
    pub http2_max_concurrent_streams: u32,
    /// After `stop`: how long in-flight requests get to finish.
    pub drain: Duration,
    pub reached: LimitsReached,
}

/// Serves `router` over TLS on `listener` until `stop` is cancelled, then stops accepting and
/// gives open connections `options.drain` to finish in-flight requests (keep-alive connections
/// are closed once idle; HTTP/2 gets GOAWAY). At most `connections.max()` are open at once.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    router: Router,
    stop: CancellationToken,
    options: Options,
    connections: ConnectionLimit,
) {
    serve(
        listener,
        Some(TlsAcceptor::from(tls)),
        router,
        stop,
        options,
        connections,
    )
    .await
}

/// Serves the admin router over plain HTTP/1.1 with the same deadlines and its own cap.
pub async fn serve_admin(
    listener: TcpListener,
    router: Router,
    stop: CancellationToken,
    options: Options,
    connections: ConnectionLimit,
) {
    serve(listener, None, router, stop, options, connections).await
}

async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    stop: CancellationToken,
    options: Options,
    connection_limit: ConnectionLimit,
) {
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
        .max_concurrent_streams(options.http2_max_concurrent_streams)
        .keep_alive_interval(Some(options.http2_keep_alive_interval))
        .keep_alive_timeout(options.http2_keep_alive_timeout);
    let builder = if tls.is_some() {
        builder
    } else {
        builder.http1_only()
    };
    let builder = Arc::new(builder);
    let options = Arc::new(options);
    // Connections live in a set (not detached) so the ones still open when the drain timeout
    // passes can be closed.
    let mut connections = tokio::task::JoinSet::new();

    let port = options.port;
    // The admin port (plain HTTP) makes room for probes; the HTTPS port's connections wait.
    let idle = tls.is_none().then(IdleConnections::default);
    while let Some((slot, tcp, peer)) = accept(
        &listener,
        &connection_limit,
        idle.as_ref(),
        &mut connections,
        &stop,
        |e| tracing::warn!(port, error = %e, "accept failed"),
    )
    .await
    {
        let watched = idle.as_ref().map(IdleConnections::watch);
        let tls = tls.clone();
        let builder = builder.clone();
        let router = router.clone();
        let options = options.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            // Held until the connection closes.
            let _slot = slot;
            if let Some(watched) = watched {
                let _forget = Forget(watched.clone());
                let evicted = watched.evicted();
                tokio::select! {
                    _ = evicted => tracing::debug!(%peer, "idle admin connection closed to make room"),
                    _ = connection(tcp, false, peer, &builder, router, &options, &stop, Some(watched)) => {}
                }
                return;
            }
            match tls {
                Some(acceptor) => {
                    let accepted =
                        tokio::time::timeout(options.handshake, acceptor.accept(tcp)).await;
                    let tls = match accepted {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            options.reached.hit(options.port, "handshake_timeout");
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                    connection(tls, h2, peer, &builder, router, &options, &stop, None).await
                }
                None => connection(tcp, false, peer, &builder, router, &options, &stop, None).await,
            }
        });
    }
    drop(listener);
    let drained = tokio::time::timeout(options.drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    match drained {
        Ok(()) => tracing::info!(port = options.port, "all connections drained"),
        Err(_) => {
            tracing::warn!(port = options.port, drain = ?options.drain, open = connections.len(), "drain timeout passed; closing remaining connections");
            connections.shutdown().await;
        }
    }
}

/// The next connection (`TCP_NODELAY` set) and its slot: waits for a free slot (with `idle`,
/// at the cap the longest-idle connection is closed to make one), then for a connection, meanwhile reaping the finished ones of `connections` so the set stays the size
/// of the open ones. An accept error (usually EMFILE) goes to `failed`, then a brief back-off
/// instead of spinning (the listener counts as blocked until the next accept, for readiness).
/// `None` once `stop` is cancelled.
pub async fn accept(
    listener: &TcpListener,
    limit: &ConnectionLimit,
    idle: Option<&IdleConnections>,
    connections: &mut tokio::task::JoinSet<()>,
    stop: &CancellationToken,
    failed: impl Fn(&std::io::Error),
) -> Option<(Slot, TcpStream, SocketAddr)> {
    loop {
        // With `idle`, a slot is made only for a connection that is there: making one ahead
        // would close an idle connection that nothing needs closed.
        let slot = match idle {
            Some(_) => None,
            None => tokio::select! {
                _ = stop.cancelled() => return None,
                slot = limit.slot() => Some(slot),
            },
        };
        let accepted = tokio::select! {
            _ = stop.cancelled() => return None,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                limit.set_blocked(false);
                let _ = tcp.set_nodelay(true);
                let slot = match (slot, idle) {
                    (Some(slot), _) => slot,
                    (None, idle) => tokio::select! {
                        _ = stop.cancelled() => return None,
                        slot = async {
                            match idle {
                                Some(idle) => limit.slot_making_room(idle).await,
                                None => limit.slot().await,
                            }
                        } => slot,
                    },
                };
                return Some((slot, tcp, peer));
            }
            Err(e) => {
                limit.set_blocked(true);
                failed(&e);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves one connection until it closes, a deadline passes, or `stop` (then it is closed
/// gracefully, within the drain timeout). A `watched` connection is marked busy while it has a
/// request in progress.
#[allow(clippy::too_many_arguments)]
async fn connection<I>(
    io: I,
    h2: bool,
    peer: SocketAddr,
    builder: &auto::Builder<TokioExecutor>,
    router: Router,
    options: &Options,
    stop: &CancellationToken,
    watched: Option<Watched>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let phase = Arc::new(Phase::default());
    let activity = Arc::new(Activity::default());
    // HTTP/1.1 deadlines live in the transport; HTTP/2's (many requests at once) in the loop below.
    let io = TimedIo::new(
        io,
        (!h2).then_some(options.limits),
        phase.clone(),
        (options.reached.clone(), options.port),
    );
    let service = Tracked::new(
        MarkBusy::new(TowerToHyperService::new(router), watched),
        phase,
        activity.clone(),
    );
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    // Once closing (GOAWAY sent, or HTTP/1.1 told to close when idle), the connection still
    // gets a bounded time to finish what is in flight.
    let mut closing: Option<tokio::time::Instant> = None;
    let far = || tokio::time::Instant::now() + Duration::from_secs(86_400);
    loop {
        let next_check = match closing {
            Some(deadline) => deadline,
            None if h2 => match activity.check(options.limits) {
                Ok(at) => at,
                Err(expired) => {
                    let limit = match expired {
                        Expired::NoRequest => "http2_first_request_timeout",
                        Expired::Idle => "http2_idle_timeout",
                    };
                    options.reached.hit(options.port, limit);
                    tracing::debug!(%peer, limit, "closing an HTTP/2 connection (GOAWAY)");
                    conn.as_mut().graceful_shutdown();
                    closing = Some(tokio::time::Instant::now() + options.limits.header_read);
                    continue;
                }
            },
            None => far(),
        };
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.cancelled(), if closing.is_none() => {
                conn.as_mut().graceful_shutdown();
                closing = Some(tokio::time::Instant::now() + options.drain);
            }
            _ = tokio::time::sleep_until(next_check) => {
                if closing.is_some() {
                    tracing::debug!(%peer, "connection closed: it did not finish after being told to close");
                    return;
                }
            }
        }
    }
}

/// A port that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} ({what}): {source}; is another process using the port?")]
pub struct BindError {
    pub what: &'static str,
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

/// Binds a listener, naming the address in the error.
pub async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { what, addr, source })
}
