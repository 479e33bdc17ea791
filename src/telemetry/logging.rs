//! Structured logs with the stock `tracing-subscriber` layers: JSON in a cluster, text on a
//! terminal, `RUST_LOG` as an `EnvFilter`.
//!
//! Every admission decision is one line (see `server::routes`) inside an `admission` span that
//! carries the request uid. Logs carry identifiers, never pod specs, env values or patches.
//! Lines are written to stderr by `tracing-appender`'s background worker through a bounded, lossy
//! queue: a blocked stderr costs dropped lines (counted in `log_lines_dropped_total`), never a
//! delayed admission.

use std::io::IsTerminal;
use std::sync::OnceLock;

use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::registry::Registry;
use tracing::Subscriber;
use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The filter used when `RUST_LOG` is not set: our info lines, dependencies' warnings.
pub const DEFAULT_FILTER: &str =
    "info,aws_config=warn,aws_smithy_runtime=warn,kube_client=warn,kube_runtime=warn,hyper=warn";

/// Lines queued for stderr at most; past that, lines are dropped and counted.
const QUEUED_LINES: usize = 16 * 1024;

/// `RUST_LOG` when set and valid, else [`DEFAULT_FILTER`].
pub fn env_filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER))
}

/// One JSON object per line: event fields at the top level, the current span under `span`.
pub fn json_subscriber<W>(filter: EnvFilter, writer: W) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_writer(writer);
    tracing_subscriber::registry().with(filter).with(layer)
}

/// The human-readable subscriber, for a terminal; `colour` adds ANSI colours (see [`colour`]).
pub fn text_subscriber<W>(
    filter: EnvFilter,
    writer: W,
    colour: bool,
) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(colour)
        .with_writer(writer);
    tracing_subscriber::registry().with(filter).with(layer)
}

/// Whether text logs are coloured: only on a terminal, and not when `NO_COLOR` is set
/// (`--log-format text` into a file or a log collector must not carry escape codes).
pub fn colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// The installed writer's count of dropped lines.
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// The log format setting (`server.logFormat`, `--log-format`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Text,
    /// JSON when not attached to a terminal (in a cluster), text on a terminal.
    Auto,
}

/// Installs the global subscriber over a non-blocking stderr once; later calls install nothing
/// (tests start many servers). Hold the guard until exit: dropping it flushes queued lines.
pub fn init(format: LogFormat) -> WorkerGuard {
    let stderr_is_terminal = std::io::stderr().is_terminal();
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("log-writer")
        .finish(std::io::stderr());
    let dropped = writer.error_counter();
    // `try_init` also forwards `log` records (rustls) into tracing.
    let installed = match format {
        LogFormat::Json => json_subscriber(env_filter(), writer).try_init(),
        LogFormat::Auto if !stderr_is_terminal => json_subscriber(env_filter(), writer).try_init(),
        LogFormat::Text | LogFormat::Auto => {
            let colour = colour(stderr_is_terminal, std::env::var_os("NO_COLOR").as_deref());
            text_subscriber(env_filter(), writer, colour).try_init()
        }
    };
    if installed.is_ok() {
        let _ = DROPPED.set(dropped);
    }
    guard
}

/// Log lines dropped so far because stderr could not keep up.
pub fn dropped_lines() -> u64 {
    DROPPED.get().map_or(0, |c| c.dropped_lines() as u64)
}

/// Registers the logging families (`log_lines_dropped_total`).
pub fn register_metrics(registry: &mut Registry) {
    registry.register_collector(Box::new(DroppedLines));
}

/// Reads the writer's counter on every scrape.
#[derive(Debug)]
struct DroppedLines;

impl prometheus_client::collector::Collector for DroppedLines {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        let counter = ConstCounter::new(dropped_lines());
        let metric = encoder.encode_descriptor(
            "log_lines_dropped",
            "Log lines dropped because stderr could not keep up",
            None,
            counter.metric_type(),
        )?;
        counter.encode(metric)
    }
}
