//! Leader election on a `coordination.k8s.io/v1` Lease (the `kube-lease-manager` crate): one
//! replica holds it and works, the others wait for it to be released (a clean stop) or to expire
//! (a crash: within the lease duration).

use std::future::Future;
use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio_util::sync::CancellationToken;

/// The Lease's name by default (in the controller's namespace).
pub const DEFAULT_LEASE_NAME: &str = "pod-identity-webhook-controller";

/// Shortest lease duration: the crate counts whole seconds and renews a grace period before
/// expiry, which must be shorter than the duration.
pub const MIN_LEASE_DURATION: Duration = Duration::from_secs(2);

/// Why election settings are refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ElectionSettingsError {
    #[error("--lease-duration must be at least {min}s (whole seconds), got {0:?}", min = MIN_LEASE_DURATION.as_secs())]
    TooShort(Duration),
}

/// Which Lease, and who this replica is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectionSettings {
    pub lease_name: String,
    pub namespace: String,
    /// The holder identity: the pod's name (unique among replicas).
    pub identity: String,
    /// How long a holder keeps the Lease without renewing it: a standby takes over within this
    /// after a crash.
    pub duration_secs: u64,
    /// Renew this long before expiry.
    pub grace_secs: u64,
}

impl ElectionSettings {
    /// The settings for a lease of `duration`, renewed a third of it before expiry.
    pub fn new(
        lease_name: String,
        namespace: String,
        identity: String,
        duration: Duration,
    ) -> Result<Self, ElectionSettingsError> {
        let duration_secs = duration.as_secs();
        if duration < MIN_LEASE_DURATION {
            return Err(ElectionSettingsError::TooShort(duration));
        }
        Ok(Self {
            lease_name,
            namespace,
            identity,
            duration_secs,
            grace_secs: (duration_secs / 3).max(1),
        })
    }

    /// The Lease's manager (creates the Lease when it does not exist).
    pub async fn manager(&self, client: Client) -> Result<LeaseManager, LeaseManagerError> {
        LeaseManagerBuilder::new(client, &self.lease_name)
            .with_namespace(&self.namespace)
            .with_identity(&self.identity)
            .with_duration(self.duration_secs)
            .with_grace(self.grace_secs)
            .build()
            .await
    }
}

/// Runs `work` while this replica holds the Lease, until `stop`: started on acquiring it,
/// cancelled on losing it; `on_change` hears each change. On `stop` the Lease is released so a
/// standby takes over at once rather than after the lease duration.
pub async fn lead<F, Fut>(
    manager: LeaseManager,
    stop: CancellationToken,
    mut on_change: impl FnMut(bool),
    work: F,
) where
    F: Fn(CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (mut leading, manager_task) = manager.watch().await;
    let mut current: Option<(CancellationToken, tokio::task::JoinHandle<()>)> = None;
    loop {
        let now = *leading.borrow_and_update();
        if now && current.is_none() {
            tracing::info!("holding the controller Lease: working");
            let token = stop.child_token();
            current = Some((token.clone(), tokio::spawn(work(token))));
            on_change(true);
        } else if !now && let Some((token, task)) = current.take() {
            tracing::warn!("lost the controller Lease: standing by");
            token.cancel();
            let _ = task.await;
            on_change(false);
        } else if !now {
            tracing::info!("standing by: another replica holds the controller Lease");
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            changed = leading.changed() => if changed.is_err() {
                tracing::error!("the Lease manager stopped; standing by");
                break;
            },
        }
    }
    if let Some((token, task)) = current.take() {
        token.cancel();
        let _ = task.await;
    }
    on_change(false);
    // Closing the channel makes the manager release the Lease.
    drop(leading);
    match tokio::time::timeout(Duration::from_secs(5), manager_task).await {
        Ok(Ok(Ok(_))) => tracing::info!("controller Lease released"),
        Ok(Ok(Err(e))) => {
            tracing::warn!(error = %e, "cannot release the controller Lease; it expires")
        }
        Ok(Err(_)) | Err(_) => {
            tracing::warn!("the controller Lease was not released in time; it expires")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_whole_seconds_renewed_a_third_before_expiry() {
        let s = |d| ElectionSettings::new("l".into(), "ns".into(), "me".into(), d);
        let e = s(Duration::from_secs(15)).unwrap();
        assert_eq!((e.duration_secs, e.grace_secs), (15, 5));
        assert_eq!(s(Duration::from_secs(2)).unwrap().grace_secs, 1);
        assert_eq!(
            s(Duration::from_millis(1500)),
            Err(ElectionSettingsError::TooShort(Duration::from_millis(1500)))
        );
    }
}
