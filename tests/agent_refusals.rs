//! What the credentials agent refuses, and how (docs/contract.md §9): the EKS agent's error
//! codes for unknown, foreign-audience, unbound and missing tokens, a ServiceAccount without
//! association, another Host, path or method, and STS's refusals and failures; 503 within the
//! request timeout when STS or the Kubernetes API is slow; requests a proxy in front could read
//! another way (issue 31); a token over 16 KiB; one client over its rate limit (429, other
//! clients unaffected); and lifetimes it cannot refresh within, refused at start.

mod support;

use std::time::{Duration, Instant};

use pod_identity_webhook::agent::server::RateLimit;
use support::WAIT;
use support::agent::*;
use support::kube_api::PodToken;
use support::sts::{RecordingSts, StsMode};

#[tokio::test]
async fn refusals_carry_the_eks_agent_codes() {
    let sts = RecordingSts::issuing(Duration::from_secs(3600)).await;
    let h = Harness::start(&sts.endpoint, |_| {}).await;
    let host = h.addr().to_string();

    // A token the API server does not know.
    let (status, body) = h.get("eyJhbGciOiJSUzI1NiJ9.forged.token").await;
    assert_refused(status, &body, 403, "AccessDenied");
    assert_message(&body, "invalid bearer token");
    assert!(
        !body.to_string().contains("forged"),
        "the token is never echoed"
    );

    // A token for another audience (an IRSA token, say).
    let irsa = "eyJhbGciOiJSUzI1NiJ9.irsa.token";
    let mut pod = PodToken::pod("team-a", "carts", "carts-1");
    pod.audiences = vec!["sts.amazonaws.com".into()];
    h.kube.token_reviews().add(irsa, pod);
    let (status, body) = h.get(irsa).await;
    assert_eq!(status, 403, "{body}");
    assert_message(&body, "is invalid for the target audiences");

    // A ServiceAccount token bound to no pod, even for the right audience.
    let unbound = "eyJhbGciOiJSUzI1NiJ9.unbound.token";
    h.kube.token_reviews().add(
        unbound,
        PodToken::unbound("team-a", "carts", "pods.eks.amazonaws.com"),
    );
    let (status, body) = h.get(unbound).await;
    assert_eq!(status, 403, "{body}");
    assert_message(&body, "not bound to a pod");

    // No token; a `Bearer` token.
    let (status, body) = get(h.addr(), "/v1/credentials", &host, None).await;
    assert_refused(status, &body, 400, "InvalidTokenException");
    let (status, _) = get(h.addr(), "/v1/credentials", &host, Some("Bearer abc")).await;
    assert_eq!(status, 400);

    // A ServiceAccount without association: 404, and STS is never asked.
    let (status, body) = h.get(&h.pod_token("team-a", "no-association", "p-1")).await;
    assert_refused(status, &body, 404, "ResourceNotFound");
    assert_message(&body, "team-a/no-association");
    assert!(sts.assume_role_calls().is_empty());

    // Another Host (traffic routed here by name), another path, another method.
    let token = h.pod_token("team-a", "carts", "carts-1");
    let (status, body) = get(
        h.addr(),
        "/v1/credentials",
        "evil.example.com",
        Some(&token),
    )
    .await;
    assert_refused(status, &body, 403, "AccessDenied");
    let (status, _) = get(h.addr(), "/latest/meta-data/", &host, Some(&token)).await;
    assert_eq!(status, 404);
    let (status, _) = request("POST", h.addr(), "/v1/credentials", &host, Some(&token)).await;
    assert_eq!(status, 405);
    assert!(sts.assume_role_calls().is_empty());

    // STS refusing the role: 403 with STS's code in the message.
    let (status, _) = h.get(&h.pod_token("team-a", "carts", "carts-0")).await;
    assert_eq!(status, 200);
    sts.fail(403, "AccessDenied");
    let (status, body) = h.get(&token).await;
    assert_refused(status, &body, 403, "AccessDenied");
    sts.fail(400, "Throttling");
    let (status, body) = h.get(&h.pod_token("team-a", "carts", "carts-2")).await;
    assert_refused(status, &body, 429, "ThrottlingException");

    // A request STS finds invalid: 400.
    sts.fail(400, "ValidationError");
    let (status, body) = h.get(&h.pod_token("team-a", "carts", "carts-3")).await;
    assert_refused(status, &body, 400, "InvalidParameterException");
    // Session tags and policy over STS's packed size: the pod is told so, as a bad request.
    sts.fail(400, "PackedPolicyTooLarge");
    let (status, body) = h.get(&h.pod_token("team-a", "carts", "carts-5")).await;
    assert_refused(status, &body, 400, "InvalidParameterException");
    assert_message(&body, "PackedPolicyTooLarge");
    // STS failing: 503.
    sts.fail(500, "InternalFailure");
    let (status, body) = h.get(&h.pod_token("team-a", "carts", "carts-4")).await;
    assert_refused(status, &body, 503, "ServiceUnavailable");

    let outcome = |o: &str| format!("pod_identity_agent_requests_total{{outcome=\"{o}\"}}");
    assert_eq!(h.metric(&outcome("access_denied")).await, 4.0);
    assert_eq!(h.metric(&outcome("not_found")).await, 1.0);
    assert_eq!(h.metric(&outcome("wrong_host")).await, 1.0);
    assert_eq!(h.metric(&outcome("bad_request")).await, 4.0);
    assert_eq!(h.metric(&outcome("throttled")).await, 1.0);
    assert_eq!(h.metric(&outcome("unavailable")).await, 1.0);
}

#[tokio::test]
async fn slow_sts_or_api_server_gives_503_within_the_request_timeout() {
    let sts = RecordingSts::start(StsMode::Hang).await;
    let h = Harness::start(&sts.endpoint, |s| {
        s.request_timeout = Duration::from_millis(800);
        s.review_timeout = Duration::from_millis(500);
    })
    .await;
    let token = h.pod_token("team-a", "carts", "carts-1");
    let started = Instant::now();
    let (status, body) = h.get(&token).await;
    assert_refused(status, &body, 503, "ServiceUnavailable");
    assert_message(&body, "no credentials within 800ms");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    sts.set_mode(StsMode::Issue {
        lifetime: Duration::from_secs(3600),
    });
    h.kube
        .token_reviews()
        .delay_ms
        .store(5_000, std::sync::atomic::Ordering::Relaxed);
    let started = Instant::now();
    let (status, body) = h.get(&h.pod_token("team-a", "carts", "carts-2")).await;
    assert_refused(status, &body, 503, "ServiceUnavailable");
    assert_message(&body, "the Kubernetes API did not answer within 500ms");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn one_client_over_its_rate_limit_gets_429_and_other_clients_do_not() {
    let sts = RecordingSts::issuing(Duration::from_secs(3600)).await;
    let h = Harness::start(&sts.endpoint, |s| {
        s.rate_limit = Some(RateLimit {
            per_second: 1,
            burst: 3,
        });
    })
    .await;
    let token = h.pod_token("team-a", "carts", "carts-1");
    let host = h.addr().to_string();
    let a: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let b: std::net::IpAddr = "127.0.0.2".parse().unwrap();

    // Client A: its burst, then 429 (well before 20 requests, whatever the machine's speed).
    let mut throttled = None;
    for i in 0..20 {
        let (status, body) = get_from(a, h.addr(), "/v1/credentials", &host, Some(&token)).await;
        if status == 429 {
            throttled = Some((i, body));
            break;
        }
        assert_eq!(status, 200, "{body}");
    }
    let (answered, body) = throttled.expect("client A was never throttled");
    assert!(answered >= 3, "throttled within its burst ({answered})");
    assert_eq!(body["Code"], "ThrottlingException", "{body}");
    let reviews = h.kube.token_reviews().count();

    // Client B, on another address, is not affected.
    let (status, body) = get_from(b, h.addr(), "/v1/credentials", &host, Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    // A throttled request costs nothing downstream.
    assert_eq!(h.kube.token_reviews().count(), reviews);
    assert_eq!(sts.assume_role_calls().len(), 1);
    assert!(
        h.metric("pod_identity_agent_requests_total{outcome=\"throttled\"}")
            .await
            >= 1.0
    );
}

/// Sends `head` as it is over a fresh TCP connection; the status of the answer.
async fn raw_status(addr: std::net::SocketAddr, head: String) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, tcp.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"))
}

/// Issue 31: what a proxy in front could read one way and the agent another is refused with
/// 400, never "the first one wins".
#[tokio::test]
async fn ambiguous_requests_are_refused_not_read_one_way() {
    let sts = RecordingSts::issuing(Duration::from_secs(3600)).await;
    let h = Harness::start(&sts.endpoint, |_| {}).await;
    let token = h.pod_token("team-a", "carts", "carts-1");
    let addr = h.addr();
    let (ip, port) = (addr.ip(), addr.port());
    let request = |target: &str, headers: &str| {
        format!("GET {target} HTTP/1.1\r\n{headers}Connection: close\r\n\r\n")
    };
    let auth = format!("Authorization: {token}\r\n");
    let host = format!("Host: {addr}\r\n");

    // As the SDKs send it, and absolute-form naming the same authority: answered.
    assert_eq!(
        raw_status(addr, request("/v1/credentials", &format!("{host}{auth}"))).await,
        200
    );
    assert_eq!(
        raw_status(
            addr,
            request(
                &format!("http://{addr}/v1/credentials"),
                &format!("{host}{auth}")
            )
        )
        .await,
        200
    );

    for (case, head) in [
        (
            "two Host headers",
            request(
                "/v1/credentials",
                &format!("{host}Host: 169.254.170.23\r\n{auth}"),
            ),
        ),
        (
            "two Host headers, ours second",
            request(
                "/v1/credentials",
                &format!("Host: 169.254.170.23\r\n{host}{auth}"),
            ),
        ),
        (
            "an absolute-form URI naming another authority",
            request(
                "http://169.254.170.23/v1/credentials",
                &format!("{host}{auth}"),
            ),
        ),
        (
            "a port with a sign",
            request("/v1/credentials", &format!("Host: {ip}:+{port}\r\n{auth}")),
        ),
        (
            "a port with leading zeros",
            request("/v1/credentials", &format!("Host: {ip}:00{port}\r\n{auth}")),
        ),
        (
            "two Authorization headers",
            request(
                "/v1/credentials",
                &format!("{host}{auth}Authorization: other-token\r\n"),
            ),
        ),
        (
            "two Authorization headers, the same twice",
            request("/v1/credentials", &format!("{host}{auth}{auth}")),
        ),
    ] {
        assert_eq!(raw_status(addr, head).await, 400, "{case}");
    }
}

#[tokio::test]
async fn a_token_over_16_kib_is_refused_as_invalid_and_the_agent_keeps_serving() {
    let sts = RecordingSts::issuing(Duration::from_secs(3600)).await;
    let h = Harness::start(&sts.endpoint, |_| {}).await;
    let host = h.addr().to_string();
    let limit = pod_identity_webhook::agent::server::MAX_TOKEN_BYTES;
    assert_eq!(limit, 16 * 1024, "docs/agent.md: over 16 KiB");

    // One byte over: 400 InvalidTokenException, and the API server is not asked.
    let long = format!("eyJhbGciOiJSUzI1NiJ9.{}", "a".repeat(limit));
    let (status, body) = get(h.addr(), "/v1/credentials", &host, Some(&long[..limit + 1])).await;
    assert_refused(status, &body, 400, "InvalidTokenException");
    assert_message(&body, "longer than any service account token");
    assert_eq!(h.kube.token_reviews().count(), 0);

    // Exactly 16 KiB is a token to review (the API server does not know this one).
    let (status, body) = get(h.addr(), "/v1/credentials", &host, Some(&long[..limit])).await;
    assert_refused(status, &body, 403, "AccessDenied");
    assert_eq!(h.kube.token_reviews().count(), 1);

    // The agent keeps serving.
    let (status, body) = h.get(&h.pod_token("team-a", "carts", "carts-1")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        h.metric("pod_identity_agent_requests_total{outcome=\"bad_request\"}")
            .await,
        1.0
    );
}

/// Lifetimes the agent cannot work with are refused before anything starts, naming the flags:
/// a session outside STS's 15m–12h, and a refresh point at or past the credentials' lifetime
/// (every cached answer would start a refresh), which for a target role is at most an hour.
#[tokio::test]
async fn the_agent_refuses_lifetimes_it_cannot_refresh_within() {
    for (flags, says) in [
        (
            &["--session-duration", "10m"][..],
            "--session-duration must be between 15m and 12h",
        ),
        (
            &["--session-duration", "15m", "--refresh-before", "15m"],
            "--refresh-before (15m) must be shorter than the credentials' lifetime (15m",
        ),
        (
            &["--session-duration", "2h", "--refresh-before", "1h"],
            "--refresh-before (1h) must be shorter than the credentials' lifetime (1h",
        ),
    ] {
        let mut args = support::strings(&["agent", "--cluster-name", "kind"]);
        args.extend(support::strings(flags));
        let (code, _, stderr) = support::run_binary(args, None).await;
        assert_ne!(code, 0, "{flags:?}");
        assert!(stderr.contains(says), "{flags:?}: {stderr}");
    }
}
