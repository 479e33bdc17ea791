//! The cluster's OIDC identity for IRSA outside EKS (issue 30, `issuer` command): the discovery
//! document and JWKS exactly as kube-apiserver serves them ([`documents`]), from PEM keys
//! ([`keys`]) or the API server itself ([`cluster`]); the API-server flags ([`flags`]); the
//! issuer URL rules STS and the API server share ([`validate_issuer`]).

pub mod aws;
pub mod cluster;
pub mod fetch;
pub mod flags;
pub mod keys;
pub mod token;
pub mod trust;
pub mod verify;

use keys::PublicKey;

/// Where the API server serves them, and where a static host must put them.
pub const DISCOVERY_PATH: &str = ".well-known/openid-configuration";
pub const JWKS_PATH: &str = "openid/v1/jwks";

/// Why an issuer document could not be made. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    #[error("issuer URL {url:?}: {why}")]
    Url { url: String, why: &'static str },
    #[error("key: {0}")]
    Key(String),
    #[error("no keys given: pass --public-key FILE (repeatable) or --from-cluster")]
    NoKeys,
    #[error(
        "issuer {given:?} differs from the API server's --service-account-issuer {cluster:?}{hint}: \
         tokens would carry the API server's value and STS would refuse them"
    )]
    Mismatch {
        given: String,
        cluster: String,
        hint: &'static str,
    },
    #[error("the API server's {what}: {why}")]
    Cluster { what: &'static str, why: String },
}

/// The API server's own rules (`NewOpenIDMetadataProvider`): `https`, no query, no fragment; and
/// for IAM (`for_iam`) no port, which IAM's provider URL cannot carry.
pub fn validate_issuer(url: &str, for_iam: bool) -> Result<(), IssuerError> {
    let fail = |why| {
        Err(IssuerError::Url {
            url: url.to_string(),
            why,
        })
    };
    let Some(rest) = url.strip_prefix("https://") else {
        return fail("must start with https:// (STS fetches it over HTTPS)");
    };
    if url.len() > 2048 || url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return fail("has spaces or control characters, or is longer than 2048 bytes");
    }
    if url.contains('?') {
        return fail("may not have a query (the API server refuses it)");
    }
    if url.contains('#') {
        return fail("may not have a fragment (the API server refuses it)");
    }
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || host.contains('@') {
        return fail("needs a host name (and no user info)");
    }
    if for_iam && host.rsplit_once(']').map_or(host, |(_, p)| p).contains(':') {
        return fail("may not have a port: IAM OIDC providers are reached on 443");
    }
    Ok(())
}

/// The API server's `jwks_uri` when `--service-account-jwks-uri` says where the issuer is hosted:
/// the issuer's `/openid/v1/jwks` (one slash, even after a trailing one).
pub fn default_jwks_uri(issuer: &str) -> String {
    format!("{}/{JWKS_PATH}", issuer.trim_end_matches('/'))
}

/// Both documents, byte for byte as kube-apiserver marshals them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Documents {
    pub discovery: String,
    pub jwks: String,
}

/// `openIDConfigJSON` and `openIDKeysetJSON` for `keys` in their order.
pub fn documents(
    issuer: &str,
    jwks_uri: &str,
    keys: &[PublicKey],
) -> Result<Documents, IssuerError> {
    if keys.is_empty() {
        return Err(IssuerError::NoKeys);
    }
    let jwks = format!(
        r#"{{"keys":[{}]}}"#,
        keys.iter()
            .map(PublicKey::jwk_json)
            .collect::<Vec<_>>()
            .join(",")
    );
    let algs: std::collections::BTreeSet<&str> = keys.iter().map(PublicKey::alg).collect();
    Ok(Documents {
        discovery: discovery(issuer, jwks_uri, algs.into_iter()),
        jwks,
    })
}

/// The discovery document with `algs` in sorted order (Go's `sets.String.List`).
fn discovery<'a>(issuer: &str, jwks_uri: &str, algs: impl Iterator<Item = &'a str>) -> String {
    let algs: Vec<String> = algs.map(go_string).collect();
    format!(
        r#"{{"issuer":{},"jwks_uri":{},"response_types_supported":["id_token"],"subject_types_supported":["public"],"id_token_signing_alg_values_supported":[{}]}}"#,
        go_string(issuer),
        go_string(jwks_uri),
        algs.join(",")
    )
}

/// A JSON string as Go's `encoding/json` writes it: HTML-safe escapes included.
fn go_string(s: &str) -> String {
    let json = serde_json::Value::String(s.to_string()).to_string();
    json.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuer_rules() {
        for ok in [
            "https://a.example",
            "https://a.example/p/",
            "https://[::1]/x",
        ] {
            validate_issuer(ok, true).unwrap();
        }
        validate_issuer("https://a.example:8443/x", false).unwrap();
        for (bad, word) in [
            ("http://a.example", "https://"),
            ("https://a.example?x=1", "query"),
            ("https://a.example#f", "fragment"),
            ("https://a.example:8443", "port"),
            ("https:///x", "host"),
        ] {
            let e = validate_issuer(bad, true).unwrap_err().to_string();
            assert!(e.contains(word) && e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn jwks_uri_has_one_slash() {
        assert_eq!(
            default_jwks_uri("https://x/a/"),
            "https://x/a/openid/v1/jwks"
        );
        assert_eq!(default_jwks_uri("https://x"), "https://x/openid/v1/jwks");
    }

    #[test]
    fn strings_escape_as_go_does() {
        assert_eq!(go_string("a&b<c>"), r#""a\u0026b\u003cc\u003e""#);
    }
}
