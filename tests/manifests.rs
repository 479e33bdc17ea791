//! The deployment files (issue 5), checked without a cluster:
//! - every YAML document in `manifests/` and `hack/demo/` parses into its k8s-openapi type, and
//!   serialises back to the same JSON (a misspelt field would be dropped and show here);
//! - each overlay is composed the way kustomize does for the features these files use
//!   (resources, namespace, labels, images, strategic-merge patches; any other kustomization key
//!   fails the test; components with their inline JSON 6902 patches too), and the result is
//!   checked for consistency with the binary itself: its CLI
//!   accepts the container arguments, its config parser and associations parser accept the
//!   ConfigMap, and ports, paths, Secret and Service names line up;
//! - every shell script in the repository passes `bash -n` and shellcheck (`.ci/run` installs it;
//!   elsewhere a missing shellcheck is a skip that says so, under CI a failure).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, RuleWithOperations, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Namespace, Pod, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;
use serde_json::Value;

use pod_identity_webhook::cli::{Cli, Command as CliCommand};
use pod_identity_webhook::identity::file::FileSource;
use pod_identity_webhook::object::Kind;
use pod_identity_webhook::settings::{Settings, TlsSource};

// Only the skip helper of tests/support: this file needs nothing else from it.
#[allow(dead_code)] // Not every file uses every part of it.
#[path = "support/skip.rs"]
mod skip;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The YAML documents of a file, as JSON values (empty documents skipped).
fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| {
            serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()))
        })
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// Drops nulls (k8s-openapi omits unset fields) so a round trip compares like with like.
fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

fn typed<T: DeserializeOwned + serde::Serialize>(doc: &Value, origin: &str) -> T {
    let value: T = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{origin}: not a valid {}: {e}", doc["kind"]));
    let back = without_nulls(&serde_json::to_value(&value).unwrap());
    assert_eq!(
        back,
        without_nulls(doc),
        "{origin}: {} {} has fields its type does not know (misspelt?)",
        doc["kind"],
        doc["metadata"]["name"]
    );
    value
}

/// Parses one document into its type; cert-manager kinds (no k8s-openapi type) get their
/// required fields checked by hand.
fn check_typed(doc: &Value, origin: &str) {
    let kind = doc["kind"]
        .as_str()
        .unwrap_or_else(|| panic!("{origin}: no kind"));
    let api = doc["apiVersion"].as_str().unwrap_or_default();
    assert!(
        doc["metadata"]["name"].is_string(),
        "{origin}: {kind} has no name"
    );
    match (api, kind) {
        ("v1", "Namespace") => drop(typed::<Namespace>(doc, origin)),
        ("v1", "ServiceAccount") => drop(typed::<ServiceAccount>(doc, origin)),
        ("v1", "ConfigMap") => drop(typed::<ConfigMap>(doc, origin)),
        ("v1", "Service") => drop(typed::<Service>(doc, origin)),
        ("v1", "Pod") => drop(typed::<Pod>(doc, origin)),
        ("apps/v1", "Deployment") => drop(typed::<Deployment>(doc, origin)),
        ("apps/v1", "DaemonSet") => drop(typed::<DaemonSet>(doc, origin)),
        ("policy/v1", "PodDisruptionBudget") => drop(typed::<PodDisruptionBudget>(doc, origin)),
        ("networking.k8s.io/v1", "NetworkPolicy") => drop(typed::<
            k8s_openapi::api::networking::v1::NetworkPolicy,
        >(doc, origin)),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => drop(typed::<ClusterRole>(doc, origin)),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            drop(typed::<ClusterRoleBinding>(doc, origin))
        }
        ("rbac.authorization.k8s.io/v1", "Role") => {
            drop(typed::<k8s_openapi::api::rbac::v1::Role>(doc, origin))
        }
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => drop(typed::<
            k8s_openapi::api::rbac::v1::RoleBinding,
        >(doc, origin)),
        ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration") => {
            drop(typed::<MutatingWebhookConfiguration>(doc, origin))
        }
        ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration") => {
            drop(typed::<ValidatingWebhookConfiguration>(doc, origin))
        }
        ("cert-manager.io/v1", "Issuer") => {
            let spec = doc["spec"].as_object().expect("Issuer spec");
            assert!(
                spec.contains_key("selfSigned") || spec["ca"]["secretName"].is_string(),
                "{origin}: Issuer needs selfSigned or ca.secretName"
            );
        }
        ("cert-manager.io/v1", "Certificate") => {
            assert!(doc["spec"]["secretName"].is_string(), "{origin}");
            assert!(doc["spec"]["issuerRef"]["name"].is_string(), "{origin}");
        }
        // Kustomize patches are partial objects: checked after composition instead.
        other => panic!("{origin}: unexpected {other:?}; add it to this test"),
    }
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    out.sort();
}

// --- a small kustomize -------------------------------------------------------------------

/// Kinds kustomize leaves without a namespace.
const CLUSTER_SCOPED: [&str; 5] = [
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
];

fn id(doc: &Value) -> (String, String) {
    (
        doc["kind"].as_str().unwrap().to_string(),
        doc["metadata"]["name"].as_str().unwrap().to_string(),
    )
}

/// Strategic merge for what these patches use: maps merge key by key, lists of objects with
/// a `name` merge item by item on it, anything else is replaced.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                match t.get_mut(k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(t), Value::Array(p))
            if p.iter().all(|i| i["name"].is_string())
                && t.iter().all(|i| i["name"].is_string()) =>
        {
            for item in p {
                match t.iter_mut().find(|x| x["name"] == item["name"]) {
                    Some(existing) => merge(existing, item),
                    None => t.push(item.clone()),
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn build(dir: &Path) -> Vec<Value> {
    build_onto(dir, Vec::new())
}

/// An inline JSON 6902 patch (a YAML list of operations) applied to the one object `target`
/// names by kind and name.
fn json6902(dir: &Path, docs: &mut [Value], target: &Value, inline: &str) {
    let ops: Value = serde_yaml_ng::from_str(inline)
        .unwrap_or_else(|e| panic!("{}: inline patch: {e}", dir.display()));
    let ops: json_patch::Patch = serde_json::from_value(ops)
        .unwrap_or_else(|e| panic!("{}: not a JSON patch: {e}", dir.display()));
    let kind = target["kind"].as_str().expect("target kind");
    let name = target["name"].as_str().expect("target name");
    let doc = docs
        .iter_mut()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| {
            panic!(
                "{}: patch target {kind}/{name} matches nothing",
                dir.display()
            )
        });
    json_patch::patch(doc, &ops)
        .unwrap_or_else(|e| panic!("{}: patch on {kind}/{name}: {e}", dir.display()));
}

/// `dir`'s kustomization (or component) composed onto `docs`.
fn build_onto(dir: &Path, mut docs: Vec<Value>) -> Vec<Value> {
    let kustomization = documents(&dir.join("kustomization.yaml")).remove(0);
    let k = kustomization.as_object().unwrap();
    for key in k.keys() {
        assert!(
            [
                "apiVersion",
                "kind",
                "resources",
                "namespace",
                "labels",
                "images",
                "patches",
                "components"
            ]
            .contains(&key.as_str()),
            "{}: kustomization key {key} is not composed by this test",
            dir.display()
        );
    }
    for r in k["resources"].as_array().unwrap() {
        let path = dir.join(r.as_str().unwrap());
        if path.is_dir() {
            docs.extend(build(&path));
        } else {
            let origin = path.display().to_string();
            for doc in documents(&path) {
                check_typed(&doc, &origin);
                docs.push(doc);
            }
        }
    }
    // Components: their resources join, then their patches apply to everything so far.
    for c in k
        .get("components")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let component = dir.join(c.as_str().unwrap());
        let kind = &documents(&component.join("kustomization.yaml"))[0]["kind"];
        assert_eq!(kind, "Component", "{}", component.display());
        docs = build_onto(&component, docs);
    }
    if let Some(ns) = k.get("namespace").and_then(Value::as_str) {
        for doc in &mut docs {
            if !CLUSTER_SCOPED.contains(&doc["kind"].as_str().unwrap()) {
                doc["metadata"]["namespace"] = Value::String(ns.into());
            }
        }
    }
    for label in k
        .get("labels")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        assert_eq!(label["includeSelectors"], false, "selectors are left alone");
        for doc in &mut docs {
            let labels = &mut doc["metadata"]["labels"];
            if labels.is_null() {
                *labels = Value::Object(Default::default());
            }
            for (key, value) in label["pairs"].as_object().unwrap() {
                labels[key] = value.clone();
            }
        }
    }
    for image in k
        .get("images")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = image["name"].as_str().unwrap();
        let new = format!(
            "{}:{}",
            image["newName"].as_str().unwrap_or(name),
            image["newTag"].as_str().unwrap()
        );
        let mut used = false;
        for doc in docs
            .iter_mut()
            .filter(|d| d["kind"] == "Deployment" || d["kind"] == "DaemonSet")
        {
            let pod = &mut doc["spec"]["template"]["spec"];
            let mut containers = pod["containers"].as_array().cloned().unwrap();
            let inits = pod["initContainers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let split = containers.len();
            containers.extend(inits);
            for c in containers.iter_mut() {
                let current = c["image"].as_str().unwrap();
                if current == name || current.starts_with(&format!("{name}:")) {
                    c["image"] = Value::String(new.clone());
                    used = true;
                }
            }
            let inits = containers.split_off(split);
            pod["containers"] = Value::Array(containers);
            if !inits.is_empty() {
                pod["initContainers"] = Value::Array(inits);
            }
        }
        assert!(used, "{}: image {name} matches no container", dir.display());
    }
    for patch in k
        .get("patches")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(inline) = patch["patch"].as_str() {
            json6902(dir, &mut docs, &patch["target"], inline);
            continue;
        }
        let path = dir.join(patch["path"].as_str().expect("patches by path or inline"));
        for p in documents(&path) {
            let target = docs
                .iter_mut()
                .find(|d| id(d) == id(&p))
                .unwrap_or_else(|| {
                    panic!("{}: patch {:?} matches nothing", path.display(), id(&p))
                });
            merge(target, &p);
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for doc in &docs {
        assert!(
            seen.insert(id(doc)),
            "{}: {:?} twice",
            dir.display(),
            id(doc)
        );
    }
    docs
}

// --- the composed objects ----------------------------------------------------------------

struct Built {
    name: &'static str,
    docs: Vec<Value>,
}

impl Built {
    fn new(name: &'static str) -> Self {
        let docs = build(&root().join("manifests").join(name));
        // The composed objects are still valid objects of their types.
        for doc in &docs {
            check_typed(doc, &format!("{name} (composed)"));
        }
        Self { name, docs }
    }

    fn one<T: DeserializeOwned>(&self, kind: &str) -> T {
        let found: Vec<&Value> = self.docs.iter().filter(|d| d["kind"] == kind).collect();
        assert_eq!(found.len(), 1, "{}: one {kind}", self.name);
        serde_json::from_value(found[0].clone()).unwrap()
    }

    fn named<T: DeserializeOwned>(&self, kind: &str, name: &str) -> T {
        let found = self
            .raw(kind, name)
            .unwrap_or_else(|| panic!("{}: no {kind} {name}", self.name));
        serde_json::from_value(found.clone()).unwrap()
    }

    fn raw(&self, kind: &str, name: &str) -> Option<&Value> {
        self.docs
            .iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
    }
}

/// The ConfigMap mounted where `c` reads `file`, and its mount path.
fn mounted_config_map(
    c: &Container,
    pod: &k8s_openapi::api::core::v1::PodSpec,
    file: &Path,
) -> (String, String) {
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| file.starts_with(&m.mount_path))
        .unwrap_or_else(|| panic!("{} is not mounted", file.display()));
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .unwrap();
    let name = volume.config_map.clone().expect("from a ConfigMap").name;
    (name, mount.mount_path.clone())
}

fn webhook_container(d: &Deployment) -> Container {
    let spec = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(spec.containers.len(), 1);
    spec.containers[0].clone()
}

fn port_named(c: &Container, name: &str) -> i32 {
    c.ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("container port {name}"))
        .container_port
}

/// The settings the binary would run with: its CLI parses the container's arguments and its
/// config parser reads the ConfigMap's `config.yaml` (written where the args point).
fn settings_of(b: &Built, dir: &Path) -> Settings {
    let deployment: Deployment = b.one("Deployment");
    let container = webhook_container(&deployment);
    let config_map: ConfigMap = b.named("ConfigMap", "pod-identity-webhook-config");
    let data = config_map.data.unwrap();
    let args = container.args.clone().unwrap();
    let cli = Cli::try_parse_from(
        std::iter::once("pod-identity-webhook".to_string()).chain(args.clone()),
    )
    .unwrap_or_else(|e| panic!("{}: the binary refuses {args:?}: {e}", b.name));
    let CliCommand::Serve(serve_args) = cli.command else {
        panic!("{}: the container must run `serve`", b.name)
    };
    // The --config path is the config volume's mount path + the ConfigMap key.
    let config_arg = args
        .iter()
        .skip_while(|a| *a != "--config")
        .nth(1)
        .expect("--config")
        .clone();
    let mounts = container.volume_mounts.clone().unwrap();
    let pod = deployment.spec.unwrap().template.spec.unwrap();
    let config_volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| {
            v.config_map
                .as_ref()
                .is_some_and(|c| c.name == config_map.metadata.name.clone().unwrap())
        })
        .expect("a volume of the ConfigMap");
    let mount = mounts
        .iter()
        .find(|m| m.name == config_volume.name)
        .expect("the ConfigMap is mounted");
    let key = config_arg
        .strip_prefix(&format!("{}/", mount.mount_path))
        .unwrap_or_else(|| panic!("{config_arg} is not under {}", mount.mount_path));
    let text = data
        .get(key)
        .unwrap_or_else(|| panic!("ConfigMap has no {key}"));
    // Files the config names are the mounted ones; check them, then read them from `dir`.
    let settings = Settings::parse(Some(Path::new(&config_arg)), text, serve_args.flags.clone())
        .unwrap_or_else(|e| panic!("{}: config.yaml: {e}", b.name));
    if let Some(path) = &settings.associations_file {
        let key = path.strip_prefix(&mount.mount_path).unwrap_or_else(|_| {
            panic!(
                "associations file {} is not in the ConfigMap mount",
                path.display()
            )
        });
        let text = data
            .get(key.to_str().unwrap())
            .unwrap_or_else(|| panic!("ConfigMap has no {}", key.display()));
        let local = dir.join("associations.yaml");
        std::fs::write(&local, text).unwrap();
        let (source, _) =
            FileSource::open(&local).unwrap_or_else(|e| panic!("{}: associations: {e}", b.name));
        assert!(!source.is_empty());
    }
    settings
}

/// Everything every overlay must get right.
fn check_consistency(b: &Built) {
    let dir = tempfile::tempdir().unwrap();
    let settings = settings_of(b, dir.path());
    let deployment: Deployment = b.one("Deployment");
    let service: Service = b.one("Service");
    let mutating: MutatingWebhookConfiguration = b.one("MutatingWebhookConfiguration");
    let validating: ValidatingWebhookConfiguration = b.one("ValidatingWebhookConfiguration");
    let role: ClusterRole = b.named("ClusterRole", "pod-identity-webhook");
    let binding: ClusterRoleBinding = b.named("ClusterRoleBinding", "pod-identity-webhook");
    let pdb: PodDisruptionBudget = b.one("PodDisruptionBudget");
    // The webhook's own namespace (an overlay with the agent has the agent's too), held to the
    // restricted Pod Security standard.
    let own_ns = deployment.metadata.namespace.clone().unwrap();
    let ns: Namespace = b.named("Namespace", &own_ns);
    assert_eq!(
        ns.metadata.labels.unwrap()["pod-security.kubernetes.io/enforce"],
        "restricted",
        "{}",
        b.name
    );
    let container = webhook_container(&deployment);
    let spec = deployment.spec.clone().unwrap();
    let pod = spec.template.spec.clone().unwrap();
    let pod_labels = spec.template.metadata.clone().unwrap().labels.unwrap();

    // Ports: listen/adminListen of the config are the container ports, which the Service and
    // the probes use.
    assert_eq!(
        port_named(&container, "https") as u16,
        settings.listen.port(),
        "{}",
        b.name
    );
    assert_eq!(
        port_named(&container, "admin") as u16,
        settings.admin_listen.port()
    );
    let svc = service.spec.clone().unwrap();
    let https = svc
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("https"))
        .unwrap();
    assert_eq!(https.target_port, Some(IntOrString::String("https".into())));
    for (probe, path) in [
        (container.readiness_probe.clone(), "/readyz"),
        (container.liveness_probe.clone(), "/livez"),
    ] {
        let get = probe.unwrap().http_get.unwrap();
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(get.port, IntOrString::String("admin".into()));
    }
    // The Service and PDB select the pods.
    for (k, v) in svc.selector.unwrap() {
        assert_eq!(pod_labels.get(&k), Some(&v), "{}: Service selector", b.name);
    }
    for (k, v) in pdb.spec.unwrap().selector.unwrap().match_labels.unwrap() {
        assert_eq!(pod_labels.get(&k), Some(&v), "{}: PDB selector", b.name);
    }

    // TLS: the config's files are in the mounted Secret.
    let Ok(TlsSource::Files { cert, key }) = &settings.tls.source() else {
        panic!("{}: in-cluster TLS comes from files", b.name)
    };
    let tls_volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.secret.is_some())
        .expect("a Secret volume");
    let secret_name = tls_volume.secret.clone().unwrap().secret_name.unwrap();
    assert_eq!(secret_name, "pod-identity-webhook-tls");
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == tls_volume.name)
        .unwrap();
    for (file, expected) in [(cert, "tls.crt"), (key, "tls.key")] {
        assert_eq!(
            *file,
            Path::new(&mount.mount_path).join(expected),
            "{}",
            b.name
        );
    }

    // Webhooks: our Service, our paths, v1, no side effects, short timeouts, system and own
    // namespaces excluded.
    let service_name = service.metadata.name.clone().unwrap();
    let service_ns = service.metadata.namespace.clone().unwrap();
    let mut routes = Vec::new();
    let m = &mutating.webhooks.clone().unwrap()[0];
    let v = &validating.webhooks.clone().unwrap()[0];
    for (cfg, path, versions, side, timeout, selector) in [
        (
            &m.client_config,
            "/mutate",
            &m.admission_review_versions,
            &m.side_effects,
            m.timeout_seconds,
            &m.namespace_selector,
        ),
        (
            &v.client_config,
            "/validate",
            &v.admission_review_versions,
            &v.side_effects,
            v.timeout_seconds,
            &v.namespace_selector,
        ),
    ] {
        let s = cfg.service.clone().expect("service reference");
        assert_eq!(
            (s.name.as_str(), s.namespace.as_str()),
            (service_name.as_str(), service_ns.as_str())
        );
        assert_eq!(s.path.as_deref(), Some(path));
        assert_eq!(s.port, https.port.into());
        routes.push(path);
        assert_eq!(versions, &vec!["v1".to_string()]);
        assert_eq!(side, "None");
        assert!(timeout.is_some_and(|t| (1..=10).contains(&t)));
        let excluded: Vec<String> = selector
            .clone()
            .unwrap()
            .match_expressions
            .unwrap()
            .into_iter()
            .filter(|e| e.key == "kubernetes.io/metadata.name" && e.operator == "NotIn")
            .flat_map(|e| e.values.unwrap())
            .collect();
        for ns in [
            "kube-system",
            "kube-public",
            "kube-node-lease",
            own_ns.as_str(),
        ] {
            assert!(
                excluded.iter().any(|e| e == ns),
                "{}: {ns} not excluded",
                b.name
            );
        }
    }
    assert_eq!(m.reinvocation_policy.as_deref(), Some("IfNeeded"));
    // The paths exist in the router the binary serves.
    check_routes(&routes);

    // Rules: exactly the kinds the server handles.
    let mutate_rules = m.rules.clone().unwrap();
    assert_eq!(mutate_rules.len(), 1);
    assert_eq!(
        rule_targets(&mutate_rules[0]),
        vec![("".into(), "pods".into(), "CREATE".into())]
    );
    let mut validated: Vec<(String, String, String)> = v
        .rules
        .clone()
        .unwrap()
        .iter()
        .flat_map(rule_targets)
        .collect();
    validated.sort();
    let mut expected = vec![
        ("".to_string(), "pods".to_string(), "CREATE".to_string()),
        (
            "".into(),
            "pods/ephemeralcontainers".into(),
            "UPDATE".into(),
        ),
        ("".into(), "serviceaccounts".into(), "CREATE".into()),
        ("".into(), "serviceaccounts".into(), "UPDATE".into()),
    ];
    for (group, resource, kind) in [
        ("apps", "deployments", "Deployment"),
        ("apps", "statefulsets", "StatefulSet"),
        ("apps", "daemonsets", "DaemonSet"),
        ("apps", "replicasets", "ReplicaSet"),
        ("batch", "jobs", "Job"),
        ("batch", "cronjobs", "CronJob"),
    ] {
        assert!(
            Kind::from_gvk(group, kind).is_some_and(Kind::has_pods),
            "the validator checks {kind}"
        );
        for op in ["CREATE", "UPDATE"] {
            expected.push((group.into(), resource.into(), op.into()));
        }
    }
    expected.sort();
    assert_eq!(validated, expected, "{}: validating rules", b.name);

    // RBAC: read ServiceAccounts and Namespaces, nothing else; bound to the pods' account.
    let rules = role.rules.unwrap();
    for rule in &rules {
        assert_eq!(rule.api_groups.clone().unwrap(), vec![String::new()]);
        for r in rule.resources.clone().unwrap() {
            assert!(
                ["serviceaccounts", "namespaces"].contains(&r.as_str()),
                "{r}"
            );
        }
        for verb in &rule.verbs {
            assert!(["get", "list", "watch"].contains(&verb.as_str()), "{verb}");
        }
    }
    let subject = &binding.subjects.unwrap()[0];
    assert_eq!(Some(subject.name.clone()), pod.service_account_name);
    assert_eq!(subject.namespace.as_deref(), Some(own_ns.as_str()));
    assert_eq!(binding.role_ref.name, role.metadata.name.unwrap());

    // Hardening and availability.
    assert!(spec.replicas.unwrap() >= 2);
    assert!(pod.affinity.unwrap().pod_anti_affinity.is_some());
    let psc = pod.security_context.unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
    let csc = container.security_context.clone().unwrap();
    assert_eq!(csc.read_only_root_filesystem, Some(true));
    assert_eq!(csc.allow_privilege_escalation, Some(false));
    assert_eq!(
        csc.capabilities.unwrap().drop.unwrap(),
        vec!["ALL".to_string()]
    );
    let resources = container.resources.clone().unwrap();
    assert!(resources.requests.is_some() && resources.limits.is_some());
    assert!(
        container
            .env
            .iter()
            .flatten()
            .any(|e| e.name == "POD_NAMESPACE"),
        "own namespace for the policy exemption"
    );
    // Above shutdown grace + drain, so in-flight reviews finish.
    let budget = settings.server.shutdown_grace + settings.server.drain_timeout;
    assert!(pod.termination_grace_period_seconds.unwrap() as u64 > budget.as_secs());
}

fn rule_targets(rule: &RuleWithOperations) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for g in rule.api_groups.clone().unwrap() {
        for r in rule.resources.clone().unwrap() {
            for op in rule.operations.clone().unwrap() {
                out.push((g.clone(), r.clone(), op));
            }
        }
    }
    out
}

/// POSTs to each path on the binary's own router (in process): a route that exists answers
/// 400 to a non-review body, an absent one 404.
fn check_routes(paths: &[&str]) {
    use tower::ServiceExt;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let app = std::sync::Arc::new(pod_identity_webhook::server::app::App::new(
            pod_identity_webhook::admission::Mutator::new(
                Default::default(),
                pod_identity_webhook::identity::Identities::default(),
            ),
            Default::default(),
        ));
        for path in paths {
            let router = pod_identity_webhook::server::routes::admission_router(app.clone());
            let req = axum::http::Request::post(*path)
                .header("content-type", "application/json")
                .body(axum::body::Body::from("{}"))
                .unwrap();
            let status = router.oneshot(req).await.unwrap().status();
            assert_eq!(status, 400, "{path} is not served by the binary");
        }
    });
}

#[test]
fn every_manifest_and_demo_document_parses_into_its_type() {
    let mut files = Vec::new();
    yaml_files(&root().join("manifests"), &mut files);
    yaml_files(&root().join("hack/demo"), &mut files);
    assert!(files.len() >= 10, "{files:?}");
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let docs = documents(&file);
        if name == "kustomization.yaml" {
            assert!(
                docs[0]["kind"] == "Kustomization" || docs[0]["kind"] == "Component",
                "{}",
                file.display()
            );
            continue;
        }
        let is_patch = build_patch_paths().contains(&file);
        for doc in docs {
            if !is_patch {
                check_typed(&doc, &file.display().to_string());
            }
        }
    }
}

/// Files kustomizations use as patches (partial objects).
fn build_patch_paths() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut files = Vec::new();
    yaml_files(&root().join("manifests"), &mut files);
    for f in files.iter().filter(|f| f.ends_with("kustomization.yaml")) {
        let k = documents(f).remove(0);
        for p in k["patches"].as_array().into_iter().flatten() {
            if let Some(path) = p["path"].as_str() {
                out.push(f.parent().unwrap().join(path));
            }
        }
    }
    out
}

#[test]
fn the_base_is_consistent_with_the_binary() {
    let b = Built::new("base");
    check_consistency(&b);
    let dir = tempfile::tempdir().unwrap();
    let settings = settings_of(&b, dir.path());
    assert!(settings.associations_file.is_some() && settings.eks_source().is_none());
    assert_eq!(settings.server.audit_interval, None, "the audit is opt-in");
}

/// The base with `components/controller`, as an overlay would use it: the controller runs on the
/// webhook's ConfigMap with two replicas and a Lease, under its own ServiceAccount with read access
/// to exactly what its decisions and its audit watch, the right to create Events and evictions,
/// and the Lease in its namespace; the webhook stays as the base has it (admission only).
#[test]
fn the_controller_component_runs_the_audit_apart_with_the_rights_it_needs() {
    use pod_identity_webhook::audit::repair::RepairMode;
    use pod_identity_webhook::controller::election::DEFAULT_LEASE_NAME;
    let overlay = tempfile::tempdir().unwrap();
    let manifests = root().join("manifests");
    std::fs::write(
        overlay.path().join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [{}]\ncomponents: [{}]\n",
            manifests.join("base").display(),
            manifests.join("components/controller").display()
        ),
    )
    .unwrap();
    let docs = build(overlay.path());
    for doc in &docs {
        check_typed(doc, "base + components/controller (composed)");
    }
    let b = Built {
        name: "base + components/controller",
        docs,
    };
    let ns: Namespace = b.one("Namespace");
    let name = "pod-identity-webhook-controller";
    let deployment: Deployment = b.named("Deployment", name);
    assert_eq!(deployment.metadata.namespace, ns.metadata.name);
    let spec = deployment.spec.clone().unwrap();
    assert_eq!(spec.replicas, Some(2), "one working, one standing by");
    let pod = spec.template.spec.clone().unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some(name));
    let container = webhook_container(&deployment);
    let args = container.args.clone().unwrap();
    let cli = Cli::try_parse_from(
        std::iter::once("pod-identity-webhook".to_string()).chain(args.clone()),
    )
    .unwrap_or_else(|e| panic!("the binary refuses {args:?}: {e}"));
    let CliCommand::Controller(controller) = cli.command else {
        panic!("the container must run `controller`: {args:?}")
    };
    assert_eq!(
        controller.audit_interval,
        std::time::Duration::from_secs(600)
    );
    assert!(controller.leader_elect && controller.lease_name == DEFAULT_LEASE_NAME);
    assert_eq!(
        pod_identity_webhook::audit::repair::RepairMode::from_flags(
            controller.repair,
            controller.dry_run
        ),
        RepairMode::Off,
        "repair is opt-in"
    );
    // The config file is the webhook's ConfigMap, mounted where the argument says.
    let config = controller.sources.config.clone().unwrap();
    assert_eq!(
        mounted_config_map(&container, &pod, &config).0,
        "pod-identity-webhook-config"
    );
    for (var, path) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        let env = container
            .env
            .iter()
            .flatten()
            .find(|e| e.name == var)
            .unwrap_or_else(|| panic!("{var}"));
        assert_eq!(
            env.value_from
                .as_ref()
                .and_then(|v| v.field_ref.as_ref())
                .map(|f| f.field_path.as_str()),
            Some(path)
        );
    }
    // The webhook: admission only, as the base has it.
    let webhook: Deployment = b.named("Deployment", "pod-identity-webhook");
    let webhook_args = webhook_container(&webhook).args.unwrap();
    assert!(
        !webhook_args.iter().any(|a| a.contains("audit")),
        "{webhook_args:?}"
    );

    let role: ClusterRole = b.named("ClusterRole", name);
    let mut read = Vec::new();
    let mut decided = Vec::new();
    let mut written = Vec::new();
    for rule in role.rules.unwrap() {
        for group in rule.api_groups.clone().unwrap() {
            for resource in rule.resources.clone().unwrap() {
                let verbs: Vec<&str> = rule.verbs.iter().map(String::as_str).collect();
                match verbs.as_slice() {
                    ["list", "watch"] => read.push((group.clone(), resource)),
                    ["get", "list", "watch"] => decided.push((group.clone(), resource)),
                    ["create"] => written.push((group.clone(), resource)),
                    other => panic!("{group}/{resource}: verbs {other:?}"),
                }
            }
        }
    }
    let mut watched: Vec<(String, String)> = pod_identity_webhook::controller::audit::WATCHED
        .iter()
        .map(|(g, r)| (g.to_string(), r.to_string()))
        .collect();
    watched.sort();
    read.sort();
    assert_eq!(
        read, watched,
        "list/watch on exactly what the audit watches"
    );
    decided.sort();
    assert_eq!(
        decided,
        [("", "namespaces"), ("", "serviceaccounts")].map(|(g, r)| (g.to_string(), r.to_string()))
    );
    written.sort();
    assert_eq!(
        written,
        [("", "pods/eviction"), ("events.k8s.io", "events")]
            .map(|(g, r)| (g.to_string(), r.to_string()))
    );
    let binding: ClusterRoleBinding = b.named("ClusterRoleBinding", name);
    assert_eq!(binding.role_ref.name, name);
    let subject = &binding.subjects.unwrap()[0];
    assert_eq!(subject.name, name);
    assert_eq!(subject.namespace, ns.metadata.name);

    let lease: k8s_openapi::api::rbac::v1::Role =
        b.named("Role", "pod-identity-webhook-controller-lease");
    assert_eq!(lease.metadata.namespace, ns.metadata.name);
    let rules = lease.rules.unwrap();
    assert!(rules.iter().all(
        |r| r.api_groups == Some(vec!["coordination.k8s.io".to_string()])
            && r.resources == Some(vec!["leases".to_string()])
    ));
    let named = rules.iter().find(|r| r.resource_names.is_some()).unwrap();
    assert_eq!(
        named.resource_names,
        Some(vec![DEFAULT_LEASE_NAME.to_string()])
    );
    // The base's own role is unchanged: read ServiceAccounts and Namespaces, nothing more.
    let base_role: ClusterRole = b.named("ClusterRole", "pod-identity-webhook");
    assert_eq!(base_role.rules.unwrap().len(), 1);
}

#[test]
fn the_kind_overlay_runs_the_loaded_image_on_the_associations_file() {
    let b = Built::new("overlays/kind");
    check_consistency(&b);
    let container = webhook_container(&b.one("Deployment"));
    assert_eq!(container.image.as_deref(), Some("pod-identity-webhook:dev"));
    assert_eq!(container.image_pull_policy.as_deref(), Some("IfNotPresent"));
    let dir = tempfile::tempdir().unwrap();
    assert!(settings_of(&b, dir.path()).associations_file.is_some());
    // The script creates the Secret and patches the caBundle; nothing in the overlay sets one.
    let script = std::fs::read_to_string(root().join("hack/kind-quickstart.sh")).unwrap();
    assert!(script.contains("create secret tls pod-identity-webhook-tls"));
    assert!(script.contains("/webhooks/0/clientConfig/caBundle"));
    // It applies the overlay through a kustomization of its own that sets the image it loaded
    // (tests/kind_quickstart.rs renders it).
    assert!(script.contains("  - ../../../../manifests/overlays/kind"));
    assert!(script.contains("apply -k \"$OVERLAY\""));
    assert!(script.contains("--service \"$NS\" --namespace \"$NS\""));
}

#[test]
fn the_cert_manager_overlay_issues_the_serving_secret_and_injects_the_ca() {
    let b = Built::new("overlays/cert-manager");
    check_consistency(&b);
    let service: Service = b.one("Service");
    let svc = format!(
        "{}.{}.svc",
        service.metadata.name.unwrap(),
        service.metadata.namespace.unwrap()
    );
    let serving = b
        .raw("Certificate", "pod-identity-webhook-serving")
        .expect("serving Certificate");
    assert_eq!(serving["spec"]["secretName"], "pod-identity-webhook-tls");
    assert!(
        serving["spec"]["dnsNames"]
            .as_array()
            .unwrap()
            .contains(&Value::String(svc))
    );
    let issuer = serving["spec"]["issuerRef"]["name"].as_str().unwrap();
    assert!(b.raw("Issuer", issuer).is_some(), "issuer {issuer} exists");
    for kind in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        let cfg = b.raw(kind, "pod-identity-webhook").unwrap();
        assert_eq!(
            cfg["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            format!(
                "{}/{}",
                serving["metadata"]["namespace"].as_str().unwrap(),
                serving["metadata"]["name"].as_str().unwrap()
            )
        );
    }
}

#[test]
fn the_eks_overlay_reads_associations_from_eks_with_the_documented_iam_policy() {
    let b = Built::new("overlays/eks");
    check_consistency(&b);
    let dir = tempfile::tempdir().unwrap();
    let settings = settings_of(&b, dir.path());
    let eks = settings.eks_source().expect("the EKS source is configured");
    assert!(!eks.cluster_name.is_empty());
    assert!(settings.associations_file.is_none());
    let policy: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("manifests/overlays/eks/iam-policy.json")).unwrap(),
    )
    .unwrap();
    let actions: Vec<&str> = policy["Statement"][0]["Action"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "eks:ListPodIdentityAssociations",
            "eks:DescribePodIdentityAssociation"
        ]
    );
}

#[test]
fn the_demo_matches_the_base_associations_and_policy_label() {
    let b = Built::new("base");
    let dir = tempfile::tempdir().unwrap();
    let settings = settings_of(&b, dir.path());
    let namespace = documents(&root().join("hack/demo/namespace.yaml"));
    let label = &settings.policy.namespace_label;
    assert_eq!(
        namespace[0]["metadata"]["labels"][label.as_str()],
        "enforce"
    );
    let config_map: ConfigMap = b.one("ConfigMap");
    let associations = config_map.data.unwrap()["associations.yaml"].clone();
    let listed: BTreeMap<String, Vec<BTreeMap<String, String>>> =
        serde_yaml_ng::from_str(&associations).unwrap();
    let has = |sa: &str| {
        listed["associations"]
            .iter()
            .any(|a| a["namespace"] == "team-a" && a["serviceAccount"] == sa)
    };
    let pod_sa = |file: &str| {
        documents(&root().join("hack/demo").join(file))[0]["spec"]["serviceAccountName"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(
        has(&pod_sa("pod-carts.yaml")),
        "the demo pod's ServiceAccount is associated"
    );
    assert!(
        !has(&pod_sa("pod-no-identity.yaml")),
        "the rejected pod's is not"
    );
}

#[test]
fn the_dockerfile_runs_this_binary_as_non_root() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_pod-identity-webhook"))
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(dockerfile.contains(&format!("cargo build --release --locked --bin {bin}")));
    assert!(dockerfile.contains(&format!("ENTRYPOINT [\"/usr/local/bin/{bin}\"]")));
    assert!(dockerfile.contains("USER 65532:65532"));
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    for entry in ["target/", ".git/", "certs/out/"] {
        assert!(
            ignore.lines().any(|l| l == entry),
            ".dockerignore lacks {entry}"
        );
    }
}

/// Every shell script in the repository: a `*.sh` file or one whose `#!` line runs a shell,
/// anywhere but `.git/` and `target/` (found, not listed, so a new script cannot be missed).
fn shell_scripts() -> Vec<String> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap())
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() && !matches!(entry.file_name().to_str(), Some(".git" | "target")) {
                walk(&path, found);
            } else if kind.is_file() && is_shell_script(&path) {
                found.push(path);
            }
        }
    }
    fn is_shell_script(path: &Path) -> bool {
        if path.extension().is_some_and(|e| e == "sh") {
            return true;
        }
        let mut head = [0u8; 64];
        let n = std::fs::File::open(path)
            .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
            .unwrap_or(0);
        let first = String::from_utf8_lossy(&head[..n]);
        let first = first.lines().next().unwrap_or("");
        first.starts_with("#!")
            && first
                .split(['/', ' '])
                .any(|word| matches!(word, "sh" | "bash" | "dash"))
    }
    let mut found = Vec::new();
    walk(&root(), &mut found);
    found
        .iter()
        .map(|p| p.strip_prefix(root()).unwrap().display().to_string())
        .collect()
}

#[test]
fn every_shell_script_passes_bash_n_and_shellcheck() {
    let scripts = shell_scripts();
    // The search itself is checked: scripts of each place it must reach.
    for known in [
        ".ci/run",
        "scripts/fuzz.sh",
        "scripts/memory-flood.sh",
        "hack/helm.sh",
    ] {
        assert!(
            scripts.iter().any(|s| s == known),
            "{known} not found: {scripts:?}"
        );
    }
    for script in &scripts {
        let status = Command::new("bash")
            .arg("-n")
            .arg(root().join(script))
            .status()
            .unwrap();
        assert!(status.success(), "bash -n {script}");
    }
    let shellcheck_found = Command::new("shellcheck")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if skip::unless(
        shellcheck_found,
        "shellcheck",
        "apt-get install shellcheck; .ci/run installs it",
    ) {
        return;
    }
    let out = Command::new("shellcheck")
        .current_dir(root())
        .arg("--external-sources")
        .args(&scripts)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "shellcheck {}:\n{}",
        scripts.join(" "),
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn the_kind_script_names_every_missing_prerequisite() {
    // With an empty PATH (bash itself by absolute path) every tool is missing.
    let bash = ["/bin/bash", "/usr/bin/bash"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("bash");
    let out = Command::new(bash)
        .arg(root().join("hack/kind-quickstart.sh"))
        .env_clear()
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for tool in ["docker:", "kind:", "kubectl:"] {
        assert!(err.contains(tool), "does not name {tool}: {err}");
    }
}

/// The credentials agent as an overlay deploys it: the binary accepts its arguments, it reads
/// the webhook's associations, runs on every Linux node on the node's network with only the
/// capabilities it needs, and may create TokenReviews and nothing else.
fn check_agent(b: &Built) -> DaemonSet {
    use pod_identity_webhook::cli::agent::AgentAction;
    let ds: DaemonSet = b.named("DaemonSet", "pod-identity-agent");
    let pod = ds.spec.clone().unwrap().template.spec.unwrap();
    assert_eq!(pod.host_network, Some(true), "{}", b.name);
    assert_eq!(pod.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
    assert_eq!(pod.automount_service_account_token, Some(true));
    assert_eq!(
        pod.node_selector
            .clone()
            .unwrap()
            .get("kubernetes.io/os")
            .map(String::as_str),
        Some("linux")
    );
    let tolerations = pod.tolerations.clone().unwrap();
    assert!(
        tolerations
            .iter()
            .any(|t| t.operator.as_deref() == Some("Exists")
                && t.key.is_none()
                && t.effect.is_none()),
        "tolerates every taint"
    );
    let parse = |c: &Container| {
        let args = c.args.clone().unwrap();
        let cli = Cli::try_parse_from(
            std::iter::once("pod-identity-webhook".to_string()).chain(args.clone()),
        )
        .unwrap_or_else(|e| panic!("{}: the binary refuses {args:?}: {e}", b.name));
        let CliCommand::Agent(agent) = cli.command else {
            panic!("{}: {} must run `agent`", b.name, c.name)
        };
        agent
    };
    let caps = |c: &Container| {
        let sc = c.security_context.clone().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{}", c.name);
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
        assert_ne!(sc.privileged, Some(true), "{}", c.name);
        let caps = sc.capabilities.unwrap();
        assert_eq!(caps.drop.unwrap(), ["ALL"], "{}", c.name);
        caps.add.unwrap()
    };

    // The init container sets up the link, with NET_ADMIN only.
    let inits = pod.init_containers.clone().unwrap();
    assert_eq!(inits.len(), 1);
    assert!(matches!(
        parse(&inits[0]).action,
        Some(AgentAction::SetupLink(_))
    ));
    assert_eq!(caps(&inits[0]), ["NET_ADMIN"]);

    // The agent binds :80 with NET_BIND_SERVICE only, and its settings resolve.
    assert_eq!(pod.containers.len(), 1);
    let c = &pod.containers[0];
    let agent = parse(c);
    assert!(agent.action.is_none(), "the container serves");
    assert_eq!(caps(c), ["NET_BIND_SERVICE"]);
    let env: BTreeMap<String, String> = c
        .env
        .iter()
        .flatten()
        .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
        .collect();
    let cluster = env
        .get("POD_IDENTITY_AGENT_CLUSTER_NAME")
        .expect("the cluster name is set");
    let mut run = agent.run;
    run.cluster_name = Some(cluster.clone());
    run.sts_endpoint = env.get("POD_IDENTITY_AGENT_STS_ENDPOINT").cloned();
    let settings = run
        .settings()
        .unwrap_or_else(|e| panic!("{}: agent settings: {e}", b.name));
    assert_eq!(
        settings.binds,
        [
            "169.254.170.23:80".parse().unwrap(),
            "[fd00:ec2::23]:80".parse().unwrap()
        ]
    );
    assert!(
        c.env_from.iter().flatten().any(|e| e
            .secret_ref
            .as_ref()
            .is_some_and(|s| s.name == "pod-identity-agent-aws" && s.optional == Some(true))),
        "AWS credentials from an optional Secret"
    );

    // Probes reach the admin port on the node's loopback.
    for (probe, path) in [
        (c.readiness_probe.clone(), "/readyz"),
        (c.liveness_probe.clone(), "/livez"),
    ] {
        let get = probe.unwrap().http_get.unwrap();
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(get.host.as_deref(), Some("127.0.0.1"));
        assert_eq!(
            get.port,
            IntOrString::Int(settings.admin_listen.port().into())
        );
    }

    // The associations file is the webhook's ConfigMap, mounted, and parses.
    let file = settings.associations_file.clone().expect("--associations");
    let (cm_name, mount_path) = mounted_config_map(c, &pod, &file);
    let cm: ConfigMap = b.named("ConfigMap", &cm_name);
    assert_eq!(
        cm.metadata.namespace, ds.metadata.namespace,
        "{}: a pod mounts ConfigMaps of its own namespace only",
        b.name
    );
    let key = file
        .strip_prefix(&mount_path)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("associations.yaml");
    let agent_associations = cm.data.unwrap()[&key].clone();
    std::fs::write(&local, &agent_associations).unwrap();
    assert!(!FileSource::open(&local).unwrap().0.is_empty());
    // With the webhook reading an associations file too: the same list, or the webhook injects
    // the credentials URI for pods the agent then answers 404.
    if let Some(webhook_cm) = b.raw("ConfigMap", "pod-identity-webhook-config") {
        let webhook_config = webhook_cm["data"]["config.yaml"].as_str().unwrap();
        if webhook_config.contains("associationsFile:") {
            assert_eq!(
                webhook_cm["data"]["associations.yaml"].as_str(),
                Some(agent_associations.as_str()),
                "{}: the agent's associations differ from the webhook's",
                b.name
            );
        }
    }

    // Pod Security: the agent's namespace is its own, enforced at privileged (host network,
    // NET_ADMIN, uid 0), warned and audited at a stricter level so nothing else slips in
    // quietly; the webhook's namespace is another one; both webhooks leave it out.
    let agent_ns = ds.metadata.namespace.clone().unwrap();
    let ns: Namespace = b.named("Namespace", &agent_ns);
    let labels = ns.metadata.labels.unwrap();
    let level = |mode: &str| {
        labels
            .get(&format!("pod-security.kubernetes.io/{mode}"))
            .map(String::as_str)
    };
    assert_eq!(level("enforce"), Some("privileged"), "{}", b.name);
    for mode in ["warn", "audit"] {
        assert!(
            matches!(level(mode), Some("baseline" | "restricted")),
            "{}: {mode} at {:?}",
            b.name,
            level(mode)
        );
    }
    if let Some(deployment) = b.raw("Deployment", "pod-identity-webhook") {
        assert_ne!(
            deployment["metadata"]["namespace"].as_str(),
            Some(agent_ns.as_str()),
            "{}: the webhook's namespace stays restricted",
            b.name
        );
        for kind in [
            "MutatingWebhookConfiguration",
            "ValidatingWebhookConfiguration",
        ] {
            let config = b.raw(kind, "pod-identity-webhook").unwrap();
            let excluded = &config["webhooks"][0]["namespaceSelector"]["matchExpressions"];
            assert!(
                excluded.as_array().unwrap().iter().any(|e| e["key"]
                    == "kubernetes.io/metadata.name"
                    && e["operator"] == "NotIn"
                    && e["values"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|v| v == agent_ns.as_str())),
                "{}: {kind} does not exclude {agent_ns}",
                b.name
            );
        }
    }

    // RBAC: create TokenReviews and patch nodes (the startup taint), nothing else; bound to the
    // DaemonSet's account.
    let role: ClusterRole = b.named("ClusterRole", "pod-identity-agent");
    let rules = role.rules.unwrap();
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[1].api_groups.clone().unwrap(), [""]);
    assert_eq!(rules[1].resources.clone().unwrap(), ["nodes"]);
    assert_eq!(rules[1].verbs, ["patch"]);
    // The node name for it comes from the downward API.
    let env = pod.containers[0].env.clone().unwrap_or_default();
    let node_name = env
        .iter()
        .find(|e| e.name == "NODE_NAME")
        .expect("NODE_NAME");
    assert_eq!(
        node_name
            .value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path,
        "spec.nodeName"
    );
    assert_eq!(
        rules[0].api_groups.clone().unwrap(),
        ["authentication.k8s.io"]
    );
    assert_eq!(rules[0].resources.clone().unwrap(), ["tokenreviews"]);
    assert_eq!(rules[0].verbs, ["create"]);
    let binding: ClusterRoleBinding = b.named("ClusterRoleBinding", "pod-identity-agent");
    assert_eq!(binding.role_ref.name, "pod-identity-agent");
    let subject = &binding.subjects.unwrap()[0];
    assert_eq!(Some(subject.name.clone()), pod.service_account_name);
    assert_eq!(subject.namespace, ds.metadata.namespace);
    let _: ServiceAccount = b.named("ServiceAccount", subject.name.as_str());
    ds
}

#[test]
fn the_kind_overlay_runs_the_agent_against_the_demo_sts_stand_in() {
    let b = Built::new("overlays/kind");
    let ds = check_agent(&b);
    let pod = ds.spec.unwrap().template.spec.unwrap();
    for c in pod
        .containers
        .iter()
        .chain(pod.init_containers.iter().flatten())
    {
        assert_eq!(c.image.as_deref(), Some("pod-identity-webhook:dev"));
        assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
    }
    let endpoint = pod.containers[0]
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "POD_IDENTITY_AGENT_STS_ENDPOINT")
        .and_then(|e| e.value.clone())
        .expect("the demo's STS endpoint");
    // The endpoint is the Service the script deploys.
    let moto = documents(&root().join("hack/demo/sts-moto.yaml"));
    let service = moto.iter().find(|d| d["kind"] == "Service").unwrap();
    let port = service["spec"]["ports"][0]["port"].as_i64().unwrap();
    assert_eq!(
        endpoint,
        format!(
            "http://{}.{}.svc.cluster.local:{port}",
            service["metadata"]["name"].as_str().unwrap(),
            service["metadata"]["namespace"].as_str().unwrap()
        )
    );
    let script = std::fs::read_to_string(root().join("hack/kind-quickstart.sh")).unwrap();
    for step in [
        "hack/demo/sts-moto.yaml",
        "create secret generic pod-identity-agent-aws",
        "rollout status daemonset/pod-identity-agent",
        "hack/demo/pod-carts-aws.yaml",
        ":assumed-role/carts/eks-",
    ] {
        assert!(script.contains(step), "the kind script lacks {step}");
    }
    let demo = documents(&root().join("hack/demo/pod-carts-aws.yaml"));
    assert_eq!(demo[0]["spec"]["serviceAccountName"], "carts");
}

#[test]
fn the_self_managed_overlay_runs_webhook_and_agent_with_real_sts() {
    let b = Built::new("overlays/self-managed");
    check_consistency(&b);
    let ds = check_agent(&b);
    let pod = ds.spec.unwrap().template.spec.unwrap();
    let c = &pod.containers[0];
    assert_eq!(
        c.image.as_deref(),
        Some("registry.example.com/platform/pod-identity-webhook:0.1.0")
    );
    assert!(
        !c.env
            .iter()
            .flatten()
            .any(|e| e.name.contains("STS_ENDPOINT")),
        "real STS"
    );
    assert!(
        b.raw("Certificate", "pod-identity-webhook-serving")
            .is_some()
    );
}

#[test]
fn the_base_and_the_agent_alone_run_a_tagged_image_of_this_version() {
    // `kubectl apply -k manifests/base` (or manifests/agent) must not run `:latest`, which the
    // kubelet pulls on every start instead of using an image loaded onto the node.
    let expected = format!("pod-identity-webhook:{}", env!("CARGO_PKG_VERSION"));
    for name in ["base", "agent"] {
        let b = Built::new(name);
        for doc in b
            .docs
            .iter()
            .filter(|d| d["kind"] == "Deployment" || d["kind"] == "DaemonSet")
        {
            let pod = &doc["spec"]["template"]["spec"];
            for c in pod["containers"]
                .as_array()
                .unwrap()
                .iter()
                .chain(pod["initContainers"].as_array().into_iter().flatten())
            {
                assert_eq!(c["image"], expected.as_str(), "{name}: {}", c["name"]);
            }
        }
    }
}

/// `components/gitops-associations` is the controller component with `--gitops-associations`
/// added: the same Deployment and RBAC (ServiceAccounts read with get, list and watch, Events
/// created), GitOps on, repair still off.
#[test]
fn the_gitops_associations_component_is_the_controller_with_gitops_on() {
    let overlay = tempfile::tempdir().unwrap();
    let manifests = root().join("manifests");
    let compose = |component: &str| {
        std::fs::write(
            overlay.path().join("kustomization.yaml"),
            format!(
                "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [{}]\ncomponents: [{}]\n",
                manifests.join("base").display(),
                manifests.join(component).display()
            ),
        )
        .unwrap();
        let docs = build(overlay.path());
        for doc in &docs {
            check_typed(doc, component);
        }
        Built {
            name: "base + a controller component",
            docs,
        }
    };
    let plain = compose("components/controller");
    let gitops = compose("components/gitops-associations");
    let name = "pod-identity-webhook-controller";
    let args = |b: &Built| {
        let d: Deployment = b.named("Deployment", name);
        webhook_container(&d).args.unwrap()
    };
    let mut expected = args(&plain);
    expected.push("--gitops-associations".into());
    assert_eq!(args(&gitops), expected);
    let cli =
        Cli::try_parse_from(std::iter::once("pod-identity-webhook".to_string()).chain(expected))
            .unwrap();
    let CliCommand::Controller(controller) = cli.command else {
        panic!("the container must run `controller`")
    };
    assert_eq!(controller.gitops_associations, Some(true));
    assert!(
        !controller.repair && !controller.dry_run,
        "repair and dry run are opt-in"
    );
    let rules = |b: &Built| {
        let role: ClusterRole = b.named("ClusterRole", name);
        serde_json::to_value(role.rules).unwrap()
    };
    assert_eq!(
        rules(&gitops),
        rules(&plain),
        "the controller's RBAC covers it"
    );
    let has = |resource: &str, verbs: &[&str]| {
        rules(&gitops).as_array().unwrap().iter().any(|r| {
            r["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x == resource)
                && verbs
                    .iter()
                    .all(|v| r["verbs"].as_array().unwrap().iter().any(|x| x == v))
        })
    };
    assert!(has("serviceaccounts", &["get", "list", "watch"]) && has("events", &["create"]));
}
