//! The webhook's own decisions on an object outside admission: each object is put in the
//! AdmissionReview the API server would send for its creation and given to the same
//! [`Validator`] and [`Mutator`] that answer `/validate` and `/mutate`, read by the same review
//! reader. Nothing here decides anything itself; it only asks and reads the answers.

use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use crate::admission::review::{AdmissionResponse, Review};
use crate::admission::validate::Validator;
use crate::admission::{Decision, Mutator, Outcome};

/// How long one object's identity lookups may take (the API server's own webhook timeout).
pub const LOOKUP_BUDGET: Duration = Duration::from_secs(10);

/// What `/validate` and `/mutate` answered for one object.
#[derive(Debug, Clone)]
pub struct Decided {
    pub validation: Decision,
    /// `/mutate`'s answer, for pods only (the only kind it mutates).
    pub mutation: Option<Decision>,
}

impl Decided {
    /// The JSON Patch `/mutate` returned, decoded; `None` when there is none.
    pub fn patch(&self) -> Option<Value> {
        self.mutation
            .as_ref()
            .and_then(|m| decode_patch(&m.response))
    }

    /// Whether the pod would be changed by `/mutate`.
    pub fn mutated(&self) -> bool {
        self.mutation
            .as_ref()
            .is_some_and(|m| m.outcome == Outcome::Mutated)
    }
}

/// Decodes the base64 JSON Patch of a response.
pub fn decode_patch(response: &AdmissionResponse) -> Option<Value> {
    let text = response.patch.as_deref()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Asks the webhook's decisions about objects.
pub struct Decider<'a> {
    pub validator: &'a Validator,
    pub mutator: &'a Mutator,
    pub budget: Duration,
}

impl<'a> Decider<'a> {
    pub fn new(validator: &'a Validator, mutator: &'a Mutator) -> Self {
        Self {
            validator,
            mutator,
            budget: LOOKUP_BUDGET,
        }
    }

    /// The answers to the creation of `object` in `namespace` (for namespaced objects; the
    /// object's own `metadata.namespace` is set to it, as the API server does).
    pub async fn decide(&self, object: &Value, namespace: Option<&str>) -> Decided {
        let body = creation_review(object, namespace);
        let review = match Review::read(&body) {
            Ok(review) => review,
            // The review is built here from a JSON object; it always parses. Should it not,
            // the object is reported as unreadable rather than the process stopping.
            Err(e) => {
                let decision = Decision::new(
                    AdmissionResponse::deny("check", 400, e.to_string()),
                    Outcome::Error,
                    "unreadable object",
                );
                return Decided {
                    validation: decision,
                    mutation: None,
                };
            }
        };
        let request = &review.request;
        let validation = self.validator.review(request, self.budget).await;
        let is_pod = request.kind.group.is_empty() && &*request.kind.kind == "Pod";
        let mutation = if is_pod {
            Some(self.mutator.review(request, self.budget).await)
        } else {
            None
        };
        Decided {
            validation,
            mutation,
        }
    }
}

/// The `CREATE` AdmissionReview the API server would send for `object`.
pub fn creation_review(object: &Value, namespace: Option<&str>) -> Vec<u8> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let kind = object["kind"].as_str().unwrap_or_default();
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let mut object = object.clone();
    if let (Some(ns), Some(map)) = (namespace, object.as_object_mut())
        && let Some(meta) = map
            .entry("metadata")
            .or_insert_with(|| json!({}))
            .as_object_mut()
    {
        meta.insert("namespace".into(), Value::String(ns.to_string()));
    }
    let mut request = json!({
        "uid": "00000000-0000-0000-0000-000000000000",
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": resource_of(kind)},
        "requestKind": {"group": group, "version": version, "kind": kind},
        "operation": "CREATE",
        "userInfo": {"username": "pod-identity-webhook-check"},
        "object": object,
        "dryRun": true,
    });
    if !name.is_empty() {
        request["name"] = Value::String(name.to_string());
    }
    if let Some(ns) = namespace {
        request["namespace"] = Value::String(ns.to_string());
    }
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": request,
    }))
    .unwrap_or_default()
}

/// The resource name of a kind (lower-case plural), as in the review's `resource`.
fn resource_of(kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    if lower.ends_with('s') {
        format!("{lower}es")
    } else if let Some(stem) = lower.strip_suffix('y') {
        format!("{stem}ies")
    } else {
        format!("{lower}s")
    }
}

/// Kinds that live outside namespaces (their objects get no `--namespace`). Anything else is
/// treated as namespaced, as kubectl does for kinds it cannot look up offline.
pub fn is_cluster_scoped(group: &str, kind: &str) -> bool {
    matches!(
        (group, kind),
        (
            "",
            "Namespace" | "Node" | "PersistentVolume" | "ComponentStatus"
        ) | (
            "rbac.authorization.k8s.io",
            "ClusterRole" | "ClusterRoleBinding"
        ) | (
            "admissionregistration.k8s.io",
            "MutatingWebhookConfiguration"
                | "ValidatingWebhookConfiguration"
                | "ValidatingAdmissionPolicy"
                | "ValidatingAdmissionPolicyBinding"
        ) | ("apiextensions.k8s.io", "CustomResourceDefinition")
            | ("apiregistration.k8s.io", "APIService")
            | (
                "storage.k8s.io",
                "StorageClass" | "CSIDriver" | "CSINode" | "VolumeAttachment"
            )
            | ("scheduling.k8s.io", "PriorityClass")
            | ("node.k8s.io", "RuntimeClass")
            | ("policy", "PodSecurityPolicy")
            | ("certificates.k8s.io", "CertificateSigningRequest")
            | ("networking.k8s.io", "IngressClass")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::review::Object;

    #[test]
    fn review_names_the_object_and_its_namespace() {
        let body = creation_review(
            &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}}),
            Some("team-a"),
        );
        let review = Review::read(&body).unwrap();
        let req = &review.request;
        assert_eq!(&*req.kind.group, "apps");
        assert_eq!(&*req.kind.kind, "Deployment");
        assert_eq!(req.namespace.as_deref(), Some("team-a"));
        assert_eq!(req.name.as_deref(), Some("d"));
        let Some(Object::Read(object)) = &req.object else {
            panic!("{req:?}")
        };
        assert_eq!(object.metadata.namespace.as_deref(), Some("team-a"));
    }

    #[test]
    fn resources() {
        assert_eq!(resource_of("Pod"), "pods");
        assert_eq!(resource_of("Ingress"), "ingresses");
        assert_eq!(resource_of("NetworkPolicy"), "networkpolicies");
    }
}
