//! The Prometheus registry (text format on the admin port). Each component registers its own
//! families into it at start-up (`register_metrics` beside the code that records them); this
//! module only makes the registry, encodes it, and lets components that keep their own
//! statistics expose them at scrape time ([`register_snapshot`]). Label values are bounded sets.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
pub use prometheus_client::registry::Registry;

/// A new registry with the webhook's prefix and the process-wide families (logging's).
pub fn new_registry() -> Registry {
    let mut registry = Registry::with_prefix("pod_identity_webhook");
    crate::telemetry::logging::register_metrics(&mut registry);
    registry
}

/// The Prometheus text exposition of `registry`.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)
        .expect("writing to a String cannot fail");
    out
}

/// Registers metric families computed on every scrape by `snapshot` (for components that keep
/// their own statistics, like the EKS source's call counts and cache size).
pub fn register_snapshot(
    registry: &mut Registry,
    snapshot: impl Fn() -> Vec<FamilySnapshot> + Send + Sync + 'static,
) {
    registry.register_collector(Box::new(SnapshotCollector(Arc::new(snapshot))));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_are_read_on_every_scrape() {
        let calls = Arc::new(std::sync::atomic::AtomicU64::new(3));
        let seen = calls.clone();
        let mut registry = new_registry();
        register_snapshot(&mut registry, move || {
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
        let text = encode(&registry);
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
        assert!(
            text.contains("pod_identity_webhook_log_lines_dropped_total 0"),
            "{text}"
        );
        calls.store(5, std::sync::atomic::Ordering::Relaxed);
        assert!(encode(&registry).contains(
            "pod_identity_webhook_eks_calls_total{operation=\"ListPodIdentityAssociations\"} 5"
        ));
    }
}
