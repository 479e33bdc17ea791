//! Keep-alive connections over real TLS (issue 6, lifecycle). The API server keeps idle webhook
//! connections for 90 s and does not retry a POST on a connection the server has just closed:
//! an idle HTTP/1.1 connection stays open well past the header read timeout, which bounds only a
//! request head from its first byte; an idle connection is closed after the idle timeout. Which
//! deadline closed a connection is read from `connection_limits_reached_total`, not guessed from
//! how long it took.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use pod_identity_webhook::startup::Running;
use support::{
    ControlledSource, TlsClient, WAIT, WebhookBuilder, admin_get, carts_association, fixture,
    limits_reached, sample, tls_stream, wait_sample,
};

const HEADER_READ: Duration = Duration::from_millis(300);
const IDLE: Duration = Duration::from_millis(1500);
/// An idle timeout no test reaches: for tests whose connections must stay open however long a
/// loaded machine stretches their pauses.
const NO_IDLE: Duration = Duration::from_secs(3600);
/// Slack for a loaded CI machine: a close may come this much later than its timeout (a sanity
/// bound; which timeout fired is read from the counters).
const SLACK: Duration = Duration::from_secs(3);

/// A webhook with short timeouts whose lookups `source` answers.
fn webhook(source: Arc<ControlledSource>) -> WebhookBuilder {
    WebhookBuilder::new().source(source).settings(|s| {
        s.server.header_read_timeout = HEADER_READ;
        s.server.idle_timeout = IDLE;
    })
}

fn carts_source() -> Arc<ControlledSource> {
    ControlledSource::new(true, Duration::ZERO, Some(carts_association()))
}

/// Asserts which connection limits closed how many HTTPS connections (none but `fired`).
async fn deadlines_reached(running: &Running, fired: &[(&str, f64)]) {
    limits_reached(running.admin_addr, "https", fired).await
}

async fn raw(running: &Running) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let ca = running.self_signed_ca_pem.as_deref().unwrap();
    tls_stream(running.https_addr, ca, false).await.unwrap()
}

fn request(body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// Reads one answer (head and `Content-Length` body); returns its status line.
async fn read_answer(stream: &mut (impl AsyncRead + Unpin)) -> String {
    let mut data = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before an answer");
        data.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(data[..head_end].to_vec()).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("content-length");
    while data.len() < head_end + length {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed in the middle of an answer");
        data.extend_from_slice(&chunk[..n]);
    }
    head.lines().next().unwrap().to_string()
}

/// Waits until the server closes the connection (end of stream or an error); how long it took.
async fn closed_after(stream: &mut (impl AsyncRead + Unpin)) -> Duration {
    let start = Instant::now();
    let mut chunk = [0u8; 1024];
    match tokio::time::timeout(WAIT, stream.read(&mut chunk)).await {
        Ok(Ok(0)) | Ok(Err(_)) => start.elapsed(),
        Ok(Ok(n)) => panic!("unexpected {n} bytes from the server"),
        Err(_) => panic!("the server kept the connection open for {WAIT:?}"),
    }
}

/// One review, `idle` without traffic, then a second review on the same connection; no
/// deadline closed anything.
async fn review_again_after(h2: bool, idle: Duration) {
    // Only the header read timeout is within reach, however long the pause really lasts.
    let running = webhook(carts_source())
        .settings(|s| s.server.idle_timeout = NO_IDLE)
        .start()
        .await;
    let mut client = TlsClient::to(&running, h2).await;
    let (path, body) = fixture("pod-create-carts.mutate.json");
    let first = client.review(&path, body.clone()).await.unwrap();
    assert_eq!(first.status, 200);
    // Time passing without traffic (a sleep lasts at least this long).
    tokio::time::sleep(idle).await;
    let again = client
        .review(&path, body)
        .await
        .expect("the same connection still serves");
    assert_eq!(again.status, 200);
    assert!(again.json()["response"]["patch"].is_string());
    deadlines_reached(&running, &[]).await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_outlives_the_header_read_timeout() {
    // Three header read timeouts of idleness, as between two pods of a quiet cluster.
    review_again_after(false, HEADER_READ * 3).await;
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let running = webhook(carts_source()).start().await;
    let mut stream = raw(&running).await;
    let (_, body) = fixture("pod-create-carts.mutate.json");
    stream.write_all(&request(&body)).await.unwrap();
    assert_eq!(read_answer(&mut stream).await, "HTTP/1.1 200 OK");
    let after = closed_after(&mut stream).await;
    deadlines_reached(&running, &[("idle_timeout", 1.0)]).await;
    assert!(
        after >= IDLE - Duration::from_millis(50),
        "closed after {after:?}"
    );
    assert!(after < IDLE + HEADER_READ + SLACK, "closed after {after:?}");
}

/// The server closes `stream` at the header read timeout, the `nth` connection it closed so.
async fn cut_off_by_the_head_timeout(
    running: &Running,
    stream: &mut (impl AsyncRead + Unpin),
    nth: f64,
) {
    let after = closed_after(stream).await;
    deadlines_reached(running, &[("header_read_timeout", nth)]).await;
    assert!(
        after >= HEADER_READ - Duration::from_millis(50),
        "closed after {after:?}"
    );
    assert!(after < HEADER_READ + SLACK, "closed after {after:?}");
}

#[tokio::test]
async fn a_request_head_that_does_not_arrive_in_time_is_cut_off() {
    // No idle timeout within reach: the pause below cannot run into it, however long it lasts.
    let running = webhook(carts_source())
        .settings(|s| s.server.idle_timeout = NO_IDLE)
        .start()
        .await;
    // Half a head, then nothing (a slow or hostile client).
    let mut stream = raw(&running).await;
    stream
        .write_all(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    cut_off_by_the_head_timeout(&running, &mut stream, 1.0).await;

    // After one answer, the next head's clock starts at its first byte: two head timeouts of
    // quiet, then half a head still gets a whole head timeout.
    let mut stream = raw(&running).await;
    let (_, body) = fixture("pod-create-carts.mutate.json");
    stream.write_all(&request(&body)).await.unwrap();
    assert_eq!(read_answer(&mut stream).await, "HTTP/1.1 200 OK");
    tokio::time::sleep(HEADER_READ * 2).await;
    stream
        .write_all(b"POST /mutate HTTP/1.1\r\n")
        .await
        .unwrap();
    cut_off_by_the_head_timeout(&running, &mut stream, 2.0).await;

    // A connection that never sends a request is closed by the same deadline.
    let mut stream = raw(&running).await;
    cut_off_by_the_head_timeout(&running, &mut stream, 3.0).await;
}

#[tokio::test]
async fn a_decision_slower_than_the_header_read_timeout_is_answered() {
    // Lookups take three header read timeouts: the head was complete, the time is the decision's.
    let source = ControlledSource::new(true, HEADER_READ * 3, Some(carts_association()));
    let running = webhook(source).start().await;
    let mut client = TlsClient::to(&running, false).await;
    let (path, body) = fixture("pod-create-carts.mutate.json");
    let answer = client.review(&path, body).await.unwrap();
    assert_eq!(answer.status, 200);
    assert!(answer.json()["response"]["patch"].is_string());
    deadlines_reached(&running, &[]).await;
}

#[tokio::test]
async fn an_idle_http2_connection_outlives_the_header_read_timeout() {
    // Its close at the idle timeout is `connections.rs`'s `an_idle_http2_connection_gets_goaway_after_the_idle_timeout`.
    review_again_after(true, HEADER_READ * 3).await;
}

async fn connection_metric(running: &Running, name: &str) -> f64 {
    let (status, text) = admin_get(running.admin_addr, "/metrics").await;
    assert_eq!(status, 200);
    let series = format!("pod_identity_webhook_{name}");
    sample(&text, &series).unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    // No idle timeout within reach: only the test's `drop` frees a slot, however long the wait
    // below lasts on a loaded machine.
    let running = webhook(carts_source())
        .settings(|s| {
            s.server.max_connections = 2;
            s.server.idle_timeout = NO_IDLE;
        })
        .start()
        .await;
    let (path, body) = fixture("pod-create-carts.mutate.json");
    let mut first = TlsClient::to(&running, false).await;
    let mut second = TlsClient::to(&running, true).await;
    for c in [&mut first, &mut second] {
        assert_eq!(c.review(&path, body.clone()).await.unwrap().status, 200);
    }
    assert_eq!(connection_metric(&running, "connections_open").await, 2.0);
    assert_eq!(connection_metric(&running, "connections_max").await, 2.0);
    // The listener stops accepting once the second connection takes the last slot.
    wait_sample(
        running.admin_addr,
        "pod_identity_webhook_connection_limit_reached_total",
        1.0,
    )
    .await;

    // The third waits in the listen backlog: connected, but its handshake is not answered, for
    // as long as it is left waiting (a head timeout here).
    let ca = running.self_signed_ca_pem.clone().unwrap();
    let addr = running.https_addr;
    let third = tokio::spawn(async move { tls_stream(addr, &ca, false).await });
    tokio::time::sleep(HEADER_READ).await;
    assert!(!third.is_finished(), "a connection beyond the cap waits");
    assert_eq!(connection_metric(&running, "connections_open").await, 2.0);
    assert_eq!(
        connection_metric(&running, "connection_limit_reached_total").await,
        1.0
    );
    // Those already open keep being served.
    assert_eq!(
        second.review(&path, body.clone()).await.unwrap().status,
        200
    );

    drop(first);
    let mut third = tokio::time::timeout(WAIT, third)
        .await
        .expect("a closed connection lets the waiting one in")
        .unwrap()
        .expect("handshake");
    third.write_all(&request(&body)).await.unwrap();
    assert_eq!(read_answer(&mut third).await, "HTTP/1.1 200 OK");
    assert_eq!(connection_metric(&running, "connections_open").await, 2.0);
    // No deadline closed any of them: the first left because the test closed it.
    deadlines_reached(&running, &[]).await;
}
