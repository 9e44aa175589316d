//! Runs the shared ehrQL suites over the built binary, on both evaluators: the conformance
//! suite (`../shared/conformance/check.sh`) and the real-world suite
//! (`../shared/realworld/check.sh`: the Python and the measures real definitions use). Every
//! case must pass. When `ARROW_PYTHON` names a Python with
//! pyarrow (`.ci/run` sets one up), Arrow outputs are compared with ehrQL's schema and rows
//! too (`check.sh --arrow`); otherwise only their IPC magic is checked.

use std::process::Command;

mod common;
use common::{realworld_suite, suite};

fn failures(suite: &std::path::Path, engine: &str) -> (Vec<String>, String) {
    let mut command = Command::new("bash");
    command.arg(suite.join("check.sh"));
    if std::env::var_os("ARROW_PYTHON").is_some() {
        command.arg("--arrow");
    }
    let out = command
        .env("QUARRY", env!("CARGO_BIN_EXE_quarry"))
        .env("QUARRY_FLAGS", format!("--engine {engine}"))
        .output()
        .expect("run check.sh");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let failed = stdout.lines().filter_map(|l| l.strip_prefix("FAIL ")).map(|l| l.split(':').next().unwrap_or(l).to_string()).collect();
    (failed, stdout)
}

#[test]
fn conformance_suite_passes_on_both_evaluators() {
    passes_on_both_evaluators(&suite());
}

#[test]
fn realworld_suite_passes_on_both_evaluators() {
    passes_on_both_evaluators(&realworld_suite());
}

fn passes_on_both_evaluators(suite: &std::path::Path) {
    for engine in ["reference", "columnar"] {
        let (failed, stdout) = failures(suite, engine);
        assert!(failed.is_empty(), "--engine {engine}: conformance failures {failed:?}\n{stdout}");
        assert!(
            stdout.lines().last().is_some_and(|l| l.ends_with(" passed, 0 failed")),
            "--engine {engine}: unexpected check.sh output\n{stdout}"
        );
        assert!(!stdout.contains("cannot import pyarrow"), "ARROW_PYTHON is set but cannot import pyarrow\n{stdout}");
    }
}
