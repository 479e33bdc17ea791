//! Narrow views of the objects the policy checks: the pod spec of a Pod, or the pod template of
//! a workload, reduced to the ServiceAccount and the containers' literal env values.

use std::fmt;

use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use super::verdict::StaticCredential;
use crate::admission::pod::{MetaView, SpecView};
use crate::admission::read_object;
use crate::admission::text::Text;

/// The environment variables that carry static AWS keys.
pub const STATIC_KEY_VARS: [&str; 2] = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"];

/// The kinds whose pods the policy checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkloadKind {
    Pod,
    Deployment,
    StatefulSet,
    DaemonSet,
    ReplicaSet,
    Job,
    CronJob,
}

impl WorkloadKind {
    const ALL: [Self; 7] = [
        Self::Pod,
        Self::Deployment,
        Self::StatefulSet,
        Self::DaemonSet,
        Self::ReplicaSet,
        Self::Job,
        Self::CronJob,
    ];

    /// The kind of a request, from its API group and kind.
    pub fn from_gvk(group: &str, kind: &str) -> Option<Self> {
        Self::from_name(kind).filter(|k| k.group() == group)
    }

    /// The kind from its name alone (an object's `kind`; its group is in `apiVersion`).
    pub(crate) fn from_name(kind: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == kind)
    }

    fn group(self) -> &'static str {
        match self {
            Self::Pod => "",
            Self::Job | Self::CronJob => "batch",
            _ => "apps",
        }
    }

    /// Where the pod spec sits in an object of this kind.
    pub(crate) fn shape(self) -> Shape {
        match self {
            Self::Pod => Shape::Pod,
            Self::CronJob => Shape::CronJob,
            _ => Shape::Template,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pod => "Pod",
            Self::Deployment => "Deployment",
            Self::StatefulSet => "StatefulSet",
            Self::DaemonSet => "DaemonSet",
            Self::ReplicaSet => "ReplicaSet",
            Self::Job => "Job",
            Self::CronJob => "CronJob",
        }
    }
}

/// Containers (init containers and native sidecars included) that set a static AWS key as a
/// literal value; a `valueFrom` reference is not a literal.
pub fn static_credentials(pod: &SpecView) -> Vec<StaticCredential> {
    let mut found = Vec::new();
    for (_, _, c) in pod.all_containers() {
        for e in c.env.iter().flatten() {
            if STATIC_KEY_VARS.contains(&&*e.name)
                && e.value.as_deref().is_some_and(|v| !v.is_empty())
            {
                found.push(StaticCredential {
                    container: c.name.to_string(),
                    variable: e.name.to_string(),
                });
            }
        }
    }
    found
}

#[derive(Debug, Default, Deserialize)]
struct Template<'a> {
    #[serde(default, borrow)]
    spec: SpecView<'a>,
}

#[derive(Debug, Default, Deserialize)]
struct WithTemplate<'a> {
    #[serde(default, borrow)]
    template: Template<'a>,
}

#[derive(Debug, Default, Deserialize)]
struct JobTemplate<'a> {
    #[serde(default, borrow)]
    spec: WithTemplate<'a>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CronJobSpec<'a> {
    #[serde(default, borrow)]
    job_template: JobTemplate<'a>,
}

#[derive(Debug, Deserialize)]
struct PodObject<'a> {
    #[serde(default, borrow)]
    metadata: MetaView<'a>,
    #[serde(default, borrow)]
    spec: SpecView<'a>,
}

#[derive(Debug, Deserialize)]
struct TemplateObject<'a> {
    #[serde(default, borrow)]
    metadata: MetaView<'a>,
    #[serde(default, borrow)]
    spec: WithTemplate<'a>,
}

#[derive(Debug, Deserialize)]
struct CronJobObject<'a> {
    #[serde(default, borrow)]
    metadata: MetaView<'a>,
    #[serde(default, borrow)]
    spec: CronJobSpec<'a>,
}

/// A Pod or workload reduced to what the policy reads (borrowing from the request body).
#[derive(Debug, Default)]
pub struct WorkloadView<'a> {
    pub metadata: MetaView<'a>,
    /// The pod spec (of the pod, or of the pod template).
    pub pod: SpecView<'a>,
}

impl<'a> WorkloadView<'a> {
    /// Reads the object of a request of `kind`; the error names the field that was wrong.
    pub fn read(kind: WorkloadKind, raw: &'a RawValue) -> Result<Self, String> {
        let what = kind.as_str();
        Ok(match kind.shape() {
            Shape::Pod => {
                let o: PodObject = read_object(raw, what)?;
                Self {
                    metadata: o.metadata,
                    pod: o.spec,
                }
            }
            Shape::CronJob => {
                let o: CronJobObject = read_object(raw, what)?;
                Self {
                    metadata: o.metadata,
                    pod: o.spec.job_template.spec.template.spec,
                }
            }
            Shape::Template => {
                let o: TemplateObject = read_object(raw, what)?;
                Self {
                    metadata: o.metadata,
                    pod: o.spec.template.spec,
                }
            }
        })
    }
}

/// Where an object keeps its pod spec: `spec` (Pod), `spec.template.spec` (Deployment,
/// StatefulSet, DaemonSet, ReplicaSet, Job), `spec.jobTemplate.spec.template.spec` (CronJob).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    Pod,
    Template,
    CronJob,
}

/// How [`ObjectView`] read the object's `spec`.
#[derive(Debug, Default)]
pub(crate) enum SpecRead<'a> {
    /// No `spec`: every kind reads that as an empty pod spec.
    #[default]
    Absent,
    /// Read in the shape that the object's `kind` gives.
    Read(Shape, SpecView<'a>),
    /// Skipped: `kind` came after `spec`, or is not a kind whose pods are checked.
    Skipped,
}

/// Any object the validator reads (a Pod, a workload, a ServiceAccount), read in the same pass
/// as the review. The object's own `kind`, which the API server writes before `spec`, says where
/// the pod spec is. Use it through [`ObjectView::fits`]: when it cannot stand for what
/// [`WorkloadView::read`] would read for the request's kind, read the raw object instead.
#[derive(Debug, Default)]
pub struct ObjectView<'a> {
    metadata: MetaView<'a>,
    spec: SpecRead<'a>,
}

impl<'a> ObjectView<'a> {
    /// An object read elsewhere (the hand-written reader, `admission/scan.rs`).
    pub(crate) fn from_parts(metadata: MetaView<'a>, spec: SpecRead<'a>) -> Self {
        Self { metadata, spec }
    }

    /// Whether this view holds what a request of `kind` (`None`: not a workload, so only the
    /// metadata is read) needs: the same values the raw object would give.
    pub fn fits(&self, kind: Option<WorkloadKind>) -> bool {
        match (kind, &self.spec) {
            (None, _) | (Some(_), SpecRead::Absent) => true,
            (Some(kind), SpecRead::Read(shape, _)) => kind.shape() == *shape,
            (Some(_), SpecRead::Skipped) => false,
        }
    }

    /// The workload view, when the view [`fits`](Self::fits) `kind`.
    pub fn into_workload(self, kind: WorkloadKind) -> Option<WorkloadView<'a>> {
        if !self.fits(Some(kind)) {
            return None;
        }
        let pod = match self.spec {
            SpecRead::Read(_, pod) => pod,
            _ => SpecView::default(),
        };
        Some(WorkloadView {
            metadata: self.metadata,
            pod,
        })
    }

    pub fn into_service_account(self) -> ServiceAccountView<'a> {
        ServiceAccountView {
            metadata: self.metadata,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for ObjectView<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ObjectView<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Kubernetes object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                // Duplicates are errors, as for the derived views, so that a body this refuses
                // is read again the general way and answered as before.
                // Outer: `kind` seen; inner: a kind whose pods are checked.
                let mut shape: Option<Option<Shape>> = None;
                let mut metadata = None;
                let mut spec = None;
                while let Some(key) = map.next_key::<Text<'de>>()? {
                    match key.as_str() {
                        "kind" if shape.is_some() => {
                            return Err(de::Error::duplicate_field("kind"));
                        }
                        "kind" => {
                            let kind = map.next_value::<Text<'de>>()?;
                            shape = Some(WorkloadKind::from_name(&kind).map(WorkloadKind::shape));
                        }
                        "metadata" if metadata.is_some() => {
                            return Err(de::Error::duplicate_field("metadata"));
                        }
                        "metadata" => metadata = Some(map.next_value()?),
                        "spec" if spec.is_some() => return Err(de::Error::duplicate_field("spec")),
                        "spec" => {
                            spec = Some(match shape.flatten() {
                                Some(Shape::Pod) => SpecRead::Read(Shape::Pod, map.next_value()?),
                                Some(Shape::Template) => {
                                    let s: WithTemplate = map.next_value()?;
                                    SpecRead::Read(Shape::Template, s.template.spec)
                                }
                                Some(Shape::CronJob) => {
                                    let s: CronJobSpec = map.next_value()?;
                                    SpecRead::Read(
                                        Shape::CronJob,
                                        s.job_template.spec.template.spec,
                                    )
                                }
                                None => {
                                    map.next_value::<IgnoredAny>()?;
                                    SpecRead::Skipped
                                }
                            });
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(ObjectView {
                    metadata: metadata.unwrap_or_default(),
                    spec: spec.unwrap_or_default(),
                })
            }
        }
        d.deserialize_map(V)
    }
}

/// A ServiceAccount reduced to its name and annotations.
#[derive(Debug, Deserialize)]
pub struct ServiceAccountView<'a> {
    #[serde(default, borrow)]
    pub metadata: MetaView<'a>,
}

impl ServiceAccountView<'_> {
    /// The value of `<prefix>/role-arn`, trimmed; `None` when absent or blank.
    pub fn role_arn(&self, prefix: &str) -> Option<String> {
        let arn = self
            .metadata
            .prefixed_annotation(prefix, crate::identity::sa::ROLE_ARN)?;
        Some(arn.trim())
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> &serde_json::value::RawValue {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn reads_each_kind_template() {
        let tpl = r#"{"template":{"spec":{"serviceAccountName":"a","containers":[{"name":"c","env":[{"name":"AWS_ACCESS_KEY_ID","value":"AKIA"}]}]}}}"#;
        let obj = format!(r#"{{"metadata":{{"name":"x"}},"spec":{tpl}}}"#);
        let v = WorkloadView::read(WorkloadKind::Deployment, raw(&obj)).unwrap();
        assert_eq!(v.pod.service_account(), "a");
        assert_eq!(static_credentials(&v.pod).len(), 1);
        let cron =
            format!(r#"{{"metadata":{{"name":"x"}},"spec":{{"jobTemplate":{{"spec":{tpl}}}}}}}"#);
        let v = WorkloadView::read(WorkloadKind::CronJob, raw(&cron)).unwrap();
        assert_eq!(v.pod.service_account(), "a");
        let pod = r#"{"metadata":{"name":"p"},"spec":{"serviceAccount":"legacy"}}"#;
        let v = WorkloadView::read(WorkloadKind::Pod, raw(pod)).unwrap();
        assert_eq!(v.pod.service_account(), "legacy");
        let none = r#"{"metadata":{"name":"p"},"spec":{}}"#;
        let v = WorkloadView::read(WorkloadKind::ReplicaSet, raw(none)).unwrap();
        assert_eq!(v.pod.service_account(), "default");
    }

    #[test]
    fn secret_references_are_not_static_keys() {
        let pod = r#"{"spec":{"containers":[{"name":"c","env":[{"name":"AWS_SECRET_ACCESS_KEY","valueFrom":{"secretKeyRef":{"name":"s","key":"k"}}},{"name":"AWS_ACCESS_KEY_ID","value":""}]}]}}"#;
        let v = WorkloadView::read(WorkloadKind::Pod, raw(pod)).unwrap();
        assert!(static_credentials(&v.pod).is_empty());
    }

    #[test]
    fn unreadable_object_names_the_field() {
        let bad = r#"{"spec":{"template":{"spec":{"containers":"nope"}}}}"#;
        let e = WorkloadView::read(WorkloadKind::Job, raw(bad)).unwrap_err();
        assert!(e.contains("spec.template.spec.containers"), "{e}");
        assert!(e.contains("Job"), "{e}");
    }

    #[test]
    fn kinds_are_known_by_group_and_name() {
        use WorkloadKind::*;
        for (group, kind, want) in [
            ("", "Pod", Some(Pod)),
            ("apps", "Deployment", Some(Deployment)),
            ("apps", "StatefulSet", Some(StatefulSet)),
            ("apps", "DaemonSet", Some(DaemonSet)),
            ("apps", "ReplicaSet", Some(ReplicaSet)),
            ("batch", "Job", Some(Job)),
            ("batch", "CronJob", Some(CronJob)),
            ("apps", "Pod", None),
            ("", "Deployment", None),
            ("extensions", "Deployment", None),
            ("batch", "Deployment", None),
            ("", "ServiceAccount", None),
            ("", "pod", None),
        ] {
            assert_eq!(WorkloadKind::from_gvk(group, kind), want, "{group}/{kind}");
        }
    }

    fn object(s: &str) -> ObjectView<'_> {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn object_view_reads_the_pod_spec_where_the_objects_kind_keeps_it() {
        let spec = r#"{"serviceAccountName":"a","containers":[{"name":"c","env":[{"name":"AWS_ACCESS_KEY_ID","value":"AKIA"}]}]}"#;
        let tpl = format!(r#"{{"template":{{"spec":{spec}}}}}"#);
        for (kind, body) in [
            (WorkloadKind::Pod, spec.to_string()),
            (WorkloadKind::Deployment, tpl.clone()),
            (WorkloadKind::StatefulSet, tpl.clone()),
            (WorkloadKind::DaemonSet, tpl.clone()),
            (WorkloadKind::ReplicaSet, tpl.clone()),
            (WorkloadKind::Job, tpl.clone()),
            (
                WorkloadKind::CronJob,
                format!(r#"{{"jobTemplate":{{"spec":{tpl}}}}}"#),
            ),
        ] {
            let name = kind.as_str();
            let text = format!(
                r#"{{"kind":"{name}","apiVersion":"v1","metadata":{{"name":"x"}},"spec":{body}}}"#
            );
            let o = object(&text);
            assert!(o.fits(Some(kind)), "{name}");
            let v = o.into_workload(kind).unwrap();
            assert_eq!(v.pod.service_account(), "a", "{name}");
            assert_eq!(static_credentials(&v.pod).len(), 1, "{name}");
            // The same values as the raw read.
            let raw = WorkloadView::read(kind, raw(&text)).unwrap();
            assert_eq!(format!("{raw:?}"), format!("{v:?}"), "{name}");
        }
    }

    #[test]
    fn object_view_only_fits_a_request_whose_kind_reads_the_same_spec() {
        let pod = r#"{"kind":"Pod","spec":{"serviceAccountName":"a"}}"#;
        assert!(object(pod).fits(Some(WorkloadKind::Pod)));
        assert!(!object(pod).fits(Some(WorkloadKind::Deployment)));
        assert!(object(pod).into_workload(WorkloadKind::CronJob).is_none());
        // Deployment and Job keep their pods in the same place.
        let job = r#"{"kind":"Job","spec":{"template":{"spec":{"serviceAccountName":"a"}}}}"#;
        assert!(object(job).fits(Some(WorkloadKind::Deployment)));
        // A spec before the kind, no kind, or a kind of no workload: the spec was not read.
        for text in [
            r#"{"spec":{"serviceAccountName":"a"},"kind":"Pod"}"#,
            r#"{"spec":{"serviceAccountName":"a"}}"#,
            r#"{"kind":"ConfigMap","spec":{"serviceAccountName":"a"}}"#,
        ] {
            assert!(!object(text).fits(Some(WorkloadKind::Pod)), "{text}");
            // Requests that read only the metadata (ServiceAccounts) are served all the same.
            assert!(object(text).fits(None), "{text}");
        }
        // No spec at all reads as an empty pod spec, for every kind, as the raw read does.
        let bare = r#"{"metadata":{"name":"x"}}"#;
        assert!(object(bare).fits(Some(WorkloadKind::CronJob)));
        let v = object(bare).into_workload(WorkloadKind::CronJob).unwrap();
        assert_eq!(v.pod.service_account(), "default");
    }

    #[test]
    fn object_view_refuses_what_it_cannot_read_as_the_derived_views_would() {
        // The handler then reads the body the general way, which answers as before: with the
        // field's error, or (a `kind` that is not a string, which no view reads) with the decision.
        for text in [
            r#"{"kind":"Pod","spec":{},"spec":{}}"#,
            r#"{"kind":"Pod","metadata":{},"metadata":{}}"#,
            r#"{"kind":"Pod","kind":"Pod"}"#,
            r#"{"kind":"Pod","spec":{"containers":"nope"}}"#,
            r#"{"kind":7}"#,
            r#"[]"#,
        ] {
            assert!(serde_json::from_str::<ObjectView>(text).is_err(), "{text}");
        }
        // Escaped keys are the same keys.
        let o = object(r#"{"ki\u006ed":"Pod","sp\u0065c":{"serviceAccountName":"a"}}"#);
        let v = o.into_workload(WorkloadKind::Pod).unwrap();
        assert_eq!(v.pod.service_account(), "a");
    }

    #[test]
    fn object_view_keeps_a_service_accounts_annotations() {
        let sa = r#"{"kind":"ServiceAccount","metadata":{"name":"s","annotations":{"eks.amazonaws.com/role-arn":" arn:aws:iam::1:role/r "}}}"#;
        let view = object(sa).into_service_account();
        assert_eq!(
            view.role_arn("eks.amazonaws.com").as_deref(),
            Some("arn:aws:iam::1:role/r")
        );
    }
}
