//! Why a migration step failed: [`EdgeError`] for a call to the cluster, IAM, EKS or the
//! associations file; [`StepError`] for a row `apply` cannot carry out. Causes are quoted in the
//! message (not chained as `source`), as the summary prints one line per row.

use std::time::Duration;

use crate::identity::eks_client::CallError;

/// A call to the cluster, IAM, EKS or the associations file that failed.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("{what}: no answer within {waited:?}")]
    Timeout { what: String, waited: Duration },
    #[error(
        "{what}: forbidden ({message}); the migrate command needs list on serviceaccounts, pods, nodes, apps workloads and cronjobs, and patch for apply"
    )]
    Forbidden { what: String, message: String },
    #[error("{what}: {error}")]
    Kube { what: String, error: kube::Error },
    #[error("{what}: a {kind} has no rollout")]
    NoRollout { what: String, kind: String },
    #[error("{0}")]
    Json(serde_json::Error),
    #[error("cannot update the trust policy of {role} (iam:UpdateAssumeRolePolicy): {message}")]
    TrustUpdate { role: String, message: String },
    #[error("{0}")]
    Eks(CallError),
    #[error(
        "EKS says an association for {namespace}/{service_account} exists but does not list it; re-run"
    )]
    Unlisted {
        namespace: String,
        service_account: String,
    },
    #[error(
        "cannot create the association (eks:CreatePodIdentityAssociation on {cluster}): {message}"
    )]
    Create { cluster: String, message: String },
    #[error("{0}")]
    File(crate::identity::file::FileError),
    #[error("associations file: {0}")]
    Index(crate::identity::IndexError),
    #[error("{0}")]
    Yaml(serde_yaml_ng::Error),
    #[error("cannot write associations file {path}: {error}")]
    Write { path: String, error: std::io::Error },
    #[error("EKS DescribeCluster of {cluster}: {message}")]
    Describe { cluster: String, message: String },
    #[error("EKS cluster {0} has no OIDC issuer")]
    NoEksIssuer(String),
    #[error("the API server's {what}: {why}")]
    Discovery { what: &'static str, why: String },
}

/// A row (or one of its steps) that `apply` cannot carry out.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("{0}")]
    Edge(EdgeError),
    #[error("{0}")]
    Trust(super::trust::TrustError),
    #[error("role {0} no longer exists")]
    RoleGone(String),
    /// IAM's answer could not be read (the message says why).
    #[error("{0}")]
    RoleUnreadable(String),
    #[error("the trust policy of {role} would be {size} characters, over its limit of {limit}")]
    TooLarge {
        role: String,
        size: usize,
        limit: usize,
    },
    #[error("conflict: an association gives it role {0} already")]
    Conflict(String),
    #[error("{count} pods still use IRSA ({pods}); restart them (--restart-workloads) and re-run")]
    StillOnIrsa { count: usize, pods: String },
    #[error("not an IAM role ARN")]
    NotRoleArn,
    #[error("{reason}; edit the trust policy of {role} by hand")]
    SharedTrust { reason: String, role: String },
    /// `--remove-oidc-trust` must know which OIDC provider is this cluster's: removing every
    /// web-identity statement of a ServiceAccount would cut off other clusters trusting it.
    #[error(
        "cannot tell this cluster's OIDC issuer ({}); give --oidc-issuer URL (the issuer of the cluster's service-account tokens, as its IAM OIDC provider names it)",
        tried.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    NoIssuer { tried: Vec<EdgeError> },
}

impl From<EdgeError> for StepError {
    fn from(e: EdgeError) -> Self {
        Self::Edge(e)
    }
}
