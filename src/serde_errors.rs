//! serde errors as messages that never quote the file: built from the field's path
//! (`serde_path_to_error`), the parser's position and the kind of error, for files that may be
//! something else in disguise (a Secret behind a symlink): the associations file, `--config` and
//! `check`'s manifests.

use std::fmt;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use serde_path_to_error::Segment;

/// A 1-based position in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {} column {}", self.line, self.column)
    }
}

impl From<serde_yaml_ng::Location> for Location {
    fn from(l: serde_yaml_ng::Location) -> Self {
        Self {
            line: l.line(),
            column: l.column(),
        }
    }
}

/// Whether a key the file has and our types do not may be named: yes in `--config` (a typo is
/// worth showing), no in a file that may be a secret in disguise (its keys are its content).
/// With `Hidden`, the path names only keys the types accepted: types of structs and lists, not
/// maps keyed by the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    Named,
    Hidden,
}

/// What was wrong, in serde's words and our types' words only: never a value of the file, and a
/// key of the file only with [`Keys::Named`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A key our types do not have; `expected` lists the ones they do.
    UnknownKey {
        key: Option<String>,
        expected: Option<String>,
    },
    /// A value of the wrong kind (`found` is serde's kind: `string`, `sequence`, ...).
    InvalidType {
        found: String,
        expected: Option<String>,
    },
    /// A value of the right kind that is refused (an unknown enum variant is one too).
    InvalidValue {
        found: String,
        expected: Option<String>,
    },
    /// Anything else, in words safe to show: missing or duplicate fields (our names), the
    /// parser's own messages, or any other text cut at its first quote.
    Other(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tail = |expected: &Option<String>| {
            expected
                .as_ref()
                .map(|e| format!(", expected {e}"))
                .unwrap_or_default()
        };
        match self {
            Self::UnknownKey {
                key: Some(k),
                expected,
            } => {
                write!(f, "unknown key `{}`{}", k.escape_debug(), tail(expected))
            }
            Self::UnknownKey {
                key: None,
                expected,
            } => {
                write!(f, "unknown key (not shown){}", tail(expected))
            }
            Self::InvalidType { found, expected } => {
                write!(
                    f,
                    "invalid type: {found} (value not shown){}",
                    tail(expected)
                )
            }
            Self::InvalidValue { found, expected } => {
                write!(
                    f,
                    "invalid value: {found} (value not shown){}",
                    tail(expected)
                )
            }
            Self::Other(text) => f.write_str(text),
        }
    }
}

/// A serde error from a file, described: where, at which field, and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}{problem}", prefix(location.map(|l| l.to_string())), prefix(path.clone()))]
pub struct Described {
    pub location: Option<Location>,
    /// Our field names and indices (`associations[3].roleArn`); `None` at the top.
    pub path: Option<String>,
    pub problem: Problem,
}

fn prefix(part: Option<String>) -> String {
    part.map(|p| format!("{p}: ")).unwrap_or_default()
}

/// A YAML (or JSON, a subset) document that did not deserialize, with the path of the field.
#[derive(Debug)]
pub struct YamlError {
    path: serde_path_to_error::Path,
    error: serde_yaml_ng::Error,
}

/// `T` from a YAML (or JSON) document, tracking the path to the field that fails.
pub fn from_yaml<T: DeserializeOwned>(text: &str) -> Result<T, YamlError> {
    from_yaml_document(serde_yaml_ng::Deserializer::from_str(text))
}

/// `T` from one document of a YAML stream, tracking the path to the field that fails.
pub fn from_yaml_document<'de, T: de::Deserialize<'de>>(
    document: serde_yaml_ng::Deserializer<'de>,
) -> Result<T, YamlError> {
    serde_path_to_error::deserialize(document).map_err(|e| YamlError {
        path: e.path().clone(),
        error: e.into_inner(),
    })
}

impl YamlError {
    pub fn location(&self) -> Option<Location> {
        self.error.location().map(Location::from)
    }

    /// The error as location, path and problem.
    pub fn describe(&self, keys: Keys) -> Described {
        let text = self.error.to_string();
        if is_parser_error(&self.error) {
            return Described {
                location: self.location(),
                path: None,
                problem: Problem::Other(without_positions(&text)),
            };
        }
        let segments: Vec<&Segment> = self.path.iter().collect();
        // serde_yaml_ng writes the path before the messages of serde and of our types (not
        // before the parser's, whose errors come mid-document too), at the map's path for an
        // unknown key, which `serde_path_to_error` has read already. The path is shown when it
        // is found there: a syntax error is not about the field being read.
        let parent = &segments[..segments.len().saturating_sub(1)];
        let stripped = [yaml_path(&segments), yaml_path(parent)]
            .iter()
            .filter(|p| *p != ".")
            .find_map(|p| text.strip_prefix(&format!("{p}: ")));
        let mut problem = classify(&without_positions(stripped.unwrap_or(&text)));
        let mut path = if stripped.is_some() {
            &segments[..]
        } else {
            &[]
        };
        if let Problem::UnknownKey { key, .. } = &mut problem
            && let Some(Segment::Map { key: k }) = segments.last()
        {
            *key = (keys == Keys::Named).then(|| k.clone());
            path = parent;
        }
        Described {
            location: self.location(),
            path: (!path.is_empty()).then(|| field_path(path)),
            problem,
        }
    }
}

/// libyaml's messages are its own static strings (`did not find expected ',' or ']'`), never
/// the file's, and are shown whole. serde_yaml_ng has no accessor for the kind of error; its
/// `Debug` form is the one thing that tells them apart (`Error { kind: SCANNER, .. }` against
/// `Error("message", ..)`). Should that form change, they are cut like any other text: safe
/// either way.
fn is_parser_error(e: &serde_yaml_ng::Error) -> bool {
    format!("{e:?}").starts_with("Error { ")
}

/// A JSON parse error's problem; its position is `line()` and `column()`.
pub fn json_problem(e: &serde_json::Error) -> Problem {
    let text = e.to_string();
    let position = format!(" at line {} column {}", e.line(), e.column());
    classify(text.strip_suffix(&position).unwrap_or(&text))
}

/// The path as serde_yaml_ng writes it before its messages (`.` at the top, `.[0]` for a bare
/// list's entry).
fn yaml_path(segments: &[&Segment]) -> String {
    let mut out = String::new();
    for s in segments {
        match s {
            Segment::Seq { index } => {
                if out.is_empty() {
                    out.push('.');
                }
                out.push_str(&format!("[{index}]"));
            }
            other => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&other.to_string());
            }
        }
    }
    if out.is_empty() { ".".into() } else { out }
}

/// The path as messages show it: `associations[3].roleArn`, `[3]` for a bare list's entry.
fn field_path(segments: &[&Segment]) -> String {
    let mut out = String::new();
    for s in segments {
        if !out.is_empty() && !matches!(s, Segment::Seq { .. }) {
            out.push('.');
        }
        out.push_str(&s.to_string());
    }
    out
}

/// Removes the parser's ` at line L column C` (and ` at position N`) wherever they are: the
/// location is reported apart, once. libyaml writes one for its context too.
fn without_positions(text: &str) -> String {
    let mut out = text.to_string();
    for marker in [" at line ", " at position "] {
        while let Some(i) = out.find(marker) {
            let rest = &out[i + marker.len()..];
            let skip = rest
                .find(|c: char| !(c.is_ascii_digit() || c == ' ' || "column".contains(c)))
                .unwrap_or(rest.len());
            out.replace_range(i..i + marker.len() + skip, "");
        }
    }
    out
}

/// The one place serde's text is read: serde's `de::Error` constructors are fixed phrases
/// (`invalid type: {unexpected}, expected {expected}`, `unknown field `{key}`, ...`) whose
/// `unexpected` part quotes the value (`string "hunter2"`, `integer `7``). Only the phrase, the
/// value's kind (the words before the quote) and `expected` (our types' own words) are kept.
fn classify(message: &str) -> Problem {
    // `expected ...` comes from our types (no `, expected` inside them), so the last one is ours
    // even when a quoted value contains the same words.
    let split = message.rfind(", expected ");
    let expected = split
        .map(|i| message[i + ", expected ".len()..].to_string())
        .filter(|e| !e.contains(['"', '\'']));
    let kind = |phrase: &str| {
        let unexpected = &message[phrase.len()..split.unwrap_or(message.len())];
        let kind = unexpected[..unexpected
            .find(['`', '"', '\''])
            .unwrap_or(unexpected.len())]
            .trim_end()
            .to_string();
        // Beyond the kind, anything before `expected` may be a value (`Unexpected::Other`).
        if kind.is_empty() || kind.contains(',') {
            "value".to_string()
        } else {
            kind
        }
    };
    if message.starts_with("unknown field ") {
        return Problem::UnknownKey {
            key: None,
            expected,
        };
    }
    if message.starts_with("unknown variant ") {
        return Problem::InvalidValue {
            found: "unknown variant".into(),
            expected,
        };
    }
    for phrase in ["invalid type: ", "invalid value: "] {
        if message.starts_with(phrase) {
            let found = kind(phrase);
            return if phrase == "invalid type: " {
                Problem::InvalidType { found, expected }
            } else {
                Problem::InvalidValue { found, expected }
            };
        }
    }
    // `missing field` and `duplicate field` name only our own fields; anything else quoted
    // is cut off.
    if message.starts_with("missing field `") || message.starts_with("duplicate field `") {
        return Problem::Other(message.to_string());
    }
    match message.find(['`', '"', '\'']) {
        Some(i) => Problem::Other(format!("{} (rest not shown)", message[..i].trim_end())),
        None => Problem::Other(message.to_string()),
    }
}

/// Where the node at `path` starts in a YAML document, for checks made after parsing (serde
/// gives positions of failures only): the document is walked again to that node, which is then
/// refused, and serde_yaml_ng's error carries its position. Only called on the error path.
pub fn locate(text: &str, path: &[Step<'_>]) -> Option<Location> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    let err = Walk(path).deserialize(de).err()?;
    err.location().map(Location::from)
}

/// One step of a path to [`locate`].
#[derive(Debug, Clone, Copy)]
pub enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// Walks to the node at its path and refuses it (every `visit_*` keeps its default: an error
/// at that node's position).
struct Walk<'p, 'a>(&'p [Step<'a>]);

impl<'de> DeserializeSeed<'de> for Walk<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("the node being located")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((Step::Index(index), rest)) = self.0.split_first() else {
            return Err(de::Error::custom("located"));
        };
        for _ in 0..*index {
            seq.next_element::<IgnoredAny>()?;
        }
        seq.next_element_seed(Walk(rest))?;
        // Not there: the rest is read (serde_yaml_ng refuses a list left half read) and no
        // error means no position.
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((Step::Key(key), rest)) = self.0.split_first() else {
            return Err(de::Error::custom("located"));
        };
        while let Some(k) = map.next_key::<String>()? {
            if k == *key {
                map.next_value_seed(Walk(rest))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        #[allow(dead_code)]
        items: Vec<Item>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Item {
        name: String,
        max_count: Option<u32>,
        mode: Option<Mode>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    enum Mode {
        Off,
        On,
    }

    fn described<T: DeserializeOwned + fmt::Debug>(text: &str, keys: Keys) -> String {
        from_yaml::<T>(text).unwrap_err().describe(keys).to_string()
    }

    #[test]
    fn path_position_and_kind_without_the_value() {
        for (text, keys, message) in [
            (
                "items:\n  - name: a\n    maxCount: hunter2\n",
                Keys::Hidden,
                "line 3 column 15: items[0].maxCount: invalid type: string (value not shown), expected u32",
            ),
            (
                "items: [{name: [hunter2]}]",
                Keys::Hidden,
                "line 1 column 16: items[0].name: invalid type: sequence (value not shown), expected a string",
            ),
            (
                "items:\n  - name: a\n    hunter2: 1\n",
                Keys::Hidden,
                "line 3 column 5: items[0]: unknown key (not shown), expected one of `name`, `maxCount`, `mode`",
            ),
            (
                "items:\n  - name: a\n    maxCont: 1\n",
                Keys::Named,
                "line 3 column 5: items[0]: unknown key `maxCont`, expected one of `name`, `maxCount`, `mode`",
            ),
            (
                "items: [{name: a, mode: hunter2}]",
                Keys::Named,
                "line 1 column 25: items[0].mode: invalid value: unknown variant (value not shown), expected `off` or `on`",
            ),
            (
                "{hunter2: 1}",
                Keys::Hidden,
                "line 1 column 2: unknown key (not shown), expected `items`",
            ),
            (
                "hunter2",
                Keys::Named,
                "line 1 column 1: invalid type: string (value not shown), expected struct Doc",
            ),
            (
                "items:\n  - {maxCount: 1}\n",
                Keys::Hidden,
                "line 2 column 5: items[0]: missing field `name`",
            ),
            (
                "items: [{name: 'hunter2}]",
                Keys::Hidden,
                "line 1 column 26: found unexpected end of stream, while scanning a quoted scalar",
            ),
            (
                "items: [{name: a}, {name: b}\n",
                Keys::Hidden,
                "line 2 column 1: did not find expected ',' or ']', while parsing a flow sequence",
            ),
        ] {
            assert_eq!(described::<Doc>(text, keys), message, "{text:?}");
        }
        assert_eq!(
            described::<Vec<Item>>("- name: a\n  maxCount: -1\n", Keys::Hidden),
            "line 2 column 13: [0].maxCount: invalid type: integer (value not shown), expected u32"
        );
    }

    #[test]
    fn json_problems_lose_only_their_position() {
        let e = serde_json::from_str::<serde_json::Value>("{\"a\": }").unwrap_err();
        assert_eq!(json_problem(&e).to_string(), "expected value");
    }

    #[test]
    fn nodes_are_located_by_their_path() {
        let text = "other: 1\nitems:\n  - name: a\n  -   name: b\n";
        let at = |steps: &[Step]| locate(text, steps);
        assert_eq!(
            at(&[Step::Key("items"), Step::Index(1)]),
            Some(Location { line: 4, column: 7 })
        );
        assert_eq!(
            at(&[Step::Key("items"), Step::Index(0), Step::Key("name")]),
            Some(Location {
                line: 3,
                column: 11
            })
        );
        assert_eq!(at(&[Step::Key("items"), Step::Index(2)]), None);
        assert_eq!(
            at(&[Step::Key("other"), Step::Index(0)]).map(|l| l.line),
            Some(1)
        );
    }
}
