//! The running webhook with `--cluster-name`/`--eks-endpoint` against the fake EKS API: a pod
//! admitted over HTTPS picks up the association EKS serves, and `/readyz` waits for the first
//! full sync (or its timeout).

mod eks_support;

use std::net::SocketAddr;
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use base64::Engine;
use eks_support::FakeEks;
use pod_identity_webhook::config::{EksSettings, Settings};
use pod_identity_webhook::serve;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CLUSTER: &str = "prod";

/// The webhook takes credentials from the default chain, as in a cluster; here, from the
/// environment. Set once, before any test of this binary builds an AWS client.
fn static_credentials() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: every test of this binary calls this first; `Once` makes the others wait, so
        // nothing reads the environment while it is written.
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

fn settings(endpoint: String) -> Settings {
    let mut s = Settings::local();
    let mut eks = EksSettings::new(CLUSTER);
    eks.region = Some("us-east-1".into());
    eks.endpoint = Some(endpoint);
    eks.max_wait = Duration::from_millis(500);
    eks.ready_timeout = Duration::from_secs(20);
    s.eks = Some(eks);
    s
}

/// `GET path` on the admin port: (status, body).
async fn admin_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await.unwrap();
    split_response(&buf)
}

fn split_response(buf: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// `POST /mutate` over TLS, trusting the self-signed CA: the parsed AdmissionReview.
async fn mutate(running: &serve::Running, review: &str) -> serde_json::Value {
    let mut roots = rustls::RootCertStore::empty();
    let ca = running.self_signed_ca_pem.as_ref().expect("self-signed CA");
    for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(running.https_addr)
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let req = format!(
        "POST /mutate?timeout=10s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{review}",
        review.len()
    );
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    // The server closes after the response; a missing close_notify is not this test's concern.
    let _ = tls.read_to_end(&mut buf).await;
    let (status, body) = split_response(&buf);
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("AdmissionReview")
}

fn patch_of(review: &serde_json::Value) -> Option<String> {
    review["response"]["patch"].as_str().map(|p| {
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(p).unwrap()).unwrap()
    })
}

fn carts_review(service_account: &str) -> String {
    include_str!("../examples/review-pod-carts.json")
        .replace("\"carts\"", &format!("\"{service_account}\""))
}

async fn wait_ready(admin: SocketAddr, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = admin_get(admin, "/readyz").await;
        if status == 200 {
            return;
        }
        assert!(Instant::now() < deadline, "never ready: {status} {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_pod_admitted_through_the_server_gets_the_association_eks_serves() {
    static_credentials();
    let fake = FakeEks::start(CLUSTER).await;
    fake.add("team-a", "carts", "carts");
    let running = serve::start(settings(fake.url())).await.expect("start");
    wait_ready(running.admin_addr, Duration::from_secs(10)).await;
    assert!(fake.lists() >= 1, "readiness came from a full sync");

    let review = mutate(&running, &carts_review("carts")).await;
    assert_eq!(review["response"]["allowed"], true);
    let patch = patch_of(&review).expect("a patch");
    assert!(
        patch.contains("AWS_CONTAINER_CREDENTIALS_FULL_URI"),
        "{patch}"
    );
    assert!(patch.contains("eks-pod-identity-token"), "{patch}");

    // A ServiceAccount EKS has no association for: admitted unchanged.
    let review = mutate(&running, &carts_review("nobody")).await;
    assert_eq!(review["response"]["allowed"], true);
    assert_eq!(patch_of(&review), None);
    assert_eq!(fake.unsigned(), 0, "the webhook signs its EKS calls");
    running.shutdown().await;
}

#[tokio::test]
async fn readiness_waits_for_the_first_sync_then_gives_up_waiting_on_an_unreachable_eks() {
    static_credentials();
    let fake = FakeEks::start(CLUSTER).await;
    fake.set_down(true);
    let mut s = settings(fake.url());
    let eks = s.eks.as_mut().unwrap();
    eks.ready_timeout = Duration::from_millis(800);
    let running = serve::start(s).await.expect("start");
    let (status, body) = admin_get(running.admin_addr, "/readyz").await;
    assert_eq!(status, 503, "not ready before a sync: {body}");
    assert!(body.contains("identity"), "{body}");
    wait_ready(running.admin_addr, Duration::from_secs(10)).await;

    // EKS still down: the pod is admitted, unmutated, with a warning, within the bound.
    let review = tokio::time::timeout(
        Duration::from_secs(5),
        mutate(&running, &carts_review("carts")),
    )
    .await
    .expect("answered in time");
    assert_eq!(review["response"]["allowed"], true);
    assert_eq!(patch_of(&review), None);
    let warnings = review["response"]["warnings"].to_string();
    assert!(warnings.contains("not injected"), "{warnings}");
    running.shutdown().await;
}
