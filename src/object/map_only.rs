//! Structs read from JSON objects only. serde's derived `Deserialize` for a struct also accepts
//! a JSON array holding its fields in order (`"metadata": []`, `"containers": [["app"]]`), which
//! no Kubernetes object is: the API server would never send one, and a view read that way
//! describes a shape the webhook's JSON Patch paths do not address (found by `tests/fuzz.rs`).
//!
//! A struct derives `Deserialize` with `#[serde(remote = "Self")]` (serde then writes its reading
//! as an inherent `deserialize` function instead of the trait impl) and
//! [`from_objects_only!`](crate::object::from_objects_only) implements the trait on top: a JSON
//! object goes to the derived reading, anything else is an error.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserializer, MapAccess, Visitor};

/// The derived reading of a struct (its `#[serde(remote = "Self")]` function).
pub trait Fields<'de>: Sized {
    fn fields<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error>;
}

/// Reads `T` from a JSON object only.
pub fn deserialize<'de, T: Fields<'de>, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
    struct ObjectOnly<T>(PhantomData<T>);
    impl<'de, T: Fields<'de>> Visitor<'de> for ObjectOnly<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::fields(MapAccessDeserializer::new(map))
        }
    }
    d.deserialize_map(ObjectOnly(PhantomData))
}

/// Implements `Deserialize` (JSON objects only) for structs that derive it with
/// `#[serde(remote = "Self")]`: with one lifetime `'a` (`Name`), or with one lifetime and the
/// type of the object they hold (`Name<'a, O>`).
macro_rules! from_objects_only {
    ($($ty:ident<'a, O>),+ $(,)?) => {$(
        impl<'de: 'a, 'a, O: serde::Deserialize<'de>> $crate::object::map_only::Fields<'de>
            for $ty<'a, O>
        {
            fn fields<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $ty::deserialize(d)
            }
        }
        impl<'de: 'a, 'a, O: serde::Deserialize<'de>> serde::Deserialize<'de> for $ty<'a, O> {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $crate::object::map_only::deserialize(d)
            }
        }
    )+};
    ($($ty:ident),+ $(,)?) => {$(
        impl<'de: 'a, 'a> $crate::object::map_only::Fields<'de> for $ty<'a> {
            fn fields<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $ty::deserialize(d)
            }
        }
        impl<'de: 'a, 'a> serde::Deserialize<'de> for $ty<'a> {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $crate::object::map_only::deserialize(d)
            }
        }
    )+};
}
pub(crate) use from_objects_only;

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use crate::object::{ObjectView, Text};

    #[derive(Debug, Deserialize)]
    #[serde(remote = "Self")]
    struct Pair<'a> {
        #[serde(default, borrow)]
        a: Option<Text<'a>>,
        #[serde(default)]
        b: Option<u32>,
    }
    from_objects_only!(Pair);

    #[test]
    fn objects_read_as_derived_and_arrays_are_refused() {
        let p: Pair = serde_json::from_str(r#"{"a":"x","b":1,"c":[]}"#).unwrap();
        assert_eq!((p.a.as_deref(), p.b), (Some("x"), Some(1)));
        assert!(matches!(p.a.unwrap().0, std::borrow::Cow::Borrowed(_)));
        let e = serde_json::from_str::<Pair>(r#"{"b":"x"}"#).unwrap_err();
        assert!(e.to_string().contains("invalid type: string"), "{e}");
        for bad in [r#"["x",1]"#, "[]", "null", "1", r#""x""#] {
            let e = serde_json::from_str::<Pair>(bad).unwrap_err();
            assert!(e.to_string().contains("expected an object"), "{bad}: {e}");
        }
    }

    #[test]
    fn no_part_of_an_object_reads_from_an_array() {
        for bad in [
            r#"[]"#,
            r#"[{}, {}]"#,
            r#"{"metadata":[]}"#,
            r#"{"metadata":["name"]}"#,
            r#"{"spec":[]}"#,
            r#"{"spec":{"containers":[["app"]]}}"#,
            r#"{"spec":{"initContainers":[[]]}}"#,
            r#"{"spec":{"ephemeralContainers":[[]]}}"#,
            r#"{"spec":{"containers":[{"name":"app","env":[["AWS_REGION","x"]]}]}}"#,
            r#"{"spec":{"containers":[{"name":"app","volumeMounts":[["v","/p"]]}]}}"#,
            r#"{"spec":{"volumes":[["v"]]}}"#,
            r#"{"spec":{"template":[]}}"#,
            r#"{"spec":{"template":{"metadata":[],"spec":{}}}}"#,
            r#"{"spec":{"jobTemplate":[[],[]]}}"#,
        ] {
            let e = serde_json::from_str::<ObjectView>(bad).unwrap_err();
            assert!(e.to_string().contains("expected an object"), "{bad}: {e}");
        }
    }
}
