//! The in-memory index of associations the associations file is served from: namespace →
//! serviceAccount → association, looked up without allocating.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::types::{Association, AssociationSummary};

/// Association lookups keyed without allocating: namespace → serviceAccount → association.
pub type AssociationIndex = BTreeMap<String, BTreeMap<String, IndexedAssociation>>;

/// One association of an [`AssociationIndex`]: its summary (for lookups, shared without
/// copying) and its details.
#[derive(Debug, Clone)]
pub struct IndexedAssociation {
    pub summary: Arc<AssociationSummary>,
    pub details: Arc<Association>,
}

/// Two associations for one ServiceAccount, which EKS does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("two associations for {namespace}/{service_account}; EKS allows one per ServiceAccount")]
pub struct DuplicateAssociation {
    pub namespace: String,
    pub service_account: String,
}

/// Builds an index, refusing two associations for the same ServiceAccount (EKS allows one).
pub fn index_associations(
    list: Vec<Association>,
) -> Result<AssociationIndex, DuplicateAssociation> {
    let mut index = AssociationIndex::new();
    for a in list {
        let by_sa = index.entry(a.namespace.clone()).or_default();
        if by_sa.contains_key(&a.service_account) {
            return Err(DuplicateAssociation {
                namespace: a.namespace,
                service_account: a.service_account,
            });
        }
        let summary = Arc::new(AssociationSummary::from(&a));
        by_sa.insert(
            a.service_account.clone(),
            IndexedAssociation {
                summary,
                details: Arc::new(a),
            },
        );
    }
    Ok(index)
}

/// Looks up an index without allocating.
pub fn index_get<'i>(
    index: &'i AssociationIndex,
    namespace: &str,
    service_account: &str,
) -> Option<&'i IndexedAssociation> {
    index.get(namespace).and_then(|m| m.get(service_account))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assoc() -> Association {
        Association::new("n", "s", "arn:aws:iam::111122223333:role/a")
    }

    #[test]
    fn duplicate_associations_are_refused() {
        assert!(index_associations(vec![assoc(), assoc()]).is_err());
        let idx = index_associations(vec![assoc()]).unwrap();
        assert!(index_get(&idx, "n", "s").is_some());
        assert!(index_get(&idx, "n", "x").is_none());
    }
}
