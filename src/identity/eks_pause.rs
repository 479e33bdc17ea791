//! Kept beside the SDK's retry because the SDK cannot express it: after `threshold` consecutive
//! failed EKS calls (each already retried by the SDK, see `eks_client`), further calls fail at
//! once, without reaching EKS, for a cool-down that grows while the one probe let through keeps
//! failing. The SDK's retry quota only limits *retries*: every cache miss would still send its
//! first attempt to a failing EKS (tests/eks_source.rs and tests/eks_serve.rs assert that calls
//! stop after `breaker_threshold` failures and that the `paused` gauge shows it).
//!
//! Also the growing, jittered delay ([`backoff`]) the pause and the sync loop's retry share.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::eks_client::CallError;

/// EKS calls are paused; the message says for how long and after what.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "EKS calls paused for {left:?} after {failures} consecutive failures (last: {last_error}); cached answers are still served"
)]
pub struct Paused {
    left: Duration,
    failures: u32,
    last_error: String,
}

/// Consecutive failures of EKS calls, and the pause they lead to.
#[derive(Debug)]
pub(super) struct Pause {
    threshold: u32,
    cooldown: Duration,
    max_cooldown: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    failures: u32,
    open_until: Option<Instant>,
    /// The current cool-down: `cooldown`, doubled with every failed probe.
    cooldown: Duration,
    last_error: String,
}

impl Pause {
    pub(super) fn new(threshold: u32, cooldown: Duration, max_cooldown: Duration) -> Self {
        Self {
            threshold,
            cooldown,
            max_cooldown,
            state: Mutex::new(State {
                failures: 0,
                open_until: None,
                cooldown,
                last_error: String::new(),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a call may go ahead: `Ok(true)` when this caller is the one probe let through
    /// after a pause.
    pub(super) fn admit(&self) -> Result<bool, Paused> {
        let mut s = self.state();
        let now = Instant::now();
        match s.open_until {
            Some(until) if now < until => Err(Paused {
                left: until - now,
                failures: s.failures,
                last_error: s.last_error.clone(),
            }),
            Some(_) => {
                // Half-open: this caller probes; everyone else waits for another cool-down.
                s.open_until = Some(now + s.cooldown);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Counts a call's outcome: a success ends a pause, a failure past the threshold starts (or
    /// lengthens) one.
    pub(super) fn record(&self, error: Option<&CallError>) {
        let mut s = self.state();
        match error {
            None => {
                if s.open_until.is_some() {
                    tracing::info!("EKS calls succeed again; resuming");
                }
                s.failures = 0;
                s.open_until = None;
                s.cooldown = self.cooldown;
            }
            Some(e) => {
                s.failures = s.failures.saturating_add(1);
                s.last_error = e.to_string();
                if s.failures >= self.threshold {
                    if s.open_until.is_some() {
                        s.cooldown = (s.cooldown * 2).min(self.max_cooldown);
                    } else {
                        tracing::warn!(failures = s.failures, cooldown = ?s.cooldown, error = %e, "EKS keeps failing; pausing calls");
                    }
                    s.open_until = Some(Instant::now() + jitter(s.cooldown));
                }
            }
        }
    }

    /// Whether calls are paused now (a gauge).
    pub(super) fn paused(&self) -> bool {
        self.state().open_until.is_some_and(|t| Instant::now() < t)
    }
}

/// `base * 2^(n-1)`, capped, with ±20 % jitter so replicas do not retry in step.
pub(super) fn backoff(base: Duration, attempt: u32, cap: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    jitter(exp.min(cap))
}

/// `d` ±20 %, so replicas started together drift apart.
pub(super) fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.8 + fastrand::f64() * 0.4)
}

#[cfg(test)]
mod tests {
    use super::*;

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
