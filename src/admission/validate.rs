//! The validating webhook (docs/contract.md §3). Policy decisions live in [`crate::policy`]; this is the
//! admission-side entry point: it does the bounded lookups (namespace labels, identities) and
//! turns the verdict into a response. In the webhook it also re-runs the mutation's decision on
//! each created pod, to catch one `/mutate` missed (issue 28, [`Validator::with_missed_injection`]).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::time::Instant;

use super::injection::InjectionSettings;
use super::plan::{Rules, plan};
use super::review::{AdmissionRequest, AdmissionResponse, Object, Operation};
use super::{Decision, Mutator, Outcome};
use crate::identity::eks_settings::FailureMode;
use crate::identity::{Freshness, Identities, IdentityKind, Matched, Resolution, ResolvedIdentity};
use crate::namespaces::NamespaceStore;
use crate::object::{Kind, ObjectView};
use crate::policy::{IdentityCheck, MissedIdentity, Policy, PolicyMode, Scope, Verdict};

/// The validating webhook.
pub struct Validator {
    /// Shared with the mutating webhook ([`Validator::shared_policy`]): the role allowlist
    /// also decides what is injected.
    policy: Arc<ArcSwap<Policy>>,
    identities: Identities,
    namespaces: Option<Arc<dyn NamespaceStore>>,
    /// The mutation's settings, when created pods are checked for a missed injection.
    missed: Option<MissedCheck>,
}

/// What `/validate` needs to run `/mutate`'s decision again: the mutator's live settings.
struct MissedCheck {
    injection: Arc<ArcSwap<InjectionSettings>>,
    failure_mode: FailureMode,
}

impl Default for Validator {
    /// No policy: everything is allowed.
    fn default() -> Self {
        Self::new(Policy::off(), Identities::default())
    }
}

impl Validator {
    /// `identities` should be the mutator's (a clone shares its sources and caches), so the
    /// policy sees exactly what the mutation sees.
    pub fn new(policy: Policy, identities: Identities) -> Self {
        let policy = Arc::new(ArcSwap::from_pointee(policy));
        Self {
            // The allowlist bounds the associations file's entries as the policy is reloaded.
            identities: identities.with_role_bound(policy.clone()),
            policy,
            namespaces: None,
            missed: None,
        }
    }

    /// Checks each created pod for credentials `mutator` would still inject (issue 28): the
    /// webhook's `/validate` does; `check` and `audit`, which run `/validate` on objects that
    /// have not been through `/mutate`, do not (they report such pods as `mutated` and
    /// `needs-restart`).
    pub fn with_missed_injection(mut self, mutator: &Mutator) -> Self {
        self.missed = Some(MissedCheck {
            injection: mutator.injection.clone(),
            failure_mode: mutator.failure_mode,
        });
        self
    }

    /// Namespace labels (without them only the configured modes apply).
    pub fn with_namespaces(mut self, store: Arc<dyn NamespaceStore>) -> Self {
        self.namespaces = Some(store);
        self
    }

    /// Decides on `policy`, shared with another validator (the background audit follows the
    /// webhook's policy as it is reloaded).
    pub fn with_shared_policy(mut self, policy: Arc<ArcSwap<Policy>>) -> Self {
        self.identities = self.identities.with_role_bound(policy.clone());
        self.policy = policy;
        self
    }

    /// Swaps in a new policy (configuration reload).
    pub fn set_policy(&self, policy: Policy) {
        self.policy.store(Arc::new(policy));
    }

    /// The policy as it is swapped on reload, for the mutating webhook
    /// ([`crate::admission::Mutator::with_policy`]).
    pub fn shared_policy(&self) -> Arc<ArcSwap<Policy>> {
        self.policy.clone()
    }

    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// Ready when the namespace labels have synced (the identity sources are the mutator's).
    pub fn ready(&self) -> bool {
        self.namespaces.as_ref().is_none_or(|n| n.ready())
    }

    /// Decides one request. `budget` bounds the lookups (a little under the API server's
    /// timeout for this call).
    pub async fn review(&self, req: &AdmissionRequest<'_>, budget: Duration) -> Decision {
        let deadline = Instant::now() + budget;
        let uid = req.uid.as_str();
        let allow = |reason| Decision::new(AdmissionResponse::allow(uid), Outcome::Allowed, reason);

        let Some(kind) = Kind::from_gvk(&req.kind.group, &req.kind.kind) else {
            return allow("kind not checked");
        };
        // Containers added to a running pod (`kubectl debug`) are checked for static keys;
        // other subresources (status, scale) do not change the pod template.
        let scope = match req.sub_resource() {
            None => Scope::Pod,
            Some("ephemeralcontainers") if kind == Kind::Pod => Scope::EphemeralContainers,
            Some(_) => return allow("subresource"),
        };
        match (kind, req.operation, scope) {
            (_, Operation::Delete | Operation::Connect, _) => {
                return allow("operation not checked");
            }
            // A pod's ServiceAccount and containers' env cannot change after creation.
            (Kind::Pod, Operation::Update, Scope::Pod) => return allow("pod update"),
            _ => {}
        }
        let Some(namespace) = req.namespace.as_deref().filter(|n| !n.is_empty()) else {
            return allow("no namespace");
        };
        let policy = self.policy.load_full();
        if let Some(exemption) = policy.namespace_exemption(namespace) {
            return allow(exemption.as_str());
        }
        let mode = self.mode(&policy, namespace, deadline).await;
        if mode == PolicyMode::Off {
            return allow("policy off");
        }
        let object = match &req.object {
            Some(Object::Read(object)) => object,
            Some(Object::Unreadable(message)) => {
                return Decision::new(
                    AdmissionResponse::deny(uid, 400, message.as_str()),
                    Outcome::Error,
                    "unreadable object",
                );
            }
            None => {
                return Decision::new(
                    AdmissionResponse::deny(uid, 400, "request has no object to validate"),
                    Outcome::Error,
                    "no object",
                );
            }
        };
        if kind == Kind::ServiceAccount {
            self.service_account(req, &policy, mode, namespace, object)
        } else {
            let target = Target {
                namespace,
                kind,
                scope,
            };
            self.workload(req, &policy, mode, target, object, deadline)
                .await
        }
    }

    /// The namespace's mode: configured, tightened by its label when labels can be read.
    async fn mode(&self, policy: &Policy, namespace: &str, deadline: Instant) -> PolicyMode {
        let labels = match &self.namespaces {
            None => None,
            Some(store) => match tokio::time::timeout_at(deadline, store.labels(namespace)).await {
                Ok(Ok(labels)) => labels,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, namespace, "namespace labels unavailable; using the configured mode");
                    None
                }
                Err(_) => {
                    tracing::warn!(
                        namespace,
                        "namespace labels not read in time; using the configured mode"
                    );
                    None
                }
            },
        };
        let choice = policy.mode_for(namespace, labels.as_deref());
        if let Some(value) = &choice.invalid_label {
            tracing::warn!(
                namespace,
                label = policy.namespace_label(),
                value,
                "namespace label is not a policy mode (enforce, warn, off); ignored"
            );
        } else if choice.label.is_some_and(|l| l < choice.configured) {
            tracing::debug!(
                namespace,
                configured = choice.configured.as_str(),
                "namespace label asks for a looser mode than configured; ignored"
            );
        }
        choice.mode
    }

    fn service_account(
        &self,
        req: &AdmissionRequest<'_>,
        policy: &Policy,
        mode: PolicyMode,
        namespace: &str,
        sa: &ObjectView<'_>,
    ) -> Decision {
        let uid = req.uid.as_str();
        let name = sa
            .metadata
            .name
            .as_deref()
            .or(req.name.as_deref())
            .unwrap_or_default()
            .to_string();
        if let Some(exemption) = policy.is_exempt(namespace, Some(&name)) {
            return Decision::new(
                AdmissionResponse::allow(uid),
                Outcome::Allowed,
                exemption.as_str(),
            )
            .with_service_account(name);
        }
        let prefix = self.identities.annotation_prefix();
        let prefix = if prefix.is_empty() {
            "eks.amazonaws.com"
        } else {
            prefix
        };
        let verdict = policy.service_account_verdict(mode, namespace, &name, sa, prefix);
        respond(uid, verdict, "role-arn allowlist").with_service_account(name)
    }

    #[allow(clippy::too_many_arguments)]
    async fn workload(
        &self,
        req: &AdmissionRequest<'_>,
        policy: &Policy,
        mode: PolicyMode,
        target: Target<'_>,
        object: &ObjectView<'_>,
        deadline: Instant,
    ) -> Decision {
        let Target {
            namespace,
            kind,
            scope,
        } = target;
        let uid = req.uid.as_str();
        let sa = object.pod_spec(kind).service_account().to_string();
        if let Some(exemption) = policy.is_exempt(namespace, Some(&sa)) {
            return Decision::new(
                AdmissionResponse::allow(uid),
                Outcome::Allowed,
                exemption.as_str(),
            )
            .with_service_account(sa);
        }
        if kind == Kind::Pod && object.metadata.is_mirror_pod() {
            // The kubelet cannot act on a denial of a static pod's mirror.
            return Decision::new(
                AdmissionResponse::allow(uid),
                Outcome::Allowed,
                "mirror pod",
            )
            .with_service_account(sa);
        }
        let name = match req.name.as_deref().filter(|n| !n.is_empty()) {
            Some(n) => n.to_string(),
            None => object.metadata.display_name(),
        };
        let (identity, resolution) = self
            .check_identity(policy, namespace, &sa, mode, deadline)
            .await;
        let mut verdict = policy.workload_verdict(
            mode,
            kind,
            namespace,
            &name,
            object,
            &identity,
            self.identities.annotation_prefix(),
            scope,
        );
        if let (Scope::Pod, Some(Matched::Entry(entry))) = (scope, resolution.matched()) {
            let pod_name = pod_name_estimate(kind, &name, object);
            verdict = verdict
                .and(policy.packed_size_verdict(kind, &name, namespace, &sa, &pod_name, &entry));
        }
        let mut reason = match identity {
            IdentityCheck::Association | IdentityCheck::Irsa { .. } => "identity found",
            IdentityCheck::Missing { .. } => "no identity",
            IdentityCheck::Unavailable { .. } => "identity sources unavailable",
        };
        // Pod updates were let through above: only a created pod can have been missed.
        let missed = match (&self.missed, kind, scope) {
            (Some(check), Kind::Pod, Scope::Pod) => {
                let settings = check.injection.load();
                let rules = Rules {
                    policy,
                    failure_mode: check.failure_mode,
                    settings: &settings,
                };
                plan(object, namespace, &sa, &resolution, rules)
                    .missed(object, &settings)
                    .map(|identity| missed_identity(identity))
                    .map(|what| policy.missed_injection_verdict(mode, namespace, &name, &sa, what))
            }
            _ => None,
        };
        let missed_injection = missed.is_some();
        if let Some(missed) = missed {
            tracing::warn!(
                namespace,
                pod = name,
                service_account = sa,
                "pod lacks the credentials the mutation would inject: the mutating webhook did not run or did not see it"
            );
            verdict = verdict.and(missed);
            reason = "missed injection";
        }
        let mut decision = respond(uid, verdict, reason)
            .with_service_account(sa)
            .with_matched(resolution.matched());
        decision.missed_injection = missed_injection;
        decision
    }

    /// Resolves the ServiceAccount's identity within the deadline. Before a denial (enforce)
    /// it looks again past any cached "not found": an association created seconds ago counts
    /// (and wins over an IRSA role that the namespace does not allow).
    async fn check_identity(
        &self,
        policy: &Policy,
        namespace: &str,
        sa: &str,
        mode: PolicyMode,
        deadline: Instant,
    ) -> (IdentityCheck, Resolution) {
        let settled = |check: &IdentityCheck| match check {
            IdentityCheck::Association => true,
            IdentityCheck::Irsa { role_arn } => policy.allows_irsa_role(namespace, sa, role_arn),
            _ => false,
        };
        let first = self
            .resolve_by(namespace, sa, Freshness::Cached, deadline)
            .await;
        let mut check = identity_check(&first);
        let mut last = first;
        // Warn mode only warns, so the cached answer will do (spares the EKS API).
        if !settled(&check) && mode == PolicyMode::Enforce {
            last = self
                .resolve_by(namespace, sa, Freshness::BypassNegative, deadline)
                .await;
            check = identity_check(&last);
            if settled(&check) {
                tracing::info!(
                    namespace,
                    service_account = sa,
                    "identity found on re-check past a cached \"not found\""
                );
            }
        }
        if let IdentityCheck::Unavailable { .. } = &check {
            for e in &last.errors {
                tracing::warn!(error = %e, namespace, service_account = sa, "identity check could not be done");
            }
        }
        (check, last)
    }

    async fn resolve_by(
        &self,
        namespace: &str,
        sa: &str,
        freshness: Freshness,
        deadline: Instant,
    ) -> Resolution {
        let budget = deadline.saturating_duration_since(Instant::now());
        self.identities
            .resolve_within(namespace, sa, freshness, budget)
            .await
    }
}

/// The name a pod has, or a workload's pods will have, for the session-tag estimate: a pod's
/// own (its `generateName` plus five characters), else the workload's plus a Deployment's
/// `-<10>-<5>` suffix, the longest of the usual ones.
fn pod_name_estimate(kind: Kind, name: &str, object: &ObjectView<'_>) -> String {
    if kind == Kind::Pod {
        if let Some(n) = object.metadata.name.as_deref().filter(|n| !n.is_empty()) {
            return n.to_string();
        }
        if let Some(g) = object.metadata.generate_name.as_deref() {
            return format!("{g}xxxxx");
        }
        return name.to_string();
    }
    format!("{name}-xxxxxxxxxx-xxxxx")
}

/// What a workload request is about.
#[derive(Clone, Copy)]
struct Target<'a> {
    namespace: &'a str,
    kind: Kind,
    scope: Scope,
}

/// The identity a missed pod should carry, as the policy's message names it.
fn missed_identity(identity: &ResolvedIdentity) -> MissedIdentity<'_> {
    match &identity.kind {
        IdentityKind::PodIdentity(summary) => MissedIdentity::Association {
            id: summary.association_id.as_deref(),
        },
        IdentityKind::Irsa { role_arn } => MissedIdentity::Irsa { role_arn },
    }
}

/// What a resolution says, for the policy.
fn identity_check(resolution: &crate::identity::Resolution) -> IdentityCheck {
    match &resolution.identity {
        Some(found) => match &found.kind {
            IdentityKind::PodIdentity(_) => IdentityCheck::Association,
            IdentityKind::Irsa { role_arn } => IdentityCheck::Irsa {
                role_arn: role_arn.clone(),
            },
        },
        None if resolution.complete() => IdentityCheck::Missing {
            invalid_role_arn: resolution.service_account.invalid_role_arn.clone(),
            refused_entry: resolution
                .refused
                .as_ref()
                .map(|r| (r.entry.to_string(), r.role_arn.clone())),
        },
        None => IdentityCheck::Unavailable {
            detail: resolution
                .errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        },
    }
}

fn respond(uid: &str, verdict: Verdict, reason: &'static str) -> Decision {
    match verdict {
        Verdict::Allow => Decision::new(AdmissionResponse::allow(uid), Outcome::Allowed, reason),
        Verdict::Warn(warnings) => Decision::new(
            AdmissionResponse::allow(uid).with_warnings(warnings),
            Outcome::Warned,
            reason,
        ),
        Verdict::Deny(message) => Decision::new(
            AdmissionResponse::deny(uid, 403, message),
            Outcome::Denied,
            reason,
        ),
    }
}
