//! The controller's audit (`controller --audit-interval D`): the webhook's decisions, run on
//! watches rather than repeated lists: after one initial list per resource the API server only
//! sends changes, and each run decides from memory.
//!
//! ServiceAccounts and Namespaces come from the reflectors the decisions read anyway (no second
//! watch). Pods and the apps/batch workloads get one watch each ([`WATCHED`]), started when this
//! replica leads and stopped when it no longer does, stripped to what the decisions read. Results
//! become `audit_violations{namespace,reason}` gauges, rate-limited Kubernetes Events on the
//! offending objects and, with `--repair`, evictions ([`crate::audit::repair`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, TypeMeta};
use kube::runtime::reflector::{self, Store};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::admission::Mutator;
use crate::admission::validate::Validator;
use crate::audit::cluster::{ClusterObjects, resource, workload_resources};
use crate::audit::decide::Decider;
use crate::audit::events::EventWriter;
use crate::audit::findings;
use crate::audit::repair::Repair;
use crate::identity::ServiceAccountStore;
use crate::identity::kube::ReflectedServiceAccounts;
use crate::kubernetes::reflector::WatchLog;
use crate::namespaces::{NamespaceStore, ReflectedNamespaces};
use crate::startup::ClusterWatches;

/// What the audit watches beyond the ServiceAccount and Namespace watches: `(API group,
/// resource)`, each listed once then watched (its RBAC is in `manifests/components/controller`).
pub const WATCHED: [(&str, &str); 7] = [
    ("", "pods"),
    ("apps", "deployments"),
    ("apps", "statefulsets"),
    ("apps", "daemonsets"),
    ("apps", "replicasets"),
    ("batch", "jobs"),
    ("batch", "cronjobs"),
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ViolationLabels {
    namespace: String,
    reason: &'static str,
}

/// The background audit's gauges (`pod_identity_webhook_audit_violations`).
#[derive(Clone, Default)]
pub struct AuditMetrics {
    violations: Family<ViolationLabels, Gauge>,
    runs: Gauge,
}

impl AuditMetrics {
    /// Registers the families in their own sub-registry (`pod_identity_webhook_audit_…`).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let sub = registry.sub_registry_with_prefix("audit");
        sub.register(
            "violations",
            "Objects the last background audit found, by namespace and reason",
            metrics.violations.clone(),
        );
        sub.register(
            "last_run_timestamp_seconds",
            "Unix time the last background audit finished",
            metrics.runs.clone(),
        );
        metrics
    }

    fn record(&self, report: &findings::AuditReport) {
        // Cleared first: a namespace whose findings were fixed drops to nothing, not to stale.
        self.violations.clear();
        for ((namespace, reason), n) in report.by_namespace() {
            self.violations
                .get_or_create(&ViolationLabels {
                    namespace,
                    reason: reason.as_str(),
                })
                .set(n as i64);
        }
        self.runs.set(crate::telemetry::metrics::unix_now());
    }
}

/// The watched objects of one resource.
struct Watched {
    store: Store<DynamicObject>,
    resource: ApiResource,
}

/// Keeps what the decisions read: metadata (without managed fields and the last-applied
/// copy), the spec, and of a pod's status only its phase.
fn strip(o: &mut DynamicObject) {
    o.metadata.managed_fields = None;
    if let Some(annotations) = o.metadata.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
    if let Some(map) = o.data.as_object_mut() {
        let phase = map
            .get("status")
            .and_then(|s| s.get("phase"))
            .cloned()
            .map(|phase| serde_json::json!({ "phase": phase }));
        match phase {
            Some(status) => map.insert("status".into(), status),
            None => map.remove("status"),
        };
    }
}

/// Starts a reflector of `ar` that runs until `stop`, retrying with backoff.
fn watch(client: &Client, ar: ApiResource, stop: &CancellationToken) -> Watched {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let writer = reflector::store::Writer::new(ar.clone());
    let store = writer.as_reader();
    let log = WatchLog {
        what: ar.plural.clone(),
        failed: "audit watch failed; retrying with backoff",
    };
    crate::kubernetes::reflector::run(api, writer, strip, log, stop.clone());
    Watched {
        store,
        resource: ar,
    }
}

fn values(w: &Watched) -> Vec<Value> {
    w.store
        .state()
        .iter()
        .filter_map(|o| {
            let mut o = (**o).clone();
            o.types = Some(TypeMeta {
                api_version: w.resource.api_version.clone(),
                kind: w.resource.kind.clone(),
            });
            serde_json::to_value(&o).ok()
        })
        .collect()
}

/// Typed objects of a store as JSON (k8s-openapi writes their `apiVersion` and `kind`).
fn typed_values<K: serde::Serialize + Clone + kube::Resource>(store: &Store<K>) -> Vec<Value>
where
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    store
        .state()
        .iter()
        .filter_map(|o| serde_json::to_value(&**o).ok())
        .collect()
}

/// Runs the audit every `interval` until `stop`, on `decisions`: first as soon as every watch
/// has listed, then every `interval`; `repair` acts on what each run finds.
pub async fn run(
    watches: ClusterWatches,
    decisions: Arc<super::Decisions>,
    metrics: AuditMetrics,
    interval: Duration,
    repair: Repair,
    stop: CancellationToken,
) {
    let service_accounts = watches.service_accounts.store();
    let namespaces = watches.namespaces.store();
    let workloads: Vec<Watched> = workload_resources()
        .into_iter()
        .map(|ar| watch(&watches.client, ar, &stop))
        .collect();
    let pods = watch(&watches.client, resource::<Pod>(), &stop);
    let events = EventWriter::new(watches.client.clone());

    // The ServiceAccount and Namespace stores are waited on through their ready flags: their
    // reflectors' own `wait_until_ready` wakes one waiter only, and the decisions wait on it.
    let webhook_synced = async {
        while !(watches.service_accounts.ready() && watches.namespaces.ready()) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let synced = async {
        webhook_synced.await;
        pods.store.wait_until_ready().await?;
        for w in &workloads {
            w.store.wait_until_ready().await?;
        }
        Ok::<_, reflector::store::WriterDropped>(())
    };
    tokio::select! {
        _ = stop.cancelled() => return,
        r = synced => if r.is_err() { return },
    }
    tracing::info!("audit: every watch has listed");

    // The webhook's decisions, on the same policy, injection settings and identity sources, but
    // reading ServiceAccounts and Namespaces from the reflectors only: a miss is no object, not
    // a live GET per object and run. Its lookups are not counted in the lookup metrics.
    let identities = decisions
        .mutator
        .identities
        .clone()
        .without_observer()
        .with_service_accounts(Arc::new(ReflectedServiceAccounts(
            watches.service_accounts.clone(),
        )));
    let mutator = Mutator {
        injection: decisions.mutator.injection.clone(),
        identities: identities.clone(),
        failure_mode: decisions.mutator.failure_mode,
        policy: decisions.validator.shared_policy(),
    };
    let validator = Validator::new(crate::policy::Policy::off(), identities)
        .with_shared_policy(decisions.validator.shared_policy())
        .with_namespaces(Arc::new(ReflectedNamespaces(watches.namespaces.clone())));

    let mut sent: HashMap<(String, &'static str), Instant> = HashMap::new();
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let objects = ClusterObjects {
            namespaces: typed_values(&namespaces),
            service_accounts: typed_values(&service_accounts),
            workloads: workloads.iter().flat_map(values).collect(),
            pods: values(&pods),
        };
        let decider = Decider::new(&validator, &mutator);
        let report = findings::AuditReport {
            findings: findings::audit(&decider, &objects).await,
            scanned: objects.counts(),
        };
        metrics.record(&report);
        tracing::info!(
            findings = report.findings.len(),
            "audit: {}",
            crate::audit::render::audit_summary(&report)
        );
        events.publish(&report.findings, &mut sent).await;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = repair.run(&report.findings, &events) => {}
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripped_objects_keep_what_the_decisions_read() {
        let mut pod: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "n", "uid": "u",
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}", "a": "b"},
                "managedFields": [{"manager": "kubectl"}]},
            "spec": {"serviceAccountName": "sa", "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready"}]}
        }))
        .unwrap();
        strip(&mut pod);
        let v = serde_json::to_value(&pod).unwrap();
        assert_eq!(v["status"], serde_json::json!({"phase": "Running"}));
        assert_eq!(v["metadata"]["annotations"], serde_json::json!({"a": "b"}));
        assert!(v["metadata"]["managedFields"].is_null());
        assert_eq!(v["spec"]["serviceAccountName"], "sa");
        let mut deployment: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"replicas": 1}, "status": {"replicas": 1}
        }))
        .unwrap();
        strip(&mut deployment);
        let v = serde_json::to_value(&deployment).unwrap();
        assert!(v.get("status").is_none() && v["spec"]["replicas"] == 1);
    }
}
