//! The resolver: [`Identities`] asks every source about a ServiceAccount concurrently and
//! decides the one identity a pod gets (docs/contract.md §1: the association wins over IRSA),
//! reporting every source lookup to a [`LookupObserver`] (metrics).

use std::sync::Arc;
use std::time::Duration;

use super::sa::ServiceAccountInfo;
use super::types::{
    Association, AssociationSource, FileEntry, Freshness, IdentityError, IdentityKind,
    ResolvedIdentity, RoleBound, ServiceAccountStore,
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
    /// A pattern entry of the associations file that matched but whose role the namespace's
    /// allowlist does not hold: it gives no identity (docs/associations.md#patterns).
    pub refused: Option<Refused>,
}

/// An associations-file entry the tenant allowlist refused for the namespace being resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub entry: Arc<FileEntry>,
    /// The entry's role (or target role) outside the allowlist.
    pub role_arn: String,
}

/// Which identity a resolution found, as the decision log and `check` name it
/// (docs/associations.md#patterns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matched {
    /// An associations-file entry: its roles, position, line and pattern.
    Entry(Arc<FileEntry>),
    /// An EKS association.
    Eks { association_id: Option<String> },
    /// The ServiceAccount's IRSA annotation.
    Irsa { role_arn: String },
    /// An associations-file entry matched, but the namespace's allowlist does not hold its role.
    Refused(Refused),
}

impl std::fmt::Display for Matched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Entry(e) => {
                write!(f, "role {}", e.role_arn)?;
                if let Some(t) = &e.target_role_arn {
                    write!(f, " (target {t})")?;
                }
                write!(f, " from {e}")
            }
            Self::Eks {
                association_id: Some(id),
            } => write!(f, "EKS association {id}"),
            Self::Eks { .. } => f.write_str("EKS association"),
            Self::Irsa { role_arn } => write!(f, "IRSA role {role_arn}"),
            Self::Refused(r) => write!(
                f,
                "{} refused: role {} is not in the namespace's allowedRoleArns",
                r.entry, r.role_arn
            ),
        }
    }
}

impl Resolution {
    /// Which identity was found, or which entry was refused.
    pub fn matched(&self) -> Option<Matched> {
        match &self.identity {
            Some(found) => Some(match &found.kind {
                IdentityKind::PodIdentity(summary) => match &summary.entry {
                    Some(entry) => Matched::Entry(entry.clone()),
                    None => Matched::Eks {
                        association_id: summary.association_id.clone(),
                    },
                },
                IdentityKind::Irsa { role_arn } => Matched::Irsa {
                    role_arn: role_arn.clone(),
                },
            }),
            None => self.refused.clone().map(Matched::Refused),
        }
    }

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
    bound: Option<Arc<dyn RoleBound>>,
}

impl Identities {
    pub fn new(annotation_prefix: impl Into<String>) -> Self {
        Self {
            associations: Vec::new(),
            service_accounts: None,
            annotation_prefix: annotation_prefix.into(),
            observer: None,
            bound: None,
        }
    }

    /// Bounds the pattern entries of bounded sources (the associations file) by the tenant
    /// allowlist: a pattern entry whose role `bound` refuses for the namespace resolved gives
    /// no identity. An exact entry names its one ServiceAccount, as an EKS association does, and
    /// is the operator's as that is (docs/contract.md §3).
    pub fn with_role_bound(mut self, bound: Arc<dyn RoleBound>) -> Self {
        self.bound = Some(bound);
        self
    }

    /// The role of `roles` the allowlist refuses for `namespace`, if any.
    fn refused_role<'r>(
        &self,
        namespace: &str,
        mut roles: impl Iterator<Item = &'r str>,
    ) -> Option<&'r str> {
        let bound = self.bound.as_ref()?;
        roles.find(|role| !bound.allows(namespace, role))
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
                refused: None,
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
        let mut refused = None;
        for (result, source) in assocs.into_iter().zip(&self.associations) {
            match result {
                Ok(Some(a)) if association.is_none() => {
                    let refusal = a
                        .entry
                        .as_ref()
                        .filter(|e| source.bounded() && e.is_pattern())
                        .and_then(|e| {
                            let role = self.refused_role(namespace, e.roles())?;
                            Some(Refused {
                                entry: e.clone(),
                                role_arn: role.to_string(),
                            })
                        });
                    match refusal {
                        Some(r) => {
                            refused.get_or_insert(r);
                        }
                        None => association = Some(a),
                    }
                }
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
            refused,
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
        for (answer, source) in answers.into_iter().zip(&self.associations) {
            match answer {
                // The same bound as [`Identities::resolve`]: what the webhook refuses to
                // inject, the agent refuses to issue.
                Ok(Some(a))
                    if source.bounded()
                        && (a.namespace.contains('*') || a.service_account.contains('*'))
                        && self
                            .refused_role(
                                namespace,
                                std::iter::once(a.role_arn.as_str())
                                    .chain(a.target_role_arn.as_deref()),
                            )
                            .is_some() => {}
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
