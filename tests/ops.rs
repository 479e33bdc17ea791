//! Operability (issue 6): metrics after a scripted set of admissions, readiness transitions,
//! graceful drain on shutdown, configuration reload without restart, certificate metrics.

mod support;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use pod_identity_webhook::settings::{Flags, Settings, TlsSettings};
use pod_identity_webhook::startup::Running;
use support::{
    ControlledSource, TlsClient, WAIT, WebhookBuilder, admin_get, carts_association, fixture,
    fixture_with_uid, replace_file, sample, wait_readyz,
};

const CARTS_ASSOCIATIONS: &str = "associations:
  - namespace: team-a
    serviceAccount: carts
    roleArn: arn:aws:iam::111122223333:role/carts
";

/// A webhook on the carts associations file, re-read every 20 ms.
fn with_associations() -> WebhookBuilder {
    WebhookBuilder::new()
        .associations(CARTS_ASSOCIATIONS)
        .settings(|s| s.server.reload_interval = Duration::from_millis(20))
}

async fn client(running: &Running, h2: bool) -> TlsClient {
    TlsClient::to(running, h2).await
}

async fn metrics(running: &Running) -> String {
    let (status, body) = admin_get(running.admin_addr, "/metrics").await;
    assert_eq!(status, 200);
    body
}

/// The decoded JSON Patch of a response, `[]` when there is none.
fn patch(answer: &serde_json::Value) -> serde_json::Value {
    use base64::Engine;
    match answer["response"]["patch"].as_str() {
        Some(p) => serde_json::from_slice(
            &base64::engine::general_purpose::STANDARD
                .decode(p)
                .expect("patch is base64"),
        )
        .unwrap(),
        None => serde_json::json!([]),
    }
}

/// A fixture pod review whose object cannot be read as a Pod.
fn unreadable_pod(uid: &str) -> Vec<u8> {
    let (_, body) = fixture_with_uid("pod-create-carts.mutate.json", uid);
    let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    v["request"]["object"]["spec"]["containers"] = serde_json::json!("not a list");
    serde_json::to_vec(&v).unwrap()
}

#[tokio::test]
async fn metrics_count_a_scripted_set_of_admissions_exactly() {
    let running = with_associations().start().await;
    let mut c = client(&running, false).await;

    for i in 0..3 {
        let (path, body) = fixture_with_uid("pod-create-carts.mutate.json", &format!("m-{i}"));
        let a = c.review(&path, body).await.unwrap();
        assert_eq!(a.status, 200);
        assert_eq!(a.json()["response"]["patchType"], "JSONPatch");
    }
    for i in 0..2 {
        let (path, body) = fixture_with_uid(
            "pod-create-hostnetwork-default-sa.mutate.json",
            &format!("u-{i}"),
        );
        let a = c.review(&path, body).await.unwrap();
        assert_eq!(a.status, 200);
        assert!(a.json()["response"].get("patch").is_none());
    }
    let a = c
        .review("/mutate?timeout=10s", unreadable_pod("e-0"))
        .await
        .unwrap();
    assert_eq!(a.json()["response"]["status"]["code"], 400);
    let (path, body) = fixture("sa-create-default.validate.json");
    assert_eq!(c.review(&path, body).await.unwrap().status, 200);
    let (path, body) = fixture("pod-create-carts.mutate.json");
    assert_eq!(c.post(&path, "text/plain", body).await.unwrap().status, 415);
    assert_eq!(
        c.review("/mutate", b"not an AdmissionReview".to_vec())
            .await
            .unwrap()
            .status,
        400
    );

    let text = metrics(&running).await;
    let count =
        |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
    let admissions = |endpoint: &str, kind: &str, op: &str, outcome: &str| {
        count(&format!(
            "pod_identity_webhook_admissions_total{{endpoint=\"{endpoint}\",kind=\"{kind}\",operation=\"{op}\",outcome=\"{outcome}\"}}"
        ))
    };
    assert_eq!(admissions("mutate", "Pod", "CREATE", "mutated"), 3.0);
    assert_eq!(admissions("mutate", "Pod", "CREATE", "unchanged"), 2.0);
    assert_eq!(admissions("mutate", "Pod", "CREATE", "error"), 1.0);
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("pod_identity_webhook_admissions_total{endpoint=\"validate\""))
            .count(),
        1,
        "one validate series:\n{text}"
    );
    assert_eq!(
        count("pod_identity_webhook_rejected_requests_total{endpoint=\"mutate\",status=\"415\"}"),
        1.0
    );
    assert_eq!(
        count("pod_identity_webhook_rejected_requests_total{endpoint=\"mutate\",status=\"400\"}"),
        1.0
    );
    assert_eq!(
        count("pod_identity_webhook_admission_duration_seconds_count{endpoint=\"mutate\"}"),
        6.0
    );
    // The smallest bucket is 100µs.
    assert!(text.contains("pod_identity_webhook_admission_duration_seconds_bucket{le=\"0.0001\",endpoint=\"mutate\"}"), "{text}");
    // Three lookups found carts' association; the `default` ServiceAccount has none.
    assert_eq!(
        count("pod_identity_webhook_identity_lookups_total{source=\"file\",result=\"hit\"}"),
        3.0
    );
    assert_eq!(
        count("pod_identity_webhook_identity_lookups_total{source=\"file\",result=\"miss\"}"),
        2.0
    );
    assert_eq!(
        count("pod_identity_webhook_associations{source=\"file\"}"),
        1.0
    );
    let now = pod_identity_webhook::telemetry::metrics::unix_now() as f64;
    let expiry = count("pod_identity_webhook_certificate_expiry_timestamp_seconds");
    assert!(expiry > now, "certificate expiry {expiry} is in the future");
    let loaded =
        count("pod_identity_webhook_last_successful_load_timestamp_seconds{file=\"associations\"}");
    assert!(
        (now - 60.0..=now + 1.0).contains(&loaded),
        "{loaded} vs {now}"
    );

    running.shutdown().await;
}

#[tokio::test]
async fn readiness_waits_for_sources_and_turns_off_on_shutdown() {
    let source = ControlledSource::new(false, Duration::ZERO, None);
    let running = WebhookBuilder::new()
        .source(source.clone())
        .settings(|s| s.server.shutdown_grace = Duration::from_millis(300))
        .start()
        .await;
    let admin = running.admin_addr;

    let (status, body) = admin_get(admin, "/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("identity sources not synced"), "{body}");
    assert_eq!(admin_get(admin, "/livez").await.0, 200);

    source.set_ready();
    wait_readyz(admin, 200).await;

    let stopping = tokio::spawn(running.shutdown());
    let body = wait_readyz(admin, 503).await;
    assert!(body.contains("shutting down"), "{body}");
    // Alive (and serving) throughout the grace period.
    assert_eq!(admin_get(admin, "/livez").await.0, 200);
    tokio::time::timeout(WAIT, stopping).await.unwrap().unwrap();
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests_and_then_refuses_connections() {
    // Lookups take longer than the grace period, so requests are still in flight when the
    // listener closes and have to be drained.
    let source = ControlledSource::new(true, Duration::from_millis(600), Some(carts_association()));
    let running = WebhookBuilder::new()
        .source(source.clone())
        .settings(|s| {
            s.server.shutdown_grace = Duration::from_millis(300);
            s.server.drain_timeout = Duration::from_secs(5);
        })
        .start()
        .await;
    let (https, admin) = (running.https_addr, running.admin_addr);
    let ca = running.self_signed_ca_pem.clone().unwrap();

    const N: usize = 12;
    let mut in_flight = Vec::new();
    for i in 0..N {
        let mut c = TlsClient::connect(https, &ca, i % 2 == 1).await.unwrap();
        in_flight.push(tokio::spawn(async move {
            let uid = format!("drain-{i}");
            let (path, body) = fixture_with_uid("pod-create-carts.mutate.json", &uid);
            let answer = c.review(&path, body).await;
            (uid, answer, c)
        }));
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while source.started.load(Ordering::Acquire) < N {
        assert!(
            tokio::time::Instant::now() < deadline,
            "requests never reached the source"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let stopping = tokio::spawn(running.shutdown());
    wait_readyz(admin, 503).await;
    // During the grace period new connections are still served (endpoints may lag).
    let mut late = TlsClient::connect(https, &ca, false)
        .await
        .expect("connections are accepted during the grace period");
    let late_request = tokio::spawn(async move {
        let (path, body) = fixture_with_uid("pod-create-carts.mutate.json", "late");
        late.review(&path, body).await
    });

    let mut clients = Vec::new();
    for task in in_flight {
        let (uid, answer, c) = tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
        let answer = answer.unwrap_or_else(|e| panic!("{uid} failed during drain: {e}"));
        assert_eq!(answer.status, 200);
        let json = answer.json();
        assert_eq!(json["response"]["uid"], uid.as_str());
        assert_eq!(json["response"]["allowed"], true);
        assert!(
            !patch(&json).as_array().unwrap().is_empty(),
            "{uid} was mutated"
        );
        clients.push(c);
    }
    let late = tokio::time::timeout(WAIT, late_request)
        .await
        .unwrap()
        .unwrap()
        .expect("a request accepted during the grace period completes");
    assert_eq!(late.json()["response"]["uid"], "late");

    tokio::time::timeout(WAIT, stopping).await.unwrap().unwrap();
    assert!(
        tokio::net::TcpStream::connect(https).await.is_err(),
        "no new connections after the drain"
    );
    assert!(tokio::net::TcpStream::connect(admin).await.is_err());
    // Keep-alive connections were closed, not left hanging.
    for mut c in clients {
        let (path, body) = fixture("pod-create-carts.mutate.json");
        assert!(
            tokio::time::timeout(WAIT, c.review(&path, body))
                .await
                .unwrap()
                .is_err()
        );
    }
}

fn config_settings(path: &Path) -> Settings {
    let flags = Flags::parse([
        format!("--config={}", path.display()).as_str(),
        "--self-signed",
        "--listen=127.0.0.1:0",
        "--admin-listen=127.0.0.1:0",
        "--reload-interval=20ms",
        "--shutdown-grace=0s",
    ])
    .unwrap();
    Settings::load(flags).unwrap()
}

/// The env entries a mutation added to the first container, by name.
fn added_env(answer: &serde_json::Value) -> Vec<(String, String)> {
    patch(answer)
        .as_array()
        .unwrap()
        .iter()
        .filter(|op| {
            op["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/spec/containers/0/env"))
        })
        .flat_map(|op| match &op["value"] {
            serde_json::Value::Array(list) => list.clone(),
            one => vec![one.clone()],
        })
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["value"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn config_file_changes_apply_without_restart_and_a_broken_file_keeps_the_last_good() {
    let dir = tempfile::tempdir().unwrap();
    let associations = dir.path().join("associations.yaml");
    std::fs::write(&associations, CARTS_ASSOCIATIONS).unwrap();
    let config = dir.path().join("config.yaml");
    let write_config = |injection: &str| {
        std::fs::write(
            &config,
            format!(
                "associationsFile: {}\ninjection:\n{injection}",
                associations.display()
            ),
        )
        .unwrap()
    };
    write_config("  stsRegionalEndpoint: false\n");
    let running = WebhookBuilder::from_settings(config_settings(&config))
        .start()
        .await;
    let mut c = client(&running, true).await;
    let region = |env: &[(String, String)]| {
        env.iter()
            .find(|(k, _)| k == "AWS_DEFAULT_REGION")
            .map(|(_, v)| v.clone())
    };
    let (path, body) = fixture("pod-create-carts.mutate.json");
    let first = c.review(&path, body.clone()).await.unwrap().json();
    assert_eq!(region(&added_env(&first)), None);

    write_config("  awsDefaultRegion: eu-west-1\n");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let answer = c.review(&path, body.clone()).await.unwrap().json();
        if region(&added_env(&answer)).as_deref() == Some("eu-west-1") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "config change never applied"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A typo (unknown key) is refused; the last good settings stay in force.
    write_config("  awsDefaultRegoin: us-east-2\n");
    let deadline = tokio::time::Instant::now() + WAIT;
    let failed = "pod_identity_webhook_reloads_total{file=\"config\",result=\"failed\"}";
    while sample(&metrics(&running).await, failed).is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "broken config never noticed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = metrics(&running).await;
    assert_eq!(sample(&text, failed), Some(1.0));
    assert_eq!(
        sample(
            &text,
            "pod_identity_webhook_reloads_total{file=\"config\",result=\"ok\"}"
        ),
        Some(1.0)
    );
    let answer = c.review(&path, body).await.unwrap().json();
    assert_eq!(region(&added_env(&answer)).as_deref(), Some("eu-west-1"));
    running.shutdown().await;
}

#[tokio::test]
async fn certificate_reload_is_counted_and_updates_the_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["localhost".to_string(), "127.0.0.1".to_string()];
    let first = pod_identity_webhook::certs::generate(&names).unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, &first.cert_pem).unwrap();
    std::fs::write(&key, &first.key_pem).unwrap();
    let running = WebhookBuilder::new()
        .settings(|s| {
            s.tls = TlsSettings::files(cert.clone(), key.clone());
            s.server.reload_interval = Duration::from_millis(20);
        })
        .start()
        .await;
    let expiry_series = "pod_identity_webhook_certificate_expiry_timestamp_seconds";
    let initial = sample(&metrics(&running).await, expiry_series).unwrap();
    let expected_initial =
        pod_identity_webhook::server::tls::not_after(&running.cert_resolver.current());
    assert_eq!(Some(initial as i64), expected_initial);

    // The replacement expires at a known instant: 2031-01-01T00:00:00Z.
    let mut params = rcgen::CertificateParams::new(names.to_vec()).unwrap();
    params.not_after = rcgen::date_time_ymd(2031, 1, 1);
    let new_key = rcgen::KeyPair::generate().unwrap();
    let second = params.self_signed(&new_key).unwrap();
    std::fs::write(&key, new_key.serialize_pem()).unwrap();
    std::fs::write(&cert, second.pem()).unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let text = loop {
        let text = metrics(&running).await;
        if sample(&text, "pod_identity_webhook_certificate_reloads_total") == Some(1.0) {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "reload never counted:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(sample(&text, expiry_series), Some(1_924_992_000.0));
    assert_eq!(
        sample(
            &text,
            "pod_identity_webhook_reloads_total{file=\"certificate\",result=\"ok\"}"
        ),
        Some(1.0)
    );
    running.shutdown().await;
}

/// `reloads_total{result="failed"}` counts a bad content once, however many checks see it (at
/// a 10 ms interval, about 30 while each stays), for the certificate and the associations file
/// alike; another bad content, or the same one after a good one, counts again.
#[tokio::test]
async fn a_bad_file_is_one_failed_reload_however_long_it_stays() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["localhost".to_string(), "127.0.0.1".to_string()];
    let good = pod_identity_webhook::certs::generate(&names).unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, &good.cert_pem).unwrap();
    std::fs::write(&key, &good.key_pem).unwrap();
    let associations = dir.path().join("associations.yaml");
    std::fs::write(&associations, CARTS_ASSOCIATIONS).unwrap();
    let running = WebhookBuilder::new()
        .settings(|s| {
            s.tls = TlsSettings::files(cert.clone(), key.clone());
            s.associations_file = Some(associations.clone());
            s.server.reload_interval = Duration::from_millis(10);
        })
        .start()
        .await;
    let series = |file: &str, result: &str| {
        format!("pod_identity_webhook_reloads_total{{file=\"{file}\",result=\"{result}\"}}")
    };
    // Waits until `file`'s counter reads `want`, then past ~30 more checks, and reads it again.
    let settles_at = |file: &'static str, result: &'static str, want: f64| {
        let running = &running;
        let name = series(file, result);
        async move {
            let deadline = tokio::time::Instant::now() + WAIT;
            while sample(&metrics(running).await, &name) != Some(want) {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{name} never reached {want}: {:?}",
                    sample(&metrics(running).await, &name)
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(sample(&metrics(running).await, &name), Some(want), "{name}");
        }
    };
    let bad_cert = |n: u8| {
        format!("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA{n}\n-----END CERTIFICATE-----\n")
    };

    replace_file(&cert, bad_cert(1));
    replace_file(&associations, "associations: [{namespace: team-a}]\n");
    settles_at("certificate", "failed", 1.0).await;
    settles_at("associations", "failed", 1.0).await;

    // Another bad content is another failure.
    replace_file(&cert, bad_cert(2));
    replace_file(&associations, "associations: {}\n");
    settles_at("certificate", "failed", 2.0).await;
    settles_at("associations", "failed", 2.0).await;

    // Back to the good content (nothing to reload: it is what is in force), then the second
    // bad content again: counted again.
    replace_file(&cert, &good.cert_pem);
    replace_file(&associations, CARTS_ASSOCIATIONS);
    tokio::time::sleep(Duration::from_millis(100)).await;
    replace_file(&cert, bad_cert(2));
    replace_file(&associations, "associations: {}\n");
    settles_at("certificate", "failed", 3.0).await;
    settles_at("associations", "failed", 3.0).await;

    // A missing file is one failure too, for as long as it is missing.
    std::fs::remove_file(&associations).unwrap();
    settles_at("associations", "failed", 4.0).await;
    running.shutdown().await;
}

#[tokio::test]
async fn lookups_cut_short_by_the_budget_count_as_errors() {
    let source = ControlledSource::new(true, Duration::from_secs(5), Some(carts_association()));
    let running = WebhookBuilder::new().source(source.clone()).start().await;
    let mut c = client(&running, false).await;
    // timeout=1s leaves a 500ms lookup budget; the webhook admits unmutated with a warning.
    let (_, body) = fixture("pod-create-carts.mutate.json");
    let answer = c.review("/mutate?timeout=1s", body).await.unwrap().json();
    assert_eq!(answer["response"]["allowed"], true);
    assert!(answer["response"].get("patch").is_none());
    let warnings = answer["response"]["warnings"].to_string();
    assert!(
        warnings.contains("AWS credentials not injected: identity lookup for team-a/carts failed"),
        "{warnings}"
    );
    let text = metrics(&running).await;
    assert_eq!(
        sample(
            &text,
            "pod_identity_webhook_identity_lookups_total{source=\"controlled\",result=\"error\"}"
        ),
        Some(1.0),
        "{text}"
    );
    running.shutdown().await;
}

#[tokio::test]
async fn the_drain_is_bounded_by_its_timeout() {
    // A request slower than grace + drain is cut off rather than holding the process open.
    let source = ControlledSource::new(true, Duration::from_secs(8), Some(carts_association()));
    let running = WebhookBuilder::new()
        .source(source.clone())
        .settings(|s| s.server.drain_timeout = Duration::from_millis(100))
        .start()
        .await;
    let mut c = client(&running, false).await;
    let stuck = tokio::spawn(async move {
        let (path, body) = fixture("pod-create-carts.mutate.json");
        c.review(&path, body).await
    });
    let deadline = tokio::time::Instant::now() + WAIT;
    while source.started.load(Ordering::Acquire) < 1 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::timeout(Duration::from_secs(4), running.shutdown())
        .await
        .expect("shutdown returns after the drain timeout, not after the slow request");
    let result = tokio::time::timeout(WAIT, stuck).await.unwrap().unwrap();
    assert!(result.is_err(), "the connection was closed: {result:?}");
}

#[tokio::test]
async fn a_policy_change_in_the_config_file_applies_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let associations = dir.path().join("associations.yaml");
    std::fs::write(&associations, CARTS_ASSOCIATIONS).unwrap();
    let config = dir.path().join("config.yaml");
    let write_config = |mode: &str| {
        std::fs::write(
            &config,
            format!(
                "associationsFile: {}\npolicy:\n  defaultMode: {mode}\n",
                associations.display()
            ),
        )
        .unwrap()
    };
    // A DaemonSet on the `default` ServiceAccount, which has no association.
    let (path, body) = fixture("daemonset-create-hostnetwork-default-sa.validate.json");
    write_config("warn");
    let running = WebhookBuilder::from_settings(config_settings(&config))
        .start()
        .await;
    let mut c = client(&running, false).await;
    let first = c.review(&path, body.clone()).await.unwrap().json();
    assert_eq!(
        first["response"]["allowed"], true,
        "warn mode admits: {first}"
    );
    assert!(
        first["response"]["warnings"]
            .as_array()
            .is_some_and(|w| !w.is_empty()),
        "warn mode warns: {first}"
    );

    write_config("enforce");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let answer = c.review(&path, body.clone()).await.unwrap().json();
        if answer["response"]["allowed"] == false {
            assert_eq!(answer["response"]["status"]["code"], 403, "{answer}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "policy change never applied"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.shutdown().await;
}

/// The real binary on a signal: SIGTERM (the kubelet's) and SIGINT (a terminal's) each turn
/// `/readyz` unready for the shutdown grace while `/livez` still answers, then the process
/// drains and exits 0.
#[tokio::test]
async fn the_binary_on_sigterm_or_sigint_turns_unready_then_exits_cleanly() {
    for signal in ["TERM", "INT"] {
        let (https, admin) = (
            support::control_plane::free_port(),
            support::control_plane::free_port(),
        );
        let admin_addr: std::net::SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
        let associations = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/associations.yaml");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_pod-identity-webhook"))
            .args(["serve", "--self-signed", "--log-format", "json"])
            .arg("--associations")
            .arg(&associations)
            .args(["--listen", &format!("127.0.0.1:{https}")])
            .args(["--admin-listen", &admin_addr.to_string()])
            .args(["--shutdown-grace", "2s", "--drain-timeout", "2s"])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the binary starts");
        support::wait_listening(admin_addr, "the webhook").await;
        wait_readyz(admin_addr, 200).await;

        let pid = child.id().to_string();
        let sent = std::time::Instant::now();
        let kill = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(kill.success());
        wait_readyz(admin_addr, 503).await;
        assert_eq!(admin_get(admin_addr, "/livez").await.0, 200, "SIG{signal}");

        let out = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        let took = sent.elapsed();
        let logs = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "SIG{signal}: {:?}\n{logs}",
            out.status
        );
        assert!(logs.contains("shutdown requested"), "SIG{signal}: {logs}");
        // It stayed up for the grace (unready), and did not wait past grace + drain + slack.
        assert!(
            took >= Duration::from_secs(2),
            "SIG{signal}: exited after {took:?}"
        );
        assert!(
            took < Duration::from_secs(2 + 2) + WAIT,
            "SIG{signal}: {took:?}"
        );
    }
}
