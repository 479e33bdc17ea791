//! `audit`: the webhook's decisions on what runs in a cluster (`crate::audit::run`), with its own
//! exit codes: 0 nothing found, 1 findings, 2 could not run.

use std::path::PathBuf;

use clap::Args;

use super::Prepared;
use super::check::{EksApiArgs, report};
use crate::audit::repair::RepairSettings;
use crate::audit::run::{AuditOutput, ClusterAudit, SETUP_FAILED, offline_settings, run_audit};
use crate::settings::{Settings, SettingsError};

/// Where `audit` and `controller` find the webhook's decisions and the cluster.
#[derive(Debug, Args)]
pub struct SourceArgs {
    /// The webhook's configuration file (docs/contract.md §8): policy, injection settings, associations
    /// file, EKS cluster.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Kubeconfig of the cluster [default: $KUBECONFIG, ~/.kube/config, or in-cluster; the
    /// controller: in-cluster].
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// Associations file (wins over the config file's associationsFile).
    #[arg(long, value_name = "FILE")]
    pub associations: Option<PathBuf>,
    /// EKS cluster whose Pod Identity associations to read (wins over eks.clusterName).
    #[arg(long, value_name = "NAME")]
    pub cluster_name: Option<String>,
    #[command(flatten)]
    pub eks_api: EksApiArgs,
}

impl SourceArgs {
    /// The config file's settings with these flags over them.
    pub fn settings(&self) -> Result<Settings, SettingsError> {
        offline_settings(self.config.as_deref(), |s| {
            if let Some(path) = &self.associations {
                s.associations_file = Some(path.clone());
            }
            if let Some(path) = &self.kubeconfig {
                s.kubeconfig = Some(path.clone());
            }
            if let Some(name) = &self.cluster_name {
                s.eks.cluster_name = name.clone();
            }
            self.eks_api.apply(&mut s.eks);
        })
    }
}

/// `audit` flags.
#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub sources: SourceArgs,
    /// Objects per list request (`limit`; the rest follows by `continue`).
    #[arg(long, value_name = "N", default_value_t = crate::audit::cluster::PAGE_SIZE)]
    pub page_size: u32,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = AuditOutput::Table)]
    pub output: AuditOutput,
    /// Then evict the running pods that lack the identity they should have and that a
    /// controller recreates (docs/controller.md); bare pods are only reported.
    #[arg(long)]
    pub repair: bool,
    /// With --repair: list what would be evicted, evict nothing.
    #[arg(long, requires = "repair")]
    pub dry_run: bool,
    /// Least time between two evictions.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    pub repair_interval: std::time::Duration,
}

impl AuditArgs {
    pub fn prepare(self) -> Prepared {
        Prepared::new(async move {
            let job = self.sources.settings().map(|settings| ClusterAudit {
                settings,
                page_size: self.page_size,
                output: self.output,
                repair: self.repair.then_some(RepairSettings {
                    mode: crate::audit::repair::RepairMode::from_flags(self.repair, self.dry_run),
                    pause: self.repair_interval,
                }),
            });
            report(async {
                let mut stdout = std::io::stdout().lock();
                run_audit(&job?, &mut stdout).await
            })
            .await
        })
        .setup_failed(SETUP_FAILED)
    }
}
