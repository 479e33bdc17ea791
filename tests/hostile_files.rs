//! Files that cannot hurt (issue 21), through the real server and the real binary: an
//! associations file that reloads empty, `/dev/zero` or a FIFO as the associations file,
//! `certs --out` under umask 000 over a 0644 key and a planted symlink, `--self-signed` next to
//! a planted symlink and a second instance; and `serve` refusing, without quoting, an associations
//! file that is really a secret, role ARNs that are not IAM role ARNs, catch-all exemptions with
//! enforce, a malformed annotation prefix and an absurd body size.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pod_identity_webhook::settings::{Settings, TlsSettings};
use pod_identity_webhook::startup::{self, Running};
use support::{TlsClient, WAIT, admin_get, fixture_with_uid, replace_file, sample, wait_sample};

const CARTS: &str = "associations:
  - namespace: team-a
    serviceAccount: carts
    roleArn: arn:aws:iam::111122223333:role/carts
";

fn settings(associations: &Path) -> Settings {
    let mut settings = Settings::local();
    settings.associations_file = Some(associations.to_owned());
    settings.server.reload_interval = Duration::from_millis(20);
    settings
}

async fn metrics(running: &Running) -> String {
    let (status, body) = admin_get(running.admin_addr, "/metrics").await;
    assert_eq!(status, 200);
    body
}

/// Whether carts' pod is injected with its association now.
async fn carts_injected(c: &mut TlsClient, uid: &str) -> bool {
    let (path, body) = fixture_with_uid("pod-create-carts.mutate.json", uid);
    let answer = c.review(&path, body).await.unwrap().json();
    answer["response"].get("patch").is_some()
}

/// Lets ten reload intervals pass, in which the reload loop looks at the unchanged file again
/// (a sleep lasts at least that long; on a loaded machine fewer checks may run, never more).
async fn a_few_more_checks() {
    tokio::time::sleep(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn an_associations_file_that_reloads_empty_keeps_its_associations_until_it_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("associations.yaml");
    std::fs::write(&path, CARTS).unwrap();
    let running = startup::start(settings(&path)).await.unwrap();
    let mut c = TlsClient::to(&running, false).await;
    assert!(carts_injected(&mut c, "before").await);

    // What a truncated write (or a careless edit) leaves behind.
    let refused = "pod_identity_webhook_associations_empty_reloads_refused_total";
    let failed = "pod_identity_webhook_reloads_total{file=\"associations\",result=\"failed\"}";
    for (i, empty) in ["", " \n\t\n", "associations:\n", "[]\n"]
        .iter()
        .enumerate()
    {
        let n = (i + 1) as f64;
        replace_file(&path, empty);
        // The reload loop saw it and refused it ...
        wait_sample(running.admin_addr, refused, n).await;
        assert!(
            carts_injected(&mut c, &format!("empty-{i}")).await,
            "{empty:?} emptied the associations"
        );
        // ... once: one failed reload per bad content, however many checks see it.
        a_few_more_checks().await;
        let text = metrics(&running).await;
        assert_eq!(sample(&text, refused), Some(n), "{text}");
        assert_eq!(sample(&text, failed), Some(n), "{text}");
        assert_eq!(
            sample(&text, "pod_identity_webhook_associations{source=\"file\"}"),
            Some(1.0)
        );
    }

    // Said in so many words, emptying is meant.
    replace_file(&path, "associations: []\n");
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut n = 0;
    while carts_injected(&mut c, &format!("explicit-{n}")).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "`associations: []` was not applied"
        );
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = metrics(&running).await;
    assert_eq!(
        sample(&text, "pod_identity_webhook_associations{source=\"file\"}"),
        Some(0.0)
    );
    running.shutdown().await;
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn dev_zero_or_a_fifo_as_the_associations_file_fails_start_up_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("associations.fifo");
    mkfifo(&fifo);
    for (path, kind) in [
        (Path::new("/dev/zero"), "a character device"),
        (fifo.as_path(), "a FIFO"),
    ] {
        let started = tokio::time::timeout(WAIT, startup::start(settings(path))).await;
        let error = match started {
            Err(_) => panic!("start-up blocked on {}", path.display()),
            Ok(Ok(_)) => panic!("{} was accepted as an associations file", path.display()),
            Ok(Err(e)) => e.to_string(),
        };
        assert!(
            error.contains(&path.display().to_string())
                && error.contains(&format!("{kind}, not a regular file")),
            "{error}"
        );
    }
}

#[tokio::test]
async fn dev_zero_or_a_fifo_as_the_certificate_fails_start_up_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("tls.key");
    mkfifo(&fifo);
    for (cert, key, kind) in [
        (Path::new("/dev/zero"), fifo.as_path(), "a character device"),
        (Path::new("/dev/null"), fifo.as_path(), "a character device"),
    ] {
        let mut s = Settings::local();
        s.tls = TlsSettings::files(cert.to_owned(), key.to_owned());
        let started = tokio::time::timeout(WAIT, startup::start(s)).await;
        let error = match started {
            Err(_) => panic!("start-up blocked on {}", cert.display()),
            Ok(Ok(_)) => panic!("{} was accepted as a certificate", cert.display()),
            Ok(Err(e)) => e.to_string(),
        };
        assert!(
            error.contains(&format!("{kind}, not a regular file")),
            "{error}"
        );
    }
    // The key as a FIFO, with a real certificate.
    let generated = pod_identity_webhook::certs::generate(&["localhost".into()]).unwrap();
    let cert = dir.path().join("tls.crt");
    std::fs::write(&cert, generated.cert_pem).unwrap();
    let mut s = Settings::local();
    s.tls = TlsSettings::files(cert, fifo.clone());
    let started = tokio::time::timeout(WAIT, startup::start(s)).await;
    let error = match started {
        Err(_) => panic!("start-up blocked on the FIFO key"),
        Ok(Ok(_)) => panic!("a FIFO was accepted as a key"),
        Ok(Err(e)) => e.to_string(),
    };
    assert!(error.contains("a FIFO, not a regular file"), "{error}");
}

/// `pod-identity-webhook certs --out DIR` under umask 000.
fn certs_command(out: &Path) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pod-identity-webhook"));
    cmd.args(["certs", "--out"]).arg(out);
    // SAFETY: umask is async-signal-safe and only changes the child.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    let output = cmd.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn certs_writes_keys_0600_certificates_0644_and_0700_directories_under_umask_000() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nested/certs");
    certs_command(&out);
    // Every directory the command created, not only the last.
    assert_eq!(mode(&out), 0o700);
    assert_eq!(mode(&dir.path().join("nested")), 0o700);
    for (file, want) in [
        ("ca.key", 0o600),
        ("tls.key", 0o600),
        ("ca.crt", 0o644),
        ("tls.crt", 0o644),
    ] {
        assert_eq!(mode(&out.join(file)), want, "{file}");
    }
    // Nothing but the four files is left behind (no temporary files).
    let mut names: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["ca.crt", "ca.key", "tls.crt", "tls.key"]);
}

#[test]
fn certs_replaces_a_0644_key_and_a_symlinked_key_without_writing_through_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("certs");
    std::fs::create_dir(&out).unwrap();
    // A key left world-readable by an earlier tool.
    let key = out.join("tls.key");
    std::fs::write(&key, "old key").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let old_inode = std::fs::metadata(&key).unwrap().ino();
    // A symlink planted where the CA key goes, pointing at a file the attacker can read.
    let victim = dir.path().join("readable-by-attacker");
    std::fs::write(&victim, "untouched").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::symlink(&victim, out.join("ca.key")).unwrap();

    certs_command(&out);

    let meta = std::fs::metadata(&key).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    assert_ne!(
        meta.ino(),
        old_inode,
        "a new file, not the old one chmod-ed"
    );
    assert!(
        std::fs::read_to_string(&key)
            .unwrap()
            .contains("PRIVATE KEY")
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    assert_eq!(mode(&victim), 0o644);
    let ca_key = std::fs::symlink_metadata(out.join("ca.key")).unwrap();
    assert!(
        ca_key.file_type().is_file(),
        "the symlink itself is replaced"
    );
    assert_eq!(ca_key.permissions().mode() & 0o7777, 0o600);
}

#[tokio::test]
async fn self_signed_ca_goes_to_a_private_directory_of_each_instance() {
    // A symlink planted at the fixed name earlier versions wrote to.
    let planted = std::env::temp_dir().join("pod-identity-webhook-ca.crt");
    let victim_dir = tempfile::tempdir().unwrap();
    let victim = victim_dir.path().join("victim");
    std::fs::write(&victim, "untouched").unwrap();
    let _ = std::fs::remove_file(&planted);
    let planted_here = std::os::unix::fs::symlink(&victim, &planted).is_ok();

    let local = || {
        let mut s = Settings::local();
        s.server.reload_interval = Duration::from_millis(20);
        s
    };
    let first = startup::start(local()).await.unwrap();
    let second = startup::start(local()).await.unwrap();
    let mut dirs = Vec::new();
    for running in [&first, &second] {
        let ca = running.self_signed_ca.as_ref().expect("a CA file");
        assert_eq!(
            std::fs::read_to_string(ca.file()).unwrap(),
            *running.self_signed_ca_pem.as_ref().unwrap()
        );
        assert_eq!(mode(ca.dir()), 0o700);
        assert_eq!(mode(ca.file()), 0o644);
        assert!(ca.file().starts_with(std::env::temp_dir()));
        dirs.push(ca.dir().to_owned());
    }
    assert_ne!(dirs[0], dirs[1]);
    assert_ne!(first.self_signed_ca_pem, second.self_signed_ca_pem);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");

    first.shutdown().await;
    second.shutdown().await;
    for d in &dirs {
        assert!(!d.exists(), "{} is removed on shutdown", d.display());
    }
    if planted_here {
        std::fs::remove_file(&planted).unwrap();
    }
}

/// `pod-identity-webhook serve` on loopback ports with `args`: it must refuse to start, at once.
/// Returns its stderr.
fn serve_refuses(args: &[&std::ffi::OsStr]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pod-identity-webhook"))
        .args([
            "serve",
            "--listen=127.0.0.1:0",
            "--admin-listen=127.0.0.1:0",
        ])
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            let _ = child.wait();
            panic!("serve {args:?} did not refuse to start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success(), "serve {args:?} started");
    let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stdout));
    text
}

#[test]
fn the_binary_refuses_an_associations_file_that_is_really_a_secret_without_quoting_it() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("credentials.env");
    std::fs::write(
        &secret,
        "AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE\nAWS_SECRET_ACCESS_KEY=wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY\n",
    )
    .unwrap();
    let link = dir.path().join("associations.yaml");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    let stderr = serve_refuses(&[
        "--self-signed".as_ref(),
        "--associations".as_ref(),
        link.as_os_str(),
    ]);
    assert!(stderr.contains("associations.yaml"), "{stderr}");
    assert!(stderr.contains("line 1"), "names the line: {stderr}");
    for secret in [
        "AKIAIOSFODNN7EXAMPLE",
        "wJalrXUtnFEMIK7MDENG",
        "AWS_SECRET",
        "AWS_ACCESS",
    ] {
        assert!(!stderr.contains(secret), "quoted {secret}: {stderr}");
    }
}

#[test]
fn the_binary_refuses_role_arns_that_are_not_iam_role_arns_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("associations.yaml");
    for (arn, why) in [
        (
            "'arn:aws-evil:iam::111122223333:role/carts'",
            "unknown partition",
        ),
        ("'arn:aws:iam::111122223333:role/*'", "wildcard"),
        ("'arn:aws:iam::111122223333:role/carts '", "whitespace"),
        ("\"arn:aws:iam::111122223333:role/carts\\nx\"", "whitespace"),
    ] {
        std::fs::write(
            &path,
            format!("associations:\n  - namespace: team-a\n    serviceAccount: carts\n    roleArn: {arn}\n"),
        )
        .unwrap();
        let stderr = serve_refuses(&[
            "--self-signed".as_ref(),
            "--associations".as_ref(),
            path.as_os_str(),
        ]);
        assert!(
            stderr.contains("line 2") && stderr.contains("roleArn") && stderr.contains(why),
            "{arn}: {stderr}"
        );
    }
}

#[test]
fn the_binary_refuses_catch_all_exemptions_bad_annotation_prefixes_and_absurd_body_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "tls: {selfSigned: true}\npolicy: {defaultMode: enforce, exemptions: ['*']}\n",
    )
    .unwrap();
    let stderr = serve_refuses(&["--config".as_ref(), config.as_os_str()]);
    assert!(
        stderr.contains("policy.exemptions") && stderr.contains("every namespace"),
        "{stderr}"
    );
    std::fs::write(
        &config,
        "tls: {selfSigned: true}\ninjection: {annotationPrefix: 'EKS .com'}\n",
    )
    .unwrap();
    let stderr = serve_refuses(&["--config".as_ref(), config.as_os_str()]);
    assert!(
        stderr.contains("injection.annotationPrefix") && stderr.contains("DNS subdomain"),
        "{stderr}"
    );
    std::fs::write(
        &config,
        "tls: {selfSigned: true}\nserver: {maxBodyBytes: 1000000000000}\n",
    )
    .unwrap();
    let stderr = serve_refuses(&["--config".as_ref(), config.as_os_str()]);
    assert!(stderr.contains("server.maxBodyBytes"), "{stderr}");
}
