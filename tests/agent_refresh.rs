//! When the credentials agent refreshes cached credentials that all expire at the same instant
//! (a new node's pods, started together): spread over the five minutes before `--refresh-before`
//! (15m), none later. The agent's credential service is the real one; the TokenReview and STS
//! behind it answer in-process, and each case is one sweep over 1,000 cached pods' credentials
//! with a given time left.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use pod_identity_webhook::agent::credentials::{CredentialService, CredentialSettings};
use pod_identity_webhook::agent::metrics::AgentMetrics;
use pod_identity_webhook::agent::review::{PodClaims, TokenReviewError, TokenReviewer};
use pod_identity_webhook::agent::sts::{
    AssumeRequest, CredentialIssuer, IssuedCredentials, StsError,
};
use pod_identity_webhook::identity::file::FileSource;
use pod_identity_webhook::identity::{Association, Identities};

const PODS: usize = 1_000;
const MIN: Duration = Duration::from_secs(60);
const HALF_MIN: Duration = Duration::from_secs(30);

/// Tokens are `tok-<pod>`: every one is a pod of team-a/carts.
struct Reviewer;

impl TokenReviewer for Reviewer {
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

/// STS: the first [`PODS`] sessions all expire at `expires`, later ones (refreshes) in an hour.
struct Sts {
    expires: SystemTime,
    calls: AtomicUsize,
}

impl CredentialIssuer for Sts {
    fn assume_role<'a>(
        &'a self,
        _: &'a AssumeRequest,
        _: Option<&'a IssuedCredentials>,
    ) -> BoxFuture<'a, Result<IssuedCredentials, StsError>> {
        Box::pin(async move {
            let call = self.calls.fetch_add(1, Ordering::Relaxed);
            Ok(IssuedCredentials {
                access_key_id: format!("ASIA{call:016}"),
                secret_access_key: "secret".into(),
                session_token: "session".into(),
                expiration: if call < PODS {
                    self.expires
                } else {
                    SystemTime::now() + 60 * MIN
                },
                account_id: "111122223333".into(),
            })
        })
    }

    fn caller_account(&self) -> BoxFuture<'_, Result<String, StsError>> {
        Box::pin(async { Ok("111122223333".into()) })
    }
}

/// How many of [`PODS`] cached credentials, all expiring `left` from now, one sweep refreshes
/// (at the default settings: 1h sessions, `refresh_before` 15m).
async fn refreshed_with(left: Duration) -> usize {
    let association: Association = serde_yaml_ng::from_str(
        "{namespace: team-a, serviceAccount: carts, roleArn: \"arn:aws:iam::111122223333:role/carts\"}",
    )
    .unwrap();
    let identities = Identities::new("eks.amazonaws.com")
        .with_associations(FileSource::from_list(vec![association]).unwrap());
    let mut settings = CredentialSettings::new("fleet", "us-east-1");
    settings.cluster_arn = Some("arn:aws:eks:us-east-1:111122223333:cluster/fleet".into());
    let sts = Arc::new(Sts {
        expires: SystemTime::now() + left,
        calls: AtomicUsize::new(0),
    });
    let service = CredentialService::new(
        Arc::new(Reviewer),
        sts.clone(),
        identities,
        settings,
        Arc::new(AgentMetrics::new()),
    );
    for pod in 0..PODS {
        service.credentials(&format!("tok-{pod}")).await.unwrap();
    }
    assert_eq!(
        sts.calls.load(Ordering::Relaxed),
        PODS,
        "one STS call per pod"
    );
    service.sweep().await;
    background_tasks_done().await;
    sts.calls.load(Ordering::Relaxed) - PODS
}

/// Waits until every task spawned on this (current-thread) runtime has finished: the refreshes
/// the sweep started.
async fn background_tasks_done() {
    let runtime = tokio::runtime::Handle::current();
    let wait = async {
        while runtime.metrics().num_alive_tasks() > 0 {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .expect("the background refreshes finish");
}

#[tokio::test]
async fn credentials_expiring_together_are_refreshed_over_the_five_minutes_before_refresh_before() {
    // More than 20 minutes left: nothing is due yet.
    assert_eq!(refreshed_with(20 * MIN + Duration::from_secs(1)).await, 0);

    // A sweep every 30 s from 20 minutes before expiry down to 15: each finds a tenth of the
    // pods newly due (100 of 1,000), none finds a crowd.
    let mut due_before = 0;
    let mut per_sweep = Vec::new();
    for step in 0..=10u32 {
        let left = 20 * MIN - HALF_MIN * step;
        let due = refreshed_with(left).await;
        assert!(
            due >= due_before,
            "{left:?} left: {due} due, {due_before} before"
        );
        per_sweep.push(due - due_before);
        due_before = due;
    }
    assert_eq!(per_sweep[0], 0, "20 minutes left: not due yet");
    for (slot, newly_due) in per_sweep.iter().enumerate().skip(1) {
        assert!(
            (60..=140).contains(newly_due),
            "sweep {slot}: {newly_due} of {PODS} newly due ({per_sweep:?})"
        );
    }

    // Under 15 minutes left (`refresh_before`): every entry is refreshed, whatever its jitter.
    assert_eq!(
        refreshed_with(15 * MIN - Duration::from_secs(1)).await,
        PODS
    );
}
