//! The EKS association source: a cache in front of [`EksApi`] that never makes admission wait
//! on AWS twice.
//!
//! Two views answer a lookup, and the newer one wins:
//! - the *snapshot*: the whole cluster, listed and described by the periodic full sync and
//!   swapped in atomically;
//! - a moka cache of *point lookups* (List filtered by namespace and ServiceAccount, then
//!   Describe), for ServiceAccounts the snapshot is too old for.
//!
//! Rules (issue 3): a found association is trusted for `ttl`, "no association" for the shorter
//! `negative_ttl`; concurrent misses of one key share one EKS call; an expired answer is served
//! while a refresh runs (failure mode `stale`); an AWS error never becomes "no association";
//! an admission waits at most `max_wait`, after which the lookup goes on in the background and
//! fills the cache; after repeated failures EKS calls pause for a (growing) cool-down so an
//! outage does not turn into a retry storm.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use futures::future::{BoxFuture, FutureExt, Shared};
use futures::stream::{self, StreamExt};
use moka::future::Cache;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::eks::{AwsEks, CallError, ClientTuning, EksApi, EksSetupError};
use super::{Association, AssociationSource, AssociationSummary, Freshness, IdentityError};
use crate::identity::eks_settings::{EksSettings, FailureMode};

const SOURCE: &str = "eks";
/// EKS allows 5,000 associations a cluster (50 pages); anything far past that is a loop.
const MAX_PAGES: usize = 1_000;

/// Tuning of the cache and the sync loop. [`CacheOptions::from_settings`] maps the user's
/// settings; the rest has defaults suited to a real cluster (tests shorten them).
#[derive(Debug, Clone)]
pub struct CacheOptions {
    pub ttl: Duration,
    pub negative_ttl: Duration,
    pub max_wait: Duration,
    pub sync_interval: Duration,
    pub ready_timeout: Duration,
    /// Concurrent Describe calls of a full sync, and concurrent point lookups.
    pub concurrency: usize,
    pub failure_mode: FailureMode,
    /// After a failed refresh of a key, its last known answer is served this long before EKS
    /// is asked about it again.
    pub error_cooldown: Duration,
    /// Consecutive failed EKS lookups before calls pause.
    pub breaker_threshold: u32,
    /// First pause; doubles while probes keep failing, up to `breaker_max_cooldown`.
    pub breaker_cooldown: Duration,
    pub breaker_max_cooldown: Duration,
    /// First retry of a failed full sync; doubles up to `sync_interval`.
    pub sync_retry: Duration,
    /// Bound on cached point lookups (memory).
    pub max_entries: u64,
}

impl CacheOptions {
    pub fn from_settings(s: &EksSettings) -> Self {
        Self {
            ttl: s.ttl,
            negative_ttl: s.negative_ttl,
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
    /// Lookups answered with an expired answer while a refresh ran.
    pub stale: u64,
    /// Lookups that joined a lookup already in flight for the same key.
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
    /// Associations whose Describe failed; their last known value (if any) was kept.
    pub describe_failures: usize,
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
    #[error(
        "{failed} of {total} DescribePodIdentityAssociation calls failed (first: {first}); their last known values are kept"
    )]
    Partial {
        failed: usize,
        total: usize,
        first: CallError,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    value: Option<Arc<Association>>,
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
}

#[derive(Debug, Default)]
struct Snapshot {
    /// `None` until the first full sync.
    taken_at: Option<Instant>,
    associations: HashMap<String, Arc<Association>>,
    /// Keys that exist in EKS but could not be described: the snapshot cannot answer them.
    unknown: HashSet<String>,
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

type LookupResult = Result<Option<Arc<Association>>, IdentityError>;
type InFlight = Shared<BoxFuture<'static, LookupResult>>;

struct Inner {
    api: Arc<dyn EksApi>,
    opts: CacheOptions,
    cache: Cache<String, Entry>,
    snapshot: ArcSwap<Snapshot>,
    inflight: Mutex<HashMap<String, InFlight>>,
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
                snapshot: ArcSwap::from_pointee(Snapshot::default()),
                inflight: Mutex::new(HashMap::new()),
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

    /// One full sync now: list every page, describe every association, swap the view in.
    pub async fn sync_now(&self) -> Result<SyncReport, SyncError> {
        self.inner.sync_once().await
    }

    /// Full sync at start-up and then every `sync_interval` (sooner, with backoff, after a
    /// failure); turns ready after the first complete sync or after `ready_timeout`.
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
                                    "first EKS association sync complete; ready"
                                );
                            } else {
                                tracing::debug!(
                                    associations = report.associations,
                                    pages = report.pages,
                                    "EKS association sync complete"
                                );
                            }
                            inner.opts.sync_interval
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
            coalesced: get(&c.coalesced),
            timeouts: get(&c.timeouts),
            bypassed_negative: get(&c.bypassed_negative),
            list_calls: get(&c.list_calls),
            describe_calls: get(&c.describe_calls),
            list_errors: get(&c.list_errors),
            describe_errors: get(&c.describe_errors),
            cache_entries: i.cache.entry_count(),
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
    ) -> BoxFuture<'a, Result<Option<Arc<AssociationSummary>>, IdentityError>> {
        Box::pin(async move {
            let found = self
                .inner
                .lookup(namespace, service_account, freshness)
                .await?;
            Ok(found.map(|a| Arc::new(AssociationSummary::from(&*a))))
        })
    }

    fn details<'a>(
        &'a self,
        namespace: &'a str,
        service_account: &'a str,
    ) -> BoxFuture<'a, LookupResult> {
        Box::pin(
            self.inner
                .lookup(namespace, service_account, Freshness::Cached),
        )
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
        if entry.value.is_none() && freshness == Freshness::BypassNegative {
            // Before a denial: a cached "none" is not good enough, and a stale one must not
            // be served either (an error lets the policy apply its failure policy).
            bump(&self.counters.bypassed_negative);
            return self.wait_for(key, namespace, service_account).await;
        }
        let now = Instant::now();
        if entry.fresh(now, &self.opts) {
            bump(&self.counters.hits);
            return Ok(entry.value);
        }
        let may_refresh = entry.retry_at.is_none_or(|t| now >= t);
        match self.opts.failure_mode {
            FailureMode::Stale => {
                bump(&self.counters.stale);
                if may_refresh {
                    drop(self.start_fetch(key, namespace, service_account));
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
        let from_snapshot = snap
            .taken_at
            .filter(|_| !snap.unknown.contains(key))
            .map(|t| Entry {
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

    /// Waits for the (shared) lookup of `key`, at most `max_wait`; the lookup itself runs on.
    async fn wait_for(self: &Arc<Self>, key: String, namespace: &str, sa: &str) -> LookupResult {
        let lookup = self.start_fetch(key, namespace, sa);
        match tokio::time::timeout(self.opts.max_wait, lookup).await {
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

    /// Starts the lookup of `key` in a task, or joins the one in flight (single flight).
    fn start_fetch(self: &Arc<Self>, key: String, namespace: &str, sa: &str) -> InFlight {
        let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(running) = inflight.get(&key) {
            bump(&self.counters.coalesced);
            return running.clone();
        }
        let inner = self.clone();
        let (ns, sa, task_key) = (namespace.to_string(), sa.to_string(), key.clone());
        // The task removes itself after filling the cache; it cannot do so before the insert
        // below because it needs this lock.
        let handle = tokio::spawn(async move {
            let result = inner.fetch(&ns, &sa).await;
            inner.record(&task_key, &result).await;
            inner
                .inflight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&task_key);
            result.map(|(value, _)| value)
        });
        let shared = async move {
            handle
                .await
                .unwrap_or_else(|e| Err(unavailable(format!("EKS lookup task failed: {e}"))))
        }
        .boxed()
        .shared();
        inflight.insert(key, shared.clone());
        shared
    }

    /// One point lookup through the breaker and the concurrency bound.
    async fn fetch(
        &self,
        namespace: &str,
        sa: &str,
    ) -> Result<(Option<Arc<Association>>, Instant), IdentityError> {
        let probe = self.breaker_admit()?;
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| unavailable("EKS source is shutting down"))?;
        // The breaker may have opened while this lookup queued (a probe goes ahead: it is
        // what closes the breaker again).
        if !probe {
            self.breaker_admit()?;
        }
        let started = Instant::now();
        let result = self.point_lookup(namespace, sa).await;
        self.breaker_record(result.as_ref().err());
        match result {
            Ok(value) => Ok((value, started)),
            Err(e) => Err(unavailable(e.to_string())),
        }
    }

    async fn point_lookup(
        &self,
        namespace: &str,
        sa: &str,
    ) -> Result<Option<Arc<Association>>, CallError> {
        let page = self.list(Some((namespace, sa)), None).await?;
        let Some(summary) = page
            .summaries
            .into_iter()
            .find(|s| s.namespace == namespace && s.service_account == sa)
        else {
            return Ok(None);
        };
        let described = self.describe(&summary.association_id).await?;
        Ok(described
            .filter(|a| a.namespace == namespace && a.service_account == sa)
            .map(Arc::new))
    }

    async fn list(
        &self,
        filter: Option<(&str, &str)>,
        next_token: Option<String>,
    ) -> Result<super::eks::Page, CallError> {
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
    async fn record(
        &self,
        key: &str,
        result: &Result<(Option<Arc<Association>>, Instant), IdentityError>,
    ) {
        match result {
            Ok((value, started)) => {
                let entry = Entry {
                    value: value.clone(),
                    fetched_at: *started,
                    retry_at: None,
                };
                self.cache.insert(key.to_string(), entry).await;
            }
            Err(e) => {
                tracing::warn!(key, error = %e, "EKS association lookup failed; serving the last known answer if there is one");
                let cached = self.cache.get(key).await;
                if let Some(mut entry) = self.known(key, cached) {
                    entry.retry_at = Some(Instant::now() + jitter(self.opts.error_cooldown));
                    self.cache.insert(key.to_string(), entry).await;
                }
            }
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
            Err(SyncError::Partial { first, .. }) => {
                bump(&self.counters.sync_failures);
                self.breaker_record(Some(first));
            }
            Err(SyncError::Pagination) => bump(&self.counters.sync_failures),
        }
        result
    }

    async fn sync_inner(&self) -> Result<SyncReport, SyncError> {
        let taken_at = Instant::now();
        let mut summaries = Vec::new();
        let mut token = None;
        let mut pages = 0;
        loop {
            if pages >= MAX_PAGES {
                return Err(SyncError::Pagination);
            }
            let page = self.list(None, token).await.map_err(SyncError::List)?;
            pages += 1;
            summaries.extend(page.summaries);
            token = page.next_token;
            if token.is_none() {
                break;
            }
        }
        let total = summaries.len();
        let described: Vec<_> = stream::iter(summaries)
            .map(|s| async move {
                let r = self.describe(&s.association_id).await;
                (s, r)
            })
            .buffer_unordered(self.opts.concurrency.max(1))
            .collect()
            .await;

        let previous = self.snapshot.load_full();
        let mut associations = HashMap::with_capacity(total);
        let mut unknown = HashSet::new();
        let mut first_error = None;
        let mut failed = 0;
        for (summary, result) in described {
            let k = key(&summary.namespace, &summary.service_account);
            match result {
                Ok(Some(a)) => {
                    associations.insert(k, Arc::new(a));
                }
                // Deleted between the list and the describe.
                Ok(None) => {}
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert(e);
                    // Keep what we knew when it is the same association; else we cannot tell.
                    match previous.associations.get(&k) {
                        Some(prev)
                            if prev.association_id.as_deref()
                                == Some(summary.association_id.as_str()) =>
                        {
                            associations.insert(k, prev.clone());
                        }
                        _ => {
                            unknown.insert(k);
                        }
                    }
                }
            }
        }
        let count = associations.len();
        self.snapshot.store(Arc::new(Snapshot {
            taken_at: Some(taken_at),
            associations,
            unknown,
        }));
        match first_error {
            None => Ok(SyncReport {
                associations: count,
                pages,
                describe_failures: 0,
            }),
            Some(first) => Err(SyncError::Partial {
                failed,
                total,
                first,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::eks::{CallErrorKind, Operation, Page, Summary};
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// An in-memory EKS: a map of associations, a switch to fail, a delay, and call counters.
    #[derive(Default)]
    struct MemEks {
        associations: Mutex<Vec<Association>>,
        down: AtomicBool,
        delay_ms: AtomicU64,
        lists: AtomicUsize,
        describes: AtomicUsize,
    }

    impl MemEks {
        fn set(&self, list: Vec<Association>) {
            *self.associations.lock().unwrap() = list;
        }
        fn calls(&self) -> usize {
            self.lists.load(Ordering::SeqCst) + self.describes.load(Ordering::SeqCst)
        }
        async fn maybe_fail(&self, op: Operation) -> Result<(), CallError> {
            let ms = self.delay_ms.load(Ordering::SeqCst);
            if ms > 0 {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            if self.down.load(Ordering::SeqCst) {
                return Err(CallError::new(op, CallErrorKind::Server, "down"));
            }
            Ok(())
        }
    }

    impl EksApi for MemEks {
        fn list_page<'a>(
            &'a self,
            filter: Option<(&'a str, &'a str)>,
            _next: Option<String>,
        ) -> BoxFuture<'a, Result<Page, CallError>> {
            Box::pin(async move {
                self.lists.fetch_add(1, Ordering::SeqCst);
                self.maybe_fail(Operation::List).await?;
                let list = self.associations.lock().unwrap().clone();
                Ok(Page {
                    summaries: list
                        .iter()
                        .filter(|a| {
                            filter.is_none_or(|(n, s)| a.namespace == n && a.service_account == s)
                        })
                        .map(|a| Summary {
                            namespace: a.namespace.clone(),
                            service_account: a.service_account.clone(),
                            association_id: a.association_id.clone().unwrap(),
                        })
                        .collect(),
                    next_token: None,
                })
            })
        }
        fn describe<'a>(
            &'a self,
            id: &'a str,
        ) -> BoxFuture<'a, Result<Option<Association>, CallError>> {
            Box::pin(async move {
                self.describes.fetch_add(1, Ordering::SeqCst);
                self.maybe_fail(Operation::Describe).await?;
                Ok(self
                    .associations
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|a| a.association_id.as_deref() == Some(id))
                    .cloned())
            })
        }
    }

    fn assoc(ns: &str, sa: &str, role: &str) -> Association {
        Association {
            namespace: ns.into(),
            service_account: sa.into(),
            role_arn: format!("arn:aws:iam::111122223333:role/{role}"),
            target_role_arn: None,
            external_id: None,
            disable_session_tags: None,
            association_id: Some(format!("a-{ns}-{sa}")),
        }
    }

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

    async fn role(src: &EksSource, ns: &str, sa: &str, f: Freshness) -> Option<String> {
        src.inner
            .lookup(ns, sa, f)
            .await
            .expect("lookup answers")
            .map(|a| a.role_arn.rsplit('/').next().unwrap().to_string())
    }

    #[tokio::test]
    async fn a_fresh_answer_is_served_without_asking_eks_again() {
        let mem = Arc::new(MemEks::default());
        mem.set(vec![assoc("n", "s", "r1")]);
        let src = source(&mem, opts());
        assert_eq!(
            role(&src, "n", "s", Freshness::Cached).await.as_deref(),
            Some("r1")
        );
        assert_eq!(mem.calls(), 2, "one List and one Describe");
        assert_eq!(
            role(&src, "n", "s", Freshness::Cached).await.as_deref(),
            Some("r1")
        );
        assert_eq!(mem.calls(), 2);
        assert_eq!(src.stats().hits, 1);
    }

    #[tokio::test]
    async fn an_expired_answer_is_served_while_a_refresh_runs() {
        let mem = Arc::new(MemEks::default());
        mem.set(vec![assoc("n", "s", "r1")]);
        let src = source(&mem, opts());
        role(&src, "n", "s", Freshness::Cached).await;
        mem.set(vec![assoc("n", "s", "r2")]);
        tokio::time::sleep(src.options().ttl + Duration::from_millis(20)).await;
        // Expired: the old role comes back at once, the refresh fills in the new one.
        assert_eq!(
            role(&src, "n", "s", Freshness::Cached).await.as_deref(),
            Some("r1")
        );
        for _ in 0..100 {
            if role(&src, "n", "s", Freshness::Cached).await.as_deref() == Some("r2") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the refreshed role never showed up");
    }

    #[tokio::test]
    async fn an_error_keeps_the_last_known_answer_and_is_never_cached_as_absent() {
        let mem = Arc::new(MemEks::default());
        mem.set(vec![assoc("n", "s", "r1")]);
        let src = source(&mem, opts());
        role(&src, "n", "s", Freshness::Cached).await;
        mem.down.store(true, Ordering::SeqCst);
        tokio::time::sleep(src.options().ttl + Duration::from_millis(20)).await;
        for _ in 0..5 {
            assert_eq!(
                role(&src, "n", "s", Freshness::Cached).await.as_deref(),
                Some("r1")
            );
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
        assert_eq!(role(&src, "n", "s", Freshness::Cached).await, None);
        mem.set(vec![assoc("n", "s", "new")]);
        // Within the negative TTL the cached "none" stands for ordinary lookups ...
        assert_eq!(role(&src, "n", "s", Freshness::Cached).await, None);
        // ... but not before a denial.
        assert_eq!(
            role(&src, "n", "s", Freshness::BypassNegative)
                .await
                .as_deref(),
            Some("new")
        );
        assert_eq!(src.stats().bypassed_negative, 1);
    }

    #[tokio::test]
    async fn bypass_with_eks_down_is_an_error_not_a_stale_none() {
        let mem = Arc::new(MemEks::default());
        let src = source(&mem, opts());
        assert_eq!(role(&src, "n", "s", Freshness::Cached).await, None);
        mem.down.store(true, Ordering::SeqCst);
        assert!(
            src.lookup("n", "s", Freshness::BypassNegative)
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn admit_unmutated_mode_does_not_serve_expired_answers_when_eks_fails() {
        let mem = Arc::new(MemEks::default());
        mem.set(vec![assoc("n", "s", "r1")]);
        let mut o = opts();
        o.failure_mode = FailureMode::AdmitUnmutated;
        let src = source(&mem, o);
        role(&src, "n", "s", Freshness::Cached).await;
        mem.down.store(true, Ordering::SeqCst);
        tokio::time::sleep(src.options().ttl + Duration::from_millis(20)).await;
        assert!(src.lookup("n", "s", Freshness::Cached).await.is_err());
    }

    #[tokio::test]
    async fn a_slow_eks_times_out_and_the_answer_arrives_for_the_next_request() {
        let mem = Arc::new(MemEks::default());
        mem.set(vec![assoc("n", "s", "r1")]);
        mem.delay_ms.store(150, Ordering::SeqCst); // two calls: 300 ms > max_wait 200 ms
        let src = source(&mem, opts());
        let err = src.lookup("n", "s", Freshness::Cached).await.unwrap_err();
        assert!(matches!(err, IdentityError::Timeout { .. }), "{err}");
        tokio::time::sleep(Duration::from_millis(250)).await;
        mem.delay_ms.store(0, Ordering::SeqCst);
        assert_eq!(
            role(&src, "n", "s", Freshness::Cached).await.as_deref(),
            Some("r1")
        );
        assert_eq!(
            mem.lists.load(Ordering::SeqCst),
            1,
            "the background lookup filled the cache"
        );
    }

    #[tokio::test]
    async fn repeated_failures_pause_calls_instead_of_hammering_eks() {
        let mem = Arc::new(MemEks::default());
        mem.down.store(true, Ordering::SeqCst);
        let src = source(&mem, opts());
        for i in 0..50 {
            assert!(
                src.lookup("n", &format!("sa{i}"), Freshness::Cached)
                    .await
                    .is_err()
            );
        }
        let threshold = src.options().breaker_threshold as usize;
        assert_eq!(mem.lists.load(Ordering::SeqCst), threshold);
        assert!(src.stats().paused);
    }

    #[tokio::test]
    async fn calls_resume_after_the_cool_down_when_eks_recovers() {
        let mem = Arc::new(MemEks::default());
        mem.down.store(true, Ordering::SeqCst);
        let src = source(&mem, opts());
        for i in 0..10 {
            assert!(
                src.lookup("n", &format!("sa{i}"), Freshness::Cached)
                    .await
                    .is_err()
            );
        }
        assert!(src.stats().paused);
        mem.down.store(false, Ordering::SeqCst);
        mem.set(vec![assoc("n", "s", "r1")]);
        // One probe after the cool-down closes the breaker again.
        tokio::time::sleep(src.options().breaker_cooldown * 2).await;
        assert_eq!(
            role(&src, "n", "s", Freshness::Cached).await.as_deref(),
            Some("r1")
        );
        assert!(!src.stats().paused);
    }

    #[tokio::test]
    async fn the_full_sync_answers_and_newer_point_lookups_win() {
        let mem = Arc::new(MemEks::default());
        mem.set(vec![assoc("n", "a", "r1"), assoc("n", "b", "r1")]);
        let src = source(&mem, opts());
        let report = src.sync_now().await.unwrap();
        assert_eq!(report.associations, 2);
        let calls = mem.calls();
        assert_eq!(
            role(&src, "n", "a", Freshness::Cached).await.as_deref(),
            Some("r1")
        );
        assert_eq!(role(&src, "n", "zzz", Freshness::Cached).await, None);
        assert_eq!(mem.calls(), calls, "answered from the synced view");
        mem.set(vec![assoc("n", "b", "r2")]);
        src.sync_now().await.unwrap();
        assert_eq!(role(&src, "n", "a", Freshness::Cached).await, None);
        assert_eq!(
            role(&src, "n", "b", Freshness::Cached).await.as_deref(),
            Some("r2")
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
