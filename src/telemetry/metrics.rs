//! Prometheus metrics (text format on the admin port). Label values are bounded sets.

use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::identity::{LookupObserver, LookupResult};
use crate::reload::ReloadOutcome;

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LookupLabels {
    /// The source's short name (`file`, `eks`, `serviceaccounts`).
    pub source: &'static str,
    /// `hit`, `miss`, `stale` or `error`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// What was re-read: `certificate`, `associations`, `config`.
    pub file: &'static str,
    /// `ok` or `failed`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FileLabels {
    pub file: &'static str,
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
    pub identity_lookups: Family<LookupLabels, Counter>,
    pub reloads: Family<ReloadLabels, Counter>,
    pub last_reload_timestamp: Family<FileLabels, Gauge<i64, AtomicI64>>,
}

/// Counts identity lookups by source and result; handed to the identity layer.
#[derive(Clone, Debug)]
pub struct LookupCounter(Family<LookupLabels, Counter>);

impl LookupObserver for LookupCounter {
    fn observe(&self, source: &'static str, result: LookupResult) {
        self.0
            .get_or_create(&LookupLabels {
                source,
                result: result.as_str(),
            })
            .inc();
    }
}

/// Unix seconds now (metrics timestamps).
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Whether a snapshot sample is a counter (only goes up) or a gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleKind {
    Counter,
    Gauge,
}

/// One metric family computed at scrape time from some component's own state (cache sizes,
/// EKS call counts): the hook for parts that keep their statistics themselves.
#[derive(Debug, Clone)]
pub struct FamilySnapshot {
    /// Without the `pod_identity_webhook_` prefix, and without `_total` for counters.
    pub name: &'static str,
    pub help: &'static str,
    pub kind: SampleKind,
    /// Label sets are `'static` so their values stay a bounded set.
    pub samples: Vec<(Vec<(&'static str, &'static str)>, f64)>,
}

impl FamilySnapshot {
    pub fn gauge(name: &'static str, help: &'static str, value: f64) -> Self {
        Self {
            name,
            help,
            kind: SampleKind::Gauge,
            samples: vec![(Vec::new(), value)],
        }
    }
}

/// The EKS source's own counters as metric families (read on every scrape).
pub fn eks_families(stats: &crate::identity::cache::EksStats) -> Vec<FamilySnapshot> {
    let by_operation = |list: u64, describe: u64| {
        vec![
            (
                vec![("operation", "ListPodIdentityAssociations")],
                list as f64,
            ),
            (
                vec![("operation", "DescribePodIdentityAssociation")],
                describe as f64,
            ),
        ]
    };
    let counter = |name, help, value: u64| FamilySnapshot {
        name,
        help,
        kind: SampleKind::Counter,
        samples: vec![(Vec::new(), value as f64)],
    };
    vec![
        FamilySnapshot {
            name: "eks_calls",
            help: "EKS API calls, by operation",
            kind: SampleKind::Counter,
            samples: by_operation(stats.list_calls, stats.describe_calls),
        },
        FamilySnapshot {
            name: "eks_call_errors",
            help: "EKS API calls that failed, by operation",
            kind: SampleKind::Counter,
            samples: by_operation(stats.list_errors, stats.describe_errors),
        },
        FamilySnapshot::gauge(
            "eks_cache_entries",
            "Point lookups held in the EKS association cache",
            stats.cache_entries as f64,
        ),
        FamilySnapshot::gauge(
            "eks_synced_associations",
            "Associations in the last complete full sync",
            stats.synced_associations as f64,
        ),
        FamilySnapshot::gauge(
            "eks_last_sync_timestamp_seconds",
            "Unix time of the last complete full sync (0: none yet)",
            stats.last_sync_unix.unwrap_or(0) as f64,
        ),
        counter("eks_syncs", "Complete full syncs", stats.syncs),
        counter(
            "eks_sync_failures",
            "Full syncs that failed",
            stats.sync_failures,
        ),
        counter(
            "eks_lookup_timeouts",
            "Lookups that stopped waiting for EKS at the wait bound",
            stats.timeouts,
        ),
        counter(
            "eks_lookups_coalesced",
            "Lookups that joined one already in flight for the same ServiceAccount",
            stats.coalesced,
        ),
        FamilySnapshot::gauge(
            "eks_paused",
            "1 while EKS calls are paused after repeated failures",
            if stats.paused { 1.0 } else { 0.0 },
        ),
    ]
}

type SnapshotFn = dyn Fn() -> Vec<FamilySnapshot> + Send + Sync;

/// A [`Collector`] that reads a closure on every scrape.
struct SnapshotCollector(Arc<SnapshotFn>);

impl std::fmt::Debug for SnapshotCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SnapshotCollector")
    }
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in (self.0)() {
            let metric_type = match family.kind {
                SampleKind::Counter => ConstCounter::new(0u64).metric_type(),
                SampleKind::Gauge => ConstGauge::new(0i64).metric_type(),
            };
            let mut metric =
                encoder.encode_descriptor(family.name, family.help, None, metric_type)?;
            match family.samples.as_slice() {
                // A single unlabelled sample prints as `name value`, not `name{} value`.
                [(labels, value)] if labels.is_empty() => {
                    encode_sample(metric, family.kind, *value)?
                }
                samples => {
                    for (labels, value) in samples {
                        encode_sample(metric.encode_family(labels)?, family.kind, *value)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Whole numbers print as such (`3`, not `3.0`).
fn encode_sample(
    metric: MetricEncoder<'_>,
    kind: SampleKind,
    value: f64,
) -> Result<(), std::fmt::Error> {
    let whole = value.fract() == 0.0 && value.abs() < 9.0e15;
    match kind {
        SampleKind::Counter if whole && value >= 0.0 => {
            ConstCounter::new(value as u64).encode(metric)
        }
        SampleKind::Counter => ConstCounter::new(value).encode(metric),
        SampleKind::Gauge if whole => ConstGauge::new(value as i64).encode(metric),
        SampleKind::Gauge => ConstGauge::new(value).encode(metric),
    }
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
        let identity_lookups = Family::<LookupLabels, Counter>::default();
        registry.register(
            "identity_lookups",
            "Identity source lookups, by source and result (hit, miss, stale, error)",
            identity_lookups.clone(),
        );
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "reloads",
            "Changed files re-read while running, by file and result (ok, failed)",
            reloads.clone(),
        );
        let last_reload_timestamp = Family::<FileLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "last_successful_load_timestamp_seconds",
            "Unix time of the last successful load of each file (at start-up or on change)",
            last_reload_timestamp.clone(),
        );
        crate::telemetry::logging::register_metrics(&mut registry);
        Self {
            registry,
            admissions,
            admission_duration,
            rejected_requests,
            certificate_reloads,
            certificate_expiry_seconds,
            identity_lookups,
            reloads,
            last_reload_timestamp,
        }
    }

    /// The observer the identity layer reports its lookups to.
    pub fn lookup_observer(&self) -> Arc<dyn LookupObserver> {
        Arc::new(LookupCounter(self.identity_lookups.clone()))
    }

    /// Records a successful load of `file` now (start-up or reload).
    pub fn record_loaded(&self, file: &'static str) {
        self.last_reload_timestamp
            .get_or_create(&FileLabels { file })
            .set(unix_now());
    }

    /// Records one reload check of `file` that did something.
    pub fn record_reload(&self, file: &'static str, outcome: &ReloadOutcome) {
        let result = match outcome {
            ReloadOutcome::Unchanged => return,
            ReloadOutcome::Reloaded => {
                self.record_loaded(file);
                "ok"
            }
            ReloadOutcome::Failed(_) => "failed",
        };
        self.reloads
            .get_or_create(&ReloadLabels { file, result })
            .inc();
    }

    /// Registers metric families computed on every scrape by `snapshot` (for components that
    /// keep their own statistics, like the EKS source's call counts and cache size).
    pub fn register_snapshot(
        &mut self,
        snapshot: impl Fn() -> Vec<FamilySnapshot> + Send + Sync + 'static,
    ) {
        self.registry
            .register_collector(Box::new(SnapshotCollector(Arc::new(snapshot))));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_are_read_on_every_scrape() {
        let calls = Arc::new(std::sync::atomic::AtomicU64::new(3));
        let seen = calls.clone();
        let mut metrics = Metrics::new();
        metrics.register_snapshot(move || {
            vec![
                FamilySnapshot {
                    name: "eks_calls",
                    help: "EKS API calls",
                    kind: SampleKind::Counter,
                    samples: vec![(
                        vec![("operation", "ListPodIdentityAssociations")],
                        seen.load(std::sync::atomic::Ordering::Relaxed) as f64,
                    )],
                },
                FamilySnapshot::gauge("eks_cache_entries", "Cached associations", 12.0),
            ]
        });
        let text = metrics.encode();
        assert!(
            text.contains("# TYPE pod_identity_webhook_eks_calls counter"),
            "{text}"
        );
        assert!(
            text.contains(
                "pod_identity_webhook_eks_calls_total{operation=\"ListPodIdentityAssociations\"} 3"
            ),
            "{text}"
        );
        assert!(
            text.contains("pod_identity_webhook_eks_cache_entries 12"),
            "{text}"
        );
        calls.store(5, std::sync::atomic::Ordering::Relaxed);
        assert!(metrics.encode().contains(
            "pod_identity_webhook_eks_calls_total{operation=\"ListPodIdentityAssociations\"} 5"
        ));
    }

    #[test]
    fn reload_outcomes_are_counted_and_timestamped() {
        let metrics = Metrics::new();
        metrics.record_reload("config", &ReloadOutcome::Unchanged);
        metrics.record_reload("config", &ReloadOutcome::Failed("bad".into()));
        metrics.record_reload("config", &ReloadOutcome::Reloaded);
        let text = metrics.encode();
        assert!(
            text.contains(
                "pod_identity_webhook_reloads_total{file=\"config\",result=\"failed\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("pod_identity_webhook_reloads_total{file=\"config\",result=\"ok\"} 1"),
            "{text}"
        );
        assert!(text.contains(
            "pod_identity_webhook_last_successful_load_timestamp_seconds{file=\"config\"}"
        ));
    }
}
