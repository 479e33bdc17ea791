//! The request span under the `RUST_LOG` filter, on two threads at once (as the two runtime
//! workers create one per admission): `EnvFilter` as a layer (it takes process-wide locks on
//! every span's creation, entry, exit and close) against `logging::Filter` (the same decisions,
//! without those calls when no directive names a span). The span goes nowhere (no fmt layer), so
//! only the filter and the registry are measured.
//!
//! Run: `cargo bench --bench logging`

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use pod_identity_webhook::logging::{DEFAULT_FILTER, Filter};
use tracing::Dispatch;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;

const THREADS: usize = 2;

/// Time for `iters` spans on each of [`THREADS`] threads, all at once.
fn spans_on_threads(dispatch: &Dispatch, iters: u64) -> Duration {
    let start = Barrier::new(THREADS);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                s.spawn(|| {
                    tracing::dispatcher::with_default(dispatch, || {
                        start.wait();
                        let t = Instant::now();
                        for i in 0..iters {
                            let span = tracing::info_span!("admission", uid = "u-1");
                            span.in_scope(|| black_box(i));
                        }
                        t.elapsed()
                    })
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap())
            .max()
            .unwrap()
    })
}

fn bench(c: &mut Criterion) {
    let env = Dispatch::new(tracing_subscriber::registry().with(EnvFilter::new(DEFAULT_FILTER)));
    let ours = Dispatch::new(
        tracing_subscriber::registry().with(Filter::new(EnvFilter::new(DEFAULT_FILTER))),
    );
    let mut g = c.benchmark_group("span_on_2_threads");
    g.bench_function("env_filter", |b| {
        b.iter_custom(|iters| spans_on_threads(&env, iters))
    });
    g.bench_function("logging_filter", |b| {
        b.iter_custom(|iters| spans_on_threads(&ours, iters))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
