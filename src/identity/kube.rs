//! ServiceAccounts from the Kubernetes API: a kube-rs reflector stripped to the annotations the
//! webhook reads, plus a live GET on a miss so a pod created right after its ServiceAccount is
//! still mutated.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use super::{IdentityError, ServiceAccountInfo, ServiceAccountStore};

const SOURCE: &str = "kubernetes";

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("cannot read kubeconfig {path}: {message}")]
    Kubeconfig { path: String, message: String },
    #[error("cannot build a Kubernetes client: {0}")]
    Client(String),
}

/// How the webhook reaches the Kubernetes API.
pub enum ClusterAccess {
    /// A client, and where its configuration came from (for the start-up log).
    Client(Client, String),
    /// No kubeconfig given and not running in a pod: associations file only.
    None,
}

/// `--kubeconfig PATH` when given, else the in-cluster configuration when running in a pod,
/// else no cluster access (docs/contract.md §6: the associations file alone serves).
pub async fn connect(kubeconfig: Option<&Path>) -> Result<ClusterAccess, KubeError> {
    let config = if let Some(path) = kubeconfig {
        let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| KubeError::Kubeconfig {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let config =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| KubeError::Kubeconfig {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?;
        (config, format!("kubeconfig {}", path.display()))
    } else if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        let config = kube::Config::incluster().map_err(|e| KubeError::Client(e.to_string()))?;
        (config, "in-cluster service account".to_string())
    } else {
        return Ok(ClusterAccess::None);
    };
    let client = Client::try_from(config.0).map_err(|e| KubeError::Client(e.to_string()))?;
    Ok(ClusterAccess::Client(client, config.1))
}

/// Settings of the ServiceAccount store.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub annotation_prefix: String,
    /// Bound on the live GET made on a reflector miss.
    pub live_get_timeout: Duration,
    /// Turn ready after this long even if the first list has not completed (logged).
    pub ready_timeout: Duration,
}

impl StoreSettings {
    pub fn new(annotation_prefix: impl Into<String>) -> Self {
        Self {
            annotation_prefix: annotation_prefix.into(),
            live_get_timeout: Duration::from_secs(1),
            ready_timeout: Duration::from_secs(30),
        }
    }
}

/// ServiceAccounts watched cluster-wide, stripped to the annotations under the prefix.
pub struct KubeServiceAccounts {
    client: Client,
    store: Store<ServiceAccount>,
    settings: StoreSettings,
    ready: Arc<AtomicBool>,
}

/// Drops everything but name, namespace and the prefixed annotations: memory stays small in
/// clusters with many ServiceAccounts.
fn strip(sa: &mut ServiceAccount, prefix: &str) {
    sa.metadata.managed_fields = None;
    sa.metadata.labels = None;
    sa.metadata.owner_references = None;
    sa.secrets = None;
    sa.image_pull_secrets = None;
    if let Some(annotations) = sa.metadata.annotations.as_mut() {
        annotations.retain(|k, _| {
            k.strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
        });
    }
}

/// Runs a watch-backed store of every `K` in the cluster until `stop`, each object trimmed by
/// `strip` before it is stored (only what lookups read is kept). Errors are retried with backoff
/// and logged once per outage. The flag turns true after the first complete list, or after
/// `ready_timeout` (lookups then fall back to live GETs).
pub(crate) fn reflect<K>(
    api: Api<K>,
    strip: impl FnMut(&mut K) + Send + 'static,
    kind: &'static str,
    ready_timeout: Duration,
    stop: CancellationToken,
) -> (Store<K>, Arc<AtomicBool>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let ready = Arc::new(AtomicBool::new(false));
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(strip)
        .reflect(writer);
    let stop_watch = stop.clone();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = stop_watch.cancelled() => return,
                next = stream.next() => match next {
                    None => return,
                    Some(Ok(_)) => {
                        if failing {
                            tracing::info!(kind, "watch recovered");
                            failing = false;
                        }
                    }
                    Some(Err(e)) => {
                        if !failing {
                            tracing::warn!(kind, error = %e, "watch failed; retrying with backoff (lookups fall back to live GETs)");
                        }
                        failing = true;
                    }
                }
            }
        }
    });
    let (ready_flag, waiting) = (ready.clone(), reader.clone());
    tokio::spawn(async move {
        tokio::select! {
            _ = stop.cancelled() => {}
            r = tokio::time::timeout(ready_timeout, waiting.wait_until_ready()) => {
                if r.is_err() {
                    tracing::warn!(kind, ?ready_timeout, "not listed yet; turning ready anyway (misses use live GETs)");
                } else {
                    tracing::info!(kind, "listed");
                }
                ready_flag.store(true, Ordering::Release);
            }
        }
    });
    (reader, ready)
}

impl KubeServiceAccounts {
    /// Starts the reflector; it runs until `stop` is cancelled, retrying with backoff.
    pub fn start(client: Client, settings: StoreSettings, stop: CancellationToken) -> Arc<Self> {
        let prefix = settings.annotation_prefix.clone();
        let (reader, ready) = reflect(
            Api::<ServiceAccount>::all(client.clone()),
            move |sa| strip(sa, &prefix),
            "ServiceAccount",
            settings.ready_timeout,
            stop,
        );
        Arc::new(Self {
            client,
            store: reader,
            settings,
            ready,
        })
    }

    fn info(&self, sa: &ServiceAccount) -> ServiceAccountInfo {
        ServiceAccountInfo::from_annotations(
            sa.metadata.annotations.iter().flatten(),
            &self.settings.annotation_prefix,
        )
    }

    /// The reflector's store (name, namespace, uid and the prefixed annotations of every
    /// ServiceAccount): the background audit reads it rather than watching again.
    pub fn store(&self) -> Store<ServiceAccount> {
        self.store.clone()
    }

    /// The number of ServiceAccounts in the reflector (metrics).
    pub fn len(&self) -> usize {
        self.store.len()
    }

    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }

    async fn live_get(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<ServiceAccountInfo>>, IdentityError> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        let wait = self.settings.live_get_timeout;
        match tokio::time::timeout(wait, api.get_opt(name)).await {
            Err(_) => Err(IdentityError::Timeout {
                source_name: SOURCE,
                waited: wait,
            }),
            Ok(Err(e)) => Err(IdentityError::Unavailable {
                source_name: SOURCE,
                message: e.to_string(),
            }),
            Ok(Ok(sa)) => Ok(sa.map(|sa| Arc::new(self.info(&sa)))),
        }
    }
}

/// The reflector's answers only: a miss is "no such ServiceAccount", never a live GET. For the
/// background audit, which must add no requests per object to the API server.
pub struct ReflectedServiceAccounts(pub Arc<KubeServiceAccounts>);

impl ServiceAccountStore for ReflectedServiceAccounts {
    fn get<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<ServiceAccountInfo>>, IdentityError>> {
        let key = ObjectRef::new(name).within(namespace);
        let found = self.0.store.get(&key).map(|sa| Arc::new(self.0.info(&sa)));
        Box::pin(std::future::ready(Ok(found)))
    }

    fn ready(&self) -> bool {
        self.0.ready()
    }
}

impl ServiceAccountStore for KubeServiceAccounts {
    fn get<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<ServiceAccountInfo>>, IdentityError>> {
        Box::pin(async move {
            let key = ObjectRef::new(name).within(namespace);
            if let Some(sa) = self.store.get(&key) {
                return Ok(Some(Arc::new(self.info(&sa))));
            }
            // Not in the reflector: just created (watch lag), or the list is still running.
            self.live_get(namespace, name).await
        })
    }

    fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}
