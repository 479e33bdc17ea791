//! `issuer` against the real thing (issue 30): documents byte-identical to what a real
//! kube-apiserver serves for the same key (ECDSA and RSA), its tokens verifying against our JWKS,
//! S3 and IAM against moto, and `verify` naming each planted fault with the issuer served over
//! HTTPS on loopback. Its own harness, as the cluster tier: skipped with a reason without the
//! control plane's binaries. One case alone: `cargo test --test issuer -- NAME`.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use libtest_mimic::{Arguments, Failed, Trial};
use pod_identity_webhook::issuer::token;
use support::control_plane::{
    ControlPlane, ISSUER, binaries, skip_without_control_plane, webhook_binary,
};

#[path = "issuer/aws.rs"]
mod aws_cases;
#[path = "issuer/https.rs"]
mod https;

/// The ECDSA control plane every case but the RSA one shares; started by the first.
static PLANE: Mutex<Option<Arc<ControlPlane>>> = Mutex::new(None);

fn plane() -> Result<Arc<ControlPlane>, Failed> {
    let mut plane = PLANE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = &*plane {
        return Ok(p.clone());
    }
    let started = Arc::new(ControlPlane::start(&binaries()?));
    *plane = Some(started.clone());
    Ok(started)
}

type Case = fn() -> Result<(), Failed>;

const CASES: &[(&str, Case)] = &[
    (
        "ecdsa_documents_are_the_api_servers_bytes",
        ecdsa_documents_are_the_api_servers_bytes,
    ),
    (
        "rsa_documents_and_tokens_match_the_api_server",
        rsa_documents_and_tokens_match_the_api_server,
    ),
    (
        "from_cluster_refuses_a_trailing_slash_naming_both",
        from_cluster_refuses_a_trailing_slash_naming_both,
    ),
    (
        "publish_and_provider_against_moto",
        aws_cases::publish_and_provider_against_moto,
    ),
    (
        "verify_names_each_planted_fault",
        aws_cases::verify_names_each_planted_fault,
    ),
];

fn main() {
    let mut args = Arguments::from_args();
    // Two control planes at once are too much for a small CI machine.
    args.test_threads.get_or_insert(1);
    let skip = skip_without_control_plane("issuer tier");
    let trials = CASES
        .iter()
        .map(|&(name, case)| Trial::test(name, case).with_ignored_flag(skip))
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    drop(PLANE.lock().unwrap_or_else(|e| e.into_inner()).take());
    conclusion.exit();
}

/// Runs this checkout's binary with `args` (and `env`).
pub fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(webhook_binary())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("the binary runs")
}

/// [`run`], which must succeed; its stdout.
pub fn run_ok(args: &[&str], env: &[(&str, &str)]) -> Result<String, Failed> {
    let out = run(args, env);
    if !out.status.success() {
        return Err(format!(
            "{} failed ({}):\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What the API server serves: (discovery, JWKS), bytes as they came.
fn served(plane: &ControlPlane) -> (String, String) {
    (
        plane.kubectl_ok(&["get", "--raw", "/.well-known/openid-configuration"]),
        plane.kubectl_ok(&["get", "--raw", "/openid/v1/jwks"]),
    )
}

fn jwks_uri(discovery: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(discovery).unwrap();
    v["jwks_uri"].as_str().unwrap().to_string()
}

/// `issuer keys` into a fresh directory with `source` args; (discovery, JWKS) as written.
fn keys(source: &[&str], jwks_uri: &str) -> Result<(String, String), Failed> {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_str().unwrap();
    let mut args = vec![
        "issuer",
        "keys",
        "--issuer",
        ISSUER,
        "--jwks-uri",
        jwks_uri,
        "--out",
        dir,
    ];
    args.extend_from_slice(source);
    run_ok(&args, &[])?;
    let read = |rel: &str| std::fs::read_to_string(out.path().join(rel)).unwrap();
    Ok((
        read(".well-known/openid-configuration"),
        read("openid/v1/jwks"),
    ))
}

/// Every key form the command takes, byte for byte against the API server; and a token it issues
/// verifies against our JWKS.
fn same_documents_and_token(plane: &ControlPlane, key: &Path) -> Result<(), Failed> {
    let (discovery, jwks) = served(plane);
    let uri = jwks_uri(&discovery);
    let public = plane.dir.path().join("sa.pub");
    for source in [
        vec!["--public-key", key.to_str().unwrap()],
        vec!["--public-key", public.to_str().unwrap()],
        vec![
            "--from-cluster",
            "--kubeconfig",
            plane.kubeconfig.to_str().unwrap(),
        ],
    ] {
        let (ours_discovery, ours_jwks) = keys(&source, &uri)?;
        assert_eq!(ours_discovery, discovery, "discovery from {source:?}");
        assert_eq!(ours_jwks, jwks, "JWKS from {source:?}");
    }
    plane.kubectl_ok(&["create", "serviceaccount", "web", "-n", "default"]);
    let token = plane.kubectl_ok(&[
        "create",
        "token",
        "web",
        "-n",
        "default",
        "--audience",
        "sts.amazonaws.com",
    ]);
    let claims = token::verify(token.trim(), jwks.as_bytes(), ISSUER, "sts.amazonaws.com")
        .map_err(|e| format!("the API server's token does not verify: {e}"))?;
    assert_eq!(claims.sub, "system:serviceaccount:default:web");
    // The wrong audience is refused, naming it.
    let e = token::verify(token.trim(), jwks.as_bytes(), ISSUER, "other").unwrap_err();
    assert!(e.to_string().contains("aud"), "{e}");
    Ok(())
}

fn ecdsa_documents_are_the_api_servers_bytes() -> Result<(), Failed> {
    let plane = plane()?;
    let (_, jwks) = served(&plane);
    assert!(jwks.contains(r#""alg":"ES256""#), "{jwks}");
    same_documents_and_token(&plane, &plane.sa_key)
}

fn rsa_documents_and_tokens_match_the_api_server() -> Result<(), Failed> {
    let out = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .output()
        .map_err(|e| format!("openssl: {e}"))?;
    let pem = String::from_utf8(out.stdout).unwrap();
    let plane = ControlPlane::start_with_sa_key(&binaries()?, Some(&pem));
    let (discovery, jwks) = served(&plane);
    assert!(
        jwks.contains(r#""kty":"RSA""#) && discovery.contains("RS256"),
        "{jwks}"
    );
    same_documents_and_token(&plane, &plane.sa_key)?;
    // The PKCS#1 form (kubeadm's sa.key) gives the same documents.
    let pkcs1 = plane.dir.path().join("sa-pkcs1.key");
    let out = Command::new("openssl")
        .args(["rsa", "-traditional", "-in"])
        .arg(&plane.sa_key)
        .arg("-out")
        .arg(&pkcs1)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::read_to_string(&pkcs1)
            .unwrap()
            .contains("RSA PRIVATE KEY")
    );
    let (ours, ours_jwks) = keys(
        &["--public-key", pkcs1.to_str().unwrap()],
        &jwks_uri(&discovery),
    )?;
    assert_eq!((ours, ours_jwks), (discovery, jwks));
    Ok(())
}

fn from_cluster_refuses_a_trailing_slash_naming_both() -> Result<(), Failed> {
    let plane = plane()?;
    let out = tempfile::tempdir().unwrap();
    let slash = format!("{ISSUER}/");
    let result = run(
        &[
            "issuer",
            "keys",
            "--issuer",
            &slash,
            "--from-cluster",
            "--kubeconfig",
            plane.kubeconfig.to_str().unwrap(),
            "--out",
            out.path().to_str().unwrap(),
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success());
    assert!(
        err.contains(&format!("{slash:?}")) && err.contains(&format!("{ISSUER:?}")),
        "{err}"
    );
    assert!(err.contains("trailing slash"), "{err}");
    Ok(())
}
