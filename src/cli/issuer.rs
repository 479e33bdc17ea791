//! `issuer`: publish the cluster's service-account issuer so AWS trusts its tokens (IRSA outside
//! EKS, docs/irsa-self-managed.md): `keys`, `publish`, `provider`, `flags`, `verify`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{CommandResult, Prepared};
use crate::issuer::{self, Documents, IssuerError, cluster, flags::Flags, keys};
use crate::kubernetes::client::{ClusterAccess, Otherwise, connect};

/// Public-key files are a few KiB; a cap keeps /dev/zero and huge files out.
const MAX_KEY_FILE: u64 = 1024 * 1024;

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

/// Where the keys come from, and the issuer they are published for.
#[derive(Debug, Args)]
pub struct KeySource {
    /// The issuer URL (https://, no query or fragment): what --service-account-issuer says.
    #[arg(long, value_name = "URL")]
    pub issuer: String,
    /// A PEM file of public keys, certificates or private keys (repeatable: keys in rotation).
    #[arg(
        long = "public-key",
        value_name = "FILE",
        conflicts_with = "from_cluster"
    )]
    pub public_keys: Vec<PathBuf>,
    /// Read the keys from the API server's own /openid/v1/jwks instead.
    #[arg(long)]
    pub from_cluster: bool,
    /// Kubeconfig for --from-cluster (else kubectl's).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The discovery document's jwks_uri (as --service-account-jwks-uri); default ISSUER/openid/v1/jwks.
    #[arg(long, value_name = "URL")]
    pub jwks_uri: Option<String>,
}

impl KeySource {
    /// Both documents for the chosen keys.
    pub async fn documents(&self) -> Result<Documents, IssuerError> {
        issuer::validate_issuer(&self.issuer, false)?;
        let jwks_uri = self
            .jwks_uri
            .clone()
            .unwrap_or_else(|| issuer::default_jwks_uri(&self.issuer));
        if self.from_cluster {
            let c = cluster_issuer(self.kubeconfig.as_deref()).await?;
            return cluster::documents(&c, &self.issuer, &jwks_uri);
        }
        let mut all = Vec::new();
        for path in &self.public_keys {
            let pem = crate::files::read_capped(path, MAX_KEY_FILE)
                .map_err(|e| IssuerError::Key(format!("{}: {e}", path.display())))?;
            let found = keys::keys_from_pem(&pem)
                .map_err(|e| IssuerError::Key(format!("{}: {e}", path.display())))?;
            all.extend(found);
        }
        issuer::documents(&self.issuer, &jwks_uri, &all)
    }
}

/// The API server's issuer documents through the one client.
pub async fn cluster_issuer(
    kubeconfig: Option<&Path>,
) -> Result<cluster::ClusterIssuer, IssuerError> {
    let client = match connect(kubeconfig, Otherwise::Kubectl).await {
        Ok(ClusterAccess::Client(c, _)) => c,
        Ok(ClusterAccess::None) => {
            return Err(IssuerError::Cluster {
                what: "issuer",
                why: "no cluster: give --kubeconfig".into(),
            });
        }
        Err(e) => {
            return Err(IssuerError::Cluster {
                what: "issuer",
                why: e.to_string(),
            });
        }
    };
    cluster::fetch(&client).await
}

/// Writes both documents under `dir` at the paths STS fetches, world-readable.
pub fn write_documents(dir: &Path, docs: &Documents) -> std::io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for (rel, body) in [
        (issuer::DISCOVERY_PATH, &docs.discovery),
        (issuer::JWKS_PATH, &docs.jwks),
    ] {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        crate::files::write_replacing(&path, body.as_bytes(), 0o644)?;
        written.push(path);
    }
    Ok(written)
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
