//! The verdict on a pod the mutating webhook missed (issue 28): it should carry its
//! ServiceAccount's identity and reaches validation without it. Pure; whether a pod was missed
//! is [`crate::admission::plan::Plan::missed`]'s to say.

use super::Policy;
use super::settings::PolicyMode;
use super::verdict::{Verdict, fit_warning};

/// The identity a missed pod should have carried, as its message names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissedIdentity<'a> {
    /// A Pod Identity association: its EKS id, none for the associations file. (Admission
    /// never describes an association, so its role is not known here.)
    Association {
        id: Option<&'a str>,
    },
    Irsa {
        role_arn: &'a str,
    },
}

impl Policy {
    /// Pod `name` in `namespace`, of ServiceAccount `sa`, lacks the credentials the mutation
    /// would give it: denied in `enforce` (a ReplicaSet's or Job's next attempt goes through
    /// `/mutate` again, so the miss becomes a retry, not a pod running on the node's role),
    /// a warning in `warn`.
    pub fn missed_injection_verdict(
        &self,
        mode: PolicyMode,
        namespace: &str,
        name: &str,
        sa: &str,
        identity: MissedIdentity<'_>,
    ) -> Verdict {
        let what = match identity {
            MissedIdentity::Association { id: Some(id) } => {
                format!("Pod Identity association ({id})")
            }
            MissedIdentity::Association { id: None } => {
                "Pod Identity association (associations file)".to_string()
            }
            MissedIdentity::Irsa { role_arn } => format!("IRSA role ({role_arn})"),
        };
        match mode {
            PolicyMode::Off => Verdict::Allow,
            PolicyMode::Enforce => Verdict::Deny(format!(
                "pod {namespace}/{name} was admitted without the credentials of its \
                 ServiceAccount {sa:?}'s {what}: the mutating webhook did not run or did not \
                 see it; its controller will retry (a pod without one: create it again)"
            )),
            PolicyMode::Warn => Verdict::Warn(vec![fit_warning(format!(
                "Pod {name}: no AWS credentials of ServiceAccount {sa:?}'s identity; the mutating webhook missed it"
            ))]),
        }
    }
}

impl Verdict {
    /// Both verdicts at once: the first denial, else every warning.
    pub fn and(self, other: Verdict) -> Verdict {
        match (self, other) {
            (Verdict::Deny(m), _) | (_, Verdict::Deny(m)) => Verdict::Deny(m),
            (Verdict::Allow, v) | (v, Verdict::Allow) => v,
            (Verdict::Warn(mut a), Verdict::Warn(b)) => {
                a.extend(b);
                Verdict::Warn(a)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_denial_wins_and_warnings_add_up() {
        let w = |s: &str| Verdict::Warn(vec![s.to_string()]);
        let d = Verdict::Deny("no".into());
        assert_eq!(Verdict::Allow.and(w("a")), w("a"));
        assert_eq!(w("a").and(Verdict::Allow), w("a"));
        assert_eq!(
            w("a").and(w("b")),
            Verdict::Warn(vec!["a".into(), "b".into()])
        );
        assert_eq!(w("a").and(d.clone()), d);
        assert_eq!(d.clone().and(w("a")), d);
    }

    #[test]
    fn the_warning_fits_one_line() {
        let p = Policy::off();
        let long = "x".repeat(200);
        let Verdict::Warn(w) = p.missed_injection_verdict(
            PolicyMode::Warn,
            "team-a",
            &long,
            "carts",
            MissedIdentity::Irsa { role_arn: "r" },
        ) else {
            panic!("a warning")
        };
        assert!(w[0].chars().count() <= crate::policy::verdict::MAX_WARNING_CHARS);
    }
}
