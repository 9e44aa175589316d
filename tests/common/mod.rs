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

/// The generator quarry draws dummy data with (SplitMix64, seeded per case).
#[allow(unused_imports)]
pub use quarry_engine::dummy::rng::Rng;
