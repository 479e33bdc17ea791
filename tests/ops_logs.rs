//! Logs (issue 6): one structured line per admission decision, with the request uid, kind,
//! namespace, name, ServiceAccount, outcome and duration, and nothing secret.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::Request;
use pod_identity_webhook::admission::Mutator;
use pod_identity_webhook::admission::validate::Validator;
use pod_identity_webhook::identity::Identities;
use pod_identity_webhook::identity::file::FileSource;
use pod_identity_webhook::server::app::App;
use pod_identity_webhook::server::routes;
use pod_identity_webhook::settings::InjectionSettings;
use pod_identity_webhook::telemetry::logging;
use support::{carts_association, fixture_with_uid};
use tower::ServiceExt;
use tracing_subscriber::EnvFilter;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<serde_json::Value> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

fn app() -> Arc<App> {
    let identities = Identities::new("eks.amazonaws.com")
        .with_associations(FileSource::from_list(vec![carts_association()]).unwrap());
    Arc::new(App::new(
        Mutator::new(InjectionSettings::default(), identities),
        Validator::default(),
    ))
}

/// The carts pod with a secret-looking env value, to check it never reaches the logs.
fn pod_with_secret_env(uid: &str, secret: &str) -> (String, Vec<u8>) {
    let (path, body) = fixture_with_uid("pod-create-carts.mutate.json", uid);
    let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    v["request"]["object"]["spec"]["containers"][0]["env"] =
        serde_json::json!([{"name": "DB_PASSWORD", "value": secret}]);
    (path, serde_json::to_vec(&v).unwrap())
}

async fn post(app: &Arc<App>, path: &str, body: Vec<u8>) -> u16 {
    let req = Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    routes::admission_router(app.clone())
        .oneshot(req)
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn one_json_line_per_decision_with_its_uid_and_no_secrets() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = logging::json_subscriber(EnvFilter::new("info"), move || writer.clone());
    let _guard = tracing::subscriber::set_default(subscriber);

    let secret = "hunter2-not-for-logs";
    let app = app();
    let (path, body) = pod_with_secret_env("uid-mutated", secret);
    assert_eq!(post(&app, &path, body).await, 200);
    let (path, body) = fixture_with_uid(
        "pod-create-hostnetwork-default-sa.mutate.json",
        "uid-unchanged",
    );
    assert_eq!(post(&app, &path, body).await, 200);
    let (path, body) = fixture_with_uid("sa-create-default.validate.json", "uid-validate");
    assert_eq!(post(&app, &path, body).await, 200);
    let (path, body) = fixture_with_uid("pod-create-carts.mutate.json", "uid-error");
    let mut broken: serde_json::Value = serde_json::from_slice(&body).unwrap();
    broken["request"]["object"]["spec"]["containers"] = serde_json::json!(7);
    assert_eq!(
        post(&app, &path, serde_json::to_vec(&broken).unwrap()).await,
        200
    );
    // Not an AdmissionReview: no decision, so no decision line.
    assert_eq!(post(&app, "/mutate", b"{}".to_vec()).await, 400);

    let lines = captured.lines();
    let decisions: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["message"] == "admission decision")
        .collect();
    let uids: Vec<&str> = decisions
        .iter()
        .map(|l| l["uid"].as_str().unwrap())
        .collect();
    assert_eq!(
        uids,
        ["uid-mutated", "uid-unchanged", "uid-validate", "uid-error"]
    );

    for line in &decisions {
        assert_eq!(line["span"]["name"], "admission", "{line}");
        assert_eq!(
            line["span"]["uid"], line["uid"],
            "the span carries the uid: {line}"
        );
    }

    let mutated = decisions[0];
    assert_eq!(mutated["level"], "INFO");
    assert_eq!(mutated["endpoint"], "mutate");
    assert_eq!(mutated["kind"], "Pod");
    assert_eq!(mutated["operation"], "CREATE");
    assert_eq!(mutated["namespace"], "team-a");
    assert_eq!(mutated["name"], "carts-0");
    assert_eq!(mutated["service_account"], "carts");
    assert_eq!(mutated["outcome"], "mutated");
    assert_eq!(mutated["dry_run"], false);
    assert!(mutated["duration_us"].is_u64(), "{mutated}");

    let unchanged = decisions[1];
    assert_eq!(unchanged["service_account"], "default");
    assert_eq!(unchanged["outcome"], "unchanged");
    assert_eq!(unchanged["reason"], "no identity");
    assert_eq!(decisions[2]["kind"], "ServiceAccount");
    assert_eq!(decisions[2]["endpoint"], "validate");

    let error = decisions[3];
    assert_eq!(error["outcome"], "error");
    let detail = error["detail"].as_str().unwrap();
    assert!(
        detail.contains("spec.containers"),
        "the detail names the field: {detail}"
    );

    let text = captured.text();
    assert!(
        !text.contains(secret),
        "an env value reached the logs:\n{text}"
    );
    assert!(
        !text.contains("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"),
        "patches are not logged"
    );
}

#[tokio::test]
async fn rust_log_style_filters_apply() {
    let captured = Captured::default();
    let writer = captured.clone();
    // `warn` for our crate: decision lines (info) are filtered out.
    let subscriber =
        logging::json_subscriber(EnvFilter::new("pod_identity_webhook=warn"), move || {
            writer.clone()
        });
    let _guard = tracing::subscriber::set_default(subscriber);
    let app = app();
    let (path, body) = fixture_with_uid("pod-create-carts.mutate.json", "quiet");
    assert_eq!(post(&app, &path, body).await, 200);
    assert!(captured.text().is_empty(), "{}", captured.text());
}

/// The decision line as the text subscriber writes it, coloured or not.
async fn text_decision_line(colour: bool) -> String {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber =
        logging::text_subscriber(EnvFilter::new("info"), move || writer.clone(), colour);
    let _guard = tracing::subscriber::set_default(subscriber);
    let app = app();
    let (path, body) = fixture_with_uid("pod-create-carts.mutate.json", "uid-text");
    assert_eq!(post(&app, &path, body).await, 200);
    let text = captured.text();
    let decision: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("admission decision"))
        .collect();
    assert_eq!(decision.len(), 1, "{text}");
    decision[0].to_string()
}

const DECISION_FIELDS: [&str; 4] = [
    "uid=\"uid-text\"",
    "namespace=\"team-a\"",
    "service_account=\"carts\"",
    "outcome=\"mutated\"",
];

#[tokio::test]
async fn the_text_format_has_the_same_decision_line() {
    let line = text_decision_line(false).await;
    assert!(
        !line.contains('\u{1b}'),
        "no escape codes when not colouring: {line:?}"
    );
    for field in DECISION_FIELDS {
        assert!(line.contains(field), "{field} in {line}");
    }
}

#[tokio::test]
async fn coloured_text_logs_carry_the_same_fields() {
    let line = text_decision_line(true).await;
    assert!(line.contains('\u{1b}'), "{line:?}");
    let line = strip_ansi(&line);
    for field in DECISION_FIELDS {
        assert!(line.contains(field), "{field} in {line}");
    }
}

#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    use std::ffi::OsStr;
    assert!(logging::colour(true, None));
    assert!(
        logging::colour(true, Some(OsStr::new(""))),
        "an empty NO_COLOR is unset"
    );
    assert!(!logging::colour(true, Some(OsStr::new("1"))));
    assert!(
        !logging::colour(false, None),
        "a file or a pipe gets no escape codes"
    );
}

/// `text` without ANSI escape sequences (`ESC [ ... m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The real binary with stderr into a pipe nobody reads: once the pipe and the bounded queue
/// are full, further lines are dropped and counted in `log_lines_dropped_total`, and every
/// admission is still answered (a blocking logger would hang them at the first full pipe).
#[tokio::test]
async fn a_stderr_nobody_reads_costs_counted_lines_never_an_answer() {
    let dir = tempfile::tempdir().unwrap();
    let certs = pod_identity_webhook::certs::generate(&["localhost".to_string()]).unwrap();
    std::fs::write(dir.path().join("tls.crt"), &certs.cert_pem).unwrap();
    std::fs::write(dir.path().join("tls.key"), &certs.key_pem).unwrap();
    let (https, admin) = (
        support::control_plane::free_port(),
        support::control_plane::free_port(),
    );
    let https_addr: std::net::SocketAddr = format!("127.0.0.1:{https}").parse().unwrap();
    let admin_addr: std::net::SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    let associations =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/associations.yaml");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_pod-identity-webhook"))
        .args(["serve", "--log-format", "json"])
        .arg("--tls-cert")
        .arg(dir.path().join("tls.crt"))
        .arg("--tls-key")
        .arg(dir.path().join("tls.key"))
        .arg("--associations")
        .arg(&associations)
        .args(["--listen", &https_addr.to_string()])
        .args(["--admin-listen", &admin_addr.to_string()])
        // One decision line per review.
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let mut child = KilledOnDrop(child);
    // Held, never read: the pipe fills and the log writer thread blocks on it.
    let _unread = child.0.stderr.take().unwrap();
    support::wait_listening(admin_addr, "the webhook").await;
    support::wait_readyz(admin_addr, 200).await;

    let dropped = || async {
        let (_, metrics) = support::admin_get(admin_addr, "/metrics").await;
        const SERIES: &str = "pod_identity_webhook_log_lines_dropped_total";
        support::sample(&metrics, SERIES).expect(SERIES)
    };
    assert_eq!(dropped().await, 0.0, "nothing dropped before the flood");

    // Reviews from four connections until lines are dropped (the pipe and the 16,384-line queue
    // hold about that many decision lines), then a thousand more: all answered, and with the
    // writer stuck every one of their decision lines is dropped and counted.
    const ROUND: usize = 500;
    const MAX_REVIEWS: usize = 100_000;
    let (_, body) = fixture_with_uid("pod-create-carts.mutate.json", "flood");
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(
            support::TlsClient::connect(https_addr, &certs.ca_cert_pem, false)
                .await
                .expect("the webhook accepts TLS"),
        );
    }
    let mut answered = 0;
    while dropped().await == 0.0 {
        assert!(
            answered < MAX_REVIEWS,
            "{answered} reviews and no line dropped: is the log queue bounded?"
        );
        clients = flood(clients, &body, ROUND).await;
        answered += ROUND;
    }
    let before = dropped().await;
    clients = flood(clients, &body, 1000).await;
    let after = dropped().await;
    assert!(
        after - before >= 1000.0,
        "1,000 decisions while the writer is stuck, {} lines dropped",
        after - before
    );
    drop(clients);
    eprintln!("lines first dropped within {answered} reviews; {after} dropped in all");
}

/// `reviews` admission reviews of `body` shared among `clients`, each answered 200 within 30 s
/// (a logger that blocked on the full pipe would hold them for ever).
async fn flood(
    clients: Vec<support::TlsClient>,
    body: &[u8],
    reviews: usize,
) -> Vec<support::TlsClient> {
    let each = reviews / clients.len();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            let body = body.to_vec();
            tokio::spawn(async move {
                for _ in 0..each {
                    let answer = tokio::time::timeout(
                        std::time::Duration::from_secs(30),
                        client.review("/mutate", body.clone()),
                    )
                    .await
                    .expect("a review waited 30 s: logging blocked the admission")
                    .expect("the review is answered");
                    assert_eq!(answer.status, 200, "{}", answer.text());
                }
                client
            })
        })
        .collect();
    let mut clients = Vec::new();
    for task in tasks {
        clients.push(task.await.unwrap());
    }
    clients
}

/// A process the test started, killed when the test ends (or fails).
struct KilledOnDrop(std::process::Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
