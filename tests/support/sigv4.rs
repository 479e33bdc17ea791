//! SigV4 checked as AWS checks it, for the fakes of AWS services (the recording STS, the EKS
//! fake): the request is signed again, with the SDK's own signing crate (`aws-sigv4`), using the
//! secret the fake knows for the request's access key, and the two signatures compared. A fake
//! built on this refuses a request signed with the wrong secret, with an unknown key, or not at
//! all, as the service would.

use std::time::SystemTime;

use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use axum::http::HeaderMap;

/// The access keys the fakes know and their secrets: every key a test signs with.
pub const KEYS: &[(&str, &str)] = &[
    ("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    ("AKIDAGENTEXAMPLE", "agent-secret-key"),
    ("AKIDFROMTHEENV", "agent-secret-from-env"),
    ("AKIDFROMPROFILE", "secret-from-profile"),
];

/// Why a request's signature was refused; each service names these in its own words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization` header.
    Missing,
    /// An `Authorization` header that is not a whole SigV4 one, or a signed header missing.
    Incomplete(String),
    /// An access key the service does not know.
    UnknownKey,
    /// The signature differs from the one the known secret gives.
    Mismatch,
}

/// The secret of one of [`KEYS`] (long-term keys: no session token).
pub fn known(key: &str) -> Option<(String, Option<String>)> {
    KEYS.iter()
        .find(|(k, _)| *k == key)
        .map(|(_, secret)| (secret.to_string(), None))
}

/// The access key that signed the request, when its SigV4 signature is the one the known secret
/// gives for `service` (the signing name, `sts` or `eks`). `secret_of` gives a key's secret and,
/// for temporary credentials, the session token the request must carry.
pub fn verify(
    method: &str,
    uri: &str,
    headers: &HeaderMap,
    body: &[u8],
    service: &str,
    secret_of: impl Fn(&str) -> Option<(String, Option<String>)>,
) -> Result<String, Refusal> {
    let incomplete = |why: &str| Refusal::Incomplete(why.to_string());
    let authorization = headers
        .get("authorization")
        .ok_or(Refusal::Missing)?
        .to_str()
        .map_err(|_| incomplete("Authorization is not ASCII"))?;
    // `AWS4-HMAC-SHA256 Credential=KEY/DATE/REGION/SERVICE/aws4_request, SignedHeaders=a;b,
    // Signature=HEX`
    let fields = authorization
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or_else(|| incomplete("not AWS4-HMAC-SHA256"))?;
    let field = |name: &str| {
        fields
            .split(',')
            .find_map(|f| f.trim().strip_prefix(name)?.strip_prefix('='))
            .ok_or_else(|| Refusal::Incomplete(format!("no {name}")))
    };
    let scope: Vec<&str> = field("Credential")?.split('/').collect();
    let [key, _date, region, scope_service, "aws4_request"] = scope[..] else {
        return Err(incomplete("a malformed Credential scope"));
    };
    let signed_headers = field("SignedHeaders")?;
    let signature = field("Signature")?;
    let (secret, token) = secret_of(key).ok_or(Refusal::UnknownKey)?;
    if scope_service != service {
        return Err(Refusal::Mismatch);
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if header("x-amz-security-token") != token.as_deref() {
        return Err(Refusal::UnknownKey); // as AWS: "the security token … is invalid"
    }
    let time = header("x-amz-date")
        .and_then(amz_date)
        .ok_or_else(|| incomplete("no X-Amz-Date"))?;
    let mut signed = Vec::new();
    for name in signed_headers.split(';') {
        let values = headers.get_all(name);
        if values.iter().next().is_none() {
            return Err(Refusal::Incomplete(format!(
                "signed header {name} not sent"
            )));
        }
        for value in values {
            let value = value
                .to_str()
                .map_err(|_| Refusal::Incomplete(format!("header {name} is not ASCII")))?;
            signed.push((name, value));
        }
    }
    let identity =
        aws_credential_types::Credentials::new(key, secret, token, None, "the fake's known keys")
            .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| Refusal::Incomplete(e.to_string()))?
        .into();
    let request = SignableRequest::new(method, uri, signed.into_iter(), SignableBody::Bytes(body))
        .map_err(|e| Refusal::Incomplete(e.to_string()))?;
    let expected = sign(request, &params)
        .map_err(|e| Refusal::Incomplete(e.to_string()))?
        .signature()
        .to_string();
    if expected == signature {
        Ok(key.to_string())
    } else {
        Err(Refusal::Mismatch)
    }
}

/// `20261207T221500Z` (the `X-Amz-Date` form) as a time.
fn amz_date(text: &str) -> Option<SystemTime> {
    let b = text.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let rfc3339 = format!(
        "{}-{}-{}T{}:{}:{}Z",
        text.get(0..4)?,
        text.get(4..6)?,
        text.get(6..8)?,
        text.get(9..11)?,
        text.get(11..13)?,
        text.get(13..15)?
    );
    let t = aws_smithy_types::DateTime::from_str(
        &rfc3339,
        aws_smithy_types::date_time::Format::DateTime,
    )
    .ok()?;
    SystemTime::try_from(t).ok()
}
