//! The EKS association source: answers from memory in front of [`EksApi`], so admission never
//! waits on AWS more than once per question. The calls themselves, and their retries, are
//! `eks_client`'s; the periodic full sync is `eks_sync`'s.
//!
//! Two levels of answers (docs/contract.md §1):
//! - *has an association?* ([`AssociationSource::lookup`]): the newer of two views wins:
//!   - the *snapshot*: every page of `ListPodIdentityAssociations`, swapped in atomically by
//!     the periodic full sync;
//!   - a moka cache of *point lookups* (`List` filtered by namespace and ServiceAccount: one
//!     call), for ServiceAccounts the snapshot is too old for.
//! - *the association's details* ([`AssociationSource::details`]): `DescribePodIdentityAssociation`
//!   on demand, cached by association id for `details_ttl` (a replaced association has a new
//!   id, so its details are never confused with the old ones).
//!
//! Rules (issues 3, 18 and 28): a found association is trusted for `ttl`, "no association" for
//! the shorter `negative_ttl`, and only when a point lookup said so: absence from the full sync
//! is no answer (the association may have been created just after it), so the first lookup of a
//! ServiceAccount the sync did not list waits for one point lookup; concurrent misses of one key share one EKS call (moka's
//! `try_get_with`); an expired *positive* answer is served while a refresh runs (failure mode
//! `stale`), but an expired *negative* one never is while a refresh is possible: the lookup
//! waits for the shared refresh (at most `max_wait`), and when EKS fails or the wait runs out
//! the answer is an error saying the "none" could not be confirmed (admission warns); an AWS
//! error never becomes "no association"; a wait that runs out leaves the lookup running in the
//! background to fill the cache; after repeated failures calls pause (`eks_pause`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures::future::BoxFuture;
use moka::future::Cache;
use tokio::sync::Semaphore;

use super::eks_client::{
    AwsEks, CallError, ClientTuning, EksApi, EksSetupError, ListedAssociation, Page,
};
use super::eks_pause::{Pause, jitter};
use super::{Association, AssociationSource, AssociationSummary, Freshness, IdentityError};
use crate::identity::eks_settings::{EksSettings, FailureMode};

pub use stats::EksStats;
pub(super) use stats::{Counters, bump};

mod stats;

const SOURCE: &str = "eks";

/// Tuning of the source and its sync loop. [`CacheOptions::from_settings`] maps the user's
/// settings; the rest has defaults suited to a real cluster (tests shorten them).
#[derive(Debug, Clone)]
pub struct CacheOptions {
    pub ttl: Duration,
    pub negative_ttl: Duration,
    /// How long fetched association details (Describe) are trusted.
    pub details_ttl: Duration,
    pub max_wait: Duration,
    pub sync_interval: Duration,
    pub ready_timeout: Duration,
    /// Concurrent point lookups and Describe calls.
    pub concurrency: usize,
    pub failure_mode: FailureMode,
    /// After a failed refresh of a key, EKS is not asked about it again for this long.
    pub error_cooldown: Duration,
    /// Consecutive failed EKS calls before calls pause.
    pub breaker_threshold: u32,
    /// First pause; doubles while probes keep failing, up to `breaker_max_cooldown`.
    pub breaker_cooldown: Duration,
    pub breaker_max_cooldown: Duration,
    /// First retry of a failed full sync; doubles up to `sync_interval`.
    pub sync_retry: Duration,
    /// Bound on cached point lookups and on cached details (memory).
    pub max_entries: u64,
}

impl CacheOptions {
    pub fn from_settings(s: &EksSettings) -> Self {
        Self {
            ttl: s.ttl,
            negative_ttl: s.negative_ttl,
            details_ttl: s.ttl,
            max_wait: s.max_wait,
            sync_interval: s.sync_interval,
            ready_timeout: s.ready_timeout,
            concurrency: s.concurrency.max(1),
            failure_mode: s.failure_mode,
            error_cooldown: Duration::from_secs(2),
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(1),
            breaker_max_cooldown: Duration::from_secs(30),
            sync_retry: Duration::from_secs(2),
            max_entries: 100_000,
        }
    }
}

pub(super) type Found = Option<Arc<AssociationSummary>>;

/// Which EKS call an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// The full sync: a listed association, or the absence of one (never served as "none").
    Sync,
    /// A point lookup of this ServiceAccount.
    Point,
}

#[derive(Debug, Clone)]
struct Entry {
    value: Found,
    /// When the EKS call that produced the answer started (newer answers win).
    fetched_at: Instant,
    /// When the answer went into the cache: a caller that decided to look up before then
    /// would have joined that call had it come a moment sooner (see [`Inner::start_lookup`]).
    recorded_at: Instant,
    /// Set after a failed refresh: do not ask EKS about this key again before then.
    retry_at: Option<Instant>,
    origin: Origin,
}

impl Entry {
    fn fresh(&self, now: Instant, opts: &CacheOptions) -> bool {
        let ttl = match (&self.value, self.origin) {
            (Some(_), _) => opts.ttl,
            // Issue 28: an association created right after the sync is not in it; only a
            // point lookup's "none" is trusted.
            (None, Origin::Sync) => return false,
            (None, Origin::Point) => opts.negative_ttl,
        };
        now.saturating_duration_since(self.fetched_at) < ttl
    }

    fn may_refresh(&self, now: Instant) -> bool {
        self.retry_at.is_none_or(|t| now >= t)
    }
}

#[derive(Debug, Clone)]
struct Details {
    value: Arc<Association>,
    fetched_at: Instant,
    /// As [`Entry::recorded_at`].
    recorded_at: Instant,
}

#[derive(Debug, Default)]
pub(super) struct Snapshot {
    /// `None` until the first full sync.
    pub(super) taken_at: Option<Instant>,
    pub(super) associations: HashMap<String, Arc<AssociationSummary>>,
}

/// The source's state, shared by its clones and the tasks of the calls they start.
pub(super) struct Inner {
    api: Arc<dyn EksApi>,
    pub(super) opts: CacheOptions,
    cache: Cache<String, Entry>,
    /// Association details by association id.
    details: Cache<String, Details>,
    pub(super) snapshot: ArcSwap<Snapshot>,
    /// Point lookups in flight, by key, and Describe calls in flight, by association id: moka
    /// runs one call per key and lets concurrent callers wait for its answer ([`Inner::coalesced`]).
    lookups: Cache<String, Found>,
    describes: Cache<String, Option<Arc<Association>>>,
    permits: Semaphore,
    pub(super) pause: Pause,
    pub(super) counters: Counters,
    pub(super) ready: AtomicBool,
}

/// The EKS association source (implements [`AssociationSource`]). Cheap to clone.
#[derive(Clone)]
pub struct EksSource {
    pub(super) inner: Arc<Inner>,
}

impl EksSource {
    pub fn new(api: Arc<dyn EksApi>, opts: CacheOptions) -> Self {
        // Entries outlive their TTL on purpose (stale-while-revalidate); idle ones age out.
        let idle = (opts.ttl * 6).max(Duration::from_secs(3600));
        let cache = Cache::builder()
            .max_capacity(opts.max_entries)
            .time_to_idle(idle)
            .build();
        let details = Cache::builder()
            .max_capacity(opts.max_entries)
            .time_to_idle((opts.details_ttl * 6).max(Duration::from_secs(3600)))
            .build();
        let max_entries = opts.max_entries;
        let pause = Pause::new(
            opts.breaker_threshold,
            opts.breaker_cooldown,
            opts.breaker_max_cooldown,
        );
        Self {
            inner: Arc::new(Inner {
                api,
                permits: Semaphore::new(opts.concurrency.max(1)),
                opts,
                cache,
                details,
                snapshot: ArcSwap::from_pointee(Snapshot::default()),
                // Answers leave these the moment their call ends; the bound is a backstop.
                lookups: Cache::new(max_entries),
                describes: Cache::new(max_entries),
                pause,
                counters: Counters::default(),
                ready: AtomicBool::new(false),
            }),
        }
    }

    /// The source as the webhook runs it: `aws-sdk-eks` with the default credential chain.
    pub async fn connect(settings: &EksSettings) -> Result<Self, EksSetupError> {
        let api = AwsEks::from_settings(settings, &ClientTuning::default()).await?;
        Ok(Self::new(
            Arc::new(api),
            CacheOptions::from_settings(settings),
        ))
    }

    pub fn options(&self) -> &CacheOptions {
        &self.inner.opts
    }
}

impl AssociationSource for EksSource {
    fn name(&self) -> &'static str {
        SOURCE
    }

    fn lookup<'a>(
        &'a self,
        namespace: &'a str,
        service_account: &'a str,
        freshness: Freshness,
    ) -> BoxFuture<'a, Result<Found, IdentityError>> {
        Box::pin(self.inner.lookup(namespace, service_account, freshness))
    }

    fn details<'a>(
        &'a self,
        namespace: &'a str,
        service_account: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<Association>>, IdentityError>> {
        Box::pin(self.inner.details(namespace, service_account))
    }

    fn ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }
}

/// `namespace/serviceAccount`: neither name can contain a slash.
pub(super) fn key(namespace: &str, service_account: &str) -> String {
    let mut k = String::with_capacity(namespace.len() + service_account.len() + 1);
    k.push_str(namespace);
    k.push('/');
    k.push_str(service_account);
    k
}

pub(super) fn unavailable(message: impl Into<String>) -> IdentityError {
    IdentityError::Unavailable {
        source_name: SOURCE,
        message: message.into(),
    }
}

pub(super) fn summary(s: ListedAssociation) -> Arc<AssociationSummary> {
    Arc::new(AssociationSummary {
        namespace: s.namespace,
        service_account: s.service_account,
        association_id: Some(s.association_id),
        association_arn: s.association_arn,
        entry: None,
    })
}

impl Inner {
    async fn lookup(
        self: &Arc<Self>,
        namespace: &str,
        service_account: &str,
        freshness: Freshness,
    ) -> Result<Found, IdentityError> {
        let key = key(namespace, service_account);
        let cached = self.cache.get(&key).await;
        let Some(entry) = self.known(&key, cached) else {
            bump(&self.counters.misses);
            return self.wait_for(key, namespace, service_account).await;
        };
        let now = Instant::now();
        if entry.value.is_none() {
            if freshness == Freshness::BypassNegative {
                // Before a denial: a cached "none" is not good enough (an error lets the
                // policy apply its failure policy).
                bump(&self.counters.bypassed_negative);
                return self.wait_for(key, namespace, service_account).await;
            }
            if entry.fresh(now, &self.opts) {
                bump(&self.counters.hits);
                return Ok(None);
            }
            // An expired "none", or the sync's mere absence, is never served while a refresh is
            // possible: the association may have been created since, and a pod admitted on it
            // gets no credentials.
            let why = match entry.origin {
                Origin::Sync => {
                    bump(&self.counters.misses);
                    "the last full sync did not list it"
                }
                Origin::Point => "the last answer is older than the negative TTL",
            };
            let refreshed = if entry.may_refresh(now) {
                self.wait_for(key, namespace, service_account).await
            } else {
                Err(unavailable("its last lookup failed moments ago"))
            };
            return refreshed.map_err(|e| {
                bump(&self.counters.unconfirmed);
                unavailable(format!(
                    "could not confirm that {namespace}/{service_account} has no association ({why}): {e}"
                ))
            });
        }
        if entry.fresh(now, &self.opts) {
            bump(&self.counters.hits);
            return Ok(entry.value);
        }
        let may_refresh = entry.may_refresh(now);
        match self.opts.failure_mode {
            FailureMode::Stale => {
                bump(&self.counters.stale);
                if may_refresh {
                    drop(self.start_lookup(&key, namespace, service_account));
                }
                Ok(entry.value)
            }
            FailureMode::AdmitUnmutated => {
                if may_refresh {
                    self.wait_for(key, namespace, service_account).await
                } else {
                    Err(unavailable(format!(
                        "the last EKS lookup of {namespace}/{service_account} failed and its cached answer is expired; retrying shortly"
                    )))
                }
            }
        }
    }

    /// The newer of the point-lookup entry and the snapshot's answer; when both say "none",
    /// the point lookup's (a sync that also lacks the key does not need confirming again before
    /// the point lookup's "none" expires: one call per unassociated ServiceAccount per
    /// `negative_ttl`).
    fn known(&self, key: &str, cached: Option<Entry>) -> Option<Entry> {
        let snap = self.snapshot.load();
        let from_snapshot = snap.taken_at.map(|t| Entry {
            value: snap.associations.get(key).cloned(),
            fetched_at: t,
            recorded_at: t,
            retry_at: None,
            origin: Origin::Sync,
        });
        match (cached, from_snapshot) {
            (Some(c), Some(s))
                if s.fetched_at > c.fetched_at && (s.value.is_some() || c.value.is_some()) =>
            {
                Some(Entry {
                    retry_at: c.retry_at,
                    ..s
                })
            }
            (Some(c), _) => Some(c),
            (None, s) => s,
        }
    }

    /// Waits for the shared lookup of `key`, at most `max_wait`; the lookup itself runs on.
    async fn wait_for(
        self: &Arc<Self>,
        key: String,
        namespace: &str,
        sa: &str,
    ) -> Result<Found, IdentityError> {
        let lookup = self.start_lookup(&key, namespace, sa);
        self.bounded(lookup).await
    }

    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, IdentityError>>,
    ) -> Result<T, IdentityError> {
        match tokio::time::timeout(self.opts.max_wait, call).await {
            Ok(result) => result,
            Err(_) => {
                bump(&self.counters.timeouts);
                Err(IdentityError::Timeout {
                    source_name: SOURCE,
                    waited: self.opts.max_wait,
                })
            }
        }
    }

    /// Starts the point lookup of `key` in a task, or joins the one in flight.
    fn start_lookup(
        self: &Arc<Self>,
        key: &str,
        namespace: &str,
        sa: &str,
    ) -> impl Future<Output = Result<Found, IdentityError>> + use<> {
        let inner = self.clone();
        let (ns, sa, k) = (namespace.to_string(), sa.to_string(), key.to_string());
        let decided = Instant::now();
        let call = async move {
            // A call for this key may have finished between this caller's cache miss and its
            // turn here (it left `in_flight` as soon as its answer was in): that answer is as
            // new as the one this caller would have joined, so it is not asked for again.
            if let Some(entry) = inner.cache.get(&k).await
                && entry.origin == Origin::Point
                && entry.recorded_at >= decided
            {
                bump(&inner.counters.coalesced);
                return Ok(entry.value);
            }
            let started = Instant::now();
            let result = inner.call(inner.point_lookup(&ns, &sa)).await;
            inner.record(&k, started, &result).await;
            result
        };
        self.coalesced(&self.lookups, key.to_string(), call)
    }

    /// Runs `call` for `key`, or joins the call in flight for the same key: moka's
    /// `try_get_with` runs the first caller's call and hands its answer (or error) to the
    /// callers that came while it ran. The call runs in a task of its own, so a caller that
    /// stops waiting (`max_wait`) does not cancel it and its answer still fills the caches;
    /// it leaves `in_flight` as soon as it is in (the caches, not this map, keep answers).
    fn coalesced<T, F>(
        self: &Arc<Self>,
        in_flight: &Cache<String, T>,
        key: String,
        call: F,
    ) -> impl Future<Output = Result<T, IdentityError>> + use<T, F>
    where
        T: Clone + Send + Sync + 'static,
        F: Future<Output = Result<T, IdentityError>> + Send + 'static,
    {
        let (inner, in_flight) = (self.clone(), in_flight.clone());
        let task = tokio::spawn(async move {
            let mut ran = false;
            let result = in_flight
                .try_get_with_by_ref(&key, async {
                    ran = true;
                    call.await
                })
                .await;
            if ran {
                in_flight.invalidate(&key).await;
            } else {
                bump(&inner.counters.coalesced);
            }
            result.map_err(|e| (*e).clone())
        });
        async move {
            task.await
                .unwrap_or_else(|e| Err(unavailable(format!("EKS lookup task failed: {e}"))))
        }
    }

    /// One EKS call through the pause and the concurrency bound.
    async fn call<T>(
        &self,
        call: impl Future<Output = Result<T, CallError>>,
    ) -> Result<T, IdentityError> {
        let probe = self.admit()?;
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| unavailable("EKS source is shutting down"))?;
        // Calls may have paused while this one queued (a probe goes ahead: it is what ends the
        // pause).
        if !probe {
            self.admit()?;
        }
        let result = call.await;
        self.pause.record(result.as_ref().err());
        result.map_err(|e| unavailable(e.to_string()))
    }

    /// `List` filtered to one ServiceAccount: one call, no Describe.
    async fn point_lookup(&self, namespace: &str, sa: &str) -> Result<Found, CallError> {
        let page = self.list(Some((namespace, sa)), None).await?;
        Ok(page
            .summaries
            .into_iter()
            .find(|s| s.namespace == namespace && s.service_account == sa)
            .map(summary))
    }

    pub(super) async fn list(
        &self,
        filter: Option<(&str, &str)>,
        next_token: Option<String>,
    ) -> Result<Page, CallError> {
        bump(&self.counters.list_calls);
        let r = self.api.list_page(filter, next_token).await;
        if r.is_err() {
            bump(&self.counters.list_errors);
        }
        r
    }

    async fn describe(&self, id: &str) -> Result<Option<Association>, CallError> {
        bump(&self.counters.describe_calls);
        let r = self.api.describe(id).await;
        if r.is_err() {
            bump(&self.counters.describe_errors);
        }
        r
    }

    /// Fills the cache with a lookup's answer; an error only delays the next attempt.
    async fn record(&self, key: &str, started: Instant, result: &Result<Found, IdentityError>) {
        match result {
            Ok(value) => {
                let entry = Entry {
                    value: value.clone(),
                    fetched_at: started,
                    recorded_at: Instant::now(),
                    retry_at: None,
                    origin: Origin::Point,
                };
                self.cache.insert(key.to_string(), entry).await;
            }
            Err(e) => {
                tracing::warn!(key, error = %e, "EKS association lookup failed; serving the last known association if there is one");
                let cached = self.cache.get(key).await;
                if let Some(mut entry) = self.known(key, cached) {
                    entry.retry_at = Some(Instant::now() + jitter(self.opts.error_cooldown));
                    self.cache.insert(key.to_string(), entry).await;
                }
            }
        }
    }

    /// The association's details: its summary says which association (by id), Describe
    /// (cached by id for `details_ttl`, one call in flight per id) says the rest. Expired
    /// details of the same association are served when EKS cannot answer in time.
    async fn details(
        self: &Arc<Self>,
        namespace: &str,
        sa: &str,
    ) -> Result<Option<Arc<Association>>, IdentityError> {
        let Some(found) = self.lookup(namespace, sa, Freshness::Cached).await? else {
            return Ok(None);
        };
        let Some(id) = found.association_id.clone() else {
            return Err(unavailable(format!(
                "EKS listed {namespace}/{sa} without an association id"
            )));
        };
        let cached = self.details.get(&id).await;
        if let Some(d) = &cached
            && d.fetched_at.elapsed() < self.opts.details_ttl
        {
            return Ok(Some(d.value.clone()));
        }
        let call = {
            let inner = self.clone();
            let (ns, sa, id) = (namespace.to_string(), sa.to_string(), id.clone());
            let decided = Instant::now();
            async move {
                // As in `start_lookup`: details that came in since this caller looked are used.
                if let Some(d) = inner.details.get(&id).await
                    && d.recorded_at >= decided
                {
                    bump(&inner.counters.coalesced);
                    return Ok(Some(d.value));
                }
                let started = Instant::now();
                let result = inner
                    .call(inner.describe(&id))
                    .await
                    // Another ServiceAccount's association under this id would be a confused
                    // EKS answer; treat it as gone rather than hand out its role.
                    .map(|d| {
                        d.filter(|a| a.namespace == ns && a.service_account == sa)
                            .map(Arc::new)
                    });
                if let Ok(Some(value)) = &result {
                    let details = Details {
                        value: value.clone(),
                        fetched_at: started,
                        recorded_at: Instant::now(),
                    };
                    inner.details.insert(id.clone(), details).await;
                }
                result
            }
        };
        let call = self.coalesced(&self.describes, id, call);
        match self.bounded(call).await {
            Ok(value) => Ok(value),
            Err(e) => match cached {
                Some(d) => {
                    tracing::warn!(namespace, service_account = sa, error = %e, "EKS association details could not be refreshed; serving the last known ones");
                    Ok(Some(d.value))
                }
                None => Err(e),
            },
        }
    }

    /// Whether a call may go ahead (`Ok(true)`: it is the probe after a pause).
    fn admit(&self) -> Result<bool, IdentityError> {
        self.pause.admit().map_err(|e| unavailable(e.to_string()))
    }
}

#[cfg(test)]
mod tests;
