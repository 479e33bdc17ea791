//! Namespace labels, for the label that may tighten a namespace's policy mode (docs/contract.md §3).
//!
//! Behind a trait so tests inject labels; in a cluster a kube-rs reflector keeps the labels of
//! every namespace (nothing else), with a bounded live GET for a namespace created seconds ago.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Namespace;
use kube::runtime::reflector::{ObjectRef, Store};
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
        let (reader, ready) = crate::kubernetes::reflector::reflect(
            Api::<Namespace>::all(client.clone()),
            strip,
            "Namespace",
            ready_timeout,
            stop,
        );
        Arc::new(Self {
            client,
            store: reader,
            live_get_timeout,
            ready,
        })
    }

    /// The reflector's store (name, uid and labels of every Namespace): the background audit
    /// reads it rather than watching again.
    pub fn store(&self) -> Store<Namespace> {
        self.store.clone()
    }
}

/// The reflector's answers only: a miss is "no such namespace", never a live GET (the
/// background audit's view).
pub struct ReflectedNamespaces(pub Arc<KubeNamespaces>);

impl NamespaceStore for ReflectedNamespaces {
    fn labels<'a>(
        &'a self,
        namespace: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<Labels>>, NamespaceError>> {
        let found = self
            .0
            .store
            .get(&ObjectRef::new(namespace))
            .map(|ns| Arc::new(ns.metadata.labels.clone().unwrap_or_default()));
        Box::pin(std::future::ready(Ok(found)))
    }

    fn ready(&self) -> bool {
        self.0.ready()
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
