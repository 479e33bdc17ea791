//! Associations from a file (docs/contract.md §7), for clusters without EKS and for local runs.
//!
//! YAML or JSON, re-read when it changes; a broken file keeps the last good content. The file is
//! hostile input (issue 21): it is read only if it is a regular file within a size cap, every
//! role ARN is validated, a reload that comes back empty while it had entries is refused unless
//! the file says `associations: []`, and errors name lines and columns but never quote the file
//! (a path pointing at some other file, say a Secret, must not copy it into the log).
//!
//! Two rooms: [`format`] (parsing and checking the document, and its errors) and [`source`]
//! (the running source and its reloader).

pub mod format;
pub mod source;

pub use format::{DEFAULT_MAX_BYTES, FileError, Parsed, load, parse};
pub use source::{FileReloader, FileSource};
