//! Issue 28, item 2: `/validate` runs the mutation's decision again on a created pod; a pod
//! that would still be given credentials was missed by `/mutate` (validating webhooks run
//! after every mutating one). Enforce denies it, warn warns, opted-out and mutated pods pass,
//! and `check`/`audit` (a validator without the check) keep their answers. The last test goes
//! over HTTPS and reads the counter on `/metrics`.

mod support;

use std::sync::Arc;
use std::time::Duration;

use pod_identity_webhook::admission::review::Review;
use pod_identity_webhook::admission::validate::Validator;
use pod_identity_webhook::admission::{Decision, Mutator, Outcome};
use pod_identity_webhook::audit::sources::ListedServiceAccounts;
use pod_identity_webhook::identity::Identities;
use pod_identity_webhook::identity::file::FileSource;
use pod_identity_webhook::policy::Policy;
use pod_identity_webhook::settings::{NamespaceRule, PolicyMode, PolicySettings};
use serde_json::{Value, json};
use support::{TlsClient, WebhookBuilder, admin_get, apply_answer, carts_association, sample};

const IRSA_ROLE: &str = "arn:aws:iam::111122223333:role/reader";

/// team-a (enforce) and team-w (warn): `carts` has an association (EKS id `a-123` in team-a),
/// `reader` an IRSA role, `nobody` neither.
fn identities() -> Identities {
    let mut carts = carts_association();
    carts.association_id = Some("a-123".into());
    let mut warn_carts = carts_association();
    warn_carts.namespace = "team-w".into();
    let mut sas = ListedServiceAccounts::new();
    for ns in ["team-a", "team-w"] {
        let sa = json!({"metadata": {"name": "reader",
            "annotations": {"eks.amazonaws.com/role-arn": IRSA_ROLE}}});
        sas.insert(ns, &sa, "eks.amazonaws.com");
    }
    Identities::new("eks.amazonaws.com")
        .with_associations(FileSource::from_list(vec![carts, warn_carts]).unwrap())
        .with_service_accounts(Arc::new(sas))
}

fn policy() -> Policy {
    let rule = |pattern: &str, mode| NamespaceRule {
        pattern: pattern.into(),
        mode: Some(mode),
        allowed_role_arns: None,
    };
    let settings = PolicySettings {
        default_mode: PolicyMode::Off,
        namespaces: vec![
            rule("team-a", PolicyMode::Enforce),
            rule("team-w", PolicyMode::Warn),
        ],
        cluster_name: Some("prod".into()),
        ..PolicySettings::default()
    };
    Policy::compile(&settings, None).unwrap()
}

/// The webhook's pair: the validator checks for missed injections, as `serve` wires it.
fn webhook() -> (Validator, Mutator) {
    let ids = identities();
    let validator = Validator::new(policy(), ids.clone());
    let mutator = Mutator::new(Default::default(), ids).with_policy(validator.shared_policy());
    (validator.with_missed_injection(&mutator), mutator)
}

fn pod(ns: &str, sa: &str, metadata: Value, containers: Value) -> Value {
    let mut metadata = metadata;
    metadata["name"] = json!("x");
    metadata["namespace"] = json!(ns);
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
        "spec": {"serviceAccountName": sa, "containers": containers}})
}

fn bare(ns: &str, sa: &str) -> Value {
    pod(
        ns,
        sa,
        json!({}),
        json!([{"name": "app", "image": "busybox"}]),
    )
}

fn review_of(kind: (&str, &str), op: &str, ns: &str, object: &Value) -> String {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u", "kind": {"group": kind.0, "version": "v1", "kind": kind.1},
            "name": "x", "namespace": ns, "operation": op, "object": object,
            "oldObject": if op == "UPDATE" { object.clone() } else { Value::Null }}})
    .to_string()
}

fn review(ns: &str, object: &Value) -> String {
    review_of(("", "Pod"), "CREATE", ns, object)
}

fn run<T>(f: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
        .block_on(f)
}

async fn validate(v: &Validator, body: &str) -> Decision {
    let review = Review::read(body.as_bytes()).unwrap();
    v.review(&review.request, Duration::from_secs(2)).await
}

/// The pod as the API server stores it after `/mutate` (the patch applied).
async fn mutated(m: &Mutator, ns: &str, object: &Value) -> Value {
    let body = review(ns, object);
    let review = Review::read(body.as_bytes()).unwrap();
    let d = m.review(&review.request, Duration::from_secs(2)).await;
    assert_eq!(d.outcome, Outcome::Mutated, "{:?}", d.reason);
    let answer = json!({"response": serde_json::to_value(&d.response).unwrap()});
    apply_answer(object, &answer)
}

#[derive(Debug)]
enum Want {
    Allowed,
    /// Denied as missed; the message holds each text.
    Missed(&'static [&'static str]),
    /// Warned as missed.
    WarnedMissed,
}

fn check(d: &Decision, want: &Want, row: &str) {
    let r = &d.response;
    match want {
        Want::Allowed => {
            assert!(r.allowed, "{row}: {r:?}");
            assert!(!d.missed_injection, "{row}");
            assert!(r.warnings.is_empty(), "{row}: {:?}", r.warnings);
        }
        Want::Missed(texts) => {
            assert!(!r.allowed, "{row}: {r:?}");
            assert!(d.missed_injection, "{row}");
            assert_eq!(d.outcome, Outcome::Denied, "{row}");
            let message = serde_json::to_string(r).unwrap();
            for t in *texts {
                assert!(message.contains(t), "{row}: lacks {t:?}: {message}");
            }
        }
        Want::WarnedMissed => {
            assert!(r.allowed, "{row}: {r:?}");
            assert!(d.missed_injection, "{row}");
            assert_eq!(d.outcome, Outcome::Warned, "{row}");
            assert!(
                r.warnings
                    .iter()
                    .any(|w| w.contains("mutating webhook missed")),
                "{row}: {:?}",
                r.warnings
            );
        }
    }
}

#[test]
fn a_created_pod_the_mutation_would_still_inject_is_denied_in_enforce_and_warned_in_warn() {
    let (v, _) = webhook();
    let own_pair = json!([{"name": "app", "image": "busybox", "env": [
        {"name": "AWS_CONTAINER_CREDENTIALS_FULL_URI", "value": "http://example/creds"},
        {"name": "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "value": "/t"}]}]);
    let two = json!([{"name": "app", "image": "a"}, {"name": "side", "image": "b"}]);
    let rows: Vec<(&str, String, Want)> = vec![
        (
            "enforce, association",
            review("team-a", &bare("team-a", "carts")),
            Want::Missed(&[
                "pod team-a/x was admitted without the credentials of its ServiceAccount \\\"carts\\\"'s Pod Identity association (a-123)",
                "the mutating webhook did not run or did not see it; its controller will retry",
            ]),
        ),
        (
            "enforce, IRSA",
            review("team-a", &bare("team-a", "reader")),
            Want::Missed(&["IRSA role (arn:aws:iam::111122223333:role/reader)"]),
        ),
        (
            "warn, association",
            review("team-w", &bare("team-w", "carts")),
            Want::WarnedMissed,
        ),
        (
            "skip label",
            review(
                "team-a",
                &pod(
                    "team-a",
                    "carts",
                    json!({"labels": {"eks.amazonaws.com/skip-pod-identity-webhook": "true"}}),
                    json!([{"name": "app", "image": "busybox"}]),
                ),
            ),
            Want::Allowed,
        ),
        (
            "skip-containers covers every container",
            review(
                "team-a",
                &pod(
                    "team-a",
                    "carts",
                    json!({"annotations": {"eks.amazonaws.com/skip-containers": "app, side"}}),
                    two.clone(),
                ),
            ),
            Want::Allowed,
        ),
        (
            "skip-containers leaves one",
            review(
                "team-a",
                &pod(
                    "team-a",
                    "carts",
                    json!({"annotations": {"eks.amazonaws.com/skip-containers": "side"}}),
                    two,
                ),
            ),
            Want::Missed(&["was admitted without the credentials"]),
        ),
        (
            "containers set their own credential variables",
            review("team-a", &pod("team-a", "carts", json!({}), own_pair)),
            Want::Allowed,
        ),
        (
            "a Deployment's template is not a pod",
            review_of(
                ("apps", "Deployment"),
                "CREATE",
                "team-a",
                &json!({"kind": "Deployment", "metadata": {"name": "x", "namespace": "team-a"},
                    "spec": {"template": {"spec": {"serviceAccountName": "carts",
                        "containers": [{"name": "app", "image": "busybox"}]}}}}),
            ),
            Want::Allowed,
        ),
        (
            "a pod update",
            review_of(("", "Pod"), "UPDATE", "team-a", &bare("team-a", "carts")),
            Want::Allowed,
        ),
    ];
    run(async {
        for (row, body, want) in &rows {
            check(&validate(&v, body).await, want, row);
        }
    });
}

#[test]
fn a_pod_mutate_reached_passes_validate() {
    let (v, m) = webhook();
    run(async {
        for (ns, sa) in [
            ("team-a", "carts"),
            ("team-a", "reader"),
            ("team-w", "carts"),
        ] {
            let patched = mutated(&m, ns, &bare(ns, sa)).await;
            let d = validate(&v, &review(ns, &patched)).await;
            check(&d, &Want::Allowed, &format!("{ns}/{sa} after /mutate"));
        }
    });
}

/// `check` and `audit` run `/validate` on objects that have not been through `/mutate`, with a
/// validator without the check: a bare pod stays allowed (and `/mutate` reports it `mutated`).
#[test]
fn without_the_check_an_unmutated_pod_is_allowed_as_before() {
    let v = Validator::new(policy(), identities());
    run(async {
        let d = validate(&v, &review("team-a", &bare("team-a", "carts"))).await;
        check(&d, &Want::Allowed, "check/audit validator");
    });
}

/// The creation review of `object` in team-a, sent to `path` over TLS; the answer.
async fn send(client: &mut TlsClient, path: &str, object: &Value) -> Value {
    let body = review("team-a", object).into_bytes();
    let path = format!("{path}?timeout=10s");
    client.review(&path, body).await.unwrap().json()
}

#[tokio::test]
async fn the_webhook_denies_a_missed_pod_over_https_and_counts_it() {
    let running = WebhookBuilder::new()
        .associations(
            "associations:\n  - {namespace: team-a, serviceAccount: carts, roleArn: arn:aws:iam::111122223333:role/carts}\n",
        )
        .settings(|s| {
            s.policy.namespaces = vec![NamespaceRule {
                pattern: "team-a".into(),
                mode: Some(PolicyMode::Enforce),
                allowed_role_arns: None,
            }];
        })
        .start()
        .await;
    let mut client = TlsClient::to(&running, false).await;
    let object = bare("team-a", "carts");
    let answer = send(&mut client, "/validate", &object).await;
    assert_eq!(answer["response"]["allowed"], false, "{answer}");
    // Through /mutate first, as the API server does: allowed.
    let patched = apply_answer(&object, &send(&mut client, "/mutate", &object).await);
    let answer = send(&mut client, "/validate", &patched).await;
    assert_eq!(answer["response"]["allowed"], true, "{answer}");

    let (_, metrics) = admin_get(running.admin_addr, "/metrics").await;
    assert_eq!(
        sample(
            &metrics,
            "pod_identity_webhook_admission_missed_injection_total{outcome=\"denied\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    running.shutdown().await;
}
