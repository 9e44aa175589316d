//! How an action's `run:` command becomes a process, without Docker.
//!
//! - `ehrql:*` and `analysis:*` run quarry itself (`quarry exec IMAGE:TAG ARGS…`), so they
//!   are native and need nothing installed, yet each job stays a separate process that can
//!   be timed out, cancelled and logged exactly like any other.
//! - `python:*` and `r:*` run the host's `python3` / `Rscript` (override with
//!   `QUARRY_PYTHON` / `QUARRY_RSCRIPT`).
//! - The other upstream images (Stata, Jupyter, sqlrunner, cohort-extractor, databuilder)
//!   and reusable actions (any other image, fetched from GitHub upstream) cannot run here:
//!   they are refused before anything runs, with the reason.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::project::{Action, KNOWN_IMAGES};

/// The program and arguments that run an action, or why it cannot run here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub program: Program,
    pub args: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// This quarry binary.
    Quarry,
    /// A host interpreter, looked up on PATH when the job runs.
    Host { name: String, what: &'static str, install_hint: &'static str },
}

/// Why an action's image cannot run on this machine.
#[derive(Debug, thiserror::Error)]
pub enum UnsupportedImage {
    #[error(
        "in '{action}: {image}:{tag}' `{image}` is a reusable action (opensafely-actions/{image}), \
         which upstream fetches from GitHub at run time; quarry runs without network access and \
         cannot run it. Replace it with a native step (`analysis:v1`), a `python:`/`r:` script, or \
         remove the action."
    )]
    ReusableAction { action: String, image: String, tag: String },
    #[error(
        "in '{action}: {image}:{tag}' `{image}` actions need OpenSAFELY's `{image}` Docker image, \
         which quarry cannot run natively. Supported runtimes: ehrql, analysis, python (host python3) \
         and r (host Rscript)."
    )]
    NoNativeRuntime { action: String, image: String, tag: String },
    #[error(
        "in '{action}: ehrql:{tag}' there is no ehrql:{tag} image: OpenSAFELY's ehrQL images are \
         ehrql:v1 (current ehrQL) and ehrql:v0 (the last ehrQL before 1.0, for its `ehrql.tables.beta` \
         spellings)"
    )]
    NoSuchEhrqlImage { action: String, tag: String },
}

/// Decides how an action runs.
pub fn invocation(action: &Action) -> Result<Invocation, UnsupportedImage> {
    let run = &action.run;
    let mut args = run.args.clone();
    let program = match run.image.as_str() {
        "ehrql" if quarry_python::Image::from_tag(&run.tag).is_none() => {
            return Err(UnsupportedImage::NoSuchEhrqlImage { action: action.id.clone(), tag: run.tag.clone() });
        }
        "ehrql" | "analysis" => {
            args.insert(0, format!("{}:{}", run.image, run.tag));
            args.insert(0, "exec".to_string());
            Program::Quarry
        }
        "python" => {
            if matches!(args.first().map(String::as_str), Some("python" | "python3")) {
                args.remove(0);
            }
            Program::Host {
                name: std::env::var("QUARRY_PYTHON").unwrap_or_else(|_| "python3".to_string()),
                what: "Python 3",
                install_hint: "install Python 3 (e.g. `apt-get install python3`) with the packages the script imports, or set QUARRY_PYTHON to an interpreter",
            }
        }
        "r" => {
            if matches!(args.first().map(String::as_str), Some("Rscript")) {
                args.remove(0);
            }
            Program::Host {
                name: std::env::var("QUARRY_RSCRIPT").unwrap_or_else(|_| "Rscript".to_string()),
                what: "R",
                install_hint: "install R (e.g. `apt-get install r-base`) with the packages the script loads, or set QUARRY_RSCRIPT to an Rscript",
            }
        }
        image if KNOWN_IMAGES.contains(&image) => {
            return Err(UnsupportedImage::NoNativeRuntime { action: action.id.clone(), image: image.to_string(), tag: run.tag.clone() });
        }
        image => {
            return Err(UnsupportedImage::ReusableAction { action: action.id.clone(), image: image.to_string(), tag: run.tag.clone() });
        }
    };
    if let Some(config) = &action.config {
        // Upstream passes `config` as `--config '<json>'` with `'` escaped.
        args.push("--config".to_string());
        args.push(config.to_string().replace('\'', "\\u0027"));
    }
    Ok(Invocation { program, args })
}

/// Looks a program up on PATH (or takes it as a path when it has a `/`).
pub fn find_program(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    TimedOut,
    Cancelled,
}

/// Runs a program in `dir` to completion, handing each line it prints (stdout and stderr, as
/// they arrive, without the line end) to `on_line`, and stopping it (and everything it
/// started) when `cancel` is set or `timeout` passes.
pub fn run_process(
    program: &Path,
    args: &[String],
    dir: &Path,
    env: &[(String, String)],
    timeout: Option<Duration>,
    cancel: &AtomicBool,
    on_line: &(dyn Fn(&str) + Sync),
) -> std::io::Result<Ended> {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a terminal's Ctrl-C reaches quarry only, and quarry can
        // stop the job together with any children it started.
        .process_group(0);
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn()?;
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    std::thread::scope(|scope| {
        for stream in
            [stdout.map(|s| Box::new(s) as Box<dyn Read + Send>), stderr.map(|s| Box::new(s) as Box<dyn Read + Send>)].into_iter().flatten()
        {
            scope.spawn(move || read_lines(stream, on_line));
        }
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                break Ok(Ended::Exited(exit_code(status)));
            }
            if cancel.load(Ordering::SeqCst) {
                stop_group(&mut child);
                break Ok(Ended::Cancelled);
            }
            if timeout.is_some_and(|t| started.elapsed() > t) {
                stop_group(&mut child);
                break Ok(Ended::TimedOut);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The readers end when the job and whatever it started have closed the pipes.
    })
}

/// Hands each line of `stream` to `on_line`: linear in the output, nothing kept here.
fn read_lines(stream: impl Read, on_line: &(dyn Fn(&str) + Sync)) {
    let mut reader = BufReader::with_capacity(64 << 10, stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let end = buf.iter().rposition(|b| *b != b'\n' && *b != b'\r').map_or(0, |i| i + 1);
                on_line(&String::from_utf8_lossy(&buf[..end]));
            }
        }
    }
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// SIGTERM to the job's process group, then SIGKILL if it has not gone within 2 s.
fn stop_group(child: &mut Child) {
    use rustix::process::{Pid, Signal, kill_process_group};
    let Some(pgid) = i32::try_from(child.id()).ok().and_then(Pid::from_raw) else { return };
    // A group already gone answers ESRCH: nothing left to stop.
    let _ = kill_process_group(pgid, Signal::TERM);
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            let _ = kill_process_group(pgid, Signal::KILL);
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = kill_process_group(pgid, Signal::KILL);
    let _ = child.wait();
}
