//! The narrow view of a pod (or a workload's pod template) that the decisions read: mutation
//! (SPEC §2) and policy (SPEC §3) both use it. Fields nobody reads are skipped by serde, never
//! kept: nothing is ever re-serialised from this view, so nothing in the object can be lost.

use std::collections::BTreeMap;

use serde::Deserialize;

pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// A Pod reduced to what the rules read.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodView {
    #[serde(default)]
    pub metadata: MetaView,
    #[serde(default)]
    pub spec: SpecView,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetaView {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub generate_name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    /// `None` when the object has no `labels` map at all (a patch must create it).
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// A pod spec, of a Pod or of a pod template.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecView {
    #[serde(default)]
    pub service_account_name: Option<String>,
    /// Deprecated alias of `serviceAccountName`, still filled by the API server.
    #[serde(default)]
    pub service_account: Option<String>,
    #[serde(default)]
    pub containers: Option<Vec<ContainerView>>,
    #[serde(default)]
    pub init_containers: Option<Vec<ContainerView>>,
    #[serde(default)]
    pub volumes: Option<Vec<Named>>,
    #[serde(default)]
    pub node_selector: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub host_network: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerView {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub env: Option<Vec<EnvView>>,
    #[serde(default)]
    pub volume_mounts: Option<Vec<MountView>>,
    /// Present on native sidecars (`Always`); read for logs only, both kinds get injected.
    #[serde(default)]
    pub restart_policy: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct EnvView {
    #[serde(default)]
    pub name: String,
    /// The literal value; `None` for `valueFrom` (a reference, not a literal).
    #[serde(default)]
    pub value: Option<String>,
}

/// Anything identified by its `name` (volumes).
#[derive(Debug, Default, Deserialize)]
pub struct Named {
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MountView {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub mount_path: String,
}

impl MetaView {
    /// A readable name for logs and messages (`generateName` objects have none yet).
    pub fn display_name(&self) -> String {
        match (&self.name, &self.generate_name) {
            (Some(n), _) if !n.is_empty() => n.clone(),
            (_, Some(g)) if !g.is_empty() => format!("{g}*"),
            _ => "<unnamed>".into(),
        }
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .map(String::as_str)
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .as_ref()
            .and_then(|a| a.get(key))
            .map(String::as_str)
    }

    /// Static pods the kubelet mirrors into the API: nothing may change them, and the kubelet
    /// cannot act on a denial.
    pub fn is_mirror_pod(&self) -> bool {
        self.annotation(MIRROR_ANNOTATION).is_some()
    }
}

impl SpecView {
    /// `serviceAccountName`, else `serviceAccount`, else `default` (what the API server uses).
    pub fn service_account(&self) -> &str {
        self.service_account_name
            .as_deref()
            .filter(|s| !s.is_empty())
            .or(self.service_account.as_deref().filter(|s| !s.is_empty()))
            .unwrap_or("default")
    }

    /// Init containers (native sidecars included) then containers: (list name, index, container).
    pub fn all_containers(&self) -> impl Iterator<Item = (&'static str, usize, &ContainerView)> {
        let init = self.init_containers.iter().flatten().enumerate();
        let main = self.containers.iter().flatten().enumerate();
        init.map(|(i, c)| ("initContainers", i, c))
            .chain(main.map(|(i, c)| ("containers", i, c)))
    }

    pub fn is_windows(&self) -> bool {
        self.node_selector.as_ref().is_some_and(|ns| {
            ["kubernetes.io/os", "beta.kubernetes.io/os"]
                .iter()
                .any(|k| {
                    ns.get(*k)
                        .is_some_and(|v| v.eq_ignore_ascii_case("windows"))
                })
        })
    }
}

impl ContainerView {
    pub fn has_env(&self, name: &str) -> bool {
        self.env.iter().flatten().any(|e| e.name == name)
    }
}

impl PodView {
    /// The pod's ServiceAccount (see [`SpecView::service_account`]).
    pub fn service_account(&self) -> &str {
        self.spec.service_account()
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.metadata.annotation(key)
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.metadata.label(key)
    }

    pub fn display_name(&self) -> String {
        self.metadata.display_name()
    }

    pub fn is_windows(&self) -> bool {
        self.spec.is_windows()
    }
}
