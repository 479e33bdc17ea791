//! The `eks` section of the settings (docs/contract.md §8): which cluster's Pod Identity associations to
//! read and how long answers are trusted. Declared once: clap reads the flags, serde the file.

use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

/// What the mutating webhook does when the EKS source cannot answer within `maxWait` and has
/// no earlier answer to fall back on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "camelCase")]
pub enum FailureMode {
    /// Mutate from whatever (possibly stale) data there is; admit unmutated when there is none.
    Stale,
    /// Admit unmutated with a warning as soon as the wait bound passes.
    #[serde(alias = "admit-unmutated")]
    #[value(alias = "admitUnmutated")]
    AdmitUnmutated,
}

/// The `eks` section. An empty `clusterName` means no EKS source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Args)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct EksSettings {
    /// EKS cluster whose Pod Identity associations to read.
    #[arg(
        long,
        env = "POD_IDENTITY_WEBHOOK_CLUSTER_NAME",
        required = false,
        value_name = "NAME"
    )]
    pub cluster_name: String,
    /// AWS region of the EKS API [default: from the AWS environment].
    #[arg(long, env = "POD_IDENTITY_WEBHOOK_REGION", value_name = "REGION")]
    pub region: Option<String>,
    /// EKS API endpoint override (private endpoints, tests).
    #[arg(
        long = "eks-endpoint",
        env = "POD_IDENTITY_WEBHOOK_EKS_ENDPOINT",
        value_name = "URL"
    )]
    pub endpoint: Option<String>,
    /// Interval between full association syncs [default: 1m].
    #[arg(long = "eks-sync-interval", required = false, value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(with = "humantime_serde")]
    pub sync_interval: Duration,
    /// How long a found association is trusted before revalidation [default: 10m].
    #[arg(long = "eks-ttl", required = false, value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// How long "no association" is trusted [default: 15s].
    #[arg(long = "eks-negative-ttl", required = false, value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(with = "humantime_serde")]
    pub negative_ttl: Duration,
    /// Longest an admission waits for EKS [default: 2s].
    #[arg(long = "eks-max-wait", required = false, value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
    /// Turn ready after this long even without a first full sync [default: 1m].
    #[arg(long = "eks-ready-timeout", required = false, value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(with = "humantime_serde")]
    pub ready_timeout: Duration,
    /// Concurrent point lookups and Describe calls [default: 8].
    #[arg(long = "eks-concurrency", required = false, value_name = "N")]
    pub concurrency: usize,
    /// When EKS cannot answer in time: stale (use last known data) or admit-unmutated [default: stale].
    #[arg(long = "eks-failure-mode", required = false, value_name = "MODE")]
    pub failure_mode: FailureMode,
}

impl Default for EksSettings {
    fn default() -> Self {
        Self {
            cluster_name: String::new(),
            region: None,
            endpoint: None,
            // A sync is one List call per 100 associations, so it can run often (docs/eks.md).
            sync_interval: Duration::from_secs(60),
            ttl: Duration::from_secs(600),
            negative_ttl: Duration::from_secs(15),
            max_wait: Duration::from_secs(2),
            ready_timeout: Duration::from_secs(60),
            concurrency: 8,
            failure_mode: FailureMode::Stale,
        }
    }
}

impl EksSettings {
    /// The defaults, reading `cluster_name`.
    pub fn new(cluster_name: impl Into<String>) -> Self {
        Self {
            cluster_name: cluster_name.into(),
            ..Self::default()
        }
    }

    /// Whether an EKS source is configured (a cluster is named).
    pub fn enabled(&self) -> bool {
        !self.cluster_name.is_empty()
    }
}
