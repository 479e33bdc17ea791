//! Identity sources for `check` and `audit`: the same [`Identities`] the webhook builds, filled
//! from what these commands have at hand. ServiceAccounts come from manifests, files or a
//! cluster listing ([`ListedServiceAccounts`]); associations from the associations file and EKS,
//! through the webhook's own sources.

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::Value;

use crate::identity::eks_cache::EksSource;
use crate::identity::eks_client::EksSetupError;
use crate::identity::eks_sync::SyncError;
use crate::identity::file::FileSource;
use crate::identity::{
    AssociationSource, Identities, IdentityError, ServiceAccountInfo, ServiceAccountStore,
};
use crate::kubernetes::client::KubeError;
use crate::namespaces::StaticNamespaces;
use crate::settings::Settings;

/// Why the identity sources could not be set up (the command stops with exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Associations(#[from] crate::identity::file::FileError),
    #[error("EKS: {0}")]
    Eks(#[from] EksSetupError),
    #[error("EKS: cannot list the associations of cluster {cluster}: {source}")]
    EksSync { cluster: String, source: SyncError },
    #[error("Kubernetes API: {0}")]
    Kube(#[from] KubeError),
    #[error("Kubernetes API: no cluster in {0}")]
    NoCluster(String),
    #[error("Kubernetes API: no cluster found (give --kubeconfig, or set KUBECONFIG): {0}")]
    NoKubeconfig(kube::config::InferConfigError),
    #[error(
        "Kubernetes API: ServiceAccounts and Namespaces of {kubeconfig} not listed within {waited:?}"
    )]
    NotListed {
        kubeconfig: String,
        waited: std::time::Duration,
    },
}

/// ServiceAccounts known by listing them (manifests, `--service-accounts`, a cluster list),
/// reduced to the annotations injection reads. A ServiceAccount not listed falls back to the
/// next store (a live cluster), if any.
#[derive(Default)]
pub struct ListedServiceAccounts {
    by_name: HashMap<(String, String), Arc<ServiceAccountInfo>>,
    fallback: Option<Arc<dyn ServiceAccountStore>>,
}

impl ListedServiceAccounts {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces: a later definition wins, as `kubectl apply` of both would leave it)
    /// a ServiceAccount object's annotations.
    pub fn insert(&mut self, namespace: &str, object: &Value, annotation_prefix: &str) {
        let Some(name) = object["metadata"]["name"].as_str() else {
            return;
        };
        let annotations = object["metadata"]["annotations"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)));
        let info = ServiceAccountInfo::from_annotations(annotations, annotation_prefix);
        self.by_name
            .insert((namespace.to_string(), name.to_string()), Arc::new(info));
    }

    /// ServiceAccounts not listed are looked up in `store`.
    pub fn with_fallback(mut self, store: Arc<dyn ServiceAccountStore>) -> Self {
        self.fallback = Some(store);
        self
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    pub fn contains(&self, namespace: &str, name: &str) -> bool {
        self.by_name
            .contains_key(&(namespace.to_string(), name.to_string()))
    }
}

impl ServiceAccountStore for ListedServiceAccounts {
    fn get<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<ServiceAccountInfo>>, IdentityError>> {
        let found = self
            .by_name
            .get(&(namespace.to_string(), name.to_string()))
            .cloned();
        Box::pin(async move {
            match (found, &self.fallback) {
                (Some(info), _) => Ok(Some(info)),
                (None, Some(store)) => store.get(namespace, name).await,
                (None, None) => Ok(None),
            }
        })
    }

    fn ready(&self) -> bool {
        self.fallback.as_ref().is_none_or(|s| s.ready())
    }
}

/// Namespace labels from Namespace objects (manifests or a cluster list): a label there may
/// tighten the mode exactly as it does at admission.
pub fn namespace_labels<'a>(objects: impl IntoIterator<Item = &'a Value>) -> StaticNamespaces {
    let mut store = StaticNamespaces::new();
    for ns in objects {
        let Some(name) = ns["metadata"]["name"].as_str() else {
            continue;
        };
        let labels = ns["metadata"]["labels"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())));
        store = store.with(name, labels);
    }
    store
}

/// The association sources `settings` name: the associations file, then EKS (synced once,
/// fully, before any decision, so "no association" means none rather than "not synced yet").
pub async fn association_sources(
    settings: &Settings,
) -> Result<Vec<Arc<dyn AssociationSource>>, SourceError> {
    let mut sources: Vec<Arc<dyn AssociationSource>> = Vec::new();
    if let Some(path) = &settings.associations_file {
        let (source, _reloader) = FileSource::open(path)?;
        sources.push(source);
    }
    if let Some(eks) = settings.eks_source() {
        let source = EksSource::connect(eks).await?;
        source
            .sync_now()
            .await
            .map_err(|source| SourceError::EksSync {
                cluster: eks.cluster_name.clone(),
                source,
            })?;
        sources.push(Arc::new(source));
    }
    Ok(sources)
}

/// The [`Identities`] of `settings`' association sources and `service_accounts`.
pub fn identities(
    settings: &Settings,
    associations: Vec<Arc<dyn AssociationSource>>,
    service_accounts: Arc<dyn ServiceAccountStore>,
) -> Identities {
    let mut identities = Identities::new(settings.injection.annotation_prefix.clone());
    for source in associations {
        identities = identities.with_associations(source);
    }
    identities.with_service_accounts(service_accounts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Freshness;
    use serde_json::json;

    #[tokio::test]
    async fn listed_then_fallback() {
        let mut inner = ListedServiceAccounts::new();
        inner.insert(
            "a",
            &json!({"metadata": {"name": "x", "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/inner"}}}),
            "eks.amazonaws.com",
        );
        let mut outer = ListedServiceAccounts::new();
        outer.insert(
            "a",
            &json!({"metadata": {"name": "y", "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/outer"}}}),
            "eks.amazonaws.com",
        );
        let store = Arc::new(outer.with_fallback(Arc::new(inner)));
        let ids = Identities::new("eks.amazonaws.com").with_service_accounts(store);
        let got = |sa: &'static str| {
            let ids = ids.clone();
            async move { ids.resolve("a", sa, Freshness::Cached).await.identity }
        };
        assert!(got("x").await.is_some());
        assert!(got("y").await.is_some());
        assert!(got("z").await.is_none());
    }
}
