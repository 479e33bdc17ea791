//! The limits STS documents for `AssumeRole`'s parameters, for the recording STS: a request
//! outside them gets STS's `ValidationError`, worded as STS words it ("N validation errors
//! detected: Value '…' at 'roleSessionName' failed to satisfy constraint: …").
//! From the AssumeRole API reference: RoleSessionName 2–64 characters of `[\w+=,.@-]`,
//! DurationSeconds 900–43200, at most 50 Tags (keys 1–128, values 0–256 characters), at most 50
//! TransitiveTagKeys, Policy 1–2048 characters, ExternalId 2–1224 characters of `[\w+=,.@:/-]`,
//! RoleArn 20–2048 characters.
//!
//! Not modelled: STS's packed size (`PackedPolicyTooLarge`). STS compresses the session policy
//! and tags into a binary form whose format and limit are not published, so any rule here
//! would refuse what STS accepts or the reverse; the agent's answer to that refusal is tested
//! by making the recording STS fail with it (`tests/agent_refusals.rs`).

use std::collections::BTreeMap;

/// What violates a documented limit, one clause per violation (empty: within every limit).
pub fn assume_role_violations(params: &BTreeMap<String, String>) -> Vec<String> {
    let mut found = Vec::new();
    let mut check = |value: &str, at: &str, broken: Option<String>| {
        if let Some(constraint) = broken {
            found.push(format!(
                "Value '{value}' at '{at}' failed to satisfy constraint: {constraint}"
            ));
        }
    };
    let get = |name: &str| params.get(name).map(String::as_str);

    let session = get("RoleSessionName").unwrap_or("");
    check(session, "roleSessionName", length(session, 2, 64));
    check(
        session,
        "roleSessionName",
        pattern(session, "[\\w+=,.@-]*", |c| "+=,.@-".contains(c)),
    );
    if let Some(role) = get("RoleArn") {
        check(role, "roleArn", length(role, 20, 2048));
    }
    if let Some(duration) = get("DurationSeconds") {
        let broken = match duration.parse::<i64>() {
            Ok(n) if n < 900 => Some("Member must have value greater than or equal to 900".into()),
            Ok(n) if n > 43_200 => {
                Some("Member must have value less than or equal to 43200".into())
            }
            Ok(_) => None,
            Err(_) => Some("Member must be an integer".into()),
        };
        check(duration, "durationSeconds", broken);
    }
    if let Some(policy) = get("Policy") {
        check("…", "policy", length(policy, 1, 2048));
    }
    if let Some(external) = get("ExternalId") {
        check(external, "externalId", length(external, 2, 1224));
        check(
            external,
            "externalId",
            pattern(external, "[\\w+=,.@:\\/-]*", |c| "+=,.@:/-".contains(c)),
        );
    }
    let tags = members(params, "Tags.member.", ".Key");
    if tags.len() > 50 {
        let broken = Some("Member must have length less than or equal to 50".to_string());
        check(&format!("[{} tags]", tags.len()), "tags", broken);
    }
    for (i, key) in tags.iter().enumerate() {
        let at = format!("tags.{}.member.key", i + 1);
        check(key, &at, length(key, 1, 128));
        let value = get(&format!("Tags.member.{}.Value", i + 1)).unwrap_or("");
        let at = format!("tags.{}.member.value", i + 1);
        check(value, &at, length(value, 0, 256));
    }
    let transitive = members(params, "TransitiveTagKeys.member.", "");
    if transitive.len() > 50 {
        let broken = Some("Member must have length less than or equal to 50".to_string());
        check(
            &format!("[{} keys]", transitive.len()),
            "transitiveTagKeys",
            broken,
        );
    }
    found
}

/// STS's message for `violations` (not empty).
pub fn message(violations: &[String]) -> String {
    let n = violations.len();
    let noun = if n == 1 { "error" } else { "errors" };
    format!("{n} validation {noun} detected: {}", violations.join("; "))
}

/// `prefix1suffix`, `prefix2suffix`, … while present.
fn members<'a>(params: &'a BTreeMap<String, String>, prefix: &str, suffix: &str) -> Vec<&'a str> {
    (1..)
        .map_while(|i| {
            params
                .get(&format!("{prefix}{i}{suffix}"))
                .map(String::as_str)
        })
        .collect()
}

fn length(value: &str, min: usize, max: usize) -> Option<String> {
    let n = value.chars().count();
    if n < min {
        Some(format!(
            "Member must have length greater than or equal to {min}"
        ))
    } else if n > max {
        Some(format!(
            "Member must have length less than or equal to {max}"
        ))
    } else {
        None
    }
}

/// `\w` as STS (Java) reads it: ASCII letters, digits and `_`; plus what `extra` allows.
fn pattern(value: &str, shown: &str, extra: impl Fn(char) -> bool) -> Option<String> {
    let fits = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || extra(c));
    (!fits).then(|| format!("Member must satisfy regular expression pattern: {shown}"))
}
