//! A small load generator for the admission endpoint (issue 6): TLS with keep-alive, HTTP/1.1 or
//! HTTP/2, closed loop (as fast as N connections go) or open loop (a fixed total rate, latency
//! measured from the scheduled send time so a slow server cannot hide its queueing).
//!
//! Open loop, one correction: tokio's timer wakes up to a millisecond late, which on its own
//! would put ~1 ms into every percentile of any server. When the connection was idle at the
//! scheduled time (its previous answer had come back), latency counts from the actual send, and
//! the generator's lateness is reported apart (`lag_p99_us`); when the connection was still
//! busy, latency counts from the scheduled time, so the server's queueing stays in.
//!
//! Loopback targets only; the duration is bounded.
//!
//! ```text
//! cargo run --release --example loadgen -- --addr 127.0.0.1:18443 --ca ca.crt \
//!     --fixtures DIR [--h2] [--connections 64] [--seconds 10] [--rate 5000] [--label ours] \
//!     [--endpoint mutate|validate]
//! ```
//! `--endpoint validate` sends the `*.validate.json` captures (pods, workloads, ServiceAccounts)
//! instead of the `*.mutate.json` pods.
//! Prints one line: `label proto mode conns seconds requests errors rps p50_us p99_us p999_us max_us
//! lag_p99_us`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

const MAX_SECONDS: u64 = 120;

struct Args {
    addr: SocketAddr,
    ca: PathBuf,
    fixtures: PathBuf,
    h2: bool,
    connections: usize,
    seconds: u64,
    warmup: u64,
    rate: Option<u64>,
    label: String,
    endpoint: String,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut a = Args {
        addr: "127.0.0.1:8443".parse().unwrap(),
        ca: PathBuf::new(),
        fixtures: PathBuf::new(),
        h2: false,
        connections: 64,
        seconds: 10,
        warmup: 2,
        rate: None,
        label: "target".into(),
        endpoint: "mutate".into(),
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => a.addr = value()?.parse().map_err(|e| format!("--addr: {e}"))?,
            "--ca" => a.ca = value()?.into(),
            "--fixtures" => a.fixtures = value()?.into(),
            "--h2" => a.h2 = true,
            "--connections" => a.connections = value()?.parse().map_err(|e| format!("{e}"))?,
            "--seconds" => a.seconds = value()?.parse().map_err(|e| format!("{e}"))?,
            "--warmup" => a.warmup = value()?.parse().map_err(|e| format!("{e}"))?,
            "--rate" => a.rate = Some(value()?.parse().map_err(|e| format!("{e}"))?),
            "--label" => a.label = value()?,
            "--endpoint" => a.endpoint = value()?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if !["mutate", "validate"].contains(&a.endpoint.as_str()) {
        return Err("--endpoint must be mutate or validate".into());
    }
    if !a.addr.ip().is_loopback() {
        return Err("refusing a non-loopback target: this tool is for local benchmarks".into());
    }
    if a.seconds == 0 || a.seconds + a.warmup > MAX_SECONDS {
        return Err(format!("--seconds + --warmup must be 1..={MAX_SECONDS}"));
    }
    if a.connections == 0 || a.connections > 1024 {
        return Err("--connections must be 1..=1024".into());
    }
    Ok(a)
}

/// `(path, body)` of every `*.<endpoint>.json` capture: objects as the API server sent them.
fn load_fixtures(dir: &std::path::Path, endpoint: &str) -> Vec<(String, Bytes)> {
    let suffix = format!(".{endpoint}.json");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("fixtures directory") {
        let path = entry.unwrap().path();
        if !path.to_string_lossy().ends_with(&suffix) {
            continue;
        }
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        out.push((
            v["path"].as_str().unwrap().to_string(),
            Bytes::from(serde_json::to_vec(&v["review"]).unwrap()),
        ));
    }
    out.sort();
    assert!(!out.is_empty(), "no *{suffix} in {}", dir.display());
    out
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

async fn connect(
    addr: SocketAddr,
    tls: &tokio_rustls::TlsConnector,
    h2: bool,
) -> std::io::Result<Sender> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let stream = tls
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    let io = TokioIo::new(stream);
    Ok(if h2 {
        let (s, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        Sender::H2(s)
    } else {
        let (s, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        Sender::H1(s)
    })
}

/// One request; `true` when it got a 200 with an AdmissionReview answer.
async fn send(sender: &mut Sender, path: &str, body: Bytes) -> bool {
    let req = hyper::Request::post(path)
        .header("content-type", "application/json")
        .header("host", "localhost")
        .body(Full::new(body))
        .unwrap();
    let resp = match sender {
        Sender::H1(s) => match s.ready().await {
            Ok(()) => s.send_request(req).await,
            Err(e) => Err(e),
        },
        Sender::H2(s) => match s.ready().await {
            Ok(()) => s.send_request(req).await,
            Err(e) => Err(e),
        },
    };
    let Ok(resp) = resp else { return false };
    let ok = resp.status() == hyper::StatusCode::OK;
    match resp.into_body().collect().await {
        Ok(b) => ok && b.to_bytes().windows(8).any(|w| w == b"\"allowed"),
        Err(_) => false,
    }
}

struct Worker {
    hist: Histogram<u64>,
    /// How late the generator's own timer sent requests on idle connections (open loop).
    lag: Histogram<u64>,
    requests: u64,
    errors: u64,
}

#[allow(clippy::too_many_arguments)]
async fn worker(
    id: usize,
    addr: SocketAddr,
    tls: tokio_rustls::TlsConnector,
    h2: bool,
    fixtures: Arc<Vec<(String, Bytes)>>,
    measure_from: Instant,
    until: Instant,
    interval: Option<Duration>,
    offset: Duration,
) -> Worker {
    let mut w = Worker {
        hist: Histogram::new_with_bounds(1, 60_000_000, 3).unwrap(),
        lag: Histogram::new_with_bounds(1, 60_000_000, 3).unwrap(),
        requests: 0,
        errors: 0,
    };
    let mut sender = match connect(addr, &tls, h2).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("connection {id}: {e}");
            w.errors += 1;
            return w;
        }
    };
    // Open loop: the connections' schedules are spread over one interval.
    let mut next = interval.map(|_| Instant::now() + offset);
    let mut n = id;
    let mut previous_done = Instant::now();
    loop {
        let scheduled = match (next, interval) {
            (Some(at), Some(i)) => {
                tokio::time::sleep_until(at.into()).await;
                next = Some(at + i);
                at
            }
            _ => Instant::now(),
        };
        if scheduled >= until {
            break;
        }
        // See the module comment: the server owns the wait only if it still held the connection.
        let sent = Instant::now();
        let start = if previous_done > scheduled {
            scheduled
        } else {
            sent
        };
        let (path, body) = &fixtures[n % fixtures.len()];
        n += 1;
        let ok = send(&mut sender, path, body.clone()).await;
        let done = Instant::now();
        previous_done = done;
        if scheduled >= measure_from {
            w.requests += 1;
            if ok {
                let us = done.duration_since(start).as_micros() as u64;
                w.hist.saturating_record(us.max(1));
                if interval.is_some() && start == sent {
                    let late = sent.duration_since(scheduled).as_micros() as u64;
                    w.lag.saturating_record(late.max(1));
                }
            } else {
                w.errors += 1;
            }
        }
        if !ok {
            // A failed connection is replaced, as a client would.
            match connect(addr, &tls, h2).await {
                Ok(s) => sender = s,
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }
    w
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(2);
        }
    };
    let fixtures = Arc::new(load_fixtures(&args.fixtures, &args.endpoint));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&args.ca).expect("CA file") {
        roots.add(cert.expect("CA PEM")).expect("CA certificate");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![if args.h2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (hist, lag, requests, errors, seconds) = runtime.block_on(async {
        let start = Instant::now();
        let measure_from = start + Duration::from_secs(args.warmup);
        let until = measure_from + Duration::from_secs(args.seconds);
        let interval = args
            .rate
            .map(|r| Duration::from_secs_f64(args.connections as f64 / r.max(1) as f64));
        let tasks: Vec<_> = (0..args.connections)
            .map(|id| {
                tokio::spawn(worker(
                    id,
                    args.addr,
                    tls.clone(),
                    args.h2,
                    fixtures.clone(),
                    measure_from,
                    until,
                    interval,
                    interval.map_or(Duration::ZERO, |i| i * id as u32 / args.connections as u32),
                ))
            })
            .collect();
        let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        let mut lag = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        let (mut requests, mut errors) = (0, 0);
        for t in tasks {
            let w = t.await.unwrap();
            hist.add(&w.hist).unwrap();
            lag.add(&w.lag).unwrap();
            requests += w.requests;
            errors += w.errors;
        }
        (hist, lag, requests, errors, args.seconds as f64)
    });
    let mode = match args.rate {
        Some(r) => format!("rate={r}"),
        None => "closed".to_string(),
    };
    println!(
        "{} {} {} conns={} seconds={} requests={} errors={} rps={:.0} p50_us={} p99_us={} p999_us={} max_us={} lag_p99_us={}",
        args.label,
        if args.h2 { "h2" } else { "http/1.1" },
        mode,
        args.connections,
        seconds,
        requests,
        errors,
        // Connection failures count as errors without a request: never below zero.
        requests.saturating_sub(errors) as f64 / seconds,
        hist.value_at_quantile(0.50),
        hist.value_at_quantile(0.99),
        hist.value_at_quantile(0.999),
        hist.max(),
        lag.value_at_quantile(0.99),
    );
}
