//! Polling reloads for files that can change under a running server (certificates,
//! associations, configuration).
//!
//! Polling the bytes rather than using inotify follows the `..data` symlink swap of Secret and
//! ConfigMap volumes and works on every filesystem; the files are small.

use std::sync::atomic::AtomicI64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// What one reload check did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    Unchanged,
    Reloaded,
    /// The new content was rejected (or unreadable); the last good content stays in use.
    Failed(String),
}

/// Something that can look at its files and take in a change.
pub trait Reloadable: Send + 'static {
    /// What is reloaded, for logs ("associations file /etc/…").
    fn what(&self) -> String;
    fn check(&mut self) -> ReloadOutcome;
}

/// The content a reloader last refused: the same bad content (or the same read error) seen by
/// later checks is one failed reload, not one per check; any other content is looked at again.
/// Kept as a hash: an associations file may be large, and a collision only skips one log line.
#[derive(Debug, Default)]
pub struct LastRefused(Option<u64>);

impl LastRefused {
    fn hash(content: &[u8]) -> u64 {
        use std::hash::{DefaultHasher, Hasher};
        let mut h = DefaultHasher::new();
        h.write(content);
        h.finish()
    }

    /// Whether `content` is what was refused last (already reported).
    pub fn is_last(&self, content: &[u8]) -> bool {
        self.0 == Some(Self::hash(content))
    }

    /// `content` refused for `reason`: [`ReloadOutcome::Failed`] the first time in a row,
    /// [`ReloadOutcome::Unchanged`] while it stays.
    pub fn refuse(&mut self, content: &[u8], reason: impl Into<String>) -> ReloadOutcome {
        if self.is_last(content) {
            return ReloadOutcome::Unchanged;
        }
        self.0 = Some(Self::hash(content));
        ReloadOutcome::Failed(reason.into())
    }

    /// The file could not be read, for `reason`: [`LastRefused::refuse`] with the reason as the
    /// content (the same error while it lasts is one failure).
    pub fn unreadable(&mut self, reason: String) -> ReloadOutcome {
        let content = reason.clone().into_bytes();
        self.refuse(&content, reason)
    }

    /// The file is back to content that was accepted: a later refusal counts again.
    pub fn forget(&mut self) {
        self.0 = None;
    }
}

/// Calls `check` every `interval` until `stop` is cancelled, logging changes and failures
/// (a failure is logged once until it changes, not every tick).
pub async fn run<R: Reloadable>(mut target: R, interval: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate; the caller loaded already
    let mut last_error: Option<String> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match target.check() {
            ReloadOutcome::Reloaded => {
                last_error = None;
                tracing::info!(what = %target.what(), "reloaded");
            }
            ReloadOutcome::Failed(e) => {
                if last_error.as_deref() != Some(e.as_str()) {
                    tracing::warn!(what = %target.what(), error = %e, "reload failed; keeping the last good content");
                }
                last_error = Some(e);
            }
            ReloadOutcome::Unchanged => {}
        }
    }
}

/// A [`Reloadable`] that also reports each check's outcome (metrics).
pub struct Observed<R, F> {
    inner: R,
    on_check: F,
}

/// Wraps `target` so `on_check` sees every outcome.
pub fn observed<R, F>(target: R, on_check: F) -> Observed<R, F>
where
    R: Reloadable,
    F: FnMut(&ReloadOutcome) + Send + 'static,
{
    Observed {
        inner: target,
        on_check,
    }
}

impl<R, F> Reloadable for Observed<R, F>
where
    R: Reloadable,
    F: FnMut(&ReloadOutcome) + Send + 'static,
{
    fn what(&self) -> String {
        self.inner.what()
    }

    fn check(&mut self) -> ReloadOutcome {
        let outcome = self.inner.check();
        (self.on_check)(&outcome);
        outcome
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    /// What was re-read: `certificate`, `associations`, `config`.
    file: &'static str,
    /// `ok` or `failed`.
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FileLabels {
    file: &'static str,
}

/// Loads and reloads of the files the webhook reads while running.
#[derive(Clone, Debug)]
pub struct ReloadMetrics {
    reloads: Family<ReloadLabels, Counter>,
    last_load: Family<FileLabels, Gauge<i64, AtomicI64>>,
}

impl ReloadMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            reloads: Family::default(),
            last_load: Family::default(),
        };
        registry.register(
            "reloads",
            "Changed files re-read while running, by file and result (ok, failed)",
            metrics.reloads.clone(),
        );
        registry.register(
            "last_successful_load_timestamp_seconds",
            "Unix time of the last successful load of each file (at start-up or on change)",
            metrics.last_load.clone(),
        );
        metrics
    }

    /// Records a successful load of `file` now (start-up or reload).
    pub fn record_loaded(&self, file: &'static str) {
        self.last_load
            .get_or_create(&FileLabels { file })
            .set(crate::telemetry::metrics::unix_now());
    }

    /// Records one reload check of `file` that did something.
    pub fn record(&self, file: &'static str, outcome: &ReloadOutcome) {
        let result = match outcome {
            ReloadOutcome::Unchanged => return,
            ReloadOutcome::Reloaded => {
                self.record_loaded(file);
                "ok"
            }
            ReloadOutcome::Failed(_) => "failed",
        };
        self.reloads
            .get_or_create(&ReloadLabels { file, result })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reload_outcomes_are_counted_and_timestamped() {
        let mut registry = crate::telemetry::metrics::new_registry();
        let metrics = ReloadMetrics::register(&mut registry);
        metrics.record("config", &ReloadOutcome::Unchanged);
        metrics.record("config", &ReloadOutcome::Failed("bad".into()));
        metrics.record("config", &ReloadOutcome::Reloaded);
        let text = crate::telemetry::metrics::encode(&registry);
        assert!(
            text.contains(
                "pod_identity_webhook_reloads_total{file=\"config\",result=\"failed\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("pod_identity_webhook_reloads_total{file=\"config\",result=\"ok\"} 1"),
            "{text}"
        );
        assert!(text.contains(
            "pod_identity_webhook_last_successful_load_timestamp_seconds{file=\"config\"}"
        ));
    }
}
