//! A test double: an in-memory [`EksApi`] for the EKS source's unit tests and the benches.
//!
//! Not used by the webhook. It keeps the EKS semantics the source relies on (pages of at most
//! [`PAGE_SIZE`], filtering by namespace and ServiceAccount, `Describe` of a deleted association
//! is "none"), counts calls, and can be made slow or failing. The integration tests use the
//! REST-JSON server in `tests/eks_support` instead, so the real SDK runs.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;

use super::Association;
use super::eks_client::{
    CallError, CallErrorKind, EksApi, ListedAssociation, Operation, PAGE_SIZE, Page,
};

/// An in-memory EKS: a list of associations, a switch to fail, a delay, and call counters.
#[derive(Debug, Default)]
pub struct MemEks {
    associations: Mutex<Vec<Association>>,
    down: AtomicBool,
    delay_ms: AtomicU64,
    lists: AtomicUsize,
    describes: AtomicUsize,
}

impl MemEks {
    pub fn new(associations: Vec<Association>) -> Self {
        let fake = Self::default();
        fake.set(associations);
        fake
    }

    /// `n` associations `ns-{i/50}`/`sa-{i}` with role `role-{i}` (50 ServiceAccounts a
    /// namespace, as in the REST-JSON fake).
    pub fn many(n: usize) -> Self {
        Self::new(
            (0..n)
                .map(|i| {
                    association(
                        &format!("ns-{}", i / 50),
                        &format!("sa-{i}"),
                        &format!("role-{i}"),
                    )
                })
                .collect(),
        )
    }

    /// Replaces every association.
    pub fn set(&self, list: Vec<Association>) {
        *self.associations.lock().unwrap_or_else(|p| p.into_inner()) = list;
    }

    /// Every call fails with a server error while down.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Delays every call.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn lists(&self) -> usize {
        self.lists.load(Ordering::SeqCst)
    }

    pub fn describes(&self) -> usize {
        self.describes.load(Ordering::SeqCst)
    }

    pub fn calls(&self) -> usize {
        self.lists() + self.describes()
    }

    fn snapshot(&self) -> Vec<Association> {
        self.associations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn answer(&self, op: Operation) -> Result<(), CallError> {
        let ms = self.delay_ms.load(Ordering::SeqCst);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if self.down.load(Ordering::SeqCst) {
            return Err(CallError::new(op, CallErrorKind::Server, "down"));
        }
        Ok(())
    }
}

/// An association as [`MemEks::many`] makes them: id `a-{namespace}-{serviceAccount}`.
pub fn association(namespace: &str, service_account: &str, role: &str) -> Association {
    Association {
        association_id: Some(format!("a-{namespace}-{service_account}")),
        ..Association::new(
            namespace,
            service_account,
            format!("arn:aws:iam::111122223333:role/{role}"),
        )
    }
}

impl EksApi for MemEks {
    fn list_page<'a>(
        &'a self,
        filter: Option<(&'a str, &'a str)>,
        next_token: Option<String>,
    ) -> BoxFuture<'a, Result<Page, CallError>> {
        Box::pin(async move {
            self.lists.fetch_add(1, Ordering::SeqCst);
            self.answer(Operation::List).await?;
            // The token is the offset of the next page among the matching associations.
            let start: usize = match next_token {
                None => 0,
                Some(t) => t.parse().map_err(|_| {
                    CallError::new(
                        Operation::List,
                        CallErrorKind::InvalidRequest,
                        "invalid nextToken",
                    )
                })?,
            };
            let matching: Vec<ListedAssociation> = self
                .snapshot()
                .iter()
                .filter(|a| filter.is_none_or(|(n, s)| a.namespace == n && a.service_account == s))
                .map(|a| {
                    let id = a.association_id.clone().unwrap_or_default();
                    ListedAssociation {
                        namespace: a.namespace.clone(),
                        service_account: a.service_account.clone(),
                        association_arn: Some(format!(
                            "arn:aws:eks:us-east-1:111122223333:podidentityassociation/test/{id}"
                        )),
                        association_id: id,
                    }
                })
                .collect();
            let end = (start + PAGE_SIZE as usize).min(matching.len());
            let next_token = (end < matching.len()).then(|| end.to_string());
            Ok(Page {
                summaries: matching
                    .into_iter()
                    .skip(start)
                    .take(end.saturating_sub(start))
                    .collect(),
                next_token,
            })
        })
    }

    fn describe<'a>(
        &'a self,
        association_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Association>, CallError>> {
        Box::pin(async move {
            self.describes.fetch_add(1, Ordering::SeqCst);
            self.answer(Operation::Describe).await?;
            Ok(self
                .snapshot()
                .into_iter()
                .find(|a| a.association_id.as_deref() == Some(association_id)))
        })
    }
}
