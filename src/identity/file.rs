//! Associations from a file (docs/contract.md §7), for clusters without EKS and for local runs.
//!
//! YAML or JSON, re-read when it changes; a broken file keeps the last good content. The file is
//! hostile input (issue 21): it is read only if it is a regular file within a size cap, every
//! role ARN is validated, a reload that comes back empty while it had entries is refused unless
//! the file says `associations: []`, and errors name lines and columns but never quote the file
//! (a path pointing at some other file, say a Secret, must not copy it into the log).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use futures::future::BoxFuture;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{
    Association, AssociationIndex, AssociationSource, AssociationSummary, Freshness, IdentityError,
    index_associations, index_get, role_arn,
};
use crate::files::{self, ReadError};
use crate::reload::{ReloadOutcome, Reloadable};

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
        });
    }
    let (list, explicitly_empty) = match serde_yaml_ng::from_str::<Wrapped>(text) {
        Ok(Wrapped {
            associations: Some(l),
        }) => {
            let explicit = l.is_empty();
            (l, explicit)
        }
        Ok(Wrapped { associations: None }) => (Vec::new(), false),
        // A bare list is accepted too; its errors are the ones to show when the file is one,
        // and a syntax error is shown before any type error.
        Err(wrapped_err) => match serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text) {
            Ok(serde_yaml_ng::Value::Sequence(_)) => {
                match serde_yaml_ng::from_str::<Vec<Association>>(text) {
                    Ok(l) => (l, false),
                    Err(e) => return Err(invalid(describe_yaml_error(&e))),
                }
            }
            // The typed parse stops at the top-level type before the syntax error further on.
            Err(syntax) if wrapped_err.to_string().starts_with("invalid type: ") => {
                return Err(invalid(describe_yaml_error(&syntax)));
            }
            _ => return Err(invalid(describe_yaml_error(&wrapped_err))),
        },
    };
    let at = |i: usize| match entry_location(text, i) {
        Some((line, column)) => format!("line {line} column {column}: associations[{i}]"),
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
    Ok(Parsed {
        associations: list,
        explicitly_empty,
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
    if !is_dns_name(&a.namespace, 63, false) {
        return Err(
            ": namespace is not a valid namespace name (lowercase letters, digits and `-`, at most 63)"
                .into(),
        );
    }
    if !is_dns_name(&a.service_account, 253, true) {
        return Err(
            ": serviceAccount is not a valid ServiceAccount name (lowercase letters, digits, `-` and `.`, at most 253)"
                .into(),
        );
    }
    let who = format!(" ({}/{})", a.namespace, a.service_account);
    role_arn::validate(&a.role_arn).map_err(|e| format!("{who}: roleArn {e}"))?;
    if let Some(t) = &a.target_role_arn {
        role_arn::validate(t).map_err(|e| format!("{who}: targetRoleArn {e}"))?;
    }
    Ok(())
}

/// A YAML/JSON error as line, column and what was wrong, without any of the file's content:
/// values, unknown keys and tags are left out; only the names of our own fields remain.
fn describe_yaml_error(e: &serde_yaml_ng::Error) -> String {
    let mut message = e.to_string();
    // serde_yaml appends positions itself (not always); ours come first, once.
    while let Some(i) = message.find(" at line ") {
        let rest = &message[i + " at line ".len()..];
        let skip = rest
            .find(|c: char| !(c.is_ascii_digit() || c == ' ' || "column".contains(c)))
            .unwrap_or(rest.len());
        message.replace_range(i..i + " at line ".len() + skip, "");
    }
    // A path to the value (`associations[0].roleArn: `) is made of our field names and indices.
    let (field_path, detail) = match message.split_once(": ") {
        Some((p, d))
            if !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"[]._".contains(&b)) =>
        {
            // A bare list's paths start at the list (`.[0]`).
            let p = match p.strip_prefix('.') {
                Some(rest) => format!("associations{rest}"),
                None => p.to_string(),
            };
            (Some(p), d.to_string())
        }
        _ => (None, message.clone()),
    };
    let detail = redact(&detail, field_path.is_none());
    let position = match e.location() {
        Some(l) => format!("line {} column {}: ", l.line(), l.column()),
        None => String::new(),
    };
    match field_path {
        Some(p) => format!("{position}{p}: {detail}"),
        None => format!("{position}{detail}"),
    }
}

/// The value kinds serde names in "invalid type/value" messages.
const KINDS: &[&str] = &[
    "string",
    "integer",
    "floating point",
    "boolean",
    "map",
    "sequence",
    "unit value",
    "unit",
    "null",
    "character",
    "byte array",
    "option",
    "newtype struct",
    "enum",
    "unit variant",
    "newtype variant",
    "tuple variant",
    "struct variant",
];

fn redact(detail: &str, top_level: bool) -> String {
    // The `expected ...` part comes from our types (no `, expected` inside them), so the last
    // one is ours even when a quoted value contains the same words.
    let expected = detail
        .rfind(", expected ")
        .map(|i| &detail[i + 2..])
        .filter(|e| !e.contains(['"', '\'']));
    if let Some(rest) = detail.strip_prefix("unknown field ") {
        let tail = match (expected, rest.contains(", there are no fields")) {
            (Some(e), _) => format!(", {e}"),
            (None, true) => ", there are no fields".into(),
            _ => String::new(),
        };
        return format!("unknown key (not shown){tail}");
    }
    for (prefix, what) in [
        ("invalid type: ", "invalid type"),
        ("invalid value: ", "invalid value"),
    ] {
        if let Some(rest) = detail.strip_prefix(prefix) {
            let kind = KINDS
                .iter()
                .find(|k| rest.starts_with(*k))
                .copied()
                .unwrap_or("value");
            if top_level && what == "invalid type" {
                return format!(
                    "the file is a {kind}; expected `associations:` followed by a list of associations (or the list alone)"
                );
            }
            let tail = expected.map(|e| format!(", {e}")).unwrap_or_default();
            return format!("{what}: {kind} (value not shown){tail}");
        }
    }
    // `missing field`, `duplicate field` and `invalid length` name only our own fields and
    // numbers; YAML syntax errors describe syntax. Anything quoted is cut off all the same.
    match detail.find(['`', '"', '\'']) {
        Some(i)
            if !(detail.starts_with("missing field `")
                || detail.starts_with("duplicate field `")) =>
        {
            format!("{} (rest not shown)", detail[..i].trim_end())
        }
        _ => detail.to_string(),
    }
}

/// Where `associations[index]` starts (1-based line and column), found by walking the
/// document again and stopping at that entry: serde_yaml_ng puts the position of the node
/// that failed into its error. Only called on the error path.
fn entry_location(text: &str, index: usize) -> Option<(usize, usize)> {
    struct Stop;
    impl<'de> Visitor<'de> for Stop {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("the entry being located")
        }
        // Every visit_* keeps its default: an error carrying this node's position.
    }
    impl<'de> DeserializeSeed<'de> for Stop {
        type Value = ();
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(Stop)
        }
    }
    struct List(usize);
    impl<'de> Visitor<'de> for List {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list of associations")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            for _ in 0..self.0 {
                seq.next_element::<IgnoredAny>()?;
            }
            seq.next_element_seed(Stop)?;
            Err(de::Error::custom("entry not found"))
        }
    }
    impl<'de> DeserializeSeed<'de> for List {
        type Value = ();
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_seq(self)
        }
    }
    struct Document(usize);
    impl<'de> Visitor<'de> for Document {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an associations document")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key::<String>()? {
                if key == "associations" {
                    return map.next_value_seed(List(self.0));
                }
                map.next_value::<IgnoredAny>()?;
            }
            Err(de::Error::custom("entry not found"))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
            List(self.0).visit_seq(seq)
        }
    }
    impl<'de> de::Deserialize<'de> for Document {
        fn deserialize<D: de::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
            unreachable!("only used as a seed")
        }
    }
    let de = serde_yaml_ng::Deserializer::from_str(text);
    let err = de::Deserializer::deserialize_any(de, Document(index)).err()?;
    let l = err.location()?;
    Some((l.line(), l.column()))
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

fn parse_bytes(path: &Path, bytes: &[u8]) -> Result<Parsed, FileError> {
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

fn index(path: &Path, list: Vec<Association>) -> Result<AssociationIndex, FileError> {
    index_associations(list).map_err(|message| FileError::Invalid {
        path: path.to_owned(),
        message,
    })
}

/// The associations of one file, swapped atomically on reload.
pub struct FileSource {
    path: PathBuf,
    index: ArcSwap<AssociationIndex>,
    count: AtomicUsize,
    empty_reloads_refused: AtomicU64,
}

impl FileSource {
    /// Loads the file (at most [`DEFAULT_MAX_BYTES`]); a missing or broken file at start-up is
    /// an error (nothing to fall back on).
    pub fn open(path: impl Into<PathBuf>) -> Result<(Arc<Self>, FileReloader), FileError> {
        Self::open_capped(path, DEFAULT_MAX_BYTES)
    }

    /// [`FileSource::open`] with a size cap of `max_bytes`, kept for reloads.
    pub fn open_capped(
        path: impl Into<PathBuf>,
        max_bytes: u64,
    ) -> Result<(Arc<Self>, FileReloader), FileError> {
        let path = path.into();
        let (parsed, bytes) = load(&path, max_bytes)?;
        let count = parsed.associations.len();
        let source = Arc::new(Self {
            index: ArcSwap::from_pointee(index(&path, parsed.associations)?),
            path,
            count: count.into(),
            empty_reloads_refused: AtomicU64::new(0),
        });
        let reloader = FileReloader {
            source: source.clone(),
            last: bytes,
            max_bytes,
            refused: None,
        };
        Ok((source, reloader))
    }

    /// A source over a fixed list (tests, the offline checker).
    pub fn from_list(list: Vec<Association>) -> Result<Arc<Self>, String> {
        let count = list.len();
        Ok(Arc::new(Self {
            path: PathBuf::from("<memory>"),
            index: ArcSwap::from_pointee(index_associations(list)?),
            count: count.into(),
            empty_reloads_refused: AtomicU64::new(0),
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many reloads came back empty while associations were loaded, and were refused.
    pub fn empty_reloads_refused(&self) -> u64 {
        self.empty_reloads_refused.load(Ordering::Relaxed)
    }

    /// The association's details (the file holds them all).
    pub fn get(&self, namespace: &str, service_account: &str) -> Option<Arc<Association>> {
        index_get(&self.index.load(), namespace, service_account).map(|a| a.details.clone())
    }

    fn summary(&self, namespace: &str, service_account: &str) -> Option<Arc<AssociationSummary>> {
        index_get(&self.index.load(), namespace, service_account).map(|a| a.summary.clone())
    }
}

impl AssociationSource for FileSource {
    fn name(&self) -> &'static str {
        "file"
    }

    fn lookup<'a>(
        &'a self,
        namespace: &'a str,
        service_account: &'a str,
        _freshness: Freshness,
    ) -> BoxFuture<'a, Result<Option<Arc<AssociationSummary>>, IdentityError>> {
        let found = self.summary(namespace, service_account);
        Box::pin(std::future::ready(Ok(found)))
    }

    fn details<'a>(
        &'a self,
        namespace: &'a str,
        service_account: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<Association>>, IdentityError>> {
        let found = self.get(namespace, service_account);
        Box::pin(std::future::ready(Ok(found)))
    }

    fn ready(&self) -> bool {
        true
    }
}

/// Re-reads the file when its bytes change.
pub struct FileReloader {
    source: Arc<FileSource>,
    last: Vec<u8>,
    max_bytes: u64,
    /// The last content refused as suspiciously empty (counted once).
    refused: Option<Vec<u8>>,
}

impl Reloadable for FileReloader {
    fn what(&self) -> String {
        format!("associations file {}", self.source.path.display())
    }

    fn check(&mut self) -> ReloadOutcome {
        let bytes = match files::read_capped(&self.source.path, self.max_bytes) {
            Ok(b) => b,
            Err(e) => return ReloadOutcome::Failed(format!("cannot read: {e}")),
        };
        if bytes == self.last {
            return ReloadOutcome::Unchanged;
        }
        let parsed = match parse_bytes(&self.source.path, &bytes) {
            Ok(p) => p,
            Err(e) => return ReloadOutcome::Failed(e.to_string()),
        };
        let loaded = self.source.len();
        if parsed.associations.is_empty() && loaded > 0 && !parsed.explicitly_empty {
            // `last` stays as it was, so the same content is refused again on the next check
            // (the reload loop logs a repeated failure once); it is counted once.
            if self.refused.as_deref() != Some(bytes.as_slice()) {
                self.source
                    .empty_reloads_refused
                    .fetch_add(1, Ordering::Relaxed);
                self.refused = Some(bytes);
            }
            return ReloadOutcome::Failed(format!(
                "the file now holds no associations (empty, `associations:` with no list, or `[]`), \
                 as a truncated write would; keeping the {loaded} loaded before. \
                 Write `associations: []` to remove them all"
            ));
        }
        let count = parsed.associations.len();
        match index(&self.source.path, parsed.associations) {
            Ok(index) => {
                self.source.index.store(Arc::new(index));
                self.source.count.store(count, Ordering::Relaxed);
                self.last = bytes;
                ReloadOutcome::Reloaded
            }
            Err(e) => ReloadOutcome::Failed(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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

    #[test]
    fn a_symlink_to_a_secret_file_is_not_quoted_at_start_up_or_on_reload() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret.env");
        std::fs::write(
            &secret,
            "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY\n",
        )
        .unwrap();
        let path = dir.path().join("associations.yaml");
        std::os::unix::fs::symlink(&secret, &path).unwrap();
        let e = FileSource::open(&path).err().unwrap().to_string();
        assert!(
            !e.contains("wJalrXUtnFEMIK7MDENG") && !e.contains("AWS_SECRET"),
            "{e}"
        );

        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, GOOD).unwrap();
        let (_src, mut reloader) = FileSource::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&secret, &path).unwrap();
        let ReloadOutcome::Failed(e) = reloader.check() else {
            panic!("a secret file is not an associations file")
        };
        assert!(
            !e.contains("wJalrXUtnFEMIK7MDENG") && !e.contains("AWS_SECRET"),
            "{e}"
        );
    }

    /// Runs `f` on another thread and fails (instead of hanging) if it blocks.
    fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("blocked: the read did not return")
    }

    fn mkfifo(path: &Path) {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    #[test]
    fn dev_zero_a_fifo_and_oversized_files_are_refused_without_blocking() {
        let e = within(|| FileSource::open("/dev/zero").err().unwrap().to_string());
        assert!(
            e.contains("/dev/zero") && e.contains("a character device, not a regular file"),
            "{e}"
        );

        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.yaml");
        mkfifo(&fifo);
        let f = fifo.clone();
        let e = within(move || FileSource::open(f).err().unwrap().to_string());
        assert!(e.contains("a FIFO, not a regular file"), "{e}");

        let big = dir.path().join("big.yaml");
        std::fs::write(&big, GOOD).unwrap();
        let e = FileSource::open_capped(&big, 50).err().unwrap().to_string();
        assert!(e.contains("larger than the 50-byte limit"), "{e}");

        // On reload: the FIFO or the device in place of the file keeps the last good content.
        let path = dir.path().join("a.yaml");
        std::fs::write(&path, GOOD).unwrap();
        let (src, reloader) = FileSource::open_capped(&path, 4096).unwrap();
        std::fs::remove_file(&path).unwrap();
        mkfifo(&path);
        let (outcome, reloader) = within(move || {
            let mut r = reloader;
            (r.check(), r)
        });
        assert!(
            matches!(&outcome, ReloadOutcome::Failed(e) if e.contains("a FIFO")),
            "{outcome:?}"
        );
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
        let (outcome, mut reloader) = within(move || {
            let mut r = reloader;
            (r.check(), r)
        });
        assert!(
            matches!(&outcome, ReloadOutcome::Failed(e) if e.contains("character device")),
            "{outcome:?}"
        );
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, GOOD.repeat(40)).unwrap();
        assert!(
            matches!(reloader.check(), ReloadOutcome::Failed(e) if e.contains("4096-byte limit"))
        );
        assert!(src.get("team-a", "carts").is_some());
    }

    #[test]
    fn reload_keeps_last_good_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.yaml");
        std::fs::write(&path, GOOD).unwrap();
        let (src, mut reloader) = FileSource::open(&path).unwrap();
        assert!(src.get("team-a", "carts").is_some());
        assert_eq!(reloader.check(), ReloadOutcome::Unchanged);

        std::fs::write(&path, "associations: [ {broken").unwrap();
        assert!(matches!(reloader.check(), ReloadOutcome::Failed(_)));
        assert!(
            src.get("team-a", "carts").is_some(),
            "last good content kept"
        );

        std::fs::write(&path, GOOD.replace("carts", "orders")).unwrap();
        assert_eq!(reloader.check(), ReloadOutcome::Reloaded);
        assert!(src.get("team-a", "carts").is_none());
        assert!(src.get("team-a", "orders").is_some());
    }

    #[test]
    fn a_reload_that_comes_back_empty_keeps_the_loaded_associations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.yaml");
        std::fs::write(&path, GOOD).unwrap();
        let (src, mut reloader) = FileSource::open(&path).unwrap();
        let mut refused = 0;
        for empty in [
            "",
            "   \n\n",
            "associations:",
            "associations:\n",
            "[]",
            "{}",
            "# emptied\n",
        ] {
            std::fs::write(&path, empty).unwrap();
            let outcome = reloader.check();
            assert!(
                matches!(&outcome, ReloadOutcome::Failed(e) if e.contains("keeping the 1 loaded before") && e.contains("associations: []")),
                "{empty:?}: {outcome:?}"
            );
            refused += 1;
            assert_eq!(src.len(), 1, "{empty:?}");
            assert!(src.get("team-a", "carts").is_some(), "{empty:?}");
            // Checked again, the same content is refused again but counted once.
            assert!(matches!(reloader.check(), ReloadOutcome::Failed(_)));
            assert_eq!(src.empty_reloads_refused(), refused, "{empty:?}");
        }
        // Said explicitly, emptying is what the operator wants.
        std::fs::write(&path, "associations: []\n").unwrap();
        assert_eq!(reloader.check(), ReloadOutcome::Reloaded);
        assert!(src.is_empty() && src.get("team-a", "carts").is_none());
        // Empty while nothing was loaded is nothing to protect.
        std::fs::write(&path, "").unwrap();
        assert_eq!(reloader.check(), ReloadOutcome::Reloaded);
        std::fs::write(&path, GOOD).unwrap();
        assert_eq!(reloader.check(), ReloadOutcome::Reloaded);
        assert_eq!(src.len(), 1);
        assert_eq!(src.empty_reloads_refused(), refused);
    }

    #[test]
    fn an_empty_file_at_start_up_is_an_empty_source() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.yaml");
        std::fs::write(&path, "").unwrap();
        let (src, _) = FileSource::open(&path).unwrap();
        assert!(src.is_empty());
    }
}
