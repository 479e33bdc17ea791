//! `issuer`: publish the cluster's service-account issuer so AWS trusts its tokens (IRSA outside
//! EKS, docs/irsa-self-managed.md): `keys`, `publish`, `provider`, `flags`, `verify`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::issuer_keys::{KeySource, write_documents};
use super::{CommandResult, Prepared};
use crate::issuer::{self, cluster, flags::Flags};

#[derive(Debug, Args)]
pub struct IssuerArgs {
    #[command(subcommand)]
    pub command: IssuerCommand,
}

#[derive(Debug, Subcommand)]
pub enum IssuerCommand {
    /// Write DIR/.well-known/openid-configuration and DIR/openid/v1/jwks as the API server
    /// serves them, for any static HTTPS host.
    Keys(KeysArgs),
    /// Upload both documents to S3 (or write them to --out DIR).
    Publish(Box<super::issuer_aws::PublishArgs>),
    /// Create or update the IAM OIDC provider for the issuer; prints its ARN.
    Provider(super::issuer_aws::ProviderArgs),
    /// Print the kube-apiserver flags, a kind Cluster config and a kubeadm patch.
    Flags(FlagsArgs),
    /// Check the published issuer, a token, the IAM provider and a role's trust; names the
    /// first thing wrong (exit 1).
    Verify(Box<super::issuer_verify::VerifyArgs>),
}

impl IssuerArgs {
    pub fn prepare(self) -> Prepared {
        match self.command {
            IssuerCommand::Keys(a) => Prepared::new(a.run()),
            IssuerCommand::Publish(a) => Prepared::new(a.run()),
            IssuerCommand::Provider(a) => Prepared::new(a.run()),
            IssuerCommand::Flags(a) => Prepared::new(async move { a.run() }),
            IssuerCommand::Verify(a) => Prepared::new(a.run()),
        }
    }
}

#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(flatten)]
    pub source: KeySource,
    /// The directory to write into (the web root of the issuer URL's path).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

impl KeysArgs {
    async fn run(self) -> CommandResult {
        let docs = self.source.documents().await?;
        let written = write_documents(&self.out, &docs)
            .map_err(|e| format!("cannot write into {}: {e}", self.out.display()))?;
        for path in written {
            println!("{}", path.display());
        }
        Ok(ExitCode::SUCCESS)
    }
}

#[derive(Debug, Args)]
pub struct FlagsArgs {
    /// The issuer URL tokens will carry (the published one).
    #[arg(long, value_name = "URL")]
    pub issuer: String,
    /// An issuer the API server should still accept (tokens issued before the change); repeatable.
    #[arg(long, value_name = "URL")]
    pub previous_issuer: Vec<String>,
    /// --service-account-jwks-uri (default ISSUER/openid/v1/jwks).
    #[arg(long, value_name = "URL")]
    pub jwks_uri: Option<String>,
    /// The public key file(s) on the control-plane node (kubeadm's default).
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/etc/kubernetes/pki/sa.pub"
    )]
    pub key_file: String,
    /// The signing key on the control-plane node (kubeadm's default).
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/etc/kubernetes/pki/sa.key"
    )]
    pub signing_key_file: String,
}

impl FlagsArgs {
    fn run(self) -> CommandResult {
        issuer::validate_issuer(&self.issuer, true)?;
        for old in &self.previous_issuer {
            cluster::check_issuer(&self.issuer, old)?;
        }
        let flags = Flags {
            issuer: self.issuer,
            previous: self.previous_issuer,
            jwks_uri: self.jwks_uri,
            key_file: self.key_file,
            signing_key_file: self.signing_key_file,
        };
        print!("{}", flags.render());
        Ok(ExitCode::SUCCESS)
    }
}
