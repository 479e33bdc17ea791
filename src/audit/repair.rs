//! `--repair` (`controller` and `audit`): evicts the pods the audit found without the identity
//! they should have (`needs-restart`) and owned by a controller, through the Eviction API, so
//! that their controller recreates them and the webhook mutates the new ones. Bare pods are only
//! reported (nothing would recreate them); a PodDisruptionBudget's refusal (429) is reported and
//! left for the next run, never retried in a loop. Without `--repair`, or with `--dry-run`, the
//! same plan is listed and nothing is evicted.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, EvictParams};

use super::events::EventWriter;
use crate::audit::findings::{Finding, Reason};

/// Owner kinds whose controller recreates an evicted pod (the audit names a pod's top owner: a
/// ReplicaSet's Deployment, a Job's CronJob).
pub const RECREATING_OWNERS: [&str; 6] = [
    "Deployment",
    "ReplicaSet",
    "StatefulSet",
    "DaemonSet",
    "Job",
    "CronJob",
];

/// Whether repair evicts, or only lists what it would evict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RepairMode {
    /// Lists (logs) what would be evicted; the default.
    #[default]
    Off,
    /// `--repair --dry-run`: the same list, said to be a dry run.
    DryRun,
    /// `--repair`: evicts.
    Evict,
}

impl RepairMode {
    /// From the `--repair` and `--dry-run` flags `audit` and `controller` share.
    pub fn from_flags(repair: bool, dry_run: bool) -> Self {
        match (repair, dry_run) {
            (true, false) => Self::Evict,
            (true, true) => Self::DryRun,
            (false, _) => Self::Off,
        }
    }
}

/// How repair acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepairSettings {
    pub mode: RepairMode,
    /// Least time between two evictions (`--repair-interval`, 1s: one a second).
    pub pause: Duration,
}

impl Default for RepairSettings {
    fn default() -> Self {
        Self {
            mode: RepairMode::Off,
            pause: Duration::from_secs(1),
        }
    }
}

/// What repair does with one finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Evict it: its controller recreates it.
    Evict,
    /// Only report it: nothing would recreate it.
    BarePod,
}

/// What repair does with `f`, or nothing when it is not a pod missing its identity.
pub fn plan(f: &Finding) -> Option<Plan> {
    if f.reason != Reason::NeedsRestart || f.kind != "Pod" {
        return None;
    }
    let owner_kind = f
        .owner
        .as_deref()
        .and_then(|o| o.split_once('/'))
        .map(|(k, _)| k);
    Some(match owner_kind {
        Some(kind) if RECREATING_OWNERS.contains(&kind) => Plan::Evict,
        _ => Plan::BarePod,
    })
}

/// How one eviction went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evicted {
    Evicted,
    /// A PodDisruptionBudget forbids it now (429): reported, tried again next run.
    Blocked(String),
    /// The pod is gone already.
    Gone,
    Failed(String),
}

/// Asks the API server to evict `namespace/name` (`policy/v1` Eviction).
pub async fn evict(client: &Client, namespace: &str, name: &str) -> Evicted {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    match api.evict(name, &EvictParams::default()).await {
        Ok(_) => Evicted::Evicted,
        Err(kube::Error::Api(s)) if s.code == 429 => Evicted::Blocked(s.message),
        Err(kube::Error::Api(s)) if s.is_not_found() => Evicted::Gone,
        Err(e) => Evicted::Failed(e.to_string()),
    }
}

/// One line of a repair listing (`audit --repair` and the controller's log).
pub fn line(f: &Finding, plan: Plan, mode: RepairMode, outcome: Option<&Evicted>) -> String {
    let pod = format!("pod {}/{}", f.namespace, f.name);
    let owner = f.owner.as_deref().unwrap_or("no controller");
    match (plan, mode, outcome) {
        (Plan::BarePod, ..) => {
            format!(
                "{pod}: not evicted: a bare pod (nothing would recreate it); recreate it yourself"
            )
        }
        (Plan::Evict, RepairMode::Evict, Some(Evicted::Evicted)) => {
            format!("{pod}: evicted ({owner} recreates it)")
        }
        (Plan::Evict, RepairMode::Evict, Some(Evicted::Blocked(why))) => {
            format!("{pod}: eviction refused by a PodDisruptionBudget, tried again next run: {why}")
        }
        (Plan::Evict, RepairMode::Evict, Some(Evicted::Gone)) => format!("{pod}: gone already"),
        (Plan::Evict, RepairMode::Evict, Some(Evicted::Failed(e))) => {
            format!("{pod}: eviction failed: {e}")
        }
        (Plan::Evict, ..) => format!("{pod}: would be evicted ({owner} recreates it)"),
    }
}

/// The controller's repair: evicts (or lists) what each audit run found.
pub struct Repair {
    pub client: Client,
    pub settings: RepairSettings,
    /// Pods already listed (without `--repair`), so that each run does not list them again.
    listed: Mutex<HashSet<String>>,
}

impl Repair {
    pub fn new(client: Client, settings: RepairSettings) -> Self {
        Self {
            client,
            settings,
            listed: Mutex::new(HashSet::new()),
        }
    }

    /// Acts on `findings` ([`apply`]), logging each pod (listed ones once).
    pub async fn run(&self, findings: &[Finding], events: &EventWriter) {
        let mode = self.settings.mode;
        apply(
            &self.client,
            findings,
            self.settings,
            events,
            |f, plan, outcome| {
                let text = line(f, plan, mode, outcome);
                match outcome {
                    Some(Evicted::Failed(_)) => tracing::warn!("repair: {text}"),
                    Some(_) => tracing::info!("repair: {text}"),
                    None => {
                        let key = f.uid.clone().unwrap_or_else(|| f.name.clone());
                        if self.listed.lock().is_ok_and(|mut l| l.insert(key)) {
                            tracing::info!(?mode, "repair: {text}");
                        }
                    }
                }
            },
        )
        .await;
    }
}

/// Evicts (in [`RepairMode::Evict`]) the pods of `findings` that [`plan`] says to: one
/// eviction per [`RepairSettings::pause`] at most, one Event each; `report` hears every pod
/// with what was done (`None`: listed only).
pub async fn apply(
    client: &Client,
    findings: &[Finding],
    settings: RepairSettings,
    events: &EventWriter,
    mut report: impl FnMut(&Finding, Plan, Option<&Evicted>),
) {
    let mut first = true;
    for (f, plan) in findings.iter().filter_map(|f| plan(f).map(|p| (f, p))) {
        if settings.mode != RepairMode::Evict || plan == Plan::BarePod {
            report(f, plan, None);
            continue;
        }
        // Rate-limited: a burst of evictions is a burst of new pods for the scheduler.
        if !first {
            tokio::time::sleep(settings.pause).await;
        }
        first = false;
        let outcome = evict(client, &f.namespace, &f.name).await;
        report(f, plan, Some(&outcome));
        let reason = match &outcome {
            Evicted::Evicted => "EvictedWithoutIdentity",
            Evicted::Blocked(_) => "EvictionBlocked",
            Evicted::Gone | Evicted::Failed(_) => continue,
        };
        let note = line(f, plan, RepairMode::Evict, Some(&outcome));
        if let Err(e) = events.record(f, reason, "Evict", &note).await {
            tracing::warn!(error = %e, "cannot record the repair event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::findings::Severity;

    fn finding(reason: Reason, kind: &str, owner: Option<&str>) -> Finding {
        Finding {
            namespace: "team-a".into(),
            kind: kind.into(),
            name: "carts-1".into(),
            reason,
            severity: Severity::Restart,
            service_account: Some("carts".into()),
            message: "m".into(),
            owner: owner.map(str::to_string),
            uid: Some("u".into()),
            api_version: "v1".into(),
        }
    }

    #[test]
    fn only_pods_missing_their_identity_are_evicted_and_only_when_recreated() {
        let f = |owner| finding(Reason::NeedsRestart, "Pod", owner);
        for owner in [
            "Deployment/carts",
            "ReplicaSet/carts-5f6",
            "StatefulSet/db",
            "DaemonSet/agent",
            "Job/once",
            "CronJob/nightly",
        ] {
            assert_eq!(plan(&f(Some(owner))), Some(Plan::Evict), "{owner}");
        }
        assert_eq!(plan(&f(None)), Some(Plan::BarePod));
        assert_eq!(plan(&f(Some("Widget/w"))), Some(Plan::BarePod));
        // Other findings are not repaired: a pod on IRSA keeps working, a workload is no pod.
        assert_eq!(
            plan(&finding(
                Reason::IrsaWithAssociation,
                "Pod",
                Some("Deployment/c")
            )),
            None
        );
        assert_eq!(plan(&finding(Reason::NoIdentity, "Deployment", None)), None);
    }

    #[test]
    fn lines_say_what_happened_or_would() {
        let f = finding(Reason::NeedsRestart, "Pod", Some("Deployment/carts"));
        assert_eq!(
            line(&f, Plan::Evict, RepairMode::DryRun, None),
            "pod team-a/carts-1: would be evicted (Deployment/carts recreates it)"
        );
        assert_eq!(
            line(&f, Plan::Evict, RepairMode::Evict, Some(&Evicted::Evicted)),
            "pod team-a/carts-1: evicted (Deployment/carts recreates it)"
        );
        let blocked = line(
            &f,
            Plan::Evict,
            RepairMode::Evict,
            Some(&Evicted::Blocked("budget".into())),
        );
        assert!(blocked.contains("PodDisruptionBudget") && blocked.ends_with("budget"));
        assert!(line(&f, Plan::BarePod, RepairMode::Evict, None).contains("bare pod"));
    }
}
