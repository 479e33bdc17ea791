//! The credentials agent as tests run it: started in-process on loopback with the fake
//! Kubernetes API, an associations file and a given STS endpoint, plus a plain HTTP client, the
//! assertions on its answers, and the skip when moto is missing.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use pod_identity_webhook::agent::{self, AgentExtras, AgentSettings, RunningAgent};
use serde_json::Value;

use super::kube_api::{FakeKubeApi, PodToken};
use super::sts::{INSTALL_MOTO, MOTO, moto_available};
use super::{WAIT, admin_get, sample};

pub const CARTS_ROLE: &str = "arn:aws:iam::111122223333:role/carts";
pub const ORDERS_ROLE: &str = "arn:aws:iam::111122223333:role/orders";
pub const TARGET_ROLE: &str = "arn:aws:iam::444455556666:role/orders-data";
pub const SHARED_ROLE: &str = "arn:aws:iam::111122223333:role/batch";

pub const ASSOCIATIONS: &str = "associations:
  - {namespace: team-a, serviceAccount: carts, roleArn: 'arn:aws:iam::111122223333:role/carts'}
  - {namespace: team-a, serviceAccount: orders, roleArn: 'arn:aws:iam::111122223333:role/orders',
     targetRoleArn: 'arn:aws:iam::444455556666:role/orders-data', externalId: ext-0rders}
  - {namespace: team-b, serviceAccount: batch, roleArn: 'arn:aws:iam::111122223333:role/batch',
     disableSessionTags: true}
";

/// Whether moto (the STS stand-in) is missing and the test must stop: a failure under CI.
pub fn skip_without_moto() -> bool {
    super::skip::unless(moto_available(), MOTO, INSTALL_MOTO)
}

/// The agent's own AWS identity in these tests (static keys; moto accepts any).
pub fn agent_aws_config() -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "AKIDAGENTEXAMPLE",
            "agent-secret-key",
            None,
            None,
            "tests",
        )))
        .build()
}

pub struct Harness {
    pub agent: RunningAgent,
    pub kube: FakeKubeApi,
    pub dir: tempfile::TempDir,
    pub associations: PathBuf,
}

/// The settings of an agent for cluster `kind` on loopback ports, with [`ASSOCIATIONS`]
/// written to `associations`, the API server of `kubeconfig` and STS at `sts_endpoint`.
pub fn agent_settings(
    associations: &Path,
    kubeconfig: PathBuf,
    sts_endpoint: &str,
) -> AgentSettings {
    std::fs::write(associations, ASSOCIATIONS).unwrap();
    let mut settings = AgentSettings::new("kind");
    settings.binds = vec!["127.0.0.1:0".parse().unwrap()];
    settings.admin_listen = "127.0.0.1:0".parse().unwrap();
    settings.associations_file = Some(associations.to_path_buf());
    settings.kubeconfig = Some(kubeconfig);
    settings.sts.endpoint = Some(sts_endpoint.to_string());
    settings
}

/// Starts the agent in process, as the tests' AWS identity ([`agent_aws_config`]).
pub async fn start_agent(settings: AgentSettings) -> RunningAgent {
    agent::start_with(
        settings,
        AgentExtras {
            aws_config: Some(agent_aws_config()),
        },
    )
    .await
    .expect("agent starts")
}

impl Harness {
    pub async fn start(sts_endpoint: &str, tune: impl FnOnce(&mut AgentSettings)) -> Self {
        let kube = FakeKubeApi::start(0, Vec::new()).await;
        let dir = tempfile::tempdir().unwrap();
        let associations = dir.path().join("associations.yaml");
        let mut settings = agent_settings(&associations, kube.kubeconfig(dir.path()), sts_endpoint);
        settings.rate_limit = None;
        tune(&mut settings);
        let agent = start_agent(settings).await;
        Self {
            agent,
            kube,
            dir,
            associations,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.agent.addrs[0]
    }

    /// Registers a pod-bound token for `namespace/service_account` and returns it.
    pub fn pod_token(&self, namespace: &str, service_account: &str, pod: &str) -> String {
        let token = format!("eyJhbGciOiJSUzI1NiJ9.{namespace}.{service_account}.{pod}");
        self.kube
            .token_reviews()
            .add(&token, PodToken::pod(namespace, service_account, pod));
        token
    }

    pub async fn get(&self, token: &str) -> (u16, Value) {
        get(
            self.addr(),
            "/v1/credentials",
            &self.addr().to_string(),
            Some(token),
        )
        .await
    }

    pub async fn metric(&self, series: &str) -> f64 {
        let (_, text) = admin_get(self.agent.admin_addr, "/metrics").await;
        sample(&text, series).unwrap_or(0.0)
    }
}

/// One GET over a fresh HTTP/1.1 connection: status and JSON body (`Null` if not JSON).
pub async fn get(addr: SocketAddr, path: &str, host: &str, token: Option<&str>) -> (u16, Value) {
    request("GET", addr, path, host, token).await
}

pub async fn request(
    method: &str,
    addr: SocketAddr,
    path: &str,
    host: &str,
    token: Option<&str>,
) -> (u16, Value) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    exchange(stream, method, path, host, token).await
}

/// One GET from the loopback address `source` (another client, as the agent counts them).
pub async fn get_from(
    source: IpAddr,
    addr: SocketAddr,
    path: &str,
    host: &str,
    token: Option<&str>,
) -> (u16, Value) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    exchange(stream, "GET", path, host, token).await
}

async fn exchange(
    stream: tokio::net::TcpStream,
    method: &str,
    path: &str,
    host: &str,
    token: Option<&str>,
) -> (u16, Value) {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", host);
    if let Some(t) = token {
        req = req.header("authorization", t);
    }
    let resp = tokio::time::timeout(
        WAIT,
        sender.send_request(req.body(Empty::<Bytes>::new()).unwrap()),
    )
    .await
    .expect("the agent answers in time")
    .unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// Credentials of 8 seconds' lifetime (`RecordingSts::issuing(Duration::from_secs(8))`)
/// refreshed in the background: from 6 seconds before expiry, swept every 200 ms, served while
/// at least 1 second remains.
pub fn refresh_short_lived(settings: &mut AgentSettings) {
    settings.credentials.refresh_before = Duration::from_secs(6);
    settings.credentials.min_remaining = Duration::from_secs(1);
    settings.sweep_interval = Duration::from_millis(200);
}

/// The agent refused with the HTTP `status` and the EKS error `code`.
#[track_caller]
pub fn assert_refused(status: u16, body: &Value, want_status: u16, code: &str) {
    assert_eq!(
        (status, body["Code"].as_str()),
        (want_status, Some(code)),
        "{body}"
    );
}

/// The refusal's `Message` says `part`.
#[track_caller]
pub fn assert_message(body: &Value, part: &str) {
    assert!(body["Message"].as_str().unwrap().contains(part), "{body}");
}

pub fn expiration(answer: &Value) -> SystemTime {
    let text = answer["Expiration"]
        .as_str()
        .expect("Expiration is a string");
    assert!(text.ends_with('Z'), "Expiration in UTC: {text}");
    aws_smithy_types::DateTime::from_str(text, aws_smithy_types::date_time::Format::DateTime)
        .map(|d| SystemTime::try_from(d).unwrap())
        .unwrap_or_else(|e| panic!("Expiration {text} is not RFC 3339: {e}"))
}
