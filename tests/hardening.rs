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
    let o = quarry(&vte, &["analysis", "frequency", "--input", "i.csv", "--output", "o.csv", "--by", "x", "--rounding", "midpiont6"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unknown rounding `midpiont6` (did you mean `midpoint6`?)"), "{}", stderr(&o));
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

// ---------------------------------------------------------------------------------------
// Inputs: never overwritten, never silently wrong, and messages that name the culprit.

/// A definition over `patients` and `clinical_events` with a codelist, and its tables.
fn study() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(
        p.join("definition.py"),
        "from ehrql import create_dataset, codelist_from_csv\n\
         from ehrql.tables.core import patients, clinical_events\n\
         codes = codelist_from_csv('codes.csv', column='code')\n\
         dataset = create_dataset()\n\
         dataset.define_population(patients.exists_for_patient())\n\
         dataset.sex = patients.sex\n\
         dataset.has_event = clinical_events.where(clinical_events.snomedct_code.is_in(codes)).exists_for_patient()\n",
    )
    .unwrap();
    std::fs::write(p.join("codes.csv"), "code,term\n73211009,diabetes\n").unwrap();
    std::fs::create_dir(p.join("tables")).unwrap();
    std::fs::write(p.join("tables/patients.csv"), "patient_id,date_of_birth,sex\n1,1980-01-01,female\n2,1990-06-01,male\n").unwrap();
    std::fs::write(p.join("tables/clinical_events.csv"), "patient_id,date,snomedct_code,numeric_value\n1,2020-01-01,73211009,\n").unwrap();
    dir
}

/// `pats.py`: a definition over `patients` alone (`sex`, and `date_of_birth` when asked).
fn patients_definition(dir: &Path, with_date_of_birth: bool) {
    let mut text = String::from(
        "from ehrql import create_dataset\nfrom ehrql.tables.core import patients\ndataset = create_dataset()\n\
         dataset.define_population(patients.exists_for_patient())\ndataset.sex = patients.sex\n",
    );
    if with_date_of_birth {
        text.push_str("dataset.date_of_birth = patients.date_of_birth\n");
    }
    std::fs::write(dir.join("pats.py"), text).unwrap();
}

fn generate(dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["generate-dataset", "definition.py", "--dummy-tables", "tables"];
    args.extend_from_slice(extra);
    quarry(dir, &args)
}

/// Files in `dir` (recursively) whose names say they are temporary.
fn leftovers(dir: &Path) -> Vec<PathBuf> {
    let mut found = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().unwrap().to_string_lossy().contains("tmp") {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn an_output_never_replaces_an_input() {
    let s = study();
    let p = s.path();
    assert!(generate(p, &["--output", "out.csv"]).status.success());
    let before: Vec<Vec<u8>> =
        ["tables/patients.csv", "codes.csv", "definition.py"].iter().map(|f| std::fs::read(p.join(f)).unwrap()).collect();
    std::os::unix::fs::symlink("tables/patients.csv", p.join("link.csv")).unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--output", "tables/patients.csv"], "tables/patients.csv"),
        (&["--output", "./tables/../tables/patients.csv"], "tables/patients.csv"),
        (&["--output", "link.csv"], "tables/patients.csv"),
        (&["--output", "codes.csv"], "codes.csv"),
    ];
    for (extra, input) in cases {
        let o = generate(p, extra);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {e}");
        assert!(e.contains("error: the output ") && e.contains(input) && e.contains("write the output somewhere else"), "{extra:?}: {e}");
    }
    // A directory output beside the inputs is fine when no file collides.
    assert!(generate(p, &["--output", "tables:csv"]).status.success());
    let o = quarry(p, &["generate-dataset", "definition.py", "--dummy-data-file", "out.csv", "--output", "out.csv"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("the --dummy-data-file"), "{}", stderr(&o));
    let o = quarry(p, &["serialize-definition", "definition.py", "-o", "definition.py"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = quarry(p, &["create-dummy-tables", "definition.py", "tables"]);
    assert!(o.status.success(), "dummy tables may be regenerated over dummy tables: {}", stderr(&o));
    std::fs::write(p.join("tables/patients.csv"), &before[0]).unwrap();
    std::fs::write(p.join("tables/clinical_events.csv"), "patient_id,date,snomedct_code,numeric_value\n1,2020-01-01,73211009,\n").unwrap();
    let after: Vec<Vec<u8>> =
        ["tables/patients.csv", "codes.csv", "definition.py"].iter().map(|f| std::fs::read(p.join(f)).unwrap()).collect();
    assert_eq!(before, after, "no input changed");

    // A recipe's outputs never replace its input either.
    std::fs::write(
        p.join("recipe.yaml"),
        "input: out.csv\nsteps:\n  - frequency:\n      by: [sex]\n      rounding: midpoint6\n      output: out.csv\n",
    )
    .unwrap();
    let data = std::fs::read(p.join("out.csv")).unwrap();
    let o = quarry(p, &["exec", "analysis:v1", "recipe.yaml"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("would replace") && stderr(&o).contains("input dataset"), "{}", stderr(&o));
    assert_eq!(std::fs::read(p.join("out.csv")).unwrap(), data);
}

#[test]
fn no_failure_leaves_a_temporary_or_partial_file() {
    let s = study();
    let p = s.path();
    std::fs::create_dir(p.join("out.csv")).unwrap();
    for ext in ["csv", "csv.gz", "arrow", "parquet"] {
        let target = format!("taken.{ext}");
        std::fs::create_dir_all(p.join(&target)).unwrap();
        let o = generate(p, &["--output", &target]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains("is a directory"), "{}", stderr(&o));
    }
    let o = quarry(p, &["serialize-definition", "definition.py", "-o", "out.csv"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("could not write out.csv"), "{}", stderr(&o));
    // A recipe whose output is a directory, and one whose chart is.
    assert!(generate(p, &["--output", "data.csv"]).status.success());
    let frequency = "input: data.csv\nsteps:\n  - frequency:\n      by: [sex]\n      rounding: midpoint6\n";
    for step in ["      output: out.csv\n", "      output: f.csv\n      chart: {output: out.csv, title: t, x_label: x, y_label: y}\n"] {
        std::fs::write(p.join("recipe.yaml"), format!("{frequency}{step}")).unwrap();
        let o = quarry(p, &["exec", "analysis:v1", "recipe.yaml"]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains("out.csv: it is a directory"), "{}", stderr(&o));
    }
    // Several tables, the second of which cannot be written: the first is not left either.
    std::fs::create_dir_all(p.join("gen/clinical_events.csv")).unwrap();
    let o = quarry(p, &["create-dummy-tables", "definition.py", "gen:csv"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("clinical_events.csv: it is a directory"), "{}", stderr(&o));
    assert!(!p.join("gen/patients.csv").exists());
    // An input that fails half-way through: no output at all.
    std::fs::write(
        p.join("tables/clinical_events.csv"),
        "patient_id,date,snomedct_code,numeric_value\n1,2020-01-01,73211009,\n2,2020-02-30,73211009,\n",
    )
    .unwrap();
    let o = generate(p, &["--output", "late.csv.gz"]);
    assert_eq!(o.status.code(), Some(11), "{}", stderr(&o));
    assert!(!p.join("late.csv.gz").exists());
    assert_eq!(leftovers(p), Vec::<PathBuf>::new());
}

#[test]
fn a_duplicate_patient_in_a_patient_level_table_is_an_error() {
    let s = study();
    let p = s.path();
    std::fs::write(
        p.join("tables/patients.csv"),
        "patient_id,date_of_birth,sex\n1,1980-01-01,female\n2,1990-06-01,male\n1,1981-01-01,male\n",
    )
    .unwrap();
    let o = generate(p, &[]);
    assert_eq!(o.status.code(), Some(11), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("tables/patients.csv', row 3: patient_id 1 is also in row 1"), "{e}");
    assert!(stdout(&o).is_empty());
    // Parquet and Arrow tables too, in memory and as a backend: the rows written by quarry
    // itself (--dummy-data-file copies rows as they are).
    patients_definition(p, true);
    std::fs::write(p.join("rows.csv"), "patient_id,date_of_birth,sex\n1,1980-01-01,female\n2,1990-06-01,male\n2,1991-06-01,male\n")
        .unwrap();
    for ext in ["parquet", "arrow"] {
        let dir = format!("typed-{ext}");
        std::fs::create_dir(p.join(&dir)).unwrap();
        let target = format!("{dir}/patients.{ext}");
        let o = quarry(p, &["generate-dataset", "pats.py", "--dummy-data-file", "rows.csv", "--output", &target]);
        assert!(o.status.success(), "{}", stderr(&o));
        let o = quarry(p, &["generate-dataset", "pats.py", "--dummy-tables", &dir]);
        assert_eq!(o.status.code(), Some(11), "{}", stderr(&o));
        assert!(stderr(&o).contains(&format!("patients.{ext}', row 3: patient_id 2 is also in row 2")), "{}", stderr(&o));
        let o = quarry(p, &["generate-dataset", "pats.py", "--backend", &dir]);
        assert_eq!(o.status.code(), Some(11), "{}", stderr(&o));
        assert!(stderr(&o).contains(&format!("patients.{ext}, rows 2 and 3: patient_id 2 appears more than once")), "{}", stderr(&o));
    }
}

#[test]
fn messages_about_input_name_the_file_row_column_and_value() {
    let s = study();
    let p = s.path();
    std::fs::write(p.join("tables/patients.csv"), "patient_id,date_of_birth,sex\n1,1980-01-01,female\n2,1990-13-01,male\n").unwrap();
    let o = generate(p, &[]);
    assert_eq!(o.status.code(), Some(11));
    assert!(
        stderr(&o).contains("'tables/patients.csv', row 2: column 'date_of_birth': month must be in 1..12: '1990-13-01'"),
        "{}",
        stderr(&o)
    );
    std::fs::write(p.join("tables/patients.csv"), "patient_id,date_of_birth,sex\n1,1980-02-30,female\n").unwrap();
    assert!(stderr(&generate(p, &[])).contains("row 1: column 'date_of_birth': day is out of range for month: '1980-02-30'"));

    // A Parquet dataset whose column has another type than the definition says.
    std::fs::write(p.join("tables/patients.csv"), "patient_id,date_of_birth,sex\n1,1980-01-01,female\n").unwrap();
    std::fs::write(
        p.join("other.py"),
        "from ehrql import create_dataset\nfrom ehrql.tables.core import patients\ndataset = create_dataset()\n\
         dataset.define_population(patients.exists_for_patient())\ndataset.sex = patients.date_of_birth\ndataset.has_event = patients.exists_for_patient()\n",
    )
    .unwrap();
    assert!(quarry(p, &["generate-dataset", "other.py", "--dummy-tables", "tables", "--output", "other.parquet"]).status.success());
    let o = quarry(p, &["generate-dataset", "definition.py", "--dummy-data-file", "other.parquet", "--output", "x.csv"]);
    assert_eq!(o.status.code(), Some(11), "{}", stderr(&o));
    assert!(stderr(&o).contains("other.parquet: Type mismatch in column 'sex': expected str, got Date32"), "{}", stderr(&o));
}

// ---------------------------------------------------------------------------------------
// Crashes: no input overflows the stack. quarry's work runs on a thread with a known large
// stack, and inputs whose readers recurse per level (a Parquet schema) are checked first.

/// A Parquet file (no rows) whose schema nests `depth` groups: Thrift's compact protocol by
/// hand, as a hostile file would be made.
fn deep_parquet(depth: usize) -> Vec<u8> {
    fn varint(mut n: u64, out: &mut Vec<u8>) {
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    let mut m = vec![0x15, 0x02]; // version: 1
    m.extend([0x19, 0xfc]); // schema: a list of structs
    varint(depth as u64 + 2, &mut m);
    m.extend([0x48, 6]);
    m.extend(b"schema");
    m.extend([0x15, 0x02, 0x00]); // the root: 1 child
    for _ in 0..depth {
        m.extend([0x35, 0x00, 0x18, 0x01, b'a', 0x15, 0x02, 0x00]); // required group a: 1 child
    }
    m.extend([0x15, 0x02, 0x25, 0x00, 0x18, 0x01, b'a', 0x00]); // required int32 a
    m.extend([0x16, 0x00, 0x19, 0x0c, 0x00]); // num_rows: 0, row_groups: [], end
    let mut file = b"PAR1".to_vec();
    file.extend(&m);
    file.extend((m.len() as u32).to_le_bytes());
    file.extend(b"PAR1");
    file
}

/// Fails unless quarry ended by itself (no signal) with `code`, saying `says`.
fn ended_cleanly(o: &Output, code: i32, says: &str) {
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(o.status.signal(), None, "killed by a signal: {}", stderr(o));
    assert_eq!(o.status.code(), Some(code), "{}", stderr(o));
    assert!(stderr(o).contains(says), "should say {says:?}: {}", stderr(o));
    assert!(!stderr(o).contains("internal error"), "{}", stderr(o));
}

#[test]
fn a_parquet_schema_nested_a_million_deep_is_refused() {
    let s = study();
    let p = s.path();
    std::fs::create_dir(p.join("deep")).unwrap();
    std::fs::write(p.join("deep/patients.parquet"), deep_parquet(1_000_000)).unwrap();
    let says = "its schema is nested 1000001 levels deep";
    patients_definition(p, false);
    ended_cleanly(&quarry(p, &["generate-dataset", "pats.py", "--dummy-tables", "deep"]), 11, says);
    ended_cleanly(&quarry(p, &["generate-dataset", "pats.py", "--backend", "deep"]), 11, says);
    ended_cleanly(&quarry(p, &["generate-dataset", "pats.py", "--dummy-data-file", "deep/patients.parquet"]), 11, says);
    let o =
        quarry(p, &["analysis", "frequency", "--input", "deep/patients.parquet", "--output", "f.csv", "--by", "a", "--rounding", "none"]);
    ended_cleanly(&o, 1, says);
    // A shallow nesting is read (and refused for what it is: no patient_id).
    std::fs::write(p.join("deep/patients.parquet"), deep_parquet(3)).unwrap();
    ended_cleanly(&quarry(p, &["generate-dataset", "pats.py", "--backend", "deep"]), 11, "missing column 'patient_id'");
}

/// A 1.3 KB file whose dictionary page claims about a billion values (found by fuzzing): the
/// `parquet` crate would size a 4 GB buffer from the claim; quarry checks every dictionary
/// page's count against its bytes first, on every path that reads Parquet.
#[test]
fn a_parquet_dictionary_page_claiming_more_values_than_it_holds_is_refused() {
    let s = study();
    let p = s.path();
    std::fs::create_dir(p.join("t")).unwrap();
    std::fs::copy(root().join("fixtures/fuzz/parquet_backend/oom-ea029f1c.parquet"), p.join("t/patients.parquet")).unwrap();
    patients_definition(p, false);
    let says = "a dictionary page claims 1073741828 values in";
    ended_cleanly(&quarry(p, &["generate-dataset", "pats.py", "--dummy-tables", "t"]), 11, says);
    ended_cleanly(&quarry(p, &["generate-dataset", "pats.py", "--backend", "t"]), 11, says);
    ended_cleanly(&quarry(p, &["generate-dataset", "pats.py", "--dummy-data-file", "t/patients.parquet"]), 11, says);
    let o = quarry(p, &["analysis", "frequency", "--input", "t/patients.parquet", "--output", "f.csv", "--by", "a", "--rounding", "none"]);
    ended_cleanly(&o, 1, says);
}

#[test]
fn yaml_nested_a_million_deep_is_refused() {
    let p = project("version: 5\nactions: {}\n");
    let deep = format!("version: 5\nactions:\n  a: {}\n", "[".repeat(1_000_000));
    std::fs::write(p.path().join("project.yaml"), &deep).unwrap();
    ended_cleanly(&quarry(p.path(), &["check", "--project-dir", "."]), 1, "project.yaml");
    ended_cleanly(&run(p.path(), &["a"]), 1, "project.yaml");
    let block = format!("version: 5\nactions:\n  a: {}x\n", "- ".repeat(200_000));
    std::fs::write(p.path().join("project.yaml"), &block).unwrap();
    ended_cleanly(&quarry(p.path(), &["check", "--project-dir", "."]), 1, "project.yaml");
    // A recipe too.
    std::fs::write(p.path().join("recipe.yaml"), format!("input: x.csv\nsteps: {}", "{a: ".repeat(1_000_000))).unwrap();
    ended_cleanly(&quarry(p.path(), &["exec", "analysis:v1", "recipe.yaml"]), 1, "recipe.yaml");
}

#[test]
fn pathological_csv_is_read_or_refused_without_a_crash() {
    let s = study();
    let p = s.path();
    let quoted = format!("patient_id,date_of_birth,sex\n1,1980-01-01,\"{}\"\n", "\"\"".repeat(2_000_000));
    let unclosed = format!("patient_id,date_of_birth,sex\n1,1980-01-01,\"{}\n", "x\n".repeat(500_000));
    let wide = format!("patient_id,{}\n1\n", (0..200_000).map(|i| format!("c{i}")).collect::<Vec<_>>().join(","));
    for (text, says) in [(quoted, "not in valid categories"), (unclosed, "patients.csv"), (wide, "expected 200001 columns but got 1")] {
        std::fs::write(p.join("tables/patients.csv"), text).unwrap();
        ended_cleanly(&generate(p, &[]), 11, says);
    }
}

/// Without a terminal, each running job's elapsed time and latest line are printed
/// periodically; `-v` echoes every line the job prints; `-q` prints only the result.
#[test]
fn the_console_shows_running_jobs_and_obeys_verbose_and_quiet() {
    assert!(python_ok(), "needs python3 (.ci/run installs it)");
    let yaml = "version: 5\nactions:\n  a:\n    run: python:v2 act.py echo step-one sleep 2.5 echo step-two write o/a.csv 1\n    outputs: {highly_sensitive: {a: o/a.csv}}\n";
    let p = project(yaml);
    let go = |flags: &[&str]| {
        Command::new(QUARRY)
            .args(["run", "a", "-f", "--project-dir"])
            .arg(p.path())
            .args(flags)
            .env("PYTHONUNBUFFERED", "1")
            .env("QUARRY_PROGRESS_SECONDS", "1")
            .output()
            .unwrap()
    };
    let o = go(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.lines().any(|l| l.ends_with(" a: running for 00:00:01; latest output: step-one")), "{e}");
    assert!(e.contains(" a: Executing job on the backend"), "{e}");
    assert!(!e.contains("a| step-one"), "{e}");
    assert!(stdout(&o).contains("=> a\n   Completed successfully"), "{}", stdout(&o));

    let o = go(&["-v"]);
    let e = stderr(&o);
    assert!(e.contains(" a| step-one\n") && e.contains(" a| step-two\n"), "{e}");

    let o = go(&["-q"]);
    assert!(o.status.success());
    assert_eq!(stderr(&o), "", "-q: nothing but errors on stderr");
    let out = stdout(&o);
    assert!(out.contains("=> a\n") && out.contains("=> Job request ") && !out.contains("job request page"), "{out}");
}

/// The help texts, as users see them (every step, every format, docs by name).
#[test]
fn help_texts() {
    let tmp = tempfile::tempdir().unwrap();
    for args in [&["--help"][..], &["run", "--help"], &["analysis", "--help"], &["generate-dataset", "--help"]] {
        let o = Command::new(QUARRY).args(args).env("COLUMNS", "100").output().unwrap();
        assert!(o.status.success());
        let name = format!("help_{}", args.iter().filter(|a| !a.starts_with('-')).cloned().collect::<Vec<_>>().join("_"));
        insta::assert_snapshot!(name.trim_end_matches('_').to_string(), stdout(&o));
        assert!(!stdout(&o).contains("docs/"), "{args:?}: docs by name, not repository paths");
    }
    drop(tmp);
}

// ---------------------------------------------------------------------------------------
// Fuzzing's findings (fixtures/fuzz/README.md), each now a message.

#[test]
fn fuzz_findings_parquet_backend() {
    let s = study();
    let p = s.path();
    patients_definition(p, false);
    let found = root().join("fixtures/fuzz/parquet_backend");
    for entry in std::fs::read_dir(&found).unwrap() {
        let file = entry.unwrap().path();
        std::fs::create_dir_all(p.join("t")).unwrap();
        std::fs::copy(&file, p.join("t/patients.parquet")).unwrap();
        // Read whole (a dummy table, a --dummy-data-file, an analysis input): refused with the
        // reader's complaint. As a backend only the used columns are read: rows or a message.
        for args in [&["--dummy-tables", "t"][..], &["--dummy-data-file", "t/patients.parquet"]] {
            let mut all = vec!["generate-dataset", "pats.py"];
            all.extend_from_slice(args);
            ended_cleanly(&quarry(p, &all), 11, "patients.parquet");
        }
        let o = quarry(
            p,
            &["analysis", "frequency", "--input", "t/patients.parquet", "--output", "f.csv", "--by", "sex", "--rounding", "none"],
        );
        ended_cleanly(&o, 1, "patients.parquet");
        let o = quarry(p, &["generate-dataset", "pats.py", "--backend", "t"]);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(o.status.signal(), None, "{}", stderr(&o));
        assert!(matches!(o.status.code(), Some(0 | 11)) && !stderr(&o).contains("internal error"), "{}", stderr(&o));
    }
}

/// Each ends as Python would end it (crash-61345814.py: RecursionError), with ehrQL's exit code.
#[test]
fn fuzz_findings_definition() {
    let s = study();
    for entry in std::fs::read_dir(root().join("fixtures/fuzz/definition")).unwrap() {
        let file = entry.unwrap().path();
        std::fs::copy(&file, s.path().join("found.py")).unwrap();
        ended_cleanly(&quarry(s.path(), &["generate-dataset", "found.py"]), 10, "found.py");
    }
}
