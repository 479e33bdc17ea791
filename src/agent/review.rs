//! Who is asking: the pod's projected token, checked by the API server (`TokenReview`).
//!
//! [`claims`] reads a review's status (pure); [`TokenReviewer`] is the I/O edge, with
//! [`KubeTokenReviewer`] as the real one (kube-rs, the agent's own ServiceAccount).

use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::api::PostParams;
use kube::{Api, Client};

/// The audience of the tokens the webhook projects for Pod Identity (docs/contract.md §2).
pub const AUDIENCE: &str = "pods.eks.amazonaws.com";
/// `status.user.extra` key naming the pod a token is bound to.
pub const EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";
/// `status.user.extra` key carrying that pod's uid.
pub const EXTRA_POD_UID: &str = "authentication.kubernetes.io/pod-uid";

/// What a valid pod token says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodClaims {
    pub namespace: String,
    pub service_account: String,
    pub pod_name: String,
    pub pod_uid: String,
}

/// Why a token gets no credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenReviewError {
    /// The API server says no (invalid, expired, wrong audience, not a pod's token): 403.
    #[error("{0}")]
    Denied(String),
    /// The review could not be made (API server unreachable, slow, or refused the agent): 503.
    #[error("token review unavailable: {0}")]
    Unavailable(String),
}

/// Reads a TokenReview status: the token must be authenticated, for [`AUDIENCE`], a
/// ServiceAccount's, and bound to a pod.
pub fn claims(status: &TokenReviewStatus) -> Result<PodClaims, TokenReviewError> {
    let denied = |m: &str| Err(TokenReviewError::Denied(m.to_string()));
    if status.authenticated != Some(true) {
        // The API server's own reason (e.g. "token audiences ... is invalid for the target
        // audiences"), which never quotes the token.
        let why = status
            .error
            .as_deref()
            .filter(|e| !e.is_empty())
            .unwrap_or("the token is not valid");
        return Err(TokenReviewError::Denied(format!(
            "token not authenticated by the Kubernetes API: {}",
            cut(why, 300)
        )));
    }
    if !status
        .audiences
        .as_ref()
        .is_some_and(|a| a.iter().any(|a| a == AUDIENCE))
    {
        return denied("token is not for the audience pods.eks.amazonaws.com");
    }
    let Some(user) = status.user.as_ref() else {
        return denied("token review names no user");
    };
    let username = user.username.as_deref().unwrap_or("");
    let Some((namespace, service_account)) = username
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .filter(|(ns, sa)| !ns.is_empty() && !sa.is_empty() && !sa.contains(':'))
    else {
        return denied("token is not a ServiceAccount token");
    };
    let extra = |key: &str| {
        user.extra
            .as_ref()
            .and_then(|e| e.get(key))
            .and_then(|v| v.first())
            .filter(|v| !v.is_empty())
            .cloned()
    };
    let (Some(pod_name), Some(pod_uid)) = (extra(EXTRA_POD_NAME), extra(EXTRA_POD_UID)) else {
        return denied("token is not bound to a pod (use the projected token the webhook mounts)");
    };
    Ok(PodClaims {
        namespace: namespace.to_string(),
        service_account: service_account.to_string(),
        pod_name,
        pod_uid,
    })
}

fn cut(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Asks the API server about a token.
pub trait TokenReviewer: Send + Sync + 'static {
    fn review<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<PodClaims, TokenReviewError>>;

    /// Whether the API server answered recently (for `/readyz`).
    fn reachable(&self) -> BoxFuture<'_, bool>;
}

/// `TokenReview` through kube-rs, each call bounded by `timeout`.
pub struct KubeTokenReviewer {
    client: Client,
    timeout: Duration,
}

impl KubeTokenReviewer {
    pub fn new(client: Client, timeout: Duration) -> Self {
        Self { client, timeout }
    }
}

impl TokenReviewer for KubeTokenReviewer {
    fn review<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<PodClaims, TokenReviewError>> {
        Box::pin(async move {
            let review = TokenReview {
                spec: TokenReviewSpec {
                    audiences: Some(vec![AUDIENCE.to_string()]),
                    token: Some(token.to_string()),
                },
                ..Default::default()
            };
            let api: Api<TokenReview> = Api::all(self.client.clone());
            let answer =
                tokio::time::timeout(self.timeout, api.create(&PostParams::default(), &review))
                    .await
                    .map_err(|_| {
                        TokenReviewError::Unavailable(format!(
                            "the Kubernetes API did not answer within {:?}",
                            self.timeout
                        ))
                    })?
                    .map_err(|e| TokenReviewError::Unavailable(describe_kube_error(&e)))?;
            claims(&answer.status.unwrap_or_default())
        })
    }

    fn reachable(&self) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            matches!(
                tokio::time::timeout(self.timeout, self.client.apiserver_version()).await,
                Ok(Ok(_))
            )
        })
    }
}

/// A kube-rs error, without anything from the request (the token is in its body).
fn describe_kube_error(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => {
            let hint = if status.code == 403 {
                " (the agent's ServiceAccount needs `create` on tokenreviews.authentication.k8s.io)"
            } else {
                ""
            };
            format!(
                "the Kubernetes API answered {} {}: {}{hint}",
                status.code,
                status.reason,
                cut(&status.message, 300)
            )
        }
        other => format!(
            "cannot reach the Kubernetes API: {}",
            cut(&other.to_string(), 300)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::authentication::v1::UserInfo;
    use std::collections::BTreeMap;

    fn pod_status() -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated: Some(true),
            audiences: Some(vec![AUDIENCE.into()]),
            user: Some(UserInfo {
                username: Some("system:serviceaccount:team-a:carts".into()),
                uid: Some("b5e2b2a4-0000-4000-8000-000000000001".into()),
                groups: Some(vec!["system:serviceaccounts".into()]),
                extra: Some(BTreeMap::from([
                    (EXTRA_POD_NAME.to_string(), vec!["carts-7d9f".to_string()]),
                    (EXTRA_POD_UID.to_string(), vec!["9f3c".to_string()]),
                ])),
            }),
            error: None,
        }
    }

    #[test]
    fn a_pod_bound_token_gives_its_pod() {
        assert_eq!(
            claims(&pod_status()).unwrap(),
            PodClaims {
                namespace: "team-a".into(),
                service_account: "carts".into(),
                pod_name: "carts-7d9f".into(),
                pod_uid: "9f3c".into(),
            }
        );
    }

    #[test]
    fn everything_else_is_denied() {
        let unauthenticated = TokenReviewStatus {
            authenticated: Some(false),
            error: Some("[invalid bearer token, token has been invalidated]".into()),
            ..Default::default()
        };
        let e = claims(&unauthenticated).unwrap_err().to_string();
        assert!(e.contains("token has been invalidated"), "{e}");
        assert!(matches!(
            claims(&TokenReviewStatus::default()),
            Err(TokenReviewError::Denied(_))
        ));

        let mut wrong_audience = pod_status();
        wrong_audience.audiences = Some(vec!["sts.amazonaws.com".into()]);
        assert!(
            claims(&wrong_audience)
                .unwrap_err()
                .to_string()
                .contains("audience")
        );

        let mut user = pod_status();
        user.user.as_mut().unwrap().username = Some("kubernetes-admin".into());
        assert!(
            claims(&user)
                .unwrap_err()
                .to_string()
                .contains("not a ServiceAccount")
        );

        let mut unbound = pod_status();
        unbound.user.as_mut().unwrap().extra = None;
        assert!(
            claims(&unbound)
                .unwrap_err()
                .to_string()
                .contains("not bound to a pod")
        );

        let mut odd = pod_status();
        odd.user.as_mut().unwrap().username = Some("system:serviceaccount:a:b:c".into());
        assert!(claims(&odd).is_err());
    }
}
