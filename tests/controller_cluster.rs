//! The `controller` command on a real kube-apiserver and kube-controller-manager
//! (tests/support/control_plane.rs): its audit's watches surviving an API server restart, the
//! repair of pods admitted while the webhook was down (replacements mutated, a
//! PodDisruptionBudget respected), and leader election between two processes, with GitOps
//! associations on the EKS stand-in too.
//!
//! Its own harness, as the cluster tier; each case has a control plane of its own (a restart,
//! a Lease), so they do not disturb one another. One case alone:
//! `cargo test --test controller_cluster -- NAME`.

mod eks_support;
mod support;

use std::time::Duration;

use libtest_mimic::{Arguments, Failed, Trial};
use serde_json::Value;
use support::cases::{admin_body, ensure, env_names, namespace, pod_yaml, service_account};
use support::control_plane::{
    ControlPlane, WebhookProcess, binaries, skip_without_control_plane, webhook_binary,
};
use support::controller::ControllerProcess;

type Case = fn() -> Result<(), Failed>;

const CASES: &[(&str, Case)] = &[
    (
        "audit_watches_survive_an_api_server_restart_without_duplicate_events",
        audit_watches_survive_an_api_server_restart_without_duplicate_events,
    ),
    (
        "repair_evicts_pods_admitted_while_the_webhook_was_down_and_respects_a_budget",
        repair_evicts_pods_admitted_while_the_webhook_was_down_and_respects_a_budget,
    ),
    (
        "two_controllers_one_works_the_other_takes_over_within_the_lease_duration",
        two_controllers_one_works_the_other_takes_over_within_the_lease_duration,
    ),
    (
        "two_controllers_with_gitops_associations_one_acts_and_the_takeover_creates_nothing_twice",
        two_controllers_with_gitops_associations_one_acts_and_the_takeover_creates_nothing_twice,
    ),
    (
        "controller_rss_at_n_pods (BENCHMARKS.md; runs with CONTROLLER_RSS_PODS=N)",
        controller_rss_at_n_pods,
    ),
];

fn main() {
    let args = Arguments::from_args();
    let skip = skip_without_control_plane("controller tier");
    let trials = CASES
        .iter()
        .map(|&(name, case)| Trial::test(name, case).with_ignored_flag(skip))
        .collect();
    libtest_mimic::run(&args, trials).exit();
}

const ROLE: &str = "arn:aws:iam::111122223333:role/carts";

/// A value of the controller's metrics: the sample whose line starts with `series`.
fn sample(port: u16, series: &str) -> Option<f64> {
    admin_body(port, "/metrics")
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn events(plane: &ControlPlane, ns: &str) -> Vec<Value> {
    let out = plane.kubectl(&["get", "events.v1.events.k8s.io", "-n", ns, "-o", "json"]);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    list["items"].as_array().cloned().unwrap_or_default()
}

fn pods(plane: &ControlPlane, ns: &str) -> Vec<Value> {
    let out = plane.kubectl(&["get", "pods", "-n", ns, "-o", "json"]);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    list["items"].as_array().cloned().unwrap_or_default()
}

fn names(pods: &[Value]) -> Vec<String> {
    let mut n: Vec<String> = pods
        .iter()
        .map(|p| {
            p["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    n.sort();
    n
}

fn deployment_yaml(ns: &str, name: &str, sa: &str, replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: {ns}\n\
         spec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    \
         metadata: {{labels: {{app: {name}}}}}\n    spec:\n      serviceAccountName: {sa}\n      \
         containers:\n        - name: app\n          image: busybox:1.36\n          \
         env: [{{name: APP_MODE, value: demo}}]\n"
    )
}

/// Moved from `serve --audit-interval` (the audit left the webhook): the controller on a private
/// control plane; a pod without identity gets one `NoIdentity` Event; the API server restarts
/// (every watch breaks); a pod created afterwards is found too (the watches resumed), and the
/// first pod still has exactly one Event.
fn audit_watches_survive_an_api_server_restart_without_duplicate_events() -> Result<(), Failed> {
    let mut plane = ControlPlane::start(&binaries()?);
    let webhook = WebhookProcess::start(
        &plane,
        "server:\n  reloadInterval: 500ms\npolicy:\n  defaultMode: warn\n",
        "associations: []\n",
    );
    let config = webhook.dir.path().join("config.yaml");
    let controller = ControllerProcess::start(
        &config,
        "c-0",
        &["--audit-interval", "1s", "--lease-namespace", "default"],
    );
    namespace(&plane, "audit-a");
    service_account(&plane, "audit-a", "nobody", &[]);
    plane.apply(&pod_yaml("audit-a", "first", "nobody"));

    let events_for = |plane: &ControlPlane, pod: &str| -> Vec<Value> {
        events(plane, "audit-a")
            .into_iter()
            .filter(|e| e["regarding"]["name"] == pod && e["reason"] == "NoIdentity")
            .collect()
    };
    plane.eventually("the first pod's Event", Duration::from_secs(60), || {
        (!events_for(&plane, "first").is_empty()).then_some(())
    });

    plane.restart_apiserver();
    plane.apply(&pod_yaml("audit-a", "second", "nobody"));
    let found = plane.eventually_or_none(Duration::from_secs(60), || {
        (!events_for(&plane, "second").is_empty()).then_some(())
    });
    ensure(
        found.is_some(),
        format!(
            "no Event for the pod created after the restart; controller log:\n{}",
            controller.log_tail(30)
        ),
    )?;
    // More runs: still one Event per pod and reason.
    std::thread::sleep(Duration::from_secs(3));
    let first = events_for(&plane, "first");
    ensure(
        first.len() == 1,
        format!("Events for the first pod: {first:?}"),
    )?;
    let series =
        "pod_identity_webhook_audit_violations{namespace=\"audit-a\",reason=\"no-identity\"}";
    ensure(
        sample(controller.admin_port, series) == Some(2.0),
        format!(
            "audit_violations after the restart:\n{}",
            admin_body(controller.admin_port, "/metrics")
        ),
    )
}

/// The webhook is down while two Deployments roll out: their pods are admitted unmutated. The
/// webhook comes back; `audit --repair --dry-run` lists them and evicts nothing; `controller
/// --repair` evicts the `carts` pods (their ReplicaSet makes mutated ones) with one Event each,
/// and leaves the `orders` pod, whose PodDisruptionBudget forbids it, reporting the refusal.
fn repair_evicts_pods_admitted_while_the_webhook_was_down_and_respects_a_budget()
-> Result<(), Failed> {
    let plane = ControlPlane::start(&binaries()?);
    let associations = format!(
        "associations:\n  - {{namespace: repair-a, serviceAccount: carts, roleArn: \"{ROLE}\"}}\n  \
         - {{namespace: repair-b, serviceAccount: orders, roleArn: \"{ROLE}\"}}\n"
    );
    let mut webhook = WebhookProcess::start(
        &plane,
        "server:\n  reloadInterval: 500ms\npolicy:\n  defaultMode: warn\n",
        &associations,
    );
    webhook.register(&plane);
    for (ns, sa) in [("repair-a", "carts"), ("repair-b", "orders")] {
        namespace(&plane, ns);
        service_account(&plane, ns, sa, &[]);
    }
    webhook.stop();
    plane.apply(&deployment_yaml("repair-a", "carts", "carts", 2));
    plane.apply(&deployment_yaml("repair-b", "orders", "orders", 1));
    plane.apply(
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: orders\n  \
         namespace: repair-b\nspec:\n  minAvailable: 1\n  selector: {matchLabels: {app: orders}}\n",
    );
    let before = plane.eventually("the unmutated carts pods", Duration::from_secs(60), || {
        let p = pods(&plane, "repair-a");
        (p.len() == 2).then_some(p)
    });
    for p in &before {
        ensure(
            env_names(p) == ["APP_MODE"],
            format!("admitted with the webhook down, yet mutated: {p}"),
        )?;
    }
    let orders = plane.eventually("the orders pod", Duration::from_secs(60), || {
        pods(&plane, "repair-b").into_iter().next()
    });
    let orders_name = orders["metadata"]["name"].as_str().unwrap().to_string();
    // No kubelet here: the pod is made running and ready by hand, for its budget to count it
    // (the Eviction API ignores budgets for pending pods).
    plane.kubectl_ok(&[
        "patch",
        "pod",
        &orders_name,
        "-n",
        "repair-b",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}}"#,
    ]);
    webhook.restart();

    let config = webhook.dir.path().join("config.yaml");
    let dry = std::process::Command::new(webhook_binary())
        .args(["audit", "--repair", "--dry-run", "--config"])
        .arg(&config)
        .output()?;
    let out = String::from_utf8_lossy(&dry.stdout).to_string();
    for p in names(&before).iter().chain([&orders_name]) {
        ensure(
            out.contains(&format!("{p}: would be evicted")),
            format!("the dry run does not list {p}:\n{out}"),
        )?;
    }
    ensure(
        names(&pods(&plane, "repair-a")) == names(&before),
        "the dry run evicted",
    )?;

    let controller = ControllerProcess::start(
        &config,
        "repair-0",
        &[
            "--audit-interval",
            "1s",
            "--repair",
            "--repair-interval",
            "200ms",
            "--leader-elect=false",
        ],
    );
    let after = plane.eventually_or_none(Duration::from_secs(90), || {
        let now = pods(&plane, "repair-a");
        let fresh: Vec<Value> = now
            .into_iter()
            .filter(|p| {
                !names(&before)
                    .iter()
                    .any(|n| p["metadata"]["name"] == n.as_str())
            })
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect();
        (fresh.len() == 2).then_some(fresh)
    });
    let Some(after) = after else {
        return Err(format!(
            "the carts pods were not replaced; controller log:\n{}",
            controller.log_tail(30)
        )
        .into());
    };
    for p in &after {
        let env = env_names(p);
        ensure(
            env.iter().any(|n| n.starts_with("AWS_")),
            format!("a replacement without the identity: {env:?}"),
        )?;
    }
    let evicted = events(&plane, "repair-a")
        .into_iter()
        .filter(|e| e["reason"] == "EvictedWithoutIdentity")
        .count();
    ensure(evicted == 2, format!("{evicted} eviction Events, not 2"))?;
    let blocked = plane.eventually_or_none(Duration::from_secs(30), || {
        events(&plane, "repair-b")
            .into_iter()
            .find(|e| e["reason"] == "EvictionBlocked" && e["regarding"]["name"] == orders_name)
    });
    ensure(
        blocked.is_some(),
        format!(
            "no EvictionBlocked Event for {orders_name}; controller log:\n{}",
            controller.log_tail(30)
        ),
    )?;
    ensure(
        names(&pods(&plane, "repair-b")) == [orders_name.clone()],
        "the budget's pod was evicted",
    )
}

/// Two controller processes on one Lease of 3 s: one works (`controller_leader` 1), the other
/// stands by (0); the first is killed (no release: the Lease must expire) and the second works
/// within the lease duration (and a margin for its renewal period).
fn two_controllers_one_works_the_other_takes_over_within_the_lease_duration() -> Result<(), Failed>
{
    let plane = ControlPlane::start(&binaries()?);
    let webhook = WebhookProcess::start(&plane, "", "associations: []\n");
    let config = webhook.dir.path().join("config.yaml");
    let args = [
        "--lease-duration",
        "3s",
        "--lease-namespace",
        "default",
        "--audit-interval",
        "1s",
    ];
    let leader = |c: &ControllerProcess| {
        sample(c.admin_port, "pod_identity_webhook_controller_leader ") == Some(1.0)
    };
    let mut first = ControllerProcess::start(&config, "first", &args);
    plane.eventually(
        "the first controller leads",
        Duration::from_secs(30),
        || leader(&first).then_some(()),
    );
    let second = ControllerProcess::start(&config, "second", &args);
    std::thread::sleep(Duration::from_secs(4));
    ensure(
        leader(&first) && !leader(&second),
        format!(
            "not one leader: first {}, second {}\n{}",
            leader(&first),
            leader(&second),
            second.log_tail(20)
        ),
    )?;
    let holder = plane.kubectl_ok(&[
        "get",
        "lease",
        "pod-identity-webhook-controller",
        "-n",
        "default",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    ensure(
        holder.trim() == "first",
        format!("the Lease holder: {holder}"),
    )?;

    first.kill();
    let killed = std::time::Instant::now();
    let took = plane.eventually_or_none(Duration::from_secs(10), || {
        leader(&second).then(|| killed.elapsed())
    });
    let Some(took) = took else {
        return Err(format!("no takeover; second's log:\n{}", second.log_tail(30)).into());
    };
    ensure(
        took <= Duration::from_secs(5),
        format!("the takeover took {took:?}, more than the 3 s lease and its renewal"),
    )
}

/// Two controller processes with GitOps associations on one Lease of 3 s and the EKS stand-in:
/// only the leader reconciles (the standby's gitops metrics stay empty); the leader is killed
/// while more ServiceAccounts are annotated, the standby takes over within the lease duration
/// and creates the rest; the stand-in saw exactly one Create request per ServiceAccount.
fn two_controllers_with_gitops_associations_one_acts_and_the_takeover_creates_nothing_twice()
-> Result<(), Failed> {
    support::static_aws_credentials();
    let plane = ControlPlane::start(&binaries()?);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let eks = rt.block_on(eks_support::FakeEks::start("demo"));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "kubeconfig: {}\neks: {{clusterName: demo, region: us-east-1, endpoint: \"{}\"}}\n",
            plane.kubeconfig.display(),
            eks.url()
        ),
    )
    .unwrap();
    namespace(&plane, "team-a");
    let annotate = |sa: &str| {
        service_account(
            &plane,
            "team-a",
            sa,
            &[(
                "pod-identity-webhook/association-role-arn",
                &eks_support::role_arn(&format!("team-a-{sa}")),
            )],
        )
    };
    for sa in ["carts", "orders", "payments"] {
        annotate(sa);
    }
    let args = [
        "--lease-duration",
        "3s",
        "--lease-namespace",
        "default",
        "--audit-interval",
        "1s",
        "--gitops-associations",
        "--gitops-resync-interval",
        "2s",
    ];
    let leader = |c: &ControllerProcess| {
        sample(c.admin_port, "pod_identity_webhook_controller_leader ") == Some(1.0)
    };
    let reconciles = |c: &ControllerProcess| {
        sample(
            c.admin_port,
            "pod_identity_webhook_gitops_reconciles_total{result=\"ok\"}",
        )
        .unwrap_or(0.0)
    };
    let mut first = ControllerProcess::start(&config, "first", &args);
    plane.eventually(
        "the first controller leads",
        Duration::from_secs(30),
        || leader(&first).then_some(()),
    );
    let second = ControllerProcess::start(&config, "second", &args);
    plane.eventually(
        "the leader creates three associations",
        Duration::from_secs(30),
        || (eks.all().len() == 3).then_some(()),
    );
    // Two resyncs of the leader; the standby reconciles nothing.
    std::thread::sleep(Duration::from_secs(4));
    ensure(
        leader(&first) && !leader(&second) && reconciles(&first) >= 2.0,
        format!(
            "first leads {} ({} reconciles), second leads {}",
            leader(&first),
            reconciles(&first),
            leader(&second)
        ),
    )?;
    ensure(
        reconciles(&second) == 0.0 && eks.write_requests("create") == 3,
        format!(
            "the standby reconciled {} times; Create requests {}",
            reconciles(&second),
            eks.write_requests("create")
        ),
    )?;

    first.kill();
    let killed = std::time::Instant::now();
    annotate("shipping");
    annotate("billing");
    let took = plane.eventually_or_none(Duration::from_secs(10), || {
        leader(&second).then(|| killed.elapsed())
    });
    let Some(took) = took else {
        return Err(format!("no takeover; second's log:\n{}", second.log_tail(30)).into());
    };
    ensure(
        took <= Duration::from_secs(5),
        format!("the takeover took {took:?}, more than the 3 s lease and its renewal"),
    )?;
    let all = plane.eventually_or_none(Duration::from_secs(20), || {
        (eks.all().len() == 5).then_some(())
    });
    ensure(
        all.is_some(),
        format!(
            "associations after the takeover: {:?}\n{}",
            eks.all(),
            second.log_tail(30)
        ),
    )?;
    // Two more resyncs: nothing is created again.
    std::thread::sleep(Duration::from_secs(4));
    ensure(
        eks.write_requests("create") == 5
            && eks.creates() == 5
            && eks.write_requests("update") + eks.write_requests("delete") == 0,
        format!(
            "Create requests {} (created {}), Update {}, Delete {}: one Create per ServiceAccount expected",
            eks.write_requests("create"),
            eks.creates(),
            eks.write_requests("update"),
            eks.write_requests("delete")
        ),
    )
}

/// BENCHMARKS.md's controller memory: `CONTROLLER_RSS_PODS=5000 cargo test --test
/// controller_cluster -- controller_rss --nocapture` (the test profile). N ordinary pods (two containers, ten env vars each;
/// no kubelet, they stay Pending) in 10 namespaces; the controller's RSS once its audit has run
/// on them, against its RSS on an empty cluster. Without the variable it does nothing.
fn controller_rss_at_n_pods() -> Result<(), Failed> {
    let Some(n) = std::env::var("CONTROLLER_RSS_PODS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    else {
        return Ok(());
    };
    let plane = ControlPlane::start(&binaries()?);
    let webhook = WebhookProcess::start(&plane, "", "associations: []\n");
    let config = webhook.dir.path().join("config.yaml");
    let args = ["--audit-interval", "2s", "--leader-elect=false"];
    let measure = |what: &str| -> Result<u64, Failed> {
        let c = ControllerProcess::start(&config, what, &args);
        // The gauge reads 0 until the first run, which waits for every watch to have listed.
        let audited = plane.eventually_or_none(Duration::from_secs(600), || {
            sample(
                c.admin_port,
                "pod_identity_webhook_audit_last_run_timestamp_seconds ",
            )
            .filter(|t| *t > 0.0)
        });
        ensure(
            audited.is_some(),
            format!("no audit run:\n{}", c.log_tail(20)),
        )?;
        // A few more runs: the steady state, not the first list's peak alone.
        std::thread::sleep(Duration::from_secs(6));
        let rss = c.rss_kib().ok_or_else(|| "no VmRSS".into());
        let tail = c.log_tail(200);
        let last_run = tail
            .lines()
            .rev()
            .find(|l| l.contains("audit: "))
            .unwrap_or("");
        println!("{what}: {last_run}");
        rss
    };
    let empty = measure("empty")?;
    let per_ns = n.div_ceil(10);
    for ns in 0..10 {
        namespace(&plane, &format!("rss-{ns}"));
        for chunk in (0..per_ns).collect::<Vec<_>>().chunks(250) {
            let mut list = String::from("apiVersion: v1\nkind: List\nitems:\n");
            for i in chunk {
                list += &format!(
                    "- apiVersion: v1\n  kind: Pod\n  metadata: {{name: app-{i}, namespace: rss-{ns}, labels: {{app: app, tier: web}}}}\n  spec:\n    containers:\n"
                );
                for c in ["app", "sidecar"] {
                    list += &format!(
                        "    - name: {c}\n      image: registry.example/team/{c}:1.2.3\n      env:\n"
                    );
                    for e in 0..10 {
                        list += &format!(
                            "      - {{name: SETTING_{e}, value: value-of-setting-{e}-for-{c}}}\n"
                        );
                    }
                }
            }
            let out = plane.kubectl_stdin(&["create", "-f", "-"], Some(list.as_bytes()));
            ensure(
                out.status.success(),
                String::from_utf8_lossy(&out.stderr).to_string(),
            )?;
        }
    }
    let full = measure("full")?;
    let per_pod = (full.saturating_sub(empty) as f64) * 1024.0 / n as f64;
    println!(
        "controller RSS: {empty} KiB with no pods, {full} KiB at {n} pods: {per_pod:.0} bytes per pod"
    );
    Ok(())
}
