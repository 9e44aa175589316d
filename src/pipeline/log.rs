//! `metadata/<action>.log`: the job's output with a timestamp per line, then upstream's
//! `JOB SUMMARY` trailer (pipeline.md §2.6) that output checkers and airlock rely on.

use std::fmt::Write as _;

use jiff::{Timestamp, tz::TimeZone};

use super::executor::LogLine;
use super::jobs::Job;

pub const SUMMARY_MARKER: &str = "=============JOB SUMMARY=============";

/// RFC 3339 with nanoseconds, 30 characters: `2026-11-24T21:07:00.123456789Z`.
pub fn rfc3339_nano(ts: Timestamp) -> String {
    let dt = ts.to_zoned(TimeZone::UTC).datetime();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.subsec_nanosecond()
    )
}

/// `YYYY-MM-DD HH:MM:SS.mmmZ`, upstream's `--timestamps` console format.
pub fn console_timestamp(ts: Timestamp) -> String {
    let dt = ts.to_zoned(TimeZone::UTC).datetime();
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03}Z",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.subsec_nanosecond() / 1_000_000
    )
}

/// Renders a finished job's log file.
pub fn render(job: &Job, request_id: &str, commit: Option<&str>, lines: &[LogLine]) -> String {
    let mut out = String::new();
    for line in lines {
        let _ = writeln!(out, "{} {}", rfc3339_nano(line.at), line.text);
    }
    out.push('\n');
    out.push_str(SUMMARY_MARKER);
    out.push('\n');
    let exit_code = job.exit_code.map(|c| c.to_string());
    let created = Some(job.created_at.to_string());
    let completed = job.completed_at.map(|t| t.to_string());
    let fields: [(&str, Option<&str>); 8] = [
        ("job_definition_id", Some(&job.id)),
        ("job_definition_request_id", Some(request_id)),
        ("commit", commit),
        ("exit_code", exit_code.as_deref()),
        ("created_at", created.as_deref()),
        ("completed_at", completed.as_deref()),
        ("status_message", Some(&job.status_message)),
        ("hint", job.hint.as_deref()),
    ];
    for (key, value) in fields {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            let _ = writeln!(out, "{key}: {v}");
        }
    }
    out.push_str("\noutputs:\n");
    if job.outputs.is_empty() {
        out.push_str("  (no outputs)\n");
    } else {
        out.push_str(&aligned_rows(&job.outputs, "  "));
    }
    if !job.level4_problems.is_empty() {
        out.push_str("\nInvalid moderately_sensitive outputs:\n");
        out.push_str(&aligned_rows(&job.level4_problems, "  "));
    }
    if !job.disclosure_warnings.is_empty() {
        out.push_str("\nDisclosure checks of moderately_sensitive outputs (quarry check-outputs):\n");
        out.push_str(&aligned_rows(&job.disclosure_warnings, "  "));
    }
    if !job.undeclared_outputs.is_empty() {
        out.push_str("\nUndeclared outputs (match no pattern in project.yaml, not saved):\n");
        for p in &job.undeclared_outputs {
            let _ = writeln!(out, "  {p}");
        }
    }
    out
}

/// `<path>  - <value>` rows with the paths padded to the widest.
pub fn aligned_rows<V: std::fmt::Display>(rows: &std::collections::BTreeMap<String, V>, indent: &str) -> String {
    let width = rows.keys().map(|p| p.chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    for (path, value) in rows {
        let _ = writeln!(out, "{indent}{path:<width$}  - {value}");
    }
    out
}
