//! The agent's own metrics registry (its admin port's `/metrics`). Label values are bounded
//! sets; tokens, names and credentials never become labels.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

/// Latency buckets from 100µs to 5s.
const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Reads (entries, estimated bytes) of the credential cache.
type CacheSize = Box<dyn Fn() -> (u64, u64) + Send + Sync>;

pub struct AgentMetrics {
    registry: Registry,
    /// `agent_requests_total{outcome}`: ok, bad_request, access_denied, not_found, throttled,
    /// unavailable, wrong_host, wrong_path.
    pub requests: Family<OutcomeLabels, Counter>,
    pub request_duration: Histogram,
    /// `agent_sts_calls_total{result}`: ok, access_denied, invalid, throttled, unavailable.
    pub sts_calls: Family<ResultLabels, Counter>,
    /// `agent_token_reviews_total{result}`: ok, denied, unavailable.
    pub token_reviews: Family<ResultLabels, Counter>,
    /// `agent_cache_lookups_total{result}`: hit, miss.
    pub cache_lookups: Family<ResultLabels, Counter>,
    /// `agent_refreshes_total{result}`: ok, failed, dropped.
    pub refreshes: Family<ResultLabels, Counter>,
    pub cache_entries: Gauge,
    pub cache_bytes: Gauge,
    /// `agent_connections_over_address_cap_total`: connections closed at once because their
    /// address held `--max-connections-per-address`.
    pub over_address_cap: Counter,
    /// Set by the owner of the caches before each scrape.
    entries_source: std::sync::Mutex<Option<CacheSize>>,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl AgentMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("pod_identity_agent");
        let requests = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "requests",
            "Credential requests answered, by outcome",
            requests.clone(),
        );
        let request_duration = Histogram::new(BUCKETS);
        registry.register(
            "request_duration_seconds",
            "Time to answer a credential request",
            request_duration.clone(),
        );
        let sts_calls = Family::<ResultLabels, Counter>::default();
        registry.register(
            "sts_calls",
            "STS AssumeRole calls, by result",
            sts_calls.clone(),
        );
        let token_reviews = Family::<ResultLabels, Counter>::default();
        registry.register(
            "token_reviews",
            "TokenReviews sent to the Kubernetes API, by result",
            token_reviews.clone(),
        );
        let cache_lookups = Family::<ResultLabels, Counter>::default();
        registry.register(
            "cache_lookups",
            "Credential cache lookups, by result (hit, miss)",
            cache_lookups.clone(),
        );
        let refreshes = Family::<ResultLabels, Counter>::default();
        registry.register(
            "refreshes",
            "Background refreshes of cached credentials, by result",
            refreshes.clone(),
        );
        let cache_entries = Gauge::default();
        registry.register(
            "cache_entries",
            "Credentials cached now",
            cache_entries.clone(),
        );
        let cache_bytes = Gauge::default();
        registry.register(
            "cache_bytes",
            "Estimated memory of the cached credentials",
            cache_bytes.clone(),
        );
        let over_address_cap = Counter::default();
        registry.register(
            "connections_over_address_cap",
            "Connections closed at once because their address held --max-connections-per-address",
            over_address_cap.clone(),
        );
        Self {
            registry,
            over_address_cap,
            requests,
            request_duration,
            sts_calls,
            token_reviews,
            cache_lookups,
            refreshes,
            cache_entries,
            cache_bytes,
            entries_source: std::sync::Mutex::new(None),
        }
    }

    pub fn request(&self, outcome: &'static str, elapsed: Duration) {
        self.requests
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        self.request_duration.observe(elapsed.as_secs_f64());
    }

    pub fn count(family: &Family<ResultLabels, Counter>, result: &'static str) {
        family.get_or_create(&ResultLabels { result }).inc();
    }

    /// Where the cache gauges come from (read at each scrape).
    pub fn set_cache_source(&self, f: impl Fn() -> (u64, u64) + Send + Sync + 'static) {
        *self
            .entries_source
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Box::new(f));
    }

    /// The value of one counter, for tests and logs.
    pub fn value(family: &Family<ResultLabels, Counter>, result: &'static str) -> u64 {
        family.get_or_create(&ResultLabels { result }).get()
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        if let Some(f) = &*self
            .entries_source
            .lock()
            .unwrap_or_else(|e| e.into_inner())
        {
            let (entries, bytes) = f();
            self.cache_entries.set(entries as i64);
            self.cache_bytes.set(bytes as i64);
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
