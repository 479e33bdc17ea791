//! Arguments of `check` and `audit`, and their wiring: settings from the same file `serve`
//! reads, identity sources, the decisions, the output.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, ValueEnum};

use super::check::{self, CheckReport, exit};
use super::decide::Decider;
use super::manifest::{self, Input};
use super::render;
use super::sources::{self, ListedServiceAccounts, SourceError};
use crate::admission::Mutator;
use crate::admission::validate::Validator;
use crate::identity::kube::{KubeServiceAccounts, StoreSettings};
use crate::identity::{Identities, ServiceAccountStore};
use crate::kubernetes::client::{self as kube_client, ClusterAccess, KubeError, Otherwise};
use crate::namespaces::{KubeNamespaces, NamespaceStore};
use crate::policy::Policy;
use crate::settings::{self, EksSettings, Flags, Settings, SettingsError, TlsSettings};

/// Why `check` or `audit` could not run at all (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Policy(#[from] crate::policy::InvalidPolicy),
    #[error(transparent)]
    Sources(#[from] SourceError),
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum CheckOutput {
    #[default]
    Text,
    Json,
}

/// Where the EKS API is, for `--cluster-name` (`check` and `audit`).
#[derive(Debug, Args)]
pub struct EksApiArgs {
    /// AWS region of the EKS API.
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
    /// EKS API endpoint override.
    #[arg(long, value_name = "URL")]
    pub eks_endpoint: Option<String>,
}

impl EksApiArgs {
    /// The flags given win over the config file's.
    fn apply(&self, eks: &mut EksSettings) {
        if self.region.is_some() {
            eks.region = self.region.clone();
        }
        if self.eks_endpoint.is_some() {
            eks.endpoint = self.eks_endpoint.clone();
        }
    }
}

/// `check` flags.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Manifest file, directory (read recursively: .yaml, .yml, .json) or `-` for stdin;
    /// repeatable. Multi-document YAML, JSON and `List` kinds are read.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE|DIR|-",
        required_unless_present = "files"
    )]
    pub inputs: Vec<String>,
    /// More manifests, as with -f (so pre-commit can append the changed files).
    #[arg(value_name = "FILE")]
    pub files: Vec<String>,
    /// The webhook's configuration file (docs/contract.md §8): policy, injection settings, associations file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Associations file (wins over the config file's associationsFile).
    #[arg(long, value_name = "FILE")]
    pub associations: Option<PathBuf>,
    /// ServiceAccounts that exist already (e.g. `kubectl get sa -A -o yaml`): file, directory
    /// or `-`; repeatable. ServiceAccounts in the checked manifests win over these.
    #[arg(long = "service-accounts", value_name = "FILE|DIR|-")]
    pub service_accounts: Vec<String>,
    /// Also read ServiceAccounts and namespace labels from this cluster.
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// Also read Pod Identity associations from this EKS cluster (AWS credentials from the
    /// environment).
    #[arg(long, value_name = "NAME")]
    pub cluster_name: Option<String>,
    #[command(flatten)]
    pub eks_api: EksApiArgs,
    /// Namespace of objects that name none (as kubectl does).
    #[arg(short = 'n', long, value_name = "NS", default_value = "default")]
    pub namespace: String,
    /// Print the JSON Patch `/mutate` would return for each pod.
    #[arg(long)]
    pub show_patch: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = CheckOutput::Text)]
    pub output: CheckOutput,
    /// Largest manifest file (or stdin) read, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = manifest::DEFAULT_MAX_FILE_BYTES)]
    pub max_file_bytes: u64,
}

/// Settings for the offline commands: the config file `serve` reads, then `adjust`. The
/// listener and certificate settings do not matter here, so a config without (or with) them is
/// accepted as it is.
pub fn offline_settings(
    config: Option<&Path>,
    adjust: impl FnOnce(&mut Settings),
) -> Result<Settings, SettingsError> {
    let text = match config {
        Some(path) => settings::read_config_file(path)?,
        None => String::new(),
    };
    Settings::parse_then(config, &text, Flags::default(), |s| {
        s.tls = TlsSettings {
            self_signed: true,
            ..TlsSettings::default()
        };
        adjust(s);
    })
}

impl CheckArgs {
    fn settings(&self) -> Result<Settings, SettingsError> {
        offline_settings(self.config.as_deref(), |s| {
            if let Some(path) = &self.associations {
                s.associations_file = Some(path.clone());
            }
            // A CI job reads the live cluster or EKS only when asked on its command line: the
            // config file of a running webhook names both, and a pipeline has neither.
            s.kubeconfig = self.kubeconfig.clone();
            match &self.cluster_name {
                None => s.eks = EksSettings::default(),
                Some(name) => {
                    s.eks.cluster_name = name.clone();
                    self.eks_api.apply(&mut s.eks);
                }
            }
        })
    }
}

/// The cluster's ServiceAccounts and namespace labels, when a kubeconfig is given.
async fn cluster_stores(
    kubeconfig: Option<&Path>,
    annotation_prefix: &str,
    stop: &tokio_util::sync::CancellationToken,
) -> Result<Option<(Arc<dyn ServiceAccountStore>, Arc<dyn NamespaceStore>)>, CommandError> {
    let Some(path) = kubeconfig else {
        return Ok(None);
    };
    let ClusterAccess::Client(client, _) = kube_client::connect(Some(path), Otherwise::InCluster)
        .await
        .map_err(|e| SourceError::Kube(e.to_string()))?
    else {
        return Ok(None);
    };
    let settings = StoreSettings::new(annotation_prefix.to_string());
    let sas = KubeServiceAccounts::start(client.clone(), settings.clone(), stop.clone());
    let namespaces = KubeNamespaces::start(
        client,
        settings.live_get_timeout,
        settings.ready_timeout,
        stop.clone(),
    );
    // Decide only on a synced view: a ServiceAccount not listed yet is not "no identity".
    let deadline = tokio::time::Instant::now() + settings.ready_timeout;
    while !(sas.ready() && namespaces.ready()) {
        if tokio::time::Instant::now() >= deadline {
            return Err(SourceError::Kube(format!(
                "ServiceAccounts and Namespaces of {} not listed within {:?}",
                path.display(),
                settings.ready_timeout
            ))
            .into());
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Ok(Some((sas, namespaces)))
}

/// The webhook's `/validate` and `/mutate` on `settings`' policy and injection settings, with
/// `identities` and the namespace labels of `namespaces`.
fn webhook_decisions(
    settings: &Settings,
    identities: Identities,
    namespaces: Arc<dyn NamespaceStore>,
) -> Result<(Validator, Mutator), CommandError> {
    let policy = Policy::compile(&settings.policy, settings.namespace.as_deref())?
        .with_associations_file(settings.associations_file.clone());
    let validator = Validator::new(policy, identities.clone()).with_namespaces(namespaces);
    // As in the webhook: the mutation reads the validator's policy (the role allowlist).
    let mutator =
        Mutator::new(settings.injection.clone(), identities).with_policy(validator.shared_policy());
    Ok((validator, mutator))
}

/// Runs `check`; the exit code is 0 clean, 1 denials, 2 unreadable input. Errors that stop it
/// before any decision are returned (the caller exits with 2).
pub async fn run_check(args: &CheckArgs, out: &mut impl Write) -> Result<u8, CommandError> {
    let settings = args.settings()?;
    let prefix = settings.injection.annotation_prefix.clone();
    let inputs: Vec<Input> = args
        .inputs
        .iter()
        .chain(&args.files)
        .map(|a| Input::parse(a))
        .collect();
    let stdin_uses = args
        .inputs
        .iter()
        .chain(&args.files)
        .chain(&args.service_accounts)
        .filter(|a| *a == "-")
        .count();
    if stdin_uses > 1 {
        return Err(CommandError::Other(
            "`-` (stdin) can be given only once across -f and --service-accounts".into(),
        ));
    }
    let manifests = manifest::read_inputs(&inputs, args.max_file_bytes);
    let sa_inputs: Vec<Input> = args
        .service_accounts
        .iter()
        .map(|a| Input::parse(a))
        .collect();
    let existing = manifest::read_inputs(&sa_inputs, args.max_file_bytes);

    let stop = tokio_util::sync::CancellationToken::new();
    let _stop_on_return = stop.clone().drop_guard();
    let cluster = cluster_stores(settings.kubeconfig.as_deref(), &prefix, &stop).await?;

    let mut listed = ListedServiceAccounts::new();
    check::collect_service_accounts(&mut listed, &existing.objects, &args.namespace, &prefix);
    check::collect_service_accounts(&mut listed, &manifests.objects, &args.namespace, &prefix);
    let mut namespaces: Arc<dyn NamespaceStore> = Arc::new(sources::namespace_labels(
        manifests
            .objects
            .iter()
            .filter(|o| o.kind() == "Namespace")
            .map(|o| &o.object),
    ));
    if let Some((sas, live_namespaces)) = cluster {
        listed = listed.with_fallback(sas);
        namespaces = live_namespaces;
    }
    let associations = sources::association_sources(&settings).await?;
    let identities = sources::identities(&settings, associations, Arc::new(listed));

    let (validator, mutator) = webhook_decisions(&settings, identities, namespaces)?;
    let decider = Decider::new(&validator, &mutator);

    let mut report = CheckReport {
        objects: check::check_objects(
            &decider,
            &manifests.objects,
            &args.namespace,
            args.show_patch,
        )
        .await,
        errors: manifests.errors,
    };
    report.errors.extend(existing.errors);
    match args.output {
        CheckOutput::Text => render::check_text(&report, out)?,
        CheckOutput::Json => render::check_json(&report, out)?,
    }
    out.flush()?;
    Ok(report.exit_code())
}

/// Exit code for an error that stopped a command before any decision.
pub const SETUP_FAILED: u8 = exit::BAD_INPUT;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum AuditOutput {
    #[default]
    Table,
    Json,
}

/// `audit` flags.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The webhook's configuration file (docs/contract.md §8): policy, injection settings, associations
    /// file, EKS cluster.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Kubeconfig of the cluster [default: $KUBECONFIG, ~/.kube/config, or in-cluster].
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// Associations file (wins over the config file's associationsFile).
    #[arg(long, value_name = "FILE")]
    pub associations: Option<PathBuf>,
    /// EKS cluster whose Pod Identity associations to read (wins over eks.clusterName).
    #[arg(long, value_name = "NAME")]
    pub cluster_name: Option<String>,
    #[command(flatten)]
    pub eks_api: EksApiArgs,
    /// Objects per list request (`limit`; the rest follows by `continue`).
    #[arg(long, value_name = "N", default_value_t = super::cluster::PAGE_SIZE)]
    pub page_size: u32,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = AuditOutput::Table)]
    pub output: AuditOutput,
}

impl AuditArgs {
    fn settings(&self) -> Result<Settings, SettingsError> {
        offline_settings(self.config.as_deref(), |s| {
            if let Some(path) = &self.associations {
                s.associations_file = Some(path.clone());
            }
            if let Some(path) = &self.kubeconfig {
                s.kubeconfig = Some(path.clone());
            }
            if let Some(name) = &self.cluster_name {
                s.eks.cluster_name = name.clone();
            }
            self.eks_api.apply(&mut s.eks);
        })
    }
}

/// A client for `--kubeconfig`, else the usual places (`$KUBECONFIG`, `~/.kube/config`,
/// in-cluster), as kubectl finds its cluster.
async fn audit_client(kubeconfig: Option<&Path>) -> Result<kube::Client, SourceError> {
    match kube_client::connect(kubeconfig, Otherwise::Kubectl).await {
        Ok(ClusterAccess::Client(client, _)) => Ok(client),
        Ok(ClusterAccess::None) => Err(SourceError::Kube(format!(
            "no cluster in {}",
            kubeconfig.unwrap_or(Path::new("")).display()
        ))),
        Err(KubeError::NotFound(e)) => Err(SourceError::Kube(format!(
            "no cluster found (give --kubeconfig, or set KUBECONFIG): {e}"
        ))),
        Err(e) => Err(SourceError::Kube(e.to_string())),
    }
}

/// The decisions over `objects` with `settings`' policy and association sources; the
/// ServiceAccounts and namespace labels are the listed ones.
pub async fn audit_objects(
    settings: &Settings,
    associations: Vec<Arc<dyn crate::identity::AssociationSource>>,
    objects: &super::cluster::ClusterObjects,
) -> Result<super::findings::AuditReport, CommandError> {
    let prefix = &settings.injection.annotation_prefix;
    let mut listed = ListedServiceAccounts::new();
    for sa in &objects.service_accounts {
        let ns = sa["metadata"]["namespace"].as_str().unwrap_or_default();
        listed.insert(ns, sa, prefix);
    }
    let identities = sources::identities(settings, associations, Arc::new(listed));
    let namespaces = Arc::new(sources::namespace_labels(&objects.namespaces));
    let (validator, mutator) = webhook_decisions(settings, identities, namespaces)?;
    let decider = Decider::new(&validator, &mutator);
    Ok(super::findings::AuditReport {
        findings: super::findings::audit(&decider, objects).await,
        scanned: objects.counts(),
    })
}

/// Runs `audit`: exit code 0 nothing found, 1 findings; errors (exit 2) when it could not run.
pub async fn run_audit(args: &AuditArgs, out: &mut impl Write) -> Result<u8, CommandError> {
    use std::io::IsTerminal;
    let settings = args.settings()?;
    let client = audit_client(settings.kubeconfig.as_deref()).await?;
    let associations = sources::association_sources(&settings).await?;
    // Progress only for a person watching: never in a pipe or a CI log.
    let terminal = std::io::stderr().is_terminal();
    let objects = super::cluster::list_cluster(&client, args.page_size, |resource, n| {
        if terminal {
            eprint!("\r\x1b[Klisting {resource}: {n}");
        }
    })
    .await
    .map_err(|e| CommandError::Other(e.to_string()));
    if terminal {
        eprint!("\r\x1b[K");
    }
    let report = audit_objects(&settings, associations, &objects?).await?;
    match args.output {
        AuditOutput::Table => render::audit_table(&report, out)?,
        AuditOutput::Json => render::audit_json(&report, out)?,
    }
    out.flush()?;
    Ok(report.exit_code())
}
