//! What `/mutate` does with a pod once its ServiceAccount's identity is looked up: the pure
//! decision it answers from ([`plan`]), and the question `/validate` asks of the same decision
//! on the pod it sees ([`Plan::missed`], issue 28): would the mutation still give it
//! credentials? Validating webhooks run after every mutating one, so yes means `/mutate` did
//! not run on this pod or did not see its identity.

use super::injection::InjectionSettings;
use super::mutate::{Mutation, Skip, mutate_pod, too_large};
use crate::identity::eks_settings::FailureMode;
use crate::identity::{IdentityKind, Resolution, ResolvedIdentity};
use crate::object::ObjectView;
use crate::policy::Policy;
use crate::policy::verdict::fit_warning;

/// What the mutation decides by, besides the pod and its identity: the policy's role
/// allowlist, what to do when identity sources fail, and the injection settings.
#[derive(Clone, Copy)]
pub struct Rules<'a> {
    pub policy: &'a Policy,
    pub failure_mode: FailureMode,
    pub settings: &'a InjectionSettings,
}

/// What the mutation does with one pod whose identity lookups are done.
#[derive(Debug)]
pub enum Plan<'a> {
    /// Admitted as it is: `reason` for the log line; `warning` tells the user that credentials
    /// were withheld, when they were.
    Unchanged {
        reason: &'static str,
        warning: Option<String>,
    },
    /// The identity to inject, and the patch that does it (empty when the pod carries it).
    Inject {
        identity: &'a ResolvedIdentity,
        mutation: Mutation<'a>,
    },
}

/// The mutation's decision for `pod` (ServiceAccount `sa` in `namespace`) given what the
/// identity sources said (`resolution`). Pure; the pod-level opt-outs ([`Skip`]) and the size
/// bound are checked before the lookups, by the caller.
pub fn plan<'a>(
    pod: &ObjectView<'_>,
    namespace: &str,
    sa: &str,
    resolution: &'a Resolution,
    rules: Rules<'a>,
) -> Plan<'a> {
    let Rules {
        policy,
        failure_mode,
        settings,
    } = rules;
    let unchanged = |reason, warning: Option<String>| Plan::Unchanged { reason, warning };
    let Some(identity) = &resolution.identity else {
        if resolution.complete() {
            return unchanged("no identity", None);
        }
        // Could not tell: never block pod creation on our own outage (docs/contract.md §3:
        // never deny because of a stale cache). The user is told credentials were not injected.
        let warning = format!(
            "AWS credentials not injected: identity lookup for {namespace}/{sa} failed; recreate the pod later"
        );
        return unchanged("identity lookup failed", Some(warning));
    };
    if !resolution.complete() && failure_mode == FailureMode::AdmitUnmutated {
        let warning = format!(
            "AWS credentials not injected: identity sources for {namespace}/{sa} are unavailable"
        );
        return unchanged("identity lookup failed", Some(warning));
    }
    if let IdentityKind::Irsa { role_arn } = &identity.kind
        && !policy.allows_irsa_role(namespace, sa, role_arn)
    {
        let warning = format!(
            "AWS credentials not injected: the IRSA role of ServiceAccount {sa} is not an allowed role for namespace {namespace}"
        );
        return unchanged("role not allowed", Some(fit_warning(warning)));
    }
    Plan::Inject {
        identity,
        mutation: mutate_pod(pod, identity, settings),
    }
}

impl<'a> Plan<'a> {
    /// The identity whose credentials this plan would still give `pod`, when it would: the
    /// pod was missed. `None` for pods that opted out (the skip label, skip-containers
    /// covering every container, containers setting their own AWS credential variables: the
    /// mutation gives them no credentials), mirror pods, pods `/mutate` refuses as too large,
    /// and pods that carry the injection already.
    pub fn missed(
        self,
        pod: &ObjectView<'_>,
        settings: &InjectionSettings,
    ) -> Option<&'a ResolvedIdentity> {
        if Skip::check(pod).is_some() || too_large(&pod.spec, settings).is_some() {
            return None;
        }
        match self {
            Plan::Inject { identity, mutation } if mutation.injects_credentials() => Some(identity),
            _ => None,
        }
    }
}
