//! The EKS source against the in-memory EKS (`eks_fake`): caching, coalescing, the pause,
//! and how the synced view and point lookups combine.

use super::*;
use crate::identity::eks_fake::{MemEks, association};

fn opts() -> CacheOptions {
    let mut s = EksSettings::new("test");
    s.ttl = Duration::from_millis(300);
    s.negative_ttl = Duration::from_millis(100);
    s.max_wait = Duration::from_millis(200);
    let mut o = CacheOptions::from_settings(&s);
    o.error_cooldown = Duration::from_millis(50);
    o.breaker_cooldown = Duration::from_millis(200);
    o
}

fn source(mem: &Arc<MemEks>, opts: CacheOptions) -> EksSource {
    EksSource::new(mem.clone(), opts)
}

/// The ServiceAccount's association id, if it has one.
async fn id(src: &EksSource, ns: &str, sa: &str, f: Freshness) -> Option<String> {
    src.lookup(ns, sa, f)
        .await
        .expect("lookup answers")
        .map(|a| a.association_id.clone().unwrap())
}

async fn role(src: &EksSource, ns: &str, sa: &str) -> Option<String> {
    src.details(ns, sa)
        .await
        .expect("details answer")
        .map(|a| a.role_arn.rsplit('/').next().unwrap().to_string())
}

/// A replacement association: same ServiceAccount, new id, new role.
fn replaced(ns: &str, sa: &str, role: &str) -> Association {
    let mut a = association(ns, sa, role);
    a.association_id = Some(format!("a-{ns}-{sa}-2"));
    a
}

#[tokio::test]
async fn a_fresh_answer_is_served_without_asking_eks_again() {
    let mem = Arc::new(MemEks::new(vec![association("n", "s", "r1")]));
    let src = source(&mem, opts());
    let found = src.lookup("n", "s", Freshness::Cached).await.unwrap();
    let found = found.expect("found");
    assert_eq!(found.association_id.as_deref(), Some("a-n-s"));
    assert!(found.association_arn.is_some());
    assert_eq!(
        (mem.lists(), mem.describes()),
        (1, 0),
        "one List, no Describe"
    );
    assert!(id(&src, "n", "s", Freshness::Cached).await.is_some());
    assert_eq!(mem.calls(), 1);
    assert_eq!(src.stats().hits, 1);
}

#[tokio::test]
async fn details_are_described_once_on_demand_and_follow_a_replaced_association() {
    let mem = Arc::new(MemEks::new(vec![association("n", "s", "r1")]));
    let src = source(&mem, opts());
    src.sync_now().await.unwrap();
    assert_eq!(mem.describes(), 0, "a sync never describes");
    assert_eq!(role(&src, "n", "s").await.as_deref(), Some("r1"));
    assert_eq!(role(&src, "n", "s").await.as_deref(), Some("r1"));
    assert_eq!(mem.describes(), 1, "cached by association id");
    assert_eq!(role(&src, "n", "nobody").await, None);
    assert_eq!(mem.describes(), 1, "no association: nothing to describe");

    mem.set(vec![replaced("n", "s", "r2")]);
    src.sync_now().await.unwrap();
    assert_eq!(role(&src, "n", "s").await.as_deref(), Some("r2"));
    assert_eq!(mem.describes(), 2);

    // Details expire with their own TTL; a failing EKS then serves the last known ones.
    tokio::time::sleep(src.options().details_ttl + Duration::from_millis(20)).await;
    src.sync_now().await.unwrap();
    mem.set_down(true);
    assert_eq!(role(&src, "n", "s").await.as_deref(), Some("r2"));
}

#[tokio::test]
async fn concurrent_detail_requests_share_one_describe() {
    let mem = Arc::new(MemEks::new(vec![association("n", "s", "r1")]));
    let src = source(&mem, opts());
    src.sync_now().await.unwrap();
    mem.set_delay(Duration::from_millis(50));
    let all = futures::future::join_all((0..50).map(|_| role(&src, "n", "s"))).await;
    assert!(all.iter().all(|r| r.as_deref() == Some("r1")), "{all:?}");
    assert_eq!(mem.describes(), 1);
}

#[tokio::test]
async fn an_expired_positive_answer_is_served_while_a_refresh_runs() {
    let mem = Arc::new(MemEks::new(vec![association("n", "s", "r1")]));
    let src = source(&mem, opts());
    id(&src, "n", "s", Freshness::Cached).await;
    mem.set(vec![replaced("n", "s", "r2")]);
    tokio::time::sleep(src.options().ttl + Duration::from_millis(20)).await;
    // Expired: the old association comes back at once, the refresh fills in the new one.
    assert_eq!(
        id(&src, "n", "s", Freshness::Cached).await.as_deref(),
        Some("a-n-s")
    );
    for _ in 0..100 {
        if id(&src, "n", "s", Freshness::Cached).await.as_deref() == Some("a-n-s-2") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the refreshed association never showed up");
}

#[tokio::test]
async fn an_expired_none_is_not_served_the_lookup_waits_for_the_refresh() {
    let mem = Arc::new(MemEks::default());
    let src = source(&mem, opts());
    src.sync_now().await.unwrap();
    assert_eq!(id(&src, "n", "s", Freshness::Cached).await, None);
    mem.set(vec![association("n", "s", "r1")]);
    tokio::time::sleep(src.options().negative_ttl + Duration::from_millis(20)).await;
    // The very first lookup after the negative TTL sees the new association.
    assert_eq!(
        id(&src, "n", "s", Freshness::Cached).await.as_deref(),
        Some("a-n-s")
    );
    // Issue 28: the first "none" already came from a point lookup (the sync's absence is no
    // answer), so the sync, then one point lookup per question.
    assert_eq!(mem.lists(), 3, "the sync, then one point lookup each");
}

#[tokio::test]
async fn an_expired_none_that_eks_cannot_confirm_is_an_error_not_a_silent_none() {
    let mem = Arc::new(MemEks::default());
    let src = source(&mem, opts());
    src.sync_now().await.unwrap();
    mem.set_down(true);
    tokio::time::sleep(src.options().negative_ttl + Duration::from_millis(20)).await;
    let err = src.lookup("n", "s", Freshness::Cached).await.unwrap_err();
    assert!(err.to_string().contains("could not confirm"), "{err}");
    // Within the error cool-down EKS is not asked again, and the answer stays an error.
    let lists = mem.lists();
    assert!(src.lookup("n", "s", Freshness::Cached).await.is_err());
    assert_eq!(mem.lists(), lists);
    assert_eq!(src.stats().unconfirmed, 2);

    // A slow EKS: the wait is bounded by max_wait, then the same error.
    mem.set_down(false);
    mem.set_delay(Duration::from_millis(400));
    tokio::time::sleep(src.options().error_cooldown * 2).await;
    let start = Instant::now();
    let err = src.lookup("n", "s", Freshness::Cached).await.unwrap_err();
    assert!(err.to_string().contains("could not confirm"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn an_error_keeps_the_last_known_association_and_is_never_cached_as_absent() {
    let mem = Arc::new(MemEks::new(vec![association("n", "s", "r1")]));
    let src = source(&mem, opts());
    id(&src, "n", "s", Freshness::Cached).await;
    mem.set_down(true);
    tokio::time::sleep(src.options().ttl + Duration::from_millis(20)).await;
    for _ in 0..5 {
        assert!(id(&src, "n", "s", Freshness::Cached).await.is_some());
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    // A cold key while EKS is down: "could not tell", not "none".
    assert!(src.lookup("n", "other", Freshness::Cached).await.is_err());
    assert!(src.lookup("n", "other", Freshness::Cached).await.is_err());
    assert!(src.stats().list_errors > 0);
}

#[tokio::test]
async fn negative_answers_expire_sooner_and_bypass_skips_them() {
    let mem = Arc::new(MemEks::default());
    let src = source(&mem, opts());
    assert_eq!(id(&src, "n", "s", Freshness::Cached).await, None);
    mem.set(vec![association("n", "s", "new")]);
    // Within the negative TTL the cached "none" stands for ordinary lookups ...
    assert_eq!(id(&src, "n", "s", Freshness::Cached).await, None);
    // ... but not before a denial.
    assert!(
        id(&src, "n", "s", Freshness::BypassNegative)
            .await
            .is_some()
    );
    assert_eq!(src.stats().bypassed_negative, 1);
}

#[tokio::test]
async fn bypass_with_eks_down_is_an_error_not_a_stale_none() {
    let mem = Arc::new(MemEks::default());
    let src = source(&mem, opts());
    assert_eq!(id(&src, "n", "s", Freshness::Cached).await, None);
    mem.set_down(true);
    assert!(
        src.lookup("n", "s", Freshness::BypassNegative)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn admit_unmutated_mode_does_not_serve_expired_answers_when_eks_fails() {
    let mem = Arc::new(MemEks::new(vec![association("n", "s", "r1")]));
    let mut o = opts();
    o.failure_mode = FailureMode::AdmitUnmutated;
    let src = source(&mem, o);
    id(&src, "n", "s", Freshness::Cached).await;
    mem.set_down(true);
    tokio::time::sleep(src.options().ttl + Duration::from_millis(20)).await;
    assert!(src.lookup("n", "s", Freshness::Cached).await.is_err());
}

#[tokio::test]
async fn a_slow_eks_times_out_and_the_answer_arrives_for_the_next_request() {
    let mem = Arc::new(MemEks::new(vec![association("n", "s", "r1")]));
    mem.set_delay(Duration::from_millis(300)); // > max_wait 200 ms
    let src = source(&mem, opts());
    let err = src.lookup("n", "s", Freshness::Cached).await.unwrap_err();
    assert!(matches!(err, IdentityError::Timeout { .. }), "{err}");
    tokio::time::sleep(Duration::from_millis(250)).await;
    mem.set_delay(Duration::ZERO);
    assert!(id(&src, "n", "s", Freshness::Cached).await.is_some());
    assert_eq!(mem.lists(), 1, "the background lookup filled the cache");
}

#[tokio::test]
async fn repeated_failures_pause_calls_instead_of_hammering_eks() {
    let mem = Arc::new(MemEks::default());
    mem.set_down(true);
    let src = source(&mem, opts());
    for i in 0..50 {
        assert!(
            src.lookup("n", &format!("sa{i}"), Freshness::Cached)
                .await
                .is_err()
        );
    }
    let threshold = src.options().breaker_threshold as usize;
    assert_eq!(mem.lists(), threshold);
    assert!(src.stats().paused);
}

#[tokio::test]
async fn calls_resume_after_the_cool_down_when_eks_recovers() {
    let mem = Arc::new(MemEks::default());
    mem.set_down(true);
    let src = source(&mem, opts());
    for i in 0..10 {
        assert!(
            src.lookup("n", &format!("sa{i}"), Freshness::Cached)
                .await
                .is_err()
        );
    }
    assert!(src.stats().paused);
    mem.set_down(false);
    mem.set(vec![association("n", "s", "r1")]);
    // One probe after the cool-down closes the breaker again.
    tokio::time::sleep(src.options().breaker_cooldown * 2).await;
    assert!(id(&src, "n", "s", Freshness::Cached).await.is_some());
    assert!(!src.stats().paused);
}

#[tokio::test]
async fn a_full_sync_is_every_list_page_and_nothing_else() {
    let mem = Arc::new(MemEks::many(5_000));
    let mut o = opts();
    // The view must still be fresh after a (debug-build) sync of 5,000, however slow the machine:
    // with the 300 ms of opts(), a sync under load outlived it and the listed one cost a lookup.
    o.ttl = Duration::from_secs(600);
    o.negative_ttl = Duration::from_secs(60);
    let src = source(&mem, o);
    let report = src.sync_now().await.unwrap();
    assert_eq!(report.associations, 5_000);
    assert_eq!(report.pages, 50);
    assert_eq!((mem.lists(), mem.describes()), (50, 0));
    assert!(
        id(&src, "ns-42", "sa-2100", Freshness::Cached)
            .await
            .is_some()
    );
    assert_eq!(id(&src, "ns-42", "nobody", Freshness::Cached).await, None);
    // Issue 28: the listed one is answered from the synced view; the unlisted one's "none"
    // takes one point lookup (absence from a sync is no answer).
    assert_eq!(mem.calls(), 51, "the synced view, and one point lookup");
    let stats = src.stats();
    assert_eq!((stats.list_calls, stats.describe_calls), (51, 0));
    assert_eq!(stats.synced_associations, 5_000);
}

#[tokio::test]
async fn the_newer_of_the_synced_view_and_a_point_lookup_wins() {
    let mem = Arc::new(MemEks::new(vec![association("n", "a", "r1")]));
    let src = source(&mem, opts());
    assert!(id(&src, "n", "a", Freshness::Cached).await.is_some());
    // A sync newer than the cached point lookup wins ...
    mem.set(vec![]);
    src.sync_now().await.unwrap();
    assert_eq!(id(&src, "n", "a", Freshness::Cached).await, None);
    // ... and a point lookup newer than the sync wins over it.
    mem.set(vec![replaced("n", "a", "r2")]);
    assert!(
        id(&src, "n", "a", Freshness::BypassNegative)
            .await
            .is_some()
    );
    assert_eq!(
        id(&src, "n", "a", Freshness::Cached).await.as_deref(),
        Some("a-n-a-2")
    );
}
