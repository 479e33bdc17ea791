//! The association sources a command configures, opened one way for `serve` and `agent`: the
//! associations file (its reloader handed back to be run) and the EKS source (its sync started
//! as a task), added to [`Identities`] file first, so a ServiceAccount in the file keeps its
//! entry there.

use std::path::Path;
use std::sync::Arc;

use prometheus_client::registry::Registry;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::identity::eks_cache::EksSource;
use crate::identity::eks_client::EksSetupError;
use crate::identity::eks_settings::EksSettings;
use crate::identity::file::{FileError, FileReloader, FileSource};
use crate::identity::{Identities, metrics};

/// Why a configured source could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SourcesError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Eks(#[from] EksSetupError),
}

/// Which sources to open.
#[derive(Debug, Clone, Copy, Default)]
pub struct SourceSettings<'a> {
    pub associations_file: Option<&'a Path>,
    pub eks: Option<&'a EksSettings>,
}

/// The sources opened: `identities` with them added, and the file's reloader (to run).
pub struct Opened {
    pub identities: Identities,
    pub file_reloader: Option<FileReloader>,
}

impl SourceSettings<'_> {
    /// Whether any association source is configured.
    pub fn any(&self) -> bool {
        self.associations_file.is_some() || self.eks.is_some()
    }

    /// Opens the configured sources and adds them to `identities` (after those it has); their
    /// metrics go to `registry` when given; the EKS sync runs as one of `tasks` until `stop`.
    pub async fn open(
        &self,
        mut identities: Identities,
        mut registry: Option<&mut Registry>,
        tasks: &mut JoinSet<()>,
        stop: &CancellationToken,
    ) -> Result<Opened, SourcesError> {
        let mut file_reloader = None;
        let mut counts: Vec<(&'static str, metrics::AssociationCount)> = Vec::new();
        if let Some(path) = self.associations_file {
            let (source, reloader) = FileSource::open(path)?;
            tracing::info!(file = %path.display(), associations = source.len(), "associations file loaded");
            if let Some(registry) = registry.as_deref_mut() {
                metrics::register_file(registry, source.clone());
            }
            let file = source.clone();
            counts.push(("file", Box::new(move || file.len() as u64)));
            identities = identities.with_associations(source);
            file_reloader = Some(reloader);
        }
        if let Some(eks) = self.eks {
            let source = EksSource::connect(eks).await?;
            tracing::info!(
                cluster = %eks.cluster_name,
                region = eks.region.as_deref().unwrap_or("(from the AWS environment)"),
                endpoint = eks.endpoint.as_deref().unwrap_or("(default)"),
                sync_interval = ?eks.sync_interval,
                "reading Pod Identity associations from EKS"
            );
            if let Some(registry) = registry.as_deref_mut() {
                metrics::register_eks(registry, source.clone());
            }
            let eks = source.clone();
            counts.push(("eks", Box::new(move || eks.stats().synced_associations)));
            identities = identities.with_associations(Arc::new(source.clone()));
            tasks.spawn(source.run_sync(stop.clone()));
        }
        if let Some(registry) = registry
            && !counts.is_empty()
        {
            metrics::register_associations(registry, counts);
        }
        Ok(Opened {
            identities,
            file_reloader,
        })
    }
}
