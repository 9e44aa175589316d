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
