//! The EKS association source against the local EKS REST-JSON server (tests/eks_support): the
//! real `aws-sdk-eks` client, its signing and its retries run on every call (issues 3 and 18).
//!
//! Real time and real sockets (the SDK's own timers run, so tokio's paused clock cannot be used):
//! TTLs are short so tests see them expire, and a test that needs an answer to still be cached
//! gives its TTL a margin far above the calls' time on a loaded machine. A test whose subject is
//! not the wait bound (`max_wait`) waits up to [`WAIT`], so a slow machine cannot turn its
//! answer into a timeout; a test of a timeout says which one fired (error variant and counters).

mod eks_support;
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use eks_support::{FakeEks, Fault, fast_tuning, role_arn};
use pod_identity_webhook::identity::eks_cache::{CacheOptions, EksSource};
use pod_identity_webhook::identity::{AssociationSource, Freshness, IdentityError};
use pod_identity_webhook::settings::{EksSettings, FailureMode};
use support::WAIT;

const CLUSTER: &str = "prod";
const SESSION_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::reports/*"}]}"#;

fn options() -> CacheOptions {
    let mut s = EksSettings::new(CLUSTER);
    s.ttl = Duration::from_millis(400);
    s.negative_ttl = Duration::from_millis(150);
    s.max_wait = WAIT;
    s.sync_interval = Duration::from_millis(200);
    s.ready_timeout = Duration::from_secs(5);
    let mut o = CacheOptions::from_settings(&s);
    o.error_cooldown = Duration::from_millis(50);
    o.breaker_cooldown = Duration::from_millis(300);
    o.breaker_max_cooldown = Duration::from_millis(600);
    o.sync_retry = Duration::from_millis(50);
    o
}

/// Long TTLs, for tests that count calls (expired answers are refreshed).
fn long_ttls() -> CacheOptions {
    let mut o = options();
    o.ttl = Duration::from_secs(60);
    o.details_ttl = Duration::from_secs(60);
    o.negative_ttl = Duration::from_secs(60);
    o
}

fn source(fake: &FakeEks, opts: CacheOptions) -> EksSource {
    EksSource::new(Arc::new(fake.client(CLUSTER, &fast_tuning())), opts)
}

async fn role_of(src: &EksSource, ns: &str, sa: &str) -> Result<Option<String>, IdentityError> {
    src.details(ns, sa)
        .await
        .map(|a| a.map(|a| a.role_arn.clone()))
}

/// Whether the source says the ServiceAccount has an association (the admission question).
async fn has(src: &EksSource, ns: &str, sa: &str) -> Result<bool, IdentityError> {
    src.lookup(ns, sa, Freshness::Cached)
        .await
        .map(|a| a.is_some())
}

/// Polls (bounded) until `details` gives `want`; the caches refresh in the background.
async fn eventually(src: &EksSource, ns: &str, sa: &str, want: Option<String>) {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = role_of(src, ns, sa).await;
        if matches!(&got, Ok(v) if *v == want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{ns}/{sa}: still {got:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls (bounded) until the source is ready: its sync loop completed a full sync.
async fn wait_ready(src: &EksSource) {
    let deadline = Instant::now() + WAIT;
    while !src.ready() {
        assert!(
            Instant::now() < deadline,
            "never turned ready: {:?}",
            src.stats()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_full_sync_of_5000_associations_is_50_list_calls_and_ready_follows_it() {
    let fake = FakeEks::start(CLUSTER).await;
    fake.add_many(5_000);
    let mut opts = long_ttls();
    opts.sync_interval = Duration::from_secs(3600);
    let src = source(&fake, opts);
    let stop = tokio_util::sync::CancellationToken::new();
    let start = Instant::now();
    let task = tokio::spawn(src.clone().run_sync(stop.clone()));
    wait_ready(&src).await;
    // Reported, not asserted: timings belong to benches (BENCHMARKS.md has the release numbers).
    eprintln!(
        "5,000 associations: ready after {:?} (debug build)",
        start.elapsed()
    );
    assert_eq!(fake.lists(), 50, "100 a page");
    assert_eq!(fake.describes(), 0, "a sync describes nothing");
    assert_eq!(fake.unsigned(), 0, "every request is SigV4-signed");
    let stats = src.stats();
    assert_eq!((stats.list_calls, stats.describe_calls), (50, 0));
    assert_eq!(stats.synced_associations, 5_000);
    assert!(stats.last_sync_unix.is_some());

    // Found ones are answered from the synced view; issue 28: a ServiceAccount the sync did
    // not list takes one point lookup, then its "none" is cached.
    assert!(has(&src, "ns-42", "sa-2100").await.unwrap());
    assert!(has(&src, "ns-0", "sa-0").await.unwrap());
    assert!(!has(&src, "ns-0", "nobody").await.unwrap());
    assert!(!has(&src, "ns-0", "nobody").await.unwrap());
    assert_eq!(fake.requests(), 51, "one point lookup for the unlisted one");

    // Details on demand: one Describe, then cached.
    assert_eq!(
        role_of(&src, "ns-99", "sa-4999").await.unwrap(),
        Some(role_arn("role-4999"))
    );
    assert_eq!(
        role_of(&src, "ns-99", "sa-4999").await.unwrap(),
        Some(role_arn("role-4999"))
    );
    assert_eq!(fake.describes(), 1);

    // Every further sync is the same 50 calls.
    src.sync_now().await.unwrap();
    assert_eq!(fake.lists(), 101, "50 + the point lookup + 50");
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn two_hundred_concurrent_lookups_right_after_an_association_is_created_make_one_point_lookup()
 {
    let fake = FakeEks::start(CLUSTER).await;
    fake.add_many(5_000);
    let opts = options();
    let src = source(&fake, opts.clone());
    src.sync_now().await.unwrap();
    assert!(!has(&src, "team-a", "fresh").await.unwrap());
    // The point lookup's "none" is older than the negative TTL when the association appears
    // (time must pass; a sleep lasts at least that long).
    tokio::time::sleep(opts.negative_ttl).await;
    fake.add("team-a", "fresh", "fresh");
    fake.set_delay(Duration::from_millis(50)); // every lookup arrives while the first runs
    let lists = fake.lists();
    let lookups: Vec<_> = (0..200)
        .map(|_| {
            let src = src.clone();
            tokio::spawn(async move { has(&src, "team-a", "fresh").await })
        })
        .collect();
    for l in lookups {
        assert!(l.await.unwrap().unwrap(), "an expired \"none\" was served");
    }
    assert_eq!(fake.lists(), lists + 1, "one point lookup");
    assert_eq!(fake.describes(), 0);
}

/// Issue 28: absence from a sync is no cached "none". Right after the sync (long negative
/// TTL, nothing expired) the first lookups of a ServiceAccount it did not list share one point
/// lookup; only that answer is cached.
#[tokio::test]
async fn two_hundred_concurrent_lookups_right_after_a_sync_find_an_association_created_since() {
    let fake = FakeEks::start(CLUSTER).await;
    fake.add_many(5_000);
    let src = source(&fake, long_ttls());
    src.sync_now().await.unwrap();
    let synced = fake.lists();
    fake.add("team-a", "fresh", "fresh");
    fake.set_delay(Duration::from_millis(50)); // every lookup arrives while the first runs
    let lookups: Vec<_> = (0..200)
        .map(|_| {
            let src = src.clone();
            tokio::spawn(async move { has(&src, "team-a", "fresh").await })
        })
        .collect();
    let mut found = 0;
    for l in lookups {
        found += usize::from(l.await.unwrap().unwrap());
    }
    assert_eq!(found, 200, "the sync's absence was served as \"none\"");
    assert_eq!(fake.lists(), synced + 1, "one point lookup");

    // An unassociated ServiceAccount: one point lookup, then its "none" is cached.
    assert!(!has(&src, "team-a", "nobody").await.unwrap());
    assert!(!has(&src, "team-a", "nobody").await.unwrap());
    assert_eq!(fake.lists(), synced + 2);
    // A later sync that also lacks it does not ask again before the negative TTL ends.
    fake.set_delay(Duration::ZERO);
    src.sync_now().await.unwrap();
    let synced = fake.lists();
    assert!(!has(&src, "team-a", "nobody").await.unwrap());
    assert_eq!(fake.lists(), synced);
    // An association deleted since a point lookup found it is confirmed gone by one more.
    fake.remove("team-a", "fresh");
    src.sync_now().await.unwrap();
    let synced = fake.lists();
    assert!(!has(&src, "team-a", "fresh").await.unwrap());
    assert_eq!(fake.lists(), synced + 1);
}

#[tokio::test]
async fn an_expired_none_during_an_outage_is_unconfirmed_never_silently_none() {
    let fake = FakeEks::start(CLUSTER).await;
    fake.add("team-a", "carts", "carts");
    let mut opts = options();
    // The cached "none" must still stand one lookup later, however slow the machine.
    opts.negative_ttl = Duration::from_secs(1);
    let src = source(&fake, opts.clone());
    src.sync_now().await.unwrap();
    // Issue 28: the sync's absence is no answer; a point lookup's "none" stands within the
    // negative TTL, even with EKS failing ...
    assert!(!has(&src, "team-a", "fresh").await.unwrap());
    fake.set_down(true);
    let lists = fake.lists();
    assert!(!has(&src, "team-a", "fresh").await.unwrap());
    assert_eq!(fake.lists(), lists, "answered from the cache");
    tokio::time::sleep(opts.negative_ttl).await;
    // ... after it, the answer says EKS could not confirm it: EKS's failure, not a wait that
    // ran out.
    let err = has(&src, "team-a", "fresh").await.unwrap_err();
    assert!(
        err.to_string().contains("could not confirm")
            && err.to_string().contains("ServerException"),
        "{err}"
    );
    let stats = src.stats();
    assert_eq!((stats.unconfirmed, stats.timeouts), (1, 0), "{stats:?}");
    // The known association is still served.
    assert!(has(&src, "team-a", "carts").await.unwrap());

    fake.set_down(false);
    fake.add("team-a", "fresh", "fresh");
    let deadline = Instant::now() + WAIT;
    while !matches!(has(&src, "team-a", "fresh").await, Ok(true)) {
        assert!(Instant::now() < deadline, "never recovered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn added_removed_and_changed_associations_show_up_after_the_next_sync() {
    let fake = FakeEks::start(CLUSTER).await;
    fake.add("team-a", "carts", "carts");
    fake.add("team-a", "db", "db");
    let src = source(&fake, options());
    src.sync_now().await.unwrap();
    assert_eq!(
        role_of(&src, "team-a", "carts").await.unwrap(),
        Some(role_arn("carts"))
    );

    fake.set_role("team-a", "carts", "carts-v2");
    fake.remove("team-a", "db");
    fake.add("team-b", "reporter", "reporter");
    fake.update("team-b", "reporter", |a| {
        a.target_role_arn = Some("arn:aws:iam::777788889999:role/reader".into());
        a.external_id = Some("ext".into());
        a.disable_session_tags = Some(true);
        a.policy = Some(SESSION_POLICY.into());
    });
    src.sync_now().await.unwrap();

    assert!(!has(&src, "team-a", "db").await.unwrap());
    assert_eq!(role_of(&src, "team-a", "db").await.unwrap(), None);
    assert!(has(&src, "team-b", "reporter").await.unwrap());
    // Details of the same association are cached for their own TTL, then described again.
    eventually(&src, "team-a", "carts", Some(role_arn("carts-v2"))).await;
    let reporter = src
        .details("team-b", "reporter")
        .await
        .unwrap()
        .expect("new association");
    assert_eq!(
        reporter.target_role_arn.as_deref(),
        Some("arn:aws:iam::777788889999:role/reader")
    );
    assert_eq!(reporter.external_id.as_deref(), Some("ext"));
    assert_eq!(reporter.disable_session_tags, Some(true));
    // The inline session policy, as DescribePodIdentityAssociation returns it.
    assert_eq!(reporter.policy.as_deref(), Some(SESSION_POLICY));
    assert!(
        reporter
            .association_id
            .as_deref()
            .unwrap()
            .starts_with("a-")
    );
}

#[tokio::test]
async fn the_background_sync_loop_picks_up_changes_and_turns_ready() {
    let fake = FakeEks::start(CLUSTER).await;
    fake.add("team-a", "carts", "carts");
    let src = source(&fake, options());
    assert!(!src.ready(), "not ready before the first sync");
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(src.clone().run_sync(stop.clone()));
    wait_ready(&src).await;
    fake.set_role("team-a", "carts", "carts-v2");
    eventually(&src, "team-a", "carts", Some(role_arn("carts-v2"))).await;
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn changes_show_up_after_the_ttl_without_a_sync() {
    let fake = FakeEks::start(CLUSTER).await;
    fake.add("team-a", "carts", "carts");
    let mut opts = options();
    // The cached answers must still stand a few lookups later, however slow the machine.
    opts.negative_ttl = Duration::from_secs(1);
    opts.ttl = Duration::from_millis(1500);
    opts.details_ttl = opts.ttl;
    let src = source(&fake, opts);
    assert_eq!(
        role_of(&src, "team-a", "carts").await.unwrap(),
        Some(role_arn("carts"))
    );
    assert_eq!(role_of(&src, "team-a", "db").await.unwrap(), None);

    fake.set_role("team-a", "carts", "carts-v2");
    fake.add("team-a", "db", "db");
    // Within the TTLs the cached answers stand ...
    let requests = fake.requests();
    assert_eq!(
        role_of(&src, "team-a", "carts").await.unwrap(),
        Some(role_arn("carts"))
    );
    assert_eq!(role_of(&src, "team-a", "db").await.unwrap(), None);
    assert_eq!(fake.requests(), requests, "answered from the cache");
    // ... after them the new ones arrive (the negative TTL is the shorter one).
    eventually(&src, "team-a", "db", Some(role_arn("db"))).await;
    eventually(&src, "team-a", "carts", Some(role_arn("carts-v2"))).await;

    fake.remove("team-a", "carts");
    eventually(&src, "team-a", "carts", None).await;
}

#[tokio::test]
async fn a_thousand_concurrent_lookups_of_a_cold_service_account_make_one_list_and_one_describe() {
    let fake = FakeEks::start(CLUSTER).await;
    fake.add("team-a", "carts", "carts");
    // Slow enough that every lookup arrives while the first is still in flight.
    fake.set_delay(Duration::from_millis(100));
    // Nothing expires while the thousand lookups run, however long they take to start.
    let src = source(&fake, long_ttls());
    let lookups: Vec<_> = (0..1_000)
        .map(|_| {
            let src = src.clone();
            tokio::spawn(async move { role_of(&src, "team-a", "carts").await })
        })
        .collect();
    for l in lookups {
        assert_eq!(l.await.unwrap().unwrap(), Some(role_arn("carts")));
    }
    assert_eq!(fake.lists(), 1);
    assert_eq!(fake.describes(), 1);
    let stats = src.stats();
    assert_eq!(stats.list_calls, 1);
    assert_eq!(stats.describe_calls, 1);
    assert!(stats.coalesced > 0, "{stats:?}");
}

#[tokio::test]
async fn bypass_negative_asks_eks_again_and_concurrent_bypasses_share_the_call() {
    let fake = FakeEks::start(CLUSTER).await;
    // The cached "none" is fresh: only the bypass makes the lookups ask again.
    let src = source(&fake, long_ttls());
    assert_eq!(role_of(&src, "team-a", "fresh").await.unwrap(), None);
    fake.add("team-a", "fresh", "fresh");
    let lists = fake.lists();
    let lookups: Vec<_> = (0..50)
        .map(|_| {
            let src = src.clone();
            tokio::spawn(async move {
                src.lookup("team-a", "fresh", Freshness::BypassNegative)
                    .await
                    .map(|a| a.map(|a| a.service_account.clone()))
            })
        })
        .collect();
    for l in lookups {
        assert_eq!(l.await.unwrap().unwrap().as_deref(), Some("fresh"));
    }
    assert_eq!(fake.lists(), lists + 1);
}

#[tokio::test]
async fn throttling_is_retried_with_backoff_by_the_sdk() {
    let fake = FakeEks::start(CLUSTER).await;
    fake.add("team-a", "carts", "carts");
    fake.fail_next(2, Fault::Throttle);
    let src = source(&fake, options());
    assert_eq!(
        role_of(&src, "team-a", "carts").await.unwrap(),
        Some(role_arn("carts"))
    );
    assert_eq!(fake.lists(), 3, "two 429s, then the answer");
    assert_eq!(fake.describes(), 1);
    assert_eq!(src.stats().list_errors, 0, "retries stay inside the SDK");
}

#[tokio::test]
async fn sustained_throttling_pauses_calls_and_shows_in_the_counters() {
    let fake = FakeEks::start(CLUSTER).await;
    fake.fail_next(10_000, Fault::Throttle);
    let mut opts = options();
    // Paused for the rest of the test, however slow the machine: no probe goes out.
    opts.breaker_cooldown = 6 * WAIT;
    opts.breaker_max_cooldown = 6 * WAIT;
    let src = source(&fake, opts);
    let err = has(&src, "team-a", "sa-0").await.unwrap_err();
    assert!(err.to_string().contains("throttled"), "{err}");
    let mut paused = 0;
    for i in 1..50 {
        let err = has(&src, "team-a", &format!("sa-{i}")).await.unwrap_err();
        paused += usize::from(err.to_string().contains("calls paused"));
    }
    let stats = src.stats();
    assert!(stats.paused, "{stats:?}");
    let threshold = src.options().breaker_threshold as usize;
    assert_eq!(stats.list_errors as usize, threshold);
    assert_eq!(
        paused,
        50 - threshold,
        "refused by the pause, without a call"
    );
    assert_eq!(stats.timeouts, 0, "no wait ran out: {stats:?}");
    // Each failed call made at most three (backed-off) attempts; then calls paused.
    assert!(fake.lists() <= threshold * 3, "{} requests", fake.lists());
    assert!(src.sync_now().await.is_err());
    assert_eq!(src.stats().sync_failures, 1);
}

#[tokio::test]
async fn server_errors_are_retried_then_reported_and_never_cached_as_absent() {
    let fake = FakeEks::start(CLUSTER).await;
    fake.add("team-a", "carts", "carts");
    fake.fail_next(3, Fault::Server);
    let src = source(&fake, options());
    let err = role_of(&src, "team-a", "carts").await.unwrap_err();
    assert!(matches!(err, IdentityError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("ServerException"), "{err}");
    assert_eq!(fake.lists(), 3, "three attempts");
    assert_eq!(src.stats().list_errors, 1);
    // The failure left nothing behind: the next lookup asks again and finds it.
    assert_eq!(
        role_of(&src, "team-a", "carts").await.unwrap(),
        Some(role_arn("carts"))
    );
}

#[tokio::test]
async fn invalid_parameter_is_not_retried_and_a_wrong_cluster_names_the_flag() {
    let fake = FakeEks::start(CLUSTER).await;
    fake.fail_next(1, Fault::InvalidParameter);
    let src = source(&fake, options());
    let err = role_of(&src, "team-a", "carts").await.unwrap_err();
    assert!(
        err.to_string().contains("InvalidParameterException"),
        "{err}"
    );
    assert_eq!(fake.lists(), 1, "a client error is not retried");

    let wrong = EksSource::new(Arc::new(fake.client("nope", &fast_tuning())), options());
    let err = role_of(&wrong, "team-a", "carts").await.unwrap_err();
    assert!(err.to_string().contains("--cluster-name"), "{err}");
    let err = wrong.sync_now().await.unwrap_err();
    assert!(
        err.to_string().contains("ResourceNotFoundException"),
        "{err}"
    );
}

#[tokio::test]
async fn eks_down_serves_last_known_data_within_the_bound_and_does_not_storm() {
    let fake = FakeEks::start(CLUSTER).await;
    fake.add("team-a", "carts", "carts");
    let mut opts = options();
    opts.max_wait = Duration::from_millis(300);
    // A probe per cool-down (at least 0.8 s, jittered): a loaded machine's slow loop below
    // lets through a few, not a storm.
    opts.breaker_cooldown = Duration::from_secs(1);
    opts.breaker_max_cooldown = Duration::from_secs(2);
    let bound = opts.max_wait + Duration::from_secs(2); // scheduling slack on a busy machine
    let src = source(&fake, opts.clone());
    // Known through a point lookup (no full sync: every other key stays unknown).
    assert_eq!(
        role_of(&src, "team-a", "carts").await.unwrap(),
        Some(role_arn("carts"))
    );
    fake.set_down(true);
    // Time must pass for the known answer to expire.
    tokio::time::sleep(opts.ttl).await;

    let before = fake.requests();
    let started = Instant::now();
    let mut paused = 0;
    for i in 0..200 {
        // The known association keeps being served ...
        let known = tokio::time::timeout(bound, role_of(&src, "team-a", "carts"))
            .await
            .expect("answered within the bound");
        assert_eq!(known.unwrap(), Some(role_arn("carts")));
        // ... an unknown ServiceAccount is "could not tell", never "none".
        let cold = tokio::time::timeout(bound, role_of(&src, "team-a", &format!("sa-{i}")))
            .await
            .expect("answered within the bound");
        let err = cold.expect_err("an unknown ServiceAccount during an outage");
        paused += usize::from(err.to_string().contains("calls paused"));
    }
    let took = started.elapsed();
    let during = fake.requests() - before;
    // Five failed calls pause them; each took at most three attempts. A loop slower than the
    // cool-down lets one probe (three attempts) through per cool-down.
    let probes = (took.as_millis() / 800) as usize;
    assert!(
        during <= 30 + 3 * probes,
        "{during} requests reached a failing EKS in {took:?}"
    );
    // Almost every lookup was refused by the pause, without a call.
    assert!(
        paused >= 190 - probes,
        "{paused} of 200 refused by the pause"
    );
    let stats = src.stats();
    assert_eq!(
        stats.stale, 200,
        "every known answer served stale: {stats:?}"
    );

    // A sync while down fails and changes nothing.
    assert!(src.sync_now().await.is_err());
    assert_eq!(
        role_of(&src, "team-a", "carts").await.unwrap(),
        Some(role_arn("carts"))
    );

    // Recovery: after the cool-down, lookups reach EKS again.
    fake.set_down(false);
    fake.add("team-a", "late", "late");
    eventually(&src, "team-a", "late", Some(role_arn("late"))).await;
}

#[tokio::test]
async fn a_slow_eks_is_bounded_and_the_answer_arrives_in_the_background() {
    let fake = FakeEks::start(CLUSTER).await;
    fake.add("team-a", "carts", "carts");
    let mut opts = long_ttls();
    opts.max_wait = Duration::from_millis(300);
    // Five times the wait, under the SDK's own attempt timeout (3 s): the wait runs out first.
    fake.set_delay(5 * opts.max_wait);
    let src = source(&fake, opts.clone());
    let err = tokio::time::timeout(WAIT, has(&src, "team-a", "carts"))
        .await
        .expect("the wait is bounded")
        .unwrap_err();
    assert!(
        matches!(err, IdentityError::Timeout { waited, .. } if waited == opts.max_wait),
        "{err}"
    );
    let stats = src.stats();
    assert_eq!((stats.timeouts, stats.list_errors), (1, 0), "{stats:?}");
    // The lookup continues and fills the cache for the next admission: lookups meanwhile join
    // it (and stop waiting at the bound), the first one after it is answered from the cache.
    let deadline = Instant::now() + WAIT;
    while !matches!(has(&src, "team-a", "carts").await, Ok(true)) {
        assert!(
            Instant::now() < deadline,
            "the background lookup never filled the cache: {:?}",
            src.stats()
        );
    }
    assert_eq!(fake.lists(), 1, "one call: the later lookups joined it");
    assert_eq!(src.stats().list_errors, 0);
}

#[tokio::test]
async fn a_slow_eks_with_stale_data_serves_it_at_once() {
    let fake = FakeEks::start(CLUSTER).await;
    fake.add("team-a", "carts", "carts");
    let opts = options();
    let src = source(&fake, opts.clone());
    src.sync_now().await.unwrap();
    let delay = Duration::from_secs(2);
    fake.set_delay(delay);
    // Time must pass for the synced answer to expire.
    tokio::time::sleep(opts.ttl).await;
    let answer = tokio::time::timeout(delay, has(&src, "team-a", "carts"))
        .await
        .expect("stale data does not wait for EKS");
    assert!(answer.unwrap());
    let stats = src.stats();
    assert_eq!(
        (stats.stale, stats.timeouts),
        (1, 0),
        "the expired answer, served without waiting: {stats:?}"
    );
}

#[tokio::test]
async fn admit_unmutated_mode_gives_an_error_instead_of_stale_data() {
    let fake = FakeEks::start(CLUSTER).await;
    fake.add("team-a", "carts", "carts");
    let mut opts = options();
    opts.failure_mode = FailureMode::AdmitUnmutated;
    opts.max_wait = Duration::from_millis(300);
    let src = source(&fake, opts.clone());
    src.sync_now().await.unwrap();
    fake.set_delay(Duration::from_secs(2)); // far past max_wait, under the SDK's timeouts
    // Time must pass for the synced answer to expire.
    tokio::time::sleep(opts.ttl).await;
    let answer = tokio::time::timeout(WAIT, has(&src, "team-a", "carts"))
        .await
        .expect("bounded");
    assert!(
        matches!(answer, Err(IdentityError::Timeout { waited, .. }) if waited == opts.max_wait),
        "{answer:?}"
    );
    let stats = src.stats();
    assert_eq!(
        (stats.timeouts, stats.stale),
        (1, 0),
        "the wait ran out; nothing stale served: {stats:?}"
    );
}
