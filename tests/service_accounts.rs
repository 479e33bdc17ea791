//! The ServiceAccount store (IRSA annotations) against a local HTTP server that answers like the
//! API server did (`kube-api/` captures): the list, the watch, a live GET on a miss, and an API
//! server that is not there.

mod support;

use std::sync::Arc;
use std::time::Duration;

use pod_identity_webhook::identity::ServiceAccountStore;
use pod_identity_webhook::identity::kube::{KubeServiceAccounts, StoreSettings};
use serde_json::json;
use support::WAIT;
use support::kube_api::FakeKubeApi;
use tokio_util::sync::CancellationToken;

fn settings() -> StoreSettings {
    let mut s = StoreSettings::new("eks.amazonaws.com");
    s.live_get_timeout = Duration::from_millis(500);
    s.ready_timeout = Duration::from_secs(5);
    s
}

async fn wait_ready(store: &KubeServiceAccounts) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !store.ready() {
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls until `check` holds for the role of `namespace/name` (watch events arrive async).
async fn eventually_role(
    store: &KubeServiceAccounts,
    name: &str,
    check: impl Fn(Option<&str>) -> bool,
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let info = store.get("team-a", name).await.expect("lookup answers");
        let role = info.as_ref().and_then(|i| i.role_arn.as_deref());
        if check(role) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}: role stayed {role:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_listed_service_accounts_carry_their_irsa_annotations() {
    let api = FakeKubeApi::start(0, Vec::new()).await;
    let stop = CancellationToken::new();
    let store = KubeServiceAccounts::start(api.client(), settings(), stop.clone());
    wait_ready(&store).await;
    assert!(api.lists() >= 1);

    let s3 = store.get("team-a", "s3-reader").await.unwrap().unwrap();
    assert_eq!(
        s3.role_arn.as_deref(),
        Some("arn:aws:iam::111122223333:role/s3-reader")
    );
    assert_eq!(s3.token_expiration, Some(3600));
    assert_eq!(s3.audience, None);
    let carts = store.get("team-a", "carts").await.unwrap().unwrap();
    assert_eq!(
        carts.role_arn.as_deref(),
        Some("arn:aws:iam::111122223333:role/carts")
    );
    let default = store.get("team-a", "default").await.unwrap().unwrap();
    assert_eq!(default.role_arn, None);
    // Answered from the reflector: no live GET was needed.
    assert_eq!(api.gets(), 0);
    stop.cancel();
}

/// The API server expires the watch (`410 Gone`, as after an etcd compaction): the reflector
/// lists again and sees what changed while no watch could tell it.
#[tokio::test]
async fn a_watch_expired_with_410_gone_relists_and_sees_what_changed_meanwhile() {
    let account = |role: &str| {
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {
            "name": "carts", "namespace": "team-a",
            "annotations": {"eks.amazonaws.com/role-arn": format!("arn:aws:iam::111122223333:role/{role}")}}})
    };
    let api = FakeKubeApi::empty().await;
    api.put(account("carts"));
    let stop = CancellationToken::new();
    let store = KubeServiceAccounts::start(api.client(), settings(), stop.clone());
    wait_ready(&store).await;
    eventually_role(&store, "carts", |r| {
        r == Some("arn:aws:iam::111122223333:role/carts")
    })
    .await;
    let lists = api.lists();

    // Changed with no watch event, then every watch expired: only a new list can show it.
    api.put_unwatched(account("carts-v2"));
    api.expire_watches();
    eventually_role(&store, "carts", |r| {
        r == Some("arn:aws:iam::111122223333:role/carts-v2")
    })
    .await;
    assert!(api.lists() > lists, "listed again after the 410");
    stop.cancel();
}

#[tokio::test]
async fn watch_events_add_annotate_and_delete() {
    // ADDED then MODIFIED (annotated with a role).
    let api = FakeKubeApi::start(2, Vec::new()).await;
    let stop = CancellationToken::new();
    let store = KubeServiceAccounts::start(api.client(), settings(), stop.clone());
    wait_ready(&store).await;
    eventually_role(&store, "watched-sa", |r| {
        r == Some("arn:aws:iam::111122223333:role/watched")
    })
    .await;
    // Seen through the watch alone: the fake answers 404 to a GET of watched-sa.
    let live_gets = api.gets();
    assert_eq!(
        store
            .get("team-a", "watched-sa")
            .await
            .unwrap()
            .unwrap()
            .role_arn
            .as_deref(),
        Some("arn:aws:iam::111122223333:role/watched")
    );
    assert_eq!(api.gets(), live_gets, "answered from the reflector");
    stop.cancel();

    // The whole captured watch, DELETED and bookmarks included: the ServiceAccount is gone,
    // and the live GET on the miss confirms it (404).
    let api = FakeKubeApi::start(5, Vec::new()).await;
    let stop = CancellationToken::new();
    let store = KubeServiceAccounts::start(api.client(), settings(), stop.clone());
    wait_ready(&store).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while store.get("team-a", "watched-sa").await.unwrap().is_some() {
        assert!(tokio::time::Instant::now() < deadline, "delete never seen");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(api.gets() >= 1, "a miss is confirmed with a live GET");
    stop.cancel();
}

#[tokio::test]
async fn a_service_account_created_after_the_list_is_found_with_a_live_get() {
    let fresh = json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "fresh", "namespace": "team-a",
                     "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/fresh",
                                     "eks.amazonaws.com/audience": "custom",
                                     "unrelated.example.com/x": "y"}}
    });
    let api = FakeKubeApi::start(0, vec![fresh]).await;
    let stop = CancellationToken::new();
    let store = KubeServiceAccounts::start(api.client(), settings(), stop.clone());
    wait_ready(&store).await;
    let info = store.get("team-a", "fresh").await.unwrap().unwrap();
    assert_eq!(
        info.role_arn.as_deref(),
        Some("arn:aws:iam::111122223333:role/fresh")
    );
    assert_eq!(info.audience.as_deref(), Some("custom"));
    assert_eq!(api.gets(), 1);
    // Absent everywhere: Ok(None), not an error.
    assert!(store.get("team-a", "nobody").await.unwrap().is_none());
    stop.cancel();
}

#[tokio::test]
async fn an_unreachable_api_server_is_an_error_within_the_bound_and_ready_after_the_timeout() {
    // A port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = kube::Config::new(format!("http://127.0.0.1:{port}").parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let mut s = settings();
    s.ready_timeout = Duration::from_millis(200);
    let stop = CancellationToken::new();
    let store: Arc<KubeServiceAccounts> = KubeServiceAccounts::start(client, s, stop.clone());
    let started = tokio::time::Instant::now();
    let got = store.get("team-a", "carts").await;
    assert!(
        got.is_err(),
        "an unreachable API is an error, not 'no ServiceAccount'"
    );
    assert!(started.elapsed() < WAIT);
    // Turns ready after its timeout so the webhook is not held back (misses use live GETs).
    wait_ready(&store).await;
    stop.cancel();
}
