//! Probes are never starved (issue 31): beside 2,000 idle connections on the admin port,
//! `/livez` and `/readyz` of the webhook and of the credentials agent answer within a second.
//! At its cap an admin port closes the connection idle the longest to let a new one in.
//!
//! Its own binary: it raises the process's open-files soft limit for the idle connections.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use pod_identity_webhook::server::open_files::raise_open_files_limit;
use support::agent::Harness;
use support::sts::RecordingSts;
use support::{WebhookBuilder, admin_get, wait_readyz};

const IDLE: usize = 2_000;
const PROBE_BOUND: Duration = Duration::from_secs(1);

/// Opens `IDLE` connections to `addr` that never finish a request: most send nothing, every
/// tenth the first line of a request head.
async fn idle_connections(addr: SocketAddr) -> Vec<TcpStream> {
    let limit = raise_open_files_limit().expect("the open-files limit can be read");
    assert!(
        limit >= 2 * IDLE as u64 + 512,
        "this test needs an open-files limit of {} (ulimit -n); it is {limit}",
        2 * IDLE + 512
    );
    let mut held = Vec::with_capacity(IDLE);
    for i in 0..IDLE {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        if i % 10 == 0 {
            // A closed (evicted) connection may refuse the write; that is fine.
            let _ = tcp.write_all(b"GET /metrics HTTP/1.1\r\n").await;
        }
        held.push(tcp);
    }
    held
}

/// Each probe path answered with 200 within [`PROBE_BOUND`], measured and printed.
async fn probes_answer_in_time(admin: SocketAddr, who: &str) {
    for path in ["/livez", "/readyz", "/livez", "/readyz"] {
        let start = Instant::now();
        let (status, body) = tokio::time::timeout(PROBE_BOUND, admin_get(admin, path))
            .await
            .unwrap_or_else(|_| panic!("{who} {path} not answered within {PROBE_BOUND:?} beside {IDLE} idle connections"));
        let took = start.elapsed();
        println!("{who} {path}: {status} in {took:?} beside {IDLE} idle admin connections");
        assert_eq!(status, 200, "{who} {path}: {body}");
        assert!(took < PROBE_BOUND, "{who} {path} took {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_answers_probes_beside_two_thousand_idle_admin_connections() {
    let webhook = WebhookBuilder::new().start().await;
    wait_readyz(webhook.admin_addr, 200).await;
    let held = idle_connections(webhook.admin_addr).await;
    probes_answer_in_time(webhook.admin_addr, "webhook").await;
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_answers_probes_beside_two_thousand_idle_admin_connections() {
    let sts = RecordingSts::issuing(Duration::from_secs(3600)).await;
    let h = Harness::start(&sts.endpoint, |_| {}).await;
    wait_readyz(h.agent.admin_addr, 200).await;
    let held = idle_connections(h.agent.admin_addr).await;
    probes_answer_in_time(h.agent.admin_addr, "agent").await;
    drop(held);
}
