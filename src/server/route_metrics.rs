//! The admission routes' metrics: reviews answered (by endpoint, kind, operation, outcome), how
//! long they took, requests refused before a decision, and pods `/validate` found the mutation
//! had missed.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AdmissionLabels {
    endpoint: &'static str,
    kind: &'static str,
    operation: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    /// What `/validate` did with the pod: denied (enforce) or warned (warn).
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectLabels {
    endpoint: &'static str,
    /// HTTP status of a request that was not an AdmissionReview (400, 413, 415).
    status: u16,
}

/// The kinds the webhook handles; anything else is `other`, so the label set stays bounded.
pub fn kind_label(kind: &str) -> &'static str {
    crate::object::Kind::from_name(kind).map_or("other", crate::object::Kind::as_str)
}

/// Latency buckets from 100µs to 10s.
const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// What the admission handlers record.
#[derive(Clone, Debug)]
pub struct AdmissionMetrics {
    admissions: Family<AdmissionLabels, Counter>,
    duration: Family<EndpointLabels, Histogram>,
    rejected: Family<RejectLabels, Counter>,
    missed_injection: Family<OutcomeLabels, Counter>,
}

impl AdmissionMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            admissions: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS)),
            rejected: Family::default(),
            missed_injection: Family::default(),
        };
        registry.register(
            "admissions",
            "Admission reviews answered, by endpoint, kind, operation and outcome",
            metrics.admissions.clone(),
        );
        registry.register(
            "admission_duration_seconds",
            "Time from a parsed request to its answer",
            metrics.duration.clone(),
        );
        registry.register(
            "rejected_requests",
            "Requests that were not an AdmissionReview (answered 400, 413 or 415)",
            metrics.rejected.clone(),
        );
        registry.register(
            "admission_missed_injection",
            "Created pods /validate found without the credentials /mutate would inject (the mutating webhook did not run or did not see them), by outcome",
            metrics.missed_injection.clone(),
        );
        metrics
    }

    pub fn record_missed_injection(&self, outcome: &'static str) {
        self.missed_injection
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub fn record_admission(
        &self,
        endpoint: &'static str,
        kind: &str,
        operation: &'static str,
        outcome: &'static str,
        elapsed: Duration,
    ) {
        self.admissions
            .get_or_create(&AdmissionLabels {
                endpoint,
                kind: kind_label(kind),
                operation,
                outcome,
            })
            .inc();
        self.duration
            .get_or_create(&EndpointLabels { endpoint })
            .observe(elapsed.as_secs_f64());
    }

    pub fn record_rejected(&self, endpoint: &'static str, status: u16) {
        self.rejected
            .get_or_create(&RejectLabels { endpoint, status })
            .inc();
    }
}
