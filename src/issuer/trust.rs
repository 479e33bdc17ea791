//! A role's trust policy read as STS applies it to a web-identity token: a statement allowing
//! `sts:AssumeRoleWithWebIdentity` for the provider, whose `sub` and `aud` conditions the
//! ServiceAccount's tokens meet.

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("role {role}: its trust policy is not JSON")]
    Malformed { role: String },
    #[error(
        "role {role}: no trust statement allows sts:AssumeRoleWithWebIdentity for {provider}: add \
         one (docs/irsa-self-managed.md)"
    )]
    NoStatement { role: String, provider: String },
    #[error(
        "role {role}: the trust condition {key} is {got:?}, but the ServiceAccount's tokens carry \
         sub {want:?}"
    )]
    WrongSub {
        role: String,
        key: String,
        got: Vec<String>,
        want: String,
    },
    #[error(
        "role {role}: no {key} condition: any ServiceAccount of the cluster could assume it; \
         add StringEquals {key} = {want:?}"
    )]
    NoSub {
        role: String,
        key: String,
        want: String,
    },
    #[error("role {role}: the trust condition {key} is {got:?}, not the audience {want:?}")]
    WrongAud {
        role: String,
        key: String,
        got: Vec<String>,
        want: String,
    },
}

/// One string or a list of them, as IAM policies write either.
fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// The values of condition `key` under the string operators STS evaluates, with whether they
/// are patterns (`StringLike`).
fn condition(statement: &Value, key: &str) -> Option<(Vec<String>, bool)> {
    let conditions = statement.get("Condition")?.as_object()?;
    for (op, body) in conditions {
        let like = op.contains("Like");
        if let Some((_, v)) = body
            .as_object()
            .and_then(|b| b.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)))
        {
            return Some((strings(Some(v)), like));
        }
    }
    None
}

fn matches(values: &[String], like: bool, want: &str) -> bool {
    values.iter().any(|v| {
        if like {
            globset::Glob::new(v).is_ok_and(|g| g.compile_matcher().is_match(want))
        } else {
            v == want
        }
    })
}

/// Checks `policy` (the JSON document, URL-decoded) of `role` for tokens of `provider_arn`
/// (whose URL is `provider_url`) with `sub` and `aud`. The first problem found.
pub fn check(
    role: &str,
    policy: &str,
    provider_arn: &str,
    provider_url: &str,
    sub: &str,
    aud: &str,
) -> Result<(), TrustError> {
    let doc: Value = serde_json::from_str(policy).map_err(|_| TrustError::Malformed {
        role: role.to_string(),
    })?;
    let statements = match doc.get("Statement") {
        Some(Value::Array(a)) => a.clone(),
        Some(s) => vec![s.clone()],
        None => Vec::new(),
    };
    let ours: Vec<&Value> = statements
        .iter()
        .filter(|s| s.get("Effect").and_then(Value::as_str) == Some("Allow"))
        .filter(|s| {
            strings(s.get("Action"))
                .iter()
                .any(|a| a == "sts:AssumeRoleWithWebIdentity" || a == "sts:*" || a == "*")
        })
        .filter(|s| {
            strings(s.get("Principal").and_then(|p| p.get("Federated")))
                .iter()
                .any(|p| p == provider_arn)
        })
        .collect();
    let Some(first) = ours.first() else {
        return Err(TrustError::NoStatement {
            role: role.to_string(),
            provider: provider_arn.to_string(),
        });
    };
    let sub_key = format!("{provider_url}:sub");
    let aud_key = format!("{provider_url}:aud");
    // A statement that fully admits the token is enough; otherwise report the first one's fault.
    let verdict = |s: &Value| -> Result<(), TrustError> {
        match condition(s, &sub_key) {
            None => {
                return Err(TrustError::NoSub {
                    role: role.to_string(),
                    key: sub_key.clone(),
                    want: sub.to_string(),
                });
            }
            Some((values, like)) if !matches(&values, like, sub) => {
                return Err(TrustError::WrongSub {
                    role: role.to_string(),
                    key: sub_key.clone(),
                    got: values,
                    want: sub.to_string(),
                });
            }
            Some(_) => {}
        }
        match condition(s, &aud_key) {
            Some((values, like)) if !matches(&values, like, aud) => Err(TrustError::WrongAud {
                role: role.to_string(),
                key: aud_key.clone(),
                got: values,
                want: aud.to_string(),
            }),
            _ => Ok(()),
        }
    };
    if ours.iter().any(|s| verdict(s).is_ok()) {
        return Ok(());
    }
    verdict(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:iam::111122223333:oidc-provider/oidc.example/c1";

    fn policy(sub: &str) -> String {
        serde_json::json!({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Federated": ARN},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {"StringEquals": {
                "oidc.example/c1:sub": sub, "oidc.example/c1:aud": "sts.amazonaws.com"}}}]})
        .to_string()
    }

    #[test]
    fn the_right_sub_passes_and_a_wrong_one_is_named() {
        let want = "system:serviceaccount:apps:web";
        check(
            "r",
            &policy(want),
            ARN,
            "oidc.example/c1",
            want,
            "sts.amazonaws.com",
        )
        .unwrap();
        let e = check(
            "r",
            &policy("system:serviceaccount:apps:other"),
            ARN,
            "oidc.example/c1",
            want,
            "sts.amazonaws.com",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("sub") && e.contains("apps:other") && e.contains(want),
            "{e}"
        );
        let e = check(
            "r",
            &policy(want),
            "arn:other",
            "oidc.example/c1",
            want,
            "sts.amazonaws.com",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("no trust statement"), "{e}");
    }
}
