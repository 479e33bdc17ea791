//! Connection deadlines and caps (issue 21), over real TLS on loopback with small timeouts: a
//! client that stalls any step of a connection is cut off within its bound and counted, a flood
//! of stalled clients delays a legitimate review by a bounded time only, and `/readyz` says when
//! the HTTPS listener cannot accept.

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use pod_identity_webhook::startup::Running;
use support::{
    ControlledSource, TlsClient, Webhook, WebhookBuilder, admin_get, carts_association, fixture,
    sample, tls_stream, wait_readyz,
};

const HEADER_READ: Duration = Duration::from_millis(300);
const IDLE: Duration = Duration::from_millis(1500);
const HANDSHAKE: Duration = Duration::from_millis(300);
const BODY_READ: Duration = Duration::from_millis(300);
const BODY_TOTAL: Duration = Duration::from_millis(900);
const UNREADY_AFTER: Duration = Duration::from_millis(200);
/// Slack for a loaded CI machine: a close may come this much later than its deadline.
const SLACK: Duration = Duration::from_secs(3);

fn webhook() -> WebhookBuilder {
    let source = ControlledSource::new(true, Duration::ZERO, Some(carts_association()));
    webhook_with(source)
}

fn webhook_with(source: Arc<ControlledSource>) -> WebhookBuilder {
    WebhookBuilder::new().source(source).settings(|s| {
        s.server.header_read_timeout = HEADER_READ;
        s.server.idle_timeout = IDLE;
        let c = &mut s.server.connections;
        c.handshake_timeout = HANDSHAKE;
        c.body_read_timeout = BODY_READ;
        c.body_timeout = BODY_TOTAL;
        c.unready_after_blocked = UNREADY_AFTER;
    })
}

async fn raw(running: &Running, h2: bool) -> tokio_rustls::client::TlsStream<TcpStream> {
    let ca = running.self_signed_ca_pem.as_deref().unwrap();
    tls_stream(running.https_addr, ca, h2).await.unwrap()
}

/// Reads (and drops) whatever the server sends until it closes the connection; how long that
/// took. Panics if it stays open for `within` plus slack.
async fn closed_within(stream: &mut (impl AsyncRead + Unpin), within: Duration) -> Duration {
    let start = Instant::now();
    let mut chunk = [0u8; 4096];
    let read_all = async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within + SLACK, read_all)
        .await
        .unwrap_or_else(|_| panic!("the server kept the connection open past {within:?}"));
    start.elapsed()
}

/// Reads what the server sends until it closes: the text (answers written before the close).
async fn everything(stream: &mut (impl AsyncRead + Unpin), within: Duration) -> String {
    let mut data = Vec::new();
    let _ = tokio::time::timeout(within + SLACK, stream.read_to_end(&mut data))
        .await
        .unwrap_or_else(|_| panic!("the server kept the connection open past {within:?}"));
    String::from_utf8_lossy(&data).into_owned()
}

async fn limit_reached(running: &Running, port: &str, limit: &str) -> f64 {
    let (status, text) = admin_get(running.admin_addr, "/metrics").await;
    assert_eq!(status, 200);
    sample(
        &text,
        &format!(
            "pod_identity_webhook_connection_limits_reached_total{{port=\"{port}\",limit=\"{limit}\"}}"
        ),
    )
    .unwrap_or(0.0)
}

async fn review_ok(running: &Running, h2: bool) {
    let mut client = TlsClient::to(running, h2).await;
    let (path, body) = fixture("pod-create-carts.mutate.json");
    let answer = client.review(&path, body).await.expect("answered");
    assert_eq!(answer.status, 200);
    assert!(answer.json()["response"]["patch"].is_string());
}

fn head(content_length: usize) -> Vec<u8> {
    format!(
        "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {content_length}\r\n\r\n"
    )
    .into_bytes()
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_closed_within_the_handshake_timeout() {
    let running = webhook().start().await;
    // TCP connected, no ClientHello.
    let mut tcp = TcpStream::connect(running.https_addr).await.unwrap();
    let after = closed_within(&mut tcp, HANDSHAKE).await;
    assert!(after >= HANDSHAKE - Duration::from_millis(50), "{after:?}");
    assert_eq!(
        limit_reached(&running, "https", "handshake_timeout").await,
        1.0
    );
}

#[tokio::test]
async fn an_http2_connection_that_sends_nothing_is_closed_within_the_header_read_timeout() {
    let running = webhook().start().await;
    let mut stream = raw(&running, true).await;
    let after = closed_within(&mut stream, HEADER_READ).await;
    assert!(after < IDLE, "closed by the first-request bound: {after:?}");
    assert_eq!(
        limit_reached(&running, "https", "http2_first_request_timeout").await,
        1.0
    );
}

#[tokio::test]
async fn an_idle_http2_connection_gets_goaway_after_the_idle_timeout() {
    let running = webhook().start().await;
    let mut client = TlsClient::to(&running, true).await;
    let (path, body) = fixture("pod-create-carts.mutate.json");
    assert_eq!(
        client.review(&path, body.clone()).await.unwrap().status,
        200
    );
    tokio::time::sleep(IDLE + SLACK).await;
    assert!(
        client.review(&path, body).await.is_err(),
        "the idle connection was closed"
    );
    assert_eq!(
        limit_reached(&running, "https", "http2_idle_timeout").await,
        1.0
    );
    review_ok(&running, true).await;
}

#[tokio::test]
async fn a_body_that_stops_arriving_is_cut_off_within_the_body_read_timeout() {
    let running = webhook().start().await;
    let mut stream = raw(&running, false).await;
    // A head and one body byte, then nothing.
    stream.write_all(&head(1000)).await.unwrap();
    stream.write_all(b"{").await.unwrap();
    let start = Instant::now();
    let answer = everything(&mut stream, BODY_READ).await;
    assert!(start.elapsed() < BODY_TOTAL, "{:?}", start.elapsed());
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(
        limit_reached(&running, "https", "body_read_timeout").await,
        1.0
    );
    review_ok(&running, false).await;
}

#[tokio::test]
async fn a_body_that_trickles_is_cut_off_at_the_body_timeout() {
    let running = webhook().start().await;
    let stream = raw(&running, false).await;
    let (mut reader, mut writer) = tokio::io::split(stream);
    writer.write_all(&head(1000)).await.unwrap();
    // A byte every 100 ms: never stalled for the read timeout, never complete. The reader
    // sees the server's answer and its close; the writer stops when the reader is done.
    let start = Instant::now();
    let (done_tx, mut done) = tokio::sync::oneshot::channel::<()>();
    let trickle = tokio::spawn(async move {
        for _ in 0..200 {
            tokio::select! {
                _ = &mut done => return,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            if writer.write_all(b" ").await.is_err() {
                return;
            }
        }
    });
    let answer = everything(&mut reader, BODY_TOTAL).await;
    let after = start.elapsed();
    drop(done_tx);
    trickle.await.unwrap();

    // The whole-body bound fired, not the per-read one (which a byte every 100 ms never trips).
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        after >= BODY_TOTAL - Duration::from_millis(50),
        "closed after {after:?}, before the body timeout"
    );
    assert_eq!(limit_reached(&running, "https", "body_timeout").await, 1.0);
    assert_eq!(
        limit_reached(&running, "https", "body_read_timeout").await,
        0.0
    );
    review_ok(&running, false).await;
}

#[tokio::test]
async fn bodies_beyond_the_memory_budget_are_refused_at_once() {
    const BODY: usize = 48 * 1024;
    let running = webhook()
        .settings(|s| {
            s.server.max_body_bytes = 64 * 1024;
            s.server.connections.body_memory_bytes = 64 * 1024;
            // Long enough that the first body holds its budget while the second arrives.
            s.server.connections.body_read_timeout = Duration::from_secs(2);
        })
        .start()
        .await;
    // The first request's body is still arriving: it holds 48 KiB of the 64 KiB budget.
    let mut first = raw(&running, false).await;
    first.write_all(&head(BODY)).await.unwrap();
    first.write_all(b"{").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let mut second = raw(&running, false).await;
    let start = Instant::now();
    second.write_all(&head(BODY)).await.unwrap();
    let mut answer = vec![0u8; 64];
    let n = tokio::time::timeout(SLACK, second.read(&mut answer))
        .await
        .expect("answered at once")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(limit_reached(&running, "https", "body_memory").await, 1.0);

    // Once the first body is given up on, its budget is free again.
    drop(first);
    let deadline = Instant::now() + SLACK * 2;
    loop {
        let mut client = TlsClient::to(&running, false).await;
        let (path, body) = fixture("pod-create-carts.mutate.json");
        if client.review(&path, body).await.unwrap().status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the budget never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_flood_of_silent_connections_delays_a_review_by_a_bounded_time_and_turns_unready() {
    const CAP: usize = 8;
    // Long enough for the eight handshakes to finish and `/readyz` to be seen unready before the
    // first silent connection is cut off, even on a loaded machine (at 300 ms it was flaky).
    const READ: Duration = Duration::from_secs(2);
    let running: Webhook = webhook()
        .settings(|s| {
            s.server.max_connections = CAP;
            s.server.header_read_timeout = READ;
        })
        .start()
        .await;
    wait_readyz(running.admin_addr, 200).await;
    // Every slot taken by a connection that completed TLS with ALPN h2 and sends nothing.
    let mut silent = Vec::new();
    for _ in 0..CAP {
        silent.push(raw(&running, true).await);
    }
    // The listener cannot accept: unready once that lasts.
    let body = wait_readyz(running.admin_addr, 503).await;
    assert!(body.contains("HTTPS listener cannot accept"), "{body}");

    // A legitimate review waits at most for the silent ones' deadline.
    let start = Instant::now();
    review_ok(&running, false).await;
    assert!(
        start.elapsed() < READ + SLACK,
        "waited {:?}",
        start.elapsed()
    );
    wait_readyz(running.admin_addr, 200).await;
    drop(silent);
}

#[tokio::test]
async fn http2_requests_in_flight_on_one_connection_are_capped() {
    let source = ControlledSource::new(true, Duration::from_millis(800), Some(carts_association()));
    let running = webhook_with(source.clone())
        .settings(|s| s.server.connections.http2_max_concurrent_streams = 2)
        .start()
        .await;
    let ca = running.self_signed_ca_pem.clone().unwrap();
    let tls = tls_stream(running.https_addr, &ca, true).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let (path, body) = fixture("pod-create-carts.mutate.json");
    let request = || {
        hyper::Request::post(path.as_str())
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body.clone())))
            .unwrap()
    };
    // One request first, so the client has the server's settings (as a long-lived API server
    // connection has) and queues streams beyond the cap instead of having them refused.
    let mut first = sender.clone();
    first.ready().await.unwrap();
    assert_eq!(first.send_request(request()).await.unwrap().status(), 200);
    let mut requests = Vec::new();
    for _ in 0..4 {
        let mut sender = sender.clone();
        let req = request();
        requests.push(tokio::spawn(async move {
            sender.ready().await?;
            sender.send_request(req).await.map(|r| r.status().as_u16())
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        source.started.load(Ordering::Acquire),
        1 + 2,
        "two streams at once on one connection"
    );
    for request in requests {
        assert_eq!(request.await.unwrap().unwrap(), 200);
    }
    assert_eq!(source.started.load(Ordering::Acquire), 1 + 4);
}

#[tokio::test]
async fn the_admin_port_makes_room_for_a_probe_and_cuts_off_stalled_clients() {
    let running = webhook()
        .settings(|s| s.server.connections.admin_max_connections = 2)
        .start()
        .await;
    // Two clients that send half a request and stop take both admin slots.
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut tcp = TcpStream::connect(running.admin_addr).await.unwrap();
        tcp.write_all(b"GET /metrics HTTP/1.1\r\n").await.unwrap();
        stalled.push(tcp);
    }
    // A probe does not wait for them: the one stalled the longest is closed to let it in.
    let start = Instant::now();
    let (status, _) = tokio::time::timeout(HEADER_READ, admin_get(running.admin_addr, "/livez"))
        .await
        .expect("the probe is answered before the stalled clients' deadline");
    assert_eq!(status, 200);
    println!(
        "probe answered in {:?} beside 2 stalled clients at a cap of 2",
        start.elapsed()
    );
    let mut second = stalled.pop().unwrap();
    let mut first = stalled.pop().unwrap();
    closed_within(&mut first, Duration::ZERO).await;
    // The other one is cut off at its head deadline.
    closed_within(&mut second, HEADER_READ).await;
    assert_eq!(
        limit_reached(&running, "admin", "header_read_timeout").await,
        1.0
    );
}

#[tokio::test]
async fn a_flood_of_http1_requests_stopped_after_one_body_byte_delays_a_review_by_a_bounded_time() {
    const CAP: usize = 8;
    // Long enough for `/readyz` to be seen unready before the stalled bodies are cut off.
    const READ: Duration = Duration::from_secs(2);
    let running: Webhook = webhook()
        .settings(|s| {
            s.server.max_connections = CAP;
            s.server.connections.body_read_timeout = READ;
            s.server.connections.body_timeout = 2 * READ;
        })
        .start()
        .await;
    wait_readyz(running.admin_addr, 200).await;
    // Every slot taken by an HTTP/1.1 request that sent its head and one body byte.
    let mut stalled = Vec::new();
    for _ in 0..CAP {
        let mut stream = raw(&running, false).await;
        stream.write_all(&head(1000)).await.unwrap();
        stream.write_all(b"{").await.unwrap();
        stalled.push(stream);
    }
    let body = wait_readyz(running.admin_addr, 503).await;
    assert!(body.contains("HTTPS listener cannot accept"), "{body}");
    // A legitimate review waits at most for the stalled bodies' deadline.
    let start = Instant::now();
    review_ok(&running, false).await;
    assert!(
        start.elapsed() < READ + SLACK,
        "waited {:?}",
        start.elapsed()
    );
    for stream in &mut stalled {
        let answer = everything(stream, READ).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    }
    assert_eq!(
        limit_reached(&running, "https", "body_read_timeout").await,
        CAP as f64
    );
    wait_readyz(running.admin_addr, 200).await;
}

#[tokio::test]
async fn bodies_one_byte_short_of_the_limit_are_cut_off_and_their_memory_comes_back() {
    // The row of issue 21: connections that each send `maxBodyBytes - 1` bytes, then nothing.
    const MAX_BODY: usize = 64 * 1024;
    const SLOTS: usize = 4;
    // Long enough that the stalled bodies still hold the budget when one more arrives.
    const READ: Duration = Duration::from_secs(2);
    let running = webhook()
        .settings(|s| {
            s.server.max_body_bytes = MAX_BODY;
            s.server.connections.body_memory_bytes = SLOTS * MAX_BODY;
            s.server.connections.body_read_timeout = READ;
            s.server.connections.body_timeout = 2 * READ;
        })
        .start()
        .await;
    let mut stalled = Vec::new();
    for _ in 0..SLOTS {
        let mut stream = raw(&running, false).await;
        stream.write_all(&head(MAX_BODY)).await.unwrap();
        stream.write_all(&vec![b' '; MAX_BODY - 1]).await.unwrap();
        stalled.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The budget is spent: one more is refused at once, not held.
    let mut more = raw(&running, false).await;
    more.write_all(&head(MAX_BODY)).await.unwrap();
    let mut answer = vec![0u8; 64];
    let n = tokio::time::timeout(SLACK, more.read(&mut answer))
        .await
        .expect("answered at once")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    // Each stalled body is cut off at its read deadline.
    for stream in &mut stalled {
        let answer = everything(stream, READ).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    }
    assert_eq!(
        limit_reached(&running, "https", "body_read_timeout").await,
        SLOTS as f64
    );
    // All of it came back: as many bodies of the largest size as the budget holds, at once.
    let (path, body) = fixture("pod-create-carts.mutate.json");
    let mut padded = body.clone();
    padded.resize(MAX_BODY, b' ');
    let deadline = Instant::now() + SLACK * 2;
    loop {
        let mut reviews = Vec::new();
        for _ in 0..SLOTS {
            let mut client = TlsClient::to(&running, false).await;
            let (path, padded) = (path.clone(), padded.clone());
            reviews.push(tokio::spawn(async move {
                client.review(&path, padded).await.unwrap().status
            }));
        }
        let mut statuses = Vec::new();
        for review in reviews {
            statuses.push(review.await.unwrap());
        }
        if statuses.iter().all(|s| *s == 200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the budget never came back: {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_admin_client_that_sends_a_header_now_and_then_is_cut_off_at_the_header_deadline() {
    let running = webhook().start().await;
    let mut tcp = TcpStream::connect(running.admin_addr).await.unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\n").await.unwrap();
    // A header line well within any per-read bound, never the end of the head.
    let start = Instant::now();
    let trickle = async {
        for i in 0.. {
            if tcp
                .write_all(format!("x-{i}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(HEADER_READ + SLACK, trickle)
        .await
        .expect("the admin port closed the connection");
    assert!(start.elapsed() >= HEADER_READ - Duration::from_millis(50));
    assert_eq!(
        limit_reached(&running, "admin", "header_read_timeout").await,
        1.0
    );
}

/// Reads HTTP/2 frames (9-byte header, then the payload) until the server closes: the frame
/// types seen, in order, and when the close came.
async fn frames_until_closed(
    stream: &mut (impl AsyncRead + Unpin),
    within: Duration,
) -> (Vec<u8>, Duration) {
    let start = Instant::now();
    let mut types = Vec::new();
    let read = async {
        let mut header = [0u8; 9];
        while stream.read_exact(&mut header).await.is_ok() {
            let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
            let mut payload = vec![0u8; len];
            if stream.read_exact(&mut payload).await.is_err() {
                return;
            }
            types.push(header[3]);
        }
    };
    tokio::time::timeout(within + SLACK, read)
        .await
        .unwrap_or_else(|_| panic!("the server kept the connection open past {within:?}"));
    (types, start.elapsed())
}

/// HTTP/2 keep-alive PINGs (docs/operations.md): the server PINGs a quiet connection every
/// interval and closes a peer that does not answer within the keep-alive timeout, long before
/// any request or idle bound would.
#[tokio::test]
async fn a_peer_that_does_not_answer_http2_pings_is_closed_after_the_keep_alive_timeout() {
    const PING: u8 = 0x6;
    const INTERVAL: Duration = Duration::from_millis(300);
    const TIMEOUT: Duration = Duration::from_millis(300);
    let running = webhook()
        .settings(|s| {
            // The first-request and idle bounds far away: only the PINGs can close it.
            s.server.header_read_timeout = Duration::from_secs(20);
            s.server.idle_timeout = Duration::from_secs(30);
            s.server.connections.http2_keep_alive_interval = INTERVAL;
            s.server.connections.http2_keep_alive_timeout = TIMEOUT;
        })
        .start()
        .await;
    let mut stream = raw(&running, true).await;
    // The client preface and an empty SETTINGS frame; then this peer never answers again.
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let (types, after) = frames_until_closed(&mut stream, INTERVAL + TIMEOUT).await;
    assert!(types.contains(&PING), "no PING among the frames {types:?}");
    assert!(
        after >= INTERVAL,
        "closed after {after:?}, before the first PING was due"
    );
    assert!(
        after < Duration::from_secs(10),
        "closed after {after:?}: by another bound, not the PING timeout"
    );
    review_ok(&running, true).await;
}
