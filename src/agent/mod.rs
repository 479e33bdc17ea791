//! The credentials agent (`pod-identity-webhook agent`, docs/contract.md §9): the node-local endpoint that
//! answers the URI the webhook injects, where EKS does not run.
//!
//! - [`review`]: who is asking (TokenReview of the pod's token);
//! - [`sts`]: what they get (STS `AssumeRole`, behind [`sts::CredentialIssuer`]);
//! - [`credentials`]: the flow between them and its caches;
//! - [`server`]: the HTTP endpoints and their limits; [`metrics`]: the agent's registry;
//! - [`link`]: the link-local interface (`agent setup-link`); [`trust`]: the roles' trust policy.
//!
//! Associations come from the same identity layer as the webhook ([`crate::identity`]). The
//! command line (flags, `setup-link`, `trust-policy`) is `crate::cli::agent`.

pub mod credentials;
pub mod error;
#[cfg(target_os = "linux")]
pub mod link;
pub mod metrics;
pub mod review;
pub mod server;
pub mod sts;
pub mod taint;
pub mod trust;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::identity::Identities;
use crate::identity::eks_settings::EksSettings;
use crate::identity::sources::{SourceSettings, SourcesError};
use crate::kubernetes::client::{self as kube_client, ClusterAccess, Otherwise};
use crate::reload;
use crate::server::ConnectionLimit;
use credentials::{CredentialService, CredentialSettings};
use metrics::AgentMetrics;
use review::{KubeTokenReviewer, TokenReviewer};
use server::{ConnLimits, Endpoint, RateLimit, Readiness};
use sts::{AwsSts, CredentialIssuer, StsSettings};

/// The interface `--setup-link` creates.
pub fn link_name() -> &'static str {
    "pod-id-link0"
}

/// The agent's default listening addresses (the EKS agent's).
pub const DEFAULT_BINDS: [&str; 2] = ["169.254.170.23:80", "[fd00:ec2::23]:80"];
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:2703";
/// Open admin connections (probes and scrapes).
const ADMIN_MAX_CONNECTIONS: usize = 64;

/// Everything `agent` runs with.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    pub binds: Vec<SocketAddr>,
    pub admin_listen: SocketAddr,
    pub credentials: CredentialSettings,
    /// Bound on one answer (review, lookup and STS together).
    pub request_timeout: Duration,
    /// Bound on one TokenReview.
    pub review_timeout: Duration,
    pub sts: StsSettings,
    pub associations_file: Option<PathBuf>,
    /// The webhook's policy (`agent --config`): its `allowedRoleArns` bound the associations
    /// file's pattern entries exactly as at admission (docs/associations.md#patterns).
    pub policy: Option<Arc<crate::policy::Policy>>,
    pub eks: Option<EksSettings>,
    pub kubeconfig: Option<PathBuf>,
    pub rate_limit: Option<RateLimit>,
    /// Total credential connections; lowered to fit the open-files limit at start.
    pub max_connections: usize,
    /// Credential connections one client address may hold (0: no cap).
    pub max_connections_per_address: usize,
    pub conn_limits: ConnLimits,
    pub reload_interval: Duration,
    pub sweep_interval: Duration,
    pub probe_interval: Duration,
    /// After SIGTERM, stay up unready this long before closing.
    pub shutdown_grace: Duration,
    /// This node's name (`--node-name`, `NODE_NAME`): where the startup taint is removed.
    pub node_name: Option<String>,
    /// The taint key removed from the node once ready; `None`: none.
    pub startup_taint: Option<String>,
}

impl AgentSettings {
    pub fn new(cluster_name: impl Into<String>) -> Self {
        Self {
            binds: DEFAULT_BINDS
                .iter()
                .map(|a| a.parse().expect("valid"))
                .collect(),
            admin_listen: DEFAULT_ADMIN_LISTEN.parse().expect("valid"),
            credentials: CredentialSettings::new(cluster_name, sts::FALLBACK_REGION),
            request_timeout: Duration::from_millis(1500),
            review_timeout: Duration::from_secs(1),
            sts: StsSettings {
                timeout: Some(Duration::from_secs(5)),
                ..Default::default()
            },
            associations_file: None,
            policy: None,
            eks: None,
            kubeconfig: None,
            rate_limit: Some(RateLimit {
                per_second: 20,
                burst: 60,
            }),
            max_connections: 1024,
            max_connections_per_address: 64,
            conn_limits: ConnLimits::default(),
            reload_interval: Duration::from_secs(5),
            sweep_interval: Duration::from_secs(30),
            probe_interval: Duration::from_secs(10),
            shutdown_grace: Duration::ZERO,
            node_name: None,
            startup_taint: Some(taint::DEFAULT_STARTUP_TAINT.to_string()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentStartError {
    #[error(transparent)]
    Associations(#[from] crate::identity::file::FileError),
    #[error(transparent)]
    Kube(#[from] crate::kubernetes::client::KubeError),
    #[error(
        "the agent needs the Kubernetes API for TokenReviews: give --kubeconfig or run it in a pod"
    )]
    NoKubernetes,
    #[error("no association source: give --associations FILE, or --cluster-name with EKS access")]
    NoAssociations,
    /// The cause is quoted, not chained as `source` (it would be printed twice).
    #[error("cannot read associations from EKS: {0}")]
    Eks(crate::identity::eks_client::EksSetupError),
    #[error(
        "cannot listen on {addr} ({what}): {source}; is another process using the port, or is the link missing (`agent setup-link`)?"
    )]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("no credentials address could be bound")]
    NothingBound,
}

/// A running agent.
pub struct RunningAgent {
    /// The credential listeners' addresses.
    pub addrs: Vec<SocketAddr>,
    pub admin_addr: SocketAddr,
    pub service: CredentialService,
    pub metrics: Arc<AgentMetrics>,
    readiness: Arc<Readiness>,
    grace: Duration,
    stop: CancellationToken,
    tasks: JoinSet<()>,
}

impl RunningAgent {
    /// Unready for the grace period, then stops accepting and drains.
    pub async fn shutdown(mut self) {
        self.readiness.shutting_down.store(true, Ordering::Release);
        crate::startup::stop_after_grace(self.grace, &self.stop, &mut self.tasks).await;
    }

    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) {
        signal.await;
        tracing::info!("shutdown requested");
        self.shutdown().await;
    }
}

/// What an embedder (or a test) gives instead of what the environment would.
#[derive(Default)]
pub struct AgentExtras {
    /// The AWS configuration for the agent's own STS calls, instead of the default chain's.
    pub aws_config: Option<aws_config::SdkConfig>,
}

/// Builds the identity layer, the Kubernetes and STS clients, binds and serves.
pub async fn start(settings: AgentSettings) -> Result<RunningAgent, AgentStartError> {
    start_with(settings, AgentExtras::default()).await
}

/// [`start`], with `extras` in place of what the environment gives.
pub async fn start_with(
    settings: AgentSettings,
    extras: AgentExtras,
) -> Result<RunningAgent, AgentStartError> {
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let identities = identities(&settings, &mut tasks, &stop).await?;
    let client = kube_client(&settings).await?;
    let reviewer: Arc<dyn TokenReviewer> = Arc::new(KubeTokenReviewer::new(
        client.clone(),
        settings.review_timeout,
    ));
    let (issuer, region) = credential_issuer(&settings, &extras).await;
    let mut credential_settings = settings.credentials.clone();
    credential_settings.region = region;

    let metrics = Arc::new(AgentMetrics::new());
    let service = CredentialService::new(
        reviewer,
        issuer,
        identities,
        credential_settings,
        metrics.clone(),
    );
    tasks.spawn(
        service
            .clone()
            .run_sweeps(settings.sweep_interval, stop.clone()),
    );
    let readiness = Arc::new(Readiness {
        service: service.clone(),
        kube_reachable: AtomicBool::new(false),
        shutting_down: AtomicBool::new(false),
    });
    tasks.spawn(
        readiness
            .clone()
            .run_probe(settings.probe_interval, stop.clone()),
    );

    let endpoint = Arc::new(Endpoint::new(
        service.clone(),
        metrics.clone(),
        settings.request_timeout,
        settings.rate_limit,
    ));
    tasks.spawn(forget_idle_clients(endpoint.clone(), stop.clone()));
    let listening = listen(&settings, endpoint, &readiness, &metrics, &stop, &mut tasks).await;
    let (addrs, admin_addr) = listening.inspect_err(|_| stop.cancel())?;
    tracing::info!(?addrs, %admin_addr, "pod identity agent serving");
    match (&settings.startup_taint, &settings.node_name) {
        (Some(key), Some(node)) => {
            let ready = readiness.clone();
            tasks.spawn(taint::remove_when_ready(
                client,
                node.clone(),
                key.clone(),
                move || ready.reasons().is_empty(),
                stop.clone(),
            ));
        }
        (Some(key), None) => {
            tracing::info!(taint = %key, "no --node-name (NODE_NAME): the startup taint is not removed")
        }
        (None, _) => {}
    }
    Ok(RunningAgent {
        addrs,
        admin_addr,
        service,
        metrics,
        readiness,
        grace: settings.shutdown_grace,
        stop,
        tasks,
    })
}

/// The identity layer, on the same sources as the webhook: the associations file, else EKS.
async fn identities(
    settings: &AgentSettings,
    tasks: &mut JoinSet<()>,
    stop: &CancellationToken,
) -> Result<Identities, AgentStartError> {
    let sources = SourceSettings {
        associations_file: settings.associations_file.as_deref(),
        // The file alone when there is one.
        eks: settings
            .eks
            .as_ref()
            .filter(|_| settings.associations_file.is_none()),
    };
    if !sources.any() {
        return Err(AgentStartError::NoAssociations);
    }
    let mut identities = Identities::new("eks.amazonaws.com");
    if let Some(policy) = &settings.policy {
        identities = identities.with_role_bound(policy.clone());
    }
    let opened = sources
        .open(identities, None, tasks, stop)
        .await
        .map_err(|e| match e {
            SourcesError::File(e) => AgentStartError::Associations(e),
            SourcesError::Eks(e) => AgentStartError::Eks(e),
        })?;
    if let Some(reloader) = opened.file_reloader {
        tasks.spawn(reload::run(
            reloader,
            settings.reload_interval,
            stop.clone(),
        ));
    }
    Ok(opened.identities)
}

/// The Kubernetes client, for TokenReviews (which the agent cannot do without) and the
/// startup taint.
async fn kube_client(settings: &AgentSettings) -> Result<kube::Client, AgentStartError> {
    match kube_client::connect(settings.kubeconfig.as_deref(), Otherwise::InCluster).await? {
        ClusterAccess::Client(client, from) => {
            tracing::info!(%from, "reviewing pod tokens through the Kubernetes API");
            Ok(client)
        }
        ClusterAccess::None => Err(AgentStartError::NoKubernetes),
    }
}

/// STS, with the AWS configuration of `extras` or the environment's; and its region.
async fn credential_issuer(
    settings: &AgentSettings,
    extras: &AgentExtras,
) -> (Arc<dyn CredentialIssuer>, String) {
    let sts = match &extras.aws_config {
        Some(config) => AwsSts::from_config(config, &settings.sts),
        None => AwsSts::connect(&settings.sts).await,
    };
    tracing::info!(
        region = sts.region(),
        endpoint = settings.sts.endpoint.as_deref().unwrap_or("(AWS default)"),
        "assuming roles through STS"
    );
    let region = sts.region().to_string();
    (Arc::new(sts), region)
}

/// Forgets the rate limits of clients gone quiet, every minute until `stop`.
async fn forget_idle_clients(endpoint: Arc<Endpoint>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => endpoint.forget_idle_clients(),
        }
    }
}

/// Binds the credential addresses (IPv6 optional) and the admin port, and serves them as
/// `tasks`: the credential listeners' addresses and the admin one.
async fn listen(
    settings: &AgentSettings,
    endpoint: Arc<Endpoint>,
    readiness: &Arc<Readiness>,
    metrics: &Arc<AgentMetrics>,
    stop: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> Result<(Vec<SocketAddr>, SocketAddr), AgentStartError> {
    let router = server::credentials_router(endpoint);
    // One cap for all credential listeners: they serve the same pods. It must fit the
    // open-files limit, as the webhook's HTTPS cap does.
    let cap = match crate::server::open_files::raise_open_files_limit() {
        Some(open_files) => {
            let cap = crate::server::open_files::fitting_cap(
                settings.max_connections,
                ADMIN_MAX_CONNECTIONS,
                open_files,
            );
            if cap < settings.max_connections {
                tracing::warn!(
                    max_connections = settings.max_connections,
                    open_files,
                    lowered_to = cap,
                    "--max-connections does not fit the open-files limit; lowered (raise ulimit -n to serve more)"
                );
            }
            cap
        }
        None => settings.max_connections,
    };
    let connection_limit = ConnectionLimit::new(cap);
    let per_address = (settings.max_connections_per_address > 0).then(|| {
        server::PerAddressLimit::new(
            settings.max_connections_per_address,
            metrics.over_address_cap.clone(),
        )
    });
    let mut addrs = Vec::new();
    for &addr in &settings.binds {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => {
                let local = listener.local_addr().unwrap_or(addr);
                addrs.push(local);
                tasks.spawn(server::serve(
                    listener,
                    router.clone(),
                    server::Serving {
                        limits: settings.conn_limits,
                        connections: connection_limit.clone(),
                        per_address: per_address.clone(),
                        make_room: false,
                        drain: Duration::from_secs(5),
                    },
                    stop.clone(),
                ));
            }
            // IPv6 is optional (docs/contract.md §9): a node without the address still serves IPv4.
            Err(e) if addr.is_ipv6() && e.kind() == std::io::ErrorKind::AddrNotAvailable => {
                tracing::warn!(%addr, error = %e, "IPv6 credentials address not available on this node; serving without it");
            }
            Err(source) => {
                return Err(AgentStartError::Bind {
                    what: "credentials endpoint",
                    addr,
                    source,
                });
            }
        }
    }
    if addrs.is_empty() {
        return Err(AgentStartError::NothingBound);
    }
    let admin = tokio::net::TcpListener::bind(settings.admin_listen)
        .await
        .map_err(|source| AgentStartError::Bind {
            what: "admin endpoint",
            addr: settings.admin_listen,
            source,
        })?;
    let admin_addr = admin.local_addr().unwrap_or(settings.admin_listen);
    tasks.spawn(server::serve(
        admin,
        server::admin_router(readiness.clone(), metrics.clone()),
        server::Serving {
            limits: settings.conn_limits,
            // The admin port has its own cap: a flood there never takes the pods' slots, and
            // at the cap its idle connections make room for probes.
            connections: ConnectionLimit::new(ADMIN_MAX_CONNECTIONS),
            per_address: None,
            make_room: true,
            drain: Duration::from_secs(1),
        },
        stop.clone(),
    ));
    Ok((addrs, admin_addr))
}
