//! What the webhook needs to know about a ServiceAccount: its `<prefix>/…` annotations.

use std::ops::RangeInclusive;

use super::role_arn::{self, RoleArnError};

/// The injection-relevant annotations of a ServiceAccount (IRSA webhook semantics).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceAccountInfo {
    /// `<prefix>/role-arn`: the IRSA role, only when it is an IAM role ARN (docs/contract.md §12).
    pub role_arn: Option<String>,
    /// Why a `<prefix>/role-arn` that is set is not an identity (not an IAM role ARN).
    pub invalid_role_arn: Option<RoleArnError>,
    /// `<prefix>/audience`: the IRSA token audience, when within [`valid_audience`]'s bounds.
    pub audience: Option<String>,
    /// `<prefix>/sts-regional-endpoints`: `"true"`/`"false"`; wins over the flag.
    pub sts_regional_endpoints: Option<bool>,
    /// `<prefix>/token-expiration`: seconds; `None` when absent or not an integer.
    pub token_expiration: Option<i64>,
}

pub const ROLE_ARN: &str = "role-arn";
pub const AUDIENCE: &str = "audience";
pub const STS_REGIONAL_ENDPOINTS: &str = "sts-regional-endpoints";
pub const TOKEN_EXPIRATION: &str = "token-expiration";

/// `prefix/name`, e.g. `eks.amazonaws.com/role-arn`.
pub fn annotation_key(prefix: &str, name: &str) -> String {
    format!("{prefix}/{name}")
}

/// Returns the value of `prefix/name` from an annotation iterator without allocating a key.
pub fn annotation<'a, I>(annotations: I, prefix: &str, name: &str) -> Option<&'a str>
where
    I: IntoIterator<Item = (&'a String, &'a String)>,
{
    annotations.into_iter().find_map(|(k, v)| {
        let rest = k.strip_prefix(prefix)?.strip_prefix('/')?;
        (rest == name).then_some(v.as_str())
    })
}

/// The projected token lifetimes the API server issues (at least 10 minutes; at most 48 hours):
/// an annotation outside them is brought inside.
pub const TOKEN_EXPIRATION_BOUNDS: RangeInclusive<i64> = 600..=48 * 3600;

/// Parses a token lifetime the way the IRSA webhook does: integers only, others ignored.
pub fn parse_token_expiration(value: &str) -> Option<i64> {
    value.trim().parse::<i64>().ok()
}

/// The longest audience an annotation may set.
pub const MAX_AUDIENCE: usize = 256;

/// Whether an audience annotation can be used: 1 to [`MAX_AUDIENCE`] bytes of printable text
/// without whitespace. Anything else is ignored (the configured audience is used).
pub fn valid_audience(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_AUDIENCE
        && !value.chars().any(|c| c.is_whitespace() || c.is_control())
}

impl ServiceAccountInfo {
    pub fn from_annotations<I, K, V>(annotations: I, prefix: &str) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut info = Self::default();
        for (k, v) in annotations {
            let Some(name) = k
                .as_ref()
                .strip_prefix(prefix)
                .and_then(|r| r.strip_prefix('/'))
            else {
                continue;
            };
            let v = v.as_ref();
            match name {
                ROLE_ARN if !v.trim().is_empty() => match role_arn::validate(v.trim()) {
                    Ok(()) => info.role_arn = Some(v.trim().to_string()),
                    Err(e) => info.invalid_role_arn = Some(e),
                },
                AUDIENCE if valid_audience(v.trim()) => info.audience = Some(v.trim().to_string()),
                STS_REGIONAL_ENDPOINTS => {
                    info.sts_regional_endpoints = match v.trim() {
                        "true" => Some(true),
                        "false" => Some(false),
                        _ => None,
                    }
                }
                TOKEN_EXPIRATION => info.token_expiration = parse_token_expiration(v),
                _ => {}
            }
        }
        info
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_prefixed_annotations_only() {
        let info = ServiceAccountInfo::from_annotations(
            [
                (
                    "eks.amazonaws.com/role-arn",
                    "arn:aws:iam::111122223333:role/r",
                ),
                ("eks.amazonaws.com/audience", "custom"),
                ("eks.amazonaws.com/sts-regional-endpoints", "true"),
                ("eks.amazonaws.com/token-expiration", "3600"),
                ("other.io/role-arn", "ignored"),
            ],
            "eks.amazonaws.com",
        );
        assert_eq!(
            info.role_arn.as_deref(),
            Some("arn:aws:iam::111122223333:role/r")
        );
        assert_eq!(info.audience.as_deref(), Some("custom"));
        assert_eq!(info.sts_regional_endpoints, Some(true));
        assert_eq!(info.token_expiration, Some(3600));
    }

    #[test]
    fn a_role_annotation_that_is_not_a_role_arn_is_no_identity_and_says_why() {
        for bad in [
            "not-an-arn",
            "arn:aws:iam::111122223333:role/*",
            "arn:aws-evil:iam::111122223333:role/x",
        ] {
            let info = ServiceAccountInfo::from_annotations(
                [("eks.amazonaws.com/role-arn", bad)],
                "eks.amazonaws.com",
            );
            assert_eq!(info.role_arn, None, "{bad}");
            assert!(info.invalid_role_arn.is_some(), "{bad}");
        }
    }

    #[test]
    fn audiences_out_of_bounds_are_ignored() {
        for bad in ["a b", "a\u{7}b", &"a".repeat(MAX_AUDIENCE + 1)] {
            let info = ServiceAccountInfo::from_annotations(
                [("eks.amazonaws.com/audience", bad)],
                "eks.amazonaws.com",
            );
            assert_eq!(info.audience, None, "{bad:?}");
        }
    }

    #[test]
    fn non_integer_lifetime_is_ignored() {
        let info = ServiceAccountInfo::from_annotations(
            [("eks.amazonaws.com/token-expiration", "1h")],
            "eks.amazonaws.com",
        );
        assert_eq!(info.token_expiration, None);
    }

    #[test]
    fn custom_prefix() {
        let info = ServiceAccountInfo::from_annotations(
            [("example.com/role-arn", "arn:aws:iam::111122223333:role/r")],
            "example.com",
        );
        assert!(info.role_arn.is_some());
    }
}
