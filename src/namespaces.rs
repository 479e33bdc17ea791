//! Namespace labels, for the label that may tighten a namespace's policy mode (SPEC §3).
//!
//! Behind a trait so tests inject labels; in a cluster a kube-rs reflector keeps the labels of
//! every namespace (nothing else), with a bounded live GET for a namespace created seconds ago.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Namespace;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

pub type Labels = BTreeMap<String, String>;

/// Why a namespace's labels could not be read. The policy then uses the configured mode only.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NamespaceError {
    #[error("Kubernetes API did not return namespace {namespace} within {waited:?}")]
    Timeout { namespace: String, waited: Duration },
    #[error("cannot read namespace {namespace}: {message}")]
    Unavailable { namespace: String, message: String },
}

/// Where namespace labels come from.
pub trait NamespaceStore: Send + Sync + 'static {
    /// The labels of `namespace`; `Ok(None)` when the namespace is unknown.
    fn labels<'a>(
        &'a self,
        namespace: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<Labels>>, NamespaceError>>;

    fn ready(&self) -> bool;
}

/// Fixed labels (tests, and the offline tools).
#[derive(Debug, Default, Clone)]
pub struct StaticNamespaces {
    namespaces: HashMap<String, Arc<Labels>>,
}

impl StaticNamespaces {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with<K: Into<String>, V: Into<String>>(
        mut self,
        namespace: &str,
        labels: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let labels = labels
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        self.namespaces
            .insert(namespace.to_string(), Arc::new(labels));
        self
    }
}

impl NamespaceStore for StaticNamespaces {
    fn labels<'a>(
        &'a self,
        namespace: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<Labels>>, NamespaceError>> {
        Box::pin(std::future::ready(Ok(self
            .namespaces
            .get(namespace)
            .cloned())))
    }

    fn ready(&self) -> bool {
        true
    }
}

/// Namespaces watched cluster-wide, stripped to their labels.
pub struct KubeNamespaces {
    client: Client,
    store: Store<Namespace>,
    live_get_timeout: Duration,
    ready: Arc<AtomicBool>,
}

/// Keeps only name and labels: nothing else is read.
fn strip(ns: &mut Namespace) {
    ns.metadata.managed_fields = None;
    ns.metadata.annotations = None;
    ns.metadata.owner_references = None;
    ns.spec = None;
    ns.status = None;
}

impl KubeNamespaces {
    /// Starts the reflector; it runs until `stop` is cancelled, retrying with backoff. Ready
    /// after the first list, or after `ready_timeout` (misses then use live GETs).
    pub fn start(
        client: Client,
        live_get_timeout: Duration,
        ready_timeout: Duration,
        stop: CancellationToken,
    ) -> Arc<Self> {
        let (reader, writer) = reflector::store();
        let ready = Arc::new(AtomicBool::new(false));
        let api: Api<Namespace> = Api::all(client.clone());
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
                                tracing::info!("Namespace watch recovered");
                                failing = false;
                            }
                        }
                        Some(Err(e)) => {
                            if !failing {
                                tracing::warn!(error = %e, "Namespace watch failed; retrying with backoff (lookups fall back to live GETs)");
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
                        tracing::warn!(?ready_timeout, "Namespaces not listed yet; turning ready anyway (misses use live GETs)");
                    } else {
                        tracing::info!("Namespaces listed");
                    }
                    ready_flag.store(true, Ordering::Release);
                }
            }
        });
        Arc::new(Self {
            client,
            store: reader,
            live_get_timeout,
            ready,
        })
    }
}

impl NamespaceStore for KubeNamespaces {
    fn labels<'a>(
        &'a self,
        namespace: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<Labels>>, NamespaceError>> {
        Box::pin(async move {
            if let Some(ns) = self.store.get(&ObjectRef::new(namespace)) {
                return Ok(Some(Arc::new(
                    ns.metadata.labels.clone().unwrap_or_default(),
                )));
            }
            // Not in the reflector: created moments ago, or the first list is still running.
            let api: Api<Namespace> = Api::all(self.client.clone());
            let waited = self.live_get_timeout;
            match tokio::time::timeout(waited, api.get_opt(namespace)).await {
                Err(_) => Err(NamespaceError::Timeout {
                    namespace: namespace.to_string(),
                    waited,
                }),
                Ok(Err(e)) => Err(NamespaceError::Unavailable {
                    namespace: namespace.to_string(),
                    message: e.to_string(),
                }),
                Ok(Ok(ns)) => Ok(ns.map(|ns| Arc::new(ns.metadata.labels.unwrap_or_default()))),
            }
        })
    }

    fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}
