//! Narrow views of the objects the policy checks: the pod spec of a Pod, or the pod template of
//! a workload, reduced to the ServiceAccount and the containers' literal env values.

use serde::Deserialize;

use super::verdict::StaticCredential;
use crate::admission::pod::{MetaView, SpecView};

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
    /// The kind of a request, from its API group and kind.
    pub fn from_gvk(group: &str, kind: &str) -> Option<Self> {
        Some(match (group, kind) {
            ("", "Pod") => Self::Pod,
            ("apps", "Deployment") => Self::Deployment,
            ("apps", "StatefulSet") => Self::StatefulSet,
            ("apps", "DaemonSet") => Self::DaemonSet,
            ("apps", "ReplicaSet") => Self::ReplicaSet,
            ("batch", "Job") => Self::Job,
            ("batch", "CronJob") => Self::CronJob,
            _ => return None,
        })
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
    pub fn read(kind: WorkloadKind, raw: &'a serde_json::value::RawValue) -> Result<Self, String> {
        use crate::admission::read_object;
        let what = kind.as_str();
        Ok(match kind {
            WorkloadKind::Pod => {
                let o: PodObject = read_object(raw, what)?;
                Self {
                    metadata: o.metadata,
                    pod: o.spec,
                }
            }
            WorkloadKind::CronJob => {
                let o: CronJobObject = read_object(raw, what)?;
                Self {
                    metadata: o.metadata,
                    pod: o.spec.job_template.spec.template.spec,
                }
            }
            _ => {
                let o: TemplateObject = read_object(raw, what)?;
                Self {
                    metadata: o.metadata,
                    pod: o.spec.template.spec,
                }
            }
        })
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
}
