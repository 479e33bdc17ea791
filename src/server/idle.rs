//! Admin ports make room for probes (issue 31): at the connection cap, the connection that has
//! waited longest without a request in progress (idle keep-alive, or a request head that never
//! finishes) is closed to let the new one in.
//!
//! Why: the kubelet's probes and Prometheus' scrapes share the admin port with whatever else can
//! reach it. With a plain cap, 64 idle connections (reopened as they time out) kept `/livez`
//! waiting in the listen backlog until the kubelet restarted the process. Eviction needs no
//! trusted-peer list: a probe sends its request head as soon as it connects, so it is the newest
//! idle connection for the microseconds that takes, and a request in progress is never cut.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// The connections of one admin port that could be closed to make room, oldest idle first.
#[derive(Clone, Debug, Default)]
pub struct IdleConnections {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Idle connections by the order they became idle (a fresh key each time).
    idle: Mutex<BTreeMap<u64, CancellationToken>>,
    next: AtomicU64,
    evicted: AtomicU64,
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, CancellationToken>> {
        // The map stays consistent whatever panicked while holding it.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn mark_idle(&self, token: &CancellationToken) -> u64 {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(key, token.clone());
        key
    }
}

impl IdleConnections {
    /// Tracks a new connection: idle (no request yet) until its service is called.
    pub fn watch(&self) -> Watched {
        let token = CancellationToken::new();
        let key = self.inner.mark_idle(&token);
        Watched {
            inner: self.inner.clone(),
            token,
            key: Arc::new(Mutex::new(Some(key))),
        }
    }

    /// Closes the connection idle the longest; false when every connection has a request in
    /// progress.
    pub fn evict_oldest(&self) -> bool {
        let oldest = self.inner.lock().pop_first();
        match oldest {
            Some((_, token)) => {
                token.cancel();
                self.inner.evicted.fetch_add(1, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Connections closed to make room so far.
    pub fn evicted(&self) -> u64 {
        self.inner.evicted.load(Ordering::Relaxed)
    }
}

/// One connection's place among the idle ones; dropping it (the connection closed) forgets it.
#[derive(Clone, Debug)]
pub struct Watched {
    inner: Arc<Inner>,
    token: CancellationToken,
    /// Its key in the idle map while idle.
    key: Arc<Mutex<Option<u64>>>,
}

impl Watched {
    /// Resolves when the connection is chosen to make room: the caller closes it.
    pub fn evicted(&self) -> WaitForCancellationFutureOwned {
        self.token.clone().cancelled_owned()
    }

    /// Not evictable until the returned guard drops (the request answered or abandoned).
    fn busy(&self) -> Busy {
        let mut key = self.key.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = key.take() {
            self.inner.lock().remove(&k);
        }
        Busy(self.clone())
    }

    fn forget(&self) {
        if let Some(k) = self.key.lock().unwrap_or_else(|e| e.into_inner()).take() {
            self.inner.lock().remove(&k);
        }
    }
}

/// A request in progress on a watched connection; idle again (the newest) when dropped.
struct Busy(Watched);

impl Drop for Busy {
    fn drop(&mut self) {
        let w = &self.0;
        let mut key = w.key.lock().unwrap_or_else(|e| e.into_inner());
        // A closed or evicted connection (its token cancelled) must not come back.
        if key.is_none() && !w.token.is_cancelled() {
            *key = Some(w.inner.mark_idle(&w.token));
        }
    }
}

/// The guard a connection task keeps: forgets the connection when the task ends.
pub struct Forget(pub Watched);

impl Drop for Forget {
    fn drop(&mut self) {
        self.0.forget();
        // Requests still running (none on a closed HTTP/1.1 connection) must not mark it idle.
        *self.0.key.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.0.token.cancel();
    }
}

/// A connection's service that marks the connection (when watched) busy while a request is in
/// progress.
#[derive(Clone)]
pub struct MarkBusy<S> {
    inner: S,
    watched: Option<Watched>,
}

impl<S> MarkBusy<S> {
    pub fn new(inner: S, watched: Option<Watched>) -> Self {
        Self { inner, watched }
    }
}

impl<S, R> hyper::service::Service<R> for MarkBusy<S>
where
    S: hyper::service::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn call(&self, req: R) -> Self::Future {
        let busy = self.watched.as_ref().map(Watched::busy);
        let answer = self.inner.call(req);
        Box::pin(async move {
            let answer = answer.await;
            drop(busy);
            answer
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_idle_connection_goes_first_and_busy_ones_never() {
        let idle = IdleConnections::default();
        let a = idle.watch();
        let b = idle.watch();
        let busy_a = a.busy();
        assert!(idle.evict_oldest());
        assert!(b.token.is_cancelled(), "b was idle the longest");
        assert!(!a.token.is_cancelled());
        assert!(!idle.evict_oldest(), "a has a request in progress");
        drop(busy_a);
        let c = idle.watch();
        assert!(idle.evict_oldest());
        assert!(a.token.is_cancelled(), "a went idle before c arrived");
        assert!(!c.token.is_cancelled());
        drop(Forget(c));
        assert!(!idle.evict_oldest(), "a closed connection is forgotten");
        assert_eq!(idle.evicted(), 2);
    }
}
