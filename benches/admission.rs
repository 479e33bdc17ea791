//! Admission decisions without HTTP, on the real API server captures (issue 6, benchmarks):
//! - `parse/<fixture>`: the one-pass read of the review and its pod (`Review::read`), and
//!   `parse_value/<fixture>` the same body read into a `serde_json::Value` (how a plain webhook
//!   starts; the parse-and-allow baseline of the load benchmark).
//! - `mutate_pod/<fixture>`: the pure path: read the review, compute the patch, build and
//!   serialise the response.
//! - `mutator/<fixture>`: what the server does on `/mutate`: `Review::read`, `Mutator::review`
//!   (identity lookup in an in-memory associations source of 5,000 entries), the response
//!   serialised.
//! - `validator/<fixture>`: the same on `/validate`, `Validator::review` (enforce mode, role
//!   allowlist, lookups in the same 5,000 associations), for every `*.validate.json`.
//!
//! Run: `cargo bench --bench admission` (the captures in `tests/fixtures/apiserver-v1.24`, or
//! `POD_IDENTITY_FIXTURES`).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};

// The captures are found and read the way the tests read them.
#[path = "../tests/support/mod.rs"]
mod support;
use pod_identity_webhook::admission::Mutator;
use pod_identity_webhook::admission::mutate::mutate_pod;
use pod_identity_webhook::admission::review::{AdmissionResponse, Object, Review, response_body};
use pod_identity_webhook::admission::validate::Validator;
use pod_identity_webhook::identity::file::FileSource;
use pod_identity_webhook::identity::{
    Association, AssociationSummary, Identities, IdentityKind, ResolvedIdentity, ServiceAccountInfo,
};
use pod_identity_webhook::policy::Policy;
use pod_identity_webhook::settings::{
    InjectionSettings, NamespaceRule, PolicyMode, PolicySettings,
};

/// `(name without the suffix, review body)` of every capture ending in `suffix`.
fn fixtures(suffix: &str) -> Vec<(String, Vec<u8>)> {
    let out: Vec<(String, Vec<u8>)> = support::captures(suffix)
        .into_iter()
        .map(|c| {
            let name = format!("{}.json", c.name);
            (name.trim_end_matches(suffix).to_string(), c.body)
        })
        .collect();
    assert!(!out.is_empty(), "no *{suffix} fixtures");
    out
}

fn association(namespace: &str, service_account: &str) -> Association {
    Association::new(
        namespace,
        service_account,
        format!("arn:aws:iam::111122223333:role/{service_account}"),
    )
}

/// 5,000 associations, including every ServiceAccount the fixtures use.
fn associations() -> Vec<Association> {
    let mut list: Vec<Association> = [
        "carts",
        "default",
        "s3-reader",
        "db",
        "migrator",
        "reporter",
    ]
    .iter()
    .map(|sa| association("team-a", sa))
    .collect();
    for i in list.len()..5000 {
        list.push(association(&format!("ns-{}", i % 100), &format!("sa-{i}")));
    }
    list
}

fn bench(c: &mut Criterion) {
    let settings = InjectionSettings::default();
    let mut group = c.benchmark_group("parse");
    for (name, body) in fixtures(".mutate.json") {
        group.bench_function(&name, |b| {
            b.iter(|| black_box(Review::read(black_box(&body)).unwrap()))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("parse_value");
    for (name, body) in fixtures(".mutate.json") {
        group.bench_function(&name, |b| {
            b.iter(|| {
                black_box(serde_json::from_slice::<serde_json::Value>(black_box(&body)).unwrap())
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("mutate_pod");
    for (name, body) in fixtures(".mutate.json") {
        group.bench_function(&name, |b| {
            b.iter(|| {
                let review = Review::read(black_box(&body)).unwrap();
                let req = &review.request;
                let Some(Object::Read(pod)) = &req.object else {
                    panic!("{name}: no readable pod")
                };
                let identity = ResolvedIdentity {
                    kind: IdentityKind::PodIdentity(Arc::new(AssociationSummary::from(
                        &association("team-a", pod.service_account()),
                    ))),
                    service_account: Arc::new(ServiceAccountInfo::default()),
                };
                let mutation = mutate_pod(pod, &identity, &settings);
                let response = AdmissionResponse::allow(&req.uid)
                    .with_patch(&mutation.patch)
                    .with_warnings(mutation.warnings);
                black_box(response_body(&review.api_version, &response))
            })
        });
    }
    group.finish();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let identities = Identities::new("eks.amazonaws.com")
        .with_associations(FileSource::from_list(associations()).unwrap());
    let mutator = Mutator::new(settings.clone(), identities);
    let budget = Duration::from_secs(8);
    let mut group = c.benchmark_group("mutator");
    for (name, body) in fixtures(".mutate.json") {
        group.bench_function(&name, |b| {
            b.iter(|| {
                let review = Review::read(black_box(&body)).unwrap();
                let decision = runtime.block_on(mutator.review(&review.request, budget));
                black_box(response_body(&review.api_version, &decision.response))
            })
        });
    }
    group.finish();

    // The policy of a multi-tenant cluster: enforce everywhere, team-a limited to its own roles.
    let policy = Policy::compile(
        &PolicySettings {
            default_mode: PolicyMode::Enforce,
            namespaces: vec![NamespaceRule {
                pattern: "team-a".into(),
                mode: Some(PolicyMode::Enforce),
                allowed_role_arns: Some(vec!["arn:aws:iam::111122223333:role/*".into()]),
            }],
            ..PolicySettings::default()
        },
        Some("pod-identity-webhook"),
    )
    .unwrap();
    let validator = Validator::new(policy, mutator.identities.clone());
    let mut group = c.benchmark_group("validator");
    for (name, body) in fixtures(".validate.json") {
        group.bench_function(&name, |b| {
            b.iter(|| {
                let review = Review::read(black_box(&body)).unwrap();
                let decision = runtime.block_on(validator.review(&review.request, budget));
                black_box(response_body(&review.api_version, &decision.response))
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
