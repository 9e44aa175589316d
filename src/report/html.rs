//! The job-request page (`metadata/job-requests/<id>.html`): what the jobs site shows for a job
//! request (pipeline.md §3.1), in its order, as one self-contained file (styles inline, images
//! embedded, no network) — plus, since locally they are on disk, the moderately sensitive
//! outputs themselves (images inline, CSVs as tables) with the output checks beside each.

use std::fmt::Write as _;
use std::path::Path;

use base64::Engine as _;
use jiff::Timestamp;

use super::utc;
use crate::pipeline::jobs::{Job, JobRequest, State, format_runtime};
use crate::pipeline::project::PrivacyLevel;

/// Rows of a CSV shown on the page.
const CSV_ROWS: usize = 100;
/// Log lines shown for a failed job.
const LOG_LINES: usize = 15;
/// Images larger than this are linked, not embedded.
const MAX_EMBED: u64 = 4 * 1024 * 1024;

/// The numbers the page shows, computed once (and unit-tested).
#[derive(Debug, PartialEq)]
pub struct PageModel {
    /// Per state (Pending, Running, Succeeded, Failed): count and whole percentage.
    pub statistics: Vec<(State, usize, usize)>,
    pub completed: usize,
    pub total: usize,
    /// `HH:MM:SS` (the sum of the job runtimes), or `-`.
    pub runtime: String,
    /// Per job that started: its action, and where its bar starts and ends as percentages of
    /// the span from the first start to the last end.
    pub bars: Vec<(String, f64, f64)>,
}

impl PageModel {
    pub fn new(request: &JobRequest) -> PageModel {
        let total = request.jobs.len();
        let count = |s: State| request.jobs.iter().filter(|j| j.state == s).count();
        let pct = |n: usize| (n * 100).checked_div(total).unwrap_or(0);
        let statistics =
            [State::Pending, State::Running, State::Succeeded, State::Failed].into_iter().map(|s| (s, count(s), pct(count(s)))).collect();
        let completed = count(State::Succeeded) + count(State::Failed);
        let seconds = |t: Timestamp| t.as_millisecond() as f64 / 1000.0;
        let started: Vec<&Job> = request.jobs.iter().filter(|j| j.started_at.is_some()).collect();
        let begin = started.iter().filter_map(|j| j.started_at).min();
        let end = started.iter().map(|j| j.completed_at.or(j.started_at)).max().flatten();
        let bars = match (begin, end) {
            (Some(b), Some(e)) => {
                let span = (seconds(e) - seconds(b)).max(1e-3);
                let mut jobs = started.clone();
                jobs.sort_by_key(|j| j.started_at);
                jobs.iter()
                    .map(|j| {
                        let s = seconds(j.started_at.expect("started")) - seconds(b);
                        let f = seconds(j.completed_at.unwrap_or(e)) - seconds(b);
                        (j.action.clone(), 100.0 * s / span, 100.0 * f / span)
                    })
                    .collect()
            }
            _ => vec![],
        };
        PageModel { statistics, completed, total, runtime: format_runtime(request.runtime_seconds()), bars }
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// project.yaml with keys and comments marked (no external highlighter).
fn highlight_yaml(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let (code, comment) = match line.find(" #").or(if line.trim_start().starts_with('#') { line.find('#') } else { None }) {
            Some(i) => (&line[..i], &line[i..]),
            None => (line, ""),
        };
        match code.split_once(':') {
            Some((key, rest)) if !key.trim().is_empty() && !key.contains(['"', '\'']) => {
                let _ = write!(out, "<span class=k>{}</span>:{}", esc(key), esc(rest));
            }
            _ => out.push_str(&esc(code)),
        }
        if !comment.is_empty() {
            let _ = write!(out, "<span class=c>{}</span>", esc(comment));
        }
        out.push('\n');
    }
    out
}

fn pill(state: State) -> String {
    format!("<span class=\"pill {}\">{}</span>", state.label().to_lowercase(), state.label())
}

fn human_size(bytes: u64) -> String {
    match bytes {
        b if b < 1024 => format!("{b} B"),
        b if b < 1024 * 1024 => format!("{:.1} KB", b as f64 / 1024.0),
        b => format!("{:.1} MB", b as f64 / (1024.0 * 1024.0)),
    }
}

/// A CSV's first rows as a table.
fn csv_table(text: &str) -> String {
    let mut rows = quarry_queries::csv::parse(text.strip_prefix('\u{feff}').unwrap_or(text)).unwrap_or_default();
    let more = rows.len().saturating_sub(CSV_ROWS + 1);
    rows.truncate(CSV_ROWS + 1);
    let mut out = String::from("<div class=scroll><table class=data>");
    for (i, row) in rows.iter().enumerate() {
        let tag = if i == 0 { "th" } else { "td" };
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<{tag}>{}</{tag}>", esc(cell));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table></div>");
    if more > 0 {
        let _ = write!(out, "<p class=muted>… {more} more rows</p>");
    }
    out
}

/// One moderately sensitive output, shown.
fn show_output(path: &str, file: &Path, job: &Job) -> String {
    let mut out = format!("<div class=output><h4>{} <span class=muted>({})</span></h4>", esc(path), esc(&job.action));
    let checks: Vec<&String> = [job.level4_problems.get(path), job.disclosure_warnings.get(path)].into_iter().flatten().collect();
    if checks.is_empty() {
        if path.ends_with(".csv") {
            out.push_str("<p class=ok>Output checks: no problems found.</p>");
        }
    } else {
        for c in checks {
            let _ = write!(out, "<p class=warn>Output checks: {}</p>", esc(c));
        }
    }
    let size = std::fs::metadata(file).map(|m| m.len()).ok();
    let lower = path.to_lowercase();
    match size {
        None => out.push_str("<p class=muted>(no longer on disk)</p>"),
        Some(s) if (lower.ends_with(".png") || lower.ends_with(".svg")) && s <= MAX_EMBED => {
            let mime = if lower.ends_with(".png") { "image/png" } else { "image/svg+xml" };
            if let Ok(bytes) = std::fs::read(file) {
                let _ = write!(
                    out,
                    "<img alt=\"{}\" src=\"data:{mime};base64,{}\">",
                    esc(path),
                    base64::engine::general_purpose::STANDARD.encode(&bytes)
                );
            }
        }
        Some(_) if lower.ends_with(".csv") => {
            if let Ok(text) = std::fs::read_to_string(file) {
                out.push_str(&csv_table(&text));
            }
        }
        Some(s) if lower.ends_with(".txt") || lower.ends_with(".json") || lower.ends_with(".md") => {
            if let Ok(text) = std::fs::read_to_string(file) {
                let shown: String = text.chars().take(20_000).collect();
                let _ = write!(out, "<pre>{}</pre>", esc(&shown));
            } else {
                let _ = write!(out, "<p class=muted>{}</p>", human_size(s));
            }
        }
        Some(s) => {
            let _ = write!(out, "<p class=muted>{}</p>", human_size(s));
        }
    }
    out.push_str("</div>");
    out
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;background:#f5f6f8;color:#1f2933}\
header{background:#17324d;color:#fff;padding:18px 32px}header h1{margin:0;font-size:22px}header p{margin:4px 0 0;color:#c9d6e3}\
main{max-width:1100px;margin:0 auto;padding:20px 32px}section{background:#fff;border:1px solid #dde3ea;border-radius:8px;padding:16px 20px;margin:16px 0}\
h2{font-size:17px;margin:0 0 12px}h4{margin:14px 0 6px}table{border-collapse:collapse}td,th{padding:4px 10px;text-align:left;border-bottom:1px solid #eef1f4;vertical-align:top}\
.pill{display:inline-block;border-radius:10px;padding:1px 10px;font-size:12px;font-weight:600}.succeeded{background:#d7f5dd;color:#14622a}\
.failed{background:#fde0e0;color:#9b1c1c}.pending{background:#eceff3;color:#4b5563}.running{background:#dbeafe;color:#1e40af}\
.muted{color:#6b7785}.warn{color:#9b1c1c}.ok{color:#14622a}.levels{display:grid;grid-template-columns:1fr 1fr;gap:12px}\
.level{border-radius:6px;padding:10px 14px}.hs{background:#fdf0e6}.ms{background:#e8f1fb}pre{background:#f7f8fa;padding:10px;overflow:auto;font-size:12px}\
.k{color:#17324d;font-weight:600}.c{color:#7b8794}.gantt{position:relative;height:14px;background:#eef1f4;border-radius:3px;min-width:300px}\
.bar{position:absolute;top:0;bottom:0;border-radius:3px}.bar.succeeded{background:#34a853}.bar.failed{background:#d93025}.bar.running{background:#4285f4}.bar.pending{background:#9aa5b1}\
img{max-width:100%;border:1px solid #eef1f4}.scroll{overflow:auto;max-height:420px}table.data td,table.data th{font-size:13px;font-family:ui-monospace,monospace}\
.output{border-top:1px solid #eef1f4;padding-top:6px}details summary{cursor:pointer;font-weight:600}";

/// The page of a job request; `project_dir` holds its outputs and logs.
pub fn request_html(request: &JobRequest, project_dir: &Path) -> String {
    let model = PageModel::new(request);
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>Job request {id}</title><style>{STYLE}</style></head><body>\
         <header><h1>Job request {id}</h1><p>Workspace <b>{ws}</b> · identifier {ident}</p></header><main>",
        id = esc(&request.id),
        ws = esc(&request.workspace),
        ident = esc(&request.identifier)
    );
    h.push_str(
        "<section><h2>Output security levels</h2><div class=levels>\
         <div class=\"level hs\"><b>Highly sensitive</b><br>Patient-level data. Never viewable: these outputs stay on the secure server.</div>\
         <div class=\"level ms\"><b>Moderately sensitive</b><br>Aggregated results. Viewable by researchers with permission, and may be released after output checking.</div>\
         </div></section>",
    );

    // Jobs.
    h.push_str("<section><h2>Jobs</h2>");
    if request.jobs.is_empty() {
        let _ = write!(h, "<p>{}</p><p class=muted>{}</p>", esc(&request.status.human()), esc(&request.status_message));
    } else {
        h.push_str("<table><tr><th>Action</th><th>Status</th><th>Runtime</th><th>Details</th></tr>");
        for job in &request.jobs {
            let runtime = format_runtime(job.runtime_seconds().map(|s| s as u64));
            let details = if matches!(job.state, State::Failed | State::Pending) {
                format!("<code>{}</code>: {}", job.status_code.as_str(), esc(&job.status_message))
            } else {
                esc(&job.status_message)
            };
            let _ = write!(
                h,
                "<tr><td><b>{}</b><br><span class=muted><code>{}</code></span></td><td>{}</td><td>{runtime}</td><td>{details}</td></tr>",
                esc(&job.action),
                esc(&job.run_command),
                pill(job.state)
            );
        }
        h.push_str("</table>");
        for job in request.jobs.iter().filter(|j| j.state == State::Failed) {
            if let Ok(log) = std::fs::read_to_string(project_dir.join("metadata").join(format!("{}.log", job.action))) {
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(LOG_LINES)..].join("\n");
                let _ = write!(
                    h,
                    "<h4>{} failed: the end of metadata/{}.log</h4><pre>{}</pre>",
                    esc(&job.action),
                    esc(&job.action),
                    esc(&tail)
                );
            }
        }
    }
    h.push_str("</section>");

    // Statistics.
    if model.total > 0 {
        h.push_str("<section><h2>Job statistics</h2><table>");
        for (state, n, pct) in &model.statistics {
            let _ = write!(h, "<tr><td>{}</td><td>{n}</td><td>{pct}%</td></tr>", pill(*state));
        }
        let _ = write!(
            h,
            "</table><p><b>{}/{} ({}%) complete</b></p></section>",
            model.completed,
            model.total,
            model.completed * 100 / model.total
        );
    }

    // Pipeline.
    let _ = write!(
        h,
        "<section><details><summary>Pipeline: project.yaml</summary><pre>{}</pre></details></section>",
        highlight_yaml(&request.project_yaml)
    );

    // Timeline.
    let or_dash = |t: Option<Timestamp>| t.map(utc).unwrap_or_else(|| "-".into());
    let _ = write!(
        h,
        "<section><h2>Timeline</h2><table><tr><td>Created</td><td>{}</td></tr><tr><td>Started</td><td>{}</td></tr><tr><td>Finished</td><td>{}</td></tr><tr><td>Runtime</td><td>{}</td></tr></table>",
        utc(request.created_at),
        or_dash(request.started_at()),
        or_dash(request.finished_at()),
        model.runtime
    );
    if !model.bars.is_empty() {
        h.push_str("<h4>When each job ran</h4><table>");
        for (action, start, end) in &model.bars {
            let state = request.jobs.iter().find(|j| &j.action == action).map(|j| j.state.label().to_lowercase()).unwrap_or_default();
            let _ = write!(
                h,
                "<tr><td>{}</td><td style=\"width:70%\"><div class=gantt><div class=\"bar {state}\" style=\"left:{start:.1}%;width:{:.1}%\"></div></div></td></tr>",
                esc(action),
                (end - start).max(0.5)
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</section>");

    // Job request.
    let yes_no = |b: bool| if b { "Yes" } else { "No" };
    let _ = write!(
        h,
        "<section><h2>Job request</h2><table><tr><td>Status</td><td>{} <span class=muted>{}</span></td></tr>\
         <tr><td>Backend</td><td>{}</td></tr><tr><td>Requested by</td><td>{}</td></tr>",
        esc(&request.status.human()),
        esc(&request.status_message),
        esc(&request.backend),
        esc(&request.requested_by)
    );
    if let Some(git) = &request.git {
        if let Some(branch) = &git.branch {
            let _ = write!(h, "<tr><td>Branch</td><td>{}</td></tr>", esc(branch));
        }
        let _ = write!(h, "<tr><td>Commit</td><td><code>{}</code></td></tr>", esc(&git.commit[..git.commit.len().min(7)]));
    }
    let _ = write!(
        h,
        "<tr><td>Force run dependencies</td><td>{}</td></tr><tr><td>Requested actions</td><td>{}</td></tr></table></section>",
        yes_no(request.force_run_dependencies),
        esc(&request.requested_actions.join(", "))
    );

    // Outputs.
    let outputs: Vec<(&String, &PrivacyLevel, &Job)> =
        request.jobs.iter().flat_map(|j| j.outputs.iter().map(move |(p, l)| (p, l, j))).collect();
    if !outputs.is_empty() {
        h.push_str("<section><h2>Outputs</h2>");
        let highly: Vec<_> = outputs.iter().filter(|(_, l, _)| **l == PrivacyLevel::HighlySensitive).collect();
        if !highly.is_empty() {
            h.push_str("<h3>Highly sensitive</h3><table>");
            for (path, _, job) in highly {
                let size = std::fs::metadata(project_dir.join(path.as_str()))
                    .map(|m| human_size(m.len()))
                    .unwrap_or_else(|_| "(not on disk)".into());
                let _ = write!(h, "<tr><td><code>{}</code></td><td>{size}</td><td class=muted>{}</td></tr>", esc(path), esc(&job.action));
            }
            h.push_str("</table>");
        }
        let moderately: Vec<_> = outputs.iter().filter(|(_, l, _)| **l == PrivacyLevel::ModeratelySensitive).collect();
        if !moderately.is_empty() {
            h.push_str("<h3>Moderately sensitive</h3>");
            for (path, _, job) in moderately {
                h.push_str(&show_output(path, &project_dir.join(path.as_str()), job));
            }
        }
        h.push_str("</section>");
    }
    h.push_str("<p class=muted>Written by quarry.</p></main></body></html>\n");
    h
}

/// Writes the page beside the request's JSON; returns its path.
pub fn write_request_page(request: &JobRequest, project_dir: &Path, requests_dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let path = requests_dir.join(format!("{}.html", request.id));
    crate::pipeline::state::write_atomically(&path, request_html(request, project_dir).as_bytes())?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::jobs::{GitInfo, RequestStatus, StatusCode};

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn job(action: &str, code: StatusCode, start: Option<&str>, end: Option<&str>) -> Job {
        let mut j = Job::new(format!("id-{action}"), action, &format!("ehrql:v1 generate-dataset {action}.py"), ts("2026-11-24T10:00:00Z"));
        j.set_status(code, code.default_message());
        j.started_at = start.map(ts);
        j.completed_at = end.map(ts);
        j
    }

    fn request(jobs: Vec<Job>) -> JobRequest {
        let mut r = JobRequest {
            id: "0123456789".into(),
            identifier: "abcdefghijklmnop".into(),
            workspace: "vte".into(),
            requested_by: "researcher".into(),
            backend: "local".into(),
            requested_actions: vec!["run_all".into()],
            force_run_dependencies: false,
            git: Some(GitInfo { commit: "a710e8cdeadbeef".into(), branch: Some("main".into()) }),
            created_at: ts("2026-11-24T10:00:00Z"),
            status: RequestStatus::Pending,
            status_message: String::new(),
            project_yaml: "version: '3.0'  # the version\nactions:\n  a:\n    run: ehrql:v1 generate-dataset a.py\n".into(),
            jobs,
        };
        r.refresh_status();
        r
    }

    #[test]
    fn the_model_counts_states_sums_runtimes_and_places_bars() {
        let r = request(vec![
            job("a", StatusCode::Succeeded, Some("2026-11-24T10:00:00Z"), Some("2026-11-24T10:00:10Z")),
            job("b", StatusCode::NonzeroExit, Some("2026-11-24T10:00:05Z"), Some("2026-11-24T10:00:20Z")),
            job("c", StatusCode::DependencyFailed, None, None),
            job("d", StatusCode::Created, None, None),
        ]);
        let m = PageModel::new(&r);
        assert_eq!(m.statistics, vec![(State::Pending, 1, 25), (State::Running, 0, 0), (State::Succeeded, 1, 25), (State::Failed, 2, 50)]);
        assert_eq!((m.completed, m.total), (3, 4));
        assert_eq!(m.runtime, "00:00:25");
        assert_eq!(m.bars, vec![("a".to_string(), 0.0, 50.0), ("b".to_string(), 25.0, 100.0)]);
        assert_eq!(r.status, RequestStatus::Running, "a pending job keeps the request running");
    }

    #[test]
    fn page_snapshot() {
        let mut a = job("generate_dataset", StatusCode::Succeeded, Some("2026-11-24T10:00:00Z"), Some("2026-11-24T10:00:02Z"));
        a.outputs.insert("output/dataset.csv.gz".into(), PrivacyLevel::HighlySensitive);
        let mut b = job("initial_analysis", StatusCode::Succeeded, Some("2026-11-24T10:00:02Z"), Some("2026-11-24T10:00:03Z"));
        b.outputs.insert("output/table.csv".into(), PrivacyLevel::ModeratelySensitive);
        b.disclosure_warnings.insert("output/table.csv".into(), "column `n`: 1 count(s) between 1 and 7".into());
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("output")).unwrap();
        std::fs::write(dir.path().join("output/table.csv"), "group,n\na,3\nb,<tag>\n").unwrap();
        let html = request_html(&request(vec![a, b]), dir.path());
        insta::assert_snapshot!(html.replace("><", ">\n<"));
    }
}
