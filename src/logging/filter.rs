//! The `RUST_LOG` filter, without `EnvFilter`'s span bookkeeping where no directive needs it.
//!
//! `EnvFilter` tracks spans for directives that name a span or its fields
//! (`target[span{field=value}]=level`): it takes a process-wide `RwLock` when a span is created,
//! entered, exited and closed. With no such directive it never tracks one, so those calls find
//! nothing; but the locks are still taken, four times per admission (each has its span), and
//! their cache line moves between the worker threads every time. [`Filter`] forwards the span
//! calls only when the directives can use them; what is enabled is `EnvFilter`'s decision either
//! way.

use tracing::span;
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, Layer};

/// An [`EnvFilter`] as a layer that skips the span calls it would ignore.
pub struct Filter {
    inner: EnvFilter,
    /// Whether a directive names a span or fields (`EnvFilter` then tracks spans).
    tracks_spans: bool,
}

impl Filter {
    pub fn new(inner: EnvFilter) -> Self {
        // Span and field matchers are the `[...]` part of a directive, and `EnvFilter` prints
        // its directives as parsed. A target cannot contain `[`, so without one no directive is
        // dynamic. (A field-name-only directive prints `[` but is static: forwarding is then
        // merely unneeded, never wrong.)
        let tracks_spans = inner.to_string().contains('[');
        Self {
            inner,
            tracks_spans,
        }
    }

    /// Whether span calls reach the `EnvFilter` (directives with span or field matchers).
    pub fn tracks_spans(&self) -> bool {
        self.tracks_spans
    }
}

impl From<EnvFilter> for Filter {
    fn from(inner: EnvFilter) -> Self {
        Self::new(inner)
    }
}

impl<S: Subscriber> Layer<S> for Filter {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        Layer::<S>::register_callsite(&self.inner, metadata)
    }

    fn enabled(&self, metadata: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
        Layer::<S>::enabled(&self.inner, metadata, ctx)
    }

    fn event_enabled(&self, event: &Event<'_>, ctx: Context<'_, S>) -> bool {
        Layer::<S>::event_enabled(&self.inner, event, ctx)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Layer::<S>::max_level_hint(&self.inner)
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        if self.tracks_spans {
            Layer::<S>::on_new_span(&self.inner, attrs, id, ctx);
        }
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        if self.tracks_spans {
            Layer::<S>::on_record(&self.inner, id, values, ctx);
        }
    }

    fn on_enter(&self, id: &span::Id, ctx: Context<'_, S>) {
        if self.tracks_spans {
            Layer::<S>::on_enter(&self.inner, id, ctx);
        }
    }

    fn on_exit(&self, id: &span::Id, ctx: Context<'_, S>) {
        if self.tracks_spans {
            Layer::<S>::on_exit(&self.inner, id, ctx);
        }
    }

    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        if self.tracks_spans {
            Layer::<S>::on_close(&self.inner, id, ctx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    /// Records the messages of the events that pass the filter.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<String>>>);

    impl<S: Subscriber> Layer<S> for Seen {
        fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
            struct Message<'a>(&'a mut String);
            impl tracing::field::Visit for Message<'_> {
                fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                    if f.name() == "message" {
                        *self.0 = format!("{v:?}");
                    }
                }
            }
            let mut m = String::new();
            event.record(&mut Message(&mut m));
            self.0.lock().unwrap().push(m);
        }
    }

    fn events_passed(directives: &str) -> (bool, Vec<String>) {
        let seen = Seen::default();
        let filter = Filter::new(EnvFilter::new(directives));
        let tracks = filter.tracks_spans();
        let subscriber = tracing_subscriber::registry()
            .with(filter)
            .with(seen.clone());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("info outside");
            tracing::debug!("debug outside");
            tracing::info_span!("admission", uid = "u-1").in_scope(|| {
                tracing::debug!("debug in admission");
                tracing::info!("info in admission");
            });
            tracing::info_span!("other").in_scope(|| tracing::debug!("debug in other"));
        });
        let seen = seen.0.lock().unwrap().clone();
        (tracks, seen)
    }

    #[test]
    fn level_and_target_directives_filter_as_env_filter_does_without_span_tracking() {
        let (tracks, seen) = events_passed("info");
        assert!(!tracks);
        assert_eq!(seen, ["info outside", "info in admission"]);

        // This test's events have the crate's target.
        let (tracks, seen) = events_passed("warn,hyper=debug");
        assert!(!tracks);
        assert!(seen.is_empty(), "{seen:?}");

        let (tracks, seen) = events_passed("warn,pod_identity_webhook=debug,hyper=warn");
        assert!(!tracks);
        assert_eq!(seen.len(), 5);

        let (tracks, seen) = events_passed(&format!("info,{}=debug", module_path!()));
        assert!(!tracks);
        assert_eq!(seen.len(), 5);
    }

    #[test]
    fn span_directives_still_enable_events_inside_their_spans() {
        let (tracks, seen) = events_passed("info,[admission]=debug");
        assert!(tracks);
        assert_eq!(
            seen,
            ["info outside", "debug in admission", "info in admission"]
        );

        let (tracks, seen) = events_passed("info,[admission{uid=u-1}]=debug");
        assert!(tracks);
        assert_eq!(
            seen,
            ["info outside", "debug in admission", "info in admission"]
        );

        let (_, seen) = events_passed("info,[admission{uid=u-2}]=debug");
        assert_eq!(seen, ["info outside", "info in admission"]);
    }
}
