//! The credentials endpoint (`GET /v1/credentials`) and the agent's admin endpoints, over plain
//! HTTP/1.1. Every client is treated as hostile: a cap on open connections (in all and per
//! client address), a bound on the
//! time to send a request head (which also closes idle keep-alive connections), a bound on
//! its size, a per-client rate limit, and a bound on the time to answer.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::credentials::CredentialService;
use super::error::AgentError;
use super::metrics::AgentMetrics;
use crate::server::ConnectionLimit;
use crate::server::idle::{Forget, IdleConnections, MarkBusy};
use crate::server::listener::accept;

/// The longest token accepted (projected tokens are about 1 KiB).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The addresses of one accepted connection.
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    pub peer: SocketAddr,
    pub local: SocketAddr,
}

/// Limits of one listener's connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// A request head must arrive within this; an idle keep-alive connection is closed after it.
    pub header_read: Duration,
    /// Largest request head (hyper's read buffer).
    pub max_head_bytes: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            header_read: Duration::from_secs(5),
            max_head_bytes: 32 * 1024,
        }
    }
}

/// Requests per second and burst allowed to one client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

/// What the credential handler needs.
pub struct Endpoint {
    pub service: CredentialService,
    pub metrics: Arc<AgentMetrics>,
    /// Bound on one answer (review, lookup and STS together).
    pub request_timeout: Duration,
    limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

impl Endpoint {
    pub fn new(
        service: CredentialService,
        metrics: Arc<AgentMetrics>,
        request_timeout: Duration,
        rate_limit: Option<RateLimit>,
    ) -> Self {
        let limiter = rate_limit.and_then(|r| {
            let per_second = NonZeroU32::new(r.per_second)?;
            let burst = NonZeroU32::new(r.burst.max(r.per_second))?;
            Some(RateLimiter::keyed(
                Quota::per_second(per_second).allow_burst(burst),
            ))
        });
        Self {
            service,
            metrics,
            request_timeout,
            limiter,
        }
    }

    /// Forgets clients that have not been limited lately (bounds the limiter's memory).
    pub fn forget_idle_clients(&self) {
        if let Some(l) = &self.limiter {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

fn json(status: StatusCode, body: impl Into<Body>) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.into(),
    )
        .into_response()
}

fn error_response(e: &AgentError) -> Response {
    json(
        StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        e.body(),
    )
}

/// How a `Host` header (or an absolute-form URI's authority) names an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostCheck {
    /// The address and port the request arrived on.
    Matches,
    /// Well formed, another address or port.
    Other,
    /// Not an IP literal with an optional port in its plain spelling (a sign, leading zeros,
    /// out of range): refused as malformed rather than read one way here and another way by
    /// a proxy in front.
    Malformed,
}

/// Whether `host` (the Host header) names the address the request arrived on, as the SDKs
/// send it (`169.254.170.23`, `[fd00:ec2::23]`, or with the port when it is not 80).
pub fn check_host(host: &str, local: SocketAddr) -> HostCheck {
    let (ip, port) = match host.rsplit_once(':') {
        // An IPv6 literal without a port has colons inside brackets only.
        Some((ip, port)) if !port.contains(']') && (!ip.contains(':') || ip.ends_with(']')) => {
            let plain = !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (port == "0" || !port.starts_with('0'));
            match port.parse::<u16>() {
                Ok(p) if plain => (ip, Some(p)),
                _ => return HostCheck::Malformed,
            }
        }
        _ => (host, None),
    };
    let ip = match ip.strip_prefix('[') {
        Some(inner) => match inner.strip_suffix(']') {
            Some(v6) if v6.contains(':') => v6,
            _ => return HostCheck::Malformed,
        },
        None if ip.contains(':') && port.is_some() => return HostCheck::Malformed,
        None => ip,
    };
    let Ok(ip) = ip.parse::<IpAddr>() else {
        // A name: well formed, never ours (DNS rebinding).
        return HostCheck::Other;
    };
    if ip == local.ip() && port.unwrap_or(80) == local.port() {
        HostCheck::Matches
    } else {
        HostCheck::Other
    }
}

/// [`check_host`] is [`HostCheck::Matches`].
pub fn host_matches(host: &str, local: SocketAddr) -> bool {
    check_host(host, local) == HostCheck::Matches
}

/// The request's one `Host`: 400 for two, for an absolute-form URI naming another authority,
/// and for a malformed one; 403 for another address.
fn checked_host(headers: &HeaderMap, uri: &Uri, local: SocketAddr) -> Result<(), AgentError> {
    let bad = |m: &str| AgentError::BadRequest("InvalidRequestException", m.to_string());
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(bad("more than one Host header"));
    }
    let host = match host {
        Some(h) => h
            .to_str()
            .map_err(|_| bad("the Host header is not ASCII"))?,
        None => "",
    };
    if let Some(authority) = uri.authority()
        && !authority.as_str().eq_ignore_ascii_case(host)
    {
        return Err(bad(
            "the request URI names another host than the Host header",
        ));
    }
    match check_host(host, local) {
        HostCheck::Matches => Ok(()),
        HostCheck::Malformed => Err(bad(
            "the Host header is not an address with an optional port in plain digits",
        )),
        HostCheck::Other => Err(AgentError::AccessDenied(format!(
            "requests must be addressed to {} (Host header)",
            local.ip()
        ))),
    }
}

/// The token as the SDKs send it: the whole `Authorization` value.
fn token_of(headers: &HeaderMap) -> Result<&str, AgentError> {
    let bad = |m: &str| AgentError::BadRequest("InvalidTokenException", m.to_string());
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next();
    if values.next().is_some() {
        return Err(bad("more than one Authorization header"));
    }
    let value = value
        .ok_or_else(|| bad("no Authorization header: send the pod's token (AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE) as its value"))?;
    let token = value
        .to_str()
        .map_err(|_| bad("the Authorization header is not ASCII"))?;
    if token.is_empty() {
        return Err(bad("the Authorization header is empty"));
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(bad(
            "the Authorization header is longer than any service account token",
        ));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad(
            "the Authorization header must be the token as it is (no `Bearer`, no spaces)",
        ));
    }
    Ok(token)
}

async fn credentials(
    State(endpoint): State<Arc<Endpoint>>,
    Extension(conn): Extension<Conn>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let start = Instant::now();
    let metrics = &endpoint.metrics;
    if let Err(e) = checked_host(&headers, &uri, conn.local) {
        let outcome = match e {
            AgentError::AccessDenied(_) => "wrong_host",
            _ => e.outcome(),
        };
        metrics.request(outcome, start.elapsed());
        return error_response(&e);
    }
    if let Some(limiter) = &endpoint.limiter
        && limiter.check_key(&conn.peer.ip()).is_err()
    {
        metrics.request("throttled", start.elapsed());
        return error_response(&AgentError::Throttled(
            "too many credential requests from this address; retry with backoff".into(),
        ));
    }
    let result = match token_of(&headers) {
        Err(e) => Err(e),
        Ok(token) => {
            match tokio::time::timeout(
                endpoint.request_timeout,
                endpoint.service.credentials(token),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => Err(AgentError::Unavailable(format!(
                    "no credentials within {:?} (Kubernetes API or STS slow); retry",
                    endpoint.request_timeout
                ))),
            }
        }
    };
    match result {
        Ok(entry) => {
            metrics.request("ok", start.elapsed());
            json(StatusCode::OK, entry.body().clone())
        }
        Err(e) => {
            metrics.request(e.outcome(), start.elapsed());
            // The message names the ServiceAccount or the cause, never the token.
            tracing::info!(peer = %conn.peer.ip(), status = e.status(), code = e.code(), message = %e, "credential request refused");
            error_response(&e)
        }
    }
}

async fn not_found(State(endpoint): State<Arc<Endpoint>>) -> Response {
    endpoint.metrics.request("wrong_path", Duration::ZERO);
    json(
        StatusCode::NOT_FOUND,
        r#"{"Code":"NotFound","Message":"the agent serves GET /v1/credentials only"}"#,
    )
}

/// `GET /v1/credentials`; anything else 404.
pub fn credentials_router(endpoint: Arc<Endpoint>) -> Router {
    Router::new()
        .route("/v1/credentials", get(credentials))
        .fallback(not_found)
        .with_state(endpoint)
}

/// What `/readyz` looks at.
pub struct Readiness {
    pub service: CredentialService,
    pub kube_reachable: AtomicBool,
    pub shutting_down: AtomicBool,
}

impl Readiness {
    /// The reasons the agent is not ready; empty when ready.
    pub fn reasons(&self) -> Vec<&'static str> {
        let mut reasons = Vec::new();
        if !self.service.identities().ready() {
            reasons.push("identity source not synced");
        }
        if !self.kube_reachable.load(Ordering::Acquire) {
            reasons.push("Kubernetes API not reachable");
        }
        if self.shutting_down.load(Ordering::Acquire) {
            reasons.push("shutting down");
        }
        reasons
    }

    /// Probes the Kubernetes API every `interval` until `stop`.
    pub async fn run_probe(self: Arc<Self>, interval: Duration, stop: CancellationToken) {
        let mut was = None;
        loop {
            let ok = self.service.reviewer().reachable().await;
            self.kube_reachable.store(ok, Ordering::Release);
            if was != Some(ok) {
                if ok {
                    tracing::info!("Kubernetes API reachable");
                } else {
                    tracing::warn!(
                        "Kubernetes API not reachable; token reviews will fail until it is"
                    );
                }
                was = Some(ok);
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}

/// `/livez`, `/readyz`, `/metrics`.
pub fn admin_router(readiness: Arc<Readiness>, metrics: Arc<AgentMetrics>) -> Router {
    crate::server::routes::health_router(move || readiness.reasons(), move || metrics.encode())
}

/// A cap on the connections one client address holds open (issue 31): without it, one pod
/// holding 1,100 slow connections (reopened as they closed) made another pod's cached answer
/// take 3 s. Over the cap a connection is closed at once: waiting would stall the accept loop
/// for every address.
#[derive(Debug, Clone)]
pub struct PerAddressLimit {
    inner: Arc<PerAddressInner>,
}

#[derive(Debug)]
struct PerAddressInner {
    max: usize,
    open: std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>,
    /// `agent_connections_over_address_cap_total`.
    refused: prometheus_client::metrics::counter::Counter,
}

/// One connection's place in its address's count; dropping it gives the place back.
#[derive(Debug)]
pub struct AddressSlot {
    inner: Arc<PerAddressInner>,
    ip: IpAddr,
}

impl PerAddressLimit {
    /// `refused` counts the connections closed for holding the cap.
    pub fn new(max: usize, refused: prometheus_client::metrics::counter::Counter) -> Self {
        Self {
            inner: Arc::new(PerAddressInner {
                max: max.max(1),
                open: Default::default(),
                refused,
            }),
        }
    }

    /// A place for one more connection from `ip`; `None` when it holds the cap already.
    pub fn take(&self, ip: IpAddr) -> Option<AddressSlot> {
        let mut open = self.inner.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= self.inner.max {
            self.inner.refused.inc();
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            inner: self.inner.clone(),
            ip,
        })
    }

    /// Connections closed because their address held the cap.
    pub fn refused(&self) -> u64 {
        self.inner.refused.get()
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.inner.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            // The map holds only addresses with connections open.
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// How one listener serves its connections.
#[derive(Debug, Clone)]
pub struct Serving {
    pub limits: ConnLimits,
    /// Shared by the listeners that serve the same clients.
    pub connections: ConnectionLimit,
    /// Connections one client address may hold; over it a new one is closed at once.
    pub per_address: Option<PerAddressLimit>,
    /// The admin port: at the cap, close the longest-idle connection to let a new one in
    /// (`crate::server::idle`), so probes are never starved.
    pub make_room: bool,
    /// After `stop`: how long in-flight requests get to finish.
    pub drain: Duration,
}

/// Serves `router` over plain HTTP/1.1 on `listener` until `stop`, then gives open
/// connections `drain` to finish. Each request carries its [`Conn`].
pub async fn serve(
    listener: TcpListener,
    router: Router,
    serving: Serving,
    stop: CancellationToken,
) {
    let Serving {
        limits,
        connections: connection_limit,
        per_address,
        make_room,
        drain,
    } = serving;
    let local = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "listener has no local address");
            return;
        }
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read)
        .max_buf_size(limits.max_head_bytes.max(8192))
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    let mut connections = tokio::task::JoinSet::new();
    let idle = make_room.then(IdleConnections::default);
    while let Some((slot, tcp, peer)) = accept(
        &listener,
        &connection_limit,
        idle.as_ref(),
        &mut connections,
        &stop,
        |e| tracing::warn!(error = %e, "accept failed"),
    )
    .await
    {
        let address_slot = match &per_address {
            Some(limit) => match limit.take(peer.ip()) {
                Some(slot) => Some(slot),
                None => {
                    tracing::debug!(%peer, "connection closed: its address holds its cap (--max-connections-per-address)");
                    continue;
                }
            },
            None => None,
        };
        let conn = Conn { peer, local };
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(conn);
            router.clone().oneshot(req.map(Body::new))
        });
        let room = idle.as_ref().map(IdleConnections::watch);
        let service = MarkBusy::new(service, room.clone());
        let connection = builder.serve_connection(TokioIo::new(tcp), service);
        let served = graceful.watch(connection);
        connections.spawn(async move {
            let _slots = (slot, address_slot);
            let evicted = async {
                match &room {
                    Some(room) => room.evicted().await,
                    None => std::future::pending().await,
                }
            };
            let _forget = room.clone().map(Forget);
            tokio::select! {
                result = served => if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                },
                _ = evicted => tracing::debug!(%peer, "idle admin connection closed to make room"),
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(drain) => {}
    }
    connections.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_header_must_name_the_listening_address() {
        let v4: SocketAddr = "169.254.170.23:80".parse().unwrap();
        let v6: SocketAddr = "[fd00:ec2::23]:80".parse().unwrap();
        let lo: SocketAddr = "127.0.0.1:2705".parse().unwrap();
        assert!(host_matches("169.254.170.23", v4));
        assert!(host_matches("169.254.170.23:80", v4));
        assert!(!host_matches("169.254.170.23:81", v4));
        assert!(host_matches("[fd00:ec2::23]", v6));
        assert!(host_matches("[fd00:ec2::23]:80", v6));
        assert!(!host_matches("fd00:ec2::23", v4));
        assert!(host_matches("127.0.0.1:2705", lo));
        assert!(!host_matches("127.0.0.1", lo));
        assert!(!host_matches("localhost:2705", lo));
        assert!(!host_matches("evil.example.com", v4));
        assert!(!host_matches("", v4));
        for malformed in [
            "169.254.170.23:+80",
            "169.254.170.23:080",
            "169.254.170.23:",
            "169.254.170.23:65536",
            "[fd00:ec2::23]:-80",
            "[fd00:ec2::23",
            "[169.254.170.23]",
        ] {
            assert_eq!(
                check_host(malformed, v4),
                HostCheck::Malformed,
                "{malformed}"
            );
        }
        assert_eq!(check_host("169.254.170.24", v4), HostCheck::Other);
    }

    #[test]
    fn each_address_holds_at_most_its_cap_and_gets_places_back() {
        let limit = PerAddressLimit::new(2, Default::default());
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first = limit.take(a).unwrap();
        let _second = limit.take(a).unwrap();
        assert!(limit.take(a).is_none(), "a holds its cap");
        assert!(limit.take(b).is_some(), "b is not counted with a");
        drop(first);
        assert!(
            limit.take(a).is_some(),
            "a closed connection gives its place back"
        );
        assert_eq!(limit.refused(), 1);
    }

    #[test]
    fn tokens_are_taken_as_they_are() {
        let mut h = HeaderMap::new();
        assert_eq!(token_of(&h).unwrap_err().status(), 400);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("eyJhbGciOi.x.y"),
        );
        assert_eq!(token_of(&h).unwrap(), "eyJhbGciOi.x.y");
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer eyJ"),
        );
        assert!(token_of(&h).unwrap_err().to_string().contains("Bearer"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static(""));
        assert_eq!(token_of(&h).unwrap_err().status(), 400);
        let long = "a".repeat(MAX_TOKEN_BYTES + 1);
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(&long).unwrap());
        assert_eq!(token_of(&h).unwrap_err().status(), 400);
    }
}
