//! From a pod's token to credentials: review, association, STS, and the caches in between.
//!
//! - Reviews are cached per token (by its SHA-256, never the token itself) for `review_ttl`, so
//!   a pod's repeated requests cost one `TokenReview` per TTL; a token that stops being valid
//!   (its pod deleted) is refused at the next review.
//! - Credentials are cached per token, or per ServiceAccount when the association disables
//!   session tags (the tags would not name the pod, so every pod of the ServiceAccount can
//!   share them: STS load grows with ServiceAccounts, not pods). Identical concurrent requests
//!   share one STS call (moka's single flight). Each entry leaves the cache when its
//!   credentials expire; the cache is bounded by an estimate of its memory.
//! - Entries are refreshed in the background once fewer than `refresh_before` remain, each up
//!   to a fixed share of a window earlier ([`refresh`]; on use, and by
//!   [`CredentialService::sweep`]), are served while more than `min_remaining` remain
//!   (STS may be down meanwhile), and are dropped when their association goes or changes, or
//!   when STS refuses the role.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use moka::Expiry;
use moka::future::Cache;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

mod refresh;

use super::error::AgentError;
use super::metrics::AgentMetrics;
use super::review::{PodClaims, TokenReviewer};
use super::sts::{
    AssumeRequest, CredentialIssuer, IssuedCredentials, StsError, random_suffix, session_name,
    session_tags, synthetic_cluster_arn,
};
use crate::identity::{Association, Identities};

/// How the credentials are made and kept.
#[derive(Debug, Clone)]
pub struct CredentialSettings {
    /// `eks-cluster-name` tag and session-name part.
    pub cluster_name: String,
    /// `eks-cluster-arn` tag; else `arn:aws:eks:REGION:ACCOUNT:cluster/NAME`.
    pub cluster_arn: Option<String>,
    /// For the synthetic cluster ARN.
    pub region: String,
    /// `DurationSeconds` of `AssumeRole`.
    pub session_duration: Duration,
    /// Refresh in the background once fewer than this remain.
    pub refresh_before: Duration,
    /// Cached credentials with less than this left are not served.
    pub min_remaining: Duration,
    /// How long a successful review of a token is trusted.
    pub review_ttl: Duration,
    /// Bound on the identity lookup of one request.
    pub lookup_timeout: Duration,
    /// Bound on one background refresh (nobody waits for it).
    pub refresh_timeout: Duration,
    /// Least time between two failed background refreshes of one entry.
    pub retry_after: Duration,
    /// Bound on the estimated memory of cached credentials.
    pub max_cache_bytes: u64,
    /// Bound on cached token reviews.
    pub max_reviews: u64,
}

/// Longest a chained session (an association's target role, assumed with the first role's
/// credentials) lasts, whatever `session_duration` says: STS's limit for role chaining.
pub const CHAINED_SESSION_MAX: Duration = Duration::from_secs(3600);

impl CredentialSettings {
    pub fn new(cluster_name: impl Into<String>, region: impl Into<String>) -> Self {
        Self {
            cluster_name: cluster_name.into(),
            cluster_arn: None,
            region: region.into(),
            session_duration: Duration::from_secs(3600),
            refresh_before: Duration::from_secs(15 * 60),
            min_remaining: Duration::from_secs(5 * 60),
            review_ttl: Duration::from_secs(5 * 60),
            lookup_timeout: Duration::from_secs(1),
            refresh_timeout: Duration::from_secs(10),
            retry_after: Duration::from_secs(15),
            max_cache_bytes: 64 << 20,
            max_reviews: 100_000,
        }
    }
}

/// SHA-256 of a token: caches key on this, so tokens are not kept in memory.
type TokenKey = [u8; 32];

fn token_key(token: &str) -> TokenKey {
    Sha256::digest(token.as_bytes()).into()
}

/// Whose credentials an entry holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum CacheKey {
    Token(TokenKey),
    /// `namespace/serviceAccount`, for associations without session tags.
    ServiceAccount(Arc<str>),
}

impl CacheKey {
    /// Where in the refresh window the entry falls. Fixed per key rather than drawn at each
    /// insert: an entry keeps its place from one refresh to the next, so the pods of a new node
    /// stay spread, and the spread can be tested. A token's key is already a SHA-256 (uniform, and
    /// not something a pod chooses); a ServiceAccount's name is hashed the same way.
    fn jitter_share(&self) -> u64 {
        let digest: TokenKey = match self {
            CacheKey::Token(key) => *key,
            CacheKey::ServiceAccount(name) => Sha256::digest(name.as_bytes()).into(),
        };
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_le_bytes(first)
    }
}

fn service_account_key(claims: &PodClaims) -> CacheKey {
    CacheKey::ServiceAccount(format!("{}/{}", claims.namespace, claims.service_account).into())
}

/// Cached credentials with what made them.
pub struct CachedCredentials {
    credentials: IssuedCredentials,
    body: Bytes,
    association: Arc<Association>,
    /// The pod whose request made them (the one whose tags they carry).
    claims: Arc<PodClaims>,
    /// Refreshed once fewer than this remain (`refresh_before` and the entry's jitter).
    refresh_lead: Duration,
    /// Served to a client since issued: only such entries are refreshed by the sweep.
    served: AtomicBool,
    refreshing: AtomicBool,
    /// Milliseconds since the epoch of the last failed refresh (0: none).
    failed_at: AtomicU64,
}

impl CachedCredentials {
    fn new(
        credentials: IssuedCredentials,
        association: Arc<Association>,
        claims: Arc<PodClaims>,
        refresh_lead: Duration,
    ) -> Self {
        let body = Bytes::from(credentials.to_json());
        Self {
            credentials,
            body,
            association,
            claims,
            refresh_lead,
            served: AtomicBool::new(false),
            refreshing: AtomicBool::new(false),
            failed_at: AtomicU64::new(0),
        }
    }

    /// The JSON answer.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    pub fn credentials(&self) -> &IssuedCredentials {
        &self.credentials
    }

    /// Whether the entry is due for a background refresh at `now`.
    fn refresh_due(&self, now: SystemTime) -> bool {
        self.credentials.remaining(now) < self.refresh_lead
    }

    /// Estimated memory held by the entry (the cache's weigher).
    fn weight(&self) -> u32 {
        let c = &self.credentials;
        let strings = c.access_key_id.len()
            + c.secret_access_key.len()
            + c.session_token.len()
            + c.account_id.len()
            + self.claims.pod_name.len()
            + self.claims.pod_uid.len()
            + self.claims.namespace.len()
            + self.claims.service_account.len();
        // Struct overheads, the Arc and the cache's own node.
        (strings + self.body.len() + 400) as u32
    }
}

/// The same role, target, external id and tag setting.
fn same_association(a: &Association, b: &Association) -> bool {
    a.role_arn == b.role_arn
        && a.target_role_arn == b.target_role_arn
        && a.external_id == b.external_id
        && a.disable_session_tags == b.disable_session_tags
        && a.policy == b.policy
}

fn shares_per_service_account(a: &Association) -> bool {
    a.disable_session_tags == Some(true)
}

struct UntilExpiry;

impl Expiry<CacheKey, Arc<CachedCredentials>> for UntilExpiry {
    fn expire_after_create(
        &self,
        _: &CacheKey,
        value: &Arc<CachedCredentials>,
        _: Instant,
    ) -> Option<Duration> {
        Some(value.credentials.remaining(SystemTime::now()))
    }

    fn expire_after_update(
        &self,
        _: &CacheKey,
        value: &Arc<CachedCredentials>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.credentials.remaining(SystemTime::now()))
    }
}

/// The agent's credential logic; cheap to clone (shared state).
#[derive(Clone)]
pub struct CredentialService {
    inner: Arc<Inner>,
}

struct Inner {
    reviewer: Arc<dyn TokenReviewer>,
    issuer: Arc<dyn CredentialIssuer>,
    identities: Identities,
    settings: CredentialSettings,
    reviews: Cache<TokenKey, Arc<PodClaims>>,
    entries: Cache<CacheKey, Arc<CachedCredentials>>,
    metrics: Arc<AgentMetrics>,
    cluster_arn: OnceCell<String>,
}

impl CredentialService {
    pub fn new(
        reviewer: Arc<dyn TokenReviewer>,
        issuer: Arc<dyn CredentialIssuer>,
        identities: Identities,
        settings: CredentialSettings,
        metrics: Arc<AgentMetrics>,
    ) -> Self {
        let reviews = Cache::builder()
            .max_capacity(settings.max_reviews)
            .time_to_live(settings.review_ttl)
            .build();
        let entries = Cache::builder()
            .max_capacity(settings.max_cache_bytes)
            .weigher(|_: &CacheKey, e: &Arc<CachedCredentials>| e.weight())
            .expire_after(UntilExpiry)
            .build();
        let service = Self {
            inner: Arc::new(Inner {
                reviewer,
                issuer,
                identities,
                cluster_arn: OnceCell::new_with(settings.cluster_arn.clone()),
                settings,
                reviews,
                entries,
                metrics,
            }),
        };
        let observed = service.inner.entries.clone();
        service
            .inner
            .metrics
            .set_cache_source(move || (observed.entry_count(), observed.weighted_size()));
        service
    }

    pub fn settings(&self) -> &CredentialSettings {
        &self.inner.settings
    }

    pub fn identities(&self) -> &Identities {
        &self.inner.identities
    }

    pub fn reviewer(&self) -> &Arc<dyn TokenReviewer> {
        &self.inner.reviewer
    }

    /// Entries and estimated bytes of the credential cache (after pending maintenance).
    pub async fn cache_size(&self) -> (u64, u64) {
        self.inner.entries.run_pending_tasks().await;
        (
            self.inner.entries.entry_count(),
            self.inner.entries.weighted_size(),
        )
    }

    /// Cached token reviews (after pending maintenance).
    pub async fn review_cache_entries(&self) -> u64 {
        self.inner.reviews.run_pending_tasks().await;
        self.inner.reviews.entry_count()
    }

    /// Credentials for the holder of `token`. The caller bounds the wait.
    pub async fn credentials(&self, token: &str) -> Result<Arc<CachedCredentials>, AgentError> {
        let inner = &self.inner;
        let token_key = token_key(token);
        let claims = self.review(token_key, token).await?;
        let association = match self.association(&claims).await {
            Ok(a) => a,
            Err(e) => {
                if let AgentError::NotFound(_) = e {
                    // The association went: what was cached for it goes too.
                    inner.entries.invalidate(&CacheKey::Token(token_key)).await;
                    inner
                        .entries
                        .invalidate(&service_account_key(&claims))
                        .await;
                }
                return Err(e);
            }
        };
        let key = if shares_per_service_account(&association) {
            service_account_key(&claims)
        } else {
            CacheKey::Token(token_key)
        };
        if let Some(entry) = inner.entries.get(&key).await {
            let remaining = entry.credentials.remaining(SystemTime::now());
            if same_association(&entry.association, &association)
                && remaining > inner.settings.min_remaining
            {
                AgentMetrics::count(&inner.metrics.cache_lookups, "hit");
                if remaining < entry.refresh_lead {
                    self.refresh_in_background(key, entry.clone());
                }
                entry.served.store(true, Ordering::Relaxed);
                return Ok(entry);
            }
            // The association changed, or they are too close to expiry to hand out.
            inner.entries.invalidate(&key).await;
        }
        AgentMetrics::count(&inner.metrics.cache_lookups, "miss");
        let this = self.clone();
        let lead = self.refresh_lead(&key);
        let entry = inner
            .entries
            .try_get_with(key, async move {
                let credentials = this.issue(&claims, &association).await?;
                Ok::<_, AgentError>(Arc::new(CachedCredentials::new(
                    credentials,
                    association,
                    claims,
                    lead,
                )))
            })
            .await
            .map_err(|e| (*e).clone())?;
        entry.served.store(true, Ordering::Relaxed);
        Ok(entry)
    }

    async fn review(&self, key: TokenKey, token: &str) -> Result<Arc<PodClaims>, AgentError> {
        let inner = &self.inner;
        if let Some(claims) = inner.reviews.get(&key).await {
            return Ok(claims);
        }
        inner
            .reviews
            .try_get_with(key, async {
                let result = inner.reviewer.review(token).await;
                AgentMetrics::count(
                    &inner.metrics.token_reviews,
                    match &result {
                        Ok(_) => "ok",
                        Err(super::review::TokenReviewError::Denied(_)) => "denied",
                        Err(super::review::TokenReviewError::Unavailable(_)) => "unavailable",
                    },
                );
                result.map(Arc::new)
            })
            .await
            .map_err(|e| AgentError::from((*e).clone()))
    }

    /// The ServiceAccount's association details (role, target role, external id, tags),
    /// through the same identity layer as the webhook.
    async fn association(&self, claims: &PodClaims) -> Result<Arc<Association>, AgentError> {
        let inner = &self.inner;
        let (ns, sa) = (claims.namespace.as_str(), claims.service_account.as_str());
        let budget = inner.settings.lookup_timeout;
        let lookup = inner.identities.association_details(ns, sa);
        match tokio::time::timeout(budget, lookup).await {
            Ok(Ok(Some(a))) => Ok(a),
            Ok(Ok(None)) => Err(AgentError::NotFound(format!(
                "ServiceAccount {ns}/{sa} has no Pod Identity association"
            ))),
            Ok(Err(e)) => Err(AgentError::Unavailable(format!(
                "cannot tell whether {ns}/{sa} has a Pod Identity association: {e}"
            ))),
            Err(_) => Err(AgentError::Unavailable(format!(
                "the association source did not answer within {budget:?} for {ns}/{sa}"
            ))),
        }
    }

    async fn cluster_arn(&self) -> Result<String, AgentError> {
        let inner = &self.inner;
        inner
            .cluster_arn
            .get_or_try_init(|| async {
                let account = inner.issuer.caller_account().await.map_err(|e| {
                    AgentError::Unavailable(format!(
                        "cannot make the eks-cluster-arn tag (set --cluster-arn): {e}"
                    ))
                })?;
                Ok::<_, AgentError>(synthetic_cluster_arn(
                    &inner.settings.region,
                    &account,
                    &inner.settings.cluster_name,
                ))
            })
            .await
            .cloned()
    }

    /// `AssumeRole` for the association (and its target role, chained).
    async fn issue(
        &self,
        claims: &PodClaims,
        association: &Association,
    ) -> Result<IssuedCredentials, AgentError> {
        let inner = &self.inner;
        let settings = &inner.settings;
        let shared = shares_per_service_account(association);
        let tags = if shared {
            Vec::new()
        } else {
            session_tags(&self.cluster_arn().await?, &settings.cluster_name, claims)
        };
        // Shared credentials are not one pod's: their session names the ServiceAccount.
        let who = if shared {
            &claims.service_account
        } else {
            &claims.pod_name
        };
        let first = AssumeRequest {
            role_arn: association.role_arn.clone(),
            session_name: session_name(&settings.cluster_name, who, &random_suffix()),
            duration: settings.session_duration,
            tags,
            external_id: None,
            // The policy scopes the credentials the pod gets: those of this call unless a
            // target role follows (a session policy does not carry into a chained session).
            policy: association
                .policy
                .clone()
                .filter(|_| association.target_role_arn.is_none()),
        };
        let credentials = self.call_sts(&first, None).await?;
        let Some(target) = &association.target_role_arn else {
            return Ok(credentials);
        };
        // The tags are transitive: STS carries them into the chained session by itself.
        let second = AssumeRequest {
            role_arn: target.clone(),
            session_name: session_name(&settings.cluster_name, who, &random_suffix()),
            duration: settings.session_duration.min(CHAINED_SESSION_MAX),
            tags: Vec::new(),
            external_id: association.external_id.clone(),
            policy: association.policy.clone(),
        };
        self.call_sts(&second, Some(&credentials)).await
    }

    async fn call_sts(
        &self,
        request: &AssumeRequest,
        using: Option<&IssuedCredentials>,
    ) -> Result<IssuedCredentials, AgentError> {
        let result = self.inner.issuer.assume_role(request, using).await;
        AgentMetrics::count(
            &self.inner.metrics.sts_calls,
            match &result {
                Ok(_) => "ok",
                Err(StsError::AccessDenied(_)) => "access_denied",
                Err(StsError::Invalid(_)) => "invalid",
                Err(StsError::Throttled(_)) => "throttled",
                Err(StsError::Unavailable(_)) => "unavailable",
            },
        );
        if let Err(e) = &result {
            tracing::warn!(role = %request.role_arn, error = %e, "AssumeRole failed");
        }
        Ok(result?)
    }
}
