//! The migration plan's shape: one [`Row`] per annotated ServiceAccount, its [`Finding`]s and
//! [`Action`]s, the [`Totals`] and the [`Plan`] that `plan`, `apply`, `verify` and the renderers share.
//! [`super::checks`] fills it.

use serde::Serialize;
use serde_json::Value;

use super::inventory::{TargetInfo, WorkloadRef};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Severity {
    /// Migrating this ServiceAccount now would break it: apply skips the row.
    Block,
    /// Migrates, but something changes or needs a person (restart, settings that do not carry).
    Care,
}

/// One finding on a row. `code` is stable (for tools); `message` says what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub code: &'static str,
    pub message: String,
}

impl Finding {
    pub(super) fn block(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Block,
            code,
            message: message.into(),
        }
    }
    pub(super) fn care(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Care,
            code,
            message: message.into(),
        }
    }
}

/// The ServiceAccount's association compared to its annotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum AssociationState {
    Missing,
    SameRole {
        #[serde(skip_serializing_if = "Option::is_none")]
        association_id: Option<String>,
        /// The association's inline session policy, when it has one.
        #[serde(skip_serializing_if = "Option::is_none")]
        policy: Option<String>,
    },
    Conflict {
        role_arn: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        policy: Option<String>,
    },
}

impl AssociationState {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::SameRole { .. } => "same role",
            Self::Conflict { .. } => "conflict",
        }
    }
}

/// The role's trust policy for Pod Identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum TrustState {
    Present,
    AddTagSession,
    AddStatement,
    RoleNotFound,
    Unreadable,
    NotChecked,
}

impl TrustState {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Present => "present",
            Self::AddTagSession => "add TagSession",
            Self::AddStatement => "add statement",
            Self::RoleNotFound => "no role",
            Self::Unreadable => "unreadable",
            Self::NotChecked => "-",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrustCheck {
    pub state: TrustState,
    /// Size IAM counts, after the edit when one is needed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<usize>,
    pub limit: usize,
    /// `limit - size` (negative: the edit does not fit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room: Option<i64>,
    /// The statement (or action) to add.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub add: Option<Value>,
}

/// A change that migrates a row (in the order `apply` makes them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "action")]
pub enum Action {
    /// `UpdateAssumeRolePolicy` with the whole new document (compact JSON).
    UpdateTrust {
        role_name: String,
        role_arn: String,
        policy: String,
    },
    CreateAssociation {
        namespace: String,
        service_account: String,
        role_arn: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum RowStatus {
    /// Association in place with the same role and trust present.
    Done,
    /// Actions to take, nothing blocks.
    Ready,
    Blocked,
    /// The role (or something else) could not be read.
    Unreadable,
}

impl RowStatus {
    pub fn label(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::Ready => "ready",
            Self::Blocked => "blocked",
            Self::Unreadable => "unreadable",
        }
    }
}

/// One annotated ServiceAccount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub namespace: String,
    pub service_account: String,
    pub role_arn: String,
    pub association: AssociationState,
    pub trust: TrustCheck,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role_account: Option<String>,
    pub pods: Vec<String>,
    /// Running pods that still carry IRSA variables (created before the association).
    pub pods_using_irsa: Vec<String>,
    pub workloads: Vec<WorkloadRef>,
    pub findings: Vec<Finding>,
    pub actions: Vec<Action>,
    pub status: RowStatus,
}

impl Row {
    pub fn blocking(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Block)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    pub service_accounts: usize,
    pub done: usize,
    pub ready: usize,
    pub blocked: usize,
    pub unreadable: usize,
    pub pods: usize,
    pub pods_using_irsa: usize,
    pub associations_existing: usize,
    pub associations_to_create: usize,
    pub association_limit: usize,
    pub trust_updates: usize,
}

/// The plan: rows and totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub target: TargetInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_account: Option<String>,
    pub rows: Vec<Row>,
    pub totals: Totals,
    /// Plan-wide notes (nodes not listable, cluster account unknown, …).
    pub notes: Vec<String>,
}

impl Plan {
    /// 0 nothing blocks, 1 something blocks, 2 something could not be read.
    pub fn exit_code(&self) -> i32 {
        if self.totals.unreadable > 0 {
            2
        } else if self.totals.blocked > 0 {
            1
        } else {
            0
        }
    }
}
