//! ServiceAccounts from the Kubernetes API: a kube-rs reflector stripped to the annotations the
//! webhook reads, plus a live GET on a miss so a pod created right after its ServiceAccount is
//! still mutated.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use super::{IdentityError, ServiceAccountInfo, ServiceAccountStore};
use crate::kubernetes::reflector::reflect;

const SOURCE: &str = "kubernetes";

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
