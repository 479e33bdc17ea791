//! Verdicts and the messages people read (docs/contract.md §3): a denial names the object, the
//! ServiceAccount, what is missing and the command that fixes it; warnings stay short.

use super::settings::{FailurePolicy, PolicyMode};
use crate::identity::role_arn::{self, RoleArnError};
use crate::identity::sa::ROLE_ARN;
use crate::identity::{FileEntry, session_policy};
use crate::object::{Kind, ObjectView};
use crate::shown::shown;

use super::Policy;
use super::static_keys::{StaticCredential, static_credentials};

/// Admission warnings longer than this are cut (kubectl prints each on one line).
pub const MAX_WARNING_CHARS: usize = 119;

/// What the policy decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Allowed, with these admission warnings (each at most [`MAX_WARNING_CHARS`]).
    Warn(Vec<String>),
    /// Denied, with the message shown to the user.
    Deny(String),
}

/// What the identity sources said about a ServiceAccount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityCheck {
    /// An EKS Pod Identity association (made by the cluster's operator: no allowlist applies).
    Association,
    /// An IRSA annotation naming this IAM role.
    Irsa { role_arn: String },
    /// Every source answered, none has one (after looking past cached "not found").
    /// `invalid_role_arn`: why the ServiceAccount's role annotation, when set, is no identity.
    Missing {
        invalid_role_arn: Option<RoleArnError>,
        /// An associations-file entry matched, but its role is outside the namespace's
        /// allowlist: `(entry, role)` as the message names them.
        refused_entry: Option<(String, String)>,
    },
    /// A source could not answer in time; `detail` says which and why.
    Unavailable { detail: String },
}

/// What a verdict on a pod spec covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// A Pod's creation or a workload's pod template: identity and static keys.
    Pod,
    /// Ephemeral containers added to a running pod: their static keys only (the pod's
    /// identity was checked when it was created).
    EphemeralContainers,
}

/// Cuts a warning to [`MAX_WARNING_CHARS`] characters, on a character boundary.
pub fn fit_warning(message: String) -> String {
    if message.chars().count() <= MAX_WARNING_CHARS {
        return message;
    }
    let mut cut: String = message.chars().take(MAX_WARNING_CHARS - 3).collect();
    cut.push_str("...");
    cut
}

impl Policy {
    /// The command (and, without EKS, the file entry) that gives a ServiceAccount an identity.
    pub fn remedy(&self, namespace: &str, service_account: &str) -> String {
        let cluster = self.cluster_name().unwrap_or("<cluster>");
        let mut fix = format!(
            "aws eks create-pod-identity-association --cluster-name {cluster} \
             --namespace {namespace} --service-account {service_account} --role-arn <role>"
        );
        if let Some(file) = self.associations_file() {
            fix.push_str(&format!(
                "; without EKS, add {{namespace: {namespace}, serviceAccount: {service_account}, \
                 roleArn: <role>}} to the associations file {}",
                file.display()
            ));
        }
        fix
    }

    /// Whether pods of ServiceAccount `service_account` in `namespace` may be given the IRSA
    /// role `role_arn`: the namespace has no role allowlist, or the allowlist holds the role,
    /// or the ServiceAccount is exempt. The mutation asks this before injecting a role.
    pub fn allows_irsa_role(&self, namespace: &str, service_account: &str, role_arn: &str) -> bool {
        self.is_exempt(namespace, Some(service_account)).is_some()
            || self
                .allowed_role_arns(namespace)
                .is_none_or(|list| list.allows(role_arn))
    }

    fn allowed_patterns(&self, namespace: &str) -> String {
        match self.allowed_role_arns(namespace) {
            Some(list) if !list.patterns().is_empty() => list.patterns().join(", "),
            _ => "none".to_string(),
        }
    }

    /// The verdict on a Pod or a workload (its pod template), of kind `kind`, named `name` in
    /// `namespace` (docs/contract.md §3 and §12). Pure: `identity` is what the identity sources said about
    /// the pod spec's ServiceAccount; the webhook and `check`/`audit` look it up and call this.
    /// Exemptions ([`Policy::is_exempt`]) are the caller's to check first.
    #[allow(clippy::too_many_arguments)]
    pub fn workload_verdict(
        &self,
        mode: PolicyMode,
        kind: Kind,
        namespace: &str,
        name: &str,
        object: &ObjectView<'_>,
        identity: &IdentityCheck,
        annotation_prefix: &str,
        scope: Scope,
    ) -> Verdict {
        if mode == PolicyMode::Off {
            return Verdict::Allow;
        }
        let pod = object.pod_spec(kind);
        let sa = pod.service_account();
        // The names as messages repeat them (crate::shown: a hostile file's may be megabytes);
        // the lookups use the real ones.
        let (namespace_shown, name_shown, sa_shown) = (shown(namespace), shown(name), shown(sa));
        let credentials = match scope {
            Scope::Pod => static_credentials(pod.every_container()),
            Scope::EphemeralContainers => {
                static_credentials(pod.ephemeral_containers.iter().flatten())
            }
        };
        let kind = kind.as_str();
        let enforce = mode == PolicyMode::Enforce;
        // What is wrong, each said once, and the fix, said once at the end.
        let mut denials = Vec::new();
        let mut fixes = Vec::new();
        let mut warnings = Vec::new();

        if !credentials.is_empty() {
            if enforce {
                denials.push(format!(
                    "{}; static AWS keys are not allowed in namespace {namespace_shown}",
                    described(&credentials)
                ));
                fixes.push("remove the keys".to_string());
            } else {
                for StaticCredential {
                    container,
                    variable,
                } in &credentials
                {
                    warnings.push(format!(
                        "{kind} {name_shown}: container {container:?} sets {variable} as a literal; use Pod Identity instead"
                    ));
                }
            }
        }
        let has_identity = |what: &str| {
            format!(
                "ServiceAccount {sa_shown:?} already has an AWS identity ({what}), which the SDKs use once the keys are gone"
            )
        };
        match identity {
            IdentityCheck::Association => {
                if enforce && !credentials.is_empty() {
                    denials.push(has_identity("an EKS Pod Identity association"));
                }
            }
            IdentityCheck::Irsa { role_arn } if self.allows_irsa_role(namespace, sa, role_arn) => {
                if enforce && !credentials.is_empty() {
                    denials.push(has_identity("an IRSA role"));
                }
            }
            IdentityCheck::Irsa { role_arn } if scope == Scope::Pod => {
                if enforce {
                    denials.push(format!(
                        "ServiceAccount {sa_shown:?} names the IRSA role {role_arn:?} \
                         ({annotation_prefix}/{ROLE_ARN}), which is not an allowed role for \
                         namespace {namespace_shown} (allowed: {}); it is not injected",
                        self.allowed_patterns(namespace)
                    ));
                    fixes.push(format!(
                        "kubectl annotate serviceaccount -n {namespace_shown} {sa_shown} --overwrite \
                         {annotation_prefix}/{ROLE_ARN}=<allowed role>, or \
                         {}",
                        self.remedy(&namespace_shown, &sa_shown)
                    ));
                } else {
                    warnings.push(format!(
                        "{kind} {name_shown}: the IRSA role of ServiceAccount {sa_shown:?} is not allowed in namespace {namespace_shown}; not injected"
                    ));
                }
            }
            IdentityCheck::Irsa { .. } => {}
            IdentityCheck::Missing { .. } if scope == Scope::EphemeralContainers => {}
            IdentityCheck::Missing {
                refused_entry: Some((entry, role)),
                ..
            } => {
                if enforce {
                    denials.push(format!(
                        "the associations file's {entry} gives ServiceAccount {sa:?} the role \
                         {role:?}, which is not an allowed role for namespace {namespace} \
                         (allowed: {}); it gives no identity",
                        self.allowed_patterns(namespace)
                    ));
                    fixes.push(format!(
                        "add an entry for {namespace}/{sa} to the associations file (an exact entry wins over \
                         patterns), or ask the cluster operator to add the role to \
                         policy.namespaces[].allowedRoleArns"
                    ));
                } else {
                    warnings.push(format!(
                        "{kind} {name}: the association of ServiceAccount {sa:?} names a role not allowed in namespace {namespace}"
                    ));
                }
            }
            IdentityCheck::Missing {
                invalid_role_arn, ..
            } => {
                if enforce {
                    let why = invalid_role_arn
                        .as_ref()
                        .map(|e| {
                            format!(
                                " (its {annotation_prefix}/{ROLE_ARN} annotation {e}, so it is no identity)"
                            )
                        })
                        .unwrap_or_default();
                    denials.push(format!(
                        "ServiceAccount {sa_shown:?} has no EKS Pod Identity association and no \
                         {annotation_prefix}/{ROLE_ARN} annotation{why}"
                    ));
                    fixes.push(self.remedy(&namespace_shown, &sa_shown));
                } else if invalid_role_arn.is_some() {
                    warnings.push(format!(
                        "{kind} {name_shown}: ServiceAccount {sa_shown:?}: {annotation_prefix}/{ROLE_ARN} is not an IAM role ARN"
                    ));
                } else {
                    warnings.push(format!(
                        "{kind} {name_shown}: ServiceAccount {sa_shown:?} has no Pod Identity association or IRSA role"
                    ));
                }
            }
            IdentityCheck::Unavailable { .. } if scope == Scope::EphemeralContainers => {}
            IdentityCheck::Unavailable { detail } => {
                if enforce && self.failure_policy() == FailurePolicy::Closed {
                    denials.push(format!(
                        "cannot check that ServiceAccount {sa_shown:?} has an AWS identity: the identity \
                         sources are unavailable ({detail}). The webhook's operator chose \
                         policy.failurePolicy: closed, so requests are denied until they answer; \
                         retry shortly"
                    ));
                } else {
                    warnings.push(format!(
                        "{kind} {name_shown}: identity of ServiceAccount {sa_shown:?} not checked: identity sources unavailable"
                    ));
                }
            }
        }

        if !denials.is_empty() {
            let mut message = format!(
                "{kind} {namespace_shown}/{name_shown}: {}.",
                denials.join(". ")
            );
            if !fixes.is_empty() {
                message.push_str(&format!(" Fix: {}", fixes.join(", then ")));
            }
            return Verdict::Deny(message);
        }
        if warnings.is_empty() {
            Verdict::Allow
        } else {
            Verdict::Warn(warnings.into_iter().map(fit_warning).collect())
        }
    }

    /// The verdict on a ServiceAccount named `name` in `namespace`: its IRSA annotation
    /// `<annotation_prefix>/role-arn` must be an IAM role ARN and within the namespace's role
    /// allowlist. Pure.
    pub fn service_account_verdict(
        &self,
        mode: PolicyMode,
        namespace: &str,
        name: &str,
        object: &ObjectView<'_>,
        annotation_prefix: &str,
    ) -> Verdict {
        if mode == PolicyMode::Off {
            return Verdict::Allow;
        }
        let Some(arn) = object
            .metadata
            .prefixed_annotation(annotation_prefix, ROLE_ARN)
            .map(str::trim)
            .filter(|v| !v.is_empty())
        else {
            return Verdict::Allow;
        };
        let enforce = mode == PolicyMode::Enforce;
        // As messages repeat them (crate::shown).
        let (namespace_shown, name_shown) = (shown(namespace), shown(name));
        if let Err(e) = role_arn::validate(arn) {
            // The value is not quoted: it is not an ARN, and may be anything.
            return if enforce {
                Verdict::Deny(format!(
                    "ServiceAccount {namespace_shown}/{name_shown}: annotation {annotation_prefix}/{ROLE_ARN} \
                     {e}, so it is no identity. Fix: kubectl annotate serviceaccount -n \
                     {namespace_shown} {name_shown} --overwrite \
                     {annotation_prefix}/{ROLE_ARN}=arn:aws:iam::<account>:role/<name>"
                ))
            } else {
                Verdict::Warn(vec![fit_warning(format!(
                    "ServiceAccount {name_shown}: {annotation_prefix}/{ROLE_ARN} is not an IAM role ARN; it is no identity"
                ))])
            };
        }
        let Some(allowlist) = self.allowed_role_arns(namespace) else {
            return Verdict::Allow;
        };
        if allowlist.allows(arn) {
            return Verdict::Allow;
        }
        if enforce {
            Verdict::Deny(format!(
                "ServiceAccount {namespace_shown}/{name_shown}: annotation {annotation_prefix}/{ROLE_ARN} \
                 {arn:?} is not an allowed role for namespace {namespace_shown} (allowed: {}). \
                 Fix: kubectl annotate serviceaccount -n {namespace_shown} {name_shown} --overwrite \
                 {annotation_prefix}/{ROLE_ARN}=<allowed role>, or ask the cluster operator to add \
                 the role to policy.namespaces[].allowedRoleArns",
                self.allowed_patterns(namespace)
            ))
        } else {
            Verdict::Warn(vec![fit_warning(format!(
                "ServiceAccount {name_shown}: {annotation_prefix}/{ROLE_ARN} is not an allowed role for namespace {namespace_shown}"
            ))])
        }
    }
}

impl Policy {
    /// A warning when the session of a pod matched by the associations file's `entry` would,
    /// by the estimate of docs/associations.md#session-policy, not fit STS's packed size: its
    /// six session tags (with `pod_name`, the pod's name or what it will be) plus its session
    /// policy. Pure; never a denial (the estimate is a model).
    #[allow(clippy::too_many_arguments)]
    pub fn packed_size_verdict(
        &self,
        kind: Kind,
        name: &str,
        namespace: &str,
        service_account: &str,
        pod_name: &str,
        entry: &FileEntry,
    ) -> Verdict {
        let cluster = self.cluster_name().unwrap_or("");
        // The cluster ARN's account and region are not known here: those of an ARN of the
        // usual length stand in.
        let cluster_arn = format!("arn:aws:eks:us-east-1:111122223333:cluster/{cluster}");
        let tags =
            session_policy::eks_tags(&cluster_arn, cluster, namespace, service_account, pod_name);
        let estimate = session_policy::estimate(
            tags.into_iter().filter(|_| entry.session_tags),
            entry.policy_chars,
        );
        if estimate.fits() {
            return Verdict::Allow;
        }
        Verdict::Warn(vec![fit_warning(format!(
            "{kind} {name}: STS packed size ~{}% (tags {}%, policy {}%), over 100% STS refuses",
            estimate.percent(),
            estimate.tags_percent,
            estimate.policy_percent,
            kind = kind.as_str(),
        ))])
    }
}

/// `container "a" sets X to a literal value, container "b" sets Y to a literal value`.
fn described(credentials: &[StaticCredential]) -> String {
    credentials
        .iter()
        .map(|c| {
            format!(
                "container {:?} sets {} to a literal value",
                c.container, c.variable
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_warnings_are_cut_on_a_char_boundary() {
        let w = fit_warning("é".repeat(300));
        assert_eq!(w.chars().count(), MAX_WARNING_CHARS);
        assert!(w.ends_with("..."));
        assert_eq!(fit_warning("short".into()), "short");
    }
}
