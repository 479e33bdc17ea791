//! Watch-backed stores: the watcher → reflector loop, written once for the webhook's
//! ServiceAccounts and Namespaces and the background audit's pods and workloads.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use kube::Api;
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use tokio_util::sync::CancellationToken;

/// How a watch shows in the logs.
#[derive(Debug, Clone)]
pub struct WatchLog {
    /// The kind or resource watched (the `watch` field).
    pub what: String,
    /// The warning once the watch fails (logged once per outage).
    pub failed: &'static str,
}

/// Keeps `writer`'s store in step with every object of `api` until `stop`, each object trimmed
/// by `strip` before it is stored (only what readers use is kept). Errors are retried with
/// backoff, logged once per outage and once on recovery.
pub fn run<K>(
    api: Api<K>,
    writer: Writer<K>,
    strip: impl FnMut(&mut K) + Send + 'static,
    log: WatchLog,
    stop: CancellationToken,
) where
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Clone + Eq + std::hash::Hash + Send + Sync,
{
    run_notifying(api, writer, strip, log, stop, || {});
}

/// [`run`], calling `changed` after each watch event is in the store (an object added,
/// modified or deleted, or a re-list): for loops that reconcile on changes.
pub fn run_notifying<K>(
    api: Api<K>,
    writer: Writer<K>,
    strip: impl FnMut(&mut K) + Send + 'static,
    log: WatchLog,
    stop: CancellationToken,
    mut changed: impl FnMut() + Send + 'static,
) where
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Clone + Eq + std::hash::Hash + Send + Sync,
{
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(strip)
        .reflect(writer);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                next = stream.next() => match next {
                    None => return,
                    Some(Ok(_)) => {
                        changed();
                        if failing {
                            tracing::info!(watch = %log.what, "watch recovered");
                            failing = false;
                        }
                    }
                    Some(Err(e)) => {
                        if !failing {
                            tracing::warn!(watch = %log.what, error = %e, "{}", log.failed);
                        }
                        failing = true;
                    }
                }
            }
        }
    });
}

/// A store of every `K` in the cluster ([`run`]) with a ready flag: true after the first
/// complete list, or after `ready_timeout` (readers then fall back to live GETs).
pub fn reflect<K>(
    api: Api<K>,
    strip: impl FnMut(&mut K) + Send + 'static,
    kind: &'static str,
    ready_timeout: Duration,
    stop: CancellationToken,
) -> (Store<K>, Arc<AtomicBool>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let log = WatchLog {
        what: kind.to_string(),
        failed: "watch failed; retrying with backoff (lookups fall back to live GETs)",
    };
    run(api, writer, strip, log, stop.clone());
    let ready = Arc::new(AtomicBool::new(false));
    let (ready_flag, waiting) = (ready.clone(), reader.clone());
    tokio::spawn(async move {
        tokio::select! {
            _ = stop.cancelled() => {}
            r = tokio::time::timeout(ready_timeout, waiting.wait_until_ready()) => {
                if r.is_err() {
                    tracing::warn!(kind, ?ready_timeout, "not listed yet; turning ready anyway (misses use live GETs)");
                } else {
                    tracing::info!(kind, "listed");
                }
                ready_flag.store(true, Ordering::Release);
            }
        }
    });
    (reader, ready)
}
