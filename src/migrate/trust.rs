//! Role trust policies (pure): does a role trust Pod Identity, the edit that makes it do so,
//! the edit that drops its IRSA (OIDC) trust for one ServiceAccount (of one cluster's OIDC
//! issuer only: another cluster's trust of the same ServiceAccount is kept), and the size IAM
//! counts.
//!
//! Edits are semantic: a statement that already allows `pods.eks.amazonaws.com` is extended
//! (`sts:TagSession` added) rather than a second one appended, so re-running never grows the
//! policy.

use serde_json::{Value, json};

/// The service principal Pod Identity assumes roles as.
pub const POD_IDENTITY_PRINCIPAL: &str = "pods.eks.amazonaws.com";
pub const ASSUME_ROLE: &str = "sts:AssumeRole";
pub const TAG_SESSION: &str = "sts:TagSession";
const WEB_IDENTITY: &str = "sts:AssumeRoleWithWebIdentity";

/// IAM's default quota for a role trust policy, in characters without whitespace.
pub const DEFAULT_SIZE_LIMIT: usize = 2048;

/// The statement added to a role that lacks Pod Identity trust.
pub fn pod_identity_statement() -> Value {
    json!({
        "Effect": "Allow",
        "Principal": { "Service": POD_IDENTITY_PRINCIPAL },
        "Action": [ASSUME_ROLE, TAG_SESSION],
    })
}

/// Why a trust policy could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    #[error("the trust policy is not JSON: {0}")]
    NotJson(String),
    #[error("the trust policy has no Statement list")]
    NoStatements,
}

/// The change a trust policy needs for Pod Identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum TrustEdit {
    /// Already allows `sts:AssumeRole` and `sts:TagSession` for Pod Identity.
    None,
    /// A statement allows Pod Identity `sts:AssumeRole` but not `sts:TagSession`: add it there.
    AddTagSession,
    /// No statement allows Pod Identity: append [`pod_identity_statement`].
    AddStatement,
}

/// Parses a trust policy as `GetRole` returns it: URL-encoded JSON (IAM) or plain JSON.
pub fn parse(document: &str) -> Result<Value, TrustError> {
    let trimmed = document.trim();
    let decoded;
    let text = if trimmed.starts_with('{') {
        trimmed
    } else {
        decoded = percent_encoding::percent_decode_str(trimmed)
            .decode_utf8()
            .map_err(|e| TrustError::NotJson(e.to_string()))?;
        decoded.as_ref()
    };
    let v: Value = serde_json::from_str(text).map_err(|e| TrustError::NotJson(e.to_string()))?;
    match v.get("Statement") {
        Some(Value::Array(_) | Value::Object(_)) => Ok(v),
        _ => Err(TrustError::NoStatements),
    }
}

/// The size IAM counts against the quota: the policy's characters without whitespace.
pub fn iam_size(policy: &Value) -> usize {
    policy
        .to_string()
        .chars()
        .filter(|c| !c.is_whitespace())
        .count()
}

fn statements(policy: &Value) -> Vec<&Value> {
    match policy.get("Statement") {
        Some(Value::Array(list)) => list.iter().collect(),
        Some(o @ Value::Object(_)) => vec![o],
        _ => Vec::new(),
    }
}

/// Values of a string-or-list field.
fn values(v: Option<&Value>) -> Vec<&str> {
    match v {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// Whether an `Action` entry grants `action` (IAM action names are case-insensitive).
fn grants(entry: &str, action: &str) -> bool {
    entry == "*" || entry.eq_ignore_ascii_case(action) || entry.eq_ignore_ascii_case("sts:*")
}

fn is_allow(statement: &Value) -> bool {
    statement.get("Effect").and_then(Value::as_str) == Some("Allow")
}

/// An Allow statement whose principal includes the Pod Identity service.
fn trusts_pod_identity(statement: &Value) -> bool {
    is_allow(statement)
        && values(statement.get("Principal").and_then(|p| p.get("Service")))
            .contains(&POD_IDENTITY_PRINCIPAL)
}

fn statement_grants(statement: &Value, action: &str) -> bool {
    values(statement.get("Action"))
        .iter()
        .any(|a| grants(a, action))
}

/// What the policy lacks for Pod Identity.
pub fn needed_edit(policy: &Value) -> TrustEdit {
    let pod_identity: Vec<&Value> = statements(policy)
        .into_iter()
        .filter(|s| trusts_pod_identity(s))
        .collect();
    let assume = pod_identity
        .iter()
        .any(|s| statement_grants(s, ASSUME_ROLE));
    let tag = pod_identity
        .iter()
        .any(|s| statement_grants(s, TAG_SESSION));
    match (assume, tag) {
        (true, true) => TrustEdit::None,
        (true, false) => TrustEdit::AddTagSession,
        // TagSession alone (or nothing): a full statement is the clear fix.
        (false, _) => TrustEdit::AddStatement,
    }
}

fn statements_mut(policy: &mut Value) -> Option<&mut Vec<Value>> {
    let map = policy.as_object_mut()?;
    if let Some(single @ Value::Object(_)) = map.get_mut("Statement") {
        let one = single.take();
        *single = Value::Array(vec![one]);
    }
    map.get_mut("Statement")?.as_array_mut()
}

/// The policy with Pod Identity trust, and the edit made ([`TrustEdit::None`]: unchanged).
pub fn with_pod_identity(policy: &Value) -> (Value, TrustEdit) {
    let edit = needed_edit(policy);
    let mut out = policy.clone();
    match edit {
        TrustEdit::None => {}
        TrustEdit::AddTagSession => {
            let list = statements_mut(&mut out).expect("checked by needed_edit");
            let s = list
                .iter_mut()
                .find(|s| trusts_pod_identity(s) && statement_grants(s, ASSUME_ROLE))
                .expect("checked by needed_edit");
            let actions: Vec<Value> = values(s.get("Action"))
                .into_iter()
                .map(|a| Value::String(a.to_string()))
                .chain([Value::String(TAG_SESSION.into())])
                .collect();
            s["Action"] = Value::Array(actions);
        }
        TrustEdit::AddStatement => match statements_mut(&mut out) {
            Some(list) => list.push(pod_identity_statement()),
            None => out["Statement"] = Value::Array(vec![pod_identity_statement()]),
        },
    }
    (out, edit)
}

/// The `sub` a web identity token of `namespace`/`service_account` carries.
pub fn oidc_subject(namespace: &str, service_account: &str) -> String {
    format!("system:serviceaccount:{namespace}:{service_account}")
}

/// The change [`without_oidc_trust`] makes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum OidcEdit {
    /// No web-identity statement names the ServiceAccount.
    None,
    /// Statements (or subjects of a list) naming only this ServiceAccount were removed.
    Removed { statements: usize, subjects: usize },
    /// A statement matches the ServiceAccount by a pattern (or without a `sub` condition):
    /// removing it would cut off others; left for a person to edit.
    Shared { reason: String },
}

/// An issuer URL as IAM names it in an OIDC provider's ARN and in condition keys: `host/path`,
/// without the scheme or a trailing slash.
pub fn issuer_host_path(issuer: &str) -> &str {
    let i = issuer.trim();
    i.strip_prefix("https://")
        .unwrap_or(i)
        .trim_end_matches('/')
}

/// The OIDC providers a web-identity statement federates (`arn:…:oidc-provider/HOST/PATH`).
fn federated(statement: &Value) -> Vec<&str> {
    values(statement.get("Principal").and_then(|p| p.get("Federated")))
}

/// Whether a web-identity statement trusts the provider of `issuer` (`host/path`).
fn trusts_issuer(statement: &Value, host_path: &str) -> bool {
    federated(statement).iter().any(|p| {
        p.rsplit_once(":oidc-provider/")
            .is_some_and(|(_, hp)| hp.eq_ignore_ascii_case(host_path))
    })
}

/// An Allow statement for `sts:AssumeRoleWithWebIdentity` from a federated principal.
fn is_web_identity(statement: &Value) -> bool {
    is_allow(statement)
        && statement
            .get("Principal")
            .and_then(|p| p.get("Federated"))
            .is_some()
        && statement_grants(statement, WEB_IDENTITY)
}

/// `(operator, key, values)` of each `…:sub` condition.
fn sub_conditions(statement: &Value) -> Vec<(&str, &str, Vec<&str>)> {
    let Some(Value::Object(ops)) = statement.get("Condition") else {
        return Vec::new();
    };
    ops.iter()
        .filter_map(|(op, keys)| Some((op.as_str(), keys.as_object()?)))
        .flat_map(|(op, keys)| {
            keys.iter()
                .filter(|(k, _)| k.ends_with(":sub"))
                .map(move |(k, v)| (op, k.as_str(), values(Some(v))))
        })
        .collect()
}

/// The policy without the IRSA trust of one ServiceAccount through the OIDC provider of
/// `issuer` (this cluster's): a web-identity statement of that provider whose `sub` names only
/// it is removed; from a list of subjects only its entry is removed. A statement that matches
/// it by pattern (`StringLike`) or has no `sub` is left, and said so. Statements of other
/// providers (other clusters) are never touched: [`other_clusters_trust`] lists them.
pub fn without_oidc_trust(
    policy: &Value,
    namespace: &str,
    service_account: &str,
    issuer: &str,
) -> (Value, OidcEdit) {
    let host_path = issuer_host_path(issuer);
    let subject = oidc_subject(namespace, service_account);
    let mut out = policy.clone();
    let Some(list) = statements_mut(&mut out) else {
        return (policy.clone(), OidcEdit::None);
    };
    let (mut removed, mut subjects) = (0, 0);
    let mut shared = None;
    let mut keep = Vec::with_capacity(list.len());
    for mut s in list.drain(..) {
        if !is_web_identity(&s) || !trusts_issuer(&s, host_path) {
            keep.push(s);
            continue;
        }
        let subs = sub_conditions(&s);
        if subs.is_empty() {
            shared.get_or_insert_with(|| {
                "a web-identity statement has no `sub` condition (it trusts every ServiceAccount)"
                    .to_string()
            });
            keep.push(s);
            continue;
        }
        let exact = subs
            .iter()
            .filter(|(op, _, vals)| *op == "StringEquals" && vals.contains(&subject.as_str()))
            .map(|(op, key, vals)| (op.to_string(), key.to_string(), vals.len()))
            .next();
        let pattern = subs.iter().any(|(op, _, vals)| {
            *op != "StringEquals"
                && vals
                    .iter()
                    .any(|v| v.contains(['*', '?']) || *v == subject.as_str())
        });
        match exact {
            Some(_) if pattern => {
                shared.get_or_insert_with(|| {
                    "a web-identity statement also matches subjects by pattern".to_string()
                });
                keep.push(s);
            }
            Some((_, _, 1)) => removed += 1,
            Some((op, key, _)) => {
                let cond = &mut s["Condition"][op.as_str()][key.as_str()];
                if let Value::Array(vals) = cond {
                    vals.retain(|v| v.as_str() != Some(subject.as_str()));
                }
                subjects += 1;
                keep.push(s);
            }
            None if pattern => {
                shared.get_or_insert_with(|| {
                    format!("a web-identity statement matches `{subject}` by pattern")
                });
                keep.push(s);
            }
            None => keep.push(s),
        }
    }
    *list = keep;
    if removed + subjects > 0 {
        (
            out,
            OidcEdit::Removed {
                statements: removed,
                subjects,
            },
        )
    } else if let Some(reason) = shared {
        (policy.clone(), OidcEdit::Shared { reason })
    } else {
        (policy.clone(), OidcEdit::None)
    }
}

/// The OIDC providers other than `issuer`'s whose web-identity statements name
/// `namespace`/`service_account` (exactly or by pattern): other clusters' trust, which removing
/// this cluster's keeps.
pub fn other_clusters_trust(
    policy: &Value,
    namespace: &str,
    service_account: &str,
    issuer: &str,
) -> Vec<String> {
    let host_path = issuer_host_path(issuer);
    let subject = oidc_subject(namespace, service_account);
    let mut out: Vec<String> = statements(policy)
        .into_iter()
        .filter(|s| is_web_identity(s) && !trusts_issuer(s, host_path))
        .filter(|s| {
            sub_conditions(s).iter().any(|(_, _, vals)| {
                vals.iter()
                    .any(|v| *v == subject.as_str() || v.contains(['*', '?']))
            })
        })
        .flat_map(federated)
        .map(String::from)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Whether any web-identity statement (IRSA trust) names `namespace`/`service_account`.
pub fn has_oidc_trust(policy: &Value, namespace: &str, service_account: &str) -> bool {
    let subject = oidc_subject(namespace, service_account);
    statements(policy).into_iter().any(|s| {
        is_web_identity(s)
            && sub_conditions(s)
                .iter()
                .any(|(_, _, vals)| vals.contains(&subject.as_str()))
    })
}

/// A compact policy document, as sent to `UpdateAssumeRolePolicy`.
pub fn render(policy: &Value) -> String {
    policy.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUER: &str = "https://oidc.eks.us-east-1.amazonaws.com/id/ABC";

    fn irsa(sub: Value, op: &str) -> Value {
        json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Principal": {"Federated": "arn:aws:iam::111122223333:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/ABC"},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {op: {
                    "oidc.eks.us-east-1.amazonaws.com/id/ABC:sub": sub,
                    "oidc.eks.us-east-1.amazonaws.com/id/ABC:aud": "sts.amazonaws.com"
                }}
            }]
        })
    }

    #[test]
    fn adds_the_statement_once() {
        let p = irsa(json!("system:serviceaccount:a:b"), "StringEquals");
        assert_eq!(needed_edit(&p), TrustEdit::AddStatement);
        let (once, edit) = with_pod_identity(&p);
        assert_eq!(edit, TrustEdit::AddStatement);
        assert_eq!(once["Statement"].as_array().unwrap().len(), 2);
        let (twice, edit) = with_pod_identity(&once);
        assert_eq!(edit, TrustEdit::None);
        assert_eq!(twice, once);
    }

    #[test]
    fn adds_tag_session_to_the_existing_statement() {
        let p = json!({"Version": "2012-10-17", "Statement": {
            "Effect": "Allow", "Principal": {"Service": ["ec2.amazonaws.com", "pods.eks.amazonaws.com"]},
            "Action": "sts:AssumeRole"}});
        assert_eq!(needed_edit(&p), TrustEdit::AddTagSession);
        let (out, _) = with_pod_identity(&p);
        assert_eq!(out["Statement"].as_array().unwrap().len(), 1);
        assert_eq!(
            out["Statement"][0]["Action"],
            json!(["sts:AssumeRole", "sts:TagSession"])
        );
        assert_eq!(needed_edit(&out), TrustEdit::None);
    }

    #[test]
    fn wildcards_and_case_count_and_deny_does_not() {
        let allow = |action: Value| json!({"Statement": [{"Effect": "Allow", "Principal": {"Service": "pods.eks.amazonaws.com"}, "Action": action}]});
        assert_eq!(needed_edit(&allow(json!("sts:*"))), TrustEdit::None);
        assert_eq!(
            needed_edit(&allow(json!(["STS:AssumeRole", "sts:tagsession"]))),
            TrustEdit::None
        );
        let mut deny = allow(json!("sts:*"));
        deny["Statement"][0]["Effect"] = json!("Deny");
        assert_eq!(needed_edit(&deny), TrustEdit::AddStatement);
    }

    #[test]
    fn reads_url_encoded_documents_and_rejects_junk() {
        let enc = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%5D%7D";
        assert_eq!(parse(enc).unwrap()["Statement"], json!([]));
        assert!(matches!(parse("{"), Err(TrustError::NotJson(_))));
        assert_eq!(parse("{\"Version\":1}"), Err(TrustError::NoStatements));
    }

    #[test]
    fn size_ignores_whitespace_like_iam() {
        let p = json!({"A": "b c"});
        // {"A":"bc"} without the space inside the string either.
        assert_eq!(iam_size(&p), 10);
        let (with, _) = with_pod_identity(&json!({"Version": "2012-10-17", "Statement": []}));
        assert_eq!(
            iam_size(&with),
            render(&with).chars().filter(|c| !c.is_whitespace()).count()
        );
    }

    #[test]
    fn oidc_trust_is_removed_for_one_subject_only() {
        let p = irsa(json!("system:serviceaccount:a:b"), "StringEquals");
        assert!(has_oidc_trust(&p, "a", "b"));
        let (out, edit) = without_oidc_trust(&p, "a", "b", ISSUER);
        assert_eq!(
            edit,
            OidcEdit::Removed {
                statements: 1,
                subjects: 0
            }
        );
        assert_eq!(out["Statement"], json!([]));
        assert!(!has_oidc_trust(&out, "a", "b"));

        let shared = irsa(
            json!(["system:serviceaccount:a:b", "system:serviceaccount:a:c"]),
            "StringEquals",
        );
        let (out, edit) = without_oidc_trust(&shared, "a", "b", ISSUER);
        assert_eq!(
            edit,
            OidcEdit::Removed {
                statements: 0,
                subjects: 1
            }
        );
        assert!(has_oidc_trust(&out, "a", "c") && !has_oidc_trust(&out, "a", "b"));

        let other = irsa(json!("system:serviceaccount:a:c"), "StringEquals");
        assert_eq!(
            without_oidc_trust(&other, "a", "b", ISSUER).1,
            OidcEdit::None
        );

        let pattern = irsa(json!("system:serviceaccount:a:*"), "StringLike");
        let (out, edit) = without_oidc_trust(&pattern, "a", "b", ISSUER);
        assert!(matches!(edit, OidcEdit::Shared { .. }), "{edit:?}");
        assert_eq!(out, pattern);
    }

    #[test]
    fn another_clusters_trust_of_the_same_service_account_is_kept() {
        let ours = irsa(json!("system:serviceaccount:a:b"), "StringEquals");
        let mut theirs = ours["Statement"][0]
            .to_string()
            .replace("/id/ABC", "/id/OTHER");
        theirs = theirs.replace("us-east-1", "eu-west-1");
        let theirs: Value = serde_json::from_str(&theirs).unwrap();
        let mut both = ours.clone();
        both["Statement"]
            .as_array_mut()
            .unwrap()
            .push(theirs.clone());
        let (out, edit) = without_oidc_trust(&both, "a", "b", &format!("{ISSUER}/"));
        assert_eq!(
            edit,
            OidcEdit::Removed {
                statements: 1,
                subjects: 0
            }
        );
        assert_eq!(out["Statement"], json!([theirs]));
        assert_eq!(
            other_clusters_trust(&both, "a", "b", ISSUER),
            ["arn:aws:iam::111122223333:oidc-provider/oidc.eks.eu-west-1.amazonaws.com/id/OTHER"]
        );
        // Another cluster's issuer: this one's statement is theirs to keep.
        let elsewhere = "https://oidc.eks.eu-west-1.amazonaws.com/id/OTHER";
        assert_eq!(
            without_oidc_trust(&ours, "a", "b", elsewhere).1,
            OidcEdit::None
        );
    }
}
