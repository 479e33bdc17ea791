//! GitOps associations (`controller --gitops-associations`, docs/controller.md#gitops-associations):
//! ServiceAccounts annotated with [`plan::ROLE_ANNOTATION`] get an EKS Pod Identity association,
//! updated when the annotation changes and deleted when it or the ServiceAccount goes.
//!
//! - [`plan`]: the pure decision;
//! - [`eks`]: the EKS calls behind a trait;
//! - [`metrics`], the `pod_identity_webhook_gitops_…` families;
//! - this file: the loop the Lease holder runs: a ServiceAccount watch of its own (the webhook's
//!   is stripped to the IRSA annotations), a reconcile after each change (debounced) and a full
//!   one every resync interval, which re-reads every association and so puts back what was
//!   changed or deleted out of band. A reconcile that fails is tried again with backoff.

pub mod eks;
pub mod metrics;
pub mod plan;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::audit::events::{EventWriter, Regarding};
use crate::identity::RoleBound;
use crate::identity::eks_client::{CallError, Operation};
use crate::kubernetes::reflector::{WatchLog, run_notifying};
use eks::AssociationsApi;
use metrics::{ActionOutcome, GitopsMetrics};
use plan::{Action, Existing, Gone, Key, OwnerTag, Refusal};

/// A change is reconciled this long after it arrives, so a burst (an `kubectl apply` of many
/// ServiceAccounts) is one reconcile.
pub const DEBOUNCE: Duration = Duration::from_secs(1);

/// First wait after a failed reconcile; it doubles up to the resync interval.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);

/// Pages of 100 associations read at most (EKS allows far fewer per cluster).
const MAX_PAGES: usize = 1000;

/// Describes in flight at once.
const DESCRIBE_CONCURRENCY: usize = 4;

/// How the loop runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GitopsSettings {
    /// Log and count what would be done; no EKS write.
    pub dry_run: bool,
    /// Every association re-read (drift) at least this often.
    pub resync_interval: Duration,
}

/// The controller's GitOps part: the EKS calls, the allowlist, the ownership tag.
pub struct Gitops {
    pub api: Arc<dyn AssociationsApi>,
    pub allowlist: Arc<dyn RoleBound>,
    pub owner: OwnerTag,
    pub settings: GitopsSettings,
    pub metrics: GitopsMetrics,
}

/// What the leader remembers between reconciles (lost with the Lease: a new leader counts no
/// drift until it has made or seen an association itself).
#[derive(Default)]
struct Memory {
    /// The role this leader last put on (or found right on) each owned association.
    applied: BTreeMap<Key, String>,
    /// Describes of the last reads, by association id: a reconcile after a change describes
    /// only the associations it has not seen; the resync describes every one again.
    described: HashMap<String, Existing>,
    /// Keys whose drift is counted already (until it is put back).
    drifting: HashSet<Key>,
    /// Events recorded, by (uid, reason): one per hour.
    evented: HashMap<(String, &'static str), Instant>,
}

/// Why a reconcile stopped before deciding.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error(transparent)]
    Eks(#[from] CallError),
    #[error("more than {MAX_PAGES} pages of associations; not reconciling a partial list")]
    TooManyPages,
}

impl Gitops {
    /// Runs until `stop` (the end of the process or of the Lease).
    pub async fn run(self: Arc<Self>, client: kube::Client, stop: CancellationToken) {
        let changed = Arc::new(Notify::new());
        let store = watch(&client, &stop, changed.clone());
        tokio::select! {
            _ = stop.cancelled() => return,
            r = store.wait_until_ready() => if r.is_err() { return },
        }
        tracing::info!(
            dry_run = self.settings.dry_run,
            resync = ?self.settings.resync_interval,
            "gitops associations: ServiceAccounts listed; reconciling"
        );
        let events = EventWriter::new(client);
        let mut memory = Memory::default();
        let mut next_full = Instant::now();
        let mut retry = FIRST_RETRY;
        loop {
            let full = Instant::now() >= next_full;
            let ok = self.reconcile(&store, &events, &mut memory, full).await;
            self.metrics.reconciled(ok);
            let wait = if ok {
                retry = FIRST_RETRY;
                if full {
                    next_full = Instant::now() + self.settings.resync_interval;
                }
                next_full.saturating_duration_since(Instant::now())
            } else {
                // The next try re-reads everything: nothing decided on a failed read is kept.
                next_full = Instant::now();
                let wait = retry;
                retry = (retry * 2).min(self.settings.resync_interval);
                wait
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
                _ = changed.notified() => {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(DEBOUNCE) => {}
                    }
                }
            }
        }
    }

    /// One reconcile: read, decide, act. False when something failed (tried again soon).
    async fn reconcile(
        &self,
        store: &Store<ServiceAccount>,
        events: &EventWriter,
        memory: &mut Memory,
        full: bool,
    ) -> bool {
        let (service_accounts, uids) = annotated(store);
        let associations = match self.read(memory, full).await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "gitops associations: cannot read the cluster's associations; trying again with backoff");
                return false;
            }
        };
        let actions = plan::plan(&plan::Inputs {
            service_accounts: &service_accounts,
            associations: &associations,
            allowlist: self.allowlist.as_ref(),
            owner: &self.owner,
            applied: &memory.applied,
        });
        remember_settled(memory, &service_accounts, &associations, &self.owner);
        let (mut hand_made, mut refused, mut ok) = (0, 0, true);
        for action in &actions {
            match action {
                Action::Refuse { key, why } => {
                    refused += 1;
                    self.refuse(events, memory, &uids, key, why).await;
                }
                Action::ReportHandMade {
                    key,
                    association_id,
                    role_arn,
                } => {
                    hand_made += 1;
                    let note = format!(
                        "association {} (role {}) was not made by this controller (no {}={} tag): it is left alone. Delete it to let the annotation {} take effect, or remove the annotation.",
                        crate::shown::Shown(association_id),
                        crate::shown::Shown(role_arn),
                        self.owner.key,
                        self.owner.value,
                        plan::ROLE_ANNOTATION,
                    );
                    if self
                        .event(events, memory, &uids, key, "HandMadeAssociation", &note)
                        .await
                    {
                        tracing::warn!(service_account = %key, association_id = %crate::shown::Shown(association_id), role_arn = %crate::shown::Shown(role_arn),
                            "gitops associations: the ServiceAccount has an association this controller did not make; left alone");
                    }
                }
                write => ok &= self.write(memory, write).await,
            }
        }
        self.metrics.seen(hand_made, refused);
        tracing::info!(
            service_accounts = service_accounts.len(),
            associations = associations.len(),
            actions = actions.iter().filter(|a| a.writes()).count(),
            hand_made,
            refused,
            full,
            ok,
            "gitops associations: reconciled"
        );
        ok
    }

    /// Every association of the cluster with its role and tags.
    async fn read(&self, memory: &mut Memory, full: bool) -> Result<Vec<Existing>, ReadError> {
        let mut ids = Vec::new();
        let mut token = None;
        for page in 0.. {
            if page == MAX_PAGES {
                return Err(ReadError::TooManyPages);
            }
            let out = self
                .counted(Operation::List, self.api.list_page(token))
                .await?;
            ids.extend(out.summaries.into_iter().map(|s| s.association_id));
            token = out.next_token;
            if token.is_none() {
                break;
            }
        }
        if full {
            memory.described.clear();
        }
        let wanted: HashSet<&String> = ids.iter().collect();
        memory.described.retain(|id, _| wanted.contains(id));
        let missing: Vec<String> = ids
            .iter()
            .filter(|id| !memory.described.contains_key(*id))
            .cloned()
            .collect();
        // Owned ids: a closure over borrowed ones makes the future not `Send` for every lifetime.
        let fresh: Vec<Option<Existing>> = futures::stream::iter(missing)
            .map(|id| async move {
                self.counted(Operation::Describe, self.api.describe(&id))
                    .await
            })
            .buffer_unordered(DESCRIBE_CONCURRENCY)
            .try_collect()
            .await?;
        for a in fresh.into_iter().flatten() {
            memory.described.insert(a.association_id.clone(), a);
        }
        let mut all: Vec<Existing> = memory.described.values().cloned().collect();
        all.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(all)
    }

    /// A create, update or delete (or, with `--dry-run`, its log line). False when it failed.
    async fn write(&self, memory: &mut Memory, action: &Action) -> bool {
        let (name, drift) = match action {
            Action::Create { drift, .. } => ("create", *drift),
            Action::Update { drift, .. } => ("update", *drift),
            _ => ("delete", false),
        };
        let key = action.key();
        if drift && memory.drifting.insert(key.clone()) {
            self.metrics.drift_found();
            tracing::warn!(service_account = %key, "gitops associations: drift: the association this controller made was changed or deleted out of band; putting it back");
        }
        if self.settings.dry_run {
            self.metrics.action(name, ActionOutcome::DryRun);
            match action {
                Action::Create { role_arn, .. } => {
                    tracing::info!(service_account = %key, %role_arn, "dry run: would create the association")
                }
                Action::Update { from, to, .. } => {
                    tracing::info!(service_account = %key, %from, %to, "dry run: would update the association's role")
                }
                Action::Delete {
                    association_id,
                    why,
                    ..
                } => {
                    tracing::info!(service_account = %key, %association_id, why = gone(*why), "dry run: would delete the association")
                }
                _ => {}
            }
            return true;
        }
        let result = match action {
            Action::Create { role_arn, .. } => self
                .counted(
                    Operation::Create,
                    self.api.create(key, role_arn, &self.owner),
                )
                .await
                .map(|id| {
                    tracing::info!(service_account = %key, %role_arn, association_id = %id, "gitops associations: created");
                    memory.applied.insert(key.clone(), role_arn.clone());
                }),
            Action::Update {
                association_id, from, to, ..
            } => self
                .counted(Operation::Update, self.api.update(association_id, to))
                .await
                .map(|()| {
                    tracing::info!(service_account = %key, %association_id, %from, %to, "gitops associations: updated");
                    memory.applied.insert(key.clone(), to.clone());
                    if let Some(a) = memory.described.get_mut(association_id) {
                        a.role_arn = to.clone();
                    }
                }),
            Action::Delete {
                association_id, role_arn, why, ..
            } => self
                .counted(Operation::Delete, self.api.delete(association_id))
                .await
                .map(|()| {
                    tracing::info!(service_account = %key, %association_id, %role_arn, why = gone(*why), "gitops associations: deleted");
                    memory.applied.remove(key);
                    memory.described.remove(association_id);
                }),
            _ => Ok(()),
        };
        match result {
            Ok(()) => {
                memory.drifting.remove(key);
                self.metrics.action(name, ActionOutcome::Done);
                true
            }
            Err(e) => {
                self.metrics.action(name, ActionOutcome::Failed);
                tracing::warn!(service_account = %key, error = %e, "gitops associations: {name} failed; tried again at the next reconcile");
                false
            }
        }
    }

    async fn refuse(
        &self,
        events: &EventWriter,
        memory: &mut Memory,
        uids: &HashMap<Key, String>,
        key: &Key,
        why: &Refusal,
    ) {
        let note = match why {
            Refusal::NotARoleArn(e) => format!(
                "annotation {}: the value {e}; no association is made",
                plan::ROLE_ANNOTATION
            ),
            Refusal::NotAllowed => format!(
                "annotation {}: the role is not in the allowedRoleArns of namespace {}'s policy rule; no association is made (ask the platform team to allow it, or annotate an allowed role)",
                plan::ROLE_ANNOTATION,
                crate::shown::Shown(&key.namespace),
            ),
        };
        if self
            .event(events, memory, uids, key, "AssociationRefused", &note)
            .await
        {
            tracing::warn!(service_account = %key, "gitops associations: refused: {note}");
        }
    }

    /// A `Warning` event on the ServiceAccount, once an hour; true when it was due (the caller
    /// logs it then too: a report repeated at every reconcile would drown the log).
    async fn event(
        &self,
        events: &EventWriter,
        memory: &mut Memory,
        uids: &HashMap<Key, String>,
        key: &Key,
        reason: &'static str,
        note: &str,
    ) -> bool {
        let Some(uid) = uids.get(key) else {
            return true;
        };
        let now = Instant::now();
        memory
            .evented
            .retain(|_, at| now.duration_since(*at) < crate::audit::events::EVENT_REPEAT);
        let sent = (uid.clone(), reason);
        if memory.evented.contains_key(&sent) {
            return false;
        }
        let regarding = Regarding {
            api_version: "v1",
            kind: "ServiceAccount",
            namespace: key.namespace.clone(),
            name: key.service_account.clone(),
            uid: uid.clone(),
        };
        match events
            .warn(&regarding, reason, "ReconcileAssociation", note)
            .await
        {
            Ok(()) => {
                memory.evented.insert(sent, now);
            }
            Err(e) => {
                tracing::warn!(service_account = %key, error = %e, "cannot record the event; trying at the next reconcile")
            }
        }
        true
    }

    /// An EKS call, counted by operation and outcome.
    async fn counted<T>(
        &self,
        operation: Operation,
        call: impl std::future::Future<Output = Result<T, CallError>>,
    ) -> Result<T, CallError> {
        let result = call.await;
        self.metrics
            .call(operation, result.as_ref().map(|_| ()).map_err(|e| e.kind));
        result
    }
}

fn gone(why: Gone) -> &'static str {
    match why {
        Gone::AnnotationRemoved => "annotation removed",
        Gone::ServiceAccountGone => "ServiceAccount deleted",
    }
}

/// Owned associations already as annotated: remembered as this leader's, so a later change out
/// of band is drift. Keys no longer annotated are forgotten.
fn remember_settled(
    memory: &mut Memory,
    service_accounts: &[plan::ServiceAccount],
    associations: &[Existing],
    owner: &OwnerTag,
) {
    let wanted: HashMap<&Key, &str> = service_accounts
        .iter()
        .filter_map(|sa| Some((&sa.key, sa.role_arn.as_deref()?)))
        .collect();
    memory.applied.retain(|k, _| wanted.contains_key(k));
    for a in associations {
        if a.tags.get(&owner.key) == Some(&owner.value)
            && wanted.get(&a.key) == Some(&a.role_arn.as_str())
        {
            memory.applied.insert(a.key.clone(), a.role_arn.clone());
            memory.drifting.remove(&a.key);
        }
    }
}

/// Every ServiceAccount of the store as the decision reads it, and their uids (for events).
fn annotated(store: &Store<ServiceAccount>) -> (Vec<plan::ServiceAccount>, HashMap<Key, String>) {
    let mut uids = HashMap::new();
    let sas = store
        .state()
        .iter()
        .filter_map(|sa| {
            let key = Key::new(sa.metadata.namespace.clone()?, sa.metadata.name.clone()?);
            if let Some(uid) = &sa.metadata.uid {
                uids.insert(key.clone(), uid.clone());
            }
            let role_arn = sa
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(plan::ROLE_ANNOTATION))
                .filter(|v| !v.trim().is_empty())
                .cloned();
            Some(plan::ServiceAccount { key, role_arn })
        })
        .collect();
    (sas, uids)
}

/// ServiceAccounts kept as name, namespace, uid and [`plan::ROLE_ANNOTATION`]; `changed` hears
/// every event.
fn watch(
    client: &kube::Client,
    stop: &CancellationToken,
    changed: Arc<Notify>,
) -> Store<ServiceAccount> {
    let (reader, writer) = reflector::store();
    let strip = |sa: &mut ServiceAccount| {
        let keep = sa
            .metadata
            .annotations
            .take()
            .and_then(|mut a| a.remove_entry(plan::ROLE_ANNOTATION));
        sa.metadata = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: sa.metadata.name.take(),
            namespace: sa.metadata.namespace.take(),
            uid: sa.metadata.uid.take(),
            resource_version: sa.metadata.resource_version.take(),
            annotations: keep.map(|(k, v)| BTreeMap::from([(k, v)])),
            ..Default::default()
        };
        sa.secrets = None;
        sa.image_pull_secrets = None;
    };
    let log = WatchLog {
        what: "ServiceAccount (gitops associations)".into(),
        failed: "gitops associations: ServiceAccount watch failed; retrying with backoff",
    };
    run_notifying(
        Api::<ServiceAccount>::all(client.clone()),
        writer,
        strip,
        log,
        stop.clone(),
        move || changed.notify_one(),
    );
    reader
}
