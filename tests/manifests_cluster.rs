//! The shipped manifests on a real API server (issue 34): every overlay, and every component on
//! the base and on every overlay, rendered with `kubectl kustomize`; its Namespaces (with their
//! labels) and ServiceAccounts created on the control plane of the cluster tier
//! (`tests/support/control_plane.rs`); then a pod made from every workload's pod template
//! (Deployment, DaemonSet, StatefulSet, ReplicaSet, Job, CronJob, ...) created with a
//! server-side dry run in its namespace. Every one must be accepted: the API server's default
//! admission plugins include Pod Security, so a DaemonSet in a namespace whose level its pods
//! break is caught here instead of by a rollout that never ends.
//!
//! Its own harness (libtest-mimic), one control plane for every case; skipped with a one-line
//! reason without the control plane's binaries, unless `CI` or `POD_IDENTITY_CLUSTER_TESTS=require`.
//! One case alone: `cargo test --test manifests_cluster -- overlays/kind`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use libtest_mimic::{Arguments, Failed, Trial};
use serde_json::{Value, json};
use support::control_plane::{ControlPlane, binaries, relative, skip_without_control_plane};

/// The one control plane, started by the first case that runs. Cases hold the lock for their
/// whole run: they share Namespaces, and each sets the labels of its own rendering.
static PLANE: Mutex<Option<Arc<ControlPlane>>> = Mutex::new(None);

/// The field manager of every server-side apply here: each case's apply owns exactly the labels
/// of its rendering (a label another rendering set is removed).
const MANAGER: &str = "manifests-cluster-test";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What one case renders: a kustomization directory of the repository, or a component composed
/// onto one (through a kustomization written for the case).
#[derive(Clone)]
struct Rendering {
    /// Under `manifests/`: `overlays/kind`, `components/controller`.
    dir: String,
    /// For a component: the kustomization (under `manifests/`) it is composed onto.
    onto: Option<String>,
}

impl Rendering {
    fn name(&self) -> String {
        match &self.onto {
            None => self.dir.clone(),
            Some(onto) => format!("{} on {onto}", self.dir),
        }
    }
}

fn subdirs(under: &str) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(root().join("manifests").join(under))
        .unwrap_or_else(|e| panic!("manifests/{under}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("kustomization.yaml").is_file())
        .map(|p| format!("{under}/{}", p.file_name().unwrap().to_string_lossy()))
        .collect();
    out.sort();
    out
}

/// Every kustomization that can be applied: the base, the agent, every overlay, and every
/// component on the base and on every overlay.
fn renderings() -> Vec<Rendering> {
    let overlays = subdirs("overlays");
    let mut out: Vec<Rendering> = ["base".to_string(), "agent".to_string()]
        .into_iter()
        .chain(overlays.iter().cloned())
        .map(|dir| Rendering { dir, onto: None })
        .collect();
    for component in subdirs("components") {
        for onto in std::iter::once("base".to_string()).chain(overlays.iter().cloned()) {
            out.push(Rendering {
                dir: component.clone(),
                onto: Some(onto),
            });
        }
    }
    out
}

/// The rendering's objects, as `kubectl kustomize` (the control plane's kubectl, kustomize
/// v5 built in) prints them.
fn render(kubectl: &Path, r: &Rendering) -> Result<Vec<Value>, Failed> {
    let manifests = root().join("manifests");
    // For a component: a kustomization of the base it goes onto plus the component, in a
    // directory under the target dir (kustomize needs relative paths).
    let scratch = tempfile::Builder::new()
        .prefix("manifests-cluster")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    let dir = match &r.onto {
        None => manifests.join(&r.dir),
        Some(onto) => {
            let rel = |d: &str| relative(scratch.path(), &manifests.join(d));
            std::fs::write(
                scratch.path().join("kustomization.yaml"),
                format!(
                    "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
                     resources:\n  - {}\ncomponents:\n  - {}\n",
                    rel(onto).display(),
                    rel(&r.dir).display()
                ),
            )?;
            scratch.path().to_path_buf()
        }
    };
    let out = Command::new(kubectl).arg("kustomize").arg(&dir).output()?;
    if !out.status.success() {
        return Err(format!(
            "kubectl kustomize {}: {}",
            r.name(),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let text = String::from_utf8(out.stdout)?;
    let mut docs = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(doc)?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

/// The pod template of a workload, if `doc` is one (a Pod is its own template).
fn pod_template(doc: &Value) -> Option<Value> {
    let spec = &doc["spec"];
    let template = match doc["kind"].as_str()? {
        "Deployment"
        | "DaemonSet"
        | "StatefulSet"
        | "ReplicaSet"
        | "ReplicationController"
        | "Job" => spec["template"].clone(),
        "CronJob" => spec["jobTemplate"]["spec"]["template"].clone(),
        "Pod" => json!({"metadata": doc["metadata"], "spec": spec}),
        _ => return None,
    };
    Some(template)
}

/// The pod the workload's controller would create from its template.
fn pod_of(doc: &Value, template: &Value, namespace: &str) -> Value {
    let name = doc["metadata"]["name"].as_str().unwrap_or("pod");
    let mut metadata = json!({"generateName": format!("{name}-"), "namespace": namespace});
    for key in ["labels", "annotations"] {
        if template["metadata"][key].is_object() {
            metadata[key] = template["metadata"][key].clone();
        }
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]})
}

fn apply_server_side(plane: &ControlPlane, docs: &[&Value]) -> Result<(), Failed> {
    if docs.is_empty() {
        return Ok(());
    }
    let list = json!({"apiVersion": "v1", "kind": "List", "items": docs});
    let out = plane.kubectl_stdin(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            &format!("--field-manager={MANAGER}"),
            "-f",
            "-",
        ],
        Some(list.to_string().as_bytes()),
    );
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "kubectl apply --server-side: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into())
    }
}

/// One case: the rendering's Namespaces and ServiceAccounts created, and a pod from every
/// workload's template accepted by a server-side dry run in its namespace.
fn case(r: &Rendering) -> Result<(), Failed> {
    let bins = binaries()?;
    let docs = render(&bins.join("kubectl"), r)?;
    let mut guard = PLANE.lock().unwrap_or_else(|e| e.into_inner());
    let plane = guard
        .get_or_insert_with(|| Arc::new(ControlPlane::start(&bins)))
        .clone();

    let namespaces: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "Namespace").collect();
    let created: Vec<&str> = namespaces
        .iter()
        .filter_map(|d| d["metadata"]["name"].as_str())
        .collect();
    // A namespace an earlier case created exists on this control plane; applying this
    // rendering to a fresh cluster needs it to create its own.
    let mut refused = Vec::new();
    for doc in &docs {
        if let Some(namespace) = doc["metadata"]["namespace"].as_str()
            && !created.contains(&namespace)
        {
            refused.push(format!(
                "{} {}: namespace {namespace} is not created by this rendering",
                doc["kind"].as_str().unwrap_or_default(),
                doc["metadata"]["name"].as_str().unwrap_or_default()
            ));
        }
    }
    if !refused.is_empty() {
        return Err(format!("{}:\n  {}", r.name(), refused.join("\n  ")).into());
    }
    apply_server_side(&plane, &namespaces)?;
    let accounts: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "ServiceAccount")
        .collect();
    apply_server_side(&plane, &accounts)?;

    let mut workloads = 0;
    for doc in &docs {
        let Some(template) = pod_template(doc) else {
            continue;
        };
        workloads += 1;
        let what = format!(
            "{} {}",
            doc["kind"].as_str().unwrap_or_default(),
            doc["metadata"]["name"].as_str().unwrap_or_default()
        );
        let Some(namespace) = doc["metadata"]["namespace"].as_str() else {
            refused.push(format!("{what}: no namespace"));
            continue;
        };
        let pod = pod_of(doc, &template, namespace);
        let out = plane.kubectl_stdin(
            &["create", "--dry-run=server", "-o", "name", "-f", "-"],
            Some(pod.to_string().as_bytes()),
        );
        if !out.status.success() {
            refused.push(format!(
                "{what}: a pod from its template in namespace {namespace} is refused: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    drop(guard);
    if workloads == 0 {
        return Err(format!("{}: no workload rendered", r.name()).into());
    }
    if refused.is_empty() {
        Ok(())
    } else {
        Err(format!("{}:\n  {}", r.name(), refused.join("\n  ")).into())
    }
}

fn main() {
    let args = Arguments::from_args();
    let skip = skip_without_control_plane("manifests cluster tier");
    let trials = renderings()
        .into_iter()
        .map(|r| Trial::test(r.name(), move || case(&r)).with_ignored_flag(skip))
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    drop(PLANE.lock().unwrap_or_else(|e| e.into_inner()).take());
    conclusion.exit();
}
