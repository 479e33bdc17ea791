//! `pod-identity-webhook migrate [plan|apply|verify]`: flags, and the run that wires the real
//! clients (kube-rs, aws-sdk-iam, aws-sdk-eks or the associations file) into the steps.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use aws_sdk_eks::config::{BehaviorVersion, Region};
use clap::{Args, Subcommand};

use super::Prepared;

use crate::identity::eks_client::ClientTuning;
use crate::kubernetes::client::{ClusterAccess, KubeError, Otherwise, connect};
use crate::migrate::apply::{self, ApplyOptions};
use crate::migrate::aws::{EksTarget, FileTarget, IamRoles};
use crate::migrate::checks::CheckSettings;
use crate::migrate::cluster::KubeCluster;
use crate::migrate::render::{self, Output};
use crate::migrate::{AssociationTarget, Parts, Progress, ReadSettings, Scope, verify};

/// `migrate`: without a subcommand it plans.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct MigrateArgs {
    #[command(subcommand)]
    pub step: Option<Step>,
    #[command(flatten)]
    pub plan: PlanArgs,
}

#[derive(Debug, Subcommand)]
pub enum Step {
    /// Read only (the default): inventory and every check, one row per annotated ServiceAccount.
    Plan(PlanArgs),
    /// Carry out the plan (with --approve): trust policies, then associations; optional steps.
    Apply(ApplyArgs),
    /// After cut-over: pods still on IRSA, pods with both, ServiceAccounts still annotated.
    Verify(VerifyArgs),
}

/// Where to read from and what to cover.
#[derive(Debug, Args, Clone)]
pub struct Common {
    /// Kubeconfig [default: in-cluster in a pod, else $KUBECONFIG or ~/.kube/config].
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// Annotation prefix of the IRSA role annotation.
    #[arg(long, default_value = "eks.amazonaws.com", value_name = "PREFIX")]
    pub annotation_prefix: String,
    /// EKS cluster whose associations to read and create.
    #[arg(long, env = "POD_IDENTITY_WEBHOOK_CLUSTER_NAME", value_name = "NAME")]
    pub cluster_name: Option<String>,
    /// AWS region [default: from the AWS environment].
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
    /// EKS API endpoint override (AWS_ENDPOINT_URL_EKS works too).
    #[arg(long, value_name = "URL")]
    pub eks_endpoint: Option<String>,
    /// Associations file instead of EKS (clusters without EKS).
    #[arg(long, value_name = "FILE", conflicts_with = "cluster_name")]
    pub associations: Option<PathBuf>,
    /// Only these namespaces (repeatable).
    #[arg(long = "namespace", short = 'n', value_name = "NS")]
    pub namespaces: Vec<String>,
    /// Only these ServiceAccounts, `NAME` or `NAMESPACE/NAME` (repeatable).
    #[arg(long = "service-account", value_name = "SA")]
    pub service_accounts: Vec<String>,
    /// The cluster's AWS account [default: from EKS DescribeCluster].
    #[arg(long, value_name = "ACCOUNT_ID")]
    pub cluster_account: Option<String>,
    /// Trust policy size quota, if raised above IAM's default.
    #[arg(long, default_value_t = crate::migrate::trust::DEFAULT_SIZE_LIMIT, value_name = "CHARS")]
    pub trust_policy_limit: usize,
}

#[derive(Debug, Args, Clone)]
pub struct PlanArgs {
    #[command(flatten)]
    pub common: Common,
    /// table, json, aws (CLI commands) or associations (file entries).
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: Output,
}

#[derive(Debug, Args, Clone)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Make the changes (without it: print the plan, change nothing).
    #[arg(long)]
    pub approve: bool,
    /// Parallel-ServiceAccount variant: the selected ServiceAccounts were replaced by others
    /// (`writer` by `writer-pi`); no trust edit, no association, only the removal steps, and
    /// only for those no pod or workload uses any more.
    #[arg(long, requires = "service_accounts")]
    pub retire: bool,
    /// Remove the IRSA annotations of ServiceAccounts whose association is in place.
    #[arg(long)]
    pub remove_irsa_annotations: bool,
    /// Remove the ServiceAccount's OIDC (IRSA) trust from its role once no pod uses IRSA: only
    /// the statements of this cluster's OIDC provider (other clusters' trust is kept and listed).
    #[arg(long)]
    pub remove_oidc_trust: bool,
    /// This cluster's OIDC issuer URL, for --remove-oidc-trust [default: from EKS
    /// DescribeCluster, else the API server's /.well-known/openid-configuration; required when
    /// neither answers].
    #[arg(long, value_name = "URL", requires = "remove_oidc_trust")]
    pub oidc_issuer: Option<String>,
    /// Rollout-restart the Deployments/StatefulSets/DaemonSets of pods still on IRSA, one at a time.
    #[arg(long)]
    pub restart_workloads: bool,
    /// Longest wait for one rollout.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5m", value_name = "DURATION")]
    pub rollout_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum VerifyOutput {
    Table,
    Json,
}

#[derive(Debug, Args, Clone)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub common: Common,
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: VerifyOutput,
}

/// The real clients.
struct Clients {
    cluster: KubeCluster,
    target: Box<dyn AssociationTarget>,
    roles: IamRoles,
}

/// Why the clients could not be set up (exit 2).
#[derive(Debug, thiserror::Error)]
enum SetupError {
    #[error("no Kubernetes access: give --kubeconfig ({0})")]
    NoKubernetes(kube::config::InferConfigError),
    #[error("no Kubernetes access: give --kubeconfig")]
    NoCluster,
    #[error(transparent)]
    Kube(KubeError),
    #[error("no AWS region for the EKS API of cluster {0}: give --region or set AWS_REGION")]
    NoRegion(String),
    #[error("where do associations live? give --cluster-name (EKS) or --associations FILE")]
    NoTarget,
}

async fn clients(c: &Common) -> Result<Clients, SetupError> {
    crate::server::tls::install_default_provider();
    // Neither --kubeconfig nor in a pod: the usual ~/.kube/config.
    let client = match connect(c.kubeconfig.as_deref(), Otherwise::InClusterThenKubectl).await {
        Ok(ClusterAccess::Client(client, _)) => client,
        Ok(ClusterAccess::None) => return Err(SetupError::NoCluster),
        Err(KubeError::NotFound(e)) => return Err(SetupError::NoKubernetes(e)),
        Err(e) => return Err(SetupError::Kube(e)),
    };
    let tuning = ClientTuning::default();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(tuning.retry_config())
        .timeout_config(tuning.timeout_config());
    if let Some(region) = &c.region {
        loader = loader.region(Region::new(region.clone()));
    }
    let shared = loader.load().await;
    // IAM is global: any region signs, us-east-1 if none is set.
    let mut iam = aws_sdk_iam::config::Builder::from(&shared);
    if shared.region().is_none() {
        iam = iam.region(aws_sdk_iam::config::Region::new("us-east-1"));
    }
    let roles = IamRoles::new(aws_sdk_iam::Client::from_conf(iam.build()));
    let target: Box<dyn AssociationTarget> = match (&c.associations, &c.cluster_name) {
        (Some(path), _) => Box::new(FileTarget::new(path)),
        (None, Some(cluster)) => {
            if shared.region().is_none() {
                return Err(SetupError::NoRegion(cluster.clone()));
            }
            let mut eks = aws_sdk_eks::config::Builder::from(&shared);
            if let Some(url) = &c.eks_endpoint {
                eks = eks.endpoint_url(url);
            }
            Box::new(EksTarget::new(
                aws_sdk_eks::Client::from_conf(eks.build()),
                cluster,
            ))
        }
        (None, None) => {
            return Err(SetupError::NoTarget);
        }
    };
    Ok(Clients {
        cluster: KubeCluster::new(client, c.annotation_prefix.clone()),
        target,
        roles,
    })
}

fn read_settings(c: &Common, include_associated: bool) -> ReadSettings {
    ReadSettings {
        annotation_prefix: c.annotation_prefix.clone(),
        scope: Scope {
            namespaces: c.namespaces.clone(),
            service_accounts: c
                .service_accounts
                .iter()
                .map(|s| Scope::parse_service_account(s))
                .collect(),
        },
        cluster_account: c.cluster_account.clone(),
        include_associated,
    }
}

fn check_settings(c: &Common, target: &dyn AssociationTarget) -> CheckSettings {
    let mut s = CheckSettings::new(target.info());
    s.trust_size_limit = c.trust_policy_limit;
    s
}

/// Runs a migrate step; returns the exit code (0 nothing blocks, 1 something blocks, 2 could
/// not read).
pub async fn run(args: MigrateArgs, out: &mut dyn Write) -> i32 {
    let step = args.step.unwrap_or(Step::Plan(args.plan));
    let common = match &step {
        Step::Plan(p) => p.common.clone(),
        Step::Apply(a) => a.plan.common.clone(),
        Step::Verify(v) => v.common.clone(),
    };
    let c = match clients(&common).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let parts = Parts {
        cluster: &c.cluster,
        target: c.target.as_ref(),
        roles: &c.roles,
    };
    let progress = Progress::on_terminal();
    match step {
        Step::Plan(p) => {
            let read = read_settings(&p.common, false);
            match crate::migrate::plan(
                &parts,
                &read,
                &check_settings(&p.common, parts.target),
                &progress,
            )
            .await
            {
                Err(e) => {
                    eprintln!("error: could not read: {e}");
                    2
                }
                Ok((_, plan)) => {
                    let _ = out.write_all(render::render(&plan, p.output).as_bytes());
                    plan.exit_code()
                }
            }
        }
        Step::Apply(a) => {
            let read = read_settings(&a.plan.common, false);
            let checks = check_settings(&a.plan.common, parts.target);
            let (inv, plan) = match crate::migrate::plan(&parts, &read, &checks, &progress).await {
                Err(e) => {
                    eprintln!("error: could not read: {e}");
                    return 2;
                }
                Ok(x) => x,
            };
            if a.retire && !a.remove_irsa_annotations && !a.remove_oidc_trust {
                eprintln!(
                    "error: --retire only removes: give --remove-irsa-annotations and/or --remove-oidc-trust"
                );
                return 2;
            }
            let json = a.plan.output == Output::Json;
            if !json || !a.approve {
                let _ = out.write_all(render::render(&plan, a.plan.output).as_bytes());
            }
            if !a.approve {
                eprintln!("nothing changed: re-run with --approve to make these changes");
                return plan.exit_code();
            }
            // Known before any change: without it no OIDC trust can be removed safely.
            let oidc_issuer = if a.remove_oidc_trust {
                match crate::migrate::oidc_issuer(&parts, a.oidc_issuer.as_deref()).await {
                    Ok(issuer) => Some(issuer),
                    Err(e) => {
                        eprintln!("error: --remove-oidc-trust: {e}; nothing changed");
                        return 2;
                    }
                }
            } else {
                None
            };
            let options = ApplyOptions {
                retire: a.retire,
                remove_irsa_annotations: a.remove_irsa_annotations,
                remove_oidc_trust: a.remove_oidc_trust,
                oidc_issuer,
                restart_workloads: a.restart_workloads,
                rollout_timeout: a.rollout_timeout,
                trust_size_limit: a.plan.common.trust_policy_limit,
                ..ApplyOptions::default()
            };
            let summary = if json {
                // Changes as they are made on stderr; stdout holds one JSON document.
                let mut err = std::io::stderr();
                let s = apply::apply(&parts, &inv, &plan, &read, &options, &mut err).await;
                let doc = serde_json::json!({"plan": plan, "summary": s});
                let _ = writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&doc).unwrap_or_default()
                );
                s
            } else {
                let _ = writeln!(out);
                let s = apply::apply(&parts, &inv, &plan, &read, &options, out).await;
                let _ = out.write_all(apply::render_summary(&s).as_bytes());
                s
            };
            summary.exit_code(&plan)
        }
        Step::Verify(v) => {
            let read = read_settings(&v.common, true);
            match crate::migrate::read_inventory(&parts, &read, &progress).await {
                Err(e) => {
                    eprintln!("error: could not read: {e}");
                    2
                }
                Ok(inv) => {
                    let report = verify::verify(&inv);
                    let text = match v.output {
                        VerifyOutput::Table => verify::table(&report),
                        VerifyOutput::Json => format!(
                            "{}\n",
                            serde_json::to_string_pretty(&report).unwrap_or_default()
                        ),
                    };
                    let _ = out.write_all(text.as_bytes());
                    report.exit_code()
                }
            }
        }
    }
}

impl MigrateArgs {
    /// The `migrate` command: exit 0 nothing blocks, 1 something blocks, 2 could not read.
    pub fn prepare(self) -> Prepared {
        Prepared::new(async move {
            let mut stdout = std::io::stdout().lock();
            Ok(ExitCode::from(run(self, &mut stdout).await as u8))
        })
        .setup_failed(2)
    }
}
