//! HTTP routes: the admission endpoints (served over TLS) and the admin endpoints (plain HTTP).
//!
//! Routers are plain `axum::Router`s, so tests drive them in-process without sockets.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::admission::Outcome;
use crate::admission::review::{Review, response_body};
use crate::server::app::App;

/// The API server's default webhook timeout, used when the request does not say.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug)]
enum Endpoint {
    Mutate,
    Validate,
}

impl Endpoint {
    fn as_str(self) -> &'static str {
        match self {
            Self::Mutate => "mutate",
            Self::Validate => "validate",
        }
    }
}

/// `POST /mutate` and `POST /validate`.
pub fn admission_router(app: Arc<App>) -> Router {
    let limit = app.max_body_bytes;
    Router::new()
        .route(
            "/mutate",
            post(|State(app): State<Arc<App>>, head: Head, body| {
                handle(app, Endpoint::Mutate, head, body)
            }),
        )
        .route(
            "/validate",
            post(|State(app): State<Arc<App>>, head: Head, body| {
                handle(app, Endpoint::Validate, head, body)
            }),
        )
        .layer(DefaultBodyLimit::max(limit))
        .with_state(app)
}

/// `/livez`, `/readyz`, `/metrics`.
pub fn admin_router(app: Arc<App>) -> Router {
    let ready = app.clone();
    health_router(
        move || ready.not_ready_reasons(),
        move || crate::telemetry::metrics::encode(&app.registry),
    )
}

/// The admin endpoints of the webhook and of the credentials agent: `/livez`; `/readyz`,
/// `ready`, else 503 with what `not_ready` names; `/metrics`, what `metrics` encodes
/// (OpenMetrics text).
pub fn health_router<R, M>(not_ready: R, metrics: M) -> Router
where
    R: Fn() -> Vec<&'static str> + Clone + Send + Sync + 'static,
    M: Fn() -> String + Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || async move {
                let reasons = not_ready();
                if reasons.is_empty() {
                    (StatusCode::OK, "ready\n".to_string())
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("not ready: {}\n", reasons.join(", ")),
                    )
                }
            }),
        )
        .route(
            "/metrics",
            get(move || async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics(),
                )
            }),
        )
}

/// What an admission handler needs from the request head, read in place (the stock `HeaderMap`
/// and `Uri` extractors copy them, on every admission).
struct Head {
    json: bool,
    budget: Duration,
}

impl<S: Send + Sync> FromRequestParts<S> for Head {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self {
            json: is_json(&parts.headers),
            budget: lookup_budget(&parts.uri),
        })
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

fn plain(status: StatusCode, message: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message + "\n",
    )
        .into_response()
}

/// How long identity lookups may take: a margin under the `?timeout=` the API server sent.
fn lookup_budget(uri: &Uri) -> Duration {
    let timeout = uri
        .query()
        .and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("timeout="))
                .and_then(|v| humantime::parse_duration(v).ok())
        })
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_TIMEOUT)
        .min(Duration::from_secs(30));
    // Answer with time to spare for the network and the API server's own bookkeeping.
    (timeout.mul_f64(0.8))
        .min(timeout.saturating_sub(Duration::from_millis(500)))
        .max(Duration::from_millis(50))
}

async fn handle(
    app: Arc<App>,
    endpoint: Endpoint,
    head: Head,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let start = Instant::now();
    let name = endpoint.as_str();
    if !head.json {
        app.metrics.record_rejected(name, 415);
        return plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json".into(),
        );
    }
    let body = match body {
        Ok(b) => b,
        Err(rejection) => {
            let status = rejection.status();
            app.metrics.record_rejected(name, status.as_u16());
            let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
                format!("request body is larger than {} bytes", app.max_body_bytes)
            } else {
                format!("cannot read request body: {}", rejection.body_text())
            };
            return plain(status, message);
        }
    };
    let budget = head.budget;
    let review = match Review::read(&body) {
        Ok(r) => r,
        Err(e) => {
            app.metrics.record_rejected(name, 400);
            return plain(StatusCode::BAD_REQUEST, e.to_string());
        }
    };
    let req = &review.request;
    match endpoint {
        Endpoint::Mutate => {
            answer(&app, name, &review, app.mutator.review(req, budget), start).await
        }
        Endpoint::Validate => {
            answer(
                &app,
                name,
                &review,
                app.validator.review(req, budget),
                start,
            )
            .await
        }
    }
}

/// Runs `decide` for `review`, records and logs the decision, and answers with it. Anything
/// logged while deciding is inside the `admission` span, so it carries the request's uid.
#[tracing::instrument(name = "admission", skip_all, fields(uid = review.request.uid.as_str()))]
async fn answer(
    app: &App,
    name: &'static str,
    review: &Review<'_>,
    decide: impl std::future::Future<Output = crate::admission::Decision>,
    start: Instant,
) -> Response {
    let req = &review.request;
    let decision = decide.await;
    let elapsed = start.elapsed();
    app.metrics.record_admission(
        name,
        &req.kind.kind,
        req.operation.as_str(),
        decision.outcome.as_str(),
        elapsed,
    );
    if decision.missed_injection {
        app.metrics
            .record_missed_injection(decision.outcome.as_str());
    }
    log_decision(name, req, &decision, elapsed);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        response_body(&review.api_version, &decision.response),
    )
        .into_response()
}

/// The one line per decision: self-contained, so a log query needs no span context. It carries
/// identifiers and the outcome only, never the object, its env values or patches; `detail` is a
/// denial's or error's message, written by this webhook.
fn log_decision(
    endpoint: &'static str,
    req: &crate::admission::review::AdmissionRequest<'_>,
    decision: &crate::admission::Decision,
    elapsed: Duration,
) {
    let detail = match (decision.outcome, decision.response.status.as_ref()) {
        (Outcome::Denied | Outcome::Error, Some(status)) => Some(status.message.as_str()),
        _ => None,
    };
    let identity = decision.matched.as_ref().map(tracing::field::display);
    tracing::info!(
        uid = req.uid.as_str(),
        endpoint,
        kind = req.kind.kind.as_str(),
        operation = req.operation.as_str(),
        namespace = req.namespace.as_deref().unwrap_or(""),
        name = req.name.as_deref().unwrap_or(""),
        service_account = decision.service_account.as_deref().unwrap_or(""),
        outcome = decision.outcome.as_str(),
        reason = decision.reason,
        dry_run = req.dry_run.unwrap_or(false),
        duration_us = elapsed.as_micros() as u64,
        identity,
        detail,
        "admission decision"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_follows_the_api_server_timeout() {
        let u: Uri = "/mutate?timeout=10s".parse().unwrap();
        assert_eq!(lookup_budget(&u), Duration::from_secs(8));
        let u: Uri = "/mutate?timeout=1s".parse().unwrap();
        assert_eq!(lookup_budget(&u), Duration::from_millis(500));
        let u: Uri = "/mutate".parse().unwrap();
        assert_eq!(lookup_budget(&u), Duration::from_secs(8));
        let u: Uri = "/mutate?timeout=garbage".parse().unwrap();
        assert_eq!(lookup_budget(&u), Duration::from_secs(8));
    }
}
