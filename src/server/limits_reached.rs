//! One counter for every connection limit that ended or refused something, by port and limit,
//! so an operator sees which deadline or cap a client (or an attacker) ran into.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    /// `https` or `admin`.
    port: &'static str,
    /// `handshake_timeout`, `header_read_timeout`, `idle_timeout`, `body_read_timeout`,
    /// `body_timeout`, `http2_first_request_timeout`, `http2_idle_timeout`, `body_memory`.
    limit: &'static str,
}

/// Counts limits reached; cheap to clone (one family shared by every connection).
#[derive(Clone, Debug, Default)]
pub struct LimitsReached(Family<LimitLabels, Counter>);

impl LimitsReached {
    pub fn register(registry: &mut Registry) -> Self {
        let reached = Self::default();
        registry.register(
            "connection_limits_reached",
            "Connections closed or requests refused by a deadline or cap, by port and limit",
            reached.0.clone(),
        );
        reached
    }

    pub fn hit(&self, port: &'static str, limit: &'static str) {
        self.0.get_or_create(&LimitLabels { port, limit }).inc();
    }
}
