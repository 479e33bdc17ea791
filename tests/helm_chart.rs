//! The Helm chart (`charts/pod-identity-webhook/`, issue 32), with the helm `hack/helm.sh` builds
//! from the Go module proxy (pinned in `hack/helm/go.mod`):
//!
//! - `helm lint --strict` and `helm template` with the default values and every example values
//!   file; values a user can get wrong are refused with a message;
//! - one source of truth: the chart renders the same objects as `manifests/` for each matching
//!   configuration (see [`PAIRS`] and DEVELOPMENT.md), after normalising only what Helm adds
//!   (its labels), what the chart cannot know (the generated certificate, the caBundle) and the
//!   release namespace (Helm's, not the chart's);
//! - on the control plane of the cluster tier (`tests/support/control_plane.rs`): every rendering
//!   applied with a server-side dry run (its Namespaces and ServiceAccounts created for real, and
//!   a pod from every workload's template dry-run created under Pod Security admission); one real
//!   `helm install` whose webhook configurations point (`webhook.url`) at the webhook binary of
//!   this checkout running locally, after which a Deployment's pod comes out mutated; and
//!   `helm upgrade` twice keeping the Helm-generated certificate;
//! - the README's values table is what `hack/chart-readme.sh` generates.
//!
//! Its own harness (libtest-mimic), one control plane for every case. Without helm (or the
//! control plane's binaries) the cases that need them are skipped with a one-line reason, unless
//! `CI` is set or `POD_IDENTITY_CLUSTER_TESTS=require` (`.ci/run` sets both): then they fail.
//! One case alone: `cargo test --test helm_chart -- upgrade`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use libtest_mimic::{Arguments, Failed, Trial};
use serde_json::{Value, json};
use support::control_plane::{
    ControlPlane, WebhookProcess, binaries, relative, skip_without_control_plane,
};

/// The release every rendering compared with `manifests/` uses: its objects are then named as
/// the manifests name them.
const RELEASE: &str = "pod-identity-webhook";
const NAMESPACE: &str = "pod-identity-webhook";

/// The Helm labels: on every object the chart makes, on none of `manifests/`.
const HELM_LABELS: &[&str] = &[
    "app.kubernetes.io/instance",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/version",
    "helm.sh/chart",
];

/// Each configuration the chart and `manifests/` both ship: the chart's values file (`None`: the
/// defaults) and the kustomization it must match, with the component composed onto it.
const PAIRS: &[(Option<&str>, &[&str], Option<&str>)] = &[
    (None, &["base", "agent"], None),
    (
        Some("examples/audit.yaml"),
        &["base", "agent"],
        Some("components/controller"),
    ),
    (
        Some("examples/gitops-associations.yaml"),
        &["base", "agent"],
        Some("components/gitops-associations"),
    ),
    (Some("examples/kind.yaml"), &["overlays/kind"], None),
    (
        Some("examples/cert-manager.yaml"),
        &["overlays/cert-manager"],
        None,
    ),
    (
        Some("examples/self-managed.yaml"),
        &["overlays/self-managed"],
        None,
    ),
    (Some("examples/eks.yaml"), &["overlays/eks"], None),
    (
        Some("examples/network-policy.yaml"),
        &["base", "agent"],
        Some("components/network-policy"),
    ),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> PathBuf {
    root().join("charts/pod-identity-webhook")
}

/// Every values file a case renders: the defaults (`None`) and each example.
fn value_files() -> Vec<Option<String>> {
    let mut examples: Vec<String> = std::fs::read_dir(chart().join("examples"))
        .expect("charts/pod-identity-webhook/examples")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .map(|n| format!("examples/{n}"))
        .collect();
    examples.sort();
    std::iter::once(None)
        .chain(examples.into_iter().map(Some))
        .collect()
}

fn label(values: &Option<String>) -> String {
    values.clone().unwrap_or_else(|| "defaults".into())
}

// ---------------------------------------------------------------------------------------------
// helm

/// The helm binary (see `support::tools::helm`).
fn helm_binary() -> Result<PathBuf, String> {
    support::tools::helm()
}

/// Whether the cases that need helm must be skipped: `support::skip::tier` prints `helm chart
/// tests skipped: <reason>`, or fails the run under CI or `POD_IDENTITY_CLUSTER_TESTS=require`.
fn skip_without_helm() -> bool {
    support::skip::tier("helm chart tests", helm_binary())
}

/// Helm's own state (repositories, cache, plugins) in a directory of this run, not in `$HOME`.
fn helm_home() -> &'static Path {
    static HOME: OnceLock<tempfile::TempDir> = OnceLock::new();
    HOME.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("helm-home")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap()
    })
    .path()
}

fn helm(args: &[&str], kubeconfig: Option<&Path>) -> Result<Output, Failed> {
    let home = helm_home();
    let mut cmd = Command::new(helm_binary()?);
    cmd.args(args)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null());
    if let Some(k) = kubeconfig {
        cmd.arg("--kubeconfig").arg(k);
    }
    Ok(cmd.output()?)
}

fn helm_ok(args: &[&str], kubeconfig: Option<&Path>) -> Result<String, Failed> {
    let out = helm(args, kubeconfig)?;
    if !out.status.success() {
        return Err(format!(
            "helm {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8(out.stdout)?)
}

fn values_args(values: &Option<String>) -> Vec<String> {
    match values {
        Some(v) => vec!["-f".into(), chart().join(v).display().to_string()],
        None => vec![],
    }
}

fn documents(text: &str) -> Result<Vec<Value>, Failed> {
    let mut docs = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let v: Value = serde::Deserialize::deserialize(doc)?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

/// `helm template RELEASE chart -n NAMESPACE [-f values] [extra]`, as objects.
fn template(values: &Option<String>, extra: &[&str]) -> Result<Vec<Value>, Failed> {
    let chart = chart().display().to_string();
    let mut args: Vec<String> = vec![
        "template".into(),
        RELEASE.into(),
        chart,
        "--namespace".into(),
        NAMESPACE.into(),
    ];
    args.extend(values_args(values));
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    documents(&helm_ok(&args, None)?)
}

fn id(doc: &Value) -> String {
    format!(
        "{} {}/{}",
        doc["kind"].as_str().unwrap_or("?"),
        doc["metadata"]["namespace"].as_str().unwrap_or(""),
        doc["metadata"]["name"].as_str().unwrap_or("?")
    )
}

fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Result<(), Failed> {
    if cond { Ok(()) } else { Err(msg().into()) }
}

// ---------------------------------------------------------------------------------------------
// Cases without a cluster.

fn lint(values: &Option<String>) -> Result<(), Failed> {
    let chart = chart().display().to_string();
    let mut args: Vec<String> = vec!["lint".into(), "--strict".into(), chart];
    args.extend(values_args(values));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    helm_ok(&args, None).map(drop)
}

/// What every rendering must hold, whatever the values: the webhook pod restricted-compliant as
/// manifests/base ships it, both webhooks excluding the system namespaces, the release namespace
/// and the agent's, the agent (when there) alone in a namespace enforced at `privileged`.
fn template_holds(values: &Option<String>) -> Result<(), Failed> {
    let docs = template(values, &[])?;
    let find = |kind: &'static str| docs.iter().filter(move |d| d["kind"] == kind);
    let deployment = find("Deployment").next().ok_or("no Deployment")?;
    let pod = &deployment["spec"]["template"]["spec"];
    ensure(
        pod["securityContext"]
            == json!({"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
                      "seccompProfile": {"type": "RuntimeDefault"}}),
        || {
            format!(
                "the webhook pod's securityContext: {}",
                pod["securityContext"]
            )
        },
    )?;
    ensure(
        pod["containers"][0]["securityContext"]
            == json!({"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                      "capabilities": {"drop": ["ALL"]}}),
        || {
            format!(
                "the webhook container's securityContext: {}",
                pod["containers"][0]
            )
        },
    )?;
    // The monitors are off unless asked for.
    let monitors = find("PodMonitor").count() + find("ServiceMonitor").count();
    let wanted = if values.as_deref() == Some("examples/prometheus.yaml") {
        2
    } else {
        0
    };
    ensure(monitors == wanted, || {
        format!("{monitors} PodMonitor/ServiceMonitor, not {wanted}")
    })?;
    let agent_ns = find("DaemonSet").next().map(|d| {
        d["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    });
    let configurations: Vec<&Value> = docs
        .iter()
        .filter(|d| {
            d["kind"]
                .as_str()
                .is_some_and(|k| k.ends_with("WebhookConfiguration"))
        })
        .collect();
    ensure(configurations.len() == 2, || {
        "not two webhook configurations".into()
    })?;
    for c in &configurations {
        for hook in c["webhooks"].as_array().ok_or("no webhooks")? {
            let excluded = &hook["namespaceSelector"]["matchExpressions"][0];
            ensure(
                excluded["key"] == "kubernetes.io/metadata.name" && excluded["operator"] == "NotIn",
                || format!("{}: namespaceSelector {}", id(c), hook["namespaceSelector"]),
            )?;
            let mut must = vec!["kube-system", "kube-public", "kube-node-lease", NAMESPACE];
            must.extend(agent_ns.as_deref());
            for ns in must {
                ensure(
                    excluded["values"]
                        .as_array()
                        .is_some_and(|v| v.contains(&json!(ns))),
                    || format!("{}: {ns} is not excluded: {excluded}", id(c)),
                )?;
            }
        }
    }
    if let Some(ns) = agent_ns {
        ensure(ns != NAMESPACE, || {
            "the agent is in the webhook's namespace".into()
        })?;
        let namespace = find("Namespace")
            .find(|d| d["metadata"]["name"] == ns.as_str())
            .ok_or_else(|| format!("no Namespace {ns} for the agent"))?;
        let labels = &namespace["metadata"]["labels"];
        ensure(
            labels["pod-security.kubernetes.io/enforce"] == "privileged"
                && labels["pod-security.kubernetes.io/warn"] == "baseline"
                && labels["pod-security.kubernetes.io/audit"] == "baseline",
            || format!("the agent's namespace labels: {labels}"),
        )?;
    }
    Ok(())
}

/// Values a user gets wrong are refused with a message naming the value.
fn bad_values_are_refused() -> Result<(), Failed> {
    for (set, says) in [
        ("certificates.mode=letsencrypt", "certificates.mode"),
        ("webhook.failurePolicy=Sometimes", "webhook.failurePolicy"),
        ("webhook.url=http://10.0.0.1:8443", "webhook.url"),
        ("agent.namespace=pod-identity-webhook", "agent.namespace"),
        ("agent.namespace=Evil Namespace", "agent.namespace"),
        ("fullnameOverride=x}\ny: z", "fullnameOverride"),
        ("certificates.caBundle=not base64!", "certificates.caBundle"),
    ] {
        let chart = chart().display().to_string();
        let out = helm(
            &[
                "template",
                RELEASE,
                &chart,
                "--namespace",
                NAMESPACE,
                "--set",
                set,
            ],
            None,
        )?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure(!out.status.success() && stderr.contains(says), || {
            format!("--set {set}: not refused with a message naming {says}: {stderr}")
        })?;
    }
    // Values are data: a hostile string stays a string (quoted), it does not add objects.
    let plain = template(&None, &[])?;
    let docs = template(
        &None,
        &[
            "--set-string",
            "agent.clusterName=x\n---\nkind: Secret",
            "--set-string",
            "image.tag=1\"\nevil: 1",
        ],
    )?;
    ensure(docs.len() == plain.len(), || {
        "a value added an object".into()
    })?;
    let audited = template(
        &None,
        &[
            "--set",
            "audit.enabled=true",
            "--set-string",
            "audit.interval=1m\n            - --evil",
        ],
    )?;
    let deployment = audited
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .ok_or("no Deployment")?;
    let args = &deployment["spec"]["template"]["spec"]["containers"][0]["args"];
    ensure(args.as_array().is_some_and(|a| a.len() == 4), || {
        format!("audit.interval added arguments: {args}")
    })?;
    let ds = docs
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .ok_or("no DaemonSet")?;
    ensure(
        ds["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"]
            == "x\n---\nkind: Secret",
        || {
            format!(
                "agent.clusterName: {}",
                ds["spec"]["template"]["spec"]["containers"][0]["env"]
            )
        },
    )?;
    Ok(())
}

/// The chart's appVersion is the crate's version (the image tag by default).
fn app_version_is_the_crate_version() -> Result<(), Failed> {
    let text = std::fs::read_to_string(chart().join("Chart.yaml"))?;
    let chart: Value = serde_yaml_ng::from_str(&text)?;
    ensure(chart["appVersion"] == env!("CARGO_PKG_VERSION"), || {
        format!(
            "Chart.yaml appVersion {} is not the crate's version {}: set it",
            chart["appVersion"],
            env!("CARGO_PKG_VERSION")
        )
    })
}

/// README.md's values table is the one `hack/chart-readme.sh` generates from values.yaml.
fn readme_table_is_current() -> Result<(), Failed> {
    let out = Command::new(root().join("hack/chart-readme.sh"))
        .arg("--check")
        .output()?;
    ensure(out.status.success(), || {
        format!(
            "charts/pod-identity-webhook/README.md's values table is stale: run hack/chart-readme.sh\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

// ---------------------------------------------------------------------------------------------
// One source of truth: the chart and manifests/.

/// `kubectl kustomize` (the control plane's kubectl) of `resources` under manifests/, with
/// `component` composed onto them.
fn kustomize(resources: &[&str], component: Option<&str>) -> Result<Vec<Value>, Failed> {
    let kubectl = binaries()?.join("kubectl");
    let manifests = root().join("manifests");
    let scratch = tempfile::Builder::new()
        .prefix("helm-chart-kustomize")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    let rel = |d: &str| {
        relative(scratch.path(), &manifests.join(d))
            .display()
            .to_string()
    };
    let mut k = String::from(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n",
    );
    for r in resources {
        k += &format!("  - {}\n", rel(r));
    }
    if let Some(c) = component {
        k += &format!("components:\n  - {}\n", rel(c));
    }
    std::fs::write(scratch.path().join("kustomization.yaml"), k)?;
    let out = Command::new(kubectl)
        .arg("kustomize")
        .arg(scratch.path())
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "kubectl kustomize: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    documents(&String::from_utf8(out.stdout)?)
}

/// What legitimately differs, taken out: Helm's labels; the certificate Helm generates (the
/// Secret) and every caBundle (generated, or given in the values; manifests/ leave it to the
/// script or cert-manager); the release namespace, which Helm creates, not the chart; the text
/// of the ConfigMaps' files (compared as the YAML they hold, comments and key order aside).
fn normalise(docs: Vec<Value>, from_chart: bool) -> Result<Vec<Value>, Failed> {
    let mut out = Vec::new();
    for mut doc in docs {
        if from_chart && doc["kind"] == "Secret" && doc["type"] == "kubernetes.io/tls" {
            continue;
        }
        if !from_chart && doc["kind"] == "Namespace" && doc["metadata"]["name"] == NAMESPACE {
            continue;
        }
        if let Some(labels) = doc["metadata"]["labels"].as_object_mut() {
            for l in HELM_LABELS {
                labels.remove(*l);
            }
        }
        if let Some(hooks) = doc["webhooks"].as_array_mut() {
            for hook in hooks {
                if let Some(c) = hook["clientConfig"].as_object_mut() {
                    c.remove("caBundle");
                }
            }
        }
        if doc["kind"] == "ConfigMap"
            && let Some(data) = doc["data"].as_object_mut()
        {
            for (key, text) in data.iter_mut() {
                if key.ends_with(".yaml")
                    && let Some(s) = text.as_str()
                {
                    let parsed: Value = serde_yaml_ng::from_str(s)
                        .map_err(|e| format!("ConfigMap key {key}: {e}"))?;
                    *text = parsed;
                }
            }
        }
        out.push(doc);
    }
    Ok(out)
}

/// The paths (JSON pointers) where `a` and `b` differ, with both values.
fn differences(a: &Value, b: &Value, at: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                differences(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    &format!("{at}/{k}"),
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                differences(p, q, &format!("{at}/{i}"), out);
            }
        }
        _ if a == b => {}
        _ => out.push(format!("{at}: chart {a} / manifests {b}")),
    }
}

fn same_objects_as_manifests(
    values: Option<&str>,
    resources: &[&str],
    component: Option<&str>,
) -> Result<(), Failed> {
    let chart = normalise(template(&values.map(String::from), &[])?, true)?;
    let manifests = normalise(kustomize(resources, component)?, false)?;
    let mut problems = Vec::new();
    for m in &manifests {
        match chart.iter().find(|c| id(c) == id(m)) {
            None => problems.push(format!("{}: in manifests/, not in the chart", id(m))),
            Some(c) => {
                let mut diffs = Vec::new();
                differences(c, m, "", &mut diffs);
                if !diffs.is_empty() {
                    problems.push(format!("{}:\n    {}", id(m), diffs.join("\n    ")));
                }
            }
        }
    }
    for c in &chart {
        if !manifests.iter().any(|m| id(m) == id(c)) {
            problems.push(format!("{}: in the chart, not in manifests/", id(c)));
        }
    }
    ensure(problems.is_empty(), || {
        format!(
            "the chart ({}) and manifests/{}{} differ:\n  {}",
            values.unwrap_or("defaults"),
            resources.join(" + manifests/"),
            component.map(|c| format!(" + {c}")).unwrap_or_default(),
            problems.join("\n  ")
        )
    })
}

// ---------------------------------------------------------------------------------------------
// On the control plane.

/// The one control plane, started by the first case that needs it. Cases hold the lock for
/// their whole run: they share Namespaces and cluster-scoped names.
static PLANE: Mutex<Option<Arc<ControlPlane>>> = Mutex::new(None);

fn with_plane<T>(f: impl FnOnce(&ControlPlane) -> Result<T, Failed>) -> Result<T, Failed> {
    let bins = binaries()?;
    let mut guard = PLANE.lock().unwrap_or_else(|e| e.into_inner());
    let plane = guard
        .get_or_insert_with(|| {
            let plane = ControlPlane::start(&bins);
            // Stand-ins for the CRDs of cert-manager and the Prometheus Operator, so objects
            // of theirs can be dry-run applied: the kinds exist, their schema is not checked.
            plane.apply(&stand_in_crds());
            Arc::new(plane)
        })
        .clone();
    f(&plane)
}

fn stand_in_crds() -> String {
    let crd = |group: &str, kind: &str, plural: &str| {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("{plural}.{group}")},
            "spec": {
                "group": group,
                "scope": "Namespaced",
                "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase()},
                "versions": [{
                    "name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {
                        "type": "object", "x-kubernetes-preserve-unknown-fields": true}}
                }]
            }
        })
    };
    json!({"apiVersion": "v1", "kind": "List", "items": [
        crd("cert-manager.io", "Certificate", "certificates"),
        crd("cert-manager.io", "Issuer", "issuers"),
        crd("monitoring.coreos.com", "PodMonitor", "podmonitors"),
        crd("monitoring.coreos.com", "ServiceMonitor", "servicemonitors"),
    ]})
    .to_string()
}

fn kubectl_json(plane: &ControlPlane, args: &[&str], docs: &[&Value]) -> Result<String, Failed> {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": docs});
    let out = plane.kubectl_stdin(args, Some(list.to_string().as_bytes()));
    if out.status.success() {
        Ok(String::from_utf8(out.stdout)?)
    } else {
        Err(format!(
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )
        .into())
    }
}

/// The release namespace as the install docs make it: labelled `restricted`.
fn release_namespace(plane: &ControlPlane, name: &str) {
    plane.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels:\n    \
         pod-security.kubernetes.io/enforce: restricted\n"
    ));
}

/// The pod a workload's controller would make from its template (a Pod is its own).
fn pod_of(doc: &Value) -> Option<Value> {
    let spec = &doc["spec"];
    let template = match doc["kind"].as_str()? {
        "Deployment" | "DaemonSet" | "StatefulSet" | "ReplicaSet" | "Job" => {
            spec["template"].clone()
        }
        "CronJob" => spec["jobTemplate"]["spec"]["template"].clone(),
        _ => return None,
    };
    let name = doc["metadata"]["name"].as_str().unwrap_or("pod");
    let mut metadata = json!({"generateName": format!("{name}-"),
                              "namespace": doc["metadata"]["namespace"]});
    if template["metadata"]["labels"].is_object() {
        metadata["labels"] = template["metadata"]["labels"].clone();
    }
    Some(json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]}))
}

/// Every object of the rendering with a server-side dry run; its Namespaces and ServiceAccounts
/// created first (a dry run needs them), and a pod from every workload dry-run created.
fn dry_run(values: &Option<String>) -> Result<(), Failed> {
    let docs = template(values, &[])?;
    with_plane(|plane| {
        release_namespace(plane, NAMESPACE);
        let namespaces: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "Namespace").collect();
        let accounts: Vec<&Value> = docs
            .iter()
            .filter(|d| d["kind"] == "ServiceAccount")
            .collect();
        let apply = [
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=helm-chart-test",
            "-f",
            "-",
        ];
        if !namespaces.is_empty() {
            kubectl_json(plane, &apply, &namespaces)?;
        }
        kubectl_json(plane, &apply, &accounts)?;
        let all: Vec<&Value> = docs.iter().collect();
        kubectl_json(
            plane,
            &[
                "apply",
                "--server-side",
                "--dry-run=server",
                "--force-conflicts",
                "--field-manager=helm-chart-test",
                "-f",
                "-",
            ],
            &all,
        )
        .map_err(|e| format!("{}: {}", label(values), e.message().unwrap_or_default()))?;
        let mut workloads = 0;
        for doc in &docs {
            let Some(pod) = pod_of(doc) else { continue };
            workloads += 1;
            let out = plane.kubectl_stdin(
                &["create", "--dry-run=server", "-o", "name", "-f", "-"],
                Some(pod.to_string().as_bytes()),
            );
            ensure(out.status.success(), || {
                format!(
                    "{}: a pod from {} is refused: {}",
                    label(values),
                    id(doc),
                    String::from_utf8_lossy(&out.stderr).trim()
                )
            })?;
        }
        ensure(workloads > 0, || {
            format!("{}: no workload rendered", label(values))
        })
    })
}

fn kube(plane: &ControlPlane) -> &Path {
    &plane.kubeconfig
}

/// A real `helm install`: the webhook configurations point (`webhook.url`, `certificates.caBundle`)
/// at the webhook binary of this checkout running on this machine (the Deployment's pods stay
/// Pending: there is no kubelet), its serving certificate in the Secret the chart mounts
/// (`certificates.mode=secret`). Then a Deployment's pod comes out mutated, through the
/// configurations as the chart made them (rules, namespace selectors, failurePolicy).
fn install_mutates_a_deployments_pod() -> Result<(), Failed> {
    let ns = "piw-install";
    let agent_ns = "piw-install-agent";
    with_plane(|plane| {
        release_namespace(plane, ns);
        let webhook = WebhookProcess::start(
            plane,
            "policy:\n  defaultMode: warn\n  clusterName: test\n",
            "associations:\n  - {namespace: helm-team-a, serviceAccount: carts, roleArn: \"arn:aws:iam::111122223333:role/carts\"}\n",
        );
        let certs = webhook.dir.path().join("certs");
        let ca_bundle = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(std::fs::read(certs.join("ca.crt"))?)
        };
        plane.kubectl_ok(&[
            "-n",
            ns,
            "create",
            "secret",
            "tls",
            "pod-identity-webhook-tls",
            &format!("--cert={}", certs.join("tls.crt").display()),
            &format!("--key={}", certs.join("tls.key").display()),
        ]);
        let url = format!("webhook.url=https://127.0.0.1:{}", webhook.port);
        let bundle = format!("certificates.caBundle={ca_bundle}");
        let agent = format!("agent.namespace={agent_ns}");
        let chart = chart().display().to_string();
        helm_ok(
            &[
                "install",
                RELEASE,
                &chart,
                "--namespace",
                ns,
                "--set",
                &url,
                "--set",
                "certificates.mode=secret",
                "--set",
                &bundle,
                "--set",
                &agent,
            ],
            Some(kube(plane)),
        )?;
        let result = (|| -> Result<(), Failed> {
            // The installed objects.
            let deployment = plane.get_json("deployment", ns, "pod-identity-webhook");
            let image = &deployment["spec"]["template"]["spec"]["containers"][0]["image"];
            ensure(
                *image == format!("pod-identity-webhook:{}", env!("CARGO_PKG_VERSION")),
                || format!("the Deployment's image: {image}"),
            )?;
            plane.get_json("daemonset", agent_ns, "pod-identity-agent");
            let mwc: Value = serde_json::from_str(&plane.kubectl_ok(&[
                "get",
                "mutatingwebhookconfiguration",
                "pod-identity-webhook",
                "-o",
                "json",
            ]))?;
            let client = &mwc["webhooks"][0]["clientConfig"];
            ensure(
                client["url"] == format!("https://127.0.0.1:{}/mutate", webhook.port)
                    && client["caBundle"] == ca_bundle.as_str(),
                || format!("the installed clientConfig: {client}"),
            )?;
            // A Deployment in a normal namespace: its pod is mutated.
            plane.apply("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: helm-team-a\n");
            plane.apply(
                "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: carts\n  namespace: helm-team-a\n",
            );
            plane.apply(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: carts\n  namespace: helm-team-a\n\
                 spec:\n  replicas: 1\n  selector: {matchLabels: {app: carts}}\n  template:\n    \
                 metadata:\n      labels: {app: carts}\n    spec:\n      serviceAccountName: carts\n      \
                 containers:\n        - name: app\n          image: busybox:1.36\n",
            );
            let pod: Value =
                plane.eventually("the Deployment's pod", Duration::from_secs(60), || {
                    let out = plane.kubectl_ok(&[
                        "get",
                        "pods",
                        "-n",
                        "helm-team-a",
                        "-l",
                        "app=carts",
                        "-o",
                        "json",
                    ]);
                    let list: Value = serde_json::from_str(&out).ok()?;
                    list["items"]
                        .as_array()
                        .and_then(|items| items.first().cloned())
                });
            let env: Vec<&str> = pod["spec"]["containers"][0]["env"]
                .as_array()
                .map(|e| e.iter().filter_map(|v| v["name"].as_str()).collect())
                .unwrap_or_default();
            ensure(
                pod["metadata"]["labels"]["eks.amazonaws.com/pod-identity"] == "enabled"
                    && env.contains(&"AWS_CONTAINER_CREDENTIALS_FULL_URI"),
                || {
                    format!(
                        "the pod was not mutated: {pod}\nwebhook log:\n{}",
                        webhook.log()
                    )
                },
            )?;
            // The release's own namespace is excluded: a pod there is not sent to the webhook.
            plane.apply(&format!(
                "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: carts\n  namespace: {ns}\n"
            ));
            let out = plane.kubectl_stdin(
                &["create", "--dry-run=server", "-o", "json", "-f", "-"],
                Some(format!(
                    "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: {ns}\nspec:\n  \
                     serviceAccountName: carts\n  securityContext: {{runAsNonRoot: true, runAsUser: 1000, \
                     seccompProfile: {{type: RuntimeDefault}}}}\n  containers:\n    - name: app\n      \
                     image: busybox:1.36\n      securityContext: {{allowPrivilegeEscalation: false, \
                     capabilities: {{drop: [ALL]}}}}\n"
                ).as_bytes()),
            );
            ensure(out.status.success(), || {
                format!("a pod in {ns}: {}", String::from_utf8_lossy(&out.stderr))
            })?;
            let excluded: Value = serde_json::from_slice(&out.stdout)?;
            ensure(
                excluded["metadata"]["labels"]["eks.amazonaws.com/pod-identity"].is_null(),
                || format!("a pod in the release namespace was mutated: {excluded}"),
            )
        })();
        let uninstall = helm_ok(
            &["uninstall", RELEASE, "--namespace", ns],
            Some(kube(plane)),
        );
        plane.kubectl(&["delete", "namespace", "helm-team-a", "--wait=false"]);
        result.and(uninstall.map(drop))
    })
}

/// `helm install` with the Helm-generated certificate, then `helm upgrade` twice (values
/// changed): the Secret's data and both caBundles stay as the install made them.
fn upgrade_keeps_the_generated_certificate() -> Result<(), Failed> {
    let ns = "piw-upgrade";
    let release = "piw-upgrade";
    let fullname = "piw-upgrade-pod-identity-webhook";
    with_plane(|plane| {
        release_namespace(plane, ns);
        let chart = chart().display().to_string();
        // No agent; a namespace selector no namespace matches, so nothing here is sent to the
        // webhook this release registers (its pods never run).
        let base = [
            "--namespace",
            ns,
            "--set",
            "agent.enabled=false",
            "--set",
            "webhook.namespaceSelectorExpressions[0].key=helm-chart-test/none",
            "--set",
            "webhook.namespaceSelectorExpressions[0].operator=Exists",
        ];
        let state = || -> Result<(Value, Vec<Value>), Failed> {
            let secret = plane.get_json("secret", ns, &format!("{fullname}-tls"))["data"].clone();
            let mut bundles = Vec::new();
            for kind in [
                "mutatingwebhookconfiguration",
                "validatingwebhookconfiguration",
            ] {
                let c: Value = serde_json::from_str(
                    &plane.kubectl_ok(&["get", kind, fullname, "-o", "json"]),
                )?;
                bundles.push(c["webhooks"][0]["clientConfig"]["caBundle"].clone());
            }
            Ok((secret, bundles))
        };
        let mut install = vec!["install", release, chart.as_str()];
        install.extend(base);
        helm_ok(&install, Some(kube(plane)))?;
        let result = (|| -> Result<(), Failed> {
            let (secret, bundles) = state()?;
            for key in ["ca.crt", "tls.crt", "tls.key"] {
                ensure(secret[key].as_str().is_some_and(|s| s.len() > 100), || {
                    format!("the generated Secret has no {key}: {secret}")
                })?;
            }
            ensure(bundles.iter().all(|b| *b == secret["ca.crt"]), || {
                format!("the caBundles {bundles:?} are not the Secret's ca.crt")
            })?;
            for replicas in ["replicaCount=1", "replicaCount=3"] {
                let mut upgrade = vec!["upgrade", release, chart.as_str(), "--set", replicas];
                upgrade.extend(base);
                helm_ok(&upgrade, Some(kube(plane)))?;
                let after = state()?;
                ensure(after == (secret.clone(), bundles.clone()), || {
                    format!("helm upgrade --set {replicas} changed the certificate: {after:?}")
                })?;
            }
            let deployment = plane.get_json("deployment", ns, fullname);
            ensure(deployment["spec"]["replicas"] == 3, || {
                "the upgrade did not apply".into()
            })
        })();
        let uninstall = helm_ok(
            &["uninstall", release, "--namespace", ns],
            Some(kube(plane)),
        );
        result.and(uninstall.map(drop))
    })
}

// ---------------------------------------------------------------------------------------------

fn main() {
    let args = Arguments::from_args();
    // Listing needs neither helm nor a control plane.
    let listing = args.list;
    let no_helm = !listing && skip_without_helm();
    let no_plane = !listing && skip_without_control_plane("helm chart cluster cases");
    let mut trials = vec![
        Trial::test(
            "values table in README.md is current",
            readme_table_is_current,
        ),
        Trial::test(
            "appVersion is the crate version",
            app_version_is_the_crate_version,
        ),
        Trial::test("bad values are refused", bad_values_are_refused).with_ignored_flag(no_helm),
    ];
    for values in value_files() {
        let (v1, v2, v3) = (values.clone(), values.clone(), values.clone());
        trials.push(
            Trial::test(format!("lint --strict {}", label(&values)), move || {
                lint(&v1)
            })
            .with_ignored_flag(no_helm),
        );
        trials.push(
            Trial::test(format!("template {}", label(&values)), move || {
                template_holds(&v2)
            })
            .with_ignored_flag(no_helm),
        );
        trials.push(
            Trial::test(format!("dry-run {}", label(&values)), move || dry_run(&v3))
                .with_ignored_flag(no_helm || no_plane),
        );
    }
    for &(values, resources, component) in PAIRS {
        let name = format!(
            "same objects: {} = manifests/{}{}",
            values.unwrap_or("defaults"),
            resources.join(" + manifests/"),
            component
                .map(|c| format!(" + manifests/{c}"))
                .unwrap_or_default()
        );
        trials.push(
            Trial::test(name, move || {
                same_objects_as_manifests(values, resources, component)
            })
            .with_ignored_flag(no_helm || no_plane),
        );
    }
    trials.push(
        Trial::test(
            "install: a Deployment's pod is mutated",
            install_mutates_a_deployments_pod,
        )
        .with_ignored_flag(no_helm || no_plane),
    );
    trials.push(
        Trial::test(
            "upgrade keeps the generated certificate",
            upgrade_keeps_the_generated_certificate,
        )
        .with_ignored_flag(no_helm || no_plane),
    );
    let conclusion = libtest_mimic::run(&args, trials);
    drop(PLANE.lock().unwrap_or_else(|e| e.into_inner()).take());
    conclusion.exit();
}
