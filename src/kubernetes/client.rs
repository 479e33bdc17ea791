//! The Kubernetes client, built one way for every command: `--kubeconfig` when given, else the
//! pod's own ServiceAccount in a pod, else (for the tools a person runs) kubectl's places; every
//! client identifies itself as this program.

use std::path::Path;

use kube::{Client, Config};

/// Why no client could be built. Each message names the file or what to give. The causes are
/// kept typed but not chained as `source`: the message already quotes them, once.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("cannot read kubeconfig {path}: {error}")]
    Kubeconfig {
        path: String,
        error: kube::config::KubeconfigError,
    },
    #[error("cannot build a Kubernetes client: {0}")]
    InCluster(kube::config::InClusterError),
    #[error("cannot build a Kubernetes client: {0}")]
    Client(kube::Error),
    /// Kubectl's places had no cluster either ([`Otherwise::Kubectl`]).
    #[error("{0}")]
    NotFound(kube::config::InferConfigError),
}

/// How the webhook reaches the Kubernetes API.
pub enum ClusterAccess {
    /// A client, and where its configuration came from (for the start-up log).
    Client(Client, String),
    /// No kubeconfig given and not running in a pod: associations file only.
    None,
}

/// Where to look without `--kubeconfig`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Otherwise {
    /// In a pod, its ServiceAccount; elsewhere no cluster (docs/contract.md §6: the webhook and
    /// `check` run on the associations file alone).
    InCluster,
    /// In a pod, its ServiceAccount; elsewhere `$KUBECONFIG` or `~/.kube/config` (`migrate`).
    InClusterThenKubectl,
    /// As kubectl looks: `$KUBECONFIG`, `~/.kube/config`, then in-cluster (`audit`).
    Kubectl,
}

/// The `User-Agent` of every request (the API server's audit log names the caller).
const USER_AGENT: &str = concat!("pod-identity-webhook/", env!("CARGO_PKG_VERSION"));

/// A client for `kubeconfig` when given, else as `otherwise` says.
pub async fn connect(
    kubeconfig: Option<&Path>,
    otherwise: Otherwise,
) -> Result<ClusterAccess, KubeError> {
    connect_retrying(kubeconfig, otherwise, true).await
}

/// [`connect`], without the client's own retries of 429, 503 and 504: for calls whose refusal is
/// an answer to report (an eviction a PodDisruptionBudget forbids answers 429 with a
/// `Retry-After`), not a reason to wait and ask again.
pub async fn connect_without_retries(
    kubeconfig: Option<&Path>,
    otherwise: Otherwise,
) -> Result<ClusterAccess, KubeError> {
    connect_retrying(kubeconfig, otherwise, false).await
}

async fn connect_retrying(
    kubeconfig: Option<&Path>,
    otherwise: Otherwise,
    retry: bool,
) -> Result<ClusterAccess, KubeError> {
    let in_pod = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    let (config, from) = match (kubeconfig, otherwise) {
        (Some(path), _) => (
            from_file(path).await?,
            format!("kubeconfig {}", path.display()),
        ),
        (None, Otherwise::InCluster | Otherwise::InClusterThenKubectl) if in_pod => (
            Config::incluster().map_err(KubeError::InCluster)?,
            "in-cluster service account".to_string(),
        ),
        (None, Otherwise::InCluster) => return Ok(ClusterAccess::None),
        (None, Otherwise::InClusterThenKubectl | Otherwise::Kubectl) => (
            Config::infer().await.map_err(KubeError::NotFound)?,
            "kubectl's configuration".to_string(),
        ),
    };
    let mut config = config;
    config.default_retry = retry;
    Ok(ClusterAccess::Client(client(config)?, from))
}

async fn from_file(path: &Path) -> Result<Config, KubeError> {
    let failed = |error| KubeError::Kubeconfig {
        path: path.display().to_string(),
        error,
    };
    let kc = kube::config::Kubeconfig::read_from(path).map_err(failed)?;
    Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(failed)
}

fn client(mut config: Config) -> Result<Client, KubeError> {
    config.headers.push((
        hyper::header::USER_AGENT,
        hyper::header::HeaderValue::from_static(USER_AGENT),
    ));
    Client::try_from(config).map_err(KubeError::Client)
}
