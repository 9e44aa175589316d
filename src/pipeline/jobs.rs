//! Job requests and jobs: what a `quarry run` asked for and what became of each action.
//!
//! States, status codes and messages are upstream's (pipeline.md §2.8), and the request's
//! status is derived from its jobs exactly as the jobs site does it (§3.2). quarry adds
//! one status code, `stopped`, for jobs that were pending or running when the run stopped
//! because another job failed (upstream leaves them pending until the next run).

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::project::PrivacyLevel;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Pending,
    Running,
    Failed,
    Succeeded,
}

impl State {
    /// The status pill's text on the jobs site.
    pub fn label(self) -> &'static str {
        match self {
            State::Pending => "Pending",
            State::Running => "Running",
            State::Failed => "Failed",
            State::Succeeded => "Succeeded",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusCode {
    Created,
    WaitingOnDependencies,
    WaitingOnWorkers,
    Preparing,
    Executing,
    Finalizing,
    Succeeded,
    DependencyFailed,
    NonzeroExit,
    CancelledByUser,
    UnmatchedPatterns,
    InternalError,
    /// quarry's: the run stopped (another job failed) before this job finished.
    Stopped,
}

impl StatusCode {
    pub fn as_str(self) -> &'static str {
        match self {
            StatusCode::Created => "created",
            StatusCode::WaitingOnDependencies => "waiting_on_dependencies",
            StatusCode::WaitingOnWorkers => "waiting_on_workers",
            StatusCode::Preparing => "preparing",
            StatusCode::Executing => "executing",
            StatusCode::Finalizing => "finalizing",
            StatusCode::Succeeded => "succeeded",
            StatusCode::DependencyFailed => "dependency_failed",
            StatusCode::NonzeroExit => "nonzero_exit",
            StatusCode::CancelledByUser => "cancelled_by_user",
            StatusCode::UnmatchedPatterns => "unmatched_patterns",
            StatusCode::InternalError => "internal_error",
            StatusCode::Stopped => "stopped",
        }
    }

    pub fn state(self) -> State {
        match self {
            StatusCode::Created | StatusCode::WaitingOnDependencies | StatusCode::WaitingOnWorkers => State::Pending,
            StatusCode::Preparing | StatusCode::Executing | StatusCode::Finalizing => State::Running,
            StatusCode::Succeeded => State::Succeeded,
            StatusCode::DependencyFailed
            | StatusCode::NonzeroExit
            | StatusCode::CancelledByUser
            | StatusCode::UnmatchedPatterns
            | StatusCode::InternalError
            | StatusCode::Stopped => State::Failed,
        }
    }

    /// Upstream's message for the codes that have a fixed one.
    pub fn default_message(self) -> &'static str {
        match self {
            StatusCode::Created => "Created",
            StatusCode::WaitingOnDependencies => "Waiting on dependencies",
            StatusCode::WaitingOnWorkers => "Waiting on available workers",
            StatusCode::Preparing => "Preparing your code and workspace files",
            StatusCode::Executing => "Executing job on the backend",
            StatusCode::Finalizing => "Recording job results",
            StatusCode::Succeeded => "Completed successfully",
            StatusCode::DependencyFailed => "Not starting as dependency failed",
            StatusCode::NonzeroExit => "Job exited with an error",
            StatusCode::CancelledByUser => "Cancelled by user",
            StatusCode::UnmatchedPatterns => "No outputs found matching patterns",
            StatusCode::InternalError => "Internal error: this usually means a platform issue rather than a problem for users to fix.",
            StatusCode::Stopped => "Stopped because another job failed",
        }
    }
}

/// One action's job within a request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub action: String,
    pub run_command: String,
    pub requires_db: bool,
    /// Direct needs of the action: their outputs are copied in.
    pub needs: Vec<String>,
    /// Jobs of this request that must succeed first.
    pub wait_for: Vec<String>,
    pub state: State,
    pub status_code: StatusCode,
    pub status_message: String,
    /// A pre-run job that a later run found still pending or running is cancelled and
    /// ignored when deciding what has already been done.
    #[serde(default)]
    pub cancelled: bool,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub completed_at: Option<Timestamp>,
    pub exit_code: Option<i32>,
    /// Saved outputs: path → privacy level.
    #[serde(default)]
    pub outputs: BTreeMap<String, PrivacyLevel>,
    /// Files the job wrote that matched no pattern (not saved).
    #[serde(default)]
    pub undeclared_outputs: Vec<String>,
    /// moderately_sensitive outputs that fail the level-4 checks: path → reason.
    #[serde(default)]
    pub level4_problems: BTreeMap<String, String>,
    /// moderately_sensitive CSVs whose contents fail the disclosure checks (small or unrounded
    /// counts, `quarry check-outputs`): path → problems. Reported, not enforced.
    #[serde(default)]
    pub disclosure_warnings: BTreeMap<String, String>,
    /// "Did you mean" candidates when a pattern matched nothing.
    #[serde(default)]
    pub hint: Option<String>,
}

impl Job {
    /// A job just created for `action` (status `created`).
    pub fn new(id: String, action: &str, run_command: &str, created_at: Timestamp) -> Job {
        let code = StatusCode::Created;
        Job {
            id,
            action: action.to_string(),
            run_command: run_command.to_string(),
            requires_db: false,
            needs: vec![],
            wait_for: vec![],
            state: code.state(),
            status_code: code,
            status_message: code.default_message().to_string(),
            cancelled: false,
            created_at,
            started_at: None,
            completed_at: None,
            exit_code: None,
            outputs: BTreeMap::new(),
            undeclared_outputs: Vec::new(),
            level4_problems: BTreeMap::new(),
            disclosure_warnings: BTreeMap::new(),
            hint: None,
        }
    }

    pub fn set_status(&mut self, code: StatusCode, message: impl Into<String>) {
        self.status_code = code;
        self.state = code.state();
        self.status_message = message.into();
    }

    /// Seconds between start and completion, for finished jobs.
    pub fn runtime_seconds(&self) -> Option<f64> {
        match (self.started_at, self.completed_at) {
            (Some(s), Some(c)) if matches!(self.state, State::Failed | State::Succeeded) => {
                Some(c.duration_since(s).as_secs_f64().max(0.0))
            }
            _ => None,
        }
    }
}

/// A job request's status (the jobs site's `jobs_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestStatus {
    Pending,
    Running,
    Failed,
    Succeeded,
    NothingToDo,
    Unknown,
}

impl RequestStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestStatus::Pending => "pending",
            RequestStatus::Running => "running",
            RequestStatus::Failed => "failed",
            RequestStatus::Succeeded => "succeeded",
            RequestStatus::NothingToDo => "nothing_to_do",
            RequestStatus::Unknown => "unknown",
        }
    }

    /// `status.replace("_", " ").capitalize()`.
    pub fn human(self) -> String {
        let s = self.as_str().replace('_', " ");
        let mut chars = s.chars();
        match chars.next() {
            Some(first) => first.to_uppercase().chain(chars).collect(),
            None => String::new(),
        }
    }

    fn is_active(self) -> bool {
        matches!(self, RequestStatus::Pending | RequestStatus::Running | RequestStatus::Unknown)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GitInfo {
    pub commit: String,
    pub branch: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRequest {
    /// 10 hex characters, as a local upstream run makes them.
    pub id: String,
    /// 16 lowercase base32 characters (the jobs site's short identifier).
    pub identifier: String,
    pub workspace: String,
    pub requested_by: String,
    pub backend: String,
    pub requested_actions: Vec<String>,
    pub force_run_dependencies: bool,
    pub git: Option<GitInfo>,
    pub created_at: Timestamp,
    pub status: RequestStatus,
    pub status_message: String,
    /// The project.yaml text the request ran.
    pub project_yaml: String,
    pub jobs: Vec<Job>,
}

impl JobRequest {
    /// Derives the request's status from its jobs (pipeline.md §3.2) and stores it.
    pub fn refresh_status(&mut self) {
        let (status, message) = derive_status(self.status, &self.jobs);
        self.status = status;
        if let Some(m) = message {
            self.status_message = m;
        }
    }

    pub fn is_completed(&self) -> bool {
        !self.status.is_active()
    }

    /// `min(started_at)` over the jobs.
    pub fn started_at(&self) -> Option<Timestamp> {
        self.jobs.iter().filter_map(|j| j.started_at).min()
    }

    /// The last job completion, once the request is completed.
    pub fn finished_at(&self) -> Option<Timestamp> {
        if !self.is_completed() {
            return None;
        }
        self.jobs.iter().filter_map(|j| j.completed_at).max()
    }

    /// The sum of the finished jobs' runtimes, in whole seconds (as the jobs site shows it);
    /// `None` when no job has run.
    pub fn runtime_seconds(&self) -> Option<u64> {
        let runtimes: Vec<f64> = self.jobs.iter().filter_map(Job::runtime_seconds).collect();
        (!runtimes.is_empty()).then(|| runtimes.iter().map(|s| *s as u64).sum())
    }
}

/// The jobs site's `jobs_status`: returns the status and, where it sets one, the message.
pub fn derive_status(stored: RequestStatus, jobs: &[Job]) -> (RequestStatus, Option<String>) {
    if !stored.is_active() || jobs.is_empty() {
        return (stored, None);
    }
    let states: Vec<State> = jobs.iter().map(|j| j.state).collect();
    let failure = Some("Failed due to job failure".to_string());
    if states.iter().all(|s| *s == states[0]) {
        return match states[0] {
            State::Pending => (RequestStatus::Pending, None),
            State::Running => (RequestStatus::Running, None),
            State::Failed => (RequestStatus::Failed, failure),
            State::Succeeded => (RequestStatus::Succeeded, None),
        };
    }
    if states.iter().any(|s| matches!(s, State::Running | State::Pending)) {
        return (RequestStatus::Running, None);
    }
    if states.contains(&State::Failed) {
        return (RequestStatus::Failed, failure);
    }
    (RequestStatus::Unknown, None)
}

/// `HH:MM:SS` (`00:00:00` for a job that took under a second), or `-` for no runtime at all.
pub fn format_runtime(seconds: Option<u64>) -> String {
    let Some(total_seconds) = seconds else { return "-".to_string() };
    format!("{:02}:{:02}:{:02}", total_seconds / 3600, (total_seconds % 3600) / 60, total_seconds % 60)
}

/// A job id as upstream makes it: `base32(sha1("{request_id}\n{action}")[:10]).lower()`.
pub fn job_id(request_id: &str, action: &str) -> String {
    let digest = sha1_smol::Sha1::from(format!("{request_id}\n{action}")).digest().bytes();
    base32_lower(&digest[..10])
}

/// RFC 4648 base32 without padding, lower case (10 bytes → 16 characters).
pub fn base32_lower(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::new();
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(code: StatusCode) -> Job {
        let mut j = Job::new("x".into(), "a", "python:v2 a.py", Timestamp::UNIX_EPOCH);
        j.set_status(code, code.default_message());
        j
    }

    #[test]
    fn request_status_follows_the_jobs_site() {
        use RequestStatus as R;
        use StatusCode as C;
        let d = |codes: &[C]| derive_status(R::Pending, &codes.iter().map(|&c| job(c)).collect::<Vec<_>>());
        assert_eq!(d(&[]), (R::Pending, None));
        assert_eq!(d(&[C::Succeeded, C::Succeeded]).0, R::Succeeded);
        assert_eq!(d(&[C::NonzeroExit, C::DependencyFailed]), (R::Failed, Some("Failed due to job failure".into())));
        assert_eq!(d(&[C::Succeeded, C::Executing]).0, R::Running);
        assert_eq!(d(&[C::Succeeded, C::Created]).0, R::Running);
        assert_eq!(d(&[C::Succeeded, C::NonzeroExit]).0, R::Failed);
        assert_eq!(d(&[C::Created]).0, R::Pending);
        // A terminal stored status is kept.
        assert_eq!(derive_status(R::NothingToDo, &[job(C::Created)]).0, R::NothingToDo);
    }

    #[test]
    fn human_status_and_runtime() {
        assert_eq!(RequestStatus::NothingToDo.human(), "Nothing to do");
        assert_eq!(format_runtime(None), "-");
        assert_eq!(format_runtime(Some(0)), "00:00:00");
        assert_eq!(format_runtime(Some(1089)), "00:18:09");
        assert_eq!(format_runtime(Some(90061)), "25:01:01");
    }

    #[test]
    fn job_ids_are_sixteen_base32_characters() {
        let id = job_id("0123456789", "generate_dataset");
        assert_eq!(id.len(), 16);
        assert!(id.chars().all(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c)));
        assert_eq!(base32_lower(b"foobar"), "mzxw6ytboi");
    }
}
