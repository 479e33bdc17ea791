//! What runs in a cluster, for `audit`: every object the decisions look at, listed in pages
//! (`limit`/`continue`, as kubectl does) so neither the API server nor this process holds one
//! huge response.

use std::collections::HashMap;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::{ApiResource, TypeMeta};
use kube::{Client, Resource};
use serde_json::Value;

use super::projection::Projected;

/// Items per list page.
pub const PAGE_SIZE: u32 = 500;

/// Most objects of one kind read; a cluster with more is refused rather than held in memory.
pub const MAX_OBJECTS_PER_KIND: usize = 1_000_000;

/// Why the cluster could not be read (the audit stops: a partial view would hide findings).
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error(
        "cannot list {resource}: {message}; the audit needs get/list on pods, serviceaccounts, namespaces and the apps/batch workloads"
    )]
    Api { resource: String, message: String },
    #[error("more than {limit} {resource}; the audit stops rather than hold them all")]
    TooMany { resource: String, limit: usize },
}

/// The objects of a cluster the audit decides on, each with its `apiVersion` and `kind`.
#[derive(Debug, Default, Clone)]
pub struct ClusterObjects {
    pub namespaces: Vec<Value>,
    pub service_accounts: Vec<Value>,
    /// Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs and CronJobs.
    pub workloads: Vec<Projected>,
    pub pods: Vec<Projected>,
}

impl ClusterObjects {
    /// How many objects of each kind (for the report).
    pub fn counts(&self) -> Vec<(&'static str, usize)> {
        let mut by_kind: HashMap<String, usize> = HashMap::new();
        for w in &self.workloads {
            *by_kind
                .entry(w.value()["kind"].as_str().unwrap_or("").to_string())
                .or_default() += 1;
        }
        let mut counts = vec![
            ("namespaces", self.namespaces.len()),
            ("serviceaccounts", self.service_accounts.len()),
            ("pods", self.pods.len()),
        ];
        for (kind, plural) in WORKLOAD_PLURALS {
            counts.push((plural, by_kind.get(kind).copied().unwrap_or(0)));
        }
        counts
    }
}

const WORKLOAD_PLURALS: [(&str, &str); 6] = [
    ("Deployment", "deployments"),
    ("StatefulSet", "statefulsets"),
    ("DaemonSet", "daemonsets"),
    ("ReplicaSet", "replicasets"),
    ("Job", "jobs"),
    ("CronJob", "cronjobs"),
];

pub(crate) fn resource<K: Resource<DynamicType = ()>>() -> ApiResource {
    ApiResource::erase::<K>(&())
}

/// The workload resources the audit reads (their pods are in a template), in the order it
/// reads them.
pub(crate) fn workload_resources() -> [ApiResource; 6] {
    [
        resource::<Deployment>(),
        resource::<StatefulSet>(),
        resource::<DaemonSet>(),
        resource::<ReplicaSet>(),
        resource::<Job>(),
        resource::<CronJob>(),
    ]
}

/// Lists every object the audit needs, page by page; `progress(resource, listed so far)` is
/// told after each page.
pub async fn list_cluster(
    client: &Client,
    page_size: u32,
    mut progress: impl FnMut(&str, usize),
) -> Result<ClusterObjects, ListError> {
    let mut objects = ClusterObjects {
        namespaces: list_all(
            client,
            &resource::<Namespace>(),
            page_size,
            &mut progress,
            |v| v,
        )
        .await?,
        service_accounts: list_all(
            client,
            &resource::<ServiceAccount>(),
            page_size,
            &mut progress,
            |v| v,
        )
        .await?,
        ..ClusterObjects::default()
    };
    for ar in workload_resources() {
        let listed = list_all(client, &ar, page_size, &mut progress, |v| Projected::of(&v)).await?;
        objects.workloads.extend(listed);
    }
    objects.pods = list_all(client, &resource::<Pod>(), page_size, &mut progress, |v| {
        Projected::of(&v)
    })
    .await?;
    Ok(objects)
}

/// Every object of one resource across namespaces, following `continue` tokens, each kept as
/// `keep` makes it (page by page, so a whole list is never held as JSON values).
pub async fn list_all<T>(
    client: &Client,
    ar: &ApiResource,
    page_size: u32,
    progress: &mut impl FnMut(&str, usize),
    keep: impl Fn(Value) -> T,
) -> Result<Vec<T>, ListError> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), ar);
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut params = ListParams::default().limit(page_size.max(1));
        if let Some(t) = &token {
            params = params.continue_token(t);
        }
        let page = api.list(&params).await.map_err(|e| ListError::Api {
            resource: ar.plural.clone(),
            message: e.to_string(),
        })?;
        for mut item in page.items {
            // List items carry no type of their own; the decisions read it.
            item.types = Some(TypeMeta {
                api_version: ar.api_version.clone(),
                kind: ar.kind.clone(),
            });
            item.metadata.managed_fields = None;
            if let Ok(value) = serde_json::to_value(&item) {
                out.push(keep(value));
            }
        }
        if out.len() > MAX_OBJECTS_PER_KIND {
            return Err(ListError::TooMany {
                resource: ar.plural.clone(),
                limit: MAX_OBJECTS_PER_KIND,
            });
        }
        progress(&ar.plural, out.len());
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            return Ok(out);
        }
    }
}
