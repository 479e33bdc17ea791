//! Start-up: turns [`Settings`] into a running webhook, and stops it gracefully.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::StartError;
use crate::admission::Mutator;
use crate::admission::validate::Validator;
use crate::config::{Settings, TlsSource};
use crate::identity::cache::EksSource;
use crate::identity::file::FileSource;
use crate::identity::kube::{
    self as kube_source, ClusterAccess, KubeServiceAccounts, StoreSettings,
};
use crate::identity::{AssociationSource, Identities};
use crate::live_config::ConfigReloader;
use crate::namespaces::{KubeNamespaces, NamespaceStore};
use crate::policy::Policy;
use crate::server::app::App;
use crate::server::tls::{self, CertReloader, CertResolver};
use crate::server::{self, routes};
use crate::telemetry::metrics::{FamilySnapshot, Metrics, SampleKind};
use crate::{certs, reload};

/// A running webhook: its addresses, state and the handle to stop it.
pub struct Running {
    pub https_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub app: Arc<App>,
    pub cert_resolver: Arc<CertResolver>,
    /// The CA that signed the serving certificate, for `--self-signed` runs.
    pub self_signed_ca_pem: Option<String>,
    settings: Settings,
    stop: CancellationToken,
    tasks: JoinSet<()>,
}

impl Running {
    /// Graceful stop (SPEC/issue: unready, keep serving for the grace period, then drain).
    pub async fn shutdown(mut self) {
        self.app.health.set_shutting_down();
        let grace = self.settings.server.shutdown_grace;
        if !grace.is_zero() {
            tracing::info!(?grace, "unready; serving on until endpoints are updated");
            tokio::time::sleep(grace).await;
        }
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
    }

    /// Waits for `signal`, then shuts down gracefully.
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) {
        signal.await;
        tracing::info!("shutdown requested");
        self.shutdown().await;
    }
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
    tls::install_default_provider();
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();

    // --- TLS ---------------------------------------------------------------------------------
    let mut self_signed_ca_pem = None;
    let (resolver, cert_files) = match &settings.tls {
        TlsSource::Files { cert, key } => (
            CertResolver::new(tls::load_certified_key(cert, key)?),
            Some((cert.clone(), key.clone())),
        ),
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
            let ca_path = std::env::temp_dir().join("pod-identity-webhook-ca.crt");
            match std::fs::write(&ca_path, &generated.ca_cert_pem) {
                Ok(()) => {
                    tracing::info!(ca = %ca_path.display(), "self-signed certificate generated; clients can trust this CA file")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "self-signed certificate generated; could not write its CA file")
                }
            }
            self_signed_ca_pem = Some(generated.ca_cert_pem);
            (CertResolver::new(ck), None)
        }
    };

    // --- policy -------------------------------------------------------------------------------
    let own_ns = own_namespace(settings.namespace.as_deref());
    let policy = Policy::compile(&settings.policy, own_ns.as_deref())?
        .with_associations_file(settings.associations_file.clone());
    let mut namespace_store: Option<Arc<dyn NamespaceStore>> = None;

    // --- identity sources -------------------------------------------------------------------
    let mut metrics = Metrics::new();
    let inj = settings.injection.clone();
    let mut identities =
        Identities::new(inj.annotation_prefix.clone()).with_observer(metrics.lookup_observer());
    for source in extras.association_sources {
        identities = identities.with_associations(source);
    }
    let mut file_reloader = None;
    if let Some(path) = &settings.associations_file {
        let (source, reloader) = FileSource::open(path)?;
        tracing::info!(file = %path.display(), associations = source.len(), "associations file loaded");
        metrics.record_loaded("associations");
        let counted = source.clone();
        metrics.register_snapshot(move || {
            vec![FamilySnapshot {
                name: "associations",
                help: "Pod Identity associations known, by source",
                kind: SampleKind::Gauge,
                samples: vec![(vec![("source", "file")], counted.len() as f64)],
            }]
        });
        identities = identities.with_associations(source);
        file_reloader = Some(reloader);
    }
    // After the file source: a ServiceAccount in the associations file keeps its entry there.
    if let Some(eks) = &settings.eks {
        let source = EksSource::connect(eks)
            .await
            .map_err(|e| StartError::Other(e.to_string()))?;
        tracing::info!(
            cluster = %eks.cluster_name,
            region = eks.region.as_deref().unwrap_or("(from the AWS environment)"),
            endpoint = eks.endpoint.as_deref().unwrap_or("(default)"),
            sync_interval = ?eks.sync_interval,
            "reading Pod Identity associations from EKS"
        );
        let observed = source.clone();
        metrics
            .register_snapshot(move || crate::telemetry::metrics::eks_families(&observed.stats()));
        identities = identities.with_associations(Arc::new(source.clone()));
        tasks.spawn(source.run_sync(stop.clone()));
    }
    match kube_source::connect(settings.kubeconfig.as_deref()).await? {
        ClusterAccess::Client(client, from) => {
            tracing::info!(%from, "watching ServiceAccounts for IRSA annotations");
            let store = KubeServiceAccounts::start(
                client.clone(),
                StoreSettings::new(inj.annotation_prefix.clone()),
                stop.clone(),
            );
            identities = identities.with_service_accounts(store);
            tracing::info!("watching Namespaces for the policy label");
            let sa_settings = StoreSettings::new(inj.annotation_prefix.clone());
            namespace_store = Some(KubeNamespaces::start(
                client,
                sa_settings.live_get_timeout,
                sa_settings.ready_timeout,
                stop.clone(),
            ));
        }
        ClusterAccess::None => {
            tracing::info!(
                "no Kubernetes API (no --kubeconfig and not running in a pod): running on the associations file alone; IRSA annotations and namespace policy labels are not read"
            );
        }
    }
    if identities.source_names().is_empty() && !identities.has_service_account_store() {
        tracing::warn!(
            "no identity source configured: every pod is admitted unchanged (give --associations or --cluster-name)"
        );
    }

    // --- application ------------------------------------------------------------------------
    if let Some(expiry) = tls::not_after(&resolver.current()) {
        metrics.certificate_expiry_seconds.set(expiry);
    }
    metrics.record_loaded("certificate");
    if settings.config_file.is_some() {
        metrics.record_loaded("config");
    }
    let connection_limit = server::ConnectionLimit::new(settings.server.max_connections);
    let observed = connection_limit.clone();
    metrics.register_snapshot(move || {
        vec![
            FamilySnapshot::gauge(
                "connections_open",
                "HTTPS connections open now",
                observed.open() as f64,
            ),
            FamilySnapshot::gauge(
                "connections_max",
                "Most HTTPS connections open at once (server.maxConnections)",
                observed.max() as f64,
            ),
            FamilySnapshot {
                name: "connection_limit_reached",
                help: "Times every connection slot was taken and new connections had to wait",
                kind: SampleKind::Counter,
                samples: vec![(Vec::new(), observed.times_reached() as f64)],
            },
        ]
    });
    let mut validator = Validator::new(policy, identities.clone());
    if let Some(store) = namespace_store {
        validator = validator.with_namespaces(store);
    }
    let mut mutator = Mutator::new(inj, identities);
    if let Some(eks) = &settings.eks {
        mutator.failure_mode = eks.failure_mode;
    }
    let live_injection = mutator.injection.clone();
    let mut app = App::new(mutator, validator);
    app.metrics = metrics;
    app.max_body_bytes = settings.server.max_body_bytes;
    let app = Arc::new(app);

    // --- reloads -----------------------------------------------------------------------------
    let interval = settings.server.reload_interval;
    let observe = |file: &'static str| {
        let app = app.clone();
        move |outcome: &reload::ReloadOutcome| app.metrics.record_reload(file, outcome)
    };
    if let Some(reloader) = file_reloader {
        let reloader = reload::observed(reloader, observe("associations"));
        tasks.spawn(reload::run(reloader, interval, stop.clone()));
    }
    if let Some(path) = &settings.config_file {
        let policy_app = app.clone();
        let own_ns = own_ns.clone();
        let associations_file = settings.associations_file.clone();
        let reloader = ConfigReloader::new(path.clone(), settings.clone(), live_injection)
            .on_policy(move |next| {
                match Policy::compile(next, own_ns.as_deref()) {
                    Ok(policy) => policy_app
                        .validator
                        .set_policy(policy.with_associations_file(associations_file.clone())),
                    // The reloader validated the file; a policy that still does not compile keeps
                    // the one in force rather than leaving the webhook without any.
                    Err(e) => tracing::error!(error = %e, "policy not updated; the previous policy stays in force"),
                }
            });
        let reloader = reload::observed(reloader, observe("config"));
        tasks.spawn(reload::run(reloader, interval, stop.clone()));
    }
    if let Some((cert, key)) = cert_files {
        let metrics_app = app.clone();
        let reloader = CertReloader::new(cert, key, resolver.clone()).on_reload(move |ck| {
            metrics_app.metrics.certificate_reloads.inc();
            if let Some(expiry) = tls::not_after(ck) {
                metrics_app.metrics.certificate_expiry_seconds.set(expiry);
            }
        });
        let reloader = reload::observed(reloader, observe("certificate"));
        tasks.spawn(reload::run(reloader, interval, stop.clone()));
    }
    app.health.set_certs_loaded();

    // --- listeners ---------------------------------------------------------------------------
    let https = server::bind(settings.server.listen, "HTTPS admission endpoint").await?;
    let admin = server::bind(settings.server.admin_listen, "admin endpoint").await?;
    let https_addr = https
        .local_addr()
        .map_err(|e| StartError::Other(e.to_string()))?;
    let admin_addr = admin
        .local_addr()
        .map_err(|e| StartError::Other(e.to_string()))?;
    tasks.spawn(server::serve_tls(
        https,
        tls::server_config(resolver.clone()),
        routes::admission_router(app.clone()),
        stop.clone(),
        settings.server.drain_timeout,
        server::Limits {
            header_read: settings.server.header_read_timeout,
            idle: settings.server.idle_timeout,
        },
        connection_limit,
    ));
    tasks.spawn(server::serve_admin(
        admin,
        routes::admin_router(app.clone()),
        stop.clone(),
    ));
    tracing::info!(%https_addr, %admin_addr, "pod-identity-webhook serving");

    Ok(Running {
        https_addr,
        admin_addr,
        app,
        cert_resolver: resolver,
        self_signed_ca_pem,
        settings,
        stop,
        tasks,
    })
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
