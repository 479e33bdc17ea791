//! Service-account public keys as kube-apiserver sees them: read from PEM (public keys,
//! certificates, private keys), re-encoded as Go's `x509.MarshalPKIXPublicKey` does, with the
//! `kid` of `keyIDFromPublicKey` (pkg/serviceaccount/jwt.go) and the JWK of
//! `jwkFromPublicKey` (pkg/serviceaccount/openidmetadata.go, go-jose v2 field order).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey as Parsed;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::IssuerError;

/// The elliptic curves the API server signs with (`algorithmFromPublicKey`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
    P521,
}

impl Curve {
    fn from_oid(dotted: &str) -> Option<Self> {
        match dotted {
            "1.2.840.10045.3.1.7" => Some(Self::P256),
            "1.3.132.0.34" => Some(Self::P384),
            "1.3.132.0.35" => Some(Self::P521),
            _ => None,
        }
    }
    fn oid_der(self) -> &'static [u8] {
        match self {
            Self::P256 => &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
            Self::P384 => &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22],
            Self::P521 => &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23],
        }
    }
    /// The coordinate size in bytes (go-jose's `curveSize`).
    fn size(self) -> usize {
        match self {
            Self::P256 => 32,
            Self::P384 => 48,
            Self::P521 => 66,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::P256 => "P-256",
            Self::P384 => "P-384",
            Self::P521 => "P-521",
        }
    }
    pub fn alg(self) -> &'static str {
        match self {
            Self::P256 => "ES256",
            Self::P384 => "ES384",
            Self::P521 => "ES512",
        }
    }
}

/// One public key, in its canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// Modulus and exponent, big-endian without leading zeros.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// The coordinates, each padded to the curve's size.
    Ec {
        curve: Curve,
        x: Vec<u8>,
        y: Vec<u8>,
    },
}

impl PublicKey {
    /// From DER `SubjectPublicKeyInfo`.
    pub fn from_spki(der: &[u8]) -> Result<Self, IssuerError> {
        let bad = |why: &str| IssuerError::Key(format!("not a usable public key: {why}"));
        let (rest, spki) = SubjectPublicKeyInfo::from_der(der).map_err(|_| bad("malformed DER"))?;
        if !rest.is_empty() {
            return Err(bad("trailing bytes after the key"));
        }
        match spki.parsed().map_err(|_| bad("malformed key"))? {
            Parsed::RSA(rsa) => Ok(Self::rsa(rsa.modulus, rsa.exponent)),
            Parsed::EC(point) => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok())
                    .and_then(|oid| Curve::from_oid(&oid.to_id_string()))
                    .ok_or_else(|| {
                        bad("an EC key on a curve the API server does not sign with (P-256, P-384, P-521 only)")
                    })?;
                Self::ec(curve, point.data())
            }
            _ => Err(bad("only RSA and EC keys sign service-account tokens")),
        }
    }

    fn rsa(n: &[u8], e: &[u8]) -> Self {
        Self::Rsa {
            n: strip_zeros(n).to_vec(),
            e: strip_zeros(e).to_vec(),
        }
    }

    fn ec(curve: Curve, point: &[u8]) -> Result<Self, IssuerError> {
        let size = curve.size();
        // Go parses only uncompressed points (0x04 || X || Y).
        if point.len() != 1 + 2 * size || point[0] != 4 {
            return Err(IssuerError::Key(
                "an EC public key that is not an uncompressed point; re-export it with \
                 `openssl pkey -pubout`"
                    .into(),
            ));
        }
        Ok(Self::Ec {
            curve,
            x: point[1..=size].to_vec(),
            y: point[1 + size..].to_vec(),
        })
    }

    /// `x509.MarshalPKIXPublicKey`: RSA with NULL parameters, EC with the named curve.
    pub fn spki_der(&self) -> Vec<u8> {
        match self {
            Self::Rsa { n, e } => {
                let pkcs1 = tlv(0x30, &[der_int(n), der_int(e)].concat());
                let alg = [
                    &[
                        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
                    ][..],
                    &[0x05, 0x00],
                ]
                .concat();
                tlv(0x30, &[tlv(0x30, &alg), bit_string(&pkcs1)].concat())
            }
            Self::Ec { curve, x, y } => {
                let alg = [
                    &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01][..],
                    curve.oid_der(),
                ]
                .concat();
                let point = [&[4u8][..], x, y].concat();
                tlv(0x30, &[tlv(0x30, &alg), bit_string(&point)].concat())
            }
        }
    }

    /// `keyIDFromPublicKey`: base64url (no padding) of the SHA-256 of the PKIX DER.
    pub fn kid(&self) -> String {
        URL_SAFE_NO_PAD.encode(Sha256::digest(self.spki_der()))
    }

    /// The JWS algorithm the API server signs with for this key.
    pub fn alg(&self) -> &'static str {
        match self {
            Self::Rsa { .. } => "RS256",
            Self::Ec { curve, .. } => curve.alg(),
        }
    }

    /// The JWK as go-jose v2 marshals it: `use, kty, kid, crv, alg, x, y, n, e`.
    pub fn jwk_json(&self) -> String {
        let b = |v: &[u8]| URL_SAFE_NO_PAD.encode(v);
        match self {
            Self::Rsa { n, e } => format!(
                r#"{{"use":"sig","kty":"RSA","kid":"{}","alg":"RS256","n":"{}","e":"{}"}}"#,
                self.kid(),
                b(n),
                b(e)
            ),
            Self::Ec { curve, x, y } => format!(
                r#"{{"use":"sig","kty":"EC","kid":"{}","crv":"{}","alg":"{}","x":"{}","y":"{}"}}"#,
                self.kid(),
                curve.name(),
                curve.alg(),
                b(x),
                b(y)
            ),
        }
    }
}

/// Every key in a PEM file: `PUBLIC KEY`, `RSA PUBLIC KEY`, `CERTIFICATE`, `PRIVATE KEY`
/// (PKCS#8) and `RSA PRIVATE KEY` blocks, in order; other blocks are an error.
pub fn keys_from_pem(pem: &[u8]) -> Result<Vec<PublicKey>, IssuerError> {
    let mut keys = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(pem) {
        let block = block.map_err(|_| IssuerError::Key("malformed PEM".into()))?;
        let key = match block.label.as_str() {
            "PUBLIC KEY" => PublicKey::from_spki(&block.contents)?,
            "CERTIFICATE" => {
                let (_, cert) = x509_parser::parse_x509_certificate(&block.contents)
                    .map_err(|_| IssuerError::Key("a malformed certificate".into()))?;
                PublicKey::from_spki(cert.public_key().raw)?
            }
            "RSA PUBLIC KEY" => {
                let (_, rsa) = x509_parser::public_key::RSAPublicKey::from_der(&block.contents)
                    .map_err(|_| IssuerError::Key("a malformed RSA PUBLIC KEY".into()))?;
                PublicKey::rsa(rsa.modulus, rsa.exponent)
            }
            "RSA PRIVATE KEY" => rsa_private(&block.contents)?,
            "PRIVATE KEY" => {
                let pair = rcgen::KeyPair::try_from(block.contents.as_slice()).map_err(|_| {
                    IssuerError::Key("a PKCS#8 private key that is not RSA or ECDSA".into())
                })?;
                PublicKey::from_spki(&rcgen::PublicKeyData::subject_public_key_info(&pair))?
            }
            other => {
                return Err(IssuerError::Key(format!(
                    "a PEM block `{other}` that holds no usable key: give PUBLIC KEY, \
                     CERTIFICATE, RSA PUBLIC KEY, PRIVATE KEY (PKCS#8) or RSA PRIVATE KEY \
                     (convert EC PRIVATE KEY with `openssl pkey -pubout`)"
                )));
            }
        };
        keys.push(key);
    }
    if keys.is_empty() {
        return Err(IssuerError::Key("no PEM block found".into()));
    }
    Ok(keys)
}

/// PKCS#1 `RSAPrivateKey`: SEQUENCE { version, n, e, ... }; only n and e are read.
fn rsa_private(der: &[u8]) -> Result<PublicKey, IssuerError> {
    let bad = || IssuerError::Key("a malformed RSA PRIVATE KEY".into());
    let (_, obj) = x509_parser::der_parser::parse_der(der).map_err(|_| bad())?;
    let items = obj.as_sequence().map_err(|_| bad())?;
    let int = |i: usize| items.get(i).and_then(|o| o.as_slice().ok()).ok_or_else(bad);
    Ok(PublicKey::rsa(int(1)?, int(2)?))
}

fn strip_zeros(v: &[u8]) -> &[u8] {
    let first = v.iter().position(|&b| b != 0).unwrap_or(v.len());
    &v[first..]
}

/// A DER INTEGER of a non-negative big-endian magnitude (minimal, a leading zero when the high
/// bit is set).
fn der_int(magnitude: &[u8]) -> Vec<u8> {
    let m = strip_zeros(magnitude);
    let mut content = Vec::with_capacity(m.len() + 1);
    if m.is_empty() || m[0] & 0x80 != 0 {
        content.push(0);
    }
    content.extend_from_slice(m);
    tlv(0x02, &content)
}

fn bit_string(bytes: &[u8]) -> Vec<u8> {
    tlv(0x03, &[&[0u8][..], bytes].concat())
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let lead = bytes
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(bytes.len() - 1);
        out.push(0x80 | (bytes.len() - lead) as u8);
        out.extend_from_slice(&bytes[lead..]);
    }
    out.extend_from_slice(content);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_spki_round_trips_and_kid_is_its_hash() {
        let pair = rcgen::KeyPair::generate().unwrap();
        let der = rcgen::PublicKeyData::subject_public_key_info(&pair);
        let key = PublicKey::from_spki(&der).unwrap();
        assert_eq!(key.spki_der(), der);
        assert_eq!(key.kid(), URL_SAFE_NO_PAD.encode(Sha256::digest(&der)));
        assert_eq!(key.alg(), "ES256");
    }

    #[test]
    fn pem_of_a_private_key_gives_its_public_key() {
        let pair = rcgen::KeyPair::generate().unwrap();
        let from_private = keys_from_pem(pair.serialize_pem().as_bytes()).unwrap();
        let from_public = keys_from_pem(pair.public_key_pem().as_bytes()).unwrap();
        assert_eq!(from_private, from_public);
    }

    #[test]
    fn junk_is_refused_without_echoing_it() {
        let e =
            keys_from_pem(b"-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n")
                .unwrap_err()
                .to_string();
        assert!(e.contains("EC PRIVATE KEY") && !e.contains("AAAA"), "{e}");
        assert!(keys_from_pem(b"nothing").is_err());
    }
}
