//! The one line per admission decision (issue 6): self-contained, so a log query needs no span
//! context. It carries identifiers and the outcome only: never the object, its env values or
//! patches.
//!
//! Under the JSON subscriber the line is written straight into the log sink, typed: the same
//! bytes `JsonLines` would write for the event (a test compares the two), without visiting a
//! dozen fields through `dyn Visit` and checking every field name for escapes, which cost more
//! than the rest of the line. `RUST_LOG` decides as for any event. Under any other subscriber
//! (text on a terminal, a test's) it is an ordinary `tracing` event.

use super::json::{Lines, write_decision};

/// The target of the decision line, as `RUST_LOG` names it.
pub const TARGET: &str = "pod_identity_webhook::http";

#[cfg(test)]
thread_local! {
    /// Lines this thread wrote by the direct path (tests check which path was taken).
    pub(super) static DIRECT_WRITES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The fields of a decision line, in their order on the line.
#[derive(Debug, Clone, Copy)]
pub struct DecisionLine<'a> {
    pub uid: &'a str,
    pub endpoint: &'static str,
    pub kind: &'a str,
    pub operation: &'static str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub service_account: &'a str,
    pub outcome: &'static str,
    pub reason: &'static str,
    pub dry_run: bool,
    pub duration_us: u64,
    /// A denial's or error's message, written by this webhook (what is missing, how to fix it).
    /// In `detail`: `message` is the line's own text in JSON output.
    pub detail: Option<&'a str>,
}

impl DecisionLine<'_> {
    /// Logs the line at INFO, if `RUST_LOG` lets it through.
    pub fn emit(&self) {
        if !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
            return;
        }
        let written = tracing::dispatcher::get_default(|d| match Lines::of(d) {
            // Inside a span the event's line would also carry the span: leave that to tracing.
            Some(lines) if d.current_span().id().is_none() => {
                write_decision(self, lines);
                #[cfg(test)]
                DIRECT_WRITES.set(DIRECT_WRITES.get() + 1);
                true
            }
            _ => false,
        });
        if !written {
            self.event();
        }
    }

    /// The line as a `tracing` event, for subscribers other than ours (and to compare with).
    pub fn event(&self) {
        macro_rules! decision_line {
            ($($detail:tt)*) => {
                tracing::info!(
                    target: TARGET,
                    uid = self.uid,
                    endpoint = self.endpoint,
                    kind = self.kind,
                    operation = self.operation,
                    namespace = self.namespace,
                    name = self.name,
                    service_account = self.service_account,
                    outcome = self.outcome,
                    reason = self.reason,
                    dry_run = self.dry_run,
                    duration_us = self.duration_us,
                    $($detail)*
                    "admission decision"
                )
            };
        }
        match self.detail {
            Some(detail) => decision_line!(detail,),
            None => decision_line!(),
        }
    }
}
