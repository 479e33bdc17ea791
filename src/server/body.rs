//! Request bodies: deadlines while they arrive, and one memory budget for all of them.
//!
//! Why: a client that sends a head and then trickles (or stops sending) its body would otherwise
//! hold a connection and a growing buffer for as long as it likes, and many such clients together
//! could buffer more than the pod's memory limit (an OOM kill is fail-open with
//! `failurePolicy: Ignore`). Each body must keep arriving (`bodyReadTimeout` between bytes) and
//! be complete within `bodyTimeout`; before a body is read, its size (its `Content-Length`, or
//! `maxBodyBytes` when unknown) is taken from a budget shared by all requests, and given back
//! when the answer is ready. A request that finds no room is answered 503 at once: the API server
//! then applies the webhook's failure policy instead of waiting.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};

use super::limits_reached::LimitsReached;

/// The deadlines and the shared budget of request bodies on one port.
#[derive(Clone, Debug)]
pub struct BodyLimits {
    budget: Arc<Semaphore>,
    budget_bytes: usize,
    max_body: usize,
    read_timeout: Duration,
    total_timeout: Duration,
    reached: LimitsReached,
}

/// Budget is counted in KiB so that any byte count fits a semaphore's permits.
const UNIT: usize = 1024;

impl BodyLimits {
    pub fn new(
        budget_bytes: usize,
        max_body: usize,
        read_timeout: Duration,
        total_timeout: Duration,
        reached: LimitsReached,
    ) -> Self {
        let units = budget_bytes.div_ceil(UNIT).clamp(1, Semaphore::MAX_PERMITS);
        Self {
            budget: Arc::new(Semaphore::new(units)),
            budget_bytes,
            max_body,
            read_timeout,
            total_timeout,
            reached,
        }
    }

    /// Bytes of the budget in use now.
    pub fn in_use(&self) -> usize {
        let total = self
            .budget_bytes
            .div_ceil(UNIT)
            .clamp(1, Semaphore::MAX_PERMITS);
        (total - self.budget.available_permits()) * UNIT
    }
}

/// Middleware: reserves the body's budget, times its arrival, and answers 503 when the budget
/// is spent.
pub async fn limit(State(limits): State<BodyLimits>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    // A larger declared body is refused by the body limit without being read.
    let size = declared.unwrap_or(limits.max_body).min(limits.max_body);
    let units = size.div_ceil(UNIT).max(1) as u32;
    let Ok(permit) = limits.budget.clone().try_acquire_many_owned(units) else {
        limits.reached.hit("https", "body_memory");
        tracing::warn!(
            bytes = size,
            budget = limits.budget_bytes,
            "request refused: buffered request bodies use the whole memory budget (server.connections.bodyMemoryBytes)"
        );
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "too many request bodies are being read at once; retry\n",
        )
            .into_response();
    };
    let req = req.map(|body| {
        Body::new(TimedBody {
            inner: body,
            read_timeout: limits.read_timeout,
            between: Box::pin(tokio::time::sleep(limits.read_timeout)),
            total: Box::pin(tokio::time::sleep(limits.total_timeout)),
            reached: limits.reached.clone(),
        })
    });
    let answer = next.run(req).await;
    drop(permit);
    answer
}

/// A body that fails when a byte is not seen for `read_timeout` or the whole has not arrived by
/// the total deadline.
struct TimedBody {
    inner: Body,
    read_timeout: Duration,
    between: Pin<Box<Sleep>>,
    total: Pin<Box<Sleep>>,
    reached: LimitsReached,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct BodyTimeout(&'static str);

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let next = Instant::now() + self.read_timeout;
                self.between.as_mut().reset(next);
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                if self.total.as_mut().poll(cx).is_ready() {
                    self.reached.hit("https", "body_timeout");
                    return Poll::Ready(Some(Err(BodyTimeout(
                        "request body not complete within server.connections.bodyTimeout",
                    )
                    .into())));
                }
                if self.between.as_mut().poll(cx).is_ready() {
                    self.reached.hit("https", "body_read_timeout");
                    return Poll::Ready(Some(Err(BodyTimeout(
                        "request body stalled for server.connections.bodyReadTimeout",
                    )
                    .into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
