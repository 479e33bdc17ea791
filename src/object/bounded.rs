//! Reading objects in bounded memory (issue 21, docs/contract.md §12). A view entry costs tens of bytes
//! while `{}` in a list costs three bytes of body, so an unbounded read of a hostile pod takes
//! 25 times its body. Two bounds keep it small whatever the shape:
//!
//! - each list of a pod spec (`containers`, `initContainers`, `ephemeralContainers`,
//!   `volumes`) has at most [`MAX_LIST_ENTRIES`] entries;
//! - inside [`read_bounded`], an object has at most [`MAX_OBJECT_ENTRIES`] list and map
//!   entries in all (env variables, mounts, labels, annotations, …).
//!
//! Past either, the object is unreadable (the error names the field), so no decision is ever
//! made on part of a list.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// The most entries read from one list of a pod spec. Far above any useful pod; the limits a
/// pod is held to at admission (`injection.maxContainers`, `injection.maxVolumes`) are lower
/// and configurable up to this.
pub const MAX_LIST_ENTRIES: usize = 4096;

/// The most list and map entries of one object read inside [`read_bounded`]. More than the API
/// server can store: etcd keeps objects of at most 1.5 MiB, and a real entry
/// (`{"name":"X","value":"y"}`) is over 20 bytes.
pub const MAX_OBJECT_ENTRIES: usize = 65_536;

thread_local! {
    /// Entries the object being read may still have; `None` outside [`read_bounded`].
    static ENTRIES_LEFT: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Runs `read`, a synchronous parse of one object, with a budget of [`MAX_OBJECT_ENTRIES`]
/// list and map entries: past it, the object is unreadable.
pub fn read_bounded<T>(read: impl FnOnce() -> T) -> T {
    struct Restore(Option<usize>);
    impl Drop for Restore {
        fn drop(&mut self) {
            ENTRIES_LEFT.set(self.0);
        }
    }
    let _restore = Restore(ENTRIES_LEFT.replace(Some(MAX_OBJECT_ENTRIES)));
    read()
}

/// Takes one entry from the budget of the object being read.
fn take_entry<E: de::Error>() -> Result<(), E> {
    match ENTRIES_LEFT.get() {
        None => Ok(()),
        Some(0) => Err(E::custom(format_args!(
            "more than {MAX_OBJECT_ENTRIES} list and map entries in the object, the most this \
             webhook reads"
        ))),
        Some(left) => {
            ENTRIES_LEFT.set(Some(left - 1));
            Ok(())
        }
    }
}

/// A list of at most `CAP` entries, each taken from the object's budget.
struct List<T, const CAP: usize>(Vec<T>);

impl<'de, T: Deserialize<'de>, const CAP: usize> Deserialize<'de> for List<T, CAP> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries<T, const CAP: usize>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>, const CAP: usize> Visitor<'de> for Entries<T, CAP> {
            type Value = List<T, CAP>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sequence")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = seq.next_element()? {
                    take_entry()?;
                    if entries.len() == CAP {
                        return Err(de::Error::custom(format_args!(
                            "more than {CAP} entries, the most this webhook reads"
                        )));
                    }
                    entries.push(entry);
                }
                Ok(List(entries))
            }
        }

        deserializer.deserialize_seq(Entries(PhantomData))
    }
}

/// A pod spec's list: at most [`MAX_LIST_ENTRIES`] entries (`deserialize_with`).
pub(super) fn pod_list<'de, D, T>(deserializer: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<List<T, MAX_LIST_ENTRIES>>::deserialize(deserializer)?.map(|l| l.0))
}

/// Any other list: its entries count against the object's budget (`deserialize_with`).
pub(super) fn list<'de, D, T>(deserializer: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<List<T, { usize::MAX }>>::deserialize(deserializer)?.map(|l| l.0))
}

/// A map whose entries count against the object's budget (`deserialize_with`). The last of
/// duplicate keys wins, as in any map.
pub(super) fn map<'de, D, K, V>(deserializer: D) -> Result<Option<BTreeMap<K, V>>, D::Error>
where
    D: Deserializer<'de>,
    K: Deserialize<'de> + Ord,
    V: Deserialize<'de>,
{
    struct Map<K, V>(BTreeMap<K, V>);

    impl<'de, K: Deserialize<'de> + Ord, V: Deserialize<'de>> Deserialize<'de> for Map<K, V> {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct Entries<K, V>(PhantomData<(K, V)>);

            impl<'de, K: Deserialize<'de> + Ord, V: Deserialize<'de>> Visitor<'de> for Entries<K, V> {
                type Value = Map<K, V>;

                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a map")
                }

                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                    let mut entries = BTreeMap::new();
                    while let Some((k, v)) = map.next_entry()? {
                        take_entry()?;
                        entries.insert(k, v);
                    }
                    Ok(Map(entries))
                }
            }

            deserializer.deserialize_map(Entries(PhantomData))
        }
    }

    Ok(Option::<Map<K, V>>::deserialize(deserializer)?.map(|m| m.0))
}

#[cfg(test)]
mod tests {
    use super::super::ObjectView;
    use super::*;

    fn entries(n: usize) -> String {
        format!("[{}]", vec!["{}"; n].join(","))
    }

    #[test]
    fn pod_lists_longer_than_the_cap_make_the_object_unreadable() {
        for field in [
            "containers",
            "initContainers",
            "ephemeralContainers",
            "volumes",
        ] {
            let at_cap = format!(r#"{{"spec":{{"{field}":{}}}}}"#, entries(MAX_LIST_ENTRIES));
            let o: ObjectView = serde_json::from_str(&at_cap).unwrap();
            assert_eq!(
                o.spec.container_count() + o.spec.volume_count(),
                MAX_LIST_ENTRIES,
                "{field}"
            );
            let over = format!(
                r#"{{"spec":{{"{field}":{}}}}}"#,
                entries(MAX_LIST_ENTRIES + 1)
            );
            let e = serde_json::from_str::<ObjectView>(&over).unwrap_err();
            assert!(e.to_string().contains("more than 4096 entries"), "{e}");
            // Inside a template too.
            let tpl = format!(
                r#"{{"spec":{{"template":{{"spec":{{"{field}":{}}}}}}}}}"#,
                entries(MAX_LIST_ENTRIES + 1)
            );
            assert!(serde_json::from_str::<ObjectView>(&tpl).is_err(), "{field}");
        }
        let o: ObjectView = serde_json::from_str(
            r#"{"spec":{"containers":null,"initContainers":[{}],"ephemeralContainers":[{},{}]}}"#,
        )
        .unwrap();
        assert!(o.spec.containers.is_none());
        assert_eq!(o.spec.container_count(), 3);
        let e = serde_json::from_str::<ObjectView>(r#"{"spec":{"volumes":7}}"#).unwrap_err();
        assert!(e.to_string().contains("expected a sequence"), "{e}");
    }

    #[test]
    fn inside_read_bounded_an_object_has_a_budget_of_entries_in_all() {
        // The budget spread over the env lists of many containers.
        let per = MAX_OBJECT_ENTRIES / 64;
        let pod = |env: usize| {
            let container = format!(r#"{{"env":{}}}"#, entries(env));
            format!(
                r#"{{"metadata":{{"labels":{{"a":"b"}}}},"spec":{{"containers":[{}]}}}}"#,
                vec![container; 64].join(",")
            )
        };
        // 64 containers, 64 lists of `per` entries and a label: one over.
        let over = pod(per);
        let e = read_bounded(|| serde_json::from_str::<ObjectView>(&over)).unwrap_err();
        assert!(
            e.to_string()
                .contains("more than 65536 list and map entries"),
            "{e}"
        );
        let within = pod(per - 2);
        read_bounded(|| serde_json::from_str::<ObjectView>(&within)).unwrap();
        // Outside it, or in the next object, there is no shortfall.
        serde_json::from_str::<ObjectView>(&over).unwrap();
        read_bounded(|| serde_json::from_str::<ObjectView>(&within)).unwrap();
        // Maps count too.
        let labels: Vec<String> = (0..=MAX_OBJECT_ENTRIES)
            .map(|i| format!(r#""{i}":"""#))
            .collect();
        let many = format!(r#"{{"metadata":{{"labels":{{{}}}}}}}"#, labels.join(","));
        let e = read_bounded(|| serde_json::from_str::<ObjectView>(&many)).unwrap_err();
        assert!(e.to_string().contains("list and map entries"), "{e}");
    }
}
