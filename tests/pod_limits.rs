//! Memory per request bounded whatever the pod's shape (issue 21, docs/contract.md §12), over real TLS:
//! a pod with more containers or volumes than allowed gets a short `allowed: false`, a pod at
//! the limit gets one env list and one mount per container, and a patch that would make an
//! answer longer than the API server reads (3 MiB) is refused instead of written.

mod support;

use serde_json::{Value, json};
use support::{TlsClient, Webhook, WebhookBuilder, apply_answer, decode_patch, env_pairs, fixture};

use pod_identity_webhook::settings::Settings;

/// No refusal quotes the pod: every one of them fits in this.
const SHORT_ANSWER: usize = 2048;

async fn start(change: impl FnOnce(&mut Settings)) -> Webhook {
    WebhookBuilder::new()
        .associations(
            "associations:\n  - {namespace: team-a, serviceAccount: carts, roleArn: 'arn:aws:iam::111122223333:role/carts'}\n",
        )
        .settings(change)
        .start()
        .await
}

/// The carts review (namespace team-a, which has an association) with `spec` as its pod's
/// spec, where the string `"@"` is replaced by `list` (written as text: a million entries
/// would be slow to build as `Value`s).
fn review(spec: Value, list: &str) -> Vec<u8> {
    let (_, body) = fixture("pod-create-carts.mutate.json");
    let mut review: Value = serde_json::from_slice(&body).unwrap();
    review["request"]["object"] = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "team-a"}, "spec": spec});
    serde_json::to_string(&review)
        .unwrap()
        .replacen(r#""@""#, list, 1)
        .into_bytes()
}

/// `[{},{},…]` with `n` entries.
fn empty_entries(n: usize) -> String {
    let mut s = String::with_capacity(3 * n + 2);
    s.push('[');
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        s.push_str("{}");
    }
    s.push(']');
    s
}

/// Posts `body`; the answer's length and its `response`.
async fn post(c: &mut TlsClient, endpoint: &str, body: Vec<u8>) -> (usize, Value) {
    let answer = c.review(endpoint, body).await.unwrap();
    assert_eq!(answer.status, 200, "{endpoint}: {}", answer.text());
    (answer.body.len(), answer.json())
}

#[tokio::test]
async fn pods_of_50_000_to_a_million_empty_containers_get_a_short_refusal() {
    let webhook = start(|_| {}).await;
    let mut c = TlsClient::to(&webhook, false).await;
    // The rows of issue 21: 50,000 `{}` (150 KB), 100,000 (300 KB), 300,000 (~900 KB), a 3 MB
    // body; and the same shapes in the other lists a pod has.
    for (field, n) in [
        ("containers", 50_000),
        ("containers", 100_000),
        ("containers", 300_000),
        ("containers", 1_000_000),
        ("initContainers", 300_000),
        ("ephemeralContainers", 300_000),
        ("volumes", 1_000_000),
    ] {
        let body = review(
            json!({"serviceAccountName": "carts", field: "@"}),
            &empty_entries(n),
        );
        let size = body.len();
        for endpoint in ["/mutate", "/validate"] {
            let (length, answer) = post(&mut c, endpoint, body.clone()).await;
            let r = &answer["response"];
            assert_eq!(r["allowed"], false, "{endpoint} {field} {n}: {answer}");
            assert!(r.get("patch").is_none(), "{endpoint} {field} {n}");
            let message = r["status"]["message"].as_str().unwrap();
            assert!(
                message.contains(&format!("spec.{field}"))
                    && message.contains("more than 4096 entries"),
                "{endpoint} {field} {n}: {message}"
            );
            assert!(
                length < SHORT_ANSWER,
                "{endpoint} {field} {n} ({size} bytes): answer of {length} bytes"
            );
        }
    }
    // Still serving, and a normal pod still gets its patch.
    let (_, good) = fixture("pod-create-carts.mutate.json");
    let (_, answer) = post(&mut c, "/mutate", good).await;
    assert!(answer["response"]["patch"].is_string(), "{answer}");
    webhook.shutdown().await;
}

#[tokio::test]
async fn pods_over_the_configured_limits_are_refused_naming_the_setting() {
    let webhook = start(|_| {}).await;
    let mut c = TlsClient::to(&webhook, true).await;
    let many =
        |n: usize| -> Vec<Value> { (0..n).map(|i| json!({"name": format!("c{i}")})).collect() };
    let cases = [
        // 251 containers: one over the default.
        (
            json!({"serviceAccountName": "carts", "containers": many(251)}),
            "251 containers",
            "injection.maxContainers",
        ),
        // The three kinds count together.
        (
            json!({"serviceAccountName": "carts", "initContainers": many(100),
                   "containers": many(100), "ephemeralContainers": many(51)}),
            "251 containers",
            "injection.maxContainers",
        ),
        (
            json!({"serviceAccountName": "carts", "containers": many(1),
                   "volumes": (0..1001).map(|i| json!({"name": format!("v{i}"), "emptyDir": {}})).collect::<Vec<_>>()}),
            "1001 volumes",
            "injection.maxVolumes",
        ),
        // Whatever the pod's identity: the limit is on the pod.
        (
            json!({"serviceAccountName": "no-identity", "containers": many(251)}),
            "251 containers",
            "injection.maxContainers",
        ),
    ];
    for (spec, count, key) in cases {
        let (length, answer) = post(&mut c, "/mutate", review(spec, "")).await;
        let r = &answer["response"];
        assert_eq!(r["allowed"], false, "{count}: {answer}");
        assert_eq!(r["status"]["code"], 403, "{count}");
        let message = r["status"]["message"].as_str().unwrap();
        assert!(
            message.contains(count) && message.contains(key),
            "{message}"
        );
        assert!(length < SHORT_ANSWER, "{count}: {length} bytes");
    }
    // At the limits: mutated.
    let spec = json!({"serviceAccountName": "carts", "initContainers": many(50),
        "containers": many(200),
        "volumes": (0..1000).map(|i| json!({"name": format!("v{i}"), "emptyDir": {}})).collect::<Vec<_>>()});
    let (_, answer) = post(&mut c, "/mutate", review(spec, "")).await;
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    assert!(answer["response"]["patch"].is_string());
    webhook.shutdown().await;
}

#[tokio::test]
async fn the_limits_are_settings() {
    let webhook = start(|s| {
        s.injection.max_containers = 3;
        s.injection.max_volumes = 1;
    })
    .await;
    let mut c = TlsClient::to(&webhook, false).await;
    let spec = json!({"serviceAccountName": "carts", "containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}, {"name": "d"}]});
    let (_, answer) = post(&mut c, "/mutate", review(spec, "")).await;
    let message = answer["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("4 containers") && message.contains("at most 3"),
        "{message}"
    );
    let spec = json!({"serviceAccountName": "carts", "containers": [{"name": "a"}],
        "volumes": [{"name": "x"}, {"name": "y"}]});
    let (_, answer) = post(&mut c, "/mutate", review(spec, "")).await;
    let message = answer["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("2 volumes") && message.contains("at most 1"),
        "{message}"
    );
    webhook.shutdown().await;
}

#[tokio::test]
async fn each_container_costs_the_answer_one_env_list_and_one_mount() {
    let webhook = start(|_| {}).await;
    let mut c = TlsClient::to(&webhook, false).await;
    let mut lengths = Vec::new();
    for n in [10, 250] {
        let body = review(
            json!({"serviceAccountName": "carts", "containers": "@"}),
            &empty_entries(n),
        );
        let (length, answer) = post(&mut c, "/mutate", body.clone()).await;
        assert_eq!(answer["response"]["allowed"], true, "{answer}");
        // One `add` of the env list and one of the mount list per container, then the volume
        // and the label: nothing is copied from the pod.
        let patch = decode_patch(&answer);
        assert_eq!(patch.0.len(), 2 * n + 2, "{n} containers");
        let review: Value = serde_json::from_slice(&body).unwrap();
        let pod = &review["request"]["object"];
        let patched = apply_answer(pod, &answer);
        for container in patched["spec"]["containers"].as_array().unwrap() {
            let names: Vec<String> = env_pairs(container).into_iter().map(|(k, _)| k).collect();
            assert_eq!(
                names,
                [
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"
                ]
            );
            assert_eq!(container["volumeMounts"].as_array().unwrap().len(), 1);
        }
        lengths.push(length);
    }
    // What each container adds to the answer, whatever the pod (base64 of ~420 bytes of JSON).
    let per_container = (lengths[1] - lengths[0]) / 240;
    assert!(per_container <= 640, "{per_container} bytes per container");
    webhook.shutdown().await;
}

#[tokio::test]
async fn a_patch_longer_than_the_api_server_reads_is_refused_not_written() {
    // Limits raised as far as they go, and the most each container can be given: five env
    // variables added one by one to lists the containers already have, and a mount.
    let webhook = start(|s| {
        s.injection.max_containers = 4096;
        s.injection.aws_default_region = Some("eu-west-1".into());
        s.injection.sts_regional_endpoint = true;
    })
    .await;
    let mut c = TlsClient::to(&webhook, false).await;
    let containers = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| json!({"name": format!("c{i}"), "env": [], "volumeMounts": []}))
            .collect()
    };
    let (length, answer) = post(
        &mut c,
        "/mutate",
        review(
            json!({"serviceAccountName": "carts", "containers": containers(4096)}),
            "",
        ),
    )
    .await;
    let r = &answer["response"];
    assert_eq!(r["allowed"], false, "{length} bytes");
    assert!(r.get("patch").is_none());
    let message = r["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("4096 containers") && message.contains("3145728"),
        "{message}"
    );
    assert!(length < SHORT_ANSWER, "{length} bytes");
    // A quarter of them: well within, mutated, and the patch applies.
    let body = review(
        json!({"serviceAccountName": "carts", "containers": containers(1024)}),
        "",
    );
    let (length, answer) = post(&mut c, "/mutate", body.clone()).await;
    assert_eq!(answer["response"]["allowed"], true);
    assert!(length < 3 * 1024 * 1024);
    let review: Value = serde_json::from_slice(&body).unwrap();
    let patched = apply_answer(&review["request"]["object"], &answer);
    assert_eq!(env_pairs(&patched["spec"]["containers"][1023]).len(), 5);
    webhook.shutdown().await;
}
