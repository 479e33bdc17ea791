//! HTTP/1.1 connection timeouts: a short one for reading a request head, a long one for an idle
//! keep-alive connection.
//!
//! Why not hyper's `header_read_timeout`: it also runs while a keep-alive connection waits for
//! its next request, so it closes every connection idle for that long. The API server keeps idle
//! webhook connections for 90 s (Go's `IdleConnTimeout`) and does not retry a POST that meets a
//! connection the server has just closed: each close racing a reuse is a failed admission. Here
//! the head timeout starts at a request's first byte, and an idle connection is closed only after
//! [`IDLE_TIMEOUT`], later than the API server gives up on it, so the client closes first.
//!
//! The phases of a connection, as the transport and the service see them:
//! `Head` (bytes of a request are arriving) → `Processing` (hyper called the service: the head is
//! complete; its body is the service's to time) → `Answered` (the service has its answer) →
//! `Idle` (the answer is being written; next comes the next request's first byte). A write while
//! `Processing` (a `100 Continue`, asking for the body) changes nothing: the body that follows
//! is not a new head.
//! Per request this costs two clock reads and no timer registration: the one timer of a
//! connection is re-armed only when it fires.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::limits_reached::LimitsReached;

/// A request head (from its first byte) must arrive within this (slow or hostile clients).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// An idle keep-alive connection is closed after this: past the API server's own 90 s.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// The two limits of an HTTP/1.1 connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub header_read: Duration,
    pub idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read: HEADER_READ_TIMEOUT,
            idle: IDLE_TIMEOUT,
        }
    }
}

const HEAD: u8 = 0;
const PROCESSING: u8 = 1;
const ANSWERED: u8 = 2;
const IDLE: u8 = 3;

/// The phase of one connection, shared by its transport ([`TimedIo`]) and its service
/// ([`Tracked`]).
#[derive(Debug, Default)]
pub struct Phase(AtomicU8);

impl Phase {
    fn get(&self) -> u8 {
        self.0.load(Ordering::Relaxed)
    }
    fn set(&self, phase: u8) {
        self.0.store(phase, Ordering::Relaxed);
    }
    /// `from` → `to` only if the phase is still `from`.
    fn advance(&self, from: u8, to: u8) {
        let _ = self
            .0
            .compare_exchange(from, to, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// The transport of a connection, failing a read with `TimedOut` when the head or the idle
/// limit passes. With no limits (HTTP/2, whose idle connections are normal) it only passes
/// calls through.
pub struct TimedIo<T> {
    inner: T,
    limits: Option<Limits>,
    /// Where a timeout is counted, and for which port.
    reached: (LimitsReached, &'static str),
    phase: Arc<Phase>,
    /// When the current phase began (a connection starts by waiting for its first head).
    since: Instant,
    timer: Option<Pin<Box<Sleep>>>,
}

impl<T> TimedIo<T> {
    pub fn new(
        inner: T,
        limits: Option<Limits>,
        phase: Arc<Phase>,
        reached: (LimitsReached, &'static str),
    ) -> Self {
        Self {
            inner,
            limits,
            reached,
            phase,
            since: Instant::now(),
            timer: None,
        }
    }

    /// Whether the current phase has outlived its limit; otherwise arms the timer to look again.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(limits) = self.limits else {
            return false;
        };
        let limit = match self.phase.get() {
            HEAD => limits.header_read,
            IDLE => limits.idle,
            // The service has the request; how long it may take is its own business.
            _ => return false,
        };
        let elapsed = self.since.elapsed();
        if elapsed >= limit {
            return true;
        }
        // Never sleep longer than the head limit: a head may begin while the timer is set for
        // the idle limit, and is then still caught on time (the timer fires, finds the head's
        // deadline later, and is set for it).
        let wait = (limit - elapsed).min(limits.header_read);
        match &mut self.timer {
            Some(timer) => {
                if timer.as_mut().poll(cx).is_ready() {
                    timer.as_mut().reset(Instant::now() + wait);
                    let _ = timer.as_mut().poll(cx);
                }
            }
            None => {
                let mut timer = Box::pin(tokio::time::sleep(wait));
                let _ = timer.as_mut().poll(cx);
                self.timer = Some(timer);
            }
        }
        false
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TimedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before && self.phase.get() == IDLE {
                    self.phase.set(HEAD);
                    self.since = Instant::now();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if self.expired(cx) => {
                let (what, limit) = if self.phase.get() == IDLE {
                    (
                        "keep-alive connection idle for longer than the idle timeout",
                        "idle_timeout",
                    )
                } else {
                    (
                        "request head not received within the header read timeout",
                        "header_read_timeout",
                    )
                };
                self.reached.0.hit(self.reached.1, limit);
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)))
            }
            other => other,
        }
    }
}

impl<T> TimedIo<T> {
    /// The answer is going out: the connection is idle from here until the next request's
    /// first byte. Not while the service still has the request: what hyper writes then is a
    /// `100 Continue`, and the body it asks for is timed by the service, not as a head.
    fn wrote(&mut self, n: usize, cx: &mut Context<'_>) {
        let phase = self.phase.get();
        if n > 0 && self.limits.is_some() && phase != IDLE && phase != PROCESSING {
            self.phase.set(IDLE);
            self.since = Instant::now();
            // hyper may not read again before the client sends: the timer must be armed now.
            let _ = self.expired(cx);
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TimedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let n = ready!(Pin::new(&mut self.inner).poll_write(cx, buf))?;
        self.wrote(n, cx);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let n = ready!(Pin::new(&mut self.inner).poll_write_vectored(cx, bufs))?;
        self.wrote(n, cx);
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What a connection's requests are doing, for the HTTP/2 deadlines (no request yet, idle).
#[derive(Debug)]
pub struct Activity {
    start: Instant,
    in_flight: AtomicUsize,
    seen_request: AtomicBool,
    /// When the last request finished, in milliseconds since `start`.
    last_done_ms: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            seen_request: AtomicBool::new(false),
            last_done_ms: AtomicU64::new(0),
        }
    }
}

/// Why an HTTP/2 connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// No request within the header read timeout of the handshake.
    NoRequest,
    /// No request in flight for the idle timeout.
    Idle,
}

impl Activity {
    /// When to look again, or why the connection has expired.
    pub fn check(&self, limits: Limits) -> Result<Instant, Expired> {
        let now = Instant::now();
        if !self.seen_request.load(Ordering::Acquire) {
            let deadline = self.start + limits.header_read;
            return if now >= deadline {
                Err(Expired::NoRequest)
            } else {
                Ok(deadline)
            };
        }
        if self.in_flight.load(Ordering::Acquire) > 0 {
            // A request's own time is bounded by its body deadlines and its decision budget.
            return Ok(now + limits.header_read);
        }
        let idle_since =
            self.start + Duration::from_millis(self.last_done_ms.load(Ordering::Acquire));
        let deadline = idle_since + limits.idle;
        if now >= deadline {
            Err(Expired::Idle)
        } else {
            Ok(deadline)
        }
    }

    fn started(&self) {
        self.seen_request.store(true, Ordering::Release);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    fn finished(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_done_ms.store(ms, Ordering::Release);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection's service, marking the head complete when hyper hands it a request (HTTP/1.1)
/// and counting requests in flight (HTTP/2).
#[derive(Clone)]
pub struct Tracked<S> {
    inner: S,
    phase: Arc<Phase>,
    activity: Arc<Activity>,
}

impl<S> Tracked<S> {
    pub fn new(inner: S, phase: Arc<Phase>, activity: Arc<Activity>) -> Self {
        Self {
            inner,
            phase,
            activity,
        }
    }
}

/// Marks its request finished when dropped (answered, failed or cancelled alike).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.finished();
    }
}

impl<S, R> hyper::service::Service<R> for Tracked<S>
where
    S: hyper::service::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn call(&self, req: R) -> Self::Future {
        self.phase.set(PROCESSING);
        self.activity.started();
        let in_flight = InFlight(self.activity.clone());
        let answer = self.inner.call(req);
        let phase = self.phase.clone();
        Box::pin(async move {
            let answer = answer.await;
            phase.advance(PROCESSING, ANSWERED);
            drop(in_flight);
            answer
        })
    }
}
