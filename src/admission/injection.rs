//! The `injection` section of the settings: what the mutating webhook writes into pods (docs/contract.md §2
//! defaults). Flag names are those of aws/amazon-eks-pod-identity-webhook (docs/contract.md §6), so a
//! cluster running it can switch images and keep its arguments. Declared once: clap reads the
//! flags, serde the config file.

use clap::{ArgAction, Args};
use serde::{Deserialize, Serialize};

pub const DEFAULT_CREDENTIALS_URI_V4: &str = "http://169.254.170.23/v1/credentials";
pub const DEFAULT_CREDENTIALS_URI_V6: &str = "http://[fd00:ec2::23]/v1/credentials";
pub const MIN_TOKEN_EXPIRATION: i64 = 600;
/// The API server rejects projected token lifetimes of 2^32 seconds or more.
pub const MAX_TOKEN_EXPIRATION: i64 = u32::MAX as i64;

/// Far above any pod that runs (a node runs all of a pod's containers), far below what makes
/// the patch large: each injected container costs about 600 bytes of answer.
pub const DEFAULT_MAX_CONTAINERS: usize = 250;
/// Volumes cost the answer nothing; the limit keeps a pod's shape sane.
pub const DEFAULT_MAX_VOLUMES: usize = 1000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Args)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct InjectionSettings {
    /// Region for AWS_DEFAULT_REGION/AWS_REGION in pods [default: none].
    #[arg(long, value_name = "REGION")]
    pub aws_default_region: Option<String>,
    /// Inject AWS_STS_REGIONAL_ENDPOINTS=regional [default: false].
    #[arg(long, required = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub sts_regional_endpoint: bool,
    /// IRSA token audience [default: sts.amazonaws.com].
    #[arg(long, required = false, value_name = "AUDIENCE")]
    pub token_audience: String,
    /// IRSA token mount path [default: /var/run/secrets/eks.amazonaws.com/serviceaccount].
    #[arg(long, required = false, value_name = "PATH")]
    pub token_mount_path: String,
    /// Default token lifetime in seconds (600 ..= 4294967295) [default: 86400].
    #[arg(long, required = false, value_name = "SECONDS")]
    pub token_expiration: i64,
    /// Annotation prefix [default: eks.amazonaws.com].
    #[arg(long, required = false, value_name = "PREFIX")]
    pub annotation_prefix: String,
    /// Pod Identity credentials URI [default: http://169.254.170.23/v1/credentials; with --ipv6 http://[fd00:ec2::23]/v1/credentials].
    #[arg(long, required = false, value_name = "URI")]
    pub container_credentials_full_uri: String,
    /// Pod Identity token audience [default: pods.eks.amazonaws.com].
    #[arg(long, required = false, value_name = "AUDIENCE")]
    pub container_credentials_audience: String,
    /// Pod Identity token mount path [default: /var/run/secrets/pods.eks.amazonaws.com/serviceaccount].
    #[arg(long, required = false, value_name = "PATH")]
    pub container_credentials_token_mount_path: String,
    /// Pod Identity token volume name [default: eks-pod-identity-token].
    #[arg(long, required = false, value_name = "NAME")]
    pub container_credentials_token_volume_name: String,
    /// Pod Identity token file name [default: eks-pod-identity-token].
    #[arg(long, required = false, value_name = "FILE")]
    pub container_credentials_token_path: String,
    /// Most containers a pod may have, containers, initContainers and ephemeralContainers
    /// together; the mutating webhook refuses larger pods (1 ..= 4096) [default: 250].
    #[arg(long, required = false, value_name = "N")]
    pub max_containers: usize,
    /// Most volumes a pod may have; the mutating webhook refuses pods with more
    /// (1 ..= 4096) [default: 1000].
    #[arg(long, required = false, value_name = "N")]
    pub max_volumes: usize,
    /// For IRSA containers behind a proxy: NO_PROXY entries to add, comma-separated (the STS
    /// endpoint they reach without the proxy, e.g. sts.eu-west-1.amazonaws.com) [default: none].
    #[arg(long, value_name = "HOSTS")]
    pub sts_no_proxy: Option<String>,
    /// Volume name for the IRSA token (fixed by the IRSA webhook's contract).
    #[arg(skip)]
    #[serde(skip)]
    pub irsa_token_volume_name: String,
    /// File name inside the IRSA token mount (fixed).
    #[arg(skip)]
    #[serde(skip)]
    pub irsa_token_path: String,
}

impl Default for InjectionSettings {
    fn default() -> Self {
        Self {
            aws_default_region: None,
            sts_regional_endpoint: false,
            token_audience: "sts.amazonaws.com".into(),
            token_mount_path: "/var/run/secrets/eks.amazonaws.com/serviceaccount".into(),
            token_expiration: 86400,
            annotation_prefix: "eks.amazonaws.com".into(),
            container_credentials_full_uri: DEFAULT_CREDENTIALS_URI_V4.into(),
            container_credentials_audience: "pods.eks.amazonaws.com".into(),
            container_credentials_token_mount_path:
                "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount".into(),
            container_credentials_token_volume_name: "eks-pod-identity-token".into(),
            container_credentials_token_path: "eks-pod-identity-token".into(),
            max_containers: DEFAULT_MAX_CONTAINERS,
            max_volumes: DEFAULT_MAX_VOLUMES,
            sts_no_proxy: None,
            irsa_token_volume_name: "aws-iam-token".into(),
            irsa_token_path: "token".into(),
        }
    }
}

impl InjectionSettings {
    /// The entries of `stsNoProxy`, trimmed, empty ones left out.
    pub fn sts_no_proxy_entries(&self) -> impl Iterator<Item = &str> {
        self.sts_no_proxy
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|e| !e.is_empty())
    }
}
