//! `migrate apply --approve`: carries out a plan, row by row, each change re-read right before it
//! is made so a re-run (or a run racing a person) never repeats one. A row that cannot go on
//! (conflict, a policy over its size limit, an AWS error) stops with its reason; the others go on.

use std::collections::BTreeSet;
use std::io::Write;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::checks;
use super::inventory::{IRSA_ANNOTATIONS, Inventory, Key, RoleState, WorkloadRef};
use super::rows::{Action, Plan, Row, RowStatus};
use super::trust::{self, OidcEdit, TrustEdit};
use super::{Created, Parts, Progress, ReadSettings, Rollout, StepError, read_inventory};
use crate::clock::rfc3339;
use crate::identity::Association;
use crate::shown::shown;

/// What `apply` does beyond the plan's actions.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// The parallel-ServiceAccount variant: the selected ServiceAccounts were replaced by
    /// others (`writer` by `writer-pi`) and are only cleaned up: no trust edit, no
    /// association; only the removal steps, and only where nothing uses them any more.
    pub retire: bool,
    pub remove_irsa_annotations: bool,
    pub remove_oidc_trust: bool,
    /// This cluster's OIDC issuer (`--oidc-issuer`); else asked of EKS or the API server.
    pub oidc_issuer: Option<String>,
    pub restart_workloads: bool,
    /// Longest wait for one workload's rollout.
    pub rollout_timeout: Duration,
    pub poll_interval: Duration,
    pub trust_size_limit: usize,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        Self {
            retire: false,
            remove_irsa_annotations: false,
            remove_oidc_trust: false,
            oidc_issuer: None,
            restart_workloads: false,
            rollout_timeout: Duration::from_secs(300),
            poll_interval: Duration::from_secs(2),
            trust_size_limit: trust::DEFAULT_SIZE_LIMIT,
        }
    }
}

/// A row (or step) that did not go through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stopped {
    pub service_account: String,
    pub step: &'static str,
    pub reason: String,
}

/// What a run changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplySummary {
    pub trust_updated: Vec<String>,
    pub associations_created: Vec<String>,
    /// Changes found already made (re-runs).
    pub unchanged: usize,
    pub annotations_removed: Vec<String>,
    pub workloads_restarted: Vec<String>,
    pub oidc_trust_removed: Vec<String>,
    /// `NAMESPACE/NAME: PROVIDER`: web-identity trust of the ServiceAccount by another
    /// cluster's OIDC provider, left in place.
    pub oidc_trust_kept: Vec<String>,
    /// ServiceAccounts cleaned up with `--retire` (nothing used them).
    pub retired: Vec<String>,
    /// Rows the plan blocks (not attempted).
    pub skipped: Vec<Stopped>,
    pub stopped: Vec<Stopped>,
    /// Pods that need a restart by hand (no restartable owner).
    pub restart_by_hand: Vec<String>,
}

impl ApplySummary {
    pub fn changes(&self) -> usize {
        self.trust_updated.len()
            + self.associations_created.len()
            + self.annotations_removed.len()
            + self.workloads_restarted.len()
            + self.oidc_trust_removed.len()
    }

    /// 0 all done, 1 something blocked or stopped, 2 something could not be read.
    pub fn exit_code(&self, plan: &Plan) -> i32 {
        if plan.totals.unreadable > 0 {
            2
        } else if !self.skipped.is_empty() || !self.stopped.is_empty() {
            1
        } else {
            0
        }
    }

    /// Records a row (or one of its steps) that did not go through.
    fn stop(&mut self, service_account: String, step: &'static str, reason: String) {
        self.stopped.push(Stopped {
            service_account,
            step,
            reason,
        });
    }
}

fn sa_name(row: &Row) -> String {
    format!("{}/{}", row.namespace, row.service_account)
}

/// A line per change, written as it is made.
fn say(out: &mut dyn Write, line: std::fmt::Arguments<'_>) {
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Reads a role's trust policy afresh (a plan may be minutes old).
async fn fresh_policy(parts: &Parts<'_>, role_arn: &str) -> Result<serde_json::Value, StepError> {
    match parts.roles.trust_policy(role_arn).await {
        RoleState::Found { trust_policy } => trust::parse(&trust_policy).map_err(StepError::Trust),
        RoleState::NotFound => Err(StepError::RoleGone(role_arn.to_string())),
        RoleState::Unreadable { message } => Err(StepError::RoleUnreadable(message)),
    }
}

async fn update_trust(
    parts: &Parts<'_>,
    role_name: &str,
    role_arn: &str,
    limit: usize,
    out: &mut dyn Write,
    summary: &mut ApplySummary,
) -> Result<(), StepError> {
    let policy = fresh_policy(parts, role_arn).await?;
    let (after, edit) = trust::with_pod_identity(&policy);
    if edit == TrustEdit::None {
        summary.unchanged += 1;
        say(
            out,
            format_args!("= trust policy of {role_name}: already allows Pod Identity"),
        );
        return Ok(());
    }
    let size = trust::iam_size(&after);
    if size > limit {
        return Err(StepError::TooLarge {
            role: role_name.to_string(),
            size,
            limit,
        });
    }
    parts
        .roles
        .put_trust_policy(role_name, &trust::render(&after))
        .await?;
    let what = match edit {
        TrustEdit::AddTagSession => "added sts:TagSession to the Pod Identity statement",
        _ => "added the Pod Identity statement",
    };
    say(
        out,
        format_args!("+ trust policy of {role_name}: {what} ({size}/{limit} characters)"),
    );
    summary.trust_updated.push(role_name.to_string());
    Ok(())
}

async fn create_association(
    parts: &Parts<'_>,
    namespace: &str,
    service_account: &str,
    role_arn: &str,
    out: &mut dyn Write,
    summary: &mut ApplySummary,
) -> Result<(), StepError> {
    let a = Association::new(namespace, service_account, role_arn);
    match parts.target.create(&a).await? {
        Created::Created { association_id } => {
            let id = association_id
                .map(|i| format!(" ({i})"))
                .unwrap_or_default();
            say(
                out,
                format_args!("+ association {namespace}/{service_account} -> {role_arn}{id}"),
            );
            summary
                .associations_created
                .push(format!("{namespace}/{service_account}"));
            Ok(())
        }
        Created::Exists(existing) if existing.role_arn == role_arn => {
            summary.unchanged += 1;
            say(
                out,
                format_args!("= association {namespace}/{service_account}: already in place"),
            );
            Ok(())
        }
        Created::Exists(existing) => Err(StepError::Conflict(existing.role_arn)),
    }
}

/// The workloads to restart (one each, in order) and the pods only a person can restart.
pub fn restarts(inv: &Inventory, migrated: &BTreeSet<Key>) -> (Vec<WorkloadRef>, Vec<String>) {
    let mut workloads = BTreeSet::new();
    let mut by_hand = Vec::new();
    for pod in &inv.pods {
        if !migrated.contains(&pod.key())
            || !checks::uses_irsa(pod)
            || checks::uses_pod_identity(pod)
        {
            continue;
        }
        match &pod.owner {
            Some(w) if w.kind.restartable() => {
                workloads.insert(w.clone());
            }
            _ => by_hand.push(format!("{}/{}", pod.namespace, pod.name)),
        }
    }
    (workloads.into_iter().collect(), by_hand)
}

/// Restarts workloads one at a time, each waited for; stops at the first that does not finish.
async fn restart_all(
    parts: &Parts<'_>,
    workloads: &[WorkloadRef],
    options: &ApplyOptions,
    out: &mut dyn Write,
    summary: &mut ApplySummary,
) {
    for (i, w) in workloads.iter().enumerate() {
        let at = rfc3339(std::time::SystemTime::now());
        if let Err(e) = parts.cluster.restart(w, &at).await {
            summary.stop(w.to_string(), "restart", e.to_string());
            say(out, format_args!("! {w}: {e}"));
            continue;
        }
        say(out, format_args!("~ restarting {w}"));
        let start = Instant::now();
        let last = loop {
            tokio::time::sleep(options.poll_interval).await;
            match parts.cluster.rollout(w).await {
                Ok(Rollout::Done) => break None,
                Ok(Rollout::Gone) => break Some("the workload was deleted".to_string()),
                Ok(Rollout::Progressing(m)) if start.elapsed() >= options.rollout_timeout => {
                    break Some(format!(
                        "not rolled out after {:?} ({m}); check `kubectl rollout status {}`",
                        options.rollout_timeout,
                        w.to_string()
                            .rsplit_once('/')
                            .map(|(k, n)| format!("{} {n}", k.replace('/', " -n ")))
                            .unwrap_or_default()
                    ));
                }
                Ok(Rollout::Progressing(_)) => {}
                Err(e) if start.elapsed() >= options.rollout_timeout => break Some(e.to_string()),
                Err(_) => {}
            }
        };
        match last {
            None => {
                say(
                    out,
                    format_args!("  rolled out in {}s", start.elapsed().as_secs()),
                );
                summary.workloads_restarted.push(w.to_string());
            }
            Some(reason) => {
                say(out, format_args!("! {w}: {reason}; no further restarts"));
                summary.stop(w.to_string(), "restart", reason);
                for rest in &workloads[i + 1..] {
                    summary.stop(
                        rest.to_string(),
                        "restart",
                        format!("not restarted: the rollout of {w} did not finish"),
                    );
                }
                return;
            }
        }
    }
}

/// The plan's actions, row by row; the rows that went through.
async fn migrate_rows(
    parts: &Parts<'_>,
    plan: &Plan,
    options: &ApplyOptions,
    out: &mut dyn Write,
    summary: &mut ApplySummary,
) -> BTreeSet<Key> {
    let mut migrated: BTreeSet<Key> = BTreeSet::new();
    for row in &plan.rows {
        let name = sa_name(row);
        if matches!(row.status, RowStatus::Blocked | RowStatus::Unreadable) {
            let reason = row
                .blocking()
                .map(|f| format!("{}: {}", f.code, f.message))
                .collect::<Vec<_>>()
                .join("; ");
            say(out, format_args!("! skip {name}: {reason}"));
            summary.skipped.push(Stopped {
                service_account: name,
                step: "plan",
                reason,
            });
            continue;
        }
        let mut ok = true;
        for action in &row.actions {
            let (step, result) = match action {
                Action::UpdateTrust {
                    role_name,
                    role_arn,
                    ..
                } => (
                    "trust",
                    update_trust(
                        parts,
                        role_name,
                        role_arn,
                        options.trust_size_limit,
                        out,
                        summary,
                    )
                    .await,
                ),
                Action::CreateAssociation {
                    namespace,
                    service_account,
                    role_arn,
                } => (
                    "association",
                    create_association(parts, namespace, service_account, role_arn, out, summary)
                        .await,
                ),
            };
            if let Err(reason) = result {
                say(out, format_args!("! {name} stopped at {step}: {reason}"));
                summary.stop(name.clone(), step, reason.to_string());
                ok = false;
                break;
            }
        }
        if ok {
            migrated.insert((row.namespace.clone(), row.service_account.clone()));
        }
    }
    migrated
}

/// `--retire`: the rows nothing uses any more (no running pod, no workload naming them); the
/// others stop with who still uses them.
fn retire(
    inv: &Inventory,
    plan: &Plan,
    out: &mut dyn Write,
    summary: &mut ApplySummary,
) -> BTreeSet<Key> {
    let mut retired = BTreeSet::new();
    for row in &plan.rows {
        let name = sa_name(row);
        let users: Vec<String> = inv
            .pods_of(&row.namespace, &row.service_account)
            .map(|p| format!("pod {}", p.name))
            .chain(row.workloads.iter().map(ToString::to_string))
            .collect();
        if !users.is_empty() {
            let more = users.len().saturating_sub(5);
            let mut shown = users.into_iter().take(5).collect::<Vec<_>>().join(", ");
            if more > 0 {
                shown.push_str(&format!(" and {more} more"));
            }
            let reason = format!(
                "still used by {shown}: switch them to the ServiceAccount that replaces it first"
            );
            say(out, format_args!("! {name} not retired: {reason}"));
            summary.stop(name, "retire", reason);
            continue;
        }
        say(
            out,
            format_args!("= {name}: nothing uses it; retiring (no trust edit, no association)"),
        );
        summary.retired.push(name);
        retired.insert((row.namespace.clone(), row.service_account.clone()));
    }
    retired
}

/// Carries out `plan` (made from `inv`).
pub async fn apply(
    parts: &Parts<'_>,
    inv: &Inventory,
    plan: &Plan,
    read: &ReadSettings,
    options: &ApplyOptions,
    out: &mut dyn Write,
) -> ApplySummary {
    let mut summary = ApplySummary::default();
    let migrated = if options.retire {
        retire(inv, plan, out, &mut summary)
    } else {
        migrate_rows(parts, plan, options, out, &mut summary).await
    };

    if options.remove_irsa_annotations {
        for sa in inv
            .service_accounts
            .iter()
            .filter(|s| migrated.contains(&s.key()))
        {
            let keys: Vec<String> = IRSA_ANNOTATIONS
                .iter()
                .map(|n| format!("{}/{n}", inv.annotation_prefix))
                .filter(|k| sa.annotations.contains_key(k))
                .collect();
            let name = format!("{}/{}", sa.namespace, sa.name);
            match parts
                .cluster
                .remove_annotations(&sa.namespace, &sa.name, &keys)
                .await
            {
                Ok(()) => {
                    say(
                        out,
                        format_args!("- annotations of {name}: {}", keys.join(", ")),
                    );
                    summary.annotations_removed.push(name);
                }
                Err(reason) => {
                    say(
                        out,
                        format_args!("! {name} stopped at annotations: {reason}"),
                    );
                    summary.stop(name, "annotations", reason.to_string());
                }
            }
        }
    }

    let (workloads, by_hand) = restarts(inv, &migrated);
    summary.restart_by_hand = by_hand;
    let mut restarted = false;
    if options.restart_workloads && !workloads.is_empty() {
        restart_all(parts, &workloads, options, out, &mut summary).await;
        restarted = true;
    }

    if options.remove_oidc_trust {
        // Only this cluster's statements go: another cluster may trust the same ServiceAccount.
        let issuer = match super::oidc_issuer(parts, options.oidc_issuer.as_deref()).await {
            Ok(issuer) => issuer,
            Err(e) => {
                say(out, format_args!("! OIDC trust left in place: {e}"));
                summary.stop("*".into(), "oidc-trust", e.to_string());
                return summary;
            }
        };
        say(
            out,
            format_args!("OIDC trust of this cluster: issuer {}", shown(&issuer)),
        );
        // Restarts replaced pods: decide on what runs now.
        let fresh;
        let now = if restarted {
            match read_inventory(parts, read, &Progress::new(false)).await {
                Ok(i) => {
                    fresh = i;
                    &fresh
                }
                Err(e) => {
                    say(
                        out,
                        format_args!("! OIDC trust left in place: cannot re-read the cluster: {e}"),
                    );
                    summary.stop("*".into(), "oidc-trust", e.to_string());
                    return summary;
                }
            }
        } else {
            inv
        };
        for row in plan
            .rows
            .iter()
            .filter(|r| migrated.contains(&(r.namespace.clone(), r.service_account.clone())))
        {
            let name = sa_name(row);
            let still: Vec<String> = now
                .pods_of(&row.namespace, &row.service_account)
                .filter(|p| checks::uses_irsa(p) && !checks::uses_pod_identity(p))
                .map(|p| p.name.clone())
                .collect();
            let result = if !still.is_empty() {
                Err(StepError::StillOnIrsa {
                    count: still.len(),
                    pods: still.join(", "),
                })
            } else {
                remove_oidc(parts, row, &issuer, out, &mut summary).await
            };
            if let Err(reason) = result {
                say(
                    out,
                    format_args!("! {name} OIDC trust left in place: {reason}"),
                );
                summary.stop(name, "oidc-trust", reason.to_string());
            }
        }
    }
    summary
}

/// Removes this cluster's (`issuer`'s) OIDC trust of a row's ServiceAccount from its role; other
/// clusters' trust of it is kept and said.
async fn remove_oidc(
    parts: &Parts<'_>,
    row: &Row,
    issuer: &str,
    out: &mut dyn Write,
    summary: &mut ApplySummary,
) -> Result<(), StepError> {
    let Some((_, role_name)) = super::inventory::role_parts(&row.role_arn) else {
        return Err(StepError::NotRoleArn);
    };
    let policy = fresh_policy(parts, &row.role_arn).await?;
    let (after, edit) =
        trust::without_oidc_trust(&policy, &row.namespace, &row.service_account, issuer);
    for provider in
        trust::other_clusters_trust(&policy, &row.namespace, &row.service_account, issuer)
    {
        say(
            out,
            format_args!(
                "  kept: trusted by another cluster: {} trusts {} through {}",
                role_name,
                sa_name(row),
                shown(&provider)
            ),
        );
        summary
            .oidc_trust_kept
            .push(format!("{}: {}", sa_name(row), shown(&provider)));
    }
    match edit {
        OidcEdit::None => {
            summary.unchanged += 1;
            say(
                out,
                format_args!(
                    "= trust policy of {role_name}: no OIDC trust of this cluster for {}",
                    sa_name(row)
                ),
            );
            Ok(())
        }
        OidcEdit::Shared { reason } => Err(StepError::SharedTrust {
            reason,
            role: role_name.to_string(),
        }),
        OidcEdit::Removed { .. } => {
            parts
                .roles
                .put_trust_policy(role_name, &trust::render(&after))
                .await?;
            say(
                out,
                format_args!(
                    "- trust policy of {role_name}: this cluster's OIDC trust of {}",
                    sa_name(row)
                ),
            );
            summary.oidc_trust_removed.push(sa_name(row));
            Ok(())
        }
    }
}

/// The end-of-run summary, for a terminal.
pub fn render_summary(s: &ApplySummary) -> String {
    let mut out = format!(
        "\nsummary: {} trust policies updated, {} associations created, {} already in place, {} annotations removed, {} workloads restarted, {} OIDC trusts removed; {} skipped (blocked), {} stopped\n",
        s.trust_updated.len(),
        s.associations_created.len(),
        s.unchanged,
        s.annotations_removed.len(),
        s.workloads_restarted.len(),
        s.oidc_trust_removed.len(),
        s.skipped.len(),
        s.stopped.len()
    );
    if !s.retired.is_empty() {
        out.push_str(&format!("retired: {}\n", s.retired.join(", ")));
    }
    for kept in &s.oidc_trust_kept {
        out.push_str(&format!("kept: trusted by another cluster: {kept}\n"));
    }
    for x in s.skipped.iter().chain(&s.stopped) {
        out.push_str(&format!(
            "  {} ({}): {}\n",
            x.service_account, x.step, x.reason
        ));
    }
    if !s.restart_by_hand.is_empty() {
        out.push_str(&format!(
            "pods to restart by hand (no Deployment/StatefulSet/DaemonSet owns them): {}\n",
            s.restart_by_hand.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarted_at_is_rfc3339_utc() {
        let t = std::time::UNIX_EPOCH + Duration::from_secs(1_796_270_706);
        assert_eq!(rfc3339(t), "2026-12-03T04:05:06Z");
        assert_eq!(rfc3339(std::time::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let leap = std::time::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00Z");
    }
}
