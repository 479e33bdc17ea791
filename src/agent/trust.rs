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
