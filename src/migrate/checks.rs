//! The checks of docs/contract.md §10 (pure): one [`Row`] per annotated ServiceAccount from the
//! [`Inventory`], with what blocks, what needs care, and the actions that migrate it.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::inventory::{
    EnvValue, Inventory, PodEntry, RoleState, TargetInfo, WorkloadRef, role_parts,
};
use super::rows::{
    Action, AssociationState, Finding, Plan, Row, RowStatus, Severity, Totals, TrustCheck,
    TrustState,
};
use super::trust::{self, TrustEdit};
use crate::admission::mutate::{
    ENV_AUTH_TOKEN_FILE, ENV_FULL_URI, ENV_ROLE_ARN, ENV_WEB_IDENTITY_TOKEN_FILE,
};
use crate::admission::proxy::{self, AGENT_ADDRESSES};
use crate::identity::sa::{AUDIENCE, STS_REGIONAL_ENDPOINTS, TOKEN_EXPIRATION};

/// EKS allows this many Pod Identity associations per cluster (a default quota).
pub const ASSOCIATION_LIMIT: usize = 5000;

/// Settings of the checks.
#[derive(Debug, Clone)]
pub struct CheckSettings {
    /// Trust policy size quota (IAM's default 2,048 unless raised).
    pub trust_size_limit: usize,
    pub association_limit: usize,
    pub target: TargetInfo,
}

impl CheckSettings {
    pub fn new(target: TargetInfo) -> Self {
        Self {
            trust_size_limit: trust::DEFAULT_SIZE_LIMIT,
            association_limit: ASSOCIATION_LIMIT,
            target,
        }
    }
}

/// Whether any container carries both IRSA variables.
pub fn uses_irsa(pod: &PodEntry) -> bool {
    pod.containers
        .iter()
        .any(|c| c.has(ENV_ROLE_ARN) && c.has(ENV_WEB_IDENTITY_TOKEN_FILE))
}

/// Whether any container carries both Pod Identity variables.
pub fn uses_pod_identity(pod: &PodEntry) -> bool {
    pod.containers
        .iter()
        .any(|c| c.has(ENV_FULL_URI) && c.has(ENV_AUTH_TOKEN_FILE))
}

const STATIC_KEYS: [&str; 2] = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"];
const PROXIES: [&str; 4] = ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"];
const NO_PROXIES: [&str; 2] = ["NO_PROXY", "no_proxy"];

/// Whether a `NO_PROXY` entry covers the agent's IPv4 address (the one every cluster uses).
fn no_proxy_covers(entry: &str) -> bool {
    let agent = AGENT_ADDRESSES[0].parse().expect("a constant address");
    proxy::covers(entry, agent)
}

/// Containers (names) that set a proxy without exempting the agent's address.
fn proxy_without_no_proxy(pod: &PodEntry) -> Vec<String> {
    pod.containers
        .iter()
        .filter(|c| {
            PROXIES.iter().any(|p| {
                matches!(c.get(p), Some(EnvValue::From))
                    || matches!(c.get(p), Some(EnvValue::Value(v)) if !v.trim().is_empty())
            })
        })
        .filter(|c| {
            !NO_PROXIES.iter().any(|n| match c.get(n) {
                Some(EnvValue::Value(v)) => v.split(',').any(no_proxy_covers),
                // Set from a Secret or ConfigMap: cannot tell, give it the benefit of the doubt
                // only if it is there at all (reported as care by the caller).
                Some(EnvValue::From) => true,
                None => false,
            })
        })
        .map(|c| c.name.clone())
        .collect()
}

/// Where Pod Identity does not serve the pod: `Some("Windows")`/`Some("Fargate")`.
fn unsupported_node(pod: &PodEntry, inv: &Inventory) -> Option<&'static str> {
    let node = pod.node_name.as_ref().and_then(|n| inv.nodes.get(n));
    if pod.fargate_profile.is_some() || node.is_some_and(|n| n.fargate) {
        return Some("Fargate");
    }
    let os = node
        .and_then(|n| n.os.as_deref())
        .or(pod.os_selector.as_deref());
    if os.is_some_and(|o| o.eq_ignore_ascii_case("windows")) {
        return Some("Windows");
    }
    None
}

fn names(pods: &[&PodEntry]) -> Vec<String> {
    pods.iter().map(|p| p.name.clone()).collect()
}

fn list(items: &[String], max: usize) -> String {
    let mut s = items
        .iter()
        .take(max)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > max {
        s.push_str(&format!(" and {} more", items.len() - max));
    }
    s
}

/// Checks one ServiceAccount's trust policy.
fn check_trust(
    role_arn: &str,
    role_name: Option<&str>,
    inv: &Inventory,
    limit: usize,
    findings: &mut Vec<Finding>,
    actions: &mut Vec<Action>,
) -> TrustCheck {
    let mut check = TrustCheck {
        state: TrustState::NotChecked,
        size: None,
        limit,
        room: None,
        add: None,
    };
    let Some(role_name) = role_name else {
        return check;
    };
    match inv.roles.get(role_arn) {
        None => {
            check.state = TrustState::Unreadable;
            findings.push(Finding::block("role-unreadable", "the role was not read"));
        }
        Some(RoleState::NotFound) => {
            check.state = TrustState::RoleNotFound;
            findings.push(Finding::block(
                "role-not-found",
                format!("IAM role `{role_name}` does not exist (in the account the IAM credentials reach); fix the annotation or create the role"),
            ));
        }
        Some(RoleState::Unreadable { message }) => {
            check.state = TrustState::Unreadable;
            findings.push(Finding::block("role-unreadable", message.clone()));
        }
        Some(RoleState::Found { trust_policy }) => match trust::parse(trust_policy) {
            Err(e) => {
                check.state = TrustState::Unreadable;
                findings.push(Finding::block("trust-invalid", e.to_string()));
            }
            Ok(policy) => {
                let (after, edit) = trust::with_pod_identity(&policy);
                let size = trust::iam_size(&after);
                check.size = Some(size);
                check.room = Some(limit as i64 - size as i64);
                check.state = match edit {
                    TrustEdit::None => TrustState::Present,
                    TrustEdit::AddTagSession => {
                        check.add = Some(Value::String(trust::TAG_SESSION.into()));
                        TrustState::AddTagSession
                    }
                    TrustEdit::AddStatement => {
                        check.add = Some(trust::pod_identity_statement());
                        TrustState::AddStatement
                    }
                };
                if edit != TrustEdit::None {
                    if size > limit {
                        findings.push(Finding::block(
                            "trust-too-large",
                            format!(
                                "the trust policy would be {size} characters, over its limit of {limit}: remove unused statements (or raise the quota and give --trust-policy-limit)"
                            ),
                        ));
                    } else {
                        actions.push(Action::UpdateTrust {
                            role_name: role_name.to_string(),
                            role_arn: role_arn.to_string(),
                            policy: trust::render(&after),
                        });
                    }
                }
            }
        },
    }
    check
}

/// Builds the plan from an inventory.
pub fn plan(inv: &Inventory, settings: &CheckSettings) -> Plan {
    let mut rows = Vec::with_capacity(inv.service_accounts.len());
    let mut notes = Vec::new();
    if inv.cluster_account.is_none() {
        notes.push(
            "the cluster's AWS account is unknown (give --cluster-account): cross-account roles are not detected".to_string(),
        );
    }
    if !inv.nodes_listed {
        notes.push(
            "nodes could not be listed: Windows and Fargate are told from pod selectors and labels only".to_string(),
        );
    }
    let prefix = &inv.annotation_prefix;
    let mut creations_left = settings
        .association_limit
        .saturating_sub(inv.associations.total);
    for sa in &inv.service_accounts {
        let mut findings = Vec::new();
        let mut actions = Vec::new();
        // A value that is not a role ARN still gets its row, shown safely (escaped, cut), and
        // blocks it: nothing is done for it, and verify counts it.
        let role_arn = match (&sa.info.role_arn, sa.invalid_role_arn(prefix)) {
            (Some(arn), _) => arn.clone(),
            (None, Some((value, e))) => {
                findings.push(Finding::block(
                    "invalid-role-arn",
                    format!(
                        "`{prefix}/role-arn` {e}: `{value}`; fix the annotation (arn:aws:iam::ACCOUNT:role/NAME) or remove it"
                    ),
                ));
                value
            }
            (None, None) => continue,
        };
        let parts = sa.info.role_arn.as_deref().and_then(role_parts);
        let role_account = parts.map(|(a, _)| a.to_string());

        let association = match inv.associations.get(&sa.namespace, &sa.name) {
            None => AssociationState::Missing,
            Some(a) if a.role_arn == role_arn => AssociationState::SameRole {
                association_id: a.association_id.clone(),
                policy: a.policy.clone(),
            },
            Some(a) => {
                findings.push(Finding::block(
                    "association-conflict",
                    format!(
                        "an association already gives this ServiceAccount role `{}` (the annotation says `{role_arn}`); it wins over the annotation. Decide which role is right: delete the association or change the annotation",
                        a.role_arn
                    ),
                ));
                AssociationState::Conflict {
                    role_arn: a.role_arn.clone(),
                    policy: a.policy.clone(),
                }
            }
        };
        if let Some(policy) = inv
            .associations
            .get(&sa.namespace, &sa.name)
            .and_then(|a| a.policy.as_deref())
        {
            findings.push(Finding::care(
                "session-policy",
                format!(
                    "the association has an inline session policy ({} characters): the pods' credentials are the role's scoped down by it, narrower than with IRSA; check that the workload needs nothing outside it",
                    policy.chars().count()
                ),
            ));
        }

        let cross_account =
            matches!((&role_account, &inv.cluster_account), (Some(r), Some(c)) if r != c);
        if let (true, Some(role), Some(cluster)) =
            (cross_account, &role_account, &inv.cluster_account)
        {
            findings.push(Finding::block(
                "cross-account",
                format!(
                    "the role is in account {role}, the cluster in {cluster}: Pod Identity needs a role in {cluster} as roleArn with this role as targetRoleArn (its trust policy must allow that role sts:AssumeRole and sts:TagSession); create the association by hand"
                ),
            ));
        }

        let trust = check_trust(
            &role_arn,
            parts.map(|(_, n)| n).filter(|_| !cross_account),
            inv,
            settings.trust_size_limit,
            &mut findings,
            &mut actions,
        );

        for (name, what) in [
            (
                AUDIENCE,
                "Pod Identity tokens always have the audience pods.eks.amazonaws.com",
            ),
            (
                TOKEN_EXPIRATION,
                "Pod Identity token lifetimes are not set per ServiceAccount",
            ),
            (
                STS_REGIONAL_ENDPOINTS,
                "Pod Identity credentials do not come from STS in the pod",
            ),
        ] {
            let key = format!("{prefix}/{name}");
            if let Some(v) = sa.annotations.get(&key) {
                findings.push(Finding::care(
                    "irsa-annotation",
                    format!("`{key}: {v}` does not carry over: {what}"),
                ));
            }
        }

        let pods: Vec<&PodEntry> = inv.pods_of(&sa.namespace, &sa.name).collect();
        let mut workloads: BTreeSet<WorkloadRef> =
            pods.iter().filter_map(|p| p.owner.clone()).collect();
        workloads.extend(
            inv.templates
                .iter()
                .filter(|t| t.workload.namespace == sa.namespace && t.service_account == sa.name)
                .map(|t| t.workload.clone()),
        );

        let with_keys: Vec<&PodEntry> = pods
            .iter()
            .copied()
            .filter(|p| {
                p.containers
                    .iter()
                    .any(|c| STATIC_KEYS.iter().any(|k| c.has(k)))
            })
            .collect();
        if !with_keys.is_empty() {
            findings.push(Finding::care(
                "static-keys",
                format!(
                    "pods with AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in env (they win over both IRSA and Pod Identity): {}",
                    list(&names(&with_keys), 5)
                ),
            ));
        }
        if pods.iter().any(|p| p.env_from) {
            findings.push(Finding::care(
                "env-from",
                "pods take env from Secrets or ConfigMaps (envFrom), not read here: check them for static keys and proxies",
            ));
        }
        let proxied: Vec<String> = pods
            .iter()
            .filter_map(|p| {
                let c = proxy_without_no_proxy(p);
                (!c.is_empty()).then(|| format!("{} ({})", p.name, c.join(", ")))
            })
            .collect();
        if !proxied.is_empty() {
            findings.push(Finding::block(
                "proxy",
                format!(
                    "HTTP(S)_PROXY set without {} in NO_PROXY: credential requests to the Pod Identity Agent would go to the proxy; add it to NO_PROXY first: {}",
                    AGENT_ADDRESSES[0],
                    list(&proxied, 5)
                ),
            ));
        }
        let mut unsupported: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for p in &pods {
            if let Some(kind) = unsupported_node(p, inv) {
                unsupported.entry(kind).or_default().push(p.name.clone());
            }
        }
        for (kind, pods) in unsupported {
            findings.push(Finding::block(
                if kind == "Windows" { "windows-node" } else { "fargate-node" },
                format!(
                    "pods on {kind} nodes, where Pod Identity does not serve credentials (keep IRSA for them): {}",
                    list(&pods, 5)
                ),
            ));
        }

        let irsa_pods: Vec<&PodEntry> = pods
            .iter()
            .copied()
            .filter(|p| uses_irsa(p) && !uses_pod_identity(p))
            .collect();
        // A restart matters once the association is (or will be) in place.
        let migrates = matches!(association, AssociationState::SameRole { .. })
            || !findings.iter().any(|f| f.severity == Severity::Block);
        if !irsa_pods.is_empty() && migrates {
            let restartable: Vec<String> = irsa_pods
                .iter()
                .filter_map(|p| p.owner.as_ref().filter(|o| o.kind.restartable()))
                .map(ToString::to_string)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let by_hand: Vec<String> = irsa_pods
                .iter()
                .filter(|p| !p.owner.as_ref().is_some_and(|o| o.kind.restartable()))
                .map(|p| p.name.clone())
                .collect();
            let mut message = format!(
                "{} running pods use IRSA until restarted (the SDKs read web identity first)",
                irsa_pods.len()
            );
            if !restartable.is_empty() {
                message.push_str(&format!(
                    "; apply --restart-workloads restarts {}",
                    list(&restartable, 5)
                ));
            }
            if !by_hand.is_empty() {
                message.push_str(&format!("; restart by hand: {}", list(&by_hand, 5)));
            }
            findings.push(Finding::care("restart-needed", message));
        }

        if association == AssociationState::Missing && parts.is_some() {
            if creations_left == 0 {
                findings.push(Finding::block(
                    "association-limit",
                    format!(
                        "the cluster would pass {} Pod Identity associations (EKS's limit); ask for a higher quota",
                        settings.association_limit
                    ),
                ));
            } else if !findings.iter().any(|f| f.severity == Severity::Block) {
                creations_left -= 1;
                actions.push(Action::CreateAssociation {
                    namespace: sa.namespace.clone(),
                    service_account: sa.name.clone(),
                    role_arn: role_arn.clone(),
                });
            }
        }

        let unreadable = matches!(trust.state, TrustState::Unreadable);
        let blocked = findings.iter().any(|f| f.severity == Severity::Block);
        let status = if unreadable {
            RowStatus::Unreadable
        } else if blocked {
            RowStatus::Blocked
        } else if actions.is_empty() {
            RowStatus::Done
        } else {
            RowStatus::Ready
        };
        if blocked {
            // A blocked row changes nothing (not even its trust policy).
            actions.clear();
        }
        rows.push(Row {
            namespace: sa.namespace.clone(),
            service_account: sa.name.clone(),
            role_arn,
            association,
            trust,
            role_account,
            pods: names(&pods),
            pods_using_irsa: names(&irsa_pods),
            workloads: workloads.into_iter().collect(),
            findings,
            actions,
            status,
        });
    }
    let totals = totals(&rows, inv, settings);
    Plan {
        target: settings.target.clone(),
        cluster_account: inv.cluster_account.clone(),
        rows,
        totals,
        notes,
    }
}

fn totals(rows: &[Row], inv: &Inventory, settings: &CheckSettings) -> Totals {
    let count = |s: RowStatus| rows.iter().filter(|r| r.status == s).count();
    let trust_roles: BTreeSet<&str> = rows
        .iter()
        .flat_map(|r| &r.actions)
        .filter_map(|a| match a {
            Action::UpdateTrust { role_arn, .. } => Some(role_arn.as_str()),
            _ => None,
        })
        .collect();
    Totals {
        service_accounts: rows.len(),
        done: count(RowStatus::Done),
        ready: count(RowStatus::Ready),
        blocked: count(RowStatus::Blocked),
        unreadable: count(RowStatus::Unreadable),
        pods: rows.iter().map(|r| r.pods.len()).sum(),
        pods_using_irsa: rows.iter().map(|r| r.pods_using_irsa.len()).sum(),
        associations_existing: inv.associations.total,
        associations_to_create: rows
            .iter()
            .flat_map(|r| &r.actions)
            .filter(|a| matches!(a, Action::CreateAssociation { .. }))
            .count(),
        association_limit: settings.association_limit,
        trust_updates: trust_roles.len(),
    }
}
