//! The EKS association source: answers from memory in front of [`EksApi`], so admission never
//! waits on AWS more than once per question.
//!
//! Two levels of answers (docs/contract.md §1):
//! - *has an association?* ([`AssociationSource::lookup`]): the newer of two views wins:
//!   - the *snapshot*: every page of `ListPodIdentityAssociations` (100 a page), nothing else,
//!     swapped in atomically by the periodic full sync (5,000 associations: 50 calls);
//!   - a moka cache of *point lookups* (`List` filtered by namespace and ServiceAccount: one
//!     call), for ServiceAccounts the snapshot is too old for.
//! - *the association's details* ([`AssociationSource::details`]): `DescribePodIdentityAssociation`
//!   on demand, cached by association id for `details_ttl` (a replaced association has a new
//!   id, so its details are never confused with the old ones).
//!
//! Rules (issues 3 and 18): a found association is trusted for `ttl`, "no association" for the
//! shorter `negative_ttl`; concurrent misses of one key share one EKS call (single flight); an
//! expired *positive* answer is served while a refresh runs (failure mode `stale`), but an
//! expired *negative* one never is while a refresh is possible: the lookup waits for the shared
//! refresh (at most `max_wait`), and when EKS fails or the wait runs out the answer is an error
//! saying the "none" could not be confirmed (admission warns); an AWS error never becomes "no
//! association"; a wait that runs out leaves the lookup running in the background to fill the
//! cache; after repeated failures EKS calls pause for a growing, jittered cool-down so an outage
//! does not turn into a retry storm.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use futures::future::{BoxFuture, FutureExt, Shared};
use moka::future::Cache;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::eks_client::{AwsEks, CallError, ClientTuning, EksApi, EksSetupError, Page, Summary};
use super::{Association, AssociationSource, AssociationSummary, Freshness, IdentityError};
use crate::identity::eks_settings::{EksSettings, FailureMode};

const SOURCE: &str = "eks";
/// EKS allows 5,000 associations a cluster (50 pages); anything far past that is a loop.
const MAX_PAGES: usize = 1_000;

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

/// Counters for logs and metrics; every field only grows except the gauges noted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EksStats {
    /// Lookups answered from a fresh cached answer.
    pub hits: u64,
    /// Lookups with no answer at all (they wait for EKS, up to `max_wait`).
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

/// What one full sync saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncReport {
    pub associations: usize,
    pub pages: usize,
}

/// Why a full sync did not complete.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SyncError {
    #[error("{0}; the previous associations stay in use")]
    List(CallError),
    #[error(
        "pagination of ListPodIdentityAssociations did not end after {MAX_PAGES} pages; the previous associations stay in use"
    )]
    Pagination,
}

type Found = Option<Arc<AssociationSummary>>;

#[derive(Debug, Clone)]
struct Entry {
    value: Found,
    /// When the EKS call that produced the answer started (newer answers win).
    fetched_at: Instant,
    /// Set after a failed refresh: do not ask EKS about this key again before then.
    retry_at: Option<Instant>,
}

impl Entry {
    fn fresh(&self, now: Instant, opts: &CacheOptions) -> bool {
        let ttl = if self.value.is_some() {
            opts.ttl
        } else {
            opts.negative_ttl
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
}

#[derive(Debug, Default)]
struct Snapshot {
    /// `None` until the first full sync.
    taken_at: Option<Instant>,
    associations: HashMap<String, Arc<AssociationSummary>>,
}

#[derive(Debug)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
    cooldown: Duration,
    last_error: String,
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    stale: AtomicU64,
    unconfirmed: AtomicU64,
    coalesced: AtomicU64,
    timeouts: AtomicU64,
    bypassed_negative: AtomicU64,
    list_calls: AtomicU64,
    describe_calls: AtomicU64,
    list_errors: AtomicU64,
    describe_errors: AtomicU64,
    syncs: AtomicU64,
    sync_failures: AtomicU64,
    last_sync_unix: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

type LookupResult = Result<Found, IdentityError>;
type DetailsResult = Result<Option<Arc<Association>>, IdentityError>;
type InFlight<T> = Shared<BoxFuture<'static, Result<T, IdentityError>>>;

/// EKS calls in flight, by key: a second caller joins the first instead of calling again.
/// Each call runs in its own task, so a caller that stops waiting does not cancel it.
struct Flights<T>(Mutex<HashMap<String, InFlight<T>>>);

impl<T: Clone + Send + Sync + 'static> Flights<T> {
    fn new() -> Self {
        Self(Mutex::new(HashMap::new()))
    }

    /// The call in flight for `key` (`true`: joined), or a new one from `start`. The task
    /// `start` builds must call [`Flights::finish`] when done; it cannot do so before the
    /// insert here, which holds the lock.
    fn join_or_start(
        &self,
        key: &str,
        start: impl FnOnce() -> BoxFuture<'static, Result<T, IdentityError>>,
    ) -> (InFlight<T>, bool) {
        let mut running = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(call) = running.get(key) {
            return (call.clone(), true);
        }
        let handle = tokio::spawn(start());
        let call = async move {
            handle
                .await
                .unwrap_or_else(|e| Err(unavailable(format!("EKS lookup task failed: {e}"))))
        }
        .boxed()
        .shared();
        running.insert(key.to_string(), call.clone());
        (call, false)
    }

    fn finish(&self, key: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

struct Inner {
    api: Arc<dyn EksApi>,
    opts: CacheOptions,
    cache: Cache<String, Entry>,
    /// Association details by association id.
    details: Cache<String, Details>,
    snapshot: ArcSwap<Snapshot>,
    lookups: Flights<Found>,
    describes: Flights<Option<Arc<Association>>>,
    permits: Semaphore,
    breaker: Mutex<Breaker>,
    counters: Counters,
    ready: AtomicBool,
}

/// The EKS association source (implements [`AssociationSource`]). Cheap to clone.
#[derive(Clone)]
pub struct EksSource {
    inner: Arc<Inner>,
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
        let breaker = Breaker {
            failures: 0,
            open_until: None,
            cooldown: opts.breaker_cooldown,
            last_error: String::new(),
        };
        Self {
            inner: Arc::new(Inner {
                api,
                permits: Semaphore::new(opts.concurrency.max(1)),
                opts,
                cache,
                details,
                snapshot: ArcSwap::from_pointee(Snapshot::default()),
                lookups: Flights::new(),
                describes: Flights::new(),
                breaker: Mutex::new(breaker),
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

    /// One full sync now: list every page, swap the view in.
    pub async fn sync_now(&self) -> Result<SyncReport, SyncError> {
        self.inner.sync_once().await
    }

    /// Full sync at start-up and then every `sync_interval` (sooner, with jittered backoff,
    /// after a failure); turns ready after the first complete sync or after `ready_timeout`.
    pub async fn run_sync(self, stop: CancellationToken) {
        let inner = self.inner;
        let ready_timer = {
            let inner = inner.clone();
            let stop = stop.clone();
            async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep(inner.opts.ready_timeout) => {
                        if !inner.ready.swap(true, Ordering::AcqRel) {
                            tracing::warn!(
                                timeout = ?inner.opts.ready_timeout,
                                "no complete EKS association sync yet; turning ready anyway so pods can be admitted (lookups go to EKS one ServiceAccount at a time)"
                            );
                        }
                    }
                }
            }
        };
        let sync_loop = {
            let inner = inner.clone();
            async move {
                let mut failures: u32 = 0;
                loop {
                    let result = tokio::select! {
                        _ = stop.cancelled() => return,
                        r = inner.sync_once() => r,
                    };
                    let delay = match result {
                        Ok(report) => {
                            failures = 0;
                            if !inner.ready.swap(true, Ordering::AcqRel) {
                                tracing::info!(
                                    associations = report.associations,
                                    pages = report.pages,
                                    "first EKS association sync complete; ready"
                                );
                            } else {
                                tracing::debug!(
                                    associations = report.associations,
                                    pages = report.pages,
                                    "EKS association sync complete"
                                );
                            }
                            // Replicas started together drift apart instead of listing in step.
                            jitter(inner.opts.sync_interval)
                        }
                        Err(e) => {
                            failures = failures.saturating_add(1);
                            let delay =
                                backoff(inner.opts.sync_retry, failures, inner.opts.sync_interval);
                            tracing::warn!(error = %e, retry_in = ?delay, "EKS association sync failed");
                            delay
                        }
                    };
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        };
        futures::join!(ready_timer, sync_loop);
    }

    pub fn stats(&self) -> EksStats {
        let i = &self.inner;
        let c = &i.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let last = get(&c.last_sync_unix);
        let paused = i
            .breaker
            .lock()
            .map(|b| b.open_until.is_some_and(|t| Instant::now() < t))
            .unwrap_or(false);
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
            paused,
            ready: i.ready.load(Ordering::Acquire),
        }
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
    ) -> BoxFuture<'a, LookupResult> {
        Box::pin(self.inner.lookup(namespace, service_account, freshness))
    }

    fn details<'a>(
        &'a self,
        namespace: &'a str,
        service_account: &'a str,
    ) -> BoxFuture<'a, DetailsResult> {
        Box::pin(self.inner.details(namespace, service_account))
    }

    fn ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }
}

/// `namespace/serviceAccount`: neither name can contain a slash.
fn key(namespace: &str, service_account: &str) -> String {
    let mut k = String::with_capacity(namespace.len() + service_account.len() + 1);
    k.push_str(namespace);
    k.push('/');
    k.push_str(service_account);
    k
}

/// `base * 2^(n-1)`, capped, with ±20 % jitter so replicas do not retry in step.
fn backoff(base: Duration, attempt: u32, cap: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    jitter(exp.min(cap))
}

fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.8 + fastrand::f64() * 0.4)
}

fn unavailable(message: impl Into<String>) -> IdentityError {
    IdentityError::Unavailable {
        source_name: SOURCE,
        message: message.into(),
    }
}

fn summary(s: Summary) -> Arc<AssociationSummary> {
    Arc::new(AssociationSummary {
        namespace: s.namespace,
        service_account: s.service_account,
        association_id: Some(s.association_id),
        association_arn: s.association_arn,
    })
}

impl Inner {
    async fn lookup(
        self: &Arc<Self>,
        namespace: &str,
        service_account: &str,
        freshness: Freshness,
    ) -> LookupResult {
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
            // An expired "none" is never served while a refresh is possible: the association
            // may have been created since, and a pod admitted on it gets no credentials.
            let refreshed = if entry.may_refresh(now) {
                self.wait_for(key, namespace, service_account).await
            } else {
                Err(unavailable("its last lookup failed moments ago"))
            };
            return refreshed.map_err(|e| {
                bump(&self.counters.unconfirmed);
                unavailable(format!(
                    "could not confirm that {namespace}/{service_account} has no association (the last answer is older than the negative TTL): {e}"
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

    /// The newer of the point-lookup entry and the snapshot's answer.
    fn known(&self, key: &str, cached: Option<Entry>) -> Option<Entry> {
        let snap = self.snapshot.load();
        let from_snapshot = snap.taken_at.map(|t| Entry {
            value: snap.associations.get(key).cloned(),
            fetched_at: t,
            retry_at: None,
        });
        match (cached, from_snapshot) {
            (Some(c), Some(s)) if s.fetched_at > c.fetched_at => Some(Entry {
                retry_at: c.retry_at,
                ..s
            }),
            (Some(c), _) => Some(c),
            (None, s) => s,
        }
    }

    /// Waits for the shared lookup of `key`, at most `max_wait`; the lookup itself runs on.
    async fn wait_for(self: &Arc<Self>, key: String, namespace: &str, sa: &str) -> LookupResult {
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
    fn start_lookup(self: &Arc<Self>, key: &str, namespace: &str, sa: &str) -> InFlight<Found> {
        let (call, joined) = self.lookups.join_or_start(key, || {
            let inner = self.clone();
            let (ns, sa, key) = (namespace.to_string(), sa.to_string(), key.to_string());
            async move {
                let started = Instant::now();
                let result = inner.call(inner.point_lookup(&ns, &sa)).await;
                inner.record(&key, started, &result).await;
                inner.lookups.finish(&key);
                result
            }
            .boxed()
        });
        if joined {
            bump(&self.counters.coalesced);
        }
        call
    }

    /// One EKS call through the breaker and the concurrency bound.
    async fn call<T>(
        &self,
        call: impl Future<Output = Result<T, CallError>>,
    ) -> Result<T, IdentityError> {
        let probe = self.breaker_admit()?;
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| unavailable("EKS source is shutting down"))?;
        // The breaker may have opened while this call queued (a probe goes ahead: it is what
        // closes the breaker again).
        if !probe {
            self.breaker_admit()?;
        }
        let result = call.await;
        self.breaker_record(result.as_ref().err());
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

    async fn list(
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
    async fn record(&self, key: &str, started: Instant, result: &LookupResult) {
        match result {
            Ok(value) => {
                let entry = Entry {
                    value: value.clone(),
                    fetched_at: started,
                    retry_at: None,
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
    async fn details(self: &Arc<Self>, namespace: &str, sa: &str) -> DetailsResult {
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
        let (call, joined) = self.describes.join_or_start(&id, || {
            let inner = self.clone();
            let (ns, sa, id) = (namespace.to_string(), sa.to_string(), id.clone());
            async move {
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
                    };
                    inner.details.insert(id.clone(), details).await;
                }
                inner.describes.finish(&id);
                result
            }
            .boxed()
        });
        if joined {
            bump(&self.counters.coalesced);
        }
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

    /// `Ok(true)` when this caller is the one probe let through after a pause.
    fn breaker_admit(&self) -> Result<bool, IdentityError> {
        let mut b = self.breaker.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match b.open_until {
            Some(until) if now < until => Err(unavailable(format!(
                "EKS calls paused for {:?} after {} consecutive failures (last: {}); cached answers are still served",
                until - now,
                b.failures,
                b.last_error
            ))),
            Some(_) => {
                // Half-open: this caller probes; everyone else waits for another cool-down.
                b.open_until = Some(now + b.cooldown);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn breaker_record(&self, error: Option<&CallError>) {
        let mut b = self.breaker.lock().unwrap_or_else(|p| p.into_inner());
        match error {
            None => {
                if b.open_until.is_some() {
                    tracing::info!("EKS calls succeed again; resuming");
                }
                b.failures = 0;
                b.open_until = None;
                b.cooldown = self.opts.breaker_cooldown;
            }
            Some(e) => {
                b.failures = b.failures.saturating_add(1);
                b.last_error = e.to_string();
                if b.failures >= self.opts.breaker_threshold {
                    if b.open_until.is_some() {
                        b.cooldown = (b.cooldown * 2).min(self.opts.breaker_max_cooldown);
                    } else {
                        tracing::warn!(failures = b.failures, cooldown = ?b.cooldown, error = %e, "EKS keeps failing; pausing calls");
                    }
                    b.open_until = Some(Instant::now() + jitter(b.cooldown));
                }
            }
        }
    }

    async fn sync_once(&self) -> Result<SyncReport, SyncError> {
        let result = self.sync_inner().await;
        match &result {
            Ok(_) => {
                bump(&self.counters.syncs);
                let unix = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                self.counters.last_sync_unix.store(unix, Ordering::Relaxed);
                self.breaker_record(None);
            }
            Err(SyncError::List(e)) => {
                bump(&self.counters.sync_failures);
                self.breaker_record(Some(e));
            }
            Err(SyncError::Pagination) => bump(&self.counters.sync_failures),
        }
        result
    }

    /// Every page of `List`, nothing else; the view is swapped in only when complete.
    async fn sync_inner(&self) -> Result<SyncReport, SyncError> {
        let taken_at = Instant::now();
        let mut associations = HashMap::new();
        let mut token = None;
        let mut pages = 0;
        loop {
            if pages >= MAX_PAGES {
                return Err(SyncError::Pagination);
            }
            let page = self.list(None, token).await.map_err(SyncError::List)?;
            pages += 1;
            for s in page.summaries {
                associations.insert(key(&s.namespace, &s.service_account), summary(s));
            }
            token = page.next_token;
            if token.is_none() {
                break;
            }
        }
        let count = associations.len();
        self.snapshot.store(Arc::new(Snapshot {
            taken_at: Some(taken_at),
            associations,
        }));
        Ok(SyncReport {
            associations: count,
            pages,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::eks_fake::{MemEks, association};
    use super::*;

    fn opts() -> CacheOptions {
        let mut s = EksSettings::new("test");
        s.ttl = Duration::from_millis(300);
        s.negative_ttl = Duration::from_millis(100);
        s.max_wait = Duration::from_millis(200);
        let mut o = CacheOptions::from_settings(&s);
        o.error_cooldown = Duration::from_millis(50);
        o.breaker_cooldown = Duration::from_millis(200);
        o
    }

    fn source(mem: &Arc<MemEks>, opts: CacheOptions) -> EksSource {
        EksSource::new(mem.clone(), opts)
    }

    /// The ServiceAccount's association id, if it has one.
    async fn id(src: &EksSource, ns: &str, sa: &str, f: Freshness) -> Option<String> {
        src.lookup(ns, sa, f)
            .await
            .expect("lookup answers")
            .map(|a| a.association_id.clone().unwrap())
    }

    async fn role(src: &EksSource, ns: &str, sa: &str) -> Option<String> {
        src.details(ns, sa)
            .await
            .expect("details answer")
            .map(|a| a.role_arn.rsplit('/').next().unwrap().to_string())
    }

    /// A replacement association: same ServiceAccount, new id, new role.
    fn replaced(ns: &str, sa: &str, role: &str) -> Association {
        let mut a = association(ns, sa, role);
        a.association_id = Some(format!("a-{ns}-{sa}-2"));
        a
    }

    #[tokio::test]
    async fn a_fresh_answer_is_served_without_asking_eks_again() {
        let mem = Arc::new(MemEks::new(vec![association("n", "s", "r1")]));
        let src = source(&mem, opts());
        let found = src.lookup("n", "s", Freshness::Cached).await.unwrap();
        let found = found.expect("found");
        assert_eq!(found.association_id.as_deref(), Some("a-n-s"));
        assert!(found.association_arn.is_some());
        assert_eq!(
            (mem.lists(), mem.describes()),
            (1, 0),
            "one List, no Describe"
        );
        assert!(id(&src, "n", "s", Freshness::Cached).await.is_some());
        assert_eq!(mem.calls(), 1);
        assert_eq!(src.stats().hits, 1);
    }

    #[tokio::test]
    async fn details_are_described_once_on_demand_and_follow_a_replaced_association() {
        let mem = Arc::new(MemEks::new(vec![association("n", "s", "r1")]));
        let src = source(&mem, opts());
        src.sync_now().await.unwrap();
        assert_eq!(mem.describes(), 0, "a sync never describes");
        assert_eq!(role(&src, "n", "s").await.as_deref(), Some("r1"));
        assert_eq!(role(&src, "n", "s").await.as_deref(), Some("r1"));
        assert_eq!(mem.describes(), 1, "cached by association id");
        assert_eq!(role(&src, "n", "nobody").await, None);
        assert_eq!(mem.describes(), 1, "no association: nothing to describe");

        mem.set(vec![replaced("n", "s", "r2")]);
        src.sync_now().await.unwrap();
        assert_eq!(role(&src, "n", "s").await.as_deref(), Some("r2"));
        assert_eq!(mem.describes(), 2);

        // Details expire with their own TTL; a failing EKS then serves the last known ones.
        tokio::time::sleep(src.options().details_ttl + Duration::from_millis(20)).await;
        src.sync_now().await.unwrap();
        mem.set_down(true);
        assert_eq!(role(&src, "n", "s").await.as_deref(), Some("r2"));
    }

    #[tokio::test]
    async fn concurrent_detail_requests_share_one_describe() {
        let mem = Arc::new(MemEks::new(vec![association("n", "s", "r1")]));
        let src = source(&mem, opts());
        src.sync_now().await.unwrap();
        mem.set_delay(Duration::from_millis(50));
        let all = futures::future::join_all((0..50).map(|_| role(&src, "n", "s"))).await;
        assert!(all.iter().all(|r| r.as_deref() == Some("r1")), "{all:?}");
        assert_eq!(mem.describes(), 1);
    }

    #[tokio::test]
    async fn an_expired_positive_answer_is_served_while_a_refresh_runs() {
        let mem = Arc::new(MemEks::new(vec![association("n", "s", "r1")]));
        let src = source(&mem, opts());
        id(&src, "n", "s", Freshness::Cached).await;
        mem.set(vec![replaced("n", "s", "r2")]);
        tokio::time::sleep(src.options().ttl + Duration::from_millis(20)).await;
        // Expired: the old association comes back at once, the refresh fills in the new one.
        assert_eq!(
            id(&src, "n", "s", Freshness::Cached).await.as_deref(),
            Some("a-n-s")
        );
        for _ in 0..100 {
            if id(&src, "n", "s", Freshness::Cached).await.as_deref() == Some("a-n-s-2") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the refreshed association never showed up");
    }

    #[tokio::test]
    async fn an_expired_none_is_not_served_the_lookup_waits_for_the_refresh() {
        let mem = Arc::new(MemEks::default());
        let src = source(&mem, opts());
        src.sync_now().await.unwrap();
        assert_eq!(id(&src, "n", "s", Freshness::Cached).await, None);
        mem.set(vec![association("n", "s", "r1")]);
        tokio::time::sleep(src.options().negative_ttl + Duration::from_millis(20)).await;
        // The very first lookup after the negative TTL sees the new association.
        assert_eq!(
            id(&src, "n", "s", Freshness::Cached).await.as_deref(),
            Some("a-n-s")
        );
        assert_eq!(mem.lists(), 2, "the sync, then one point lookup");
    }

    #[tokio::test]
    async fn an_expired_none_that_eks_cannot_confirm_is_an_error_not_a_silent_none() {
        let mem = Arc::new(MemEks::default());
        let src = source(&mem, opts());
        src.sync_now().await.unwrap();
        mem.set_down(true);
        tokio::time::sleep(src.options().negative_ttl + Duration::from_millis(20)).await;
        let err = src.lookup("n", "s", Freshness::Cached).await.unwrap_err();
        assert!(err.to_string().contains("could not confirm"), "{err}");
        // Within the error cool-down EKS is not asked again, and the answer stays an error.
        let lists = mem.lists();
        assert!(src.lookup("n", "s", Freshness::Cached).await.is_err());
        assert_eq!(mem.lists(), lists);
        assert_eq!(src.stats().unconfirmed, 2);

        // A slow EKS: the wait is bounded by max_wait, then the same error.
        mem.set_down(false);
        mem.set_delay(Duration::from_millis(400));
        tokio::time::sleep(src.options().error_cooldown * 2).await;
        let start = Instant::now();
        let err = src.lookup("n", "s", Freshness::Cached).await.unwrap_err();
        assert!(err.to_string().contains("could not confirm"), "{err}");
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn an_error_keeps_the_last_known_association_and_is_never_cached_as_absent() {
        let mem = Arc::new(MemEks::new(vec![association("n", "s", "r1")]));
        let src = source(&mem, opts());
        id(&src, "n", "s", Freshness::Cached).await;
        mem.set_down(true);
        tokio::time::sleep(src.options().ttl + Duration::from_millis(20)).await;
        for _ in 0..5 {
            assert!(id(&src, "n", "s", Freshness::Cached).await.is_some());
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        // A cold key while EKS is down: "could not tell", not "none".
        assert!(src.lookup("n", "other", Freshness::Cached).await.is_err());
        assert!(src.lookup("n", "other", Freshness::Cached).await.is_err());
        assert!(src.stats().list_errors > 0);
    }

    #[tokio::test]
    async fn negative_answers_expire_sooner_and_bypass_skips_them() {
        let mem = Arc::new(MemEks::default());
        let src = source(&mem, opts());
        assert_eq!(id(&src, "n", "s", Freshness::Cached).await, None);
        mem.set(vec![association("n", "s", "new")]);
        // Within the negative TTL the cached "none" stands for ordinary lookups ...
        assert_eq!(id(&src, "n", "s", Freshness::Cached).await, None);
        // ... but not before a denial.
        assert!(
            id(&src, "n", "s", Freshness::BypassNegative)
                .await
                .is_some()
        );
        assert_eq!(src.stats().bypassed_negative, 1);
    }

    #[tokio::test]
    async fn bypass_with_eks_down_is_an_error_not_a_stale_none() {
        let mem = Arc::new(MemEks::default());
        let src = source(&mem, opts());
        assert_eq!(id(&src, "n", "s", Freshness::Cached).await, None);
        mem.set_down(true);
        assert!(
            src.lookup("n", "s", Freshness::BypassNegative)
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn admit_unmutated_mode_does_not_serve_expired_answers_when_eks_fails() {
        let mem = Arc::new(MemEks::new(vec![association("n", "s", "r1")]));
        let mut o = opts();
        o.failure_mode = FailureMode::AdmitUnmutated;
        let src = source(&mem, o);
        id(&src, "n", "s", Freshness::Cached).await;
        mem.set_down(true);
        tokio::time::sleep(src.options().ttl + Duration::from_millis(20)).await;
        assert!(src.lookup("n", "s", Freshness::Cached).await.is_err());
    }

    #[tokio::test]
    async fn a_slow_eks_times_out_and_the_answer_arrives_for_the_next_request() {
        let mem = Arc::new(MemEks::new(vec![association("n", "s", "r1")]));
        mem.set_delay(Duration::from_millis(300)); // > max_wait 200 ms
        let src = source(&mem, opts());
        let err = src.lookup("n", "s", Freshness::Cached).await.unwrap_err();
        assert!(matches!(err, IdentityError::Timeout { .. }), "{err}");
        tokio::time::sleep(Duration::from_millis(250)).await;
        mem.set_delay(Duration::ZERO);
        assert!(id(&src, "n", "s", Freshness::Cached).await.is_some());
        assert_eq!(mem.lists(), 1, "the background lookup filled the cache");
    }

    #[tokio::test]
    async fn repeated_failures_pause_calls_instead_of_hammering_eks() {
        let mem = Arc::new(MemEks::default());
        mem.set_down(true);
        let src = source(&mem, opts());
        for i in 0..50 {
            assert!(
                src.lookup("n", &format!("sa{i}"), Freshness::Cached)
                    .await
                    .is_err()
            );
        }
        let threshold = src.options().breaker_threshold as usize;
        assert_eq!(mem.lists(), threshold);
        assert!(src.stats().paused);
    }

    #[tokio::test]
    async fn calls_resume_after_the_cool_down_when_eks_recovers() {
        let mem = Arc::new(MemEks::default());
        mem.set_down(true);
        let src = source(&mem, opts());
        for i in 0..10 {
            assert!(
                src.lookup("n", &format!("sa{i}"), Freshness::Cached)
                    .await
                    .is_err()
            );
        }
        assert!(src.stats().paused);
        mem.set_down(false);
        mem.set(vec![association("n", "s", "r1")]);
        // One probe after the cool-down closes the breaker again.
        tokio::time::sleep(src.options().breaker_cooldown * 2).await;
        assert!(id(&src, "n", "s", Freshness::Cached).await.is_some());
        assert!(!src.stats().paused);
    }

    #[tokio::test]
    async fn a_full_sync_is_every_list_page_and_nothing_else() {
        let mem = Arc::new(MemEks::many(5_000));
        let mut o = opts();
        // The view must still be fresh after a (debug-build) sync of 5,000.
        o.negative_ttl = Duration::from_secs(60);
        let src = source(&mem, o);
        let report = src.sync_now().await.unwrap();
        assert_eq!(report.associations, 5_000);
        assert_eq!(report.pages, 50);
        assert_eq!((mem.lists(), mem.describes()), (50, 0));
        assert!(
            id(&src, "ns-42", "sa-2100", Freshness::Cached)
                .await
                .is_some()
        );
        assert_eq!(id(&src, "ns-42", "nobody", Freshness::Cached).await, None);
        assert_eq!(mem.calls(), 50, "answered from the synced view");
        let stats = src.stats();
        assert_eq!((stats.list_calls, stats.describe_calls), (50, 0));
        assert_eq!(stats.synced_associations, 5_000);
    }

    #[tokio::test]
    async fn the_newer_of_the_synced_view_and_a_point_lookup_wins() {
        let mem = Arc::new(MemEks::new(vec![association("n", "a", "r1")]));
        let src = source(&mem, opts());
        assert!(id(&src, "n", "a", Freshness::Cached).await.is_some());
        // A sync newer than the cached point lookup wins ...
        mem.set(vec![]);
        src.sync_now().await.unwrap();
        assert_eq!(id(&src, "n", "a", Freshness::Cached).await, None);
        // ... and a point lookup newer than the sync wins over it.
        mem.set(vec![replaced("n", "a", "r2")]);
        assert!(
            id(&src, "n", "a", Freshness::BypassNegative)
                .await
                .is_some()
        );
        assert_eq!(
            id(&src, "n", "a", Freshness::Cached).await.as_deref(),
            Some("a-n-a-2")
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let cap = Duration::from_secs(10);
        let b1 = backoff(Duration::from_secs(1), 1, cap);
        let b5 = backoff(Duration::from_secs(1), 5, cap);
        assert!(b1 >= Duration::from_millis(800) && b1 <= Duration::from_millis(1200));
        assert!(b5 >= Duration::from_secs(8) && b5 <= Duration::from_secs(12));
        assert!(backoff(Duration::from_secs(1), 40, cap) <= Duration::from_secs(12));
    }
}
