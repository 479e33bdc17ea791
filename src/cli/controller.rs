//! `controller`: the audit (and `--repair`) off the admission path, and GitOps associations, one
//! replica working through leader election (`crate::controller`, docs/controller.md).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::Prepared;
use super::audit::SourceArgs;
use crate::audit::repair::{RepairMode, RepairSettings};
use crate::controller::election::{DEFAULT_LEASE_NAME, ElectionSettings};
use crate::controller::gitops::GitopsSettings;
use crate::controller::{self, ControllerSettings};
use crate::telemetry::logging::LogFormat;

/// `controller` flags.
#[derive(Debug, Args)]
pub struct ControllerArgs {
    #[command(flatten)]
    pub sources: SourceArgs,
    /// How often the audit runs (from memory: the watches keep it current).
    #[arg(long, value_name = "DURATION", default_value = "1m", value_parser = humantime::parse_duration)]
    pub audit_interval: Duration,
    /// `/livez`, `/readyz`, `/metrics`.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8080")]
    pub admin_listen: SocketAddr,
    /// One working replica through a Lease; `false` for a single replica (or a test).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// The Lease's name.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_LEASE_NAME)]
    pub lease_name: String,
    /// The Lease's namespace [default: the controller's own: $POD_NAMESPACE, or `default`].
    #[arg(long, value_name = "NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// How long a replica holds the Lease without renewing it: a standby takes over within
    /// this after a crash (at once after a clean stop). Whole seconds, at least 2s.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,
    /// The holder identity [default: $POD_NAME, else the host name and process id].
    #[arg(long, value_name = "NAME")]
    pub identity: Option<String>,
    /// Evict the running pods that lack the identity they should have and that a controller
    /// recreates (the `needs-restart` findings); bare pods are only reported.
    #[arg(long)]
    pub repair: bool,
    /// With --repair: list what would be evicted, evict nothing. With GitOps associations:
    /// log what would be created, updated or deleted, make no EKS write.
    #[arg(long)]
    pub dry_run: bool,
    /// Least time between two evictions.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    pub repair_interval: Duration,
    /// Create, update and delete EKS Pod Identity associations from the
    /// pod-identity-webhook/association-role-arn annotation of ServiceAccounts
    /// (docs/controller.md#gitops-associations); needs eks.clusterName [default: the config's
    /// controller.gitopsAssociations, false].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub gitops_associations: Option<bool>,
    /// How often GitOps associations re-reads every association and puts back what was changed
    /// out of band [default: the config's controller.gitopsResyncInterval, 5m].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub gitops_resync_interval: Option<Duration>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
}

/// Why the controller's arguments are refused.
#[derive(Debug, thiserror::Error)]
pub enum ControllerArgsError {
    #[error(transparent)]
    Settings(#[from] crate::settings::SettingsError),
    #[error(transparent)]
    Election(#[from] crate::controller::election::ElectionSettingsError),
    #[error("--audit-interval must be more than zero")]
    ZeroInterval,
    #[error("--gitops-resync-interval (controller.gitopsResyncInterval) must be at least 1s")]
    ShortResync,
    #[error(
        "--dry-run needs --repair or GitOps associations (--gitops-associations, controller.gitopsAssociations)"
    )]
    DryRunAlone,
    #[error(
        "GitOps associations need the EKS cluster: set eks.clusterName in the config or give --cluster-name"
    )]
    GitopsWithoutCluster,
}

impl ControllerArgs {
    /// The typed settings of this run.
    pub fn settings(&self) -> Result<ControllerSettings, ControllerArgsError> {
        let settings = self.sources.settings()?;
        if self.audit_interval.is_zero() {
            return Err(ControllerArgsError::ZeroInterval);
        }
        let election = if self.leader_elect {
            let namespace = self
                .lease_namespace
                .clone()
                .or_else(|| crate::startup::own_namespace(settings.namespace.as_deref()))
                .unwrap_or_else(|| "default".into());
            Some(ElectionSettings::new(
                self.lease_name.clone(),
                namespace,
                self.identity.clone().unwrap_or_else(default_identity),
                self.lease_duration,
            )?)
        } else {
            None
        };
        let file = &settings.controller;
        let gitops = self
            .gitops_associations
            .unwrap_or(file.gitops_associations)
            .then(|| GitopsSettings {
                dry_run: self.dry_run,
                resync_interval: self
                    .gitops_resync_interval
                    .unwrap_or(file.gitops_resync_interval),
            });
        if let Some(g) = &gitops {
            if g.resync_interval < Duration::from_secs(1) {
                return Err(ControllerArgsError::ShortResync);
            }
            if settings.eks_source().is_none() {
                return Err(ControllerArgsError::GitopsWithoutCluster);
            }
        }
        if self.dry_run && !self.repair && gitops.is_none() {
            return Err(ControllerArgsError::DryRunAlone);
        }
        Ok(ControllerSettings {
            gitops,
            settings,
            interval: self.audit_interval,
            admin_listen: self.admin_listen,
            election,
            repair: RepairSettings {
                mode: RepairMode::from_flags(self.repair, self.dry_run),
                pause: self.repair_interval,
            },
        })
    }

    pub fn prepare(self) -> Result<Prepared, Box<dyn std::error::Error + Send + Sync>> {
        let settings = self.settings().map_err(|e| {
            format!("{e}\n(see `pod-identity-webhook controller --help` and docs/controller.md)")
        })?;
        Ok(Prepared::new(async move {
            let running = controller::start(settings).await?;
            running.run_until(crate::startup::shutdown_signal()).await;
            Ok(ExitCode::SUCCESS)
        })
        .logging(self.log_format))
    }
}

/// `$POD_NAME` (unique among the Deployment's replicas), else the host name and process id.
fn default_identity() -> String {
    std::env::var("POD_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "controller".into());
            format!("{host}-{}", std::process::id())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> ControllerArgs {
        let cli = crate::cli::Cli::try_parse_from(
            ["pod-identity-webhook", "controller"].iter().chain(extra),
        )
        .unwrap();
        match cli.command {
            crate::cli::Command::Controller(a) => *a,
            _ => panic!("controller expected"),
        }
    }

    #[test]
    fn repair_is_off_unless_asked_and_dry_run_needs_it() {
        let s = args(&["--identity", "me"]).settings().unwrap();
        assert_eq!(s.repair.mode, RepairMode::Off);
        assert_eq!(s.election.unwrap().identity, "me");
        let s = args(&["--repair", "--dry-run", "--leader-elect=false"])
            .settings()
            .unwrap();
        assert_eq!(s.repair.mode, RepairMode::DryRun);
        assert!(s.election.is_none());
        assert!(matches!(
            args(&["--dry-run"]).settings(),
            Err(ControllerArgsError::DryRunAlone)
        ));
        assert!(
            args(&["--lease-duration", "1s"]).settings().is_err(),
            "a lease shorter than 2s"
        );
    }

    #[test]
    fn gitops_associations_are_off_unless_asked_and_need_the_eks_cluster() {
        assert_eq!(args(&[]).settings().unwrap().gitops, None);
        assert!(matches!(
            args(&["--gitops-associations"]).settings(),
            Err(ControllerArgsError::GitopsWithoutCluster)
        ));
        let s = args(&[
            "--gitops-associations",
            "--cluster-name",
            "prod",
            "--dry-run",
            "--gitops-resync-interval",
            "30s",
        ])
        .settings()
        .unwrap();
        assert_eq!(
            s.gitops,
            Some(GitopsSettings {
                dry_run: true,
                resync_interval: Duration::from_secs(30),
            })
        );
        // --dry-run with GitOps alone leaves repair off.
        assert_eq!(s.repair.mode, RepairMode::Off);
        assert!(matches!(
            args(&[
                "--gitops-associations=true",
                "--cluster-name",
                "prod",
                "--gitops-resync-interval",
                "0s"
            ])
            .settings(),
            Err(ControllerArgsError::ShortResync)
        ));
        assert_eq!(
            args(&["--gitops-associations=false", "--dry-run", "--repair"])
                .settings()
                .unwrap()
                .gitops,
            None
        );
    }
}
