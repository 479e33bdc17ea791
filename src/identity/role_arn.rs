//! The one IAM role ARN validator of the project (docs/contract.md §12: a value that is not an IAM role ARN
//! is no identity).
//!
//! `arn:PARTITION:iam::ACCOUNT:role/[PATH/]NAME`, checked as IAM defines it:
//! - PARTITION is a known AWS partition ([`PARTITIONS`]);
//! - the service is `iam` and the region is empty (IAM is global);
//! - ACCOUNT is 12 digits;
//! - NAME is 1–64 characters of `A-Z a-z 0-9 + = , . @ _ -`;
//! - PATH (between `role/` and NAME, optional) is at most 510 characters of printable ASCII
//!   (IAM's `/…/` path of at most 512 with its outer slashes);
//! - no whitespace or control characters anywhere, and no wildcards (`*`, `?`): an identity
//!   names one role, never a pattern.
//!
//! Errors say which part is wrong and where, and never quote the value: it may be huge, or be
//! something other than an ARN that should not reach a log.

/// The AWS partitions a role can live in.
pub const PARTITIONS: &[&str] = &[
    "aws",
    "aws-cn",
    "aws-us-gov",
    "aws-iso",
    "aws-iso-b",
    "aws-iso-e",
    "aws-iso-f",
    "aws-eusc",
];

/// IAM's limit on a role name.
pub const MAX_NAME: usize = 64;
/// IAM's limit on a path (`/` … `/`, 512), without its two outer slashes.
pub const MAX_PATH: usize = 510;
/// Longer than any valid role ARN (`arn:aws-us-gov:iam::` + 12 + `:role/` + 512 + 64).
pub const MAX_LEN: usize = 2048;

/// Why a value is not an IAM role ARN. The value itself is never part of the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleArnError {
    #[error("is empty; expected an IAM role ARN like arn:aws:iam::123456789012:role/NAME")]
    Empty,
    #[error("is {len} bytes long, more than any IAM role ARN ({MAX_LEN})")]
    TooLong { len: usize },
    #[error("contains whitespace at character {at}; an IAM role ARN has none")]
    Whitespace { at: usize },
    #[error("contains a control character at character {at}")]
    Control { at: usize },
    #[error("contains a wildcard (`*` or `?`) at character {at}; an identity names one role")]
    Wildcard { at: usize },
    #[error(
        "does not start with `arn:`; expected an IAM role ARN like arn:aws:iam::123456789012:role/NAME"
    )]
    NotArn,
    #[error(
        "does not have the six `:`-separated parts of an ARN (arn:PARTITION:iam::ACCOUNT:role/NAME)"
    )]
    Shape,
    #[error(
        "names an unknown partition; expected one of aws, aws-cn, aws-us-gov, aws-iso, aws-iso-b, aws-iso-e, aws-iso-f, aws-eusc"
    )]
    Partition,
    #[error("names a service other than `iam`")]
    Service,
    #[error("has a region; IAM ARNs have an empty region (arn:aws:iam::ACCOUNT:role/NAME)")]
    Region,
    #[error("has an account id that is not 12 digits")]
    Account,
    #[error("names an IAM resource that is not a role (expected `role/NAME` after the account)")]
    NotRole,
    #[error("has an empty role name")]
    EmptyName,
    #[error("has a role name longer than {MAX_NAME} characters")]
    NameTooLong,
    #[error(
        "has a character at position {at} that IAM does not allow in a role name (letters, digits and + = , . @ _ -)"
    )]
    NameChar { at: usize },
    #[error("has a role path longer than 512 characters")]
    PathTooLong,
    #[error("has a non-ASCII character at position {at} in the role path")]
    PathChar { at: usize },
}

/// The parts of a valid IAM role ARN, borrowed from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleArn<'a> {
    pub partition: &'a str,
    pub account: &'a str,
    /// The path between `role/` and the name, without outer slashes; empty for `/`.
    pub path: &'a str,
    pub name: &'a str,
}

impl<'a> RoleArn<'a> {
    /// Parses `arn` as an IAM role ARN, exactly (no trimming: callers decide what to trim).
    pub fn parse(arn: &'a str) -> Result<Self, RoleArnError> {
        if arn.is_empty() {
            return Err(RoleArnError::Empty);
        }
        if arn.len() > MAX_LEN {
            return Err(RoleArnError::TooLong { len: arn.len() });
        }
        for (at, c) in arn.chars().enumerate() {
            if c.is_whitespace() {
                return Err(RoleArnError::Whitespace { at });
            }
            if c.is_control() {
                return Err(RoleArnError::Control { at });
            }
            if c == '*' || c == '?' {
                return Err(RoleArnError::Wildcard { at });
            }
        }
        if !arn.starts_with("arn:") {
            return Err(RoleArnError::NotArn);
        }
        let [partition, service, region, account, resource] =
            arn_fields(arn).ok_or(RoleArnError::Shape)?;
        if !PARTITIONS.contains(&partition) {
            return Err(RoleArnError::Partition);
        }
        if service != "iam" {
            return Err(RoleArnError::Service);
        }
        if !region.is_empty() {
            return Err(RoleArnError::Region);
        }
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(RoleArnError::Account);
        }
        let resource_at = arn.len() - resource.len();
        let after = resource
            .strip_prefix("role/")
            .ok_or(RoleArnError::NotRole)?;
        let after_at = resource_at + "role/".len();
        let (path, name, name_at) = match after.rfind('/') {
            Some(i) => (&after[..i], &after[i + 1..], after_at + i + 1),
            None => ("", after, after_at),
        };
        if name.is_empty() {
            return Err(RoleArnError::EmptyName);
        }
        if name.len() > MAX_NAME {
            return Err(RoleArnError::NameTooLong);
        }
        if let Some(i) = name.bytes().position(|b| !is_name_byte(b)) {
            return Err(RoleArnError::NameChar {
                at: char_index(arn, name_at + i),
            });
        }
        if path.len() > MAX_PATH {
            return Err(RoleArnError::PathTooLong);
        }
        // Printable ASCII: whitespace, controls and wildcards were refused above.
        if let Some(i) = path.bytes().position(|b| !b.is_ascii_graphic()) {
            return Err(RoleArnError::PathChar {
                at: char_index(arn, after_at + i),
            });
        }
        Ok(Self {
            partition,
            account,
            path,
            name,
        })
    }
}

/// The fields of `arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE` after `arn:` (the resource
/// may hold `:`); `None` when `arn` does not start with `arn:` or has fewer fields.
pub fn arn_fields(arn: &str) -> Option<[&str; 5]> {
    let mut parts = arn.strip_prefix("arn:")?.splitn(5, ':');
    Some([
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    ])
}

/// Checks that `arn` is an IAM role ARN; the error says what is wrong without quoting it.
pub fn validate(arn: &str) -> Result<(), RoleArnError> {
    RoleArn::parse(arn).map(|_| ())
}

/// Whether `arn` is an IAM role ARN.
pub fn is_role_arn(arn: &str) -> bool {
    validate(arn).is_ok()
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b)
}

/// The character position of byte offset `byte` (positions in errors count characters).
fn char_index(s: &str, byte: usize) -> usize {
    s[..byte].chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(s: &str) -> RoleArnError {
        RoleArn::parse(s).unwrap_err()
    }

    #[test]
    fn valid_arns_in_every_partition_with_and_without_path() {
        for p in PARTITIONS {
            let arn = format!("arn:{p}:iam::111122223333:role/carts");
            let parsed = RoleArn::parse(&arn).unwrap();
            assert_eq!(
                (parsed.partition, parsed.account, parsed.path, parsed.name),
                (*p, "111122223333", "", "carts")
            );
        }
        let parsed =
            RoleArn::parse("arn:aws:iam::111122223333:role/service-role/team/My+Role=a,b.c@d_e-f")
                .unwrap();
        assert_eq!(parsed.path, "service-role/team");
        assert_eq!(parsed.name, "My+Role=a,b.c@d_e-f");
        let longest = format!(
            "arn:aws:iam::111122223333:role/{}/{}",
            "p".repeat(MAX_PATH),
            "n".repeat(MAX_NAME)
        );
        assert!(is_role_arn(&longest));
    }

    #[test]
    fn each_wrong_part_is_named() {
        use RoleArnError::*;
        let cases: &[(&str, RoleArnError)] = &[
            ("", Empty),
            ("not-an-arn", NotArn),
            ("carts", NotArn),
            ("arn:aws:iam::111122223333", Shape),
            ("arn:aws-evil:iam::111122223333:role/x", Partition),
            ("arn:AWS:iam::111122223333:role/x", Partition),
            ("arn:aws:sts::111122223333:role/x", Service),
            ("arn:aws:iam:us-east-1:111122223333:role/x", Region),
            ("arn:aws:iam::1111:role/x", Account),
            ("arn:aws:iam::11112222333a:role/x", Account),
            ("arn:aws:iam::111122223333:user/x", NotRole),
            ("arn:aws:iam::111122223333:role", NotRole),
            ("arn:aws:iam::111122223333:role/", EmptyName),
            ("arn:aws:iam::111122223333:role/path/", EmptyName),
            ("arn:aws:iam::111122223333:role/*", Wildcard { at: 31 }),
            ("arn:aws:iam::111122223333:role/team-?", Wildcard { at: 36 }),
            ("arn:aws:iam::111122223333:role/x ", Whitespace { at: 32 }),
            (" arn:aws:iam::111122223333:role/x", Whitespace { at: 0 }),
            ("arn:aws:iam::111122223333:role/x\ny", Whitespace { at: 32 }),
            ("arn:aws:iam::111122223333:role/x\u{0}", Control { at: 32 }),
            ("arn:aws:iam::111122223333:role/a:b", NameChar { at: 32 }),
            ("arn:aws:iam::111122223333:role/é", NameChar { at: 31 }),
            ("arn:aws:iam::111122223333:role/pé/x", PathChar { at: 32 }),
        ];
        for (input, want) in cases {
            assert_eq!(&err(input), want, "{input:?}");
        }
        let long_name = format!("arn:aws:iam::111122223333:role/{}", "n".repeat(65));
        assert_eq!(err(&long_name), NameTooLong);
        let long_path = format!("arn:aws:iam::111122223333:role/{}/n", "p".repeat(511));
        assert_eq!(err(&long_path), PathTooLong);
        let huge = "a".repeat(1 << 20);
        assert_eq!(err(&huge), TooLong { len: 1 << 20 });
    }

    #[test]
    fn messages_never_quote_the_value() {
        let secret = "arn:aws:iam::111122223333:role/hunter2 AKIAEXAMPLE";
        let message = err(secret).to_string();
        assert!(!message.contains("hunter2"), "{message}");
        let message = err("AWS_SECRET_ACCESS_KEY=abcdef").to_string();
        assert!(!message.contains("abcdef"), "{message}");
    }
}
