//! Prometheus metrics (text format on the admin port). Label values are bounded sets.

use std::sync::atomic::AtomicI64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    pub endpoint: &'static str,
    pub kind: &'static str,
    pub operation: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    pub endpoint: &'static str,
    /// HTTP status of a request that was not an AdmissionReview (400, 413, 415).
    pub status: u16,
}

/// The kinds the webhook handles; anything else is `other`, so the label set stays bounded.
pub fn kind_label(kind: &str) -> &'static str {
    match kind {
        "Pod" => "Pod",
        "ServiceAccount" => "ServiceAccount",
        "Deployment" => "Deployment",
        "StatefulSet" => "StatefulSet",
        "DaemonSet" => "DaemonSet",
        "ReplicaSet" => "ReplicaSet",
        "Job" => "Job",
        "CronJob" => "CronJob",
        _ => "other",
    }
}

/// Latency buckets from 100µs to 10s.
const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

pub struct Metrics {
    registry: Registry,
    pub admissions: Family<AdmissionLabels, Counter>,
    pub admission_duration: Family<EndpointLabels, Histogram>,
    pub rejected_requests: Family<RejectLabels, Counter>,
    pub certificate_reloads: Counter,
    pub certificate_expiry_seconds: Gauge<i64, AtomicI64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("pod_identity_webhook");
        let admissions = Family::<AdmissionLabels, Counter>::default();
        registry.register(
            "admissions",
            "Admission reviews answered, by endpoint, kind, operation and outcome",
            admissions.clone(),
        );
        let admission_duration = Family::<EndpointLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(LATENCY_BUCKETS)
        });
        registry.register(
            "admission_duration_seconds",
            "Time from a parsed request to its answer",
            admission_duration.clone(),
        );
        let rejected_requests = Family::<RejectLabels, Counter>::default();
        registry.register(
            "rejected_requests",
            "Requests that were not an AdmissionReview (answered 400, 413 or 415)",
            rejected_requests.clone(),
        );
        let certificate_reloads = Counter::default();
        registry.register(
            "certificate_reloads",
            "Serving certificate reloads",
            certificate_reloads.clone(),
        );
        let certificate_expiry_seconds = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "Unix time at which the serving certificate expires",
            certificate_expiry_seconds.clone(),
        );
        Self {
            registry,
            admissions,
            admission_duration,
            rejected_requests,
            certificate_reloads,
            certificate_expiry_seconds,
        }
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
        self.admission_duration
            .get_or_create(&EndpointLabels { endpoint })
            .observe(elapsed.as_secs_f64());
    }

    pub fn record_rejected(&self, endpoint: &'static str, status: u16) {
        self.rejected_requests
            .get_or_create(&RejectLabels { endpoint, status })
            .inc();
    }

    /// Registers extra metrics (sources add theirs at start-up).
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
