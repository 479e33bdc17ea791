//! A fake Kubernetes API server over plain HTTP on 127.0.0.1 that answers with what a real
//! kube-apiserver v1.24 answered (`fixtures/apiserver-v1.24/kube-api/`): the ServiceAccount
//! list, its watch events, single GETs, and the Namespace list; and `TokenReview`s of the tokens
//! a test registers, with the status shapes a real API server gives (see [`TokenReviews`]).
//! Pods and workloads are listed in pages and watched from the list's `resourceVersion` (changes
//! a test pushes with [`FakeKubeApi::push_change`] arrive as `{"type", "object"}` lines);
//! `events.k8s.io/v1` Events are created with the API server's validation and answer.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::fixtures_dir;

fn captured(name: &str) -> String {
    let path = fixtures_dir().join("kube-api").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

struct Fake {
    service_accounts: Value,
    namespaces: Value,
    /// The captured watch events, one JSON line each.
    watch_lines: Vec<String>,
    /// How many of them the watch sends before it goes quiet (staying open).
    watch_events: usize,
    /// ServiceAccounts that exist only for single GETs (created after the list).
    created_later: Vec<Value>,
    /// Namespaces that exist only for single GETs (created after the list).
    namespaces_created_later: Vec<Value>,
    pub gets: AtomicUsize,
    pub lists: AtomicUsize,
    /// Other objects (pods, workloads) by list path, e.g. `/api/v1/pods`.
    objects: std::sync::Mutex<std::collections::BTreeMap<String, Vec<Value>>>,
    /// Changes pushed to the watches of pods and workloads: (list path, resourceVersion, line).
    changes: std::sync::Mutex<Vec<(String, u64, String)>>,
    /// Bumped on every push, to wake the open watches.
    changed: tokio::sync::watch::Sender<usize>,
    /// List pages answered, by list path.
    pages: std::sync::Mutex<std::collections::BTreeMap<String, usize>>,
    /// Events created (`events.k8s.io/v1`), as posted.
    events: std::sync::Mutex<Vec<Value>>,
    reviews: Arc<TokenReviews>,
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

async fn token_review(State(f): State<Arc<Fake>>, body: axum::body::Bytes) -> Response {
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

/// The running fake; stops with the value.
pub struct FakeKubeApi {
    pub addr: SocketAddr,
    fake: Arc<Fake>,
    stop: CancellationToken,
}

impl Drop for FakeKubeApi {
    fn drop(&mut self) {
        self.stop.cancel();
    }
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

fn quiet_watch(lines: Vec<String>) -> Response {
    // The events, then a stream that never ends: a watch that is open and idle.
    let events = futures::stream::iter(
        lines
            .into_iter()
            .map(|l| Ok::<_, std::io::Error>(format!("{l}\n").into_bytes())),
    );
    let body = Body::from_stream(futures::StreamExt::chain(
        events,
        futures::stream::pending(),
    ));
    (StatusCode::OK, [("content-type", "application/json")], body).into_response()
}

async fn service_accounts(State(f): State<Arc<Fake>>, RawQuery(q): RawQuery) -> Response {
    if q.clone().unwrap_or_default().contains("watch=true") {
        return quiet_watch(f.watch_lines[..f.watch_events].to_vec());
    }
    f.lists.fetch_add(1, Ordering::Relaxed);
    f.count_page("/api/v1/serviceaccounts");
    json_response(StatusCode::OK, &paginate(&f.service_accounts, q_of(&q)))
}

async fn one_service_account(
    State(f): State<Arc<Fake>>,
    UrlPath((namespace, name)): UrlPath<(String, String)>,
) -> Response {
    f.gets.fetch_add(1, Ordering::Relaxed);
    let found = f.service_accounts["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(&f.created_later)
        .find(|sa| sa["metadata"]["namespace"] == namespace && sa["metadata"]["name"] == name);
    match found {
        Some(sa) => json_response(StatusCode::OK, sa),
        None => not_found("serviceaccounts", &name),
    }
}

async fn namespaces(State(f): State<Arc<Fake>>, RawQuery(q): RawQuery) -> Response {
    if q.clone().unwrap_or_default().contains("watch=true") {
        return quiet_watch(Vec::new());
    }
    f.count_page("/api/v1/namespaces");
    json_response(StatusCode::OK, &paginate(&f.namespaces, q_of(&q)))
}

fn q_of(q: &Option<String>) -> &str {
    q.as_deref().unwrap_or_default()
}

/// One query parameter's value (percent-decoded).
fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// A list answered as the API server answers `?limit=N&continue=T`: items in key order
/// (namespace/name), at most `limit` of them, and while more remain `metadata.continue` (base64
/// JSON naming the key to start after, as the API server's tokens do) and
/// `metadata.remainingItemCount`. Without `limit`, the whole list.
fn paginate(list: &Value, query: &str) -> Value {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = |item: &Value| {
        format!(
            "{}/{}",
            item["metadata"]["namespace"].as_str().unwrap_or_default(),
            item["metadata"]["name"].as_str().unwrap_or_default()
        )
    };
    let mut items: Vec<Value> = list["items"].as_array().cloned().unwrap_or_default();
    items.sort_by_key(key);
    let limit: Option<usize> = query_param(query, "limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0);
    if let Some(token) = query_param(query, "continue").filter(|t| !t.is_empty()) {
        let decoded: Value =
            serde_json::from_slice(&b64.decode(token).expect("continue token is base64"))
                .expect("continue token is JSON");
        let start = decoded["start"]
            .as_str()
            .unwrap()
            .trim_end_matches('\u{0}')
            .to_string();
        items.retain(|i| key(i) > start);
    }
    let mut answer = list.clone();
    let rv = list["metadata"]["resourceVersion"].clone();
    answer["metadata"] = json!({"resourceVersion": rv});
    if let Some(limit) = limit.filter(|l| *l < items.len()) {
        let remaining = items.len() - limit;
        items.truncate(limit);
        let start = format!("{}\u{0}", key(items.last().unwrap()));
        let token = json!({"v": "meta.k8s.io/v1", "rv": rv.as_str().and_then(|r| r.parse::<u64>().ok()).unwrap_or(1), "start": start});
        answer["metadata"]["continue"] = json!(b64.encode(token.to_string()));
        answer["metadata"]["remainingItemCount"] = json!(remaining);
    }
    answer["items"] = Value::Array(items);
    answer
}

/// The resourceVersion of pod and workload lists: the last change's.
const LISTED_RV: u64 = 4242;

/// A list of pods or workloads (`/api/v1/pods`, `/apis/apps/v1/deployments`, …), paginated; a
/// watch sends the changes pushed after its `resourceVersion`, then stays open.
async fn listed(State(f): State<Arc<Fake>>, uri: axum::http::Uri) -> Response {
    let query = uri.query().unwrap_or_default();
    let path = uri.path().to_string();
    if query.contains("watch=true") {
        let since: u64 = query_param(query, "resourceVersion")
            .and_then(|rv| rv.parse().ok())
            .unwrap_or(0);
        return change_watch(f, path, since);
    }
    let (api_version, plural) = match path.rsplit_once('/') {
        Some((prefix, plural)) => (
            prefix
                .trim_start_matches("/apis/")
                .trim_start_matches("/api/")
                .to_string(),
            plural,
        ),
        None => return not_found("path", &path),
    };
    let kind = LISTED_KINDS
        .iter()
        .find(|(p, _)| *p == plural)
        .map(|(_, k)| *k)
        .unwrap_or("Unknown");
    f.count_page(&path);
    let rv = f.changes.lock().unwrap().last().map_or(LISTED_RV, |c| c.1);
    let items: Vec<Value> = f
        .objects
        .lock()
        .unwrap()
        .get(&path)
        .into_iter()
        .flatten()
        .map(|o| {
            // List items carry no type of their own.
            let mut item = o.clone();
            let map = item.as_object_mut().unwrap();
            map.remove("kind");
            map.remove("apiVersion");
            item
        })
        .collect();
    let list = json!({
        "kind": format!("{kind}List"),
        "apiVersion": api_version,
        "metadata": {"resourceVersion": rv.to_string()},
        "items": items,
    });
    json_response(StatusCode::OK, &paginate(&list, query))
}

/// A watch of `path` from `since`: each pushed change newer than it, as the API server streams
/// them (one `{"type": ..., "object": ...}` JSON line each), then open and quiet until the next.
fn change_watch(f: Arc<Fake>, path: String, since: u64) -> Response {
    let woken = f.changed.subscribe();
    let lines = futures::stream::unfold((f, woken, 0usize), move |(f, mut woken, next)| {
        let path = path.clone();
        async move {
            loop {
                let found = {
                    let changes = f.changes.lock().unwrap();
                    changes
                        .iter()
                        .enumerate()
                        .skip(next)
                        .find(|(_, (p, rv, _))| *p == path && *rv > since)
                        .map(|(i, (_, _, line))| (i, line.clone()))
                };
                if let Some((i, line)) = found {
                    let bytes = Ok::<_, std::io::Error>(format!("{line}\n").into_bytes());
                    return Some((bytes, (f, woken, i + 1)));
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

/// Resources the fake lists besides ServiceAccounts and Namespaces: (plural, kind).
const LISTED_KINDS: [(&str, &str); 7] = [
    ("pods", "Pod"),
    ("deployments", "Deployment"),
    ("statefulsets", "StatefulSet"),
    ("daemonsets", "DaemonSet"),
    ("replicasets", "ReplicaSet"),
    ("jobs", "Job"),
    ("cronjobs", "CronJob"),
];

/// The list path of an object, from its `apiVersion` and `kind`.
fn list_path(object: &Value) -> String {
    let api_version = object["apiVersion"]
        .as_str()
        .expect("object has apiVersion");
    let kind = object["kind"].as_str().expect("object has kind");
    let plural = LISTED_KINDS
        .iter()
        .find(|(_, k)| *k == kind)
        .unwrap_or_else(|| panic!("the fake does not list {kind}"))
        .0;
    if api_version.contains('/') {
        format!("/apis/{api_version}/{plural}")
    } else {
        format!("/api/{api_version}/{plural}")
    }
}

/// `POST /apis/events.k8s.io/v1/namespaces/{namespace}/events`, as kube-apiserver answers it:
/// the namespace must be the URL's, the fields events.k8s.io/v1 requires must be there
/// (`eventTime`, `reportingController`, `reportingInstance`, `action`, `reason`, a `type` of
/// Normal or Warning, a `note` of at most 1024 bytes, `regarding` in the event's namespace),
/// else 422 `Invalid` naming the fields; a name already taken in the namespace, 409
/// `AlreadyExists`; created, 201 with the stored object.
async fn create_event(
    State(f): State<Arc<Fake>>,
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

impl Fake {
    fn count_page(&self, path: &str) {
        *self
            .pages
            .lock()
            .unwrap()
            .entry(path.to_string())
            .or_default() += 1;
    }
}

async fn one_namespace(State(f): State<Arc<Fake>>, UrlPath(name): UrlPath<String>) -> Response {
    match f.namespaces["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(&f.namespaces_created_later)
        .find(|ns| ns["metadata"]["name"] == name)
    {
        Some(ns) => json_response(StatusCode::OK, ns),
        None => not_found("namespaces", &name),
    }
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
        let watch_lines: Vec<String> = captured("serviceaccounts.watch.jsonl")
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
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
        let mut sa_list: Value =
            serde_json::from_str(&captured("serviceaccounts.list.json")).unwrap();
        sa_list["items"]
            .as_array_mut()
            .unwrap()
            .extend(changes.service_accounts);
        let mut objects = std::collections::BTreeMap::<String, Vec<Value>>::new();
        for o in changes.objects {
            objects.entry(list_path(&o)).or_default().push(o);
        }
        let fake = Arc::new(Fake {
            service_accounts: sa_list,
            namespaces: namespace_list,
            watch_lines,
            watch_events,
            created_later,
            namespaces_created_later: changes.namespaces_created_later,
            gets: AtomicUsize::new(0),
            lists: AtomicUsize::new(0),
            objects: std::sync::Mutex::new(objects),
            changes: Default::default(),
            changed: tokio::sync::watch::channel(0).0,
            pages: Default::default(),
            events: Default::default(),
            reviews: Arc::new(TokenReviews::default()),
        });
        let app = Router::new()
            .route("/api/v1/serviceaccounts", get(service_accounts))
            .route(
                "/api/v1/namespaces/{namespace}/serviceaccounts/{name}",
                get(one_service_account),
            )
            .route("/api/v1/namespaces", get(namespaces))
            .route("/api/v1/namespaces/{name}", get(one_namespace))
            .route("/api/v1/pods", get(listed))
            .route(
                "/apis/events.k8s.io/v1/namespaces/{namespace}/events",
                post(create_event),
            )
            .route("/apis/apps/v1/{plural}", get(listed))
            .route("/apis/batch/v1/{plural}", get(listed))
            .route(
                "/apis/authentication.k8s.io/v1/tokenreviews",
                post(token_review),
            )
            .route("/version", get(version))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let serving = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(serving.cancelled_owned())
                .await
                .unwrap();
        });
        Self { addr, fake, stop }
    }

    /// A client for the fake, as kube-rs builds one from a kubeconfig.
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(format!("http://{}", self.addr).parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    /// Writes a kubeconfig pointing at the fake into `dir` (for `--kubeconfig`).
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster: {{server: \"http://{}\"}}
users:
- name: nobody
  user: {{}}
contexts:
- name: fake
  context: {{cluster: fake, user: nobody}}
current-context: fake
",
                self.addr
            ),
        )
        .unwrap();
        path
    }

    /// Single ServiceAccount GETs answered so far.
    pub fn gets(&self) -> usize {
        self.fake.gets.load(Ordering::Relaxed)
    }

    /// The tokens this API server accepts in `TokenReview`s.
    pub fn token_reviews(&self) -> &Arc<TokenReviews> {
        &self.fake.reviews
    }

    /// ServiceAccount lists answered so far.
    pub fn lists(&self) -> usize {
        self.fake.lists.load(Ordering::Relaxed)
    }

    /// Changes a pod or workload (with `apiVersion` and `kind`) as a controller or user
    /// would: `ADDED`, `MODIFIED` or `DELETED`. Lists answer the new state, and open watches
    /// get the event with the next resourceVersion.
    pub fn push_change(&self, kind: &str, object: Value) {
        let path = list_path(&object);
        let key = |o: &Value| {
            (
                o["metadata"]["namespace"].clone(),
                o["metadata"]["name"].clone(),
            )
        };
        let mut changes = self.fake.changes.lock().unwrap();
        let rv = changes.last().map_or(LISTED_RV, |c| c.1) + 1;
        let mut object = object;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        {
            let mut objects = self.fake.objects.lock().unwrap();
            let list = objects.entry(path.clone()).or_default();
            list.retain(|o| key(o) != key(&object));
            if kind != "DELETED" {
                list.push(object.clone());
            }
        }
        let line = json!({"type": kind, "object": object}).to_string();
        changes.push((path, rv, line));
        drop(changes);
        self.fake.changed.send_modify(|n| *n += 1);
    }

    /// Events created so far.
    pub fn events(&self) -> Vec<Value> {
        self.fake.events.lock().unwrap().clone()
    }

    /// List pages (not watches) answered so far for `path` (e.g. `/api/v1/pods`).
    pub fn pages(&self, path: &str) -> usize {
        self.fake
            .pages
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(0)
    }
}

/// A mutable fake API server for the commands that read and change a cluster (`migrate`):
/// ServiceAccounts, pods, nodes and apps/v1 workloads, with the API server's list shape
/// (`{kind: XList, apiVersion, metadata: {resourceVersion, continue, remainingItemCount}, items}`,
/// items without kind/apiVersion, `limit`/`continue` paging in key order), single GETs, and
/// PATCH as JSON merge patch (RFC 7386, other content types refused with 415 as the server does).
/// A PATCH that changes a workload's pod template bumps `metadata.generation`; a small
/// controller then replaces the workload's pods and reports the rollout done (unless the
/// workload was marked stuck).
pub struct FakeCluster {
    pub addr: SocketAddr,
    state: Arc<ClusterState>,
    stop: CancellationToken,
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Where a resource lives: (API prefix, plural, kind, apiVersion, namespaced).
const RESOURCES: [(&str, &str, &str, &str, bool); 8] = [
    ("/api/v1", "serviceaccounts", "ServiceAccount", "v1", true),
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
    ("/apis/batch/v1", "cronjobs", "CronJob", "batch/v1", true),
];

type ObjectKey = (String, String, String); // (plural, namespace or "", name)

#[derive(Default)]
struct ClusterState {
    objects: std::sync::Mutex<std::collections::BTreeMap<ObjectKey, Value>>,
    resource_version: AtomicUsize,
    /// Every request: "METHOD path?query".
    requests: std::sync::Mutex<Vec<String>>,
    /// Every PATCH: (path, content type, body).
    patches: std::sync::Mutex<Vec<(String, String, Value)>>,
    /// "plural/namespace/name" of workloads whose rollouts never finish.
    stuck: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// Plurals answered with 403.
    forbidden: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

fn status_error(code: u16, reason: &str, message: String) -> Response {
    json_response(
        StatusCode::from_u16(code).unwrap(),
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message, "reason": reason, "code": code}),
    )
}

fn with_kind(mut v: Value, kind: &str, api_version: &str) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.insert("kind".into(), json!(kind));
        o.insert("apiVersion".into(), json!(api_version));
    }
    v
}

fn query_map(q: &str) -> std::collections::BTreeMap<String, String> {
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

impl ClusterState {
    fn next_rv(&self) -> String {
        (self.resource_version.fetch_add(1, Ordering::SeqCst) + 1000).to_string()
    }

    fn list(&self, res: &(&str, &str, &str, &str, bool), ns: Option<&str>, q: &str) -> Response {
        let params = query_map(q);
        let limit: usize = params
            .get("limit")
            .and_then(|l| l.parse().ok())
            .filter(|l| *l > 0)
            .unwrap_or(usize::MAX);
        let start = match params.get("continue") {
            None => String::new(),
            Some(token) => {
                use base64::Engine;
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(token)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
                match decoded.and_then(|v| v["start"].as_str().map(String::from)) {
                    Some(s) => s,
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
        let objects = self.objects.lock().unwrap();
        let matching: Vec<(&ObjectKey, &Value)> = objects
            .iter()
            .filter(|((plural, n, _), _)| plural == res.1 && ns.is_none_or(|ns| ns == n))
            .filter(|((_, n, name), _)| format!("{n}/{name}") >= start)
            .collect();
        let page: Vec<Value> = matching
            .iter()
            .take(limit)
            .map(|(_, v)| (*v).clone())
            .collect();
        let rv = (self.resource_version.load(Ordering::SeqCst) + 1000).to_string();
        let mut metadata = json!({"resourceVersion": rv});
        if matching.len() > limit {
            use base64::Engine;
            let (_, n, name) = matching[limit].0;
            let token = json!({"v": "meta.k8s.io/v1", "rv": rv.parse::<u64>().unwrap(), "start": format!("{n}/{name}")});
            metadata["continue"] =
                json!(base64::engine::general_purpose::STANDARD.encode(token.to_string()));
            metadata["remainingItemCount"] = json!(matching.len() - limit);
        }
        json_response(
            StatusCode::OK,
            &json!({"kind": format!("{}List", res.2), "apiVersion": res.3, "metadata": metadata, "items": page}),
        )
    }

    /// What the controllers do after a pod template change: new pods (the old ones deleted),
    /// then a finished rollout status.
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
        for (k, mut pod) in old {
            objects.remove(&k);
            // The webhook (the association now wins) injects Pod Identity into the new pod.
            for c in pod["spec"]["containers"]
                .as_array_mut()
                .into_iter()
                .flatten()
            {
                let env = c["env"].as_array().cloned().unwrap_or_default();
                let mut env: Vec<Value> = env
                    .into_iter()
                    .filter(|e| {
                        e["name"] != "AWS_ROLE_ARN" && e["name"] != "AWS_WEB_IDENTITY_TOKEN_FILE"
                    })
                    .collect();
                env.push(json!({"name": "AWS_CONTAINER_CREDENTIALS_FULL_URI", "value": "http://169.254.170.23/v1/credentials"}));
                env.push(json!({"name": "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "value": "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token"}));
                c["env"] = Value::Array(env);
            }
            let new_name = format!("{}-g{generation}", k.2);
            pod["metadata"]["name"] = json!(new_name);
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

async fn cluster_handler(
    State(s): State<Arc<ClusterState>>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
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
    let (res, ns, name) = match rest.as_slice() {
        [plural] => (
            RESOURCES.iter().find(|r| r.0 == res.0 && r.1 == *plural),
            None,
            None,
        ),
        ["namespaces", ns, plural] => (
            RESOURCES
                .iter()
                .find(|r| r.0 == res.0 && r.1 == *plural && r.4),
            Some(*ns),
            None,
        ),
        ["namespaces", ns, plural, name] => (
            RESOURCES
                .iter()
                .find(|r| r.0 == res.0 && r.1 == *plural && r.4),
            Some(*ns),
            Some(*name),
        ),
        [plural, name] => (
            RESOURCES
                .iter()
                .find(|r| r.0 == res.0 && r.1 == *plural && !r.4),
            None,
            Some(*name),
        ),
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
                "{} is forbidden: User \"migrator\" cannot list resource \"{}\" in API group \"{}\" at the cluster scope",
                res.1,
                res.1,
                res.3.rsplit_once('/').map_or("", |(group, _)| group)
            ),
        );
    }
    let Some(name) = name else {
        if method != axum::http::Method::GET {
            return status_error(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource".into(),
            );
        }
        return s.list(res, ns, &q);
    };
    let key = (
        res.1.to_string(),
        ns.unwrap_or("").to_string(),
        name.to_string(),
    );
    match method {
        axum::http::Method::GET => match s.objects.lock().unwrap().get(&key) {
            Some(v) => json_response(StatusCode::OK, &with_kind(v.clone(), res.2, res.3)),
            None => not_found(res.1, name),
        },
        axum::http::Method::PATCH => {
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
            let rv = s.next_rv();
            let updated = {
                let mut objects = s.objects.lock().unwrap();
                let Some(obj) = objects.get_mut(&key) else {
                    return not_found(res.1, name);
                };
                let before = obj["spec"].clone();
                json_patch::merge(obj, &patch);
                obj["metadata"]["resourceVersion"] = json!(rv);
                if obj["spec"] != before {
                    let g = obj["metadata"]["generation"].as_i64().unwrap_or(1);
                    obj["metadata"]["generation"] = json!(g + 1);
                }
                obj.clone()
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
            json_response(StatusCode::OK, &with_kind(updated, res.2, res.3))
        }
        _ => status_error(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource".into(),
        ),
    }
}

impl FakeCluster {
    pub async fn start() -> Self {
        let state = Arc::new(ClusterState::default());
        let app = Router::new()
            .fallback(cluster_handler)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let serving = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(serving.cancelled_owned())
                .await
                .unwrap();
        });
        Self { addr, state, stop }
    }

    /// Stores an object (kind from its `kind`); list items are served without kind/apiVersion.
    pub fn put(&self, object: Value) {
        let kind = object["kind"]
            .as_str()
            .expect("object has a kind")
            .to_string();
        let res = RESOURCES
            .iter()
            .find(|r| r.2 == kind)
            .unwrap_or_else(|| panic!("the fake does not serve {kind}"));
        let mut object = object;
        let o = object.as_object_mut().unwrap();
        o.remove("kind");
        o.remove("apiVersion");
        let rv = self.state.next_rv();
        object["metadata"]["resourceVersion"] = json!(rv);
        let ns = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let name = object["metadata"]["name"].as_str().unwrap().to_string();
        self.state
            .objects
            .lock()
            .unwrap()
            .insert((res.1.to_string(), ns, name), object);
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

    /// Every request so far, `METHOD path?query`.
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

    /// A client for the fake, as kube-rs builds one from a kubeconfig.
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(format!("http://{}", self.addr).parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{server: \"http://{}\"}}\nusers:\n- name: migrator\n  user: {{}}\ncontexts:\n- name: fake\n  context: {{cluster: fake, user: migrator}}\ncurrent-context: fake\n",
                self.addr
            ),
        )
        .unwrap();
        path
    }
}
