//! Admission: from a read AdmissionReview request to an AdmissionResponse.
//!
//! This layer does the (bounded) identity and namespace lookups and calls the pure decisions
//! ([`mutate::mutate_pod`], [`crate::policy::Policy::workload_verdict`] and
//! [`crate::policy::Policy::service_account_verdict`]), which take parsed object views and can
//! be called without HTTP. It knows nothing of HTTP itself.

pub mod injection;
pub mod mutate;
pub mod plan;
pub mod proxy;
pub mod review;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::admission::injection::InjectionSettings;
use crate::identity::eks_settings::FailureMode;
use crate::identity::{Freshness, Identities, Matched};
use crate::object::ObjectView;
use crate::policy::Policy;
use mutate::Skip;
use plan::{Plan, Rules};
use review::{AdmissionRequest, AdmissionResponse, MAX_ANSWER_BYTES, Object, Operation};

/// What a decision did, for logs and metrics (bounded set of values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A patch was returned.
    Mutated,
    /// Allowed with nothing to change (no identity, already injected, skipped, not a pod).
    Unchanged,
    /// Validation passed.
    Allowed,
    /// Allowed with warnings about policy.
    Warned,
    /// Denied by policy.
    Denied,
    /// The request could not be processed (unreadable object): denied with code 400.
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mutated => "mutated",
            Self::Unchanged => "unchanged",
            Self::Allowed => "allowed",
            Self::Warned => "warned",
            Self::Denied => "denied",
            Self::Error => "error",
        }
    }
}

/// A response plus what the logs and metrics need to know about it.
#[derive(Debug, Clone)]
pub struct Decision {
    pub response: AdmissionResponse,
    pub outcome: Outcome,
    /// The ServiceAccount the decision was about, when there was one.
    pub service_account: Option<String>,
    /// A short reason for the log line (why unchanged, what was denied).
    pub reason: &'static str,
    /// `/validate` found a pod that lacks the credentials `/mutate` would give it (issue 28);
    /// counted in `admission_missed_injection_total`.
    pub missed_injection: bool,
    /// The identity the lookup found (the associations-file entry that matched, with its line
    /// and pattern), or the entry the allowlist refused: for the decision log and `check`.
    pub matched: Option<Matched>,
}

impl Decision {
    pub fn new(response: AdmissionResponse, outcome: Outcome, reason: &'static str) -> Self {
        Self {
            response,
            outcome,
            service_account: None,
            reason,
            missed_injection: false,
            matched: None,
        }
    }

    pub fn with_service_account(mut self, sa: impl Into<String>) -> Self {
        self.service_account = Some(sa.into());
        self
    }

    pub fn with_matched(mut self, matched: Option<Matched>) -> Self {
        self.matched = matched;
        self
    }
}

/// The mutating webhook: injects identities into pods (docs/contract.md §2).
pub struct Mutator {
    /// Swapped whole when the config file changes; each request reads one consistent version.
    pub injection: Arc<ArcSwap<InjectionSettings>>,
    pub identities: Identities,
    pub failure_mode: FailureMode,
    /// The validating webhook's policy: an IRSA role outside the namespace's role allowlist
    /// is never injected (docs/contract.md §12).
    pub policy: Arc<ArcSwap<Policy>>,
}

impl Mutator {
    pub fn new(injection: InjectionSettings, identities: Identities) -> Self {
        Self {
            injection: Arc::new(ArcSwap::from_pointee(injection)),
            identities,
            failure_mode: FailureMode::Stale,
            policy: Arc::new(ArcSwap::from_pointee(Policy::off())),
        }
    }

    /// Shares the validating webhook's policy ([`validate::Validator::shared_policy`]).
    pub fn with_policy(mut self, policy: Arc<ArcSwap<Policy>>) -> Self {
        // The allowlist bounds the associations file's entries, as in the validator.
        self.identities = self.identities.with_role_bound(policy.clone());
        self.policy = policy;
        self
    }

    /// Decides one request. `budget` bounds the identity lookups (a little under the API
    /// server's timeout for this call).
    pub async fn review(&self, req: &AdmissionRequest<'_>, budget: Duration) -> Decision {
        if let Some(early) = Self::not_mutated(req) {
            return early;
        }
        let uid = req.uid.as_str();
        match &req.object {
            Some(Object::Read(pod)) => self.decide(req, pod, budget).await,
            Some(Object::Unreadable(message)) => Decision::new(
                AdmissionResponse::deny(uid, 400, message.as_str()),
                Outcome::Error,
                "unreadable object",
            ),
            None => Decision::new(
                AdmissionResponse::deny(uid, 400, "request has no object to mutate"),
                Outcome::Error,
                "no object",
            ),
        }
    }

    /// Only pod creation is mutated; anything else the configuration routes here is let
    /// through untouched rather than blocked.
    fn not_mutated(req: &AdmissionRequest<'_>) -> Option<Decision> {
        let allow = |reason| {
            Some(Decision::new(
                AdmissionResponse::allow(&req.uid),
                Outcome::Unchanged,
                reason,
            ))
        };
        if req.kind.kind != "Pod" || !req.kind.group.is_empty() {
            return allow("not a pod");
        }
        if req.sub_resource().is_some() {
            return allow("subresource");
        }
        if req.operation != Operation::Create {
            return allow("not a create");
        }
        None
    }

    async fn decide(
        &self,
        req: &AdmissionRequest<'_>,
        pod: &ObjectView<'_>,
        budget: Duration,
    ) -> Decision {
        let uid = req.uid.as_str();
        let allow =
            |reason| Decision::new(AdmissionResponse::allow(uid), Outcome::Unchanged, reason);
        let sa = pod.service_account().to_string();
        let settings = self.injection.load();
        // Before anything else: the answer for a pod of any shape stays small.
        if let Some(message) = mutate::too_large(&pod.spec, &settings) {
            return Decision::new(
                AdmissionResponse::deny(uid, 403, message),
                Outcome::Denied,
                "pod too large",
            )
            .with_service_account(sa);
        }
        if let Some(skip) = Skip::check(pod) {
            let reason = match skip {
                Skip::MirrorPod => "mirror pod",
                Skip::OptOutLabel => "opt-out label",
            };
            return allow(reason).with_service_account(sa);
        }
        let namespace = req
            .namespace
            .as_deref()
            .or(pod.metadata.namespace.as_deref())
            .unwrap_or_default();
        if namespace.is_empty() {
            return allow("no namespace").with_service_account(sa);
        }

        let resolution = self
            .identities
            .resolve_within(namespace, &sa, Freshness::Cached, budget)
            .await;
        let policy = self.policy.load();
        let rules = Rules {
            policy: &policy,
            failure_mode: self.failure_mode,
            settings: &settings,
        };
        let mut mutation = match plan::plan(pod, namespace, &sa, &resolution, rules) {
            Plan::Inject { mutation, .. } => mutation,
            Plan::Unchanged { reason, warning } => {
                if resolution.identity.is_none() {
                    for e in &resolution.errors {
                        tracing::warn!(error = %e, namespace, service_account = %sa, "identity lookup failed; admitting unmutated");
                    }
                }
                let response =
                    AdmissionResponse::allow(uid).with_warnings(warning.into_iter().collect());
                return Decision::new(response, Outcome::Unchanged, reason)
                    .with_service_account(sa)
                    .with_matched(resolution.matched());
            }
        };
        let outcome = if mutation.patch.is_empty() {
            Outcome::Unchanged
        } else {
            Outcome::Mutated
        };
        let warnings = std::mem::take(&mut mutation.warnings);
        let response = match AdmissionResponse::allow(uid)
            .with_warnings(warnings)
            .with_patch_within(&mutation.patch, MAX_ANSWER_BYTES)
        {
            Ok(response) => response,
            Err(length) => {
                let message = format!(
                    "pod-identity-webhook cannot inject AWS credentials into this pod: the patch \
                     for its {} containers would make an answer of {length} bytes, more than the \
                     {MAX_ANSWER_BYTES} the API server accepts from a webhook; use fewer \
                     containers per pod",
                    pod.spec.container_count()
                );
                return Decision::new(
                    AdmissionResponse::deny(uid, 403, message),
                    Outcome::Denied,
                    "answer too large",
                )
                .with_service_account(sa);
            }
        };
        Decision::new(
            response,
            outcome,
            if outcome == Outcome::Mutated {
                "identity injected"
            } else {
                "already injected"
            },
        )
        .with_service_account(sa)
        .with_matched(resolution.matched())
    }
}
