//! The controller's audit (`controller --audit-interval D`): the webhook's decisions, run on
//! watches rather than repeated lists: after one initial list per resource the API server only
//! sends changes, and each run decides from memory.
//!
//! ServiceAccounts and Namespaces come from the reflectors the decisions read anyway (no second
//! watch). Pods and the apps/batch workloads get one watch each ([`WATCHED`]), started when this
//! replica leads and stopped when it no longer does, each object kept as its projection (what the
//! decisions read, `audit::projection`). Results
//! become `audit_violations{namespace,reason}` gauges, rate-limited Kubernetes Events on the
//! offending objects and, with `--repair`, evictions ([`crate::audit::repair`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::borrow::Cow;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::core::{ApiResource, DynamicResourceScope};
use kube::runtime::reflector::{self, Store};
use kube::{Client, Resource};
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
use crate::audit::projection::Projected;
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

/// A watched pod or workload as the audit keeps it: the name and namespace its store entry is
/// keyed by, the `resourceVersion` the watch resumes from, and its [`Projected`] form. Read
/// straight from the API server's JSON: the whole object lives only while it is projected.
#[derive(Debug, Clone)]
struct Kept {
    metadata: ObjectMeta,
    projected: Projected,
}

impl<'de> serde::Deserialize<'de> for Kept {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let object = Value::deserialize(d)?;
        let meta = &object["metadata"];
        let text = |key: &str| meta[key].as_str().map(str::to_string);
        Ok(Self {
            metadata: ObjectMeta {
                name: text("name"),
                namespace: text("namespace"),
                resource_version: text("resourceVersion"),
                ..ObjectMeta::default()
            },
            projected: Projected::of(&object),
        })
    }
}

impl Resource for Kept {
    type DynamicType = ApiResource;
    type Scope = DynamicResourceScope;

    fn group(dt: &ApiResource) -> Cow<'_, str> {
        dt.group.as_str().into()
    }
    fn version(dt: &ApiResource) -> Cow<'_, str> {
        dt.version.as_str().into()
    }
    fn kind(dt: &ApiResource) -> Cow<'_, str> {
        dt.kind.as_str().into()
    }
    fn api_version(dt: &ApiResource) -> Cow<'_, str> {
        dt.api_version.as_str().into()
    }
    fn plural(dt: &ApiResource) -> Cow<'_, str> {
        dt.plural.as_str().into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// The watched objects of one resource.
struct Watched {
    store: Store<Kept>,
}

/// Starts a reflector of `ar` that runs until `stop`, retrying with backoff. Objects are typed
/// as they arrive (list items carry no `apiVersion` and `kind`; the decisions read them).
fn watch(client: &Client, ar: ApiResource, stop: &CancellationToken) -> Watched {
    let api: Api<Kept> = Api::all_with(client.clone(), &ar);
    let writer = reflector::store::Writer::new(ar.clone());
    let store = writer.as_reader();
    let log = WatchLog {
        what: ar.plural.clone(),
        failed: "audit watch failed; retrying with backoff",
    };
    let typed = move |k: &mut Kept| {
        k.projected = k.projected.with_type(&ar.api_version, &ar.kind);
    };
    crate::kubernetes::reflector::run(api, writer, typed, log, stop.clone());
    Watched { store }
}

/// The kept objects of a store (shared, not copied).
fn kept(w: &Watched) -> impl Iterator<Item = Projected> + '_ {
    w.store.state().into_iter().map(|k| k.projected.clone())
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
            workloads: workloads.iter().flat_map(kept).collect(),
            pods: kept(&pods).collect(),
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
