//! Bad input over real TLS (docs/contract.md §4): each gets its specified answer, and the server keeps
//! serving a good request afterwards.

mod support;

use serde_json::{Value, json};
use support::{TlsClient, Webhook, WebhookBuilder, apply_answer, fixture};

use pod_identity_webhook::startup::Running;

const LIMIT: usize = 256 * 1024;

async fn start() -> Webhook {
    WebhookBuilder::new()
        .associations(
            "associations:\n  - {namespace: team-a, serviceAccount: carts, roleArn: 'arn:aws:iam::111122223333:role/carts'}\n",
        )
        .settings(|s| {
            s.server.max_body_bytes = LIMIT;
            // Large pods, within what the limit can be raised to (tests/pod_limits.rs has the
            // default).
            s.injection.max_containers = 1000;
        })
        .start()
        .await
}

async fn client(running: &Running, h2: bool) -> TlsClient {
    TlsClient::to(running, h2).await
}

/// A good review still gets its patch, on a new connection.
async fn still_serving(running: &Running) {
    for h2 in [false, true] {
        let (path, body) = fixture("pod-create-carts.mutate.json");
        let answer = client(running, h2).await.review(&path, body).await.unwrap();
        assert_eq!(answer.status, 200);
        assert!(answer.json()["response"]["patch"].is_string());
    }
}

/// The carts review with its pod replaced.
fn review_with_pod(pod: Value) -> Vec<u8> {
    let (_, body) = fixture("pod-create-carts.mutate.json");
    let mut review: Value = serde_json::from_slice(&body).unwrap();
    review["request"]["object"] = pod;
    serde_json::to_vec(&review).unwrap()
}

fn pod(service_account: &str, containers: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "p", "namespace": "team-a"},
           "spec": {"serviceAccountName": service_account, "containers": containers}})
}

#[tokio::test]
async fn what_is_not_an_admission_review_gets_400_413_or_415_with_a_one_line_reason() {
    let running = start().await;
    let (_, good) = fixture("pod-create-carts.mutate.json");
    let mut no_uid: Value = serde_json::from_slice(&good).unwrap();
    no_uid["request"].as_object_mut().unwrap().remove("uid");
    let mut empty_uid: Value = serde_json::from_slice(&good).unwrap();
    empty_uid["request"]["uid"] = json!("");
    let mut wrong_kind: Value = serde_json::from_slice(&good).unwrap();
    wrong_kind["kind"] = json!("Pod");
    let mut wrong_version: Value = serde_json::from_slice(&good).unwrap();
    wrong_version["apiVersion"] = json!("admission.k8s.io/v2");
    let mut no_request: Value = serde_json::from_slice(&good).unwrap();
    no_request.as_object_mut().unwrap().remove("request");

    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "non-JSON",
            "application/json",
            b"hello".to_vec(),
            400,
            "not an AdmissionReview",
        ),
        (
            "truncated JSON",
            "application/json",
            good[..good.len() / 2].to_vec(),
            400,
            "not an AdmissionReview",
        ),
        (
            "empty body",
            "application/json",
            Vec::new(),
            400,
            "not an AdmissionReview",
        ),
        (
            "not UTF-8",
            "application/json",
            vec![0xff, 0xfe, b'{'],
            400,
            "UTF-8",
        ),
        (
            "wrong content type",
            "text/plain",
            good.clone(),
            415,
            "application/json",
        ),
        ("no content type", "", good.clone(), 415, "application/json"),
        (
            "oversized body",
            "application/json",
            vec![b' '; LIMIT + 1],
            413,
            "larger than",
        ),
        (
            "missing uid",
            "application/json",
            serde_json::to_vec(&no_uid).unwrap(),
            400,
            "uid",
        ),
        (
            "empty uid",
            "application/json",
            serde_json::to_vec(&empty_uid).unwrap(),
            400,
            "uid",
        ),
        (
            "wrong kind",
            "application/json",
            serde_json::to_vec(&wrong_kind).unwrap(),
            400,
            "AdmissionReview",
        ),
        (
            "unknown apiVersion",
            "application/json",
            serde_json::to_vec(&wrong_version).unwrap(),
            400,
            "apiVersion",
        ),
        (
            "no request",
            "application/json",
            serde_json::to_vec(&no_request).unwrap(),
            400,
            "no request",
        ),
    ];
    for (what, content_type, body, status, text) in cases {
        for h2 in [false, true] {
            let mut c = client(&running, h2).await;
            let headers = if content_type.is_empty() {
                Vec::new()
            } else {
                vec![("content-type".to_string(), content_type.to_string())]
            };
            let answer = c
                .post_with("/mutate", &headers, body.clone())
                .await
                .unwrap();
            assert_eq!(
                answer.status,
                status,
                "{what} (h2: {h2}): {}",
                answer.text()
            );
            let reason = answer.text();
            assert!(reason.contains(text), "{what}: {reason}");
            assert_eq!(
                reason.trim_end().lines().count(),
                1,
                "{what}: one line: {reason:?}"
            );
        }
        still_serving(&running).await;
    }
    running.shutdown().await;
}

#[tokio::test]
async fn an_unreadable_pod_is_refused_in_an_admission_review_naming_the_field() {
    let running = start().await;
    let mut c = client(&running, false).await;
    let mut bad = pod("carts", vec![json!({"name": "app"})]);
    bad["spec"]["containers"] = json!("not a list");
    // Annotation values are kept as written and unescaped only when read; one that is not a
    // string is still refused, by name.
    let mut bad_annotation = pod("carts", vec![json!({"name": "app"})]);
    bad_annotation["metadata"]["annotations"] = json!({
        "kubectl.kubernetes.io/last-applied-configuration": "{\"kind\":\"Pod\"}\n",
        "team": {"not": "a string"},
    });
    for (bad, field) in [
        (bad, "spec.containers"),
        (bad_annotation, "metadata.annotations.team"),
    ] {
        // `/validate` (the default policy, warn, reads pods) reads objects in one pass too; a
        // broken one is read again the raw way, which names the field.
        for endpoint in ["/mutate", "/validate"] {
            let answer = c
                .review(endpoint, review_with_pod(bad.clone()))
                .await
                .unwrap();
            assert_eq!(answer.status, 200);
            let r = &answer.json()["response"];
            assert_eq!(r["allowed"], false, "{endpoint}");
            assert_eq!(r["status"]["code"], 400, "{endpoint}");
            let message = r["status"]["message"].as_str().unwrap();
            assert!(message.contains(field), "{endpoint}: {message}");
        }
    }
    still_serving(&running).await;
    running.shutdown().await;
}

#[tokio::test]
async fn odd_but_valid_pods_are_answered_and_nothing_is_lost() {
    let running = start().await;
    let mut c = client(&running, true).await;

    // No containers at all: nothing to inject, so no patch (and no orphan volume).
    let answer = c
        .review("/mutate", review_with_pod(pod("carts", Vec::new())))
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    let r = answer.json();
    assert_eq!(r["response"]["allowed"], true);
    assert!(r["response"].get("patch").is_none(), "{r}");

    // 1,000 containers: every one gets the pair and the mount, in one patch that applies.
    let many: Vec<Value> = (0..1000)
        .map(|i| json!({"name": format!("c{i}"), "image": "busybox", "x-unknown": {"kept": i}}))
        .collect();
    let original = pod("carts", many);
    let answer = c
        .review("/mutate", review_with_pod(original.clone()))
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    let patched = apply_answer(&original, &answer.json());
    let containers = patched["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1000);
    for (i, container) in containers.iter().enumerate() {
        let env: Vec<&str> = container["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            env,
            [
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"
            ],
            "container {i}"
        );
        assert_eq!(container["x-unknown"]["kept"], i, "unknown field survives");
    }

    // Absurdly long names: answered (no identity for them), never a crash.
    let long = "a".repeat(40_000);
    let mut odd = pod(&long, vec![json!({"name": long.clone()})]);
    odd["metadata"]["name"] = json!(long.clone());
    odd["metadata"]["labels"] = json!({long.clone(): long.clone()});
    let answer = c.review("/mutate", review_with_pod(odd)).await.unwrap();
    assert_eq!(answer.status, 200);
    let r = answer.json();
    assert_eq!(r["response"]["allowed"], true);
    assert!(r["response"].get("patch").is_none(), "{r}");
    let answer = c
        .post(
            "/validate",
            "application/json",
            review_with_pod(pod(&long, Vec::new())),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200);

    still_serving(&running).await;
    running.shutdown().await;
}
