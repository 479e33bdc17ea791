//! Serving certificates (docs/contract.md §4): PEM chains with PKCS#8, PKCS#1 and SEC1 keys; rotation by
//! rewriting the files and by a Kubernetes Secret volume's `..data` symlink swap, seen by the
//! next handshake while an open connection keeps working; a new key beside the old certificate (the
//! torn moment of a rotation) refused while the old pair serves; bad files fail start-up by name.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{CertificateParams, KeyPair, RsaKeySize};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use support::{TlsClient, WAIT, WebhookBuilder, fixture};

use pod_identity_webhook::certs;
use pod_identity_webhook::reload::ReloadOutcome;
use pod_identity_webhook::server::tls;
use pod_identity_webhook::settings::TlsSettings;
use pod_identity_webhook::startup::Running;

/// A CA-signed serving pair for 127.0.0.1/localhost, from the project's own generator.
struct Pair {
    ca: String,
    cert: String,
    key: String,
}

fn pair() -> Pair {
    let g = certs::generate(&["localhost".into(), "127.0.0.1".into()]).unwrap();
    Pair {
        ca: g.ca_cert_pem,
        cert: g.cert_pem,
        key: g.key_pem,
    }
}

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

/// A webhook serving the certificate and key files, re-read every 20 ms.
fn webhook(cert: PathBuf, key: PathBuf) -> WebhookBuilder {
    WebhookBuilder::new().settings(|s| {
        s.tls = TlsSettings::files(cert, key);
        s.server.reload_interval = Duration::from_millis(20);
    })
}

/// Both CAs trusted, so a client can follow the rotation.
fn trust(a: &Pair, b: &Pair) -> String {
    format!("{}{}", a.ca, b.ca)
}

async fn connect(running: &Running, ca: &str) -> TlsClient {
    TlsClient::connect(running.https_addr, ca, false)
        .await
        .expect("handshake")
}

async fn answers(client: &mut TlsClient) {
    let (path, body) = fixture("pod-create-carts.mutate.json");
    let answer = client.review(&path, body).await.expect("answered");
    assert_eq!(answer.status, 200);
}

/// Waits until a new handshake presents `want`.
async fn eventually_serves(running: &Running, ca: &str, want: &CertificateDer<'_>) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if connect(running, ca).await.peer_certificate == *want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn rewritten_files_are_served_to_new_handshakes_and_open_connections_continue() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let (a, b) = (pair(), pair());
    std::fs::write(&cert, &a.cert).unwrap();
    std::fs::write(&key, &a.key).unwrap();
    let running = webhook(cert.clone(), key.clone()).start().await;
    let ca = trust(&a, &b);
    let mut old = connect(&running, &ca).await;
    assert_eq!(old.peer_certificate, der(&a.cert));
    answers(&mut old).await;

    // The key first, then the certificate: through the torn moment in between (reloads every
    // 20 ms look at it), new handshakes still get the old pair.
    std::fs::write(&key, &b.key).unwrap();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let mut torn = connect(&running, &ca).await;
        assert_eq!(torn.peer_certificate, der(&a.cert));
        answers(&mut torn).await;
    }
    std::fs::write(&cert, &b.cert).unwrap();
    eventually_serves(&running, &ca, &der(&b.cert)).await;
    answers(&mut old).await;
    assert_eq!(
        old.peer_certificate,
        der(&a.cert),
        "the open connection kept its session"
    );
    running.shutdown().await;
}

#[test]
fn a_new_key_beside_the_old_certificate_is_refused_and_the_old_pair_kept() {
    tls::install_default_provider();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let (a, b) = (pair(), pair());
    std::fs::write(&cert, &a.cert).unwrap();
    std::fs::write(&key, &a.key).unwrap();
    let resolver = tls::CertResolver::new(tls::load_certified_key(&cert, &key).unwrap());
    let mut reloader = tls::CertReloader::new(cert.clone(), key.clone(), resolver.clone());
    let served = |r: &tls::CertResolver| r.current().cert[0].clone();

    std::fs::write(&key, &b.key).unwrap();
    match reloader.check() {
        ReloadOutcome::Failed(why) => {
            assert!(why.contains("does not belong to the certificate"), "{why}");
            assert!(
                !why.contains("PRIVATE KEY"),
                "the key is never quoted: {why}"
            );
        }
        other => panic!("the torn pair was taken: {other:?}"),
    }
    assert_eq!(served(&resolver), der(&a.cert));
    // Refused once: looking again at the same torn pair changes nothing.
    assert!(matches!(reloader.check(), ReloadOutcome::Unchanged));

    std::fs::write(&cert, &b.cert).unwrap();
    assert!(matches!(reloader.check(), ReloadOutcome::Reloaded));
    assert_eq!(served(&resolver), der(&b.cert));
}

/// Lays out a Secret volume as the kubelet does: `..<timestamp>/` holds the files, `..data`
/// links to it, and the visible names link through `..data`.
fn secret_volume_version(dir: &Path, version: &str, pair: &Pair) {
    let data = dir.join(version);
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("tls.crt"), &pair.cert).unwrap();
    std::fs::write(data.join("tls.key"), &pair.key).unwrap();
    // Atomic swap: a new link renamed over `..data`.
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(version, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
}

#[tokio::test]
async fn a_secret_volume_symlink_swap_is_seen() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (pair(), pair());
    secret_volume_version(dir.path(), "..2026_11_22_10_00_00.1", &a);
    for name in ["tls.crt", "tls.key"] {
        std::os::unix::fs::symlink(format!("..data/{name}"), dir.path().join(name)).unwrap();
    }
    let running = webhook(dir.path().join("tls.crt"), dir.path().join("tls.key"))
        .start()
        .await;
    let ca = trust(&a, &b);
    let mut old = connect(&running, &ca).await;
    assert_eq!(old.peer_certificate, der(&a.cert));

    secret_volume_version(dir.path(), "..2026_11_22_11_00_00.2", &b);
    std::fs::remove_dir_all(dir.path().join("..2026_11_22_10_00_00.1")).unwrap();
    eventually_serves(&running, &ca, &der(&b.cert)).await;
    answers(&mut old).await;
    running.shutdown().await;
}

/// The DER content of the last OCTET STRING directly inside a PKCS#8 PrivateKeyInfo: the
/// algorithm-specific key (PKCS#1 RSAPrivateKey or SEC1 ECPrivateKey).
fn inner_key(pkcs8: &[u8]) -> Vec<u8> {
    fn header(b: &[u8]) -> (u8, usize, usize) {
        let tag = b[0];
        let (len, used) = if b[1] < 0x80 {
            (b[1] as usize, 2)
        } else {
            let n = (b[1] & 0x7f) as usize;
            let len = b[2..2 + n]
                .iter()
                .fold(0usize, |acc, x| acc << 8 | *x as usize);
            (len, 2 + n)
        };
        (tag, used, len)
    }
    let (tag, used, _) = header(pkcs8);
    assert_eq!(tag, 0x30, "PrivateKeyInfo is a SEQUENCE");
    let mut rest = &pkcs8[used..];
    let mut last = None;
    while !rest.is_empty() {
        let (tag, used, len) = header(rest);
        if tag == 0x04 {
            last = Some(rest[used..used + len].to_vec());
        }
        rest = &rest[used + len..];
    }
    last.expect("an OCTET STRING with the private key")
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// A self-signed certificate for `key` and its key PEM in the given encoding.
fn self_signed(key: &KeyPair) -> String {
    CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(key)
        .unwrap()
        .pem()
}

#[tokio::test]
async fn pkcs8_pkcs1_and_sec1_keys_are_accepted_and_served() {
    tls::install_default_provider();
    let ec = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let rsa = KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_2048).unwrap();
    let cases = [
        ("PKCS#8 (EC)", self_signed(&ec), ec.serialize_pem()),
        ("PKCS#8 (RSA)", self_signed(&rsa), rsa.serialize_pem()),
        (
            "SEC1",
            self_signed(&ec),
            pem("EC PRIVATE KEY", &inner_key(&ec.serialize_der())),
        ),
        (
            "PKCS#1",
            self_signed(&rsa),
            pem("RSA PRIVATE KEY", &inner_key(&rsa.serialize_der())),
        ),
    ];
    for (what, cert_pem, key_pem) in cases {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert, &cert_pem).unwrap();
        std::fs::write(&key, &key_pem).unwrap();
        let running = webhook(cert, key)
            .try_start()
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        // The self-signed certificate is its own CA.
        let mut client = connect(&running, &cert_pem).await;
        assert_eq!(client.peer_certificate, der(&cert_pem), "{what}");
        answers(&mut client).await;
        running.shutdown().await;
    }
}

#[tokio::test]
async fn a_missing_or_broken_certificate_or_key_fails_start_up_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = pair();
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    std::fs::write(&cert, &good.cert).unwrap();
    std::fs::write(&key, &good.key).unwrap();
    let missing = dir.path().join("absent.crt");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a PEM file\n").unwrap();
    let other = pair();
    let mismatched = dir.path().join("other.key");
    std::fs::write(&mismatched, &other.key).unwrap();

    let cases = [
        (missing.clone(), key.clone(), missing.clone()),
        (
            cert.clone(),
            dir.path().join("absent.key"),
            dir.path().join("absent.key"),
        ),
        (garbage.clone(), key.clone(), garbage.clone()),
        (cert.clone(), garbage.clone(), garbage.clone()),
        (cert.clone(), mismatched.clone(), mismatched.clone()),
    ];
    for (c, k, named) in cases {
        let err = match webhook(c.clone(), k.clone()).try_start().await {
            Ok(running) => {
                running.shutdown().await;
                panic!("started with cert {} key {}", c.display(), k.display())
            }
            Err(e) => e.to_string(),
        };
        let name = named.file_name().unwrap().to_string_lossy().into_owned();
        assert!(err.contains(&name), "error does not name {name}: {err}");
    }
}
