//! STS for tests: `moto` in server mode (a real STS implementation: AssumeRole, chaining,
//! GetCallerIdentity), and a small recording STS of our own where a test needs to see what went
//! over the wire (moto ignores session tags) or to make STS fail, hang or throttle. The recording
//! STS checks what STS checks: the SigV4 signature against the known keys (`sigv4`) and
//! AssumeRole's documented limits (`sts_limits`), answering STS's errors.

use super::Served;
use super::sigv4::{Refusal, known, verify};
use super::sts_limits::{self, assume_role_violations};
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

/// A `moto_server` process on a free loopback port; killed on drop.
pub struct Moto {
    pub endpoint: String,
    child: Child,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a test without moto lacks, and how to install it (for `support::skip`).
pub const MOTO: &str = "moto (the STS and IAM stand-in)";
pub const INSTALL_MOTO: &str = "pip install 'moto[server]' boto3; .ci/run installs it";

/// Whether moto can be started here (`pip install 'moto[server]'`; `.ci/run` installs it).
pub fn moto_available() -> bool {
    Command::new("python3")
        .args(["-c", "import moto.server, flask"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Moto {
    /// Starts moto and waits until it answers. Panics with the reason when it cannot.
    pub async fn start() -> Self {
        Self::launch(Vec::new()).await
    }

    /// [`Moto::start`], its resources in the AWS account `account` (`MOTO_ACCOUNT_ID`).
    pub async fn in_account(account: &str) -> Self {
        Self::launch(vec![("MOTO_ACCOUNT_ID", account.to_string())]).await
    }

    /// [`Moto::start`] with moto's own recorder on: every request it serves is appended to
    /// `recording` (read it with [`Moto::recorded`]).
    pub async fn recording(recording: &std::path::Path) -> Self {
        Self::launch(vec![
            ("MOTO_ENABLE_RECORDING", "true".to_string()),
            ("MOTO_RECORDER_FILEPATH", recording.display().to_string()),
        ])
        .await
    }

    /// The requests moto recorded to `recording`, as form parameters.
    pub fn recorded(recording: &std::path::Path) -> Vec<StsCall> {
        use base64::Engine;
        let text = std::fs::read_to_string(recording).unwrap_or_default();
        text.lines()
            .map(|line| {
                let entry: serde_json::Value = serde_json::from_str(line).unwrap();
                let body = entry["body"].as_str().unwrap_or_default();
                let body = if entry["body_encoded"] == true {
                    base64::engine::general_purpose::STANDARD
                        .decode(body)
                        .unwrap()
                } else {
                    body.as_bytes().to_vec()
                };
                StsCall {
                    params: form_urlencoded::parse(&body).into_owned().collect(),
                    signed_by: String::new(),
                }
            })
            .collect()
    }

    async fn launch(env: Vec<(&'static str, String)>) -> Self {
        assert!(
            moto_available(),
            "moto is not installed: pip install 'moto[server]' (.ci/run does)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .envs(env)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto server");
        let endpoint = format!("http://127.0.0.1:{port}");
        let moto = Self { endpoint, child };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return moto;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "moto did not start within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// How the recording STS answers.
#[derive(Clone, Debug)]
pub enum StsMode {
    /// Credentials valid for `lifetime`.
    Issue { lifetime: Duration },
    /// An STS error: HTTP status and error code.
    Fail { status: u16, code: &'static str },
    /// Never answers.
    Hang,
}

/// One request as it arrived: its form parameters and the access key that signed it.
#[derive(Clone, Debug)]
pub struct StsCall {
    pub params: BTreeMap<String, String>,
    pub signed_by: String,
}

impl StsCall {
    pub fn action(&self) -> &str {
        self.params.get("Action").map(String::as_str).unwrap_or("")
    }

    /// `Tags.member.N.Key/Value` as pairs, in order.
    pub fn tags(&self) -> Vec<(String, String)> {
        (1..)
            .map_while(|i| {
                let k = self.params.get(&format!("Tags.member.{i}.Key"))?;
                let v = self.params.get(&format!("Tags.member.{i}.Value"))?;
                Some((k.clone(), v.clone()))
            })
            .collect()
    }

    /// `TransitiveTagKeys.member.N`.
    pub fn transitive_keys(&self) -> Vec<String> {
        (1..)
            .map_while(|i| {
                self.params
                    .get(&format!("TransitiveTagKeys.member.{i}"))
                    .cloned()
            })
            .collect()
    }
}

struct Recorder {
    mode: Mutex<StsMode>,
    calls: Mutex<Vec<StsCall>>,
    issued: std::sync::atomic::AtomicUsize,
}

/// The recording STS over plain HTTP on 127.0.0.1; stops on drop.
pub struct RecordingSts {
    pub endpoint: String,
    recorder: Arc<Recorder>,
    _served: Served,
}

const NS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";

fn xml(status: u16, body: String) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "text/xml")],
        body,
    )
        .into_response()
}

fn rfc3339(t: SystemTime) -> String {
    aws_smithy_types::DateTime::from(t)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap()
}

/// An STS error as STS sends it: `ErrorResponse` XML.
fn sts_error(status: u16, code: &str, message: &str) -> Response {
    let message = message
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    xml(
        status,
        format!(
            r#"<ErrorResponse xmlns="{NS}"><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>c0ffee00-0000-4000-8000-0000000000ee</RequestId></ErrorResponse>"#
        ),
    )
}

/// What STS answers a request whose signature it refuses.
fn refused(refusal: Refusal) -> Response {
    match refusal {
        Refusal::Missing => sts_error(
            403,
            "MissingAuthenticationToken",
            "Request is missing Authentication Token",
        ),
        Refusal::Incomplete(why) => sts_error(400, "IncompleteSignature", &why),
        Refusal::UnknownKey => sts_error(
            403,
            "InvalidClientTokenId",
            "The security token included in the request is invalid.",
        ),
        Refusal::Mismatch => sts_error(
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. \
             Check your AWS Secret Access Key and signing method. Consult the service \
             documentation for details.",
        ),
    }
}

async fn handle(
    State(r): State<Arc<Recorder>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params: BTreeMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    // `AWS4-HMAC-SHA256 Credential=AKID/20261203/us-east-1/sts/aws4_request, ...`
    let signed_by = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split("Credential=").nth(1))
        .and_then(|v| v.split('/').next())
        .unwrap_or("")
        .to_string();
    let call = StsCall { params, signed_by };
    r.calls.lock().unwrap().push(call.clone());
    // As STS: the signature first, then the parameters' documented limits.
    // The keys the tests sign with, and the credentials this STS issued (role chaining).
    let secret_of = |key: &str| {
        known(key).or_else(|| {
            let n: usize = key.strip_prefix("ASIARECORDED")?.parse().ok()?;
            (1..=r.issued.load(std::sync::atomic::Ordering::Relaxed))
                .contains(&n)
                .then(|| (format!("secret-{n}"), Some(format!("session-token-{n}"))))
        })
    };
    let uri = uri.to_string();
    if let Err(refusal) = verify(method.as_str(), &uri, &headers, &body, "sts", secret_of) {
        return refused(refusal);
    }
    if call.action() == "AssumeRole" {
        let violations = assume_role_violations(&call.params);
        if !violations.is_empty() {
            return sts_error(400, "ValidationError", &sts_limits::message(&violations));
        }
    }
    let mode = r.mode.lock().unwrap().clone();
    match mode {
        StsMode::Hang => std::future::pending().await,
        StsMode::Fail { status, code } => xml(
            status,
            format!(
                r#"<ErrorResponse xmlns="{NS}"><Error><Type>Sender</Type><Code>{code}</Code><Message>{code} from the recording STS</Message></Error><RequestId>c0ffee00-0000-4000-8000-000000000000</RequestId></ErrorResponse>"#
            ),
        ),
        StsMode::Issue { lifetime } => match call.action() {
            "GetCallerIdentity" => xml(
                200,
                format!(
                    r#"<GetCallerIdentityResponse xmlns="{NS}"><GetCallerIdentityResult><Arn>arn:aws:iam::111122223333:user/pod-identity-agent</Arn><UserId>AIDAEXAMPLEAGENT</UserId><Account>111122223333</Account></GetCallerIdentityResult><ResponseMetadata><RequestId>c0ffee00-0000-4000-8000-000000000001</RequestId></ResponseMetadata></GetCallerIdentityResponse>"#
                ),
            ),
            "AssumeRole" => {
                let n = r.issued.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                let role = call.params.get("RoleArn").cloned().unwrap_or_default();
                let account = role.split(':').nth(4).unwrap_or("111122223333").to_string();
                let role_name = role.rsplit('/').next().unwrap_or("role").to_string();
                let session = call
                    .params
                    .get("RoleSessionName")
                    .cloned()
                    .unwrap_or_default();
                let expiration = rfc3339(SystemTime::now() + lifetime);
                xml(
                    200,
                    format!(
                        r#"<AssumeRoleResponse xmlns="{NS}"><AssumeRoleResult><Credentials><AccessKeyId>ASIARECORDED{n:08}</AccessKeyId><SecretAccessKey>secret-{n}</SecretAccessKey><SessionToken>session-token-{n}</SessionToken><Expiration>{expiration}</Expiration></Credentials><AssumedRoleUser><AssumedRoleId>AROARECORDED:{session}</AssumedRoleId><Arn>arn:aws:sts::{account}:assumed-role/{role_name}/{session}</Arn></AssumedRoleUser><PackedPolicySize>6</PackedPolicySize></AssumeRoleResult><ResponseMetadata><RequestId>c0ffee00-0000-4000-8000-000000000002</RequestId></ResponseMetadata></AssumeRoleResponse>"#
                    ),
                )
            }
            other => xml(
                400,
                format!(
                    r#"<ErrorResponse xmlns="{NS}"><Error><Type>Sender</Type><Code>InvalidAction</Code><Message>{other} is not served here</Message></Error><RequestId>x</RequestId></ErrorResponse>"#
                ),
            ),
        },
    }
}

impl RecordingSts {
    /// Issues credentials valid for `lifetime`.
    pub async fn issuing(lifetime: Duration) -> Self {
        Self::start(StsMode::Issue { lifetime }).await
    }

    pub async fn start(mode: StsMode) -> Self {
        let recorder = Arc::new(Recorder {
            mode: Mutex::new(mode),
            calls: Mutex::new(Vec::new()),
            issued: Default::default(),
        });
        let app = Router::new()
            .route("/", post(handle))
            .with_state(recorder.clone());
        let served = Served::start(app).await;
        Self {
            endpoint: format!("http://{}", served.addr),
            recorder,
            _served: served,
        }
    }

    pub fn set_mode(&self, mode: StsMode) {
        *self.recorder.mode.lock().unwrap() = mode;
    }

    /// Answers from now on with the STS error `code` and the HTTP `status`.
    pub fn fail(&self, status: u16, code: &'static str) {
        self.set_mode(StsMode::Fail { status, code });
    }

    /// Every request so far.
    pub fn calls(&self) -> Vec<StsCall> {
        self.recorder.calls.lock().unwrap().clone()
    }

    /// The `AssumeRole` requests so far.
    pub fn assume_role_calls(&self) -> Vec<StsCall> {
        self.calls()
            .into_iter()
            .filter(|c| c.action() == "AssumeRole")
            .collect()
    }
}
