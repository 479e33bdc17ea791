//! The cluster tier: the webhook built from this checkout, registered through the shipped webhook
//! configurations with a real kube-apiserver and kube-controller-manager (`hack/control-plane.sh`
//! builds them from the Go module proxy; `tests/support/control_plane.rs` starts them).
//!
//! Its own harness (libtest-mimic), so that one control plane serves every case and a skip is
//! printed where `cargo test` shows it. Without Go the tier is skipped with a one-line reason,
//! unless `CI` is set or `POD_IDENTITY_CLUSTER_TESTS=require` (`.ci/run` sets both): then it fails.
//! One case alone: `cargo test --test cluster -- NAME`.

#[path = "cluster/missed.rs"]
mod missed;
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use libtest_mimic::{Arguments, Failed, Trial};
use serde_json::Value;
use support::cases::{ensure, env_names, namespace, pod_yaml, service_account};
use support::control_plane::{
    ControlPlane, WebhookProcess, admin_status, binaries, free_port, skip_without_control_plane,
    webhook_binary,
};

const ROLE: &str = "arn:aws:iam::111122223333:role/carts";
const IRSA_ROLE: &str = "arn:aws:iam::111122223333:role/s3-reader";

/// What every webhook of this tier decides on: enforce in `strict-*`, warn elsewhere; files
/// re-read twice a second.
const POLICY: &str = "server:\n  reloadInterval: 500ms\npolicy:\n  defaultMode: warn\n  clusterName: test\n  namespaces:\n    - match: \"strict-*\"\n      mode: enforce\n";

fn associations(pairs: &[(&str, &str)]) -> String {
    let mut out = String::from("associations:\n");
    for (ns, sa) in pairs {
        out += &format!("  - {{namespace: {ns}, serviceAccount: {sa}, roleArn: \"{ROLE}\"}}\n");
    }
    out
}

/// The shared control plane with one webhook registered.
struct Tier {
    plane: ControlPlane,
    webhook: WebhookProcess,
}

/// Started by the first case that runs (listing, or filtering every case out, starts nothing);
/// dropped after the last.
static TIER: Mutex<Option<Arc<Tier>>> = Mutex::new(None);

fn tier() -> Result<Arc<Tier>, Failed> {
    let mut tier = TIER.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(t) = &*tier {
        return Ok(t.clone());
    }
    let plane = ControlPlane::start(&binaries()?);
    let webhook = WebhookProcess::start(
        &plane,
        POLICY,
        &associations(&[("team-a", "carts"), ("strict-a", "carts")]),
    );
    webhook.register(&plane);
    let started = Arc::new(Tier { plane, webhook });
    *tier = Some(started.clone());
    Ok(started)
}

/// Each case, by name.
type Case = fn(&Tier) -> Result<(), Failed>;

const CASES: &[(&str, Case)] = &[
    (
        "deployment_pods_come_out_mutated_as_check_computes",
        deployment_pods_come_out_mutated_as_check_computes,
    ),
    (
        "enforce_namespace_refuses_a_pod_without_identity_naming_the_fix",
        enforce_namespace_refuses_a_pod_without_identity_naming_the_fix,
    ),
    (
        "a_pod_the_mutating_webhook_missed_is_refused_in_an_enforce_namespace",
        missed::a_pod_the_mutating_webhook_missed_is_refused_in_an_enforce_namespace,
    ),
    (
        "service_account_created_a_moment_before_its_pod_is_used",
        service_account_created_a_moment_before_its_pod_is_used,
    ),
    (
        "webhook_down_pods_are_admitted_unmutated_and_audit_lists_them",
        webhook_down_pods_are_admitted_unmutated_and_audit_lists_them,
    ),
    (
        "agent_gives_a_real_pod_credentials_through_botocore_and_refuses_a_deleted_pod",
        agent_gives_a_real_pod_credentials_through_botocore_and_refuses_a_deleted_pod,
    ),
    (
        "agent_removes_the_startup_taint_from_its_node_once_ready",
        agent_removes_the_startup_taint_from_its_node_once_ready,
    ),
    (
        "migrate_moves_a_deployment_from_irsa_to_pod_identity",
        migrate_moves_a_deployment_from_irsa_to_pod_identity,
    ),
    (
        "check_gives_the_verdict_the_api_server_gives_through_the_webhook",
        check_gives_the_verdict_the_api_server_gives_through_the_webhook,
    ),
];

fn main() {
    let args = Arguments::from_args();
    let skip = skip_without_control_plane("cluster tier");
    let trials = CASES
        .iter()
        .map(|&(name, case)| Trial::test(name, move || case(&*tier()?)).with_ignored_flag(skip))
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    drop(TIER.lock().unwrap_or_else(|e| e.into_inner()).take());
    conclusion.exit();
}

// ---------------------------------------------------------------------------------------------
// Helpers of the cases.

/// Replaces the API server's generated names (the `kube-api-access-xxxxx` volume) so two pods
/// made from one template compare equal.
fn without_generated_names(spec: &Value) -> String {
    let text = spec.to_string();
    match text.split("kube-api-access-").nth(1) {
        Some(rest) => {
            let suffix: String = rest.chars().take(5).collect();
            text.replace(
                &format!("kube-api-access-{suffix}"),
                "kube-api-access-GENERATED",
            )
        }
        None => text,
    }
}

/// `pod` as the API server would store it (defaults, admission), in a namespace outside the
/// webhooks' selectors: a server-side dry run.
fn dry_run(plane: &ControlPlane, pod: &Value) -> Result<Value, Failed> {
    let out = plane.kubectl_stdin(
        &["create", "--dry-run=server", "-o", "json", "-f", "-"],
        Some(pod.to_string().as_bytes()),
    );
    ensure(out.status.success(), String::from_utf8_lossy(&out.stderr))?;
    Ok(serde_json::from_slice(&out.stdout)?)
}

// ---------------------------------------------------------------------------------------------
// The cases.

/// A Deployment applied with kubectl: the controller manager makes a ReplicaSet and it a pod,
/// which the API server sends through the webhook. The stored pod equals the same pod as the API
/// server would store it without the webhook (a server-side dry run in the webhook's own,
/// excluded namespace), with the patch `check --show-patch` computes applied: the unit-level
/// mutation, byte for byte.
fn deployment_pods_come_out_mutated_as_check_computes(tier: &Tier) -> Result<(), Failed> {
    let plane = &tier.plane;
    namespace(plane, "team-a");
    service_account(plane, "team-a", "carts", &[]);
    plane.apply(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: carts\n  namespace: team-a\nspec:\n  \
         replicas: 1\n  selector: {matchLabels: {app: carts}}\n  template:\n    metadata:\n      \
         labels: {app: carts}\n    spec:\n      serviceAccountName: carts\n      containers:\n        \
         - name: app\n          image: busybox:1.36\n          env: [{name: APP_MODE, value: demo}]\n",
    );
    let pod: Value = plane.eventually("the Deployment's pod", Duration::from_secs(60), || {
        let out = plane.kubectl_ok(&[
            "get",
            "pods",
            "-n",
            "team-a",
            "-l",
            "app=carts",
            "-o",
            "json",
        ]);
        let list: Value = serde_json::from_str(&out).unwrap();
        list["items"]
            .as_array()
            .and_then(|items| items.first().cloned())
    });
    ensure(
        pod["metadata"]["labels"]["eks.amazonaws.com/pod-identity"] == "enabled",
        format!("the pod was not mutated: {pod}"),
    )?;

    // The same pod, unmutated: the API server's defaulting and admission without our webhook.
    namespace(plane, "pod-identity-webhook");
    service_account(plane, "pod-identity-webhook", "carts", &[]);
    let template: Value = {
        let rs_name = pod["metadata"]["ownerReferences"][0]["name"]
            .as_str()
            .unwrap();
        plane.get_json("replicaset", "team-a", rs_name)
    };
    let dry_run_input = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "carts-dry-run",
            "namespace": "pod-identity-webhook",
            "labels": template["spec"]["template"]["metadata"]["labels"],
        },
        "spec": template["spec"]["template"]["spec"],
    });
    let mut as_sent = dry_run(plane, &dry_run_input)?;
    as_sent["metadata"]["namespace"] = "team-a".into();

    // The unit-level mutation of that pod, as `check` computes it.
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("pod.json"), as_sent.to_string())?;
    std::fs::write(
        dir.path().join("associations.yaml"),
        associations(&[("team-a", "carts")]),
    )?;
    let check = std::process::Command::new(webhook_binary())
        .args(["check", "--show-patch", "-o", "json", "--associations"])
        .arg(dir.path().join("associations.yaml"))
        .arg(dir.path().join("pod.json"))
        .output()?;
    let report: Value = serde_json::from_slice(&check.stdout)?;
    let object = &report["objects"][0];
    ensure(object["status"] == "mutated", format!("check: {report}"))?;
    let patch: json_patch::Patch = serde_json::from_value(object["patch"].clone())?;
    let mut expected = as_sent.clone();
    json_patch::patch(&mut expected, &patch)?;
    // The API server defaults what a webhook adds (a projected volume's `defaultMode`) after the
    // mutation: so does the expected pod.
    expected["metadata"]["namespace"] = "pod-identity-webhook".into();
    let expected = dry_run(plane, &expected)?;

    ensure(
        without_generated_names(&expected["spec"]) == without_generated_names(&pod["spec"]),
        format!(
            "stored spec differs from the unit-level mutation\nstored:   {}\nexpected: {}",
            pod["spec"], expected["spec"]
        ),
    )?;
    ensure(
        expected["metadata"]["labels"] == pod["metadata"]["labels"],
        format!(
            "labels: stored {} expected {}",
            pod["metadata"]["labels"], expected["metadata"]["labels"]
        ),
    )?;
    ensure(
        env_names(&pod)
            == [
                "APP_MODE",
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            ],
        format!("env: {:?}", env_names(&pod)),
    )
}

/// In an enforce namespace, a pod whose ServiceAccount has no identity is refused; what kubectl
/// prints names the namespace, the ServiceAccount and the command that fixes it.
fn enforce_namespace_refuses_a_pod_without_identity_naming_the_fix(
    tier: &Tier,
) -> Result<(), Failed> {
    let plane = &tier.plane;
    namespace(plane, "strict-a");
    service_account(plane, "strict-a", "orders", &[]);
    let out = plane.kubectl_stdin(
        &["apply", "-f", "-"],
        Some(pod_yaml("strict-a", "orders-0", "orders").as_bytes()),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure(!out.status.success(), "the pod was admitted")?;
    for part in [
        "admission webhook \"validate.pod-identity-webhook.io\" denied the request",
        "strict-a",
        "\"orders\"",
        "aws eks create-pod-identity-association --cluster-name test --namespace strict-a \
         --service-account orders --role-arn <role>",
    ] {
        ensure(
            stderr.contains(part),
            format!("kubectl's message lacks {part:?}: {stderr}"),
        )?;
    }
    // The same namespace, a ServiceAccount with an association: admitted and mutated.
    service_account(plane, "strict-a", "carts", &[]);
    plane.apply(&pod_yaml("strict-a", "carts-0", "carts"));
    let pod = plane.get_json("pod", "strict-a", "carts-0");
    ensure(
        env_names(&pod).contains(&"AWS_CONTAINER_CREDENTIALS_FULL_URI".to_string()),
        format!("not mutated: {pod}"),
    )
}

/// The ServiceAccount and its pod applied back to back (one `kubectl apply` of both): the
/// webhook's ServiceAccount view may not have seen it yet, and the pod still gets its IRSA role.
fn service_account_created_a_moment_before_its_pod_is_used(tier: &Tier) -> Result<(), Failed> {
    let plane = &tier.plane;
    namespace(plane, "race-a");
    for i in 0..5 {
        let sa = format!("reader-{i}");
        let yaml = format!(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {sa}\n  namespace: race-a\n  \
             annotations:\n    eks.amazonaws.com/role-arn: \"{IRSA_ROLE}\"\n---\n{}",
            pod_yaml("race-a", &format!("{sa}-pod"), &sa)
        );
        plane.apply(&yaml);
        let pod = plane.get_json("pod", "race-a", &format!("{sa}-pod"));
        let env = &pod["spec"]["containers"][0]["env"];
        ensure(
            env.as_array()
                .into_iter()
                .flatten()
                .any(|e| e["name"] == "AWS_ROLE_ARN" && e["value"] == IRSA_ROLE),
            format!("pod {i} has no AWS_ROLE_ARN: {env}"),
        )?;
    }
    Ok(())
}

/// The webhook stopped (its configurations stay, `failurePolicy: Ignore` as shipped): pods are
/// admitted unmutated, even in an enforce namespace; once it is back, `audit` lists them as
/// needing a restart. Its own control plane: the outage must not touch the other cases.
fn webhook_down_pods_are_admitted_unmutated_and_audit_lists_them(
    _tier: &Tier,
) -> Result<(), Failed> {
    let plane = ControlPlane::start(&binaries()?);
    let mut webhook = WebhookProcess::start(
        &plane,
        POLICY,
        &associations(&[("team-b", "carts"), ("strict-b", "carts")]),
    );
    webhook.register(&plane);
    namespace(&plane, "team-b");
    namespace(&plane, "strict-b");
    service_account(&plane, "team-b", "carts", &[]);
    service_account(&plane, "strict-b", "orders", &[]);
    webhook.stop();

    plane.apply(&pod_yaml("team-b", "carts-0", "carts"));
    plane.apply(&pod_yaml("strict-b", "orders-0", "orders"));
    let pod = plane.get_json("pod", "team-b", "carts-0");
    ensure(
        env_names(&pod) == ["APP_MODE"] && pod["metadata"]["labels"].is_null(),
        format!("admitted, but changed: {pod}"),
    )?;

    let config = webhook.dir.path().join("config.yaml");
    let audit = std::process::Command::new(webhook_binary())
        .args(["audit", "-o", "json", "--config"])
        .arg(&config)
        .arg("--kubeconfig")
        .arg(&plane.kubeconfig)
        .output()?;
    ensure(
        audit.status.code() == Some(1),
        format!(
            "audit exit {:?}: {}",
            audit.status.code(),
            String::from_utf8_lossy(&audit.stderr)
        ),
    )?;
    let report: Value = serde_json::from_slice(&audit.stdout)?;
    let findings: Vec<(String, String, String)> = report["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            (
                f["namespace"].as_str().unwrap_or_default().to_string(),
                f["name"].as_str().unwrap_or_default().to_string(),
                f["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    for want in [
        ("team-b", "carts-0", "needs-restart"),
        ("strict-b", "orders-0", "no-identity"),
    ] {
        ensure(
            findings
                .iter()
                .any(|(n, p, r)| (n.as_str(), p.as_str(), r.as_str()) == want),
            format!("audit does not list {want:?}: {findings:?}"),
        )?;
    }
    Ok(())
}

/// The credentials agent (the binary, as the DaemonSet runs it) against the real API server and
/// moto's STS: a token the API server binds to a real pod, reviewed with a real `TokenReview`;
/// botocore's container credential provider gets the role's credentials through the agent, and
/// STS says who they are. Once the pod is deleted, its token is refused.
fn agent_gives_a_real_pod_credentials_through_botocore_and_refuses_a_deleted_pod(
    tier: &Tier,
) -> Result<(), Failed> {
    let plane = &tier.plane;
    if !support::sts::moto_available() {
        return Err("moto is not installed: pip install 'moto[server]' (.ci/run does)".into());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let moto = runtime.block_on(support::sts::Moto::start());

    namespace(plane, "agent-a");
    service_account(plane, "agent-a", "carts", &[]);
    plane.apply(&pod_yaml("agent-a", "carts-0", "carts"));
    let token = plane.kubectl_ok(&[
        "create",
        "token",
        "carts",
        "-n",
        "agent-a",
        "--audience",
        "pods.eks.amazonaws.com",
        "--bound-object-kind",
        "Pod",
        "--bound-object-name",
        "carts-0",
        "--duration",
        "10m",
    ]);
    let dir = tempfile::tempdir()?;
    let token_file = dir.path().join("eks-pod-identity-token");
    std::fs::write(&token_file, token.trim())?;
    std::fs::write(
        dir.path().join("associations.yaml"),
        format!(
            "associations:\n  - {{namespace: agent-a, serviceAccount: carts, roleArn: \"{ROLE}\"}}\n"
        ),
    )?;

    let agent = AgentProcess::start(plane, dir.path(), &moto.endpoint);
    let uri = format!("http://127.0.0.1:{}/v1/credentials", agent.port);
    let sdk = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import boto3, json, os\n\
             s = boto3.Session(region_name='us-east-1')\n\
             c = s.get_credentials().get_frozen_credentials()\n\
             who = s.client('sts', endpoint_url=os.environ['STS']).get_caller_identity()\n\
             print(json.dumps({'method': s.get_credentials().method, 'key': c.access_key, 'arn': who['Arn']}))",
        )
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", dir.path())
        .env("AWS_CONTAINER_CREDENTIALS_FULL_URI", &uri)
        .env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", &token_file)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("STS", &moto.endpoint)
        .output()?;
    ensure(
        sdk.status.success(),
        format!(
            "botocore: {}\nagent:\n{}",
            String::from_utf8_lossy(&sdk.stderr),
            agent.log()
        ),
    )?;
    let answer: Value = serde_json::from_slice(&sdk.stdout)?;
    ensure(
        answer["method"] == "container-role",
        format!("botocore's provider: {answer}"),
    )?;
    let arn = answer["arn"].as_str().unwrap_or_default();
    ensure(
        arn.starts_with("arn:aws:sts::111122223333:assumed-role/carts/eks-kind-carts-0-"),
        format!("STS says the credentials are {arn}"),
    )?;

    // The pod goes (no kubelet holds it: it is removed at once). Its token stops working once the
    // agent's cached review expires (`--token-review-ttl 1s` here) and the API server's own cache
    // of authenticated tokens (10 s) has let it go.
    plane.kubectl_ok(&["delete", "pod", "carts-0", "-n", "agent-a", "--wait=true"]);
    let mut last = (0, String::new());
    let refused = plane.eventually_or_none(Duration::from_secs(30), || {
        last = agent.get_credentials(token.trim());
        (last.0 == 403 && last.1.contains("AccessDenied")).then_some(())
    });
    ensure(
        refused.is_some(),
        format!("a deleted pod's token, 30 s later: {} {}", last.0, last.1),
    )
}

/// Issue 31: a Node created with the startup taint (and another taint that must stay); the
/// agent started with that node's name removes its taint once ready, and only it.
fn agent_removes_the_startup_taint_from_its_node_once_ready(tier: &Tier) -> Result<(), Failed> {
    let plane = &tier.plane;
    const NODE: &str = "node-with-startup-taint";
    plane.apply(&format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {NODE}\nspec:\n  taints:\n    \
         - {{key: example.com/other, effect: NoSchedule}}\n    \
         - {{key: pod-identity-webhook/agent-not-ready, effect: NoSchedule}}\n    \
         - {{key: pod-identity-webhook/agent-not-ready, effect: NoExecute}}\n"
    ));
    let taints = || {
        plane.kubectl_ok(&[
            "get",
            "node",
            NODE,
            "-o",
            "jsonpath={range .spec.taints[*]}{.key}={.effect} {end}",
        ])
    };
    assert!(taints().contains("agent-not-ready"), "{}", taints());
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("associations.yaml"), "associations: []\n")?;
    // Its STS is never called here.
    let agent = AgentProcess::start_with(
        plane,
        dir.path(),
        "http://127.0.0.1:9",
        &[format!("--node-name={NODE}")],
    );
    let left = plane.eventually_or_none(Duration::from_secs(30), || {
        let now = taints();
        (!now.contains("agent-not-ready")).then_some(now)
    });
    let left = left.ok_or_else(|| {
        format!(
            "the startup taint is still on the node: {}\nagent:\n{}",
            taints(),
            agent.log()
        )
    })?;
    // The other taints stay (the controller manager adds node.kubernetes.io/not-ready too: no
    // kubelet reports for this node).
    assert!(left.contains("example.com/other=NoSchedule"), "{left}");
    println!("taints once the agent is ready: {left}");
    plane.kubectl_ok(&["delete", "node", NODE]);
    Ok(())
}

/// `pod-identity-webhook agent` on a loopback port, reviewing tokens with the control plane and
/// assuming roles with `sts`; the associations file in `dir`.
struct AgentProcess {
    child: std::process::Child,
    port: u16,
    log: std::path::PathBuf,
}

impl AgentProcess {
    fn start(plane: &ControlPlane, dir: &std::path::Path, sts: &str) -> Self {
        Self::start_with(plane, dir, sts, &[])
    }

    /// [`AgentProcess::start`] with more flags.
    fn start_with(
        plane: &ControlPlane,
        dir: &std::path::Path,
        sts: &str,
        extra: &[String],
    ) -> Self {
        let (port, admin) = (free_port(), free_port());
        let log = dir.join("agent.log");
        let child = std::process::Command::new(webhook_binary())
            .args(["agent", "--cluster-name", "kind", "--region", "us-east-1"])
            .arg(format!("--bind=127.0.0.1:{port}"))
            .arg(format!("--admin-listen=127.0.0.1:{admin}"))
            .arg(format!(
                "--associations={}",
                dir.join("associations.yaml").display()
            ))
            .arg(format!("--kubeconfig={}", plane.kubeconfig.display()))
            .arg(format!("--sts-endpoint={sts}"))
            .args(["--token-review-ttl", "1s"])
            .args(extra)
            .env("AWS_ACCESS_KEY_ID", "AKIDAGENTEXAMPLE")
            .env("AWS_SECRET_ACCESS_KEY", "agent-secret-key")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.join("agent.err")).unwrap())
            .spawn()
            .expect("the agent starts");
        let agent = Self { child, port, log };
        plane.eventually("the agent's /readyz", Duration::from_secs(30), || {
            (admin_status(admin, "/readyz") == Some(200)).then_some(())
        });
        agent
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /v1/credentials` with `token`, as the SDKs send it: status and body.
    fn get_credentials(&self, token: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET /v1/credentials HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: {token}\r\n\
             Connection: close\r\n\r\n",
            self.port
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        let status = answer[9..12].parse().unwrap_or(0);
        let body = answer
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .to_string();
        (status, body)
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `migrate plan`, `apply`, `verify` on real ServiceAccounts and a Deployment, with moto as IAM
/// and the running webhook's associations file: the trust policy gains the Pod Identity statement,
/// the association is written, the webhook (re-reading its file) gives new pods Pod Identity, the
/// restart rolls the Deployment's template, verify names what is left until nothing is.
fn migrate_moves_a_deployment_from_irsa_to_pod_identity(tier: &Tier) -> Result<(), Failed> {
    const ACCOUNT: &str = "111122223333";
    const MIG_ROLE: &str = "arn:aws:iam::111122223333:role/mig-app";
    let plane = &tier.plane;
    if !support::sts::moto_available() {
        return Err("moto is not installed: pip install 'moto[server]' (.ci/run does)".into());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let moto = runtime.block_on(support::sts::Moto::in_account(ACCOUNT));
    let iam = aws_sdk_iam::Client::from_conf(
        aws_sdk_iam::Config::builder()
            .behavior_version(aws_sdk_iam::config::BehaviorVersion::latest())
            .region(aws_sdk_iam::config::Region::new("us-east-1"))
            .endpoint_url(&moto.endpoint)
            .credentials_provider(aws_sdk_iam::config::Credentials::new(
                "AKIDMIGRATE",
                "migrate-secret",
                None,
                None,
                "tests",
            ))
            .build(),
    );
    let oidc = "oidc.eks.us-east-1.amazonaws.com/id/CLUSTERTEST";
    let irsa_trust = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Federated": format!("arn:aws:iam::{ACCOUNT}:oidc-provider/{oidc}")},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {"StringEquals": {format!("{oidc}:sub"): "system:serviceaccount:mig-a:app"}},
        }],
    });
    runtime.block_on(
        iam.create_role()
            .role_name("mig-app")
            .assume_role_policy_document(irsa_trust.to_string())
            .send(),
    )?;

    namespace(plane, "mig-a");
    service_account(
        plane,
        "mig-a",
        "app",
        &[("eks.amazonaws.com/role-arn", MIG_ROLE)],
    );
    plane.apply(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app\n  namespace: mig-a\nspec:\n  \
         replicas: 1\n  selector: {matchLabels: {app: mig}}\n  template:\n    metadata:\n      \
         labels: {app: mig}\n    spec:\n      serviceAccountName: app\n      containers:\n        \
         - name: app\n          image: busybox:1.36\n",
    );
    let pods = |plane: &ControlPlane| -> Vec<Value> {
        let out = plane.kubectl_ok(&["get", "pods", "-n", "mig-a", "-l", "app=mig", "-o", "json"]);
        let list: Value = serde_json::from_str(&out).unwrap();
        list["items"].as_array().cloned().unwrap_or_default()
    };
    let first = plane.eventually("the IRSA pod", Duration::from_secs(60), || {
        pods(plane).into_iter().next()
    });
    ensure(
        env_names(&first).contains(&"AWS_ROLE_ARN".to_string()),
        format!("the first pod is not on IRSA: {first}"),
    )?;

    let associations = tier.webhook.dir.path().join("associations.yaml");
    let migrate = |args: &[&str]| -> std::process::Output {
        std::process::Command::new(webhook_binary())
            .arg("migrate")
            .args(args)
            .arg(format!("--kubeconfig={}", plane.kubeconfig.display()))
            .arg(format!("--associations={}", associations.display()))
            .args(["-n", "mig-a", "--cluster-account", ACCOUNT])
            .env("AWS_ENDPOINT_URL_IAM", &moto.endpoint)
            .env("AWS_ACCESS_KEY_ID", "AKIDMIGRATE")
            .env("AWS_SECRET_ACCESS_KEY", "migrate-secret")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
            .expect("migrate runs")
    };
    let said = |out: &std::process::Output| {
        format!(
            "exit {:?}\n{}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };

    // Step 1: the plan reads the ServiceAccount, its pod and the role.
    let plan = migrate(&["plan"]);
    let text = said(&plan);
    ensure(plan.status.success(), text.clone())?;
    for part in [
        "mig-a/app",
        MIG_ROLE,
        "missing",
        "add statement",
        "1 (1 IRSA)",
        "ready",
    ] {
        ensure(text.contains(part), format!("plan lacks {part:?}:\n{text}"))?;
    }

    // Steps 2 and 3: trust policy and association.
    let apply = migrate(&["apply", "--approve"]);
    ensure(apply.status.success(), said(&apply))?;
    let trust = runtime.block_on(iam.get_role().role_name("mig-app").send())?;
    let document = trust
        .role()
        .and_then(|r| r.assume_role_policy_document())
        .unwrap_or_default();
    let document = percent_decode(document);
    ensure(
        document.contains("pods.eks.amazonaws.com") && document.contains("sts:TagSession"),
        format!("trust policy after apply: {document}"),
    )?;
    let file = std::fs::read_to_string(&associations)?;
    ensure(
        file.contains("mig-a") && file.contains(MIG_ROLE),
        format!("associations file after apply: {file}"),
    )?;
    let again = migrate(&["apply", "--approve"]);
    ensure(
        String::from_utf8_lossy(&again.stdout)
            .contains("0 trust policies updated, 0 associations created"),
        format!("a second apply changed something: {}", said(&again)),
    )?;

    // The webhook re-reads its file: a new pod of the ServiceAccount gets Pod Identity only.
    plane.eventually(
        "the webhook serving the new association",
        Duration::from_secs(30),
        || {
            let mut pod: Value =
                serde_yaml_ng::from_str(&pod_yaml("mig-a", "probe", "app")).unwrap();
            pod["metadata"]["name"] = "probe".into();
            let stored = dry_run_in_place(plane, &pod)?;
            let env = env_names(&stored);
            (env.contains(&"AWS_CONTAINER_CREDENTIALS_FULL_URI".to_string())
                && !env.contains(&"AWS_ROLE_ARN".to_string()))
            .then_some(())
        },
    );

    // Step 5 before the cut-over: the IRSA pod needs a restart.
    let verify = migrate(&["verify"]);
    let text = said(&verify);
    ensure(
        verify.status.code() == Some(1)
            && text.contains(first["metadata"]["name"].as_str().unwrap()),
        format!("verify before the restart:\n{text}"),
    )?;

    // Step 4: the restart rolls the template; the new ReplicaSet's pod is on Pod Identity. No
    // kubelet runs, so the rollout never completes: the command waits `--rollout-timeout`.
    let _ = migrate(&[
        "apply",
        "--approve",
        "--restart-workloads",
        "--rollout-timeout",
        "3s",
    ]);
    let deployment = plane.get_json("deployment", "mig-a", "app");
    ensure(
        !deployment["spec"]["template"]["metadata"]["annotations"]
            ["kubectl.kubernetes.io/restartedAt"]
            .is_null(),
        format!("the template was not restarted: {}", deployment["spec"]["template"]),
    )?;
    let first_name = first["metadata"]["name"].as_str().unwrap().to_string();
    let rolled = plane.eventually("the restarted pod", Duration::from_secs(60), || {
        pods(plane)
            .into_iter()
            .find(|p| p["metadata"]["name"] != first_name.as_str())
    });
    let env = env_names(&rolled);
    ensure(
        env.contains(&"AWS_CONTAINER_CREDENTIALS_FULL_URI".to_string())
            && !env.contains(&"AWS_ROLE_ARN".to_string()),
        format!("the restarted pod: {env:?}"),
    )?;

    // The old pod goes (a kubelet would stop it once the new one is ready); then step 6 and
    // verify reports the migration complete.
    plane.kubectl_ok(&["delete", "pod", &first_name, "-n", "mig-a", "--wait=true"]);
    plane.eventually("no IRSA pod left", Duration::from_secs(60), || {
        pods(plane)
            .iter()
            .all(|p| !env_names(p).contains(&"AWS_ROLE_ARN".to_string()))
            .then_some(())
    });
    let remove = migrate(&["apply", "--approve", "--remove-irsa-annotations"]);
    ensure(remove.status.success(), said(&remove))?;
    let sa = plane.get_json("serviceaccount", "mig-a", "app");
    ensure(
        sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].is_null(),
        format!("still annotated: {sa}"),
    )?;
    let verify = migrate(&["verify"]);
    let text = said(&verify);
    ensure(
        verify.status.success() && text.contains("migration complete"),
        format!("verify at the end:\n{text}"),
    )
}

/// A server-side dry run of `pod` in its own namespace (through the webhooks).
fn dry_run_in_place(plane: &ControlPlane, pod: &Value) -> Option<Value> {
    let out = plane.kubectl_stdin(
        &["create", "--dry-run=server", "-o", "json", "-f", "-"],
        Some(pod.to_string().as_bytes()),
    );
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

/// IAM returns policy documents URL-encoded.
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// What the API server answers a server-side dry run of `object`: its verdict in `check`'s words
/// (`denied`, `warned`, `mutated`, `allowed`) and kubectl's stderr.
fn admission_verdict(plane: &ControlPlane, object: &Value) -> (String, String) {
    let out = plane.kubectl_stdin(
        &["create", "--dry-run=server", "-o", "json", "-f", "-"],
        Some(object.to_string().as_bytes()),
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let verdict = if !out.status.success() {
        if stderr.contains("denied the request") {
            "denied"
        } else {
            "error"
        }
    } else if stderr.contains("Warning:") {
        "warned"
    } else {
        let stored: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let env_of_first = env_names(&stored);
        if object["kind"] == "Pod" && env_of_first != env_names(object) {
            "mutated"
        } else {
            "allowed"
        }
    };
    (verdict.to_string(), stderr)
}

/// Every object of the recorded API-server captures (`tests/fixtures/`: Pods, Deployments,
/// StatefulSets, DaemonSets, ReplicaSets, Jobs, CronJobs, ServiceAccounts) and of `hack/demo/`,
/// in a warn and an enforce namespace: `check` (reading ServiceAccounts and namespaces from the
/// cluster) gives each the verdict the API server gives through the webhook.
fn check_gives_the_verdict_the_api_server_gives_through_the_webhook(
    tier: &Tier,
) -> Result<(), Failed> {
    let plane = &tier.plane;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut objects: Vec<(String, Value)> = Vec::new();
    for capture in support::captures(".json") {
        let review: Value = serde_json::from_slice(&capture.body)?;
        let object = &review["request"]["object"];
        if review["request"]["operation"] == "CREATE" && object.is_object() {
            objects.push((capture.name.clone(), object.clone()));
        }
    }
    for entry in std::fs::read_dir(root.join("hack/demo"))? {
        let path = entry?.path();
        let text = std::fs::read_to_string(&path)?;
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let object: Value = serde::Deserialize::deserialize(doc)?;
            if matches!(
                object["kind"].as_str(),
                Some("Pod" | "Deployment" | "ServiceAccount")
            ) {
                objects.push((path.display().to_string(), object));
            }
        }
    }
    ensure(
        objects.len() >= 15,
        format!("only {} objects", objects.len()),
    )?;

    let dir = tempfile::tempdir()?;
    let mut compared = 0;
    let mut seen = std::collections::BTreeSet::new();
    // The tier's namespaces where `carts` has an association (warn and enforce); dry runs only,
    // under names of their own.
    for ns in ["team-a", "strict-a"] {
        namespace(plane, ns);
        for (origin, object) in &objects {
            let mut object = object.clone();
            let meta = object["metadata"].as_object_mut().unwrap();
            for key in [
                "uid",
                "resourceVersion",
                "creationTimestamp",
                "managedFields",
                "generation",
            ] {
                meta.remove(key);
            }
            meta.insert("namespace".into(), ns.into());
            let name = meta.get("name").and_then(Value::as_str).unwrap_or_default();
            let name = if name.is_empty() {
                "generated".into()
            } else {
                format!("{name}-verdict")
            };
            meta.insert("name".into(), name.into());
            meta.remove("generateName");
            object.as_object_mut().unwrap().remove("status");
            if object["kind"] == "Job" {
                // The selector and labels the API server generated for the captured Job name its
                // uid: a new Job gets its own.
                object["spec"].as_object_mut().unwrap().remove("selector");
                if let Some(labels) =
                    object["spec"]["template"]["metadata"]["labels"].as_object_mut()
                {
                    labels.retain(|k, _| !k.contains("controller-uid") && !k.contains("job-name"));
                }
            }
            if object["kind"] == "ServiceAccount" {
                // Dry runs of new ServiceAccounts, beside those the other objects use.
                let name = format!(
                    "{}-new",
                    object["metadata"]["name"].as_str().unwrap_or("sa")
                );
                object["metadata"]["name"] = name.into();
            }
            // The ServiceAccount it names exists (a pod of a missing one is refused by the API
            // server itself); `carts` has an association in both namespaces, the others nothing.
            let sa = object_service_account(&object).unwrap_or_else(|| "default".into());
            if object["kind"] != "ServiceAccount" {
                service_account(plane, ns, &sa, &[]);
            }
            let (from_server, stderr) = admission_verdict(plane, &object);
            ensure(
                from_server != "error",
                format!("{origin} in {ns}: the API server refused it itself: {stderr}"),
            )?;
            let file = dir.path().join("object.json");
            std::fs::write(&file, object.to_string())?;
            let out = std::process::Command::new(webhook_binary())
                .args(["check", "-o", "json", "--config"])
                .arg(tier.webhook.dir.path().join("config.yaml"))
                .arg(format!("--kubeconfig={}", plane.kubeconfig.display()))
                .arg(&file)
                .output()?;
            let report: Value = serde_json::from_slice(&out.stdout)?;
            let from_check = report["objects"][0]["status"]
                .as_str()
                .unwrap_or("?")
                .to_string();
            ensure(
                from_check == from_server,
                format!(
                    "{origin} ({}) in {ns}: check says {from_check}, the API server {from_server}\n{stderr}\n{report}",
                    object["kind"]
                ),
            )?;
            seen.insert(from_server);
            compared += 1;
        }
    }
    ensure(compared >= 30, format!("compared only {compared}"))?;
    ensure(
        ["allowed", "mutated", "warned", "denied"]
            .iter()
            .all(|v| seen.contains(*v)),
        format!("not every verdict was met: {seen:?}"),
    )
}

/// The ServiceAccount a pod or pod template runs as.
fn object_service_account(object: &Value) -> Option<String> {
    let spec = match object["kind"].as_str()? {
        "Pod" => &object["spec"],
        "CronJob" => &object["spec"]["jobTemplate"]["spec"]["template"]["spec"],
        _ => &object["spec"]["template"]["spec"],
    };
    spec["serviceAccountName"].as_str().map(str::to_string)
}
