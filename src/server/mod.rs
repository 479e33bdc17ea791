//! Serving the webhook: the routes ([`routes`], drivable in-process by tests), the listeners
//! with their limits and timeouts ([`listener`], [`body`]), the TLS certificate and its reloads
//! ([`tls`]), and the state the handlers share ([`app`]). Each part registers its own metrics.

pub mod app;
pub mod body;
pub mod idle;
mod limit;
pub mod limits_reached;
pub mod listener;
pub mod open_files;
pub mod route_metrics;
pub mod routes;
mod timeouts;
pub mod tls;

pub use limit::{ConnectionLimit, MAX_CONNECTIONS};
pub use listener::{BindError, MAX_BODY_BYTES, Options, bind, serve_admin, serve_tls};
pub use timeouts::{HEADER_READ_TIMEOUT, IDLE_TIMEOUT, Limits};
