//! The associations file as an identity source: [`FileSource`] answers from an in-memory index,
//! swapped atomically when [`FileReloader`] sees the file change; a broken file, or one that
//! comes back empty without saying `associations: []`, keeps the last good content.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use futures::future::BoxFuture;

use super::format::{DEFAULT_MAX_BYTES, FileError, Parsed, load, parse_bytes};
use crate::files;
use crate::identity::{
    Association, AssociationIndex, AssociationSource, AssociationSummary, Freshness, IdentityError,
    IndexError, index_associations, index_get,
};
use crate::reload::{LastRefused, ReloadOutcome, Reloadable};

fn index(path: &Path, parsed: Parsed) -> Result<AssociationIndex, FileError> {
    index_associations(parsed.associations, &parsed.lines).map_err(|e| FileError::Invalid {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// The associations of one file, swapped atomically on reload.
pub struct FileSource {
    path: PathBuf,
    index: ArcSwap<AssociationIndex>,
    count: AtomicUsize,
    empty_reloads_refused: AtomicU64,
}

impl FileSource {
    /// Loads the file (at most [`DEFAULT_MAX_BYTES`]); a missing or broken file at start-up is
    /// an error (nothing to fall back on).
    pub fn open(path: impl Into<PathBuf>) -> Result<(Arc<Self>, FileReloader), FileError> {
        Self::open_capped(path, DEFAULT_MAX_BYTES)
    }

    /// [`FileSource::open`] with a size cap of `max_bytes`, kept for reloads.
    pub fn open_capped(
        path: impl Into<PathBuf>,
        max_bytes: u64,
    ) -> Result<(Arc<Self>, FileReloader), FileError> {
        let path = path.into();
        let (parsed, bytes) = load(&path, max_bytes)?;
        let count = parsed.associations.len();
        let source = Arc::new(Self {
            index: ArcSwap::from_pointee(index(&path, parsed)?),
            path,
            count: count.into(),
            empty_reloads_refused: AtomicU64::new(0),
        });
        let reloader = FileReloader {
            source: source.clone(),
            last: bytes,
            max_bytes,
            refused: LastRefused::default(),
        };
        Ok((source, reloader))
    }

    /// A source over a fixed list (tests, the offline checker).
    pub fn from_list(list: Vec<Association>) -> Result<Arc<Self>, IndexError> {
        let count = list.len();
        Ok(Arc::new(Self {
            path: PathBuf::from("<memory>"),
            index: ArcSwap::from_pointee(index_associations(list, &Default::default())?),
            count: count.into(),
            empty_reloads_refused: AtomicU64::new(0),
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many reloads came back empty while associations were loaded, and were refused.
    pub fn empty_reloads_refused(&self) -> u64 {
        self.empty_reloads_refused.load(Ordering::Relaxed)
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

    fn bounded(&self) -> bool {
        true
    }
}

/// Re-reads the file when its bytes change.
pub struct FileReloader {
    source: Arc<FileSource>,
    last: Vec<u8>,
    max_bytes: u64,
    /// The content (or read error) last refused: reported and counted once.
    refused: LastRefused,
}

impl Reloadable for FileReloader {
    fn what(&self) -> String {
        format!("associations file {}", self.source.path.display())
    }

    fn check(&mut self) -> ReloadOutcome {
        let bytes = match files::read_capped(&self.source.path, self.max_bytes) {
            Ok(b) => b,
            Err(e) => {
                let reason = format!("cannot read: {e}");
                return self.refused.unreadable(reason);
            }
        };
        if bytes == self.last {
            self.refused.forget();
            return ReloadOutcome::Unchanged;
        }
        if self.refused.is_last(&bytes) {
            return ReloadOutcome::Unchanged;
        }
        let parsed = match parse_bytes(&self.source.path, &bytes) {
            Ok(p) => p,
            Err(e) => return self.refused.refuse(&bytes, e.to_string()),
        };
        let loaded = self.source.len();
        if parsed.associations.is_empty() && loaded > 0 && !parsed.explicitly_empty {
            // `last` stays as it was: the loaded associations stay in force until the file
            // says `associations: []`.
            self.source
                .empty_reloads_refused
                .fetch_add(1, Ordering::Relaxed);
            return self.refused.refuse(
                &bytes,
                format!(
                    "the file now holds no associations (empty, `associations:` with no list, or \
                     `[]`), as a truncated write would; keeping the {loaded} loaded before. \
                     Write `associations: []` to remove them all"
                ),
            );
        }
        let count = parsed.associations.len();
        match index(&self.source.path, parsed) {
            Ok(index) => {
                self.source.index.store(Arc::new(index));
                self.source.count.store(count, Ordering::Relaxed);
                self.last = bytes;
                self.refused.forget();
                ReloadOutcome::Reloaded
            }
            Err(e) => self.refused.refuse(&bytes, e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const GOOD: &str = "associations:\n  - namespace: team-a\n    serviceAccount: carts\n    roleArn: arn:aws:iam::111122223333:role/carts\n";

    #[test]
    fn a_symlink_to_a_secret_file_is_not_quoted_at_start_up_or_on_reload() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret.env");
        std::fs::write(
            &secret,
            "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY\n",
        )
        .unwrap();
        let path = dir.path().join("associations.yaml");
        std::os::unix::fs::symlink(&secret, &path).unwrap();
        let e = FileSource::open(&path).err().unwrap().to_string();
        assert!(
            !e.contains("wJalrXUtnFEMIK7MDENG") && !e.contains("AWS_SECRET"),
            "{e}"
        );

        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, GOOD).unwrap();
        let (_src, mut reloader) = FileSource::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&secret, &path).unwrap();
        let ReloadOutcome::Failed(e) = reloader.check() else {
            panic!("a secret file is not an associations file")
        };
        assert!(
            !e.contains("wJalrXUtnFEMIK7MDENG") && !e.contains("AWS_SECRET"),
            "{e}"
        );
    }

    /// Runs `f` on another thread and fails (instead of hanging) if it blocks.
    fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("blocked: the read did not return")
    }

    fn mkfifo(path: &Path) {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    #[test]
    fn dev_zero_a_fifo_and_oversized_files_are_refused_without_blocking() {
        let e = within(|| FileSource::open("/dev/zero").err().unwrap().to_string());
        assert!(
            e.contains("/dev/zero") && e.contains("a character device, not a regular file"),
            "{e}"
        );

        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.yaml");
        mkfifo(&fifo);
        let f = fifo.clone();
        let e = within(move || FileSource::open(f).err().unwrap().to_string());
        assert!(e.contains("a FIFO, not a regular file"), "{e}");

        let big = dir.path().join("big.yaml");
        std::fs::write(&big, GOOD).unwrap();
        let e = FileSource::open_capped(&big, 50).err().unwrap().to_string();
        assert!(e.contains("larger than the 50-byte limit"), "{e}");

        // On reload: the FIFO or the device in place of the file keeps the last good content.
        let path = dir.path().join("a.yaml");
        std::fs::write(&path, GOOD).unwrap();
        let (src, reloader) = FileSource::open_capped(&path, 4096).unwrap();
        std::fs::remove_file(&path).unwrap();
        mkfifo(&path);
        let (outcome, reloader) = within(move || {
            let mut r = reloader;
            (r.check(), r)
        });
        assert!(
            matches!(&outcome, ReloadOutcome::Failed(e) if e.contains("a FIFO")),
            "{outcome:?}"
        );
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
        let (outcome, mut reloader) = within(move || {
            let mut r = reloader;
            (r.check(), r)
        });
        assert!(
            matches!(&outcome, ReloadOutcome::Failed(e) if e.contains("character device")),
            "{outcome:?}"
        );
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, GOOD.repeat(40)).unwrap();
        assert!(
            matches!(reloader.check(), ReloadOutcome::Failed(e) if e.contains("4096-byte limit"))
        );
        assert!(src.get("team-a", "carts").is_some());
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

    #[test]
    fn a_reload_that_comes_back_empty_keeps_the_loaded_associations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.yaml");
        std::fs::write(&path, GOOD).unwrap();
        let (src, mut reloader) = FileSource::open(&path).unwrap();
        let mut refused = 0;
        for empty in [
            "",
            "   \n\n",
            "associations:",
            "associations:\n",
            "[]",
            "{}",
            "# emptied\n",
        ] {
            std::fs::write(&path, empty).unwrap();
            let outcome = reloader.check();
            assert!(
                matches!(&outcome, ReloadOutcome::Failed(e) if e.contains("keeping the 1 loaded before") && e.contains("associations: []")),
                "{empty:?}: {outcome:?}"
            );
            refused += 1;
            assert_eq!(src.len(), 1, "{empty:?}");
            assert!(src.get("team-a", "carts").is_some(), "{empty:?}");
            // Checked again, the same content is not a new failure: reported and counted once.
            assert_eq!(reloader.check(), ReloadOutcome::Unchanged, "{empty:?}");
            assert_eq!(src.empty_reloads_refused(), refused, "{empty:?}");
        }
        // Said explicitly, emptying is what the operator wants.
        std::fs::write(&path, "associations: []\n").unwrap();
        assert_eq!(reloader.check(), ReloadOutcome::Reloaded);
        assert!(src.is_empty() && src.get("team-a", "carts").is_none());
        // Empty while nothing was loaded is nothing to protect.
        std::fs::write(&path, "").unwrap();
        assert_eq!(reloader.check(), ReloadOutcome::Reloaded);
        std::fs::write(&path, GOOD).unwrap();
        assert_eq!(reloader.check(), ReloadOutcome::Reloaded);
        assert_eq!(src.len(), 1);
        assert_eq!(src.empty_reloads_refused(), refused);
    }

    #[test]
    fn an_empty_file_at_start_up_is_an_empty_source() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.yaml");
        std::fs::write(&path, "").unwrap();
        let (src, _) = FileSource::open(&path).unwrap();
        assert!(src.is_empty());
    }
}
