//! Load on the credentials agent's cached path over loopback, and its memory idle and with many
//! cached tokens (BENCHMARKS.md, "Credentials agent").
//!
//!   cargo run --release --example agent_load -- [TOKENS] [SECONDS] [CONNECTIONS] [ROUNDS] [RATE]
//!
//! The agent's HTTP server and credential service are the real ones; the Kubernetes API and STS
//! behind them answer in-process (each token is reviewed and issued once, during warm-up, by one
//! request to the agent's endpoint), so what is measured is the per-request path: HTTP/1.1
//! parsing, Host check, token hashing, the review cache, the association lookup, the credentials
//! cache and the answer. The process's RSS is read once the agent listens (idle) and once every
//! token is cached; neither the baseline nor the load generator has started yet.
//!
//! Without RATE (or 0) the load is a closed loop: as fast as CONNECTIONS go (throughput and
//! latency). With RATE it is an open loop at RATE requests/s in all, spread over the connections,
//! for SECONDS per round: latency counts from the actual send when the connection was idle at
//! its scheduled time (tokio's timer wakes up to a millisecond late, which would otherwise land in
//! every percentile; that lag is printed apart), from the scheduled time when it was still busy, so
//! the server's queueing stays in (as `examples/loadgen.rs` does).
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
                .expect("numbers: TOKENS SECONDS CONNECTIONS ROUNDS RATE")
        })
        .collect();
    let tokens = args.first().copied().unwrap_or(10_000) as usize;
    let seconds = args.get(1).copied().unwrap_or(10);
    let connections = args.get(2).copied().unwrap_or(32) as usize;
    let rounds = args.get(3).copied().unwrap_or(3).max(1);
    let rate = args.get(4).copied().filter(|r| *r > 0);

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

    let endpoint = Arc::new(Endpoint::new(
        service.clone(),
        metrics,
        Duration::from_millis(1500),
        None,
    ));
    let stop = CancellationToken::new();
    let agent = serve(server::credentials_router(endpoint), &stop).await;
    // Memory: idle (the agent listening, nothing cached), then every token reviewed and its
    // credentials cached, each by one request to the agent's endpoint.
    let idle = rss_kib();
    warm_up(agent, tokens).await;
    let (entries, bytes) = service.cache_size().await;
    let after = rss_kib();
    println!(
        "idle RSS {:.1} MiB; cached {entries} tokens: cache estimate {:.1} MiB, RSS {:.1} MiB (+{:.1} MiB, {:.0} bytes/token)",
        idle as f64 / 1024.0,
        bytes as f64 / 1048576.0,
        after as f64 / 1024.0,
        after.saturating_sub(idle) as f64 / 1024.0,
        after.saturating_sub(idle) as f64 * 1024.0 / tokens.max(1) as f64
    );

    // The baseline answers one token's credentials, the same size as every other.
    let body = service
        .credentials("tok-0")
        .await
        .expect("cached")
        .body()
        .clone();
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

    // Throughput or latency of cached answers over loopback HTTP/1.1 keep-alive connections,
    // against the baseline, in alternating rounds.
    let round = Duration::from_secs(seconds);
    let (mut throughput, mut p50, mut p99) = (Vec::new(), Vec::new(), Vec::new());
    for r in 1..=rounds {
        let base = load(baseline, tokens, connections, round, rate).await;
        let ours = load(agent, tokens, connections, round, rate).await;
        let (b50, a50) = (
            base.latency.value_at_quantile(0.5),
            ours.latency.value_at_quantile(0.5),
        );
        let (b99, a99) = (
            base.latency.value_at_quantile(0.99),
            ours.latency.value_at_quantile(0.99),
        );
        let lag = |r: &Round| match rate {
            Some(_) => format!(" (timer lag p99 {} us)", r.lag.value_at_quantile(0.99)),
            None => String::new(),
        };
        println!(
            "round {r}: agent {:.0}/s p50 {a50} us p99 {a99} us{}; baseline {:.0}/s p50 {b50} us p99 {b99} us{}",
            ours.latency.len() as f64 / seconds as f64,
            lag(&ours),
            base.latency.len() as f64 / seconds as f64,
            lag(&base),
        );
        throughput.push(ours.latency.len() as f64 / base.latency.len().max(1) as f64);
        p50.push(a50 as f64 / b50.max(1) as f64);
        p99.push(a99 as f64 / b99.max(1) as f64);
    }
    stop.cancel();
    let load = match rate {
        Some(rate) => format!("{rate} requests/s (open loop)"),
        None => "as fast as they go (closed loop)".into(),
    };
    println!(
        "cached answers of {tokens} tokens over {connections} connections at {load}, {rounds} rounds of {seconds} s: throughput {:.2} x the baseline, p50 {:.2} x, p99 {:.2} x (medians)",
        median(&mut throughput),
        median(&mut p50),
        median(&mut p99)
    );
}

/// One request per token to the agent at `addr` over one keep-alive connection: each token
/// reviewed and its credentials issued and cached through the real request path.
async fn warm_up(addr: std::net::SocketAddr, tokens: usize) {
    let mut sender = connect(addr).await;
    for i in 0..tokens {
        sender.ready().await.expect("the connection stays open");
        let resp = sender
            .send_request(credentials_request(addr, &format!("tok-{i}")))
            .await
            .expect("the agent answers");
        assert_eq!(resp.status(), 200, "token {i}");
        resp.into_body().collect().await.expect("a body");
    }
}

async fn connect(
    addr: std::net::SocketAddr,
) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

fn credentials_request(addr: std::net::SocketAddr, token: &str) -> hyper::Request<Empty<Bytes>> {
    hyper::Request::get("/v1/credentials")
        .header("host", addr.to_string())
        .header("authorization", token)
        .body(Empty::<Bytes>::new())
        .unwrap()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// What one round of load saw: latencies of answers and, open loop, the timer's lateness (µs).
struct Round {
    latency: hdrhistogram::Histogram<u64>,
    lag: hdrhistogram::Histogram<u64>,
}

/// Load of `/v1/credentials` at `addr` over `connections` keep-alive connections for `duration`:
/// closed loop, or open loop at `rate` requests/s in all (see the module comment for latency).
async fn load(
    addr: std::net::SocketAddr,
    tokens: usize,
    connections: usize,
    duration: Duration,
    rate: Option<u64>,
) -> Round {
    let deadline = Instant::now() + duration;
    // Open loop: each connection sends every `connections / rate` s, their schedules spread over
    // one such interval.
    let interval = rate.map(|r| Duration::from_secs_f64(connections as f64 / r as f64));
    let workers = (0..connections).map(|w| {
        tokio::spawn(async move {
            let mut sender = connect(addr).await;
            let mut round = Round {
                latency: hdrhistogram::Histogram::<u64>::new(3).unwrap(),
                lag: hdrhistogram::Histogram::<u64>::new(3).unwrap(),
            };
            let mut next =
                interval.map(|i| Instant::now() + i.mul_f64(w as f64 / connections as f64));
            let mut previous_done = Instant::now();
            let mut i = w;
            loop {
                let scheduled = match (next, interval) {
                    (Some(at), Some(every)) => {
                        tokio::time::sleep_until(at.into()).await;
                        next = Some(at + every);
                        at
                    }
                    _ => Instant::now(),
                };
                if scheduled >= deadline {
                    break;
                }
                let sent = Instant::now();
                let start = if previous_done > scheduled {
                    scheduled
                } else {
                    sent
                };
                let req = credentials_request(addr, &format!("tok-{}", i % tokens.max(1)));
                i += connections;
                sender.ready().await.unwrap();
                let resp = sender.send_request(req).await.unwrap();
                assert_eq!(resp.status(), 200);
                resp.into_body().collect().await.unwrap();
                let done = Instant::now();
                previous_done = done;
                round
                    .latency
                    .saturating_record((done - start).as_micros().max(1) as u64);
                if interval.is_some() && start == sent {
                    round
                        .lag
                        .saturating_record((sent - scheduled).as_micros().max(1) as u64);
                }
            }
            round
        })
    });
    let mut total = Round {
        latency: hdrhistogram::Histogram::<u64>::new(3).unwrap(),
        lag: hdrhistogram::Histogram::<u64>::new(3).unwrap(),
    };
    for r in futures::future::join_all(workers).await {
        let r = r.unwrap();
        total.latency.add(r.latency).unwrap();
        total.lag.add(r.lag).unwrap();
    }
    total
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
