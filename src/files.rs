//! Files that cannot hurt (issue 21): reads that take only regular files up to a size cap, and
//! writes that go to a fresh file renamed into place with an exact mode.
//!
//! A path given to the webhook may name `/dev/zero`, a FIFO nobody writes to, or a huge file;
//! a path it writes to may be a planted symlink or sit under a permissive umask. None of these
//! may block start-up, exhaust memory, or put a private key where others can read it.

use std::fs::{File, OpenOptions, Permissions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Why a file was not read. Never carries the file's content.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("is {kind}, not a regular file")]
    NotRegular { kind: &'static str },
    #[error("is larger than the {max}-byte limit")]
    TooLarge { max: u64 },
}

/// Reads `path` (following symlinks, as ConfigMap and Secret volumes need) if it is a regular
/// file of at most `max` bytes.
///
/// The file is opened non-blocking, so a FIFO cannot stall the caller, and its type is checked
/// on the opened descriptor, so a swap between the check and the read changes nothing.
pub fn read_capped(path: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    let ft = meta.file_type();
    if !ft.is_file() {
        let kind = if ft.is_dir() {
            "a directory"
        } else if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_char_device() {
            "a character device"
        } else if ft.is_block_device() {
            "a block device"
        } else if ft.is_socket() {
            "a socket"
        } else {
            "not a file"
        };
        return Err(ReadError::NotRegular { kind });
    }
    if meta.len() > max {
        return Err(ReadError::TooLarge { max });
    }
    // The size can change after the check (a file being appended to): the read stays bounded.
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(ReadError::TooLarge { max });
    }
    Ok(bytes)
}

/// Replaces `path` with `bytes`, readable as `mode` says, whatever the umask.
///
/// The bytes go to a new file created exclusively (`O_CREAT|O_EXCL`) under a random name in the
/// same directory, which is then renamed over `path`: a symlink planted at `path` is replaced,
/// never written through, and readers see the old or the new content, never half of it.
pub fn write_replacing(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("{} names no file", path.display())))?;
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(name);
    prefix.push(".");
    let mut tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        .permissions(Permissions::from_mode(mode & 0o600))
        .tempfile_in(dir)?;
    // fchmod is not masked by the umask (the mode given to open is).
    tmp.as_file()
        .set_permissions(Permissions::from_mode(mode))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    // Make the rename itself durable; not all filesystems allow syncing a directory.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Creates `dir` and every missing parent private to the owner (0700, whatever the umask): a key
/// written under `--out a/b` is not reachable through a world-readable `a` this call made.
/// Directories that already exist are left as they are.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    // The missing ones, outermost first.
    let missing: Vec<&Path> = dir
        .ancestors()
        .filter(|p| !p.as_os_str().is_empty())
        .take_while(|p| !p.is_dir())
        .collect();
    for dir in missing.into_iter().rev() {
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => std::fs::set_permissions(dir, Permissions::from_mode(0o700))?,
            // Created by someone else meanwhile: leave it as it is, like an existing one.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A directory only this process uses (0700, random name under the temporary directory),
/// removed when the value is dropped.
pub fn private_temp_dir(prefix: &str) -> std::io::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .permissions(Permissions::from_mode(0o700))
        .tempdir()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_files_up_to_the_cap_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"12345").unwrap();
        assert_eq!(read_capped(&p, 5).unwrap(), b"12345");
        assert!(matches!(
            read_capped(&p, 4),
            Err(ReadError::TooLarge { max: 4 })
        ));
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        assert_eq!(read_capped(&link, 5).unwrap(), b"12345");
    }

    #[test]
    fn devices_fifos_and_directories_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_capped(&fifo, 1 << 20).unwrap_err().to_string();
        assert!(e.contains("a FIFO"), "{e}");
        let e = read_capped(Path::new("/dev/zero"), 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(e.contains("a character device"), "{e}");
        let e = read_capped(dir.path(), 1 << 20).unwrap_err().to_string();
        assert!(e.contains("a directory"), "{e}");
    }
}
