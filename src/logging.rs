//! Structured logs: JSON in a cluster, human text on a terminal; `RUST_LOG` filters.
//!
//! Every admission decision is one line (see `http::log_decision`) with the request uid, kind,
//! namespace, name, ServiceAccount, outcome and duration. Logs carry identifiers, never pod specs,
//! env values or patches.

use std::io::IsTerminal;

use tracing::Subscriber;
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

/// Installs the global subscriber once; later calls are no-ops (tests start many servers).
pub fn init(format: LogFormat) {
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    // `try_init` also forwards `log` records (rustls) into tracing.
    let _ = if json {
        json_subscriber(env_filter(), std::io::stderr).try_init()
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(env_filter())
            .with_writer(std::io::stderr)
            .finish()
            .try_init()
    };
}
