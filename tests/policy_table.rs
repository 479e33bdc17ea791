//! docs/contract.md §3 as a decision table: each row is one admission request and the answer the policy
//! must give. The Validator runs with in-memory identity sources and namespace labels; the
//! configuration goes through the real config parser.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use pod_identity_webhook::admission::review::AdmissionResponse;
use pod_identity_webhook::admission::review::Review;
use pod_identity_webhook::admission::validate::Validator;
use pod_identity_webhook::admission::{Decision, Mutator, Outcome};
use pod_identity_webhook::identity::file::FileSource;
use pod_identity_webhook::identity::{
    Association, AssociationSource, AssociationSummary, Freshness, Identities, IdentityError,
    ServiceAccountInfo, ServiceAccountStore,
};
use pod_identity_webhook::namespaces::StaticNamespaces;
use pod_identity_webhook::policy::Policy;
use pod_identity_webhook::policy::verdict::MAX_WARNING_CHARS;
use pod_identity_webhook::settings::{Flags, PolicyMode, Settings};
use serde_json::{Value, json};

const CONFIG: &str = r#"
tls: {selfSigned: true}
namespace: pod-identity-webhook
policy:
  defaultMode: warn
  failurePolicy: open
  clusterName: prod
  namespaces:
    - match: "team-a"
      mode: enforce
      allowedRoleArns: ["arn:aws:iam::111122223333:role/team-a-*"]
    - match: "team-*"
      mode: enforce
    - match: "sandbox-*"
      mode: "off"
    - match: "legacy"
      mode: warn
      allowedRoleArns: ["arn:aws:iam::111122223333:role/legacy-*"]
    # Rules that exemptions must win over.
    - match: "kube-*"
      mode: enforce
    - match: "monitoring"
      mode: enforce
    - match: "ci"
      mode: enforce
    - match: "pod-identity-webhook"
      mode: enforce
  exemptions: ["monitoring", "ci/deployer"]
  namespaceLabel: pod-identity-webhook/mode
"#;

const LABEL: &str = "pod-identity-webhook/mode";
const ROLE: &str = "arn:aws:iam::111122223333:role/team-a-carts";

fn settings(config: &str) -> Settings {
    Settings::parse(Some(Path::new("policy.yaml")), config, Flags::default())
        .expect("config resolves")
}

fn policy(config: &str) -> Policy {
    let s = settings(config);
    Policy::compile(&s.policy, s.namespace.as_deref()).expect("policy compiles")
}

fn association(ns: &str, sa: &str) -> Association {
    Association {
        namespace: ns.into(),
        service_account: sa.into(),
        role_arn: format!("arn:aws:iam::111122223333:role/{sa}"),
        target_role_arn: None,
        external_id: None,
        disable_session_tags: None,
        policy: None,
        association_id: None,
    }
}

/// ServiceAccounts with IRSA annotations.
struct Sas(HashMap<(String, String), Arc<ServiceAccountInfo>>);

impl Sas {
    fn new(entries: &[(&str, &str, &str)]) -> Self {
        Self(
            entries
                .iter()
                .map(|(ns, sa, role)| {
                    let info = ServiceAccountInfo::from_annotations(
                        [("eks.amazonaws.com/role-arn", *role)],
                        "eks.amazonaws.com",
                    );
                    ((ns.to_string(), sa.to_string()), Arc::new(info))
                })
                .collect(),
        )
    }
}

impl ServiceAccountStore for Sas {
    fn get<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<ServiceAccountInfo>>, IdentityError>> {
        let found = self
            .0
            .get(&(namespace.to_string(), name.to_string()))
            .cloned();
        Box::pin(std::future::ready(Ok(found)))
    }
    fn ready(&self) -> bool {
        true
    }
}

fn identities() -> Identities {
    let file = FileSource::from_list(vec![
        association("team-a", "carts"),
        association("team-a", "both"),
        association("team-c", "default"),
    ])
    .unwrap();
    Identities::new("eks.amazonaws.com")
        .with_associations(file)
        .with_service_accounts(Arc::new(Sas::new(&[
            (
                "team-a",
                "s3-reader",
                "arn:aws:iam::111122223333:role/team-a-s3",
            ),
            (
                "team-a",
                "both",
                "arn:aws:iam::111122223333:role/team-a-both",
            ),
            // Annotated before the allowlist existed, or while the namespace was in warn mode.
            (
                "team-a",
                "billing",
                "arn:aws:iam::111122223333:role/team-b-billing",
            ),
            (
                "legacy",
                "billing",
                "arn:aws:iam::111122223333:role/team-b-billing",
            ),
            ("team-a", "bogus", "not-an-arn"),
        ])))
}

fn namespaces() -> StaticNamespaces {
    StaticNamespaces::new()
        .with("labelled-strict", [(LABEL, "enforce")])
        .with("team-b", [(LABEL, "off")])
        .with("sandbox-tight", [(LABEL, "warn")])
        .with("legacy", [(LABEL, "strict")])
}

fn validator() -> Validator {
    Validator::new(policy(CONFIG), identities()).with_namespaces(Arc::new(namespaces()))
}

// --- requests ----------------------------------------------------------------------------------

fn gvk(kind: &str) -> (&'static str, &'static str) {
    match kind {
        "Pod" | "ServiceAccount" => ("", "v1"),
        "Job" | "CronJob" => ("batch", "v1"),
        _ => ("apps", "v1"),
    }
}

fn pod_spec(sa: Option<&str>, env: Value) -> Value {
    let mut spec = json!({"containers": [{"name": "app", "image": "busybox", "env": env}]});
    if let Some(sa) = sa {
        spec["serviceAccountName"] = json!(sa);
    }
    spec
}

fn object(kind: &str, ns: &str, name: &str, spec: Value) -> Value {
    let metadata = json!({"name": name, "namespace": ns});
    let template = json!({"metadata": {"labels": {"app": name}}, "spec": spec});
    match kind {
        "Pod" => json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}),
        "CronJob" => json!({"kind": kind, "metadata": metadata,
            "spec": {"schedule": "0 * * * *", "jobTemplate": {"spec": {"template": template}}}}),
        _ => json!({"kind": kind, "metadata": metadata, "spec": {"template": template}}),
    }
}

fn service_account(ns: &str, name: &str, role: Option<&str>) -> Value {
    let mut sa = json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": ns}});
    if let Some(role) = role {
        sa["metadata"]["annotations"] = json!({"eks.amazonaws.com/role-arn": role});
    }
    sa
}

fn review(kind: &str, op: &str, ns: &str, name: &str, obj: Value) -> String {
    let (group, version) = gvk(kind);
    let old = if op == "UPDATE" {
        obj.clone()
    } else {
        Value::Null
    };
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": format!("uid-{kind}-{ns}-{name}"),
            "kind": {"group": group, "version": version, "kind": kind},
            "name": name, "namespace": ns, "operation": op,
            "object": obj, "oldObject": old, "dryRun": false,
        }
    })
    .to_string()
}

/// A workload or pod with `sa` (None: unset) and no env.
fn workload(kind: &str, op: &str, ns: &str, sa: Option<&str>) -> String {
    let name = format!("{}-x", kind.to_ascii_lowercase());
    review(
        kind,
        op,
        ns,
        &name,
        object(kind, ns, &name, pod_spec(sa, json!([]))),
    )
}

fn pod(ns: &str, sa: Option<&str>) -> String {
    workload("Pod", "CREATE", ns, sa)
}

fn pod_with_env(ns: &str, sa: &str, env: Value) -> String {
    review(
        "Pod",
        "CREATE",
        ns,
        "p",
        object("Pod", ns, "p", pod_spec(Some(sa), env)),
    )
}

fn sa_review(op: &str, ns: &str, name: &str, role: Option<&str>) -> String {
    review(
        "ServiceAccount",
        op,
        ns,
        name,
        service_account(ns, name, role),
    )
}

async fn decide(v: &Validator, body: &str) -> Decision {
    decide_within(v, body, Duration::from_secs(2)).await
}

async fn decide_within(v: &Validator, body: &str, budget: Duration) -> Decision {
    let review = Review::read(body.as_bytes()).expect("test review parses");
    let d = v.review(&review.request, budget).await;
    assert_eq!(d.response.uid, review.request.uid.as_str());
    for w in &d.response.warnings {
        assert!(
            w.chars().count() <= MAX_WARNING_CHARS && w.chars().count() < 120,
            "warning over 120 characters: {w}"
        );
    }
    d
}

// --- expectations ------------------------------------------------------------------------------

#[derive(Debug)]
enum Expect {
    /// Allowed without warnings.
    Allow,
    /// Allowed with a warning containing each text.
    Warn(Vec<String>),
    /// Denied (403) with a message containing each text.
    Deny(Vec<String>),
}

fn warn(texts: &[&str]) -> Expect {
    Expect::Warn(texts.iter().map(|t| t.to_string()).collect())
}

fn deny(texts: &[&str]) -> Expect {
    Expect::Deny(texts.iter().map(|t| t.to_string()).collect())
}

fn check(row: &str, d: &Decision, expect: &Expect) {
    let r = &d.response;
    let message = r
        .status
        .as_ref()
        .map(|s| s.message.clone())
        .unwrap_or_default();
    match expect {
        Expect::Allow => assert!(
            r.allowed && r.warnings.is_empty(),
            "{row}: expected a plain allow, got allowed={} warnings={:?} message={message}",
            r.allowed,
            r.warnings
        ),
        Expect::Warn(texts) => {
            assert!(
                r.allowed,
                "{row}: expected allowed with warning, denied: {message}"
            );
            let all = r.warnings.join("\n");
            assert!(!r.warnings.is_empty(), "{row}: expected a warning");
            for t in texts {
                assert!(
                    all.contains(t.as_str()),
                    "{row}: warning lacks {t:?}: {all}"
                );
            }
        }
        Expect::Deny(texts) => {
            assert!(
                !r.allowed,
                "{row}: expected a denial, allowed ({:?})",
                r.warnings
            );
            assert_eq!(r.status.as_ref().unwrap().code, 403, "{row}");
            for t in texts {
                assert!(
                    message.contains(t.as_str()),
                    "{row}: denial lacks {t:?}: {message}"
                );
            }
        }
    }
}

const FIX_NOBODY: &str = "Fix: aws eks create-pod-identity-association --cluster-name prod --namespace team-a --service-account nobody --role-arn <role>";

/// Every row of docs/contract.md §3, each a named request and the answer it must get.
#[tokio::test]
async fn spec_section_3_decision_table() {
    let v = validator();
    let rows: Vec<(&str, String, Expect)> = vec![
        // Modes.
        (
            "enforce: no identity is denied with the fix",
            pod("team-a", Some("nobody")),
            deny(&[
                "Pod team-a/pod-x",
                "ServiceAccount \"nobody\"",
                "no EKS Pod Identity association",
                "no eks.amazonaws.com/role-arn annotation",
                FIX_NOBODY,
            ]),
        ),
        (
            "warn (default mode): no identity is a warning",
            pod("dev", Some("nobody")),
            warn(&[
                "Pod pod-x",
                "\"nobody\"",
                "no Pod Identity association or IRSA role",
            ]),
        ),
        (
            "off: nothing is checked",
            pod("sandbox-1", Some("nobody")),
            Expect::Allow,
        ),
        // Namespace label: tighten only.
        (
            "label tightens warn to enforce",
            pod("labelled-strict", Some("nobody")),
            deny(&["--namespace labelled-strict --service-account nobody"]),
        ),
        (
            "label cannot loosen enforce to off",
            pod("team-b", Some("nobody")),
            deny(&["ServiceAccount \"nobody\""]),
        ),
        (
            "label tightens off to warn",
            pod("sandbox-tight", Some("nobody")),
            warn(&["\"nobody\""]),
        ),
        (
            "invalid label value is ignored",
            pod("legacy", Some("nobody")),
            warn(&["\"nobody\""]),
        ),
        // Exemptions (each namespace below has an enforce rule the exemption must beat).
        (
            "kube-system is exempt",
            pod("kube-system", Some("nobody")),
            Expect::Allow,
        ),
        (
            "kube-public is exempt",
            pod("kube-public", Some("nobody")),
            Expect::Allow,
        ),
        (
            "kube-node-lease is exempt",
            pod("kube-node-lease", Some("nobody")),
            Expect::Allow,
        ),
        (
            "the webhook's own namespace is exempt",
            pod("pod-identity-webhook", Some("nobody")),
            Expect::Allow,
        ),
        (
            "configured namespace exemption",
            pod("monitoring", Some("nobody")),
            Expect::Allow,
        ),
        (
            "configured namespace/serviceAccount exemption",
            pod("ci", Some("deployer")),
            Expect::Allow,
        ),
        (
            "other ServiceAccounts of that namespace are checked",
            pod("ci", Some("builder")),
            deny(&["ServiceAccount \"builder\""]),
        ),
        // The default ServiceAccount.
        (
            "unset ServiceAccount means default",
            pod("team-a", None),
            deny(&["ServiceAccount \"default\"", "--service-account default"]),
        ),
        (
            "unset ServiceAccount in a template means default",
            workload("Deployment", "CREATE", "team-a", None),
            deny(&["--service-account default"]),
        ),
        (
            "default ServiceAccount with an association",
            pod("team-c", None),
            Expect::Allow,
        ),
        // Identity kinds.
        (
            "IRSA annotation only",
            pod("team-a", Some("s3-reader")),
            Expect::Allow,
        ),
        (
            "association only",
            pod("team-a", Some("carts")),
            Expect::Allow,
        ),
        (
            "association and IRSA",
            pod("team-a", Some("both")),
            Expect::Allow,
        ),
        // Role-ARN allowlist on ServiceAccounts.
        (
            "SA CREATE, role in allowlist",
            sa_review("CREATE", "team-a", "carts", Some(ROLE)),
            Expect::Allow,
        ),
        (
            "SA CREATE, role of another tenant",
            sa_review(
                "CREATE",
                "team-a",
                "carts",
                Some("arn:aws:iam::111122223333:role/team-b-billing"),
            ),
            deny(&[
                "ServiceAccount team-a/carts",
                "team-b-billing",
                "not an allowed role",
                "arn:aws:iam::111122223333:role/team-a-*",
                "kubectl annotate serviceaccount -n team-a carts",
            ]),
        ),
        (
            "SA UPDATE, role in allowlist",
            sa_review("UPDATE", "team-a", "carts", Some(ROLE)),
            Expect::Allow,
        ),
        (
            "SA UPDATE, role of another tenant",
            sa_review(
                "UPDATE",
                "team-a",
                "carts",
                Some("arn:aws:iam::444455556666:role/team-a-carts"),
            ),
            deny(&["ServiceAccount team-a/carts", "444455556666"]),
        ),
        (
            "SA `*` does not cross a role path",
            sa_review(
                "CREATE",
                "team-a",
                "carts",
                Some("arn:aws:iam::111122223333:role/team-a-x/../team-b"),
            ),
            deny(&["not an allowed role"]),
        ),
        (
            "SA without annotation",
            sa_review("CREATE", "team-a", "plain", None),
            Expect::Allow,
        ),
        (
            "SA in a namespace without allowlist",
            sa_review(
                "CREATE",
                "team-b",
                "x",
                Some("arn:aws:iam::111122223333:role/anything"),
            ),
            Expect::Allow,
        ),
        (
            "SA allowlist miss in warn mode",
            sa_review(
                "CREATE",
                "legacy",
                "x",
                Some("arn:aws:iam::111122223333:role/other"),
            ),
            warn(&["not an allowed role for namespace legacy"]),
        ),
        (
            "SA in an exempt namespace",
            sa_review(
                "CREATE",
                "monitoring",
                "x",
                Some("arn:aws:iam::111122223333:role/other"),
            ),
            Expect::Allow,
        ),
        // Static credentials.
        (
            "literal AWS_ACCESS_KEY_ID in enforce",
            pod_with_env(
                "team-a",
                "carts",
                json!([{"name": "AWS_ACCESS_KEY_ID", "value": "AKIAEXAMPLE"}]),
            ),
            deny(&[
                "Pod team-a/p",
                "container \"app\" sets AWS_ACCESS_KEY_ID to a literal value",
            ]),
        ),
        (
            "literal AWS_SECRET_ACCESS_KEY in enforce",
            pod_with_env(
                "team-a",
                "carts",
                json!([{"name": "AWS_SECRET_ACCESS_KEY", "value": "secret"}]),
            ),
            deny(&["AWS_SECRET_ACCESS_KEY"]),
        ),
        (
            "literal key in warn mode",
            pod_with_env(
                "dev",
                "nobody",
                json!([{"name": "AWS_SECRET_ACCESS_KEY", "value": "secret"}]),
            ),
            warn(&["AWS_SECRET_ACCESS_KEY", "no Pod Identity association"]),
        ),
        (
            "key from a Secret reference",
            pod_with_env(
                "team-a",
                "carts",
                json!([{"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]),
            ),
            Expect::Allow,
        ),
    ];
    let rows = rows
        .into_iter()
        .map(|(name, body, expect)| (name.to_string(), body, expect))
        .chain(workload_rows());
    let mut count = 0;
    for (name, body, expect) in rows {
        let d = decide(&v, &body).await;
        check(&name, &d, &expect);
        count += 1;
    }
    assert!(count >= 50, "the table lost rows: {count}");
}

/// The workload kinds whose pod template the policy checks, each CREATE and UPDATE.
const WORKLOADS: [&str; 6] = [
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
    "CronJob",
];

/// The rows that are the same for every workload kind: without identity each is denied naming
/// the object and the fix, with an association each is allowed, on CREATE and on UPDATE. A Pod
/// is checked on CREATE only (its ServiceAccount cannot change).
fn workload_rows() -> Vec<(String, String, Expect)> {
    let mut rows = Vec::new();
    for kind in WORKLOADS {
        let object = format!("{kind} team-a/{}-x", kind.to_ascii_lowercase());
        for op in ["CREATE", "UPDATE"] {
            rows.push((
                format!("{kind} {op} without identity"),
                workload(kind, op, "team-a", Some("nobody")),
                deny(&[&object, FIX_NOBODY]),
            ));
            rows.push((
                format!("{kind} {op} with identity"),
                workload(kind, op, "team-a", Some("carts")),
                Expect::Allow,
            ));
        }
    }
    rows.push((
        "Pod CREATE with identity".into(),
        pod("team-a", Some("carts")),
        Expect::Allow,
    ));
    rows.push((
        "Pod UPDATE is allowed".into(),
        workload("Pod", "UPDATE", "team-a", Some("nobody")),
        Expect::Allow,
    ));
    rows
}

#[tokio::test]
async fn dry_run_is_answered_like_a_real_request() {
    let v = validator();
    for body in [
        pod("team-a", Some("nobody")),
        pod("team-a", Some("carts")),
        pod("dev", None),
    ] {
        let real = decide(&v, &body).await;
        let dry = decide(&v, &body.replace("\"dryRun\":false", "\"dryRun\":true")).await;
        assert_eq!(
            serde_json::to_value(&real.response).unwrap(),
            serde_json::to_value(&dry.response).unwrap()
        );
    }
}

#[tokio::test]
async fn unreadable_object_is_a_400_naming_the_field() {
    let v = validator();
    let body = review(
        "Deployment",
        "CREATE",
        "team-a",
        "bad",
        json!({"metadata": {"name": "bad"}, "spec": {"template": {"spec": {"containers": 7}}}}),
    );
    let d = decide(&v, &body).await;
    let status = d.response.status.expect("denied");
    assert!(!d.response.allowed);
    assert_eq!(status.code, 400);
    assert!(
        status.message.contains("spec.template.spec.containers"),
        "{}",
        status.message
    );
}

#[tokio::test]
async fn denial_names_the_associations_file_without_eks() {
    let config = CONFIG.replace("  clusterName: prod\n", "");
    let p = policy(&config).with_associations_file(Some("/etc/webhook/associations.yaml".into()));
    let v = Validator::new(p, identities());
    let d = decide(&v, &pod("team-a", Some("nobody"))).await;
    let message = d.response.status.unwrap().message;
    assert!(message.contains("aws eks create-pod-identity-association --cluster-name <cluster> --namespace team-a --service-account nobody --role-arn <role>"), "{message}");
    assert!(message.contains("add {namespace: team-a, serviceAccount: nobody, roleArn: <role>} to the associations file /etc/webhook/associations.yaml"), "{message}");
}

#[test]
fn mode_choice_tightens_and_never_loosens() {
    let p = policy(CONFIG);
    let labels = |v: &str| [(LABEL.to_string(), v.to_string())].into_iter().collect();
    let m = p.mode_for("team-b", Some(&labels("off")));
    assert_eq!(
        (m.mode, m.configured, m.label),
        (
            PolicyMode::Enforce,
            PolicyMode::Enforce,
            Some(PolicyMode::Off)
        )
    );
    let m = p.mode_for("dev", Some(&labels("enforce")));
    assert_eq!(m.mode, PolicyMode::Enforce);
    let m = p.mode_for("sandbox-1", Some(&labels("Warn")));
    assert_eq!(m.mode, PolicyMode::Warn);
    let m = p.mode_for("dev", Some(&labels("strict")));
    assert_eq!(
        (m.mode, m.invalid_label.as_deref()),
        (PolicyMode::Warn, Some("strict"))
    );
    assert_eq!(
        p.mode_for("dev", None).mode,
        PolicyMode::Warn,
        "default mode"
    );
    assert_eq!(
        p.mode_for("team-zz", None).mode,
        PolicyMode::Enforce,
        "first matching rule"
    );
}

// --- identity sources: stale negative cache, outages -------------------------------------------

/// An association source whose cache says "not found" while the source of truth has it: the
/// association was created seconds ago.
#[derive(Default)]
struct JustCreated {
    cached: AtomicUsize,
    bypass: AtomicUsize,
}

impl AssociationSource for JustCreated {
    fn name(&self) -> &'static str {
        "just-created"
    }
    fn lookup<'a>(
        &'a self,
        ns: &'a str,
        sa: &'a str,
        freshness: Freshness,
    ) -> BoxFuture<'a, Result<Option<Arc<AssociationSummary>>, IdentityError>> {
        let found = match freshness {
            Freshness::Cached => {
                self.cached.fetch_add(1, Ordering::SeqCst);
                None
            }
            Freshness::BypassNegative => {
                self.bypass.fetch_add(1, Ordering::SeqCst);
                Some(Arc::new(AssociationSummary::from(&association(ns, sa))))
            }
        };
        Box::pin(std::future::ready(Ok(found)))
    }
    fn details<'a>(
        &'a self,
        ns: &'a str,
        sa: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<Association>>, IdentityError>> {
        Box::pin(std::future::ready(Ok(Some(Arc::new(association(ns, sa))))))
    }
    fn ready(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn stale_negative_cache_then_association_appears_is_allowed() {
    let source = Arc::new(JustCreated::default());
    let ids = Identities::new("eks.amazonaws.com").with_associations(source.clone());
    let v = Validator::new(policy(CONFIG), ids);

    let d = decide(
        &v,
        &workload("Deployment", "CREATE", "team-a", Some("fresh")),
    )
    .await;
    check(
        "enforce: re-check finds the new association",
        &d,
        &Expect::Allow,
    );
    assert_eq!(source.cached.load(Ordering::SeqCst), 1);
    assert_eq!(
        source.bypass.load(Ordering::SeqCst),
        1,
        "looked past the cached miss once"
    );

    // Warn mode never denies, so the cached answer is used and the source is spared.
    let d = decide(&v, &workload("Deployment", "CREATE", "dev", Some("fresh"))).await;
    check("warn: cached answer", &d, &warn(&["\"fresh\""]));
    assert_eq!(source.bypass.load(Ordering::SeqCst), 1);
}

/// A source that cannot answer: `Err`, or never (a hung API call).
struct Down {
    hang: bool,
}

impl Down {
    fn answer<'a, T: Send + 'a>(&self) -> BoxFuture<'a, Result<Option<T>, IdentityError>> {
        if self.hang {
            Box::pin(futures::future::pending())
        } else {
            Box::pin(std::future::ready(Err(IdentityError::Unavailable {
                source_name: "eks",
                message: "connection refused".into(),
            })))
        }
    }
}

impl AssociationSource for Down {
    fn name(&self) -> &'static str {
        "eks"
    }
    fn lookup<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: Freshness,
    ) -> BoxFuture<'a, Result<Option<Arc<AssociationSummary>>, IdentityError>> {
        self.answer()
    }
    fn details<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<Association>>, IdentityError>> {
        self.answer()
    }
    fn ready(&self) -> bool {
        true
    }
}

fn down_validator(failure_policy: &str, hang: bool) -> Validator {
    let config = CONFIG.replace(
        "failurePolicy: open",
        &format!("failurePolicy: {failure_policy}"),
    );
    let ids = Identities::new("eks.amazonaws.com").with_associations(Arc::new(Down { hang }));
    Validator::new(policy(&config), ids)
}

#[tokio::test]
async fn identity_source_down_fail_open_allows_and_says_so() {
    for hang in [false, true] {
        let v = down_validator("open", hang);
        let d = decide_within(
            &v,
            &pod("team-a", Some("carts")),
            Duration::from_millis(100),
        )
        .await;
        check(
            "fail-open",
            &d,
            &warn(&["not checked", "identity sources unavailable"]),
        );
    }
}

#[tokio::test]
async fn identity_source_down_fail_closed_denies_and_says_why() {
    for hang in [false, true] {
        let v = down_validator("closed", hang);
        let d = decide_within(
            &v,
            &pod("team-a", Some("carts")),
            Duration::from_millis(100),
        )
        .await;
        check(
            "fail-closed",
            &d,
            &deny(&[
                "Pod team-a/pod-x",
                "ServiceAccount \"carts\"",
                "unavailable",
                "failurePolicy: closed",
            ]),
        );
        // Only enforce denies: a warn namespace still gets a warning.
        let d = decide_within(&v, &pod("dev", Some("carts")), Duration::from_millis(100)).await;
        check("fail-closed, warn mode", &d, &warn(&["not checked"]));
    }
}

#[test]
fn multitenant_example_config_parses_and_compiles() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/config-multitenant.yaml");
    let text = std::fs::read_to_string(&path).expect("example exists");
    let s = Settings::parse(Some(&path), &text, Flags::default()).expect("example resolves");
    let p = Policy::compile(&s.policy, s.namespace.as_deref()).expect("example compiles");
    assert_eq!(p.mode_for("team-a", None).mode, PolicyMode::Enforce);
    let team_a = p
        .allowed_role_arns("team-a")
        .expect("team-a has a role allowlist");
    assert!(team_a.allows("arn:aws:iam::111122223333:role/team-a-carts"));
    assert!(!team_a.allows("arn:aws:iam::111122223333:role/team-b-billing"));
    assert!(p.is_exempt("monitoring", Some("prometheus")).is_some());
    assert!(p.is_exempt(s.namespace.as_deref().unwrap(), None).is_some());
}

/// `body` as a review of the `ephemeralcontainers` subresource (what `kubectl debug` sends).
fn ephemeral(body: &str) -> String {
    let mut v: Value = serde_json::from_str(body).unwrap();
    v["request"]["subResource"] = json!("ephemeralcontainers");
    v["request"]["operation"] = json!("UPDATE");
    v["request"]["resource"] = json!({"group": "", "version": "v1", "resource": "pods"});
    v.to_string()
}

/// A pod whose only literal keys are in an ephemeral container.
fn pod_with_ephemeral_env(ns: &str, sa: &str, env: Value) -> String {
    let mut spec = pod_spec(Some(sa), json!([]));
    spec["ephemeralContainers"] = json!([{"name": "debugger", "image": "busybox", "env": env}]);
    review("Pod", "CREATE", ns, "p", object("Pod", ns, "p", spec))
}

/// docs/contract.md §12: the role allowlist at pod admission, role annotations that are not role ARNs,
/// and static keys under every SDK's names, anywhere in the pod.
#[tokio::test]
async fn spec_section_12_identity_rows() {
    let v = validator();
    let keys = json!([
        {"name": "AWS_ACCESS_KEY", "value": "AKIAEXAMPLE"},
        {"name": "aws_secret_key", "value": "secret"},
        {"name": "AWS_SESSION_TOKEN", "value": "token"},
        {"name": "JAVA_TOOL_OPTIONS", "value": "-Xmx1g -Daws.accessKeyId=AKIA -Daws.secretKey=s"},
    ]);
    let rows: Vec<(&str, String, Expect)> = vec![
        (
            "pod in enforce, IRSA role outside the allowlist",
            pod("team-a", Some("billing")),
            deny(&[
                "Pod team-a/pod-x",
                "team-b-billing",
                "not an allowed role for namespace team-a",
                "arn:aws:iam::111122223333:role/team-a-*",
                "not injected",
                "Fix: kubectl annotate serviceaccount -n team-a billing --overwrite",
            ]),
        ),
        (
            "deployment template in enforce, IRSA role outside the allowlist",
            workload("Deployment", "CREATE", "team-a", Some("billing")),
            deny(&["Deployment team-a/deployment-x", "team-b-billing"]),
        ),
        (
            "cronjob template in enforce, IRSA role outside the allowlist",
            workload("CronJob", "CREATE", "team-a", Some("billing")),
            deny(&["CronJob team-a/cronjob-x", "not an allowed role"]),
        ),
        (
            "pod in warn, IRSA role outside the allowlist",
            pod("legacy", Some("billing")),
            warn(&["not allowed in namespace legacy", "not injected"]),
        ),
        (
            "pod in enforce, IRSA role inside the allowlist",
            pod("team-a", Some("s3-reader")),
            Expect::Allow,
        ),
        (
            "pod whose role annotation is not a role ARN",
            pod("team-a", Some("bogus")),
            deny(&[
                "ServiceAccount \"bogus\" has no EKS Pod Identity association",
                "does not start with `arn:`",
                "so it is no identity",
            ]),
        ),
        (
            "SA CREATE whose role annotation is not a role ARN",
            sa_review("CREATE", "team-c", "x", Some("not-an-arn")),
            deny(&["ServiceAccount team-c/x", "so it is no identity"]),
        ),
        (
            "SA CREATE with a wildcard role, warn mode",
            sa_review(
                "CREATE",
                "dev",
                "x",
                Some("arn:aws:iam::111122223333:role/*"),
            ),
            warn(&["not an IAM role ARN"]),
        ),
        (
            "every SDK's key names, with an identity",
            pod_with_env("team-a", "carts", keys.clone()),
            deny(&[
                "AWS_ACCESS_KEY to a literal value",
                "aws_secret_key to a literal value",
                "AWS_SESSION_TOKEN to a literal value",
                "JAVA_TOOL_OPTIONS (-Daws.accessKeyId) to a literal value",
                "JAVA_TOOL_OPTIONS (-Daws.secretKey) to a literal value",
                "already has an AWS identity (an EKS Pod Identity association)",
                "keys are gone. Fix: remove the keys",
            ]),
        ),
        (
            "keys and no identity: the fix once",
            pod_with_env(
                "team-a",
                "nobody",
                json!([{"name": "AWS_ACCESS_KEY_ID", "value": "A"}]),
            ),
            deny(&[
                "no EKS Pod Identity association",
                "Fix: remove the keys, then aws eks create-pod-identity-association",
            ]),
        ),
        (
            "keys in an ephemeral container at pod creation",
            pod_with_ephemeral_env("team-a", "carts", keys.clone()),
            deny(&["container \"debugger\" sets AWS_ACCESS_KEY to a literal value"]),
        ),
        (
            "keys in an ephemeral container added to a running pod",
            ephemeral(&pod_with_ephemeral_env("team-a", "carts", keys.clone())),
            deny(&["container \"debugger\" sets AWS_SESSION_TOKEN to a literal value"]),
        ),
        (
            "an ephemeral container without keys, ServiceAccount without identity",
            ephemeral(&pod_with_ephemeral_env("team-a", "nobody", json!([]))),
            Expect::Allow,
        ),
        (
            "keys in an ephemeral container, warn mode",
            ephemeral(&pod_with_ephemeral_env("dev", "nobody", keys.clone())),
            warn(&["container \"debugger\" sets AWS_ACCESS_KEY as a literal"]),
        ),
    ];
    for (name, body, expect) in rows {
        let d = decide(&v, &body).await;
        check(name, &d, &expect);
        if let Some(status) = &d.response.status {
            let m = &status.message;
            assert!(m.matches("Fix:").count() <= 1, "{name}: the fix once: {m}");
            assert!(
                !m.contains("not-an-arn"),
                "{name}: never quotes a bad ARN: {m}"
            );
            if m.contains("already has an AWS identity") {
                assert!(
                    !m.contains("create-pod-identity-association"),
                    "{name}: {m}"
                );
            }
        }
    }
}

/// The mutation sees the policy's answer: a role outside the namespace's allowlist is never
/// injected, in enforce or warn mode; an allowed one is.
#[tokio::test]
async fn a_role_outside_the_allowlist_is_never_injected() {
    let v = validator();
    let mutator = Mutator::new(Default::default(), identities()).with_policy(v.shared_policy());
    let budget = Duration::from_secs(2);
    for (ns, sa, injected) in [
        ("team-a", "billing", false),
        ("legacy", "billing", false),
        ("team-a", "s3-reader", true),
        ("team-a", "bogus", false),
    ] {
        let body = pod(ns, Some(sa));
        let review = Review::read(body.as_bytes()).unwrap();
        let d = mutator.review(&review.request, budget).await;
        let AdmissionResponse {
            allowed,
            patch,
            warnings,
            ..
        } = &d.response;
        assert!(allowed, "{ns}/{sa}");
        assert_eq!(patch.is_some(), injected, "{ns}/{sa}: {d:?}");
        if sa == "billing" {
            assert_eq!(d.outcome, Outcome::Unchanged);
            assert!(warnings[0].contains("not an allowed role"), "{warnings:?}");
        }
    }
}

/// docs/policy.md: in every pattern `*` stops at `/` and `**` crosses it, in role allowlists
/// and in `namespace/serviceAccount` exemptions alike.
#[tokio::test]
async fn a_double_star_crosses_slashes_where_a_single_star_stops() {
    let p = policy(
        r#"
tls: {selfSigned: true}
policy:
  defaultMode: enforce
  namespaces:
    - match: "paths"
      allowedRoleArns:
        - "arn:aws:iam::111122223333:role/teams/**"
        - "arn:aws:iam::111122223333:role/flat/*"
  exemptions: ["batch/**"]
"#,
    );
    let role = |path: &str| format!("arn:aws:iam::111122223333:role/{path}");
    for (path, allowed) in [
        ("teams/a/carts", true),
        ("teams/a/b/c/carts", true),
        ("flat/carts", true),
        ("flat/a/carts", false),
        ("other/teams/a", false),
    ] {
        assert_eq!(
            p.allows_association_role("paths", &role(path)),
            allowed,
            "role/{path}"
        );
    }
    // `batch/**` exempts every ServiceAccount of `batch`: a pod there is allowed without an
    // identity, as in an exempt namespace; one in `paths` is denied.
    let v = Validator::new(p, identities()).with_namespaces(Arc::new(namespaces()));
    check(
        "exempted by batch/**",
        &decide(&v, &pod("batch", Some("job-runner"))).await,
        &Expect::Allow,
    );
    check(
        "not exempted",
        &decide(&v, &pod("paths", Some("job-runner"))).await,
        &deny(&[
            "Pod paths/pod-x",
            "\"job-runner\" has no EKS Pod Identity association",
        ]),
    );
}

/// docs/policy.md: a mirror pod (the kubelet's copy of a static pod) is allowed by `/validate`
/// whatever the namespace's mode: the kubelet cannot change it and a denial only hides it.
#[tokio::test]
async fn mirror_pods_are_allowed_in_an_enforce_namespace() {
    let v = validator();
    let plain = pod("team-c", Some("no-identity"));
    check(
        "the same pod, not a mirror",
        &decide(&v, &plain).await,
        &deny(&[
            "Pod team-c/pod-x",
            "\"no-identity\" has no EKS Pod Identity association",
        ]),
    );
    let mut mirror: Value = serde_json::from_str(&plain).unwrap();
    mirror["request"]["object"]["metadata"]["annotations"] =
        json!({"kubernetes.io/config.mirror": "0123456789abcdef"});
    check(
        "mirror pod",
        &decide(&v, &mirror.to_string()).await,
        &Expect::Allow,
    );
}
