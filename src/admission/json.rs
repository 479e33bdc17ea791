//! JSON written by hand for the two documents made on every admission: the patch and the
//! AdmissionReview answer.
//!
//! Why not serde_json here: its serializer checks every byte of every string against an escape
//! table, one byte at a time. Our strings (paths, ARNs, the base64 patch) almost never need an
//! escape, so [`string`] checks a whole string at once and copies it; only a string that does
//! need escapes goes through serde_json. The output is byte for byte what serde_json writes
//! for the same values (the tests compare the two).

/// Something that writes itself as JSON.
pub trait WriteJson {
    fn write_json(&self, out: &mut Vec<u8>);
}

impl WriteJson for str {
    fn write_json(&self, out: &mut Vec<u8>) {
        string(out, self);
    }
}

impl WriteJson for bool {
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(if *self { b"true" } else { b"false" });
    }
}

impl WriteJson for i64 {
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(itoa::Buffer::new().format(*self).as_bytes());
    }
}

impl WriteJson for u16 {
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(itoa::Buffer::new().format(*self).as_bytes());
    }
}

impl<T: WriteJson> WriteJson for [T] {
    fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'[');
        for (i, item) in self.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            item.write_json(out);
        }
        out.push(b']');
    }
}

impl<T: WriteJson + ?Sized> WriteJson for &T {
    fn write_json(&self, out: &mut Vec<u8>) {
        (**self).write_json(out);
    }
}

impl WriteJson for String {
    fn write_json(&self, out: &mut Vec<u8>) {
        string(out, self);
    }
}

/// Writes `s` as a JSON string literal, escaped exactly as serde_json escapes it.
pub fn string(out: &mut Vec<u8>, s: &str) {
    if needs_escape(s.as_bytes()) {
        serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
    } else {
        quoted(out, s);
    }
}

/// `"s"`, copied as it is: only for text known to need no escape.
fn quoted(out: &mut Vec<u8>, s: &str) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

/// Whether serde_json would escape any byte of `bytes` (controls, `"` and `\`). A fold over
/// the whole slice, without early exit, so the compiler checks many bytes per instruction.
fn needs_escape(bytes: &[u8]) -> bool {
    bytes.iter().fold(false, |acc, &b| {
        acc | (b < 0x20) | (b == b'"') | (b == b'\\')
    })
}

/// Writes `{"k1":v1,"k2":v2,...}` one member at a time: `object(out, |o| { o.member("k", &v); })`.
pub fn object(out: &mut Vec<u8>, members: impl FnOnce(&mut Members<'_>)) {
    out.push(b'{');
    let mut m = Members { out, first: true };
    members(&mut m);
    m.out.push(b'}');
}

/// The members of an object being written by [`object`].
pub struct Members<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl Members<'_> {
    /// `"key":value`. Keys are constants of this program (`'static`), never input, and none needs
    /// escaping (checked in debug builds): they are copied as they are.
    pub fn member<V: WriteJson + ?Sized>(&mut self, key: &'static str, value: &V) -> &mut Self {
        debug_assert!(!needs_escape(key.as_bytes()), "{key:?}");
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
        value.write_json(self.out);
        self
    }
}

/// Base64 text, which never needs escaping: written without the check. Only for text this
/// program encoded itself.
pub(crate) struct Base64<'a>(pub &'a str);

impl WriteJson for Base64<'_> {
    fn write_json(&self, out: &mut Vec<u8>) {
        debug_assert!(!needs_escape(self.0.as_bytes()));
        quoted(out, self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written<T: WriteJson + ?Sized>(v: &T) -> String {
        let mut out = Vec::new();
        v.write_json(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut every_ascii = String::new();
        for b in 0u8..0x80 {
            every_ascii.push(b as char);
        }
        for s in [
            "",
            "plain",
            "arn:aws:iam::111122223333:role/carts",
            "quote \" and backslash \\",
            "lines\nand\ttabs\r, bell \u{7}, delete \u{7f}",
            "ünïcödé and emoji 🦀",
            "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token",
            every_ascii.as_str(),
        ] {
            assert_eq!(written(s), serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn numbers_booleans_lists_and_objects_match_serde_json() {
        assert_eq!(written(&i64::MIN), i64::MIN.to_string());
        assert_eq!(written(&86400i64), "86400");
        assert_eq!(written(&403u16), "403");
        assert_eq!(written(&true), "true");
        let list = ["a".to_string(), "b\"".to_string()];
        assert_eq!(written(&list[..]), serde_json::to_string(&list).unwrap());
        let empty: [String; 0] = [];
        assert_eq!(written(&empty[..]), "[]");
        let mut out = Vec::new();
        object(&mut out, |o| {
            o.member("a", "x")
                .member("b", &1i64)
                .member("c", &Base64("QUJD"));
        });
        assert_eq!(out, br#"{"a":"x","b":1,"c":"QUJD"}"#);
        let mut out = Vec::new();
        object(&mut out, |_| {});
        assert_eq!(out, b"{}");
    }
}
