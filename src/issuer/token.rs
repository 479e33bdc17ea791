//! A service-account token checked as STS checks it: its `kid` in the published JWKS, the
//! signature (the `jsonwebtoken` crate on aws-lc-rs), `iss`, `aud` and expiry.

use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;

/// Why a token would be refused. Never carries the token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the published JWKS is not a JSON Web Key Set: {0}")]
    Jwks(String),
    #[error("the token is malformed: {0}")]
    Malformed(String),
    #[error(
        "the token's kid {kid:?} is not in the published JWKS (kids there: {published:?}): \
         republish the keys the API server signs with (`issuer publish`)"
    )]
    KidNotPublished { kid: String, published: Vec<String> },
    #[error("the token's signature does not verify against published key {kid:?}: {why}")]
    Signature { kid: String, why: String },
    #[error("the token's iss {token:?} is not the issuer {expected:?}")]
    Issuer { token: String, expected: String },
    #[error("the token's aud is not {expected:?}")]
    Audience { expected: String },
}

/// The claims STS reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
}

/// Verifies `token` against `jwks` for `issuer` and `audience`.
pub fn verify(
    token: &str,
    jwks: &[u8],
    issuer: &str,
    audience: &str,
) -> Result<Claims, TokenError> {
    let set: JwkSet = serde_json::from_slice(jwks).map_err(|e| TokenError::Jwks(e.to_string()))?;
    let header = decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
    let kid = header.kid.clone().unwrap_or_default();
    let Some(jwk) = set.find(&kid) else {
        return Err(TokenError::KidNotPublished {
            kid,
            published: set
                .keys
                .iter()
                .filter_map(|k| k.common.key_id.clone())
                .collect(),
        });
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|e| TokenError::Signature {
        kid: kid.clone(),
        why: e.to_string(),
    })?;
    // Checked first, by hand, so the message names both values.
    let iss = unverified_iss(token)?;
    if iss != issuer {
        return Err(TokenError::Issuer {
            token: iss,
            expected: issuer.to_string(),
        });
    }
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    match decode::<Claims>(token, &key, &validation) {
        Ok(data) => Ok(data.claims),
        Err(e) => match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidAudience => Err(TokenError::Audience {
                expected: audience.to_string(),
            }),
            _ => Err(TokenError::Signature {
                kid,
                why: e.to_string(),
            }),
        },
    }
}

fn unverified_iss(token: &str) -> Result<String, TokenError> {
    #[derive(Deserialize)]
    struct Iss {
        iss: String,
    }
    let payload = token
        .split('.')
        .nth(1)
        .ok_or_else(|| TokenError::Malformed("not three dot-separated parts".into()))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| TokenError::Malformed("the payload is not base64url".into()))?;
    let claims: Iss =
        serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed("no iss claim".into()))?;
    Ok(claims.iss)
}
