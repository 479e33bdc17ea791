//! Strings read from a request body, borrowed from it wherever they can be: a string without
//! escapes (nearly all of them) is a slice of the body, not a copy, and an annotation's value
//! is unescaped only when it is read. The views of the request ([`review`](super::review)) and
//! of its object ([`pod`](super::pod)) are made of these.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// A string of the object: borrowed from the body when it had no escapes to undo.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Text<'a>(Cow<'a, str>);

impl Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'a> Text<'a> {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn borrowed(s: &'a str) -> Self {
        Self(Cow::Borrowed(s))
    }

    pub(crate) fn owned(s: String) -> Self {
        Self(Cow::Owned(s))
    }

    pub(crate) fn into_cow(self) -> Cow<'a, str> {
        self.0
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
///
/// Read with serde_json from text only (it is captured as a `serde_json::value::RawValue`): the
/// views holding it borrow from their input, so they cannot come from a `serde_json::Value` or
/// from YAML directly. A reader of YAML manifests converts them to JSON text first.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RawText<'a>(&'a str);

impl<'a> RawText<'a> {
    /// `literal` is a whole JSON string literal, quotes included, already checked as one.
    pub(crate) fn from_literal(literal: &'a str) -> Self {
        debug_assert!(literal.len() >= 2 && literal.starts_with('"') && literal.ends_with('"'));
        Self(literal)
    }

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
    pub(crate) fn from_members(members: Vec<(Text<'a>, V)>) -> Self {
        Self(members)
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| **k == *key)
            .map(|(_, v)| v)
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&str, &V)> {
        self.0.iter().map(|(k, v)| (&**k, v))
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn read(json: &str) -> Cow<'_, str> {
        serde_json::from_str::<RawText>(json).unwrap().get()
    }

    #[test]
    fn strings_without_escapes_are_slices_of_the_body() {
        let plain: Text = serde_json::from_str(r#""web""#).unwrap();
        assert!(matches!(plain.0, Cow::Borrowed("web")));
        // An escaped string is unescaped into its own copy.
        let escaped: Text = serde_json::from_str(r#""a\"b""#).unwrap();
        assert!(matches!(escaped.0, Cow::Owned(_)));
        assert_eq!(&*escaped, "a\"b");
    }

    #[test]
    fn raw_text_is_unescaped_when_read() {
        assert!(matches!(read(r#""v""#), Cow::Borrowed("v")));
        assert_eq!(read(r#""""#), "");
        assert_eq!(read(r#""{\"kind\":\"Pod\"}\n""#), "{\"kind\":\"Pod\"}\n");
        assert!(serde_json::from_str::<RawText>("1").is_err());
        assert!(serde_json::from_str::<RawText>(r#""bad \x escape""#).is_err());
    }

    #[test]
    fn a_lone_surrogate_reads_as_the_replacement_character() {
        assert_eq!(read(r#""x\ud800y""#), "x\u{fffd}y");
        assert_eq!(read(r#""\ud83d\ude00\t\udc00""#), "😀\t\u{fffd}");
        assert_eq!(
            unescape_lossy(r#"\"\\\/\b\f\n\r\t\u0041"#),
            "\"\\/\u{8}\u{c}\n\r\tA"
        );
    }
}
