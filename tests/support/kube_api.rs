//! A fake Kubernetes API server over plain HTTP on 127.0.0.1, one for every test that talks to a
//! cluster, answering in the shapes a real kube-apiserver v1.24 answers
//! (`fixtures/apiserver-v1.24/kube-api/`):
//!
//! - one store of ServiceAccounts, Namespaces, Nodes, pods and workloads, with lists
//!   (`{kind: XList, apiVersion, metadata: {resourceVersion, continue, remainingItemCount}, items}`,
//!   items without kind/apiVersion, `limit`/`continue` paging in key order), single GETs,
//!   watches from a list's `resourceVersion` (one `{"type", "object"}` JSON line per change, then
//!   open and quiet), and PATCH as JSON merge patch (RFC 7386; other content types refused with
//!   415 as the server does);
//! - `TokenReview`s of the tokens a test registers (see [`TokenReviews`]);
//! - `events.k8s.io/v1` Events, created with the API server's validation and answer.
//!
//! [`FakeKubeApi::start`] serves the captured cluster (its ServiceAccount list, watch events and
//! Namespace list); [`FakeKubeApi::empty`] an empty one that tests fill with
//! [`FakeKubeApi::put`]. A PATCH that changes a workload's pod template bumps
//! `metadata.generation`; a small controller then replaces the workload's pods with pods of its
//! template, stored as is (no webhook runs here: a test admits them with the program's own
//! mutation), and reports the rollout done (unless the workload was marked stuck with
//! [`FakeKubeApi::stall`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::{Served, fixtures_dir};

fn captured(name: &str) -> String {
    let path = fixtures_dir().join("kube-api").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The user of the kubeconfigs the fake writes (and of its 403 answers).
const USER: &str = "tester";

/// The bearer token the fake API server requires of every request (401 otherwise, as
/// kube-apiserver answers an unknown token); the kubeconfigs and clients of this module carry it.
pub const TOKEN: &str = "fake-api-server-token-5f0c";

/// Refuses a request without [`TOKEN`] as kube-apiserver does: 401 with an `Unauthorized` Status.
async fn require_token(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer == Some(TOKEN) {
        return next.run(req).await;
    }
    json_response(
        StatusCode::UNAUTHORIZED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "Unauthorized", "reason": "Unauthorized", "code": 401}),
    )
}

/// Where a resource lives: (API prefix, plural, kind, apiVersion, namespaced).
type Resource = (&'static str, &'static str, &'static str, &'static str, bool);

const RESOURCES: [Resource; 10] = [
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

type ObjectKey = (String, String, String); // (plural, namespace or "", name)

/// The resource of an object, from its `kind`, and the object's key.
fn resource_and_key(object: &Value) -> (&'static Resource, ObjectKey) {
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
fn without_kind(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("kind");
        o.remove("apiVersion");
    }
    v
}

fn with_kind(mut v: Value, kind: &str, api_version: &str) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.insert("kind".into(), json!(kind));
        o.insert("apiVersion".into(), json!(api_version));
    }
    v
}

/// One change, as a watch streams it.
struct WatchEvent {
    plural: String,
    /// "" for cluster-scoped objects and bookmarks (sent to every watch of `plural`).
    namespace: String,
    resource_version: u64,
    line: String,
}

/// The resourceVersion of the last write, and the changes watches stream.
struct History {
    resource_version: u64,
    events: Vec<WatchEvent>,
}

impl History {
    /// The resourceVersion of the next write: after every one a watch has seen.
    fn next(&mut self) -> u64 {
        let last = self.events.last().map_or(0, |e| e.resource_version);
        self.resource_version = self.resource_version.max(last) + 1;
        self.resource_version
    }
}

struct Cluster {
    /// Listed objects (without kind/apiVersion).
    objects: Mutex<BTreeMap<ObjectKey, Value>>,
    /// Objects that answer single GETs only (created after the list).
    unlisted: Mutex<BTreeMap<ObjectKey, Value>>,
    /// Locked before `objects` by every write, so lists and watches agree.
    history: Mutex<History>,
    /// Bumped on every change, to wake the open watches.
    changed: tokio::sync::watch::Sender<usize>,
    /// Every request but TokenReviews, Events and `/version`: "METHOD path?query".
    requests: Mutex<Vec<String>>,
    /// Every PATCH: (path, content type, body).
    patches: Mutex<Vec<(String, String, Value)>>,
    /// "plural/namespace/name" of workloads whose rollouts never finish.
    stuck: Mutex<BTreeSet<String>>,
    /// Plurals answered with 403.
    forbidden: Mutex<BTreeSet<String>>,
    /// Events created (`events.k8s.io/v1`), as posted.
    events: Mutex<Vec<Value>>,
    reviews: Arc<TokenReviews>,
    /// Watches that started before this resourceVersion are expired (`410 Gone`), as after an
    /// etcd compaction ([`FakeKubeApi::expire_watches`]).
    compacted: std::sync::atomic::AtomicU64,
}

impl Cluster {
    fn new(resource_version: u64) -> Self {
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
    fn write(&self, event: &str, object: Value) -> Value {
        self.write_as(event, object, true)
    }

    /// [`Cluster::write`]; with `watched` false no watch ever gets the event (as if compacted
    /// away): only a list shows the change.
    fn write_as(&self, event: &str, object: Value, watched: bool) -> Value {
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

/// The tokens the fake API server knows, and how it answers `TokenReview`s of them: exactly
/// what kube-apiserver answers (v1.24+): the spec echoed back; for a valid token of a pod,
/// `authenticated`, the ServiceAccount user with its groups and the pod-binding `extra`, and the
/// audiences it was checked against; for anything else no `authenticated` (false is omitted),
/// an empty `user` and the authenticator's error.
#[derive(Default)]
pub struct TokenReviews {
    tokens: std::sync::Mutex<std::collections::HashMap<String, PodToken>>,
    /// Every review answered.
    pub count: AtomicUsize,
    /// Milliseconds each review takes (a slow API server).
    pub delay_ms: std::sync::atomic::AtomicU64,
}

/// A token bound to a pod.
#[derive(Clone, Debug)]
pub struct PodToken {
    pub namespace: String,
    pub service_account: String,
    pub pod_name: String,
    pub pod_uid: String,
    /// The audiences the token was issued for.
    pub audiences: Vec<String>,
}

impl PodToken {
    /// A projected token for `pods.eks.amazonaws.com`, as the webhook mounts it.
    pub fn pod(namespace: &str, service_account: &str, pod_name: &str) -> Self {
        Self {
            namespace: namespace.into(),
            service_account: service_account.into(),
            pod_name: pod_name.into(),
            pod_uid: format!(
                "{:08x}-0000-4000-8000-{:012x}",
                pod_name.len(),
                fxhash(pod_name)
            ),
            audiences: vec!["pods.eks.amazonaws.com".into()],
        }
    }
}

impl PodToken {
    /// A ServiceAccount token bound to no pod (a legacy Secret token, or `kubectl create
    /// token` without `--bound-object-kind Pod`): authenticated, without the pod's `extra`.
    pub fn unbound(namespace: &str, service_account: &str, audience: &str) -> Self {
        Self {
            namespace: namespace.into(),
            service_account: service_account.into(),
            pod_name: String::new(),
            pod_uid: String::new(),
            audiences: vec![audience.into()],
        }
    }
}

fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325_u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    }) & 0xffff_ffff_ffff
}

impl TokenReviews {
    pub fn add(&self, token: &str, pod: PodToken) {
        self.tokens.lock().unwrap().insert(token.to_string(), pod);
    }

    /// The token stops being valid (its pod was deleted).
    pub fn revoke(&self, token: &str) {
        self.tokens.lock().unwrap().remove(token);
    }

    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    fn status(&self, token: &str, audiences: &[String]) -> Value {
        let Some(pod) = self.tokens.lock().unwrap().get(token).cloned() else {
            return json!({"user": {}, "error": "[invalid bearer token, square/go-jose: error in cryptographic primitive, token lookup failed]"});
        };
        let wanted: Vec<String> = if audiences.is_empty() {
            vec!["https://kubernetes.default.svc.cluster.local".into()]
        } else {
            audiences.to_vec()
        };
        let matched: Vec<&String> = wanted
            .iter()
            .filter(|a| pod.audiences.contains(a))
            .collect();
        if matched.is_empty() {
            return json!({"user": {}, "error": format!(
                "[invalid bearer token, token audiences {:?} is invalid for the target audiences {:?}]",
                pod.audiences, wanted
            )});
        }
        let extra = if pod.pod_name.is_empty() {
            json!({"authentication.kubernetes.io/credential-id": ["JTI=0d9e8f7a-6b5c-4d3e-8f2a-1b0c9d8e7f6a"]})
        } else {
            json!({
                "authentication.kubernetes.io/credential-id": ["JTI=6a2b5c1e-7f3d-4e8a-9b0c-1d2e3f4a5b6c"],
                "authentication.kubernetes.io/node-name": ["kind-worker"],
                "authentication.kubernetes.io/node-uid": ["3f2e1d0c-b9a8-4765-8432-10fedcba9876"],
                "authentication.kubernetes.io/pod-name": [pod.pod_name],
                "authentication.kubernetes.io/pod-uid": [pod.pod_uid],
            })
        };
        json!({
            "authenticated": true,
            "user": {
                "username": format!("system:serviceaccount:{}:{}", pod.namespace, pod.service_account),
                "uid": "0c1a2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b",
                "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{}", pod.namespace), "system:authenticated"],
                "extra": extra,
            },
            "audiences": matched,
        })
    }
}

async fn token_review(State(f): State<Arc<Cluster>>, body: axum::body::Bytes) -> Response {
    let delay = f.reviews.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    f.reviews.count.fetch_add(1, Ordering::Relaxed);
    let Ok(review) = serde_json::from_slice::<Value>(&body) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "BadRequest", "code": 400, "message": "the body is not JSON"}),
        );
    };
    let spec = review["spec"].clone();
    let token = spec["token"].as_str().unwrap_or("");
    let audiences: Vec<String> = spec["audiences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let status = f.reviews.status(token, &audiences);
    json_response(
        StatusCode::CREATED,
        &json!({
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": null},
            "spec": spec,
            "status": status,
        }),
    )
}

async fn version() -> Response {
    json_response(
        StatusCode::OK,
        &json!({"major": "1", "minor": "24", "gitVersion": "v1.24.17", "gitCommit": "22a9682c8fe855c321be75c5faacde343f909b04",
                "gitTreeState": "clean", "buildDate": "2023-08-23T23:37:25Z", "goVersion": "go1.20.7", "compiler": "gc", "platform": "linux/amd64"}),
    )
}
fn json_response(status: StatusCode, v: &Value) -> Response {
    (
        status,
        [("content-type", "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn not_found(what: &str, name: &str) -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                "code": 404, "message": format!("{what} \"{name}\" not found")}),
    )
}
/// `POST /apis/events.k8s.io/v1/namespaces/{namespace}/events`, as kube-apiserver answers it:
/// the namespace must be the URL's, the fields events.k8s.io/v1 requires must be there
/// (`eventTime`, `reportingController`, `reportingInstance`, `action`, `reason`, a `type` of
/// Normal or Warning, a `note` of at most 1024 bytes, `regarding` in the event's namespace),
/// else 422 `Invalid` naming the fields; a name already taken in the namespace, 409
/// `AlreadyExists`; created, 201 with the stored object.
async fn create_event(
    State(f): State<Arc<Cluster>>,
    UrlPath(namespace): UrlPath<String>,
    body: axum::body::Bytes,
) -> Response {
    let Ok(mut event) = serde_json::from_slice::<Value>(&body) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf",
                    "reason": "UnsupportedMediaType", "code": 415}),
        );
    };
    if event["metadata"]["namespace"]
        .as_str()
        .is_some_and(|ns| ns != namespace)
    {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "the namespace of the provided object does not match the namespace sent on the request",
                    "reason": "BadRequest", "code": 400}),
        );
    }
    let name = event["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut causes = Vec::new();
    let mut invalid = |reason: &str, field: &str, message: &str| {
        causes.push(json!({"reason": reason, "message": message, "field": field}));
    };
    if name.is_empty() {
        invalid(
            "FieldValueRequired",
            "metadata.name",
            "Required value: name or generateName is required",
        );
    }
    let text = |field: &str| event[field].as_str().unwrap_or_default().to_string();
    if event["eventTime"].is_null() {
        invalid("FieldValueRequired", "eventTime", "Required value");
    }
    for field in [
        "reportingController",
        "reportingInstance",
        "action",
        "reason",
    ] {
        let value = text(field);
        if value.is_empty() {
            invalid("FieldValueRequired", field, "Required value");
        } else if value.len() > 128 {
            invalid(
                "FieldValueTooLong",
                field,
                "Too long: may not be longer than 128",
            );
        }
    }
    if !matches!(text("type").as_str(), "Normal" | "Warning") {
        invalid(
            "FieldValueNotSupported",
            "type",
            "Unsupported value: supported values: \"Normal\", \"Warning\"",
        );
    }
    if text("note").len() > 1024 {
        invalid(
            "FieldValueTooLong",
            "note",
            "Too long: may not be longer than 1024",
        );
    }
    if event["regarding"]["namespace"].as_str() != Some(namespace.as_str()) {
        invalid(
            "FieldValueInvalid",
            "regarding.namespace",
            "Invalid value: does not match event.namespace",
        );
    }
    if !causes.is_empty() {
        let fields: Vec<String> = causes
            .iter()
            .map(|c| {
                format!(
                    "{}: {}",
                    c["field"].as_str().unwrap(),
                    c["message"].as_str().unwrap()
                )
            })
            .collect();
        return json_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": format!("Event.events.k8s.io {name:?} is invalid: [{}]", fields.join(", ")),
                    "reason": "Invalid",
                    "details": {"name": name, "group": "events.k8s.io", "kind": "Event", "causes": causes},
                    "code": 422}),
        );
    }
    let mut events = f.events.lock().unwrap();
    if events
        .iter()
        .any(|e| e["metadata"]["namespace"] == namespace && e["metadata"]["name"] == name)
    {
        return json_response(
            StatusCode::CONFLICT,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": format!("events.events.k8s.io {name:?} already exists"),
                    "reason": "AlreadyExists",
                    "details": {"name": name, "group": "events.k8s.io", "kind": "events"},
                    "code": 409}),
        );
    }
    event["kind"] = json!("Event");
    event["apiVersion"] = json!("events.k8s.io/v1");
    event["metadata"]["namespace"] = json!(namespace);
    event["metadata"]["uid"] = json!(format!("8d2b7a40-0000-4000-8000-{:012}", events.len()));
    event["metadata"]["resourceVersion"] = json!((5000 + events.len()).to_string());
    event["metadata"]["creationTimestamp"] = json!("2026-12-03T06:00:00Z");
    event["metadata"]["managedFields"] = json!([{"manager": "pod-identity-webhook", "operation": "Update",
        "apiVersion": "events.k8s.io/v1", "time": "2026-12-03T06:00:00Z", "fieldsType": "FieldsV1",
        "fieldsV1": {"f:action": {}, "f:eventTime": {}, "f:note": {}, "f:reason": {}, "f:regarding": {},
                     "f:reportingController": {}, "f:reportingInstance": {}, "f:type": {}}}]);
    events.push(event.clone());
    json_response(StatusCode::CREATED, &event)
}
fn status_error(code: u16, reason: &str, message: String) -> Response {
    json_response(
        StatusCode::from_u16(code).unwrap(),
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message, "reason": reason, "code": code}),
    )
}

fn method_not_allowed() -> Response {
    status_error(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource".into(),
    )
}

/// The query's parameters, percent-decoded.
fn query_map(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            (
                k.to_string(),
                percent_encoding::percent_decode_str(v)
                    .decode_utf8_lossy()
                    .into_owned(),
            )
        })
        .collect()
}

/// Every request for a resource: lists, watches, single GETs and PATCHes.
async fn resource_request(
    State(s): State<Arc<Cluster>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Response {
    let q = uri.query().unwrap_or("").to_string();
    s.requests
        .lock()
        .unwrap()
        .push(format!("{method} {}?{q}", uri.path()));
    let path = uri.path();
    let Some(res) = RESOURCES.iter().find(|r| path.starts_with(r.0)) else {
        return not_found("path", path);
    };
    let rest: Vec<&str> = path[res.0.len()..]
        .trim_start_matches('/')
        .split('/')
        .collect();
    let find = |plural: &str, namespaced: Option<bool>| {
        RESOURCES
            .iter()
            .find(|r| r.0 == res.0 && r.1 == plural && namespaced.is_none_or(|n| r.4 == n))
    };
    let (res, ns, name) = match rest.as_slice() {
        [plural] => (find(plural, None), None, None),
        ["namespaces", ns, plural] => (find(plural, Some(true)), Some(*ns), None),
        ["namespaces", ns, plural, name] => (find(plural, Some(true)), Some(*ns), Some(*name)),
        [plural, name] => (find(plural, Some(false)), None, Some(*name)),
        _ => (None, None, None),
    };
    let Some(res) = res else {
        return not_found("path", path);
    };
    if s.forbidden.lock().unwrap().contains(res.1) {
        return status_error(
            403,
            "Forbidden",
            format!(
                "{} is forbidden: User \"{USER}\" cannot list resource \"{}\" in API group \"{}\" at the cluster scope",
                res.1,
                res.1,
                res.3.rsplit_once('/').map_or("", |(group, _)| group)
            ),
        );
    }
    let params = query_map(&q);
    let Some(name) = name else {
        if method != Method::GET {
            return method_not_allowed();
        }
        if params.get("watch").is_some_and(|w| w == "true") {
            let since = params
                .get("resourceVersion")
                .and_then(|rv| rv.parse().ok())
                .unwrap_or(0);
            return watch(s, res.1, ns, since);
        }
        return s.list(res, ns, &params);
    };
    let key = (
        res.1.to_string(),
        ns.unwrap_or("").to_string(),
        name.to_string(),
    );
    match method {
        Method::GET => {
            let found = s.objects.lock().unwrap().get(&key).cloned();
            let found = found.or_else(|| s.unlisted.lock().unwrap().get(&key).cloned());
            match found {
                Some(v) => json_response(StatusCode::OK, &with_kind(v, res.2, res.3)),
                None => not_found(res.1, name),
            }
        }
        Method::PATCH => {
            let content_type = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            if content_type != "application/merge-patch+json" {
                return status_error(
                    415,
                    "UnsupportedMediaType",
                    format!(
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {content_type})"
                    ),
                );
            }
            let Ok(patch) = serde_json::from_slice::<Value>(&body) else {
                return status_error(400, "BadRequest", "error decoding patch".into());
            };
            s.patches
                .lock()
                .unwrap()
                .push((path.to_string(), content_type, patch.clone()));
            let Some(updated) = s.patch(res, &key, &patch) else {
                return not_found(res.1, name);
            };
            let id = format!("{}/{}/{}", res.1, key.1, name);
            if ["deployments", "statefulsets", "daemonsets"].contains(&res.1)
                && !s.stuck.lock().unwrap().contains(&id)
            {
                let s = s.clone();
                let (plural, ns, name) = key.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    s.roll(&plural, &ns, &name);
                });
            }
            json_response(StatusCode::OK, &updated)
        }
        _ => method_not_allowed(),
    }
}

/// A watch of `plural` (in `ns`, or everywhere) from `since`: each change newer than it, as the
/// API server streams them (one `{"type": ..., "object": ...}` JSON line each), then open and
/// quiet until the next.
fn watch(s: Arc<Cluster>, plural: &str, ns: Option<&str>, since: u64) -> Response {
    let woken = s.changed.subscribe();
    let plural = plural.to_string();
    let ns = ns.map(str::to_string);
    let lines = futures::stream::unfold((s, woken, 0usize), move |(s, mut woken, next)| {
        let (plural, ns) = (plural.clone(), ns.clone());
        async move {
            loop {
                if next == usize::MAX {
                    return None; // expired: the API server ends the watch after its ERROR
                }
                let compacted = s.compacted.load(std::sync::atomic::Ordering::SeqCst);
                if since < compacted {
                    // What kube-apiserver sends when the watch's resourceVersion is compacted.
                    let gone = json!({"type": "ERROR", "object": {
                        "kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Failure", "reason": "Expired", "code": 410,
                        "message": format!("too old resource version: {since} ({compacted})")}});
                    let bytes = Ok::<_, std::io::Error>(format!("{gone}\n").into_bytes());
                    return Some((bytes, (s, woken, usize::MAX)));
                }
                let found = {
                    let history = s.history.lock().unwrap();
                    history
                        .events
                        .iter()
                        .enumerate()
                        .skip(next)
                        .find(|(_, e)| {
                            e.plural == plural
                                && e.resource_version > since
                                && (e.namespace.is_empty()
                                    || ns.as_ref().is_none_or(|ns| *ns == e.namespace))
                        })
                        .map(|(i, e)| (i, e.line.clone()))
                };
                if let Some((i, line)) = found {
                    let bytes = Ok::<_, std::io::Error>(format!("{line}\n").into_bytes());
                    return Some((bytes, (s, woken, i + 1)));
                }
                if woken.changed().await.is_err() {
                    return None;
                }
            }
        }
    });
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        Body::from_stream(lines),
    )
        .into_response()
}

impl Cluster {
    /// A list answered as the API server answers `?limit=N&continue=T`: items in key order
    /// (namespace/name), at most `limit` of them, and while more remain `metadata.continue`
    /// (base64 JSON naming the key to start after, as the API server's tokens do) and
    /// `metadata.remainingItemCount`. Without `limit`, the whole list.
    fn list(
        &self,
        res: &Resource,
        ns: Option<&str>,
        params: &BTreeMap<String, String>,
    ) -> Response {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let limit: Option<usize> = params
            .get("limit")
            .and_then(|l| l.parse().ok())
            .filter(|l| *l > 0);
        let after = match params.get("continue").filter(|t| !t.is_empty()) {
            None => None,
            Some(token) => {
                let decoded = b64
                    .decode(token)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
                match decoded.and_then(|v| v["start"].as_str().map(String::from)) {
                    Some(start) => Some(start.trim_end_matches('\u{0}').to_string()),
                    None => {
                        return status_error(
                            400,
                            "BadRequest",
                            "continue key is not valid: illegal base64 data".into(),
                        );
                    }
                }
            }
        };
        let history = self.history.lock().unwrap();
        let rv = history.resource_version;
        let objects = self.objects.lock().unwrap();
        let mut items: Vec<(String, &Value)> = objects
            .iter()
            .filter(|((plural, n, _), _)| plural == res.1 && ns.is_none_or(|ns| ns == n))
            .map(|((_, n, name), v)| (format!("{n}/{name}"), v))
            .filter(|(key, _)| after.as_ref().is_none_or(|after| key > after))
            .collect();
        items.sort_by(|a, b| a.0.cmp(&b.0));
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if let Some(limit) = limit.filter(|l| *l < items.len()) {
            let remaining = items.len() - limit;
            items.truncate(limit);
            let start = format!("{}\u{0}", items.last().unwrap().0);
            let token = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": start});
            metadata["continue"] = json!(b64.encode(token.to_string()));
            metadata["remainingItemCount"] = json!(remaining);
        }
        let items: Vec<&Value> = items.into_iter().map(|(_, v)| v).collect();
        json_response(
            StatusCode::OK,
            &json!({"kind": format!("{}List", res.2), "apiVersion": res.3, "metadata": metadata, "items": items}),
        )
    }

    /// Applies a JSON merge patch to a stored object (a changed `spec` bumps
    /// `metadata.generation`); the object as the API server answers it, if it exists.
    fn patch(&self, res: &Resource, key: &ObjectKey, patch: &Value) -> Option<Value> {
        let mut patched = self.objects.lock().unwrap().get(key)?.clone();
        let before = patched["spec"].clone();
        json_patch::merge(&mut patched, patch);
        if patched["spec"] != before {
            let g = patched["metadata"]["generation"].as_i64().unwrap_or(1);
            patched["metadata"]["generation"] = json!(g + 1);
        }
        Some(self.write("MODIFIED", with_kind(patched, res.2, res.3)))
    }

    /// What the controllers do after a pod template change: new pods from the template (the old
    /// ones deleted), then a finished rollout status. What admission would add is not added.
    fn roll(&self, plural: &str, ns: &str, name: &str) {
        let mut objects = self.objects.lock().unwrap();
        let key = (plural.to_string(), ns.to_string(), name.to_string());
        let Some(workload) = objects.get(&key).cloned() else {
            return;
        };
        let replica_sets: Vec<String> = objects
            .iter()
            .filter(|((p, n, _), rs)| {
                p == "replicasets"
                    && n == ns
                    && rs["metadata"]["ownerReferences"][0]["name"] == name
            })
            .map(|((_, _, n), _)| n.clone())
            .collect();
        let owned = |pod: &Value| {
            let owner = &pod["metadata"]["ownerReferences"][0]["name"];
            owner == name || replica_sets.iter().any(|rs| owner == rs.as_str())
        };
        let old: Vec<(ObjectKey, Value)> = objects
            .iter()
            .filter(|((p, n, _), pod)| p == "pods" && n == ns && owned(pod))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let generation = workload["metadata"]["generation"].as_i64().unwrap_or(1);
        let template = &workload["spec"]["template"];
        for (k, old_pod) in old {
            objects.remove(&k);
            // A replacement as the controller makes it: the workload's pod template, stored as
            // is (no webhook runs here; a test admits new pods with the program's own mutation).
            let new_name = format!("{}-g{generation}", k.2);
            let mut spec = template["spec"].clone();
            spec["nodeName"] = old_pod["spec"]["nodeName"].clone();
            let pod = json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {
                    "name": new_name, "namespace": ns, "uid": format!("uid-pod-{ns}-{new_name}"),
                    "labels": template["metadata"]["labels"].clone(),
                    "ownerReferences": old_pod["metadata"]["ownerReferences"].clone(),
                },
                "spec": spec,
                "status": {"phase": "Running"},
            });
            objects.insert((k.0, k.1, new_name), pod);
        }
        let w = objects.get_mut(&key).unwrap();
        let replicas = w["spec"]["replicas"].as_i64().unwrap_or(1);
        w["status"] = json!({
            "observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas,
            "readyReplicas": replicas, "availableReplicas": replicas,
            "desiredNumberScheduled": replicas, "updatedNumberScheduled": replicas,
            "numberAvailable": replicas, "currentNumberScheduled": replicas,
        });
    }
}

/// The running fake; stops with the value.
pub struct FakeKubeApi {
    pub addr: SocketAddr,
    state: Arc<Cluster>,
    _served: Served,
}

/// What a test changes in the captured cluster.
#[derive(Default)]
pub struct Changes {
    /// `(namespace, label, value)` set on listed namespaces.
    pub namespace_labels: Vec<(&'static str, &'static str, &'static str)>,
    /// Namespaces that answer single GETs only (created after the list).
    pub namespaces_created_later: Vec<Value>,
    /// ServiceAccounts added to the captured list.
    pub service_accounts: Vec<Value>,
    /// Pods and workloads (each with `apiVersion` and `kind`), served by their list paths.
    pub objects: Vec<Value>,
}

/// Writes a kubeconfig for the API server at `server` into `dir` (for `--kubeconfig`).
pub fn kubeconfig(server: SocketAddr, dir: &Path) -> PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster: {{server: \"http://{server}\"}}
users:
- name: {USER}
  user: {{token: {TOKEN}}}
contexts:
- name: fake
  context: {{cluster: fake, user: {USER}}}
current-context: fake
"
        ),
    )
    .unwrap();
    path
}

impl FakeKubeApi {
    /// Serves the captures; the ServiceAccount watch sends its first `watch_events` captured
    /// events, and `created_later` ServiceAccounts answer single GETs only.
    pub async fn start(watch_events: usize, created_later: Vec<Value>) -> Self {
        Self::start_changed(watch_events, created_later, Changes::default()).await
    }

    /// [`FakeKubeApi::start`], with `changes` made to the captured cluster.
    pub async fn start_changed(
        watch_events: usize,
        created_later: Vec<Value>,
        changes: Changes,
    ) -> Self {
        let watch_lines: Vec<Value> = captured("serviceaccounts.watch.jsonl")
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert!(watch_events <= watch_lines.len());
        let mut namespace_list: Value =
            serde_json::from_str(&captured("namespaces.list.json")).unwrap();
        for (ns, label, value) in changes.namespace_labels {
            let item = namespace_list["items"]
                .as_array_mut()
                .unwrap()
                .iter_mut()
                .find(|item| item["metadata"]["name"] == ns)
                .unwrap_or_else(|| panic!("namespace {ns} is not in the capture"));
            item["metadata"]["labels"][label] = json!(value);
        }
        let sa_list: Value = serde_json::from_str(&captured("serviceaccounts.list.json")).unwrap();
        // The captured watch events come after the ServiceAccount list's resourceVersion.
        let listed_rv = sa_list["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|rv| rv.parse().ok())
            .expect("the captured list has a resourceVersion");
        let cluster = Cluster::new(listed_rv);
        let typed = |list: &Value| -> Vec<Value> {
            let (kind, api_version) = (list["kind"].as_str().unwrap(), &list["apiVersion"]);
            let kind = kind.trim_end_matches("List");
            let items = list["items"].as_array().unwrap().iter().cloned();
            items
                .map(|item| with_kind(item, kind, api_version.as_str().unwrap()))
                .collect()
        };
        let listed = typed(&sa_list)
            .into_iter()
            .chain(
                changes
                    .service_accounts
                    .into_iter()
                    .map(|sa| with_kind(sa, "ServiceAccount", "v1")),
            )
            .chain(typed(&namespace_list))
            .chain(changes.objects);
        {
            let mut objects = cluster.objects.lock().unwrap();
            for o in listed {
                let (_, key) = resource_and_key(&o);
                objects.insert(key, without_kind(o));
            }
            let mut unlisted = cluster.unlisted.lock().unwrap();
            let later = created_later
                .into_iter()
                .map(|sa| with_kind(sa, "ServiceAccount", "v1"))
                .chain(
                    changes
                        .namespaces_created_later
                        .into_iter()
                        .map(|ns| with_kind(ns, "Namespace", "v1")),
                );
            for o in later {
                let (_, key) = resource_and_key(&o);
                unlisted.insert(key, without_kind(o));
            }
        }
        cluster.history.lock().unwrap().events = watch_lines[..watch_events]
            .iter()
            .map(|line| WatchEvent {
                plural: "serviceaccounts".into(),
                namespace: line["object"]["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .into(),
                resource_version: line["object"]["metadata"]["resourceVersion"]
                    .as_str()
                    .and_then(|rv| rv.parse().ok())
                    .expect("a captured event has a resourceVersion"),
                line: line.to_string(),
            })
            .collect();
        Self::serve(cluster).await
    }

    /// An empty cluster, filled with [`FakeKubeApi::put`].
    pub async fn empty() -> Self {
        Self::serve(Cluster::new(999)).await
    }

    async fn serve(cluster: Cluster) -> Self {
        let state = Arc::new(cluster);
        let app = Router::new()
            .route(
                "/apis/events.k8s.io/v1/namespaces/{namespace}/events",
                post(create_event),
            )
            .route(
                "/apis/authentication.k8s.io/v1/tokenreviews",
                post(token_review),
            )
            .route("/version", get(version))
            .fallback(resource_request)
            .layer(axum::middleware::from_fn(require_token))
            .with_state(state.clone());
        let served = Served::start(app).await;
        Self {
            addr: served.addr,
            state,
            _served: served,
        }
    }

    /// A client for the fake, as kube-rs builds one from a kubeconfig.
    pub fn client(&self) -> kube::Client {
        let mut config = kube::Config::new(format!("http://{}", self.addr).parse().unwrap());
        config.auth_info.token = Some(TOKEN.to_string().into());
        kube::Client::try_from(config).unwrap()
    }

    /// Writes a kubeconfig pointing at the fake into `dir` (for `--kubeconfig`).
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        kubeconfig(self.addr, dir)
    }

    /// The tokens this API server accepts in `TokenReview`s.
    pub fn token_reviews(&self) -> &Arc<TokenReviews> {
        &self.state.reviews
    }

    /// Stores an object (kind from its `kind`) as a create or update would.
    pub fn put(&self, object: Value) {
        let (_, key) = resource_and_key(&object);
        let exists = self.state.objects.lock().unwrap().contains_key(&key);
        self.push_change(if exists { "MODIFIED" } else { "ADDED" }, object);
    }

    /// Changes an object (with `apiVersion` and `kind`) with no watch event (as if etcd had
    /// compacted it away): only a list shows it. With [`FakeKubeApi::expire_watches`], what
    /// changes while a watch is gone.
    pub fn put_unwatched(&self, object: Value) {
        let (_, key) = resource_and_key(&object);
        let exists = self.state.objects.lock().unwrap().contains_key(&key);
        let event = if exists { "MODIFIED" } else { "ADDED" };
        self.state.write_as(event, object, false);
    }

    /// Expires every open watch, and any started from an older resourceVersion, as the API
    /// server does after a compaction: an `ERROR` event with a `Status` of code 410 (`Expired`),
    /// then the end of the stream. A client must list again.
    pub fn expire_watches(&self) {
        let now = self.state.history.lock().unwrap().resource_version;
        self.state
            .compacted
            .store(now, std::sync::atomic::Ordering::SeqCst);
        self.state.changed.send_modify(|n| *n += 1);
    }

    /// Changes an object (with `apiVersion` and `kind`) as a controller or user would:
    /// `ADDED`, `MODIFIED` or `DELETED`. Lists answer the new state, and open watches get the
    /// event with the next resourceVersion.
    pub fn push_change(&self, event: &str, object: Value) {
        self.state.write(event, object);
    }

    /// The stored object (without kind), if any.
    pub fn get(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        self.state
            .objects
            .lock()
            .unwrap()
            .get(&(plural.into(), namespace.into(), name.into()))
            .cloned()
    }

    /// Names of the stored objects of `plural` in `namespace`.
    pub fn names(&self, plural: &str, namespace: &str) -> Vec<String> {
        self.state
            .objects
            .lock()
            .unwrap()
            .keys()
            .filter(|(p, n, _)| p == plural && n == namespace)
            .map(|(_, _, name)| name.clone())
            .collect()
    }

    /// Every PATCH so far: (path, content type, body).
    pub fn patches(&self) -> Vec<(String, String, Value)> {
        self.state.patches.lock().unwrap().clone()
    }

    /// Every request so far, `METHOD path?query` (TokenReviews, Events and `/version` aside).
    pub fn requests(&self) -> Vec<String> {
        self.state.requests.lock().unwrap().clone()
    }

    /// The workload's rollouts never finish (`plural/namespace/name`).
    pub fn stall(&self, id: &str) {
        self.state.stuck.lock().unwrap().insert(id.to_string());
    }

    /// Requests for `plural` get 403 from now on.
    pub fn forbid(&self, plural: &str) {
        self.state
            .forbidden
            .lock()
            .unwrap()
            .insert(plural.to_string());
    }

    /// Events created so far.
    pub fn events(&self) -> Vec<Value> {
        self.state.events.lock().unwrap().clone()
    }

    /// List pages (not watches) answered so far for `path` (e.g. `/api/v1/pods`).
    pub fn pages(&self, path: &str) -> usize {
        let listed = format!("GET {path}?");
        self.requests()
            .iter()
            .filter(|r| r.starts_with(&listed) && !r.contains("watch=true"))
            .count()
    }

    /// ServiceAccount lists (pages) answered so far.
    pub fn lists(&self) -> usize {
        self.pages("/api/v1/serviceaccounts")
    }

    /// Single ServiceAccount GETs answered so far.
    pub fn gets(&self) -> usize {
        self.requests()
            .iter()
            .filter_map(|r| r.strip_prefix("GET /api/v1/namespaces/"))
            .filter(|r| r.split('?').next().unwrap().contains("/serviceaccounts/"))
            .count()
    }
}
