//! Neighbours cannot starve each other (issue 31): one pod (a loopback address) flooding the
//! credentials agent with connections holds at most `--max-connections-per-address` of them,
//! and another pod's cached answer stays under 50 ms (on a loaded machine: under ten times what
//! it takes without the flood, measured in the same run, if that is more).
//!
//! Its own binary: the timing is measured without other tests' load in the same process.

mod support;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::WAIT;
use support::agent::*;
use support::sts::RecordingSts;

/// `n` cached answers to the pod at `from`, 20 ms apart: how long each took, sorted.
async fn answer_times(h: &Harness, from: IpAddr, token: &str, n: usize) -> Vec<Duration> {
    let host = h.addr().to_string();
    let mut took = Vec::new();
    for _ in 0..n {
        let start = Instant::now();
        let (status, answer) =
            get_from(from, h.addr(), "/v1/credentials", &host, Some(token)).await;
        took.push(start.elapsed());
        assert_eq!(status, 200, "{answer}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    took.sort();
    took
}

fn p90(sorted: &[Duration]) -> Duration {
    sorted[sorted.len() * 9 / 10]
}

/// Issue 31: one pod flooding the agent with connections (1,100 open, reopened as they close)
/// holds at most `--max-connections-per-address` of them (the agent closes the rest: nothing
/// else would within the test); another pod's cached answer stays under 50 ms, or ten times its
/// time without the flood on a loaded machine (without the cap it waits for a slot: 150 ms and
/// more on an idle machine). The two pods are two loopback addresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holding_its_connection_cap_cannot_delay_another_address() {
    const FLOOD: usize = 1_100;
    const PER_ADDRESS: usize = 64;
    const BOUND: Duration = Duration::from_millis(50);
    let sts = RecordingSts::issuing(Duration::from_secs(3600)).await;
    let h = Harness::start(&sts.endpoint, |s| {
        s.max_connections_per_address = PER_ADDRESS;
        // Only the cap closes the flooder's silent connections while the test runs, not the
        // request-head deadline.
        s.conn_limits.header_read = 6 * WAIT;
    })
    .await;
    let (neighbour, flooder): (IpAddr, IpAddr) =
        ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
    let token = h.pod_token("team-a", "carts", "carts-1");
    // The first answer comes from STS and is cached; then the same run's baseline, without
    // the flood.
    answer_times(&h, neighbour, &token, 1).await;
    let alone = answer_times(&h, neighbour, &token, 30).await;

    // The flood: FLOOD connections that send nothing, the oldest replaced by a new one.
    let stop = tokio_util::sync::CancellationToken::new();
    let addr = h.addr();
    let connected = Arc::new(AtomicUsize::new(0));
    let flood = tokio::spawn({
        let stop = stop.clone();
        let connected = connected.clone();
        async move {
            let mut held = std::collections::VecDeque::new();
            let mut opened = 0usize;
            while !stop.is_cancelled() {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.bind(std::net::SocketAddr::new(flooder, 0)).unwrap();
                if let Ok(tcp) = socket.connect(addr).await {
                    held.push_back(tcp);
                    opened += 1;
                    connected.store(opened, Ordering::Relaxed);
                }
                if held.len() > FLOOD {
                    held.pop_front();
                }
                if opened % 64 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            (held, opened)
        }
    });
    // The flood at full size before measuring.
    let deadline = Instant::now() + WAIT;
    while connected.load(Ordering::Relaxed) < FLOOD {
        assert!(
            Instant::now() < deadline,
            "the flood never reached {FLOOD} connections ({} opened)",
            connected.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let took = answer_times(&h, neighbour, &token, 30).await;
    stop.cancel();
    let (held, opened) = flood.await.unwrap();
    // What the flooder still holds open, once the agent has taken (and closed) what waited in
    // its listen backlog: the cap closed the rest (nothing else closes them within the test).
    let is_open = |tcp: &&tokio::net::TcpStream| {
        let read = tcp.try_read(&mut [0u8; 1]);
        matches!(read, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    };
    let still_open = || held.iter().filter(is_open).count();
    let deadline = Instant::now() + WAIT;
    let mut open = still_open();
    while open > PER_ADDRESS {
        assert!(
            Instant::now() < deadline,
            "the flooder still holds {open} connections: the per-address cap never closed them"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
        open = still_open();
    }
    println!(
        "cached answers beside a flood of {opened} connections from one address (it holds {open} open): median {:?}, p90 {:?}, max {:?}; without the flood p90 {:?}",
        took[took.len() / 2],
        p90(&took),
        took[took.len() - 1],
        p90(&alone)
    );
    assert!(open > 0, "the flooder held some connections");
    // And it was the cap that closed them: every connection past it is counted.
    let over_cap = h
        .metric("pod_identity_agent_connections_over_address_cap_total")
        .await;
    let closed = held.len() - open;
    assert!(
        over_cap >= closed as f64,
        "{over_cap} connections counted over the cap, {closed} of the flooder's closed"
    );
    // The 90th percentile keeps one scheduling hiccup from failing the test; the baseline of
    // the same run keeps a loaded machine's slowness from counting as the flood's.
    let bound = BOUND.max(10 * p90(&alone));
    assert!(
        p90(&took) < bound,
        "cached answers took {took:?} beside the flood, {alone:?} without it"
    );
}
