//! A minimal HTTPS client for the policy tests: rustls over TCP, one HTTP/1.1 request per
//! connection (`Connection: close`), bounded in time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// One HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A client that trusts one CA and speaks HTTP/1.1 only.
pub struct TlsClient {
    connector: TlsConnector,
}

impl TlsClient {
    pub fn new(ca_pem: &str) -> Self {
        pod_identity_webhook::tls::install_default_provider();
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots
                .add(cert.expect("CA PEM parses"))
                .expect("CA is usable");
        }
        let mut config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self {
            connector: TlsConnector::from(Arc::new(config)),
        }
    }

    /// `POST path` with the given headers (Host, Content-Length and Connection are set here).
    pub async fn post(
        &self,
        addr: SocketAddr,
        path: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Response {
        tokio::time::timeout(
            Duration::from_secs(10),
            self.post_inner(addr, path, headers, body),
        )
        .await
        .expect("HTTPS request answered within 10s")
    }

    async fn post_inner(
        &self,
        addr: SocketAddr,
        path: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Response {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let name = ServerName::try_from("localhost").expect("static name");
        let mut tls = self
            .connector
            .connect(name, tcp)
            .await
            .expect("TLS handshake");
        let mut head = format!("POST {path} HTTP/1.1\r\nHost: localhost\r\n");
        for (k, v) in headers {
            let lower = k.to_ascii_lowercase();
            if ["host", "content-length", "connection"].contains(&lower.as_str()) {
                continue;
            }
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        ));
        tls.write_all(head.as_bytes()).await.expect("write head");
        tls.write_all(body).await.expect("write body");
        tls.flush().await.expect("flush");

        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(r) = parse(&buf) {
                return r;
            }
            let n = tls.read(&mut chunk).await.expect("read response");
            if n == 0 {
                return parse(&buf).expect("complete response before EOF");
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Parses a full response once the head and `Content-Length` bytes of body are in.
fn parse(buf: &[u8]) -> Option<Response> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).expect("response head is text");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .expect("status code");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map(|(_, v)| v.parse().expect("content-length"))
        .expect("the webhook sends Content-Length");
    let body = buf.get(end + 4..end + 4 + len)?.to_vec();
    Some(Response {
        status,
        headers,
        body,
    })
}
