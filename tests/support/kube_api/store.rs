//! The fake API server's store: the resources it serves (where each lives, its kind and
//! apiVersion), the objects, and the history of writes that lists and watches agree on
//! (resourceVersions, the changes watches stream); the [`Cluster`] state every handler shares;
//! writes, and JSON merge patches (a changed `spec` bumps `metadata.generation`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::token_reviews::TokenReviews;

/// Where a resource lives: (API prefix, plural, kind, apiVersion, namespaced).
pub(super) type Resource = (&'static str, &'static str, &'static str, &'static str, bool);

pub(super) const RESOURCES: [Resource; 10] = [
    ("/api/v1", "serviceaccounts", "ServiceAccount", "v1", true),
    ("/api/v1", "namespaces", "Namespace", "v1", false),
    ("/api/v1", "pods", "Pod", "v1", true),
    ("/api/v1", "nodes", "Node", "v1", false),
    (
        "/apis/apps/v1",
        "deployments",
        "Deployment",
        "apps/v1",
        true,
    ),
    (
        "/apis/apps/v1",
        "statefulsets",
        "StatefulSet",
        "apps/v1",
        true,
    ),
    ("/apis/apps/v1", "daemonsets", "DaemonSet", "apps/v1", true),
    (
        "/apis/apps/v1",
        "replicasets",
        "ReplicaSet",
        "apps/v1",
        true,
    ),
    ("/apis/batch/v1", "jobs", "Job", "batch/v1", true),
    ("/apis/batch/v1", "cronjobs", "CronJob", "batch/v1", true),
];

pub(super) type ObjectKey = (String, String, String); // (plural, namespace or "", name)

/// The resource of an object, from its `kind`, and the object's key.
pub(super) fn resource_and_key(object: &Value) -> (&'static Resource, ObjectKey) {
    let kind = object["kind"].as_str().expect("object has a kind");
    let res = RESOURCES
        .iter()
        .find(|r| r.2 == kind)
        .unwrap_or_else(|| panic!("the fake does not serve {kind}"));
    let text = |field: &str| {
        object["metadata"][field]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    (res, (res.1.to_string(), text("namespace"), text("name")))
}

/// The object as list items and the store hold it: without kind and apiVersion.
pub(super) fn without_kind(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("kind");
        o.remove("apiVersion");
    }
    v
}

pub(super) fn with_kind(mut v: Value, kind: &str, api_version: &str) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.insert("kind".into(), json!(kind));
        o.insert("apiVersion".into(), json!(api_version));
    }
    v
}

/// One change, as a watch streams it.
pub(super) struct WatchEvent {
    pub(super) plural: String,
    /// "" for cluster-scoped objects and bookmarks (sent to every watch of `plural`).
    pub(super) namespace: String,
    pub(super) resource_version: u64,
    pub(super) line: String,
}

/// The resourceVersion of the last write, and the changes watches stream.
pub(super) struct History {
    pub(super) resource_version: u64,
    pub(super) events: Vec<WatchEvent>,
}

impl History {
    /// The resourceVersion of the next write: after every one a watch has seen.
    fn next(&mut self) -> u64 {
        let last = self.events.last().map_or(0, |e| e.resource_version);
        self.resource_version = self.resource_version.max(last) + 1;
        self.resource_version
    }
}

pub(super) struct Cluster {
    /// Listed objects (without kind/apiVersion).
    pub(super) objects: Mutex<BTreeMap<ObjectKey, Value>>,
    /// Objects that answer single GETs only (created after the list).
    pub(super) unlisted: Mutex<BTreeMap<ObjectKey, Value>>,
    /// Locked before `objects` by every write, so lists and watches agree.
    pub(super) history: Mutex<History>,
    /// Bumped on every change, to wake the open watches.
    pub(super) changed: tokio::sync::watch::Sender<usize>,
    /// Every request but TokenReviews, Events and `/version`: "METHOD path?query".
    pub(super) requests: Mutex<Vec<String>>,
    /// Every PATCH: (path, content type, body).
    pub(super) patches: Mutex<Vec<(String, String, Value)>>,
    /// "plural/namespace/name" of workloads whose rollouts never finish.
    pub(super) stuck: Mutex<BTreeSet<String>>,
    /// Plurals answered with 403.
    pub(super) forbidden: Mutex<BTreeSet<String>>,
    /// Events created (`events.k8s.io/v1`), as posted.
    pub(super) events: Mutex<Vec<Value>>,
    pub(super) reviews: Arc<TokenReviews>,
    /// Watches that started before this resourceVersion are expired (`410 Gone`), as after an
    /// etcd compaction ([`FakeKubeApi::expire_watches`]).
    pub(super) compacted: std::sync::atomic::AtomicU64,
}

impl Cluster {
    pub(super) fn new(resource_version: u64) -> Self {
        Self {
            objects: Default::default(),
            unlisted: Default::default(),
            history: Mutex::new(History {
                resource_version,
                events: Vec::new(),
            }),
            changed: tokio::sync::watch::channel(0).0,
            requests: Default::default(),
            patches: Default::default(),
            stuck: Default::default(),
            forbidden: Default::default(),
            events: Default::default(),
            reviews: Default::default(),
            compacted: Default::default(),
        }
    }

    /// Writes `object` (with kind and apiVersion) as `event` (`ADDED`, `MODIFIED`, `DELETED`)
    /// with the next resourceVersion; lists answer the new state and watches get the event,
    /// the object as written.
    pub(super) fn write(&self, event: &str, object: Value) -> Value {
        self.write_as(event, object, true)
    }

    /// [`Cluster::write`]; with `watched` false no watch ever gets the event (as if compacted
    /// away): only a list shows the change.
    pub(super) fn write_as(&self, event: &str, object: Value, watched: bool) -> Value {
        let (_, key) = resource_and_key(&object);
        let mut history = self.history.lock().unwrap();
        let rv = history.next();
        let mut object = object;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        {
            let mut objects = self.objects.lock().unwrap();
            objects.remove(&key);
            if event != "DELETED" {
                objects.insert(key.clone(), without_kind(object.clone()));
            }
        }
        if watched {
            history.events.push(WatchEvent {
                plural: key.0,
                namespace: key.1,
                resource_version: rv,
                line: json!({"type": event, "object": object}).to_string(),
            });
        }
        drop(history);
        self.changed.send_modify(|n| *n += 1);
        object
    }
}

impl Cluster {
    /// Applies a JSON merge patch to a stored object (a changed `spec` bumps
    /// `metadata.generation`); the object as the API server answers it, if it exists.
    pub(super) fn patch(&self, res: &Resource, key: &ObjectKey, patch: &Value) -> Option<Value> {
        let mut patched = self.objects.lock().unwrap().get(key)?.clone();
        let before = patched["spec"].clone();
        json_patch::merge(&mut patched, patch);
        if patched["spec"] != before {
            let g = patched["metadata"]["generation"].as_i64().unwrap_or(1);
            patched["metadata"]["generation"] = json!(g + 1);
        }
        Some(self.write("MODIFIED", with_kind(patched, res.2, res.3)))
    }
}
