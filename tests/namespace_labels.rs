//! The namespace label store against the shared fake Kubernetes API serving the captured Namespace list
//! (docs/contract.md §5), and the label tightening a namespace's mode end to end.

mod support;

use std::sync::Arc;
use std::time::Duration;

use pod_identity_webhook::admission::review::Review;
use pod_identity_webhook::admission::validate::Validator;
use pod_identity_webhook::identity::Identities;
use pod_identity_webhook::namespaces::{KubeNamespaces, NamespaceStore};
use pod_identity_webhook::policy::Policy;
use pod_identity_webhook::settings::PolicySettings;
use serde_json::json;
use support::kube_api::{Changes, FakeKubeApi};
use tokio_util::sync::CancellationToken;

const LABEL: &str = "pod-identity-webhook/mode";

/// The captured cluster, where the tenant of team-a opted into enforcement with the label and
/// `fresh` was created after the list (only a live GET sees it).
async fn fake_api() -> FakeKubeApi {
    FakeKubeApi::start_changed(
        0,
        Vec::new(),
        Changes {
            namespace_labels: vec![("team-a", LABEL, "enforce")],
            namespaces_created_later: vec![json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": "fresh", "labels": {LABEL: "enforce"}}})],
            ..Changes::default()
        },
    )
    .await
}

async fn wait_ready(store: &KubeNamespaces) {
    for _ in 0..500 {
        if store.ready() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("namespace store not ready within 5s");
}

#[tokio::test]
async fn labels_come_from_the_list_and_from_a_live_get() {
    let stop = CancellationToken::new();
    let api = fake_api().await;
    let store = KubeNamespaces::start(
        api.client(),
        Duration::from_secs(1),
        Duration::from_secs(5),
        stop.clone(),
    );
    wait_ready(&store).await;

    let team_a = store
        .labels("team-a")
        .await
        .unwrap()
        .expect("team-a listed");
    assert_eq!(team_a.get(LABEL).map(String::as_str), Some("enforce"));
    assert_eq!(team_a.get("capture").map(String::as_str), Some("on"));
    let default = store
        .labels("default")
        .await
        .unwrap()
        .expect("default listed");
    assert!(default.get(LABEL).is_none());
    let fresh = store
        .labels("fresh")
        .await
        .unwrap()
        .expect("live GET finds it");
    assert_eq!(fresh.get(LABEL).map(String::as_str), Some("enforce"));
    assert!(store.labels("nowhere").await.unwrap().is_none());

    // End to end: warn by configuration, enforce by label.
    let policy = Policy::compile(&PolicySettings::default(), None).unwrap();
    let validator =
        Validator::new(policy, Identities::new("eks.amazonaws.com")).with_namespaces(store.clone());
    for (ns, denied) in [("team-a", true), ("fresh", true), ("default", false)] {
        let body = json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "namespace": ns, "name": "p", "operation": "CREATE",
                "object": {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}}}
        })
        .to_string();
        let review = Review::read(body.as_bytes()).unwrap();
        let d = validator
            .review(&review.request, Duration::from_secs(2))
            .await;
        assert_eq!(!d.response.allowed, denied, "{ns}: {:?}", d.response);
        if !denied {
            assert_eq!(d.response.warnings.len(), 1, "{ns}: warn mode warns");
        }
    }
    stop.cancel();
}

#[tokio::test]
async fn unreachable_api_falls_back_to_the_configured_mode() {
    let stop = CancellationToken::new();
    // Nothing listens here: every read fails fast.
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = unused.local_addr().unwrap();
    drop(unused);
    let client =
        kube::Client::try_from(kube::Config::new(format!("http://{addr}").parse().unwrap()))
            .unwrap();
    let store: Arc<KubeNamespaces> = KubeNamespaces::start(
        client,
        Duration::from_millis(300),
        Duration::from_millis(100),
        stop.clone(),
    );
    assert!(
        store.labels("team-a").await.is_err(),
        "an error, not \"no labels\""
    );
    // Warn by configuration: the webhook still answers, in the configured mode.
    let policy = Policy::compile(&PolicySettings::default(), None).unwrap();
    let validator =
        Validator::new(policy, Identities::new("eks.amazonaws.com")).with_namespaces(store.clone());
    let body = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"group":"","version":"v1","kind":"Pod"},"namespace":"team-a","operation":"CREATE","object":{"spec":{}}}}"#;
    let review = Review::read(body.as_bytes()).unwrap();
    let d = validator
        .review(&review.request, Duration::from_secs(2))
        .await;
    assert!(d.response.allowed, "{:?}", d.response);
    assert_eq!(d.response.warnings.len(), 1, "{:?}", d.response);
    stop.cancel();
}
