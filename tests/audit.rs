//! `pod-identity-webhook audit` (docs/contract.md §11), run as the built binary against the fake Kubernetes
//! API serving a cluster built from the captured objects, listed in small pages: workloads
//! without identity, a ServiceAccount outside its allowlist, pods that need a restart (not
//! injected, or still on IRSA after their association), and everything that must not be
//! reported (owned objects, finished pods, exempt namespaces, pods already injected).

mod support;

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use support::kube_api::{Changes, FakeKubeApi};
use support::{Capture, TlsClient, apply_answer, captures, run_binary, strings};

const ROLE_DB: &str = "arn:aws:iam::111122223333:role/db";

fn write_config(dir: &Path) -> PathBuf {
    let path = dir.join("config.yaml");
    let associations = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/associations.yaml");
    std::fs::write(
        &path,
        format!(
            "associationsFile: {}
policy:
  defaultMode: enforce
  clusterName: prod
  namespaces:
    - match: \"team-*\"
      allowedRoleArns: [\"arn:aws:iam::111122223333:role/carts\", \"{ROLE_DB}\"]
",
            associations.display()
        ),
    )
    .unwrap();
    path
}

/// `audit --config CONFIG --kubeconfig KUBECONFIG EXTRA...`, run as the built binary.
async fn audit(config: &Path, kubeconfig: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut args = strings(&[
        "audit",
        "--config",
        config.to_str().unwrap(),
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
    ]);
    args.extend(strings(extra));
    run_binary(args, None).await
}

fn capture(name: &str) -> Capture {
    captures(name).into_iter().next().expect("capture exists")
}

fn captured_object(name: &str) -> Value {
    capture(name).review()["request"]["object"].clone()
}

/// What the API server adds to a stored object.
fn stored(mut object: Value, name: &str, owner: Option<(&str, &str, &str)>) -> Value {
    let meta = object["metadata"].as_object_mut().unwrap();
    meta.remove("generateName");
    meta.insert("name".into(), json!(name));
    meta.insert(
        "namespace".into(),
        json!(meta.get("namespace").cloned().unwrap_or(json!("team-a"))),
    );
    meta.insert("uid".into(), json!(format!("uid-{name}")));
    meta.insert("resourceVersion".into(), json!("4001"));
    meta.insert("creationTimestamp".into(), json!("2026-12-01T10:00:00Z"));
    if let Some((api_version, kind, owner_name)) = owner {
        meta.insert(
            "ownerReferences".into(),
            json!([{"apiVersion": api_version, "kind": kind, "name": owner_name,
                    "uid": format!("uid-{owner_name}"), "controller": true, "blockOwnerDeletion": true}]),
        );
    }
    object
}

/// A pod as the API server stores it: the captured carts pod, renamed, with `serviceAccountName`
/// `sa`, an owner and a phase.
fn pod(
    base: &Value,
    name: &str,
    sa: &str,
    owner: Option<(&str, &str, &str)>,
    phase: &str,
) -> Value {
    let mut p = stored(base.clone(), name, owner);
    p["spec"]["serviceAccountName"] = json!(sa);
    p["spec"]["serviceAccount"] = json!(sa);
    p["spec"]["nodeName"] = json!("node-1");
    p["status"] = json!({"phase": phase, "podIP": "10.0.0.7", "qosClass": "BestEffort",
                         "startTime": "2026-12-01T10:00:01Z"});
    p
}

/// A workload from its capture, renamed, its pod template on `sa`.
fn workload(capture: &str, name: &str, sa: &str, owner: Option<(&str, &str, &str)>) -> Value {
    let mut w = stored(captured_object(capture), name, owner);
    let template = if w["kind"] == "CronJob" {
        &mut w["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    } else {
        &mut w["spec"]["template"]["spec"]
    };
    template["serviceAccountName"] = json!(sa);
    w
}

/// The fake API serving the mixed cluster: each case of the audit, and what it must not report.
async fn mixed_cluster(config: &Path) -> FakeKubeApi {
    // A carts pod as the webhook injects it (its own answer, applied as the API server would).
    let webhook = support::serve_config(config, None).await;
    let mut client = TlsClient::to(&webhook, false).await;
    let carts = capture("pod-create-carts.mutate.json");
    let answer = client.send(&carts).await.unwrap().json();
    let base_pod = carts.review()["request"]["object"].clone();
    let injected = apply_answer(&base_pod, &answer);
    assert_ne!(injected, base_pod, "the capture is injected");
    drop(webhook);

    // A pod the IRSA webhook injected, before the db ServiceAccount got its association.
    let mut irsa_db = base_pod.clone();
    irsa_db["spec"]["containers"][0]["env"] = json!([
        {"name": "AWS_ROLE_ARN", "value": ROLE_DB},
        {"name": "AWS_WEB_IDENTITY_TOKEN_FILE", "value": "/var/run/secrets/eks.amazonaws.com/serviceaccount/token"},
    ]);
    let apps = "apps/v1";
    let objects = vec![
        // No identity: reported on the Deployment, not on its ReplicaSet or pod.
        workload(
            "deployment-create-carts.validate.json",
            "orders",
            "orders",
            None,
        ),
        workload(
            "replicaset-create-default-sa.validate.json",
            "orders-7c9",
            "orders",
            Some((apps, "Deployment", "orders")),
        ),
        pod(
            &base_pod,
            "orders-7c9-x1",
            "orders",
            Some((apps, "ReplicaSet", "orders-7c9")),
            "Running",
        ),
        // Identity found; one pod predates the association, one was injected.
        workload(
            "deployment-create-carts.validate.json",
            "carts",
            "carts",
            None,
        ),
        workload(
            "replicaset-create-default-sa.validate.json",
            "carts-5f6",
            "carts",
            Some((apps, "Deployment", "carts")),
        ),
        pod(
            &base_pod,
            "carts-5f6-a1",
            "carts",
            Some((apps, "ReplicaSet", "carts-5f6")),
            "Running",
        ),
        pod(
            &injected,
            "carts-5f6-b2",
            "carts",
            Some((apps, "ReplicaSet", "carts-5f6")),
            "Running",
        ),
        // Still on IRSA although db has an association now.
        workload("statefulset-create-db.validate.json", "db", "db", None),
        pod(
            &irsa_db,
            "db-0",
            "db",
            Some((apps, "StatefulSet", "db")),
            "Running",
        ),
        // A CronJob without identity; its Job and finished pod are not reported again.
        workload(
            "cronjob-create-reporter.validate.json",
            "report",
            "reporter",
            None,
        ),
        workload(
            "job-create-migrator.validate.json",
            "report-2901",
            "reporter",
            Some(("batch/v1", "CronJob", "report")),
        ),
        pod(
            &base_pod,
            "report-2901-z",
            "reporter",
            Some(("batch/v1", "Job", "report-2901")),
            "Succeeded",
        ),
        // A bare pod on an IRSA role, started while the webhook was down.
        pod(&base_pod, "reports-0", "reports-reader", None, "Running"),
        // Exempt namespace.
        {
            let mut p = pod(&base_pod, "coredns-x", "coredns", None, "Running");
            p["metadata"]["namespace"] = json!("kube-system");
            p
        },
    ];
    FakeKubeApi::start_changed(
        0,
        Vec::new(),
        Changes {
            service_accounts: vec![
                json!({"metadata": {"name": "reports-reader", "namespace": "team-a",
                "uid": "uid-reports-reader", "resourceVersion": "300",
                "creationTimestamp": "2026-12-01T09:00:00Z",
                "annotations": {"eks.amazonaws.com/role-arn": ROLE_DB}}}),
            ],
            objects,
            ..Changes::default()
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_reports_what_the_decisions_say_about_a_running_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let fake = mixed_cluster(&config).await;
    let kubeconfig = fake.kubeconfig(dir.path());
    let page_by_two = |output| ["--page-size", "2", "--output", output];
    let (code, stdout, stderr) = audit(&config, &kubeconfig, &page_by_two("json")).await;
    assert_eq!(code, 1, "findings: {stdout}{stderr}");
    assert!(stderr.is_empty(), "no progress on a pipe: {stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let found: Vec<(String, String, String, String, String)> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let s = |k: &str| f[k].as_str().unwrap_or_default().to_string();
            (
                s("namespace"),
                s("kind"),
                s("name"),
                s("reason"),
                s("severity"),
            )
        })
        .collect();
    let expect = |ns: &str, kind: &str, name: &str, reason: &str, severity: &str| {
        (
            ns.into(),
            kind.into(),
            name.into(),
            reason.into(),
            severity.into(),
        )
    };
    assert_eq!(
        found,
        vec![
            expect("team-a", "CronJob", "report", "no-identity", "denied"),
            expect("team-a", "Deployment", "orders", "no-identity", "denied"),
            expect("team-a", "Pod", "carts-5f6-a1", "needs-restart", "restart"),
            expect("team-a", "Pod", "db-0", "irsa-with-association", "restart"),
            expect("team-a", "Pod", "reports-0", "needs-restart", "restart"),
            expect(
                "team-a",
                "ServiceAccount",
                "s3-reader",
                "role-not-allowed",
                "denied"
            ),
        ],
        "{stdout}"
    );
    let finding = |name: &str| {
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .unwrap()
            .clone()
    };
    let restart = finding("carts-5f6-a1");
    assert_eq!(restart["owner"], "Deployment/carts");
    assert_eq!(restart["serviceAccount"], "carts");
    let message = restart["message"].as_str().unwrap();
    assert!(message.contains("Pod Identity"), "{message}");
    assert!(
        message.ends_with("kubectl rollout restart deployment/carts -n team-a"),
        "{message}"
    );
    let irsa = finding("db-0");
    assert!(
        irsa["message"]
            .as_str()
            .unwrap()
            .ends_with("kubectl rollout restart statefulset/db -n team-a")
    );
    assert!(
        finding("reports-0")["message"]
            .as_str()
            .unwrap()
            .contains("IRSA")
    );
    let orders = finding("orders")["message"].as_str().unwrap().to_string();
    assert!(
        orders.contains("--cluster-name prod --namespace team-a --service-account orders"),
        "{orders}"
    );
    assert_eq!(report["summary"]["scanned"]["pods"], 7);
    assert_eq!(report["summary"]["byReason"]["needs-restart"], 2);

    // Every list went through `continue` pages of two.
    assert_eq!(fake.pages("/api/v1/pods"), 4, "7 pods in pages of 2");
    assert_eq!(
        fake.pages("/api/v1/serviceaccounts"),
        2,
        "4 ServiceAccounts"
    );
    assert_eq!(fake.pages("/api/v1/namespaces"), 3, "5 namespaces");
    assert_eq!(fake.pages("/apis/apps/v1/replicasets"), 1);
    assert_eq!(fake.pages("/apis/apps/v1/deployments"), 1);

    let (code, stdout, _) = audit(&config, &kubeconfig, &page_by_two("table")).await;
    assert_eq!(code, 1);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 8, "{stdout}");
    assert!(
        lines[0].starts_with("NAMESPACE  KIND            NAME          REASON"),
        "{stdout}"
    );
    assert!(
        lines[3].starts_with("team-a     Pod             carts-5f6-a1  needs-restart  "),
        "{stdout}"
    );
    assert!(
        lines[7].starts_with("6 findings (no-identity: 2, role-not-allowed: 1, needs-restart: 2, irsa-with-association: 1); scanned 5 namespaces, 4 serviceaccounts, 7 pods, 2 deployments"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_stops_the_audit_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let kubeconfig = support::kube_api::kubeconfig(closed, dir.path());
    let (code, stdout, stderr) = audit(&config, &kubeconfig, &[]).await;
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.starts_with("error: cannot list namespaces: "),
        "{stderr}"
    );
}

/// The controller's metrics once `ready` holds for them (`what` did not happen otherwise).
async fn metrics_once(
    admin_addr: std::net::SocketAddr,
    what: &str,
    ready: impl Fn(&str) -> bool,
) -> String {
    let deadline = tokio::time::Instant::now() + support::WAIT;
    loop {
        let (_, metrics) = support::admin_get(admin_addr, "/metrics").await;
        if ready(&metrics) {
            return metrics;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {metrics}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The Events created, once there are `n` and no more came in the `settle_ms` after.
async fn settled_events(fake: &FakeKubeApi, n: usize, settle_ms: u64) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + support::WAIT;
    while fake.events().len() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "events: {:?}",
            fake.events()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(settle_ms)).await;
    let events = fake.events();
    assert_eq!(events.len(), n, "{events:?}");
    events
}

// Moved from `serve --audit-interval` (the audit left the webhook for the controller): the same
// gauges, Events and watches, from the controller's admin port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_exports_gauges_and_events() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let fake = mixed_cluster(&config).await;
    let kubeconfig = fake.kubeconfig(dir.path());
    let running = support::controller::in_process(&config, &kubeconfig, &[]).await;
    let webhook = running.admin_addr;

    let series = |reason: &str| {
        format!("pod_identity_webhook_audit_violations{{namespace=\"team-a\",reason=\"{reason}\"}}")
    };
    let metrics = metrics_once(webhook, "no audit gauges", |metrics| {
        support::sample(metrics, &series("no-identity")).is_some()
    })
    .await;
    for (reason, n) in [
        ("no-identity", 2.0),
        ("role-not-allowed", 1.0),
        ("needs-restart", 2.0),
        ("irsa-with-association", 1.0),
    ] {
        assert_eq!(
            support::sample(&metrics, &series(reason)),
            Some(n),
            "{reason}: {metrics}"
        );
    }
    assert_eq!(
        support::sample(&metrics, &series("policy")),
        None,
        "{metrics}"
    );

    // One event per finding, and no repeats on the next runs.
    let events = settled_events(&fake, 6, 400).await;
    let orders = events
        .iter()
        .find(|e| e["regarding"]["name"] == "orders")
        .expect("an event on the orders Deployment");
    assert_eq!(orders["regarding"]["kind"], "Deployment");
    assert_eq!(orders["reason"], "NoIdentity");
    assert_eq!(orders["type"], "Warning");
    assert!(
        orders["note"]
            .as_str()
            .unwrap()
            .contains("ServiceAccount \"orders\"")
    );
    assert!(
        events
            .iter()
            .all(|e| e["reportingController"] == "pod-identity-webhook"
                && e["regarding"]["uid"].is_string()),
        "{events:?}"
    );

    // From watches, not repeated lists: every run after the first reads memory. Pods and
    // workloads were listed once; ServiceAccounts and Namespaces only by the decisions' own
    // watches, not again for the audit.
    let listed_once = |fake: &FakeKubeApi| {
        for path in [
            "/api/v1/pods",
            "/apis/apps/v1/deployments",
            "/apis/apps/v1/statefulsets",
            "/apis/apps/v1/daemonsets",
            "/apis/apps/v1/replicasets",
            "/apis/batch/v1/jobs",
            "/apis/batch/v1/cronjobs",
            "/api/v1/namespaces",
        ] {
            assert_eq!(fake.pages(path), 1, "{path} listed again");
        }
        assert_eq!(fake.lists(), 1, "ServiceAccounts listed again");
        // ServiceAccounts that do not exist (orders, reporter) are misses in the reflector,
        // not a GET per object and run.
        assert_eq!(fake.gets(), 0, "ServiceAccounts fetched one by one");
    };
    listed_once(&fake);

    // Changes come by the watches: the pod that needed a restart is replaced, and a bare pod
    // without identity appears.
    let base = captured_object("pod-create-carts.mutate.json");
    let apps = "apps/v1";
    fake.push_change(
        "DELETED",
        pod(
            &base,
            "carts-5f6-a1",
            "carts",
            Some((apps, "ReplicaSet", "carts-5f6")),
            "Running",
        ),
    );
    fake.push_change("ADDED", pod(&base, "debug", "orders", None, "Running"));
    metrics_once(
        webhook,
        "the watched changes did not reach the gauges",
        |metrics| {
            support::sample(metrics, &series("needs-restart")) == Some(1.0)
                && support::sample(metrics, &series("no-identity")) == Some(3.0)
        },
    )
    .await;
    let events = settled_events(&fake, 7, 300).await;
    assert_eq!(events[6]["regarding"]["name"], "debug");
    assert_eq!(events[6]["regarding"]["kind"], "Pod");
    assert_eq!(events[6]["reason"], "NoIdentity");
    listed_once(&fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_an_audit_interval_refuses_to_start_and_names_the_controller() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("server:\n  auditInterval: 100ms\n");
    std::fs::write(&config, text).unwrap();
    use pod_identity_webhook::cli::{Cli, Command};
    let args = [
        "pod-identity-webhook",
        "serve",
        "--config",
        config.to_str().unwrap(),
        "--self-signed",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ];
    let Command::Serve(args) = <Cli as clap::Parser>::try_parse_from(args).unwrap().command else {
        panic!("serve expected")
    };
    let settings = args.settings().expect("the setting still parses");
    let Err(e) = pod_identity_webhook::startup::start(settings).await else {
        panic!("serve started with server.auditInterval")
    };
    let message = e.to_string();
    assert!(
        message.contains("controller") && message.contains("docs/controller.md"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_audits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let fake = mixed_cluster(&config).await;
    let kubeconfig = fake.kubeconfig(dir.path());
    let webhook = support::serve_config(&config, Some(&kubeconfig)).await;
    // The webhook's own watches list; give an audit (which would list pods) time to start.
    let deadline = tokio::time::Instant::now() + support::WAIT;
    while fake.lists() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no ServiceAccount list"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(fake.pages("/api/v1/pods"), 0, "the webhook listed pods");
    assert!(fake.events().is_empty());
    let (_, metrics) = support::admin_get(webhook.admin_addr, "/metrics").await;
    assert!(!metrics.contains("audit_violations"), "{metrics}");
}

/// The progress line goes to a terminal only: under `script` (a pseudo-terminal) stderr shows
/// it; through a pipe (the other tests) it never appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_shows_progress_on_a_terminal_only() {
    let script_found = std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_ok();
    if support::skip::unless(
        script_found,
        "script(1), the pseudo-terminal this test runs audit on",
        "apt-get install util-linux bsdutils; .ci/run installs it",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let fake = mixed_cluster(&config).await;
    let kubeconfig = fake.kubeconfig(dir.path());
    let command = format!(
        "{} audit --config {} --kubeconfig {} --page-size 2 -o json",
        env!("CARGO_BIN_EXE_pod-identity-webhook"),
        config.display(),
        kubeconfig.display()
    );
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let terminal = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "findings: {terminal}");
    assert!(terminal.contains("listing pods"), "{terminal}");
    assert!(
        terminal.contains("\r\x1b[K"),
        "the line is redrawn in place"
    );

    let (code, stdout, stderr) =
        audit(&config, &kubeconfig, &["--page-size", "2", "-o", "json"]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(!stderr.contains("listing"), "{stderr}");
    assert!(!stdout.contains('\r'), "{stdout}");
}

/// A running pod whose ServiceAccount names a role outside its namespace's allowlist: the
/// webhook would deny it (enforce) and never inject that role (docs/contract.md §12), so the audit reports
/// the policy denial, not a restart that would bring the role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_on_a_role_outside_the_allowlist_is_denied_not_to_be_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let base = captured_object("pod-create-carts.mutate.json");
    let fake = FakeKubeApi::start_changed(
        0,
        Vec::new(),
        Changes {
            objects: vec![pod(&base, "s3-job", "s3-reader", None, "Running")],
            ..Changes::default()
        },
    )
    .await;
    let kubeconfig = fake.kubeconfig(dir.path());
    let (code, stdout, stderr) = audit(&config, &kubeconfig, &["-o", "json"]).await;
    assert_eq!(code, 1, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let on_pod: Vec<&Value> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["name"] == "s3-job")
        .collect();
    let [finding] = on_pod.as_slice() else {
        panic!("{report}")
    };
    assert_eq!(finding["reason"], "policy", "{finding}");
    assert_eq!(finding["severity"], "denied", "{finding}");
    assert!(
        finding["message"].as_str().unwrap().contains("s3-reader"),
        "{finding}"
    );
}
