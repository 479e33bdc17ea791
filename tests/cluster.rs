//! The cluster tier: the webhook built from this checkout, registered through the shipped webhook
//! configurations with a real kube-apiserver and kube-controller-manager (`hack/control-plane.sh`
//! builds them from the Go module proxy; `tests/support/control_plane.rs` starts them).
//!
//! Its own harness (libtest-mimic), so that one control plane serves every case and a skip is
//! printed where `cargo test` shows it. Without Go the tier is skipped with a one-line reason,
//! unless `POD_IDENTITY_CLUSTER_TESTS=require` (set by `.ci/run`), which makes it fail instead.
//! One case alone: `cargo test --test cluster -- NAME`.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use libtest_mimic::{Arguments, Failed, Trial};
use serde_json::Value;
use support::control_plane::{ControlPlane, WebhookProcess, binaries, webhook_binary};

const ROLE: &str = "arn:aws:iam::111122223333:role/carts";
const IRSA_ROLE: &str = "arn:aws:iam::111122223333:role/s3-reader";

/// What every webhook of this tier decides on: enforce in `strict-*`, warn elsewhere.
const POLICY: &str = "policy:\n  defaultMode: warn\n  clusterName: test\n  namespaces:\n    - match: \"strict-*\"\n      mode: enforce\n";

fn associations(pairs: &[(&str, &str)]) -> String {
    let mut out = String::from("associations:\n");
    for (ns, sa) in pairs {
        out += &format!("  - {{namespace: {ns}, serviceAccount: {sa}, roleArn: \"{ROLE}\"}}\n");
    }
    out
}

/// The shared control plane with one webhook registered.
struct Tier {
    plane: ControlPlane,
    _webhook: WebhookProcess,
}

/// Started by the first case that runs (listing, or filtering every case out, starts nothing);
/// dropped after the last.
static TIER: Mutex<Option<Arc<Tier>>> = Mutex::new(None);

fn tier() -> Result<Arc<Tier>, Failed> {
    let mut tier = TIER.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(t) = &*tier {
        return Ok(t.clone());
    }
    let plane = ControlPlane::start(&binaries()?);
    let webhook = WebhookProcess::start(
        &plane,
        POLICY,
        &associations(&[("team-a", "carts"), ("strict-a", "carts")]),
    );
    webhook.register(&plane);
    let started = Arc::new(Tier {
        plane,
        _webhook: webhook,
    });
    *tier = Some(started.clone());
    Ok(started)
}

/// Each case, by name.
type Case = fn(&Tier) -> Result<(), Failed>;

const CASES: &[(&str, Case)] = &[
    (
        "deployment_pods_come_out_mutated_as_check_computes",
        deployment_pods_come_out_mutated_as_check_computes,
    ),
    (
        "enforce_namespace_refuses_a_pod_without_identity_naming_the_fix",
        enforce_namespace_refuses_a_pod_without_identity_naming_the_fix,
    ),
    (
        "service_account_created_a_moment_before_its_pod_is_used",
        service_account_created_a_moment_before_its_pod_is_used,
    ),
    (
        "webhook_down_pods_are_admitted_unmutated_and_audit_lists_them",
        webhook_down_pods_are_admitted_unmutated_and_audit_lists_them,
    ),
];

fn main() {
    let args = Arguments::from_args();
    let required = std::env::var("POD_IDENTITY_CLUSTER_TESTS").as_deref() == Ok("require");
    let skip = match binaries() {
        Ok(_) => false,
        Err(reason) if required => {
            eprintln!("cluster tier: cannot run: {reason}");
            std::process::exit(101);
        }
        Err(reason) => {
            println!("cluster tier skipped: {reason}");
            true
        }
    };
    let trials = CASES
        .iter()
        .map(|&(name, case)| Trial::test(name, move || case(&*tier()?)).with_ignored_flag(skip))
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    drop(TIER.lock().unwrap_or_else(|e| e.into_inner()).take());
    conclusion.exit();
}

// ---------------------------------------------------------------------------------------------
// Helpers of the cases.

fn namespace(plane: &ControlPlane, name: &str) {
    plane.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n"
    ));
}

fn service_account(plane: &ControlPlane, ns: &str, name: &str, annotations: &[(&str, &str)]) {
    let mut yaml = format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {name}\n  namespace: {ns}\n"
    );
    if !annotations.is_empty() {
        yaml += "  annotations:\n";
        for (k, v) in annotations {
            yaml += &format!("    {k}: \"{v}\"\n");
        }
    }
    plane.apply(&yaml);
}

fn pod_yaml(ns: &str, name: &str, sa: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  \
         serviceAccountName: {sa}\n  containers:\n    - name: app\n      image: busybox:1.36\n      \
         env: [{{name: APP_MODE, value: demo}}]\n"
    )
}

fn env_names(pod: &Value) -> Vec<String> {
    pod["spec"]["containers"][0]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect()
}

fn ensure(cond: bool, what: impl Into<String>) -> Result<(), Failed> {
    if cond {
        Ok(())
    } else {
        Err(what.into().into())
    }
}

/// Replaces the API server's generated names (the `kube-api-access-xxxxx` volume) so two pods
/// made from one template compare equal.
fn without_generated_names(spec: &Value) -> String {
    let text = spec.to_string();
    match text.split("kube-api-access-").nth(1) {
        Some(rest) => {
            let suffix: String = rest.chars().take(5).collect();
            text.replace(
                &format!("kube-api-access-{suffix}"),
                "kube-api-access-GENERATED",
            )
        }
        None => text,
    }
}

/// `pod` as the API server would store it (defaults, admission), in a namespace outside the
/// webhooks' selectors: a server-side dry run.
fn dry_run(plane: &ControlPlane, pod: &Value) -> Result<Value, Failed> {
    let out = plane.kubectl_stdin(
        &["create", "--dry-run=server", "-o", "json", "-f", "-"],
        Some(pod.to_string().as_bytes()),
    );
    ensure(out.status.success(), String::from_utf8_lossy(&out.stderr))?;
    Ok(serde_json::from_slice(&out.stdout)?)
}

// ---------------------------------------------------------------------------------------------
// The cases.

/// A Deployment applied with kubectl: the controller manager makes a ReplicaSet and it a pod,
/// which the API server sends through the webhook. The stored pod equals the same pod as the API
/// server would store it without the webhook (a server-side dry run in the webhook's own,
/// excluded namespace), with the patch `check --show-patch` computes applied: the unit-level
/// mutation, byte for byte.
fn deployment_pods_come_out_mutated_as_check_computes(tier: &Tier) -> Result<(), Failed> {
    let plane = &tier.plane;
    namespace(plane, "team-a");
    service_account(plane, "team-a", "carts", &[]);
    plane.apply(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: carts\n  namespace: team-a\nspec:\n  \
         replicas: 1\n  selector: {matchLabels: {app: carts}}\n  template:\n    metadata:\n      \
         labels: {app: carts}\n    spec:\n      serviceAccountName: carts\n      containers:\n        \
         - name: app\n          image: busybox:1.36\n          env: [{name: APP_MODE, value: demo}]\n",
    );
    let pod: Value = plane.eventually("the Deployment's pod", Duration::from_secs(60), || {
        let out = plane.kubectl_ok(&[
            "get",
            "pods",
            "-n",
            "team-a",
            "-l",
            "app=carts",
            "-o",
            "json",
        ]);
        let list: Value = serde_json::from_str(&out).unwrap();
        list["items"]
            .as_array()
            .and_then(|items| items.first().cloned())
    });
    ensure(
        pod["metadata"]["labels"]["eks.amazonaws.com/pod-identity"] == "enabled",
        format!("the pod was not mutated: {pod}"),
    )?;

    // The same pod, unmutated: the API server's defaulting and admission without our webhook.
    namespace(plane, "pod-identity-webhook");
    service_account(plane, "pod-identity-webhook", "carts", &[]);
    let template: Value = {
        let rs_name = pod["metadata"]["ownerReferences"][0]["name"]
            .as_str()
            .unwrap();
        plane.get_json("replicaset", "team-a", rs_name)
    };
    let dry_run_input = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "carts-dry-run",
            "namespace": "pod-identity-webhook",
            "labels": template["spec"]["template"]["metadata"]["labels"],
        },
        "spec": template["spec"]["template"]["spec"],
    });
    let mut as_sent = dry_run(plane, &dry_run_input)?;
    as_sent["metadata"]["namespace"] = "team-a".into();

    // The unit-level mutation of that pod, as `check` computes it.
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("pod.json"), as_sent.to_string())?;
    std::fs::write(
        dir.path().join("associations.yaml"),
        associations(&[("team-a", "carts")]),
    )?;
    let check = std::process::Command::new(webhook_binary())
        .args(["check", "--show-patch", "-o", "json", "--associations"])
        .arg(dir.path().join("associations.yaml"))
        .arg(dir.path().join("pod.json"))
        .output()?;
    let report: Value = serde_json::from_slice(&check.stdout)?;
    let object = &report["objects"][0];
    ensure(object["status"] == "mutated", format!("check: {report}"))?;
    let patch: json_patch::Patch = serde_json::from_value(object["patch"].clone())?;
    let mut expected = as_sent.clone();
    json_patch::patch(&mut expected, &patch)?;
    // The API server defaults what a webhook adds (a projected volume's `defaultMode`) after the
    // mutation: so does the expected pod.
    expected["metadata"]["namespace"] = "pod-identity-webhook".into();
    let expected = dry_run(plane, &expected)?;

    ensure(
        without_generated_names(&expected["spec"]) == without_generated_names(&pod["spec"]),
        format!(
            "stored spec differs from the unit-level mutation\nstored:   {}\nexpected: {}",
            pod["spec"], expected["spec"]
        ),
    )?;
    ensure(
        expected["metadata"]["labels"] == pod["metadata"]["labels"],
        format!(
            "labels: stored {} expected {}",
            pod["metadata"]["labels"], expected["metadata"]["labels"]
        ),
    )?;
    ensure(
        env_names(&pod)
            == [
                "APP_MODE",
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            ],
        format!("env: {:?}", env_names(&pod)),
    )
}

/// In an enforce namespace, a pod whose ServiceAccount has no identity is refused; what kubectl
/// prints names the namespace, the ServiceAccount and the command that fixes it.
fn enforce_namespace_refuses_a_pod_without_identity_naming_the_fix(
    tier: &Tier,
) -> Result<(), Failed> {
    let plane = &tier.plane;
    namespace(plane, "strict-a");
    service_account(plane, "strict-a", "orders", &[]);
    let out = plane.kubectl_stdin(
        &["apply", "-f", "-"],
        Some(pod_yaml("strict-a", "orders-0", "orders").as_bytes()),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure(!out.status.success(), "the pod was admitted")?;
    for part in [
        "admission webhook \"validate.pod-identity-webhook.io\" denied the request",
        "strict-a",
        "\"orders\"",
        "aws eks create-pod-identity-association --cluster-name test --namespace strict-a \
         --service-account orders --role-arn <role>",
    ] {
        ensure(
            stderr.contains(part),
            format!("kubectl's message lacks {part:?}: {stderr}"),
        )?;
    }
    // The same namespace, a ServiceAccount with an association: admitted and mutated.
    service_account(plane, "strict-a", "carts", &[]);
    plane.apply(&pod_yaml("strict-a", "carts-0", "carts"));
    let pod = plane.get_json("pod", "strict-a", "carts-0");
    ensure(
        env_names(&pod).contains(&"AWS_CONTAINER_CREDENTIALS_FULL_URI".to_string()),
        format!("not mutated: {pod}"),
    )
}

/// The ServiceAccount and its pod applied back to back (one `kubectl apply` of both): the
/// webhook's ServiceAccount view may not have seen it yet, and the pod still gets its IRSA role.
fn service_account_created_a_moment_before_its_pod_is_used(tier: &Tier) -> Result<(), Failed> {
    let plane = &tier.plane;
    namespace(plane, "race-a");
    for i in 0..5 {
        let sa = format!("reader-{i}");
        let yaml = format!(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {sa}\n  namespace: race-a\n  \
             annotations:\n    eks.amazonaws.com/role-arn: \"{IRSA_ROLE}\"\n---\n{}",
            pod_yaml("race-a", &format!("{sa}-pod"), &sa)
        );
        plane.apply(&yaml);
        let pod = plane.get_json("pod", "race-a", &format!("{sa}-pod"));
        let env = &pod["spec"]["containers"][0]["env"];
        ensure(
            env.as_array()
                .into_iter()
                .flatten()
                .any(|e| e["name"] == "AWS_ROLE_ARN" && e["value"] == IRSA_ROLE),
            format!("pod {i} has no AWS_ROLE_ARN: {env}"),
        )?;
    }
    Ok(())
}

/// The webhook stopped (its configurations stay, `failurePolicy: Ignore` as shipped): pods are
/// admitted unmutated, even in an enforce namespace; once it is back, `audit` lists them as
/// needing a restart. Its own control plane: the outage must not touch the other cases.
fn webhook_down_pods_are_admitted_unmutated_and_audit_lists_them(
    _tier: &Tier,
) -> Result<(), Failed> {
    let plane = ControlPlane::start(&binaries()?);
    let mut webhook = WebhookProcess::start(
        &plane,
        POLICY,
        &associations(&[("team-b", "carts"), ("strict-b", "carts")]),
    );
    webhook.register(&plane);
    namespace(&plane, "team-b");
    namespace(&plane, "strict-b");
    service_account(&plane, "team-b", "carts", &[]);
    service_account(&plane, "strict-b", "orders", &[]);
    webhook.stop();

    plane.apply(&pod_yaml("team-b", "carts-0", "carts"));
    plane.apply(&pod_yaml("strict-b", "orders-0", "orders"));
    let pod = plane.get_json("pod", "team-b", "carts-0");
    ensure(
        env_names(&pod) == ["APP_MODE"] && pod["metadata"]["labels"].is_null(),
        format!("admitted, but changed: {pod}"),
    )?;

    let config = webhook.dir.path().join("config.yaml");
    let audit = std::process::Command::new(webhook_binary())
        .args(["audit", "-o", "json", "--config"])
        .arg(&config)
        .arg("--kubeconfig")
        .arg(&plane.kubeconfig)
        .output()?;
    ensure(
        audit.status.code() == Some(1),
        format!(
            "audit exit {:?}: {}",
            audit.status.code(),
            String::from_utf8_lossy(&audit.stderr)
        ),
    )?;
    let report: Value = serde_json::from_slice(&audit.stdout)?;
    let findings: Vec<(String, String, String)> = report["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            (
                f["namespace"].as_str().unwrap_or_default().to_string(),
                f["name"].as_str().unwrap_or_default().to_string(),
                f["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    for want in [
        ("team-b", "carts-0", "needs-restart"),
        ("strict-b", "orders-0", "no-identity"),
    ] {
        ensure(
            findings
                .iter()
                .any(|(n, p, r)| (n.as_str(), p.as_str(), r.as_str()) == want),
            format!("audit does not list {want:?}: {findings:?}"),
        )?;
    }
    Ok(())
}
