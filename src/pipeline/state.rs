//! The workspace's memory between runs: one JSON file per job request under
//! `metadata/job-requests/`, written atomically (temp file + rename) at every job state
//! change, so that an interrupted run loses nothing and the next run can see what was done.
//!
//! Upstream keeps this in `metadata/db.sqlite`; plain JSON files serve the same rules
//! (latest uncancelled job per action, outputs must still exist) and are readable by hand.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::jobs::{Job, JobRequest, State, StatusCode};

pub struct Workspace {
    pub project_dir: PathBuf,
    pub metadata_dir: PathBuf,
    /// Held for the lifetime of the workspace: one run at a time per project.
    _lock: Option<File>,
}

impl Workspace {
    /// Opens the workspace for reading only (no lock, nothing created).
    pub fn open_read_only(project_dir: &Path) -> Workspace {
        Workspace { project_dir: project_dir.to_path_buf(), metadata_dir: project_dir.join("metadata"), _lock: None }
    }

    /// Opens the workspace for a run: creates `metadata/` and takes the run lock.
    pub fn open_for_run(project_dir: &Path) -> Result<Workspace> {
        let metadata_dir = project_dir.join("metadata");
        fs::create_dir_all(metadata_dir.join("job-requests")).with_context(|| format!("could not create {}", metadata_dir.display()))?;
        let lock_path = metadata_dir.join(".lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("could not open {}", lock_path.display()))?;
        if lock.try_lock().is_err() {
            bail!("another quarry run is using this project (it holds {}); wait for it to finish", lock_path.display());
        }
        // With the lock held no job is running: a scratch directory left in metadata/volumes/
        // is from a run that was killed, and is removed.
        let volumes = metadata_dir.join("volumes");
        if volumes.exists() {
            fs::remove_dir_all(&volumes).with_context(|| format!("could not remove {}", volumes.display()))?;
        }
        Ok(Workspace { project_dir: project_dir.to_path_buf(), metadata_dir, _lock: Some(lock) })
    }

    pub fn workspace_name(&self) -> String {
        let canonical = self.project_dir.canonicalize().unwrap_or_else(|_| self.project_dir.clone());
        canonical.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "workspace".to_string())
    }

    pub fn requests_dir(&self) -> PathBuf {
        self.metadata_dir.join("job-requests")
    }

    pub fn request_path(&self, id: &str) -> PathBuf {
        self.requests_dir().join(format!("{id}.json"))
    }

    pub fn log_path(&self, action: &str) -> PathBuf {
        self.metadata_dir.join(format!("{action}.log"))
    }

    /// Every stored request, oldest first.
    pub fn load_requests(&self) -> Result<Vec<JobRequest>> {
        let dir = self.requests_dir();
        let mut requests = Vec::new();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(requests),
            Err(e) => return Err(e).with_context(|| format!("could not read {}", dir.display())),
        };
        for entry in entries {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let text = fs::read_to_string(&path).with_context(|| format!("could not read {}", path.display()))?;
            let request: JobRequest = serde_json::from_str(&text).with_context(|| {
                format!("{} is not a quarry job request; move it out of {} and run again", path.display(), dir.display())
            })?;
            requests.push(request);
        }
        requests.sort_by(|a, b| a.created_at.cmp(&b.created_at).then_with(|| a.id.cmp(&b.id)));
        Ok(requests)
    }

    pub fn save_request(&self, request: &JobRequest) -> Result<()> {
        let path = self.request_path(&request.id);
        let json = serde_json::to_string_pretty(request).expect("job requests serialize");
        write_atomically(&path, json.as_bytes())
    }

    /// Marks jobs that an interrupted run left pending or running as failed and cancelled.
    /// Returns the actions concerned.
    pub fn recover_interrupted(&self) -> Result<Vec<String>> {
        let mut recovered = Vec::new();
        for mut request in self.load_requests()? {
            let mut changed = false;
            for job in &mut request.jobs {
                if matches!(job.state, State::Pending | State::Running) {
                    job.set_status(
                        StatusCode::CancelledByUser,
                        "Cancelled: the quarry run that started this job was interrupted before it finished",
                    );
                    job.cancelled = true;
                    job.completed_at.get_or_insert_with(jiff::Timestamp::now);
                    recovered.push(job.action.clone());
                    changed = true;
                }
            }
            if changed {
                request.refresh_status();
                self.save_request(&request)?;
            }
        }
        Ok(recovered)
    }
}

/// The job that decides whether an action has been done: the most recent uncancelled job
/// for it, which counts only while every output it recorded is still on disk.
pub fn latest_job<'a>(project_dir: &Path, requests: &'a [JobRequest], action: &str) -> Option<&'a Job> {
    let job = requests.iter().flat_map(|r| r.jobs.iter()).filter(|j| j.action == action && !j.cancelled).max_by_key(|j| j.created_at)?;
    job.outputs.keys().all(|path| project_dir.join(path).is_file()).then_some(job)
}

/// Writes a file so that readers see either the old or the new content, never a part.
pub fn write_atomically(path: &Path, content: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).with_context(|| format!("could not create {}", dir.display()))?;
    // 0666 less the umask, as any file a program creates (tempfile's own default is 0600,
    // which would hide metadata/ from colleagues sharing the workspace).
    let mut tmp = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .tempfile_in(dir)
        .with_context(|| format!("could not create a temporary file in {}", dir.display()))?;
    tmp.write_all(content).with_context(|| format!("could not write {}", path.display()))?;
    tmp.persist(path).map_err(|e| e.error).with_context(|| format!("could not write {}", path.display()))?;
    Ok(())
}
