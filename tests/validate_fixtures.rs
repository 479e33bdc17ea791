//! Every `*.validate.json` captured from a real kube-apiserver (SPEC §5), sent over real TLS to a
//! running webhook with the headers and path the API server used, checked against SPEC §3.

mod policy_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pod_identity_webhook::config::{NamespaceRule, PolicyMode, PolicySettings, Settings};
use pod_identity_webhook::serve::{self, Running};
use policy_support::TlsClient;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

/// CI clones the repository with `shared/` beside it (see .ci/run).
fn fixtures_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/apiserver-v1.24");
    assert!(
        dir.is_dir(),
        "fixtures not found at {}; clone the project with shared/ beside it",
        dir.display()
    );
    dir
}

#[derive(Deserialize)]
struct Fixture<'a> {
    path: String,
    headers: BTreeMap<String, String>,
    /// Sent byte for byte as captured.
    #[serde(borrow)]
    review: &'a RawValue,
}

#[derive(Debug, Clone, Copy)]
enum Expect {
    Allow,
    /// Denied; the message contains each text.
    Deny(&'static [&'static str]),
}

const REMEDY: &str =
    "aws eks create-pod-identity-association --cluster-name prod --namespace team-a";

/// SPEC §3 for each capture, with examples/associations.yaml (team-a: carts, db, migrator) and
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
        "deployment-create-carts"
        | "deployment-update-image"
        | "statefulset-create-db"
        | "job-create-migrator"
        | "pod-create-carts"
        | "pod-create-generatename-dryrun"
        | "pod-update-label"
        | "sa-create-carts"
        | "sa-create-default"
        | "sa-update-add-role-annotation" => Expect::Allow,
        other => panic!("fixture {other} has no expectation in this test; add one"),
    }
}

fn fixture_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .expect("read fixtures dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".validate.json"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 16,
        "expected the captured validate fixtures, found {files:?}"
    );
    files
}

fn stem(path: &Path) -> String {
    let name = path.file_name().unwrap().to_string_lossy();
    name.trim_end_matches(".validate.json").to_string()
}

async fn start(default_mode: PolicyMode) -> (Running, TlsClient) {
    let mut settings = Settings::local();
    settings.associations_file =
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/associations.yaml"));
    settings.policy = PolicySettings {
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
    let running = serve::start(settings).await.expect("webhook starts");
    let client = TlsClient::new(
        running
            .self_signed_ca_pem
            .as_deref()
            .expect("self-signed CA"),
    );
    (running, client)
}

/// Sends one capture; checks the protocol (SPEC §4) and returns the response object.
async fn send(running: &Running, client: &TlsClient, path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("read fixture");
    let fixture: Fixture = serde_json::from_str(&text).expect("fixture parses");
    let headers: Vec<(String, String)> = fixture.headers.clone().into_iter().collect();
    let body = fixture.review.get().as_bytes();
    let response = client
        .post(running.https_addr, &fixture.path, &headers, body)
        .await;
    let name = stem(path);
    assert_eq!(
        response.status,
        200,
        "{name}: {:?}",
        String::from_utf8_lossy(&response.body)
    );
    assert!(
        response
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{name}"
    );
    let sent: Value = serde_json::from_str(fixture.review.get()).unwrap();
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
    let (running, client) = start(PolicyMode::Enforce).await;
    for path in fixture_files() {
        let name = stem(&path);
        let r = send(&running, &client, &path).await;
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
        }
    }
    running.shutdown().await;
}

#[tokio::test]
async fn captured_validate_requests_over_tls_in_warn_mode_are_all_allowed() {
    let (running, client) = start(PolicyMode::Warn).await;
    let mut warned = Vec::new();
    for path in fixture_files() {
        let name = stem(&path);
        let r = send(&running, &client, &path).await;
        assert_eq!(r["allowed"], true, "{name}: warn mode never denies: {r}");
        let warns = r["warnings"].as_array().cloned().unwrap_or_default();
        // What enforce mode denies, warn mode warns about; what it allows stays silent.
        match expected(&name) {
            Expect::Allow => assert!(warns.is_empty(), "{name}: {r}"),
            Expect::Deny(_) => {
                assert!(!warns.is_empty(), "{name}: expected a warning: {r}");
                warned.push(name);
            }
        }
    }
    assert_eq!(warned.len(), 6, "{warned:?}");
    running.shutdown().await;
}
