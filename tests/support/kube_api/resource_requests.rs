//! Requests for the fake API server's resources: lists (`limit`/`continue` paging in key order),
//! watches from a list's `resourceVersion` (expired with `410 Gone` after a compaction), single
//! GETs, and PATCH as JSON merge patch (other content types refused with 415), which starts a
//! workload's rollout unless it was stalled; 403 for forbidden resources.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::USER;
use super::responses::{json_response, method_not_allowed, not_found, status_error};
use super::store::{Cluster, RESOURCES, Resource, with_kind};

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
pub(super) async fn resource_request(
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
}
