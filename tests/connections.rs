//! Connection deadlines and caps (issue 21), over real TLS on loopback with small timeouts: a
//! client that stalls any step of a connection is cut off within its bound and counted, a flood
//! of stalled clients delays a legitimate review by a bounded time only, and `/readyz` says when
//! the HTTPS listener cannot accept. Which limit ended a connection is read from
//! `connection_limits_reached_total` (and the others are seen not to have fired); elapsed times
//! are only lower bounds and generous sanity bounds.

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use pod_identity_webhook::startup::Running;
use support::{
    ControlledSource, TlsClient, WAIT, Webhook, WebhookBuilder, admin_get, carts_association,
    fixture, limit_reached, limits_reached, tls_stream, wait_readyz,
};

const HEADER_READ: Duration = Duration::from_millis(300);
const IDLE: Duration = Duration::from_millis(1500);
const HANDSHAKE: Duration = Duration::from_millis(300);
const BODY_READ: Duration = Duration::from_millis(300);
const BODY_TOTAL: Duration = Duration::from_millis(900);
const UNREADY_AFTER: Duration = Duration::from_millis(200);
/// Slack for a loaded CI machine: a close may come this much later than its deadline (a sanity
/// bound; which deadline fired is read from the counters).
const SLACK: Duration = Duration::from_secs(3);
/// A deadline no test reaches: for a test where only the test itself may end a request.
const NEVER: Duration = Duration::from_secs(3600);

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
/// took (bounded by [`WAIT`]).
async fn closed_after(stream: &mut (impl AsyncRead + Unpin)) -> Duration {
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
    tokio::time::timeout(WAIT, read_all)
        .await
        .unwrap_or_else(|_| panic!("the server kept the connection open for {WAIT:?}"));
    start.elapsed()
}

/// Reads what the server sends until it closes (bounded by [`WAIT`]): the text (answers
/// written before the close).
async fn everything(stream: &mut (impl AsyncRead + Unpin)) -> String {
    let mut data = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut data))
        .await
        .unwrap_or_else(|_| panic!("the server kept the connection open for {WAIT:?}"));
    String::from_utf8_lossy(&data).into_owned()
}

/// Asserts which limits ended or refused something on `port`: those of `fired`, that often;
/// no other.
async fn reached(running: &Running, port: &str, fired: &[(&str, f64)]) {
    limits_reached(running.admin_addr, port, fired).await
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

/// A head with `Expect: 100-continue`: the server answers `100 Continue` when it starts reading
/// the body, which is after it has taken the body's share of the memory budget.
fn head_expecting_continue(content_length: usize) -> Vec<u8> {
    format!(
        "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {content_length}\r\nExpect: 100-continue\r\n\r\n"
    )
    .into_bytes()
}

/// Waits for the server's `100 Continue`: the body's budget is taken.
async fn body_asked_for(stream: &mut (impl AsyncRead + Unpin)) {
    const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
    let mut got = vec![0u8; CONTINUE.len()];
    tokio::time::timeout(WAIT, stream.read_exact(&mut got))
        .await
        .expect("the server never asked for the body")
        .expect("the connection stays open");
    assert_eq!(got, CONTINUE, "{}", String::from_utf8_lossy(&got));
}

/// The first bytes the server answers on `stream` (bounded by [`WAIT`]).
async fn first_answer(stream: &mut (impl AsyncRead + Unpin)) -> String {
    let mut answer = vec![0u8; 64];
    let n = tokio::time::timeout(WAIT, stream.read(&mut answer))
        .await
        .expect("answered")
        .unwrap();
    String::from_utf8_lossy(&answer[..n]).into_owned()
}

/// Reviews of the `pod-create-carts` fixture padded to `size` bytes, `at_once` of them on
/// connections of their own, until every one is answered 200 (bounded by [`WAIT`]): the body
/// budget has room for all of them together again.
async fn reviews_fit_again(running: &Running, size: usize, at_once: usize) {
    let (path, body) = fixture("pod-create-carts.mutate.json");
    let mut padded = body.clone();
    padded.resize(size, b' ');
    let deadline = Instant::now() + WAIT;
    loop {
        let mut reviews = Vec::new();
        for _ in 0..at_once {
            let mut client = TlsClient::to(running, false).await;
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
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the budget never came back: {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_closed_within_the_handshake_timeout() {
    let running = webhook().start().await;
    // TCP connected, no ClientHello.
    let mut tcp = TcpStream::connect(running.https_addr).await.unwrap();
    let after = closed_after(&mut tcp).await;
    reached(&running, "https", &[("handshake_timeout", 1.0)]).await;
    assert!(after >= HANDSHAKE - Duration::from_millis(50), "{after:?}");
    assert!(after < HANDSHAKE + SLACK, "{after:?}");
}

#[tokio::test]
async fn an_http2_connection_that_sends_nothing_is_closed_within_the_header_read_timeout() {
    let running = webhook().start().await;
    let mut stream = raw(&running, true).await;
    let after = closed_after(&mut stream).await;
    // The first-request bound, not the idle one.
    reached(&running, "https", &[("http2_first_request_timeout", 1.0)]).await;
    assert!(
        after >= HEADER_READ - Duration::from_millis(50),
        "{after:?}"
    );
    // GOAWAY at the deadline, then at most another header read timeout to close.
    assert!(after < HEADER_READ * 2 + SLACK, "{after:?}");
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
    let idle_since = Instant::now();
    while !client.is_closed() {
        assert!(
            idle_since.elapsed() < WAIT,
            "the idle HTTP/2 connection was never closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = idle_since.elapsed();
    assert!(
        client.review(&path, body).await.is_err(),
        "the closed connection serves no more"
    );
    reached(&running, "https", &[("http2_idle_timeout", 1.0)]).await;
    assert!(after >= IDLE - Duration::from_millis(50), "{after:?}");
    assert!(after < IDLE + HEADER_READ + SLACK, "{after:?}");
    review_ok(&running, true).await;
}

#[tokio::test]
async fn a_body_that_stops_arriving_is_cut_off_within_the_body_read_timeout() {
    let running = webhook().start().await;
    let mut stream = raw(&running, false).await;
    // A head and one body byte, then nothing.
    stream.write_all(&head(1000)).await.unwrap();
    cut_off_by_the_body_read_timeout(&running, &mut stream, BODY_READ).await;
}

/// Sends one body byte on `stream`, then nothing: the answer is a 400 after the per-read bound
/// `read`, which alone fired (not the whole-body one, nor the head's: the head was complete),
/// and the webhook still answers reviews.
async fn cut_off_by_the_body_read_timeout(
    running: &Running,
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    read: Duration,
) {
    stream.write_all(b"{").await.unwrap();
    let start = Instant::now();
    let answer = everything(stream).await;
    let after = start.elapsed();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    reached(running, "https", &[("body_read_timeout", 1.0)]).await;
    assert!(after >= read - Duration::from_millis(50), "{after:?}");
    assert!(after < read + SLACK, "{after:?}");
    review_ok(running, false).await;
}

/// After `Expect: 100-continue` the body is still the request's: a body that stalls after the
/// server's `100 Continue` is cut off by the body's deadline with a 400, never taken for the
/// head of a next request and closed by the (here shorter) head deadline without an answer.
#[tokio::test]
async fn a_body_that_stops_after_100_continue_is_cut_off_by_the_body_read_timeout() {
    const READ: Duration = Duration::from_secs(1);
    let running = webhook()
        .settings(|s| {
            s.server.connections.body_read_timeout = READ;
            s.server.connections.body_timeout = 2 * READ;
        })
        .start()
        .await;
    assert!(HEADER_READ < READ);
    let mut stream = raw(&running, false).await;
    stream
        .write_all(&head_expecting_continue(1000))
        .await
        .unwrap();
    body_asked_for(&mut stream).await;
    cut_off_by_the_body_read_timeout(&running, &mut stream, READ).await;
}

#[tokio::test]
async fn a_body_that_trickles_is_cut_off_at_the_body_timeout() {
    // A byte every 50 ms, a twentieth of the per-read bound: never stalled for it, however a
    // loaded machine stretches the pauses, and never complete.
    const EVERY: Duration = Duration::from_millis(50);
    const READ: Duration = Duration::from_secs(1);
    const TOTAL: Duration = Duration::from_secs(2);
    let running = webhook()
        .settings(|s| {
            s.server.connections.body_read_timeout = READ;
            s.server.connections.body_timeout = TOTAL;
        })
        .start()
        .await;
    let stream = raw(&running, false).await;
    let (mut reader, mut writer) = tokio::io::split(stream);
    writer.write_all(&head(1000)).await.unwrap();
    // The reader sees the server's answer and its close; the writer stops when the reader is
    // done.
    let start = Instant::now();
    let (done_tx, mut done) = tokio::sync::oneshot::channel::<()>();
    let trickle = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = &mut done => return,
                _ = tokio::time::sleep(EVERY) => {}
            }
            if writer.write_all(b" ").await.is_err() {
                return;
            }
        }
    });
    let answer = everything(&mut reader).await;
    let after = start.elapsed();
    drop(done_tx);
    trickle.await.unwrap();

    // The whole-body bound fired, not the per-read one.
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    reached(&running, "https", &[("body_timeout", 1.0)]).await;
    assert!(
        after >= TOTAL - Duration::from_millis(50),
        "closed after {after:?}, before the body timeout"
    );
    assert!(after < TOTAL + SLACK, "closed after {after:?}");
    review_ok(&running, false).await;
}

#[tokio::test]
async fn bodies_beyond_the_memory_budget_are_refused_at_once() {
    const BODY: usize = 48 * 1024;
    let running = webhook()
        .settings(|s| {
            s.server.max_body_bytes = 64 * 1024;
            s.server.connections.body_memory_bytes = 64 * 1024;
            // No deadline ever gives the first body's budget back: only the test does.
            s.server.connections.body_read_timeout = NEVER;
            s.server.connections.body_timeout = NEVER;
        })
        .start()
        .await;
    // The first request's body is still to come: it holds 48 KiB of the 64 KiB budget.
    let mut first = raw(&running, false).await;
    first
        .write_all(&head_expecting_continue(BODY))
        .await
        .unwrap();
    body_asked_for(&mut first).await;

    // Refused, not held until the first lets go (it never does by itself here).
    let mut second = raw(&running, false).await;
    second.write_all(&head(BODY)).await.unwrap();
    let answer = first_answer(&mut second).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    reached(&running, "https", &[("body_memory", 1.0)]).await;

    // Once the first body is given up on, its budget is free again: a body of its size fits.
    drop(first);
    reviews_fit_again(&running, BODY, 1).await;
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

    // A legitimate review waits for a silent one's deadline to free a slot, no more: the wait
    // is that timer's; the slack covers the review's own work on a loaded machine.
    let start = Instant::now();
    review_ok(&running, false).await;
    let waited = start.elapsed();
    assert!(
        limit_reached(running.admin_addr, "https", "http2_first_request_timeout").await >= 1.0,
        "the review got in before any silent connection was cut off"
    );
    assert!(waited < READ + SLACK, "waited {waited:?}");
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
    for request in requests {
        assert_eq!(request.await.unwrap().unwrap(), 200);
    }
    assert_eq!(source.started.load(Ordering::Acquire), 1 + 4);
    // Each decision takes 800 ms: the four sent at once were decided two at a time.
    assert_eq!(
        source.most_at_once.load(Ordering::Acquire),
        2,
        "decisions in progress at once on one connection"
    );
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
    let (status, _) = tokio::time::timeout(WAIT, admin_get(running.admin_addr, "/livez"))
        .await
        .expect("the probe is answered");
    assert_eq!(status, 200);
    println!(
        "probe answered in {:?} beside 2 stalled clients at a cap of 2",
        start.elapsed()
    );
    let mut second = stalled.pop().unwrap();
    let mut first = stalled.pop().unwrap();
    closed_after(&mut first).await;
    // The other one is cut off at its head deadline.
    let after = closed_after(&mut second).await;
    assert!(after < HEADER_READ + SLACK, "{after:?}");
    // One head deadline fired, the second's: the first was closed to make room for the probe,
    // not by its deadline (had the probe waited for one, both would have fired).
    reached(&running, "admin", &[("header_read_timeout", 1.0)]).await;
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
    // A legitimate review waits for a stalled body's deadline to free a slot, no more: the wait
    // is that timer's; the slack covers the review's own work on a loaded machine.
    let start = Instant::now();
    review_ok(&running, false).await;
    let waited = start.elapsed();
    assert!(
        limit_reached(running.admin_addr, "https", "body_read_timeout").await >= 1.0,
        "the review got in before any stalled body was cut off"
    );
    assert!(waited < READ + SLACK, "waited {waited:?}");
    for stream in &mut stalled {
        let answer = everything(stream).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    }
    // Each by the per-read bound (the heads were complete, the whole-body bound further).
    reached(&running, "https", &[("body_read_timeout", CAP as f64)]).await;
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
        stream
            .write_all(&head_expecting_continue(MAX_BODY))
            .await
            .unwrap();
        body_asked_for(&mut stream).await;
        stream.write_all(&vec![b' '; MAX_BODY - 1]).await.unwrap();
        stalled.push(stream);
    }
    // The budget is spent: one more is refused at once, not held.
    let mut more = raw(&running, false).await;
    more.write_all(&head(MAX_BODY)).await.unwrap();
    let answer = first_answer(&mut more).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    // Each stalled body is cut off at its read deadline.
    for stream in &mut stalled {
        let answer = everything(stream).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    }
    reached(
        &running,
        "https",
        &[("body_memory", 1.0), ("body_read_timeout", SLOTS as f64)],
    )
    .await;
    // All of it came back: as many bodies of the largest size as the budget holds, at once.
    reviews_fit_again(&running, MAX_BODY, SLOTS).await;
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
    tokio::time::timeout(WAIT, trickle)
        .await
        .expect("the admin port closed the connection");
    let after = start.elapsed();
    reached(&running, "admin", &[("header_read_timeout", 1.0)]).await;
    assert!(
        after >= HEADER_READ - Duration::from_millis(50),
        "{after:?}"
    );
    assert!(after < HEADER_READ + SLACK, "{after:?}");
}

/// Reads HTTP/2 frames (9-byte header, then the payload) until the server closes (bounded by
/// [`WAIT`]): the frame types seen, in order, and when the close came.
async fn frames_until_closed(stream: &mut (impl AsyncRead + Unpin)) -> (Vec<u8>, Duration) {
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
    tokio::time::timeout(WAIT, read)
        .await
        .unwrap_or_else(|_| panic!("the server kept the connection open for {WAIT:?}"));
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
    let (types, after) = frames_until_closed(&mut stream).await;
    assert!(types.contains(&PING), "no PING among the frames {types:?}");
    // None of the counted deadlines closed it (the PING timeout has no counter of its own).
    reached(&running, "https", &[]).await;
    assert!(
        after >= INTERVAL,
        "closed after {after:?}, before the first PING was due"
    );
    assert!(
        after < INTERVAL + TIMEOUT + SLACK,
        "closed after {after:?}: by another bound, not the PING timeout"
    );
    review_ok(&running, true).await;
}
