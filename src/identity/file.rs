//! Associations from a file (SPEC §7), for clusters without EKS and for local runs.
//!
//! YAML or JSON, re-read when it changes; a broken file keeps the last good content.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use futures::future::BoxFuture;
use serde::Deserialize;

use super::{
    Association, AssociationIndex, AssociationSource, AssociationSummary, Freshness, IdentityError,
    index_associations, index_get, role_arn,
};
use crate::reload::{ReloadOutcome, Reloadable};

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read associations file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("associations file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Document {
    Wrapped(Wrapped),
    List(Vec<Association>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wrapped {
    #[serde(default)]
    associations: Vec<Association>,
}

/// Parses and checks an associations document (YAML or JSON).
pub fn parse(path: &Path, text: &str) -> Result<Vec<Association>, FileError> {
    let invalid = |message: String| FileError::Invalid {
        path: path.to_owned(),
        message,
    };
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    // Parse as the wrapped form first so its error (which names the bad key) is the one shown.
    let list = match serde_yaml_ng::from_str::<Wrapped>(text) {
        Ok(w) => w.associations,
        Err(wrapped_err) => match serde_yaml_ng::from_str::<Document>(text) {
            Ok(Document::List(l)) => l,
            Ok(Document::Wrapped(w)) => w.associations,
            Err(_) => return Err(invalid(wrapped_err.to_string())),
        },
    };
    for (i, a) in list.iter().enumerate() {
        check(a).map_err(|m| {
            invalid(format!(
                "associations[{i}] ({}/{}): {m}",
                a.namespace, a.service_account
            ))
        })?;
    }
    Ok(list)
}

/// A DNS-1123 label (namespace) or subdomain (ServiceAccount name).
fn is_dns_name(s: &str, max: usize, dots: bool) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
        && (dots || !s.contains('.'))
}

fn check(a: &Association) -> Result<(), String> {
    if !is_dns_name(&a.namespace, 63, false) {
        return Err(format!(
            "namespace `{}` is not a valid namespace name",
            a.namespace
        ));
    }
    if !is_dns_name(&a.service_account, 253, true) {
        return Err(format!(
            "serviceAccount `{}` is not a valid ServiceAccount name",
            a.service_account
        ));
    }
    role_arn::validate(&a.role_arn).map_err(|e| format!("roleArn {e}"))?;
    if let Some(t) = &a.target_role_arn {
        role_arn::validate(t).map_err(|e| format!("targetRoleArn {e}"))?;
    }
    Ok(())
}

/// Reads and indexes an associations file.
pub fn load(path: &Path) -> Result<(AssociationIndex, usize, Vec<u8>), FileError> {
    let bytes = std::fs::read(path).map_err(|source| FileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let (index, count) = index_bytes(path, &bytes)?;
    Ok((index, count, bytes))
}

fn index_bytes(path: &Path, bytes: &[u8]) -> Result<(AssociationIndex, usize), FileError> {
    let text = std::str::from_utf8(bytes).map_err(|_| FileError::Invalid {
        path: path.to_owned(),
        message: "not UTF-8 text".into(),
    })?;
    let list = parse(path, text)?;
    let count = list.len();
    let index = index_associations(list).map_err(|message| FileError::Invalid {
        path: path.to_owned(),
        message,
    })?;
    Ok((index, count))
}

/// The associations of one file, swapped atomically on reload.
pub struct FileSource {
    path: PathBuf,
    index: ArcSwap<AssociationIndex>,
    count: std::sync::atomic::AtomicUsize,
}

impl FileSource {
    /// Loads the file; a missing or broken file at start-up is an error (nothing to fall back on).
    pub fn open(path: impl Into<PathBuf>) -> Result<(Arc<Self>, FileReloader), FileError> {
        let path = path.into();
        let (index, count, bytes) = load(&path)?;
        let source = Arc::new(Self {
            path: path.clone(),
            index: ArcSwap::from_pointee(index),
            count: count.into(),
        });
        let reloader = FileReloader {
            source: source.clone(),
            last: bytes,
        };
        Ok((source, reloader))
    }

    /// A source over a fixed list (tests, the offline checker).
    pub fn from_list(list: Vec<Association>) -> Result<Arc<Self>, String> {
        let count = list.len();
        Ok(Arc::new(Self {
            path: PathBuf::from("<memory>"),
            index: ArcSwap::from_pointee(index_associations(list)?),
            count: count.into(),
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.count.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The association's details (the file holds them all).
    pub fn get(&self, namespace: &str, service_account: &str) -> Option<Arc<Association>> {
        index_get(&self.index.load(), namespace, service_account).map(|a| a.details.clone())
    }

    fn summary(&self, namespace: &str, service_account: &str) -> Option<Arc<AssociationSummary>> {
        index_get(&self.index.load(), namespace, service_account).map(|a| a.summary.clone())
    }
}

impl AssociationSource for FileSource {
    fn name(&self) -> &'static str {
        "file"
    }

    fn lookup<'a>(
        &'a self,
        namespace: &'a str,
        service_account: &'a str,
        _freshness: Freshness,
    ) -> BoxFuture<'a, Result<Option<Arc<AssociationSummary>>, IdentityError>> {
        let found = self.summary(namespace, service_account);
        Box::pin(std::future::ready(Ok(found)))
    }

    fn details<'a>(
        &'a self,
        namespace: &'a str,
        service_account: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<Association>>, IdentityError>> {
        let found = self.get(namespace, service_account);
        Box::pin(std::future::ready(Ok(found)))
    }

    fn ready(&self) -> bool {
        true
    }
}

/// Re-reads the file when its bytes change.
pub struct FileReloader {
    source: Arc<FileSource>,
    last: Vec<u8>,
}

impl Reloadable for FileReloader {
    fn what(&self) -> String {
        format!("associations file {}", self.source.path.display())
    }

    fn check(&mut self) -> ReloadOutcome {
        let bytes = match std::fs::read(&self.source.path) {
            Ok(b) => b,
            Err(e) => return ReloadOutcome::Failed(format!("cannot read: {e}")),
        };
        if bytes == self.last {
            return ReloadOutcome::Unchanged;
        }
        match index_bytes(&self.source.path, &bytes) {
            Ok((index, count)) => {
                self.source.index.store(Arc::new(index));
                self.source
                    .count
                    .store(count, std::sync::atomic::Ordering::Relaxed);
                self.last = bytes;
                ReloadOutcome::Reloaded
            }
            Err(e) => ReloadOutcome::Failed(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "associations:\n  - namespace: team-a\n    serviceAccount: carts\n    roleArn: arn:aws:iam::111122223333:role/carts\n";

    #[test]
    fn yaml_and_json_and_bare_list() {
        let p = Path::new("a.yaml");
        assert_eq!(parse(p, GOOD).unwrap().len(), 1);
        let json = r#"{"associations":[{"namespace":"a","serviceAccount":"b","roleArn":"arn:aws:iam::111122223333:role/x","externalId":"e","disableSessionTags":true,"targetRoleArn":"arn:aws:iam::444455556666:role/y"}]}"#;
        let l = parse(p, json).unwrap();
        assert_eq!(l[0].external_id.as_deref(), Some("e"));
        let bare = "- {namespace: a, serviceAccount: b, roleArn: 'arn:aws-cn:iam::111122223333:role/path/x'}";
        assert_eq!(parse(p, bare).unwrap().len(), 1);
    }

    #[test]
    fn errors_name_the_entry_and_the_problem() {
        let p = Path::new("a.yaml");
        let bad_arn = GOOD.replace("arn:aws:iam::111122223333:role/carts", "carts");
        let e = parse(p, &bad_arn).unwrap_err().to_string();
        assert!(
            e.contains("associations[0] (team-a/carts)") && e.contains("roleArn"),
            "{e}"
        );
        let typo = GOOD.replace("roleArn", "rolearn");
        let e = parse(p, &typo).unwrap_err().to_string();
        assert!(e.contains("rolearn") || e.contains("roleArn"), "{e}");
        let bad_ns = GOOD.replace("team-a", "Team_A");
        assert!(parse(p, &bad_ns).is_err());
    }

    #[test]
    fn reload_keeps_last_good_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.yaml");
        std::fs::write(&path, GOOD).unwrap();
        let (src, mut reloader) = FileSource::open(&path).unwrap();
        assert!(src.get("team-a", "carts").is_some());
        assert_eq!(reloader.check(), ReloadOutcome::Unchanged);

        std::fs::write(&path, "associations: [ {broken").unwrap();
        assert!(matches!(reloader.check(), ReloadOutcome::Failed(_)));
        assert!(
            src.get("team-a", "carts").is_some(),
            "last good content kept"
        );

        std::fs::write(&path, GOOD.replace("carts", "orders")).unwrap();
        assert_eq!(reloader.check(), ReloadOutcome::Reloaded);
        assert!(src.get("team-a", "carts").is_none());
        assert!(src.get("team-a", "orders").is_some());
    }
}
