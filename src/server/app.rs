//! The application state shared by the HTTP layers: decisions, metrics and health.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::limit::ConnectionLimit;

use super::route_metrics::AdmissionMetrics;
use crate::admission::Mutator;
use crate::admission::validate::Validator;
use crate::identity::Identities;
use crate::telemetry::metrics::{Registry, new_registry};

/// Process health as `/livez` and `/readyz` report it.
#[derive(Debug, Default)]
pub struct Health {
    certs_loaded: AtomicBool,
    shutting_down: AtomicBool,
    /// The HTTPS listener's connections, and how long it may be unable to accept before the
    /// process says it is not ready.
    https: std::sync::OnceLock<(ConnectionLimit, Duration)>,
}

impl Health {
    /// Reports the HTTPS listener unready once it has been unable to accept for `bound`.
    pub fn watch_https(&self, connections: ConnectionLimit, bound: Duration) {
        let _ = self.https.set((connections, bound));
    }
    /// Whether the HTTPS listener has been unable to accept for longer than its bound.
    pub fn https_blocked(&self) -> bool {
        self.https
            .get()
            .and_then(|(c, bound)| c.blocked_for().map(|d| d >= *bound))
            .unwrap_or(false)
    }
    pub fn set_certs_loaded(&self) {
        self.certs_loaded.store(true, Ordering::Release);
    }
    pub fn certs_loaded(&self) -> bool {
        self.certs_loaded.load(Ordering::Acquire)
    }
    /// Turns the process unready so endpoints drop it before it stops serving.
    pub fn set_shutting_down(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }
    pub fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }
}

/// Everything a request handler needs.
pub struct App {
    pub mutator: Mutator,
    pub validator: Validator,
    /// What the admission routes record.
    pub metrics: AdmissionMetrics,
    /// Every component's metrics, for `/metrics`.
    pub registry: Registry,
    pub health: Health,
    pub max_body_bytes: usize,
}

impl App {
    pub fn new(mutator: Mutator, validator: Validator) -> Self {
        Self::with_registry(mutator, validator, new_registry())
    }

    /// [`App::new`], exposing the families other components registered into `registry`.
    pub fn with_registry(mutator: Mutator, validator: Validator, mut registry: Registry) -> Self {
        Self {
            mutator,
            validator,
            metrics: AdmissionMetrics::register(&mut registry),
            registry,
            health: Health::default(),
            max_body_bytes: crate::server::MAX_BODY_BYTES,
        }
    }

    pub fn identities(&self) -> &Identities {
        &self.mutator.identities
    }

    /// The reasons the process is not ready; empty when ready.
    pub fn not_ready_reasons(&self) -> Vec<&'static str> {
        let mut reasons = Vec::new();
        if !self.health.certs_loaded() {
            reasons.push("serving certificate not loaded");
        }
        if self.health.shutting_down() {
            reasons.push("shutting down");
        }
        if self.health.https_blocked() {
            reasons.push(
                "HTTPS listener cannot accept connections (at its connection cap, or out of file descriptors)",
            );
        }
        if !self.identities().ready() {
            reasons.push("identity sources not synced");
        }
        if !self.validator.ready() {
            reasons.push("namespace labels not synced");
        }
        reasons
    }
}
