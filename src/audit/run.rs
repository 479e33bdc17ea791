//! Running `check` and `audit` on typed jobs ([`ManifestCheck`], [`ClusterAudit`]): settings from
//! the same file `serve` reads, identity sources, the decisions, the output. Their flags are in
//! `crate::cli::check` and `crate::cli::audit`.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use clap::ValueEnum;

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
use crate::settings::{self, Flags, Settings, SettingsError, TlsSettings};

/// Why `check` or `audit` could not run at all (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Policy(#[from] crate::policy::InvalidPolicy),
    #[error(transparent)]
    Sources(#[from] SourceError),
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
    #[error("`-` (stdin) can be given only once across -f and --service-accounts")]
    StdinTwice,
    /// The cluster could not be listed (quoted, not chained: printed once).
    #[error("{0}")]
    List(super::cluster::ListError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum CheckOutput {
    #[default]
    Text,
    Json,
}

/// A `check` run: the settings, the manifests and how to report.
#[derive(Debug)]
pub struct ManifestCheck {
    pub settings: Settings,
    /// Manifest files, directories or `-` (stdin), as given.
    pub inputs: Vec<String>,
    /// ServiceAccounts that exist already: files, directories or `-`.
    pub service_accounts: Vec<String>,
    /// Namespace of objects that name none.
    pub namespace: String,
    pub show_patch: bool,
    pub output: CheckOutput,
    /// Size, time and emptiness bounds on reading the manifests.
    pub limits: manifest::ReadLimits,
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

/// The cluster's ServiceAccounts and namespace labels, when a kubeconfig is given.
async fn cluster_stores(
    kubeconfig: Option<&Path>,
    annotation_prefix: &str,
    stop: &tokio_util::sync::CancellationToken,
) -> Result<Option<(Arc<dyn ServiceAccountStore>, Arc<dyn NamespaceStore>)>, RunError> {
    let Some(path) = kubeconfig else {
        return Ok(None);
    };
    let ClusterAccess::Client(client, _) = kube_client::connect(Some(path), Otherwise::InCluster)
        .await
        .map_err(SourceError::Kube)?
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
            return Err(SourceError::NotListed {
                kubeconfig: path.display().to_string(),
                waited: settings.ready_timeout,
            }
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
) -> Result<(Validator, Mutator), RunError> {
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
pub async fn run_check(job: &ManifestCheck, out: &mut impl Write) -> Result<u8, RunError> {
    let (args, settings) = (job, &job.settings);
    let prefix = settings.injection.annotation_prefix.clone();
    let inputs: Vec<Input> = args.inputs.iter().map(|a| Input::parse(a)).collect();
    let stdin_uses = args
        .inputs
        .iter()
        .chain(&args.service_accounts)
        .filter(|a| *a == "-")
        .count();
    if stdin_uses > 1 {
        return Err(RunError::StdinTwice);
    }
    let manifests = manifest::read_inputs(&inputs, &args.limits);
    let sa_inputs: Vec<Input> = args
        .service_accounts
        .iter()
        .map(|a| Input::parse(a))
        .collect();
    // An empty list of existing ServiceAccounts is a real answer (`kubectl get sa` of a new
    // cluster's namespace).
    let existing = manifest::read_inputs(
        &sa_inputs,
        &manifest::ReadLimits {
            allow_empty: true,
            ..args.limits
        },
    );

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
    let associations = sources::association_sources(settings).await?;
    let identities = sources::identities(settings, associations, Arc::new(listed));

    let (validator, mutator) = webhook_decisions(settings, identities, namespaces)?;
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

/// An `audit` run: the settings, the page size of the lists and how to report.
#[derive(Debug)]
pub struct ClusterAudit {
    pub settings: Settings,
    /// Objects per list request.
    pub page_size: u32,
    pub output: AuditOutput,
    /// `--repair` (evict or, with `--dry-run`, list): after the report.
    pub repair: Option<crate::audit::repair::RepairSettings>,
}

/// A client for `--kubeconfig`, else the usual places (`$KUBECONFIG`, `~/.kube/config`,
/// in-cluster), as kubectl finds its cluster.
async fn audit_client(kubeconfig: Option<&Path>, retry: bool) -> Result<kube::Client, SourceError> {
    let connected = if retry {
        kube_client::connect(kubeconfig, Otherwise::Kubectl).await
    } else {
        kube_client::connect_without_retries(kubeconfig, Otherwise::Kubectl).await
    };
    match connected {
        Ok(ClusterAccess::Client(client, _)) => Ok(client),
        Ok(ClusterAccess::None) => Err(SourceError::NoCluster(
            kubeconfig.unwrap_or(Path::new("")).display().to_string(),
        )),
        Err(KubeError::NotFound(e)) => Err(SourceError::NoKubeconfig(e)),
        Err(e) => Err(SourceError::Kube(e)),
    }
}

/// The decisions over `objects` with `settings`' policy and association sources; the
/// ServiceAccounts and namespace labels are the listed ones.
pub async fn audit_objects(
    settings: &Settings,
    associations: Vec<Arc<dyn crate::identity::AssociationSource>>,
    objects: &super::cluster::ClusterObjects,
) -> Result<super::findings::AuditReport, RunError> {
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
pub async fn run_audit(job: &ClusterAudit, out: &mut impl Write) -> Result<u8, RunError> {
    use std::io::IsTerminal;
    let (args, settings) = (job, &job.settings);
    let client = audit_client(settings.kubeconfig.as_deref(), true).await?;
    let associations = sources::association_sources(settings).await?;
    // Progress only for a person watching: never in a pipe or a CI log.
    let terminal = std::io::stderr().is_terminal();
    let objects = super::cluster::list_cluster(&client, args.page_size, |resource, n| {
        if terminal {
            eprint!("\r\x1b[Klisting {resource}: {n}");
        }
    })
    .await
    .map_err(RunError::List);
    if terminal {
        eprint!("\r\x1b[K");
    }
    let report = audit_objects(settings, associations, &objects?).await?;
    match args.output {
        AuditOutput::Table => render::audit_table(&report, out)?,
        AuditOutput::Json => render::audit_json(&report, out)?,
    }
    if let Some(repair) = args.repair {
        // After the report; with JSON on stdout, the repair's lines go to stderr.
        let mut lines = Vec::new();
        let events = crate::audit::events::EventWriter::new(client.clone());
        let findings = &report.findings;
        // Evictions without the client's retries: a budget's 429 is reported, not waited out.
        let evictions = audit_client(settings.kubeconfig.as_deref(), false).await?;
        crate::audit::repair::apply(&evictions, findings, repair, &events, |f, plan, done| {
            lines.push(crate::audit::repair::line(f, plan, repair.mode, done));
        })
        .await;
        let text: String = lines.iter().map(|l| format!("repair: {l}\n")).collect();
        match args.output {
            AuditOutput::Table => out.write_all(text.as_bytes())?,
            AuditOutput::Json => eprint!("{text}"),
        }
    }
    out.flush()?;
    Ok(report.exit_code())
}
