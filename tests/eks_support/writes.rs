//! The write side of the fake EKS API (and `DescribeCluster`), for `migrate apply` and the
//! controller's GitOps associations:
//!
//! - `POST /clusters/{name}/pod-identity-associations` (CreatePodIdentityAssociation, with its
//!   `tags`): 409 `ResourceInUseException` when the ServiceAccount already has one, as EKS
//!   answers;
//! - `POST /clusters/{name}/pod-identity-associations/{id}` (UpdatePodIdentityAssociation:
//!   `roleArn`, `targetRoleArn`, `disableSessionTags`, `policy`);
//! - `DELETE /clusters/{name}/pod-identity-associations/{id}`;
//!
//! Writes have a fault queue of their own (`fail_next_writes`: the webhook's EKS source, which
//! also lists, must not eat them); `set_down` fails them too. Every write request is counted as
//! it arrives (`write_requests`), and each one that changed something as it did.
//! - `GET /clusters/{name}` (DescribeCluster): the cluster ARN, which names its account.
//!
//! Requests it does not know are handed back to the read side.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::{
    FakeAssociation, FakeState, Signature, error, fault_answer, ok, refuse_unsigned, summary,
};

/// Write-side counters and faults.
#[derive(Default)]
pub struct Writes {
    pub creates: AtomicUsize,
    pub updates: AtomicUsize,
    pub deletes: AtomicUsize,
    /// Create, Update and Delete requests as they arrive (faulted ones too), by operation.
    requests: Mutex<std::collections::BTreeMap<&'static str, usize>>,
    faults: Mutex<std::collections::VecDeque<super::Fault>>,
    /// Creates answered 500 `ServerException` once this many have succeeded (`None`: never).
    fail_creates_after: Mutex<Option<usize>>,
}

impl super::FakeEks {
    /// CreatePodIdentityAssociation calls that created one.
    pub fn creates(&self) -> usize {
        self.state.writes.creates.load(Ordering::SeqCst)
    }

    /// UpdatePodIdentityAssociation calls that changed one.
    pub fn updates(&self) -> usize {
        self.state.writes.updates.load(Ordering::SeqCst)
    }

    /// DeletePodIdentityAssociation calls that deleted one.
    pub fn deletes(&self) -> usize {
        self.state.writes.deletes.load(Ordering::SeqCst)
    }

    /// Requests of `op` (`create`, `update`, `delete`) that arrived, answered or faulted.
    pub fn write_requests(&self, op: &str) -> usize {
        self.state
            .writes
            .requests
            .lock()
            .unwrap()
            .get(op)
            .copied()
            .unwrap_or(0)
    }

    /// Answers the next `n` Create, Update and Delete requests with `fault`.
    pub fn fail_next_writes(&self, n: usize, fault: super::Fault) {
        let mut f = self.state.writes.faults.lock().unwrap();
        for _ in 0..n {
            f.push_back(fault);
        }
    }

    /// Adds an association with `tags`; returns its id.
    pub fn add_tagged(
        &self,
        namespace: &str,
        service_account: &str,
        role: &str,
        tags: &[(&str, &str)],
    ) -> String {
        let id = self.add(namespace, service_account, role);
        let mut map = self.state.associations.lock().unwrap();
        let a = map.get_mut(&id).expect("just added");
        a.tags = tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        id
    }

    /// The tags of the association of `namespace/service_account`, if it has one.
    pub fn tags(
        &self,
        namespace: &str,
        service_account: &str,
    ) -> Option<std::collections::BTreeMap<String, String>> {
        self.state
            .associations
            .lock()
            .unwrap()
            .values()
            .find(|a| a.namespace == namespace && a.service_account == service_account)
            .map(|a| a.tags.clone())
    }

    /// From the `n`-th successful create on, creates fail with 500 (`None` lifts it).
    pub fn fail_creates_after(&self, n: Option<usize>) {
        *self.state.writes.fail_creates_after.lock().unwrap() = n;
    }

    /// (namespace, serviceAccount, roleArn) of every association, in id order.
    pub fn all(&self) -> Vec<(String, String, String)> {
        self.state
            .associations
            .lock()
            .unwrap()
            .values()
            .map(|a| {
                (
                    a.namespace.clone(),
                    a.service_account.clone(),
                    a.role_arn.clone(),
                )
            })
            .collect()
    }
}

/// The OIDC issuer DescribeCluster names (the provider of tests/migrate.rs's IRSA statements).
pub const OIDC_ISSUER: &str =
    "https://oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE";

/// Answers a write or DescribeCluster; any other request is returned for the read side.
pub async fn handle(
    state: &FakeState,
    req: Request<Body>,
    signature: &Signature,
) -> Result<Response, Request<Body>> {
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = req.method().clone();
    let op = match (method.clone(), segments.as_slice()) {
        (Method::POST, ["clusters", _, "pod-identity-associations"]) => "create",
        (Method::POST, ["clusters", _, "pod-identity-associations", _]) => "update",
        (Method::DELETE, ["clusters", _, "pod-identity-associations", _]) => "delete",
        (Method::GET, ["clusters", _]) => "describe-cluster",
        _ => return Err(req),
    };
    if op != "describe-cluster" {
        *state.writes.requests.lock().unwrap().entry(op).or_default() += 1;
    }
    if let Some(refused) = refuse_unsigned(state, signature) {
        return Ok(refused);
    }
    if op != "describe-cluster" {
        if state.down.load(Ordering::SeqCst) {
            return Ok(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ServerException",
                "internal failure",
            ));
        }
        if let Some(answer) = fault_answer(&state.writes.faults) {
            return Ok(answer);
        }
    }
    let cluster = segments[1].to_string();
    if cluster != state.cluster {
        return Ok(error(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            &format!("No cluster found for name: {cluster}."),
        ));
    }
    if op == "describe-cluster" {
        return Ok(ok(json!({"cluster": {
            "name": cluster,
            "arn": format!("arn:aws:eks:us-east-1:111122223333:cluster/{cluster}"),
            "status": "ACTIVE",
            "version": "1.31",
            "identity": {"oidc": {"issuer": OIDC_ISSUER}},
        }})));
    }
    if op == "delete" {
        let id = segments[3];
        let removed = state.associations.lock().unwrap().remove(id);
        return Ok(match removed {
            Some(a) => {
                state.writes.deletes.fetch_add(1, Ordering::SeqCst);
                ok(json!({ "association": summary(id, &cluster, &a) }))
            }
            None => error(
                StatusCode::NOT_FOUND,
                "ResourceNotFoundException",
                &format!("No Pod Identity Association found for id: {id}."),
            ),
        });
    }
    let body = match axum::body::to_bytes(req.into_body(), 64 * 1024).await {
        Ok(b) => b,
        Err(_) => {
            return Ok(error(
                StatusCode::BAD_REQUEST,
                "InvalidParameterException",
                "body too large",
            ));
        }
    };
    let Ok(input) = serde_json::from_slice::<Value>(&body) else {
        return Ok(error(
            StatusCode::BAD_REQUEST,
            "InvalidParameterException",
            "body is not JSON",
        ));
    };
    let field = |k: &str| input[k].as_str().map(String::from);
    if op == "update" {
        return Ok(update(state, &cluster, segments[3], &input));
    }
    let (Some(namespace), Some(service_account), Some(role_arn)) = (
        field("namespace"),
        field("serviceAccount"),
        field("roleArn"),
    ) else {
        return Ok(error(
            StatusCode::BAD_REQUEST,
            "InvalidParameterException",
            "namespace, serviceAccount and roleArn are required",
        ));
    };
    let limit = *state.writes.fail_creates_after.lock().unwrap();
    if limit.is_some_and(|n| state.writes.creates.load(Ordering::SeqCst) >= n) {
        return Ok(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ServerException",
            "internal failure",
        ));
    }
    let mut map = state.associations.lock().unwrap();
    if let Some((id, _)) = map
        .iter()
        .find(|(_, a)| a.namespace == namespace && a.service_account == service_account)
    {
        return Ok(error(
            StatusCode::CONFLICT,
            "ResourceInUseException",
            &format!("Association already exists: {id}"),
        ));
    }
    let n = state.next_id.fetch_add(1, Ordering::SeqCst);
    let id = format!("a-{n:017}");
    let a = FakeAssociation {
        namespace,
        service_account,
        role_arn,
        target_role_arn: field("targetRoleArn"),
        external_id: None,
        disable_session_tags: input["disableSessionTags"].as_bool(),
        policy: field("policy"),
        tags: input["tags"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect(),
        modified_at: 1_700_000_000 + n,
    };
    let mut out = summary(&id, &cluster, &a);
    out["roleArn"] = json!(a.role_arn);
    out["tags"] = json!(a.tags);
    map.insert(id, a);
    state.writes.creates.fetch_add(1, Ordering::SeqCst);
    Ok(ok(json!({ "association": out })))
}

/// UpdatePodIdentityAssociation: the fields given replace the association's.
fn update(state: &FakeState, cluster: &str, id: &str, input: &Value) -> Response {
    let mut map = state.associations.lock().unwrap();
    let Some(a) = map.get_mut(id) else {
        return error(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            &format!("No Pod Identity Association found for id: {id}."),
        );
    };
    if let Some(role) = input["roleArn"].as_str() {
        a.role_arn = role.to_string();
    }
    if let Some(target) = input["targetRoleArn"].as_str() {
        a.target_role_arn = Some(target.to_string()).filter(|t| !t.is_empty());
    }
    if let Some(d) = input["disableSessionTags"].as_bool() {
        a.disable_session_tags = Some(d);
    }
    if let Some(p) = input["policy"].as_str() {
        a.policy = Some(p.to_string()).filter(|p| !p.is_empty());
    }
    a.modified_at += 1;
    let mut out = summary(id, cluster, a);
    out["roleArn"] = json!(a.role_arn);
    out["tags"] = json!(a.tags);
    state.writes.updates.fetch_add(1, Ordering::SeqCst);
    ok(json!({ "association": out }))
}
