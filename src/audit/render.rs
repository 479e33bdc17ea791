//! Output of `check` and `audit`: lines or a table for people, JSON for tools.

use std::io::{self, Write};

use super::check::{CheckReport, CheckStatus, ObjectReport};
use super::findings::AuditReport;

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
    if o.status == CheckStatus::Warned && o.mutated {
        write!(out, " (and mutated)")?;
    }
    match o.messages.as_slice() {
        [] if o.status == CheckStatus::Mutated => write!(out, ": {}", o.reason)?,
        [] => {}
        messages => write!(out, ": {}", messages.join(" | "))?,
    }
    if o.status <= CheckStatus::Warned {
        write!(out, "  [{}]", o.origin())?;
    }
    writeln!(out)?;
    if let Some(identity) = &o.identity {
        writeln!(out, "  identity: {}", identity.description)?;
    }
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
        report.count(CheckStatus::Allowed),
        report.count(CheckStatus::Mutated),
        report.count(CheckStatus::Warned),
        report.count(CheckStatus::Denied),
    );
    let invalid = report.count(CheckStatus::Invalid);
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
        "allowed": report.count(CheckStatus::Allowed),
        "mutated": report.count(CheckStatus::Mutated),
        "warned": report.count(CheckStatus::Warned),
        "denied": report.count(CheckStatus::Denied),
        "invalid": report.count(CheckStatus::Invalid),
        "errors": report.errors.len(),
        "exitCode": report.exit_code(),
    });
    let mut doc = serde_json::to_value(report).map_err(io::Error::other)?;
    doc["summary"] = summary;
    serde_json::to_writer_pretty(&mut *out, &doc).map_err(io::Error::other)?;
    writeln!(out)
}

/// `audit` as a table: one row per finding, then the totals.
pub fn audit_table(report: &AuditReport, out: &mut impl Write) -> io::Result<()> {
    if report.findings.is_empty() {
        writeln!(out, "no findings")?;
    } else {
        let header = ["NAMESPACE", "KIND", "NAME", "REASON", "SEVERITY", "MESSAGE"];
        let rows: Vec<[String; 6]> = report
            .findings
            .iter()
            .map(|f| {
                [
                    f.namespace.clone(),
                    f.kind.clone(),
                    f.name.clone(),
                    f.reason.as_str().to_string(),
                    f.severity.as_str().to_string(),
                    f.message.clone(),
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: [&str; 6], out: &mut dyn Write| -> io::Result<()> {
            for (i, cell) in cells.iter().enumerate().take(5) {
                write!(out, "{cell:<width$}  ", width = widths[i])?;
            }
            writeln!(out, "{}", cells[5])
        };
        line(header, out)?;
        for row in &rows {
            line(row.each_ref().map(String::as_str), out)?;
        }
    }
    writeln!(out, "{}", audit_summary(report))
}

/// `N findings (reason: n, ...) in X pods, Y workloads, Z serviceaccounts`.
pub fn audit_summary(report: &AuditReport) -> String {
    let by_reason: Vec<String> = report
        .by_reason()
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(r, n)| format!("{}: {n}", r.as_str()))
        .collect();
    let scanned: Vec<String> = report
        .scanned
        .iter()
        .map(|(kind, n)| format!("{n} {kind}"))
        .collect();
    let mut text = format!("{} findings", report.findings.len());
    if !by_reason.is_empty() {
        text.push_str(&format!(" ({})", by_reason.join(", ")));
    }
    text.push_str(&format!("; scanned {}", scanned.join(", ")));
    text
}

/// `audit` as one JSON document: `{"findings": [...], "summary": {...}}`.
pub fn audit_json(report: &AuditReport, out: &mut impl Write) -> io::Result<()> {
    let by_reason: serde_json::Map<String, serde_json::Value> = report
        .by_reason()
        .into_iter()
        .map(|(r, n)| (r.as_str().to_string(), n.into()))
        .collect();
    let scanned: serde_json::Map<String, serde_json::Value> = report
        .scanned
        .iter()
        .map(|(k, n)| (k.to_string(), (*n).into()))
        .collect();
    let doc = serde_json::json!({
        "findings": report.findings,
        "summary": {
            "findings": report.findings.len(),
            "byReason": by_reason,
            "scanned": scanned,
            "exitCode": report.exit_code(),
        },
    });
    serde_json::to_writer_pretty(&mut *out, &doc).map_err(io::Error::other)?;
    writeln!(out)
}
