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
//!
//! This file holds [`FakeKubeApi`], its router and the bearer-token check, and the kubeconfigs
//! that point at it. The rest lives in `store` (the resources, objects and write history),
//! `resource_requests` (lists, watches, GETs, PATCH), `rollouts` (the workload controllers),
//! `token_reviews`, `events`, and `responses` (JSON answers and `Status` errors).

mod events;
mod resource_requests;
mod responses;
mod rollouts;
mod store;
mod token_reviews;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::{Served, fixtures_dir};
use events::create_event;
use resource_requests::resource_request;
use responses::json_response;
use store::{Cluster, WatchEvent, resource_and_key, with_kind, without_kind};
use token_reviews::token_review;
pub use token_reviews::{PodToken, TokenReviews};

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
