//! `metadata/<action>.log`: the job's output with a timestamp per line, written as the lines
//! arrive (so `tail -f` follows a job and a killed run loses nothing), then upstream's
//! `JOB SUMMARY` trailer (pipeline.md §2.6) that output checkers and airlock rely on.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use jiff::{Timestamp, tz::TimeZone};

use super::jobs::Job;

/// How many of a job's last lines are kept in memory, for the console's summary of a failure.
pub const TAIL_LINES: usize = 32;

/// A job's log file while the job runs: each line is written through at once (one `write`
/// per line, no buffer to lose), and the last [`TAIL_LINES`] are kept.
pub struct LiveLog {
    path: PathBuf,
    inner: Mutex<LiveInner>,
}

struct LiveInner {
    /// `None` after a write failed; the failure is reported when the log is finished.
    file: Option<File>,
    error: Option<std::io::Error>,
    tail: VecDeque<String>,
}

impl LiveLog {
    /// Creates (or empties) the log file, with the umask's permissions, as outputs are.
    pub fn create(path: &Path) -> Result<LiveLog> {
        let file = File::create(path).with_context(|| format!("could not create {}", path.display()))?;
        Ok(LiveLog {
            path: path.to_path_buf(),
            inner: Mutex::new(LiveInner { file: Some(file), error: None, tail: VecDeque::with_capacity(TAIL_LINES) }),
        })
    }

    /// Adds a line the job printed, stamped with the time it arrived.
    pub fn line(&self, text: &str) {
        let stamped = format!("{} {text}\n", rfc3339_nano(Timestamp::now()));
        let mut inner = self.inner.lock().expect("log lock");
        if let Some(file) = &mut inner.file
            && let Err(e) = file.write_all(stamped.as_bytes())
        {
            inner.file = None;
            inner.error = Some(e);
        }
        if inner.tail.len() == TAIL_LINES {
            inner.tail.pop_front();
        }
        inner.tail.push_back(text.to_string());
    }

    /// The last lines, oldest first.
    pub fn tail(&self) -> Vec<String> {
        self.inner.lock().expect("log lock").tail.iter().cloned().collect()
    }

    /// Appends the trailer and closes the file.
    pub fn finish(&self, trailer: &str) -> Result<()> {
        let mut inner = self.inner.lock().expect("log lock");
        if let Some(e) = inner.error.take() {
            return Err(e).with_context(|| format!("could not write {}", self.path.display()));
        }
        if let Some(mut file) = inner.file.take() {
            file.write_all(trailer.as_bytes()).with_context(|| format!("could not write {}", self.path.display()))?;
        }
        Ok(())
    }
}

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

/// The trailer that ends a finished job's log file, after its lines.
pub fn trailer(job: &Job, request_id: &str, commit: Option<&str>) -> String {
    let mut out = String::new();
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
