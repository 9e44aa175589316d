//! `quarry run`: resolves what to run (pipeline.md §2.3), runs independent jobs in
//! parallel in isolated scratch directories, collects and checks their outputs (§2.5),
//! writes logs (§2.6), and prints upstream's console output and summary (§2.7).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use jiff::Timestamp;

use super::console::Console;
pub use super::console::Verbosity;
use super::executor::{self, Ended, Program};
use super::jobs::{self, GitInfo, Job, JobRequest, RequestStatus, State, StatusCode};
use super::level4;
use super::log;
use super::patterns;
use super::project::{self, Action, PrivacyLevel, Project, RUN_ALL};
use super::state::{self, Workspace};
use crate::term;

/// Set by the Ctrl-C handler; every run polls it.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub project_dir: PathBuf,
    pub actions: Vec<String>,
    pub force_run_dependencies: bool,
    pub continue_on_error: bool,
    pub concurrency: usize,
    pub timestamps: bool,
    pub timeout: Option<Duration>,
    pub verbosity: Verbosity,
}

struct Shared {
    workspace: Workspace,
    project: Project,
    request: Mutex<JobRequest>,
    console: Console,
    /// Stops running jobs: set on Ctrl-C, or when a job fails without --continue-on-error.
    stop: AtomicBool,
    timeout: Option<Duration>,
    /// For each action, the project file that outputs of previous jobs were recorded in.
    previous_jobs: HashMap<String, Job>,
    /// The last lines each finished job printed (by job id), for the summary of a failure.
    tails: Mutex<HashMap<String, Vec<String>>>,
}

impl Shared {
    fn update(&self, job_id: &str, change: impl FnOnce(&mut Job)) -> Result<Job> {
        let mut request = self.request.lock().expect("request lock");
        let job = request.jobs.iter_mut().find(|j| j.id == job_id).expect("job of this request");
        change(job);
        let job = job.clone();
        request.refresh_status();
        self.workspace.save_request(&request)?;
        Ok(job)
    }

    fn set_status(&self, job_id: &str, code: StatusCode, message: &str) -> Result<()> {
        let job = self.update(job_id, |j| {
            j.set_status(code, message);
            if code == StatusCode::Preparing {
                j.started_at = Some(Timestamp::now());
            }
            if matches!(code.state(), State::Failed | State::Succeeded) {
                j.completed_at = Some(Timestamp::now());
            }
        })?;
        self.console.line(&job.action, message);
        Ok(())
    }
}

/// Runs the requested actions; returns the process exit code.
pub fn run(options: &RunOptions) -> Result<i32> {
    let project_path = options.project_dir.join("project.yaml");
    let project = match project::load(&project_path) {
        Ok(p) => p,
        Err(e) => {
            term::error(e);
            return Ok(1);
        }
    };
    for w in &project.warnings {
        term::warning(w);
    }
    let project_yaml = fs::read_to_string(&project_path).unwrap_or_default();

    if options.actions.is_empty() {
        print_error("UnknownActionError", "At least one action must be supplied", Some(&project));
        return Ok(1);
    }
    for a in &options.actions {
        if a != RUN_ALL && project.action(a).is_none() {
            let names = project.all_actions().into_iter().chain([RUN_ALL]);
            let suggestion = quarry_queries::suggest::did_you_mean(a, names);
            print_error("UnknownActionError", &format!("Action '{a}' not found in project.yaml{suggestion}"), Some(&project));
            return Ok(1);
        }
    }

    let workspace = Workspace::open_for_run(&options.project_dir)?;
    let recovered = workspace.recover_interrupted()?;
    if !recovered.is_empty() {
        term::warning(format!("Marked jobs left unfinished by an interrupted run as failed: {}", recovered.join(", ")));
    }
    let requests = workspace.load_requests()?;

    let request_id = random_hex(5);
    let now = Timestamp::now();
    let mut request = JobRequest {
        id: request_id.clone(),
        identifier: jobs::base32_lower(&random_bytes(10)),
        workspace: workspace.workspace_name(),
        requested_by: current_user(),
        backend: "local".to_string(),
        requested_actions: options.actions.clone(),
        force_run_dependencies: options.force_run_dependencies,
        git: git_info(&options.project_dir),
        created_at: now,
        status: RequestStatus::Pending,
        status_message: String::new(),
        project_yaml,
        jobs: Vec::new(),
    };

    let plan = resolve(&project, &workspace.project_dir, &requests, &options.actions, options.force_run_dependencies);
    if plan.is_empty() {
        request.status = RequestStatus::NothingToDo;
        request.status_message = "All actions have already completed successfully".to_string();
        workspace.save_request(&request)?;
        println!("=> All actions already completed successfully");
        println!("   Use -f option to force everything to re-run");
        write_page(&workspace, &request, options.verbosity == Verbosity::Quiet);
        return Ok(0);
    }

    // Refuse images that cannot run here before anything runs.
    for action_id in &plan {
        let action = project.action(action_id).expect("resolved from the project");
        if let Err(e) = executor::invocation(action) {
            print_error("ActionNotAvailable", &e.to_string(), None);
            return Ok(1);
        }
    }

    let previous_jobs: HashMap<String, Job> = project
        .actions
        .iter()
        .filter_map(|a| state::latest_job(&workspace.project_dir, &requests, &a.id).map(|j| (a.id.clone(), j.clone())))
        .collect();
    let planned: HashSet<&str> = plan.iter().map(String::as_str).collect();
    for action_id in &plan {
        let action = project.action(action_id).expect("resolved from the project");
        let wait_for = action.needs.iter().filter(|n| planned.contains(n.as_str())).map(|n| jobs::job_id(&request_id, n)).collect();
        let mut job = Job::new(jobs::job_id(&request_id, action_id), action_id, &action.run.raw, now);
        job.requires_db = action.is_database_action();
        job.needs = action.needs.clone();
        job.wait_for = wait_for;
        request.jobs.push(job);
    }
    workspace.save_request(&request)?;
    let console = Console::new(options.verbosity, options.timestamps);
    console.line("quarry", &format!("Running actions: {}", plan.join(", ")));

    let shared = Arc::new(Shared {
        workspace,
        project,
        request: Mutex::new(request),
        console,
        stop: AtomicBool::new(false),
        timeout: options.timeout,
        previous_jobs,
        tails: Mutex::new(HashMap::new()),
    });
    let stop_reason = schedule(&shared, options.concurrency.max(1), options.continue_on_error)?;

    let request = shared.request.lock().expect("request lock").clone();
    print_summary(&request, &shared.tails.lock().expect("tails lock"), stop_reason.as_ref());
    write_page(&shared.workspace, &request, shared.console.quiet());
    let all_succeeded = request.jobs.iter().all(|j| j.state == State::Succeeded);
    Ok(if all_succeeded { 0 } else { 1 })
}

/// Writes the request's page (`metadata/job-requests/<id>.html`) and says where it is; a
/// failure to write it is a warning, never a failed run.
fn write_page(workspace: &Workspace, request: &JobRequest, quiet: bool) {
    match crate::report::html::write_request_page(request, &workspace.project_dir, &workspace.requests_dir()) {
        Ok(path) if !quiet => {
            let shown = path.strip_prefix(&workspace.project_dir).unwrap_or(&path);
            println!("\n   job request page: {}", shown.display());
        }
        Ok(_) => {}
        Err(e) => term::warning(format!("could not write the job request page: {e:#}")),
    }
}

/// An error before anything runs, on stderr: `error: <kind>` and the message, indented.
fn print_error(kind: &str, message: &str, project: Option<&Project>) {
    let mut text = String::from(kind);
    for line in message.lines() {
        text.push_str(&format!("\n   {line}"));
    }
    if let (Some(project), "UnknownActionError") = (project, kind) {
        text.push_str("\n\n   Valid action names are:");
        text.push_str(&format!("\n     {RUN_ALL} (runs all actions in project)"));
        for a in project.all_actions() {
            text.push_str(&format!("\n     {a}"));
        }
    }
    term::error(text);
}

/// Which actions get a new job, in the order upstream creates them: depth-first through
/// `needs`, a dependency before its dependants.
pub fn resolve(project: &Project, project_dir: &Path, requests: &[JobRequest], requested: &[String], force: bool) -> Vec<String> {
    let run_all = requested.iter().any(|a| a == RUN_ALL);
    let targets: Vec<String> = if run_all { project.all_actions().into_iter().map(String::from).collect() } else { requested.to_vec() };
    let explicitly_requested = |action: &str| !run_all && requested.iter().any(|r| r == action);
    let mut decided: HashMap<String, bool> = HashMap::new();
    let mut order = Vec::new();
    // Iterative depth-first walk (no recursion): a node is decided after its needs.
    for target in targets {
        let mut stack: Vec<(String, bool)> = vec![(target, false)];
        while let Some((action, needs_done)) = stack.pop() {
            if decided.contains_key(&action) {
                continue;
            }
            let previous = state::latest_job(project_dir, requests, &action);
            let rerun = match previous {
                None => true,
                Some(job) => {
                    explicitly_requested(&action)
                        || force
                        || match job.state {
                            State::Succeeded => false,
                            State::Failed => true,
                            State::Pending | State::Running => false,
                        }
                }
            };
            if !rerun {
                decided.insert(action, false);
                continue;
            }
            if !needs_done {
                stack.push((action.clone(), true));
                let needs = &project.action(&action).expect("validated needs").needs;
                for need in needs.iter().rev() {
                    if !decided.contains_key(need) {
                        stack.push((need.clone(), false));
                    }
                }
                continue;
            }
            decided.insert(action.clone(), true);
            order.push(action);
        }
    }
    order
}

#[derive(Debug, Clone)]
enum StopReason {
    Interrupted,
    Failed(String),
}

fn schedule(shared: &Arc<Shared>, concurrency: usize, continue_on_error: bool) -> Result<Option<StopReason>> {
    let (tx, rx) = mpsc::channel::<(String, Result<()>)>();
    let mut running: HashSet<String> = HashSet::new();
    let mut stop_reason: Option<StopReason> = None;
    loop {
        shared.console.tick();
        if stop_reason.is_none() && INTERRUPTED.load(Ordering::SeqCst) {
            term::error("Killed by user: stopping the running jobs");
            stop_reason = Some(StopReason::Interrupted);
            shared.stop.store(true, Ordering::SeqCst);
        }
        if stop_reason.is_none() {
            start_ready_jobs(shared, concurrency, &mut running, &tx)?;
        }
        if running.is_empty() {
            break;
        }
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok((job_id, result)) => {
                running.remove(&job_id);
                result?;
                let job = job_snapshot(shared, &job_id);
                if job.state == State::Failed && !continue_on_error && stop_reason.is_none() {
                    stop_reason = Some(StopReason::Failed(job.action.clone()));
                    shared.stop.store(true, Ordering::SeqCst);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    // Whatever never started: dependants of a failure, or left behind by a stop.
    let pending: Vec<Job> =
        shared.request.lock().expect("request lock").jobs.iter().filter(|j| j.state == State::Pending).cloned().collect();
    for job in pending {
        let dependency_failed = job.wait_for.iter().any(|d| job_snapshot(shared, d).state == State::Failed);
        let (code, message) = if dependency_failed {
            (StatusCode::DependencyFailed, StatusCode::DependencyFailed.default_message().to_string())
        } else {
            match &stop_reason {
                Some(StopReason::Interrupted) => (StatusCode::CancelledByUser, StatusCode::CancelledByUser.default_message().to_string()),
                Some(StopReason::Failed(action)) => (
                    StatusCode::Stopped,
                    format!("Not started because `{action}` failed; use --continue-on-error to run what does not depend on it"),
                ),
                None => (StatusCode::InternalError, "Internal error: the job could not be scheduled".to_string()),
            }
        };
        shared.set_status(&job.id, code, &message)?;
    }
    Ok(stop_reason)
}

fn job_snapshot(shared: &Shared, job_id: &str) -> Job {
    shared.request.lock().expect("request lock").jobs.iter().find(|j| j.id == job_id).cloned().expect("job of this request")
}

fn start_ready_jobs(
    shared: &Arc<Shared>,
    concurrency: usize,
    running: &mut HashSet<String>,
    tx: &mpsc::Sender<(String, Result<()>)>,
) -> Result<()> {
    let jobs: Vec<Job> = shared.request.lock().expect("request lock").jobs.clone();
    let state_of: HashMap<&str, State> = jobs.iter().map(|j| (j.id.as_str(), j.state)).collect();
    for job in jobs.iter().filter(|j| j.state == State::Pending) {
        let deps: Vec<State> = job.wait_for.iter().map(|d| state_of[d.as_str()]).collect();
        if deps.contains(&State::Failed) {
            shared.set_status(&job.id, StatusCode::DependencyFailed, StatusCode::DependencyFailed.default_message())?;
            continue;
        }
        if deps.iter().any(|s| *s != State::Succeeded) {
            if job.status_code != StatusCode::WaitingOnDependencies {
                shared.update(&job.id, |j| {
                    j.set_status(StatusCode::WaitingOnDependencies, StatusCode::WaitingOnDependencies.default_message())
                })?;
            }
            continue;
        }
        if running.len() >= concurrency {
            if job.status_code != StatusCode::WaitingOnWorkers {
                shared.update(&job.id, |j| j.set_status(StatusCode::WaitingOnWorkers, StatusCode::WaitingOnWorkers.default_message()))?;
            }
            continue;
        }
        shared.set_status(&job.id, StatusCode::Preparing, StatusCode::Preparing.default_message())?;
        running.insert(job.id.clone());
        let shared = Arc::clone(shared);
        let tx = tx.clone();
        let job_id = job.id.clone();
        std::thread::spawn(move || {
            let result = run_job(&shared, &job_id);
            let _ = tx.send((job_id, result));
        });
    }
    Ok(())
}

/// Files of a directory tree by relative path, with size and modification time.
type Snapshot = HashMap<String, (u64, Option<SystemTime>)>;

fn run_job(shared: &Shared, job_id: &str) -> Result<()> {
    let job = job_snapshot(shared, job_id);
    let action = shared.project.action(&job.action).expect("job of a project action").clone();
    let scratch = shared.workspace.metadata_dir.join("volumes").join(job_id);
    let live = log::LiveLog::create(&shared.workspace.log_path(&job.action));
    let result = live.as_ref().map_err(|e| anyhow::anyhow!("{e:#}")).and_then(|live| run_job_in(shared, &job, &action, &scratch, live));
    shared.console.finished(&job.action);
    let _ = fs::remove_dir_all(&scratch);
    if let Err(e) = &result {
        // A failure of quarry itself (disk full, permissions): the job fails with the reason.
        let message = format!("Internal error: {e:#}");
        shared.set_status(job_id, StatusCode::InternalError, &message)?;
    }
    let job = job_snapshot(shared, job_id);
    if let Ok(live) = &live {
        shared.tails.lock().expect("tails lock").insert(job.id.clone(), live.tail());
        let (request_id, commit) = {
            let r = shared.request.lock().expect("request lock");
            (r.id.clone(), r.git.as_ref().map(|g| g.commit.clone()))
        };
        if let Err(e) = live.finish(&log::trailer(&job, &request_id, commit.as_deref())) {
            term::warning(format!("{}: {e:#}", job.action));
        }
    }
    if result.is_ok() {
        for p in &job.undeclared_outputs {
            term::warning(format!("{}: {p} matches no output pattern in project.yaml and was not saved", job.action));
        }
        shared.console.line(&job.action, &format!("Logs written to: metadata/{}.log", job.action));
        shared.console.line(&job.action, &job.status_message);
    }
    Ok(())
}

fn run_job_in(shared: &Shared, job: &Job, action: &Action, scratch: &Path, live: &log::LiveLog) -> Result<()> {
    let project_dir = &shared.workspace.project_dir;

    // Prepare: the project minus every declared output, plus the outputs of direct needs.
    if scratch.exists() {
        fs::remove_dir_all(scratch).with_context(|| format!("could not clear {}", scratch.display()))?;
    }
    fs::create_dir_all(scratch).with_context(|| format!("could not create {}", scratch.display()))?;
    let all_patterns: Vec<&str> = shared.project.actions.iter().flat_map(|a| a.outputs.iter().map(|o| o.pattern.as_str())).collect();
    copy_project(project_dir, scratch, &all_patterns)?;
    for need in &action.needs {
        let need_job = latest_job_of(shared, need);
        let Some(need_job) = need_job else {
            anyhow::bail!("no successful job of `{need}` to take inputs from");
        };
        for path in need_job.outputs.keys() {
            let from = project_dir.join(path);
            if !from.is_file() {
                anyhow::bail!(
                    "The file {path} doesn't exist in workspace {} as requested for job {}",
                    shared.workspace.workspace_name(),
                    job.id
                );
            }
            shared.console.line(&job.action, &format!("Copying input file: {path}"));
            copy_file(&from, &scratch.join(path))?;
        }
    }
    let before = snapshot(scratch)?;

    // Execute.
    let invocation = executor::invocation(action).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut env = vec![("OPENSAFELY_BACKEND".to_string(), "expectations".to_string())];
    if let Some(n) = shared.project.declared_population_size {
        env.push(("QUARRY_EXPECTATIONS_POPULATION_SIZE".to_string(), n.to_string()));
    }
    let program = match &invocation.program {
        Program::Quarry => Some(std::env::current_exe().context("could not find the quarry executable")?),
        Program::Host { name, .. } => executor::find_program(name),
    };
    shared.set_status(&job.id, StatusCode::Executing, StatusCode::Executing.default_message())?;
    let (ended, failure_detail) = match program {
        Some(program) => {
            shared.console.started(&job.action);
            // The job runs in a scratch copy of the project, deleted when it ends: a path into
            // it (a definition's traceback, say) is shown as an OpenSAFELY job shows it, under
            // /workspace, where the project is in the job's container.
            let mut copies: Vec<String> = [scratch.canonicalize().ok(), std::path::absolute(scratch).ok()]
                .into_iter()
                .flatten()
                .map(|p| format!("{}/", p.display()))
                .collect();
            copies.dedup();
            let on_line = |text: &str| {
                let mut text = std::borrow::Cow::Borrowed(text);
                for copy in &copies {
                    if text.contains(copy.as_str()) {
                        text = std::borrow::Cow::Owned(text.replace(copy.as_str(), "/workspace/"));
                    }
                }
                live.line(&text);
                shared.console.output(&job.action, &text);
            };
            let ended = executor::run_process(&program, &invocation.args, scratch, &env, shared.timeout, &shared.stop, &on_line)
                .with_context(|| format!("could not start {}", program.display()));
            shared.console.finished(&job.action);
            (ended?, None)
        }
        None => {
            let Program::Host { name, what, install_hint } = &invocation.program else {
                unreachable!("quarry's own executable was found above")
            };
            let detail = format!("{what} is not installed: `{name}` was not found on PATH; {install_hint}");
            live.line(&detail);
            (Ended::Exited(127), Some(detail))
        }
    };

    // Finalize: collect what matches the declared patterns, even when the job failed.
    shared.set_status(&job.id, StatusCode::Finalizing, StatusCode::Finalizing.default_message())?;
    let after = snapshot(scratch)?;
    let changed: Vec<&String> = {
        let mut c: Vec<&String> = after.iter().filter(|(p, meta)| before.get(*p) != Some(meta)).map(|(p, _)| p).collect();
        c.sort();
        c
    };
    let mut outputs: BTreeMap<String, PrivacyLevel> = BTreeMap::new();
    let mut unmatched_patterns = Vec::new();
    for spec in &action.outputs {
        let matched: Vec<&String> = changed.iter().copied().filter(|p| patterns::matches(&spec.pattern, p)).collect();
        if matched.is_empty() {
            unmatched_patterns.push(spec.pattern.clone());
        }
        for p in matched {
            outputs.entry(p.clone()).or_insert(spec.level);
        }
    }
    let undeclared: Vec<String> = changed.iter().filter(|p| !outputs.contains_key(p.as_str())).map(|p| p.to_string()).collect();
    for path in outputs.keys() {
        shared.console.line(&job.action, &format!("Extracting output file: {path}"));
        copy_file(&scratch.join(path), &project_dir.join(path))?;
    }
    let mut level4_problems = BTreeMap::new();
    let mut disclosure_warnings = BTreeMap::new();
    for (path, level) in &outputs {
        if *level == PrivacyLevel::ModeratelySensitive {
            let problems = level4::check_file(path, &project_dir.join(path));
            if !problems.is_empty() {
                level4_problems.insert(path.clone(), problems.join("; "));
            } else if let Some(check) = crate::check_outputs::disclosure_check(path, &project_dir.join(path)) {
                let problems = match check {
                    Ok(report) => report.problems,
                    Err(e) => vec![e],
                };
                if !problems.is_empty() {
                    term::warning(format!("{}: disclosure check: {path}: {}", job.action, problems.join("; ")));
                    disclosure_warnings.insert(path.clone(), problems.join("; "));
                }
            }
        }
    }

    let exit_code = match ended {
        Ended::Exited(c) => c,
        Ended::TimedOut | Ended::Cancelled => 137,
    };
    let (code, message, hint) = match ended {
        Ended::Cancelled if INTERRUPTED.load(Ordering::SeqCst) => (StatusCode::CancelledByUser, "Job cancelled by user".to_string(), None),
        Ended::Cancelled => (
            StatusCode::Stopped,
            "Stopped because another job failed; use --continue-on-error to let running jobs finish".to_string(),
            None,
        ),
        Ended::TimedOut => (
            StatusCode::NonzeroExit,
            format!("Job exited with an error: stopped after the --timeout of {} s", shared.timeout.map(|t| t.as_secs()).unwrap_or(0)),
            None,
        ),
        Ended::Exited(c) if c != 0 => {
            let message = match &failure_detail {
                Some(d) => format!("Job exited with an error: {d}"),
                None => format!("Job exited with an error (exit code {c})"),
            };
            (StatusCode::NonzeroExit, message, None)
        }
        Ended::Exited(_) if !unmatched_patterns.is_empty() => {
            let mut message = String::from("No outputs found matching patterns:");
            for p in &unmatched_patterns {
                message.push_str(&format!("\n - {p}"));
            }
            let hint = (!undeclared.is_empty()).then(|| {
                let mut h = String::from("Did you mean to match one of these files instead?");
                for p in &undeclared {
                    h.push_str(&format!("\n - {p}"));
                }
                h
            });
            (StatusCode::UnmatchedPatterns, message, hint)
        }
        Ended::Exited(_) => {
            let mut message = StatusCode::Succeeded.default_message().to_string();
            if !level4_problems.is_empty() {
                message.push_str(&format!(
                    ", but {} file(s) marked as moderately_sensitive were excluded. See job log for details.",
                    level4_problems.len()
                ));
            }
            (StatusCode::Succeeded, message, None)
        }
    };

    // A successful re-run replaces the action's earlier outputs: remove the ones it no
    // longer produces (upstream's intended "obsolete files" rule).
    if code == StatusCode::Succeeded
        && let Some(previous) = shared.previous_jobs.get(&action.id)
    {
        for path in previous.outputs.keys() {
            let still_declared = action.outputs.iter().any(|o| patterns::matches(&o.pattern, path));
            if !outputs.contains_key(path) && still_declared {
                let _ = fs::remove_file(project_dir.join(path));
            }
        }
    }

    shared.update(&job.id, |j| {
        j.exit_code = Some(exit_code);
        j.outputs = outputs;
        j.undeclared_outputs = if code == StatusCode::UnmatchedPatterns { Vec::new() } else { undeclared };
        j.level4_problems = level4_problems;
        j.disclosure_warnings = disclosure_warnings;
        j.hint = hint;
        j.set_status(code, &message);
        j.completed_at = Some(Timestamp::now());
    })?;
    Ok(())
}

/// The job whose outputs a dependant takes: this request's job if it has one, else the
/// latest earlier one.
fn latest_job_of(shared: &Shared, action: &str) -> Option<Job> {
    let request = shared.request.lock().expect("request lock");
    if let Some(job) = request.jobs.iter().find(|j| j.action == action) {
        return (job.state == State::Succeeded).then(|| job.clone());
    }
    shared.previous_jobs.get(action).cloned()
}

/// Copies the project into a job's scratch directory, leaving out `metadata/`, `.git/` and
/// every file that matches any action's output pattern.
fn copy_project(project_dir: &Path, scratch: &Path, output_patterns: &[&str]) -> Result<()> {
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = project_dir.join(&rel);
        let entries = fs::read_dir(&dir).with_context(|| format!("could not read {}", dir.display()))?;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let rel_path = rel.join(&name);
            if rel.as_os_str().is_empty() && (name == "metadata" || name == ".git") {
                continue;
            }
            let file_type = fs::metadata(entry.path()).map(|m| m.file_type());
            match file_type {
                Ok(t) if t.is_dir() => {
                    fs::create_dir_all(scratch.join(&rel_path))?;
                    stack.push(rel_path);
                }
                Ok(t) if t.is_file() => {
                    let rel_str = rel_path.to_string_lossy().replace('\\', "/");
                    if output_patterns.iter().any(|p| patterns::matches(p, &rel_str)) {
                        continue;
                    }
                    copy_file(&entry.path(), &scratch.join(&rel_path))?;
                }
                _ => {}
            }
        }
    }
    Ok(())
}

fn copy_file(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent).with_context(|| format!("could not create {}", parent.display()))?;
    }
    fs::copy(from, to).with_context(|| format!("could not copy {} to {}", from.display(), to.display()))?;
    Ok(())
}

fn snapshot(root: &Path) -> Result<Snapshot> {
    let mut files = Snapshot::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        for entry in fs::read_dir(&dir).with_context(|| format!("could not read {}", dir.display()))? {
            let entry = entry?;
            let rel_path = rel.join(entry.file_name());
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(rel_path);
            } else if meta.is_file() {
                let key = rel_path.to_string_lossy().into_owned();
                files.insert(key, (meta.len(), meta.modified().ok()));
            }
        }
    }
    Ok(files)
}

/// The run's result: what succeeded on stdout; what failed, and what did not run because of
/// it, on stderr as errors.
fn print_summary(request: &JobRequest, tails: &HashMap<String, Vec<String>>, stop: Option<&StopReason>) {
    let mut succeeded: Vec<&Job> = request.jobs.iter().filter(|j| j.state == State::Succeeded).collect();
    succeeded.sort_by_key(|j| j.started_at);
    let failed: Vec<&Job> = request
        .jobs
        .iter()
        .filter(|j| j.state == State::Failed && !matches!(j.status_code, StatusCode::DependencyFailed | StatusCode::Stopped))
        .collect();
    println!();
    if succeeded.is_empty() && failed.is_empty() {
        println!("=> No jobs completed");
    }
    for job in succeeded {
        println!("=> {}", job_summary(job, tails));
    }
    for job in failed {
        term::error(job_summary(job, tails));
    }
    let not_run: Vec<&Job> =
        request.jobs.iter().filter(|j| matches!(j.status_code, StatusCode::DependencyFailed | StatusCode::Stopped)).collect();
    if !not_run.is_empty() {
        let mut text = String::from("Not run:");
        for j in not_run {
            text.push_str(&format!("\n   {}: {}", j.action, j.status_message));
        }
        term::error(text);
    }
    if let Some(StopReason::Failed(action)) = stop {
        term::error(format!("Stopped after `{action}` failed (use --continue-on-error to keep going)"));
    }
    println!("=> Job request {}: {} (quarry status {})", request.id, request.status.human(), request.id);
}

/// One finished job in the summary: its action, status, log file, outputs and warnings,
/// and for a failed command the last lines it printed.
fn job_summary(job: &Job, tails: &HashMap<String, Vec<String>>) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "{}", job.action);
    for l in job.status_message.lines() {
        let _ = writeln!(out, "   {l}");
    }
    if let Some(hint) = &job.hint {
        out.push('\n');
        for l in hint.lines() {
            let _ = writeln!(out, "   {l}");
        }
    }
    let _ = writeln!(out, "\n   log file: metadata/{}.log", job.action);
    if job.outputs.is_empty() {
        out.push_str("   outputs: (no outputs)\n");
    } else {
        out.push_str("   outputs:\n");
        out.push_str(&log::aligned_rows(&job.outputs, "     "));
    }
    if !job.level4_problems.is_empty() {
        out.push_str("   invalid moderately_sensitive outputs:\n");
        out.push_str(&log::aligned_rows(&job.level4_problems, "     "));
    }
    if !job.disclosure_warnings.is_empty() {
        out.push_str("   warning: moderately_sensitive outputs an output checker would question (quarry check-outputs):\n");
        out.push_str(&log::aligned_rows(&job.disclosure_warnings, "     "));
    }
    if !job.undeclared_outputs.is_empty() {
        out.push_str("   warning: files written but matching no output pattern (not saved):\n");
        for p in &job.undeclared_outputs {
            let _ = writeln!(out, "     {p}");
        }
    }
    if job.status_code == StatusCode::NonzeroExit
        && let Some(tail) = tails.get(&job.id)
    {
        out.push_str("\n   logs (truncated):\n");
        for l in tail.iter().filter(|l| !l.is_empty()) {
            let _ = writeln!(out, "     {l}");
        }
    }
    out
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).expect("the OS random source");
    buf
}

fn random_hex(n: usize) -> String {
    random_bytes(n).iter().map(|b| format!("{b:02x}")).collect()
}

fn current_user() -> String {
    for var in ["USER", "LOGNAME"] {
        if let Ok(u) = std::env::var(var)
            && !u.is_empty()
        {
            return u;
        }
    }
    std::process::Command::new("id")
        .arg("-un")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

fn git_info(dir: &Path) -> Option<GitInfo> {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let commit = git(&["rev-parse", "HEAD"])?;
    let branch = git(&["rev-parse", "--abbrev-ref", "HEAD"]).filter(|b| b != "HEAD");
    Some(GitInfo { commit, branch })
}
