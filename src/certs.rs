//! Certificate generation for the `certs` subcommand and `serve --self-signed` (rcgen).

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::files;
use crate::server::tls::TlsError;

/// A CA and a serving certificate signed by it, all PEM.
#[derive(Debug, Clone)]
pub struct GeneratedCerts {
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl GeneratedCerts {
    /// The `caBundle` value for a webhook configuration.
    pub fn ca_bundle(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.ca_cert_pem.as_bytes())
    }
}

/// The DNS names the API server uses to reach `service` in `namespace`.
pub fn service_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

fn gen_err(e: rcgen::Error) -> TlsError {
    TlsError::Generate(e.to_string())
}

/// Generates a CA (10 years) and a serving certificate (1 year) for `names` (DNS names or IPs).
pub fn generate(names: &[String]) -> Result<GeneratedCerts, TlsError> {
    if names.is_empty() {
        return Err(TlsError::Generate(
            "no subject names given for the serving certificate".into(),
        ));
    }
    let ca_key = KeyPair::generate().map_err(gen_err)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "pod-identity-webhook CA");
    ca_params.distinguished_name = dn;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = time_now();
    ca_params.not_before = now - rcgen_duration(3600);
    ca_params.not_after = now + rcgen_duration(10 * 365 * 86400);
    let ca_cert = ca_params.self_signed(&ca_key).map_err(gen_err)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate().map_err(gen_err)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
    for name in names {
        let san = match name.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) if is_dns_name(name) => {
                SanType::DnsName(name.clone().try_into().map_err(|e: rcgen::Error| {
                    TlsError::Generate(format!("`{name}` is not a DNS name or IP address: {e}"))
                })?)
            }
            Err(_) => {
                return Err(TlsError::Generate(format!(
                    "`{name}` is not a DNS name or IP address"
                )));
            }
        };
        params.subject_alt_names.push(san);
    }
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, names[0].clone());
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = now - rcgen_duration(3600);
    params.not_after = now + rcgen_duration(365 * 86400);
    let cert = params.signed_by(&key, &issuer).map_err(gen_err)?;

    Ok(GeneratedCerts {
        ca_cert_pem: ca_cert.pem(),
        ca_key_pem: issuer.key().serialize_pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Letters, digits, `-` and dots, optionally a leading `*.` wildcard.
fn is_dns_name(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn rcgen_duration(secs: i64) -> time::Duration {
    time::Duration::seconds(secs)
}

/// Paths of the files [`write()`] creates.
#[derive(Debug, Clone)]
pub struct WrittenCerts {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Writes `ca.crt`, `ca.key`, `tls.crt`, `tls.key` into `dir`: keys 0600, certificates 0644,
/// whatever the umask, each through a new file renamed into place (a key that existed with a
/// wider mode is replaced, a symlink in its place is replaced and its target left alone). A
/// directory created here is 0700; an existing one is left as it is.
pub fn write(dir: &Path, certs: &GeneratedCerts) -> std::io::Result<WrittenCerts> {
    files::create_private_dir(dir)?;
    let out = WrittenCerts {
        ca_cert: dir.join("ca.crt"),
        ca_key: dir.join("ca.key"),
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
    };
    // Keys first: a reader that sees the new certificate finds its key already there.
    files::write_replacing(&out.ca_key, certs.ca_key_pem.as_bytes(), 0o600)?;
    files::write_replacing(&out.ca_cert, certs.ca_cert_pem.as_bytes(), 0o644)?;
    files::write_replacing(&out.key, certs.key_pem.as_bytes(), 0o600)?;
    files::write_replacing(&out.cert, certs.cert_pem.as_bytes(), 0o644)?;
    Ok(out)
}

/// Where a `--self-signed` server leaves its CA for clients: a directory only this process
/// uses, removed with the value.
#[derive(Debug)]
pub struct SelfSignedCa {
    dir: tempfile::TempDir,
    file: PathBuf,
}

impl SelfSignedCa {
    /// Writes `ca_pem` as `ca.crt` in a new private directory (0700, random name) under `base`:
    /// a path fixed in advance could be a symlink someone planted, or another instance's.
    pub fn write_in(base: &Path, ca_pem: &str) -> std::io::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("pod-identity-webhook-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir_in(base)?;
        let file = dir.path().join("ca.crt");
        files::write_replacing(&file, ca_pem.as_bytes(), 0o644)?;
        Ok(Self { dir, file })
    }

    /// The CA file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Its private directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_pair_loads_into_rustls() {
        let names = service_names("pod-identity-webhook", "pod-identity-webhook");
        let mut all = names.clone();
        all.push("127.0.0.1".into());
        let g = generate(&all).unwrap();
        crate::server::tls::certified_key_from_pem(
            g.cert_pem.as_bytes(),
            g.key_pem.as_bytes(),
            Path::new("tls.crt"),
            Path::new("tls.key"),
        )
        .unwrap();
        assert!(g.ca_bundle().len() > 100);
    }

    #[test]
    fn bad_name_is_reported() {
        let err = generate(&["bad name!".into()]).unwrap_err().to_string();
        assert!(err.contains("bad name!"), "{err}");
    }
}
