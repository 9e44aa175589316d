//! What `quarry run` shows while jobs run, on stderr: on a terminal, one line per running job
//! with its elapsed time and the latest line it printed (indicatif), with each job's steps
//! printed above; elsewhere (a pipe, a file, CI), plain timestamped lines, and every 30 s
//! (`QUARRY_PROGRESS_SECONDS`) each running job's elapsed time and latest line. `-v` also
//! echoes every line the jobs print; `-q` shows nothing but errors. The result (the summary
//! of what ran) is not the console's: it goes to stdout.

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use jiff::Timestamp;

use super::log;

/// How much `quarry run` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    /// The result only (and errors).
    Quiet,
    /// Each job's steps and, while it runs, its progress.
    Normal,
    /// Also every line the jobs print.
    Verbose,
}

/// Without a terminal, how often a running job's progress is printed: every 30 s, or every
/// `QUARRY_PROGRESS_SECONDS`.
fn plain_progress_every() -> Duration {
    let seconds = std::env::var("QUARRY_PROGRESS_SECONDS").ok().and_then(|s| s.parse::<f64>().ok()).filter(|s| *s > 0.0 && s.is_finite());
    Duration::from_secs_f64(seconds.unwrap_or(30.0))
}

enum Mode {
    Bars(MultiProgress),
    Plain,
    Quiet,
}

struct Running {
    bar: Option<ProgressBar>,
    started: Instant,
    latest: String,
    reported: Instant,
}

pub struct Console {
    mode: Mode,
    timestamps: bool,
    verbose: bool,
    progress_every: Duration,
    running: Mutex<HashMap<String, Running>>,
}

impl Console {
    pub fn new(verbosity: Verbosity, timestamps: bool) -> Console {
        let terminal = std::io::stderr().is_terminal() && std::env::var("TERM").map_or(true, |t| t != "dumb");
        let mode = match verbosity {
            Verbosity::Quiet => Mode::Quiet,
            _ if terminal => Mode::Bars(MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
            _ => Mode::Plain,
        };
        Console {
            mode,
            timestamps,
            verbose: verbosity == Verbosity::Verbose,
            progress_every: plain_progress_every(),
            running: Mutex::new(HashMap::new()),
        }
    }

    /// Whether only the result is printed.
    pub fn quiet(&self) -> bool {
        matches!(self.mode, Mode::Quiet)
    }

    fn print(&self, text: &str) {
        match &self.mode {
            Mode::Quiet => {}
            Mode::Plain => eprintln!("{} {text}", log::console_timestamp(Timestamp::now())),
            Mode::Bars(multi) => {
                let text = if self.timestamps { format!("{} {text}", log::console_timestamp(Timestamp::now())) } else { text.to_string() };
                let _ = multi.println(text);
            }
        }
    }

    /// A job's step: `<action>: <message>` (the message's first line).
    pub fn line(&self, action: &str, message: &str) {
        self.print(&format!("{action}: {}", message.lines().next().unwrap_or("")));
    }

    /// A job has started executing: it gets its progress line.
    pub fn started(&self, action: &str) {
        let bar = match &self.mode {
            Mode::Bars(multi) => {
                let bar = multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {prefix:.bold} [{elapsed_precise}] {wide_msg}")
                        .expect("a valid template")
                        .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ "),
                );
                bar.set_prefix(action.to_string());
                bar.enable_steady_tick(Duration::from_millis(120));
                Some(bar)
            }
            _ => None,
        };
        let now = Instant::now();
        self.running
            .lock()
            .expect("console lock")
            .insert(action.to_string(), Running { bar, started: now, latest: String::new(), reported: now });
    }

    /// A line the job printed.
    pub fn output(&self, action: &str, text: &str) {
        if let Some(job) = self.running.lock().expect("console lock").get_mut(action) {
            if let Some(bar) = &job.bar {
                bar.set_message(text.to_string());
            }
            job.latest.clear();
            job.latest.push_str(text);
        }
        if self.verbose {
            self.print(&format!("{action}| {text}"));
        }
    }

    /// A job has stopped executing.
    pub fn finished(&self, action: &str) {
        if let Some(job) = self.running.lock().expect("console lock").remove(action)
            && let Some(bar) = job.bar
        {
            bar.finish_and_clear();
        }
    }

    /// Without a terminal: each job that has run for another progress interval gets a line
    /// with its elapsed time and the latest line it printed. Called by the scheduler.
    pub fn tick(&self) {
        if !matches!(self.mode, Mode::Plain) {
            return;
        }
        let mut due = vec![];
        for (action, job) in self.running.lock().expect("console lock").iter_mut() {
            if job.reported.elapsed() >= self.progress_every {
                job.reported = Instant::now();
                due.push(progress_line(action, job.started.elapsed(), &job.latest));
            }
        }
        for line in due {
            self.print(&line);
        }
    }
}

fn progress_line(action: &str, elapsed: Duration, latest: &str) -> String {
    let s = elapsed.as_secs();
    let mut line = format!("{action}: running for {:02}:{:02}:{:02}", s / 3600, (s % 3600) / 60, s % 60);
    if !latest.is_empty() {
        line.push_str(&format!("; latest output: {latest}"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_progress_line_names_the_job_its_elapsed_time_and_latest_output() {
        assert_eq!(progress_line("a", Duration::from_secs(3725), "step 3 of 9"), "a: running for 01:02:05; latest output: step 3 of 9");
        assert_eq!(progress_line("a", Duration::from_secs(5), ""), "a: running for 00:00:05");
    }
}
