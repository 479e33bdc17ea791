//! `controller`: the work kept off the admission path (docs/controller.md). The audit (and, with
//! `--repair`, the evictions) runs here, in its own Deployment, so that its memory (every pod of
//! the cluster) cannot take the webhook down. One replica works at a time: the holder of a
//! `coordination.k8s.io/v1` Lease ([`election`]); the others keep their ServiceAccount and
//! Namespace watches warm and stand by.
//!
//! - [`audit`]: the audit on watches, its gauges and Events;
//! - [`repair`]: evicting pods that got through without their identity;
//! - [`election`]: the Lease;
//! - [`gitops`]: GitOps associations (opt-in): EKS associations from ServiceAccount annotations.

pub mod audit;
pub mod election;
pub mod gitops;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio_util::sync::CancellationToken;

use crate::admission::Mutator;
use crate::admission::validate::Validator;
use crate::audit::repair::{Repair, RepairSettings};
use crate::identity::ServiceAccountStore;
use crate::identity::eks_client::{AwsEks, ClientTuning};
use crate::kubernetes::client as kube_client;
use crate::namespaces::NamespaceStore;
use crate::policy::Policy;
use crate::server::{self, routes};
use crate::settings::Settings;
use crate::startup::ClusterWatches;
use crate::startup::{self, StartError, Work};
use crate::telemetry::metrics::new_registry;
use audit::AuditMetrics;
use election::ElectionSettings;
use gitops::Gitops;
use gitops::metrics::GitopsMetrics;
use gitops::plan::OwnerTag;

/// The webhook's decisions: what `/mutate` and `/validate` would answer.
pub struct Decisions {
    pub mutator: Mutator,
    pub validator: Validator,
}

/// A controller run.
#[derive(Debug, Clone)]
pub struct ControllerSettings {
    /// The webhook's settings (the same config file): policy, injection, identity sources,
    /// kubeconfig, the admin port's deadlines.
    pub settings: Settings,
    /// How often the audit runs.
    pub interval: Duration,
    /// `/livez`, `/readyz`, `/metrics`.
    pub admin_listen: SocketAddr,
    /// The Lease; `None` (`--leader-elect=false`): this replica always works.
    pub election: Option<ElectionSettings>,
    pub repair: RepairSettings,
    /// GitOps associations (`--gitops-associations`); `None`: off.
    pub gitops: Option<gitops::GitopsSettings>,
}

/// Why the controller could not start.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(
        "the controller needs the Kubernetes API: give --kubeconfig, or run it in a pod with its ServiceAccount"
    )]
    NoCluster,
    #[error("cannot use the leader election Lease: {0}")]
    Lease(#[from] kube_lease_manager::LeaseManagerError),
    #[error(
        "GitOps associations need the EKS cluster: set eks.clusterName in the config or give --cluster-name"
    )]
    GitopsWithoutCluster,
    #[error("GitOps associations: {0}")]
    GitopsEks(#[from] crate::identity::eks_client::EksSetupError),
}

impl From<crate::policy::InvalidPolicy> for ControllerError {
    fn from(e: crate::policy::InvalidPolicy) -> Self {
        Self::Start(e.into())
    }
}

/// A running controller.
pub struct Running {
    pub admin_addr: SocketAddr,
    /// Whether this replica holds the Lease (works) now.
    pub leading: tokio::sync::watch::Receiver<bool>,
    work: Work,
}

impl Running {
    /// Stops the audit, gives the Lease up (so a standby takes over at once) and waits for
    /// every task.
    pub async fn shutdown(mut self) {
        startup::stop_after_grace(Duration::ZERO, &self.work.stop, &mut self.work.tasks).await;
    }

    /// Waits for `signal`, then shuts down.
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) {
        signal.await;
        tracing::info!("shutdown requested");
        self.shutdown().await;
    }
}

/// Starts the watches, the admin port and the leader election; the audit runs while this
/// replica leads.
pub async fn start(cs: ControllerSettings) -> Result<Running, ControllerError> {
    crate::server::tls::install_default_provider();
    let settings = &cs.settings;
    let mut work = Work::default();
    let mut registry = new_registry();
    let own_ns = startup::own_namespace(settings.namespace.as_deref());
    let policy = Policy::compile(&settings.policy, own_ns.as_deref())?
        .with_associations_file(settings.associations_file.clone());
    let mut sources = startup::identity_sources(
        settings,
        startup::Extras::default(),
        &mut registry,
        &mut work,
    )
    .await?;
    let watches = sources.watches.take().ok_or(ControllerError::NoCluster)?;
    if let Some(reloader) = sources.file_reloader.take() {
        work.reload(settings, reloader);
    }
    let (mutator, validator) = startup::decisions(settings, policy, sources);
    let decisions = Arc::new(Decisions { mutator, validator });
    let metrics = AuditMetrics::register(&mut registry);
    let gitops = match cs.gitops {
        Some(g) => {
            let eks = settings
                .eks_source()
                .ok_or(ControllerError::GitopsWithoutCluster)?;
            let api = AwsEks::from_settings(eks, &ClientTuning::default()).await?;
            tracing::info!(cluster = %api.cluster(), dry_run = g.dry_run, "GitOps associations on");
            Some(Arc::new(Gitops {
                api: Arc::new(api),
                allowlist: decisions.validator.shared_policy(),
                owner: OwnerTag::default(),
                settings: g,
                metrics: GitopsMetrics::register(&mut registry),
            }))
        }
        None => None,
    };
    let leader = Gauge::<i64>::default();
    registry.register(
        "controller_leader",
        "1 while this replica holds the controller Lease and works, 0 while it stands by",
        leader.clone(),
    );
    let reached = server::limits_reached::LimitsReached::register(&mut registry);
    let registry = Arc::new(registry);

    let admin = server::bind(cs.admin_listen, "admin endpoint")
        .await
        .map_err(StartError::from)?;
    let admin_addr = admin.local_addr().map_err(StartError::LocalAddr)?;
    let ready = watches.clone();
    let router = routes::health_router(
        move || not_ready(&ready),
        move || crate::telemetry::metrics::encode(&registry),
    );
    work.tasks.spawn(server::serve_admin(
        admin,
        router,
        work.stop.clone(),
        startup::server_options(settings, "admin", &reached),
        server::ConnectionLimit::new(settings.server.connections.admin_max_connections),
    ));

    // Evictions on a client of their own, without retries: a budget's 429 is reported, not
    // waited out (`Retry-After`) and asked again.
    let evictions = match kube_client::connect_without_retries(
        settings.kubeconfig.as_deref(),
        kube_client::Otherwise::InCluster,
    )
    .await
    .map_err(StartError::from)?
    {
        kube_client::ClusterAccess::Client(client, _) => client,
        kube_client::ClusterAccess::None => return Err(ControllerError::NoCluster),
    };
    let audit = AuditJob {
        evictions,
        watches,
        decisions,
        metrics,
        interval: cs.interval,
        repair: cs.repair,
    };
    let (leading_tx, leading) = tokio::sync::watch::channel(false);
    let leading_tx = Arc::new(leading_tx);
    let on_change = {
        let leader = leader.clone();
        move |now: bool| {
            leader.set(i64::from(now));
            leading_tx.send_replace(now);
        }
    };
    let stop = work.stop.clone();
    match &cs.election {
        Some(e) => {
            let manager = e.manager(audit.watches.client.clone()).await?;
            work.tasks
                .spawn(election::lead(manager, stop, on_change, move |s| {
                    leader_work(&audit, gitops.clone(), s)
                }));
        }
        None => {
            tracing::info!("leader election off: this replica always works");
            on_change(true);
            work.tasks.spawn(leader_work(&audit, gitops, stop));
        }
    }
    tracing::info!(%admin_addr, interval = ?cs.interval, repair = ?cs.repair.mode, "pod-identity-webhook controller started");
    Ok(Running {
        admin_addr,
        leading,
        work,
    })
}

/// What the leader runs: the audit and, when on, GitOps associations, until `stop`.
fn leader_work(
    audit: &AuditJob,
    gitops: Option<Arc<Gitops>>,
    stop: CancellationToken,
) -> impl std::future::Future<Output = ()> + use<> {
    let audit_run = audit.run(stop.clone());
    let client = audit.watches.client.clone();
    async move {
        match gitops {
            Some(g) => {
                tokio::join!(audit_run, g.run(client, stop));
            }
            None => audit_run.await,
        }
    }
}

/// Why `/readyz` fails: the decisions' watches have not listed yet.
fn not_ready(watches: &ClusterWatches) -> Vec<&'static str> {
    let mut reasons = Vec::new();
    if !watches.service_accounts.ready() {
        reasons.push("ServiceAccounts not listed");
    }
    if !watches.namespaces.ready() {
        reasons.push("Namespaces not listed");
    }
    reasons
}

/// What the leader runs.
struct AuditJob {
    /// The client evictions go through (no retries).
    evictions: kube::Client,
    watches: ClusterWatches,
    decisions: Arc<Decisions>,
    metrics: AuditMetrics,
    interval: Duration,
    repair: RepairSettings,
}

impl AuditJob {
    /// The audit until `stop` (the stop of the process, or the loss of the Lease).
    fn run(&self, stop: CancellationToken) -> impl std::future::Future<Output = ()> + use<> {
        let repair = Repair::new(self.evictions.clone(), self.repair);
        audit::run(
            self.watches.clone(),
            self.decisions.clone(),
            self.metrics.clone(),
            self.interval,
            repair,
            stop,
        )
    }
}
