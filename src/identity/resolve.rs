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
mod tests;
