//! The running webhook with `--cluster-name`/`--eks-endpoint` against the fake EKS API: a pod
//! admitted over HTTPS picks up the association EKS serves, and `/readyz` waits for the first
//! full sync (or its timeout).
//!
//! Real time and real sockets. A lookup may wait for EKS far longer than any call takes on a
//! loaded machine (and under the 8 s lookup budget of `?timeout=10s`), so a slow machine cannot
//! turn an answer into a timeout; what a test says timed out or failed, a counter on `/metrics`
//! says too.

mod eks_support;
mod support;

use std::time::{Duration, Instant};

use eks_support::{FakeEks, Fault};
use pod_identity_webhook::settings::EksSettings;
use pod_identity_webhook::startup;
use support::{TlsClient, WAIT, WebhookBuilder, admin_get, decode_patch, sample, wait_readyz};

const CLUSTER: &str = "prod";

fn webhook(endpoint: String) -> WebhookBuilder {
    let mut eks = EksSettings::new(CLUSTER);
    eks.region = Some("us-east-1".into());
    eks.endpoint = Some(endpoint);
    eks.max_wait = Duration::from_secs(5);
    eks.ready_timeout = Duration::from_secs(20);
    WebhookBuilder::new().settings(|s| s.eks = eks)
}

/// `POST /mutate` over TLS (HTTP/1.1, as the API server), trusting the self-signed CA.
async fn mutate(running: &startup::Running, review: &str) -> serde_json::Value {
    let answer = TlsClient::to(running, false)
        .await
        .review("/mutate?timeout=10s", review.as_bytes().to_vec())
        .await
        .expect("answered");
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer.json()
}

fn patch_of(review: &serde_json::Value) -> Option<String> {
    review["response"]
        .get("patch")
        .map(|_| serde_json::to_string(&decode_patch(review)).unwrap())
}

fn carts_review(service_account: &str) -> String {
    include_str!("../examples/review-pod-carts.json")
        .replace("\"carts\"", &format!("\"{service_account}\""))
}

/// The webhook, ready after one full sync of 5,000 associations (50 `List` calls).
async fn ready_with_5000(negative_ttl: Option<Duration>) -> (FakeEks, support::Webhook) {
    support::static_aws_credentials();
    let fake = FakeEks::start(CLUSTER).await;
    fake.add_many(5_000);
    let running = webhook(fake.url())
        .settings(|s| {
            if let Some(ttl) = negative_ttl {
                s.eks.negative_ttl = ttl;
            }
            s.eks.sync_interval = Duration::from_secs(3600);
        })
        .start()
        .await;
    wait_readyz(running.admin_addr, 200).await;
    assert_eq!(fake.lists(), 50, "ready after one full List of 5,000");
    (fake, running)
}

/// How many of `pods` concurrent admissions of a team-a pod of `service_account` were mutated.
async fn mutated_of(running: &startup::Running, service_account: &str, pods: usize) -> usize {
    let review = carts_review(service_account);
    let answers = futures::future::join_all((0..pods).map(|_| mutate(running, &review))).await;
    answers.iter().filter(|r| patch_of(r).is_some()).count()
}

#[tokio::test]
async fn a_pod_admitted_through_the_server_gets_the_association_eks_serves() {
    support::static_aws_credentials();
    let fake = FakeEks::start(CLUSTER).await;
    fake.add("team-a", "carts", "carts");
    let running = webhook(fake.url()).start().await;
    wait_readyz(running.admin_addr, 200).await;
    assert!(fake.lists() >= 1, "readiness came from a full sync");

    let review = mutate(&running, &carts_review("carts")).await;
    assert_eq!(review["response"]["allowed"], true);
    let patch = patch_of(&review).expect("a patch");
    assert!(
        patch.contains("AWS_CONTAINER_CREDENTIALS_FULL_URI"),
        "{patch}"
    );
    assert!(patch.contains("eks-pod-identity-token"), "{patch}");

    // A ServiceAccount EKS has no association for: admitted unchanged, because EKS said so
    // (no warning: the lookup neither failed nor ran out of time).
    let review = mutate(&running, &carts_review("nobody")).await;
    assert_eq!(review["response"]["allowed"], true);
    assert_eq!(patch_of(&review), None);
    assert!(review["response"].get("warnings").is_none(), "{review}");
    assert_eq!(fake.unsigned(), 0, "the webhook signs its EKS calls");

    // The EKS source's own counters are on /metrics, matching what the fake EKS saw.
    let (status, metrics) = admin_get(running.admin_addr, "/metrics").await;
    assert_eq!(status, 200);
    let list_calls = sample(
        &metrics,
        "pod_identity_webhook_eks_calls_total{operation=\"ListPodIdentityAssociations\"}",
    );
    assert_eq!(list_calls, Some(fake.lists() as f64), "{metrics}");
    assert_eq!(
        sample(&metrics, "pod_identity_webhook_eks_synced_associations"),
        Some(1.0)
    );
    // A server on EKS alone has its `associations` series too.
    assert_eq!(
        sample(
            &metrics,
            "pod_identity_webhook_associations{source=\"eks\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        sample(
            &metrics,
            "pod_identity_webhook_eks_last_sync_timestamp_seconds"
        )
        .is_some_and(|t| t > 1.7e9),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "pod_identity_webhook_eks_paused"),
        Some(0.0)
    );
    assert_eq!(
        sample(&metrics, "pod_identity_webhook_eks_lookup_timeouts_total"),
        Some(0.0),
        "{metrics}"
    );
    running.shutdown().await;
}

#[tokio::test]
async fn two_hundred_concurrent_pods_right_after_an_association_is_created_are_all_mutated() {
    let (fake, running) = ready_with_5000(Some(Duration::from_millis(300))).await;

    // The sync is older than the negative TTL when the association appears (time must pass; a
    // sleep lasts at least that long).
    tokio::time::sleep(Duration::from_millis(400)).await;
    fake.add("team-a", "carts", "carts");
    let mutated = mutated_of(&running, "carts", 200).await;
    assert_eq!(mutated, 200, "every pod gets the new association");
    assert_eq!(fake.lists(), 51, "one point lookup");
    assert_eq!(fake.describes(), 0, "admission never describes");

    let (_, metrics) = admin_get(running.admin_addr, "/metrics").await;
    assert_eq!(
        sample(
            &metrics,
            "pod_identity_webhook_eks_calls_total{operation=\"ListPodIdentityAssociations\"}"
        ),
        Some(51.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "pod_identity_webhook_eks_synced_associations"),
        Some(5_000.0)
    );
    running.shutdown().await;
}

/// Issue 28: the everyday flow (Terraform creates the association, Helm deploys at once).
/// Absence from the last sync is no cached "none": the first pods wait for one point lookup.
#[tokio::test]
async fn two_hundred_pods_admitted_at_once_after_the_sync_and_the_association_are_all_mutated() {
    let (fake, running) = ready_with_5000(None).await;

    // Well within the (default, 15 s) negative TTL of the sync.
    fake.add("team-a", "carts", "carts");
    fake.set_delay(Duration::from_millis(50)); // every admission arrives while the lookup runs
    let mutated = mutated_of(&running, "carts", 200).await;
    let extra = fake.lists() - 50;
    eprintln!("issue 28: {mutated} of 200 pods mutated, {extra} extra List call(s)");
    assert_eq!(mutated, 200, "every pod gets the new association");
    assert_eq!(extra, 1, "one coalesced point lookup");
    assert_eq!(fake.describes(), 0, "admission never describes");

    // The point lookup's answer is cached: more pods, no more calls.
    assert_eq!(mutated_of(&running, "carts", 20).await, 20);
    assert_eq!(fake.lists(), 51);
    running.shutdown().await;
}

#[tokio::test]
async fn readiness_waits_for_the_first_sync_then_gives_up_waiting_on_an_unreachable_eks() {
    support::static_aws_credentials();
    let fake = FakeEks::start(CLUSTER).await;
    fake.set_down(true);
    // Long enough that the first /readyz comes before it on a loaded machine.
    let ready_timeout = Duration::from_secs(3);
    let started = Instant::now();
    let running = webhook(fake.url())
        .settings(|s| s.eks.ready_timeout = ready_timeout)
        .start()
        .await;
    let (status, body) = admin_get(running.admin_addr, "/readyz").await;
    assert_eq!(status, 503, "not ready before a sync: {body}");
    assert!(body.contains("identity"), "{body}");
    wait_readyz(running.admin_addr, 200).await;
    // Ready because the wait for a sync ran out, not because one completed.
    assert!(
        started.elapsed() >= ready_timeout,
        "{:?}",
        started.elapsed()
    );
    let (_, metrics) = admin_get(running.admin_addr, "/metrics").await;
    assert_eq!(
        sample(&metrics, "pod_identity_webhook_eks_syncs_total"),
        Some(0.0),
        "{metrics}"
    );
    assert!(
        sample(&metrics, "pod_identity_webhook_eks_sync_failures_total").is_some_and(|n| n >= 1.0),
        "{metrics}"
    );

    // EKS still down: the pod is admitted, unmutated, with a warning, because EKS failed (not
    // because the wait for it ran out).
    let review = tokio::time::timeout(WAIT, mutate(&running, &carts_review("carts")))
        .await
        .expect("answered in time");
    assert_eq!(review["response"]["allowed"], true);
    assert_eq!(patch_of(&review), None);
    let warnings = review["response"]["warnings"].to_string();
    assert!(warnings.contains("not injected"), "{warnings}");
    let (_, metrics) = admin_get(running.admin_addr, "/metrics").await;
    assert_eq!(
        sample(
            &metrics,
            "pod_identity_webhook_identity_lookups_total{source=\"eks\",result=\"error\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "pod_identity_webhook_eks_lookup_timeouts_total"),
        Some(0.0),
        "{metrics}"
    );
    running.shutdown().await;
}

#[tokio::test]
async fn sustained_throttling_shows_in_the_metrics_and_an_unconfirmed_none_is_admitted_with_a_warning()
 {
    support::static_aws_credentials();
    let fake = FakeEks::start(CLUSTER).await;
    fake.add("team-a", "carts", "carts");
    let running = webhook(fake.url())
        .settings(|s| s.eks.sync_interval = Duration::from_secs(3600))
        .start()
        .await;
    wait_readyz(running.admin_addr, 200).await;

    // From now on EKS answers every call with 429. The sync's absence of every other
    // ServiceAccount is no "none" (issue 28): each one's lookup asks EKS.
    fake.fail_next(10_000, Fault::Throttle);

    // The synced association is still injected: no EKS call needed.
    let review = mutate(&running, &carts_review("carts")).await;
    assert!(patch_of(&review).is_some(), "{review}");

    // Six ServiceAccounts whose "none" EKS cannot confirm: each admitted, unmutated, with the
    // warning (never silently as "no association").
    let reviews: Vec<String> = (0..6).map(|i| carts_review(&format!("new-{i}"))).collect();
    let answers = futures::future::join_all(reviews.iter().map(|r| mutate(&running, r))).await;
    for review in &answers {
        assert_eq!(review["response"]["allowed"], true);
        assert_eq!(patch_of(review), None);
        let warnings = review["response"]["warnings"].to_string();
        assert!(warnings.contains("not injected"), "{warnings}");
    }

    // The SDK retried each call with backoff; the failures and the unconfirmed answers are on
    // /metrics ...
    let (_, metrics) = admin_get(running.admin_addr, "/metrics").await;
    let errors = sample(
        &metrics,
        "pod_identity_webhook_eks_call_errors_total{operation=\"ListPodIdentityAssociations\"}",
    )
    .unwrap_or(0.0);
    assert!(errors >= 5.0, "{metrics}");
    assert_eq!(
        sample(
            &metrics,
            "pod_identity_webhook_eks_lookups_unconfirmed_total"
        ),
        Some(6.0),
        "{metrics}"
    );
    // Unconfirmed because EKS refused, not because a wait ran out.
    assert_eq!(
        sample(&metrics, "pod_identity_webhook_eks_lookup_timeouts_total"),
        Some(0.0),
        "{metrics}"
    );
    // ... and so is the pause after five failures in a row. The pause is a cool-down of about a
    // second; on a slow machine it may be over before the scrape, and then the next lookup
    // probes EKS, fails, and pauses calls again.
    let mut probes = 0;
    loop {
        let (_, metrics) = admin_get(running.admin_addr, "/metrics").await;
        if sample(&metrics, "pod_identity_webhook_eks_paused") == Some(1.0) {
            break;
        }
        assert!(probes < 5, "EKS calls never paused: {metrics}");
        probes += 1;
        mutate(&running, &carts_review(&format!("probe-{probes}"))).await;
    }
    // At most three attempts per failed call reached EKS.
    let throttled = fake.lists() - 1;
    assert!(
        throttled <= (6 + probes) * 3,
        "{throttled} requests reached a throttling EKS"
    );
    running.shutdown().await;
}
