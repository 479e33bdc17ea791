//! Structured logs: JSON in a cluster, human text on a terminal; `RUST_LOG` filters.
//!
//! Every admission decision is one line (see `http::log_decision`) with the request uid, kind,
//! namespace, name, ServiceAccount, outcome and duration. Logs carry identifiers, never pod specs,
//! env values or patches.

use std::io::{BufWriter, IsTerminal};
use std::sync::OnceLock;

use tracing::Subscriber;
use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// The filter used when `RUST_LOG` is not set: our info lines, dependencies' warnings.
pub const DEFAULT_FILTER: &str =
    "info,aws_config=warn,aws_smithy_runtime=warn,kube_client=warn,kube_runtime=warn,hyper=warn";

/// `RUST_LOG` when set and valid, else [`DEFAULT_FILTER`].
pub fn env_filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER))
}

/// The JSON subscriber: one object per line, event fields at the top level.
pub fn json_subscriber<W>(filter: EnvFilter, writer: W) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .finish()
}

/// Lines the background writer had to drop because it could not keep up (see [`init`]).
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Keeps the background log writer running; dropping it flushes what is still queued.
#[must_use = "dropping the guard stops the log writer; hold it until the process exits"]
pub struct LogGuard(#[allow(dead_code)] Option<WorkerGuard>);

/// How many lines the queue can hold before new ones are dropped (and counted).
const QUEUED_LINES: usize = 64 * 1024;

/// Installs the global subscriber once; later calls are no-ops (tests start many servers).
///
/// Lines are formatted on the request's thread but written by a dedicated thread through a
/// buffer, so an admission never waits on a slow or blocked stderr, and a burst of decisions
/// costs one `write` per batch instead of one per line. If stderr stays blocked until the queue
/// is full, further lines are dropped rather than delaying admissions; the count is exported as
/// `pod_identity_webhook_log_lines_dropped_total`.
pub fn init(format: LogFormat) -> LogGuard {
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("log-writer")
        .finish(BufWriter::with_capacity(64 * 1024, std::io::stderr()));
    let counter = writer.error_counter();
    // `try_init` also forwards `log` records (rustls) into tracing.
    let installed = if json {
        json_subscriber(env_filter(), writer).try_init()
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(env_filter())
            .with_writer(writer)
            .finish()
            .try_init()
    };
    match installed {
        Ok(()) => {
            let _ = DROPPED.set(counter);
            LogGuard(Some(guard))
        }
        Err(_) => LogGuard(None),
    }
}

/// Log lines dropped so far because the writer could not keep up.
pub fn dropped_lines() -> u64 {
    DROPPED.get().map_or(0, |c| c.dropped_lines() as u64)
}
