//! Plan output (pure): a terminal table, JSON, the exact AWS CLI commands, or
//! associations-file entries.

use std::collections::BTreeSet;
use std::fmt::Write;

use super::inventory::TargetInfo;
use super::rows::{Action, Plan, Row, RowStatus, Severity};
use crate::identity::Association;

/// `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
    Aws,
    Associations,
}

pub fn render(plan: &Plan, output: Output) -> String {
    match output {
        Output::Table => table(plan),
        Output::Json => json(plan),
        Output::Aws => aws(plan),
        Output::Associations => associations(plan),
    }
}

pub fn json(plan: &Plan) -> String {
    let mut s = serde_json::to_string_pretty(plan).expect("plan serializes");
    s.push('\n');
    s
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// Left-aligned columns, widths from the content (capped so a long ARN does not push the
/// table off a terminal).
fn columns(rows: &[Vec<String>], caps: &[usize]) -> String {
    let mut widths = vec![0; caps.len()];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            r.iter()
                .zip(caps)
                .map(|(c, cap)| truncate(c, *cap))
                .collect()
        })
        .collect();
    for r in &cells {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in &cells {
        let mut line = String::new();
        for (i, (c, w)) in r.iter().zip(&widths).enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                let _ = write!(line, "{c:<w$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn room(row: &Row) -> String {
    match (row.trust.size, row.trust.room) {
        (Some(size), Some(room)) => format!("{size}/{} ({room:+})", row.trust.limit),
        _ => "-".into(),
    }
}

fn association(row: &Row) -> String {
    match &row.association {
        super::rows::AssociationState::Conflict { role_arn, .. } => {
            format!(
                "conflict: {}",
                role_arn.rsplit('/').next().unwrap_or(role_arn)
            )
        }
        other => other.label().to_string(),
    }
}

pub fn table(plan: &Plan) -> String {
    let mut cells = vec![
        [
            "SERVICE ACCOUNT",
            "ROLE",
            "ASSOCIATION",
            "TRUST",
            "SIZE/LIMIT",
            "PODS",
            "STATUS",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for r in &plan.rows {
        cells.push(vec![
            format!("{}/{}", r.namespace, r.service_account),
            r.role_arn.clone(),
            association(r),
            r.trust.state.label().to_string(),
            room(r),
            if r.pods_using_irsa.is_empty() {
                r.pods.len().to_string()
            } else {
                format!("{} ({} IRSA)", r.pods.len(), r.pods_using_irsa.len())
            },
            r.status.label().to_string(),
        ]);
    }
    let mut out = columns(&cells, &[48, 64, 24, 14, 18, 14, 10]);
    let with_findings: Vec<&Row> = plan
        .rows
        .iter()
        .filter(|r| !r.findings.is_empty())
        .collect();
    if !with_findings.is_empty() {
        out.push('\n');
        for r in with_findings {
            let _ = writeln!(out, "{}/{}:", r.namespace, r.service_account);
            for f in &r.findings {
                let mark = match f.severity {
                    Severity::Block => "BLOCKS",
                    Severity::Care => "care",
                };
                let _ = writeln!(out, "  {mark:<6} {}: {}", f.code, f.message);
            }
        }
    }
    for n in &plan.notes {
        let _ = writeln!(out, "note: {n}");
    }
    let t = &plan.totals;
    let _ = writeln!(
        out,
        "\n{} ServiceAccounts: {} done, {} ready, {} blocked, {} unreadable; {} pods ({} still on IRSA)",
        t.service_accounts, t.done, t.ready, t.blocked, t.unreadable, t.pods, t.pods_using_irsa
    );
    let _ = writeln!(
        out,
        "associations: {} existing + {} to create = {} of {}; trust policies to update: {}",
        t.associations_existing,
        t.associations_to_create,
        t.associations_existing + t.associations_to_create,
        t.association_limit,
        t.trust_updates
    );
    out
}

/// Single-quotes for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@,+".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The AWS CLI commands that carry out the plan, in order (trust first, so a pod created right
/// after its association can assume the role).
pub fn aws(plan: &Plan) -> String {
    let mut out =
        String::from("#!/bin/sh\n# pod-identity-webhook migrate plan --output aws\nset -eu\n");
    let cluster = match &plan.target {
        TargetInfo::Eks { cluster } => Some(cluster.as_str()),
        TargetInfo::File { .. } => None,
    };
    let mut updated = BTreeSet::new();
    for r in &plan.rows {
        let _ = writeln!(
            out,
            "\n# {}/{} ({})",
            r.namespace,
            r.service_account,
            r.status.label()
        );
        if r.status != RowStatus::Ready && r.status != RowStatus::Done {
            for f in r.blocking() {
                let _ = writeln!(out, "# skipped: {}: {}", f.code, f.message);
            }
            continue;
        }
        for a in &r.actions {
            match a {
                Action::UpdateTrust {
                    role_name, policy, ..
                } => {
                    if !updated.insert(role_name.clone()) {
                        let _ = writeln!(out, "# trust policy of {role_name}: updated above");
                        continue;
                    }
                    let _ = writeln!(
                        out,
                        "aws iam update-assume-role-policy --role-name {} --policy-document {}",
                        shell_quote(role_name),
                        shell_quote(policy)
                    );
                }
                Action::CreateAssociation {
                    namespace,
                    service_account,
                    role_arn,
                } => match cluster {
                    Some(c) => {
                        let _ = writeln!(
                            out,
                            "aws eks create-pod-identity-association --cluster-name {} --namespace {} --service-account {} --role-arn {}",
                            shell_quote(c),
                            shell_quote(namespace),
                            shell_quote(service_account),
                            shell_quote(role_arn)
                        );
                    }
                    None => {
                        let _ = writeln!(
                            out,
                            "# association {namespace}/{service_account} -> {role_arn}: an associations-file entry (--output associations)"
                        );
                    }
                },
            }
        }
        if r.actions.is_empty() {
            let _ = writeln!(out, "# nothing to do");
        }
    }
    out
}

/// The associations the plan creates, as associations-file entries (docs/contract.md §7).
pub fn associations(plan: &Plan) -> String {
    #[derive(serde::Serialize)]
    struct File {
        associations: Vec<Association>,
    }
    let list: Vec<Association> = plan
        .rows
        .iter()
        .flat_map(|r| &r.actions)
        .filter_map(|a| match a {
            Action::CreateAssociation {
                namespace,
                service_account,
                role_arn,
            } => Some(Association::new(
                namespace.clone(),
                service_account.clone(),
                role_arn.clone(),
            )),
            _ => None,
        })
        .collect();
    serde_yaml_ng::to_string(&File { associations: list }).expect("associations serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_a_shell() {
        assert_eq!(shell_quote("team-a"), "team-a");
        assert_eq!(shell_quote("{\"a\":1}"), "'{\"a\":1}'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {}", shell_quote("a 'b' $c {\"d\"}")))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), "a 'b' $c {\"d\"}");
    }

    #[test]
    fn long_cells_are_cut_with_an_ellipsis() {
        let t = columns(
            &[
                vec!["abcdef".into(), "x".into()],
                vec!["a".into(), "y".into()],
            ],
            &[4, 4],
        );
        assert_eq!(t, "abc…  x\na     y\n");
    }
}
