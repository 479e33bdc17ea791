//! Command line (SPEC §6). Flag names of aws/amazon-eks-pod-identity-webhook are kept so a
//! cluster running it can switch images and keep its arguments.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{
    self, ConfigError, FailureMode, FailurePolicy, LogFormat, Overrides, PolicyMode, Settings,
};

#[derive(Debug, Parser)]
#[command(
    name = "pod-identity-webhook",
    version,
    about = "Admission webhook that injects EKS Pod Identity / IRSA credentials into pods and enforces identity policy"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the webhook (HTTPS admission endpoint + plain-HTTP admin endpoint).
    Serve(Box<ServeArgs>),
    /// Generate a CA and a serving certificate for the webhook Service.
    Certs(CertsArgs),
    /// Run the webhook's decisions on manifests (CI, pre-commit): exit 0 clean, 1 denied,
    /// 2 unreadable input.
    Check(Box<crate::audit::cli::CheckArgs>),
    /// Node agent serving Pod Identity credentials where EKS does not run (SPEC §9).
    Agent(Box<crate::agent::args::AgentArgs>),
}

fn duration(s: &str) -> Result<Duration, String> {
    config::parse_duration(s)
}

fn policy_mode(s: &str) -> Result<PolicyMode, String> {
    PolicyMode::parse(s).ok_or_else(|| format!("`{s}` is not one of enforce, warn, off"))
}

fn failure_policy(s: &str) -> Result<FailurePolicy, String> {
    match s {
        "open" => Ok(FailurePolicy::Open),
        "closed" => Ok(FailurePolicy::Closed),
        _ => Err(format!("`{s}` is not one of open, closed")),
    }
}

fn failure_mode(s: &str) -> Result<FailureMode, String> {
    match s {
        "stale" => Ok(FailureMode::Stale),
        "admitUnmutated" | "admit-unmutated" => Ok(FailureMode::AdmitUnmutated),
        _ => Err(format!("`{s}` is not one of stale, admit-unmutated")),
    }
}

/// `serve` flags. Each also reads an environment variable (`POD_IDENTITY_WEBHOOK_…`); flags and
/// environment win over the config file.
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// YAML configuration file (SPEC §8); unknown keys are errors.
    #[arg(long, env = "POD_IDENTITY_WEBHOOK_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// HTTPS admission endpoint [default: 0.0.0.0:8443].
    #[arg(long, env = "POD_IDENTITY_WEBHOOK_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Port of the HTTPS endpoint (alias of the --listen port, as in the IRSA webhook).
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    /// Plain-HTTP admin endpoint: /livez /readyz /metrics [default: 0.0.0.0:8080].
    #[arg(long, env = "POD_IDENTITY_WEBHOOK_ADMIN_LISTEN", value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// Port of the admin endpoint (alias, as in the IRSA webhook).
    #[arg(long, value_name = "PORT")]
    pub metrics_port: Option<u16>,

    /// PEM certificate chain; re-read when it changes.
    #[arg(long, env = "POD_IDENTITY_WEBHOOK_TLS_CERT", value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1); re-read when it changes.
    #[arg(long, env = "POD_IDENTITY_WEBHOOK_TLS_KEY", value_name = "PATH")]
    pub tls_key: Option<PathBuf>,
    /// Generate a throw-away CA and certificate at start-up (local runs).
    #[arg(long)]
    pub self_signed: bool,

    /// Associations file (YAML/JSON), for clusters without EKS and local runs.
    #[arg(long, env = "POD_IDENTITY_WEBHOOK_ASSOCIATIONS", value_name = "FILE")]
    pub associations: Option<PathBuf>,
    /// Kubeconfig for the Kubernetes API; in-cluster config when running in a pod.
    #[arg(long, env = "POD_IDENTITY_WEBHOOK_KUBECONFIG", value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The webhook's own namespace (always exempt from policy) [default: the pod's namespace].
    #[arg(long, env = "POD_NAMESPACE", value_name = "NS")]
    pub namespace: Option<String>,

    /// EKS cluster whose Pod Identity associations to read.
    #[arg(long, env = "POD_IDENTITY_WEBHOOK_CLUSTER_NAME", value_name = "NAME")]
    pub cluster_name: Option<String>,
    /// AWS region of the EKS API [default: from the AWS environment].
    #[arg(long, env = "POD_IDENTITY_WEBHOOK_REGION", value_name = "REGION")]
    pub region: Option<String>,
    /// EKS API endpoint override (private endpoints, tests).
    #[arg(long, env = "POD_IDENTITY_WEBHOOK_EKS_ENDPOINT", value_name = "URL")]
    pub eks_endpoint: Option<String>,
    /// Interval between full association syncs [default: 5m].
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    pub eks_sync_interval: Option<Duration>,
    /// How long a found association is trusted before revalidation [default: 10m].
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    pub eks_ttl: Option<Duration>,
    /// How long "no association" is trusted [default: 15s].
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    pub eks_negative_ttl: Option<Duration>,
    /// Longest an admission waits for EKS [default: 2s].
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    pub eks_max_wait: Option<Duration>,
    /// Turn ready after this long even without a first full sync [default: 60s].
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    pub eks_ready_timeout: Option<Duration>,
    /// Concurrent Describe calls during a full sync [default: 8].
    #[arg(long, value_name = "N")]
    pub eks_concurrency: Option<usize>,
    /// When EKS cannot answer in time: `stale` (use last known data) or `admit-unmutated`.
    #[arg(long, value_parser = failure_mode, value_name = "MODE")]
    pub eks_failure_mode: Option<FailureMode>,

    /// Region for AWS_DEFAULT_REGION/AWS_REGION in pods (IRSA webhook flag).
    #[arg(long, value_name = "REGION")]
    pub aws_default_region: Option<String>,
    /// Inject AWS_STS_REGIONAL_ENDPOINTS=regional (IRSA webhook flag).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub sts_regional_endpoint: Option<bool>,
    /// IRSA token audience [default: sts.amazonaws.com].
    #[arg(long, value_name = "AUDIENCE")]
    pub token_audience: Option<String>,
    /// IRSA token mount path [default: /var/run/secrets/eks.amazonaws.com/serviceaccount].
    #[arg(long, value_name = "PATH")]
    pub token_mount_path: Option<String>,
    /// Default token lifetime in seconds (minimum 600) [default: 86400].
    #[arg(long, value_name = "SECONDS")]
    pub token_expiration: Option<i64>,
    /// Annotation prefix [default: eks.amazonaws.com].
    #[arg(long, value_name = "PREFIX")]
    pub annotation_prefix: Option<String>,
    /// Pod Identity credentials URI [default: http://169.254.170.23/v1/credentials].
    #[arg(long, value_name = "URI")]
    pub container_credentials_full_uri: Option<String>,
    /// Pod Identity token audience [default: pods.eks.amazonaws.com].
    #[arg(long, value_name = "AUDIENCE")]
    pub container_credentials_audience: Option<String>,
    /// Pod Identity token mount path [default: /var/run/secrets/pods.eks.amazonaws.com/serviceaccount].
    #[arg(long, value_name = "PATH")]
    pub container_credentials_token_mount_path: Option<String>,
    /// Pod Identity token volume name [default: eks-pod-identity-token].
    #[arg(long, value_name = "NAME")]
    pub container_credentials_token_volume_name: Option<String>,
    /// Pod Identity token file name [default: eks-pod-identity-token].
    #[arg(long, value_name = "FILE")]
    pub container_credentials_token_path: Option<String>,
    /// IPv6 cluster: default the credentials URI to http://[fd00:ec2::23]/v1/credentials.
    #[arg(long)]
    pub ipv6: bool,

    /// Policy mode for namespaces no rule matches: enforce, warn or off [default: warn].
    #[arg(long, value_parser = policy_mode, value_name = "MODE")]
    pub policy_default_mode: Option<PolicyMode>,
    /// When identity sources cannot answer: open (admit) or closed (deny) [default: open].
    #[arg(long, value_parser = failure_policy, value_name = "POLICY")]
    pub failure_policy: Option<FailurePolicy>,

    /// Largest accepted request body in bytes [default: 6291456].
    #[arg(long, value_name = "BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Most HTTPS connections open at once; more wait until one closes [default: 4096].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// How often certificate, associations and config files are checked [default: 5s].
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    pub reload_interval: Option<Duration>,
    /// After SIGTERM, stay up unready this long before draining [default: 5s].
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    pub shutdown_grace: Option<Duration>,
    /// Time in-flight requests get to finish when draining [default: 20s].
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    pub drain_timeout: Option<Duration>,
    /// Log format [default: auto: JSON unless stderr is a terminal].
    #[arg(
        long,
        env = "POD_IDENTITY_WEBHOOK_LOG_FORMAT",
        value_enum,
        value_name = "FORMAT"
    )]
    pub log_format: Option<LogFormat>,

    /// Accepted for compatibility with the IRSA webhook's arguments; ignored.
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true")]
    pub in_cluster: Option<String>,
    /// Accepted for compatibility with the IRSA webhook's arguments; ignored.
    #[arg(long, hide = true)]
    pub service_name: Option<String>,
    /// Accepted for compatibility with the IRSA webhook's arguments; ignored.
    #[arg(long, hide = true)]
    pub tls_secret: Option<String>,
    /// Accepted for compatibility with the IRSA webhook's arguments; ignored.
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true")]
    pub logtostderr: Option<String>,
}

impl ServeArgs {
    /// Flags the IRSA webhook had that mean nothing here (logged once at start-up).
    pub fn ignored_flags(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.in_cluster.is_some() {
            v.push("--in-cluster");
        }
        if self.service_name.is_some() {
            v.push("--service-name");
        }
        if self.tls_secret.is_some() {
            v.push("--tls-secret");
        }
        if self.logtostderr.is_some() {
            v.push("--logtostderr");
        }
        v
    }

    pub fn overrides(&self) -> Overrides {
        Overrides {
            listen: self.listen,
            port: self.port,
            admin_listen: self.admin_listen,
            metrics_port: self.metrics_port,
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            self_signed: self.self_signed,
            associations: self.associations.clone(),
            kubeconfig: self.kubeconfig.clone(),
            namespace: self.namespace.clone(),
            cluster_name: self.cluster_name.clone(),
            region: self.region.clone(),
            eks_endpoint: self.eks_endpoint.clone(),
            aws_default_region: self.aws_default_region.clone(),
            sts_regional_endpoint: self.sts_regional_endpoint,
            token_audience: self.token_audience.clone(),
            token_mount_path: self.token_mount_path.clone(),
            token_expiration: self.token_expiration,
            annotation_prefix: self.annotation_prefix.clone(),
            container_credentials_full_uri: self.container_credentials_full_uri.clone(),
            container_credentials_audience: self.container_credentials_audience.clone(),
            container_credentials_token_mount_path: self
                .container_credentials_token_mount_path
                .clone(),
            container_credentials_token_volume_name: self
                .container_credentials_token_volume_name
                .clone(),
            container_credentials_token_path: self.container_credentials_token_path.clone(),
            ipv6: self.ipv6,
            policy_default_mode: self.policy_default_mode,
            failure_policy: self.failure_policy,
            max_body_bytes: self.max_body_bytes,
            max_connections: self.max_connections,
            reload_interval: self.reload_interval,
            shutdown_grace: self.shutdown_grace,
            drain_timeout: self.drain_timeout,
            log_format: self.log_format,
            eks_sync_interval: self.eks_sync_interval,
            eks_ttl: self.eks_ttl,
            eks_negative_ttl: self.eks_negative_ttl,
            eks_max_wait: self.eks_max_wait,
            eks_ready_timeout: self.eks_ready_timeout,
            eks_concurrency: self.eks_concurrency,
            eks_failure_mode: self.eks_failure_mode,
        }
    }

    /// Reads the config file (if any) and merges the flags over it.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let file = match &self.config {
            Some(path) => config::read_file_config(path)?,
            None => config::FileConfig::default(),
        };
        Settings::resolve(file, self.config.clone(), self.overrides())
    }
}

#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Directory for ca.crt, ca.key, tls.crt, tls.key.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Service name the API server calls.
    #[arg(long, default_value = "pod-identity-webhook")]
    pub service: String,
    /// Namespace of that Service.
    #[arg(long, default_value = "pod-identity-webhook")]
    pub namespace: String,
    /// Extra subject names (DNS names or IPs), e.g. --san 127.0.0.1 --san localhost.
    #[arg(long = "san", value_name = "NAME_OR_IP")]
    pub sans: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn irsa_webhook_arguments_are_accepted() {
        let cli = Cli::try_parse_from([
            "pod-identity-webhook",
            "serve",
            "--tls-cert=/c",
            "--tls-key=/k",
            "--port=443",
            "--metrics-port=9999",
            "--aws-default-region=us-west-2",
            "--sts-regional-endpoint=true",
            "--token-audience=sts.amazonaws.com",
            "--token-expiration=3600",
            "--annotation-prefix=eks.amazonaws.com",
            "--in-cluster=false",
            "--logtostderr",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve expected")
        };
        let s = args.settings().unwrap();
        assert_eq!(s.server.listen.port(), 443);
        assert_eq!(s.server.admin_listen.port(), 9999);
        assert!(s.injection.sts_regional_endpoint);
        assert_eq!(s.injection.token_expiration, 3600);
        assert_eq!(args.ignored_flags(), vec!["--in-cluster", "--logtostderr"]);
    }
}
