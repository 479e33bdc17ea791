//! The validating webhook (SPEC §3). Policy decisions live in [`crate::policy`]; this is the
//! admission-side entry point: it reads the object, does the bounded lookups (namespace labels,
//! identities) and turns the verdict into a response.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde_json::value::RawValue;
use tokio::time::Instant;

use super::review::{AdmissionRequest, AdmissionResponse, Operation, Review};
use super::{Decision, Outcome, read_object};
use crate::config::PolicyMode;
use crate::identity::{Freshness, Identities, Resolution};
use crate::namespaces::NamespaceStore;
use crate::policy::workload::{self, ObjectView, ServiceAccountView, WorkloadKind, WorkloadView};
use crate::policy::{IdentityCheck, Policy, Subject, Verdict};

/// The validating webhook.
pub struct Validator {
    policy: ArcSwap<Policy>,
    identities: Identities,
    namespaces: Option<Arc<dyn NamespaceStore>>,
}

impl Default for Validator {
    /// No policy: everything is allowed.
    fn default() -> Self {
        Self::new(Policy::off(), Identities::default())
    }
}

/// What a request is, for the policy.
enum Target {
    Workload(WorkloadKind),
    ServiceAccount,
}

/// The object of a request as the validator gets it: a raw slice of the body, read only if the
/// policy looks at it, or an [`ObjectView`] read in the same pass as the review.
pub trait ObjectSource<'a> {
    fn service_account(self) -> Result<ServiceAccountView<'a>, String>;
    fn workload(self, kind: WorkloadKind) -> Result<WorkloadView<'a>, String>;
}

impl<'a> ObjectSource<'a> for &'a RawValue {
    fn service_account(self) -> Result<ServiceAccountView<'a>, String> {
        read_object(self, "ServiceAccount")
    }
    fn workload(self, kind: WorkloadKind) -> Result<WorkloadView<'a>, String> {
        WorkloadView::read(kind, self)
    }
}

impl<'a> ObjectSource<'a> for ObjectView<'a> {
    fn service_account(self) -> Result<ServiceAccountView<'a>, String> {
        Ok(self.into_service_account())
    }
    fn workload(self, kind: WorkloadKind) -> Result<WorkloadView<'a>, String> {
        // Callers check `fits` first; this answers one that did not.
        self.into_workload(kind).ok_or_else(|| {
            format!(
                "object does not have the shape of a {}: its kind is missing, comes after its spec, or differs",
                kind.as_str()
            )
        })
    }
}

/// Reads a `/validate` body in one pass: the review, and its object taken out as an
/// [`ObjectView`] for [`Validator::review_object`]. `None` when that view cannot stand for the
/// raw object (the object is unreadable as a view, or its `kind` is missing, comes after its
/// `spec`, or is not the request's): read the body with [`Review::parse`] then, which also gives
/// the precise error of a broken object.
pub fn read_review(body: &[u8]) -> Option<(Review<'_, ObjectView<'_>>, Option<ObjectView<'_>>)> {
    let mut review = Review::<ObjectView>::parse_object(body).ok()?;
    let req = &review.request;
    let kind = WorkloadKind::from_gvk(&req.kind.group, &req.kind.kind);
    if !req.object.as_ref().is_none_or(|o| o.fits(kind)) {
        return None;
    }
    let object = review.request.object.take();
    Some((review, object))
}

impl Validator {
    /// `identities` should be the mutator's (a clone shares its sources and caches), so the
    /// policy sees exactly what the mutation sees.
    pub fn new(policy: Policy, identities: Identities) -> Self {
        Self {
            policy: ArcSwap::from_pointee(policy),
            identities,
            namespaces: None,
        }
    }

    /// Namespace labels (without them only the configured modes apply).
    pub fn with_namespaces(mut self, store: Arc<dyn NamespaceStore>) -> Self {
        self.namespaces = Some(store);
        self
    }

    /// Swaps in a new policy (configuration reload).
    pub fn set_policy(&self, policy: Policy) {
        self.policy.store(Arc::new(policy));
    }

    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// Ready when the namespace labels have synced (the identity sources are the mutator's).
    pub fn ready(&self) -> bool {
        self.namespaces.as_ref().is_none_or(|n| n.ready())
    }

    pub async fn review(&self, req: &AdmissionRequest<'_>, budget: Duration) -> Decision {
        self.review_object(req, req.object(), budget).await
    }

    /// [`Validator::review`] with the request's object given apart: a raw slice, or the
    /// [`ObjectView`] that [`read_review`] took out of the request; `req.object` itself is not
    /// looked at.
    pub async fn review_object<'a, O: ObjectSource<'a>, R>(
        &self,
        req: &AdmissionRequest<'a, R>,
        object: Option<O>,
        budget: Duration,
    ) -> Decision {
        let deadline = Instant::now() + budget;
        let uid = req.uid.as_str();
        let allow = |reason| Decision::new(AdmissionResponse::allow(uid), Outcome::Allowed, reason);

        let target = if req.kind.group.is_empty() && req.kind.kind == "ServiceAccount" {
            Target::ServiceAccount
        } else if let Some(kind) = WorkloadKind::from_gvk(&req.kind.group, &req.kind.kind) {
            Target::Workload(kind)
        } else {
            return allow("kind not checked");
        };
        // Status and scale updates do not change the pod template.
        if req.sub_resource.as_deref().is_some_and(|s| !s.is_empty()) {
            return allow("subresource");
        }
        match (&target, req.operation) {
            (_, Operation::Delete | Operation::Connect) => return allow("operation not checked"),
            // A pod's ServiceAccount and containers' env cannot change after creation.
            (Target::Workload(WorkloadKind::Pod), Operation::Update) => {
                return allow("pod update");
            }
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
        let Some(object) = object else {
            return Decision::new(
                AdmissionResponse::deny(uid, 400, "request has no object to validate"),
                Outcome::Error,
                "no object",
            );
        };
        match target {
            Target::ServiceAccount => self.service_account(req, &policy, mode, namespace, object),
            Target::Workload(kind) => {
                self.workload(req, &policy, mode, namespace, kind, object, deadline)
                    .await
            }
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

    fn service_account<'a, R>(
        &self,
        req: &AdmissionRequest<'a, R>,
        policy: &Policy,
        mode: PolicyMode,
        namespace: &str,
        object: impl ObjectSource<'a>,
    ) -> Decision {
        let uid = req.uid.as_str();
        let sa = match object.service_account() {
            Ok(sa) => sa,
            Err(message) => return unreadable(uid, message),
        };
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
        let verdict = policy.service_account_verdict(
            mode,
            namespace,
            &name,
            sa.role_arn(prefix).as_deref(),
            prefix,
        );
        respond(uid, verdict, "role-arn allowlist").with_service_account(name)
    }

    #[allow(clippy::too_many_arguments)]
    async fn workload<'a, R>(
        &self,
        req: &AdmissionRequest<'a, R>,
        policy: &Policy,
        mode: PolicyMode,
        namespace: &str,
        kind: WorkloadKind,
        object: impl ObjectSource<'a>,
        deadline: Instant,
    ) -> Decision {
        let uid = req.uid.as_str();
        let view = match object.workload(kind) {
            Ok(v) => v,
            Err(message) => return unreadable(uid, message),
        };
        let sa = view.pod.service_account().to_string();
        if let Some(exemption) = policy.is_exempt(namespace, Some(&sa)) {
            return Decision::new(
                AdmissionResponse::allow(uid),
                Outcome::Allowed,
                exemption.as_str(),
            )
            .with_service_account(sa);
        }
        if kind == WorkloadKind::Pod && view.metadata.is_mirror_pod() {
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
            None => view.metadata.display_name(),
        };
        let identity = self.check_identity(namespace, &sa, mode, deadline).await;
        let subject = Subject {
            kind: kind.as_str(),
            namespace,
            name: &name,
            service_account: &sa,
        };
        let verdict = policy.workload_verdict(
            mode,
            &subject,
            &workload::static_credentials(&view.pod),
            &identity,
            self.identities.annotation_prefix(),
        );
        let reason = match identity {
            IdentityCheck::Found => "identity found",
            IdentityCheck::Missing => "no identity",
            IdentityCheck::Unavailable { .. } => "identity sources unavailable",
        };
        respond(uid, verdict, reason).with_service_account(sa)
    }

    /// Resolves the ServiceAccount's identity within the deadline. Before a denial (enforce)
    /// it looks again past any cached "not found": an association created seconds ago counts.
    async fn check_identity(
        &self,
        namespace: &str,
        sa: &str,
        mode: PolicyMode,
        deadline: Instant,
    ) -> IdentityCheck {
        let first = self
            .resolve_by(namespace, sa, Freshness::Cached, deadline)
            .await;
        if first.identity.is_some() {
            return IdentityCheck::Found;
        }
        // Warn mode only warns, so the cached answer will do (spares the EKS API).
        let last = if mode == PolicyMode::Enforce {
            let again = self
                .resolve_by(namespace, sa, Freshness::BypassNegative, deadline)
                .await;
            if again.identity.is_some() {
                tracing::info!(
                    namespace,
                    service_account = sa,
                    "identity found on re-check past a cached \"not found\""
                );
                return IdentityCheck::Found;
            }
            again
        } else {
            first
        };
        if last.complete() {
            return IdentityCheck::Missing;
        }
        for e in &last.errors {
            tracing::warn!(error = %e, namespace, service_account = sa, "identity check could not be done");
        }
        IdentityCheck::Unavailable {
            detail: last
                .errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        }
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

fn unreadable(uid: &str, message: String) -> Decision {
    Decision::new(
        AdmissionResponse::deny(uid, 400, message),
        Outcome::Error,
        "unreadable object",
    )
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
