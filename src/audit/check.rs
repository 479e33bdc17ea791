//! `check`: the webhook's decisions on manifests, one report per object.

use serde::Serialize;
use serde_json::Value;

use super::decide::{Decided, Decider, is_cluster_scoped};
use super::manifest::{ManifestError, ManifestObject, Origin};
use super::sources::ListedServiceAccounts;
use crate::admission::Outcome;
use crate::identity::Matched;
use crate::shown;

/// What the webhook would do with an object, most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    /// `/validate` could not read the object as its kind (the API server would refuse it too).
    Invalid,
    Denied,
    Warned,
    /// Allowed, and `/mutate` would change the pod.
    Mutated,
    Allowed,
}

impl CheckStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Invalid => "invalid",
            Self::Denied => "denied",
            Self::Warned => "warned",
            Self::Mutated => "mutated",
            Self::Allowed => "allowed",
        }
    }
}

/// The report on one object.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReport {
    pub file: String,
    pub document: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<usize>,
    pub api_version: String,
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    pub status: CheckStatus,
    /// `/validate`'s verdict alone: allowed, warned, denied or invalid.
    pub verdict: CheckStatus,
    /// Whether `/mutate` would patch the pod.
    pub mutated: bool,
    /// The denial, the warnings, or what was done.
    pub messages: Vec<String>,
    /// Why the decision went as it did (the webhook's log reason, e.g. `no identity`).
    pub reason: String,
    /// `/mutate`'s JSON Patch (with `--show-patch`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<Value>,
    /// The identity the pod or template gets and where it comes from: the associations-file
    /// entry that matched (line, pattern), or the entry the allowlist refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentityReport>,
}

/// The identity of a pod or template, as `check` reports it (docs/associations.md#patterns).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentityReport {
    /// `file`, `eks` or `irsa`.
    pub source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_role_arn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub association_id: Option<String>,
    /// The associations-file entry: `associations[3]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
    /// Its line (pattern entries).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// `namespace/serviceAccount` as the entry writes them, when it is a pattern.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// The namespace's allowlist does not hold the entry's role: no identity.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub refused: bool,
    /// The same, in words (the text output's `identity:` line, the decision log's field).
    pub description: String,
}

impl From<&Matched> for IdentityReport {
    fn from(m: &Matched) -> Self {
        let mut r = IdentityReport {
            source: "file",
            role_arn: None,
            target_role_arn: None,
            association_id: None,
            entry: None,
            line: None,
            pattern: None,
            refused: false,
            description: m.to_string(),
        };
        let entry = match m {
            Matched::Entry(e) => e,
            Matched::Refused(refused) => {
                r.refused = true;
                &refused.entry
            }
            Matched::Eks { association_id } => {
                r.source = "eks";
                r.association_id = association_id.clone();
                return r;
            }
            Matched::Irsa { role_arn } => {
                r.source = "irsa";
                r.role_arn = Some(role_arn.clone());
                return r;
            }
        };
        r.role_arn = Some(entry.role_arn.clone());
        r.target_role_arn = entry.target_role_arn.clone();
        r.entry = Some(format!("associations[{}]", entry.position));
        r.line = entry.line;
        r.pattern = entry
            .is_pattern()
            .then(|| format!("{}/{}", entry.namespace, entry.service_account));
        r
    }
}

impl ObjectReport {
    pub fn origin(&self) -> Origin {
        Origin {
            file: self.file.clone(),
            document: self.document,
            item: self.item,
        }
    }
}

/// Reports on every object plus the inputs that could not be read.
#[derive(Debug, Default, Serialize)]
pub struct CheckReport {
    pub objects: Vec<ObjectReport>,
    #[serde(serialize_with = "errors_json")]
    pub errors: Vec<ManifestError>,
}

/// Exit codes of `check` and `audit`.
pub mod exit {
    /// Nothing denied, every input read.
    pub const CLEAN: u8 = 0;
    /// At least one denial (or, for `audit`, a finding).
    pub const DENIED: u8 = 1;
    /// An input could not be read (or the command could not run).
    pub const BAD_INPUT: u8 = 2;
}

impl CheckReport {
    /// 2 when an input or object could not be read, else 1 when something was denied, else 0.
    pub fn exit_code(&self) -> u8 {
        if !self.errors.is_empty()
            || self
                .objects
                .iter()
                .any(|o| o.status == CheckStatus::Invalid)
        {
            exit::BAD_INPUT
        } else if self.objects.iter().any(|o| o.status == CheckStatus::Denied) {
            exit::DENIED
        } else {
            exit::CLEAN
        }
    }

    pub fn count(&self, status: CheckStatus) -> usize {
        self.objects.iter().filter(|o| o.status == status).count()
    }
}

#[derive(Serialize)]
struct ErrorJson<'a> {
    file: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    document: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<usize>,
    message: String,
}

fn errors_json<S: serde::Serializer>(errors: &[ManifestError], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(errors.iter().map(|e| ErrorJson {
        file: e.file(),
        document: e.document(),
        line: e.line(),
        message: e.to_string(),
    }))
}

/// The namespace an object is created in: its own, else `default_namespace` (as kubectl
/// does), none for cluster-scoped kinds.
pub fn namespace_of(object: &ManifestObject, default_namespace: &str) -> Option<String> {
    let (group, _) = object.group_version();
    if is_cluster_scoped(group, object.kind()) {
        return None;
    }
    Some(object.namespace().unwrap_or(default_namespace).to_string())
}

/// The ServiceAccounts among `objects` (they count as existing when the others are checked).
pub fn collect_service_accounts<'a>(
    store: &mut ListedServiceAccounts,
    objects: impl IntoIterator<Item = &'a ManifestObject>,
    default_namespace: &str,
    annotation_prefix: &str,
) {
    for o in objects {
        if o.kind() == "ServiceAccount" && o.group_version().0.is_empty() {
            let ns = o.namespace().unwrap_or(default_namespace);
            store.insert(ns, &o.object, annotation_prefix);
        }
    }
}

/// Decides every object in order.
pub async fn check_objects(
    decider: &Decider<'_>,
    objects: &[ManifestObject],
    default_namespace: &str,
    show_patch: bool,
) -> Vec<ObjectReport> {
    let mut reports = Vec::with_capacity(objects.len());
    for object in objects {
        let namespace = namespace_of(object, default_namespace);
        let decided = decider.decide(&object.object, namespace.as_deref()).await;
        reports.push(report(object, namespace, &decided, show_patch));
    }
    reports
}

fn verdict_of(outcome: Outcome) -> CheckStatus {
    match outcome {
        Outcome::Denied => CheckStatus::Denied,
        Outcome::Error => CheckStatus::Invalid,
        Outcome::Warned => CheckStatus::Warned,
        Outcome::Allowed | Outcome::Unchanged | Outcome::Mutated => CheckStatus::Allowed,
    }
}

/// One object's report from the two answers.
pub fn report(
    object: &ManifestObject,
    namespace: Option<String>,
    decided: &Decided,
    show_patch: bool,
) -> ObjectReport {
    let v = &decided.validation;
    let verdict = verdict_of(v.outcome);
    let mut messages = Vec::new();
    if let Some(status) = &v.response.status {
        messages.push(status.message.clone());
    }
    messages.extend(v.response.warnings.iter().cloned());
    let mut reason = v.reason.to_string();
    if let Some(m) = &decided.mutation {
        if let Some(status) = &m.response.status {
            messages.push(status.message.clone());
        }
        messages.extend(m.response.warnings.iter().cloned());
        if verdict == CheckStatus::Allowed {
            reason = m.reason.to_string();
        }
    }
    let mutated = decided.mutated();
    let mutation_failed = decided
        .mutation
        .as_ref()
        .is_some_and(|m| m.outcome == Outcome::Error);
    let status = if mutation_failed {
        CheckStatus::Invalid
    } else if verdict == CheckStatus::Allowed && mutated {
        CheckStatus::Mutated
    } else {
        verdict
    };
    messages.dedup();
    // The messages name bounded values (crate::shown); a message is cut too, for the values a
    // decision quotes that are not names (a container's, an env variable's).
    let messages = messages
        .iter()
        .map(|m| shown::cut(m, shown::MAX_MESSAGE_BYTES).into_owned())
        .collect();
    ObjectReport {
        file: object.origin.file.clone(),
        document: object.origin.document,
        item: object.origin.item,
        api_version: shown::shown(object.api_version()).into_owned(),
        kind: shown::shown(object.kind()).into_owned(),
        namespace: namespace.map(|n| shown::shown(&n).into_owned()),
        name: object.display_name(),
        status,
        verdict,
        mutated,
        messages,
        reason,
        patch: if show_patch { decided.patch() } else { None },
        // The validator's lookup, else (policy off for the namespace) the mutation's.
        identity: v
            .matched
            .as_ref()
            .or(decided.mutation.as_ref().and_then(|m| m.matched.as_ref()))
            .map(IdentityReport::from),
    }
}
