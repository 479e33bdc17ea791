//! Polling reloads for files that can change under a running server (certificates,
//! associations, configuration).
//!
//! Polling the bytes rather than using inotify follows the `..data` symlink swap of Secret and
//! ConfigMap volumes and works on every filesystem; the files are small.

use std::time::Duration;

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
