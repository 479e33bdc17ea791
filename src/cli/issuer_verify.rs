//! `issuer verify`: checks the published issuer against the cluster, a fresh token against the
//! published JWKS, and the IAM provider and a role's trust; exit 0 all good, 1 the first thing
//! wrong (named), 2 could not run.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;

use super::CommandResult;
use super::issuer_keys::{cluster_issuer, sdk};
use crate::issuer::{fetch, verify};
use crate::kubernetes::client::{ClusterAccess, Otherwise, connect};

/// CA files hold a few certificates.
const MAX_CA_FILE: u64 = 1024 * 1024;

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The issuer URL, as --service-account-issuer says it.
    #[arg(long, value_name = "URL")]
    pub issuer: String,
    /// Kubeconfig (else kubectl's).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The ServiceAccount to request a token for.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    #[arg(long, default_value = "default")]
    pub service_account: String,
    /// The token audience (the provider's client ID).
    #[arg(long, default_value = "sts.amazonaws.com")]
    pub audience: String,
    /// A role (name or ARN) whose trust policy must admit the ServiceAccount.
    #[arg(long, value_name = "ROLE")]
    pub role: Option<String>,
    /// Skip the IAM checks (no AWS credentials here).
    #[arg(long)]
    pub no_aws: bool,
    /// Trust this CA for the issuer's HTTPS instead of the system's roots.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Connect to ADDR (ip:port) for the issuer's host (the certificate is still checked).
    #[arg(long, value_name = "ADDR")]
    pub connect_to: Option<SocketAddr>,
    /// AWS region for signing IAM calls (default us-east-1).
    #[arg(long)]
    pub region: Option<String>,
}

impl VerifyArgs {
    pub async fn run(self) -> CommandResult {
        crate::server::tls::install_default_provider();
        let ca = match &self.ca_file {
            Some(p) => Some(
                crate::files::read_capped(p, MAX_CA_FILE)
                    .map_err(|e| format!("--ca-file {}: {e}", p.display()))?,
            ),
            None => None,
        };
        let ca_name = self.ca_file.as_ref().map(|p| p.display().to_string());
        let roots = fetch::roots(ca.as_deref().zip(ca_name.as_deref()))?;
        let client = match connect(self.kubeconfig.as_deref(), Otherwise::Kubectl).await? {
            ClusterAccess::Client(c, _) => c,
            ClusterAccess::None => return Err("no cluster: give --kubeconfig".into()),
        };
        let cluster = cluster_issuer(self.kubeconfig.as_deref()).await?;
        let iam = if self.no_aws {
            None
        } else {
            let shared = sdk(self.region.as_deref()).await;
            Some(aws_sdk_iam::Client::new(&shared))
        };
        let plan = verify::Plan {
            issuer: self.issuer,
            audience: self.audience,
            namespace: self.namespace,
            service_account: self.service_account,
            role: self.role,
            roots: Arc::new(roots),
            connect_to: self.connect_to,
        };
        let mut report = |line: String| println!("ok: {line}");
        match verify::run(&plan, &client, &cluster, iam.as_ref(), &mut report).await {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(e) => {
                println!("FAIL: {e}");
                Ok(ExitCode::from(1))
            }
        }
    }
}
