//! Verdicts and the messages people read (SPEC §3): a denial names the object, the
//! ServiceAccount, what is missing and the command that fixes it; warnings stay short.

use super::settings::{FailurePolicy, PolicyMode};
use crate::object::{Kind, ObjectView};

use super::Policy;
use super::static_keys::static_credentials;

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
    /// An association or an IRSA annotation.
    Found,
    /// Every source answered, none has one (after looking past cached "not found").
    Missing,
    /// A source could not answer in time; `detail` says which and why.
    Unavailable { detail: String },
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

    /// The verdict on a Pod or a workload (its pod template), of kind `kind`, named `name` in
    /// `namespace` (SPEC §3). Pure: `identity` is what the identity sources said about the pod
    /// spec's ServiceAccount; the webhook and `check`/`audit` look it up and call this.
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
    ) -> Verdict {
        if mode == PolicyMode::Off {
            return Verdict::Allow;
        }
        let pod = object.pod_spec(kind);
        let sa = pod.service_account();
        let kind = kind.as_str();
        let enforce = mode == PolicyMode::Enforce;
        let mut denials = Vec::new();
        let mut warnings = Vec::new();

        for cred in &static_credentials(pod) {
            let container = &cred.container;
            let var = &cred.variable;
            if enforce {
                denials.push(format!(
                    "container {container:?} sets {var} to a literal value; static AWS keys are \
                     not allowed in namespace {namespace}. Fix: remove it and give ServiceAccount \
                     {sa:?} an identity ({})",
                    self.remedy(namespace, sa)
                ));
            } else {
                warnings.push(format!(
                    "{kind} {name}: container {container:?} sets {var} as a literal; use Pod Identity instead"
                ));
            }
        }

        match identity {
            IdentityCheck::Found => {}
            IdentityCheck::Missing => {
                if enforce {
                    denials.push(format!(
                        "ServiceAccount {sa:?} has no EKS Pod Identity association and no \
                         {annotation_prefix}/role-arn annotation. Fix: {}",
                        self.remedy(namespace, sa)
                    ));
                } else {
                    warnings.push(format!(
                        "{kind} {name}: ServiceAccount {sa:?} has no Pod Identity association or IRSA role"
                    ));
                }
            }
            IdentityCheck::Unavailable { detail } => {
                if enforce && self.failure_policy() == FailurePolicy::Closed {
                    denials.push(format!(
                        "cannot check that ServiceAccount {sa:?} has an AWS identity: the identity \
                         sources are unavailable ({detail}). The webhook's operator chose \
                         policy.failurePolicy: closed, so requests are denied until they answer; \
                         retry shortly"
                    ));
                } else {
                    warnings.push(format!(
                        "{kind} {name}: identity of ServiceAccount {sa:?} not checked: identity sources unavailable"
                    ));
                }
            }
        }

        if !denials.is_empty() {
            return Verdict::Deny(format!(
                "{kind} {namespace}/{name}: {}",
                denials.join(" Also: ")
            ));
        }
        if warnings.is_empty() {
            Verdict::Allow
        } else {
            Verdict::Warn(warnings.into_iter().map(fit_warning).collect())
        }
    }

    /// The verdict on a ServiceAccount named `name` in `namespace`: its IRSA annotation
    /// `<annotation_prefix>/role-arn` against the namespace's role allowlist. Pure.
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
        let role_arn = object
            .metadata
            .prefixed_annotation(annotation_prefix, crate::identity::sa::ROLE_ARN)
            .map(str::trim)
            .filter(|v| !v.is_empty());
        let (Some(arn), Some(allowlist)) = (role_arn, self.allowed_role_arns(namespace)) else {
            return Verdict::Allow;
        };
        if allowlist.allows(arn) {
            return Verdict::Allow;
        }
        if mode == PolicyMode::Enforce {
            let allowed = if allowlist.patterns().is_empty() {
                "none".to_string()
            } else {
                allowlist.patterns().join(", ")
            };
            Verdict::Deny(format!(
                "ServiceAccount {namespace}/{name}: annotation {annotation_prefix}/role-arn \
                 {arn:?} is not an allowed role for namespace {namespace} (allowed: {allowed}). \
                 Fix: kubectl annotate serviceaccount -n {namespace} {name} --overwrite \
                 {annotation_prefix}/role-arn=<allowed role>, or ask the cluster operator to add \
                 the role to policy.namespaces[].allowedRoleArns"
            ))
        } else {
            Verdict::Warn(vec![fit_warning(format!(
                "ServiceAccount {name}: {annotation_prefix}/role-arn is not an allowed role for namespace {namespace}"
            ))])
        }
    }
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
