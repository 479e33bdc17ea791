//! Patterns in the associations file (docs/associations.md#patterns): the precedence table, the
//! tenant allowlist on patterns, and the same answer, row by row, from the webhook (its
//! decision log and `/validate`), the credentials agent (the role it assumes at moto STS) and
//! `check --output json`; ties refused at load by each of them, naming both lines.

mod support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use pod_identity_webhook::audit::decide::creation_review;
use serde_json::{Value, json};
use support::agent::Harness;
use support::sts::{INSTALL_MOTO, MOTO, Moto, moto_available};
use support::{TlsClient, WebhookBuilder, run_binary, serve_config, strings};

const ROLE: &str = "arn:aws:iam::111122223333:role/";

/// Lines 2 to 6; every level of the precedence, written in no particular order.
const ASSOCIATIONS: &str = "associations:
  - {namespace: '*', serviceAccount: '*', roleArn: 'arn:aws:iam::111122223333:role/read-only'}
  - {namespace: 'team-*', serviceAccount: carts, roleArn: 'arn:aws:iam::111122223333:role/team-b-carts'}
  - {namespace: team-a, serviceAccount: '*', roleArn: 'arn:aws:iam::111122223333:role/team-a-default'}
  - {namespace: team-a, serviceAccount: 'cart*', roleArn: 'arn:aws:iam::111122223333:role/team-a-cart-jobs'}
  - {namespace: team-a, serviceAccount: carts, roleArn: 'arn:aws:iam::111122223333:role/team-a-carts'}
";

/// Each tenant may be given its own roles and the shared read-only one.
fn write_config(dir: &Path, associations: &Path) -> PathBuf {
    let path = dir.join("config.yaml");
    std::fs::write(
        &path,
        format!(
            "associationsFile: {}
policy:
  defaultMode: enforce
  clusterName: prod
  namespaces:
    - match: \"team-a*\"
      allowedRoleArns: [\"{ROLE}team-a-*\", \"{ROLE}read-only\"]
    - match: \"team-b*\"
      allowedRoleArns: [\"{ROLE}team-b-*\", \"{ROLE}read-only\"]
",
            associations.display()
        ),
    )
    .unwrap();
    path
}

/// What a ServiceAccount gets: a role from an entry, or the entry refused by the allowlist.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Want {
    Role {
        role: &'static str,
        position: usize,
        pattern: Option<&'static str>,
    },
    Refused {
        position: usize,
    },
}

fn role(role: &'static str, position: usize, pattern: Option<&'static str>) -> Want {
    Want::Role {
        role,
        position,
        pattern,
    }
}

/// The table of docs/associations.md#patterns.
fn rows() -> Vec<(&'static str, &'static str, Want)> {
    vec![
        // 1. exact namespace + exact ServiceAccount
        ("team-a", "carts", role("team-a-carts", 4, None)),
        // 2. exact namespace + pattern: the longest literal prefix first
        (
            "team-a",
            "cartsync",
            role("team-a-cart-jobs", 3, Some("team-a/cart*")),
        ),
        (
            "team-a",
            "orders",
            role("team-a-default", 2, Some("team-a/*")),
        ),
        // 3. pattern namespace + exact ServiceAccount
        (
            "team-b",
            "carts",
            role("team-b-carts", 1, Some("team-*/carts")),
        ),
        // ... a namespace without an allowlist takes it too,
        (
            "team-c",
            "carts",
            role("team-b-carts", 1, Some("team-*/carts")),
        ),
        // ... but `team-*` cannot hand team-b's role to a team-a namespace.
        ("team-ab", "carts", Want::Refused { position: 1 }),
        // 4. pattern + pattern
        ("team-b", "orders", role("read-only", 0, Some("*/*"))),
        ("prod", "api", role("read-only", 0, Some("*/*"))),
    ]
}

fn pod(namespace: &str, service_account: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": format!("{service_account}-0"), "namespace": namespace},
        "spec": {"serviceAccountName": service_account, "containers": [{"name": "app", "image": "app"}]},
    })
}

/// Log lines written to memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn decisions(&self) -> Vec<Value> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["message"] == "admission decision")
            .collect()
    }
}

/// The expected `identity` text of the decision log and of `check`.
fn described(want: &Want) -> String {
    let entry = |position: usize, pattern: Option<&str>, line: usize| match pattern {
        Some(p) => format!("associations[{position}] (line {line}, pattern {p})"),
        None => {
            let (ns, sa) = match position {
                4 => ("team-a", "carts"),
                _ => unreachable!("the exact entry is the fifth"),
            };
            format!("associations[{position}] ({ns}/{sa})")
        }
    };
    match want {
        Want::Role {
            role,
            position,
            pattern,
        } => format!(
            "role {ROLE}{role} from {}",
            entry(*position, *pattern, position + 2)
        ),
        Want::Refused { position } => format!(
            "{} refused: role {ROLE}team-b-carts is not in the namespace's allowedRoleArns",
            entry(*position, Some("team-*/carts"), position + 2)
        ),
    }
}

#[tokio::test]
async fn every_row_of_the_precedence_table_gets_the_same_answer_from_webhook_agent_and_check() {
    if support::skip::unless(moto_available(), MOTO, INSTALL_MOTO) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let associations = dir.path().join("associations.yaml");
    std::fs::write(&associations, ASSOCIATIONS).unwrap();
    let config = write_config(dir.path(), &associations);

    // The webhook, as `serve --config` starts it; its decision log captured.
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = pod_identity_webhook::telemetry::logging::json_subscriber(
        tracing_subscriber::EnvFilter::new("info"),
        move || writer.clone(),
    );
    let _guard = tracing::subscriber::set_default(subscriber);
    let webhook = serve_config(&config, None).await;
    let mut client = TlsClient::to(&webhook, false).await;

    // The agent on the same file and the same configuration (`agent --config`), STS from moto
    // recording every request.
    let recording = dir.path().join("moto-recording.jsonl");
    let moto = Moto::recording(&recording).await;
    let policy = pod_identity_webhook::cli::agent::policy_of(&config).expect("the policy");
    let file = associations.clone();
    let agent = Harness::start(&moto.endpoint, move |s| {
        s.associations_file = Some(file);
        s.policy = Some(Arc::new(policy));
    })
    .await;

    // `check` on one manifest holding a pod per row.
    let manifest = dir.path().join("pods.yaml");
    let docs: Vec<String> = rows()
        .iter()
        .map(|(ns, sa, _)| serde_yaml_ng::to_string(&pod(ns, sa)).unwrap())
        .collect();
    std::fs::write(&manifest, docs.join("\n---\n")).unwrap();
    let (code, stdout, stderr) = check(&config, &manifest, &["--output", "json"]).await;
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(code, 1, "the refused row is denied: {stdout}{stderr}");

    for (i, (ns, sa, want)) in rows().into_iter().enumerate() {
        let at = format!("{ns}/{sa}");
        let description = described(&want);

        // The webhook: `/mutate`, then `/validate` on the pod as mutated (the API server's
        // order), both logging the entry; `/validate` denies the refusal.
        let mutated = client
            .review("/mutate", creation_review(&pod(ns, sa), Some(ns)))
            .await
            .unwrap()
            .json();
        let as_mutated = support::apply_answer(&pod(ns, sa), &mutated);
        let validated = client
            .review("/validate", creation_review(&as_mutated, Some(ns)))
            .await
            .unwrap()
            .json();
        let decisions = captured.decisions();
        let last_two: Vec<&Value> = decisions.iter().rev().take(2).collect();
        for line in &last_two {
            assert_eq!(line["namespace"], ns, "{at}: {line}");
            assert_eq!(line["identity"], description, "{at}: {line}");
        }
        let allowed = validated["response"]["allowed"].as_bool().unwrap();
        let patched = mutated["response"]["patch"].is_string();

        // The agent: which role it assumed at STS, or its refusal.
        let before = Moto::recorded(&recording).len();
        let (status, answer) = agent
            .get(&agent.pod_token(ns, sa, &format!("{sa}-0")))
            .await;
        let calls = Moto::recorded(&recording);
        let assumed: Vec<String> = calls[before..]
            .iter()
            .filter(|c| c.action() == "AssumeRole")
            .map(|c| c.params["RoleArn"].clone())
            .collect();

        // `check`: the identity it reports for this row's pod.
        let checked = &report["objects"][i];
        assert_eq!(checked["namespace"], ns, "{at}: {checked}");
        let identity = &checked["identity"];
        assert_eq!(identity["description"], description, "{at}: {identity}");

        match &want {
            Want::Role {
                role,
                position,
                pattern,
            } => {
                let arn = format!("{ROLE}{role}");
                assert!(allowed, "{at}: {validated}");
                assert!(patched, "{at}: {mutated}");
                assert_eq!(status, 200, "{at}: {answer}");
                assert_eq!(assumed, std::slice::from_ref(&arn), "{at}");
                assert_eq!(identity["roleArn"], arn, "{at}");
                assert_eq!(
                    identity["entry"],
                    format!("associations[{position}]"),
                    "{at}"
                );
                assert_eq!(identity["pattern"], json!(pattern), "{at}");
                let line = pattern.map(|_| position + 2);
                assert_eq!(identity["line"], json!(line), "{at}");
                assert_eq!(checked["status"], "mutated", "{at}: {checked}");
            }
            Want::Refused { position } => {
                assert!(!allowed, "{at}: enforce denies: {validated}");
                let message = validated["response"]["status"]["message"].as_str().unwrap();
                assert!(
                    message.contains(&format!(
                        "associations[{position}] (line 3, pattern team-*/carts)"
                    )) && message.contains("team-b-carts")
                        && message.contains("not an allowed role for namespace team-ab"),
                    "{at}: {message}"
                );
                assert!(!patched, "{at}: nothing injected: {mutated}");
                assert_eq!(status, 404, "{at}: {answer}");
                assert!(assumed.is_empty(), "{at}: no STS call: {assumed:?}");
                assert_eq!(identity["refused"], true, "{at}");
                assert_eq!(checked["status"], "denied", "{at}: {checked}");
            }
        }
    }
}

/// Two pattern entries of the same level and literal prefixes that can match one name.
const TIED: &str = "associations:
  - {namespace: 'team-*', serviceAccount: '*', roleArn: 'arn:aws:iam::111122223333:role/a'}
  - {namespace: other, serviceAccount: app, roleArn: 'arn:aws:iam::111122223333:role/b'}
  - {namespace: 'team-*-a', serviceAccount: '*', roleArn: 'arn:aws:iam::111122223333:role/c'}
";

const TIE_MESSAGE: &str = "line 4 column 5: associations[2] (team-*-a/*) ties with line 2 column 5: associations[0] (team-*/*)";

#[tokio::test]
async fn a_tie_is_refused_at_load_by_the_webhook_the_agent_and_check_naming_both_lines() {
    let webhook = WebhookBuilder::new().associations(TIED).try_start().await;
    let e = webhook
        .err()
        .expect("the webhook refuses the file")
        .to_string();
    assert!(e.contains(TIE_MESSAGE), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let associations = dir.path().join("associations.yaml");
    std::fs::write(&associations, TIED).unwrap();
    let config = write_config(dir.path(), &associations);
    let manifest = dir.path().join("pod.yaml");
    std::fs::write(&manifest, pod("team-x", "app").to_string()).unwrap();
    let (code, stdout, stderr) = check(&config, &manifest, &[]).await;
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stderr.contains(TIE_MESSAGE), "{stderr}");

    let mut settings = pod_identity_webhook::agent::AgentSettings::new("kind");
    settings.associations_file = Some(associations);
    settings.kubeconfig = Some(dir.path().join("no-kubeconfig"));
    let e = pod_identity_webhook::agent::start_with(settings, Default::default())
        .await
        .err()
        .expect("the agent refuses the file")
        .to_string();
    assert!(e.contains(TIE_MESSAGE), "{e}");
}

#[tokio::test]
async fn a_bad_pattern_or_too_many_patterns_are_refused_at_load() {
    for (file, why) in [
        (
            "associations:\n  - {namespace: 'Team-*', serviceAccount: a, roleArn: 'arn:aws:iam::111122223333:role/a'}\n",
            "namespace is not a valid namespace name or pattern",
        ),
        (
            "associations:\n  - {namespace: 'team-?', serviceAccount: a, roleArn: 'arn:aws:iam::111122223333:role/a'}\n",
            "namespace is not a valid namespace name or pattern",
        ),
        (
            &format!(
                "associations:\n{}",
                (0..101)
                    .map(|i| format!(
                        "  - {{namespace: 'ns-{i}-*', serviceAccount: '*', roleArn: 'arn:aws:iam::111122223333:role/a'}}\n"
                    ))
                    .collect::<String>()
            ),
            "101 pattern entries; at most 100 are allowed",
        ),
    ] {
        let e = WebhookBuilder::new()
            .associations(file)
            .try_start()
            .await
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains(why), "{e}");
    }
}

/// docs/associations.md#session-policy: the six session tags of a pod with long names would not
/// fit STS's packed size by the estimate; `check` warns with the numbers, and not for short
/// names or for a session without tags.
#[tokio::test]
async fn check_warns_with_the_numbers_when_session_tags_would_not_fit_sts_packed_size() {
    let namespace = format!("analytics-{}", "x".repeat(40));
    let service_account = "s".repeat(50);
    let dir = tempfile::tempdir().unwrap();
    let associations = dir.path().join("associations.yaml");
    std::fs::write(
        &associations,
        format!(
            "associations:
  - {{namespace: '{namespace}', serviceAccount: '{service_account}', roleArn: '{ROLE}reports'}}
  - {{namespace: '{namespace}', serviceAccount: short, roleArn: '{ROLE}reports'}}
  - {{namespace: 'untagged-*', serviceAccount: '{service_account}', roleArn: '{ROLE}reports',
     disableSessionTags: true, policy: '{{\"Version\":\"2012-10-17\",\"Statement\":[]}}'}}
"
        ),
    )
    .unwrap();
    let config = write_config(dir.path(), &associations);
    let deployment = |ns: &str, sa: &str| {
        serde_yaml_ng::to_string(&json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "reports", "namespace": ns},
            "spec": {"template": {"spec": {"serviceAccountName": sa, "containers": [{"name": "app", "image": "app"}]}}},
        }))
        .unwrap()
    };
    let manifest = dir.path().join("deployments.yaml");
    std::fs::write(
        &manifest,
        [
            deployment(&namespace, &service_account),
            deployment(&namespace, "short"),
            deployment(&format!("untagged-{}", "x".repeat(40)), &service_account),
        ]
        .join("---\n"),
    )
    .unwrap();
    let (code, stdout, stderr) = check(&config, &manifest, &["--output", "json"]).await;
    assert_eq!(code, 0, "warnings only: {stdout}{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let objects = report["objects"].as_array().unwrap();
    // 114 bytes of keys; the values: the ARN (47), `prod`, the namespace (50), the
    // ServiceAccount (50), the pod name `reports-` plus a 16-character suffix (24) and the uid (36):
    // 325 bytes of 320.
    assert_eq!(objects[0]["status"], "warned", "{}", objects[0]);
    assert_eq!(
        objects[0]["messages"],
        json!([
            "Deployment reports: STS packed size ~102% (tags 102%, policy 0%), over 100% STS refuses"
        ])
    );
    assert_eq!(objects[1]["status"], "allowed", "{}", objects[1]);
    assert_eq!(objects[1]["messages"], json!([]));
    assert_eq!(objects[2]["status"], "allowed", "{}", objects[2]);
    assert_eq!(
        objects[2]["identity"]["pattern"],
        format!("untagged-*/{service_account}")
    );
}

/// `check --config CONFIG -f MANIFEST EXTRA…` as the binary runs it: exit code, stdout, stderr.
async fn check(config: &Path, manifest: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut args = strings(&[
        "check",
        "--config",
        config.to_str().unwrap(),
        "-f",
        manifest.to_str().unwrap(),
    ]);
    args.extend(strings(extra));
    run_binary(args, None).await
}
