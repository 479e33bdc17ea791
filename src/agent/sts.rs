//! Credentials from STS: `AssumeRole` with the pod's session tags, and role chaining.
//!
//! The request is built by pure functions ([`session_name`], [`session_tags`]); the call goes
//! through [`CredentialIssuer`], whose real implementation is [`AwsSts`] (aws-sdk-sts with the
//! default AWS chain for the agent's own credentials).

use std::time::{Duration, SystemTime};

use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sts::operation::get_caller_identity::GetCallerIdentityOutput;
use futures::future::BoxFuture;

use super::review::PodClaims;
use crate::clock::rfc3339;

/// The longest role session name STS accepts.
pub const MAX_SESSION_NAME: usize = 64;
/// The longest session tag value STS accepts.
const MAX_TAG_VALUE: usize = 256;

/// One `AssumeRole` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssumeRequest {
    pub role_arn: String,
    pub session_name: String,
    pub duration: Duration,
    /// Session tags, every one transitive (they follow a chained role).
    pub tags: Vec<(String, String)>,
    pub external_id: Option<String>,
    /// The association's inline session policy (`Policy`), on the call whose credentials the
    /// pod gets.
    pub policy: Option<String>,
}

/// Temporary credentials, as STS gave them.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    pub expiration: SystemTime,
    /// From the assumed role's ARN.
    pub account_id: String,
}

impl std::fmt::Debug for IssuedCredentials {
    // Never print a secret, even in a debug line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("expiration", &rfc3339(self.expiration))
            .field("account_id", &self.account_id)
            .finish_non_exhaustive()
    }
}

impl IssuedCredentials {
    /// How long they stay valid from `now` (zero once expired).
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.expiration.duration_since(now).unwrap_or_default()
    }

    /// The answer the AWS SDKs' container provider reads.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "AccessKeyId": self.access_key_id,
            "SecretAccessKey": self.secret_access_key,
            "Token": self.session_token,
            "AccountId": self.account_id,
            "Expiration": rfc3339(self.expiration),
        }))
        .expect("a JSON object of strings serialises")
    }
}

/// Why STS gave no credentials; each maps to the EKS agent's answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StsError {
    /// The role may not be assumed by the agent (trust policy, permissions): 403.
    #[error("STS refused: {0}")]
    AccessDenied(String),
    /// STS found the request invalid (bad role ARN, duration, tags): 400.
    #[error("STS rejected the request: {0}")]
    Invalid(String),
    /// STS throttles the agent: 429.
    #[error("STS is throttling: {0}")]
    Throttled(String),
    /// STS could not be reached or did not answer in time: 503.
    #[error("STS unavailable: {0}")]
    Unavailable(String),
}

/// The STS calls the agent makes.
pub trait CredentialIssuer: Send + Sync + 'static {
    /// `AssumeRole`, with the agent's own credentials, or with `using` (role chaining).
    fn assume_role<'a>(
        &'a self,
        request: &'a AssumeRequest,
        using: Option<&'a IssuedCredentials>,
    ) -> BoxFuture<'a, Result<IssuedCredentials, StsError>>;

    /// The agent's own account (`GetCallerIdentity`), for the synthetic cluster ARN.
    fn caller_account(&self) -> BoxFuture<'_, Result<String, StsError>>;
}

/// `eks-<cluster>-<pod-name>-<random>`, at most 64 characters: the middle is cut, never the
/// random suffix, and only the characters STS allows (`[\w+=,.@-]`) are kept.
pub fn session_name(cluster_name: &str, pod_name: &str, random: &str) -> String {
    let allowed = |c: &char| c.is_ascii_alphanumeric() || "_+=,.@-".contains(*c);
    let suffix: String = format!("-{random}").chars().filter(allowed).collect();
    let head: String = format!("eks-{cluster_name}-{pod_name}")
        .chars()
        .filter(allowed)
        .take(MAX_SESSION_NAME.saturating_sub(suffix.len()))
        .collect();
    let mut name = head + &suffix;
    name.truncate(MAX_SESSION_NAME);
    name
}

/// A random suffix for [`session_name`].
pub fn random_suffix() -> String {
    std::iter::repeat_with(fastrand::alphanumeric)
        .take(8)
        .collect()
}

/// The six session tags EKS sets, in its order.
pub fn session_tags(
    cluster_arn: &str,
    cluster_name: &str,
    claims: &PodClaims,
) -> Vec<(String, String)> {
    [
        ("eks-cluster-arn", cluster_arn),
        ("eks-cluster-name", cluster_name),
        ("kubernetes-namespace", claims.namespace.as_str()),
        (
            "kubernetes-service-account",
            claims.service_account.as_str(),
        ),
        ("kubernetes-pod-name", claims.pod_name.as_str()),
        ("kubernetes-pod-uid", claims.pod_uid.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.chars().take(MAX_TAG_VALUE).collect()))
    .collect()
}

/// `arn:aws:eks:REGION:ACCOUNT:cluster/NAME`, for clusters without an EKS ARN.
pub fn synthetic_cluster_arn(region: &str, account: &str, cluster_name: &str) -> String {
    format!("arn:aws:eks:{region}:{account}:cluster/{cluster_name}")
}

/// `arn:aws:sts::ACCOUNT:assumed-role/NAME/SESSION` → `ACCOUNT`.
pub fn account_of(arn: &str) -> Option<&str> {
    arn.split(':')
        .nth(4)
        .filter(|a| a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()))
}

/// Settings of the real STS client.
#[derive(Debug, Clone, Default)]
pub struct StsSettings {
    pub region: Option<String>,
    pub endpoint: Option<String>,
    /// Bound on one STS operation (all attempts).
    pub timeout: Option<Duration>,
}

/// aws-sdk-sts, with the agent's credentials from the default AWS chain.
pub struct AwsSts {
    config: aws_sdk_sts::Config,
    client: aws_sdk_sts::Client,
    region: String,
}

/// Used when no region is configured anywhere: STS's global endpoint lives there.
pub const FALLBACK_REGION: &str = "us-east-1";

impl AwsSts {
    /// Reads the standard AWS settings (`AWS_REGION`, profiles, `AWS_ENDPOINT_URL_STS`, …);
    /// `settings` win over them.
    pub async fn connect(settings: &StsSettings) -> Self {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(region) = &settings.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        Self::from_config(&loader.load().await, settings)
    }

    /// A client from an AWS configuration the caller loaded (embedders, tests); `settings`
    /// win over it.
    pub fn from_config(sdk: &aws_config::SdkConfig, settings: &StsSettings) -> Self {
        let region = match settings
            .region
            .as_deref()
            .or(sdk.region().map(|r| r.as_ref()))
        {
            Some(r) => r.to_string(),
            None => {
                tracing::warn!(
                    region = FALLBACK_REGION,
                    "no AWS region configured (--region or AWS_REGION); using STS in {FALLBACK_REGION}"
                );
                FALLBACK_REGION.to_string()
            }
        };
        let mut builder = aws_sdk_sts::config::Builder::from(sdk)
            .region(aws_config::Region::new(region.clone()))
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(2));
        if let Some(endpoint) = &settings.endpoint {
            builder = builder.endpoint_url(endpoint.clone());
        }
        if let Some(timeout) = settings.timeout {
            builder = builder.timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(timeout)
                    .operation_timeout(timeout)
                    .build(),
            );
        }
        let config = builder.build();
        Self {
            client: aws_sdk_sts::Client::from_conf(config.clone()),
            config,
            region,
        }
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// `GetCallerIdentity`: whom the agent's own credentials belong to.
    async fn caller_identity(&self) -> Result<GetCallerIdentityOutput, StsError> {
        self.client
            .get_caller_identity()
            .send()
            .await
            .map_err(classify)
    }

    /// The ARN the agent's own credentials belong to (`GetCallerIdentity`).
    pub async fn caller_arn(&self) -> Result<String, StsError> {
        let out = self.caller_identity().await?;
        out.arn()
            .map(str::to_string)
            .ok_or_else(|| StsError::Unavailable("GetCallerIdentity named no ARN".into()))
    }
}

fn classify<E, R>(e: SdkError<E, R>) -> StsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    match &e {
        SdkError::ServiceError(service) => {
            let err = service.err();
            let code = err.code().unwrap_or("Unknown");
            let message = format!("{code}: {}", err.message().unwrap_or("(no message)"));
            match code {
                "AccessDenied" | "AccessDeniedException" => StsError::AccessDenied(message),
                "Throttling" | "ThrottlingException" | "RequestLimitExceeded" => {
                    StsError::Throttled(message)
                }
                "MalformedPolicyDocument"
                | "PackedPolicyTooLarge"
                | "RegionDisabledException"
                | "ValidationError"
                | "InvalidParameterValue"
                | "InvalidParameterCombination" => StsError::Invalid(message),
                // The agent's own credentials were refused, or STS failed: not the pod's doing.
                _ => StsError::Unavailable(message),
            }
        }
        _ => StsError::Unavailable(
            aws_smithy_types::error::display::DisplayErrorContext(&e).to_string(),
        ),
    }
}

impl CredentialIssuer for AwsSts {
    fn assume_role<'a>(
        &'a self,
        request: &'a AssumeRequest,
        using: Option<&'a IssuedCredentials>,
    ) -> BoxFuture<'a, Result<IssuedCredentials, StsError>> {
        Box::pin(async move {
            let client = match using {
                None => self.client.clone(),
                Some(c) => aws_sdk_sts::Client::from_conf(
                    self.config
                        .to_builder()
                        .credentials_provider(aws_sdk_sts::config::Credentials::new(
                            c.access_key_id.clone(),
                            c.secret_access_key.clone(),
                            Some(c.session_token.clone()),
                            Some(c.expiration),
                            "pod-identity-agent-chain",
                        ))
                        .build(),
                ),
            };
            let mut call = client
                .assume_role()
                .role_arn(&request.role_arn)
                .role_session_name(&request.session_name)
                .duration_seconds(request.duration.as_secs().clamp(900, 43_200) as i32)
                .set_external_id(request.external_id.clone())
                .set_policy(request.policy.clone());
            for (key, value) in &request.tags {
                let tag = aws_sdk_sts::types::Tag::builder()
                    .key(key)
                    .value(value)
                    .build()
                    .map_err(|e| StsError::Invalid(e.to_string()))?;
                call = call.tags(tag).transitive_tag_keys(key);
            }
            let out = call.send().await.map_err(classify)?;
            let creds = out.credentials().ok_or_else(|| {
                StsError::Unavailable("AssumeRole answered without credentials".into())
            })?;
            let role_arn = out.assumed_role_user().map(|u| u.arn()).unwrap_or("");
            let account_id = account_of(role_arn)
                .or_else(|| account_of(&request.role_arn))
                .unwrap_or("")
                .to_string();
            let expiration = SystemTime::try_from(*creds.expiration()).map_err(|_| {
                StsError::Unavailable("AssumeRole answered with an unreadable expiration".into())
            })?;
            Ok(IssuedCredentials {
                access_key_id: creds.access_key_id().to_string(),
                secret_access_key: creds.secret_access_key().to_string(),
                session_token: creds.session_token().to_string(),
                expiration,
                account_id,
            })
        })
    }

    fn caller_account(&self) -> BoxFuture<'_, Result<String, StsError>> {
        Box::pin(async move {
            let out = self.caller_identity().await?;
            out.account()
                .map(str::to_string)
                .ok_or_else(|| StsError::Unavailable("GetCallerIdentity named no account".into()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names_keep_the_random_suffix_and_fit() {
        assert_eq!(
            session_name("kind", "carts-1", "Ab12"),
            "eks-kind-carts-1-Ab12"
        );
        let long = session_name("a-very-long-cluster-name", &"p".repeat(80), "R4nd0m99");
        assert_eq!(long.len(), MAX_SESSION_NAME);
        assert!(
            long.starts_with("eks-a-very-long-cluster-name-ppp"),
            "{long}"
        );
        assert!(long.ends_with("-R4nd0m99"), "{long}");
        assert_eq!(session_name("c/x", "p:q", "r"), "eks-cx-pq-r");
    }

    #[test]
    fn tags_name_the_pod() {
        let claims = PodClaims {
            namespace: "team-a".into(),
            service_account: "carts".into(),
            pod_name: "carts-1".into(),
            pod_uid: "u-1".into(),
        };
        let tags = session_tags(
            "arn:aws:eks:us-east-1:111122223333:cluster/kind",
            "kind",
            &claims,
        );
        let keys: Vec<&str> = tags.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "eks-cluster-arn",
                "eks-cluster-name",
                "kubernetes-namespace",
                "kubernetes-service-account",
                "kubernetes-pod-name",
                "kubernetes-pod-uid"
            ]
        );
        assert_eq!(tags[4].1, "carts-1");
    }

    #[test]
    fn accounts_and_times() {
        assert_eq!(
            account_of("arn:aws:sts::111122223333:assumed-role/carts/eks-x"),
            Some("111122223333")
        );
        assert_eq!(account_of("garbage"), None);
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_270_706);
        assert_eq!(rfc3339(t), "2026-12-03T04:05:06Z");
    }

    #[test]
    fn debug_output_hides_secrets() {
        let c = IssuedCredentials {
            access_key_id: "ASIAEXAMPLE".into(),
            secret_access_key: "very-secret".into(),
            session_token: "token-secret".into(),
            expiration: SystemTime::UNIX_EPOCH,
            account_id: "111122223333".into(),
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("secret"), "{shown}");
        let json: serde_json::Value = serde_json::from_slice(&c.to_json()).unwrap();
        assert_eq!(json["Token"], "token-secret");
        assert_eq!(json["Expiration"], "1970-01-01T00:00:00Z");
    }
}
