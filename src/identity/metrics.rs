//! The identity layer's metrics: lookups by source and result, associations known, and the EKS
//! source's own counters (read from its statistics on every scrape).

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::eks_cache::{EksSource, EksStats};
use super::file::FileSource;
use super::{LookupObserver, LookupResult};
use crate::telemetry::metrics::{FamilySnapshot, SampleKind, register_snapshot};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LookupLabels {
    /// The source's short name (`file`, `eks`, `serviceaccounts`).
    source: &'static str,
    /// `hit`, `miss`, `stale` or `error`.
    result: &'static str,
}

/// Counts identity lookups by source and result; handed to [`super::Identities`].
#[derive(Clone, Debug)]
struct LookupCounter(Family<LookupLabels, Counter>);

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

/// Registers `identity_lookups_total`; the observer the identity layer reports lookups to.
pub fn register_lookups(registry: &mut Registry) -> Arc<dyn LookupObserver> {
    let lookups = Family::<LookupLabels, Counter>::default();
    registry.register(
        "identity_lookups",
        "Identity source lookups, by source and result (hit, miss, stale, error)",
        lookups.clone(),
    );
    Arc::new(LookupCounter(lookups))
}

/// How many associations a source knows now, read on every scrape.
pub type AssociationCount = Box<dyn Fn() -> u64 + Send + Sync>;

/// Registers `associations{source}`: one family with a sample for each configured source (the
/// file's entries, EKS's last full sync), so a server on any one source has its series.
pub fn register_associations(
    registry: &mut Registry,
    counts: Vec<(&'static str, AssociationCount)>,
) {
    register_snapshot(registry, move || {
        vec![FamilySnapshot {
            name: "associations",
            help: "Pod Identity associations known, by source",
            kind: SampleKind::Gauge,
            samples: counts
                .iter()
                .map(|(source, count)| (vec![("source", *source)], count() as f64))
                .collect(),
        }]
    });
}

/// Registers the associations file's own family (refused empty reloads).
pub fn register_file(registry: &mut Registry, source: Arc<FileSource>) {
    register_snapshot(registry, move || {
        vec![FamilySnapshot {
            name: "associations_empty_reloads_refused",
            help: "Reloads of the associations file that came back empty while associations were loaded, refused (write `associations: []` to empty it)",
            kind: SampleKind::Counter,
            samples: vec![(Vec::new(), source.empty_reloads_refused() as f64)],
        }]
    });
}

/// Registers the EKS source's families (calls, errors, cache, syncs).
pub fn register_eks(registry: &mut Registry, source: EksSource) {
    register_snapshot(registry, move || eks_families(&source.stats()));
}

/// The EKS source's own counters as metric families (read on every scrape).
pub fn eks_families(stats: &EksStats) -> Vec<FamilySnapshot> {
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
            "eks_lookups_unconfirmed",
            "Lookups whose expired \"no association\" EKS could not confirm (answered as an error: admission warns)",
            stats.unconfirmed,
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
