//! A small open-files limit (issue 21): the HTTPS cap is lowered to fit it, so a flood of
//! connections fills the cap, not the descriptor table, and the admin port keeps answering
//! probes (saying the HTTPS listener cannot accept) instead of failing with EMFILE.
//!
//! One test in this binary: it lowers the whole process's limit.

mod support;

use std::time::Duration;

use tokio::net::TcpStream;

use support::{WebhookBuilder, admin_get, sample, wait_readyz};

use pod_identity_webhook::server::open_files::RESERVED_DESCRIPTORS;

const LIMIT: u64 = 400;
const ADMIN_CAP: usize = 16;

#[tokio::test]
async fn with_a_small_open_files_limit_probes_are_still_answered_during_a_flood() {
    let limit = libc::rlimit {
        rlim_cur: LIMIT,
        rlim_max: LIMIT,
    };
    // SAFETY: setrlimit reads the struct it is given.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    let webhook = WebhookBuilder::new()
        .settings(|s| {
            s.server.connections.admin_max_connections = ADMIN_CAP;
            s.server.connections.unready_after_blocked = Duration::from_millis(200);
            // The flood's connections stay open (no handshake) for the whole test.
            s.server.connections.handshake_timeout = Duration::from_secs(60);
        })
        .start()
        .await;
    wait_readyz(webhook.admin_addr, 200).await;
    let cap = (LIMIT - RESERVED_DESCRIPTORS) as usize - ADMIN_CAP;
    // More connections than the cap. Each costs this process two descriptors while accepted
    // (client and server end), one while it waits in the backlog: the server's reserve holds
    // the client ends here.
    let mut flood = Vec::new();
    for _ in 0..cap + 20 {
        flood.push(TcpStream::connect(webhook.https_addr).await.unwrap());
    }
    let body = wait_readyz(webhook.admin_addr, 503).await;
    assert!(body.contains("HTTPS listener cannot accept"), "{body}");
    let (status, metrics) = admin_get(webhook.admin_addr, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(
        sample(&metrics, "pod_identity_webhook_connections_max"),
        Some(cap as f64),
        "the cap was lowered to fit"
    );
    assert_eq!(
        sample(&metrics, "pod_identity_webhook_connections_open"),
        Some(cap as f64)
    );
    drop(flood);
    wait_readyz(webhook.admin_addr, 200).await;
}
