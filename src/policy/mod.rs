//! Identity policy (docs/contract.md §3): which namespaces are checked, how strictly, and the verdicts.
//!
//! Everything here is pure: the admission layer ([`crate::admission::validate`]) does the
//! lookups (identities, namespace labels) and hands the answers in. Glob matchers are compiled
//! once, when the settings are loaded.

pub mod missed;
pub mod settings;
pub mod static_keys;
pub mod verdict;

use std::collections::BTreeMap;
use std::path::PathBuf;

use globset::{Glob, GlobBuilder, GlobMatcher, GlobSet, GlobSetBuilder};

pub use missed::MissedIdentity;
pub use settings::{FailurePolicy, InvalidPolicy, NamespaceRule, PolicyMode, PolicySettings};
pub use static_keys::StaticCredential;
pub use verdict::{IdentityCheck, Scope, Verdict};

/// Namespaces that are never checked: the control plane's own.
pub const SYSTEM_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

/// Why a request is exempt from policy (for the log line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exemption {
    /// `kube-system`, `kube-public`, `kube-node-lease`.
    SystemNamespace,
    /// The namespace the webhook itself runs in (it must be able to start without itself).
    OwnNamespace,
    /// A configured `namespace` pattern.
    Namespace,
    /// A configured `namespace/serviceAccount` pattern.
    ServiceAccount,
}

impl Exemption {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SystemNamespace => "system namespace",
            Self::OwnNamespace => "webhook's own namespace",
            Self::Namespace => "exempt namespace",
            Self::ServiceAccount => "exempt ServiceAccount",
        }
    }
}

/// The mode of one namespace and how it was reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeChoice {
    /// The mode that applies: the tighter of the configured mode and the label.
    pub mode: PolicyMode,
    /// The mode the configuration gives (first matching rule, else the default).
    pub configured: PolicyMode,
    /// The label's mode, when the namespace has a valid one.
    pub label: Option<PolicyMode>,
    /// A label value that is not a mode; it is ignored (and logged by the caller).
    pub invalid_label: Option<String>,
}

/// The role-ARN patterns a namespace's ServiceAccounts may use in their IRSA annotation.
#[derive(Debug, Clone)]
pub struct RoleAllowlist {
    patterns: Vec<String>,
    set: GlobSet,
}

impl RoleAllowlist {
    pub fn allows(&self, role_arn: &str) -> bool {
        self.set.is_match(role_arn)
    }
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

#[derive(Debug, Clone)]
struct Rule {
    matcher: GlobMatcher,
    mode: Option<PolicyMode>,
    allowed_role_arns: Option<RoleAllowlist>,
}

/// The compiled policy.
#[derive(Debug, Clone)]
pub struct Policy {
    default_mode: PolicyMode,
    failure_policy: FailurePolicy,
    rules: Vec<Rule>,
    exempt_namespaces: GlobSet,
    /// Matched against `namespace/serviceAccount`.
    exempt_service_accounts: GlobSet,
    own_namespace: Option<String>,
    namespace_label: String,
    cluster_name: Option<String>,
    associations_file: Option<PathBuf>,
}

fn invalid(key: &'static str, message: String) -> InvalidPolicy {
    InvalidPolicy { key, message }
}

/// `*` stops at `/` so a pattern cannot reach across a role path or a `namespace/sa` pair;
/// `**` crosses it.
fn glob(key: &'static str, pattern: &str) -> Result<Glob, InvalidPolicy> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map_err(|e| invalid(key, format!("`{pattern}` is not a valid glob: {e}")))
}

fn glob_set(key: &'static str, patterns: &[&str]) -> Result<GlobSet, InvalidPolicy> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        b.add(glob(key, p)?);
    }
    b.build()
        .map_err(|e| invalid(key, format!("cannot compile patterns: {e}")))
}

impl Policy {
    /// Compiles the settings. `own_namespace` is the webhook's namespace (always exempt).
    pub fn compile(
        settings: &PolicySettings,
        own_namespace: Option<&str>,
    ) -> Result<Self, InvalidPolicy> {
        let mut rules = Vec::with_capacity(settings.namespaces.len());
        for rule in &settings.namespaces {
            let matcher = glob("policy.namespaces[].match", &rule.pattern)?.compile_matcher();
            let allowed_role_arns = match &rule.allowed_role_arns {
                None => None,
                Some(patterns) => {
                    let refs: Vec<&str> = patterns.iter().map(String::as_str).collect();
                    Some(RoleAllowlist {
                        patterns: patterns.clone(),
                        set: glob_set("policy.namespaces[].allowedRoleArns", &refs)?,
                    })
                }
            };
            rules.push(Rule {
                matcher,
                mode: rule.mode,
                allowed_role_arns,
            });
        }
        let mut namespaces = Vec::new();
        let mut service_accounts = Vec::new();
        for ex in &settings.exemptions {
            match ex.matches('/').count() {
                0 if !ex.is_empty() => namespaces.push(ex.as_str()),
                1 if !ex.starts_with('/') && !ex.ends_with('/') => {
                    service_accounts.push(ex.as_str())
                }
                _ => {
                    return Err(invalid(
                        "policy.exemptions",
                        format!("`{ex}` must be `namespace` or `namespace/serviceAccount`"),
                    ));
                }
            }
        }
        if settings.namespace_label.trim().is_empty() {
            return Err(invalid(
                "policy.namespaceLabel",
                "must not be empty".to_string(),
            ));
        }
        Ok(Self {
            default_mode: settings.default_mode,
            failure_policy: settings.failure_policy,
            rules,
            exempt_namespaces: glob_set("policy.exemptions", &namespaces)?,
            exempt_service_accounts: glob_set("policy.exemptions", &service_accounts)?,
            own_namespace: own_namespace
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_string),
            namespace_label: settings.namespace_label.clone(),
            cluster_name: settings.cluster_name.clone().filter(|c| !c.is_empty()),
            associations_file: None,
        })
    }

    /// A policy that checks nothing (no policy configured).
    pub fn off() -> Self {
        let settings = PolicySettings {
            default_mode: PolicyMode::Off,
            ..PolicySettings::default()
        };
        Self::compile(&settings, None).expect("the built-in settings compile")
    }

    /// Names the associations file in denial messages (clusters without EKS fix it there).
    pub fn with_associations_file(mut self, path: Option<PathBuf>) -> Self {
        self.associations_file = path;
        self
    }

    pub fn failure_policy(&self) -> FailurePolicy {
        self.failure_policy
    }

    pub fn namespace_label(&self) -> &str {
        &self.namespace_label
    }

    pub fn cluster_name(&self) -> Option<&str> {
        self.cluster_name.as_deref()
    }

    pub fn associations_file(&self) -> Option<&std::path::Path> {
        self.associations_file.as_deref()
    }

    fn rule_for(&self, namespace: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.matcher.is_match(namespace))
    }

    /// The configured mode: the first matching rule's, else the default.
    pub fn configured_mode(&self, namespace: &str) -> PolicyMode {
        self.rule_for(namespace)
            .and_then(|r| r.mode)
            .unwrap_or(self.default_mode)
    }

    /// The mode of `namespace`: the configured mode, tightened (never loosened) by the
    /// namespace label. Tenants may label their own namespaces, so a label saying `off` in a
    /// namespace configured `enforce` changes nothing.
    pub fn mode_for(
        &self,
        namespace: &str,
        namespace_labels: Option<&BTreeMap<String, String>>,
    ) -> ModeChoice {
        let configured = self.configured_mode(namespace);
        let raw = namespace_labels.and_then(|l| l.get(&self.namespace_label));
        let (label, invalid_label) = match raw {
            None => (None, None),
            Some(v) => match PolicyMode::parse(v) {
                Some(m) => (Some(m), None),
                None => (None, Some(v.clone())),
            },
        };
        ModeChoice {
            mode: label.map_or(configured, |l| l.max(configured)),
            configured,
            label,
            invalid_label,
        }
    }

    /// Whether the namespace is exempt on its own (system, own, configured pattern).
    pub fn namespace_exemption(&self, namespace: &str) -> Option<Exemption> {
        if SYSTEM_NAMESPACES.contains(&namespace) {
            Some(Exemption::SystemNamespace)
        } else if self.own_namespace.as_deref() == Some(namespace) {
            Some(Exemption::OwnNamespace)
        } else if self.exempt_namespaces.is_match(namespace) {
            Some(Exemption::Namespace)
        } else {
            None
        }
    }

    /// Whether `namespace`, or `namespace/service_account` when given, is exempt.
    pub fn is_exempt(&self, namespace: &str, service_account: Option<&str>) -> Option<Exemption> {
        self.namespace_exemption(namespace).or_else(|| {
            let sa = service_account?;
            self.exempt_service_accounts
                .is_match(format!("{namespace}/{sa}"))
                .then_some(Exemption::ServiceAccount)
        })
    }

    /// Whether a pattern entry of the associations file may give `role_arn` to pods of
    /// `namespace`: the namespace has no role allowlist, or it holds the role
    /// (docs/associations.md#patterns).
    pub fn allows_association_role(&self, namespace: &str, role_arn: &str) -> bool {
        self.allowed_role_arns(namespace)
            .is_none_or(|list| list.allows(role_arn))
    }

    /// The role patterns of the first rule matching `namespace`, when it sets any.
    pub fn allowed_role_arns(&self, namespace: &str) -> Option<&RoleAllowlist> {
        self.rule_for(namespace)
            .and_then(|r| r.allowed_role_arns.as_ref())
    }
}

impl Default for Policy {
    fn default() -> Self {
        Self::off()
    }
}

impl crate::identity::RoleBound for Policy {
    fn allows(&self, namespace: &str, role_arn: &str) -> bool {
        self.allows_association_role(namespace, role_arn)
    }
}

/// The live policy (swapped on reload) bounds the associations file as it is now.
impl crate::identity::RoleBound for arc_swap::ArcSwap<Policy> {
    fn allows(&self, namespace: &str, role_arn: &str) -> bool {
        self.load().allows_association_role(namespace, role_arn)
    }
}
