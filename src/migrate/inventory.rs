//! What the migration reads (docs/contract.md §10 step 1): ServiceAccounts with an IRSA role, the pods and
//! workloads that use them, the nodes those pods run on, the existing associations and the
//! roles' trust policies. Plain data, built by the readers in [`super::cluster`] and
//! [`super::aws`]; the checks are pure functions of it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Node, Pod, ServiceAccount};
use serde::Serialize;

use crate::identity::role_arn::RoleArnError;
use crate::identity::sa::{AUDIENCE, ROLE_ARN, STS_REGIONAL_ENDPOINTS, TOKEN_EXPIRATION};
use crate::identity::{Association, ServiceAccountInfo};
use crate::object::Kind;

/// The IRSA annotation names (under the prefix) that matter to the migration.
pub const IRSA_ANNOTATIONS: [&str; 4] =
    [ROLE_ARN, AUDIENCE, STS_REGIONAL_ENDPOINTS, TOKEN_EXPIRATION];

/// `namespace/name`.
pub type Key = (String, String);

/// A ServiceAccount, reduced to what the migration reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountEntry {
    pub namespace: String,
    pub name: String,
    /// `<prefix>/…` annotations only, full keys.
    pub annotations: BTreeMap<String, String>,
    #[serde(skip)]
    pub info: ServiceAccountInfo,
}

impl ServiceAccountEntry {
    pub fn from_object(sa: &ServiceAccount, prefix: &str) -> Option<Self> {
        let annotations: BTreeMap<String, String> = sa
            .metadata
            .annotations
            .iter()
            .flatten()
            .filter(|(k, _)| {
                k.strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('/'))
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Some(Self {
            namespace: sa.metadata.namespace.clone()?,
            name: sa.metadata.name.clone()?,
            info: ServiceAccountInfo::from_annotations(&annotations, prefix),
            annotations,
        })
    }

    pub fn key(&self) -> Key {
        (self.namespace.clone(), self.name.clone())
    }

    /// The role annotation that is not an IAM role ARN, as output may show it
    /// ([`crate::shown`]: escaped, cut), and why it is not one.
    pub fn invalid_role_arn(&self, prefix: &str) -> Option<(String, &RoleArnError)> {
        let e = self.info.invalid_role_arn.as_ref()?;
        let value = self
            .annotations
            .get(&format!("{prefix}/{ROLE_ARN}"))
            .map(|v| crate::shown::shown(v.trim()).into_owned())
            .unwrap_or_default();
        Some((value, e))
    }
}

/// How an env var gets its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum EnvValue {
    Value(String),
    /// `valueFrom` (a Secret, ConfigMap or field): the value is not known here.
    From,
}

/// A container's env, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerEnv {
    pub name: String,
    pub env: Vec<(String, EnvValue)>,
}

impl ContainerEnv {
    fn from_container(c: &Container) -> Self {
        Self {
            name: c.name.clone(),
            env: c
                .env
                .iter()
                .flatten()
                .map(|e| {
                    let v = match (&e.value, &e.value_from) {
                        (_, Some(_)) => EnvValue::From,
                        (Some(v), None) => EnvValue::Value(v.clone()),
                        (None, None) => EnvValue::Value(String::new()),
                    };
                    (e.name.clone(), v)
                })
                .collect(),
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.env.iter().any(|(n, _)| n == name)
    }

    pub fn get(&self, name: &str) -> Option<&EnvValue> {
        self.env
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }
}

/// The kind of a pod's owner: a workload kind the webhook knows ([`Kind`]), or another (a
/// custom controller's; a Node, for static pods).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OwnerKind {
    Workload(Kind),
    Other(String),
}

impl OwnerKind {
    pub fn parse(kind: &str) -> Self {
        match Kind::from_name(kind).filter(|k| k.is_workload()) {
            Some(k) => Self::Workload(k),
            None => Self::Other(kind.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Workload(k) => k.as_str(),
            Self::Other(k) => k,
        }
    }

    /// Whether `rollout restart` applies (a new pod template annotation replaces the pods).
    pub fn restartable(&self) -> bool {
        matches!(
            self,
            Self::Workload(Kind::Deployment | Kind::StatefulSet | Kind::DaemonSet)
        )
    }
}

/// A known kind by its name, another as `{"Other": name}` (the plan's JSON).
impl Serialize for OwnerKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Workload(k) => s.serialize_str(k.as_str()),
            Self::Other(k) => s.serialize_newtype_variant("OwnerKind", 1, "Other", k),
        }
    }
}

/// A workload in a namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRef {
    pub kind: OwnerKind,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for WorkloadRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            self.kind.as_str().to_ascii_lowercase(),
            self.namespace,
            self.name
        )
    }
}

/// A pod, reduced to what the checks read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodEntry {
    pub namespace: String,
    pub name: String,
    pub service_account: String,
    pub node_name: Option<String>,
    /// `nodeSelector` `kubernetes.io/os` (a pod not yet scheduled still says where it will run).
    pub os_selector: Option<String>,
    /// A Fargate profile label (EKS labels Fargate pods with their profile).
    pub fargate_profile: Option<String>,
    /// The controller that owns the pod, ReplicaSets resolved to their Deployment.
    pub owner: Option<WorkloadRef>,
    pub containers: Vec<ContainerEnv>,
    /// `envFrom` sources (their keys are not read).
    pub env_from: bool,
}

/// The Fargate profile label EKS puts on Fargate pods.
pub const FARGATE_PROFILE_LABEL: &str = "eks.amazonaws.com/fargate-profile";
/// The node label EKS puts on Fargate nodes.
pub const COMPUTE_TYPE_LABEL: &str = "eks.amazonaws.com/compute-type";
pub const OS_LABEL: &str = "kubernetes.io/os";

impl PodEntry {
    /// `replica_sets` maps a ReplicaSet (namespace, name) to its owning Deployment, if any.
    pub fn from_object(pod: &Pod, replica_sets: &BTreeMap<Key, Option<String>>) -> Option<Self> {
        let namespace = pod.metadata.namespace.clone()?;
        let spec = pod.spec.as_ref()?;
        let owner = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .map(|o| {
                let kind = OwnerKind::parse(&o.kind);
                match (
                    &kind,
                    replica_sets.get(&(namespace.clone(), o.name.clone())),
                ) {
                    (OwnerKind::Workload(Kind::ReplicaSet), Some(Some(deployment))) => {
                        WorkloadRef {
                            kind: OwnerKind::Workload(Kind::Deployment),
                            namespace: namespace.clone(),
                            name: deployment.clone(),
                        }
                    }
                    _ => WorkloadRef {
                        kind,
                        namespace: namespace.clone(),
                        name: o.name.clone(),
                    },
                }
            });
        let containers = spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
            .map(ContainerEnv::from_container)
            .collect();
        let env_from = spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
            .any(|c| c.env_from.as_ref().is_some_and(|e| !e.is_empty()));
        Some(Self {
            name: pod.metadata.name.clone()?,
            service_account: spec
                .service_account_name
                .clone()
                .unwrap_or_else(|| "default".into()),
            node_name: spec.node_name.clone(),
            os_selector: spec
                .node_selector
                .as_ref()
                .and_then(|s| s.get(OS_LABEL).cloned()),
            fargate_profile: pod
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(FARGATE_PROFILE_LABEL).cloned()),
            namespace,
            owner,
            containers,
            env_from,
        })
    }

    pub fn key(&self) -> Key {
        (self.namespace.clone(), self.service_account.clone())
    }
}

/// A node, reduced to where Pod Identity cannot serve.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeEntry {
    pub os: Option<String>,
    pub fargate: bool,
}

impl NodeEntry {
    pub fn from_object(node: &Node) -> Option<(String, Self)> {
        let labels = node.metadata.labels.as_ref();
        let label = |k: &str| labels.and_then(|l| l.get(k)).cloned();
        let os = label(OS_LABEL).or_else(|| {
            node.status
                .as_ref()
                .and_then(|s| s.node_info.as_ref())
                .map(|i| i.operating_system.clone())
        });
        Some((
            node.metadata.name.clone()?,
            Self {
                os,
                fargate: label(COMPUTE_TYPE_LABEL).as_deref() == Some("fargate"),
            },
        ))
    }
}

/// A workload's pod template, for ServiceAccounts whose workloads have no pods right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateUse {
    pub workload: WorkloadRef,
    pub service_account: String,
}

/// A role's trust policy as IAM answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum RoleState {
    /// The trust policy document (decoded JSON text).
    Found {
        trust_policy: String,
    },
    NotFound,
    /// IAM could not be read (the message says why).
    Unreadable {
        message: String,
    },
}

/// Where associations live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum TargetInfo {
    Eks { cluster: String },
    File { path: String },
}

/// The existing associations: the total (the per-cluster limit) and the details of those of
/// ServiceAccounts in the inventory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Associations {
    pub total: usize,
    /// Every ServiceAccount with an association.
    #[serde(skip)]
    pub present: std::collections::BTreeSet<Key>,
    /// Details of those the run asked about.
    #[serde(skip)]
    pub by_service_account: BTreeMap<Key, Association>,
}

impl Associations {
    pub fn get(&self, namespace: &str, service_account: &str) -> Option<&Association> {
        self.by_service_account
            .get(&(namespace.to_string(), service_account.to_string()))
    }
}

/// Everything the checks read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    pub annotation_prefix: String,
    /// Annotated with `<prefix>/role-arn` (and within the selectors), sorted; a value that is
    /// not a role ARN included (its row is blocked).
    pub service_accounts: Vec<ServiceAccountEntry>,
    /// Pods of the ServiceAccounts above and of those with an association.
    pub pods: Vec<PodEntry>,
    pub templates: Vec<TemplateUse>,
    pub nodes: BTreeMap<String, NodeEntry>,
    /// Whether nodes could be listed (if not, only pod labels and selectors tell).
    pub nodes_listed: bool,
    pub associations: Associations,
    /// By role ARN.
    pub roles: BTreeMap<String, RoleState>,
    /// The AWS account the cluster runs in, when known.
    pub cluster_account: Option<String>,
}

impl Inventory {
    pub fn pods_of<'a>(
        &'a self,
        namespace: &'a str,
        service_account: &'a str,
    ) -> impl Iterator<Item = &'a PodEntry> + 'a {
        self.pods
            .iter()
            .filter(move |p| p.namespace == namespace && p.service_account == service_account)
    }
}

/// `arn:PARTITION:iam::ACCOUNT:role/PATH/NAME` → `(account, name)`.
pub fn role_parts(arn: &str) -> Option<(&str, &str)> {
    let role = crate::identity::role_arn::RoleArn::parse(arn).ok()?;
    Some((role.account, role.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_parts_skip_the_path() {
        assert_eq!(
            role_parts("arn:aws:iam::111122223333:role/team/carts"),
            Some(("111122223333", "carts"))
        );
        assert_eq!(role_parts("carts"), None);
    }

    #[test]
    fn replica_sets_resolve_to_their_deployment() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "carts-7d-x", "namespace": "a", "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "carts-7d", "uid": "u", "controller": true}]},
            "spec": {"serviceAccountName": "carts", "containers": [{"name": "c", "env": [
                {"name": "AWS_ROLE_ARN", "value": "r"},
                {"name": "K", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}]}
        }))
        .unwrap();
        let rs = BTreeMap::from([(("a".into(), "carts-7d".into()), Some("carts".into()))]);
        let entry = PodEntry::from_object(&pod, &rs).unwrap();
        assert_eq!(
            entry.owner.unwrap().to_string(),
            "deployment/a/carts".to_string()
        );
        assert_eq!(entry.containers[0].get("K"), Some(&EnvValue::From));
        assert!(entry.containers[0].has("AWS_ROLE_ARN"));
    }
}
