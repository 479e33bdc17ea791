//! Every `*.mutate.json` captured from a real kube-apiserver, sent byte for byte (path, headers,
//! body) over real TLS to a running webhook whose ServiceAccounts come from a fake API server
//! answering with the captured ServiceAccount list. Each returned patch is decoded from its
//! base64 string, applied with json-patch to the captured pod, and the result checked against
//! docs/contract.md §2; a second pass over the patched pod must need no patch at all (docs/contract.md §2 idempotence).

mod support;

use serde_json::{Value, json};
use support::kube_api::FakeKubeApi;
use support::{Capture, TlsClient, WebhookBuilder, apply_answer, captures, env_pairs, wait_readyz};

const PI_VOLUME: &str = "eks-pod-identity-token";
const PI_MOUNT: &str = "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount";
const IRSA_VOLUME: &str = "aws-iam-token";
const IRSA_MOUNT: &str = "/var/run/secrets/eks.amazonaws.com/serviceaccount";

/// Pod Identity for team-a/carts (whose ServiceAccount also carries an IRSA annotation: the
/// association wins) and team-a/default; team-a/s3-reader has only its IRSA annotation.
const ASSOCIATIONS: &str = "associations:
  - {namespace: team-a, serviceAccount: carts, roleArn: 'arn:aws:iam::111122223333:role/carts-pi'}
  - {namespace: team-a, serviceAccount: default, roleArn: 'arn:aws:iam::111122223333:role/default-pi'}
";

struct Started {
    running: support::Webhook,
    client: TlsClient,
    _api: FakeKubeApi,
}

async fn start() -> Started {
    let api = FakeKubeApi::start(0, Vec::new()).await;
    let builder = WebhookBuilder::new().associations(ASSOCIATIONS);
    let kubeconfig = api.kubeconfig(builder.dir());
    let running = builder
        .settings(|s| {
            s.kubeconfig = Some(kubeconfig);
            s.injection.aws_default_region = Some("us-west-2".into());
            s.injection.sts_regional_endpoint = true;
        })
        .start()
        .await;
    // Ready once the ServiceAccounts are listed from the fake API server.
    wait_readyz(running.admin_addr, 200).await;
    let client = TlsClient::to(&running, false).await;
    Started {
        running,
        client,
        _api: api,
    }
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn named<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    list.as_array()?.iter().find(|v| v["name"] == name)
}

/// Sends a capture and returns the response JSON after the protocol checks of docs/contract.md §4.
async fn send(client: &mut TlsClient, capture: &Capture) -> Value {
    let answer = client.send(capture).await.expect("answered");
    assert_eq!(answer.status, 200, "{}: {}", capture.name, answer.text());
    assert!(
        answer
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/json"))
    );
    let got = answer.json();
    let sent = capture.review();
    assert_eq!(got["apiVersion"], sent["apiVersion"], "apiVersion echoed");
    assert_eq!(got["kind"], "AdmissionReview");
    assert_eq!(got["response"]["uid"], sent["request"]["uid"], "uid echoed");
    assert_eq!(got["response"]["allowed"], true, "{}: {got}", capture.name);
    got
}

/// The patched pod minus what docs/contract.md §2 adds must be the captured pod: nothing else changed and
/// no field was lost.
fn assert_only_additions(name: &str, original: &Value, patched: &Value, volume: &str) {
    let mut stripped = patched.clone();
    let spec = &mut stripped["spec"];
    for list in ["initContainers", "containers"] {
        let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for (i, c) in containers.iter_mut().enumerate() {
            let before = &original["spec"][list][i];
            let obj = c.as_object_mut().unwrap();
            for (field, added) in [("env", "AWS_"), ("volumeMounts", volume)] {
                let Some(items) = obj.get_mut(field).and_then(Value::as_array_mut) else {
                    continue;
                };
                let kept = before[field].as_array().cloned().unwrap_or_default();
                items.retain(|item| {
                    kept.contains(item) || !item["name"].as_str().unwrap().starts_with(added)
                });
                if items.is_empty() && before.get(field).is_none() {
                    obj.remove(field);
                }
            }
        }
    }
    let volumes = spec["volumes"].as_array_mut().unwrap();
    volumes.retain(|v| v["name"] != volume);
    if let Some(labels) = stripped["metadata"]
        .get_mut("labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove("eks.amazonaws.com/pod-identity");
        if labels.is_empty() && original["metadata"].get("labels").is_none() {
            stripped["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("labels");
        }
    }
    assert_eq!(
        &stripped, original,
        "{name}: the patch changed more than it adds"
    );
}

fn assert_pod_identity_volume(pod: &Value) {
    assert_eq!(
        named(&pod["spec"]["volumes"], PI_VOLUME).unwrap()["projected"],
        json!({"sources": [{"serviceAccountToken": {
            "audience": "pods.eks.amazonaws.com",
            "expirationSeconds": 86400,
            "path": "eks-pod-identity-token"}}]})
    );
    assert_eq!(
        pod["metadata"]["labels"]["eks.amazonaws.com/pod-identity"],
        "enabled"
    );
}

fn assert_mount(container: &Value, volume: &str, path: &str) {
    let mount = named(&container["volumeMounts"], volume)
        .unwrap_or_else(|| panic!("{} has no {volume} mount", container["name"]));
    assert_eq!(mount["mountPath"], path);
    assert_eq!(mount["readOnly"], true);
}

const PI_ENV: [(&str, &str); 5] = [
    ("AWS_STS_REGIONAL_ENDPOINTS", "regional"),
    ("AWS_DEFAULT_REGION", "us-west-2"),
    ("AWS_REGION", "us-west-2"),
    (
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "http://169.254.170.23/v1/credentials",
    ),
    (
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
        "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token",
    ),
];

/// Checks one mutated capture against docs/contract.md §2; returns the patched pod.
fn check(capture: &Capture, answer: &Value) -> Value {
    let name = capture.name.trim_end_matches(".mutate");
    let original = &capture.review()["request"]["object"];
    let patched = apply_answer(original, answer);
    let warnings = answer["response"]["warnings"].clone();
    match name {
        "pod-create-carts" | "pod-create-generatename-dryrun" => {
            // Association wins over the ServiceAccount's IRSA annotation (docs/contract.md §1).
            let app = &patched["spec"]["containers"][0];
            assert_eq!(env_pairs(app), pairs(&PI_ENV), "{name}");
            assert_mount(app, PI_VOLUME, PI_MOUNT);
            assert_pod_identity_volume(&patched);
            assert!(named(&patched["spec"]["volumes"], IRSA_VOLUME).is_none());
            assert_only_additions(name, original, &patched, PI_VOLUME);
            assert!(warnings.is_null(), "{name}: {warnings}");
        }
        "pod-create-hostnetwork-default-sa" => {
            let app = &patched["spec"]["containers"][0];
            assert_eq!(env_pairs(app), pairs(&PI_ENV), "{name}");
            assert_pod_identity_volume(&patched);
            assert_only_additions(name, original, &patched, PI_VOLUME);
            let w = warnings.as_array().expect("hostNetwork pods get a warning");
            assert!(
                w.iter()
                    .any(|w| w.as_str().unwrap().contains("hostNetwork"))
            );
        }
        "pod-create-irsa-init-sidecar" => {
            let token = "/var/run/secrets/eks.amazonaws.com/serviceaccount/token";
            let role = "arn:aws:iam::111122223333:role/s3-reader";
            let full = pairs(&[
                ("AWS_STS_REGIONAL_ENDPOINTS", "regional"),
                ("AWS_DEFAULT_REGION", "us-west-2"),
                ("AWS_REGION", "us-west-2"),
                ("AWS_ROLE_ARN", role),
                ("AWS_WEB_IDENTITY_TOKEN_FILE", token),
            ]);
            let spec = &patched["spec"];
            assert_eq!(
                env_pairs(&spec["initContainers"][0]),
                full,
                "init container"
            );
            assert_eq!(env_pairs(&spec["containers"][1]), full, "sidecar");
            // The app sets AWS_REGION itself: no region variables are added, its own is kept.
            assert_eq!(
                env_pairs(&spec["containers"][0]),
                pairs(&[
                    ("AWS_REGION", "eu-west-1"),
                    ("AWS_STS_REGIONAL_ENDPOINTS", "regional"),
                    ("AWS_ROLE_ARN", role),
                    ("AWS_WEB_IDENTITY_TOKEN_FILE", token),
                ])
            );
            for c in [
                &spec["initContainers"][0],
                &spec["containers"][0],
                &spec["containers"][1],
            ] {
                assert_mount(c, IRSA_VOLUME, IRSA_MOUNT);
            }
            // The ServiceAccount's token-expiration annotation (3600) sets the lifetime.
            assert_eq!(
                named(&spec["volumes"], IRSA_VOLUME).unwrap()["projected"],
                json!({"sources": [{"serviceAccountToken": {
                    "audience": "sts.amazonaws.com", "expirationSeconds": 3600, "path": "token"}}]})
            );
            assert!(
                patched["metadata"]["labels"]["eks.amazonaws.com/pod-identity"].is_null(),
                "IRSA pods get no Pod Identity label"
            );
            assert_only_additions(name, original, &patched, IRSA_VOLUME);
        }
        other => panic!("capture {other} has no expectation here; add one"),
    }
    patched
}

#[tokio::test]
async fn every_captured_pod_is_mutated_over_tls_as_the_spec_says_and_only_once() {
    let mut w = start().await;
    let mutate = captures(".mutate.json");
    assert!(mutate.len() >= 4, "expected the captured mutate requests");
    // HTTP/1.1 (the API server's default) and HTTP/2, which it uses when told to.
    let mut h2 = TlsClient::to(&w.running, true).await;
    for client in [&mut w.client, &mut h2] {
        for capture in &mutate {
            let answer = send(client, capture).await;
            let response = &answer["response"];
            assert_eq!(response["patchType"], "JSONPatch", "{}", capture.name);
            assert!(
                response["patch"].is_string(),
                "{}: patch must be a base64 string",
                capture.name
            );
            let patched = check(capture, &answer);

            // Reinvocation (docs/contract.md §2): the same review with the patched pod needs nothing more.
            let mut review = capture.review();
            review["request"]["object"] = patched;
            review["request"]["uid"] = json!(format!(
                "{}-again",
                review["request"]["uid"].as_str().unwrap()
            ));
            let again = Capture {
                name: capture.name.clone(),
                path: capture.path.clone(),
                headers: capture.headers.clone(),
                body: serde_json::to_vec(&review).unwrap(),
            };
            let second = send(client, &again).await;
            assert!(
                second["response"].get("patch").is_none()
                    && second["response"].get("patchType").is_none(),
                "{}: second pass must carry no patch: {second}",
                capture.name
            );
        }
    }
    w.running.shutdown().await;
}

#[tokio::test]
async fn captured_validate_requests_sent_to_mutate_pass_through_unchanged() {
    // Only pod CREATE is mutated; anything else routed to /mutate is allowed without a patch.
    let mut w = start().await;
    for capture in captures(".validate.json") {
        let retargeted = Capture {
            path: capture.path.replace("/validate", "/mutate"),
            ..capture
        };
        let answer = send(&mut w.client, &retargeted).await;
        let review = retargeted.review();
        let is_pod_create = review["request"]["kind"]["kind"] == "Pod"
            && review["request"]["operation"] == "CREATE";
        assert_eq!(
            answer["response"].get("patch").is_some(),
            is_pod_create,
            "{}: {answer}",
            retargeted.name
        );
    }
    w.running.shutdown().await;
}
