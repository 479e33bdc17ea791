//! The identity layer's vocabulary: associations and their summaries, the identity a pod gets,
//! the errors of identity sources, and the two traits at the I/O edge ([`AssociationSource`],
//! [`ServiceAccountStore`]) that the resolver combines.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::sa::ServiceAccountInfo;

/// An EKS Pod Identity association (docs/contract.md §1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Association {
    pub namespace: String,
    pub service_account: String,
    pub role_arn: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_role_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_session_tags: Option<bool>,
    /// The inline session policy (IAM policy JSON) that scopes the pod's session down; EKS
    /// accepts it only with `disableSessionTags: true` (docs/associations.md#session-policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The EKS association id, when the association came from EKS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub association_id: Option<String>,
}

impl Association {
    /// An association of `role_arn` without options (no target role, external id or session
    /// tag setting) and without an EKS id.
    pub fn new(
        namespace: impl Into<String>,
        service_account: impl Into<String>,
        role_arn: impl Into<String>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            service_account: service_account.into(),
            role_arn: role_arn.into(),
            target_role_arn: None,
            external_id: None,
            disable_session_tags: None,
            policy: None,
            association_id: None,
        }
    }
}

/// That a ServiceAccount has an association: what EKS `ListPodIdentityAssociations` returns
/// (no role: that takes a Describe, see [`AssociationSource::details`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssociationSummary {
    /// As the association names them: with the associations file, possibly patterns.
    pub namespace: String,
    pub service_account: String,
    /// The EKS association id (none for the associations file).
    pub association_id: Option<String>,
    /// The EKS association ARN (none for the associations file).
    pub association_arn: Option<String>,
    /// The associations-file entry (none for EKS): which one matched, and its roles (the
    /// tenant allowlist bounds those of pattern entries).
    pub entry: Option<Arc<FileEntry>>,
}

impl From<&Association> for AssociationSummary {
    fn from(a: &Association) -> Self {
        Self {
            namespace: a.namespace.clone(),
            service_account: a.service_account.clone(),
            association_id: a.association_id.clone(),
            association_arn: None,
            entry: None,
        }
    }
}

/// An entry of the associations file, as `check` and the decision log name the one that
/// matched a ServiceAccount (docs/associations.md#patterns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Its position in the list (`associations[i]`).
    pub position: usize,
    /// Its line in the file. Known for pattern entries (found once at load); an exact entry is
    /// found by its names (one entry per ServiceAccount).
    pub line: Option<usize>,
    /// As written: a name or a pattern.
    pub namespace: String,
    pub service_account: String,
    pub role_arn: String,
    pub target_role_arn: Option<String>,
    /// Whether the pod's session carries the six EKS session tags (`disableSessionTags` unset).
    pub session_tags: bool,
    /// The session policy's minified length, when the entry has one.
    pub policy_chars: Option<usize>,
}

impl FileEntry {
    /// Whether the entry names a pattern rather than one ServiceAccount.
    pub fn is_pattern(&self) -> bool {
        self.namespace.contains('*') || self.service_account.contains('*')
    }

    /// The roles a pod matched by this entry ends up with: the role, and the target role.
    pub fn roles(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.role_arn.as_str()).chain(self.target_role_arn.as_deref())
    }
}

impl std::fmt::Display for FileEntry {
    /// `associations[3] (line 12, pattern team-*/*)` or `associations[0] (team-a/carts)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "associations[{}] (", self.position)?;
        if let Some(line) = self.line {
            write!(f, "line {line}, ")?;
        }
        if self.is_pattern() {
            f.write_str("pattern ")?;
        }
        write!(f, "{}/{})", self.namespace, self.service_account)
    }
}

/// The tenant allowlist as the identity layer sees it (implemented by the policy): whether a
/// pattern entry of the associations file may give `role_arn` to pods of `namespace`. Asked
/// for the concrete namespace being resolved, so a pattern cannot hand one tenant's role to
/// another.
pub trait RoleBound: Send + Sync + 'static {
    fn allows(&self, namespace: &str, role_arn: &str) -> bool;
}

/// Whether a lookup may be answered from a cached "not found".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Any cached answer will do (the admission hot path).
    Cached,
    /// Look again past a cached "not found" (before a policy denial, docs/contract.md §3).
    BypassNegative,
}

/// Errors of identity sources. They are reported, never turned into "no identity".
#[derive(Debug, Clone, thiserror::Error)]
pub enum IdentityError {
    #[error("{source_name} did not answer within {waited:?}")]
    Timeout {
        source_name: &'static str,
        waited: Duration,
    },
    #[error("{source_name} is unavailable: {message}")]
    Unavailable {
        source_name: &'static str,
        message: String,
    },
}

/// A source of Pod Identity associations.
pub trait AssociationSource: Send + Sync + 'static {
    /// Short name for logs and metrics (`file`, `eks`).
    fn name(&self) -> &'static str;

    /// Whether `namespace`/`service_account` has an association (its summary), `Ok(None)` when
    /// it has none. The admission hot path: implementations answer from memory when they can
    /// and bound their own wait; an error means "could not tell", never "none".
    fn lookup<'a>(
        &'a self,
        namespace: &'a str,
        service_account: &'a str,
        freshness: Freshness,
    ) -> BoxFuture<'a, Result<Option<Arc<AssociationSummary>>, IdentityError>>;

    /// The association's details (role and options), `Ok(None)` when it has none. May call the
    /// backend (EKS `DescribePodIdentityAssociation`); for the credentials agent and migration,
    /// not for admission.
    fn details<'a>(
        &'a self,
        namespace: &'a str,
        service_account: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<Association>>, IdentityError>>;

    /// Whether the source has loaded (or given up waiting for) its first full view.
    fn ready(&self) -> bool;

    /// Whether the tenant allowlist ([`RoleBound`]) bounds this source's pattern entries: true
    /// for the associations file (a pattern spans tenants, so each match is checked against
    /// the namespace resolved); EKS has no patterns.
    fn bounded(&self) -> bool {
        false
    }

    /// Whether answers currently come from a view older than the source's freshness bound
    /// (its backend is unreachable). Counted as `stale` in lookup metrics; a source without a
    /// remote backend never is.
    fn stale(&self) -> bool {
        false
    }
}

/// A store of ServiceAccount annotations (for IRSA and per-ServiceAccount settings).
pub trait ServiceAccountStore: Send + Sync + 'static {
    /// The ServiceAccount, `Ok(None)` when it does not exist.
    fn get<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<ServiceAccountInfo>>, IdentityError>>;

    fn ready(&self) -> bool;
}

/// The identity a pod gets, decided from all sources (docs/contract.md §1: the association wins over IRSA).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityKind {
    /// An association exists; its role is EKS's business (fetch it with
    /// [`Identities::association_details`] where it is needed).
    PodIdentity(Arc<AssociationSummary>),
    Irsa {
        role_arn: String,
    },
}

/// Everything the mutation needs to know about a pod's ServiceAccount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedIdentity {
    pub kind: IdentityKind,
    /// The ServiceAccount's annotations that tune injection (audience, STS, token lifetime).
    pub service_account: Arc<ServiceAccountInfo>,
}
