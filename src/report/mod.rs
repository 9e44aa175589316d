//! What a person reads about a run: `quarry status` (a job request as text, in the jobs
//! site's order) and `quarry check` (the validated plan).

pub mod html;

use std::fmt::Write as _;

use jiff::{Timestamp, tz::TimeZone};

use crate::pipeline::jobs::{JobRequest, State, StatusCode, format_runtime};
use crate::pipeline::project::{PrivacyLevel, Project, python_float_repr};

/// `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc(ts: Timestamp) -> String {
    ts.to_zoned(TimeZone::UTC).strftime("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A job request as `quarry status` prints it.
pub fn request_text(request: &JobRequest) -> String {
    let mut out = String::new();
    let yes_no = |b: bool| if b { "Yes" } else { "No" };
    let _ = writeln!(out, "Job request: {}", request.id);
    let _ = writeln!(out, "Workspace: {}  (identifier {})", request.workspace, request.identifier);
    let _ = writeln!(out);
    let _ = writeln!(out, "Status: {}", request.status.human());
    if request.status_message.is_empty() {
        // nothing
    } else {
        let _ = writeln!(out, "  {}", request.status_message);
    }
    let _ = writeln!(out, "Backend: {}", request.backend);
    let _ = writeln!(out, "Requested by: {}", request.requested_by);
    if let Some(git) = &request.git {
        if let Some(branch) = &git.branch {
            let _ = writeln!(out, "Branch: {branch}");
        }
        let _ = writeln!(out, "Git commit hash: {}", &git.commit[..git.commit.len().min(7)]);
    }
    let _ = writeln!(out, "Force run dependencies: {}", yes_no(request.force_run_dependencies));
    let _ = writeln!(out, "Requested actions: {}", request.requested_actions.join(", "));

    let _ = writeln!(out, "\nTimeline");
    let _ = writeln!(out, "  Created:  {}", utc(request.created_at));
    let _ = writeln!(out, "  Started:  {}", request.started_at().map(utc).unwrap_or_else(|| "-".into()));
    let _ = writeln!(out, "  Finished: {}", request.finished_at().map(utc).unwrap_or_else(|| "-".into()));
    let _ = writeln!(out, "  Runtime:  {}", format_runtime(request.runtime_seconds()));

    let _ = writeln!(out, "\nJobs");
    if request.jobs.is_empty() {
        let _ = writeln!(out, "  {}: {}", request.status.human(), request.status_message);
    }
    let width = request.jobs.iter().map(|j| j.action.len()).max().unwrap_or(0);
    let mut jobs: Vec<_> = request.jobs.iter().collect();
    jobs.sort_by_key(|j| (j.started_at.is_none(), j.started_at));
    for job in jobs {
        let _ =
            write!(out, "  {:<width$}  {:<9}  {}", job.action, job.state.label(), format_runtime(job.runtime_seconds().map(|s| s as u64)));
        if matches!(job.state, State::Failed | State::Pending) {
            let first = job.status_message.lines().next().unwrap_or("");
            let _ = write!(out, "  {}: {first}", job.status_code.as_str());
        }
        let _ = writeln!(out);
        if job.status_code == StatusCode::UnmatchedPatterns {
            for line in job.status_message.lines().skip(1) {
                let _ = writeln!(out, "  {:<width$}     {line}", "");
            }
        }
    }

    let total = request.jobs.len();
    if total > 0 {
        let count = |s: State| request.jobs.iter().filter(|j| j.state == s).count();
        let completed = count(State::Succeeded) + count(State::Failed);
        let pct = |n: usize| n * 100 / total;
        let _ = writeln!(out, "\nJob statistics");
        for s in [State::Pending, State::Running, State::Succeeded, State::Failed] {
            let _ = writeln!(out, "  {:<10} {} ({}%)", s.label(), count(s), pct(count(s)));
        }
        let _ = writeln!(out, "  {completed}/{total} ({}%) complete", pct(completed));
    }

    let outputs: Vec<(&String, &PrivacyLevel, &str)> =
        request.jobs.iter().flat_map(|j| j.outputs.iter().map(move |(p, l)| (p, l, j.action.as_str()))).collect();
    if !outputs.is_empty() {
        let _ = writeln!(out, "\nOutputs");
        for level in PrivacyLevel::ALL {
            let of_level: Vec<_> = outputs.iter().filter(|(_, l, _)| **l == level).collect();
            if of_level.is_empty() {
                continue;
            }
            let _ = writeln!(out, "  {level}");
            for (path, _, action) in of_level {
                let problem = request.jobs.iter().find(|j| j.action == *action).and_then(|j| j.level4_problems.get(*path));
                match problem {
                    Some(p) => {
                        let _ = writeln!(out, "    {path}  ({action})  ! {p}");
                    }
                    None => {
                        let _ = writeln!(out, "    {path}  ({action})");
                    }
                }
            }
        }
    }
    out
}

/// The plan `quarry check` prints for a valid project.
pub fn plan_text(project: &Project, path: &str) -> String {
    let mut out = String::new();
    let n = project.actions.len();
    let _ = writeln!(out, "{path} is valid: version {}, {n} action{}", python_float_repr(project.version), if n == 1 { "" } else { "s" });
    if let Some(p) = project.population_size {
        let _ = writeln!(out, "Expectations population size: {p}");
    }
    let _ = writeln!(out, "\nActions in dependency order:");
    let order = project.dependency_order();
    let width = order.iter().map(|a| a.id.len()).max().unwrap_or(0);
    for (i, action) in order.iter().enumerate() {
        let db = if action.is_database_action() { "database" } else { "" };
        let _ = writeln!(out, "  {:>2}. {:<width$}  {:<8}  {}", i + 1, action.id, db, action.run.raw);
        if !action.needs.is_empty() {
            let _ = writeln!(out, "      needs: {}", action.needs.join(", "));
        }
    }
    out
}
