//! The log sink: lines are appended to a shared buffer on the request's thread and written out
//! in batches by one background thread.
//!
//! Why not a channel per line: waking a writer thread for every admission costs more than
//! formatting the line (a futex wake plus two context switches, on a 2-core node). Here a
//! request only copies its line into the buffer under a short lock; the writer thread is woken
//! when the buffer goes from empty to non-empty, then lingers up to [`LINGER`] (or until
//! [`BATCH_BYTES`] are queued) so that one `write` carries many lines. An idle webhook wakes
//! nobody.
//!
//! If the sink blocks (a stalled log pipe), the buffer grows up to the cap and further lines are
//! dropped and counted rather than delaying admissions.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long queued lines may wait for company before they are written.
pub const LINGER: Duration = Duration::from_millis(50);
/// A batch this large is written without waiting for the linger to pass.
pub const BATCH_BYTES: usize = 64 * 1024;
/// What may be queued while the sink is blocked; beyond it lines are dropped (and counted).
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 8 * 1024 * 1024;

#[derive(Default)]
struct Queue {
    bytes: Vec<u8>,
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
    dropped: AtomicU64,
    max_queued: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding this lock cannot leave the bytes half-appended in a way that
        // matters more than losing logs; keep logging.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The writing end, cheap to clone; hand it to `tracing_subscriber` as its `MakeWriter`.
#[derive(Clone)]
pub struct BatchWriter {
    shared: Arc<Shared>,
}

/// Keeps the background thread alive; dropping it writes what is queued and stops the thread.
#[must_use = "dropping the guard stops the log writer; hold it until the process exits"]
pub struct FlushGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl BatchWriter {
    /// Starts the writer thread over `sink` (stderr in the binary).
    pub fn spawn(
        sink: impl Write + Send + 'static,
        max_queued: usize,
    ) -> std::io::Result<(Self, FlushGuard)> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                bytes: Vec::with_capacity(BATCH_BYTES),
                closed: false,
            }),
            ready: Condvar::new(),
            dropped: AtomicU64::new(0),
            max_queued,
        });
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || write_batches(&worker, sink))?;
        Ok((
            Self {
                shared: shared.clone(),
            },
            FlushGuard {
                shared,
                thread: Some(thread),
            },
        ))
    }

    /// Lines dropped so far because the sink could not keep up.
    pub fn dropped_lines(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Queues one formatted line (the formatter hands over whole lines).
    fn queue(&self, line: &[u8]) {
        let mut q = self.shared.lock();
        if q.closed {
            return;
        }
        if q.bytes.len() + line.len() > self.shared.max_queued {
            drop(q);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let before = q.bytes.len();
        q.bytes.extend_from_slice(line);
        let after = q.bytes.len();
        drop(q);
        // Wake the writer on the two transitions it waits for, not on every line.
        if before == 0 || (before < BATCH_BYTES && after >= BATCH_BYTES) {
            self.shared.ready.notify_one();
        }
    }
}

impl Write for &BatchWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.queue(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Write for BatchWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        (&*self).write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Lends itself for each line: no reference count touched per line (the count's cache line
/// would bounce between the worker threads).
impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BatchWriter {
    type Writer = &'a BatchWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

fn write_batches(shared: &Shared, mut sink: impl Write) {
    let mut batch = Vec::with_capacity(BATCH_BYTES);
    loop {
        let mut q = shared.lock();
        while q.bytes.is_empty() && !q.closed {
            q = shared.ready.wait(q).unwrap_or_else(PoisonError::into_inner);
        }
        if q.bytes.is_empty() {
            return; // closed, and everything written
        }
        let deadline = Instant::now() + LINGER;
        while q.bytes.len() < BATCH_BYTES && !q.closed {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            q = shared
                .ready
                .wait_timeout(q, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        std::mem::swap(&mut q.bytes, &mut batch);
        drop(q);
        // Nowhere to report a failing stderr; the lines are lost either way.
        let _ = sink.write_all(&batch).and_then(|()| sink.flush());
        batch.clear();
        // A burst (or a stall) may have grown the buffer; do not keep megabytes for good.
        if batch.capacity() > 4 * BATCH_BYTES {
            batch = Vec::with_capacity(BATCH_BYTES);
        }
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.ready.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A sink that forwards each `write_all` batch to the test.
    struct Batches(mpsc::Sender<Vec<u8>>, Vec<u8>);

    impl Write for Batches {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.1.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            let _ = self.0.send(std::mem::take(&mut self.1));
            Ok(())
        }
    }

    fn line(i: usize) -> String {
        format!("{{\"n\":{i}}}\n")
    }

    #[test]
    fn lines_written_close_together_leave_in_one_batch_in_order() {
        let (tx, rx) = mpsc::channel();
        let (mut w, guard) = BatchWriter::spawn(Batches(tx, Vec::new()), 1 << 20).unwrap();
        for i in 0..100 {
            w.write_all(line(i).as_bytes()).unwrap();
        }
        let batch = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let expected: String = (0..100).map(line).collect();
        assert_eq!(String::from_utf8(batch).unwrap(), expected);
        drop(guard);
        assert!(rx.try_recv().is_err(), "nothing left to write");
    }

    #[test]
    fn a_lone_line_is_written_after_the_linger_without_more_traffic() {
        let (tx, rx) = mpsc::channel();
        let (mut w, _guard) = BatchWriter::spawn(Batches(tx, Vec::new()), 1 << 20).unwrap();
        let start = Instant::now();
        w.write_all(b"alone\n").unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), b"alone\n");
        assert!(start.elapsed() >= LINGER, "waited for company first");
    }

    #[test]
    fn a_full_batch_does_not_wait_for_the_linger() {
        let (tx, rx) = mpsc::channel();
        let (mut w, _guard) = BatchWriter::spawn(Batches(tx, Vec::new()), 1 << 20).unwrap();
        let big = vec![b'x'; BATCH_BYTES];
        w.write_all(b"first\n").unwrap();
        w.write_all(&big).unwrap();
        // The writer was woken by the size, well before a linger it could otherwise sit out.
        let got = rx.recv_timeout(LINGER / 2).unwrap();
        assert_eq!(got.len(), 6 + BATCH_BYTES);
    }

    #[test]
    fn dropping_the_guard_writes_what_is_queued() {
        let (tx, rx) = mpsc::channel();
        let (mut w, guard) = BatchWriter::spawn(Batches(tx, Vec::new()), 1 << 20).unwrap();
        w.write_all(b"last words\n").unwrap();
        drop(guard);
        assert_eq!(rx.try_recv().unwrap(), b"last words\n");
        // Lines after shutdown go nowhere, and do not block.
        w.write_all(b"too late\n").unwrap();
    }

    /// A sink stuck in `write` until the test lets it go (a stalled log pipe).
    struct Stalled(Arc<(Mutex<bool>, Condvar)>, mpsc::Sender<Vec<u8>>);

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (open, cv) = &*self.0;
            let mut open = open.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            let _ = self.1.send(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_sink_costs_dropped_lines_not_blocked_callers() {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let (tx, rx) = mpsc::channel();
        let (mut w, guard) = BatchWriter::spawn(Stalled(gate.clone(), tx), 1024).unwrap();
        // The first line is taken by the writer thread, which then blocks in the sink.
        w.write_all(&[b'a'; 100]).unwrap();
        std::thread::sleep(LINGER * 3);
        // 1,024 bytes may queue meanwhile: ten lines of 100 fit, the rest are dropped.
        let start = Instant::now();
        for _ in 0..20 {
            w.write_all(&[b'b'; 100]).unwrap();
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "callers never wait on the sink"
        );
        assert_eq!(w.dropped_lines(), 10);
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        drop(guard);
        let written: usize = rx.try_iter().map(|b| b.len()).sum();
        assert_eq!(written, 100 + 10 * 100);
    }
}
