//! The `policy` section of the settings (docs/contract.md §8) and the policy's own vocabulary: modes and
//! failure policies. Declared once: clap reads the flags, serde the config file.

use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

/// How the validating webhook treats a namespace (docs/contract.md §3).
// The variants go from loosest to strictest, so `max` is "the tighter of". Their doc comments are
// `--help` text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PolicyMode {
    /// No policy checks: everything is admitted
    Off,
    /// Admit what breaks a rule, with a warning
    Warn,
    /// Deny what breaks a rule
    Enforce,
}

impl PolicyMode {
    /// Reads a namespace label value (case and surrounding spaces do not matter).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "off" => Some(Self::Off),
            "warn" => Some(Self::Warn),
            "enforce" => Some(Self::Enforce),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Warn => "warn",
            Self::Enforce => "enforce",
        }
    }
}

/// What the validating webhook does when identity sources cannot answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FailurePolicy {
    Open,
    Closed,
}

/// One `policy.namespaces` entry: the first whose glob matches a namespace applies to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NamespaceRule {
    /// Glob on the namespace name.
    #[serde(rename = "match")]
    pub pattern: String,
    pub mode: Option<PolicyMode>,
    /// Glob patterns the `role-arn` annotation of ServiceAccounts in these namespaces must match.
    #[serde(default)]
    pub allowed_role_arns: Option<Vec<String>>,
}

/// The `policy` section (docs/contract.md §8).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Args)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicySettings {
    /// Policy mode of namespaces no rule matches [default: warn].
    #[arg(long = "policy-default-mode", required = false, value_name = "MODE")]
    pub default_mode: PolicyMode,
    /// When identity sources cannot answer in time: open (admit) or closed (deny) [default: open].
    #[arg(long, required = false, value_name = "POLICY")]
    pub failure_policy: FailurePolicy,
    /// Rules by namespace; the first match wins.
    #[arg(skip)]
    pub namespaces: Vec<NamespaceRule>,
    /// `namespace` or `namespace/serviceAccount` globs that policy never checks.
    #[arg(skip)]
    pub exemptions: Vec<String>,
    /// A namespace label that may only tighten the mode.
    #[arg(skip)]
    pub namespace_label: String,
    /// Cluster name quoted in the remedy command of denials [default: eks.clusterName].
    #[arg(skip)]
    pub cluster_name: Option<String>,
}

impl Default for PolicySettings {
    fn default() -> Self {
        Self {
            default_mode: PolicyMode::Warn,
            failure_policy: FailurePolicy::Open,
            namespaces: Vec::new(),
            exemptions: Vec::new(),
            namespace_label: "pod-identity-webhook/mode".into(),
            cluster_name: None,
        }
    }
}

/// A policy setting that cannot be compiled; `key` is its place in the config file.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting `{key}`: {message}")]
pub struct InvalidPolicy {
    pub key: &'static str,
    pub message: String,
}
