//! `issuer verify`: the chain STS walks for an IRSA token, checked link by link against the
//! cluster, stopping at (and naming) the first broken one: the issuer URL, the published
//! discovery document and JWKS, a fresh token's signature, the IAM provider, a role's trust.

use std::net::SocketAddr;
use std::sync::Arc;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use serde::Deserialize;

use super::aws::{AwsError, find_provider, provider_url};
use super::cluster::ClusterIssuer;
use super::fetch::{FetchError, get};
use super::token::TokenError;
use super::trust::TrustError;
use super::{DISCOVERY_PATH, IssuerError};

/// The first thing wrong.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{0}")]
    Issuer(#[from] IssuerError),
    #[error("{0}")]
    Fetch(#[from] FetchError),
    #[error("published discovery document {url}: {why}")]
    Discovery { url: String, why: String },
    #[error(
        "the published discovery document says issuer {published:?}, but tokens carry {expected:?}{hint}"
    )]
    PublishedIssuer {
        published: String,
        expected: String,
        hint: &'static str,
    },
    #[error(
        "the API server signs with key kid {kid:?}, which is not in the published JWKS at {url} \
         (kids there: {published:?}): republish with `issuer publish`"
    )]
    KeyNotPublished {
        kid: String,
        url: String,
        published: Vec<String>,
    },
    #[error("the published JWKS key kid {kid:?} is not the API server's key with that kid")]
    KeyDiffers { kid: String },
    #[error("TokenRequest for {namespace}/{name}: {why}")]
    TokenRequest {
        namespace: String,
        name: String,
        why: String,
    },
    #[error("{0}")]
    Token(#[from] TokenError),
    #[error("{0}")]
    Aws(#[from] AwsError),
    #[error(
        "IAM has no OIDC provider for {url}: create it with `issuer provider --issuer {issuer}`"
    )]
    ProviderMissing { url: String, issuer: String },
    #[error(
        "the IAM OIDC provider {arn} does not list client ID {audience:?} (it has {has:?}): \
         run `issuer provider --client-id {audience}`"
    )]
    ProviderAudience {
        arn: String,
        audience: String,
        has: Vec<String>,
    },
    #[error("IAM GetRole {role}: {why}")]
    Role { role: String, why: String },
    #[error("{0}")]
    Trust(#[from] TrustError),
}

/// What to check.
pub struct Plan {
    pub issuer: String,
    pub audience: String,
    pub namespace: String,
    pub service_account: String,
    /// A role name (or ARN) whose trust to check.
    pub role: Option<String>,
    pub roots: Arc<rustls::RootCertStore>,
    pub connect_to: Option<SocketAddr>,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

#[derive(Deserialize)]
struct KeySet {
    keys: Vec<serde_json::Map<String, serde_json::Value>>,
}

fn key_set(bytes: &[u8], url: &str) -> Result<KeySet, VerifyError> {
    serde_json::from_slice(bytes).map_err(|e| VerifyError::Discovery {
        url: url.to_string(),
        why: format!("the JWKS is not a JSON Web Key Set: {e}"),
    })
}

fn kid(k: &serde_json::Map<String, serde_json::Value>) -> String {
    k.get("kid")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string()
}

/// Runs every check in order; `ok` hears each one passed.
pub async fn run(
    plan: &Plan,
    client: &kube::Client,
    cluster: &ClusterIssuer,
    iam: Option<&aws_sdk_iam::Client>,
    ok: &mut dyn FnMut(String),
) -> Result<(), VerifyError> {
    super::validate_issuer(&plan.issuer, true)?;
    super::cluster::check_issuer(&plan.issuer, &cluster.issuer)?;
    if plan.issuer != cluster.issuer {
        return Err(IssuerError::Mismatch {
            given: plan.issuer.clone(),
            cluster: cluster.issuer.clone(),
            hint: "",
        }
        .into());
    }
    ok(format!("the API server's issuer is {}", plan.issuer));

    let url = format!("{}/{DISCOVERY_PATH}", plan.issuer.trim_end_matches('/'));
    let body = get(&url, plan.roots.clone(), plan.connect_to).await?;
    let discovery: Discovery =
        serde_json::from_slice(&body).map_err(|e| VerifyError::Discovery {
            url: url.clone(),
            why: format!("not a discovery document: {e}"),
        })?;
    if discovery.issuer != plan.issuer {
        let slash = discovery.issuer.trim_end_matches('/') == plan.issuer.trim_end_matches('/');
        return Err(VerifyError::PublishedIssuer {
            published: discovery.issuer,
            expected: plan.issuer.clone(),
            hint: if slash {
                " (only a trailing slash apart: STS compares them byte for byte)"
            } else {
                ""
            },
        });
    }
    ok(format!("{url} names the issuer"));

    let jwks_url = discovery.jwks_uri;
    if !jwks_url.starts_with("https://") {
        return Err(VerifyError::Discovery {
            url,
            why: format!("jwks_uri {jwks_url:?} is not https://"),
        });
    }
    let jwks = get(&jwks_url, plan.roots.clone(), plan.connect_to).await?;
    let published = key_set(&jwks, &jwks_url)?;
    let theirs = key_set(cluster.jwks.as_bytes(), "the API server's /openid/v1/jwks")?;
    for key in &theirs.keys {
        let id = kid(key);
        let Some(same) = published.keys.iter().find(|k| kid(k) == id) else {
            return Err(VerifyError::KeyNotPublished {
                kid: id,
                url: jwks_url,
                published: published.keys.iter().map(kid).collect(),
            });
        };
        if same != key {
            return Err(VerifyError::KeyDiffers { kid: id });
        }
    }
    ok(format!(
        "{jwks_url} holds the API server's {} key(s)",
        theirs.keys.len()
    ));

    let token = request_token(client, plan).await?;
    let claims = super::token::verify(&token, &jwks, &plan.issuer, &plan.audience)?;
    ok(format!(
        "a token for {} verifies against the published JWKS",
        claims.sub
    ));

    let Some(iam) = iam else { return Ok(()) };
    let Some(provider) = find_provider(iam, &plan.issuer).await? else {
        return Err(VerifyError::ProviderMissing {
            url: provider_url(&plan.issuer).to_string(),
            issuer: plan.issuer.clone(),
        });
    };
    if !provider.client_ids.contains(&plan.audience) {
        return Err(VerifyError::ProviderAudience {
            arn: provider.arn,
            audience: plan.audience.clone(),
            has: provider.client_ids,
        });
    }
    ok(format!(
        "IAM OIDC provider {} accepts {}",
        provider.arn, plan.audience
    ));

    let Some(role) = &plan.role else {
        return Ok(());
    };
    let name = role.rsplit('/').next().unwrap_or(role);
    let got = iam
        .get_role()
        .role_name(name)
        .send()
        .await
        .map_err(|e| VerifyError::Role {
            role: name.to_string(),
            why: aws_sdk_iam::error::DisplayErrorContext(&e).to_string(),
        })?;
    let encoded = got
        .role()
        .and_then(|r| r.assume_role_policy_document())
        .unwrap_or_default();
    // IAM returns the document URL-encoded.
    let policy = percent_encoding::percent_decode_str(encoded).decode_utf8_lossy();
    super::trust::check(
        name,
        &policy,
        &provider.arn,
        provider_url(&plan.issuer),
        &claims.sub,
        &plan.audience,
    )?;
    ok(format!(
        "role {name} trusts {} with audience {}",
        claims.sub, plan.audience
    ));
    Ok(())
}

async fn request_token(client: &kube::Client, plan: &Plan) -> Result<String, VerifyError> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &plan.namespace);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![plan.audience.clone()],
            expiration_seconds: Some(600),
            ..Default::default()
        },
        ..Default::default()
    };
    let fail = |why: String| VerifyError::TokenRequest {
        namespace: plan.namespace.clone(),
        name: plan.service_account.clone(),
        why,
    };
    let answer = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        api.create_token_request(&plan.service_account, &PostParams::default(), &request),
    )
    .await
    .map_err(|_| fail("no answer within 30 s".into()))?
    .map_err(|e| fail(e.to_string()))?;
    answer
        .status
        .map(|s| s.token)
        .ok_or_else(|| fail("the answer has no token".into()))
}
