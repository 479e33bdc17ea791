//! The EKS API client: the two calls the association source needs, behind a small trait so the
//! source above it can be tested without AWS (see [`super::eks_fake`]).
//!
//! - `ListPodIdentityAssociations` (optionally filtered by namespace and ServiceAccount), one
//!   page: enough to know *that* a ServiceAccount has an association;
//! - `DescribePodIdentityAssociation`, for the details (the list summary has no role ARN).
//!
//! [`AwsEks`] implements [`EksApi`] with `aws-sdk-eks`: credentials from the default chain,
//! SigV4 signing, and the SDK's standard retries (exponential backoff with jitter, a retry quota
//! so an outage does not turn into a retry storm) for throttling, 5xx and network errors.

use std::time::Duration;

use aws_sdk_eks::config::http::HttpResponse;
use aws_sdk_eks::config::retry::RetryConfig;
use aws_sdk_eks::config::timeout::TimeoutConfig;
use aws_sdk_eks::config::{BehaviorVersion, Region};
use aws_sdk_eks::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use futures::future::BoxFuture;

use super::Association;
use crate::identity::eks_settings::EksSettings;

/// EKS returns at most 100 associations a page.
pub const PAGE_SIZE: i32 = 100;

/// One association as the list returns it (no role: that takes a Describe).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedAssociation {
    pub namespace: String,
    pub service_account: String,
    pub association_id: String,
    pub association_arn: Option<String>,
}

/// One page of `ListPodIdentityAssociations`.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub summaries: Vec<ListedAssociation>,
    pub next_token: Option<String>,
}

/// The EKS operations, for counters and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    List,
    Describe,
    /// The GitOps associations controller's writes (`crate::controller::gitops`).
    Create,
    Update,
    Delete,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::List => "ListPodIdentityAssociations",
            Self::Describe => "DescribePodIdentityAssociation",
            Self::Create => "CreatePodIdentityAssociation",
            Self::Update => "UpdatePodIdentityAssociation",
            Self::Delete => "DeletePodIdentityAssociation",
        }
    }

    fn permission(self) -> &'static str {
        match self {
            Self::List => "eks:ListPodIdentityAssociations",
            Self::Describe => "eks:DescribePodIdentityAssociation",
            // Creating with tags also takes eks:TagResource.
            Self::Create => "eks:CreatePodIdentityAssociation and eks:TagResource",
            Self::Update => "eks:UpdatePodIdentityAssociation (and iam:PassRole on the role)",
            Self::Delete => "eks:DeletePodIdentityAssociation",
        }
    }
}

/// What kind of failure an EKS call ended in (after the SDK's own retries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallErrorKind {
    /// `ResourceNotFoundException`: the cluster (List) or the association (Describe) is gone.
    NotFound,
    /// `InvalidParameterException` / `InvalidRequestException`.
    InvalidRequest,
    /// `ResourceInUseException`: the ServiceAccount has an association already (Create).
    InUse,
    /// `AccessDeniedException` and other 401/403 answers.
    AccessDenied,
    /// HTTP 429 or a throttling error code.
    Throttled,
    /// `ServerException` or another 5xx.
    Server,
    /// The call did not complete within its timeout.
    Timeout,
    /// The endpoint could not be reached.
    Network,
    Other,
}

/// A failed EKS call. The message says what to check.
#[derive(Debug, Clone, thiserror::Error)]
#[error("EKS {} failed: {message}", operation.as_str())]
pub struct CallError {
    pub operation: Operation,
    pub kind: CallErrorKind,
    pub message: String,
}

impl CallError {
    pub fn new(operation: Operation, kind: CallErrorKind, message: impl Into<String>) -> Self {
        Self {
            operation,
            kind,
            message: message.into(),
        }
    }
}

/// The EKS calls the association source makes. Implemented by [`AwsEks`]; tests and benches
/// may implement it in memory.
pub trait EksApi: Send + Sync + 'static {
    /// One page of the cluster's associations; `filter` is (namespace, serviceAccount).
    fn list_page<'a>(
        &'a self,
        filter: Option<(&'a str, &'a str)>,
        next_token: Option<String>,
    ) -> BoxFuture<'a, Result<Page, CallError>>;

    /// The full association; `Ok(None)` when it no longer exists.
    fn describe<'a>(
        &'a self,
        association_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Association>, CallError>>;
}

/// Retry and timeout settings of the SDK client (short ones make tests fast).
#[derive(Debug, Clone)]
pub struct ClientTuning {
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Bound on one HTTP attempt.
    pub attempt_timeout: Duration,
    /// Bound on a call with all its retries, so background lookups always end.
    pub operation_timeout: Duration,
    pub connect_timeout: Duration,
}

impl Default for ClientTuning {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(5),
            operation_timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(3),
        }
    }
}

impl ClientTuning {
    pub fn retry_config(&self) -> RetryConfig {
        RetryConfig::standard()
            .with_max_attempts(self.max_attempts.max(1))
            .with_initial_backoff(self.initial_backoff)
            .with_max_backoff(self.max_backoff)
    }

    pub fn timeout_config(&self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(self.connect_timeout)
            .operation_attempt_timeout(self.attempt_timeout)
            .operation_timeout(self.operation_timeout)
            .build()
    }
}

/// The EKS API through `aws-sdk-eks`.
#[derive(Debug, Clone)]
pub struct AwsEks {
    client: aws_sdk_eks::Client,
    cluster: String,
}

/// Why the EKS client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EksSetupError {
    #[error(
        "no AWS region for the EKS API of cluster {cluster}: give --region (eks.region) or set AWS_REGION"
    )]
    NoRegion { cluster: String },
}

impl AwsEks {
    /// Builds the client the way the webhook runs in a cluster: region from the settings (else
    /// the AWS environment), credentials from the default chain (IRSA, Pod Identity, env, profile,
    /// instance role), `--eks-endpoint` when given.
    pub async fn from_settings(
        settings: &EksSettings,
        tuning: &ClientTuning,
    ) -> Result<Self, EksSetupError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(tuning.retry_config())
            .timeout_config(tuning.timeout_config());
        if let Some(region) = &settings.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(endpoint) = &settings.endpoint {
            loader = loader.endpoint_url(endpoint.clone());
        }
        let shared = loader.load().await;
        if shared.region().is_none() {
            return Err(EksSetupError::NoRegion {
                cluster: settings.cluster_name.clone(),
            });
        }
        Ok(Self::new(
            aws_sdk_eks::Client::new(&shared),
            settings.cluster_name.clone(),
        ))
    }

    /// Wraps a client built elsewhere (tests give static credentials and a local endpoint).
    pub fn new(client: aws_sdk_eks::Client, cluster: impl Into<String>) -> Self {
        Self {
            client,
            cluster: cluster.into(),
        }
    }

    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The SDK client (the GitOps controller's writes go through it).
    pub fn sdk(&self) -> &aws_sdk_eks::Client {
        &self.client
    }
}

impl EksApi for AwsEks {
    fn list_page<'a>(
        &'a self,
        filter: Option<(&'a str, &'a str)>,
        next_token: Option<String>,
    ) -> BoxFuture<'a, Result<Page, CallError>> {
        Box::pin(async move {
            let mut req = self
                .client
                .list_pod_identity_associations()
                .cluster_name(&self.cluster)
                .max_results(PAGE_SIZE)
                .set_next_token(next_token);
            if let Some((namespace, service_account)) = filter {
                req = req.namespace(namespace).service_account(service_account);
            }
            let out = req
                .send()
                .await
                .map_err(|e| call_error(Operation::List, &self.cluster, e))?;
            let summaries = out
                .associations()
                .iter()
                .filter_map(|s| {
                    // A summary without these fields cannot be keyed; EKS always sends them.
                    Some(ListedAssociation {
                        namespace: s.namespace()?.to_string(),
                        service_account: s.service_account()?.to_string(),
                        association_id: s.association_id()?.to_string(),
                        association_arn: s.association_arn().map(String::from),
                    })
                })
                .collect();
            Ok(Page {
                summaries,
                next_token: out.next_token().filter(|t| !t.is_empty()).map(String::from),
            })
        })
    }

    fn describe<'a>(
        &'a self,
        association_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Association>, CallError>> {
        Box::pin(async move {
            let result = self
                .client
                .describe_pod_identity_association()
                .cluster_name(&self.cluster)
                .association_id(association_id)
                .send()
                .await;
            let out = match result {
                Ok(out) => out,
                Err(e) => {
                    let err = call_error(Operation::Describe, &self.cluster, e);
                    // Deleted between the list and the describe: it simply is not there.
                    if err.kind == CallErrorKind::NotFound {
                        return Ok(None);
                    }
                    return Err(err);
                }
            };
            let Some(a) = out.association() else {
                return Err(CallError::new(
                    Operation::Describe,
                    CallErrorKind::Other,
                    format!("association {association_id}: the response had no association"),
                ));
            };
            let (Some(namespace), Some(service_account), Some(role_arn)) =
                (a.namespace(), a.service_account(), a.role_arn())
            else {
                return Err(CallError::new(
                    Operation::Describe,
                    CallErrorKind::Other,
                    format!(
                        "association {association_id}: the response lacks namespace, serviceAccount or roleArn"
                    ),
                ));
            };
            Ok(Some(Association {
                namespace: namespace.to_string(),
                service_account: service_account.to_string(),
                role_arn: role_arn.to_string(),
                target_role_arn: a.target_role_arn().map(String::from),
                external_id: a.external_id().map(String::from),
                disable_session_tags: a.disable_session_tags(),
                policy: a.policy().map(String::from),
                association_id: Some(a.association_id().unwrap_or(association_id).to_string()),
            }))
        })
    }
}

/// Turns an SDK error into a [`CallError`] whose message says what to check.
pub(crate) fn call_error<E>(
    operation: Operation,
    cluster: &str,
    err: SdkError<E, HttpResponse>,
) -> CallError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &err {
        SdkError::ServiceError(se) => {
            let code = se.err().code().unwrap_or("");
            let detail = se.err().message().unwrap_or("no message");
            let status = Some(se.raw().status().as_u16());
            let (kind, hint) = match code {
                "ResourceNotFoundException" => (
                    CallErrorKind::NotFound,
                    match operation {
                        Operation::List => format!(
                            "cluster `{cluster}` not found; check --cluster-name and --region"
                        ),
                        _ => "association not found".to_string(),
                    },
                ),
                "ResourceInUseException" => (
                    CallErrorKind::InUse,
                    "the ServiceAccount has an association already".to_string(),
                ),
                "InvalidParameterException" | "InvalidRequestException" => (
                    CallErrorKind::InvalidRequest,
                    "EKS rejected the request".to_string(),
                ),
                "AccessDeniedException"
                | "UnauthorizedException"
                | "UnrecognizedClientException" => (
                    CallErrorKind::AccessDenied,
                    format!(
                        "access denied; allow {} on cluster `{cluster}` for this process's IAM role (the webhook's or the controller's)",
                        operation.permission()
                    ),
                ),
                c if status == Some(429)
                    || c.contains("Throttl")
                    || c == "TooManyRequestsException" =>
                {
                    (
                        CallErrorKind::Throttled,
                        "throttled by EKS; retried with backoff".to_string(),
                    )
                }
                _ if status.is_some_and(|s| s >= 500) || code == "ServerException" => (
                    CallErrorKind::Server,
                    "EKS server error; retried with backoff".to_string(),
                ),
                _ if matches!(status, Some(401 | 403)) => (
                    CallErrorKind::AccessDenied,
                    format!(
                        "access denied; allow {} on cluster `{cluster}` for this process's IAM role (the webhook's or the controller's)",
                        operation.permission()
                    ),
                ),
                _ => (CallErrorKind::Other, "unexpected EKS error".to_string()),
            };
            let code = if code.is_empty() {
                "no error code"
            } else {
                code
            };
            CallError::new(operation, kind, format!("{hint} ({code}: {detail})"))
        }
        SdkError::TimeoutError(_) => CallError::new(
            operation,
            CallErrorKind::Timeout,
            "timed out; check that the EKS endpoint is reachable from the webhook".to_string(),
        ),
        SdkError::DispatchFailure(d) => {
            let kind = if d.is_timeout() {
                CallErrorKind::Timeout
            } else {
                CallErrorKind::Network
            };
            CallError::new(
                operation,
                kind,
                format!(
                    "cannot reach the EKS endpoint ({}); check network access and --eks-endpoint",
                    DisplayErrorContext(&err)
                ),
            )
        }
        SdkError::ResponseError(_) => CallError::new(
            operation,
            CallErrorKind::Other,
            format!("unreadable EKS response ({})", DisplayErrorContext(&err)),
        ),
        _ => CallError::new(
            operation,
            CallErrorKind::Other,
            format!("{}", DisplayErrorContext(&err)),
        ),
    }
}
