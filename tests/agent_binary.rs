//! The credentials agent as it is deployed and used: the built binary taking the standard AWS
//! settings (environment keys and region, a profile, the EKS and STS endpoints) and never logging
//! secrets; `agent trust-policy`; `/readyz` (it needs the Kubernetes API) and `/metrics`; and
//! botocore's container provider as a pod's client, against moto and across a refresh.

mod eks_support;
mod support;

use std::time::{Duration, Instant};

use eks_support::FakeEks;
use support::agent::*;
use support::kube_api::{FakeKubeApi, PodToken};
use support::sts::{Moto, RecordingSts};
use support::{WAIT, admin_get};

#[tokio::test]
async fn botocore_obtains_credentials_through_its_container_provider() {
    if skip_without_moto() {
        return;
    }
    let moto = Moto::start().await;
    let h = Harness::start(&moto.endpoint, |_| {}).await;
    let script = "import boto3; print(boto3.client('sts').get_caller_identity()['Arn'])";
    let stdout = botocore(
        &h,
        script,
        &[
            ("AWS_ENDPOINT_URL_STS", moto.endpoint.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
        ],
    )
    .await;
    assert!(
        stdout
            .trim()
            .starts_with("arn:aws:sts::111122223333:assumed-role/carts/eks-kind-carts-6b7-"),
        "{stdout}"
    );
}

#[tokio::test]
async fn readyz_needs_the_kubernetes_api_and_metrics_are_served() {
    let sts = RecordingSts::issuing(Duration::from_secs(3600)).await;
    let h = Harness::start(&sts.endpoint, |_| {}).await;
    let body = support::wait_readyz(h.agent.admin_addr, 200).await;
    assert!(body.contains("ready"), "{body}");
    let (status, _) = admin_get(h.agent.admin_addr, "/livez").await;
    assert_eq!(status, 200);
    let (_, text) = admin_get(h.agent.admin_addr, "/metrics").await;
    for family in [
        "pod_identity_agent_request_duration_seconds",
        "pod_identity_agent_cache_entries",
        "pod_identity_agent_cache_bytes",
    ] {
        assert!(text.contains(family), "{family} missing:\n{text}");
    }

    // An agent whose API server is gone is not ready.
    let kube = FakeKubeApi::start(0, Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = kube.kubeconfig(dir.path());
    drop(kube);
    let associations = dir.path().join("a.yaml");
    let lonely = start_agent(agent_settings(&associations, kubeconfig, &sts.endpoint)).await;
    let body = support::wait_readyz(lonely.admin_addr, 503).await;
    assert!(body.contains("Kubernetes API not reachable"), "{body}");
}

/// The agent binary for cluster `kind`, logging JSON to a piped stderr, on `port` and
/// `admin_port` with the API server of `kubeconfig`, in an empty environment but `HOME`.
fn agent_binary(
    port: u16,
    admin_port: u16,
    kubeconfig: std::path::PathBuf,
    home: &std::path::Path,
) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_pod-identity-webhook"));
    command
        .args(["agent", "--cluster-name", "kind", "--log-format", "json"])
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .env_clear()
        .env("HOME", home)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    command
}

/// Runs `command` to its end off the test's runtime.
async fn output(mut command: std::process::Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap()
}

/// python3 running `script` as a pod of team-a/carts does: botocore's container provider
/// pointed at the agent with the pod's token file, in an empty environment but `PATH`, `HOME`
/// and `env`; its stdout, once it succeeded.
async fn botocore(h: &Harness, script: &str, env: &[(&str, &str)]) -> String {
    let token_file = h.dir.path().join("eks-pod-identity-token");
    std::fs::write(&token_file, h.pod_token("team-a", "carts", "carts-6b7")).unwrap();
    let mut command = std::process::Command::new("python3");
    command
        .args(["-c", script])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", h.dir.path())
        .env(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            format!("http://{}/v1/credentials", h.addr()),
        )
        .env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", &token_file)
        .envs(env.iter().copied());
    let out = output(command).await;
    assert!(
        out.status.success(),
        "botocore failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn the_binary_takes_the_standard_aws_settings_and_never_logs_secrets() {
    let sts = RecordingSts::issuing(Duration::from_secs(3600)).await;
    let kube = FakeKubeApi::start(0, Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let associations = dir.path().join("associations.yaml");
    std::fs::write(&associations, ASSOCIATIONS).unwrap();
    let (port, admin_port) = (free_port(), free_port());
    let child = agent_binary(port, admin_port, kube.kubeconfig(dir.path()), dir.path())
        .arg("--associations")
        .arg(&associations)
        .env("AWS_REGION", "eu-west-1")
        .env("AWS_ACCESS_KEY_ID", "AKIDFROMTHEENV")
        .env("AWS_SECRET_ACCESS_KEY", "agent-secret-from-env")
        .env("AWS_ENDPOINT_URL_STS", &sts.endpoint)
        .spawn()
        .unwrap();
    // Killed if the test fails before it stops the agent itself.
    let _guard = KillOnDrop(child.id());
    let admin: std::net::SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    support::wait_listening(admin, "the agent").await;
    support::wait_readyz(admin, 200).await;

    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let token = "eyJhbGciOiJSUzI1NiJ9.binary.test-token-value";
    kube.token_reviews()
        .add(token, PodToken::pod("team-a", "carts", "carts-1"));
    let (status, answer) = get(addr, "/v1/credentials", &addr.to_string(), Some(token)).await;
    assert_eq!(status, 200, "{answer}");
    let forged = "eyJhbGciOiJSUzI1NiJ9.forged-token-value";
    let (status, _) = get(addr, "/v1/credentials", &addr.to_string(), Some(forged)).await;
    assert_eq!(status, 403);

    let calls = sts.assume_role_calls();
    assert_eq!(
        calls[0].signed_by, "AKIDFROMTHEENV",
        "credentials from the environment"
    );
    assert_eq!(
        calls[0].tags()[0],
        (
            "eks-cluster-arn".to_string(),
            "arn:aws:eks:eu-west-1:111122223333:cluster/kind".to_string()
        ),
        "region from AWS_REGION"
    );

    // SIGTERM: the agent stops and flushes its logs.
    let pid = child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(logs.contains("credential request refused"), "{logs}");
    for secret in [
        token,
        forged,
        "test-token-value",
        answer["SecretAccessKey"].as_str().unwrap(),
        answer["Token"].as_str().unwrap(),
        "agent-secret-from-env",
    ] {
        assert!(!logs.contains(secret), "the logs contain {secret}:\n{logs}");
    }
}

/// The binary, killed on drop.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .status();
    }
}

#[tokio::test]
async fn the_binary_reads_its_aws_profile_and_eks_endpoint_from_the_standard_settings() {
    let sts = RecordingSts::issuing(Duration::from_secs(3600)).await;
    let eks = FakeEks::start("kind").await;
    eks.add("team-a", "carts", "carts");
    let kube = FakeKubeApi::start(0, Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::write(&config, "[profile agent]\nregion = eu-central-1\n").unwrap();
    let credentials = dir.path().join("credentials");
    std::fs::write(
        &credentials,
        // A key the fakes of EKS and STS know the secret of (tests/support/sigv4.rs).
        "[agent]\naws_access_key_id = AKIDFROMPROFILE\naws_secret_access_key = secret-from-profile\n",
    )
    .unwrap();
    let (port, admin_port) = (free_port(), free_port());
    // No --associations: the associations come from EKS, as on an EKS cluster.
    let mut child = agent_binary(port, admin_port, kube.kubeconfig(dir.path()), dir.path())
        .env("AWS_PROFILE", "agent")
        .env("AWS_CONFIG_FILE", &config)
        .env("AWS_SHARED_CREDENTIALS_FILE", &credentials)
        .env("AWS_ENDPOINT_URL_STS", &sts.endpoint)
        .env("AWS_ENDPOINT_URL_EKS", eks.url())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .spawn()
        .unwrap();
    let guard = KillOnDrop(child.id());
    let admin: std::net::SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        if tokio::net::TcpStream::connect(admin).await.is_ok()
            && admin_get(admin, "/readyz").await.0 == 200
        {
            break;
        }
        if Instant::now() > deadline {
            drop(guard);
            let out = child.wait_with_output().unwrap();
            panic!(
                "the agent never turned ready: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let token = "eyJhbGciOiJSUzI1NiJ9.profile.test-token";
    kube.token_reviews()
        .add(token, PodToken::pod("team-a", "carts", "carts-1"));
    let (status, answer) = get(addr, "/v1/credentials", &addr.to_string(), Some(token)).await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        eks.requests() >= 1,
        "associations read from AWS_ENDPOINT_URL_EKS"
    );
    assert_eq!(
        eks.unsigned(),
        0,
        "EKS calls signed with the profile's keys (the fake signs them again with the \
         profile's secret and compares)"
    );
    let calls = sts.assume_role_calls();
    assert_eq!(
        calls[0].params["RoleArn"],
        "arn:aws:iam::111122223333:role/carts"
    );
    assert_eq!(calls[0].signed_by, "AKIDFROMPROFILE", "the profile's keys");
    assert_eq!(
        calls[0].tags()[0].1,
        "arn:aws:eks:eu-central-1:111122223333:cluster/kind",
        "the profile's region"
    );
    // A ServiceAccount EKS has no association for: 404, no STS call.
    let other = "eyJhbGciOiJSUzI1NiJ9.profile.other-token";
    kube.token_reviews()
        .add(other, PodToken::pod("team-a", "orders", "orders-1"));
    let (status, _) = get(addr, "/v1/credentials", &addr.to_string(), Some(other)).await;
    assert_eq!(status, 404);
    assert_eq!(sts.assume_role_calls().len(), 1);
    drop(guard);
    let _ = child.wait();
}

#[tokio::test]
async fn trust_policy_trusts_the_agent_only_for_one_service_account() {
    let sts = RecordingSts::issuing(Duration::from_secs(3600)).await;
    let dir = tempfile::tempdir().unwrap();
    let run = |principal: Option<&str>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_pod-identity-webhook"));
        command
            .args(["agent", "trust-policy"])
            .args(["--role-arn", "arn:aws:iam::111122223333:role/carts"])
            .args(["--namespace", "team-a", "--service-account", "carts"])
            .args(["--cluster-name", "kind"])
            .env_clear()
            .env("HOME", dir.path())
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "AKIDFROMTHEENV")
            .env("AWS_SECRET_ACCESS_KEY", "agent-secret-from-env")
            .env("AWS_ENDPOINT_URL_STS", &sts.endpoint);
        if let Some(p) = principal {
            command.args(["--agent-principal", p]);
        }
        command
    };

    // Without --agent-principal: who the AWS environment's credentials are (GetCallerIdentity).
    let out = output(run(None)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let policy: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let statement = &policy["Statement"][0];
    assert_eq!(
        statement["Principal"]["AWS"],
        "arn:aws:iam::111122223333:user/pod-identity-agent"
    );
    assert_eq!(
        statement["Action"],
        serde_json::json!(["sts:AssumeRole", "sts:TagSession"])
    );
    assert_eq!(
        statement["Condition"]["StringEquals"],
        serde_json::json!({
            "aws:RequestTag/eks-cluster-name": "kind",
            "aws:RequestTag/kubernetes-namespace": "team-a",
            "aws:RequestTag/kubernetes-service-account": "carts",
        })
    );
    assert!(
        stderr.contains("aws iam update-assume-role-policy --role-name carts"),
        "{stderr}"
    );
    assert_eq!(
        sts.calls()
            .iter()
            .filter(|c| c.action() == "GetCallerIdentity")
            .count(),
        1
    );
    assert_eq!(sts.calls()[0].signed_by, "AKIDFROMTHEENV");

    // An assumed role (the node's instance role, IRSA) is trusted through its role.
    let out = output(run(Some("arn:aws:iam::111122223333:role/node"))).await;
    assert!(out.status.success());
    let policy: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        policy["Statement"][0]["Principal"]["AWS"],
        "arn:aws:iam::111122223333:role/node"
    );
    assert_eq!(sts.calls().len(), 1, "--agent-principal asks STS nothing");
}

/// `*` and account roots would let any principal (of any account, or of the account) assume the
/// role, guarded only by session tags the caller sets itself: refused unless asked for, and
/// then said on stderr.
#[tokio::test]
async fn trust_policy_refuses_broad_principals_unless_allowed_and_then_warns() {
    let run = |principal: &str, allow: bool| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_pod-identity-webhook"));
        command
            .args(["agent", "trust-policy"])
            .args(["--role-arn", "arn:aws:iam::111122223333:role/carts"])
            .args(["--namespace", "team-a", "--service-account", "carts"])
            .args(["--agent-principal", principal])
            .env_clear()
            .env("AWS_EC2_METADATA_DISABLED", "true");
        if allow {
            command.arg("--allow-broad-principal");
        }
        command
    };
    for (principal, says) in [
        ("*", "any AWS principal of any account"),
        (
            "arn:aws:iam::123456789012:root",
            "every user and role of account 123456789012",
        ),
        (
            "123456789012",
            "every user and role of account 123456789012",
        ),
        ("arn:aws:iam::*:root", "any AWS principal of any account"),
    ] {
        let started = std::time::Instant::now();
        let out = output(run(principal, false)).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!("{principal}: refused in {:?}", started.elapsed());
        assert!(!out.status.success(), "{principal}: {stderr}");
        assert!(out.stdout.is_empty(), "{principal}: no policy printed");
        assert!(stderr.contains("refusing to trust principal"), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
        assert!(stderr.contains("--allow-broad-principal"), "{stderr}");

        let out = output(run(principal, true)).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{principal}: {stderr}");
        let policy: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(policy["Statement"][0]["Principal"]["AWS"], principal);
        assert!(
            stderr.contains("warning: --allow-broad-principal"),
            "{stderr}"
        );
        assert!(stderr.contains(says), "{stderr}");
    }
    // One user or role needs no flag and gets no warning.
    let out = output(run("arn:aws:iam::123456789012:role/root", false)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
}

#[tokio::test]
async fn botocore_refreshes_credentials_through_its_container_provider() {
    let sts = RecordingSts::issuing(Duration::from_secs(8)).await;
    let h = Harness::start(&sts.endpoint, refresh_short_lived).await;
    // botocore's refreshable credentials, as every boto3 client holds them: credentials this
    // short-lived are fetched again on each use, and must change once the agent refreshed.
    let script = "
import sys, time, botocore.session
credentials = botocore.session.get_session().get_credentials()
print(credentials.method, flush=True)
keys = []
deadline = time.time() + 20
while len(keys) < 2 and time.time() < deadline:
    key = credentials.get_frozen_credentials().access_key
    if key not in keys:
        keys.append(key)
    time.sleep(0.2)
print(' '.join(keys))
";
    let stdout = botocore(&h, script, &[]).await;
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("container-role"), "{stdout}");
    let keys: Vec<&str> = lines.next().unwrap_or("").split(' ').collect();
    assert_eq!(
        keys.len(),
        2,
        "botocore saw refreshed credentials: {stdout}"
    );
    assert!(
        keys.iter().all(|k| k.starts_with("ASIARECORDED")),
        "{stdout}"
    );
}
