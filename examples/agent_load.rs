//! Load on the credentials agent's cached path over loopback, and its memory with many cached
//! tokens (BENCHMARKS.md, "Credentials agent").
//!
//!   cargo run --release --example agent_load -- [TOKENS] [SECONDS] [CONNECTIONS] [ROUNDS]
//!
//! The agent's HTTP server and credential service are the real ones; the Kubernetes API and STS
//! behind them answer in-process (each token is reviewed and issued once, during warm-up), so
//! what is measured is the per-request path: HTTP/1.1 parsing, Host check, token hashing, the
//! review cache, the association lookup, the credentials cache and the answer.
//!
//! The baseline, measured in the same process in alternating rounds, is the same listener loop
//! and HTTP stack (`agent::server::serve`, axum) answering the same JSON body for every request:
//! the ratios are what the agent's own work costs over serving a constant over HTTP.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::http::header;
use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use pod_identity_webhook::agent::credentials::{CredentialService, CredentialSettings};
use pod_identity_webhook::agent::metrics::AgentMetrics;
use pod_identity_webhook::agent::review::{PodClaims, TokenReviewError, TokenReviewer};
use pod_identity_webhook::agent::server::{self, ConnLimits, Endpoint};
use pod_identity_webhook::agent::sts::{
    AssumeRequest, CredentialIssuer, IssuedCredentials, StsError,
};
use pod_identity_webhook::identity::file::FileSource;
use pod_identity_webhook::identity::{Association, Identities};
use pod_identity_webhook::server::ConnectionLimit;
use tokio_util::sync::CancellationToken;

/// Tokens are `tok-<pod>`: every one is a pod of team-a/carts.
struct LocalReviewer;

impl TokenReviewer for LocalReviewer {
    fn review<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<PodClaims, TokenReviewError>> {
        Box::pin(async move {
            let pod = token
                .strip_prefix("tok-")
                .ok_or_else(|| TokenReviewError::Denied("unknown token".into()))?;
            Ok(PodClaims {
                namespace: "team-a".into(),
                service_account: "carts".into(),
                pod_name: format!("carts-{pod}"),
                pod_uid: format!("6f1c9a2e-0000-4000-8000-{pod:0>12}"),
            })
        })
    }

    fn reachable(&self) -> BoxFuture<'_, bool> {
        Box::pin(async { true })
    }
}

/// Credentials the size STS gives (a session token of ~1 KiB with session tags).
struct LocalIssuer;

impl CredentialIssuer for LocalIssuer {
    fn assume_role<'a>(
        &'a self,
        request: &'a AssumeRequest,
        _: Option<&'a IssuedCredentials>,
    ) -> BoxFuture<'a, Result<IssuedCredentials, StsError>> {
        Box::pin(async move {
            Ok(IssuedCredentials {
                access_key_id: format!("ASIA{:016}", fastrand::u64(..)),
                secret_access_key: "x".repeat(40),
                session_token: format!("{}{}", request.session_name, "T".repeat(1000)),
                expiration: SystemTime::now() + Duration::from_secs(3600),
                account_id: "111122223333".into(),
            })
        })
    }

    fn caller_account(&self) -> BoxFuture<'_, Result<String, StsError>> {
        Box::pin(async { Ok("111122223333".into()) })
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| {
            a.parse()
                .expect("numbers: TOKENS SECONDS CONNECTIONS ROUNDS")
        })
        .collect();
    let tokens = args.first().copied().unwrap_or(10_000) as usize;
    let seconds = args.get(1).copied().unwrap_or(10);
    let connections = args.get(2).copied().unwrap_or(32) as usize;
    let rounds = args.get(3).copied().unwrap_or(3).max(1);

    // The carts association of `examples/associations.yaml`.
    let association: Association = serde_yaml_ng::from_str(
        "{namespace: team-a, serviceAccount: carts, roleArn: \"arn:aws:iam::111122223333:role/carts\"}",
    )
    .expect("one association");
    let identities = Identities::new("eks.amazonaws.com")
        .with_associations(FileSource::from_list(vec![association]).expect("one association"));
    let mut settings = CredentialSettings::new("bench", "us-east-1");
    settings.cluster_arn = Some("arn:aws:eks:us-east-1:111122223333:cluster/bench".into());
    let metrics = Arc::new(AgentMetrics::new());
    let service = CredentialService::new(
        Arc::new(LocalReviewer),
        Arc::new(LocalIssuer),
        identities,
        settings,
        metrics.clone(),
    );

    // Memory: every token reviewed and its credentials cached.
    let before = rss_kib();
    for i in 0..tokens {
        service
            .credentials(&format!("tok-{i}"))
            .await
            .expect("credentials");
    }
    let (entries, bytes) = service.cache_size().await;
    let after = rss_kib();
    println!(
        "cached {entries} tokens: cache estimate {:.1} MiB, RSS {:.1} -> {:.1} MiB (+{:.1} MiB, {:.0} bytes/token)",
        bytes as f64 / 1048576.0,
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        (after - before) as f64 / 1024.0,
        (after - before) as f64 * 1024.0 / tokens.max(1) as f64
    );

    // Throughput and latency of cached answers over loopback HTTP/1.1 keep-alive connections,
    // against the baseline, in alternating rounds.
    let body = service
        .credentials("tok-0")
        .await
        .expect("cached")
        .body()
        .clone();
    let endpoint = Arc::new(Endpoint::new(
        service,
        metrics,
        Duration::from_millis(1500),
        None,
    ));
    let stop = CancellationToken::new();
    let agent = serve(server::credentials_router(endpoint), &stop).await;
    let baseline = serve(
        axum::Router::new().route(
            "/v1/credentials",
            axum::routing::get(move || {
                let body = body.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], body) }
            }),
        ),
        &stop,
    )
    .await;
    let round = Duration::from_secs(seconds);
    let (mut throughput, mut p99) = (Vec::new(), Vec::new());
    for r in 1..=rounds {
        let (base_n, base_h) = load(baseline, tokens, connections, round).await;
        let (agent_n, agent_h) = load(agent, tokens, connections, round).await;
        let (b99, a99) = (
            base_h.value_at_quantile(0.99),
            agent_h.value_at_quantile(0.99),
        );
        println!(
            "round {r}: agent {:.0}/s p50 {} us p99 {} us; baseline {:.0}/s p50 {} us p99 {} us",
            agent_n as f64 / seconds as f64,
            agent_h.value_at_quantile(0.5),
            a99,
            base_n as f64 / seconds as f64,
            base_h.value_at_quantile(0.5),
            b99
        );
        throughput.push(agent_n as f64 / base_n.max(1) as f64);
        p99.push(a99 as f64 / b99.max(1) as f64);
    }
    stop.cancel();
    println!(
        "cached answers over {connections} connections, {rounds} rounds of {seconds} s: throughput {:.2} x the baseline, p99 {:.2} x the baseline (medians)",
        median(&mut throughput),
        median(&mut p99)
    );
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Closed-loop load of `/v1/credentials` at `addr` over `connections` keep-alive connections
/// for `duration`: (answers, latency histogram in µs).
async fn load(
    addr: std::net::SocketAddr,
    tokens: usize,
    connections: usize,
    duration: Duration,
) -> (u64, hdrhistogram::Histogram<u64>) {
    let deadline = Instant::now() + duration;
    let workers = (0..connections).map(|w| {
        tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            let mut histogram = hdrhistogram::Histogram::<u64>::new(3).unwrap();
            let mut i = w;
            while Instant::now() < deadline {
                let token = format!("tok-{}", i % tokens.max(1));
                i += connections;
                let req = hyper::Request::get("/v1/credentials")
                    .header("host", addr.to_string())
                    .header("authorization", token)
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                let start = Instant::now();
                let resp = sender.send_request(req).await.unwrap();
                assert_eq!(resp.status(), 200);
                resp.into_body().collect().await.unwrap();
                histogram
                    .record(start.elapsed().as_micros() as u64)
                    .unwrap();
            }
            histogram
        })
    });
    let mut total = hdrhistogram::Histogram::<u64>::new(3).unwrap();
    for h in futures::future::join_all(workers).await {
        total.add(h.unwrap()).unwrap();
    }
    (total.len(), total)
}

/// Serves `router` on a loopback port through the agent's own listener loop.
async fn serve(router: axum::Router, stop: &CancellationToken) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server::serve(
        listener,
        router,
        server::Serving {
            limits: ConnLimits::default(),
            connections: ConnectionLimit::new(4096),
            per_address: None,
            make_room: false,
            drain: Duration::from_secs(1),
        },
        stop.clone(),
    ));
    addr
}
