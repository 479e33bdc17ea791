//! The EKS source's counters: what [`EksSource::stats`] reports for logs and `/metrics`, and
//! the atomics behind it.

use std::sync::atomic::{AtomicU64, Ordering};

use super::EksSource;

/// Counters for logs and metrics; every field only grows except the gauges noted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EksStats {
    /// Lookups answered from a fresh cached answer.
    pub hits: u64,
    /// Lookups with no answer at all, or only the last full sync's absence of one (they wait
    /// for EKS, up to `max_wait`).
    pub misses: u64,
    /// Lookups answered with an expired positive answer while a refresh ran.
    pub stale: u64,
    /// Lookups whose expired "no association" could not be confirmed (EKS failed or the wait
    /// ran out): answered with an error, so admission warns.
    pub unconfirmed: u64,
    /// Lookups (and detail fetches) that joined one already in flight for the same key.
    pub coalesced: u64,
    /// Lookups that gave up waiting after `max_wait`.
    pub timeouts: u64,
    /// `BypassNegative` lookups that skipped a cached "no association".
    pub bypassed_negative: u64,
    pub list_calls: u64,
    pub describe_calls: u64,
    pub list_errors: u64,
    pub describe_errors: u64,
    /// Gauge: point lookups cached.
    pub cache_entries: u64,
    /// Gauge: association details cached.
    pub details_entries: u64,
    /// Gauge: associations in the last full sync.
    pub synced_associations: u64,
    pub syncs: u64,
    pub sync_failures: u64,
    /// Unix time of the last complete full sync.
    pub last_sync_unix: Option<u64>,
    /// Gauge: EKS calls are paused after repeated failures.
    pub paused: bool,
    pub ready: bool,
}

#[derive(Debug, Default)]
pub(in crate::identity) struct Counters {
    pub(in crate::identity) hits: AtomicU64,
    pub(in crate::identity) misses: AtomicU64,
    pub(in crate::identity) stale: AtomicU64,
    pub(in crate::identity) unconfirmed: AtomicU64,
    pub(in crate::identity) coalesced: AtomicU64,
    pub(in crate::identity) timeouts: AtomicU64,
    pub(in crate::identity) bypassed_negative: AtomicU64,
    pub(in crate::identity) list_calls: AtomicU64,
    pub(in crate::identity) describe_calls: AtomicU64,
    pub(in crate::identity) list_errors: AtomicU64,
    pub(in crate::identity) describe_errors: AtomicU64,
    pub(in crate::identity) syncs: AtomicU64,
    pub(in crate::identity) sync_failures: AtomicU64,
    pub(in crate::identity) last_sync_unix: AtomicU64,
}

pub(in crate::identity) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl EksSource {
    pub fn stats(&self) -> EksStats {
        let i = &self.inner;
        let c = &i.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let last = get(&c.last_sync_unix);
        EksStats {
            hits: get(&c.hits),
            misses: get(&c.misses),
            stale: get(&c.stale),
            unconfirmed: get(&c.unconfirmed),
            coalesced: get(&c.coalesced),
            timeouts: get(&c.timeouts),
            bypassed_negative: get(&c.bypassed_negative),
            list_calls: get(&c.list_calls),
            describe_calls: get(&c.describe_calls),
            list_errors: get(&c.list_errors),
            describe_errors: get(&c.describe_errors),
            cache_entries: i.cache.entry_count(),
            details_entries: i.details.entry_count(),
            synced_associations: i.snapshot.load().associations.len() as u64,
            syncs: get(&c.syncs),
            sync_failures: get(&c.sync_failures),
            last_sync_unix: (last > 0).then_some(last),
            paused: i.pause.paused(),
            ready: i.ready.load(Ordering::Acquire),
        }
    }
}
