//! The GitOps associations controller's metrics (`pod_identity_webhook_gitops_…` on the
//! controller's `/metrics`, docs/controller.md#metrics).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::identity::eks_client::{CallErrorKind, Operation};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    operation: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: &'static str,
    outcome: &'static str,
}

/// The families, shared by every reconcile.
#[derive(Clone, Default)]
pub struct GitopsMetrics {
    reconciles: Family<ResultLabels, Counter>,
    calls: Family<CallLabels, Counter>,
    actions: Family<ActionLabels, Counter>,
    drift: Counter,
    hand_made: Gauge,
    refused: Gauge,
}

/// How an action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionOutcome {
    Done,
    Failed,
    /// `--dry-run`: logged, not made.
    DryRun,
}

impl GitopsMetrics {
    /// Registers the families under `pod_identity_webhook_gitops_`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let sub = registry.sub_registry_with_prefix("gitops");
        sub.register(
            "reconciles",
            "GitOps association reconciles, by result (ok, failed: retried with backoff)",
            m.reconciles.clone(),
        );
        sub.register(
            "eks_calls",
            "EKS calls of the GitOps associations controller, by operation and outcome (after the SDK's retries)",
            m.calls.clone(),
        );
        sub.register(
            "actions",
            "Creates, updates and deletes of associations, by outcome (done, failed, dry_run)",
            m.actions.clone(),
        );
        sub.register(
            "drift",
            "Associations this controller made that were changed or deleted out of band, found and put back",
            m.drift.clone(),
        );
        sub.register(
            "hand_made_associations",
            "Associations of annotated ServiceAccounts made without this controller's tag, left alone (last reconcile)",
            m.hand_made.clone(),
        );
        sub.register(
            "refused_service_accounts",
            "Annotated ServiceAccounts refused (allowlist, not a role ARN) at the last reconcile",
            m.refused.clone(),
        );
        m
    }

    pub(super) fn reconciled(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.reconciles
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub(super) fn call(&self, operation: Operation, outcome: Result<(), CallErrorKind>) {
        let outcome = match outcome {
            Ok(()) => "ok",
            Err(kind) => kind_label(kind),
        };
        self.calls
            .get_or_create(&CallLabels {
                operation: operation.as_str(),
                outcome,
            })
            .inc();
    }

    pub(super) fn action(&self, action: &'static str, outcome: ActionOutcome) {
        let outcome = match outcome {
            ActionOutcome::Done => "done",
            ActionOutcome::Failed => "failed",
            ActionOutcome::DryRun => "dry_run",
        };
        self.actions
            .get_or_create(&ActionLabels { action, outcome })
            .inc();
    }

    pub(super) fn drift_found(&self) {
        self.drift.inc();
    }

    pub(super) fn seen(&self, hand_made: usize, refused: usize) {
        self.hand_made.set(hand_made as i64);
        self.refused.set(refused as i64);
    }
}

fn kind_label(kind: CallErrorKind) -> &'static str {
    match kind {
        CallErrorKind::NotFound => "not_found",
        CallErrorKind::InvalidRequest => "invalid_request",
        CallErrorKind::InUse => "in_use",
        CallErrorKind::AccessDenied => "access_denied",
        CallErrorKind::Throttled => "throttled",
        CallErrorKind::Server => "server_error",
        CallErrorKind::Timeout => "timeout",
        CallErrorKind::Network => "network",
        CallErrorKind::Other => "other",
    }
}
