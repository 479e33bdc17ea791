//! The one way output repeats a value it was given (a name, a namespace, an annotation, a
//! principal): control characters and quotes escaped so a value cannot forge a line or a
//! column, and anything longer than [`MAX_SHOWN_BYTES`] cut on a character boundary with its
//! length said, so a 15 MB `metadata.name` costs a line of a few hundred bytes, not 15 MB.
//!
//! A Kubernetes name (at most 253 bytes) is never cut; escaping leaves it as it is.

use std::borrow::Cow;
use std::fmt;

/// Longest value repeated in output, in bytes (before escaping).
pub const MAX_SHOWN_BYTES: usize = 256;

/// Longest message repeated whole (a denial naming several bounded values and its fix).
pub const MAX_MESSAGE_BYTES: usize = 2048;

/// `value` as output repeats it: escaped, and cut to [`MAX_SHOWN_BYTES`] with its length.
pub fn shown(value: &str) -> Cow<'_, str> {
    cut(value, MAX_SHOWN_BYTES)
}

/// `value` escaped and cut to `max` bytes (on a character boundary), with `… (N bytes)`
/// appended when cut. Unchanged (borrowed) when it is short and has nothing to escape.
pub fn cut(value: &str, max: usize) -> Cow<'_, str> {
    let long = value.len() > max;
    if !long && !value.chars().any(needs_escape) {
        return Cow::Borrowed(value);
    }
    let mut end = value.len().min(max);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = String::with_capacity(end + 24);
    for c in value[..end].chars() {
        if needs_escape(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if long {
        use fmt::Write;
        let _ = write!(out, "… ({} bytes)", value.len());
    }
    Cow::Owned(out)
}

/// Control characters (a newline would start a forged output line), and the line and
/// paragraph separators some terminals honour.
fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

/// [`shown`] as a `Display`, for `format!` without an intermediate `String`.
pub struct Shown<'a>(pub &'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&shown(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_borrowed_unchanged() {
        let name = "a".repeat(253);
        assert!(matches!(shown(&name), Cow::Borrowed(_)));
        assert!(matches!(shown("$(rm -rf /) role/*"), Cow::Borrowed(_)));
    }

    #[test]
    fn long_values_are_cut_with_their_length() {
        let name = "a".repeat(15_000_000);
        let s = shown(&name);
        assert!(s.len() < MAX_SHOWN_BYTES + 32, "{}", s.len());
        assert!(s.ends_with("… (15000000 bytes)"), "{s}");
    }

    #[test]
    fn cuts_fall_on_character_boundaries_and_control_characters_are_escaped() {
        let v = "é".repeat(200);
        let s = shown(&v);
        assert!(s.starts_with("éé") && s.ends_with("… (400 bytes)"), "{s}");
        assert_eq!(shown("a\nb\u{1b}[31m"), "a\\nb\\u{1b}[31m");
        assert_eq!(Shown("x\ty").to_string(), "x\\ty");
    }
}
