//! Hardening (issue 21): what a careless or hostile input, option or environment gets from
//! quarry — one clear message on stderr and a non-zero exit, never a crash, an overwritten
//! input or a leftover file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const QUARRY: &str = env!("CARGO_BIN_EXE_quarry");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn quarry(dir: &Path, args: &[&str]) -> Output {
    Command::new(QUARRY).current_dir(dir).args(args).env("NO_COLOR", "1").output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A build without the `spark` feature says how to get `--engine spark` instead of failing
/// somewhere later.
#[cfg(not(feature = "spark"))]
#[test]
fn engine_spark_without_the_feature_says_how_to_get_it() {
    let vte = root().join("fixtures/projects/vte");
    let o = quarry(&vte, &["generate-dataset", "analysis/dataset_definition_v1.py", "--engine", "spark", "--dummy-tables", "."]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("--features spark") && e.contains("protoc"), "{e}");
    assert!(stdout(&o).is_empty());
}

/// A project directory with `project.yaml` and the pipeline tests' scriptable action.
fn project(yaml: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("project.yaml"), yaml).unwrap();
    std::fs::copy(root().join("tests/support/act.py"), dir.path().join("act.py")).unwrap();
    dir
}

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(QUARRY).arg("run").args(args).arg("--project-dir").arg(dir).env("NO_COLOR", "1").output().unwrap()
}

// ---------------------------------------------------------------------------------------
// Ranges: every numeric option says what it accepts, and nothing runs outside it.

#[test]
fn numeric_options_outside_their_range_are_refused_with_the_range() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cases: &[(&[&str], &str)] = &[
        (&["run", "run_all", "-c", "0"], "1..=1024"),
        (&["run", "run_all", "-c", "5000"], "1..=1024"),
        (&["run", "run_all", "--timeout", "0"], "1.."),
        (&["make-backend", "--patients", "0", "--out", "b"], "1.."),
        (&["make-backend", "--patients", "10", "--out", "b", "--events-per-patient", "0"], "more than 0"),
        (&["make-backend", "--patients", "10", "--out", "b", "--events-per-patient", "nan"], "more than 0"),
        (&["generate-dataset", "d.py", "--population-size", "0"], "1.."),
        (&["create-dummy-tables", "d.py", "out", "--population-size", "-3"], "-3"),
        (&["analysis", "histogram", "--input", "i.csv", "--output", "o.csv", "--column", "x", "--bin-width", "0"], "not above 0"),
        (&["analysis", "summary", "--input", "i.csv", "--output", "o.csv", "--columns", "x", "--digits", "99"], "0..=15"),
        (&["analysis", "summary", "--input", "i.csv", "--output", "o.csv", "--columns", "x", "--quantiles", "0.5,1.5"], "from 0 to 1"),
        (
            &["analysis", "histogram", "--input", "i.csv", "--output", "o.csv", "--column", "x", "--bin-width", "1", "--range", "5,1"],
            "below TO",
        ),
    ];
    for (args, says) in cases {
        let o = quarry(dir, args);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {e}");
        assert!(e.starts_with("error:") && e.contains(says), "{args:?} should say {says}: {e}");
        assert!(stdout(&o).is_empty(), "{args:?}");
    }
    assert_eq!(std::fs::read_dir(dir).unwrap().count(), 0, "nothing was created");
}

// ---------------------------------------------------------------------------------------
// Errors and warnings on stderr, reports on stdout.

#[test]
fn errors_go_to_stderr_and_reports_to_stdout() {
    let p =
        project("version: 5\nactions:\n  a:\n    run: python:v2 act.py write o/a.csv 1\n    outputs: {highly_sensitive: {a: o/a.csv}}\n");
    let o = run(p.path(), &["no_such_action"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).is_empty(), "{}", stdout(&o));
    assert!(stderr(&o).starts_with("error: UnknownActionError\n   Action 'no_such_action' not found"), "{}", stderr(&o));

    // A typed name close to a real one gets a suggestion.
    let o = run(p.path(), &["b"]);
    assert!(!stderr(&o).contains("did you mean"), "{}", stderr(&o));
    let o = run(p.path(), &["a_"]);
    assert!(stderr(&o).contains("(did you mean `a`?)"), "{}", stderr(&o));

    // Not a terminal: no colour codes, even in errors.
    assert!(!stderr(&o).contains('\x1b'));
    // Forced colour (CLICOLOR_FORCE, as for a terminal): `error:` is coloured.
    let o = Command::new(QUARRY)
        .args(["run", "a_", "--project-dir"])
        .arg(p.path())
        .env("CLICOLOR_FORCE", "1")
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    assert!(stderr(&o).starts_with("\x1b["), "{:?}", stderr(&o));
}

#[test]
fn clap_values_get_did_you_mean() {
    let vte = root().join("fixtures/projects/vte");
    let o = quarry(&vte, &["generate-dataset", "analysis/dataset_definition_v1.py", "--engine", "colunmar"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("a similar value exists: 'columnar'"), "{}", stderr(&o));
    let o = quarry(&vte, &["stauts"]);
    assert!(stderr(&o).contains("a similar subcommand exists: 'status'"), "{}", stderr(&o));
}

#[test]
fn completions_for_bash_zsh_and_fish() {
    let tmp = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let o = quarry(tmp.path(), &["completions", shell]);
        assert!(o.status.success(), "{shell}: {}", stderr(&o));
        let script = stdout(&o);
        for word in ["generate-dataset", "check-outputs", "project-dir", "concurrency"] {
            assert!(script.contains(word), "{shell}'s completions lack {word}");
        }
    }
    if Command::new("bash").arg("--version").output().is_ok() {
        // The bash script loads and completes a subcommand.
        let script = tmp.path().join("quarry.bash");
        std::fs::write(&script, stdout(&quarry(tmp.path(), &["completions", "bash"]))).unwrap();
        let o = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source {}; COMP_WORDS=(quarry generate-d); COMP_CWORD=1; COMP_LINE='quarry generate-d'; COMP_POINT=17; _quarry quarry generate-d quarry; echo \"${{COMPREPLY[@]}}\"",
                script.display()
            ))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "generate-dataset", "{}", stderr(&o));
    }
    let o = quarry(tmp.path(), &["completions", "tcsh"]);
    assert_eq!(o.status.code(), Some(2));
}

// ---------------------------------------------------------------------------------------
// Long jobs: linear capture, a live log, permissions, status.

fn python_ok() -> bool {
    Command::new("python3").arg("--version").output().map(|o| o.status.success()).unwrap_or(false)
}

/// Time of the fastest of `n` runs of `f`.
fn fastest(n: usize, mut f: impl FnMut()) -> std::time::Duration {
    (0..n)
        .map(|_| {
            let started = std::time::Instant::now();
            f();
            started.elapsed()
        })
        .min()
        .unwrap()
}

/// 200,000 lines through `quarry run` take a small multiple of the same script alone (the
/// capture used to be quadratic: 20 s against 0.9 s). A ratio of two runs side by side, not
/// a timed assertion.
#[test]
fn capturing_200000_lines_is_linear() {
    assert!(python_ok(), "needs python3 (.ci/run installs it)");
    let p =
        project("version: 5\nactions:\n  chatty:\n    run: python:v2 chatty.py\n    outputs: {moderately_sensitive: {d: o/done.txt}}\n");
    std::fs::write(
        p.path().join("chatty.py"),
        "import os\nfor i in range(200000):\n    print(f'line {i} of the job output, long enough to be a realistic progress message')\nos.makedirs('o', exist_ok=True)\nopen('o/done.txt', 'w').write('done')\n",
    )
    .unwrap();
    let alone = fastest(3, || {
        let o = Command::new("python3").arg("chatty.py").current_dir(p.path()).output().unwrap();
        assert!(o.status.success());
        assert_eq!(o.stdout.iter().filter(|b| **b == b'\n').count(), 200_000);
    });
    let quarry_run = fastest(3, || {
        let o = run(p.path(), &["chatty", "-f"]);
        assert!(o.status.success(), "{}", stderr(&o));
    });
    let log = std::fs::read_to_string(p.path().join("metadata/chatty.log")).unwrap();
    assert!(log.contains(" line 0 of the job output") && log.contains(" line 199999 of the job output"));
    let ratio = quarry_run.as_secs_f64() / alone.as_secs_f64();
    eprintln!("200,000 lines: alone {alone:?}, under quarry run {quarry_run:?}, ratio {ratio:.1}");
    assert!(ratio < 15.0, "capture is not linear: alone {alone:?}, under quarry run {quarry_run:?}");
}

/// The log grows while the job runs (tail -f works) and the summary keeps the last lines.
#[test]
fn the_log_is_written_as_lines_arrive() {
    assert!(python_ok(), "needs python3 (.ci/run installs it)");
    let p = project(
        "version: 5\nactions:\n  slow:\n    run: python:v2 act.py echo first-line sleep 4 write o/a.csv 1\n    outputs: {highly_sensitive: {a: o/a.csv}}\n",
    );
    let mut child = Command::new(QUARRY)
        .args(["run", "slow", "--project-dir"])
        .arg(p.path())
        .env("PYTHONUNBUFFERED", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let log = p.path().join("metadata/slow.log");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let seen = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains(" first-line\n") || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    // A kill of the run loses nothing (the job, in its own process group, ends by itself).
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(seen.contains(" first-line\n"), "the line was not in the log while the job ran: {seen:?}");
    assert!(!seen.contains("JOB SUMMARY"), "the job was still running");
    assert!(std::fs::read_to_string(&log).unwrap().contains(" first-line\n"));
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// metadata/ files are created with the umask's permissions, as outputs are: readable by
/// colleagues under umask 022, private under 077.
#[test]
fn metadata_files_respect_the_umask() {
    assert!(python_ok(), "needs python3 (.ci/run installs it)");
    for (umask, expected) in [("022", 0o644), ("077", 0o600)] {
        let p = project(
            "version: 5\nactions:\n  a:\n    run: python:v2 act.py write o/a.csv 1\n    outputs: {highly_sensitive: {a: o/a.csv}}\n",
        );
        let o = Command::new("sh")
            .arg("-c")
            .arg(format!("umask {umask}; exec \"$0\" run a --project-dir \"$1\""))
            .arg(QUARRY)
            .arg(p.path())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let requests = p.path().join("metadata/job-requests");
        let mut files = vec![p.path().join("metadata/a.log"), p.path().join("o/a.csv")];
        files.extend(std::fs::read_dir(&requests).unwrap().map(|e| e.unwrap().path()));
        assert_eq!(files.len(), 4, "the log, the output, the request's JSON and page");
        for f in files {
            assert_eq!(mode(&f), expected, "{} under umask {umask}", f.display());
        }
    }
}

#[test]
fn status_after_nothing_to_do_shows_the_last_run_that_did_something() {
    assert!(python_ok(), "needs python3 (.ci/run installs it)");
    let p =
        project("version: 5\nactions:\n  a:\n    run: python:v2 act.py write o/a.csv 1\n    outputs: {highly_sensitive: {a: o/a.csv}}\n");
    assert!(run(p.path(), &["run_all"]).status.success());
    let o = run(p.path(), &["run_all"]);
    assert!(stdout(&o).contains("All actions already completed successfully"));
    let o = quarry(p.path(), &["status", "--project-dir", "."]);
    let text = stdout(&o);
    assert!(text.starts_with("Note: the latest run ("), "{text}");
    assert!(text.contains("had nothing to do; this is the last run that did something"), "{text}");
    assert!(text.contains("Status: Succeeded"), "{text}");
    // A job of well under a second still has a runtime.
    assert!(text.contains("Runtime:  00:00:0"), "{text}");
    assert!(text.lines().any(|l| l.trim_start().starts_with("a ") && l.contains("Succeeded  00:00:0")), "{text}");
}
