//! The `admission` scope: anything logged while deciding carries the request's uid under `span`.
//!
//! With the JSON subscriber and no span directive in `RUST_LOG` (the usual case in a cluster) the
//! scope is a thread-local uid set while the decision is polled, and `JsonLines` writes it as the
//! `admission` span it stands for: the same bytes as a real span's, without creating, entering,
//! exiting and closing a span in the registry for every admission. A span directive needs the
//! real span to filter on, and other subscribers (text, tests') render spans themselves: they get
//! a real `tracing` span.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;

use tracing::Instrument;

use super::Filter;
use super::json::Lines;

thread_local! {
    /// The uid of the admission being polled on this thread, valid while `IN_SCOPE` is set.
    static UID: RefCell<String> = const { RefCell::new(String::new()) };
    static IN_SCOPE: Cell<bool> = const { Cell::new(false) };
}

/// Runs `decide` in the `admission` scope of request `uid`. It takes the decision pinned where
/// the caller holds it: a decision future is large, and moving it into this one costs a copy.
pub async fn in_admission<F: Future>(uid: &str, mut decide: Pin<&mut F>) -> F::Output {
    let lightweight = tracing::dispatcher::get_default(|d| {
        Lines::of(d).is_some()
            && d.downcast_ref::<Filter>()
                .is_some_and(|f| !f.tracks_spans())
    });
    if !lightweight {
        return decide
            .instrument(tracing::info_span!("admission", uid))
            .await;
    }
    std::future::poll_fn(|cx| {
        let _scope = Entered::new(uid);
        decide.as_mut().poll(cx)
    })
    .await
}

/// Calls `f` with the uid of the lightweight scope this thread is in, if any.
pub(super) fn with_current_uid<R>(f: impl FnOnce(Option<&str>) -> R) -> R {
    if IN_SCOPE.get() {
        UID.with_borrow(|uid| f(Some(uid)))
    } else {
        f(None)
    }
}

/// The scope, entered for one poll. Admissions do not nest (one per task), so leaving clears it.
struct Entered;

impl Entered {
    fn new(uid: &str) -> Self {
        UID.with_borrow_mut(|s| {
            s.clear();
            s.push_str(uid);
        });
        IN_SCOPE.set(true);
        Entered
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        IN_SCOPE.set(false);
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::EnvFilter;

    use super::*;
    use crate::logging::test_capture::Capture;

    /// Logs inside and after an admission scope under `filter`; the lines without timestamps,
    /// and whether a real span was current inside.
    fn logged(filter: &str) -> (Vec<String>, bool) {
        let capture = Capture::default();
        let writer = capture.clone();
        let subscriber =
            crate::logging::json_subscriber(EnvFilter::new(filter), move || writer.clone());
        let real_span = tracing::subscriber::with_default(subscriber, || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            runtime.block_on(async {
                let decide = std::pin::pin!(async {
                    tracing::warn!(namespace = "team-a", "identity lookup failed");
                    tokio::task::yield_now().await;
                    tracing::info_span!("inner").in_scope(|| tracing::info!("nested"));
                    tracing::warn!("after a yield");
                    !tracing::Span::current().is_none()
                });
                let real = in_admission("u-\"7\"", decide).await;
                tracing::info!("outside");
                real
            })
        });
        let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        let lines = text
            .lines()
            .map(|l| l[l.find("\",\"level\"").unwrap()..].to_string())
            .collect();
        (lines, real_span)
    }

    #[test]
    fn the_lightweight_scope_logs_what_the_admission_span_logs() {
        let (light, light_has_span) = logged("info");
        // A span directive (matching nothing here) makes the filter track spans: a real span.
        let (real, real_has_span) = logged("info,[nothing]=trace");
        assert!(
            !light_has_span,
            "no span is created without span directives"
        );
        assert!(real_has_span);
        assert_eq!(light, real);
        assert_eq!(light.len(), 4);
        assert!(
            light[0].ends_with(r#""span":{"uid":"u-\"7\"","name":"admission"}}"#),
            "{}",
            light[0]
        );
        assert!(
            light[1].ends_with(r#""span":{"name":"inner"}}"#),
            "{}",
            light[1]
        );
        assert!(
            light[2].contains(r#""uid":"u-\"7\"""#),
            "after a yield: {}",
            light[2]
        );
        assert!(
            !light[3].contains("span"),
            "outside the scope: {}",
            light[3]
        );
    }
}
