//! Shared by the integration tests: where the conformance suite is, copying fixtures, and the
//! seedable random generator the property tests draw cases with. Each test file uses part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Copies a directory tree (fixtures into a temporary directory).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// A Python with pyarrow (`ARROW_PYTHON`, which `.ci/run` provides), or `None` after saying
/// the test is skipped.
pub fn pyarrow() -> Option<String> {
    let python = std::env::var("ARROW_PYTHON").unwrap_or_else(|_| "python3".into());
    if Command::new(&python).args(["-c", "import pyarrow"]).output().is_ok_and(|o| o.status.success()) {
        Some(python)
    } else {
        eprintln!("SKIPPED: {python} cannot import pyarrow (set ARROW_PYTHON; .ci/run does)");
        None
    }
}

/// A conformance case's user arguments (its `args` file, one per line), after `--`; none
/// when it has no `args` file.
pub fn case_args(case: &Path) -> Vec<String> {
    match std::fs::read_to_string(case.join("args")) {
        Ok(text) => std::iter::once("--".to_string())
            .chain(text.lines().map(|l| l.trim_end_matches('\r').to_string()).filter(|l| !l.is_empty()))
            .collect(),
        Err(_) => vec![],
    }
}

/// The shared conformance suite (`../shared/conformance`, or `QUARRY_CONFORMANCE`).
pub fn suite() -> PathBuf {
    shared_suite("conformance", "QUARRY_CONFORMANCE")
}

/// The shared real-world suite (`../shared/realworld`, or `QUARRY_REALWORLD`): the Python and
/// the measures that real study definitions use, with real ehrQL's outputs.
pub fn realworld_suite() -> PathBuf {
    shared_suite("realworld", "QUARRY_REALWORLD")
}

fn shared_suite(name: &str, variable: &str) -> PathBuf {
    [
        std::env::var_os(variable).map(PathBuf::from),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared").join(name)),
        Some(PathBuf::from("/work/shared").join(name)),
    ]
    .into_iter()
    .flatten()
    .find(|p| p.join("check.sh").is_file())
    .unwrap_or_else(|| panic!("the {name} suite: set {variable} to the directory holding check.sh"))
}

/// Conformance cases where quarry departs from ehrQL on purpose, and what quarry says
/// instead: ehrQL keeps the last of two rows for one patient in a patient-level table;
/// quarry refuses them (issue 21: it is almost always an export bug).
pub const DEPARTURES: &[(&str, &str)] = &[("io_formats/008_duplicate_patient_row_quirk", "patient_id 1 is also in row 1")];

/// check.sh's failures that are not [`DEPARTURES`], and whether its last line counts exactly
/// the departures as failed.
pub fn unexpected_failures(stdout: &str) -> (Vec<String>, bool) {
    let failed: Vec<String> =
        stdout.lines().filter_map(|l| l.strip_prefix("FAIL ")).map(|l| l.split(':').next().unwrap_or(l).to_string()).collect();
    let unexpected = failed.iter().filter(|f| !DEPARTURES.iter().any(|(d, _)| d == f)).cloned().collect();
    let counted = stdout.lines().last().is_some_and(|l| l.ends_with(&format!(" passed, {} failed", failed.len())));
    (unexpected, counted)
}

/// Runs each departure's case as check.sh would, and checks quarry's message instead of
/// ehrQL's output.
pub fn check_departures(quarry: &str, flags: &[&str]) {
    for (case, says) in DEPARTURES {
        let dir = suite().join("cases").join(case);
        let out = std::process::Command::new(quarry)
            .current_dir(&dir)
            .args(["generate-dataset", "definition.py", "--dummy-tables", "tables"])
            .args(flags)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(11), "{case}: {stderr}");
        assert!(stderr.contains(says), "{case}: {stderr}");
    }
}

/// The generator quarry draws dummy data with (SplitMix64, seeded per case).
#[allow(unused_imports)]
pub use quarry_engine::dummy::rng::Rng;

/// The event-table cases (`fixtures/spec/event_tables/<case>/`, format in its README).
pub fn event_table_cases() -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/spec/event_tables");
    let mut cases: Vec<PathBuf> =
        std::fs::read_dir(root).unwrap().map(|e| e.unwrap().path()).filter(|p| p.join("definition.py").is_file()).collect();
    cases.sort();
    cases
}

/// Runs `quarry generate-dataset` on an event-table case (its tables, then `args`, with `env`)
/// and compares with what ehrQL gave: every table byte for byte, or its exit code and message.
pub fn check_event_table_case(quarry: &str, case: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<(), String> {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("out");
    let output = format!("{}:csv", out_dir.display());
    let mut command = std::process::Command::new(quarry);
    command.current_dir(case).args(["generate-dataset", "definition.py", "--dummy-tables", "tables", "--output", &output]).args(args);
    command.envs(env.iter().copied());
    let out = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if let Ok(error) = std::fs::read_to_string(case.join("expected_error.txt")) {
        let (code, message) = error.split_once('\n').unwrap();
        return match (out.status.code() == code.trim().parse().ok(), stderr.contains(message.trim())) {
            (true, true) => Ok(()),
            _ => Err(format!("want exit {code} with `{}`, got {:?}:\n{stderr}", message.trim(), out.status.code())),
        };
    }
    if !out.status.success() {
        return Err(format!("failed:\n{stderr}"));
    }
    let mut problems = vec![];
    let expected = case.join("expected");
    let mut names: Vec<_> = std::fs::read_dir(&expected).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    for name in &names {
        let want = std::fs::read_to_string(expected.join(name)).unwrap();
        match std::fs::read_to_string(out_dir.join(name)) {
            Ok(got) if got == want => {}
            Ok(got) => problems.push(format!("{name:?} differs\nwant:\n{want}got:\n{got}")),
            Err(e) => problems.push(format!("{name:?}: {e}")),
        }
    }
    let written = std::fs::read_dir(&out_dir).map(|d| d.count()).unwrap_or(0);
    if written != names.len() {
        problems.push(format!("{written} tables written, {} expected", names.len()));
    }
    if problems.is_empty() { Ok(()) } else { Err(problems.join("\n")) }
}
