//! The identity layer (docs/contract.md §1): where a ServiceAccount's AWS identity comes from.
//!
//! Independent of HTTP so the webhook, the offline `check`, the audit and the node agent can all
//! reuse it. Two small traits sit at the I/O edge:
//! - [`AssociationSource`]: Pod Identity associations (associations file, EKS API);
//! - [`ServiceAccountStore`]: ServiceAccount annotations (Kubernetes API) for IRSA.
//!
//! [`Identities`] combines them into the one answer a decision needs: [`ResolvedIdentity`].
//!
//! Two levels of association answers (docs/contract.md §1): [`AssociationSource::lookup`] says *that* a
//! ServiceAccount has an association ([`AssociationSummary`], what EKS `List` returns: enough to
//! inject and to validate); [`AssociationSource::details`] gives the role and its options
//! ([`Association`], what EKS `Describe` returns), for the callers that need them (the
//! credentials agent, migration).
//!
//! Rooms: [`types`] (the vocabulary and the two traits), [`resolve`] (the resolver), [`index`]
//! (the file's in-memory index), [`file`] (the associations file: its format and its source),
//! `eks_client` / `eks_cache` / `eks_sync` (the EKS API, the moka-backed source in front of
//! it, its periodic full sync), [`kube`] (ServiceAccounts from Kubernetes).

pub mod eks_cache;
pub mod eks_client;
#[cfg(any(test, feature = "test-support"))]
pub mod eks_fake;
mod eks_pause;
pub mod eks_settings;
pub mod eks_sync;
pub mod file;
pub mod index;
pub mod kube;
pub mod metrics;
pub mod pattern;
pub mod resolve;
pub mod role_arn;
pub mod sa;
pub mod session_policy;
pub mod sources;
pub mod types;

pub use index::{AssociationIndex, IndexError, IndexedAssociation, index_associations, index_get};
pub use resolve::{
    Identities, LookupObserver, LookupResult, Matched, Refused, Resolution, SERVICE_ACCOUNT_SOURCE,
};
pub use sa::ServiceAccountInfo;
pub use types::{
    Association, AssociationSource, AssociationSummary, FileEntry, Freshness, IdentityError,
    IdentityKind, ResolvedIdentity, RoleBound, ServiceAccountStore,
};
