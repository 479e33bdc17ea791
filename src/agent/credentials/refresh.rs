//! Refreshing cached credentials: when (`refresh_before` their expiry, moved earlier by a share
//! of a window that is fixed per entry, so the entries of pods that started together, a new
//! node's, do not all go to STS in the same sweep) and how (one background refresh per entry, and
//! the periodic sweep).
//!
//! The jitter only ever moves a refresh earlier: `refresh_before` stays the latest point, so the
//! time left for retries while STS is down (`refresh_before - min_remaining`) is unchanged.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{
    CHAINED_SESSION_MAX, CacheKey, CachedCredentials, CredentialService, same_association,
};
use crate::agent::error::AgentError;
use crate::agent::metrics::AgentMetrics;

/// The window is this share of `refresh_before` (15m: 5m, ten 30 s sweeps). Refreshing earlier
/// costs STS calls: at the defaults (1h sessions) an entry lives 42.5 instead of 45 minutes on
/// average, about 6 % more calls (12.5 % for the earliest).
const WINDOW_DIVISOR: u32 = 3;

/// Width of the jitter window for these settings: a third of `refresh_before`, and never so wide
/// that a fresh entry is due at once (at most a third of what the shortest session, an hour when
/// chained, lasts beyond `refresh_before`).
pub(super) fn window(refresh_before: Duration, session_duration: Duration) -> Duration {
    let shortest = session_duration.min(CHAINED_SESSION_MAX);
    (refresh_before / WINDOW_DIVISOR).min(shortest.saturating_sub(refresh_before) / WINDOW_DIVISOR)
}

/// How long before expiry an entry with this `share` (uniform over `u64`) is refreshed:
/// `refresh_before` plus `share / 2^64` of `window`, so within `[refresh_before,
/// refresh_before + window)`.
pub(super) fn lead(refresh_before: Duration, window: Duration, share: u64) -> Duration {
    let offset = window.as_nanos().saturating_mul(u128::from(share)) >> 64;
    refresh_before.saturating_add(Duration::from_nanos(
        u64::try_from(offset).unwrap_or(u64::MAX),
    ))
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

impl CredentialService {
    /// How long before expiry the entry at `key` is refreshed.
    pub(super) fn refresh_lead(&self, key: &CacheKey) -> Duration {
        let settings = &self.inner.settings;
        let window = window(settings.refresh_before, settings.session_duration);
        lead(settings.refresh_before, window, key.jitter_share())
    }

    /// Starts one refresh of `entry` unless one runs or the last failed too recently.
    pub(super) fn refresh_in_background(&self, key: CacheKey, entry: Arc<CachedCredentials>) {
        let failed_at = entry.failed_at.load(Ordering::Relaxed);
        if failed_at != 0
            && now_millis().saturating_sub(failed_at)
                < self.inner.settings.retry_after.as_millis() as u64
        {
            return;
        }
        if entry.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let timeout = this.inner.settings.refresh_timeout;
            let outcome = tokio::time::timeout(timeout, this.refresh(&key, &entry)).await;
            let metrics = &this.inner.metrics;
            match outcome {
                Ok(Ok(true)) => AgentMetrics::count(&metrics.refreshes, "ok"),
                Ok(Ok(false)) => AgentMetrics::count(&metrics.refreshes, "dropped"),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "refreshing cached credentials failed; the cached ones are served while they last");
                    AgentMetrics::count(&metrics.refreshes, "failed");
                    entry.failed_at.store(now_millis(), Ordering::Relaxed);
                }
                Err(_) => {
                    tracing::warn!(
                        ?timeout,
                        "refreshing cached credentials timed out; the cached ones are served while they last"
                    );
                    AgentMetrics::count(&metrics.refreshes, "failed");
                    entry.failed_at.store(now_millis(), Ordering::Relaxed);
                }
            }
            entry.refreshing.store(false, Ordering::Release);
        });
    }

    /// Replaces `entry` with fresh credentials (`Ok(true)`), or drops it when its association
    /// is gone or changed or STS refuses the role (`Ok(false)`).
    async fn refresh(
        &self,
        key: &CacheKey,
        entry: &Arc<CachedCredentials>,
    ) -> Result<bool, AgentError> {
        let inner = &self.inner;
        let association = match self.association(&entry.claims).await {
            Ok(a) if same_association(&a, &entry.association) => a,
            Ok(_) | Err(AgentError::NotFound(_)) => {
                inner.entries.invalidate(key).await;
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        match self.issue(&entry.claims, &association).await {
            Ok(credentials) => {
                let fresh = CachedCredentials::new(
                    credentials,
                    association,
                    entry.claims.clone(),
                    entry.refresh_lead,
                );
                inner.entries.insert(key.clone(), Arc::new(fresh)).await;
                Ok(true)
            }
            Err(AgentError::AccessDenied(_) | AgentError::BadRequest(..)) => {
                inner.entries.invalidate(key).await;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// One pass over the cache: entries whose association is gone or changed are dropped,
    /// and served entries near expiry are refreshed. Run periodically.
    pub async fn sweep(&self) {
        let inner = &self.inner;
        let now = SystemTime::now();
        let mut gone = Vec::new();
        for (key, entry) in inner.entries.iter() {
            match self.association(&entry.claims).await {
                Ok(a) if same_association(&a, &entry.association) => {
                    if entry.served.load(Ordering::Relaxed) && entry.refresh_due(now) {
                        self.refresh_in_background((*key).clone(), entry.clone());
                    }
                }
                Ok(_) | Err(AgentError::NotFound(_)) => gone.push(key),
                // Could not tell: keep it.
                Err(_) => {}
            }
        }
        for key in gone {
            inner.entries.invalidate(&*key).await;
            AgentMetrics::count(&inner.metrics.refreshes, "dropped");
        }
        inner.entries.run_pending_tasks().await;
    }

    /// Runs [`CredentialService::sweep`] every `interval` until `stop`.
    pub async fn run_sweeps(self, interval: Duration, stop: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => self.sweep().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    const MIN: Duration = Duration::from_secs(60);

    fn share(i: u32) -> u64 {
        let digest = Sha256::digest(format!("token-{i}").as_bytes());
        u64::from_le_bytes(digest[..8].try_into().unwrap())
    }

    #[test]
    fn the_window_is_a_third_of_refresh_before_at_the_defaults() {
        assert_eq!(window(15 * MIN, 60 * MIN), 5 * MIN);
        assert_eq!(window(15 * MIN, 12 * 60 * MIN), 5 * MIN);
    }

    #[test]
    fn a_session_barely_longer_than_refresh_before_gets_a_narrow_window_or_none() {
        // 20m sessions: a fresh entry is never due before a third of its 5 spare minutes.
        assert_eq!(window(15 * MIN, 20 * MIN), 5 * MIN / 3);
        assert_eq!(window(15 * MIN, 15 * MIN), Duration::ZERO);
        assert_eq!(window(50 * MIN, 12 * 60 * MIN), 10 * MIN / 3);
    }

    #[test]
    fn leads_stay_within_the_window_and_never_below_refresh_before() {
        let w = window(15 * MIN, 60 * MIN);
        assert_eq!(lead(15 * MIN, w, 0), 15 * MIN);
        assert!(lead(15 * MIN, w, u64::MAX) < 20 * MIN);
        assert!(lead(15 * MIN, w, u64::MAX) > 20 * MIN - Duration::from_millis(1));
        assert_eq!(lead(15 * MIN, Duration::ZERO, u64::MAX), 15 * MIN);
    }

    #[test]
    fn ten_thousand_entries_expiring_together_spread_evenly_over_the_window() {
        let (before, w) = (15 * MIN, window(15 * MIN, 60 * MIN));
        // Ten 30-second slots (one per sweep at the default interval).
        let mut slots = [0u32; 10];
        for i in 0..10_000 {
            let lead = lead(before, w, share(i));
            assert!(lead >= before && lead < before + w, "{lead:?}");
            let slot = (lead - before).as_secs() / 30;
            slots[slot as usize] += 1;
        }
        // 1,000 expected in each; no sweep gets more than 1.2 × its share, none goes empty.
        for (slot, n) in slots.iter().enumerate() {
            assert!(
                (800..=1200).contains(n),
                "slot {slot}: {n} of 10,000 ({slots:?})"
            );
        }
    }
}
