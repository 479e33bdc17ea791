//! What the webhook tells its operators: logs ([`logging`]) and the metrics registry that each
//! component registers its own families into ([`metrics`]).

pub mod logging;
pub mod metrics;
