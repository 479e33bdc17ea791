//! The narrow view of a pod (or a workload's pod template) that the decisions read: mutation
//! (SPEC §2) and policy (SPEC §3) both use it. Fields nobody reads are skipped by serde, never
//! kept: nothing is ever re-serialised from this view, so nothing in the object can be lost.
//!
//! The view borrows from the request body: a string without escapes (nearly all of them) is a
//! slice of the body, not a copy, and an annotation's value is unescaped only when it is read.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// A string of the object: borrowed from the body when it had no escapes to undo.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Text<'a>(Cow<'a, str>);

impl Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl PartialEq<str> for Text<'_> {
    fn eq(&self, other: &str) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<&str> for Text<'_> {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == **other
    }
}

impl<'a> From<&'a str> for Text<'a> {
    fn from(s: &'a str) -> Self {
        Self(Cow::Borrowed(s))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// A string as it is written in the body (the JSON literal, quotes included), unescaped only
/// when read. Annotation values: most are never read, and undoing the escapes of the largest
/// (kubectl's `last-applied-configuration`, a whole object in one string) was the biggest
/// single cost of reading a pod.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RawText<'a>(&'a str);

impl<'a> RawText<'a> {
    /// The value. A string with a lone UTF-16 surrogate escape (`"\ud800"`: valid JSON, not
    /// valid text) reads with U+FFFD in its place, as the API server itself reads it.
    pub fn get(&self) -> Cow<'a, str> {
        let inner = &self.0[1..self.0.len() - 1];
        if !inner.contains('\\') {
            return Cow::Borrowed(inner);
        }
        match serde_json::from_str::<String>(self.0) {
            Ok(s) => Cow::Owned(s),
            Err(_) => Cow::Owned(unescape_lossy(inner)),
        }
    }
}

impl fmt::Debug for RawText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RawText<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <&'a RawValue>::deserialize(d)?.get();
        // The capture has checked the syntax (escapes included); only the type is left.
        if raw.len() >= 2 && raw.starts_with('"') {
            Ok(Self(raw))
        } else {
            Err(de::Error::invalid_type(
                de::Unexpected::Other("a non-string JSON value"),
                &"a string",
            ))
        }
    }
}

/// Undoes the escapes of a JSON string's contents, replacing each unpaired surrogate with
/// U+FFFD (Go's `encoding/json` does the same).
fn unescape_lossy(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut units: Vec<u16> = Vec::new();
    let mut chars = s.chars();
    let flush = |units: &mut Vec<u16>, out: &mut String| {
        out.extend(char::decode_utf16(units.drain(..)).map(|c| c.unwrap_or('\u{fffd}')));
    };
    while let Some(c) = chars.next() {
        if c != '\\' {
            flush(&mut units, &mut out);
            out.push(c);
            continue;
        }
        let escaped = match chars.next() {
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                match u16::from_str_radix(&hex, 16) {
                    Ok(unit) => {
                        units.push(unit);
                        continue;
                    }
                    Err(_) => '\u{fffd}',
                }
            }
            Some('b') => '\u{8}',
            Some('f') => '\u{c}',
            Some('n') => '\n',
            Some('r') => '\r',
            Some('t') => '\t',
            Some(other) => other,
            None => break,
        };
        flush(&mut units, &mut out);
        out.push(escaped);
    }
    flush(&mut units, &mut out);
    out
}

/// A JSON object's members in their order, looked up by key (the last of duplicate keys wins,
/// as in a map). Objects here are small; a list is cheaper to build than a map.
#[derive(Clone, PartialEq, Eq)]
pub struct StrMap<'a, V>(Vec<(Text<'a>, V)>);

impl<V> Default for StrMap<'_, V> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<'a, V> StrMap<'a, V> {
    pub fn get(&self, key: &str) -> Option<&V> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| **k == *key)
            .map(|(_, v)| v)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.0.iter().map(|(k, v)| (&**k, v))
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
}

impl<'a, V> FromIterator<(Text<'a>, V)> for StrMap<'a, V> {
    fn from_iter<I: IntoIterator<Item = (Text<'a>, V)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl<V: fmt::Debug> fmt::Debug for StrMap<'_, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| (k, v)))
            .finish()
    }
}

impl<'de: 'a, 'a, V: Deserialize<'de>> Deserialize<'de> for StrMap<'a, V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct M<'a, V>(PhantomData<(Text<'a>, V)>);
        impl<'de: 'a, 'a, V: Deserialize<'de>> Visitor<'de> for M<'a, V> {
            type Value = StrMap<'a, V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
                while let Some(entry) = map.next_entry()? {
                    members.push(entry);
                }
                Ok(StrMap(members))
            }
        }
        d.deserialize_map(M(PhantomData))
    }
}

/// A Pod reduced to what the rules read.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodView<'a> {
    #[serde(default, borrow)]
    pub metadata: MetaView<'a>,
    #[serde(default, borrow)]
    pub spec: SpecView<'a>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetaView<'a> {
    #[serde(default, borrow)]
    pub name: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub generate_name: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub namespace: Option<Text<'a>>,
    /// `None` when the object has no `labels` map at all (a patch must create it).
    #[serde(default, borrow)]
    pub labels: Option<StrMap<'a, Text<'a>>>,
    #[serde(default, borrow)]
    pub annotations: Option<StrMap<'a, RawText<'a>>>,
}

/// A pod spec, of a Pod or of a pod template.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecView<'a> {
    #[serde(default, borrow)]
    pub service_account_name: Option<Text<'a>>,
    /// Deprecated alias of `serviceAccountName`, still filled by the API server.
    #[serde(default, borrow)]
    pub service_account: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub containers: Option<Vec<ContainerView<'a>>>,
    #[serde(default, borrow)]
    pub init_containers: Option<Vec<ContainerView<'a>>>,
    #[serde(default, borrow)]
    pub volumes: Option<Vec<Named<'a>>>,
    #[serde(default, borrow)]
    pub node_selector: Option<StrMap<'a, Text<'a>>>,
    #[serde(default)]
    pub host_network: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerView<'a> {
    #[serde(default, borrow)]
    pub name: Text<'a>,
    #[serde(default, borrow)]
    pub env: Option<Vec<EnvView<'a>>>,
    #[serde(default, borrow)]
    pub volume_mounts: Option<Vec<MountView<'a>>>,
    /// Present on native sidecars (`Always`); read for logs only, both kinds get injected.
    #[serde(default, borrow)]
    pub restart_policy: Option<Text<'a>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct EnvView<'a> {
    #[serde(default, borrow)]
    pub name: Text<'a>,
    /// The literal value; `None` for `valueFrom` (a reference, not a literal).
    #[serde(default, borrow)]
    pub value: Option<Text<'a>>,
}

/// Anything identified by its `name` (volumes).
#[derive(Debug, Default, Deserialize)]
pub struct Named<'a> {
    #[serde(default, borrow)]
    pub name: Text<'a>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MountView<'a> {
    #[serde(default, borrow)]
    pub name: Text<'a>,
    #[serde(default, borrow)]
    pub mount_path: Text<'a>,
}

impl<'a> MetaView<'a> {
    /// A readable name for logs and messages (`generateName` objects have none yet).
    pub fn display_name(&self) -> String {
        match (&self.name, &self.generate_name) {
            (Some(n), _) if !n.is_empty() => n.to_string(),
            (_, Some(g)) if !g.is_empty() => format!("{}*", &**g),
            _ => "<unnamed>".into(),
        }
    }

    pub fn annotation(&self, key: &str) -> Option<Cow<'a, str>> {
        self.annotations.as_ref()?.get(key).map(RawText::get)
    }

    /// The annotation `prefix/name` (the prefix is configurable), without building the key.
    pub fn prefixed_annotation(&self, prefix: &str, name: &str) -> Option<Cow<'a, str>> {
        self.annotations
            .as_ref()?
            .0
            .iter()
            .rev()
            .find(|(k, _)| {
                k.strip_prefix(prefix)
                    .and_then(|rest| rest.strip_prefix('/'))
                    .is_some_and(|rest| rest == name)
            })
            .map(|(_, v)| v.get())
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.as_ref()?.get(key).map(|v| &**v)
    }

    /// Static pods the kubelet mirrors into the API: nothing may change them, and the kubelet
    /// cannot act on a denial.
    pub fn is_mirror_pod(&self) -> bool {
        self.annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(MIRROR_ANNOTATION))
    }
}

impl SpecView<'_> {
    /// `serviceAccountName`, else `serviceAccount`, else `default` (what the API server uses).
    pub fn service_account(&self) -> &str {
        self.service_account_name
            .as_deref()
            .filter(|s| !s.is_empty())
            .or(self.service_account.as_deref().filter(|s| !s.is_empty()))
            .unwrap_or("default")
    }

    /// Init containers (native sidecars included) then containers: (list name, index, container).
    pub fn all_containers(
        &self,
    ) -> impl Iterator<Item = (&'static str, usize, &ContainerView<'_>)> {
        let init = self.init_containers.iter().flatten().enumerate();
        let main = self.containers.iter().flatten().enumerate();
        init.map(|(i, c)| ("initContainers", i, c))
            .chain(main.map(|(i, c)| ("containers", i, c)))
    }

    pub fn is_windows(&self) -> bool {
        self.node_selector.as_ref().is_some_and(|ns| {
            ["kubernetes.io/os", "beta.kubernetes.io/os"]
                .iter()
                .any(|k| ns.get(k).is_some_and(|v| v.eq_ignore_ascii_case("windows")))
        })
    }
}

impl ContainerView<'_> {
    pub fn has_env(&self, name: &str) -> bool {
        self.env.iter().flatten().any(|e| *e.name == *name)
    }
}

impl<'a> PodView<'a> {
    /// The pod's ServiceAccount (see [`SpecView::service_account`]).
    pub fn service_account(&self) -> &str {
        self.spec.service_account()
    }

    pub fn annotation(&self, key: &str) -> Option<Cow<'a, str>> {
        self.metadata.annotation(key)
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.metadata.label(key)
    }

    pub fn display_name(&self) -> String {
        self.metadata.display_name()
    }

    pub fn is_windows(&self) -> bool {
        self.spec.is_windows()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: &str) -> PodView<'_> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn strings_without_escapes_are_slices_of_the_body() {
        let body =
            r#"{"metadata":{"name":"web","namespace":"a\"b"},"spec":{"serviceAccountName":"app"}}"#;
        let p = pod(body);
        let name = p.metadata.name.as_ref().unwrap();
        assert!(matches!(name.0, Cow::Borrowed(_)));
        assert_eq!(&**name, "web");
        // An escaped string is unescaped into its own copy.
        let ns = p.metadata.namespace.as_ref().unwrap();
        assert!(matches!(ns.0, Cow::Owned(_)));
        assert_eq!(&**ns, "a\"b");
        assert_eq!(p.service_account(), "app");
    }

    #[test]
    fn annotation_values_are_unescaped_when_read() {
        let p = pod(
            r#"{"metadata":{"annotations":{"plain":"v","escaped":"{\"a\":\"\u00e9\\n\"}","k/x":"1"}}}"#,
        );
        assert!(matches!(p.annotation("plain"), Some(Cow::Borrowed("v"))));
        assert_eq!(p.annotation("escaped").unwrap(), "{\"a\":\"é\\n\"}");
        assert_eq!(p.metadata.prefixed_annotation("k", "x").unwrap(), "1");
        assert_eq!(p.metadata.prefixed_annotation("k/", "x"), None);
        assert_eq!(p.annotation("absent"), None);
    }

    #[test]
    fn a_lone_surrogate_reads_as_the_replacement_character() {
        let p = pod(r#"{"metadata":{"annotations":{"a":"x\ud800y","b":"\ud83d\ude00\t\udc00"}}}"#);
        assert_eq!(p.annotation("a").unwrap(), "x\u{fffd}y");
        assert_eq!(p.annotation("b").unwrap(), "😀\t\u{fffd}");
        assert_eq!(
            unescape_lossy(r#"\"\\\/\b\f\n\r\t\u0041"#),
            "\"\\/\u{8}\u{c}\n\r\tA"
        );
    }

    #[test]
    fn an_annotation_that_is_not_a_string_is_an_error() {
        for bad in [
            r#"{"a":1}"#,
            r#"{"a":null}"#,
            r#"{"a":{"b":"c"}}"#,
            r#"{"a":["b"]}"#,
        ] {
            let json = format!(r#"{{"metadata":{{"annotations":{bad}}}}}"#);
            let e = serde_json::from_str::<PodView>(&json).unwrap_err();
            assert!(e.to_string().contains("expected a string"), "{bad}: {e}");
        }
        let e = serde_json::from_str::<PodView>(r#"{"metadata":{"labels":{"a":1}}}"#).unwrap_err();
        assert!(e.to_string().contains("expected a string"), "{e}");
    }

    #[test]
    fn the_last_of_duplicate_keys_wins_as_in_a_map() {
        let p = pod(r#"{"metadata":{"labels":{"a":"1","a":"2"},"annotations":{"b":"1","b":"2"}}}"#);
        assert_eq!(p.label("a"), Some("2"));
        assert_eq!(p.annotation("b").unwrap(), "2");
        let windows = pod(r#"{"spec":{"nodeSelector":{"kubernetes.io/os":"Windows"}}}"#);
        assert!(windows.is_windows());
    }
}
