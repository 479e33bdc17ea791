//! The API server's own issuer documents (`/.well-known/openid-configuration`,
//! `/openid/v1/jwks`), read through the one Kubernetes client, and the documents for a chosen
//! issuer made from them.

use serde::Deserialize;

use super::{Documents, IssuerError};

/// Larger than any real key set (a few keys of a few hundred bytes each).
const MAX_DOCUMENT: usize = 256 * 1024;

/// What the API server serves, its JWKS kept byte for byte.
#[derive(Debug, Clone)]
pub struct ClusterIssuer {
    /// Its `--service-account-issuer` (the first one, which it signs with).
    pub issuer: String,
    pub jwks_uri: String,
    pub jwks: String,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

#[derive(Deserialize)]
struct KeySet {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    alg: Option<String>,
}

/// Reads both documents (the caller needs `get` on the non-resource URLs, which the
/// `system:service-account-issuer-discovery` ClusterRole grants).
pub async fn fetch(client: &kube::Client) -> Result<ClusterIssuer, IssuerError> {
    let discovery = get(
        client,
        "/.well-known/openid-configuration",
        "discovery document",
    )
    .await?;
    let jwks = get(client, "/openid/v1/jwks", "JWKS").await?;
    let parsed: Discovery = serde_json::from_str(&discovery).map_err(|e| IssuerError::Cluster {
        what: "discovery document",
        why: format!("not the expected JSON: {e}"),
    })?;
    algs(&jwks)?;
    Ok(ClusterIssuer {
        issuer: parsed.issuer,
        jwks_uri: parsed.jwks_uri,
        jwks,
    })
}

async fn get(client: &kube::Client, path: &str, what: &'static str) -> Result<String, IssuerError> {
    let request = hyper::Request::get(path)
        .body(Vec::new())
        .map_err(|e| IssuerError::Cluster {
            what,
            why: e.to_string(),
        })?;
    let text = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        client.request_text(request),
    )
    .await
    .map_err(|_| IssuerError::Cluster {
        what,
        why: "no answer within 30 s".into(),
    })?
    .map_err(|e| IssuerError::Cluster {
        what,
        why: format!(
            "GET {path} failed ({e}); is --service-account-issuer set, and may this user \
                 read it (ClusterRole system:service-account-issuer-discovery)?"
        ),
    })?;
    if text.len() > MAX_DOCUMENT {
        return Err(IssuerError::Cluster {
            what,
            why: format!("larger than {MAX_DOCUMENT} bytes"),
        });
    }
    Ok(text)
}

/// The signing algorithms of a JWKS, sorted and unique; an error when it has no keys.
pub fn algs(jwks: &str) -> Result<std::collections::BTreeSet<String>, IssuerError> {
    let set: KeySet = serde_json::from_str(jwks).map_err(|e| IssuerError::Cluster {
        what: "JWKS",
        why: format!("not a JSON Web Key Set: {e}"),
    })?;
    if set.keys.is_empty() {
        return Err(IssuerError::Cluster {
            what: "JWKS",
            why: "has no keys".into(),
        });
    }
    set.keys
        .into_iter()
        .map(|k| {
            k.alg.ok_or_else(|| IssuerError::Cluster {
                what: "JWKS",
                why: "a key without `alg`".into(),
            })
        })
        .collect()
}

/// Fails when `issuer` and the API server's differ only by a trailing slash: one byte that makes
/// STS refuse every token with no further detail. Other differences are a planned change of
/// `--service-account-issuer` (`issuer flags`).
pub fn check_issuer(issuer: &str, cluster: &str) -> Result<(), IssuerError> {
    if issuer != cluster && issuer.trim_end_matches('/') == cluster.trim_end_matches('/') {
        return Err(IssuerError::Mismatch {
            given: issuer.to_string(),
            cluster: cluster.to_string(),
            hint: " (only a trailing slash apart)",
        });
    }
    Ok(())
}

/// The documents for `issuer`: the API server's JWKS as it serves it, a discovery document
/// naming `issuer` and `jwks_uri`.
pub fn documents(
    c: &ClusterIssuer,
    issuer: &str,
    jwks_uri: &str,
) -> Result<Documents, IssuerError> {
    check_issuer(issuer, &c.issuer)?;
    let algs = algs(&c.jwks)?;
    Ok(Documents {
        discovery: super::discovery(issuer, jwks_uri, algs.iter().map(String::as_str)),
        jwks: c.jwks.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_slash_mismatch_names_both() {
        let e = check_issuer("https://a.example/", "https://a.example")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"https://a.example/\"") && e.contains("\"https://a.example\""),
            "{e}"
        );
        check_issuer("https://new.example", "https://kubernetes.default.svc").unwrap();
    }
}
