//! TLS for the admission endpoint: PEM loading, a swappable certificate, and reloads.
//!
//! New handshakes read the current certificate from an [`ArcSwap`]; a reload swaps it in
//! place, so connections already open keep the session they negotiated (docs/contract.md §4).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::sync::atomic::AtomicI64;

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::reload::{LastRefused, ReloadOutcome, Reloadable};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: crate::files::ReadError,
    },
    #[error("{path} holds no PEM certificate; expected `-----BEGIN CERTIFICATE-----` blocks")]
    NoCertificate { path: PathBuf },
    #[error("{path} is not a readable PEM certificate chain: {message}")]
    BadCertificate { path: PathBuf, message: String },
    #[error("{path} holds no usable private key (PKCS#8, PKCS#1 or SEC1 PEM expected): {message}")]
    BadKey { path: PathBuf, message: String },
    #[error("the key in {key} does not belong to the certificate in {cert}: {message}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        message: String,
    },
    #[error("cannot generate a certificate: {0}")]
    Generate(String),
}

/// The one crypto provider of the process (aws-lc-rs, as the AWS SDK uses).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Installs aws-lc-rs as the process-wide default provider; later calls are no-ops.
pub fn install_default_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Builds a certified key from PEM bytes. `cert_path`/`key_path` only name files in errors.
pub fn certified_key_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadCertificate {
            path: cert_path.to_owned(),
            message: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_owned(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::BadKey {
        path: key_path.to_owned(),
        message: e.to_string(),
    })?;
    let signing_key =
        provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| TlsError::BadKey {
                path: key_path.to_owned(),
                message: e.to_string(),
            })?;
    let ck = CertifiedKey::new(chain, signing_key);
    match ck.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(ck),
        Err(e) => Err(TlsError::Mismatch {
            cert: cert_path.to_owned(),
            key: key_path.to_owned(),
            message: e.to_string(),
        }),
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    read_pem(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

/// Certificate chains and keys are a few KiB; the cap keeps `/dev/zero` or a FIFO given as one
/// from blocking start-up or filling memory.
const MAX_PEM_BYTES: u64 = 1 << 20;

fn read_pem(path: &Path) -> Result<Vec<u8>, crate::files::ReadError> {
    crate::files::read_capped(path, MAX_PEM_BYTES)
}

/// Loads a certificate chain and key from PEM files.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    certified_key_from_pem(
        &read("certificate", cert)?,
        &read("private key", key)?,
        cert,
        key,
    )
}

/// When the leaf certificate expires, as Unix seconds (`None` when it cannot be parsed, which
/// rustls would already have refused to load).
pub fn not_after(key: &CertifiedKey) -> Option<i64> {
    let leaf = key.cert.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// Serves whatever certificate was stored last (stackable's pattern).
#[derive(Debug)]
pub struct CertResolver {
    current: ArcSwap<CertifiedKey>,
}

impl CertResolver {
    pub fn new(initial: CertifiedKey) -> Arc<Self> {
        Arc::new(Self {
            current: ArcSwap::from_pointee(initial),
        })
    }

    pub fn store(&self, key: CertifiedKey) {
        self.current.store(Arc::new(key));
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// TLS 1.2 and 1.3, ALPN `h2` then `http/1.1` (docs/contract.md §4).
pub fn server_config(resolver: Arc<CertResolver>) -> Arc<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("aws-lc-rs supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Called with each newly loaded certificate (metrics).
pub type ReloadHook = Box<dyn Fn(&CertifiedKey) + Send + Sync>;

/// Re-reads the certificate and key when their bytes change.
///
/// Polling the content (not inotify) follows the `..data` symlink swap a Secret volume does and
/// works on every filesystem. A pair that does not load is logged and the old one kept.
pub struct CertReloader {
    cert: PathBuf,
    key: PathBuf,
    resolver: Arc<CertResolver>,
    last: (Vec<u8>, Vec<u8>),
    /// The pair (or read error) last refused: reported and counted once.
    refused: LastRefused,
    /// Called after every successful swap (metrics hook).
    on_reload: Option<ReloadHook>,
}

impl CertReloader {
    pub fn new(cert: PathBuf, key: PathBuf, resolver: Arc<CertResolver>) -> Self {
        let last = (
            read_pem(&cert).unwrap_or_default(),
            read_pem(&key).unwrap_or_default(),
        );
        Self {
            cert,
            key,
            resolver,
            last,
            refused: LastRefused::default(),
            on_reload: None,
        }
    }

    pub fn on_reload(mut self, f: impl Fn(&CertifiedKey) + Send + Sync + 'static) -> Self {
        self.on_reload = Some(Box::new(f));
        self
    }

    /// One check: reload when either file's bytes changed.
    pub fn check(&mut self) -> ReloadOutcome {
        let (cert, key) = match (read_pem(&self.cert), read_pem(&self.key)) {
            (Ok(c), Ok(k)) => (c, k),
            // Mid-swap a file may be missing for a moment; the next check sees the new pair.
            (Err(e), _) | (_, Err(e)) => {
                let reason = e.to_string();
                return self.refused.unreadable(reason);
            }
        };
        if (cert.as_slice(), key.as_slice()) == (self.last.0.as_slice(), self.last.1.as_slice()) {
            self.refused.forget();
            return ReloadOutcome::Unchanged;
        }
        let pair = [cert.as_slice(), b"\0", key.as_slice()].concat();
        if self.refused.is_last(&pair) {
            return ReloadOutcome::Unchanged;
        }
        match certified_key_from_pem(&cert, &key, &self.cert, &self.key) {
            Ok(ck) => {
                if let Some(f) = &self.on_reload {
                    f(&ck);
                }
                self.resolver.store(ck);
                self.last = (cert, key);
                self.refused.forget();
                ReloadOutcome::Reloaded
            }
            // `last` stays, so a half-written pair is looked at again once either file changes.
            Err(e) => self.refused.refuse(&pair, e.to_string()),
        }
    }
}

impl Reloadable for CertReloader {
    fn what(&self) -> String {
        format!("serving certificate {}", self.cert.display())
    }
    fn check(&mut self) -> ReloadOutcome {
        CertReloader::check(self)
    }
}

/// The serving certificate's reloads and expiry.
#[derive(Clone, Debug, Default)]
pub struct CertMetrics {
    reloads: Counter,
    expiry: Gauge<i64, AtomicI64>,
}

impl CertMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "certificate_reloads",
            "Serving certificate reloads",
            metrics.reloads.clone(),
        );
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "Unix time at which the serving certificate expires",
            metrics.expiry.clone(),
        );
        metrics
    }

    /// The certificate loaded at start-up.
    pub fn loaded(&self, key: &CertifiedKey) {
        if let Some(expiry) = not_after(key) {
            self.expiry.set(expiry);
        }
    }

    /// A certificate swapped in while running.
    pub fn reloaded(&self, key: &CertifiedKey) {
        self.reloads.inc();
        self.loaded(key);
    }
}

#[cfg(test)]
mod expiry_tests {
    use super::*;

    #[test]
    fn expiry_of_a_generated_certificate_is_read_from_the_leaf() {
        install_default_provider();
        let generated = crate::certs::generate(&["localhost".to_string()]).unwrap();
        let ck = certified_key_from_pem(
            generated.cert_pem.as_bytes(),
            generated.key_pem.as_bytes(),
            Path::new("c"),
            Path::new("k"),
        )
        .unwrap();
        let now = crate::telemetry::metrics::unix_now();
        let expiry = not_after(&ck).expect("a generated certificate parses");
        // `certs::generate` issues serving certificates for one year.
        let year = 365 * 86_400;
        assert!(
            (now + year - 86_400..=now + year + 86_400).contains(&expiry),
            "expiry {expiry} should be about a year after {now}"
        );
    }
}
