//! The GitOps associations decision (docs/controller.md#gitops-associations), pure: the annotated
//! ServiceAccounts, the cluster's associations with their tags, the tenant allowlist and this
//! controller's ownership tag in; the actions that make EKS match the annotations out.
//!
//! Only associations carrying the ownership tag are ever changed or deleted; one made another
//! way for the same ServiceAccount is reported and left alone. A role the allowlist refuses (or
//! a value that is not an IAM role ARN) is refused before any EKS call.

use std::collections::BTreeMap;

use crate::identity::RoleBound;
use crate::identity::role_arn::{self, RoleArnError};

/// The ServiceAccount annotation naming the role of its association. Not the IRSA annotation
/// (`<annotationPrefix>/role-arn`): a ServiceAccount may carry both while it migrates.
pub const ROLE_ANNOTATION: &str = "pod-identity-webhook/association-role-arn";

/// The tag this controller puts on every association it creates, and looks for before it
/// changes or deletes one.
pub const OWNER_TAG_KEY: &str = "pod-identity-webhook/managed-by";
/// [`OWNER_TAG_KEY`]'s value.
pub const OWNER_TAG_VALUE: &str = "gitops-associations";

/// The tag that marks an association as this controller's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerTag {
    pub key: String,
    pub value: String,
}

impl Default for OwnerTag {
    fn default() -> Self {
        Self {
            key: OWNER_TAG_KEY.into(),
            value: OWNER_TAG_VALUE.into(),
        }
    }
}

impl OwnerTag {
    fn marks(&self, tags: &BTreeMap<String, String>) -> bool {
        tags.get(&self.key) == Some(&self.value)
    }
}

/// A ServiceAccount's namespace and name: what an association is for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub namespace: String,
    pub service_account: String,
}

impl Key {
    pub fn new(namespace: impl Into<String>, service_account: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            service_account: service_account.into(),
        }
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}",
            crate::shown::Shown(&self.namespace),
            crate::shown::Shown(&self.service_account)
        )
    }
}

/// A ServiceAccount of the cluster: its [`ROLE_ANNOTATION`] (`None` when absent or empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    pub key: Key,
    pub role_arn: Option<String>,
}

/// An association of the cluster, as List and Describe give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Existing {
    pub key: Key,
    pub association_id: String,
    pub role_arn: String,
    pub tags: BTreeMap<String, String>,
}

/// Why an association this controller owns goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gone {
    /// The ServiceAccount is there without the annotation.
    AnnotationRemoved,
    /// The ServiceAccount is not there.
    ServiceAccountGone,
}

/// Why an annotated ServiceAccount gets no association.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The annotation is not an IAM role ARN (the value is never quoted: see `role_arn`).
    NotARoleArn(RoleArnError),
    /// The namespace's `allowedRoleArns` do not hold the role.
    NotAllowed,
}

/// What to do for one ServiceAccount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Create {
        key: Key,
        role_arn: String,
        /// This controller had made it, and it was deleted out of band.
        drift: bool,
    },
    Update {
        key: Key,
        association_id: String,
        from: String,
        to: String,
        /// This controller had set `to`, and it was changed out of band.
        drift: bool,
    },
    Delete {
        key: Key,
        association_id: String,
        role_arn: String,
        why: Gone,
    },
    /// An association for an annotated ServiceAccount without the ownership tag: never touched.
    ReportHandMade {
        key: Key,
        association_id: String,
        role_arn: String,
    },
    /// The annotation is refused: no EKS call.
    Refuse { key: Key, why: Refusal },
}

impl Action {
    pub fn key(&self) -> &Key {
        match self {
            Self::Create { key, .. }
            | Self::Update { key, .. }
            | Self::Delete { key, .. }
            | Self::ReportHandMade { key, .. }
            | Self::Refuse { key, .. } => key,
        }
    }

    /// Whether the action is an EKS write.
    pub fn writes(&self) -> bool {
        matches!(
            self,
            Self::Create { .. } | Self::Update { .. } | Self::Delete { .. }
        )
    }
}

/// Everything the decision reads.
pub struct Inputs<'a> {
    pub service_accounts: &'a [ServiceAccount],
    pub associations: &'a [Existing],
    pub allowlist: &'a dyn RoleBound,
    pub owner: &'a OwnerTag,
    /// The role this controller last put on each ServiceAccount's association (this leader's
    /// memory): a difference from it is drift, not a change of the annotation.
    pub applied: &'a BTreeMap<Key, String>,
}

/// The actions that bring the owned associations to what the annotations say, one
/// ServiceAccount after another in (namespace, name) order.
pub fn plan(inputs: &Inputs<'_>) -> Vec<Action> {
    let mut keys: BTreeMap<&Key, (Option<&ServiceAccount>, Vec<&Existing>)> = BTreeMap::new();
    for sa in inputs.service_accounts {
        keys.entry(&sa.key).or_default().0 = Some(sa);
    }
    for a in inputs.associations {
        keys.entry(&a.key).or_default().1.push(a);
    }
    let mut actions = Vec::new();
    for (key, (sa, existing)) in keys {
        let (owned, hand_made): (Vec<&Existing>, Vec<&Existing>) = existing
            .into_iter()
            .partition(|a| inputs.owner.marks(&a.tags));
        let wanted = sa.and_then(|sa| sa.role_arn.as_deref());
        let Some(wanted) = wanted else {
            let why = if sa.is_some() {
                Gone::AnnotationRemoved
            } else {
                Gone::ServiceAccountGone
            };
            actions.extend(owned.into_iter().map(|a| Action::Delete {
                key: key.clone(),
                association_id: a.association_id.clone(),
                role_arn: a.role_arn.clone(),
                why,
            }));
            continue;
        };
        if let Err(e) = role_arn::validate(wanted) {
            actions.push(Action::Refuse {
                key: key.clone(),
                why: Refusal::NotARoleArn(e),
            });
            continue;
        }
        if !inputs.allowlist.allows(&key.namespace, wanted) {
            actions.push(Action::Refuse {
                key: key.clone(),
                why: Refusal::NotAllowed,
            });
            continue;
        }
        if !hand_made.is_empty() {
            actions.extend(hand_made.into_iter().map(|a| Action::ReportHandMade {
                key: key.clone(),
                association_id: a.association_id.clone(),
                role_arn: a.role_arn.clone(),
            }));
            continue;
        }
        let ours_before = inputs.applied.get(key).is_some_and(|r| r == wanted);
        match owned.first() {
            None => actions.push(Action::Create {
                key: key.clone(),
                role_arn: wanted.to_string(),
                drift: ours_before,
            }),
            Some(a) if a.role_arn != wanted => actions.push(Action::Update {
                key: key.clone(),
                association_id: a.association_id.clone(),
                from: a.role_arn.clone(),
                to: wanted.to_string(),
                drift: ours_before,
            }),
            Some(_) => {}
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    const CARTS: &str = "arn:aws:iam::111122223333:role/carts";
    const ORDERS: &str = "arn:aws:iam::111122223333:role/orders";
    const OTHER_TEAM: &str = "arn:aws:iam::111122223333:role/team-b-secrets";

    /// team-b's role is not for team-a; every other role is allowed.
    struct Allowlist;
    impl RoleBound for Allowlist {
        fn allows(&self, namespace: &str, role_arn: &str) -> bool {
            !(namespace == "team-a" && role_arn == OTHER_TEAM)
        }
    }

    fn sa(name: &str, role: Option<&str>) -> ServiceAccount {
        ServiceAccount {
            key: Key::new("team-a", name),
            role_arn: role.map(String::from),
        }
    }

    fn association(name: &str, role: &str, owned: bool) -> Existing {
        let mut tags = BTreeMap::from([("team".to_string(), "a".to_string())]);
        if owned {
            tags.insert(OWNER_TAG_KEY.into(), OWNER_TAG_VALUE.into());
        }
        Existing {
            key: Key::new("team-a", name),
            association_id: format!("a-{name}"),
            role_arn: role.into(),
            tags,
        }
    }

    fn run(
        sas: &[ServiceAccount],
        associations: &[Existing],
        applied: &[(&str, &str)],
    ) -> Vec<Action> {
        let applied = applied
            .iter()
            .map(|(name, role)| (Key::new("team-a", *name), role.to_string()))
            .collect();
        plan(&Inputs {
            service_accounts: sas,
            associations,
            allowlist: &Allowlist,
            owner: &OwnerTag::default(),
            applied: &applied,
        })
    }

    fn key(name: &str) -> Key {
        Key::new("team-a", name)
    }

    #[test]
    fn the_decision_table() {
        struct Row {
            case: &'static str,
            sas: Vec<ServiceAccount>,
            associations: Vec<Existing>,
            applied: Vec<(&'static str, &'static str)>,
            expect: Vec<Action>,
        }
        let rows = [
            Row {
                case: "annotated, no association: create",
                sas: vec![sa("carts", Some(CARTS))],
                associations: vec![],
                applied: vec![],
                expect: vec![Action::Create {
                    key: key("carts"),
                    role_arn: CARTS.into(),
                    drift: false,
                }],
            },
            Row {
                case: "owned association with the annotated role: nothing",
                sas: vec![sa("carts", Some(CARTS))],
                associations: vec![association("carts", CARTS, true)],
                applied: vec![],
                expect: vec![],
            },
            Row {
                case: "annotation changed: update",
                sas: vec![sa("carts", Some(ORDERS))],
                associations: vec![association("carts", CARTS, true)],
                applied: vec![("carts", CARTS)],
                expect: vec![Action::Update {
                    key: key("carts"),
                    association_id: "a-carts".into(),
                    from: CARTS.into(),
                    to: ORDERS.into(),
                    drift: false,
                }],
            },
            Row {
                case: "owned association changed out of band: update, drift",
                sas: vec![sa("carts", Some(CARTS))],
                associations: vec![association("carts", ORDERS, true)],
                applied: vec![("carts", CARTS)],
                expect: vec![Action::Update {
                    key: key("carts"),
                    association_id: "a-carts".into(),
                    from: ORDERS.into(),
                    to: CARTS.into(),
                    drift: true,
                }],
            },
            Row {
                case: "owned association deleted out of band: create, drift",
                sas: vec![sa("carts", Some(CARTS))],
                associations: vec![],
                applied: vec![("carts", CARTS)],
                expect: vec![Action::Create {
                    key: key("carts"),
                    role_arn: CARTS.into(),
                    drift: true,
                }],
            },
            Row {
                case: "annotation removed: delete the owned one",
                sas: vec![sa("carts", None)],
                associations: vec![association("carts", CARTS, true)],
                applied: vec![],
                expect: vec![Action::Delete {
                    key: key("carts"),
                    association_id: "a-carts".into(),
                    role_arn: CARTS.into(),
                    why: Gone::AnnotationRemoved,
                }],
            },
            Row {
                case: "ServiceAccount gone: delete the owned one",
                sas: vec![],
                associations: vec![association("carts", CARTS, true)],
                applied: vec![],
                expect: vec![Action::Delete {
                    key: key("carts"),
                    association_id: "a-carts".into(),
                    role_arn: CARTS.into(),
                    why: Gone::ServiceAccountGone,
                }],
            },
            Row {
                case: "hand-made, ServiceAccount gone or not annotated: never deleted, not ours to report",
                sas: vec![sa("orders", None)],
                associations: vec![
                    association("carts", CARTS, false),
                    association("orders", ORDERS, false),
                ],
                applied: vec![],
                expect: vec![],
            },
            Row {
                case: "hand-made for an annotated ServiceAccount: reported, never updated",
                sas: vec![sa("carts", Some(ORDERS))],
                associations: vec![association("carts", CARTS, false)],
                applied: vec![],
                expect: vec![Action::ReportHandMade {
                    key: key("carts"),
                    association_id: "a-carts".into(),
                    role_arn: CARTS.into(),
                }],
            },
            Row {
                case: "hand-made with the annotated role: still reported (not ours to adopt)",
                sas: vec![sa("carts", Some(CARTS))],
                associations: vec![association("carts", CARTS, false)],
                applied: vec![],
                expect: vec![Action::ReportHandMade {
                    key: key("carts"),
                    association_id: "a-carts".into(),
                    role_arn: CARTS.into(),
                }],
            },
            Row {
                case: "a tag with the owner's key but another value is not ours",
                sas: vec![sa("carts", None)],
                associations: vec![{
                    let mut a = association("carts", CARTS, false);
                    a.tags.insert(OWNER_TAG_KEY.into(), "someone-else".into());
                    a
                }],
                applied: vec![],
                expect: vec![],
            },
            Row {
                case: "role outside the namespace's allowlist: refused, no EKS action",
                sas: vec![sa("carts", Some(OTHER_TEAM))],
                associations: vec![],
                applied: vec![],
                expect: vec![Action::Refuse {
                    key: key("carts"),
                    why: Refusal::NotAllowed,
                }],
            },
            Row {
                case: "refused role over an owned association: refused, the association untouched",
                sas: vec![sa("carts", Some(OTHER_TEAM))],
                associations: vec![association("carts", CARTS, true)],
                applied: vec![],
                expect: vec![Action::Refuse {
                    key: key("carts"),
                    why: Refusal::NotAllowed,
                }],
            },
            Row {
                case: "not a role ARN: refused",
                sas: vec![sa("carts", Some("arn:aws:iam::111122223333:user/carts"))],
                associations: vec![],
                applied: vec![],
                expect: vec![Action::Refuse {
                    key: key("carts"),
                    why: Refusal::NotARoleArn(
                        role_arn::validate("arn:aws:iam::111122223333:user/carts").unwrap_err(),
                    ),
                }],
            },
            Row {
                case: "a wildcard is no role: refused",
                sas: vec![sa("carts", Some("arn:aws:iam::111122223333:role/*"))],
                associations: vec![],
                applied: vec![],
                expect: vec![Action::Refuse {
                    key: key("carts"),
                    why: Refusal::NotARoleArn(
                        role_arn::validate("arn:aws:iam::111122223333:role/*").unwrap_err(),
                    ),
                }],
            },
        ];
        for row in rows {
            assert_eq!(
                run(&row.sas, &row.associations, &row.applied),
                row.expect,
                "{}",
                row.case
            );
        }
    }

    #[test]
    fn many_service_accounts_come_out_in_order_each_on_its_own() {
        let sas = [
            sa("c", Some(CARTS)),
            sa("a", Some(ORDERS)),
            sa("b", None),
            ServiceAccount {
                key: Key::new("team-b", "a"),
                role_arn: Some(OTHER_TEAM.into()),
            },
        ];
        let associations = [
            association("b", CARTS, true),
            association("c", CARTS, false),
        ];
        let actions = run(&sas, &associations, &[]);
        let keys: Vec<String> = actions.iter().map(|a| a.key().to_string()).collect();
        assert_eq!(keys, ["team-a/a", "team-a/b", "team-a/c", "team-b/a"]);
        assert!(matches!(actions[0], Action::Create { .. }));
        assert!(matches!(actions[1], Action::Delete { .. }));
        assert!(matches!(actions[2], Action::ReportHandMade { .. }));
        // team-b may have the role team-a may not.
        assert!(matches!(actions[3], Action::Create { .. }));
        assert_eq!(actions.iter().filter(|a| a.writes()).count(), 3);
    }

    #[test]
    fn another_owner_tag_makes_every_association_hand_made() {
        let owner = OwnerTag {
            key: OWNER_TAG_KEY.into(),
            value: "another-install".into(),
        };
        let sas = [sa("carts", Some(ORDERS))];
        let associations = [association("carts", CARTS, true)];
        let actions = plan(&Inputs {
            service_accounts: &sas,
            associations: &associations,
            allowlist: &Allowlist,
            owner: &owner,
            applied: &BTreeMap::new(),
        });
        assert!(
            matches!(&actions[..], [Action::ReportHandMade { .. }]),
            "{actions:?}"
        );
    }
}
