//! Structured logs: JSON in a cluster, human text on a terminal; `RUST_LOG` filters.
//!
//! Every admission decision is one line (see `http::log_decision`) with the request uid, kind,
//! namespace, name, ServiceAccount, outcome and duration. Logs carry identifiers, never pod specs,
//! env values or patches.

mod decision;
mod filter;
mod json;
mod scope;
mod writer;

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;
pub use decision::DecisionLine;
pub use filter::Filter;
use json::Lines;
pub use json::{JsonLines, JsonSpanFields};
pub use scope::in_admission;
pub use writer::{BatchWriter, FlushGuard};

/// The filter used when `RUST_LOG` is not set: our info lines, dependencies' warnings.
pub const DEFAULT_FILTER: &str =
    "info,aws_config=warn,aws_smithy_runtime=warn,kube_client=warn,kube_runtime=warn,hyper=warn";

/// `RUST_LOG` when set and valid, else [`DEFAULT_FILTER`].
pub fn env_filter() -> Filter {
    Filter::new(
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER)),
    )
}

/// The JSON subscriber: one object per line, event fields at the top level.
pub fn json_subscriber<W>(filter: impl Into<Filter>, writer: W) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::registry().with(filter.into()).with(
        tracing_subscriber::fmt::layer()
            .with_writer(Lines::new(writer))
            .fmt_fields(JsonSpanFields)
            .event_format(JsonLines),
    )
}

/// The human-readable subscriber, for a terminal; `colour` adds ANSI colours (see [`colour`]).
pub fn text_subscriber<W>(
    filter: impl Into<Filter>,
    writer: W,
    colour: bool,
) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::registry().with(filter.into()).with(
        tracing_subscriber::fmt::layer()
            .with_ansi(colour)
            .with_writer(writer),
    )
}

/// Whether text logs are coloured: only on a terminal, and not when `NO_COLOR` is set
/// (`--log-format text` into a file or a log collector must not carry escape codes).
pub fn colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// The installed writer, for its count of dropped lines (see [`init`]).
static WRITER: OnceLock<BatchWriter> = OnceLock::new();

/// Keeps the background log writer running; dropping it writes what is still queued.
#[must_use = "dropping the guard stops the log writer; hold it until the process exits"]
pub struct LogGuard(#[allow(dead_code)] Option<FlushGuard>);

/// Installs the global subscriber once; later calls are no-ops (tests start many servers).
///
/// Lines are formatted on the request's thread and written to stderr in batches by a background
/// thread (`logging/writer.rs`), so an admission never waits on a slow or blocked stderr. If stderr
/// stays blocked until the queue is full, further lines are dropped rather than delaying
/// admissions; the count is exported as `pod_identity_webhook_log_lines_dropped_total`.
pub fn init(format: LogFormat) -> LogGuard {
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    match BatchWriter::spawn(std::io::stderr(), writer::DEFAULT_MAX_QUEUED_BYTES) {
        Ok((writer, guard)) => {
            if !install(json, writer.clone()) {
                return LogGuard(None);
            }
            let _ = WRITER.set(writer);
            LogGuard(Some(guard))
        }
        Err(_) => {
            // No thread for the writer: log straight to stderr rather than not at all.
            install(json, std::io::stderr);
            LogGuard(None)
        }
    }
}

/// Installs the JSON or text subscriber over `writer`; `false` if one was already installed.
/// `try_init` also forwards `log` records (rustls) into tracing.
fn install<W>(json: bool, writer: W) -> bool
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let installed = if json {
        json_subscriber(env_filter(), writer).try_init()
    } else {
        let colour = colour(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        );
        text_subscriber(env_filter(), writer, colour).try_init()
    };
    installed.is_ok()
}

/// Log lines dropped so far because the writer could not keep up.
pub fn dropped_lines() -> u64 {
    WRITER.get().map_or(0, BatchWriter::dropped_lines)
}

/// A log sink for tests: everything written, kept in memory.
#[cfg(test)]
pub(crate) mod test_capture {
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    pub struct Capture(pub Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
        type Writer = Capture;
        fn make_writer(&'a self) -> Capture {
            self.clone()
        }
    }
}
