//! Cost of an EKS association lookup answered from memory (the admission hot path), and of
//! association details answered from their cache. `cargo bench --bench eks_cache`

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use pod_identity_webhook::identity::eks_cache::{CacheOptions, EksSource};
use pod_identity_webhook::identity::eks_fake::MemEks;
use pod_identity_webhook::identity::{AssociationSource, Freshness};
use pod_identity_webhook::settings::EksSettings;

fn options() -> CacheOptions {
    let mut s = EksSettings::new("bench");
    s.ttl = Duration::from_secs(3600);
    s.negative_ttl = Duration::from_secs(3600);
    CacheOptions::from_settings(&s)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();

    // Answered by the full-sync snapshot (5,000 associations): the common case.
    let synced = EksSource::new(Arc::new(MemEks::many(5_000)), options());
    rt.block_on(synced.sync_now()).unwrap();
    c.bench_function("eks lookup hit (synced view, 5000 associations)", |b| {
        b.iter(|| {
            rt.block_on(synced.lookup("ns-42", "sa-2100", Freshness::Cached))
                .unwrap()
        })
    });

    // Answered by the moka point-lookup cache (no full sync yet).
    let point = EksSource::new(Arc::new(MemEks::many(5_000)), options());
    rt.block_on(point.lookup("ns-42", "sa-2100", Freshness::Cached))
        .unwrap();
    c.bench_function("eks lookup hit (point-lookup cache)", |b| {
        b.iter(|| {
            rt.block_on(point.lookup("ns-42", "sa-2100", Freshness::Cached))
                .unwrap()
        })
    });

    // A cached "no association": after a sync, its first lookup made one point lookup (issue 28).
    c.bench_function(
        "eks lookup hit (negative, confirmed by one point lookup)",
        |b| {
            b.iter(|| {
                rt.block_on(synced.lookup("ns-42", "nobody", Freshness::Cached))
                    .unwrap()
            })
        },
    );

    // Details (role and options) once described: the credentials agent's path.
    rt.block_on(synced.details("ns-42", "sa-2100")).unwrap();
    c.bench_function("eks details hit (described before)", |b| {
        b.iter(|| rt.block_on(synced.details("ns-42", "sa-2100")).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
