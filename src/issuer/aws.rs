//! The issuer on AWS: both documents uploaded to S3 where STS reads them, and the IAM OIDC
//! provider that makes IAM trust tokens from it (create or update, idempotent).

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ObjectCannedAcl;

use super::{DISCOVERY_PATH, Documents, JWKS_PATH};

/// Why AWS refused. The SDK's message is kept: it names the bucket, role or permission.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    #[error(
        "S3 PutObject s3://{bucket}/{key}: {error}; check the bucket exists and this identity may s3:PutObject{acl_hint}"
    )]
    Put {
        bucket: String,
        key: String,
        error: String,
        acl_hint: &'static str,
    },
    #[error("IAM {call}: {error}; this identity needs iam:{call}")]
    Iam { call: &'static str, error: String },
}

/// Who may read the objects: STS fetches them anonymously.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acl {
    /// A `public-read` object ACL (the bucket must allow ACLs).
    PublicRead,
    /// No ACL: a bucket policy grants `s3:GetObject` to everyone (buckets with ACLs disabled).
    None,
}

/// The object keys of both documents under `prefix` (the issuer URL's path).
pub fn object_keys(prefix: &str) -> [String; 2] {
    let p = prefix.trim_matches('/');
    let join = |rel: &str| {
        if p.is_empty() {
            rel.to_string()
        } else {
            format!("{p}/{rel}")
        }
    };
    [join(DISCOVERY_PATH), join(JWKS_PATH)]
}

/// Uploads both documents as `application/json`; returns the object keys.
pub async fn publish(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    acl: Acl,
    docs: &Documents,
) -> Result<[String; 2], AwsError> {
    let keys = object_keys(prefix);
    for (key, body) in keys.iter().zip([&docs.discovery, &docs.jwks]) {
        let mut put = s3
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type("application/json")
            .body(ByteStream::from(body.clone().into_bytes()));
        if acl == Acl::PublicRead {
            put = put.acl(ObjectCannedAcl::PublicRead);
        }
        put.send().await.map_err(|e| AwsError::Put {
            bucket: bucket.to_string(),
            key: key.clone(),
            error: aws_sdk_s3::error::DisplayErrorContext(&e).to_string(),
            acl_hint: if acl == Acl::PublicRead {
                " and s3:PutObjectAcl (with Object Ownership \"bucket owner enforced\" ACLs are \
                 refused: use --acl none and a bucket policy)"
            } else {
                ""
            },
        })?;
    }
    Ok(keys)
}

/// IAM's form of an issuer: no scheme, no trailing slash.
pub fn provider_url(issuer: &str) -> &str {
    issuer
        .strip_prefix("https://")
        .unwrap_or(issuer)
        .trim_end_matches('/')
}

/// A provider as IAM holds it.
#[derive(Debug, Clone)]
pub struct Provider {
    pub arn: String,
    pub client_ids: Vec<String>,
}

fn iam_error<E>(call: &'static str) -> impl Fn(E) -> AwsError
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |e| AwsError::Iam {
        call,
        error: aws_sdk_iam::error::DisplayErrorContext(&e).to_string(),
    }
}

/// The provider for `issuer`, if IAM has one.
pub async fn find_provider(
    iam: &aws_sdk_iam::Client,
    issuer: &str,
) -> Result<Option<Provider>, AwsError> {
    let want = provider_url(issuer);
    let list = iam
        .list_open_id_connect_providers()
        .send()
        .await
        .map_err(iam_error("ListOpenIDConnectProviders"))?;
    for entry in list.open_id_connect_provider_list() {
        let Some(arn) = entry.arn() else { continue };
        // The ARN ends in the URL: most providers are ruled out without a call.
        if !arn.ends_with(&format!("oidc-provider/{want}")) {
            continue;
        }
        let got = iam
            .get_open_id_connect_provider()
            .open_id_connect_provider_arn(arn)
            .send()
            .await
            .map_err(iam_error("GetOpenIDConnectProvider"))?;
        if got.url().map(provider_url) == Some(want) {
            return Ok(Some(Provider {
                arn: arn.to_string(),
                client_ids: got.client_id_list().to_vec(),
            }));
        }
    }
    Ok(None)
}

/// What [`ensure_provider`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ensured {
    Created,
    /// These client IDs were added.
    Updated(Vec<String>),
    Unchanged,
}

/// Creates the provider for `issuer` with `client_ids`, or adds the missing ones to the one
/// there (never removes any: others may rely on them). `thumbprints` may be empty: IAM no
/// longer uses them for issuers with publicly trusted certificates.
pub async fn ensure_provider(
    iam: &aws_sdk_iam::Client,
    issuer: &str,
    client_ids: &[String],
    thumbprints: &[String],
) -> Result<(String, Ensured), AwsError> {
    if let Some(found) = find_provider(iam, issuer).await? {
        let missing: Vec<String> = client_ids
            .iter()
            .filter(|id| !found.client_ids.contains(id))
            .cloned()
            .collect();
        for id in &missing {
            iam.add_client_id_to_open_id_connect_provider()
                .open_id_connect_provider_arn(&found.arn)
                .client_id(id)
                .send()
                .await
                .map_err(iam_error("AddClientIDToOpenIDConnectProvider"))?;
        }
        let what = if missing.is_empty() {
            Ensured::Unchanged
        } else {
            Ensured::Updated(missing)
        };
        return Ok((found.arn, what));
    }
    let created = iam
        .create_open_id_connect_provider()
        .url(format!("https://{}", provider_url(issuer)))
        .set_client_id_list(Some(client_ids.to_vec()))
        .set_thumbprint_list((!thumbprints.is_empty()).then(|| thumbprints.to_vec()))
        .send()
        .await
        .map_err(iam_error("CreateOpenIDConnectProvider"))?;
    let arn = created
        .open_id_connect_provider_arn()
        .unwrap_or_default()
        .to_string();
    Ok((arn, Ensured::Created))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_urls() {
        assert_eq!(
            object_keys("/c1/"),
            ["c1/.well-known/openid-configuration", "c1/openid/v1/jwks"]
        );
        assert_eq!(object_keys("")[1], "openid/v1/jwks");
        assert_eq!(
            provider_url("https://b.s3.amazonaws.com/c1/"),
            "b.s3.amazonaws.com/c1"
        );
    }
}
