//! The association's inline session `policy` (docs/associations.md#session-policy): its checks,
//! and the estimate of how much of STS's packed size a session's tags and policy take.
//!
//! STS packs a session's policies and tags into one binary form of bounded size and reports how
//! full it is only as a percentage (`PackedPolicySize`), after the call; the format is not
//! published. The estimate here is a model, tuned to warn before STS refuses, not a limit
//! this project enforces:
//!
//! - the policy counts its minified length against the 2,048 characters STS allows a session
//!   policy's plaintext (the one published number);
//! - the tags count their keys' and values' bytes against [`TAG_BUDGET_BYTES`], chosen so the
//!   six EKS tags of a pod with short names (234 bytes) come to about three quarters, which is
//!   what STS reports for them (aws/containers-roadmap#2413).

use serde_json::Value;

/// The longest session policy STS (and EKS) accept, in characters.
pub const MAX_POLICY_CHARS: usize = 2048;

/// The tag bytes the model gives STS's packed budget (see the module's text).
pub const TAG_BUDGET_BYTES: usize = 320;

/// Why a session policy is refused. Never quotes the policy (the file is hostile input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("is {0} characters long; STS accepts at most {MAX_POLICY_CHARS}")]
    TooLong(usize),
    #[error("is not JSON (line {line} column {column} of the policy)")]
    NotJson { line: usize, column: usize },
    #[error("is not an IAM policy: a JSON object with a `Statement` is expected")]
    NotAPolicy,
}

/// Checks a session policy; its minified length on success.
pub fn validate(policy: &str) -> Result<usize, PolicyError> {
    let chars = policy.chars().count();
    if chars > MAX_POLICY_CHARS {
        return Err(PolicyError::TooLong(chars));
    }
    let value: Value = serde_json::from_str(policy).map_err(|e| PolicyError::NotJson {
        line: e.line(),
        column: e.column(),
    })?;
    if !value
        .get("Statement")
        .is_some_and(|s| s.is_array() || s.is_object())
    {
        return Err(PolicyError::NotAPolicy);
    }
    Ok(value.to_string().chars().count())
}

/// The minified length of a policy that is JSON, else its own length (EKS's answers are taken
/// as they come).
pub fn packed_chars(policy: &str) -> usize {
    serde_json::from_str::<Value>(policy)
        .map(|v| v.to_string().chars().count())
        .unwrap_or_else(|_| policy.chars().count())
}

/// How full STS's packed size would be, in percent of what it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackedEstimate {
    pub tags_percent: usize,
    pub policy_percent: usize,
}

impl PackedEstimate {
    pub fn percent(&self) -> usize {
        self.tags_percent + self.policy_percent
    }

    /// Whether STS would take it (by the estimate).
    pub fn fits(&self) -> bool {
        self.percent() <= 100
    }
}

/// The estimate for session tags `tags` and a policy of `policy_chars` (minified) characters.
pub fn estimate<'a>(
    tags: impl IntoIterator<Item = (&'a str, &'a str)>,
    policy_chars: Option<usize>,
) -> PackedEstimate {
    let tag_bytes: usize = tags.into_iter().map(|(k, v)| k.len() + v.len()).sum();
    PackedEstimate {
        tags_percent: (tag_bytes * 100).div_ceil(TAG_BUDGET_BYTES),
        policy_percent: (policy_chars.unwrap_or(0) * 100).div_ceil(MAX_POLICY_CHARS),
    }
}

/// The six session tags EKS sets, with the values a pod would carry: what the estimate is
/// asked about before the pod exists (`pod_name` as it will be, the uid's 36 characters).
pub fn eks_tags<'a>(
    cluster_arn: &'a str,
    cluster_name: &'a str,
    namespace: &'a str,
    service_account: &'a str,
    pod_name: &'a str,
) -> [(&'static str, &'a str); 6] {
    [
        ("eks-cluster-arn", cluster_arn),
        ("eks-cluster-name", cluster_name),
        ("kubernetes-namespace", namespace),
        ("kubernetes-service-account", service_account),
        ("kubernetes-pod-name", pod_name),
        ("kubernetes-pod-uid", "00000000-0000-0000-0000-000000000000"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}"#;

    #[test]
    fn policies_are_json_iam_policies_within_the_sts_limit() {
        assert_eq!(validate(POLICY), Ok(96));
        assert_eq!(
            validate(&format!(
                "{{\"Statement\": [], \"x\": \"{}\"}}",
                "a".repeat(2100)
            )),
            Err(PolicyError::TooLong(2126))
        );
        assert!(matches!(
            validate("{\"Statement\": [hunter2"),
            Err(PolicyError::NotJson { .. })
        ));
        assert!(
            !validate("hunter2")
                .unwrap_err()
                .to_string()
                .contains("hunter2")
        );
        assert_eq!(validate("[1]"), Err(PolicyError::NotAPolicy));
        assert_eq!(
            validate("{\"Version\": \"2012-10-17\"}"),
            Err(PolicyError::NotAPolicy)
        );
    }

    #[test]
    fn six_tags_of_short_names_are_about_three_quarters() {
        let tags = eks_tags(
            "arn:aws:eks:us-east-1:111122223333:cluster/prod",
            "prod",
            "team-a",
            "carts",
            "carts-7d4b9c6f5d-x2k8q",
        );
        let e = estimate(tags, None);
        assert_eq!((e.tags_percent, e.policy_percent), (74, 0));
        assert!(e.fits());
        // Long names (a 63-character namespace, long ServiceAccount and pod names) do not.
        let (ns, sa, pod) = ("n".repeat(63), "s".repeat(60), "p".repeat(80));
        let e = estimate(
            eks_tags(
                "arn:aws:eks:us-east-1:111122223333:cluster/prod",
                "prod",
                &ns,
                &sa,
                &pod,
            ),
            None,
        );
        assert!(!e.fits(), "{e:?}");
        // A policy of half the plaintext limit on top of the six short tags does not either.
        let e = estimate(tags, Some(1024));
        assert_eq!(e.percent(), 124);
    }
}
