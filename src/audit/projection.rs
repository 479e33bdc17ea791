//! What the audit keeps of a pod or workload between runs: its [`ObjectView`] (every field the
//! webhook's decisions read, and nothing else) plus the few fields the audit itself reads (type,
//! uid, controller owner, deletion, phase), as compact JSON text. An ordinary pod as the API
//! server stores it is mostly what no decision reads (defaults, image, resources, tolerations,
//! the service-account token volume's sources); kept as text it costs no allocation per field.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::object::{ObjectView, read_bounded};

/// An object as the audit keeps it (see the module's first lines). Cloned by reference: a run
/// hands the stored objects to the decisions without copying them.
#[derive(Debug, Clone)]
pub struct Projected(Arc<str>);

impl Projected {
    /// Projects `object`. One the view cannot read (past the read bounds) is kept whole, so
    /// that its decision reports it as unreadable instead of the audit leaving it out.
    pub fn of(object: &Value) -> Self {
        let value = project(object).unwrap_or_else(|_| object.clone());
        Self(value.to_string().into())
    }

    /// The same object with its `apiVersion` and `kind` (objects of a list carry none of their
    /// own; the decisions read them).
    pub fn with_type(&self, api_version: &str, kind: &str) -> Self {
        let mut value = self.value();
        if let Some(map) = value.as_object_mut() {
            map.insert("apiVersion".into(), api_version.into());
            map.insert("kind".into(), kind.into());
        }
        Self(value.to_string().into())
    }

    /// The projected object, read back for one decision (and dropped after it).
    pub fn value(&self) -> Value {
        // The text was written from a `Value` by `of`: it always parses.
        serde_json::from_str(&self.0).unwrap_or_default()
    }

    /// Bytes kept.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The annotation `kubectl apply` keeps a whole copy of the object in: no decision reads it.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// `object` reduced to its view and the fields the audit reads (pure).
pub fn project(object: &Value) -> Result<Value, serde_json::Error> {
    // The trait's reading (objects only), not the derived one.
    let view = read_bounded(|| <ObjectView as Deserialize>::deserialize(object))?;
    let mut out = serde_json::to_value(&view)?;
    let Some(out_map) = out.as_object_mut() else {
        return Ok(out);
    };
    for key in ["apiVersion", "kind"] {
        copy(object, out_map, key);
    }
    if let Some(meta) = out_map.get_mut("metadata").and_then(Value::as_object_mut) {
        let source = &object["metadata"];
        for key in ["uid", "deletionTimestamp"] {
            copy(source, meta, key);
        }
        // The controller owner only: it names the workload a pod's finding is about.
        if let Some(owner) = source["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["controller"].as_bool() == Some(true))
        {
            let mut kept = Map::new();
            for key in ["apiVersion", "kind", "name", "uid", "controller"] {
                copy(owner, &mut kept, key);
            }
            meta.insert("ownerReferences".into(), Value::Array(vec![kept.into()]));
        }
        if let Some(annotations) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            annotations.remove(LAST_APPLIED);
        }
    }
    if let Some(phase) = object["status"].get("phase") {
        out_map.insert("status".into(), serde_json::json!({ "phase": phase }));
    }
    Ok(out)
}

fn copy(from: &Value, to: &mut Map<String, Value>, key: &str) {
    if let Some(v) = from.get(key) {
        to.insert(key.into(), v.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A pod as the API server returns it after defaulting (two containers, ten env vars each:
    /// the pods of the controller's RSS measurement).
    fn listed_pod() -> Value {
        let env: Vec<Value> = (0..10)
            .map(|e| json!({"name": format!("SETTING_{e}"), "value": format!("value-of-setting-{e}")}))
            .collect();
        let container = |name: &str| {
            json!({
                "name": name, "image": format!("registry.example/team/{name}:1.2.3"), "env": env,
                "resources": {}, "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent",
                "volumeMounts": [{"name": "kube-api-access-x7k2p", "readOnly": true,
                    "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]
            })
        };
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "app-1", "generateName": "app-", "namespace": "shop", "uid": "u-1",
                "resourceVersion": "123", "creationTimestamp": "2026-12-07T00:00:00Z",
                "labels": {"app": "app", "tier": "web"},
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"a\":1}", "team": "carts"},
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Node", "name": "n", "uid": "n-1"},
                    {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "app-5d", "uid": "r-1",
                     "controller": true, "blockOwnerDeletion": true}
                ],
                "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]
            },
            "spec": {
                "serviceAccountName": "carts", "serviceAccount": "carts",
                "containers": [container("app"), container("sidecar")],
                "volumes": [{"name": "kube-api-access-x7k2p", "projected": {"defaultMode": 420,
                    "sources": [{"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]}}],
                "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
                "securityContext": {}, "schedulerName": "default-scheduler", "priority": 0,
                "enableServiceLinks": true, "preemptionPolicy": "PreemptLowerPriority",
                "tolerations": [
                    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
                ]
            },
            "status": {"phase": "Running", "qosClass": "BestEffort", "conditions": [{"type": "Ready", "status": "True"}]}
        })
    }

    #[test]
    fn keeps_what_the_decisions_and_the_audit_read() {
        let p = project(&listed_pod()).unwrap();
        assert_eq!(p["apiVersion"], "v1");
        assert_eq!(p["kind"], "Pod");
        assert_eq!(p["metadata"]["uid"], "u-1");
        assert_eq!(
            p["metadata"]["labels"],
            json!({"app": "app", "tier": "web"})
        );
        assert_eq!(p["metadata"]["annotations"], json!({"team": "carts"}));
        assert_eq!(
            p["metadata"]["ownerReferences"],
            json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "app-5d", "uid": "r-1", "controller": true}])
        );
        assert_eq!(p["spec"]["serviceAccountName"], "carts");
        assert_eq!(p["spec"]["containers"][1]["env"][9]["name"], "SETTING_9");
        assert_eq!(
            p["spec"]["containers"][0]["volumeMounts"][0]["mountPath"],
            "/var/run/secrets/kubernetes.io/serviceaccount"
        );
        assert_eq!(
            p["spec"]["volumes"],
            json!([{"name": "kube-api-access-x7k2p"}])
        );
        assert_eq!(p["status"], json!({"phase": "Running"}));
        for dropped in ["image", "resources", "imagePullPolicy"] {
            assert!(
                p["spec"]["containers"][0].get(dropped).is_none(),
                "{dropped}"
            );
        }
        assert!(p["metadata"].get("managedFields").is_none());
        assert!(p["spec"].get("tolerations").is_none());
    }

    #[test]
    fn the_view_read_back_is_the_view_of_the_listed_object() {
        let mut listed = listed_pod();
        // The one field of the view the projection leaves out on purpose.
        listed["metadata"]["annotations"]
            .as_object_mut()
            .unwrap()
            .remove(LAST_APPLIED);
        let projected = Projected::of(&listed).value();
        let a = serde_json::to_value(<ObjectView as Deserialize>::deserialize(&listed).unwrap())
            .unwrap();
        let b = serde_json::to_value(<ObjectView as Deserialize>::deserialize(&projected).unwrap())
            .unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn an_ordinary_pod_is_kept_in_a_fraction_of_its_listed_size() {
        let listed = listed_pod();
        let kept = Projected::of(&listed).len();
        let whole = listed.to_string().len();
        println!("projected pod: {kept} bytes of {whole}");
        // The target is ~2 KiB a pod for the whole controller; the text is most of it.
        assert!(kept < 2048 && kept * 10 < whole * 6, "{kept} of {whole}");
    }

    #[test]
    fn an_object_the_view_cannot_read_is_kept_whole() {
        let odd = json!({"kind": "Pod", "metadata": [], "spec": {}});
        assert_eq!(Projected::of(&odd).value(), odd);
    }
}
