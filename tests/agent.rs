//! The credentials agent end to end (docs/contract.md §9): real HTTP in and out, TokenReviews answered by
//! the fake Kubernetes API with the API server's shapes, STS from moto (a real implementation)
//! or from the recording STS where the wire matters, and real AWS SDKs as clients.

mod eks_support;
mod support;

use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use eks_support::FakeEks;
use pod_identity_webhook::agent::server::RateLimit;
use support::agent::*;
use support::kube_api::{FakeKubeApi, PodToken};
use support::sts::{INSTALL_MOTO, MOTO, Moto, RecordingSts, StsMode, moto_available};
use support::{WAIT, admin_get};

/// Whether moto (the STS stand-in) is missing and the test must stop: a failure under CI.
fn skip_without_moto() -> bool {
    support::skip::unless(moto_available(), MOTO, INSTALL_MOTO)
}

#[tokio::test]
async fn moto_issues_credentials_for_the_association_and_chains_to_the_target_role() {
    if skip_without_moto() {
        return;
    }
    let moto = Moto::start().await;
    let h = Harness::start(&moto.endpoint, |_| {}).await;

    let (status, answer) = h.get(&h.pod_token("team-a", "carts", "carts-5d8f")).await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["AccessKeyId"].as_str().unwrap().starts_with("ASIA"),
        "{answer}"
    );
    assert!(!answer["SecretAccessKey"].as_str().unwrap().is_empty());
    assert!(!answer["Token"].as_str().unwrap().is_empty());
    assert_eq!(answer["AccountId"], "111122223333");
    let left = expiration(&answer)
        .duration_since(SystemTime::now())
        .expect("not expired");
    assert!(
        left > Duration::from_secs(3000) && left <= Duration::from_secs(3601),
        "DurationSeconds 3600: {left:?}"
    );

    // targetRoleArn: the answer is the target role's credentials, in the target's account.
    let (status, chained) = h.get(&h.pod_token("team-a", "orders", "orders-1")).await;
    assert_eq!(status, 200, "{chained}");
    assert_eq!(chained["AccountId"], "444455556666");
    assert_ne!(chained["AccessKeyId"], answer["AccessKeyId"]);

    // The credentials work as any SDK uses them: moto knows whose they are.
    let sts = aws_sdk_sts::Client::from_conf(
        aws_sdk_sts::Config::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(&moto.endpoint)
            .credentials_provider(Credentials::new(
                chained["AccessKeyId"].as_str().unwrap(),
                chained["SecretAccessKey"].as_str().unwrap(),
                Some(chained["Token"].as_str().unwrap().to_string()),
                None,
                "agent",
            ))
            .build(),
    );
    let me = sts.get_caller_identity().send().await.unwrap();
    let arn = me.arn().unwrap();
    assert!(
        arn.starts_with("arn:aws:sts::444455556666:assumed-role/orders-data/eks-kind-orders-1-"),
        "{arn}"
    );
    assert_eq!(
        h.metric("pod_identity_agent_sts_calls_total{result=\"ok\"}")
            .await,
        3.0
    );
}

const SESSION_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::reports/*"}]}"#;

#[tokio::test]
async fn the_session_policy_goes_to_sts_as_policy_and_no_session_tags_go_with_it() {
    if skip_without_moto() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let recording = dir.path().join("moto-recording.jsonl");
    let moto = Moto::recording(&recording).await;
    let file = dir.path().join("associations.yaml");
    let policy = serde_json::to_string(SESSION_POLICY).unwrap();
    std::fs::write(
        &file,
        format!(
            "associations:
  - {{namespace: team-a, serviceAccount: reports, roleArn: '{CARTS_ROLE}', disableSessionTags: true,
     policy: {policy}}}
  - {{namespace: team-a, serviceAccount: chained, roleArn: '{ORDERS_ROLE}', targetRoleArn: '{TARGET_ROLE}',
     disableSessionTags: true, policy: {policy}}}
"
        ),
    )
    .unwrap();
    let h = Harness::start(&moto.endpoint, |s| s.associations_file = Some(file)).await;

    let (status, answer) = h.get(&h.pod_token("team-a", "reports", "reports-1")).await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = h.get(&h.pod_token("team-a", "chained", "chained-1")).await;
    assert_eq!(status, 200, "{answer}");

    // What moto's recorder saw on the wire.
    let calls: Vec<_> = Moto::recorded(&recording)
        .into_iter()
        .filter(|c| c.action() == "AssumeRole")
        .collect();
    let roles: Vec<&str> = calls.iter().map(|c| c.params["RoleArn"].as_str()).collect();
    assert_eq!(roles, [CARTS_ROLE, ORDERS_ROLE, TARGET_ROLE]);
    for call in &calls {
        assert!(call.tags().is_empty(), "no session tags: {:?}", call.params);
        assert!(call.transitive_keys().is_empty(), "{:?}", call.params);
    }
    // The policy scopes the credentials the pod gets: those of the one call, or of the target
    // role's (a session policy does not carry into a chained session).
    assert_eq!(
        calls[0].params.get("Policy").map(String::as_str),
        Some(SESSION_POLICY)
    );
    assert_eq!(calls[1].params.get("Policy"), None, "{:?}", calls[1].params);
    assert_eq!(
        calls[2].params.get("Policy").map(String::as_str),
        Some(SESSION_POLICY)
    );
}

#[tokio::test]
async fn the_wire_carries_session_tags_session_name_and_external_id() {
    let sts = RecordingSts::issuing(Duration::from_secs(3600)).await;
    let h = Harness::start(&sts.endpoint, |_| {}).await;
    let pod = "carts-7c9d8b6f5-x2x4q";
    let (status, answer) = h.get(&h.pod_token("team-a", "carts", pod)).await;
    assert_eq!(status, 200, "{answer}");

    // No --cluster-arn: the agent asked STS who it is, for the synthetic cluster ARN.
    assert!(
        sts.calls()
            .iter()
            .any(|c| c.action() == "GetCallerIdentity")
    );
    let calls = sts.assume_role_calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.params["RoleArn"], CARTS_ROLE);
    assert_eq!(call.params["DurationSeconds"], "3600");
    assert_eq!(
        call.signed_by, "AKIDAGENTEXAMPLE",
        "the agent's own credentials"
    );
    assert!(!call.params.contains_key("ExternalId"));
    let name = &call.params["RoleSessionName"];
    assert!(name.starts_with(&format!("eks-kind-{pod}-")), "{name}");
    assert!(name.len() <= 64, "{name}");
    let tags = call.tags();
    let uid = PodToken::pod("team-a", "carts", pod).pod_uid;
    assert_eq!(
        tags,
        [
            (
                "eks-cluster-arn",
                "arn:aws:eks:us-east-1:111122223333:cluster/kind"
            ),
            ("eks-cluster-name", "kind"),
            ("kubernetes-namespace", "team-a"),
            ("kubernetes-service-account", "carts"),
            ("kubernetes-pod-name", pod),
            ("kubernetes-pod-uid", uid.as_str()),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
    );
    assert_eq!(
        call.transitive_keys(),
        tags.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        "every tag is transitive"
    );

    // Chaining: the target role is assumed with the first credentials and the external id.
    let (status, _) = h.get(&h.pod_token("team-a", "orders", "orders-1")).await;
    assert_eq!(status, 200);
    let calls = sts.assume_role_calls();
    let (first, second) = (&calls[1], &calls[2]);
    assert_eq!(first.params["RoleArn"], ORDERS_ROLE);
    assert_eq!(first.tags().len(), 6);
    assert!(!first.params.contains_key("ExternalId"));
    assert_eq!(second.params["RoleArn"], TARGET_ROLE);
    assert_eq!(second.params["ExternalId"], "ext-0rders");
    assert!(
        second.signed_by.starts_with("ASIARECORDED"),
        "signed with the first role's credentials: {}",
        second.signed_by
    );

    // disableSessionTags: no tags, and every pod of the ServiceAccount shares one session.
    for pod in ["batch-a", "batch-b", "batch-c"] {
        let (status, answer) = h.get(&h.pod_token("team-b", "batch", pod)).await;
        assert_eq!(status, 200, "{answer}");
    }
    let batch: Vec<_> = sts
        .assume_role_calls()
        .into_iter()
        .filter(|c| c.params["RoleArn"] == SHARED_ROLE)
        .collect();
    assert_eq!(batch.len(), 1, "one STS call for the whole ServiceAccount");
    assert!(batch[0].tags().is_empty());
    assert!(batch[0].params["RoleSessionName"].starts_with("eks-kind-batch-"));
}

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
async fn a_thousand_concurrent_requests_with_fifty_tokens_make_fifty_sts_calls() {
    let sts = RecordingSts::issuing(Duration::from_secs(3600)).await;
    let h = Harness::start(&sts.endpoint, |s| {
        s.request_timeout = Duration::from_secs(30);
        // A thousand connections from one address: over the per-address cap by design.
        s.max_connections_per_address = 0;
    })
    .await;
    let tokens: Vec<String> = (0..50)
        .map(|i| h.pod_token("team-a", "carts", &format!("carts-{i}")))
        .collect();
    let requests = (0..1000).map(|i| {
        let token = tokens[i % 50].clone();
        let addr = h.addr();
        async move {
            (
                i % 50,
                get(addr, "/v1/credentials", &addr.to_string(), Some(&token)).await,
            )
        }
    });
    let answers = futures::future::join_all(requests).await;
    let mut keys = vec![None; 50];
    for (pod, (status, body)) in answers {
        assert_eq!(status, 200, "{body}");
        let key = body["AccessKeyId"].as_str().unwrap().to_string();
        match &keys[pod] {
            None => keys[pod] = Some(key),
            Some(k) => assert_eq!(k, &key, "one pod, one set of credentials"),
        }
    }
    assert_eq!(sts.assume_role_calls().len(), 50);
    assert_eq!(h.kube.token_reviews().count(), 50);
    assert_eq!(
        h.metric("pod_identity_agent_cache_lookups_total{result=\"hit\"}")
            .await
            + h.metric("pod_identity_agent_cache_lookups_total{result=\"miss\"}")
                .await,
        1000.0
    );
}

#[tokio::test]
async fn with_sts_down_cached_credentials_are_served_until_they_near_expiry() {
    let sts = RecordingSts::issuing(Duration::from_secs(8)).await;
    let h = Harness::start(&sts.endpoint, |s| {
        s.credentials.refresh_before = Duration::from_secs(6);
        s.credentials.min_remaining = Duration::from_secs(3);
        s.credentials.retry_after = Duration::from_millis(200);
        s.sweep_interval = Duration::from_millis(200);
    })
    .await;
    let token = h.pod_token("team-a", "carts", "carts-1");
    let (status, first) = h.get(&token).await;
    assert_eq!(status, 200);
    let expires = expiration(&first);
    sts.fail(503, "ServiceUnavailable");

    // The agent decided between the moments before and after each request, so the time left
    // before it (for a 200) and after it (for a 503) bound what it saw at any load. `Expiration`
    // has whole seconds, at most 1 s earlier than what the agent keeps.
    let left_at = |t: SystemTime| expires.duration_since(t).unwrap_or_default();
    let started = Instant::now();
    let mut served = 0;
    loop {
        let before = SystemTime::now();
        let (status, body) = h.get(&token).await;
        if status == 200 {
            assert_eq!(body["AccessKeyId"], first["AccessKeyId"], "the cached ones");
            let left = left_at(before);
            assert!(
                left > Duration::from_secs(2),
                "served with --min-remaining (3 s) gone: {left:?}"
            );
            served += 1;
        } else {
            assert_refused(status, &body, 503, "ServiceUnavailable");
            let left = left_at(SystemTime::now());
            assert!(
                left <= Duration::from_secs(3),
                "refused while more than --min-remaining (3 s) remained: {left:?}"
            );
            break;
        }
        assert!(started.elapsed() < WAIT * 2, "never refused");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        served >= 1,
        "cached credentials were served while STS was down"
    );
    assert!(
        h.metric("pod_identity_agent_refreshes_total{result=\"failed\"}")
            .await
            >= 1.0
    );
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
async fn cached_credentials_are_refreshed_in_the_background_and_dropped_with_their_association() {
    let sts = RecordingSts::issuing(Duration::from_secs(8)).await;
    let h = Harness::start(&sts.endpoint, |s| {
        refresh_short_lived(s);
        s.reload_interval = Duration::from_millis(100);
    })
    .await;
    let token = h.pod_token("team-a", "carts", "carts-1");
    let (_, first) = h.get(&token).await;

    // Nobody asks; the sweep refreshes the served entry before it nears expiry.
    let deadline = Instant::now() + WAIT;
    while sts.assume_role_calls().len() < 2 {
        assert!(Instant::now() < deadline, "no background refresh");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let hits = h
        .metric("pod_identity_agent_cache_lookups_total{result=\"hit\"}")
        .await;
    let (status, second) = h.get(&token).await;
    assert_eq!(status, 200);
    assert_ne!(
        second["AccessKeyId"], first["AccessKeyId"],
        "the refreshed ones"
    );
    assert_eq!(
        h.metric("pod_identity_agent_cache_lookups_total{result=\"hit\"}")
            .await,
        hits + 1.0,
        "answered from the cache"
    );
    assert!(
        h.metric("pod_identity_agent_refreshes_total{result=\"ok\"}")
            .await
            >= 1.0
    );

    // The association goes: the next request is refused, and STS is not asked again.
    let calls = sts.assume_role_calls().len();
    std::fs::write(
        &h.associations,
        ASSOCIATIONS.replace("serviceAccount: carts", "serviceAccount: carts-v2"),
    )
    .unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, _) = h.get(&token).await;
        if status == 404 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still served after the association went"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(sts.assume_role_calls().len(), calls);
    let (entries, _) = h.agent.service.cache_size().await;
    assert_eq!(entries, 0, "dropped from the cache");
    drop(h.dir);
}

#[tokio::test]
async fn botocore_obtains_credentials_through_its_container_provider() {
    if skip_without_moto() {
        return;
    }
    let moto = Moto::start().await;
    let h = Harness::start(&moto.endpoint, |_| {}).await;
    let script = "import boto3; print(boto3.client('sts').get_caller_identity()['Arn'])";
    let stdout = botocore(
        &h,
        script,
        &[
            ("AWS_ENDPOINT_URL_STS", moto.endpoint.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
        ],
    )
    .await;
    assert!(
        stdout
            .trim()
            .starts_with("arn:aws:sts::111122223333:assumed-role/carts/eks-kind-carts-6b7-"),
        "{stdout}"
    );
}

#[tokio::test]
async fn readyz_needs_the_kubernetes_api_and_metrics_are_served() {
    let sts = RecordingSts::issuing(Duration::from_secs(3600)).await;
    let h = Harness::start(&sts.endpoint, |_| {}).await;
    let body = support::wait_readyz(h.agent.admin_addr, 200).await;
    assert!(body.contains("ready"), "{body}");
    let (status, _) = admin_get(h.agent.admin_addr, "/livez").await;
    assert_eq!(status, 200);
    let (_, text) = admin_get(h.agent.admin_addr, "/metrics").await;
    for family in [
        "pod_identity_agent_request_duration_seconds",
        "pod_identity_agent_cache_entries",
        "pod_identity_agent_cache_bytes",
    ] {
        assert!(text.contains(family), "{family} missing:\n{text}");
    }

    // An agent whose API server is gone is not ready.
    let kube = FakeKubeApi::start(0, Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = kube.kubeconfig(dir.path());
    drop(kube);
    let associations = dir.path().join("a.yaml");
    let lonely = start_agent(agent_settings(&associations, kubeconfig, &sts.endpoint)).await;
    let body = support::wait_readyz(lonely.admin_addr, 503).await;
    assert!(body.contains("Kubernetes API not reachable"), "{body}");
}

/// The agent binary for cluster `kind`, logging JSON to a piped stderr, on `port` and
/// `admin_port` with the API server of `kubeconfig`, in an empty environment but `HOME`.
fn agent_binary(
    port: u16,
    admin_port: u16,
    kubeconfig: std::path::PathBuf,
    home: &std::path::Path,
) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_pod-identity-webhook"));
    command
        .args(["agent", "--cluster-name", "kind", "--log-format", "json"])
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .env_clear()
        .env("HOME", home)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    command
}

/// Runs `command` to its end off the test's runtime.
async fn output(mut command: std::process::Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap()
}

/// python3 running `script` as a pod of team-a/carts does: botocore's container provider
/// pointed at the agent with the pod's token file, in an empty environment but `PATH`, `HOME`
/// and `env`; its stdout, once it succeeded.
async fn botocore(h: &Harness, script: &str, env: &[(&str, &str)]) -> String {
    let token_file = h.dir.path().join("eks-pod-identity-token");
    std::fs::write(&token_file, h.pod_token("team-a", "carts", "carts-6b7")).unwrap();
    let mut command = std::process::Command::new("python3");
    command
        .args(["-c", script])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", h.dir.path())
        .env(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            format!("http://{}/v1/credentials", h.addr()),
        )
        .env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", &token_file)
        .envs(env.iter().copied());
    let out = output(command).await;
    assert!(
        out.status.success(),
        "botocore failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn the_binary_takes_the_standard_aws_settings_and_never_logs_secrets() {
    let sts = RecordingSts::issuing(Duration::from_secs(3600)).await;
    let kube = FakeKubeApi::start(0, Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let associations = dir.path().join("associations.yaml");
    std::fs::write(&associations, ASSOCIATIONS).unwrap();
    let (port, admin_port) = (free_port(), free_port());
    let child = agent_binary(port, admin_port, kube.kubeconfig(dir.path()), dir.path())
        .arg("--associations")
        .arg(&associations)
        .env("AWS_REGION", "eu-west-1")
        .env("AWS_ACCESS_KEY_ID", "AKIDFROMTHEENV")
        .env("AWS_SECRET_ACCESS_KEY", "agent-secret-from-env")
        .env("AWS_ENDPOINT_URL_STS", &sts.endpoint)
        .spawn()
        .unwrap();
    // Killed if the test fails before it stops the agent itself.
    let _guard = KillOnDrop(child.id());
    let admin: std::net::SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    support::wait_listening(admin, "the agent").await;
    support::wait_readyz(admin, 200).await;

    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let token = "eyJhbGciOiJSUzI1NiJ9.binary.test-token-value";
    kube.token_reviews()
        .add(token, PodToken::pod("team-a", "carts", "carts-1"));
    let (status, answer) = get(addr, "/v1/credentials", &addr.to_string(), Some(token)).await;
    assert_eq!(status, 200, "{answer}");
    let forged = "eyJhbGciOiJSUzI1NiJ9.forged-token-value";
    let (status, _) = get(addr, "/v1/credentials", &addr.to_string(), Some(forged)).await;
    assert_eq!(status, 403);

    let calls = sts.assume_role_calls();
    assert_eq!(
        calls[0].signed_by, "AKIDFROMTHEENV",
        "credentials from the environment"
    );
    assert_eq!(
        calls[0].tags()[0],
        (
            "eks-cluster-arn".to_string(),
            "arn:aws:eks:eu-west-1:111122223333:cluster/kind".to_string()
        ),
        "region from AWS_REGION"
    );

    // SIGTERM: the agent stops and flushes its logs.
    let pid = child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(logs.contains("credential request refused"), "{logs}");
    for secret in [
        token,
        forged,
        "test-token-value",
        answer["SecretAccessKey"].as_str().unwrap(),
        answer["Token"].as_str().unwrap(),
        "agent-secret-from-env",
    ] {
        assert!(!logs.contains(secret), "the logs contain {secret}:\n{logs}");
    }
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

#[tokio::test]
async fn the_credentials_cache_stays_within_its_memory_bound() {
    let sts = RecordingSts::issuing(Duration::from_secs(3600)).await;
    const BOUND: u64 = 8 * 1024;
    let h = Harness::start(&sts.endpoint, |s| {
        s.credentials.max_cache_bytes = BOUND;
        s.credentials.max_reviews = 10;
    })
    .await;
    let tokens: Vec<String> = (0..60)
        .map(|i| h.pod_token("team-a", "carts", &format!("carts-{i}")))
        .collect();
    for token in &tokens {
        let (status, body) = h.get(token).await;
        assert_eq!(status, 200, "{body}");
    }
    let (entries, bytes) = h.agent.service.cache_size().await;
    assert!(bytes <= BOUND, "{bytes} bytes cached, bound {BOUND}");
    assert!(
        (1..60).contains(&entries),
        "{entries} entries: some evicted, some kept"
    );
    assert!(
        h.agent.service.review_cache_entries().await <= 10,
        "token reviews bounded by count"
    );
    // An evicted token is served again (new credentials from STS).
    for token in &tokens {
        let (status, _) = h.get(token).await;
        assert_eq!(status, 200);
    }
    let (_, bytes) = h.agent.service.cache_size().await;
    assert!(bytes <= BOUND, "{bytes} bytes cached, bound {BOUND}");
    let (_, text) = admin_get(h.agent.admin_addr, "/metrics").await;
    let gauge = support::sample(&text, "pod_identity_agent_cache_bytes").unwrap();
    assert!(gauge <= BOUND as f64, "{gauge}");
}

#[tokio::test]
async fn credentials_the_role_no_longer_allows_are_dropped_at_refresh() {
    let sts = RecordingSts::issuing(Duration::from_secs(8)).await;
    let h = Harness::start(&sts.endpoint, refresh_short_lived).await;
    let token = h.pod_token("team-a", "carts", "carts-1");
    let (status, _) = h.get(&token).await;
    assert_eq!(status, 200);
    // The role's trust policy changes: STS refuses the background refresh.
    sts.fail(403, "AccessDenied");
    let deadline = Instant::now() + WAIT;
    while h
        .metric("pod_identity_agent_refreshes_total{result=\"dropped\"}")
        .await
        < 1.0
    {
        assert!(Instant::now() < deadline, "never dropped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (entries, _) = h.agent.service.cache_size().await;
    assert_eq!(entries, 0);
    let (status, body) = h.get(&token).await;
    assert_refused(status, &body, 403, "AccessDenied");
}

/// The binary, killed on drop.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .status();
    }
}

#[tokio::test]
async fn the_binary_reads_its_aws_profile_and_eks_endpoint_from_the_standard_settings() {
    let sts = RecordingSts::issuing(Duration::from_secs(3600)).await;
    let eks = FakeEks::start("kind").await;
    eks.add("team-a", "carts", "carts");
    let kube = FakeKubeApi::start(0, Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::write(&config, "[profile agent]\nregion = eu-central-1\n").unwrap();
    let credentials = dir.path().join("credentials");
    std::fs::write(
        &credentials,
        // A key the fakes of EKS and STS know the secret of (tests/support/sigv4.rs).
        "[agent]\naws_access_key_id = AKIDFROMPROFILE\naws_secret_access_key = secret-from-profile\n",
    )
    .unwrap();
    let (port, admin_port) = (free_port(), free_port());
    // No --associations: the associations come from EKS, as on an EKS cluster.
    let mut child = agent_binary(port, admin_port, kube.kubeconfig(dir.path()), dir.path())
        .env("AWS_PROFILE", "agent")
        .env("AWS_CONFIG_FILE", &config)
        .env("AWS_SHARED_CREDENTIALS_FILE", &credentials)
        .env("AWS_ENDPOINT_URL_STS", &sts.endpoint)
        .env("AWS_ENDPOINT_URL_EKS", eks.url())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .spawn()
        .unwrap();
    let guard = KillOnDrop(child.id());
    let admin: std::net::SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        if tokio::net::TcpStream::connect(admin).await.is_ok()
            && admin_get(admin, "/readyz").await.0 == 200
        {
            break;
        }
        if Instant::now() > deadline {
            drop(guard);
            let out = child.wait_with_output().unwrap();
            panic!(
                "the agent never turned ready: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let token = "eyJhbGciOiJSUzI1NiJ9.profile.test-token";
    kube.token_reviews()
        .add(token, PodToken::pod("team-a", "carts", "carts-1"));
    let (status, answer) = get(addr, "/v1/credentials", &addr.to_string(), Some(token)).await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        eks.requests() >= 1,
        "associations read from AWS_ENDPOINT_URL_EKS"
    );
    assert_eq!(
        eks.unsigned(),
        0,
        "EKS calls signed with the profile's keys (the fake signs them again with the \
         profile's secret and compares)"
    );
    let calls = sts.assume_role_calls();
    assert_eq!(
        calls[0].params["RoleArn"],
        "arn:aws:iam::111122223333:role/carts"
    );
    assert_eq!(calls[0].signed_by, "AKIDFROMPROFILE", "the profile's keys");
    assert_eq!(
        calls[0].tags()[0].1,
        "arn:aws:eks:eu-central-1:111122223333:cluster/kind",
        "the profile's region"
    );
    // A ServiceAccount EKS has no association for: 404, no STS call.
    let other = "eyJhbGciOiJSUzI1NiJ9.profile.other-token";
    kube.token_reviews()
        .add(other, PodToken::pod("team-a", "orders", "orders-1"));
    let (status, _) = get(addr, "/v1/credentials", &addr.to_string(), Some(other)).await;
    assert_eq!(status, 404);
    assert_eq!(sts.assume_role_calls().len(), 1);
    drop(guard);
    let _ = child.wait();
}

#[tokio::test]
async fn trust_policy_trusts_the_agent_only_for_one_service_account() {
    let sts = RecordingSts::issuing(Duration::from_secs(3600)).await;
    let dir = tempfile::tempdir().unwrap();
    let run = |principal: Option<&str>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_pod-identity-webhook"));
        command
            .args(["agent", "trust-policy"])
            .args(["--role-arn", "arn:aws:iam::111122223333:role/carts"])
            .args(["--namespace", "team-a", "--service-account", "carts"])
            .args(["--cluster-name", "kind"])
            .env_clear()
            .env("HOME", dir.path())
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "AKIDFROMTHEENV")
            .env("AWS_SECRET_ACCESS_KEY", "agent-secret-from-env")
            .env("AWS_ENDPOINT_URL_STS", &sts.endpoint);
        if let Some(p) = principal {
            command.args(["--agent-principal", p]);
        }
        command
    };

    // Without --agent-principal: who the AWS environment's credentials are (GetCallerIdentity).
    let out = output(run(None)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let policy: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let statement = &policy["Statement"][0];
    assert_eq!(
        statement["Principal"]["AWS"],
        "arn:aws:iam::111122223333:user/pod-identity-agent"
    );
    assert_eq!(
        statement["Action"],
        serde_json::json!(["sts:AssumeRole", "sts:TagSession"])
    );
    assert_eq!(
        statement["Condition"]["StringEquals"],
        serde_json::json!({
            "aws:RequestTag/eks-cluster-name": "kind",
            "aws:RequestTag/kubernetes-namespace": "team-a",
            "aws:RequestTag/kubernetes-service-account": "carts",
        })
    );
    assert!(
        stderr.contains("aws iam update-assume-role-policy --role-name carts"),
        "{stderr}"
    );
    assert_eq!(
        sts.calls()
            .iter()
            .filter(|c| c.action() == "GetCallerIdentity")
            .count(),
        1
    );
    assert_eq!(sts.calls()[0].signed_by, "AKIDFROMTHEENV");

    // An assumed role (the node's instance role, IRSA) is trusted through its role.
    let out = output(run(Some("arn:aws:iam::111122223333:role/node"))).await;
    assert!(out.status.success());
    let policy: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        policy["Statement"][0]["Principal"]["AWS"],
        "arn:aws:iam::111122223333:role/node"
    );
    assert_eq!(sts.calls().len(), 1, "--agent-principal asks STS nothing");
}

/// `*` and account roots would let any principal (of any account, or of the account) assume the
/// role, guarded only by session tags the caller sets itself: refused unless asked for, and
/// then said on stderr.
#[tokio::test]
async fn trust_policy_refuses_broad_principals_unless_allowed_and_then_warns() {
    let run = |principal: &str, allow: bool| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_pod-identity-webhook"));
        command
            .args(["agent", "trust-policy"])
            .args(["--role-arn", "arn:aws:iam::111122223333:role/carts"])
            .args(["--namespace", "team-a", "--service-account", "carts"])
            .args(["--agent-principal", principal])
            .env_clear()
            .env("AWS_EC2_METADATA_DISABLED", "true");
        if allow {
            command.arg("--allow-broad-principal");
        }
        command
    };
    for (principal, says) in [
        ("*", "any AWS principal of any account"),
        (
            "arn:aws:iam::123456789012:root",
            "every user and role of account 123456789012",
        ),
        (
            "123456789012",
            "every user and role of account 123456789012",
        ),
        ("arn:aws:iam::*:root", "any AWS principal of any account"),
    ] {
        let started = std::time::Instant::now();
        let out = output(run(principal, false)).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!("{principal}: refused in {:?}", started.elapsed());
        assert!(!out.status.success(), "{principal}: {stderr}");
        assert!(out.stdout.is_empty(), "{principal}: no policy printed");
        assert!(stderr.contains("refusing to trust principal"), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
        assert!(stderr.contains("--allow-broad-principal"), "{stderr}");

        let out = output(run(principal, true)).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{principal}: {stderr}");
        let policy: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(policy["Statement"][0]["Principal"]["AWS"], principal);
        assert!(
            stderr.contains("warning: --allow-broad-principal"),
            "{stderr}"
        );
        assert!(stderr.contains(says), "{stderr}");
    }
    // One user or role needs no flag and gets no warning.
    let out = output(run("arn:aws:iam::123456789012:role/root", false)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
}

#[tokio::test]
async fn botocore_refreshes_credentials_through_its_container_provider() {
    let sts = RecordingSts::issuing(Duration::from_secs(8)).await;
    let h = Harness::start(&sts.endpoint, refresh_short_lived).await;
    // botocore's refreshable credentials, as every boto3 client holds them: credentials this
    // short-lived are fetched again on each use, and must change once the agent refreshed.
    let script = "
import sys, time, botocore.session
credentials = botocore.session.get_session().get_credentials()
print(credentials.method, flush=True)
keys = []
deadline = time.time() + 20
while len(keys) < 2 and time.time() < deadline:
    key = credentials.get_frozen_credentials().access_key
    if key not in keys:
        keys.append(key)
    time.sleep(0.2)
print(' '.join(keys))
";
    let stdout = botocore(&h, script, &[]).await;
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("container-role"), "{stdout}");
    let keys: Vec<&str> = lines.next().unwrap_or("").split(' ').collect();
    assert_eq!(
        keys.len(),
        2,
        "botocore saw refreshed credentials: {stdout}"
    );
    assert!(
        keys.iter().all(|k| k.starts_with("ASIARECORDED")),
        "{stdout}"
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
async fn a_deleted_pods_token_is_refused_once_its_review_outlives_the_token_review_ttl() {
    let sts = RecordingSts::issuing(Duration::from_secs(3600)).await;
    let ttl = Duration::from_secs(1);
    let h = Harness::start(&sts.endpoint, |s| s.credentials.review_ttl = ttl).await;
    let token = h.pod_token("team-a", "carts", "carts-1");
    let (status, _) = h.get(&token).await;
    assert_eq!(status, 200);
    let reviews = h.kube.token_reviews().count();

    // The pod is deleted: the API server no longer authenticates its token.
    h.kube.token_reviews().revoke(&token);
    let revoked = Instant::now();
    // Within the TTL the cached review may still serve it (no new TokenReview); a refusal this
    // early would mean the TTL had already passed.
    let (status, body) = h.get(&token).await;
    match status {
        200 => assert_eq!(
            h.kube.token_reviews().count(),
            reviews,
            "served from the cached review"
        ),
        _ => {
            assert_refused(status, &body, 403, "AccessDenied");
            assert!(revoked.elapsed() >= ttl, "refused before the TTL: {body}");
        }
    }

    // The cached review expires (the event, not a sleep of the TTL): the next request is reviewed
    // again and refused as the API server answers.
    let deadline = Instant::now() + WAIT;
    while h.agent.service.review_cache_entries().await > 0 {
        assert!(Instant::now() < deadline, "the review outlived its TTL");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = h.get(&token).await;
    assert_refused(status, &body, 403, "AccessDenied");
    assert_message(&body, "invalid bearer token");
    assert!(h.kube.token_reviews().count() > reviews, "reviewed again");
    assert_eq!(sts.assume_role_calls().len(), 1, "STS is not asked for it");
}

#[tokio::test]
async fn cached_credentials_are_replaced_when_the_association_changes_its_role() {
    let sts = RecordingSts::issuing(Duration::from_secs(3600)).await;
    let h = Harness::start(&sts.endpoint, |s| {
        s.reload_interval = Duration::from_millis(100);
    })
    .await;
    let token = h.pod_token("team-a", "carts", "carts-1");
    let (status, first) = h.get(&token).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(sts.assume_role_calls()[0].params["RoleArn"], CARTS_ROLE);

    // The association now names another role; the agent reloads the file.
    let role_b = "arn:aws:iam::111122223333:role/carts-b";
    std::fs::write(&h.associations, ASSOCIATIONS.replace(CARTS_ROLE, role_b)).unwrap();
    let deadline = Instant::now() + WAIT;
    let second = loop {
        let (status, answer) = h.get(&token).await;
        assert_eq!(status, 200, "{answer}");
        if answer["AccessKeyId"] != first["AccessKeyId"] {
            break answer;
        }
        assert!(
            Instant::now() < deadline,
            "role A's cached credentials still served after the change"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // The new credentials are role B's, from one new AssumeRole; role A is not asked again.
    let roles: Vec<String> = sts
        .assume_role_calls()
        .iter()
        .map(|c| c.params["RoleArn"].to_string())
        .collect();
    assert_eq!(roles, [CARTS_ROLE, role_b], "{second}");
    let (status, again) = h.get(&token).await;
    assert_eq!(status, 200);
    assert_eq!(
        again["AccessKeyId"], second["AccessKeyId"],
        "role B's are cached"
    );
    assert_eq!(sts.assume_role_calls().len(), 2);
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
