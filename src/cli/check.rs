//! `check`: the webhook's decisions on manifests (`crate::audit::run`), with its own exit codes:
//! 0 clean, 1 denied, 2 unreadable input or could not run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::{CommandResult, Prepared};
use crate::audit::manifest;
use crate::audit::run::{CheckOutput, ManifestCheck, SETUP_FAILED, offline_settings, run_check};
use crate::settings::{EksSettings, Settings, SettingsError};

/// Where the EKS API is, for `--cluster-name` (`check` and `audit`).
#[derive(Debug, Args)]
pub struct EksApiArgs {
    /// AWS region of the EKS API.
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
    /// EKS API endpoint override.
    #[arg(long, value_name = "URL")]
    pub eks_endpoint: Option<String>,
}

impl EksApiArgs {
    /// The flags given win over the config file's.
    pub(super) fn apply(&self, eks: &mut EksSettings) {
        if self.region.is_some() {
            eks.region = self.region.clone();
        }
        if self.eks_endpoint.is_some() {
            eks.endpoint = self.eks_endpoint.clone();
        }
    }
}

/// `check` flags.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Manifest file, directory (read recursively: .yaml, .yml, .json) or `-` for stdin;
    /// repeatable. Multi-document YAML, JSON and `List` kinds are read.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE|DIR|-",
        required_unless_present = "files"
    )]
    pub inputs: Vec<String>,
    /// More manifests, as with -f (so pre-commit can append the changed files).
    #[arg(value_name = "FILE")]
    pub files: Vec<String>,
    /// The webhook's configuration file (docs/contract.md §8): policy, injection settings, associations file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Associations file (wins over the config file's associationsFile).
    #[arg(long, value_name = "FILE")]
    pub associations: Option<PathBuf>,
    /// ServiceAccounts that exist already (e.g. `kubectl get sa -A -o yaml`): file, directory
    /// or `-`; repeatable. ServiceAccounts in the checked manifests win over these.
    #[arg(long = "service-accounts", value_name = "FILE|DIR|-")]
    pub service_accounts: Vec<String>,
    /// Also read ServiceAccounts and namespace labels from this cluster.
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// Also read Pod Identity associations from this EKS cluster (AWS credentials from the
    /// environment).
    #[arg(long, value_name = "NAME")]
    pub cluster_name: Option<String>,
    #[command(flatten)]
    pub eks_api: EksApiArgs,
    /// Namespace of objects that name none (as kubectl does).
    #[arg(short = 'n', long, value_name = "NS", default_value = "default")]
    pub namespace: String,
    /// Print the JSON Patch `/mutate` would return for each pod.
    #[arg(long)]
    pub show_patch: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = CheckOutput::Text)]
    pub output: CheckOutput,
    /// Largest manifest file (or stdin) read, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = manifest::DEFAULT_MAX_FILE_BYTES)]
    pub max_file_bytes: u64,
    /// Longest parse of one manifest file; past it the file is reported unreadable (exit 2).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "20s")]
    pub file_deadline: std::time::Duration,
    /// Accept an input that holds no object (an empty file, directory or stream). Without it
    /// such an input is an error (exit 2): a CI job pointed at the wrong path must not pass.
    #[arg(long)]
    pub allow_empty: bool,
}

impl CheckArgs {
    fn settings(&self) -> Result<Settings, SettingsError> {
        offline_settings(self.config.as_deref(), |s| {
            if let Some(path) = &self.associations {
                s.associations_file = Some(path.clone());
            }
            // A CI job reads the live cluster or EKS only when asked on its command line: the
            // config file of a running webhook names both, and a pipeline has neither.
            s.kubeconfig = self.kubeconfig.clone();
            match &self.cluster_name {
                None => s.eks = EksSettings::default(),
                Some(name) => {
                    s.eks.cluster_name = name.clone();
                    self.eks_api.apply(&mut s.eks);
                }
            }
        })
    }

    pub fn prepare(self) -> Prepared {
        Prepared::new(async move {
            let job = self.settings().map(|settings| ManifestCheck {
                settings,
                inputs: self.inputs.iter().chain(&self.files).cloned().collect(),
                service_accounts: self.service_accounts.clone(),
                namespace: self.namespace.clone(),
                show_patch: self.show_patch,
                output: self.output,
                limits: manifest::ReadLimits {
                    max_file_bytes: self.max_file_bytes,
                    deadline: self.file_deadline,
                    allow_empty: self.allow_empty,
                },
            });
            report(async {
                let mut stdout = std::io::stdout().lock();
                run_check(&job?, &mut stdout).await
            })
            .await
        })
        .setup_failed(SETUP_FAILED)
    }
}

/// A report command's exit code, or [`SETUP_FAILED`] with the error on stderr when it could not
/// run (`check` and `audit`).
pub(super) async fn report<E: std::fmt::Display>(
    run: impl std::future::Future<Output = Result<u8, E>>,
) -> CommandResult {
    Ok(match run.await {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(SETUP_FAILED)
        }
    })
}
