//! JSON log lines, written straight into the line buffer.
//!
//! The shape is `tracing-subscriber`'s JSON format with flattened events and the current span:
//! `{"timestamp":…,"level":…,<event fields>,"target":…,"span":{<span fields>,"name":…}}`.
//! It is written here by hand because the stock formatter costs more than the admission it
//! reports: it serialises through an `io::Write` adaptor that re-checks UTF-8 on every piece,
//! builds a map of `serde_json::Value`s for every span, and re-parses the span's stored JSON on
//! every event.

use std::cell::{Cell, RefCell};
use std::fmt::{self, Write};
use std::io::Write as _;
use std::sync::Arc;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

use super::decision::DecisionLine;

/// Formats events as one JSON object per line.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonLines;

/// Formats span fields as the members of a JSON object (`"k":v,…`, without braces), so an event
/// can copy them into its line as they are.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonSpanFields;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // The line is built in a String of our own and handed over in one piece: writing each
        // piece through `Writer` (a `dyn fmt::Write`) costs a virtual call per piece, about a
        // hundred per line.
        with_line_buffer(|line| {
            self.format_line(ctx, line, event)
                .and_then(|()| w.write_str(line))
        })
    }
}

/// Runs `f` with this thread's line buffer, emptied (taken, so a nested event gets its own).
fn with_line_buffer<R>(f: impl FnOnce(&mut String) -> R) -> R {
    thread_local! {
        static LINE: Cell<String> = const { Cell::new(String::new()) };
    }
    let mut line = LINE.take();
    line.clear();
    let result = f(&mut line);
    // An unusually long line (a huge error message) does not pin its memory for good.
    if line.capacity() <= 64 * 1024 {
        LINE.set(line);
    }
    result
}

/// The writer of the JSON subscriber: whole lines to a sink. A type of its own so that the
/// decision line can find the sink from the current dispatcher (`fmt::Layer` downcasts to its
/// writer) and write to it directly.
#[derive(Clone)]
pub struct Lines(Arc<dyn LineSink>);

/// Takes whole formatted lines.
pub trait LineSink: Send + Sync {
    fn write_line(&self, line: &[u8]);
}

impl<W> LineSink for W
where
    W: for<'w> MakeWriter<'w> + Send + Sync,
{
    fn write_line(&self, line: &[u8]) {
        // Nowhere to report a failing log sink.
        let _ = self.make_writer().write_all(line);
    }
}

impl Lines {
    pub fn new(sink: impl LineSink + 'static) -> Self {
        Self(Arc::new(sink))
    }

    /// The JSON subscriber's sink, if `d` is that subscriber (`fmt::Layer` downcasts to its
    /// writer through the layers).
    pub(super) fn of(d: &tracing::Dispatch) -> Option<&Lines> {
        d.downcast_ref::<Lines>()
    }
}

impl<'a> MakeWriter<'a> for Lines {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> LineWriter<'a> {
        LineWriter(&*self.0)
    }
}

/// [`Lines`] lent for one line (the fmt layer writes each line with one `write_all`).
pub struct LineWriter<'a>(&'a dyn LineSink);

impl std::io::Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write_line(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes `d` to `lines` as the bytes [`JsonLines`] writes for the decision event outside any
/// span (see `decision.rs`).
pub(super) fn write_decision(d: &DecisionLine<'_>, lines: &Lines) {
    with_line_buffer(|w| {
        // Writing to a String cannot fail.
        let _ = decision_json(w, d, std::time::SystemTime::now());
        lines.0.write_line(w.as_bytes());
    });
}

fn decision_json(w: &mut String, d: &DecisionLine<'_>, now: std::time::SystemTime) -> fmt::Result {
    w.push_str("{\"timestamp\":\"");
    write_timestamp(w, now)?;
    w.push_str("\",\"level\":\"INFO\",\"message\":\"admission decision\"");
    for (key, value) in [
        (",\"uid\":", d.uid),
        (",\"endpoint\":", d.endpoint),
        (",\"kind\":", d.kind),
        (",\"operation\":", d.operation),
        (",\"namespace\":", d.namespace),
        (",\"name\":", d.name),
        (",\"service_account\":", d.service_account),
        (",\"outcome\":", d.outcome),
        (",\"reason\":", d.reason),
    ] {
        w.push_str(key);
        write_string(w, value)?;
    }
    w.push_str(if d.dry_run {
        ",\"dry_run\":true,\"duration_us\":"
    } else {
        ",\"dry_run\":false,\"duration_us\":"
    });
    w.push_str(itoa::Buffer::new().format(d.duration_us));
    if let Some(detail) = d.detail {
        w.push_str(",\"detail\":");
        write_string(w, detail)?;
    }
    w.push_str(",\"target\":");
    write_string(w, super::decision::TARGET)?;
    w.push_str("}\n");
    Ok(())
}

/// `now` as RFC 3339 in UTC with microseconds, the bytes tracing-subscriber's `SystemTime`
/// writes (`2026-11-23T09:26:56.138601Z`). The date and time of day are formatted once per second
/// per thread and copied; only the microseconds are written for every line.
fn write_timestamp(w: &mut String, now: std::time::SystemTime) -> fmt::Result {
    thread_local! {
        /// (Unix second, its text up to and including the ".").
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let Ok(since_epoch) = now.duration_since(std::time::UNIX_EPOCH) else {
        // A clock before 1970: not worth a fast path.
        return SystemTime.format_time(&mut Writer::new(w));
    };
    let secs = since_epoch.as_secs();
    SECOND.with_borrow_mut(|(second, text)| {
        if *second != secs {
            text.clear();
            format_second(text, secs)?;
            *second = secs;
        }
        w.push_str(text);
        Ok::<_, fmt::Error>(())
    })?;
    let mut micros = *b"000000Z";
    let mut n = since_epoch.subsec_micros();
    for digit in micros[..6].iter_mut().rev() {
        *digit = b'0' + (n % 10) as u8;
        n /= 10;
    }
    w.push_str(std::str::from_utf8(&micros).expect("ASCII digits"));
    Ok(())
}

/// `YYYY-MM-DDTHH:MM:SS.` of a Unix second (proleptic Gregorian calendar; years past 9999 as
/// `+10000`, as tracing-subscriber writes them).
fn format_second(w: &mut String, secs: u64) -> fmt::Result {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Days to civil date: Howard Hinnant's `civil_from_days`.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    if year > 9999 {
        write!(w, "+{year}")?;
    } else {
        write!(w, "{year:04}")?;
    }
    write!(
        w,
        "-{month:02}-{day:02}T{:02}:{:02}:{:02}.",
        rem / 3_600,
        rem / 60 % 60,
        rem % 60
    )
}

impl JsonLines {
    fn format_line<S, N>(
        &self,
        ctx: &FmtContext<'_, S, N>,
        w: &mut String,
        event: &Event<'_>,
    ) -> fmt::Result
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        N: for<'w> FormatFields<'w> + 'static,
    {
        // Records forwarded from the `log` crate (rustls) carry their real target in fields.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());

        w.push_str("{\"timestamp\":\"");
        write_timestamp(w, std::time::SystemTime::now())?;
        w.push_str("\",\"level\":\"");
        w.push_str(meta.level().as_str());
        w.push('"');

        let mut fields = Members::new(w, false);
        event.record(&mut fields);
        fields.result?;

        w.push_str(",\"target\":");
        write_string(w, meta.target())?;

        let span = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current());
        if let Some(span) = span {
            w.push_str(",\"span\":{");
            let ext = span.extensions();
            if let Some(stored) = ext.get::<FormattedFields<N>>()
                && !stored.is_empty()
            {
                w.push_str(stored);
                w.push(',');
            }
            w.push_str("\"name\":");
            write_string(w, span.metadata().name())?;
            w.push('}');
        } else {
            // The lightweight `admission` scope, written as its span would be.
            super::scope::with_current_uid(|uid| match uid {
                Some(uid) => {
                    w.push_str(",\"span\":{\"uid\":");
                    write_string(w, uid)?;
                    w.push_str(",\"name\":\"admission\"}");
                    Ok(())
                }
                None => Ok(()),
            })?;
        }
        w.push_str("}\n");
        Ok(())
    }
}

impl<'w> FormatFields<'w> for JsonSpanFields {
    fn format_fields<R: RecordFields>(&self, mut w: Writer<'w>, fields: R) -> fmt::Result {
        let mut members = Members::new(&mut w, true);
        fields.record(&mut members);
        members.result
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let first = current.fields.is_empty();
        let mut w = current.as_writer();
        let mut members = Members::new(&mut w, first);
        fields.record(&mut members);
        members.result
    }
}

/// Writes visited fields as `,"name":value` members.
struct Members<'a, W: Write> {
    w: &'a mut W,
    /// No comma before the next member (it is the first of its object).
    first: bool,
    result: fmt::Result,
}

impl<'a, W: Write> Members<'a, W> {
    fn new(w: &'a mut W, first: bool) -> Self {
        Self {
            w,
            first,
            result: Ok(()),
        }
    }

    /// Writes the member's key; `None` for fields that are not to be written.
    fn key(&mut self, field: &Field) -> Option<&mut W> {
        let name = field.name();
        // `log.*` fields are the forwarded record's metadata, already used above.
        if name.starts_with("log.") || self.result.is_err() {
            return None;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        let sep = if std::mem::take(&mut self.first) {
            ""
        } else {
            ","
        };
        self.result = self
            .w
            .write_str(sep)
            .and_then(|()| write_string(self.w, name))
            .and_then(|()| self.w.write_char(':'));
        self.result.is_ok().then_some(&mut *self.w)
    }

    fn raw(&mut self, field: &Field, value: impl fmt::Display) {
        if let Some(w) = self.key(field) {
            self.result = write!(w, "{value}");
        }
    }
}

impl<W: Write> Visit for Members<'_, W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if let Some(w) = self.key(field) {
            self.result = write_string(w, value);
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if let Some(w) = self.key(field) {
            self.result = w.write_str(if value { "true" } else { "false" });
        }
    }

    // Integers are in every decision line: itoa, not the `fmt` machinery.
    fn record_u64(&mut self, field: &Field, value: u64) {
        if let Some(w) = self.key(field) {
            self.result = w.write_str(itoa::Buffer::new().format(value));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if let Some(w) = self.key(field) {
            self.result = w.write_str(itoa::Buffer::new().format(value));
        }
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.raw(field, value);
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.raw(field, value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            self.raw(field, value);
        } else {
            // JSON has no NaN or infinity.
            self.raw(field, "null");
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if let Some(w) = self.key(field) {
            self.result = w
                .write_char('"')
                .and_then(|()| write!(Escaped(w), "{value:?}"))
                .and_then(|()| w.write_char('"'));
        }
    }
}

/// A JSON string, quoted and escaped.
fn write_string(w: &mut impl Write, s: &str) -> fmt::Result {
    w.write_char('"')?;
    Escaped(w).write_str(s)?;
    w.write_char('"')
}

/// Escapes what it is given for the inside of a JSON string.
struct Escaped<'a, W: Write>(&'a mut W);

impl<W: Write> Write for Escaped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let bytes = s.as_bytes();
        // Most values need no escape: check the whole string at once (a fold without early
        // exit, which the compiler vectorises), then copy it in one piece.
        let plain = !bytes.iter().fold(false, |acc, &b| {
            acc | (b < 0x20) | (b == b'"') | (b == b'\\') | (b == 0x7f)
        });
        if plain {
            return self.0.write_str(s);
        }
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let escape = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..=0x1f | 0x7f => "",
                _ => continue,
            };
            // Escapes are ASCII, so `i` is a char boundary.
            self.0.write_str(&s[start..i])?;
            if escape.is_empty() {
                write!(self.0, "\\u{b:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            start = i + 1;
        }
        self.0.write_str(&s[start..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(s: &str) -> String {
        let mut out = String::new();
        write_string(&mut out, s).unwrap();
        out
    }

    #[test]
    fn strings_round_trip_through_a_json_parser() {
        for s in [
            "plain",
            "",
            "quote \" and backslash \\",
            "lines\nand\ttabs\r",
            "control \u{1} \u{1f} \u{7f}",
            "unicode é 日本 🚀",
        ] {
            let json = escaped(s);
            let back: String = serde_json::from_str(&json)
                .unwrap_or_else(|e| panic!("{json} is not a JSON string: {e}"));
            assert_eq!(back, s);
        }
    }
}

#[cfg(test)]
mod same_as_tracing_subscriber {
    //! Our lines must read exactly like `tracing-subscriber`'s JSON format (flattened events,
    //! current span), which log pipelines were set up against.
    use super::*;

    use crate::logging::test_capture::Capture;

    impl Capture {
        fn lines(&self) -> Vec<serde_json::Value> {
            let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
            text.lines()
                .map(|l| {
                    let mut v: serde_json::Value = serde_json::from_str(l)
                        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {l}"));
                    let ts = v.as_object_mut().unwrap().remove("timestamp").unwrap();
                    // RFC 3339, UTC, microseconds: 2026-11-23T09:26:56.138601Z
                    let ts = ts.as_str().unwrap();
                    assert!(ts.len() == 27 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T');
                    v
                })
                .collect()
        }
    }

    fn events() {
        #[derive(Debug)]
        struct Thing {
            #[allow(dead_code)]
            name: &'static str,
        }
        let e = std::io::Error::other("disk \"full\"");
        tracing::info!(
            uid = "u-1",
            endpoint = "mutate",
            dry_run = false,
            duration_us = 42u64,
            delta = -3i64,
            ratio = 0.5f64,
            quoted = "a \"b\"\n\tc\\",
            shown = %"display\u{1}",
            debugged = ?Thing { name: "x" },
            error = &e as &dyn std::error::Error,
            "admission decision"
        );
        let span = tracing::info_span!("admission", uid = %"u-2", n = 7u64);
        span.in_scope(|| {
            tracing::warn!(
                namespace = "team-a",
                "identity lookup failed; admitting unmutated"
            );
            let inner = tracing::info_span!("inner", r#type = "nested");
            inner.in_scope(|| tracing::error!("deep \u{1f680}"));
        });
        tracing::debug!("filtered out");
    }

    fn run(subscriber: impl Subscriber + Send + Sync + 'static) {
        tracing::subscriber::with_default(subscriber, events);
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        use std::time::{Duration, UNIX_EPOCH};
        let at = |secs: u64, micros: u64| {
            let mut w = String::new();
            let t = UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros);
            write_timestamp(&mut w, t).unwrap();
            w
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_782_400, 7), "2000-02-29T00:00:00.000007Z");
        assert_eq!(at(1_735_689_599, 999_999), "2024-12-31T23:59:59.999999Z");
        assert_eq!(at(1_798_045_978, 138_601), "2026-12-23T17:12:58.138601Z");
        assert_eq!(at(4_107_542_400, 0), "2100-03-01T00:00:00.000000Z");
        assert_eq!(at(253_402_300_799, 1), "9999-12-31T23:59:59.000001Z");
        assert_eq!(at(253_402_300_800, 0), "+10000-01-01T00:00:00.000000Z");
        // The same second again (the cached text) and the next one.
        assert_eq!(at(0, 5), "1970-01-01T00:00:00.000005Z");
        assert_eq!(at(1, 0), "1970-01-01T00:00:01.000000Z");
        // Against tracing-subscriber's own clock, to the second (retried across a tick).
        for _ in 0..3 {
            let mut stock = String::new();
            SystemTime
                .format_time(&mut Writer::new(&mut stock))
                .unwrap();
            let mut ours = String::new();
            write_timestamp(&mut ours, std::time::SystemTime::now()).unwrap();
            if stock[..20] == ours[..20] {
                assert_eq!(ours.len(), stock.len());
                return;
            }
        }
        panic!("our timestamp never matched tracing-subscriber's to the second");
    }

    #[test]
    fn lines_match_the_stock_json_format() {
        let ours = Capture::default();
        run(tracing_subscriber::fmt()
            .with_writer(ours.clone())
            .fmt_fields(JsonSpanFields)
            .event_format(JsonLines)
            .finish());
        let stock = Capture::default();
        run(tracing_subscriber::fmt()
            .with_writer(stock.clone())
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .finish());
        let (ours, stock) = (ours.lines(), stock.lines());
        assert_eq!(ours.len(), 3);
        assert_eq!(ours, stock);
        assert_eq!(ours[1]["span"]["uid"], "u-2");
        assert_eq!(ours[2]["span"]["name"], "inner");
    }

    /// The raw lines with the timestamp's value cut out (byte-exact otherwise).
    fn raw_lines(capture: &Capture) -> Vec<String> {
        let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| {
                let prefix = "{\"timestamp\":\"";
                assert!(l.starts_with(prefix), "{l}");
                format!("{prefix}{}", &l[prefix.len() + 27..])
            })
            .collect()
    }

    #[test]
    fn the_decision_line_written_directly_is_the_bytes_of_its_event() {
        let line = DecisionLine {
            uid: "u-\"1\"",
            endpoint: "mutate",
            kind: "Pod",
            operation: "CREATE",
            namespace: "team-a",
            name: "carts-0",
            service_account: "carts",
            outcome: "denied",
            reason: "no identity",
            dry_run: true,
            duration_us: 1234,
            detail: Some("tab\there, line\nbreak, delete \u{7f}, \u{1f680}"),
        };
        let plain = DecisionLine {
            detail: None,
            dry_run: false,
            ..line
        };
        let capture = Capture::default();
        let subscriber = crate::logging::json_subscriber(
            tracing_subscriber::EnvFilter::new("info"),
            capture.clone(),
        );
        tracing::subscriber::with_default(subscriber, || {
            let direct_writes = || super::super::decision::DIRECT_WRITES.get();
            for l in [line, plain] {
                l.event();
                let mut direct = String::new();
                decision_json(&mut direct, &l, std::time::SystemTime::now()).unwrap();
                capture
                    .0
                    .lock()
                    .unwrap()
                    .extend_from_slice(direct.as_bytes());
                let before = direct_writes();
                l.emit();
                assert_eq!(direct_writes(), before + 1, "emit took the direct path");
            }
            // Inside a span, the line carries it (written by tracing).
            let before = direct_writes();
            tracing::info_span!("outer").in_scope(|| plain.emit());
            assert_eq!(
                direct_writes(),
                before,
                "inside a span, emit is a tracing event"
            );
        });
        let lines = raw_lines(&capture);
        assert_eq!(lines.len(), 7);
        assert_eq!(lines[0], lines[1], "direct vs event");
        assert_eq!(lines[1], lines[2], "emit");
        assert_eq!(lines[3], lines[4], "direct vs event, no detail");
        assert_eq!(lines[4], lines[5], "emit, no detail");
        assert_ne!(lines[0], lines[3]);
        assert!(
            lines[6].ends_with(r#""target":"pod_identity_webhook::http","span":{"name":"outer"}}"#),
            "{}",
            lines[6]
        );
        let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(v["uid"], "u-\"1\"");
        assert_eq!(v["detail"], line.detail.unwrap());
        assert_eq!(v["dry_run"], true);
        assert_eq!(v["duration_us"], 1234);
    }

    #[test]
    fn the_decision_line_obeys_rust_log() {
        let capture = Capture::default();
        let subscriber = crate::logging::json_subscriber(
            tracing_subscriber::EnvFilter::new("info,pod_identity_webhook::http=warn"),
            capture.clone(),
        );
        let line = DecisionLine {
            uid: "u",
            endpoint: "validate",
            kind: "Pod",
            operation: "CREATE",
            namespace: "n",
            name: "p",
            service_account: "s",
            outcome: "allowed",
            reason: "r",
            dry_run: false,
            duration_us: 1,
            detail: None,
        };
        tracing::subscriber::with_default(subscriber, || line.emit());
        assert!(capture.0.lock().unwrap().is_empty());
    }

    #[test]
    fn log_crate_records_keep_their_target_and_drop_their_metadata_fields() {
        let ours = Capture::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(ours.clone())
            .fmt_fields(JsonSpanFields)
            .event_format(JsonLines)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let record = log::Record::builder()
                .args(format_args!("peer sent no certificates"))
                .level(log::Level::Warn)
                .target("rustls::server::hs")
                .module_path_static(Some("rustls::server::hs"))
                .file_static(Some("src/server/hs.rs"))
                .line(Some(10))
                .build();
            tracing_log::format_trace(&record).unwrap();
        });
        let lines = ours.lines();
        assert_eq!(
            lines,
            vec![serde_json::json!({
                "level": "WARN",
                "message": "peer sent no certificates",
                "target": "rustls::server::hs",
            })]
        );
    }
}
