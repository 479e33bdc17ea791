//! `migrate verify` (pure): what is left after cut-over. Running pods whose ServiceAccount has
//! an association but that still carry the IRSA variables (created before it: the SDKs read web
//! identity first, so they still use IRSA), pods with both sets, ServiceAccounts still annotated.

use std::fmt::Write;

use serde::Serialize;

use super::checks::{uses_irsa, uses_pod_identity};
use super::inventory::{Inventory, WorkloadRef};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodLeft {
    pub namespace: String,
    pub name: String,
    pub service_account: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<WorkloadRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AnnotatedLeft {
    pub namespace: String,
    pub service_account: String,
    pub role_arn: String,
    /// Whether it has an association (then only the annotation is left to remove).
    pub has_association: bool,
    /// The association's role when it differs from the annotation's (a conflict: the
    /// association wins).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub association_role_arn: Option<String>,
    /// Why the annotation is not an IAM role ARN (`role_arn` is then its value, shown safely).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid_role_arn: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Association in place, pod still on IRSA: restart it.
    pub pods_need_restart: Vec<PodLeft>,
    /// Pods with both IRSA and Pod Identity variables.
    pub pods_with_both: Vec<PodLeft>,
    pub still_annotated: Vec<AnnotatedLeft>,
}

impl Report {
    pub fn complete(&self) -> bool {
        self.pods_need_restart.is_empty()
            && self.pods_with_both.is_empty()
            && self.still_annotated.is_empty()
    }

    pub fn exit_code(&self) -> i32 {
        if self.complete() { 0 } else { 1 }
    }
}

pub fn verify(inv: &Inventory) -> Report {
    let mut report = Report::default();
    for pod in &inv.pods {
        let left = || PodLeft {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            service_account: pod.service_account.clone(),
            owner: pod.owner.clone(),
        };
        let (irsa, pi) = (uses_irsa(pod), uses_pod_identity(pod));
        if irsa && pi {
            report.pods_with_both.push(left());
        } else if irsa
            && inv
                .associations
                .present
                .contains(&(pod.namespace.clone(), pod.service_account.clone()))
        {
            report.pods_need_restart.push(left());
        }
    }
    for sa in &inv.service_accounts {
        let invalid = sa.invalid_role_arn(&inv.annotation_prefix);
        let (role, invalid) = match (&sa.info.role_arn, invalid) {
            (Some(role), _) => (role.clone(), None),
            (None, Some((value, e))) => (value, Some(e.to_string())),
            (None, None) => continue,
        };
        report.still_annotated.push(AnnotatedLeft {
            namespace: sa.namespace.clone(),
            service_account: sa.name.clone(),
            has_association: inv.associations.present.contains(&sa.key()),
            association_role_arn: inv
                .associations
                .get(&sa.namespace, &sa.name)
                .map(|a| a.role_arn.clone())
                .filter(|r| *r != role),
            role_arn: role,
            invalid_role_arn: invalid,
        });
    }
    report
}

pub fn table(r: &Report) -> String {
    let mut out = String::new();
    let pod = |p: &PodLeft| {
        let owner = p
            .owner
            .as_ref()
            .map(|o| format!(" (owned by {o})"))
            .unwrap_or_default();
        format!(
            "{}/{} [sa {}]{owner}",
            p.namespace, p.name, p.service_account
        )
    };
    if !r.pods_need_restart.is_empty() {
        let _ = writeln!(
            out,
            "pods still on IRSA although their ServiceAccount has an association (restart them):"
        );
        for p in &r.pods_need_restart {
            let _ = writeln!(out, "  {}", pod(p));
        }
    }
    if !r.pods_with_both.is_empty() {
        let _ = writeln!(
            out,
            "pods with both IRSA and Pod Identity variables (two webhooks? restart after removing the annotation):"
        );
        for p in &r.pods_with_both {
            let _ = writeln!(out, "  {}", pod(p));
        }
    }
    if !r.still_annotated.is_empty() {
        let _ = writeln!(out, "ServiceAccounts still annotated with an IRSA role:");
        for a in &r.still_annotated {
            let what = match (&a.association_role_arn, a.has_association) {
                _ if a.invalid_role_arn.is_some() => format!(
                    "the annotation {}: not migrated; fix it (a role ARN) or remove it",
                    a.invalid_role_arn.as_deref().unwrap_or_default()
                ),
                (Some(other), _) => format!(
                    "its association gives role {other} (it wins over the annotation): decide which is right (plan shows the conflict)"
                ),
                (None, true) => {
                    "has an association: remove the annotation (apply --remove-irsa-annotations)"
                        .to_string()
                }
                (None, false) => "no association: not migrated yet (plan)".to_string(),
            };
            let _ = writeln!(
                out,
                "  {}/{} -> {}: {what}",
                a.namespace, a.service_account, a.role_arn
            );
        }
    }
    let invalid = r
        .still_annotated
        .iter()
        .filter(|a| a.invalid_role_arn.is_some())
        .count();
    let _ = writeln!(
        out,
        "{}: {} pods to restart, {} pods with both, {} ServiceAccounts annotated{}",
        if r.complete() {
            "migration complete"
        } else {
            "migration not complete"
        },
        r.pods_need_restart.len(),
        r.pods_with_both.len(),
        r.still_annotated.len(),
        if invalid > 0 {
            format!(" ({invalid} not with a role ARN)")
        } else {
            String::new()
        }
    );
    out
}
