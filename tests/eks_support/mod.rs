//! A fake EKS API on 127.0.0.1 that speaks the REST-JSON protocol of the two operations the
//! webhook uses, so the real `aws-sdk-eks` client (signing, retries, error parsing) runs:
//!
//! - `GET /clusters/{name}/pod-identity-associations?namespace&serviceAccount&maxResults&nextToken`
//! - `GET /clusters/{name}/pod-identity-associations/{associationId}`
//!
//! (and, in `writes`, Create, Update and Delete).
//!
//! Errors follow the service model: a JSON body `{"message": …}` and the `x-amzn-ErrorType`
//! header (`ResourceNotFoundException` 404, `InvalidParameterException` 400, `ServerException`
//! 500, `TooManyRequestsException` 429). Every request is counted.
#![allow(dead_code)] // each test binary uses a part of this module

pub mod writes;

// The one SigV4 check of the fakes; by path, since not every file with this module has
// tests/support (where a file has both, the two copies are independent).
#[allow(clippy::duplicate_mod)]
#[path = "../support/sigv4.rs"]
pub mod sigv4;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use aws_sdk_eks::config::{BehaviorVersion, Credentials, Region};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use pod_identity_webhook::identity::eks_client::{AwsEks, ClientTuning};
use serde_json::{Value, json};
use sigv4::Refusal;

/// One association as the fake stores it.
#[derive(Debug, Clone)]
pub struct FakeAssociation {
    pub namespace: String,
    pub service_account: String,
    pub role_arn: String,
    pub target_role_arn: Option<String>,
    pub external_id: Option<String>,
    pub disable_session_tags: Option<bool>,
    /// The inline session policy, as DescribePodIdentityAssociation returns it.
    pub policy: Option<String>,
    /// The association's tags (CreatePodIdentityAssociation's `tags`, Describe's `tags`).
    pub tags: BTreeMap<String, String>,
    pub modified_at: u64,
}

/// An error the fake answers the next requests with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 429 `TooManyRequestsException`.
    Throttle,
    /// 500 `ServerException`.
    Server,
    /// 400 `InvalidParameterException`.
    InvalidParameter,
}

pub struct FakeState {
    pub cluster: String,
    associations: Mutex<BTreeMap<String, FakeAssociation>>,
    next_id: AtomicU64,
    pub list_requests: AtomicUsize,
    pub describe_requests: AtomicUsize,
    /// Requests whose SigV4 signature is refused: none, an unknown key, or not the one the
    /// known secret gives (answered 403 as EKS does).
    pub unsigned_requests: AtomicUsize,
    faults: Mutex<VecDeque<Fault>>,
    down: AtomicBool,
    delay_ms: AtomicU64,
    /// Creates, deletes and their faults (`writes`).
    pub writes: writes::Writes,
}

/// The running fake; stops when dropped.
pub struct FakeEks {
    pub addr: SocketAddr,
    pub state: Arc<FakeState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeEks {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeEks {
    pub async fn start(cluster: &str) -> Self {
        let state = Arc::new(FakeState {
            cluster: cluster.to_string(),
            associations: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(1),
            list_requests: AtomicUsize::new(0),
            describe_requests: AtomicUsize::new(0),
            unsigned_requests: AtomicUsize::new(0),
            faults: Mutex::new(VecDeque::new()),
            down: AtomicBool::new(false),
            delay_ms: AtomicU64::new(0),
            writes: writes::Writes::default(),
        });
        let app = Router::new().fallback(handle).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake EKS");
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Adds an association; returns its id.
    pub fn add(&self, namespace: &str, service_account: &str, role: &str) -> String {
        let n = self.state.next_id.fetch_add(1, Ordering::SeqCst);
        let id = format!("a-{n:017}");
        self.state.associations.lock().unwrap().insert(
            id.clone(),
            FakeAssociation {
                namespace: namespace.into(),
                service_account: service_account.into(),
                role_arn: role_arn(role),
                target_role_arn: None,
                external_id: None,
                disable_session_tags: None,
                policy: None,
                tags: BTreeMap::new(),
                modified_at: 1_700_000_000 + n,
            },
        );
        id
    }

    /// Adds `count` associations `ns-{i/50}`/`sa-{i}` with role `role-{i}`.
    pub fn add_many(&self, count: usize) {
        for i in 0..count {
            self.add(
                &format!("ns-{}", i / 50),
                &format!("sa-{i}"),
                &format!("role-{i}"),
            );
        }
    }

    pub fn set_role(&self, namespace: &str, service_account: &str, role: &str) {
        let mut map = self.state.associations.lock().unwrap();
        let a = map
            .values_mut()
            .find(|a| a.namespace == namespace && a.service_account == service_account)
            .expect("association to change exists");
        a.role_arn = role_arn(role);
        a.modified_at += 1;
    }

    pub fn update(
        &self,
        namespace: &str,
        service_account: &str,
        f: impl FnOnce(&mut FakeAssociation),
    ) {
        let mut map = self.state.associations.lock().unwrap();
        let a = map
            .values_mut()
            .find(|a| a.namespace == namespace && a.service_account == service_account)
            .expect("association to change exists");
        f(a);
    }

    pub fn remove(&self, namespace: &str, service_account: &str) {
        self.state
            .associations
            .lock()
            .unwrap()
            .retain(|_, a| !(a.namespace == namespace && a.service_account == service_account));
    }

    /// Answers the next `n` List and Describe requests with `fault`.
    pub fn fail_next(&self, n: usize, fault: Fault) {
        let mut f = self.state.faults.lock().unwrap();
        for _ in 0..n {
            f.push_back(fault);
        }
    }

    /// Every request fails with 500 `ServerException` while down.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// Delays every answer (a slow EKS).
    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn lists(&self) -> usize {
        self.state.list_requests.load(Ordering::SeqCst)
    }

    pub fn describes(&self) -> usize {
        self.state.describe_requests.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> usize {
        self.lists() + self.describes()
    }

    pub fn unsigned(&self) -> usize {
        self.state.unsigned_requests.load(Ordering::SeqCst)
    }

    /// An `aws-sdk-eks` client for this fake: static credentials (so SigV4 signing runs),
    /// a region, the fake's URL and the given retry/timeout tuning.
    pub fn client(&self, cluster: &str, tuning: &ClientTuning) -> AwsEks {
        AwsEks::new(self.sdk_client(tuning), cluster)
    }

    /// The `aws-sdk-eks` client of [`FakeEks::client`].
    pub fn sdk_client(&self, tuning: &ClientTuning) -> aws_sdk_eks::Client {
        self.sdk_client_signing_with(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            tuning,
        )
    }

    /// An `aws-sdk-eks` client for this fake that signs with `key` and `secret`.
    pub fn sdk_client_signing_with(
        &self,
        key: &str,
        secret: &str,
        tuning: &ClientTuning,
    ) -> aws_sdk_eks::Client {
        let conf = aws_sdk_eks::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new(key, secret, None, None, "fake-eks-test"))
            .endpoint_url(self.url())
            .retry_config(tuning.retry_config())
            .timeout_config(tuning.timeout_config())
            .build();
        aws_sdk_eks::Client::from_conf(conf)
    }
}

/// Client tuning for tests: three attempts, millisecond backoff, short timeouts.
pub fn fast_tuning() -> ClientTuning {
    ClientTuning {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        attempt_timeout: Duration::from_secs(3),
        operation_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(1),
    }
}

pub fn role_arn(role: &str) -> String {
    format!("arn:aws:iam::111122223333:role/{role}")
}

/// The request's SigV4 verdict, taken once at the door ([`sigv4::verify`]: signed again with
/// the known secret and compared), so both the read and the write side refuse alike.
#[derive(Clone)]
pub struct Signature(Result<String, Refusal>);

/// A request whose signature EKS would refuse, counted and answered as the REST-JSON front end
/// of an AWS service answers: 403 (400 for an incomplete header) with the error type in
/// `x-amzn-ErrorType`.
fn refuse_unsigned(state: &FakeState, signature: &Signature) -> Option<Response> {
    let refusal = signature.0.as_ref().err()?;
    state.unsigned_requests.fetch_add(1, Ordering::SeqCst);
    Some(match refusal {
        Refusal::Missing => error(
            StatusCode::FORBIDDEN,
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        ),
        Refusal::Incomplete(why) => {
            error(StatusCode::BAD_REQUEST, "IncompleteSignatureException", why)
        }
        Refusal::UnknownKey => error(
            StatusCode::FORBIDDEN,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ),
        Refusal::Mismatch => error(
            StatusCode::FORBIDDEN,
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. \
             Check your AWS Secret Access Key and signing method. Consult the service \
             documentation for details.",
        ),
    })
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::HeaderName::from_static("x-amzn-errortype"), code),
        ],
        json!({ "message": message }).to_string(),
    )
        .into_response()
}

/// The answer of the next queued fault, if any.
fn fault_answer(queue: &Mutex<VecDeque<Fault>>) -> Option<Response> {
    let fault = queue.lock().unwrap().pop_front()?;
    Some(match fault {
        Fault::Throttle => error(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequestsException",
            "Rate exceeded",
        ),
        Fault::Server => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ServerException",
            "internal failure",
        ),
        Fault::InvalidParameter => error(
            StatusCode::BAD_REQUEST,
            "InvalidParameterException",
            "invalid parameter",
        ),
    })
}

fn ok(body: Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
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
    String::from_utf8_lossy(&out).into_owned()
}

fn query(req: &Request) -> BTreeMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn summary(id: &str, cluster: &str, a: &FakeAssociation) -> Value {
    json!({
        "clusterName": cluster,
        "namespace": a.namespace,
        "serviceAccount": a.service_account,
        "associationArn": format!("arn:aws:eks:us-east-1:111122223333:podidentityassociation/{cluster}/{id}"),
        "associationId": id,
    })
}

async fn handle(State(state): State<Arc<FakeState>>, req: Request<Body>) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 64 * 1024).await else {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidParameterException",
            "body too large",
        );
    };
    let signature = Signature(sigv4::verify(
        parts.method.as_str(),
        &parts.uri.to_string(),
        &parts.headers,
        &body,
        "eks",
        sigv4::known,
    ));
    let req = Request::from_parts(parts, Body::from(body));
    let req = match writes::handle(&state, req, &signature).await {
        Ok(answer) => return answer,
        Err(req) => req,
    };
    let path = percent_decode(req.uri().path());
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let is_describe = segments.len() == 4;
    match segments.as_slice() {
        ["clusters", _, "pod-identity-associations"]
        | ["clusters", _, "pod-identity-associations", _]
            if req.method() == axum::http::Method::GET => {}
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                "UnknownOperationException",
                "no such operation",
            );
        }
    }
    if is_describe {
        state.describe_requests.fetch_add(1, Ordering::SeqCst);
    } else {
        state.list_requests.fetch_add(1, Ordering::SeqCst);
    }
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if let Some(refused) = refuse_unsigned(&state, &signature) {
        return refused;
    }
    if state.down.load(Ordering::SeqCst) {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ServerException",
            "internal failure",
        );
    }
    if let Some(answer) = fault_answer(&state.faults) {
        return answer;
    }
    let cluster = segments[1];
    if cluster != state.cluster {
        return error(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            &format!("No cluster found for name: {cluster}."),
        );
    }
    let map = state.associations.lock().unwrap().clone();
    if is_describe {
        let id = segments[3];
        let Some(a) = map.get(id) else {
            return error(
                StatusCode::NOT_FOUND,
                "ResourceNotFoundException",
                &format!("No Pod Identity Association found for id: {id}."),
            );
        };
        let mut body = summary(id, cluster, a);
        body["roleArn"] = json!(a.role_arn);
        body["tags"] = json!(a.tags);
        body["createdAt"] = json!(1_700_000_000.0);
        body["modifiedAt"] = json!(a.modified_at as f64);
        if let Some(t) = &a.target_role_arn {
            body["targetRoleArn"] = json!(t);
        }
        if let Some(e) = &a.external_id {
            body["externalId"] = json!(e);
        }
        if let Some(d) = a.disable_session_tags {
            body["disableSessionTags"] = json!(d);
        }
        if let Some(p) = &a.policy {
            body["policy"] = json!(p);
        }
        return ok(json!({ "association": body }));
    }
    let q = query(&req);
    let max = match q.get("maxResults").map(|m| m.parse::<usize>()) {
        None => 100,
        Some(Ok(m)) if (1..=100).contains(&m) => m,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "InvalidParameterException",
                "maxResults must be between 1 and 100",
            );
        }
    };
    if let Some(token) = q.get("nextToken")
        && !token.starts_with("a-")
    {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidParameterException",
            "invalid nextToken",
        );
    }
    let after = q.get("nextToken").cloned();
    let matching: Vec<(&String, &FakeAssociation)> = map
        .iter()
        .filter(|(id, _)| after.as_ref().is_none_or(|t| *id > t))
        .filter(|(_, a)| q.get("namespace").is_none_or(|n| *n == a.namespace))
        .filter(|(_, a)| {
            q.get("serviceAccount")
                .is_none_or(|s| *s == a.service_account)
        })
        .collect();
    let page: Vec<Value> = matching
        .iter()
        .take(max)
        .map(|(id, a)| summary(id, cluster, a))
        .collect();
    let next = if matching.len() > max {
        Some(matching[max - 1].0.clone())
    } else {
        None
    };
    ok(json!({ "associations": page, "nextToken": next }))
}
