//! The Kubernetes edge of the migration (kube-rs): paginated lists of ServiceAccounts, pods,
//! workloads and nodes; merge patches that drop annotations and restart workloads; rollout
//! status as `kubectl rollout status` reads it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{Node, Pod, PodTemplateSpec, ServiceAccount};
use kube::api::{DynamicObject, ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use super::inventory::{
    Key, NodeEntry, OwnerKind, PodEntry, ServiceAccountEntry, TemplateUse, WorkloadRef,
};
use super::{ClusterApi, EdgeError, Progress, Rollout, Scope};
use crate::kubernetes::api_resource;
use crate::object::Kind;

/// Items per list page (the API server's recommended chunk size).
const PAGE: u32 = 500;
/// Bound on one API call.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The annotation `kubectl rollout restart` sets on the pod template.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

pub struct KubeCluster {
    client: Client,
    annotation_prefix: String,
}

impl KubeCluster {
    pub fn new(client: Client, annotation_prefix: impl Into<String>) -> Self {
        Self {
            client,
            annotation_prefix: annotation_prefix.into(),
        }
    }

    /// Lists one workload resource (`what`), giving `push` the kind, metadata and template
    /// ServiceAccount of each object `template` finds a pod template in.
    async fn templates<K>(
        &self,
        scope: &Scope,
        what: &str,
        progress: &Progress,
        push: &mut impl FnMut(Kind, &kube::api::ObjectMeta, String),
        template: impl Fn(&K) -> Option<(Kind, &PodTemplateSpec)>,
    ) -> Result<(), EdgeError>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        for api in self.apis::<K>(scope) {
            list_all(&api, what, progress, |w| {
                if let Some((kind, t)) = template(&w) {
                    push(kind, w.meta(), template_sa(t));
                }
            })
            .await?;
        }
        Ok(())
    }

    fn apis<K>(&self, scope: &Scope) -> Vec<Api<K>>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        if scope.namespaces.is_empty() {
            vec![Api::all(self.client.clone())]
        } else {
            scope
                .namespaces
                .iter()
                .map(|n| Api::namespaced(self.client.clone(), n))
                .collect()
        }
    }
}

async fn call<T>(
    what: &str,
    f: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, EdgeError> {
    let what = what.to_string();
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Err(_) => Err(EdgeError::Timeout {
            what,
            waited: CALL_TIMEOUT,
        }),
        Ok(Err(kube::Error::Api(e))) if e.code == 403 => Err(EdgeError::Forbidden {
            what,
            message: e.message,
        }),
        Ok(Err(error)) => Err(EdgeError::Kube { what, error }),
        Ok(Ok(v)) => Ok(v),
    }
}

/// Lists every object of `api` page by page, handing each to `each`.
async fn list_all<K>(
    api: &Api<K>,
    what: &str,
    progress: &Progress,
    mut each: impl FnMut(K),
) -> Result<usize, EdgeError>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut params = ListParams::default().limit(PAGE);
    let mut count = 0;
    loop {
        let page = call(&format!("cannot list {what}"), api.list(&params)).await?;
        let next = page.metadata.continue_.clone().filter(|c| !c.is_empty());
        for item in page.items {
            count += 1;
            each(item);
        }
        progress.update(what, count);
        match next {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(count),
        }
    }
}

fn template_sa(t: &PodTemplateSpec) -> String {
    t.spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".into())
}

/// Whether a rollout has finished, read the way `kubectl rollout status` reads it.
pub fn rollout_state(kind: Kind, object: &serde_json::Value) -> Rollout {
    let int = |p: &str| object.pointer(p).and_then(|v| v.as_i64());
    let generation = int("/metadata/generation").unwrap_or(0);
    let observed = int("/status/observedGeneration").unwrap_or(0);
    if observed < generation {
        return Rollout::Progressing("waiting for the controller to see the change".into());
    }
    let (want, updated, available) = match kind {
        Kind::Deployment => (
            int("/spec/replicas").unwrap_or(1),
            int("/status/updatedReplicas").unwrap_or(0),
            int("/status/availableReplicas").unwrap_or(0),
        ),
        Kind::StatefulSet => (
            int("/spec/replicas").unwrap_or(1),
            int("/status/updatedReplicas").unwrap_or(0),
            int("/status/readyReplicas").unwrap_or(0),
        ),
        Kind::DaemonSet => (
            int("/status/desiredNumberScheduled").unwrap_or(0),
            int("/status/updatedNumberScheduled").unwrap_or(0),
            int("/status/numberAvailable").unwrap_or(0),
        ),
        _ => return Rollout::Done,
    };
    let total = match kind {
        Kind::Deployment => int("/status/replicas").unwrap_or(0),
        _ => updated,
    };
    if updated < want {
        Rollout::Progressing(format!("{updated} of {want} updated"))
    } else if total > updated {
        Rollout::Progressing(format!("{} old pods terminating", total - updated))
    } else if available < want {
        Rollout::Progressing(format!("{available} of {want} available"))
    } else {
        Rollout::Done
    }
}

impl ClusterApi for KubeCluster {
    fn service_accounts<'a>(
        &'a self,
        scope: &'a Scope,
        progress: &'a Progress,
    ) -> BoxFuture<'a, Result<Vec<ServiceAccountEntry>, EdgeError>> {
        Box::pin(async move {
            let mut out = Vec::new();
            for api in self.apis::<ServiceAccount>(scope) {
                list_all(&api, "serviceaccounts", progress, |sa| {
                    if let Some(e) = ServiceAccountEntry::from_object(&sa, &self.annotation_prefix)
                    {
                        out.push(e);
                    }
                })
                .await?;
            }
            Ok(out)
        })
    }

    fn pods<'a>(
        &'a self,
        scope: &'a Scope,
        wanted: &'a BTreeSet<Key>,
        progress: &'a Progress,
    ) -> BoxFuture<'a, Result<super::PodsAndTemplates, EdgeError>> {
        Box::pin(async move {
            let mut templates = Vec::new();
            let mut replica_sets: BTreeMap<Key, Option<String>> = BTreeMap::new();
            let wants = |ns: &Option<String>, sa: String| {
                ns.as_ref()
                    .is_some_and(|ns| wanted.contains(&(ns.clone(), sa)))
            };
            let mut push = |kind: Kind, meta: &kube::api::ObjectMeta, sa: String| {
                if wants(&meta.namespace, sa.clone()) {
                    templates.push(TemplateUse {
                        workload: WorkloadRef {
                            kind: OwnerKind::Workload(kind),
                            namespace: meta.namespace.clone().unwrap_or_default(),
                            name: meta.name.clone().unwrap_or_default(),
                        },
                        service_account: sa,
                    });
                }
            };
            self.templates::<Deployment>(scope, "deployments", progress, &mut push, |d| {
                Some((Kind::Deployment, &d.spec.as_ref()?.template))
            })
            .await?;
            self.templates::<StatefulSet>(scope, "statefulsets", progress, &mut push, |d| {
                Some((Kind::StatefulSet, &d.spec.as_ref()?.template))
            })
            .await?;
            self.templates::<DaemonSet>(scope, "daemonsets", progress, &mut push, |d| {
                Some((Kind::DaemonSet, &d.spec.as_ref()?.template))
            })
            .await?;
            self.templates::<CronJob>(scope, "cronjobs", progress, &mut push, |c| {
                let job = c.spec.as_ref()?.job_template.spec.as_ref()?;
                Some((Kind::CronJob, &job.template))
            })
            .await?;
            for api in self.apis::<ReplicaSet>(scope) {
                list_all(&api, "replicasets", progress, |rs| {
                    let deployment = rs
                        .metadata
                        .owner_references
                        .iter()
                        .flatten()
                        .find(|o| o.controller == Some(true) && o.kind == "Deployment")
                        .map(|o| o.name.clone());
                    if let (Some(ns), Some(name)) = (&rs.metadata.namespace, &rs.metadata.name) {
                        replica_sets.insert((ns.clone(), name.clone()), deployment);
                    }
                })
                .await?;
            }
            let mut pods = Vec::new();
            for api in self.apis::<Pod>(scope) {
                list_all(&api, "pods", progress, |p| {
                    // Finished pods hold no credentials.
                    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                    if matches!(phase, Some("Succeeded" | "Failed")) {
                        return;
                    }
                    if let Some(e) = PodEntry::from_object(&p, &replica_sets)
                        && wanted.contains(&e.key())
                    {
                        pods.push(e);
                    }
                })
                .await?;
            }
            pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
            Ok((pods, templates))
        })
    }

    fn nodes<'a>(
        &'a self,
        progress: &'a Progress,
    ) -> BoxFuture<'a, Result<BTreeMap<String, NodeEntry>, EdgeError>> {
        Box::pin(async move {
            let mut out = BTreeMap::new();
            list_all(
                &Api::<Node>::all(self.client.clone()),
                "nodes",
                progress,
                |n| {
                    if let Some((name, e)) = NodeEntry::from_object(&n) {
                        out.insert(name, e);
                    }
                },
            )
            .await?;
            Ok(out)
        })
    }

    fn remove_annotations<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<(), EdgeError>> {
        Box::pin(async move {
            let nulls: serde_json::Map<String, serde_json::Value> = keys
                .iter()
                .map(|k| (k.clone(), serde_json::Value::Null))
                .collect();
            let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
            call(
                &format!("cannot patch serviceaccount {namespace}/{name}"),
                api.patch(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"annotations": nulls}})),
                ),
            )
            .await
            .map(|_| ())
        })
    }

    fn restart<'a>(
        &'a self,
        w: &'a WorkloadRef,
        at: &'a str,
    ) -> BoxFuture<'a, Result<(), EdgeError>> {
        Box::pin(async move {
            let what = format!("cannot restart {w}");
            let Some(api) = self.rollout_api(w) else {
                return Err(EdgeError::NoRollout {
                    what,
                    kind: w.kind.as_str().to_string(),
                });
            };
            let patch = Patch::Merge(
                json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: at}}}}}),
            );
            call(&what, api.patch(&w.name, &PatchParams::default(), &patch))
                .await
                .map(|_| ())
        })
    }

    fn rollout<'a>(&'a self, w: &'a WorkloadRef) -> BoxFuture<'a, Result<Rollout, EdgeError>> {
        Box::pin(async move {
            let (Some(api), OwnerKind::Workload(kind)) = (self.rollout_api(w), &w.kind) else {
                return Ok(Rollout::Done);
            };
            let object = call(&format!("cannot read {w}"), api.get_opt(&w.name)).await?;
            match object.map(serde_json::to_value) {
                None => Ok(Rollout::Gone),
                Some(v) => Ok(rollout_state(*kind, &v.map_err(EdgeError::Json)?)),
            }
        })
    }

    fn oidc_issuer(&self) -> BoxFuture<'_, Result<String, EdgeError>> {
        Box::pin(async move {
            const WHAT: &str = "discovery document (/.well-known/openid-configuration)";
            let request = hyper::Request::get("/.well-known/openid-configuration")
                .body(Vec::new())
                .map_err(|e| EdgeError::Discovery {
                    what: WHAT,
                    why: e.to_string(),
                })?;
            let text = call(WHAT, self.client.request_text(request)).await?;
            #[derive(serde::Deserialize)]
            struct Discovery {
                issuer: String,
            }
            serde_json::from_str::<Discovery>(&text)
                .map(|d| d.issuer)
                .map_err(|e| EdgeError::Discovery {
                    what: WHAT,
                    why: format!("not a discovery document ({e})"),
                })
        })
    }
}

impl KubeCluster {
    /// The API of a workload `rollout restart` applies to, whatever its kind.
    fn rollout_api(&self, w: &WorkloadRef) -> Option<Api<DynamicObject>> {
        match &w.kind {
            OwnerKind::Workload(kind) if w.kind.restartable() => Some(Api::namespaced_with(
                self.client.clone(),
                &w.namespace,
                &api_resource(*kind),
            )),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollout_reads_like_kubectl() {
        let d = |gen_: i64, obs: i64, upd: i64, total: i64, avail: i64| {
            json!({"metadata": {"generation": gen_}, "spec": {"replicas": 2},
                   "status": {"observedGeneration": obs, "updatedReplicas": upd, "replicas": total, "availableReplicas": avail}})
        };
        let k = Kind::Deployment;
        assert!(matches!(
            rollout_state(k, &d(2, 1, 2, 2, 2)),
            Rollout::Progressing(_)
        ));
        assert!(matches!(
            rollout_state(k, &d(2, 2, 1, 3, 2)),
            Rollout::Progressing(_)
        ));
        assert!(matches!(
            rollout_state(k, &d(2, 2, 2, 3, 2)),
            Rollout::Progressing(_)
        ));
        assert!(matches!(
            rollout_state(k, &d(2, 2, 2, 2, 1)),
            Rollout::Progressing(_)
        ));
        assert_eq!(rollout_state(k, &d(2, 2, 2, 2, 2)), Rollout::Done);
    }
}
