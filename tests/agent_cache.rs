//! The credentials agent's caches of credentials and TokenReviews (docs/contract.md §9): a
//! thousand concurrent requests with fifty tokens make fifty STS calls and reviews; cached
//! credentials served while STS is down until they near expiry, refreshed in the background,
//! dropped when their association goes or the role no longer allows them, replaced when the
//! association changes its role; the cache's memory bound; and a deleted pod's token refused once
//! its cached review expires. TokenReviews from the fake Kubernetes API, STS the recording one.

mod support;

use std::time::{Duration, Instant, SystemTime};

use support::agent::*;
use support::sts::RecordingSts;
use support::{WAIT, admin_get};

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
