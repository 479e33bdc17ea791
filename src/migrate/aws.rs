//! The AWS edges of the migration: IAM roles through `aws-sdk-iam`, associations through
//! `aws-sdk-eks` (reads through the identity layer's [`EksApi`]), or an associations file.

use std::collections::BTreeSet;
use std::path::PathBuf;

use aws_sdk_eks::error::{DisplayErrorContext, ProvideErrorMetadata};
use futures::StreamExt;
use futures::future::BoxFuture;

use super::inventory::{Associations, Key, RoleState, TargetInfo, role_parts};
use super::{AssociationTarget, Created, EdgeError, RoleStore};
use crate::files::{self, ReadError};
use crate::identity::eks_client::{AwsEks, EksApi};
use crate::identity::{Association, file};

/// Roles through `aws-sdk-iam`.
pub struct IamRoles {
    client: aws_sdk_iam::Client,
}

impl IamRoles {
    pub fn new(client: aws_sdk_iam::Client) -> Self {
        Self { client }
    }
}

fn sdk_message<E, R>(err: &aws_sdk_iam::error::SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match err.as_service_error() {
        Some(e) => format!(
            "{}: {}",
            e.code().unwrap_or("error"),
            e.message().unwrap_or("no message")
        ),
        None => DisplayErrorContext(err).to_string(),
    }
}

impl RoleStore for IamRoles {
    fn trust_policy<'a>(&'a self, role_arn: &'a str) -> BoxFuture<'a, RoleState> {
        Box::pin(async move {
            let Some((_, name)) = role_parts(role_arn) else {
                return RoleState::Unreadable {
                    message: format!("`{role_arn}` is not an IAM role ARN"),
                };
            };
            match self.client.get_role().role_name(name).send().await {
                Ok(out) => {
                    let Some(role) = out.role() else {
                        return RoleState::Unreadable {
                            message: format!("GetRole {name}: the answer had no role"),
                        };
                    };
                    // GetRole looks in the caller's account: a role of the same name elsewhere is
                    // not this one.
                    if role.arn() != role_arn {
                        return RoleState::Unreadable {
                            message: format!(
                                "the IAM credentials reach {}, not {role_arn}: run with credentials of the role's account",
                                role.arn()
                            ),
                        };
                    }
                    match role.assume_role_policy_document() {
                        Some(doc) => RoleState::Found {
                            trust_policy: doc.to_string(),
                        },
                        None => RoleState::Unreadable {
                            message: format!("GetRole {name}: no trust policy in the answer"),
                        },
                    }
                }
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_no_such_entity_exception()) =>
                {
                    RoleState::NotFound
                }
                Err(e) => RoleState::Unreadable {
                    message: format!("cannot read role {name} (iam:GetRole): {}", sdk_message(&e)),
                },
            }
        })
    }

    fn put_trust_policy<'a>(
        &'a self,
        role_name: &'a str,
        policy: &'a str,
    ) -> BoxFuture<'a, Result<(), EdgeError>> {
        Box::pin(async move {
            self.client
                .update_assume_role_policy()
                .role_name(role_name)
                .policy_document(policy)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| EdgeError::TrustUpdate {
                    role: role_name.to_string(),
                    message: sdk_message(&e),
                })
        })
    }
}

/// Concurrent Describe calls while reading associations.
const DESCRIBE_CONCURRENCY: usize = 8;

/// Associations of an EKS cluster.
pub struct EksTarget {
    client: aws_sdk_eks::Client,
    reads: AwsEks,
    cluster: String,
}

impl EksTarget {
    pub fn new(client: aws_sdk_eks::Client, cluster: impl Into<String>) -> Self {
        let cluster = cluster.into();
        Self {
            reads: AwsEks::new(client.clone(), cluster.clone()),
            client,
            cluster,
        }
    }

    async fn existing(
        &self,
        namespace: &str,
        service_account: &str,
    ) -> Result<Option<Association>, EdgeError> {
        let page = self
            .reads
            .list_page(Some((namespace, service_account)), None)
            .await
            .map_err(EdgeError::Eks)?;
        let Some(s) = page.summaries.first() else {
            return Ok(None);
        };
        self.reads
            .describe(&s.association_id)
            .await
            .map_err(EdgeError::Eks)
    }
}

impl AssociationTarget for EksTarget {
    fn info(&self) -> TargetInfo {
        TargetInfo::Eks {
            cluster: self.cluster.clone(),
        }
    }

    fn read<'a>(
        &'a self,
        wanted: &'a BTreeSet<Key>,
    ) -> BoxFuture<'a, Result<Associations, EdgeError>> {
        Box::pin(async move {
            let mut out = Associations::default();
            let mut ids = Vec::new();
            let mut token = None;
            loop {
                let page = self
                    .reads
                    .list_page(None, token)
                    .await
                    .map_err(EdgeError::Eks)?;
                for s in page.summaries {
                    out.total += 1;
                    let key = (s.namespace, s.service_account);
                    if wanted.contains(&key) {
                        ids.push(s.association_id);
                    }
                    out.present.insert(key);
                }
                token = page.next_token;
                if token.is_none() {
                    break;
                }
            }
            let described: Vec<Result<Option<Association>, EdgeError>> = futures::stream::iter(ids)
                .map(|id| async move { self.reads.describe(&id).await.map_err(EdgeError::Eks) })
                .buffer_unordered(DESCRIBE_CONCURRENCY)
                .collect()
                .await;
            for a in described {
                if let Some(a) = a? {
                    out.by_service_account
                        .insert((a.namespace.clone(), a.service_account.clone()), a);
                }
            }
            Ok(out)
        })
    }

    fn create<'a>(&'a self, a: &'a Association) -> BoxFuture<'a, Result<Created, EdgeError>> {
        Box::pin(async move {
            let result = self
                .client
                .create_pod_identity_association()
                .cluster_name(&self.cluster)
                .namespace(&a.namespace)
                .service_account(&a.service_account)
                .role_arn(&a.role_arn)
                .set_target_role_arn(a.target_role_arn.clone())
                .send()
                .await;
            match result {
                Ok(out) => Ok(Created::Created {
                    association_id: out
                        .association()
                        .and_then(|x| x.association_id())
                        .map(String::from),
                }),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_resource_in_use_exception()) =>
                {
                    // Created meanwhile (another run, a person): report what is there.
                    match self.existing(&a.namespace, &a.service_account).await? {
                        Some(existing) => Ok(Created::Exists(existing)),
                        None => Err(EdgeError::Unlisted {
                            namespace: a.namespace.clone(),
                            service_account: a.service_account.clone(),
                        }),
                    }
                }
                Err(e) => Err(EdgeError::Create {
                    cluster: self.cluster.clone(),
                    message: match e.as_service_error() {
                        Some(s) => format!(
                            "{}: {}",
                            s.code().unwrap_or("error"),
                            s.message().unwrap_or("no message")
                        ),
                        None => DisplayErrorContext(&e).to_string(),
                    },
                }),
            }
        })
    }

    fn cluster_account(&self) -> BoxFuture<'_, Option<String>> {
        Box::pin(async move {
            let out = self
                .client
                .describe_cluster()
                .name(&self.cluster)
                .send()
                .await
                .ok()?;
            let arn = out.cluster()?.arn()?;
            arn.split(':').nth(4).map(String::from)
        })
    }

    fn oidc_issuer(&self) -> BoxFuture<'_, Result<Option<String>, EdgeError>> {
        Box::pin(async move {
            let out = self
                .client
                .describe_cluster()
                .name(&self.cluster)
                .send()
                .await
                .map_err(|e| EdgeError::Describe {
                    cluster: self.cluster.clone(),
                    message: DisplayErrorContext(&e).to_string(),
                })?;
            out.cluster()
                .and_then(|c| c.identity())
                .and_then(|i| i.oidc())
                .and_then(|o| o.issuer())
                .map(|i| Some(i.to_string()))
                .ok_or_else(|| EdgeError::NoEksIssuer(self.cluster.clone()))
        })
    }
}

/// Associations in a file (docs/contract.md §7): read, and appended to (written whole, atomically, so the
/// webhook's reload never sees half a file; comments are not kept).
pub struct FileTarget {
    path: PathBuf,
    lock: tokio::sync::Mutex<()>,
}

impl FileTarget {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The file's entries (none when it does not exist yet), read as the webhook reads it:
    /// a regular file of at most [`file::DEFAULT_MAX_BYTES`].
    fn load(&self) -> Result<Vec<Association>, EdgeError> {
        match file::load(&self.path, file::DEFAULT_MAX_BYTES) {
            Err(file::FileError::Read {
                source: ReadError::Io(e),
                ..
            }) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(EdgeError::File(e)),
            Ok((parsed, _)) => Ok(parsed.associations),
        }
    }

    /// Replaces the file whole (a new file renamed into place: the webhook's reload sees the
    /// old or the new list, never half), keeping its mode (0644 for a new file).
    fn write(&self, list: &[Association]) -> Result<(), EdgeError> {
        #[derive(serde::Serialize)]
        struct File<'a> {
            associations: &'a [Association],
        }
        let text =
            serde_yaml_ng::to_string(&File { associations: list }).map_err(EdgeError::Yaml)?;
        let mode = std::fs::metadata(&self.path)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
            .unwrap_or(0o644);
        files::write_replacing(&self.path, text.as_bytes(), mode).map_err(|error| {
            EdgeError::Write {
                path: self.path.display().to_string(),
                error,
            }
        })
    }
}

impl AssociationTarget for FileTarget {
    fn info(&self) -> TargetInfo {
        TargetInfo::File {
            path: self.path.display().to_string(),
        }
    }

    fn read<'a>(
        &'a self,
        wanted: &'a BTreeSet<Key>,
    ) -> BoxFuture<'a, Result<Associations, EdgeError>> {
        Box::pin(async move {
            let list = self.load()?;
            let mut out = Associations {
                total: list.len(),
                ..Default::default()
            };
            // Exact entries are present as they are; a wanted ServiceAccount is looked up in
            // the webhook's own index, so a pattern entry answers for it as it does at admission.
            for a in &list {
                if !a.namespace.contains('*') && !a.service_account.contains('*') {
                    out.present
                        .insert((a.namespace.clone(), a.service_account.clone()));
                }
            }
            let index = crate::identity::index_associations(list, &Default::default())
                .map_err(EdgeError::Index)?;
            for key in wanted {
                if let Some(found) = index.get(&key.0, &key.1) {
                    let mut a = (*found.details).clone();
                    (a.namespace, a.service_account) = key.clone();
                    out.present.insert(key.clone());
                    out.by_service_account.insert(key.clone(), a);
                }
            }
            Ok(out)
        })
    }

    fn create<'a>(&'a self, a: &'a Association) -> BoxFuture<'a, Result<Created, EdgeError>> {
        Box::pin(async move {
            let _one_writer = self.lock.lock().await;
            let mut list = self.load()?;
            if let Some(existing) = list
                .iter()
                .find(|x| x.namespace == a.namespace && x.service_account == a.service_account)
            {
                return Ok(Created::Exists(existing.clone()));
            }
            list.push(a.clone());
            self.write(&list)?;
            Ok(Created::Created {
                association_id: None,
            })
        })
    }

    fn cluster_account(&self) -> BoxFuture<'_, Option<String>> {
        Box::pin(std::future::ready(None))
    }

    fn oidc_issuer(&self) -> BoxFuture<'_, Result<Option<String>, EdgeError>> {
        Box::pin(std::future::ready(Ok(None)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `migrate` reads the associations file through the webhook's own index: a pattern entry
    /// answers for a ServiceAccount as it does at admission, so a row is `same role` or a
    /// conflict, never a second association beside the pattern.
    #[tokio::test]
    async fn a_pattern_entry_answers_for_the_service_accounts_it_matches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("associations.yaml");
        std::fs::write(
            &path,
            "associations:
  - {namespace: team-a, serviceAccount: carts, roleArn: 'arn:aws:iam::111122223333:role/carts'}
  - {namespace: 'team-*', serviceAccount: '*', roleArn: 'arn:aws:iam::111122223333:role/shared'}
",
        )
        .unwrap();
        let key = |ns: &str, sa: &str| (ns.to_string(), sa.to_string());
        let wanted = BTreeSet::from([
            key("team-a", "carts"),
            key("team-b", "orders"),
            key("prod", "api"),
        ]);
        let found = FileTarget::new(&path).read(&wanted).await.unwrap();
        assert_eq!(found.total, 2);
        let role = |ns: &str, sa: &str| found.get(ns, sa).map(|a| a.role_arn.as_str());
        assert_eq!(
            role("team-a", "carts"),
            Some("arn:aws:iam::111122223333:role/carts")
        );
        assert_eq!(
            role("team-b", "orders"),
            Some("arn:aws:iam::111122223333:role/shared")
        );
        assert_eq!(role("prod", "api"), None);
        let orders = found.get("team-b", "orders").unwrap();
        assert_eq!(
            (orders.namespace.as_str(), orders.service_account.as_str()),
            ("team-b", "orders")
        );
        assert!(found.present.contains(&key("team-b", "orders")));
        assert!(!found.present.contains(&key("prod", "api")));
    }
}
