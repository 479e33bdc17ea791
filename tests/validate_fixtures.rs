//! Every `*.validate.json` captured from a real kube-apiserver (docs/contract.md §5), sent over real TLS to a
//! running webhook with the headers and path the API server used, checked against docs/contract.md §3.

mod support;

use std::path::Path;

use pod_identity_webhook::settings::{NamespaceRule, PolicyMode, PolicySettings};
use serde_json::Value;
use support::{Capture, TlsClient, Webhook, WebhookBuilder, captures};

#[derive(Debug, Clone, Copy)]
enum Expect {
    Allow,
    /// Denied; the message contains each text.
    Deny(&'static [&'static str]),
    /// Issue 28: a created pod whose ServiceAccount has an identity, captured without the
    /// mutating webhook (it carries no injection): the mutation missed it, so enforce denies
    /// it (the controller retries through `/mutate`) and warn warns.
    Missed,
}

const REMEDY: &str =
    "aws eks create-pod-identity-association --cluster-name prod --namespace team-a";

/// docs/contract.md §3 for each capture, with examples/associations.yaml (team-a: carts, db, migrator) and
/// `team-a` in enforce mode allowing the roles `carts` and `db` in IRSA annotations.
fn expected(stem: &str) -> Expect {
    match stem {
        "cronjob-create-reporter" => Expect::Deny(&[
            "CronJob team-a/report",
            "ServiceAccount \"reporter\"",
            "--service-account reporter --role-arn <role>",
        ]),
        "daemonset-create-hostnetwork-default-sa" => Expect::Deny(&[
            "DaemonSet team-a/agent",
            "ServiceAccount \"default\"",
            "--service-account default --role-arn <role>",
        ]),
        "replicaset-create-default-sa" => Expect::Deny(&[
            "ReplicaSet team-a/carts-rs",
            "--service-account default --role-arn <role>",
        ]),
        "pod-create-hostnetwork-default-sa" => Expect::Deny(&[
            "Pod team-a/default-sa",
            "--service-account default --role-arn <role>",
        ]),
        // No Kubernetes API in this test, so the IRSA annotation of s3-reader cannot be seen.
        "pod-create-irsa-init-sidecar" => Expect::Deny(&[
            "Pod team-a/irsa-0",
            "no eks.amazonaws.com/role-arn annotation",
            "--service-account s3-reader --role-arn <role>",
            "associations file",
        ]),
        "sa-create-irsa-annotated" => Expect::Deny(&[
            "ServiceAccount team-a/s3-reader",
            "arn:aws:iam::111122223333:role/s3-reader",
            "not an allowed role",
        ]),
        "pod-create-carts" | "pod-create-generatename-dryrun" => Expect::Missed,
        "deployment-create-carts"
        | "deployment-update-image"
        | "statefulset-create-db"
        | "job-create-migrator"
        | "pod-update-label"
        | "sa-create-carts"
        | "sa-create-default"
        | "sa-update-add-role-annotation" => Expect::Allow,
        other => panic!("fixture {other} has no expectation in this test; add one"),
    }
}

fn fixture_files() -> Vec<Capture> {
    let files = captures(".validate.json");
    assert!(
        files.len() >= 16,
        "expected the captured validate fixtures, found {}",
        files.len()
    );
    files
}

async fn start(default_mode: PolicyMode) -> (Webhook, TlsClient) {
    let policy = PolicySettings {
        default_mode,
        namespaces: vec![NamespaceRule {
            pattern: "team-*".into(),
            mode: None,
            allowed_role_arns: Some(vec![
                "arn:aws:iam::111122223333:role/carts".into(),
                "arn:aws:iam::111122223333:role/db".into(),
            ]),
        }],
        cluster_name: Some("prod".into()),
        ..PolicySettings::default()
    };
    let running = WebhookBuilder::new()
        .settings(|s| {
            s.associations_file =
                Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/associations.yaml"));
            s.policy = policy;
        })
        .start()
        .await;
    let client = TlsClient::to(&running, false).await;
    (running, client)
}

/// Sends one capture; checks the protocol (docs/contract.md §4) and returns the response object.
async fn send(client: &mut TlsClient, fixture: &Capture) -> Value {
    let response = client.send(fixture).await.expect("request answered");
    let name = fixture.name.trim_end_matches(".validate");
    assert_eq!(response.status, 200, "{name}: {}", response.text());
    assert!(
        response
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{name}"
    );
    let sent = fixture.review();
    let got: Value = serde_json::from_slice(&response.body).expect("response is JSON");
    assert_eq!(got["apiVersion"], sent["apiVersion"], "{name}");
    assert_eq!(got["kind"], "AdmissionReview", "{name}");
    assert_eq!(got["response"]["uid"], sent["request"]["uid"], "{name}");
    assert!(
        got["response"].get("patch").is_none(),
        "{name}: validation never patches"
    );
    for w in got["response"]["warnings"].as_array().into_iter().flatten() {
        let w = w.as_str().unwrap();
        assert!(
            w.chars().count() < 120,
            "{name}: warning over 120 characters: {w}"
        );
    }
    got["response"].clone()
}

#[tokio::test]
async fn captured_validate_requests_over_tls_in_enforce_mode() {
    let (running, mut client) = start(PolicyMode::Enforce).await;
    for fixture in fixture_files() {
        let name = fixture.name.trim_end_matches(".validate").to_string();
        let r = send(&mut client, &fixture).await;
        match expected(&name) {
            Expect::Allow => {
                assert_eq!(r["allowed"], true, "{name}: {r}");
                assert!(r.get("warnings").is_none(), "{name}: {r}");
            }
            Expect::Deny(texts) => {
                assert_eq!(r["allowed"], false, "{name}: {r}");
                assert_eq!(r["status"]["code"], 403, "{name}");
                let message = r["status"]["message"].as_str().unwrap();
                for t in texts {
                    assert!(message.contains(t), "{name}: denial lacks {t:?}: {message}");
                }
                if name.starts_with("sa-") {
                    assert!(
                        message.contains("kubectl annotate serviceaccount"),
                        "{message}"
                    );
                } else {
                    assert!(
                        message.contains(REMEDY),
                        "{name}: no remedy command: {message}"
                    );
                }
            }
            Expect::Missed => {
                assert_eq!(r["allowed"], false, "{name}: {r}");
                let message = r["status"]["message"].as_str().unwrap();
                assert!(
                    message.contains("was admitted without the credentials")
                        && message.contains("the mutating webhook did not run"),
                    "{name}: {message}"
                );
            }
        }
    }
    running.shutdown().await;
}

#[tokio::test]
async fn captured_validate_requests_over_tls_in_warn_mode_are_all_allowed() {
    let (running, mut client) = start(PolicyMode::Warn).await;
    let mut warned = Vec::new();
    for fixture in fixture_files() {
        let name = fixture.name.trim_end_matches(".validate").to_string();
        let r = send(&mut client, &fixture).await;
        assert_eq!(r["allowed"], true, "{name}: warn mode never denies: {r}");
        let warns = r["warnings"].as_array().cloned().unwrap_or_default();
        // What enforce mode denies, warn mode warns about; what it allows stays silent.
        match expected(&name) {
            Expect::Allow => assert!(warns.is_empty(), "{name}: {r}"),
            Expect::Deny(_) | Expect::Missed => {
                assert!(!warns.is_empty(), "{name}: expected a warning: {r}");
                warned.push(name);
            }
        }
    }
    assert_eq!(warned.len(), 8, "{warned:?}");
    running.shutdown().await;
}

/// `object` written with its members in `order` (names not in it follow, in their order), and
/// with `kind` set to `kind` (`None`: left out).
fn object_text(object: &Value, order: &[&str], kind: Option<&str>) -> String {
    let map = object.as_object().unwrap();
    let mut names: Vec<&str> = order.to_vec();
    names.extend(
        map.keys()
            .map(String::as_str)
            .filter(|k| !order.contains(k)),
    );
    let members: Vec<String> = names
        .into_iter()
        .filter(|name| *name != "kind")
        .filter_map(|name| Some((name, map.get(name)?)))
        .map(|(name, v)| format!("{}:{v}", Value::from(name)))
        .chain(kind.map(|k| format!("\"kind\":{}", Value::from(k))))
        .collect();
    format!("{{{}}}", members.join(","))
}

/// The request's kind, not the object's own `kind` or key order, says where the pod spec is:
/// whatever the object's key order and kind, the answer is the one the capture itself gets.
#[tokio::test]
async fn the_objects_key_order_and_kind_do_not_change_the_answer() {
    let (running, mut client) = start(PolicyMode::Enforce).await;
    for fixture in fixture_files() {
        let name = fixture.name.trim_end_matches(".validate").to_string();
        let answer = send(&mut client, &fixture).await;
        let review = fixture.review();
        let object = &review["request"]["object"];
        let kind = object["kind"].as_str().unwrap();
        let other = if kind == "Pod" { "Deployment" } else { "Pod" };
        for (variant, text) in [
            (
                "spec before kind",
                object_text(object, &["spec", "metadata"], Some(kind)),
            ),
            ("no kind", object_text(object, &[], None)),
            ("another kind", object_text(object, &[], Some(other))),
        ] {
            let mut body = review.clone();
            body["request"]["object"] = Value::from("OBJECT");
            let body = body.to_string().replace("\"OBJECT\"", &text);
            let got = client
                .review(&fixture.path, body.into_bytes())
                .await
                .unwrap();
            assert_eq!(got.json()["response"], answer, "{name}, {variant}");
        }
    }
    running.shutdown().await;
}
