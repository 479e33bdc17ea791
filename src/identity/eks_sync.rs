//! The EKS source's periodic full sync: every page of `ListPodIdentityAssociations` (100 a
//! page; 5,000 associations: 50 calls), nothing else, swapped in as the source's snapshot only
//! when complete; the loop that runs it at start-up and every `sync_interval`, and readiness.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use super::eks_cache::{EksSource, Inner, Snapshot, bump, key, summary};
use super::eks_client::CallError;
use super::eks_pause::{backoff, jitter};

/// EKS allows 5,000 associations a cluster (50 pages); anything far past that is a loop.
const MAX_PAGES: usize = 1_000;

/// What one full sync saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncReport {
    pub associations: usize,
    pub pages: usize,
}

/// Why a full sync did not complete.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SyncError {
    #[error("{0}; the previous associations stay in use")]
    List(CallError),
    #[error(
        "pagination of ListPodIdentityAssociations did not end after {MAX_PAGES} pages; the previous associations stay in use"
    )]
    Pagination,
}

impl EksSource {
    /// One full sync now: list every page, swap the view in.
    pub async fn sync_now(&self) -> Result<SyncReport, SyncError> {
        self.inner.sync_once().await
    }

    /// Full sync at start-up and then every `sync_interval` (sooner, with jittered backoff,
    /// after a failure); turns ready after the first complete sync or after `ready_timeout`.
    pub async fn run_sync(self, stop: CancellationToken) {
        let inner = self.inner;
        let ready_timer = {
            let inner = inner.clone();
            let stop = stop.clone();
            async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep(inner.opts.ready_timeout) => {
                        if !inner.ready.swap(true, Ordering::AcqRel) {
                            tracing::warn!(
                                timeout = ?inner.opts.ready_timeout,
                                "no complete EKS association sync yet; turning ready anyway so pods can be admitted (lookups go to EKS one ServiceAccount at a time)"
                            );
                        }
                    }
                }
            }
        };
        let sync_loop = {
            let inner = inner.clone();
            async move {
                let mut failures: u32 = 0;
                loop {
                    let result = tokio::select! {
                        _ = stop.cancelled() => return,
                        r = inner.sync_once() => r,
                    };
                    let delay = match result {
                        Ok(report) => {
                            failures = 0;
                            if !inner.ready.swap(true, Ordering::AcqRel) {
                                tracing::info!(
                                    associations = report.associations,
                                    pages = report.pages,
                                    "first EKS association sync complete; ready"
                                );
                            } else {
                                tracing::debug!(
                                    associations = report.associations,
                                    pages = report.pages,
                                    "EKS association sync complete"
                                );
                            }
                            // Replicas started together drift apart instead of listing in step.
                            jitter(inner.opts.sync_interval)
                        }
                        Err(e) => {
                            failures = failures.saturating_add(1);
                            let delay =
                                backoff(inner.opts.sync_retry, failures, inner.opts.sync_interval);
                            tracing::warn!(error = %e, retry_in = ?delay, "EKS association sync failed");
                            delay
                        }
                    };
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        };
        futures::join!(ready_timer, sync_loop);
    }
}

impl Inner {
    async fn sync_once(&self) -> Result<SyncReport, SyncError> {
        let result = self.sync_inner().await;
        match &result {
            Ok(_) => {
                bump(&self.counters.syncs);
                let unix = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                self.counters.last_sync_unix.store(unix, Ordering::Relaxed);
                self.pause.record(None);
            }
            Err(SyncError::List(e)) => {
                bump(&self.counters.sync_failures);
                self.pause.record(Some(e));
            }
            Err(SyncError::Pagination) => bump(&self.counters.sync_failures),
        }
        result
    }

    /// Every page of `List`, nothing else; the view is swapped in only when complete.
    async fn sync_inner(&self) -> Result<SyncReport, SyncError> {
        let taken_at = Instant::now();
        let mut associations = HashMap::new();
        let mut token = None;
        let mut pages = 0;
        loop {
            if pages >= MAX_PAGES {
                return Err(SyncError::Pagination);
            }
            let page = self.list(None, token).await.map_err(SyncError::List)?;
            pages += 1;
            for s in page.summaries {
                associations.insert(key(&s.namespace, &s.service_account), summary(s));
            }
            token = page.next_token;
            if token.is_none() {
                break;
            }
        }
        let count = associations.len();
        self.snapshot.store(Arc::new(Snapshot {
            taken_at: Some(taken_at),
            associations,
        }));
        Ok(SyncReport {
            associations: count,
            pages,
        })
    }
}
