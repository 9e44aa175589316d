//! Runs the shared ehrQL conformance suite (`../shared/conformance/check.sh`) over the built
//! binary, on both evaluators, and compares the failures with
//! `tests/conformance_known_failures.txt`: a new failure is a regression, and a listed case
//! that now passes must be removed from the list, so the list is always the true state.

use std::path::PathBuf;
use std::process::Command;

fn suite() -> PathBuf {
    let candidates = [
        std::env::var_os("QUARRY_CONFORMANCE").map(PathBuf::from),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance")),
        Some(PathBuf::from("/work/shared/conformance")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.join("check.sh").is_file())
        .expect("the conformance suite: set QUARRY_CONFORMANCE to the directory holding check.sh")
}

fn failures(engine: &str) -> (Vec<String>, String) {
    let out = Command::new("bash")
        .arg(suite().join("check.sh"))
        .env("QUARRY", env!("CARGO_BIN_EXE_quarry"))
        .env("QUARRY_FLAGS", format!("--engine {engine}"))
        .output()
        .expect("run check.sh");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let failed = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("FAIL "))
        .map(|l| l.split(':').next().unwrap_or(l).to_string())
        .collect();
    (failed, stdout)
}

#[test]
fn conformance_suite_matches_known_state() {
    let known: Vec<String> = include_str!("conformance_known_failures.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    for engine in ["reference", "columnar"] {
        let (failed, stdout) = failures(engine);
        let new: Vec<_> = failed.iter().filter(|f| !known.contains(f)).collect();
        let fixed: Vec<_> = known.iter().filter(|k| !failed.contains(k)).collect();
        assert!(new.is_empty(), "--engine {engine}: new conformance failures {new:?}\n{stdout}");
        assert!(fixed.is_empty(), "--engine {engine}: these cases pass now; remove them from tests/conformance_known_failures.txt: {fixed:?}");
    }
}
