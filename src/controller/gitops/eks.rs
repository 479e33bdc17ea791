//! The GitOps associations controller's EKS calls, behind a small trait ([`AssociationsApi`]):
//! List and Describe (the role and the tags: ownership is a tag), Create with the ownership
//! tag, Update of the role, Delete. [`AwsEks`] implements it with `aws-sdk-eks`, whose standard
//! retries (exponential backoff with jitter and a retry quota) cover throttling and 5xx; what
//! still fails is retried by the next reconcile.

use std::collections::BTreeMap;

use futures::future::BoxFuture;

use super::plan::{Existing, Key, OwnerTag};
use crate::identity::eks_client::{
    AwsEks, CallError, CallErrorKind, EksApi, Operation, Page, call_error,
};

/// The EKS calls the controller makes.
pub trait AssociationsApi: Send + Sync + 'static {
    /// One page of every association of the cluster.
    fn list_page(&self, next_token: Option<String>) -> BoxFuture<'_, Result<Page, CallError>>;

    /// The association with its role and tags; `Ok(None)` once it is gone.
    fn describe<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Existing>, CallError>>;

    /// Creates the association of `key` with `role_arn`, tagged with `owner`; its id.
    fn create<'a>(
        &'a self,
        key: &'a Key,
        role_arn: &'a str,
        owner: &'a OwnerTag,
    ) -> BoxFuture<'a, Result<String, CallError>>;

    /// Sets the role of association `id`.
    fn update<'a>(&'a self, id: &'a str, role_arn: &'a str)
    -> BoxFuture<'a, Result<(), CallError>>;

    /// Deletes association `id`; one already gone counts as deleted.
    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), CallError>>;
}

impl AssociationsApi for AwsEks {
    fn list_page(&self, next_token: Option<String>) -> BoxFuture<'_, Result<Page, CallError>> {
        EksApi::list_page(self, None, next_token)
    }

    fn describe<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Existing>, CallError>> {
        Box::pin(async move {
            let result = self
                .sdk()
                .describe_pod_identity_association()
                .cluster_name(self.cluster())
                .association_id(id)
                .send()
                .await;
            let out = match result {
                Ok(out) => out,
                Err(e) => {
                    let err = call_error(Operation::Describe, self.cluster(), e);
                    return match err.kind {
                        CallErrorKind::NotFound => Ok(None),
                        _ => Err(err),
                    };
                }
            };
            let fields = out
                .association()
                .and_then(|a| Some((a, a.namespace()?, a.service_account()?, a.role_arn()?)));
            let Some((a, namespace, service_account, role_arn)) = fields else {
                return Err(CallError::new(
                    Operation::Describe,
                    CallErrorKind::Other,
                    format!(
                        "association {}: the response lacks namespace, serviceAccount or roleArn",
                        crate::shown::Shown(id)
                    ),
                ));
            };
            let tags: BTreeMap<String, String> = a
                .tags()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            Ok(Some(Existing {
                key: Key::new(namespace, service_account),
                association_id: id.to_string(),
                role_arn: role_arn.to_string(),
                tags,
            }))
        })
    }

    fn create<'a>(
        &'a self,
        key: &'a Key,
        role_arn: &'a str,
        owner: &'a OwnerTag,
    ) -> BoxFuture<'a, Result<String, CallError>> {
        Box::pin(async move {
            // The SDK fills `clientRequestToken` once per call: its own retries of a create
            // that did reach EKS come back as the same association, not a second one.
            let out = self
                .sdk()
                .create_pod_identity_association()
                .cluster_name(self.cluster())
                .namespace(&key.namespace)
                .service_account(&key.service_account)
                .role_arn(role_arn)
                .tags(&owner.key, &owner.value)
                .send()
                .await
                .map_err(|e| call_error(Operation::Create, self.cluster(), e))?;
            Ok(out
                .association()
                .and_then(|a| a.association_id())
                .unwrap_or_default()
                .to_string())
        })
    }

    fn update<'a>(
        &'a self,
        id: &'a str,
        role_arn: &'a str,
    ) -> BoxFuture<'a, Result<(), CallError>> {
        Box::pin(async move {
            self.sdk()
                .update_pod_identity_association()
                .cluster_name(self.cluster())
                .association_id(id)
                .role_arn(role_arn)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| call_error(Operation::Update, self.cluster(), e))
        })
    }

    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), CallError>> {
        Box::pin(async move {
            match self
                .sdk()
                .delete_pod_identity_association()
                .cluster_name(self.cluster())
                .association_id(id)
                .send()
                .await
            {
                Ok(_) => Ok(()),
                Err(e) => match call_error(Operation::Delete, self.cluster(), e) {
                    e if e.kind == CallErrorKind::NotFound => Ok(()),
                    e => Err(e),
                },
            }
        })
    }
}
