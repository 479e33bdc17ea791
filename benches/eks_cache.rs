//! Cost of an EKS association lookup answered from the cache (the admission hot path).
//! `cargo bench --bench eks_cache`

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use futures::future::BoxFuture;
use pod_identity_webhook::identity::cache::{CacheOptions, EksSource};
use pod_identity_webhook::identity::eks::{CallError, EksApi, Page, Summary};
use pod_identity_webhook::identity::{Association, AssociationSource, Freshness};
use pod_identity_webhook::settings::EksSettings;

/// An in-memory EKS with `n` associations `ns-{i/50}`/`sa-{i}`.
struct MemEks(Vec<Association>);

impl EksApi for MemEks {
    fn list_page<'a>(
        &'a self,
        filter: Option<(&'a str, &'a str)>,
        _next: Option<String>,
    ) -> BoxFuture<'a, Result<Page, CallError>> {
        Box::pin(async move {
            Ok(Page {
                summaries: self
                    .0
                    .iter()
                    .filter(|a| {
                        filter.is_none_or(|(n, s)| a.namespace == n && a.service_account == s)
                    })
                    .map(|a| Summary {
                        namespace: a.namespace.clone(),
                        service_account: a.service_account.clone(),
                        association_id: a.association_id.clone().unwrap_or_default(),
                    })
                    .collect(),
                next_token: None,
            })
        })
    }
    fn describe<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Association>, CallError>> {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .find(|a| a.association_id.as_deref() == Some(id))
                .cloned())
        })
    }
}

fn associations(n: usize) -> Vec<Association> {
    (0..n)
        .map(|i| Association {
            namespace: format!("ns-{}", i / 50),
            service_account: format!("sa-{i}"),
            role_arn: format!("arn:aws:iam::111122223333:role/role-{i}"),
            target_role_arn: None,
            external_id: None,
            disable_session_tags: None,
            association_id: Some(format!("a-{i:017}")),
        })
        .collect()
}

fn options() -> CacheOptions {
    let mut s = EksSettings::new("bench");
    s.ttl = Duration::from_secs(3600);
    s.negative_ttl = Duration::from_secs(3600);
    CacheOptions::from_settings(&s)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();

    // Answered by the full-sync snapshot (5,000 associations): the common case.
    let synced = EksSource::new(Arc::new(MemEks(associations(5_000))), options());
    rt.block_on(synced.sync_now()).unwrap();
    c.bench_function("eks lookup hit (synced view, 5000 associations)", |b| {
        b.iter(|| {
            rt.block_on(synced.lookup("ns-42", "sa-2100", Freshness::Cached))
                .unwrap()
        })
    });

    // Answered by the moka point-lookup cache (no full sync yet).
    let point = EksSource::new(Arc::new(MemEks(associations(5_000))), options());
    rt.block_on(point.lookup("ns-42", "sa-2100", Freshness::Cached))
        .unwrap();
    c.bench_function("eks lookup hit (point-lookup cache)", |b| {
        b.iter(|| {
            rt.block_on(point.lookup("ns-42", "sa-2100", Freshness::Cached))
                .unwrap()
        })
    });

    // A cached "no association" from the synced view.
    c.bench_function("eks lookup hit (negative, synced view)", |b| {
        b.iter(|| {
            rt.block_on(synced.lookup("ns-42", "nobody", Freshness::Cached))
                .unwrap()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
