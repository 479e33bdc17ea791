//! One view for every object the webhook reads: its metadata and its `spec`, reduced to what
//! the rules read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::map_only::{self, Fields, from_objects_only};
use super::{Kind, Text};

// Every view reads from JSON objects only (see `map_only`).
from_objects_only!(
    ObjectView,
    SpecView,
    ContainerView,
    EnvView,
    Named,
    MountView,
);

// ... and write the same fields back (the background audit keeps objects as their view).
macro_rules! serialize_derived {
    ($($ty:ident),+ $(,)?) => {$(
        impl Serialize for $ty<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                $ty::serialize(self, s)
            }
        }
    )+};
}
serialize_derived!(
    ObjectView,
    MetaView,
    SpecView,
    ContainerView,
    EnvView,
    Named,
    MountView,
);

pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// A Pod, a workload or a ServiceAccount (which has no `spec`), read whatever its kind: the
/// kind only says where to look for the pod spec ([`ObjectView::pod_spec`]).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(remote = "Self")]
pub struct ObjectView<'a> {
    #[serde(default, borrow)]
    pub metadata: MetaView<'a>,
    #[serde(default, borrow)]
    pub spec: SpecView<'a>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(remote = "Self", rename_all = "camelCase")]
pub struct MetaView<'a> {
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub name: Option<Text<'a>>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub generate_name: Option<Text<'a>>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<Text<'a>>,
    /// `None` when the object has no `labels` map at all (a patch must create it).
    #[serde(
        default,
        borrow,
        deserialize_with = "super::bounded::map",
        skip_serializing_if = "Option::is_none"
    )]
    pub labels: Option<BTreeMap<Text<'a>, Text<'a>>>,
    #[serde(
        default,
        borrow,
        deserialize_with = "super::bounded::map",
        skip_serializing_if = "Option::is_none"
    )]
    pub annotations: Option<BTreeMap<Text<'a>, Text<'a>>>,
    /// Whether the object had a `metadata` object at all: `false` for the default of an object
    /// without one (a patch adding labels must create it).
    #[serde(skip)]
    pub present: bool,
}

// Read from JSON objects only, like every view, and marked as present.
impl<'de: 'a, 'a> Fields<'de> for MetaView<'a> {
    fn fields<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        MetaView::deserialize(d).map(|m| MetaView { present: true, ..m })
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for MetaView<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        map_only::deserialize(d)
    }
}

/// The `spec` of an object: a pod spec (of a Pod, or of a template), or a workload's spec whose
/// pods are in `template` (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job) or in
/// `jobTemplate` (CronJob). Kubernetes never sends both kinds of fields in one spec; holding
/// them in one struct lets serde read any object in one pass, before its kind is looked at.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(remote = "Self", rename_all = "camelCase")]
pub struct SpecView<'a> {
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<Text<'a>>,
    /// Deprecated alias of `serviceAccountName`, still filled by the API server.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<Text<'a>>,
    #[serde(
        default,
        borrow,
        deserialize_with = "super::bounded::pod_list",
        skip_serializing_if = "Option::is_none"
    )]
    pub containers: Option<Vec<ContainerView<'a>>>,
    #[serde(
        default,
        borrow,
        deserialize_with = "super::bounded::pod_list",
        skip_serializing_if = "Option::is_none"
    )]
    pub init_containers: Option<Vec<ContainerView<'a>>>,
    /// Debugging containers (`kubectl debug`), added through the `ephemeralcontainers`
    /// subresource; never injected.
    #[serde(
        default,
        borrow,
        deserialize_with = "super::bounded::pod_list",
        skip_serializing_if = "Option::is_none"
    )]
    pub ephemeral_containers: Option<Vec<ContainerView<'a>>>,
    #[serde(
        default,
        borrow,
        deserialize_with = "super::bounded::pod_list",
        skip_serializing_if = "Option::is_none"
    )]
    pub volumes: Option<Vec<Named<'a>>>,
    #[serde(
        default,
        borrow,
        deserialize_with = "super::bounded::map",
        skip_serializing_if = "Option::is_none"
    )]
    pub node_selector: Option<BTreeMap<Text<'a>, Text<'a>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_network: Option<bool>,
    /// A workload's pod template.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub template: Option<Box<TemplateView<'a>>>,
    /// A CronJob's Job template (whose `spec.template` is the pod template).
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub job_template: Option<Box<TemplateView<'a>>>,
}

/// A template: a pod template, or a CronJob's Job template. Read as an object is (its
/// `metadata` and its `spec`).
pub type TemplateView<'a> = ObjectView<'a>;

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(remote = "Self", rename_all = "camelCase")]
pub struct ContainerView<'a> {
    #[serde(default, borrow)]
    pub name: Text<'a>,
    #[serde(
        default,
        borrow,
        deserialize_with = "super::bounded::list",
        skip_serializing_if = "Option::is_none"
    )]
    pub env: Option<Vec<EnvView<'a>>>,
    #[serde(
        default,
        borrow,
        deserialize_with = "super::bounded::list",
        skip_serializing_if = "Option::is_none"
    )]
    pub volume_mounts: Option<Vec<MountView<'a>>>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(remote = "Self")]
pub struct EnvView<'a> {
    #[serde(default, borrow)]
    pub name: Text<'a>,
    /// The literal value; `None` for `valueFrom` (a reference, not a literal).
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub value: Option<Text<'a>>,
}

/// Anything identified by its `name` (volumes).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(remote = "Self")]
pub struct Named<'a> {
    #[serde(default, borrow)]
    pub name: Text<'a>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(remote = "Self", rename_all = "camelCase")]
pub struct MountView<'a> {
    #[serde(default, borrow)]
    pub name: Text<'a>,
    #[serde(default, borrow)]
    pub mount_path: Text<'a>,
}

/// The pod spec of an object without one (a workload without a template reads as empty).
static EMPTY_SPEC: SpecView<'static> = SpecView {
    service_account_name: None,
    service_account: None,
    containers: None,
    init_containers: None,
    ephemeral_containers: None,
    volumes: None,
    node_selector: None,
    host_network: None,
    template: None,
    job_template: None,
};

impl<'a> ObjectView<'a> {
    /// The pod spec of an object of `kind`: `spec` (Pod), `spec.template.spec` (Deployment,
    /// StatefulSet, DaemonSet, ReplicaSet, Job), `spec.jobTemplate.spec.template.spec`
    /// (CronJob); empty when the object has none (a ServiceAccount).
    pub fn pod_spec(&self, kind: Kind) -> &SpecView<'a> {
        fn template<'s, 'a>(spec: &'s SpecView<'a>) -> Option<&'s SpecView<'a>> {
            spec.template.as_ref().map(|t| &t.spec)
        }
        let found = match kind {
            Kind::Pod => Some(&self.spec),
            Kind::ServiceAccount => None,
            Kind::CronJob => self
                .spec
                .job_template
                .as_ref()
                .and_then(|j| template(&j.spec)),
            Kind::Deployment
            | Kind::StatefulSet
            | Kind::DaemonSet
            | Kind::ReplicaSet
            | Kind::Job => template(&self.spec),
        };
        found.unwrap_or(&EMPTY_SPEC)
    }

    /// The pod's ServiceAccount (see [`SpecView::service_account`]), for an object read as a Pod.
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

impl MetaView<'_> {
    /// A readable name for logs and messages (`generateName` objects have none yet), as
    /// [`crate::shown`] repeats a value: the API server's names are never cut, a hostile
    /// file's (read by `check`) are.
    pub fn display_name(&self) -> String {
        match (&self.name, &self.generate_name) {
            (Some(n), _) if !n.is_empty() => crate::shown::shown(n).into_owned(),
            (_, Some(g)) if !g.is_empty() => format!("{}*", crate::shown::shown(g)),
            _ => "<unnamed>".into(),
        }
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.as_ref()?.get(key).map(Text::as_str)
    }

    /// The annotation `prefix/name` (the prefix is configurable), without building the key.
    pub fn prefixed_annotation(&self, prefix: &str, name: &str) -> Option<&str> {
        self.annotations.as_ref()?.iter().find_map(|(k, v)| {
            let rest = k.strip_prefix(prefix)?.strip_prefix('/')?;
            (rest == name).then_some(v.as_str())
        })
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.as_ref()?.get(key).map(Text::as_str)
    }

    /// Static pods the kubelet mirrors into the API: nothing may change them, and the kubelet
    /// cannot act on a denial.
    pub fn is_mirror_pod(&self) -> bool {
        self.annotation(MIRROR_ANNOTATION).is_some()
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

    /// Every container, ephemeral ones included (what the static-credentials rule reads).
    pub fn every_container(&self) -> impl Iterator<Item = &ContainerView<'_>> {
        self.all_containers()
            .map(|(_, _, c)| c)
            .chain(self.ephemeral_containers.iter().flatten())
    }

    /// Containers of every kind (`containers`, `initContainers`, `ephemeralContainers`).
    pub fn container_count(&self) -> usize {
        [
            &self.containers,
            &self.init_containers,
            &self.ephemeral_containers,
        ]
        .iter()
        .map(|list| list.as_ref().map_or(0, Vec::len))
        .sum()
    }

    pub fn volume_count(&self) -> usize {
        self.volumes.as_ref().map_or(0, Vec::len)
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

impl ContainerView<'_> {
    pub fn has_env(&self, name: &str) -> bool {
        self.env.iter().flatten().any(|e| *e.name == *name)
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    fn object(json: &str) -> ObjectView<'_> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn strings_without_escapes_are_slices_of_the_text() {
        let o = object(r#"{"metadata":{"name":"web","namespace":"a\"b"}}"#);
        assert!(matches!(o.metadata.name.unwrap().0, Cow::Borrowed("web")));
        let ns = o.metadata.namespace.unwrap();
        assert!(matches!(ns.0, Cow::Owned(_)));
        assert_eq!(&*ns, "a\"b");
    }

    #[test]
    fn annotations_are_read_by_key_or_by_prefix_and_name() {
        let o = object(
            r#"{"metadata":{"annotations":{"plain":"v","escaped":"{\"a\":\"\u00e9\\n\"}","k/x":"1"}}}"#,
        );
        assert_eq!(o.annotation("plain"), Some("v"));
        assert_eq!(o.annotation("escaped").unwrap(), "{\"a\":\"é\\n\"}");
        assert_eq!(o.metadata.prefixed_annotation("k", "x").unwrap(), "1");
        assert_eq!(o.metadata.prefixed_annotation("k/", "x"), None);
        assert_eq!(o.annotation("absent"), None);
        assert!(!o.metadata.is_mirror_pod());
    }

    #[test]
    fn an_annotation_or_label_that_is_not_a_string_is_an_error() {
        for bad in [
            r#"{"a":1}"#,
            r#"{"a":null}"#,
            r#"{"a":{"b":"c"}}"#,
            r#"{"a":["b"]}"#,
        ] {
            for field in ["annotations", "labels"] {
                let json = format!(r#"{{"metadata":{{"{field}":{bad}}}}}"#);
                let e = serde_json::from_str::<ObjectView>(&json).unwrap_err();
                assert!(e.to_string().contains("expected a"), "{bad}: {e}");
            }
        }
    }

    #[test]
    fn metadata_is_present_only_when_the_object_has_it() {
        assert!(object(r#"{"metadata":{}}"#).metadata.present);
        assert!(object(r#"{"metadata":{"name":"x"}}"#).metadata.present);
        assert!(!object(r#"{"spec":{}}"#).metadata.present);
        assert!(!object(r#"{"metadatax":{}}"#).metadata.present);
    }

    #[test]
    fn the_last_of_duplicate_keys_wins_as_in_a_map() {
        let o =
            object(r#"{"metadata":{"labels":{"a":"1","a":"2"},"annotations":{"b":"1","b":"2"}}}"#);
        assert_eq!(o.label("a"), Some("2"));
        assert_eq!(o.annotation("b").unwrap(), "2");
        let windows = object(r#"{"spec":{"nodeSelector":{"kubernetes.io/os":"Windows"}}}"#);
        assert!(windows.is_windows());
    }

    #[test]
    fn the_pod_spec_is_where_the_kind_keeps_it() {
        let spec = r#"{"serviceAccountName":"a","containers":[{"name":"c"}]}"#;
        let tpl = format!(r#"{{"template":{{"spec":{spec}}}}}"#);
        for (kind, body) in [
            (Kind::Pod, spec.to_string()),
            (Kind::Deployment, tpl.clone()),
            (Kind::StatefulSet, tpl.clone()),
            (Kind::DaemonSet, tpl.clone()),
            (Kind::ReplicaSet, tpl.clone()),
            (Kind::Job, tpl.clone()),
            (
                Kind::CronJob,
                format!(r#"{{"jobTemplate":{{"spec":{tpl}}}}}"#),
            ),
        ] {
            let text = format!(r#"{{"metadata":{{"name":"x"}},"spec":{body}}}"#);
            let o = object(&text);
            let pod = o.pod_spec(kind);
            assert_eq!(pod.service_account(), "a", "{kind:?}");
            assert_eq!(pod.all_containers().count(), 1, "{kind:?}");
            // Looked for in the wrong place, there is no pod spec.
            let other = if kind == Kind::Pod {
                Kind::Job
            } else {
                Kind::Pod
            };
            assert_eq!(o.pod_spec(other).service_account(), "default", "{kind:?}");
        }
        let bare = object(r#"{"metadata":{"name":"x"}}"#);
        assert_eq!(bare.pod_spec(Kind::CronJob).service_account(), "default");
        assert_eq!(
            bare.pod_spec(Kind::ServiceAccount).all_containers().count(),
            0
        );
    }
}
