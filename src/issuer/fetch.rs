//! One HTTPS GET as STS makes it to read the issuer: rustls (aws-lc-rs), the system's roots or a
//! given CA, a deadline for the whole exchange, a body cap, no redirects.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use rustls_pki_types::pem::PemObject;

/// Issuer documents are small; STS itself refuses large ones.
pub const MAX_BODY: usize = 128 * 1024;
const DEADLINE: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("GET {url}: {why}")]
    Failed { url: String, why: String },
    #[error("CA file {path}: {why}")]
    Ca { path: String, why: String },
}

/// Trust roots: the CA certificates in `ca_pem` (tests, private CAs), else the system's.
pub fn roots(ca_pem: Option<(&[u8], &str)>) -> Result<rustls::RootCertStore, FetchError> {
    let mut store = rustls::RootCertStore::empty();
    match ca_pem {
        Some((pem, path)) => {
            let fail = |why: String| FetchError::Ca {
                path: path.to_string(),
                why,
            };
            for cert in rustls_pki_types::CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| fail(format!("not PEM certificates: {e}")))?;
                store.add(cert).map_err(|e| fail(e.to_string()))?;
            }
            if store.is_empty() {
                return Err(fail("holds no certificate".into()));
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = store.add(cert);
            }
        }
    }
    Ok(store)
}

/// GETs `url` (`https://host[:port]/path`), connecting to `connect_to` instead of the host's
/// address when given (the certificate is still checked for the host). The body on a 200.
pub async fn get(
    url: &str,
    roots: Arc<rustls::RootCertStore>,
    connect_to: Option<SocketAddr>,
) -> Result<Bytes, FetchError> {
    let fail = |why: String| FetchError::Failed {
        url: url.to_string(),
        why,
    };
    match tokio::time::timeout(DEADLINE, get_inner(url, roots, connect_to)).await {
        Ok(result) => result.map_err(fail),
        Err(_) => Err(fail(format!("no complete answer within {DEADLINE:?}"))),
    }
}

async fn get_inner(
    url: &str,
    roots: Arc<rustls::RootCertStore>,
    connect_to: Option<SocketAddr>,
) -> Result<Bytes, String> {
    let rest = url.strip_prefix("https://").ok_or("not an https:// URL")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || p.parse::<u16>().is_ok() => {
            (h, p.parse::<u16>().map_err(|_| "a malformed port")?)
        }
        _ => (authority, 443),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = match connect_to {
        Some(addr) => tokio::net::TcpStream::connect(addr).await,
        None => tokio::net::TcpStream::connect((host, port)).await,
    }
    .map_err(|e| format!("cannot connect: {e}"))?;
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(host.to_string()).map_err(|_| "not a valid host name")?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let driver = tokio::spawn(conn);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let status = response.status();
    if status != hyper::StatusCode::OK {
        driver.abort();
        return Err(format!(
            "answered {status}, not 200 (STS needs the document at exactly this URL, readable \
             without credentials)"
        ));
    }
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|_| format!("the body is larger than {MAX_BODY} bytes or broke off"))?
        .to_bytes();
    driver.abort();
    Ok(body)
}
