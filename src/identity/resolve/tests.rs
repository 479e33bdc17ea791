//! Unit tests of the resolver: each source's answer, errors and precedence, the timing guard.

use super::*;
use crate::identity::AssociationSummary;
use futures::future::BoxFuture;

struct Fixed(Option<Association>, bool);
impl Fixed {
    fn answer(&self) -> Result<Option<Association>, IdentityError> {
        if self.1 {
            Err(IdentityError::Unavailable {
                source_name: "fixed",
                message: "down".into(),
            })
        } else {
            Ok(self.0.clone())
        }
    }
}
impl AssociationSource for Fixed {
    fn name(&self) -> &'static str {
        "fixed"
    }
    fn lookup<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: Freshness,
    ) -> BoxFuture<'a, Result<Option<Arc<AssociationSummary>>, IdentityError>> {
        Box::pin(async move {
            Ok(self
                .answer()?
                .map(|a| Arc::new(AssociationSummary::from(&a))))
        })
    }
    fn details<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<Association>>, IdentityError>> {
        Box::pin(async move { Ok(self.answer()?.map(Arc::new)) })
    }
    fn ready(&self) -> bool {
        true
    }
}

struct OneSa(ServiceAccountInfo);
impl ServiceAccountStore for OneSa {
    fn get<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<ServiceAccountInfo>>, IdentityError>> {
        Box::pin(async move { Ok(Some(Arc::new(self.0.clone()))) })
    }
    fn ready(&self) -> bool {
        true
    }
}

fn assoc() -> Association {
    Association::new("n", "s", "arn:aws:iam::111122223333:role/a")
}

fn irsa_sa() -> ServiceAccountInfo {
    ServiceAccountInfo::from_annotations(
        [(
            "eks.amazonaws.com/role-arn".to_string(),
            "arn:aws:iam::111122223333:role/irsa".to_string(),
        )],
        "eks.amazonaws.com",
    )
}

#[tokio::test]
async fn association_wins_over_irsa() {
    let ids = Identities::new("eks.amazonaws.com")
        .with_associations(Arc::new(Fixed(Some(assoc()), false)))
        .with_service_accounts(Arc::new(OneSa(irsa_sa())));
    let r = ids.resolve("n", "s", Freshness::Cached).await;
    assert!(matches!(
        r.identity.unwrap().kind,
        IdentityKind::PodIdentity(_)
    ));
}

#[tokio::test]
async fn irsa_when_no_association() {
    let ids = Identities::new("eks.amazonaws.com")
        .with_associations(Arc::new(Fixed(None, false)))
        .with_service_accounts(Arc::new(OneSa(irsa_sa())));
    let r = ids.resolve("n", "s", Freshness::Cached).await;
    assert!(r.complete());
    assert_eq!(
        r.identity.unwrap().kind,
        IdentityKind::Irsa {
            role_arn: "arn:aws:iam::111122223333:role/irsa".into()
        }
    );
}

#[tokio::test]
async fn source_error_is_reported_not_hidden() {
    let ids = Identities::new("eks.amazonaws.com").with_associations(Arc::new(Fixed(None, true)));
    let r = ids.resolve("n", "s", Freshness::Cached).await;
    assert!(r.identity.is_none());
    assert!(!r.complete());
}

#[derive(Default)]
struct Recorded(std::sync::Mutex<Vec<(&'static str, LookupResult)>>);
impl LookupObserver for Recorded {
    fn observe(&self, source: &'static str, result: LookupResult) {
        self.0.lock().unwrap().push((source, result));
    }
}

/// A source answering from an outdated view.
struct Stale;
impl AssociationSource for Stale {
    fn name(&self) -> &'static str {
        "stale"
    }
    fn lookup<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: Freshness,
    ) -> BoxFuture<'a, Result<Option<Arc<AssociationSummary>>, IdentityError>> {
        Box::pin(async { Ok(None) })
    }
    fn details<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<Association>>, IdentityError>> {
        Box::pin(async { Ok(None) })
    }
    fn ready(&self) -> bool {
        true
    }
    fn stale(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn every_lookup_is_observed_once_by_source_and_result() {
    let recorded = Arc::new(Recorded::default());
    let ids = Identities::new("eks.amazonaws.com")
        .with_associations(Arc::new(Fixed(Some(assoc()), false)))
        .with_associations(Arc::new(Fixed(None, true)))
        .with_associations(Arc::new(Stale))
        .with_service_accounts(Arc::new(OneSa(irsa_sa())))
        .with_observer(recorded.clone());
    ids.resolve("n", "s", Freshness::Cached).await;
    let mut seen = recorded.0.lock().unwrap().clone();
    seen.sort_by_key(|(s, r)| (*s, r.as_str()));
    assert_eq!(
        seen,
        [
            ("fixed", LookupResult::Error),
            ("fixed", LookupResult::Hit),
            (SERVICE_ACCOUNT_SOURCE, LookupResult::Hit),
            ("stale", LookupResult::Stale),
        ]
    );
}

#[tokio::test]
async fn a_lookup_abandoned_by_its_caller_counts_as_an_error() {
    struct Never;
    impl AssociationSource for Never {
        fn name(&self) -> &'static str {
            "never"
        }
        fn lookup<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
            _: Freshness,
        ) -> BoxFuture<'a, Result<Option<Arc<AssociationSummary>>, IdentityError>> {
            Box::pin(std::future::pending())
        }
        fn details<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
        ) -> BoxFuture<'a, Result<Option<Arc<Association>>, IdentityError>> {
            Box::pin(std::future::pending())
        }
        fn ready(&self) -> bool {
            true
        }
    }
    let recorded = Arc::new(Recorded::default());
    let ids = Identities::new("eks.amazonaws.com")
        .with_associations(Arc::new(Never))
        .with_observer(recorded.clone());
    let cut = tokio::time::timeout(
        Duration::from_millis(1),
        ids.resolve("n", "s", Freshness::Cached),
    )
    .await;
    assert!(cut.is_err());
    assert_eq!(
        *recorded.0.lock().unwrap(),
        [("never", LookupResult::Error)]
    );
}

/// Answers after `0`, from the association `1`.
struct Slow(Duration, Association);
impl AssociationSource for Slow {
    fn name(&self) -> &'static str {
        "slow"
    }
    fn lookup<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: Freshness,
    ) -> BoxFuture<'a, Result<Option<Arc<AssociationSummary>>, IdentityError>> {
        Box::pin(async move {
            tokio::time::sleep(self.0).await;
            Ok(Some(Arc::new(AssociationSummary::from(&self.1))))
        })
    }
    fn details<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<Association>>, IdentityError>> {
        Box::pin(async move {
            tokio::time::sleep(self.0).await;
            Ok(Some(Arc::new(self.1.clone())))
        })
    }
    fn ready(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn resolve_within_waits_for_a_slow_source_up_to_the_budget() {
    let ids = Identities::new("eks.amazonaws.com")
        .with_associations(Arc::new(Slow(Duration::from_millis(20), assoc())));
    let r = ids
        .resolve_within("n", "s", Freshness::Cached, Duration::from_secs(5))
        .await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    match r.identity.map(|i| i.kind) {
        Some(IdentityKind::PodIdentity(a)) => assert_eq!(a.service_account, "s"),
        other => panic!("{other:?}"),
    }

    let ids = Identities::new("eks.amazonaws.com")
        .with_associations(Arc::new(Slow(Duration::from_secs(30), assoc())));
    let start = std::time::Instant::now();
    let r = ids
        .resolve_within("n", "s", Freshness::Cached, Duration::from_millis(50))
        .await;
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(r.identity.is_none());
    assert_eq!(
        r.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["identity sources did not answer within 50ms"]
    );
}

#[tokio::test]
async fn resolve_within_answers_a_ready_lookup_even_with_no_budget_left() {
    let ids = Identities::new("eks.amazonaws.com")
        .with_associations(Arc::new(Fixed(Some(assoc()), false)));
    let r = ids
        .resolve_within("n", "s", Freshness::Cached, Duration::ZERO)
        .await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert!(r.identity.is_some());
}

#[tokio::test]
async fn details_come_from_the_first_source_that_knows_and_errors_are_not_none() {
    let mut other = assoc();
    other.role_arn = "arn:aws:iam::111122223333:role/b".into();
    let ids = Identities::new("eks.amazonaws.com")
        .with_associations(Arc::new(Fixed(None, false)))
        .with_associations(Arc::new(Fixed(Some(assoc()), false)))
        .with_associations(Arc::new(Fixed(Some(other), false)));
    let found = ids.association_details("n", "s").await.unwrap().unwrap();
    assert_eq!(found.role_arn, "arn:aws:iam::111122223333:role/a");

    let ids = Identities::new("eks.amazonaws.com")
        .with_associations(Arc::new(Fixed(None, true)))
        .with_associations(Arc::new(Fixed(Some(assoc()), false)));
    assert!(ids.association_details("n", "s").await.unwrap().is_some());

    let ids = Identities::new("eks.amazonaws.com")
        .with_associations(Arc::new(Fixed(None, false)))
        .with_associations(Arc::new(Fixed(None, true)));
    assert!(ids.association_details("n", "s").await.is_err());

    let ids = Identities::new("eks.amazonaws.com").with_associations(Arc::new(Fixed(None, false)));
    assert_eq!(ids.association_details("n", "s").await.unwrap(), None);
}
