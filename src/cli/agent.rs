//! `agent`, `agent setup-link` and `agent trust-policy` (docs/contract.md §9): their flags (each
//! serving flag also reads an environment variable, `POD_IDENTITY_AGENT_…`, so the DaemonSet can
//! set them either way), the settings they describe, and their runs.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::Prepared;
use crate::agent::credentials::CHAINED_SESSION_MAX;
use crate::agent::server::{ConnLimits, RateLimit};
use crate::agent::sts::{AwsSts, StsSettings};
use crate::agent::{AgentSettings, DEFAULT_ADMIN_LISTEN, trust};
use crate::identity::eks_settings::EksSettings;
use crate::telemetry::logging::LogFormat;

/// Flags that do not describe settings the agent can run with.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    #[error("--cluster-name is required (it names the cluster in session tags and session names)")]
    NoClusterName,
    #[error("--session-duration must be between 15m and 12h (STS limits)")]
    SessionDuration,
    #[error(
        "--refresh-before ({refresh_before}) must be shorter than the credentials' lifetime ({lifetime}: --session-duration, at most 1h for an association's target role): otherwise every answer starts a refresh"
    )]
    RefreshBefore {
        refresh_before: humantime::FormattedDuration,
        lifetime: humantime::FormattedDuration,
    },
    /// Quoted, not chained (it would be printed twice).
    #[error("--config: {0}")]
    Config(String),
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// Quoted, not chained as `source` (it would be printed twice).
    #[error("invalid arguments: {0} (see `pod-identity-webhook agent --help`)")]
    Args(ArgsError),
    #[error(transparent)]
    Start(#[from] crate::agent::AgentStartError),
    #[cfg(target_os = "linux")]
    #[error("setup-link: {0}")]
    Link(#[from] crate::agent::link::LinkError),
    #[error("setup-link works on Linux only")]
    NotLinux,
    #[error("cannot tell the agent's principal (give --agent-principal): {0}")]
    Principal(String),
    #[error(
        "refusing to trust principal {shown}: {broad}; give the agent's own user or role ARN (--agent-principal), or --allow-broad-principal if that is really meant"
    )]
    BroadPrincipal {
        shown: String,
        broad: trust::BroadPrincipal,
    },
}

impl AgentArgs {
    /// The settings (invalid flags are an error before anything starts), then the action.
    pub fn prepare(self) -> Result<Prepared, CommandError> {
        let done = |r: Result<(), CommandError>| r.map(|()| ExitCode::SUCCESS).map_err(Into::into);
        Ok(match self.action {
            Some(AgentAction::SetupLink(link)) => {
                let format = link.log_format;
                Prepared::new(async move { done(setup_link(&link).await) }).logging(format)
            }
            Some(AgentAction::TrustPolicy(t)) => {
                Prepared::new(async move { done(trust_policy(&t).await) })
            }
            None => {
                let settings = self.run.settings().map_err(CommandError::Args)?;
                let format = self.run.log_format;
                let link = self.run.setup_link.then(|| LinkArgs {
                    interface: crate::agent::link_name().into(),
                    ipv4: "169.254.170.23".parse().expect("valid"),
                    ipv6: "fd00:ec2::23".parse().expect("valid"),
                    no_ipv6: false,
                    log_format: format,
                });
                Prepared::new(async move {
                    done(
                        async {
                            if let Some(link) = link {
                                setup_link(&link).await?;
                            }
                            let running = crate::agent::start(settings).await?;
                            running.run_until(crate::startup::shutdown_signal()).await;
                            Ok(())
                        }
                        .await,
                    )
                })
                .logging(format)
            }
        })
    }
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AgentArgs {
    #[command(subcommand)]
    pub action: Option<AgentAction>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum AgentAction {
    /// Create the link-local interface the agent listens on (init container, NET_ADMIN).
    SetupLink(LinkArgs),
    /// Print the trust policy a role needs so the agent can assume it for one ServiceAccount.
    TrustPolicy(TrustArgs),
}

/// Serving flags (the default action).
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Cluster name: `eks-cluster-name` session tag, session names, and the EKS cluster whose
    /// associations are read when no --associations file is given.
    #[arg(long, env = "POD_IDENTITY_AGENT_CLUSTER_NAME", value_name = "NAME")]
    pub cluster_name: Option<String>,
    /// `eks-cluster-arn` session tag [default: arn:aws:eks:REGION:ACCOUNT:cluster/NAME, ACCOUNT
    /// being the agent's own].
    #[arg(long, env = "POD_IDENTITY_AGENT_CLUSTER_ARN", value_name = "ARN")]
    pub cluster_arn: Option<String>,
    /// Address to serve credentials on; repeatable
    /// [default: 169.254.170.23:80 and [fd00:ec2::23]:80].
    #[arg(
        long = "bind",
        env = "POD_IDENTITY_AGENT_BIND",
        value_delimiter = ',',
        value_name = "ADDR"
    )]
    pub binds: Vec<SocketAddr>,
    /// Plain-HTTP admin endpoint: /livez /readyz /metrics.
    #[arg(long, env = "POD_IDENTITY_AGENT_ADMIN_LISTEN", default_value = DEFAULT_ADMIN_LISTEN, value_name = "ADDR")]
    pub admin_listen: SocketAddr,
    /// Associations file (YAML/JSON, docs/contract.md §7), for clusters without EKS.
    #[arg(long, env = "POD_IDENTITY_AGENT_ASSOCIATIONS", value_name = "FILE")]
    pub associations: Option<PathBuf>,
    /// The webhook's configuration file: its policy.namespaces[].allowedRoleArns bound the
    /// associations file's pattern entries as at admission (read at start).
    #[arg(long, env = "POD_IDENTITY_AGENT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// EKS API endpoint override (with no --associations file).
    #[arg(long, env = "POD_IDENTITY_AGENT_EKS_ENDPOINT", value_name = "URL")]
    pub eks_endpoint: Option<String>,
    /// Kubeconfig for TokenReviews; in-cluster configuration when running in a pod.
    #[arg(long, env = "POD_IDENTITY_AGENT_KUBECONFIG", value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// AWS region of STS (and EKS) [default: from the AWS environment, else us-east-1].
    #[arg(long, env = "POD_IDENTITY_AGENT_REGION", value_name = "REGION")]
    pub region: Option<String>,
    /// STS endpoint (private endpoints, an STS stand-in); AWS_ENDPOINT_URL_STS works too.
    #[arg(long, env = "POD_IDENTITY_AGENT_STS_ENDPOINT", value_name = "URL")]
    pub sts_endpoint: Option<String>,
    /// Lifetime of the credentials (`DurationSeconds`; STS allows 15m to the role's maximum).
    #[arg(long, env = "POD_IDENTITY_AGENT_SESSION_DURATION", value_parser = humantime::parse_duration, default_value = "1h", value_name = "DURATION")]
    pub session_duration: Duration,
    /// Refresh cached credentials once fewer than this remain.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "15m", value_name = "DURATION")]
    pub refresh_before: Duration,
    /// Never hand out cached credentials with less than this left.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5m", value_name = "DURATION")]
    pub min_remaining: Duration,
    /// Longest a request waits for the Kubernetes API and STS before a 503.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1500ms", value_name = "DURATION")]
    pub request_timeout: Duration,
    /// Longest one TokenReview may take.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s", value_name = "DURATION")]
    pub token_review_timeout: Duration,
    /// Longest one STS call may take (background refreshes wait this long).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s", value_name = "DURATION")]
    pub sts_timeout: Duration,
    /// How long a reviewed token is trusted before it is reviewed again.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5m", value_name = "DURATION")]
    pub token_review_ttl: Duration,
    /// Memory bound of the credentials cache, in bytes.
    #[arg(long, default_value_t = 64 << 20, value_name = "BYTES")]
    pub cache_max_bytes: u64,
    /// Requests per second one client address may make (0: no limit).
    #[arg(
        long,
        env = "POD_IDENTITY_AGENT_RATE_LIMIT",
        default_value_t = 20,
        value_name = "N"
    )]
    pub rate_limit: u32,
    /// Burst above --rate-limit one client may make.
    #[arg(long, default_value_t = 60, value_name = "N")]
    pub rate_burst: u32,
    /// Most credential connections open at once; more wait.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub max_connections: usize,
    /// This node's name (the downward API's spec.nodeName): the startup taint is removed from it.
    #[arg(long, env = "NODE_NAME", value_name = "NAME")]
    pub node_name: Option<String>,
    /// Taint key removed from this node once the agent is ready (any effect); empty: none.
    #[arg(long, default_value = crate::agent::taint::DEFAULT_STARTUP_TAINT, value_name = "KEY")]
    pub startup_taint: String,
    /// Most credential connections one client address may hold open; more are closed at once,
    /// so one pod cannot take every slot (0: no per-address cap).
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub max_connections_per_address: usize,
    /// A request head must arrive within this; idle connections close after it.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s", value_name = "DURATION")]
    pub header_read_timeout: Duration,
    /// After SIGTERM, stay up unready this long before closing.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s", value_name = "DURATION")]
    pub shutdown_grace: Duration,
    /// Set up the link-local interface first (as `agent setup-link`; needs NET_ADMIN).
    #[arg(long)]
    pub setup_link: bool,
    /// Log format [default: auto: JSON unless stderr is a terminal].
    #[arg(
        long,
        env = "POD_IDENTITY_AGENT_LOG_FORMAT",
        value_enum,
        default_value = "auto",
        value_name = "FORMAT"
    )]
    pub log_format: LogFormat,
}

impl RunArgs {
    /// The settings these flags describe.
    pub fn settings(&self) -> Result<AgentSettings, ArgsError> {
        let cluster_name = self
            .cluster_name
            .clone()
            .filter(|c| !c.is_empty())
            .ok_or(ArgsError::NoClusterName)?;
        let mut s = AgentSettings::new(cluster_name.clone());
        if !self.binds.is_empty() {
            s.binds = self.binds.clone();
        }
        s.admin_listen = self.admin_listen;
        s.associations_file = self.associations.clone();
        if let Some(path) = &self.config {
            s.policy = Some(std::sync::Arc::new(policy_of(path)?));
        }
        if self.associations.is_none() {
            let mut eks = EksSettings::new(cluster_name);
            eks.region = self.region.clone();
            eks.endpoint = self.eks_endpoint.clone();
            s.eks = Some(eks);
        }
        s.kubeconfig = self.kubeconfig.clone();
        s.sts = StsSettings {
            region: self.region.clone(),
            endpoint: self.sts_endpoint.clone(),
            timeout: Some(self.sts_timeout),
        };
        let c = &mut s.credentials;
        c.cluster_arn = self.cluster_arn.clone();
        if !(900..=43_200).contains(&self.session_duration.as_secs()) {
            return Err(ArgsError::SessionDuration);
        }
        let lifetime = self.session_duration.min(CHAINED_SESSION_MAX);
        if self.refresh_before >= lifetime {
            return Err(ArgsError::RefreshBefore {
                refresh_before: humantime::format_duration(self.refresh_before),
                lifetime: humantime::format_duration(lifetime),
            });
        }
        c.session_duration = self.session_duration;
        c.refresh_before = self.refresh_before;
        c.min_remaining = self.min_remaining.min(self.refresh_before);
        c.review_ttl = self.token_review_ttl;
        c.max_cache_bytes = self.cache_max_bytes;
        c.refresh_timeout = self.sts_timeout * 2;
        s.request_timeout = self.request_timeout;
        s.review_timeout = self.token_review_timeout.min(self.request_timeout);
        s.rate_limit = (self.rate_limit > 0).then_some(RateLimit {
            per_second: self.rate_limit,
            burst: self.rate_burst,
        });
        s.max_connections = self.max_connections.max(1);
        s.max_connections_per_address = self.max_connections_per_address;
        s.node_name = self.node_name.clone().filter(|n| !n.is_empty());
        s.startup_taint = Some(self.startup_taint.clone()).filter(|k| !k.is_empty());
        s.conn_limits = ConnLimits {
            header_read: self.header_read_timeout,
            ..ConnLimits::default()
        };
        s.shutdown_grace = self.shutdown_grace;
        Ok(s)
    }
}

/// The policy of the webhook's configuration file at `path` (`agent --config`).
pub fn policy_of(path: &std::path::Path) -> Result<crate::policy::Policy, ArgsError> {
    let fail = |e: &dyn std::fmt::Display| ArgsError::Config(e.to_string());
    // Read as the offline commands read it: the listener and certificate settings do not
    // concern the agent.
    let settings = crate::audit::run::offline_settings(Some(path), |_| {}).map_err(|e| fail(&e))?;
    crate::policy::Policy::compile(&settings.policy, settings.namespace.as_deref())
        .map_err(|e| fail(&e))
}

#[derive(Debug, Args)]
pub struct LinkArgs {
    /// Interface name.
    #[arg(long, default_value = "pod-id-link0", value_name = "NAME")]
    pub interface: String,
    /// IPv4 address (as /32).
    #[arg(long, default_value = "169.254.170.23", value_name = "IP")]
    pub ipv4: Ipv4Addr,
    /// IPv6 address (as /128); skipped with a log line where IPv6 is disabled.
    #[arg(long, default_value = "fd00:ec2::23", value_name = "IP")]
    pub ipv6: Ipv6Addr,
    /// Do not add the IPv6 address.
    #[arg(long)]
    pub no_ipv6: bool,
    /// Log format [default: auto: JSON unless stderr is a terminal].
    #[arg(long, value_enum, default_value = "auto", value_name = "FORMAT")]
    pub log_format: LogFormat,
}

#[derive(Debug, Args)]
pub struct TrustArgs {
    /// The association's role (named in the `aws iam` command printed to stderr).
    #[arg(long, value_name = "ARN")]
    pub role_arn: String,
    /// The ServiceAccount's namespace (the `kubernetes-namespace` session tag the policy requires).
    #[arg(long, value_name = "NS")]
    pub namespace: String,
    /// The ServiceAccount (the `kubernetes-service-account` session tag the policy requires).
    #[arg(long, value_name = "NAME")]
    pub service_account: String,
    /// The agent's own IAM principal (user or role ARN) [default: who the AWS environment's
    /// credentials belong to, by STS GetCallerIdentity].
    #[arg(long, value_name = "ARN")]
    pub agent_principal: Option<String>,
    /// Also require the `eks-cluster-name` tag to be this cluster.
    #[arg(long, value_name = "NAME")]
    pub cluster_name: Option<String>,
    /// AWS region for GetCallerIdentity when --agent-principal is not given [default: from the
    /// AWS environment, else us-east-1].
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
    /// STS endpoint for that call (private endpoints, an STS stand-in).
    #[arg(long, value_name = "URL")]
    pub sts_endpoint: Option<String>,
    /// Accept `*` or an account root (`arn:aws:iam::ACCOUNT:root`, a bare account id) as the
    /// principal: the session tags, which the caller sets itself, are then the only guard
    /// (a warning on stderr says so).
    #[arg(long)]
    pub allow_broad_principal: bool,
}

#[cfg(target_os = "linux")]
async fn setup_link(args: &LinkArgs) -> Result<(), CommandError> {
    use crate::agent::link::{LinkPlan, log_report, setup};
    let plan = LinkPlan {
        name: args.interface.clone(),
        ipv4: args.ipv4,
        ipv6: (!args.no_ipv6).then_some(args.ipv6),
    };
    let report = setup(&plan).await?;
    log_report(&plan, &report);
    Ok(())
}

#[cfg(not(target_os = "linux"))]
async fn setup_link(_: &LinkArgs) -> Result<(), CommandError> {
    Err(CommandError::NotLinux)
}

async fn trust_policy(args: &TrustArgs) -> Result<(), CommandError> {
    let principal = match &args.agent_principal {
        Some(p) => p.clone(),
        None => {
            let sts = AwsSts::connect(&StsSettings {
                region: args.region.clone(),
                endpoint: args.sts_endpoint.clone(),
                timeout: Some(std::time::Duration::from_secs(5)),
            })
            .await;
            let arn = sts
                .caller_arn()
                .await
                .map_err(|e| CommandError::Principal(e.to_string()))?;
            trust::principal_of_caller(&arn)
        }
    };
    if let Some(broad) = trust::broad_principal(&principal) {
        if !args.allow_broad_principal {
            return Err(CommandError::BroadPrincipal {
                shown: crate::shown::shown(&principal).into_owned(),
                broad,
            });
        }
        eprintln!(
            "warning: --allow-broad-principal: this policy trusts {}: {broad}; only the session-tag conditions stand between another principal and role {}",
            crate::shown::Shown(&principal),
            trust::role_name(&args.role_arn)
        );
    }
    let policy = trust::trust_policy(
        &principal,
        &args.namespace,
        &args.service_account,
        args.cluster_name.as_deref(),
    );
    println!(
        "{}",
        serde_json::to_string_pretty(&policy).expect("JSON serialises")
    );
    eprintln!(
        "apply it with: aws iam update-assume-role-policy --role-name {} --policy-document file://trust.json",
        trust::role_name(&args.role_arn)
    );
    eprintln!(
        "(the association for {}/{} must keep session tags on: without them these conditions never match)",
        args.namespace, args.service_account
    );
    Ok(())
}
