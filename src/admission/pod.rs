//! The narrow view of a pod (or a workload's pod template) that the decisions read: mutation
//! (SPEC §2) and policy (SPEC §3) both use it. Fields nobody reads are skipped by serde, never
//! kept: nothing is ever re-serialised from this view, so nothing in the object can be lost.
//!
//! The view borrows from the request body ([`Text`], [`RawText`]).

use std::borrow::Cow;

use serde::Deserialize;

use super::text::{RawText, StrMap, Text};

pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// A Pod reduced to what the rules read.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodView<'a> {
    #[serde(default, borrow)]
    pub metadata: MetaView<'a>,
    #[serde(default, borrow)]
    pub spec: SpecView<'a>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetaView<'a> {
    #[serde(default, borrow)]
    pub name: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub generate_name: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub namespace: Option<Text<'a>>,
    /// `None` when the object has no `labels` map at all (a patch must create it).
    #[serde(default, borrow)]
    pub labels: Option<StrMap<'a, Text<'a>>>,
    #[serde(default, borrow)]
    pub annotations: Option<StrMap<'a, RawText<'a>>>,
}

/// A pod spec, of a Pod or of a pod template.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecView<'a> {
    #[serde(default, borrow)]
    pub service_account_name: Option<Text<'a>>,
    /// Deprecated alias of `serviceAccountName`, still filled by the API server.
    #[serde(default, borrow)]
    pub service_account: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub containers: Option<Vec<ContainerView<'a>>>,
    #[serde(default, borrow)]
    pub init_containers: Option<Vec<ContainerView<'a>>>,
    #[serde(default, borrow)]
    pub volumes: Option<Vec<Named<'a>>>,
    #[serde(default, borrow)]
    pub node_selector: Option<StrMap<'a, Text<'a>>>,
    #[serde(default)]
    pub host_network: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerView<'a> {
    #[serde(default, borrow)]
    pub name: Text<'a>,
    #[serde(default, borrow)]
    pub env: Option<Vec<EnvView<'a>>>,
    #[serde(default, borrow)]
    pub volume_mounts: Option<Vec<MountView<'a>>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct EnvView<'a> {
    #[serde(default, borrow)]
    pub name: Text<'a>,
    /// The literal value; `None` for `valueFrom` (a reference, not a literal).
    #[serde(default, borrow)]
    pub value: Option<Text<'a>>,
}

/// Anything identified by its `name` (volumes).
#[derive(Debug, Default, Deserialize)]
pub struct Named<'a> {
    #[serde(default, borrow)]
    pub name: Text<'a>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MountView<'a> {
    #[serde(default, borrow)]
    pub name: Text<'a>,
    #[serde(default, borrow)]
    pub mount_path: Text<'a>,
}

impl<'a> MetaView<'a> {
    /// A readable name for logs and messages (`generateName` objects have none yet).
    pub fn display_name(&self) -> String {
        match (&self.name, &self.generate_name) {
            (Some(n), _) if !n.is_empty() => n.to_string(),
            (_, Some(g)) if !g.is_empty() => format!("{}*", &**g),
            _ => "<unnamed>".into(),
        }
    }

    pub fn annotation(&self, key: &str) -> Option<Cow<'a, str>> {
        self.annotations.as_ref()?.get(key).map(RawText::get)
    }

    /// The annotation `prefix/name` (the prefix is configurable), without building the key.
    pub fn prefixed_annotation(&self, prefix: &str, name: &str) -> Option<Cow<'a, str>> {
        self.annotations
            .as_ref()?
            .iter()
            .rev()
            .find(|(k, _)| {
                k.strip_prefix(prefix)
                    .and_then(|rest| rest.strip_prefix('/'))
                    .is_some_and(|rest| rest == name)
            })
            .map(|(_, v)| v.get())
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.as_ref()?.get(key).map(|v| &**v)
    }

    /// Static pods the kubelet mirrors into the API: nothing may change them, and the kubelet
    /// cannot act on a denial.
    pub fn is_mirror_pod(&self) -> bool {
        self.annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(MIRROR_ANNOTATION))
    }
}

impl SpecView<'_> {
    /// `serviceAccountName`, else `serviceAccount`, else `default` (what the API server uses).
    pub fn service_account(&self) -> &str {
        self.service_account_name
            .as_deref()
            .filter(|s| !s.is_empty())
            .or(self.service_account.as_deref().filter(|s| !s.is_empty()))
            .unwrap_or("default")
    }

    /// Init containers (native sidecars included) then containers: (list name, index, container).
    pub fn all_containers(
        &self,
    ) -> impl Iterator<Item = (&'static str, usize, &ContainerView<'_>)> {
        let init = self.init_containers.iter().flatten().enumerate();
        let main = self.containers.iter().flatten().enumerate();
        init.map(|(i, c)| ("initContainers", i, c))
            .chain(main.map(|(i, c)| ("containers", i, c)))
    }

    pub fn is_windows(&self) -> bool {
        self.node_selector.as_ref().is_some_and(|ns| {
            ["kubernetes.io/os", "beta.kubernetes.io/os"]
                .iter()
                .any(|k| ns.get(k).is_some_and(|v| v.eq_ignore_ascii_case("windows")))
        })
    }
}

impl ContainerView<'_> {
    pub fn has_env(&self, name: &str) -> bool {
        self.env.iter().flatten().any(|e| *e.name == *name)
    }
}

impl<'a> PodView<'a> {
    /// The pod's ServiceAccount (see [`SpecView::service_account`]).
    pub fn service_account(&self) -> &str {
        self.spec.service_account()
    }

    pub fn annotation(&self, key: &str) -> Option<Cow<'a, str>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: &str) -> PodView<'_> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn annotations_are_read_by_key_or_by_prefix_and_name() {
        let p = pod(
            r#"{"metadata":{"annotations":{"plain":"v","escaped":"{\"a\":\"\u00e9\\n\"}","k/x":"1"}}}"#,
        );
        assert!(matches!(p.annotation("plain"), Some(Cow::Borrowed("v"))));
        assert_eq!(p.annotation("escaped").unwrap(), "{\"a\":\"é\\n\"}");
        assert_eq!(p.metadata.prefixed_annotation("k", "x").unwrap(), "1");
        assert_eq!(p.metadata.prefixed_annotation("k/", "x"), None);
        assert_eq!(p.annotation("absent"), None);
        assert!(!p.metadata.is_mirror_pod());
    }

    #[test]
    fn an_annotation_or_label_that_is_not_a_string_is_an_error() {
        for bad in [
            r#"{"a":1}"#,
            r#"{"a":null}"#,
            r#"{"a":{"b":"c"}}"#,
            r#"{"a":["b"]}"#,
        ] {
            let json = format!(r#"{{"metadata":{{"annotations":{bad}}}}}"#);
            let e = serde_json::from_str::<PodView>(&json).unwrap_err();
            assert!(e.to_string().contains("expected a string"), "{bad}: {e}");
        }
        let e = serde_json::from_str::<PodView>(r#"{"metadata":{"labels":{"a":1}}}"#).unwrap_err();
        assert!(e.to_string().contains("expected a string"), "{e}");
    }

    #[test]
    fn the_last_of_duplicate_keys_wins_as_in_a_map() {
        let p = pod(r#"{"metadata":{"labels":{"a":"1","a":"2"},"annotations":{"b":"1","b":"2"}}}"#);
        assert_eq!(p.label("a"), Some("2"));
        assert_eq!(p.annotation("b").unwrap(), "2");
        let windows = pod(r#"{"spec":{"nodeSelector":{"kubernetes.io/os":"Windows"}}}"#);
        assert!(windows.is_windows());
    }
}
