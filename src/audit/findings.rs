//! `audit`: the webhook's decisions on what already runs, turned into findings.
//!
//! - a workload or pod the policy warns about or denies (no identity, static keys), reported on
//!   its top owner only (a Deployment, not also its ReplicaSet and pods);
//! - a ServiceAccount whose IRSA role is outside its namespace's allowlist;
//! - a running pod that `/mutate` would still change: created before its association (or IRSA
//!   annotation), or while the webhook was down; it needs a restart to get credentials;
//! - a running pod still on IRSA although its ServiceAccount now has an association (the SDKs read
//!   the web identity variables first, so it keeps using IRSA until restarted).

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;

use super::cluster::ClusterObjects;
use super::decide::{Decided, Decider};
use super::projection::Projected;
use crate::admission::Outcome;
use crate::identity::{Freshness, IdentityKind};
use crate::object::Kind;

/// Why an object is reported (the `reason` label of `audit_violations`; a fixed set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// A workload or pod whose ServiceAccount has no identity.
    NoIdentity,
    /// Another policy warning or denial (static AWS keys, identity sources unavailable).
    Policy,
    /// A ServiceAccount whose IRSA role its namespace may not use.
    RoleNotAllowed,
    /// A running pod without the injection it would get now.
    NeedsRestart,
    /// A running pod on IRSA whose ServiceAccount now has a Pod Identity association.
    IrsaWithAssociation,
}

impl Reason {
    pub const ALL: [Self; 5] = [
        Self::NoIdentity,
        Self::Policy,
        Self::RoleNotAllowed,
        Self::NeedsRestart,
        Self::IrsaWithAssociation,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoIdentity => "no-identity",
            Self::Policy => "policy",
            Self::RoleNotAllowed => "role-not-allowed",
            Self::NeedsRestart => "needs-restart",
            Self::IrsaWithAssociation => "irsa-with-association",
        }
    }
}

/// How the webhook would treat the object if it were created now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// `/validate` would deny it.
    Denied,
    /// `/validate` would warn about it.
    Warned,
    /// Allowed, but it runs without the credentials it would get now.
    Restart,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Denied => "denied",
            Self::Warned => "warned",
            Self::Restart => "restart",
        }
    }
}

/// One thing to fix.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub namespace: String,
    pub kind: String,
    pub name: String,
    pub reason: Reason,
    pub severity: Severity,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    pub message: String,
    /// The controller to act on (`Deployment/carts`), for pods that have one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The `uid` of the object, for events.
    #[serde(skip)]
    pub uid: Option<String>,
    /// The object's `apiVersion`, for events.
    #[serde(skip)]
    pub api_version: String,
}

/// Whether an owner of this kind is a workload, which the audit reports on instead of its pods
/// (a ReplicaSet's Deployment).
fn is_workload(kind: &str) -> bool {
    Kind::from_name(kind).is_some_and(Kind::is_workload)
}

fn controller(object: &Value) -> Option<(&str, &str)> {
    object["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"].as_bool() == Some(true))
        .and_then(|r| Some((r["kind"].as_str()?, r["name"].as_str()?)))
}

fn text<'a>(object: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .fold(object, |v, k| &v[*k])
        .as_str()
        .unwrap_or_default()
}

/// A pod that has finished or is going away is not restarted, nor reported.
fn is_live_pod(pod: &Value) -> bool {
    let phase = text(pod, &["status", "phase"]);
    phase != "Succeeded" && phase != "Failed" && pod["metadata"]["deletionTimestamp"].is_null()
}

/// Whether any container of the pod has the IRSA variables in its env.
fn uses_irsa(pod: &Value) -> bool {
    ["containers", "initContainers"].iter().any(|list| {
        pod["spec"][*list]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| c["env"].as_array().into_iter().flatten())
            .any(|e| matches!(e["name"].as_str(), Some("AWS_ROLE_ARN")))
    })
}

/// Runs the decisions on every object.
pub async fn audit(decider: &Decider<'_>, objects: &ClusterObjects) -> Vec<Finding> {
    let mut findings = Vec::new();
    // ReplicaSet and Job owners, to name a pod's top controller.
    // Workloads are read back once per run (far fewer than pods); pods one at a time below.
    let workloads: Vec<Value> = objects.workloads.iter().map(Projected::value).collect();
    let mut owners: HashMap<(&str, &str, &str), (&str, &str)> = HashMap::new();
    for w in &workloads {
        if let Some(owner) = controller(w) {
            let key = (
                text(w, &["metadata", "namespace"]),
                text(w, &["kind"]),
                text(w, &["metadata", "name"]),
            );
            owners.insert(key, owner);
        }
    }

    for sa in &objects.service_accounts {
        let ns = text(sa, &["metadata", "namespace"]);
        let decided = decider.decide(sa, Some(ns)).await;
        if let Some(f) = policy_finding(sa, &decided, Reason::RoleNotAllowed) {
            findings.push(f);
        }
    }
    for w in &workloads {
        if controller(w).is_some_and(|(kind, _)| is_workload(kind)) {
            continue;
        }
        let ns = text(w, &["metadata", "namespace"]);
        let decided = decider.decide(w, Some(ns)).await;
        if let Some(f) = policy_finding(w, &decided, Reason::NoIdentity) {
            findings.push(f);
        }
    }
    for projected in &objects.pods {
        let pod = &projected.value();
        if !is_live_pod(pod) {
            continue;
        }
        let ns = text(pod, &["metadata", "namespace"]);
        let decided = decider.decide(pod, Some(ns)).await;
        let owned = controller(pod).is_some_and(|(kind, _)| is_workload(kind));
        if !owned && let Some(f) = policy_finding(pod, &decided, Reason::NoIdentity) {
            findings.push(f);
        }
        if decided.mutated() {
            findings.push(restart_finding(decider, pod, &decided, &owners).await);
        }
    }
    findings.sort_by(|a, b| {
        (&a.namespace, &a.kind, &a.name, a.reason).cmp(&(&b.namespace, &b.kind, &b.name, b.reason))
    });
    findings
}

fn base(object: &Value, reason: Reason, severity: Severity, message: String) -> Finding {
    Finding {
        namespace: text(object, &["metadata", "namespace"]).to_string(),
        kind: text(object, &["kind"]).to_string(),
        name: text(object, &["metadata", "name"]).to_string(),
        reason,
        severity,
        service_account: None,
        message,
        owner: None,
        uid: object["metadata"]["uid"].as_str().map(str::to_string),
        api_version: text(object, &["apiVersion"]).to_string(),
    }
}

/// A finding when `/validate` would warn or deny; `missing` is the reason for a missing identity.
fn policy_finding(object: &Value, decided: &Decided, missing: Reason) -> Option<Finding> {
    let v = &decided.validation;
    let severity = match v.outcome {
        Outcome::Denied => Severity::Denied,
        Outcome::Warned => Severity::Warned,
        _ => return None,
    };
    let reason = match (missing, v.reason) {
        (Reason::RoleNotAllowed, _) => Reason::RoleNotAllowed,
        (_, "no identity") => Reason::NoIdentity,
        _ => Reason::Policy,
    };
    let message = v
        .response
        .status
        .as_ref()
        .map(|s| s.message.clone())
        .into_iter()
        .chain(v.response.warnings.iter().cloned())
        .collect::<Vec<_>>()
        .join(" | ");
    let mut f = base(object, reason, severity, message);
    f.service_account = v.service_account.clone();
    Some(f)
}

async fn restart_finding(
    decider: &Decider<'_>,
    pod: &Value,
    decided: &Decided,
    owners: &HashMap<(&str, &str, &str), (&str, &str)>,
) -> Finding {
    let ns = text(pod, &["metadata", "namespace"]);
    let name = text(pod, &["metadata", "name"]);
    let sa = decided
        .mutation
        .as_ref()
        .and_then(|m| m.service_account.clone())
        .unwrap_or_else(|| "default".into());
    // The top controller: a pod's ReplicaSet's Deployment, a Job's CronJob.
    let mut owner = controller(pod);
    while let Some((kind, owner_name)) = owner {
        match owners.get(&(ns, kind, owner_name)) {
            Some(next) => owner = Some(*next),
            None => break,
        }
    }
    let fix = match owner {
        Some((kind @ ("Deployment" | "StatefulSet" | "DaemonSet"), owner_name)) => format!(
            "kubectl rollout restart {}/{owner_name} -n {ns}",
            kind.to_ascii_lowercase()
        ),
        Some(_) => format!("kubectl delete pod {name} -n {ns} (its controller recreates it)"),
        None => format!("recreate pod {name} in namespace {ns}"),
    };
    let identity = decider
        .mutator
        .identities
        .resolve(ns, &sa, Freshness::Cached)
        .await
        .identity;
    let pod_identity = matches!(
        identity.as_ref().map(|i| &i.kind),
        Some(IdentityKind::PodIdentity(_))
    );
    let (reason, message) = if pod_identity && uses_irsa(pod) {
        (
            Reason::IrsaWithAssociation,
            format!(
                "still on IRSA (AWS_ROLE_ARN in its env) although ServiceAccount {sa:?} now has a Pod Identity association; the AWS SDKs use IRSA first until the pod is restarted. Fix: {fix}"
            ),
        )
    } else {
        let what = if pod_identity { "Pod Identity" } else { "IRSA" };
        (
            Reason::NeedsRestart,
            format!(
                "runs without the {what} credentials ServiceAccount {sa:?} now gives (created before its identity, or while the webhook was down). Fix: {fix}"
            ),
        )
    };
    let mut f = base(pod, reason, Severity::Restart, message);
    f.service_account = Some(sa);
    f.owner = owner.map(|(kind, name)| format!("{kind}/{name}"));
    f
}

/// The findings of one audit, and what was looked at.
#[derive(Debug, Default)]
pub struct AuditReport {
    pub findings: Vec<Finding>,
    /// Objects listed, by resource.
    pub scanned: Vec<(&'static str, usize)>,
}

impl AuditReport {
    /// 0 when nothing was found, 1 when something was (exit code 2 is for an audit that could
    /// not run).
    pub fn exit_code(&self) -> u8 {
        if self.findings.is_empty() {
            super::check::exit::CLEAN
        } else {
            super::check::exit::DENIED
        }
    }

    /// Findings by reason, every reason listed.
    pub fn by_reason(&self) -> Vec<(Reason, usize)> {
        Reason::ALL
            .iter()
            .map(|r| (*r, self.findings.iter().filter(|f| f.reason == *r).count()))
            .collect()
    }

    /// Findings by namespace and reason (the `audit_violations` gauges).
    pub fn by_namespace(&self) -> std::collections::BTreeMap<(String, Reason), usize> {
        let mut counts = std::collections::BTreeMap::new();
        for f in &self.findings {
            *counts.entry((f.namespace.clone(), f.reason)).or_default() += 1;
        }
        counts
    }
}
