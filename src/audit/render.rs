//! Output of `check` and `audit`: lines or a table for people, JSON for tools.

use std::io::{self, Write};

use super::check::{CheckReport, ObjectReport, Status};

/// `check` as text: one line per object, then one per unreadable input, then a summary.
///
/// `Deployment team-a/carts: denied: <message>  [app.yaml document 2]`
pub fn check_text(report: &CheckReport, out: &mut impl Write) -> io::Result<()> {
    for o in &report.objects {
        object_line(o, out)?;
    }
    for e in &report.errors {
        writeln!(out, "error: {e}")?;
    }
    writeln!(out, "{}", summary(report))
}

fn object_line(o: &ObjectReport, out: &mut impl Write) -> io::Result<()> {
    let name = match &o.namespace {
        Some(ns) => format!("{ns}/{}", o.name),
        None => o.name.clone(),
    };
    write!(out, "{} {name}: {}", o.kind, o.status.as_str())?;
    if o.status == Status::Warned && o.mutated {
        write!(out, " (and mutated)")?;
    }
    match o.messages.as_slice() {
        [] if o.status == Status::Mutated => write!(out, ": {}", o.reason)?,
        [] => {}
        messages => write!(out, ": {}", messages.join(" | "))?,
    }
    if o.status <= Status::Warned {
        write!(out, "  [{}]", o.origin())?;
    }
    writeln!(out)?;
    if let Some(patch) = &o.patch {
        writeln!(out, "  patch: {patch}")?;
    }
    Ok(())
}

/// `N objects: a allowed, m mutated, w warned, d denied[, i invalid][; e unreadable inputs]`.
pub fn summary(report: &CheckReport) -> String {
    let mut text = format!(
        "{} objects: {} allowed, {} mutated, {} warned, {} denied",
        report.objects.len(),
        report.count(Status::Allowed),
        report.count(Status::Mutated),
        report.count(Status::Warned),
        report.count(Status::Denied),
    );
    let invalid = report.count(Status::Invalid);
    if invalid > 0 {
        text.push_str(&format!(", {invalid} invalid"));
    }
    if !report.errors.is_empty() {
        text.push_str(&format!("; {} unreadable inputs", report.errors.len()));
    }
    text
}

/// `check` as one JSON document: `{"objects": [...], "errors": [...], "summary": {...}}`.
pub fn check_json(report: &CheckReport, out: &mut impl Write) -> io::Result<()> {
    let summary = serde_json::json!({
        "objects": report.objects.len(),
        "allowed": report.count(Status::Allowed),
        "mutated": report.count(Status::Mutated),
        "warned": report.count(Status::Warned),
        "denied": report.count(Status::Denied),
        "invalid": report.count(Status::Invalid),
        "errors": report.errors.len(),
        "exitCode": report.exit_code(),
    });
    let mut doc = serde_json::to_value(report).map_err(io::Error::other)?;
    doc["summary"] = summary;
    serde_json::to_writer_pretty(&mut *out, &doc).map_err(io::Error::other)?;
    writeln!(out)
}
