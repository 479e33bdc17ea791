//! `serve --audit-interval D`: the audit in the background, on the webhook's own decisions and
//! identity sources, from watches rather than repeated lists: after one initial list per
//! resource the API server only sends changes. Results become `audit_violations{namespace,reason}`
//! gauges and (rate-limited) Kubernetes Events on the offending objects.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Namespace, ObjectReference, Pod, ServiceAccount};
use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, TypeMeta};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::cluster::ClusterObjects;
use super::decide::Decider;
use super::findings::{self, Finding};
use crate::server::app::App;

/// Events per audit run at most; the rest wait for a later run.
pub const MAX_EVENTS_PER_RUN: usize = 20;

/// An object gets the same event (reason) again only after this long.
pub const EVENT_REPEAT: Duration = Duration::from_secs(3600);

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

fn resource<K: Resource<DynamicType = ()>>() -> ApiResource {
    ApiResource::erase::<K>(&())
}

/// Starts a reflector of `ar` (managed fields dropped: nothing reads them).
fn watch(client: &Client, ar: ApiResource, stop: &CancellationToken) -> Watched {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let writer = reflector::store::Writer::new(ar.clone());
    let store = writer.as_reader();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(|o: &mut DynamicObject| o.metadata.managed_fields = None)
        .reflect(writer)
        .applied_objects();
    let stop = stop.clone();
    let plural = ar.plural.clone();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                next = stream.next() => match next {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => tracing::warn!(error = %e, resource = %plural, "audit watch error; retrying"),
                    None => return,
                },
            }
        }
    });
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

/// Runs the audit every `interval` until `stop`, on `app`'s decisions.
pub async fn run(
    client: Client,
    app: Arc<App>,
    metrics: AuditMetrics,
    interval: Duration,
    stop: CancellationToken,
) {
    // Pods and workloads are not otherwise watched by the webhook; ServiceAccounts and
    // Namespaces are watched again here with whole metadata (the identity stores keep only
    // what injection reads).
    let namespaces = watch(&client, resource::<Namespace>(), &stop);
    let service_accounts = watch(&client, resource::<ServiceAccount>(), &stop);
    let workloads: Vec<Watched> = [
        resource::<Deployment>(),
        resource::<StatefulSet>(),
        resource::<DaemonSet>(),
        resource::<ReplicaSet>(),
        resource::<Job>(),
        resource::<CronJob>(),
    ]
    .into_iter()
    .map(|ar| watch(&client, ar, &stop))
    .collect();
    let pods = watch(&client, resource::<Pod>(), &stop);
    let recorder = Recorder::new(
        client,
        Reporter {
            controller: "pod-identity-webhook".into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    );
    let mut sent: HashMap<(String, &'static str), Instant> = HashMap::new();
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let all = std::iter::once(&namespaces)
            .chain([&service_accounts, &pods])
            .chain(&workloads);
        let mut synced = true;
        for w in all {
            synced &= tokio::time::timeout(Duration::ZERO, w.store.wait_until_ready())
                .await
                .is_ok();
        }
        if !synced {
            tracing::debug!("background audit waits for its watches' first lists");
            continue;
        }
        let objects = ClusterObjects {
            namespaces: values(&namespaces),
            service_accounts: values(&service_accounts),
            workloads: workloads.iter().flat_map(values).collect(),
            pods: values(&pods),
        };
        let decider = Decider::new(&app.validator, &app.mutator);
        let report = findings::AuditReport {
            findings: findings::audit(&decider, &objects).await,
            scanned: objects.counts(),
        };
        metrics.record(&report);
        tracing::info!(
            findings = report.findings.len(),
            "background audit: {}",
            super::render::audit_summary(&report)
        );
        publish_events(&recorder, &report.findings, &mut sent).await;
    }
}

/// One event per object and reason per [`EVENT_REPEAT`], at most [`MAX_EVENTS_PER_RUN`] a run.
async fn publish_events(
    recorder: &Recorder,
    findings: &[Finding],
    sent: &mut HashMap<(String, &'static str), Instant>,
) {
    let now = Instant::now();
    sent.retain(|_, at| now.duration_since(*at) < EVENT_REPEAT);
    let mut published = 0;
    for f in findings {
        let Some(uid) = &f.uid else { continue };
        let key = (uid.clone(), f.reason.as_str());
        if sent.contains_key(&key) {
            continue;
        }
        if published >= MAX_EVENTS_PER_RUN {
            break;
        }
        let reference = ObjectReference {
            api_version: Some(f.api_version.clone()),
            kind: Some(f.kind.clone()),
            name: Some(f.name.clone()),
            namespace: Some(f.namespace.clone()),
            uid: Some(uid.clone()),
            ..ObjectReference::default()
        };
        let event = Event {
            type_: EventType::Warning,
            reason: event_reason(f),
            note: Some(cut(&f.message, 1000)),
            action: "Audit".into(),
            secondary: None,
        };
        match recorder.publish(&event, &reference).await {
            Ok(()) => {
                sent.insert(key, now);
                published += 1;
            }
            Err(e) => {
                tracing::warn!(error = %e, kind = %f.kind, namespace = %f.namespace, name = %f.name, "cannot publish the audit event");
                // The API refuses events (RBAC, overload): try again next run, not now.
                return;
            }
        }
    }
}

/// The event reason: CamelCase, as Kubernetes reasons are.
fn event_reason(f: &Finding) -> String {
    f.reason
        .as_str()
        .split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|first| first.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    text.chars().take(max - 3).collect::<String>() + "..."
}
