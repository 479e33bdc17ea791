//! `pod-identity-webhook migrate` (docs/contract.md §10): IRSA to Pod Identity in five steps — inventory,
//! roles, associations, cut-over, verify — as `plan`, `apply` and `verify`.
//!
//! - [`inventory`]: what is read; [`checks`]: the pure checks that turn it into a [`rows::Plan`];
//!   [`trust`]: trust-policy edits; [`render`]: outputs; [`apply`] and [`verify`]: the steps.
//! - The command line is `crate::cli::migrate`.
//! - I/O sits behind three small traits ([`RoleStore`], [`AssociationTarget`], [`ClusterApi`]),
//!   implemented with aws-sdk-iam / aws-sdk-eks / the associations file ([`aws`]) and kube-rs
//!   ([`cluster`]).

pub mod apply;
pub mod aws;
pub mod checks;
pub mod cluster;
pub mod error;
pub mod inventory;
pub mod render;
pub mod rows;
pub mod trust;
pub mod verify;

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::sync::Mutex;

use futures::StreamExt;
use futures::future::BoxFuture;

use crate::identity::Association;
pub use error::{EdgeError, StepError};
use inventory::{
    Associations, Inventory, Key, NodeEntry, PodEntry, RoleState, ServiceAccountEntry, TargetInfo,
    TemplateUse, WorkloadRef, role_parts,
};

/// IAM roles: read a trust policy, write one.
pub trait RoleStore: Send + Sync {
    /// The role's trust policy (`role_arn` is checked against the role IAM returns).
    fn trust_policy<'a>(&'a self, role_arn: &'a str) -> BoxFuture<'a, RoleState>;
    fn put_trust_policy<'a>(
        &'a self,
        role_name: &'a str,
        policy: &'a str,
    ) -> BoxFuture<'a, Result<(), EdgeError>>;
}

/// What creating an association found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    Created {
        association_id: Option<String>,
    },
    /// One already exists for the ServiceAccount (its role may differ).
    Exists(Association),
}

/// Where associations are read and created: EKS or an associations file.
pub trait AssociationTarget: Send + Sync {
    fn info(&self) -> TargetInfo;
    /// The total, the keys of all, and the details of those in `wanted`.
    fn read<'a>(
        &'a self,
        wanted: &'a BTreeSet<Key>,
    ) -> BoxFuture<'a, Result<Associations, EdgeError>>;
    fn create<'a>(
        &'a self,
        association: &'a Association,
    ) -> BoxFuture<'a, Result<Created, EdgeError>>;
    /// The AWS account the cluster runs in, when the target can tell.
    fn cluster_account(&self) -> BoxFuture<'_, Option<String>>;
    /// The cluster's OIDC issuer URL, when the target can tell (EKS DescribeCluster);
    /// `Ok(None)` for a target that knows no cluster (an associations file).
    fn oidc_issuer(&self) -> BoxFuture<'_, Result<Option<String>, EdgeError>>;
}

/// Which ServiceAccounts a run covers (`--namespace`, `--service-account`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    pub namespaces: Vec<String>,
    /// `(namespace or any, name)`.
    pub service_accounts: Vec<(Option<String>, String)>,
}

impl Scope {
    pub fn namespace_ok(&self, ns: &str) -> bool {
        self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == ns)
    }

    pub fn contains(&self, ns: &str, name: &str) -> bool {
        self.namespace_ok(ns)
            && (self.service_accounts.is_empty()
                || self
                    .service_accounts
                    .iter()
                    .any(|(n, s)| s == name && n.as_deref().is_none_or(|n| n == ns)))
    }

    /// Parses `NAME` or `NAMESPACE/NAME`.
    pub fn parse_service_account(s: &str) -> (Option<String>, String) {
        match s.split_once('/') {
            Some((ns, name)) => (Some(ns.to_string()), name.to_string()),
            None => (None, s.to_string()),
        }
    }
}

/// Pods (of the wanted ServiceAccounts) and the workload templates naming them.
pub type PodsAndTemplates = (Vec<PodEntry>, Vec<TemplateUse>);

/// The state of a rollout after a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollout {
    Done,
    Progressing(String),
    Gone,
}

/// The Kubernetes API the migration reads and writes.
pub trait ClusterApi: Send + Sync {
    fn service_accounts<'a>(
        &'a self,
        scope: &'a Scope,
        progress: &'a Progress,
    ) -> BoxFuture<'a, Result<Vec<ServiceAccountEntry>, EdgeError>>;
    /// Pods whose ServiceAccount is in `wanted`, ReplicaSet owners resolved to Deployments;
    /// and the workload templates that name one of `wanted`.
    fn pods<'a>(
        &'a self,
        scope: &'a Scope,
        wanted: &'a BTreeSet<Key>,
        progress: &'a Progress,
    ) -> BoxFuture<'a, Result<PodsAndTemplates, EdgeError>>;
    /// Nodes by name; `Err` when they cannot be listed (the checks then say so).
    fn nodes<'a>(
        &'a self,
        progress: &'a Progress,
    ) -> BoxFuture<'a, Result<BTreeMap<String, NodeEntry>, EdgeError>>;
    fn remove_annotations<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<(), EdgeError>>;
    /// `kubectl rollout restart`: sets the pod template's `restartedAt` annotation to `at`.
    fn restart<'a>(
        &'a self,
        workload: &'a WorkloadRef,
        at: &'a str,
    ) -> BoxFuture<'a, Result<(), EdgeError>>;
    fn rollout<'a>(
        &'a self,
        workload: &'a WorkloadRef,
    ) -> BoxFuture<'a, Result<Rollout, EdgeError>>;
    /// The API server's service-account issuer (`/.well-known/openid-configuration`).
    fn oidc_issuer(&self) -> BoxFuture<'_, Result<String, EdgeError>>;
}

/// A progress line on stderr while a large cluster is read, on a terminal only.
pub struct Progress {
    enabled: bool,
    last: Mutex<Option<std::time::Instant>>,
}

impl Progress {
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            last: Mutex::new(None),
        }
    }

    /// Enabled when stderr is a terminal.
    pub fn on_terminal() -> Self {
        Self::new(std::io::stderr().is_terminal())
    }

    pub fn update(&self, what: &str, count: usize) {
        if !self.enabled {
            return;
        }
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        // At most ten redraws a second.
        if last.is_some_and(|t| t.elapsed() < std::time::Duration::from_millis(100)) {
            return;
        }
        *last = Some(std::time::Instant::now());
        eprint!("\r\x1b[Kreading {what}: {count}");
    }

    pub fn clear(&self) {
        if self.enabled {
            eprint!("\r\x1b[K");
        }
    }
}

/// The parts a run talks to.
pub struct Parts<'a> {
    pub cluster: &'a dyn ClusterApi,
    pub target: &'a dyn AssociationTarget,
    pub roles: &'a dyn RoleStore,
}

/// How the inventory is read.
#[derive(Debug, Clone)]
pub struct ReadSettings {
    pub annotation_prefix: String,
    pub scope: Scope,
    /// `--cluster-account` (else the target tells).
    pub cluster_account: Option<String>,
    /// Also read pods of ServiceAccounts that have an association but no annotation (verify).
    pub include_associated: bool,
}

/// Concurrent IAM reads.
const ROLE_CONCURRENCY: usize = 8;

/// Reads everything the checks need. `Err` means "could not read" (exit 2).
pub async fn read_inventory(
    parts: &Parts<'_>,
    settings: &ReadSettings,
    progress: &Progress,
) -> Result<Inventory, EdgeError> {
    let all_sas = parts
        .cluster
        .service_accounts(&settings.scope, progress)
        .await?;
    let mut service_accounts: Vec<ServiceAccountEntry> = all_sas
        .into_iter()
        // Every annotated ServiceAccount, its annotation a role ARN or not (the checks say so).
        .filter(|sa| {
            (sa.info.role_arn.is_some() || sa.info.invalid_role_arn.is_some())
                && settings.scope.contains(&sa.namespace, &sa.name)
        })
        .collect();
    service_accounts.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let annotated: BTreeSet<Key> = service_accounts.iter().map(|s| s.key()).collect();

    let associations = parts.target.read(&annotated).await?;
    let mut wanted = annotated.clone();
    if settings.include_associated {
        wanted.extend(
            associations
                .present
                .iter()
                .filter(|(ns, sa)| settings.scope.contains(ns, sa))
                .cloned(),
        );
    }
    let (pods, templates) = parts
        .cluster
        .pods(&settings.scope, &wanted, progress)
        .await?;
    let (nodes, nodes_listed) = match parts.cluster.nodes(progress).await {
        Ok(n) => (n, true),
        Err(_) => (BTreeMap::new(), false),
    };

    let cluster_account = match &settings.cluster_account {
        Some(a) => Some(a.clone()),
        None => parts.target.cluster_account().await,
    };
    // Roles of another account are not readable with these credentials (and need a
    // targetRoleArn set-up the checks explain).
    let arns: BTreeSet<String> = service_accounts
        .iter()
        .filter_map(|s| s.info.role_arn.clone())
        .filter(|a| {
            role_parts(a)
                .is_some_and(|(account, _)| cluster_account.as_deref().is_none_or(|c| c == account))
        })
        .collect();
    let roles: BTreeMap<String, RoleState> = if settings.include_associated {
        BTreeMap::new()
    } else {
        futures::stream::iter(arns)
            .map(|arn| async move {
                let state = parts.roles.trust_policy(&arn).await;
                (arn, state)
            })
            .buffer_unordered(ROLE_CONCURRENCY)
            .collect()
            .await
    };
    progress.clear();
    Ok(Inventory {
        annotation_prefix: settings.annotation_prefix.clone(),
        service_accounts,
        pods,
        templates,
        nodes,
        nodes_listed,
        associations,
        roles,
        cluster_account,
    })
}

/// This cluster's OIDC issuer, for `--remove-oidc-trust`: `given` (`--oidc-issuer`), else EKS
/// DescribeCluster (the target's cluster), else the API server's discovery document; an error
/// naming what was tried when none answers.
pub async fn oidc_issuer(parts: &Parts<'_>, given: Option<&str>) -> Result<String, StepError> {
    if let Some(issuer) = given {
        return Ok(issuer.trim().to_string());
    }
    let mut tried = Vec::new();
    match parts.target.oidc_issuer().await {
        Ok(Some(issuer)) => return Ok(issuer),
        Ok(None) => {}
        Err(e) => tried.push(e),
    }
    match parts.cluster.oidc_issuer().await {
        Ok(issuer) => Ok(issuer),
        Err(e) => {
            tried.push(e);
            Err(StepError::NoIssuer { tried })
        }
    }
}

/// Reads the inventory and checks it.
pub async fn plan(
    parts: &Parts<'_>,
    read: &ReadSettings,
    checks: &checks::CheckSettings,
    progress: &Progress,
) -> Result<(Inventory, rows::Plan), EdgeError> {
    let inventory = read_inventory(parts, read, progress).await?;
    let plan = checks::plan(&inventory, checks);
    Ok((inventory, plan))
}
