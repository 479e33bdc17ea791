//! The startup taint (issue 31): once the agent is ready to serve, it removes the taint
//! `pod-identity-webhook/agent-not-ready` (any effect; `--startup-taint`) from its own node
//! (`--node-name`, `NODE_NAME`), so pods that need credentials are not scheduled onto a node
//! whose agent cannot answer yet. Nothing is put back on shutdown: a restarting agent on a
//! running node must not evict or block its pods.
//!
//! Only the `patch` verb on nodes is needed: a JSON patch whose one operation is a `test`
//! reads the node (the API server answers a patch with the object), and the removal is a JSON
//! patch guarded by the `resourceVersion` read, retried when the node changed in between.

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams};
use tokio_util::sync::CancellationToken;

/// The default `--startup-taint`.
pub const DEFAULT_STARTUP_TAINT: &str = "pod-identity-webhook/agent-not-ready";

#[derive(Debug, thiserror::Error)]
pub enum TaintError {
    #[error("cannot patch node {node}: {source}")]
    Patch {
        node: String,
        #[source]
        source: kube::Error,
    },
}

/// Removes every taint with key `key` from `node`; how many were removed.
pub async fn remove_taint(
    client: kube::Client,
    node: &str,
    key: &str,
) -> Result<usize, TaintError> {
    let nodes: Api<Node> = Api::all(client);
    let fail = |source| TaintError::Patch {
        node: node.to_string(),
        source,
    };
    let mut attempts = 0;
    loop {
        attempts += 1;
        // A read through `patch`: a test that always holds changes nothing.
        let read = serde_json::json!([{"op": "test", "path": "/metadata/name", "value": node}]);
        let now = nodes
            .patch(
                node,
                &PatchParams::default(),
                &Patch::Json::<()>(serde_json::from_value(read).expect("valid patch")),
            )
            .await
            .map_err(fail)?;
        let taints = now
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let ours: Vec<usize> = taints
            .iter()
            .enumerate()
            .filter(|(_, t)| t.key == key)
            .map(|(i, _)| i)
            .collect();
        if ours.is_empty() {
            return Ok(0);
        }
        let mut ops = vec![
            serde_json::json!({"op": "test", "path": "/metadata/resourceVersion", "value": now.metadata.resource_version}),
        ];
        // From the last, so the earlier indexes stay valid.
        for &i in ours.iter().rev() {
            ops.push(serde_json::json!({"op": "remove", "path": format!("/spec/taints/{i}")}));
        }
        let patch = serde_json::from_value(serde_json::Value::Array(ops)).expect("valid patch");
        match nodes
            .patch(node, &PatchParams::default(), &Patch::Json::<()>(patch))
            .await
        {
            Ok(_) => return Ok(ours.len()),
            // The node changed since it was read (the test failed): read it again.
            Err(kube::Error::Api(e)) if attempts < 5 && (e.code == 422 || e.code == 409) => {
                tokio::time::sleep(Duration::from_millis(100 * attempts)).await;
            }
            Err(e) => return Err(fail(e)),
        }
    }
}

/// Waits until `ready()` holds, then removes the taint, retrying failures every few seconds
/// until it is gone or `stop`.
pub async fn remove_when_ready(
    client: kube::Client,
    node: String,
    key: String,
    ready: impl Fn() -> bool + Send + 'static,
    stop: CancellationToken,
) {
    let mut wait = Duration::from_millis(200);
    loop {
        if ready() {
            match remove_taint(client.clone(), &node, &key).await {
                Ok(n) => {
                    tracing::info!(%node, taint = %key, removed = n, "ready: startup taint removed from the node");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot remove the startup taint; retrying (RBAC: patch on nodes)");
                    wait = Duration::from_secs(5);
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
