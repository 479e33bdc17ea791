//! A cap on open HTTPS connections (`server.maxConnections`).
//!
//! Why: each connection holds a file descriptor and buffers until a timeout ends it, so clients
//! that open connections and then trickle bytes (or none) could otherwise pile up until the
//! process runs out of descriptors, and then every admission fails. At the cap the webhook stops
//! accepting; new connections wait in the kernel's listen backlog and are taken as soon as one
//! closes, so a burst is delayed rather than refused. The count costs a semaphore permit per
//! connection, nothing per request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::registry::Registry;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::telemetry::metrics::{FamilySnapshot, SampleKind, register_snapshot};

/// Default `server.maxConnections`: far above what API servers open (their webhook clients keep
/// up to a few hundred connections per webhook), far below a pod's usual descriptor limit.
pub const MAX_CONNECTIONS: usize = 4096;

/// Open connections against their cap, shared by the accept loop and the metrics.
#[derive(Clone, Debug)]
pub struct ConnectionLimit {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    max: usize,
    slots: Arc<Semaphore>,
    /// Times the accept loop found every slot taken and waited for one.
    reached: AtomicU64,
    /// Since when the accept loop has been unable to take connections (at the cap, or accept
    /// failing), in milliseconds since `epoch`; 0 when it can.
    blocked_since_ms: AtomicU64,
    epoch: std::time::Instant,
}

/// One open connection's slot; dropping it (the connection closed) frees the slot.
#[derive(Debug)]
pub struct Slot(#[allow(dead_code)] OwnedSemaphorePermit);

impl ConnectionLimit {
    /// `max` is at least 1 (the configuration refuses 0).
    pub fn new(max: usize) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            inner: Arc::new(Inner {
                max,
                slots: Arc::new(Semaphore::new(max)),
                reached: AtomicU64::new(0),
                blocked_since_ms: AtomicU64::new(0),
                epoch: std::time::Instant::now(),
            }),
        }
    }

    /// A slot for the next connection, waiting while all are taken (counted, and logged when
    /// the wait begins).
    pub async fn slot(&self) -> Slot {
        if let Ok(permit) = self.inner.slots.clone().try_acquire_owned() {
            return Slot(permit);
        }
        self.inner.reached.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            max_connections = self.inner.max,
            "connection limit reached; new connections wait until one closes (server.maxConnections)"
        );
        self.set_blocked(true);
        // The semaphore is never closed.
        let permit = self.inner.slots.clone().acquire_owned().await;
        self.set_blocked(false);
        Slot(permit.expect("the connection semaphore is never closed"))
    }

    /// A slot for the next connection of an admin port: at the cap, the connection idle the
    /// longest is closed to make room (`idle.rs`); only when every connection has a request in
    /// progress does the next one wait.
    pub async fn slot_making_room(&self, idle: &super::idle::IdleConnections) -> Slot {
        if let Ok(permit) = self.inner.slots.clone().try_acquire_owned() {
            return Slot(permit);
        }
        if !idle.evict_oldest() {
            return self.slot().await;
        }
        // The evicted connection's task frees its slot as soon as it runs.
        let permit = self.inner.slots.clone().acquire_owned().await;
        Slot(permit.expect("the connection semaphore is never closed"))
    }

    /// Marks the listener unable (or able again) to accept: at the cap, or accept failing.
    pub fn set_blocked(&self, blocked: bool) {
        let ms = if blocked {
            // 1 at the least: 0 means "not blocked".
            (self.inner.epoch.elapsed().as_millis() as u64).max(1)
        } else {
            0
        };
        if !blocked {
            self.inner.blocked_since_ms.store(0, Ordering::Relaxed);
        } else {
            // Keep the earliest moment of an ongoing block.
            let _ = self.inner.blocked_since_ms.compare_exchange(
                0,
                ms,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// How long the listener has been unable to accept, if it is.
    pub fn blocked_for(&self) -> Option<std::time::Duration> {
        match self.inner.blocked_since_ms.load(Ordering::Relaxed) {
            0 => None,
            since => Some(
                self.inner
                    .epoch
                    .elapsed()
                    .saturating_sub(std::time::Duration::from_millis(since)),
            ),
        }
    }

    pub fn max(&self) -> usize {
        self.inner.max
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.inner.max - self.inner.slots.available_permits()
    }

    /// How many times the limit was reached.
    pub fn times_reached(&self) -> u64 {
        self.inner.reached.load(Ordering::Relaxed)
    }

    /// Registers `connections_open`, `connections_max` and `connection_limit_reached_total`.
    pub fn register_metrics(&self, registry: &mut Registry) {
        let observed = self.clone();
        register_snapshot(registry, move || {
            vec![
                FamilySnapshot::gauge(
                    "connections_open",
                    "HTTPS connections open now",
                    observed.open() as f64,
                ),
                FamilySnapshot::gauge(
                    "connections_max",
                    "Most HTTPS connections open at once (server.maxConnections)",
                    observed.max() as f64,
                ),
                FamilySnapshot {
                    name: "connection_limit_reached",
                    help: "Times every connection slot was taken and new connections had to wait",
                    kind: SampleKind::Counter,
                    samples: vec![(Vec::new(), observed.times_reached() as f64)],
                },
            ]
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn slots_are_counted_and_the_next_connection_waits_for_a_free_one() {
        let limit = ConnectionLimit::new(2);
        let a = limit.slot().await;
        let _b = limit.slot().await;
        assert_eq!(limit.open(), 2);
        assert_eq!(limit.times_reached(), 0);

        let waiting = tokio::spawn({
            let limit = limit.clone();
            async move { limit.slot().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiting.is_finished(),
            "a third connection waits at the cap"
        );
        assert_eq!(limit.times_reached(), 1);

        drop(a);
        let _c = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("a closed connection frees its slot")
            .unwrap();
        assert_eq!(limit.open(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cap_of_zero_still_lets_one_connection_in() {
        let limit = ConnectionLimit::new(0);
        assert_eq!(limit.max(), 1);
        let first = tokio::time::timeout(Duration::from_secs(1), limit.slot())
            .await
            .expect("one connection gets a slot");
        assert_eq!(limit.open(), 1);
        // The second waits for it, as at any cap.
        assert!(
            tokio::time::timeout(Duration::from_secs(1), limit.slot())
                .await
                .is_err()
        );
        drop(first);
        assert_eq!(limit.open(), 0);
    }
}
