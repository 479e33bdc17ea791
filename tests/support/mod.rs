//! Shared test helpers: the real API server captures, a TLS client (HTTP/1.1 or HTTP/2 over
//! tokio-rustls + hyper) that reports the server's certificate, JSON Patch decoding and
//! application, a plain admin GET, and identity sources whose timing tests control.
#![allow(dead_code)] // Each test binary that includes this module uses a different part.

pub mod agent;
pub mod cases;
pub mod control_plane;
pub mod controller;
pub mod kube_api;
pub mod markdown;
pub mod sigv4;
pub mod skip;
pub mod sts;
pub mod sts_limits;
pub mod tools;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use pod_identity_webhook::admission::Mutator;
use pod_identity_webhook::admission::validate::Validator;
use pod_identity_webhook::identity::file::FileSource;
use pod_identity_webhook::identity::{
    Association, AssociationSource, AssociationSummary, Freshness, Identities, IdentityError,
};
use pod_identity_webhook::policy::Policy;
use pod_identity_webhook::settings::{InjectionSettings, PolicySettings};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::net::TcpStream;

/// Every wait in these tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(10);

/// The real API server captures (`tests/fixtures/apiserver-v1.24`), or `$POD_IDENTITY_FIXTURES`
/// to replay another capture of the same shape.
pub fn fixtures_dir() -> std::path::PathBuf {
    std::env::var_os("POD_IDENTITY_FIXTURES")
        .map(Into::into)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/apiserver-v1.24")
        })
}

/// A fixture from the real API server: `(path, review body)`.
pub fn fixture(name: &str) -> (String, Vec<u8>) {
    let file = fixtures_dir().join(name);
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("fixture {name}: {e}"));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    (
        v["path"].as_str().unwrap().to_string(),
        serde_json::to_vec(&v["review"]).unwrap(),
    )
}

/// One capture from the real API server, byte for byte.
pub struct Capture {
    /// File name without `.json`.
    pub name: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Capture {
    pub fn load(file: &std::path::Path) -> Self {
        #[derive(serde::Deserialize)]
        struct Raw<'a> {
            path: String,
            headers: std::collections::BTreeMap<String, String>,
            #[serde(borrow)]
            review: &'a serde_json::value::RawValue,
        }
        let text = std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("fixture {}: {e}", file.display()));
        let raw: Raw = serde_json::from_str(&text).expect("fixture parses");
        Self {
            name: file
                .file_name()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches(".json")
                .to_string(),
            path: raw.path,
            headers: raw.headers.into_iter().collect(),
            body: raw.review.get().as_bytes().to_vec(),
        }
    }

    /// The review as JSON.
    pub fn review(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// Every capture whose file name ends in `suffix` (`.mutate.json`, `.validate.json`), sorted.
pub fn captures(suffix: &str) -> Vec<Capture> {
    let mut files: Vec<_> = std::fs::read_dir(fixtures_dir())
        .expect("read fixtures dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    files.sort();
    files.iter().map(|f| Capture::load(f)).collect()
}

/// The JSON Patch of an AdmissionReview response, decoded from its base64 string (`[]` when
/// there is none). Panics on anything the API server would refuse.
pub fn decode_patch(answer: &serde_json::Value) -> json_patch::Patch {
    use base64::Engine;
    let response = &answer["response"];
    match response.get("patch") {
        None => json_patch::Patch(Vec::new()),
        Some(p) => {
            assert_eq!(response["patchType"], "JSONPatch", "patchType with a patch");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(p.as_str().expect("patch is a base64 string, not a list"))
                .expect("patch is base64");
            serde_json::from_slice(&bytes).expect("patch is a JSON Patch")
        }
    }
}

/// A container's env as `(name, value)` pairs, in order (`valueFrom` entries have value "").
pub fn env_pairs(container: &serde_json::Value) -> Vec<(String, String)> {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["value"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// `object` with the response's patch applied, as the API server would.
pub fn apply_answer(object: &serde_json::Value, answer: &serde_json::Value) -> serde_json::Value {
    let mut patched = object.clone();
    json_patch::patch(&mut patched, &decode_patch(answer)).expect("patch applies to the object");
    patched
}

/// A fixture's review with its uid replaced (so log lines and responses can be told apart).
pub fn fixture_with_uid(name: &str, uid: &str) -> (String, Vec<u8>) {
    let (path, body) = fixture(name);
    let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    v["request"]["uid"] = serde_json::Value::String(uid.to_string());
    (path, serde_json::to_vec(&v).unwrap())
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// One keep-alive TLS connection to the admission endpoint.
pub struct TlsClient {
    sender: Sender,
    /// The leaf certificate the server presented in this connection's handshake.
    pub peer_certificate: CertificateDer<'static>,
}

/// The answer to one request.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// A TLS connection to `addr` trusting only `ca_pem`, with ALPN `h2` or `http/1.1`: for tests
/// that write raw bytes.
pub async fn tls_stream(
    addr: SocketAddr,
    ca_pem: &str,
    h2: bool,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    pod_identity_webhook::server::tls::install_default_provider();
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![if h2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

impl TlsClient {
    /// Connects over TLS, trusting only `ca_pem`; `h2` picks HTTP/2 by ALPN, else HTTP/1.1.
    pub async fn connect(addr: SocketAddr, ca_pem: &str, h2: bool) -> std::io::Result<Self> {
        let tls = tls_stream(addr, ca_pem, h2).await?;
        let peer_certificate = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .expect("the server presents a certificate")
            .clone()
            .into_owned();
        let io = TokioIo::new(tls);
        let sender = if h2 {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            Sender::H2(sender)
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            Sender::H1(sender)
        };
        Ok(Self {
            sender,
            peer_certificate,
        })
    }

    /// Connects to a webhook started with a self-signed certificate, trusting its CA.
    pub async fn to(running: &pod_identity_webhook::startup::Running, h2: bool) -> Self {
        Self::connect(
            running.https_addr,
            running
                .self_signed_ca_pem
                .as_deref()
                .expect("started with a self-signed certificate"),
            h2,
        )
        .await
        .expect("the webhook accepts TLS connections")
    }

    /// Whether the server has closed the connection (the client's side has ended).
    pub fn is_closed(&self) -> bool {
        match &self.sender {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }

    /// POSTs `body` to `path` with `content_type`.
    pub async fn post(
        &mut self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<Answer, hyper::Error> {
        self.post_with(path, &[("content-type".into(), content_type.into())], body)
            .await
    }

    /// POSTs `body` to `path` with exactly `headers` (plus `host`).
    pub async fn post_with(
        &mut self,
        path: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> Result<Answer, hyper::Error> {
        let mut req = Request::post(path);
        for (k, v) in headers {
            // Hop-by-hop and framing headers are the connection's business.
            if ["host", "content-length", "connection", "accept-encoding"]
                .contains(&k.to_ascii_lowercase().as_str())
            {
                continue;
            }
            req = req.header(k.as_str(), v.as_str());
        }
        let req = req
            .header("host", "localhost")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let resp = match &mut self.sender {
            Sender::H1(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
            Sender::H2(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
        };
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// Sends a capture as the API server did: its path, headers and bytes.
    pub async fn send(&mut self, capture: &Capture) -> Result<Answer, hyper::Error> {
        self.post_with(&capture.path, &capture.headers, capture.body.clone())
            .await
    }

    /// POSTs an AdmissionReview as the API server does.
    pub async fn review(&mut self, path: &str, body: Vec<u8>) -> Result<Answer, hyper::Error> {
        self.post(path, "application/json", body).await
    }
}

/// `GET http://addr/path` on the admin port: `(status, body)`.
pub async fn admin_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let tcp = TcpStream::connect(addr).await.expect("admin port accepts");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Waits until a process started by the test accepts connections on `addr` (bounded by
/// [`WAIT`]); `what` names it in the failure.
pub async fn wait_listening(addr: SocketAddr, what: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while TcpStream::connect(addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} never listened on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `/readyz` until it answers `want` (bounded by [`WAIT`]).
pub async fn wait_readyz(addr: SocketAddr, want: u16) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = admin_get(addr, "/readyz").await;
        if status == want {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz stayed {status} ({body}), wanted {want}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// How many times a webhook's connection deadline or cap `limit` ended or refused something on
/// `port` (https, admin): `connection_limits_reached_total`, 0 before the first.
pub async fn limit_reached(admin: SocketAddr, port: &str, limit: &str) -> f64 {
    limit_sample(&metrics_text(admin).await, port, limit)
}

async fn metrics_text(admin: SocketAddr) -> String {
    let (status, text) = admin_get(admin, "/metrics").await;
    assert_eq!(status, 200);
    text
}

fn limit_sample(metrics: &str, port: &str, limit: &str) -> f64 {
    sample(
        metrics,
        &format!(
            "pod_identity_webhook_connection_limits_reached_total{{port=\"{port}\",limit=\"{limit}\"}}"
        ),
    )
    .unwrap_or(0.0)
}

/// Every limit `connection_limits_reached_total` counts (docs/operations.md).
pub const CONNECTION_LIMITS: [&str; 8] = [
    "handshake_timeout",
    "header_read_timeout",
    "idle_timeout",
    "http2_first_request_timeout",
    "http2_idle_timeout",
    "body_read_timeout",
    "body_timeout",
    "body_memory",
];

/// Asserts which of [`CONNECTION_LIMITS`] ended or refused something on a webhook's `port`:
/// `fired` names those that did and how often; every other one never did.
pub async fn limits_reached(admin: SocketAddr, port: &str, fired: &[(&str, f64)]) {
    let metrics = metrics_text(admin).await;
    let mut reached = Vec::new();
    let mut want = Vec::new();
    for limit in CONNECTION_LIMITS {
        reached.push((limit, limit_sample(&metrics, port, limit)));
        let times = fired.iter().find(|(l, _)| *l == limit).map_or(0.0, |f| f.1);
        want.push((limit, times));
    }
    assert_eq!(
        reached, want,
        "times each limit was reached on the {port} port"
    );
}

/// The value of one sample line of the Prometheus text (`name{labels} value`); `None` when the
/// sample is absent.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

/// Polls `/metrics` on `admin` until `series` reads `want` (bounded by [`WAIT`]): the wait for
/// something a counter shows happening. Returns the metrics text it read it in.
pub async fn wait_sample(admin: SocketAddr, series: &str, want: f64) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, text) = admin_get(admin, "/metrics").await;
        assert_eq!(status, 200, "{text}");
        let got = sample(&text, series);
        if got == Some(want) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} never read {want} (last {got:?})"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Replaces `path`'s content in one step (a rename), so no reload check sees it half written.
pub fn replace_file(path: &std::path::Path, content: impl AsRef<[u8]>) {
    let next = path.with_extension("next");
    std::fs::write(&next, content).unwrap();
    std::fs::rename(&next, path).unwrap();
}

/// An association source whose readiness the test flips and whose lookups take `delay`.
pub struct ControlledSource {
    pub ready: AtomicBool,
    /// Lookups started so far (to know requests are in flight).
    pub started: std::sync::atomic::AtomicUsize,
    /// Lookups in progress now, and the most there were at one time.
    pub in_progress: std::sync::atomic::AtomicUsize,
    pub most_at_once: std::sync::atomic::AtomicUsize,
    pub delay: Duration,
    pub association: Option<Arc<Association>>,
}

impl ControlledSource {
    pub fn new(ready: bool, delay: Duration, association: Option<Association>) -> Arc<Self> {
        Arc::new(Self {
            ready: AtomicBool::new(ready),
            started: Default::default(),
            in_progress: Default::default(),
            most_at_once: Default::default(),
            delay,
            association: association.map(Arc::new),
        })
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }
}

impl AssociationSource for ControlledSource {
    fn name(&self) -> &'static str {
        "controlled"
    }

    fn lookup<'a>(
        &'a self,
        namespace: &'a str,
        service_account: &'a str,
        _freshness: Freshness,
    ) -> BoxFuture<'a, Result<Option<Arc<AssociationSummary>>, IdentityError>> {
        Box::pin(async move {
            let found = self.details(namespace, service_account).await?;
            Ok(found.map(|a| Arc::new(AssociationSummary::from(&*a))))
        })
    }

    fn details<'a>(
        &'a self,
        namespace: &'a str,
        service_account: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<Association>>, IdentityError>> {
        Box::pin(async move {
            self.started.fetch_add(1, Ordering::AcqRel);
            let _in_progress = InProgress::enter(self);
            tokio::time::sleep(self.delay).await;
            Ok(self
                .association
                .as_ref()
                .filter(|a| a.namespace == namespace && a.service_account == service_account)
                .cloned())
        })
    }

    fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// One lookup of a [`ControlledSource`] in progress, until dropped (answered or cancelled).
struct InProgress<'a>(&'a ControlledSource);

impl<'a> InProgress<'a> {
    fn enter(source: &'a ControlledSource) -> Self {
        let now = source.in_progress.fetch_add(1, Ordering::AcqRel) + 1;
        source.most_at_once.fetch_max(now, Ordering::AcqRel);
        Self(source)
    }
}

impl Drop for InProgress<'_> {
    fn drop(&mut self) {
        self.0.in_progress.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The association the `pod-create-carts` fixture's ServiceAccount gets.
pub fn carts_association() -> Association {
    Association {
        namespace: "team-a".into(),
        service_account: "carts".into(),
        role_arn: "arn:aws:iam::111122223333:role/carts".into(),
        target_role_arn: None,
        external_id: None,
        disable_session_tags: None,
        policy: None,
        association_id: None,
    }
}

/// An HTTP server of a test's on a loopback port (plain HTTP); stops when dropped.
pub struct Served {
    pub addr: SocketAddr,
    stop: tokio_util::sync::CancellationToken,
}

impl Served {
    /// Serves `app` on `127.0.0.1` at a free port.
    pub async fn start(app: axum::Router) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        let serving = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(serving.cancelled_owned())
                .await
                .unwrap();
        });
        Self { addr, stop }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// [`Identities`] under the `eks.amazonaws.com` prefix with [`carts_association`] alone.
pub fn carts_identities() -> Identities {
    let associations = FileSource::from_list(vec![carts_association()]).unwrap();
    Identities::new("eks.amazonaws.com").with_associations(associations)
}

/// The webhook's admission decisions in process, without its HTTP server: its mutator and
/// validator over the same identities, and a runtime to drive them.
pub struct InProcessWebhook {
    pub mutator: Mutator,
    pub validator: Validator,
    pub runtime: tokio::runtime::Runtime,
}

impl InProcessWebhook {
    /// Decides with `identities` under `policy` (the `policy:` section's YAML), the webhook's
    /// own namespace being `webhook_namespace`.
    pub fn new(identities: Identities, policy: &str, webhook_namespace: Option<&str>) -> Self {
        let policy: PolicySettings = serde_yaml_ng::from_str(policy).unwrap();
        let policy = Policy::compile(&policy, webhook_namespace).unwrap();
        Self {
            mutator: Mutator::new(InjectionSettings::default(), identities.clone()),
            validator: Validator::new(policy, identities),
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap(),
        }
    }
}

/// A webhook started for a test, with the directory its files live in (removed when dropped).
pub struct Webhook {
    pub running: pod_identity_webhook::startup::Running,
    pub dir: tempfile::TempDir,
}

impl std::ops::Deref for Webhook {
    type Target = pod_identity_webhook::startup::Running;
    fn deref(&self) -> &Self::Target {
        &self.running
    }
}

impl Webhook {
    /// Graceful stop, as on SIGTERM.
    pub async fn shutdown(self) {
        self.running.shutdown().await
    }
}

/// The one way tests start a webhook: `Settings::local()` (self-signed TLS on loopback ports, no
/// shutdown grace), changed by the test, plus association sources the test controls.
pub struct WebhookBuilder {
    settings: pod_identity_webhook::settings::Settings,
    extras: pod_identity_webhook::startup::Extras,
    dir: tempfile::TempDir,
}

impl Default for WebhookBuilder {
    fn default() -> Self {
        Self::from_settings(pod_identity_webhook::settings::Settings::local())
    }
}

impl WebhookBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts from settings the test resolved itself (a config file, CLI arguments).
    pub fn from_settings(settings: pod_identity_webhook::settings::Settings) -> Self {
        Self {
            settings,
            extras: Default::default(),
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    /// The test's directory (files written there live as long as the webhook).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Writes `yaml` as the associations file and serves it.
    pub fn associations(mut self, yaml: &str) -> Self {
        let path = self.dir.path().join("associations.yaml");
        std::fs::write(&path, yaml).expect("write the associations file");
        self.settings.associations_file = Some(path);
        self
    }

    /// Changes the settings.
    pub fn settings(
        mut self,
        change: impl FnOnce(&mut pod_identity_webhook::settings::Settings),
    ) -> Self {
        change(&mut self.settings);
        self
    }

    /// Consults `source` before the configured sources.
    pub fn source(mut self, source: Arc<dyn AssociationSource>) -> Self {
        self.extras.association_sources.push(source);
        self
    }

    pub async fn try_start(self) -> Result<Webhook, pod_identity_webhook::startup::StartError> {
        let running = pod_identity_webhook::startup::start_with(self.settings, self.extras).await?;
        Ok(Webhook {
            running,
            dir: self.dir,
        })
    }

    pub async fn start(self) -> Webhook {
        self.try_start().await.expect("the webhook starts")
    }
}

/// The webhook as `serve --config FILE [--kubeconfig PATH] --self-signed` starts it on loopback
/// ports, ready.
pub async fn serve_config(
    config: &std::path::Path,
    kubeconfig: Option<&std::path::Path>,
) -> Webhook {
    use pod_identity_webhook::cli::{Cli, Command};
    let mut args = vec![
        "pod-identity-webhook".to_string(),
        "serve".into(),
        "--config".into(),
        config.display().to_string(),
        "--self-signed".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--admin-listen".into(),
        "127.0.0.1:0".into(),
    ];
    if let Some(k) = kubeconfig {
        args.extend(["--kubeconfig".into(), k.display().to_string()]);
    }
    let cli = <Cli as clap::Parser>::try_parse_from(args).expect("serve arguments parse");
    let Command::Serve(args) = cli.command else {
        panic!("serve expected")
    };
    let running = WebhookBuilder::from_settings(args.settings().expect("settings"))
        .start()
        .await;
    wait_readyz(running.admin_addr, 200).await;
    running
}

/// The arguments as owned strings (for [`run_binary`]).
pub fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Runs the built binary with `args` and `stdin`, off the async runtime (so a fake API in the
/// test answers it meanwhile): `(exit code, stdout, stderr)`.
pub async fn run_binary(args: Vec<String>, stdin: Option<Vec<u8>>) -> (i32, String, String) {
    run_binary_env(args, stdin, Vec::new()).await
}

/// [`run_binary`] with `env` added to the child's environment.
pub async fn run_binary_env(
    args: Vec<String>,
    stdin: Option<Vec<u8>>,
    env: Vec<(&'static str, String)>,
) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pod-identity-webhook"))
            .args(&args)
            .envs(env)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("binary runs");
        let mut input = child.stdin.take().unwrap();
        if let Some(bytes) = stdin {
            input.write_all(&bytes).unwrap();
        }
        drop(input);
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().expect("exited"),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    })
    .await
    .unwrap()
}

/// AWS credentials from the environment, as the default chain finds them in a cluster: set once,
/// before any test of the binary builds an AWS client (every such test calls this first; `Once`
/// makes the others wait, so nothing reads the environment while it is written).
pub fn static_aws_credentials() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: see above; no other thread reads the environment during the call.
        unsafe {
            std::env::set_var("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE");
            std::env::set_var(
                "AWS_SECRET_ACCESS_KEY",
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            );
            std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        }
    });
}
