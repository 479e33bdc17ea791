//! The trust policy an association's role needs when the agent assumes it (docs/contract.md §9): it trusts
//! the agent's own principal, for `sts:AssumeRole` and `sts:TagSession`, only with the session
//! tags of one ServiceAccount, so the role cannot be assumed for another one.

use serde_json::{Value, json};

use crate::identity::role_arn::arn_fields;

/// The role's trust policy document.
pub fn trust_policy(
    agent_principal: &str,
    namespace: &str,
    service_account: &str,
    cluster_name: Option<&str>,
) -> Value {
    let mut conditions = serde_json::Map::new();
    if let Some(cluster) = cluster_name {
        conditions.insert("aws:RequestTag/eks-cluster-name".into(), json!(cluster));
    }
    conditions.insert(
        "aws:RequestTag/kubernetes-namespace".into(),
        json!(namespace),
    );
    conditions.insert(
        "aws:RequestTag/kubernetes-service-account".into(),
        json!(service_account),
    );
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "PodIdentityAgent",
            "Effect": "Allow",
            "Principal": {"AWS": agent_principal},
            "Action": ["sts:AssumeRole", "sts:TagSession"],
            "Condition": {"StringEquals": conditions},
        }]
    })
}

/// The IAM principal to trust for a caller identity ARN: an assumed role's session
/// (`arn:aws:sts::ACCOUNT:assumed-role/NAME/SESSION`) is trusted through its role.
pub fn principal_of_caller(arn: &str) -> String {
    let Some([partition, "sts", _, account, resource]) = arn_fields(arn) else {
        return arn.to_string();
    };
    match resource
        .strip_prefix("assumed-role/")
        .and_then(|r| r.split('/').next())
    {
        Some(role) => format!("arn:{partition}:iam::{account}:role/{role}"),
        None => arn.to_string(),
    }
}

/// A principal that trusts far more than the agent: the session tags are then the only guard,
/// and whoever assumes the role sets them itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BroadPrincipal {
    /// `*` (or a wildcard inside the value): every AWS principal of every account.
    Everyone,
    /// `arn:PARTITION:iam::ACCOUNT:root` or a bare account id: every user and role of the
    /// account whose own IAM policies allow `sts:AssumeRole` on the role.
    AccountRoot { account: String },
}

impl std::fmt::Display for BroadPrincipal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Everyone => write!(
                f,
                "any AWS principal of any account may assume the role with session tags it sets itself"
            ),
            Self::AccountRoot { account } => write!(
                f,
                "every user and role of account {account} allowed sts:AssumeRole by its own IAM policies may assume the role with session tags it sets itself"
            ),
        }
    }
}

/// Whether `principal` (an `AWS` principal value) is [`BroadPrincipal`]; `None` for one user or
/// role.
pub fn broad_principal(principal: &str) -> Option<BroadPrincipal> {
    let p = principal.trim();
    if p.contains(['*', '?']) {
        return Some(BroadPrincipal::Everyone);
    }
    if p.len() == 12 && p.bytes().all(|b| b.is_ascii_digit()) {
        return Some(BroadPrincipal::AccountRoot {
            account: p.to_string(),
        });
    }
    match arn_fields(p) {
        Some([_, "iam", _, account, "root"]) => Some(BroadPrincipal::AccountRoot {
            account: account.to_string(),
        }),
        _ => None,
    }
}

/// `arn:aws:iam::ACCOUNT:role/path/NAME` → `NAME` (what `aws iam` commands take).
pub fn role_name(role_arn: &str) -> &str {
    role_arn.rsplit('/').next().unwrap_or(role_arn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_pins_the_service_account() {
        let p = trust_policy(
            "arn:aws:iam::111122223333:user/pod-identity-agent",
            "team-a",
            "carts",
            Some("kind"),
        );
        let s = &p["Statement"][0];
        assert_eq!(
            s["Principal"]["AWS"],
            "arn:aws:iam::111122223333:user/pod-identity-agent"
        );
        assert_eq!(s["Action"], json!(["sts:AssumeRole", "sts:TagSession"]));
        let c = &s["Condition"]["StringEquals"];
        assert_eq!(c["aws:RequestTag/kubernetes-namespace"], "team-a");
        assert_eq!(c["aws:RequestTag/kubernetes-service-account"], "carts");
        assert_eq!(c["aws:RequestTag/eks-cluster-name"], "kind");
    }

    #[test]
    fn everyone_and_account_roots_are_broad_users_and_roles_are_not() {
        for p in [
            "*",
            " * ",
            "arn:aws:iam::*:root",
            "arn:aws:iam::111122223333:role/*",
        ] {
            assert_eq!(broad_principal(p), Some(BroadPrincipal::Everyone), "{p}");
        }
        for p in [
            "arn:aws:iam::123456789012:root",
            "arn:aws-cn:iam::123456789012:root",
            "123456789012",
        ] {
            assert_eq!(
                broad_principal(p),
                Some(BroadPrincipal::AccountRoot {
                    account: "123456789012".into()
                }),
                "{p}"
            );
        }
        for p in [
            "arn:aws:iam::123456789012:user/agent",
            "arn:aws:iam::123456789012:role/node",
            "arn:aws:iam::123456789012:role/root",
        ] {
            assert_eq!(broad_principal(p), None, "{p}");
        }
    }

    #[test]
    fn callers() {
        assert_eq!(
            principal_of_caller("arn:aws:sts::111122223333:assumed-role/node-role/i-0abc"),
            "arn:aws:iam::111122223333:role/node-role"
        );
        assert_eq!(
            principal_of_caller("arn:aws:iam::111122223333:user/agent"),
            "arn:aws:iam::111122223333:user/agent"
        );
        assert_eq!(
            role_name("arn:aws:iam::111122223333:role/team/carts"),
            "carts"
        );
    }
}
