//! The controller's audit (`controller --audit-interval D`): the webhook's decisions, run on
//! watches rather than repeated lists: after one initial list per resource the API server only
//! sends changes, and each run decides from memory.
//!
//! ServiceAccounts and Namespaces come from the reflectors the decisions read anyway (no second
//! watch). Pods and the apps/batch workloads get one watch each ([`WATCHED`]), started when this
//! replica leads and stopped when it no longer does, stripped to what the decisions read. Results
//! become `audit_violations{namespace,reason}` gauges, rate-limited Kubernetes Events on the
//! offending objects and, with `--repair`, evictions ([`super::repair`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::PostParams;
use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, TypeMeta};
use kube::runtime::reflector::{self, Store};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::repair::Repair;
use crate::admission::Mutator;
use crate::admission::validate::Validator;
use crate::audit::cluster::{ClusterObjects, resource, workload_resources};
use crate::audit::decide::Decider;
use crate::audit::findings::{self, Finding};
use crate::identity::ServiceAccountStore;
use crate::identity::kube::{KubeServiceAccounts, ReflectedServiceAccounts};
use crate::kubernetes::reflector::WatchLog;
use crate::namespaces::{KubeNamespaces, NamespaceStore, ReflectedNamespaces};

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

/// Most bytes of an event's note (the API server refuses longer ones).
pub const NOTE_MAX_BYTES: usize = 1024;

/// The ServiceAccount and Namespace watches the decisions read, which the audit reads too.
#[derive(Clone)]
pub struct ClusterWatches {
    pub client: Client,
    pub service_accounts: Arc<KubeServiceAccounts>,
    pub namespaces: Arc<KubeNamespaces>,
}

/// Events per audit run at most; the rest wait for a later run.
pub const MAX_EVENTS_PER_RUN: usize = 20;

/// An object gets the same event (reason) again only after this long.
pub const EVENT_REPEAT: Duration = Duration::from_secs(3600);

/// The events' `reportingController`.
pub const REPORTING_CONTROLLER: &str = "pod-identity-webhook";

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

/// The findings that get an event now: not evented for the same object and reason within
/// [`EVENT_REPEAT`] (`sent`, pruned here), and at most [`MAX_EVENTS_PER_RUN`].
fn due<'a>(
    findings: &'a [Finding],
    sent: &mut HashMap<(String, &'static str), Instant>,
    now: Instant,
) -> Vec<&'a Finding> {
    sent.retain(|_, at| now.duration_since(*at) < EVENT_REPEAT);
    let mut seen = std::collections::HashSet::new();
    findings
        .iter()
        .filter(|f| {
            f.uid.as_ref().is_some_and(|uid| {
                let key = (uid.clone(), f.reason.as_str());
                !sent.contains_key(&key) && seen.insert(key)
            })
        })
        .take(MAX_EVENTS_PER_RUN)
        .collect()
}

/// Writes the audit's and the repair's events (`events.k8s.io/v1`).
pub struct EventWriter {
    client: Client,
    /// `reportingInstance`: the pod's name.
    instance: String,
}

impl EventWriter {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            instance: std::env::var("POD_NAME")
                .ok()
                .filter(|n| !n.is_empty() && n.len() <= 128)
                .unwrap_or_else(|| REPORTING_CONTROLLER.into()),
        }
    }

    /// One event on `f`'s object: `reason` (CamelCase), `action`, `note`. An event of the same
    /// name (object, reason, hour) already there counts as recorded.
    pub async fn record(
        &self,
        f: &Finding,
        reason: &str,
        action: &str,
        note: &str,
    ) -> Result<(), kube::Error> {
        let mut event = self.event(f, crate::telemetry::metrics::unix_now());
        let uid = f.uid.clone().unwrap_or_default();
        event.metadata.name = Some(event_name(
            &f.name,
            &uid,
            reason,
            crate::telemetry::metrics::unix_now(),
        ));
        event.reason = Some(reason.into());
        event.action = Some(action.into());
        event.note = Some(cut(note, NOTE_MAX_BYTES));
        event.type_ = Some("Normal".into());
        let api: Api<Event> = Api::namespaced(self.client.clone(), &f.namespace);
        match api.create(&PostParams::default(), &event).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.is_already_exists() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// One event per object and reason per [`EVENT_REPEAT`], at most [`MAX_EVENTS_PER_RUN`] a
    /// run. An event's name is the same for every replica within the hour ([`event_name`]), so
    /// after a change of leader the API server keeps the first and answers the others 409,
    /// which counts as recorded.
    async fn publish(
        &self,
        findings: &[Finding],
        sent: &mut HashMap<(String, &'static str), Instant>,
    ) {
        let now = Instant::now();
        let unix_now = crate::telemetry::metrics::unix_now();
        for f in due(findings, sent, now) {
            let event = self.event(f, unix_now);
            let api: Api<Event> = Api::namespaced(self.client.clone(), &f.namespace);
            match api.create(&PostParams::default(), &event).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.is_already_exists() => {}
                Err(e) => {
                    tracing::warn!(error = %e, kind = %f.kind, namespace = %f.namespace, name = %f.name, "cannot record the audit event");
                    // The API refuses events (RBAC, overload): try again next run, not now.
                    return;
                }
            }
            if let Some(uid) = &f.uid {
                sent.insert((uid.clone(), f.reason.as_str()), now);
            }
        }
    }

    fn event(&self, f: &Finding, unix_now: i64) -> Event {
        let uid = f.uid.clone().unwrap_or_default();
        Event {
            metadata: ObjectMeta {
                name: Some(event_name(&f.name, &uid, f.reason.as_str(), unix_now)),
                namespace: Some(f.namespace.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
            type_: Some("Warning".into()),
            reason: Some(event_reason(f)),
            action: Some("Audit".into()),
            note: Some(cut(&f.message, NOTE_MAX_BYTES)),
            regarding: Some(ObjectReference {
                api_version: Some(f.api_version.clone()),
                kind: Some(f.kind.clone()),
                name: Some(f.name.clone()),
                namespace: Some(f.namespace.clone()),
                uid: Some(uid),
                ..ObjectReference::default()
            }),
            reporting_controller: Some(REPORTING_CONTROLLER.into()),
            reporting_instance: Some(self.instance.clone()),
            ..Event::default()
        }
    }
}

/// `<object>.<hash>`: the hash of the object's uid, the reason and the hour, so every replica
/// names the same event alike within an hour; at most 253 characters.
fn event_name(object: &str, uid: &str, reason: &str, unix_now: i64) -> String {
    use sha2::Digest;
    let hour = unix_now.div_euclid(EVENT_REPEAT.as_secs() as i64);
    let digest = sha2::Sha256::digest(format!("{uid}/{reason}/{hour}"));
    let hash: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let mut end = object.len().min(200);
    while !object.is_char_boundary(end) {
        end -= 1;
    }
    let prefix = object[..end].trim_end_matches(['.', '-']);
    format!("{prefix}.{hash}")
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

/// `text` in at most `max` bytes, cut on a character boundary with `...` when too long.
fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::findings::{Reason, Severity};

    fn finding(uid: &str, reason: Reason) -> Finding {
        Finding {
            namespace: "team-a".into(),
            kind: "Pod".into(),
            name: uid.into(),
            reason,
            severity: Severity::Restart,
            service_account: None,
            message: "m".into(),
            owner: None,
            uid: Some(uid.into()),
            api_version: "v1".into(),
        }
    }

    #[test]
    fn events_are_due_once_per_object_and_reason_per_hour_and_twenty_a_run() {
        let now = Instant::now();
        let mut sent = HashMap::new();
        let findings: Vec<Finding> = (0..30)
            .map(|i| finding(&format!("uid-{i}"), Reason::NeedsRestart))
            .chain([
                finding("uid-0", Reason::NoIdentity),
                finding("uid-0", Reason::NoIdentity),
            ])
            .collect();
        let first = due(&findings, &mut sent, now);
        assert_eq!(first.len(), MAX_EVENTS_PER_RUN);
        for f in &first {
            sent.insert((f.uid.clone().unwrap(), f.reason.as_str()), now);
        }
        // The next run: the other ten and uid-0's second reason, once.
        let second = due(&findings, &mut sent, now + Duration::from_secs(60));
        assert_eq!(second.len(), 11, "{second:?}");
        assert!(
            second
                .iter()
                .all(|f| !sent.contains_key(&(f.uid.clone().unwrap(), f.reason.as_str())))
        );
        for f in &second {
            sent.insert((f.uid.clone().unwrap(), f.reason.as_str()), now);
        }
        assert!(due(&findings, &mut sent, now + Duration::from_secs(120)).is_empty());
        // An hour on, they are due again.
        assert_eq!(
            due(&findings, &mut sent, now + EVENT_REPEAT).len(),
            MAX_EVENTS_PER_RUN
        );
        // Without a uid there is nothing to attach the event to.
        let mut no_uid = finding("x", Reason::Policy);
        no_uid.uid = None;
        assert!(due(&[no_uid], &mut HashMap::new(), now).is_empty());
    }

    #[test]
    fn event_names_agree_across_replicas_within_the_hour() {
        let at = 1_800_000_000;
        let name = event_name("carts", "uid-1", "needs-restart", at);
        assert!(name.starts_with("carts."), "{name}");
        assert_eq!(name, event_name("carts", "uid-1", "needs-restart", at + 1));
        assert_ne!(name, event_name("carts", "uid-1", "no-identity", at));
        assert_ne!(name, event_name("carts", "uid-2", "needs-restart", at));
        assert_ne!(
            name,
            event_name("carts", "uid-1", "needs-restart", at + 3600)
        );
        let long = "a".repeat(253);
        assert!(event_name(&long, "u", "policy", at).len() <= 253);
    }

    #[test]
    fn reasons_are_camel_case_and_notes_fit_the_api_limit() {
        assert_eq!(
            event_reason(&finding("u", Reason::IrsaWithAssociation)),
            "IrsaWithAssociation"
        );
        assert_eq!(
            event_reason(&finding("u", Reason::NoIdentity)),
            "NoIdentity"
        );
        let long = "é".repeat(NOTE_MAX_BYTES);
        let note = cut(&long, NOTE_MAX_BYTES);
        assert!(note.len() <= NOTE_MAX_BYTES && note.ends_with("..."));
        assert_eq!(cut("short", NOTE_MAX_BYTES), "short");
    }

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
