//! The namespace label store against a fake Kubernetes API serving the captured Namespace list
//! (SPEC §5), and the label tightening a namespace's mode end to end.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use pod_identity_webhook::admission::review::Review;
use pod_identity_webhook::admission::validate::Validator;
use pod_identity_webhook::config::PolicySettings;
use pod_identity_webhook::identity::Identities;
use pod_identity_webhook::namespaces::{KubeNamespaces, NamespaceStore};
use pod_identity_webhook::policy::Policy;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const LABEL: &str = "pod-identity-webhook/mode";

fn captured_list() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/apiserver-v1.24/kube-api/namespaces.list.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; clone with shared/ beside the repo",
            path.display()
        )
    });
    let mut list: Value = serde_json::from_str(&text).unwrap();
    // The tenant of team-a opted into enforcement with the label.
    for item in list["items"].as_array_mut().unwrap() {
        if item["metadata"]["name"] == "team-a" {
            item["metadata"]["labels"][LABEL] = json!("enforce");
        }
    }
    list
}

fn json_response(status: StatusCode, v: Value) -> Response {
    (
        status,
        [("content-type", "application/json")],
        v.to_string(),
    )
        .into_response()
}

async fn list_or_watch(RawQuery(q): RawQuery) -> Response {
    if q.unwrap_or_default().contains("watch=true") {
        // A watch that stays open and quiet for the test's duration.
        let body = Body::from_stream(futures::stream::pending::<Result<Vec<u8>, std::io::Error>>());
        return (StatusCode::OK, [("content-type", "application/json")], body).into_response();
    }
    json_response(StatusCode::OK, captured_list())
}

/// GET of one namespace: `fresh` was created after the list (only a live GET sees it).
async fn get_one(Path(name): Path<String>) -> Response {
    if name == "fresh" {
        return json_response(
            StatusCode::OK,
            json!({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": "fresh", "labels": {LABEL: "enforce"}}}),
        );
    }
    json_response(
        StatusCode::NOT_FOUND,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
               "reason": "NotFound", "code": 404,
               "message": format!("namespaces \"{name}\" not found")}),
    )
}

async fn fake_api(stop: CancellationToken) -> kube::Client {
    let app = Router::new()
        .route("/api/v1/namespaces", get(list_or_watch))
        .route("/api/v1/namespaces/{name}", get(get_one));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
            .unwrap();
    });
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    kube::Client::try_from(config).unwrap()
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
    let client = fake_api(stop.clone()).await;
    let store = KubeNamespaces::start(
        client,
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
        let review = Review::parse(body.as_bytes()).unwrap();
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
    let review = Review::parse(body.as_bytes()).unwrap();
    let d = validator
        .review(&review.request, Duration::from_secs(2))
        .await;
    assert!(d.response.allowed, "{:?}", d.response);
    assert_eq!(d.response.warnings.len(), 1, "{:?}", d.response);
    stop.cancel();
}
