//! The associations file's format (docs/contract.md §7): YAML or JSON, `associations:` and a list
//! (or the list alone), every entry checked (names, role ARNs, one association per
//! ServiceAccount). The file is hostile input (issue 21): errors name lines and columns but never
//! quote the file (a path pointing at some other file, say a Secret, must not copy it into the
//! log).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::files::{self, ReadError};
use crate::identity::index::{IndexError, check_patterns};
use crate::identity::pattern::NamePattern;
use crate::identity::{Association, role_arn, session_policy};
use crate::serde_errors::{self, Keys, Problem, Step, YamlError};

/// The default cap on the file's size: about 15,000 associations.
pub const DEFAULT_MAX_BYTES: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read associations file {path}: {source}")]
    Read { path: PathBuf, source: ReadError },
    #[error("associations file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wrapped {
    /// `None` for `associations:` with no value, `Some([])` for `associations: []`.
    #[serde(default)]
    associations: Option<Vec<Association>>,
}

/// What an associations file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub associations: Vec<Association>,
    /// The file says `associations: []` in so many words: emptying it is meant. An empty file,
    /// `associations:` or a bare `[]` is what a truncated write looks like too.
    pub explicitly_empty: bool,
    /// The line of each pattern entry, by position (for `check` and the decision log to name
    /// the entry that matched); exact entries are found by their names.
    pub lines: HashMap<usize, usize>,
}

/// Parses and checks an associations document (YAML or JSON).
pub fn parse(path: &Path, text: &str) -> Result<Parsed, FileError> {
    let invalid = |message: String| FileError::Invalid {
        path: path.to_owned(),
        message,
    };
    if text.trim().is_empty() {
        return Ok(Parsed {
            associations: Vec::new(),
            explicitly_empty: false,
            lines: HashMap::new(),
        });
    }
    let (list, explicitly_empty, bare) = match serde_errors::from_yaml::<Wrapped>(text) {
        Ok(Wrapped {
            associations: Some(l),
        }) => {
            let explicit = l.is_empty();
            (l, explicit, false)
        }
        Ok(Wrapped { associations: None }) => (Vec::new(), false, false),
        // A bare list is accepted too; its errors are the ones to show when the file is one,
        // and a syntax error is shown before any type error.
        Err(wrapped_err) => match serde_errors::from_yaml::<serde_yaml_ng::Value>(text) {
            Ok(serde_yaml_ng::Value::Sequence(_)) => {
                match serde_errors::from_yaml::<Vec<Association>>(text) {
                    Ok(l) => (l, false, true),
                    Err(e) => return Err(invalid(describe(&e))),
                }
            }
            // The typed parse stops at the top-level type before the syntax error further on.
            Err(syntax) if is_top_level_type(&wrapped_err) => {
                return Err(invalid(describe(&syntax)));
            }
            _ => return Err(invalid(describe(&wrapped_err))),
        },
    };
    let locate = |i: usize| {
        let steps = [Step::Key("associations"), Step::Index(i)];
        serde_errors::locate(text, if bare { &steps[1..] } else { &steps })
    };
    let at = |i: usize| match locate(i) {
        Some(l) => format!("{l}: associations[{i}]"),
        None => format!("associations[{i}]"),
    };
    for (i, a) in list.iter().enumerate() {
        check(a).map_err(|m| invalid(format!("{}{m}", at(i))))?;
    }
    let mut seen: HashMap<(&str, &str), usize> = HashMap::with_capacity(list.len());
    for (i, a) in list.iter().enumerate() {
        if let Some(first) = seen.insert((&a.namespace, &a.service_account), i) {
            return Err(invalid(format!(
                "{} ({}/{}) repeats {}; EKS allows one association per ServiceAccount",
                at(i),
                a.namespace,
                a.service_account,
                at(first)
            )));
        }
    }
    match check_patterns(&list) {
        Ok(()) => {}
        Err(IndexError::Tie { first, second }) => {
            let names = |i: usize| format!("{}/{}", list[i].namespace, list[i].service_account);
            return Err(invalid(format!(
                "{} ({}) ties with {} ({}): same precedence level and literal prefixes, and some \
                 ServiceAccount matches both; make one more specific or remove one",
                at(second),
                names(second),
                at(first),
                names(first)
            )));
        }
        Err(e) => return Err(invalid(e.to_string())),
    }
    // Located once each at load (at most MAX_PATTERNS of them), not on every match.
    let lines = list
        .iter()
        .enumerate()
        .filter(|(_, a)| {
            NamePattern(&a.namespace).is_pattern() || NamePattern(&a.service_account).is_pattern()
        })
        .filter_map(|(i, _)| Some((i, locate(i)?.line)))
        .collect();
    Ok(Parsed {
        associations: list,
        explicitly_empty,
        lines,
    })
}

/// A DNS-1123 label (namespace) or subdomain (ServiceAccount name), or a pattern of one: `*`
/// anywhere, the rest of those characters.
fn is_name_or_pattern(s: &str, max: usize, dots: bool) -> bool {
    if !NamePattern(s).is_pattern() {
        return is_dns_name(s, max, dots);
    }
    s.len() <= max
        && s.bytes().all(|b| {
            b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || b == b'-'
                || b == b'*'
                || (dots && b == b'.')
        })
}

/// A DNS-1123 label (namespace) or subdomain (ServiceAccount name).
fn is_dns_name(s: &str, max: usize, dots: bool) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
        && (dots || !s.contains('.'))
}

/// Checks one entry. The message starts with the entry's names once they are known to be
/// valid names (an invalid one is not repeated: it could be anything).
fn check(a: &Association) -> Result<(), String> {
    if !is_name_or_pattern(&a.namespace, 63, false) {
        return Err(
            ": namespace is not a valid namespace name or pattern (lowercase letters, digits and `-`, at most 63; `*` for any run of them)"
                .into(),
        );
    }
    if !is_name_or_pattern(&a.service_account, 253, true) {
        return Err(
            ": serviceAccount is not a valid ServiceAccount name or pattern (lowercase letters, digits, `-` and `.`, at most 253; `*` for any run of them)"
                .into(),
        );
    }
    let who = format!(" ({}/{})", a.namespace, a.service_account);
    role_arn::validate(&a.role_arn).map_err(|e| format!("{who}: roleArn {e}"))?;
    if let Some(t) = &a.target_role_arn {
        role_arn::validate(t).map_err(|e| format!("{who}: targetRoleArn {e}"))?;
    }
    if let Some(policy) = &a.policy {
        session_policy::validate(policy).map_err(|e| format!("{who}: policy {e}"))?;
        if a.disable_session_tags != Some(true) {
            return Err(format!(
                "{who}: policy needs disableSessionTags: true (EKS accepts a session policy only on \
                 sessions without the session tags)"
            ));
        }
    }
    Ok(())
}

/// A YAML/JSON error as line, column, our own field names and what was wrong, without any of
/// the file's content (keys not ours are not named: the file may be a secret in disguise).
fn describe(e: &YamlError) -> String {
    let mut d = e.describe(Keys::Hidden);
    // A bare list's paths start at the list (`[0]`).
    if let Some(p) = d.path.as_mut().filter(|p| p.starts_with('[')) {
        p.insert_str(0, "associations");
    }
    if let (None, Problem::InvalidType { found, .. }) = (&d.path, &d.problem) {
        d.problem = Problem::Other(format!(
            "the file is a {found}; expected `associations:` followed by a list of associations (or the list alone)"
        ));
    }
    d.to_string()
}

/// The document itself is of the wrong type (a string, a number): said before any syntax error.
fn is_top_level_type(e: &YamlError) -> bool {
    let d = e.describe(Keys::Hidden);
    d.path.is_none() && matches!(d.problem, Problem::InvalidType { .. })
}

/// Reads and checks an associations file of at most `max_bytes`.
pub fn load(path: &Path, max_bytes: u64) -> Result<(Parsed, Vec<u8>), FileError> {
    let bytes = files::read_capped(path, max_bytes).map_err(|source| FileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let parsed = parse_bytes(path, &bytes)?;
    Ok((parsed, bytes))
}

pub(super) fn parse_bytes(path: &Path, bytes: &[u8]) -> Result<Parsed, FileError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let before = &bytes[..e.valid_up_to()];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let column = before.len()
            - before
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1)
            + 1;
        FileError::Invalid {
            path: path.to_owned(),
            message: format!("line {line} column {column}: not UTF-8 text"),
        }
    })?;
    parse(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "associations:\n  - namespace: team-a\n    serviceAccount: carts\n    roleArn: arn:aws:iam::111122223333:role/carts\n";

    fn list(text: &str) -> Vec<Association> {
        parse(Path::new("a.yaml"), text).unwrap().associations
    }

    fn error(text: &str) -> String {
        parse(Path::new("a.yaml"), text).unwrap_err().to_string()
    }

    #[test]
    fn yaml_and_json_and_bare_list() {
        assert_eq!(list(GOOD).len(), 1);
        let json = r#"{"associations":[{"namespace":"a","serviceAccount":"b","roleArn":"arn:aws:iam::111122223333:role/x","externalId":"e","disableSessionTags":true,"targetRoleArn":"arn:aws:iam::444455556666:role/y"}]}"#;
        assert_eq!(list(json)[0].external_id.as_deref(), Some("e"));
        let bare = "- {namespace: a, serviceAccount: b, roleArn: 'arn:aws-cn:iam::111122223333:role/path/x'}";
        assert_eq!(list(bare).len(), 1);
    }

    #[test]
    fn only_associations_list_written_out_empty_is_explicitly_empty() {
        let p = Path::new("a.yaml");
        for (text, explicit) in [
            ("", false),
            ("  \n\t\n", false),
            ("# nothing yet\n", false),
            ("associations:", false),
            ("associations: ~", false),
            ("[]", false),
            ("{}", false),
            ("associations: []", true),
            ("associations: [] # all removed on purpose\n", true),
            (r#"{"associations": []}"#, true),
        ] {
            let parsed = parse(p, text).unwrap();
            assert!(parsed.associations.is_empty(), "{text:?}");
            assert_eq!(parsed.explicitly_empty, explicit, "{text:?}");
        }
        assert!(!parse(p, GOOD).unwrap().explicitly_empty);
    }

    #[test]
    fn errors_name_the_line_the_entry_and_the_problem() {
        let bad_arn = GOOD.replace("arn:aws:iam::111122223333:role/carts", "carts");
        let e = error(&bad_arn);
        assert!(
            e.contains("line 2 column 5: associations[0] (team-a/carts): roleArn does not start with `arn:`"),
            "{e}"
        );
        let typo = GOOD.replace("roleArn", "rolearn");
        let e = error(&typo);
        assert!(
            e.contains("line 4 column 5") && e.contains("unknown key") && e.contains("`roleArn`"),
            "{e}"
        );
        let e = error(&GOOD.replace("team-a", "Team_A"));
        assert!(
            e.contains("line 2 column 5: associations[0]: namespace is not"),
            "{e}"
        );
        assert!(
            !e.contains("Team_A"),
            "an invalid name is not repeated: {e}"
        );
        let json = r#"{"associations": [{"namespace": "a", "serviceAccount": "b", "roleArn": "arn:aws:iam::1:role/x"}]}"#;
        let e = error(json);
        assert!(
            e.contains("line 1 column 19: associations[0] (a/b): roleArn has an account id"),
            "{e}"
        );
        let e = error(&format!(
            "{GOOD}    roleArn: arn:aws:iam::111122223333:role/again\n"
        ));
        assert!(e.contains("duplicate field `roleArn`"), "{e}");
        let e = error("associations:\n  - {namespace: a}\n");
        assert!(
            e.contains("line 2 column 5") && e.contains("missing field `serviceAccount`"),
            "{e}"
        );
        let e = error("associations:\n  - namespace: a\n    serviceAccount: 'b\n");
        assert!(
            e.contains("line 4 column 1: found unexpected end of stream"),
            "{e}"
        );
        let e = error("- {namespace: a, serviceAccount: b, roleArn: [1]}");
        assert!(
            e.contains("line 1 column 46: associations[0].roleArn: invalid type: sequence"),
            "{e}"
        );
    }

    #[test]
    fn role_arns_that_are_not_iam_role_arns_are_refused() {
        for (arn, why) in [
            (
                "'arn:aws-evil:iam::111122223333:role/carts'",
                "unknown partition",
            ),
            ("'arn:aws:iam::111122223333:role/*'", "wildcard"),
            ("'arn:aws:iam::111122223333:role/team-*'", "wildcard"),
            ("'arn:aws:iam::111122223333:role/carts '", "whitespace"),
            ("\"arn:aws:iam::111122223333:role/carts\\nx\"", "whitespace"),
            (
                "\"arn:aws:iam::111122223333:role/carts\\u0000\"",
                "control character",
            ),
            ("'arn:aws:iam::111122223333:user/carts'", "not a role"),
            ("'arn:aws:iam:us-east-1:111122223333:role/carts'", "region"),
        ] {
            let text = format!(
                "associations:\n  - namespace: team-a\n    serviceAccount: carts\n    roleArn: {arn}\n"
            );
            let e = error(&text);
            assert!(e.contains("roleArn") && e.contains(why), "{arn}: {e}");
            let text = format!("{GOOD}    targetRoleArn: {arn}\n");
            let e = error(&text);
            assert!(e.contains("targetRoleArn") && e.contains(why), "{arn}: {e}");
        }
    }

    #[test]
    fn a_session_policy_is_an_iam_policy_and_needs_disable_session_tags() {
        let policy = r#"'{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}'"#;
        let with = |extra: &str| format!("{GOOD}    policy: {policy}\n{extra}");
        let ok = list(&with("    disableSessionTags: true\n"));
        assert!(ok[0].policy.as_deref().unwrap().contains("s3:GetObject"));
        let e = error(&with(""));
        assert!(
            e.contains("(team-a/carts): policy needs disableSessionTags: true"),
            "{e}"
        );
        let e = error(&with("    disableSessionTags: false\n"));
        assert!(e.contains("policy needs disableSessionTags: true"), "{e}");
        let e = error(&format!(
            "{GOOD}    disableSessionTags: true\n    policy: '{{\"Statement\": hunter2'\n"
        ));
        assert!(
            e.contains("policy is not JSON") && !e.contains("hunter2"),
            "{e}"
        );
        let e = error(&format!(
            "{GOOD}    disableSessionTags: true\n    policy: '{}'\n",
            "x".repeat(3000)
        ));
        assert!(
            e.contains("policy is 3000 characters long; STS accepts at most 2048"),
            "{e}"
        );
    }

    #[test]
    fn patterns_are_names_with_stars_and_ties_name_both_lines() {
        let entry = |ns: &str, sa: &str| {
            format!(
                "  - namespace: '{ns}'\n    serviceAccount: '{sa}'\n    roleArn: arn:aws:iam::111122223333:role/x\n"
            )
        };
        let text = format!(
            "associations:\n{}{}",
            entry("team-*", "*"),
            entry("*", "api-*")
        );
        assert_eq!(list(&text).len(), 2);
        let parsed = parse(Path::new("a.yaml"), &text).unwrap();
        assert_eq!(parsed.lines, HashMap::from([(0, 2), (1, 5)]));
        let text = format!(
            "associations:\n{}{}",
            entry("team-*", "a*"),
            entry("team-*", "a*b")
        );
        let e = error(&text);
        assert!(
            e.contains("line 5 column 5: associations[1] (team-*/a*b) ties with line 2 column 5: associations[0] (team-*/a*)"),
            "{e}"
        );
        for bad in ["team-?", "Team-*", "team_*", "[ab]*"] {
            let e = error(&format!("associations:\n{}", entry(bad, "*")));
            assert!(
                e.contains("namespace is not a valid namespace name or pattern"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn duplicates_name_both_lines() {
        let text = format!(
            "{GOOD}  - namespace: team-a\n    serviceAccount: other\n    roleArn: arn:aws:iam::111122223333:role/o\n  - namespace: team-a\n    serviceAccount: carts\n    roleArn: arn:aws:iam::111122223333:role/c2\n"
        );
        let e = error(&text);
        assert!(
            e.contains("line 8 column 5: associations[2] (team-a/carts) repeats line 2 column 5: associations[0]"),
            "{e}"
        );
    }

    #[test]
    fn errors_never_quote_the_file() {
        // What an associations path pointing at another file (a Secret, an env file) looks like.
        for text in [
            "KEY=hunter2",
            "KEY=hunter2\nOTHER=hunter2\n",
            "- KEY=hunter2",
            "password: hunter2",
            "hunter2: x",
            "AKIAHUNTER2: x",
            "{\"hunter2\": 1}",
            "[hunter2",
            "{hunter2: value",
            "'hunter2",
            "\"hunter2",
            "@hunter2",
            "\thunter2: x",
            "hunter2: 'x\nb: c",
            "associations: hunter2",
            "associations: !!binary aHVudGVyMg==",
            "associations: !hunter2 x",
            "associations: {hunter2: 1}",
            "associations: [hunter2]",
            "associations: [1, hunter2]",
            "associations:\n  - namespace: hunter2\n    serviceAccount: b\n    roleArn: c\n    hunter2: d\n",
            "associations:\n  - namespace: a\n    serviceAccount: b\n    roleArn: hunter2\n",
            "associations:\n  - namespace: a\n    serviceAccount: b\n    roleArn: arn:aws:iam::111122223333:role/x\n    disableSessionTags: hunter2\n",
            "associations:\n  - namespace: a\n    serviceAccount: b\n    roleArn: arn:aws:iam::111122223333:role/x\n    externalId: [hunter2]\n",
            "associations:\n  - namespace: HUNTER2\n    serviceAccount: b\n    roleArn: arn:aws:iam::111122223333:role/x\n",
            "associations:\n  - namespace: a\n    serviceAccount: b\n    roleArn: 'arn:aws:iam::111122223333:role/hunter2 '\n",
            "associations: &hunter2 [*hunter2]",
            "associations: *hunter2",
            "--- hunter2\n--- hunter2\n",
        ] {
            let e = error(text);
            assert!(
                !e.to_lowercase().contains("hunter2"),
                "{text:?} quoted: {e}"
            );
            assert!(
                e.contains("line ") || e.contains("more than one document"),
                "{text:?} names no line: {e}"
            );
        }
        let e = parse_bytes(Path::new("a.yaml"), b"a: 1\nb: \xff hunter2")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 2 column 4: not UTF-8") && !e.contains("hunter2"),
            "{e}"
        );
    }
}
