//! Reading Kubernetes manifests for `check`: files, directories (recursive) and stdin, as
//! multi-document YAML or JSON, with `List` kinds expanded. Every object keeps where it came
//! from (file, document, list item), and every failure names the file and document (and the
//! line when the parser knows it), so a CI log points at what to fix.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::serde_errors::{self, Described, Keys};
use crate::shown::shown;

/// Largest manifest file (or stdin) read, in bytes. Helm charts and kustomize builds of whole
/// clusters stay well below it; anything larger is refused rather than read into memory.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Most documents (plus list items) taken from one file, so a hostile file cannot make the
/// checker build millions of objects out of a small input.
pub const MAX_OBJECTS_PER_FILE: usize = 100_000;

/// Longest parse of one file: past it the file is reported unreadable and the others go on.
/// The flow-depth pre-scan ([`super::flow_depth`]) keeps every known slow shape far below it;
/// this is the bound for what it does not foresee.
pub const DEFAULT_FILE_DEADLINE: Duration = Duration::from_secs(20);

/// Bounds on reading the inputs.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    /// Largest file (or stdin) read, in bytes.
    pub max_file_bytes: u64,
    /// Longest parse of one file.
    pub deadline: Duration,
    /// Whether an input that gives no object is accepted (else it is an error: a CI job
    /// pointed at the wrong path must not pass).
    pub allow_empty: bool,
}

impl Default for ReadLimits {
    fn default() -> Self {
        Self {
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            deadline: DEFAULT_FILE_DEADLINE,
            allow_empty: false,
        }
    }
}

/// The name stdin gets in messages.
pub const STDIN: &str = "<stdin>";

/// Where an object came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The file's path as given (or found under a given directory), or `<stdin>`.
    pub file: String,
    /// 1-based index of the YAML document (or JSON value) in the file.
    pub document: usize,
    /// 1-based index in the `items` of a `List`, when the object came from one.
    pub item: Option<usize>,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} document {}", self.file, self.document)?;
        if let Some(item) = self.item {
            write!(f, " item {item}")?;
        }
        Ok(())
    }
}

/// One Kubernetes object from a manifest.
#[derive(Debug, Clone)]
pub struct ManifestObject {
    pub origin: Origin,
    /// The object as JSON (YAML is converted), with `apiVersion` and `kind`.
    pub object: Value,
}

impl ManifestObject {
    pub fn kind(&self) -> &str {
        self.object["kind"].as_str().unwrap_or_default()
    }

    pub fn api_version(&self) -> &str {
        self.object["apiVersion"].as_str().unwrap_or_default()
    }

    /// `(group, version)` of `apiVersion` (`v1` is the core group `""`).
    pub fn group_version(&self) -> (&str, &str) {
        match self.api_version().split_once('/') {
            Some((group, version)) => (group, version),
            None => ("", self.api_version()),
        }
    }

    pub fn name(&self) -> Option<&str> {
        self.object["metadata"]["name"]
            .as_str()
            .filter(|n| !n.is_empty())
    }

    pub fn namespace(&self) -> Option<&str> {
        self.object["metadata"]["namespace"]
            .as_str()
            .filter(|n| !n.is_empty())
    }

    /// The name for messages: `name`, else `generateName*`, else `(unnamed)`; as
    /// [`crate::shown`] repeats a value (a hostile file's name may be megabytes).
    pub fn display_name(&self) -> String {
        if let Some(name) = self.name() {
            return shown(name).into_owned();
        }
        match self.object["metadata"]["generateName"].as_str() {
            Some(prefix) if !prefix.is_empty() => format!("{}*", shown(prefix)),
            _ => "(unnamed)".to_string(),
        }
    }
}

/// Why an input could not be read. Each names the file, and the document when there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("{file}: cannot read: {message}")]
    Read { file: String, message: String },
    #[error(
        "{file}: larger than {limit} bytes; split it, or raise the limit with --max-file-bytes"
    )]
    TooLarge { file: String, limit: u64 },
    #[error("{file}: more than {limit} objects in one file; split it")]
    TooManyObjects { file: String, limit: usize },
    #[error("{file}: not UTF-8 text (invalid byte at offset {offset})")]
    NotText { file: String, offset: usize },
    #[error("{file} document {document}{}: {message}", line_text(*.line, *.column))]
    Parse {
        file: String,
        document: usize,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
    #[error("{origin}: {message}")]
    NotAnObject { origin: Origin, message: String },
    #[error(
        "{file}: {what}, not a regular file; refused without reading (give a file, a directory, or - for stdin)"
    )]
    NotRegular { file: String, what: &'static str },
    #[error(
        "{file} (line {line}, column {column}): flow collections ([...] or {{...}}) nested deeper than {limit}; not parsed"
    )]
    TooDeep {
        file: String,
        line: usize,
        column: usize,
        limit: usize,
    },
    #[error(
        "{file}: not parsed within {deadline:?}; the file is left unchecked (split it, or give a longer --file-deadline)"
    )]
    Deadline { file: String, deadline: Duration },
    #[error(
        "{file}: no .yaml, .yml or .json file in it; nothing was checked (give the right path, or --allow-empty)"
    )]
    NoFiles { file: String },
    #[error(
        "{file}: no object in it ({why}); nothing was checked (give the right input, or --allow-empty)"
    )]
    NoObjects { file: String, why: &'static str },
}

fn line_text(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(" (line {l}, column {c})"),
        (Some(l), None) => format!(" (line {l})"),
        _ => String::new(),
    }
}

impl ManifestError {
    /// The file the error is about.
    pub fn file(&self) -> &str {
        match self {
            Self::Read { file, .. }
            | Self::TooLarge { file, .. }
            | Self::TooManyObjects { file, .. }
            | Self::NotText { file, .. }
            | Self::Parse { file, .. }
            | Self::NotRegular { file, .. }
            | Self::TooDeep { file, .. }
            | Self::Deadline { file, .. }
            | Self::NoFiles { file }
            | Self::NoObjects { file, .. } => file,
            Self::NotAnObject { origin, .. } => &origin.file,
        }
    }

    /// The 1-based document, when the error is about one.
    pub fn document(&self) -> Option<usize> {
        match self {
            Self::Parse { document, .. } => Some(*document),
            Self::NotAnObject { origin, .. } => Some(origin.document),
            _ => None,
        }
    }

    /// The 1-based line, when the parser gave one.
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::Parse { line, .. } => *line,
            Self::TooDeep { line, .. } => Some(*line),
            _ => None,
        }
    }
}

/// What reading a set of inputs gave: the objects read, and the inputs (or documents) that
/// could not be read. A broken document does not hide the objects of the other files.
#[derive(Debug, Default)]
pub struct Manifests {
    pub objects: Vec<ManifestObject>,
    pub errors: Vec<ManifestError>,
    /// Files (and stdin) read, whatever they held.
    pub files_read: usize,
}

/// One `-f` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Stdin,
    Path(PathBuf),
}

impl Input {
    /// `-` is stdin; anything else a file or directory.
    pub fn parse(arg: &str) -> Self {
        if arg == "-" {
            Self::Stdin
        } else {
            Self::Path(PathBuf::from(arg))
        }
    }
}

/// Reads every input: files as they are, directories recursively (`.yaml`, `.yml`, `.json`,
/// in name order), `-` from stdin, each within `limits`. An input that gives no object and no
/// error is an error itself unless `limits.allow_empty`.
pub fn read_inputs(inputs: &[Input], limits: &ReadLimits) -> Manifests {
    let mut out = Manifests::default();
    for input in inputs {
        let before = (out.objects.len(), out.errors.len(), out.files_read);
        let name = match input {
            Input::Stdin => {
                let read = read_capped(std::io::stdin().lock(), STDIN, limits.max_file_bytes);
                out.files_read += 1;
                collect(&mut out, STDIN, read, limits);
                STDIN.to_string()
            }
            Input::Path(path) => {
                read_path(&mut out, path, limits, true);
                path.display().to_string()
            }
        };
        if !limits.allow_empty && (out.objects.len(), out.errors.len()) == (before.0, before.1) {
            out.errors.push(if out.files_read == before.2 {
                ManifestError::NoFiles { file: name }
            } else {
                ManifestError::NoObjects {
                    why: match input {
                        Input::Stdin => "an empty stream, or only comments",
                        Input::Path(_) if out.files_read - before.2 > 1 => {
                            "its files are empty, or hold only comments"
                        }
                        Input::Path(_) => "empty, or only comments",
                    },
                    file: name,
                }
            });
        }
    }
    out
}

/// What a file that is neither regular nor a directory is, for the message.
fn file_type_name(t: std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    let _ = t;
    "a special file"
}

/// Opens a regular file without ever blocking: `O_NONBLOCK` (opening a FIFO otherwise waits
/// for a writer), then the opened file's own type is checked (the path may have changed since
/// it was looked at).
fn open_regular(path: &Path, name: &str) -> Result<std::fs::File, ManifestError> {
    let read_error = |e: std::io::Error| ManifestError::Read {
        file: name.to_string(),
        message: e.to_string(),
    };
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(read_error)?;
    let t = file.metadata().map_err(read_error)?.file_type();
    if !t.is_file() {
        return Err(ManifestError::NotRegular {
            file: name.to_string(),
            what: file_type_name(t),
        });
    }
    Ok(file)
}

fn read_path(out: &mut Manifests, path: &Path, limits: &ReadLimits, given: bool) {
    let name = path.display().to_string();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            out.errors.push(ManifestError::Read {
                file: name,
                message: e.to_string(),
            });
            return;
        }
    };
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = match std::fs::read_dir(path) {
            Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(e) => {
                out.errors.push(ManifestError::Read {
                    file: name,
                    message: e.to_string(),
                });
                return;
            }
        };
        entries.sort();
        for entry in entries {
            let hidden = entry
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            // `.git` and editor droppings are not manifests; a file given by name always is.
            if hidden {
                continue;
            }
            // A symlinked directory is not walked (as kubectl's -R): a link back up would
            // never end.
            let linked_dir = std::fs::symlink_metadata(&entry)
                .is_ok_and(|m| m.file_type().is_symlink())
                && entry.is_dir();
            if linked_dir {
                continue;
            }
            if entry.is_dir() || is_manifest_name(&entry) {
                read_path(out, &entry, limits, false);
            }
        }
        return;
    }
    if !given && !is_manifest_name(path) {
        return;
    }
    if !meta.is_file() {
        out.errors.push(ManifestError::NotRegular {
            file: name,
            what: file_type_name(meta.file_type()),
        });
        return;
    }
    if meta.len() > limits.max_file_bytes {
        out.errors.push(ManifestError::TooLarge {
            file: name,
            limit: limits.max_file_bytes,
        });
        return;
    }
    let read = open_regular(path, &name).and_then(|f| read_capped(f, &name, limits.max_file_bytes));
    out.files_read += 1;
    collect(out, &name, read, limits);
}

fn is_manifest_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "yaml" | "yml" | "json"))
}

fn collect(
    out: &mut Manifests,
    name: &str,
    read: Result<Vec<u8>, ManifestError>,
    limits: &ReadLimits,
) {
    match read.and_then(|bytes| text_of(name, bytes)) {
        Ok(text) => {
            let parsed = parse_within(name, text, limits.deadline);
            out.objects.extend(parsed.objects);
            out.errors.extend(parsed.errors);
        }
        Err(e) => out.errors.push(e),
    }
}

/// [`parse_text`] on a thread of its own, waited for at most `deadline`. A parse past it is
/// left to finish on its own (a parser cannot be interrupted; the process exits when the
/// command ends) and the file is reported unparsed.
fn parse_within(name: &str, text: String, deadline: Duration) -> Manifests {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let file = name.to_string();
    let spawned = std::thread::Builder::new()
        .name("check-parse".into())
        // As much stack as a main thread: serde recurses once per nesting level.
        .stack_size(8 * 1024 * 1024)
        .spawn(move || {
            let _ = tx.send(parse_text(&file, &text));
        });
    let error = |e: ManifestError| Manifests {
        errors: vec![e],
        ..Manifests::default()
    };
    if let Err(e) = spawned {
        return error(ManifestError::Read {
            file: name.to_string(),
            message: format!("cannot start the parser: {e}"),
        });
    }
    match rx.recv_timeout(deadline) {
        Ok(parsed) => parsed,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => error(ManifestError::Deadline {
            file: name.to_string(),
            deadline,
        }),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => error(ManifestError::Read {
            file: name.to_string(),
            message: "the parser stopped without an answer".into(),
        }),
    }
}

/// Reads at most `limit` bytes; one more means the input is too large.
fn read_capped(reader: impl Read, name: &str, limit: u64) -> Result<Vec<u8>, ManifestError> {
    let mut bytes = Vec::new();
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| ManifestError::Read {
            file: name.to_string(),
            message: e.to_string(),
        })?;
    if bytes.len() as u64 > limit {
        return Err(ManifestError::TooLarge {
            file: name.to_string(),
            limit,
        });
    }
    Ok(bytes)
}

fn text_of(name: &str, bytes: Vec<u8>) -> Result<String, ManifestError> {
    String::from_utf8(bytes).map_err(|e| ManifestError::NotText {
        file: name.to_string(),
        offset: e.utf8_error().valid_up_to(),
    })
}

mod parse;
pub use parse::parse_text;

#[cfg(test)]
mod tests;
