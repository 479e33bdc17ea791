//! The resolver: [`Identities`] asks every source about a ServiceAccount concurrently and
//! decides the one identity a pod gets (docs/contract.md §1: the association wins over IRSA),
//! reporting every source lookup to a [`LookupObserver`] (metrics).

use std::sync::Arc;
use std::time::Duration;

use super::sa::ServiceAccountInfo;
use super::types::{
    Association, AssociationSource, Freshness, IdentityError, IdentityKind, ResolvedIdentity,
    ServiceAccountStore,
};

/// How one source answered one lookup, for metrics (a bounded set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LookupResult {
    /// Found.
    Hit,
    /// Known not to exist.
    Miss,
    /// Answered (found or not) from a view older than the source's freshness bound.
    Stale,
    /// No answer: an error, or the caller's time budget ran out first.
    Error,
}

impl LookupResult {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Stale => "stale",
            Self::Error => "error",
        }
    }
}

/// Told about every source lookup (metrics), so this layer stays free of any metrics library.
pub trait LookupObserver: Send + Sync + 'static {
    fn observe(&self, source: &'static str, result: LookupResult);
}

/// The source name under which ServiceAccount-store lookups are observed.
pub const SERVICE_ACCOUNT_SOURCE: &str = "serviceaccounts";

/// Reports one lookup to the observer exactly once: with its answer, or as `error` when the
/// lookup is dropped unfinished (the caller's budget ran out).
struct Observation<'a> {
    observer: Option<&'a dyn LookupObserver>,
    source: &'static str,
}

impl<'a> Observation<'a> {
    fn start(observer: Option<&'a Arc<dyn LookupObserver>>, source: &'static str) -> Self {
        Self {
            observer: observer.map(|o| &**o),
            source,
        }
    }

    fn report(&mut self, result: LookupResult) {
        if let Some(o) = self.observer.take() {
            o.observe(self.source, result);
        }
    }

    /// Runs the lookup `start` begins, reporting how it answered: `stale` (asked once it has
    /// answered) marks an answer, found or not, as stale.
    async fn observed<T, F>(
        observer: Option<&'a Arc<dyn LookupObserver>>,
        source: &'static str,
        start: impl FnOnce() -> F,
        stale: impl FnOnce() -> bool,
    ) -> Result<Option<T>, IdentityError>
    where
        F: std::future::Future<Output = Result<Option<T>, IdentityError>>,
    {
        let mut observation = Self::start(observer, source);
        let result = start().await;
        observation.report(match &result {
            Err(_) => LookupResult::Error,
            Ok(_) if stale() => LookupResult::Stale,
            Ok(Some(_)) => LookupResult::Hit,
            Ok(None) => LookupResult::Miss,
        });
        result
    }
}

impl Drop for Observation<'_> {
    fn drop(&mut self) {
        self.report(LookupResult::Error);
    }
}

/// The outcome of resolving a ServiceAccount: the identity (if any) and the sources that could
/// not answer (so callers can tell "none" from "could not tell").
#[derive(Debug, Clone, Default)]
pub struct Resolution {
    pub identity: Option<ResolvedIdentity>,
    pub errors: Vec<IdentityError>,
    /// What the ServiceAccount's annotations say (empty when it was not found): lets a caller
    /// say why an IRSA annotation did not count.
    pub service_account: Arc<ServiceAccountInfo>,
}

impl Resolution {
    /// True when every source answered.
    pub fn complete(&self) -> bool {
        self.errors.is_empty()
    }
}

/// All identity sources of a running webhook.
#[derive(Clone, Default)]
pub struct Identities {
    associations: Vec<Arc<dyn AssociationSource>>,
    service_accounts: Option<Arc<dyn ServiceAccountStore>>,
    annotation_prefix: String,
    observer: Option<Arc<dyn LookupObserver>>,
}

impl Identities {
    pub fn new(annotation_prefix: impl Into<String>) -> Self {
        Self {
            associations: Vec::new(),
            service_accounts: None,
            annotation_prefix: annotation_prefix.into(),
            observer: None,
        }
    }

    /// Reports every source lookup to `observer` (metrics).
    pub fn with_observer(mut self, observer: Arc<dyn LookupObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The same sources, lookups no longer reported (the background audit's, so the lookup
    /// metrics count admission alone).
    pub fn without_observer(mut self) -> Self {
        self.observer = None;
        self
    }

    /// Adds an association source; earlier sources win when both know a ServiceAccount.
    pub fn with_associations(mut self, source: Arc<dyn AssociationSource>) -> Self {
        self.associations.push(source);
        self
    }

    pub fn with_service_accounts(mut self, store: Arc<dyn ServiceAccountStore>) -> Self {
        self.service_accounts = Some(store);
        self
    }

    pub fn annotation_prefix(&self) -> &str {
        &self.annotation_prefix
    }

    pub fn has_service_account_store(&self) -> bool {
        self.service_accounts.is_some()
    }

    pub fn source_names(&self) -> Vec<&'static str> {
        self.associations.iter().map(|s| s.name()).collect()
    }

    /// Ready when every source is.
    pub fn ready(&self) -> bool {
        self.associations.iter().all(|s| s.ready())
            && self.service_accounts.as_ref().is_none_or(|s| s.ready())
    }

    /// [`Identities::resolve`], given up after `budget`: then no identity, and a timeout error.
    pub async fn resolve_within(
        &self,
        namespace: &str,
        service_account: &str,
        freshness: Freshness,
        budget: Duration,
    ) -> Resolution {
        let mut lookup = std::pin::pin!(self.resolve(namespace, service_account, freshness));
        // Cached lookups answer on the first poll. Only a lookup that has to wait pays for a
        // timer (which takes the runtime's handle, a reference count shared by every worker).
        if let std::task::Poll::Ready(resolution) = futures::poll!(lookup.as_mut()) {
            return resolution;
        }
        match tokio::time::timeout(budget, lookup).await {
            Ok(resolution) => resolution,
            Err(_) => Resolution {
                identity: None,
                errors: vec![IdentityError::Timeout {
                    source_name: "identity sources",
                    waited: budget,
                }],
                service_account: Arc::default(),
            },
        }
    }

    /// Looks up a ServiceAccount's identity in every source, concurrently.
    pub async fn resolve(
        &self,
        namespace: &str,
        service_account: &str,
        freshness: Freshness,
    ) -> Resolution {
        let observer = self.observer.as_ref();
        let sa_lookup = async {
            match &self.service_accounts {
                Some(store) => {
                    Observation::observed(
                        observer,
                        SERVICE_ACCOUNT_SOURCE,
                        || store.get(namespace, service_account),
                        || false,
                    )
                    .await
                }
                None => Ok(None),
            }
        };
        let assoc_lookups = futures::future::join_all(self.associations.iter().map(|source| {
            Observation::observed(
                observer,
                source.name(),
                || source.lookup(namespace, service_account, freshness),
                || source.stale(),
            )
        }));
        let (sa, assocs) = futures::join!(sa_lookup, assoc_lookups);

        let mut errors = Vec::new();
        let mut association = None;
        for result in assocs {
            match result {
                Ok(Some(a)) if association.is_none() => association = Some(a),
                Ok(_) => {}
                Err(e) => errors.push(e),
            }
        }
        let sa_info = match sa {
            Ok(Some(info)) => info,
            Ok(None) => Arc::new(ServiceAccountInfo::default()),
            Err(e) => {
                errors.push(e);
                Arc::new(ServiceAccountInfo::default())
            }
        };
        let kind = match association {
            Some(a) => Some(IdentityKind::PodIdentity(a)),
            None => sa_info
                .role_arn
                .as_ref()
                .map(|role_arn| IdentityKind::Irsa {
                    role_arn: role_arn.clone(),
                }),
        };
        Resolution {
            identity: kind.map(|kind| ResolvedIdentity {
                kind,
                service_account: sa_info.clone(),
            }),
            errors,
            service_account: sa_info,
        }
    }
}

impl Identities {
    /// The association details of a ServiceAccount (role, target role, external id, session
    /// tags) from the first source that knows it, asking every source concurrently. `Ok(None)`
    /// only when every source answered "none"; otherwise a source error is returned, so a
    /// caller never mistakes "could not tell" for "no association".
    pub async fn association_details(
        &self,
        namespace: &str,
        service_account: &str,
    ) -> Result<Option<Arc<Association>>, IdentityError> {
        let answers = futures::future::join_all(
            self.associations
                .iter()
                .map(|source| source.details(namespace, service_account)),
        )
        .await;
        let mut first_error = None;
        for answer in answers {
            match answer {
                Ok(Some(a)) => return Ok(Some(a)),
                Ok(None) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(None), Err)
    }
}

#[cfg(test)]
mod tests {
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
        let ids =
            Identities::new("eks.amazonaws.com").with_associations(Arc::new(Fixed(None, true)));
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

        let ids =
            Identities::new("eks.amazonaws.com").with_associations(Arc::new(Fixed(None, false)));
        assert_eq!(ids.association_details("n", "s").await.unwrap(), None);
    }
}
