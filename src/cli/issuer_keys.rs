//! What the `issuer` subcommands share: where the keys come from ([`KeySource`]), the API
//! server's own issuer documents, writing the documents where STS fetches them, and the AWS SDK
//! configuration. Apart from `issuer.rs` so the subcommands' files import it, not each other.

use std::path::{Path, PathBuf};

use clap::Args;

use crate::issuer::{self, Documents, IssuerError, cluster, keys};
use crate::kubernetes::client::{ClusterAccess, Otherwise, connect};

/// Public-key files are a few KiB; a cap keeps /dev/zero and huge files out.
const MAX_KEY_FILE: u64 = 1024 * 1024;

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

/// The SDK configuration for the standard chain, `region` first; IAM needs one to sign.
pub async fn sdk(region: Option<&str>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(r) = region {
        loader = loader.region(aws_config::Region::new(r.to_string()));
    }
    let shared = loader.load().await;
    if shared.region().is_none() {
        // IAM is global and signs in us-east-1.
        return shared
            .into_builder()
            .region(aws_config::Region::new("us-east-1"))
            .build();
    }
    shared
}
