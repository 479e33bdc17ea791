//! The kinds the webhook reads: the label set of the metrics and what the policy checks.

/// A kind the webhook knows. Every other kind is let through (and counted as `other`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Pod,
    ServiceAccount,
    Deployment,
    StatefulSet,
    DaemonSet,
    ReplicaSet,
    Job,
    CronJob,
}

impl Kind {
    pub const ALL: [Self; 8] = [
        Self::Pod,
        Self::ServiceAccount,
        Self::Deployment,
        Self::StatefulSet,
        Self::DaemonSet,
        Self::ReplicaSet,
        Self::Job,
        Self::CronJob,
    ];

    /// The kind of a request, from its API group and kind (`apps/Pod` is no kind we know).
    pub fn from_gvk(group: &str, kind: &str) -> Option<Self> {
        Self::from_name(kind).filter(|k| k.group() == group)
    }

    /// The kind from its name alone (a metrics label: the group is not part of it).
    pub fn from_name(kind: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == kind)
    }

    /// The API group (`""` for the core group).
    pub fn group(self) -> &'static str {
        match self {
            Self::Pod | Self::ServiceAccount => "",
            Self::Job | Self::CronJob => "batch",
            _ => "apps",
        }
    }

    /// Whether objects of this kind hold a pod spec (a Pod, or a workload's pod template).
    pub fn has_pods(self) -> bool {
        self != Self::ServiceAccount
    }

    /// Whether objects of this kind own pods through a template (every kind but Pod and
    /// ServiceAccount).
    pub fn is_workload(self) -> bool {
        !matches!(self, Self::Pod | Self::ServiceAccount)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pod => "Pod",
            Self::ServiceAccount => "ServiceAccount",
            Self::Deployment => "Deployment",
            Self::StatefulSet => "StatefulSet",
            Self::DaemonSet => "DaemonSet",
            Self::ReplicaSet => "ReplicaSet",
            Self::Job => "Job",
            Self::CronJob => "CronJob",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Kind::{self, *};

    #[test]
    fn kinds_are_known_by_group_and_name() {
        for (group, kind, want) in [
            ("", "Pod", Some(Pod)),
            ("", "ServiceAccount", Some(ServiceAccount)),
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
            ("", "pod", None),
        ] {
            assert_eq!(Kind::from_gvk(group, kind), want, "{group}/{kind}");
        }
    }
}
