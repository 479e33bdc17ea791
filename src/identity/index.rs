//! The in-memory index the associations file is served from (docs/associations.md#patterns):
//! exact entries in a hash map (namespace → serviceAccount), looked up without allocating;
//! pattern entries, at most [`MAX_PATTERNS`], in precedence order, consulted only when no
//! exact entry matches. The precedence and the refusal of ties live here, so every command
//! resolves through the same lookup.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::sync::Arc;

use super::pattern::{self, NamePattern, literal_prefix_len};
use super::session_policy;
use super::types::{Association, AssociationSummary, FileEntry};

/// The most pattern entries a file may hold: each is tried on every miss, and ties are checked
/// pairwise at load.
pub const MAX_PATTERNS: usize = 100;

/// Association lookups: exact entries hashed, pattern entries in precedence order.
#[derive(Debug, Default)]
pub struct AssociationIndex {
    exact: HashMap<String, HashMap<String, IndexedAssociation>>,
    patterns: Vec<IndexedAssociation>,
}

/// One association of an [`AssociationIndex`]: its summary (for lookups, shared without
/// copying) and its details.
#[derive(Debug, Clone)]
pub struct IndexedAssociation {
    pub summary: Arc<AssociationSummary>,
    pub details: Arc<Association>,
}

/// Why a list of associations cannot be indexed; positions are indexes into the list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    #[error(
        "two associations for {namespace}/{service_account}; EKS allows one per ServiceAccount"
    )]
    Duplicate {
        first: usize,
        second: usize,
        namespace: String,
        service_account: String,
    },
    #[error(
        "associations[{second}] ties with associations[{first}]: same precedence, and some ServiceAccount matches both"
    )]
    Tie { first: usize, second: usize },
    #[error(
        "{count} pattern entries; at most {MAX_PATTERNS} are allowed (each is tried on every lookup that no exact entry answers)"
    )]
    TooManyPatterns { count: usize },
}

/// The precedence of an entry (docs/associations.md#patterns), lower first: the level (exact
/// namespace and ServiceAccount; exact namespace, pattern ServiceAccount; pattern namespace,
/// exact ServiceAccount; both patterns), then the longest literal prefix of the namespace
/// pattern, then of the ServiceAccount pattern.
type Precedence = (u8, Reverse<usize>, Reverse<usize>);

fn precedence(a: &Association) -> Precedence {
    let (ns, sa) = (
        NamePattern(&a.namespace).is_pattern(),
        NamePattern(&a.service_account).is_pattern(),
    );
    let level = match (ns, sa) {
        (false, false) => 0,
        (false, true) => 1,
        (true, false) => 2,
        (true, true) => 3,
    };
    let prefix = |p: &str, is_pattern: bool| if is_pattern { literal_prefix_len(p) } else { 0 };
    (
        level,
        Reverse(prefix(&a.namespace, ns)),
        Reverse(prefix(&a.service_account, sa)),
    )
}

/// Whether some namespace/ServiceAccount is matched by both entries.
fn overlap(a: &Association, b: &Association) -> bool {
    pattern::overlap(&a.namespace, &b.namespace)
        && pattern::overlap(&a.service_account, &b.service_account)
}

/// Refuses two pattern entries of the same precedence that can match one ServiceAccount
/// (neither would win), and more than [`MAX_PATTERNS`] of them. Exact duplicates are refused
/// where the exact entries are indexed.
pub fn check_patterns(list: &[Association]) -> Result<(), IndexError> {
    let mut patterns: Vec<(Precedence, usize)> = list
        .iter()
        .enumerate()
        .filter(|(_, a)| precedence(a).0 > 0)
        .map(|(i, a)| (precedence(a), i))
        .collect();
    if patterns.len() > MAX_PATTERNS {
        return Err(IndexError::TooManyPatterns {
            count: patterns.len(),
        });
    }
    patterns.sort();
    for group in patterns.chunk_by(|x, y| x.0 == y.0) {
        for (k, &(_, second)) in group.iter().enumerate() {
            if let Some(&(_, first)) = group[..k]
                .iter()
                .find(|(_, first)| overlap(&list[*first], &list[second]))
            {
                return Err(IndexError::Tie { first, second });
            }
        }
    }
    Ok(())
}

/// Builds an index, refusing two associations for the same ServiceAccount (EKS allows one),
/// ties between patterns and too many patterns. `lines` gives the file line of entries by
/// position, where known.
pub fn index_associations(
    list: Vec<Association>,
    lines: &HashMap<usize, usize>,
) -> Result<AssociationIndex, IndexError> {
    check_patterns(&list)?;
    let mut index = AssociationIndex::default();
    let mut positions: HashMap<(String, String), usize> = HashMap::new();
    let mut patterns = Vec::new();
    for (position, a) in list.into_iter().enumerate() {
        let entry = Arc::new(FileEntry {
            position,
            line: lines.get(&position).copied(),
            namespace: a.namespace.clone(),
            service_account: a.service_account.clone(),
            role_arn: a.role_arn.clone(),
            target_role_arn: a.target_role_arn.clone(),
            session_tags: a.disable_session_tags != Some(true),
            policy_chars: a.policy.as_deref().map(session_policy::packed_chars),
        });
        let mut summary = AssociationSummary::from(&a);
        summary.entry = Some(entry);
        let indexed = IndexedAssociation {
            summary: Arc::new(summary),
            details: Arc::new(a),
        };
        let a = &indexed.details;
        if precedence(a).0 > 0 {
            patterns.push((precedence(a), position, indexed));
            continue;
        }
        let key = (a.namespace.clone(), a.service_account.clone());
        if let Some(&first) = positions.get(&key) {
            return Err(IndexError::Duplicate {
                first,
                second: position,
                namespace: key.0,
                service_account: key.1,
            });
        }
        positions.insert(key, position);
        index
            .exact
            .entry(a.namespace.clone())
            .or_default()
            .insert(a.service_account.clone(), indexed);
    }
    patterns.sort_by_key(|p| (p.0, p.1));
    index.patterns = patterns.into_iter().map(|(_, _, a)| a).collect();
    Ok(index)
}

impl AssociationIndex {
    /// The entry that answers for `namespace`/`service_account`: an exact entry (a hash
    /// lookup, no allocation), else the first pattern entry in precedence order that matches.
    pub fn get(&self, namespace: &str, service_account: &str) -> Option<&IndexedAssociation> {
        if let Some(found) = self
            .exact
            .get(namespace)
            .and_then(|m| m.get(service_account))
        {
            return Some(found);
        }
        self.patterns.iter().find(|p| {
            NamePattern(&p.details.namespace).matches(namespace)
                && NamePattern(&p.details.service_account).matches(service_account)
        })
    }

    /// How many pattern entries the index holds.
    pub fn pattern_count(&self) -> usize {
        self.patterns.len()
    }
}

/// Looks up an index without allocating.
pub fn index_get<'i>(
    index: &'i AssociationIndex,
    namespace: &str,
    service_account: &str,
) -> Option<&'i IndexedAssociation> {
    index.get(namespace, service_account)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assoc(ns: &str, sa: &str, role: &str) -> Association {
        Association::new(ns, sa, format!("arn:aws:iam::111122223333:role/{role}"))
    }

    fn index(list: Vec<Association>) -> AssociationIndex {
        index_associations(list, &HashMap::new()).unwrap()
    }

    fn role(idx: &AssociationIndex, ns: &str, sa: &str) -> Option<String> {
        idx.get(ns, sa)
            .map(|a| a.details.role_arn.rsplit('/').next().unwrap().to_string())
    }

    #[test]
    fn duplicate_associations_are_refused() {
        let a = || assoc("n", "s", "a");
        assert!(matches!(
            index_associations(vec![a(), a()], &HashMap::new()),
            Err(IndexError::Duplicate {
                first: 0,
                second: 1,
                ..
            })
        ));
        let idx = index(vec![a()]);
        assert!(index_get(&idx, "n", "s").is_some());
        assert!(index_get(&idx, "n", "x").is_none());
    }

    /// The precedence table of docs/associations.md#patterns, one row per level, written in
    /// the reverse order so the file's order decides nothing.
    #[test]
    fn precedence_levels_then_longest_literal_prefix() {
        let idx = index(vec![
            assoc("*", "*", "anything"),
            assoc("team-*", "*", "team-any"),
            assoc("team-a*", "*", "team-a-any"),
            assoc("team-*", "carts", "team-carts"),
            assoc("team-a", "*", "a-any"),
            assoc("team-a", "cart*", "a-cart-prefix"),
            assoc("team-a", "carts", "a-carts"),
        ]);
        for (ns, sa, want) in [
            // 1. exact namespace + exact ServiceAccount
            ("team-a", "carts", "a-carts"),
            // 2. exact namespace + pattern: the longest literal prefix first
            ("team-a", "cartsy", "a-cart-prefix"),
            ("team-a", "orders", "a-any"),
            // 3. pattern namespace + exact ServiceAccount
            ("team-b", "carts", "team-carts"),
            ("team-ab", "carts", "team-carts"),
            // 4. pattern + pattern: the longest namespace prefix first
            ("team-ab", "orders", "team-a-any"),
            ("team-b", "orders", "team-any"),
            ("prod", "orders", "anything"),
        ] {
            assert_eq!(role(&idx, ns, sa).as_deref(), Some(want), "{ns}/{sa}");
        }
    }

    #[test]
    fn ties_are_refused_naming_both_positions() {
        for (a, b) in [
            (("team-*", "carts"), ("team-*", "carts")),
            (("team-*-a", "*"), ("team-*-b", "*")),
            (("team-a", "*-x"), ("team-a", "*-y")),
            (("*", "a*"), ("*", "a*b")),
        ] {
            let list = vec![
                assoc("other", "sa", "x"),
                assoc(a.0, a.1, "first"),
                assoc(b.0, b.1, "second"),
            ];
            let overlapping = overlap(&list[1], &list[2]);
            let result = index_associations(list, &HashMap::new());
            if overlapping {
                assert_eq!(
                    result.err(),
                    Some(IndexError::Tie {
                        first: 1,
                        second: 2
                    }),
                    "{a:?} {b:?}"
                );
            } else {
                assert!(result.is_ok(), "{a:?} {b:?} never match one name");
            }
        }
        // Same precedence but disjoint: both kept.
        let idx = index(vec![assoc("team-*", "a*", "x"), assoc("prod-*", "a*", "y")]);
        assert_eq!(role(&idx, "prod-1", "ab").as_deref(), Some("y"));
    }

    #[test]
    fn too_many_patterns_are_refused() {
        let list: Vec<_> = (0..=MAX_PATTERNS)
            .map(|i| assoc(&format!("ns-{i}-*"), "*", "x"))
            .collect();
        assert_eq!(
            index_associations(list, &HashMap::new()).err(),
            Some(IndexError::TooManyPatterns {
                count: MAX_PATTERNS + 1
            })
        );
    }
}
