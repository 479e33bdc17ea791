//! `issuer publish` and `issuer provider`: the AWS side of the issuer. The SDK's standard
//! settings apply (profiles, `AWS_REGION`, `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL_IAM`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use super::CommandResult;
use super::issuer_keys::{KeySource, sdk, write_documents};
use crate::issuer::aws::{self, Acl, Ensured};
use crate::issuer::validate_issuer;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AclArg {
    /// A public-read object ACL (buckets that allow ACLs).
    PublicRead,
    /// No ACL: a bucket policy lets everyone s3:GetObject (ACLs disabled, the S3 default).
    None,
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    #[command(flatten)]
    pub source: KeySource,
    /// The S3 bucket the issuer URL serves (https://BUCKET.s3.REGION.amazonaws.com[/PREFIX]).
    #[arg(
        long,
        value_name = "BUCKET",
        required_unless_present = "out",
        conflicts_with = "out"
    )]
    pub bucket: Option<String>,
    /// Key prefix inside the bucket: the issuer URL's path.
    #[arg(long, value_name = "PREFIX", default_value = "")]
    pub prefix: String,
    /// How STS may read the objects.
    #[arg(long, value_enum, default_value = "public-read")]
    pub acl: AclArg,
    /// Path-style S3 addressing (S3-compatible stores, local endpoints).
    #[arg(long)]
    pub path_style: bool,
    /// Write to this directory instead, for any static HTTPS host.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// AWS region (else the SDK's: AWS_REGION, the profile).
    #[arg(long)]
    pub region: Option<String>,
}

impl PublishArgs {
    pub async fn run(self) -> CommandResult {
        crate::server::tls::install_default_provider();
        let docs = self.source.documents().await?;
        if let Some(dir) = &self.out {
            for path in write_documents(dir, &docs)
                .map_err(|e| format!("cannot write into {}: {e}", dir.display()))?
            {
                println!("{}", path.display());
            }
            return Ok(ExitCode::SUCCESS);
        }
        let Some(bucket) = &self.bucket else {
            return Err("give --bucket or --out".into());
        };
        let shared = sdk(self.region.as_deref()).await;
        let s3 = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(self.path_style)
            .build();
        let acl = match self.acl {
            AclArg::PublicRead => Acl::PublicRead,
            AclArg::None => Acl::None,
        };
        let keys = aws::publish(
            &aws_sdk_s3::Client::from_conf(s3),
            bucket,
            &self.prefix,
            acl,
            &docs,
        )
        .await?;
        for key in keys {
            println!("s3://{bucket}/{key}");
        }
        Ok(ExitCode::SUCCESS)
    }
}

#[derive(Debug, Args)]
pub struct ProviderArgs {
    /// The issuer URL (https://, no port, query or fragment).
    #[arg(long, value_name = "URL")]
    pub issuer: String,
    /// The audience tokens carry (repeatable).
    #[arg(
        long = "client-id",
        value_name = "ID",
        default_value = "sts.amazonaws.com"
    )]
    pub client_ids: Vec<String>,
    /// Certificate thumbprints (SHA-1 hex); IAM needs none for publicly trusted certificates.
    #[arg(long = "thumbprint", value_name = "HEX")]
    pub thumbprints: Vec<String>,
    /// AWS region for signing (IAM is global; default us-east-1).
    #[arg(long)]
    pub region: Option<String>,
}

impl ProviderArgs {
    pub async fn run(self) -> CommandResult {
        crate::server::tls::install_default_provider();
        validate_issuer(&self.issuer, true)?;
        let shared = sdk(self.region.as_deref()).await;
        let iam = aws_sdk_iam::Client::new(&shared);
        let (arn, what) =
            aws::ensure_provider(&iam, &self.issuer, &self.client_ids, &self.thumbprints).await?;
        match what {
            Ensured::Created => eprintln!("created the IAM OIDC provider"),
            Ensured::Updated(ids) => eprintln!("added client IDs {}", ids.join(", ")),
            Ensured::Unchanged => eprintln!("the IAM OIDC provider is already as asked"),
        }
        println!("{arn}");
        Ok(ExitCode::SUCCESS)
    }
}
