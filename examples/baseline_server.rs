//! The load benchmark's baselines (issues 6 and 17): the least an admission webhook can do.
//! rustls + axum over hyper-util (HTTP/1.1 and HTTP/2 by ALPN), parse the AdmissionReview,
//! answer allowed. No lookups, no patch, no metrics, no logs. Two ways to parse:
//! - default: borrowed reads, the object kept as a raw slice (the least work possible);
//! - `--value`: the review read into a `serde_json::Value`, how a plain webhook starts.
//!
//! `cargo run --release --example baseline_server -- 127.0.0.1:18443 tls.crt tls.key [--value]`

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AdmissionReview<'a> {
    #[serde(borrow)]
    api_version: &'a str,
    #[serde(borrow)]
    request: Request<'a>,
}

#[derive(Deserialize)]
struct Request<'a> {
    #[serde(borrow)]
    uid: std::borrow::Cow<'a, str>,
    /// Read (as a raw slice) so the whole document is scanned, as a real webhook must.
    #[serde(borrow)]
    #[allow(dead_code)]
    object: Option<&'a RawValue>,
}

fn allowed(api_version: &str, uid: &str) -> axum::response::Response {
    let answer = serde_json::json!({
        "apiVersion": api_version,
        "kind": "AdmissionReview",
        "response": {"uid": uid, "allowed": true},
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(&answer).unwrap(),
    )
        .into_response()
}

async fn review(body: Bytes) -> impl IntoResponse {
    match serde_json::from_slice::<AdmissionReview>(&body) {
        Ok(r) => allowed(r.api_version, &r.request.uid),
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

async fn review_value(body: Bytes) -> impl IntoResponse {
    let review = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(v) => v,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    match (
        review["apiVersion"].as_str(),
        review["request"]["uid"].as_str(),
    ) {
        (Some(api_version), Some(uid)) => allowed(api_version, uid),
        _ => (StatusCode::BAD_REQUEST, "not an AdmissionReview").into_response(),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (value, args) = match args.split_last() {
        Some((last, rest)) if last == "--value" => (true, rest),
        _ => (false, &args[..]),
    };
    let [listen, cert, key] = args else {
        return Err("usage: baseline_server LISTEN_ADDR CERT_PEM KEY_PEM [--value]".into());
    };
    let addr: std::net::SocketAddr = listen.parse()?;
    if !addr.ip().is_loopback() {
        return Err("the baseline listens on loopback only".into());
    }
    let certs = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let router = if value {
        Router::new()
            .route("/mutate", post(review_value))
            .route("/validate", post(review_value))
    } else {
        Router::new()
            .route("/mutate", post(review))
            .route("/validate", post(review))
    };

    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            eprintln!("baseline serving on {addr}");
            let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
            loop {
                let (tcp, _) = listener.accept().await?;
                let _ = tcp.set_nodelay(true);
                let (acceptor, builder) = (acceptor.clone(), builder.clone());
                let service = TowerToHyperService::new(router.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let _ = builder.serve_connection(TokioIo::new(tls), service).await;
                    }
                });
            }
        })
}
