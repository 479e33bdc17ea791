//! TokenReviews (`authentication.k8s.io/v1`): the tokens a test registers ([`TokenReviews`],
//! [`PodToken`]) and the API server's answer to a review of them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::responses::json_response;
use super::store::Cluster;

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

pub(super) async fn token_review(
    State(f): State<Arc<Cluster>>,
    body: axum::body::Bytes,
) -> Response {
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
