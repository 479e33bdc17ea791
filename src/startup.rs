//! Start-up: turns [`Settings`] into a running webhook, and stops it gracefully.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::admission::Mutator;
use crate::admission::validate::Validator;
use crate::identity::file::FileReloader;
use crate::identity::kube::{KubeServiceAccounts, StoreSettings};
use crate::identity::sources::{Opened, SourceSettings};
use crate::identity::{self, AssociationSource, Identities};
use crate::kubernetes::client::{self as kube_client, ClusterAccess, Otherwise};
use crate::live_config::ConfigReloader;
use crate::namespaces::{KubeNamespaces, NamespaceStore};
use crate::policy::Policy;
use crate::reload::ReloadMetrics;
use crate::server::app::App;
use crate::server::body::BodyLimits;
use crate::server::tls::{self, CertMetrics, CertReloader, CertResolver};
use crate::server::{self, routes};
use crate::settings::{Settings, TlsSource};
use crate::telemetry::metrics::{Registry, new_registry};
use crate::{certs, reload};

/// The ServiceAccount and Namespace watches the decisions read, which the audit reads too.
#[derive(Clone)]
pub struct ClusterWatches {
    pub client: kube::Client,
    pub service_accounts: Arc<KubeServiceAccounts>,
    pub namespaces: Arc<KubeNamespaces>,
}

/// Why the webhook could not start. Each message names the thing to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Settings(#[from] crate::settings::SettingsError),
    #[error(transparent)]
    Policy(#[from] crate::policy::InvalidPolicy),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Sources(#[from] crate::identity::sources::SourcesError),
    #[error(transparent)]
    Kube(#[from] crate::kubernetes::client::KubeError),
    #[error(transparent)]
    Bind(#[from] server::BindError),
    /// A bound listener without an address (the message quotes the cause, not chained).
    #[error("{0}")]
    LocalAddr(std::io::Error),
    /// `--audit-interval` / `server.auditInterval`: the audit left the admission process.
    #[error(
        "--audit-interval (server.auditInterval) is no longer a setting of `serve`: the background audit runs in the `controller` command now (its own Deployment, manifests/components/controller; docs/controller.md), so that it cannot take admission down; remove the setting here and run `pod-identity-webhook controller --audit-interval D`"
    )]
    AuditMoved,
}

/// A running webhook: its addresses, state and the handle to stop it.
pub struct Running {
    pub https_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub app: Arc<App>,
    pub cert_resolver: Arc<CertResolver>,
    /// The CA that signed the serving certificate, for `--self-signed` runs.
    pub self_signed_ca_pem: Option<String>,
    /// Its file, in a directory of this process's own (removed when this value is dropped).
    pub self_signed_ca: Option<certs::SelfSignedCa>,
    settings: Settings,
    stop: CancellationToken,
    tasks: JoinSet<()>,
}

impl Running {
    /// Graceful stop (unready, keep serving for the grace period, then drain).
    pub async fn shutdown(mut self) {
        self.app.health.set_shutting_down();
        let grace = self.settings.server.shutdown_grace;
        if !grace.is_zero() {
            tracing::info!(?grace, "unready; serving on until endpoints are updated");
        }
        stop_after_grace(grace, &self.stop, &mut self.tasks).await;
    }

    /// Waits for `signal`, then shuts down gracefully.
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) {
        signal.await;
        tracing::info!("shutdown requested");
        self.shutdown().await;
    }
}

/// The rest of a graceful stop, once unready: serves on for `grace` (while endpoints are
/// updated), then cancels `stop` (no more connections accepted) and waits for every task to
/// drain. The webhook's and the credentials agent's.
pub async fn stop_after_grace(
    grace: std::time::Duration,
    stop: &CancellationToken,
    tasks: &mut JoinSet<()>,
) {
    if !grace.is_zero() {
        tokio::time::sleep(grace).await;
    }
    stop.cancel();
    while tasks.join_next().await.is_some() {}
}

/// The webhook's own namespace: setting, else `POD_NAMESPACE`, else the in-cluster file.
pub fn own_namespace(configured: Option<&str>) -> Option<String> {
    configured
        .map(str::to_string)
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .or_else(|| {
            std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace").ok()
        })
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// What a caller can add to the configured webhook (tests, embedders).
#[derive(Default)]
pub struct Extras {
    /// Association sources consulted before the configured ones (earlier sources win).
    pub association_sources: Vec<Arc<dyn AssociationSource>>,
}

/// Builds the identity sources, binds the listeners and starts serving.
pub async fn start(settings: Settings) -> Result<Running, StartError> {
    start_with(settings, Extras::default()).await
}

/// [`start`], with `extras` added to what `settings` configure.
pub async fn start_with(settings: Settings, extras: Extras) -> Result<Running, StartError> {
    if settings.server.audit_interval.is_some() {
        return Err(StartError::AuditMoved);
    }
    tls::install_default_provider();
    let mut work = Work::default();
    let mut registry = new_registry();
    let reload_metrics = ReloadMetrics::register(&mut registry);

    let certificate = serving_certificate(&settings.tls.source()?)?;
    let cert_metrics = CertMetrics::register(&mut registry);
    cert_metrics.loaded(&certificate.resolver.current());
    reload_metrics.record_loaded("certificate");

    let own_ns = own_namespace(settings.namespace.as_deref());
    let policy = Policy::compile(&settings.policy, own_ns.as_deref())?
        .with_associations_file(settings.associations_file.clone());
    if settings.config_file.is_some() {
        reload_metrics.record_loaded("config");
    }

    let mut sources = identity_sources(&settings, extras, &mut registry, &mut work).await?;
    if let Some(reloader) = sources.file_reloader.take() {
        reload_metrics.record_loaded("associations");
        work.reload(
            &settings,
            reload::observed(reloader, observe(&reload_metrics, "associations")),
        );
    }

    let (mutator, validator) = decisions(&settings, policy, sources);
    let live_injection = mutator.injection.clone();
    let limits = ListenerLimits::new(&settings, &mut registry);
    let app = Arc::new(app(&settings, mutator, validator, &limits, registry));

    if let Some(path) = &settings.config_file {
        let reloader = config_reloader(path, &settings, own_ns, live_injection, app.clone());
        work.reload(
            &settings,
            reload::observed(reloader, observe(&reload_metrics, "config")),
        );
    }
    if let Some((cert, key)) = certificate.files {
        let reloader = CertReloader::new(cert, key, certificate.resolver.clone())
            .on_reload(move |ck| cert_metrics.reloaded(ck));
        work.reload(
            &settings,
            reload::observed(reloader, observe(&reload_metrics, "certificate")),
        );
    }
    app.health.set_certs_loaded();

    let (https_addr, admin_addr) =
        listen(&settings, &app, &certificate.resolver, limits, &mut work).await?;
    tracing::info!(%https_addr, %admin_addr, "pod-identity-webhook serving");

    Ok(Running {
        https_addr,
        admin_addr,
        app,
        cert_resolver: certificate.resolver,
        self_signed_ca_pem: certificate.self_signed_ca_pem,
        self_signed_ca: certificate.self_signed_ca,
        settings,
        stop: work.stop,
        tasks: work.tasks,
    })
}

/// What runs until the webhook (or the controller) stops: the tasks, and the token that stops
/// them.
#[derive(Default)]
pub(crate) struct Work {
    pub(crate) stop: CancellationToken,
    pub(crate) tasks: JoinSet<()>,
}

impl Work {
    /// Runs `reloader` every `server.reloadInterval` until the stop.
    pub(crate) fn reload(
        &mut self,
        settings: &Settings,
        reloader: impl reload::Reloadable + 'static,
    ) {
        self.tasks.spawn(reload::run(
            reloader,
            settings.server.reload_interval,
            self.stop.clone(),
        ));
    }
}

/// The mutating and validating decisions on `policy` and the identities of `sources`.
pub(crate) fn decisions(
    settings: &Settings,
    policy: Policy,
    sources: Sources,
) -> (Mutator, Validator) {
    let mut validator = Validator::new(policy, sources.identities.clone());
    if let Some(store) = sources.namespaces {
        validator = validator.with_namespaces(store);
    }
    let mut mutator = Mutator::new(settings.injection.clone(), sources.identities)
        .with_policy(validator.shared_policy());
    if let Some(eks) = settings.eks_source() {
        mutator.failure_mode = eks.failure_mode;
    }
    // Validating webhooks run after every mutating one: a created pod the mutation would still
    // give credentials was missed (issue 28).
    let validator = validator.with_missed_injection(&mutator);
    (mutator, validator)
}

/// The state the handlers share, its health watching the HTTPS connection cap.
fn app(
    settings: &Settings,
    mutator: Mutator,
    validator: Validator,
    limits: &ListenerLimits,
    registry: Registry,
) -> App {
    let mut app = App::with_registry(mutator, validator, registry);
    app.max_body_bytes = settings.server.max_body_bytes;
    app.health.watch_https(
        limits.https.clone(),
        settings.server.connections.unready_after_blocked,
    );
    app
}

/// `server.maxConnections`, lowered to fit the open-files limit so that probes and the admin
/// port keep answering.
fn https_connection_cap(settings: &Settings) -> usize {
    let configured = settings.server.max_connections;
    let Some(open_files) = server::open_files::raise_open_files_limit() else {
        return configured;
    };
    let cap = server::open_files::fitting_cap(
        configured,
        settings.server.connections.admin_max_connections,
        open_files,
    );
    if cap < configured {
        tracing::warn!(
            configured,
            cap,
            open_files,
            "server.maxConnections lowered to fit the open-files limit (so that probes \
             and the admin port keep answering); raise the limit (ulimit -n) to serve more"
        );
    }
    cap
}

/// Counts a reloader's outcomes under `file`.
fn observe(
    metrics: &ReloadMetrics,
    file: &'static str,
) -> impl FnMut(&reload::ReloadOutcome) + Send + 'static {
    let metrics = metrics.clone();
    move |outcome| metrics.record(file, outcome)
}

/// The serving certificate: loaded from files (then reloaded when they change) or generated.
struct Certificate {
    resolver: Arc<CertResolver>,
    files: Option<(PathBuf, PathBuf)>,
    self_signed_ca_pem: Option<String>,
    self_signed_ca: Option<certs::SelfSignedCa>,
}

fn serving_certificate(source: &TlsSource) -> Result<Certificate, StartError> {
    match source {
        TlsSource::Files { cert, key } => Ok(Certificate {
            resolver: CertResolver::new(tls::load_certified_key(cert, key)?),
            files: Some((cert.clone(), key.clone())),
            self_signed_ca_pem: None,
            self_signed_ca: None,
        }),
        TlsSource::SelfSigned => {
            let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
            names.extend(certs::service_names(
                "pod-identity-webhook",
                "pod-identity-webhook",
            ));
            let generated = certs::generate(&names)?;
            let ck = tls::certified_key_from_pem(
                generated.cert_pem.as_bytes(),
                generated.key_pem.as_bytes(),
                &PathBuf::from("<self-signed>"),
                &PathBuf::from("<self-signed>"),
            )?;
            let ca = match certs::SelfSignedCa::write_in(
                &std::env::temp_dir(),
                &generated.ca_cert_pem,
            ) {
                Ok(ca) => {
                    tracing::info!(ca = %ca.file().display(), "self-signed certificate generated; clients can trust this CA file");
                    Some(ca)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "self-signed certificate generated; could not write its CA file");
                    None
                }
            };
            Ok(Certificate {
                resolver: CertResolver::new(ck),
                files: None,
                self_signed_ca_pem: Some(generated.ca_cert_pem),
                self_signed_ca: ca,
            })
        }
    }
}

/// Where identities and namespace labels come from.
pub(crate) struct Sources {
    identities: Identities,
    pub(crate) file_reloader: Option<FileReloader>,
    namespaces: Option<Arc<dyn NamespaceStore>>,
    /// The Kubernetes watches started, for the controller's audit to read.
    pub(crate) watches: Option<ClusterWatches>,
}

/// The identity sources `settings` configure, after `extras`' (earlier sources win); starts the
/// EKS sync and the Kubernetes watches as tasks of `work`.
pub(crate) async fn identity_sources(
    settings: &Settings,
    extras: Extras,
    registry: &mut Registry,
    work: &mut Work,
) -> Result<Sources, StartError> {
    let prefix = &settings.injection.annotation_prefix;
    let mut identities = Identities::new(prefix.clone())
        .with_observer(identity::metrics::register_lookups(registry));
    for source in extras.association_sources {
        identities = identities.with_associations(source);
    }
    let configured = SourceSettings {
        associations_file: settings.associations_file.as_deref(),
        eks: settings.eks_source(),
    };
    let Opened {
        mut identities,
        file_reloader,
    } = configured
        .open(identities, Some(registry), &mut work.tasks, &work.stop)
        .await?;
    let watches = kubernetes_watches(settings, &work.stop).await?;
    if let Some(w) = &watches {
        identities = identities.with_service_accounts(w.service_accounts.clone());
    }
    if identities.source_names().is_empty() && !identities.has_service_account_store() {
        tracing::warn!(
            "no identity source configured: every pod is admitted unchanged (give --associations or --cluster-name)"
        );
    }
    Ok(Sources {
        identities,
        file_reloader,
        namespaces: watches
            .as_ref()
            .map(|w| w.namespaces.clone() as Arc<dyn NamespaceStore>),
        watches,
    })
}

/// With the Kubernetes API: the ServiceAccount and Namespace watches.
async fn kubernetes_watches(
    settings: &Settings,
    stop: &CancellationToken,
) -> Result<Option<ClusterWatches>, StartError> {
    let prefix = &settings.injection.annotation_prefix;
    match kube_client::connect(settings.kubeconfig.as_deref(), Otherwise::InCluster).await? {
        ClusterAccess::Client(client, from) => {
            tracing::info!(%from, "watching ServiceAccounts for IRSA annotations");
            let store_settings = StoreSettings::new(prefix.clone());
            let service_accounts =
                KubeServiceAccounts::start(client.clone(), store_settings.clone(), stop.clone());
            tracing::info!("watching Namespaces for the policy label");
            let namespaces = KubeNamespaces::start(
                client.clone(),
                store_settings.live_get_timeout,
                store_settings.ready_timeout,
                stop.clone(),
            );
            Ok(Some(ClusterWatches {
                client,
                service_accounts,
                namespaces,
            }))
        }
        ClusterAccess::None => {
            tracing::info!(
                "no Kubernetes API (no --kubeconfig and not running in a pod): running on the associations file alone; IRSA annotations and namespace policy labels are not read"
            );
            Ok(None)
        }
    }
}

/// Re-reads the configuration file: injection settings in place, the policy recompiled.
fn config_reloader(
    path: &std::path::Path,
    settings: &Settings,
    own_ns: Option<String>,
    live_injection: Arc<arc_swap::ArcSwap<crate::settings::InjectionSettings>>,
    app: Arc<App>,
) -> ConfigReloader {
    let associations_file = settings.associations_file.clone();
    ConfigReloader::new(path.to_path_buf(), settings.clone(), live_injection).on_policy(
        move |next| {
            match Policy::compile(next, own_ns.as_deref()) {
                Ok(policy) => app
                    .validator
                    .set_policy(policy.with_associations_file(associations_file.clone())),
                // The reloader validated the file; a policy that still does not compile keeps
                // the one in force rather than leaving the webhook without any.
                Err(e) => tracing::error!(error = %e, "policy not updated; the previous policy stays in force"),
            }
        },
    )
}

/// The connection caps of both ports, and where their limits are counted.
struct ListenerLimits {
    https: server::ConnectionLimit,
    admin: server::ConnectionLimit,
    reached: server::limits_reached::LimitsReached,
}

impl ListenerLimits {
    fn new(settings: &Settings, registry: &mut Registry) -> Self {
        let https = server::ConnectionLimit::new(https_connection_cap(settings));
        https.register_metrics(registry);
        Self {
            https,
            admin: server::ConnectionLimit::new(settings.server.connections.admin_max_connections),
            reached: server::limits_reached::LimitsReached::register(registry),
        }
    }
}

/// Binds the HTTPS and admin listeners and serves them as `tasks`.
async fn listen(
    settings: &Settings,
    app: &Arc<App>,
    resolver: &Arc<CertResolver>,
    limits: ListenerLimits,
    work: &mut Work,
) -> Result<(SocketAddr, SocketAddr), StartError> {
    let (stop, tasks) = (&work.stop, &mut work.tasks);
    let https = server::bind(settings.listen, "HTTPS admission endpoint").await?;
    let admin = server::bind(settings.admin_listen, "admin endpoint").await?;
    let local = |l: &tokio::net::TcpListener| l.local_addr().map_err(StartError::LocalAddr);
    let addrs = (local(&https)?, local(&admin)?);
    let c = &settings.server.connections;
    let options = |port| server_options(settings, port, &limits.reached);
    let bodies = BodyLimits::new(
        c.body_memory_bytes,
        settings.server.max_body_bytes,
        c.body_read_timeout,
        c.body_timeout,
        limits.reached.clone(),
    );
    let admission = routes::admission_router(app.clone()).layer(
        axum::middleware::from_fn_with_state(bodies, server::body::limit),
    );
    tasks.spawn(server::serve_tls(
        https,
        tls::server_config(resolver.clone()),
        admission,
        stop.clone(),
        options("https"),
        limits.https,
    ));
    tasks.spawn(server::serve_admin(
        admin,
        routes::admin_router(app.clone()),
        stop.clone(),
        options("admin"),
        limits.admin,
    ));
    Ok(addrs)
}

/// A listener's deadlines and caps, from `settings.server` (the webhook's ports and the
/// controller's admin port).
pub(crate) fn server_options(
    settings: &Settings,
    port: &'static str,
    reached: &server::limits_reached::LimitsReached,
) -> server::Options {
    let c = &settings.server.connections;
    server::Options {
        port,
        handshake: c.handshake_timeout,
        limits: server::Limits {
            header_read: settings.server.header_read_timeout,
            idle: settings.server.idle_timeout,
        },
        http2_keep_alive_interval: c.http2_keep_alive_interval,
        http2_keep_alive_timeout: c.http2_keep_alive_timeout,
        http2_max_concurrent_streams: c.http2_max_concurrent_streams,
        drain: settings.server.drain_timeout,
        reached: reached.clone(),
    }
}

/// Resolves when the process gets SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
