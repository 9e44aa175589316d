//! Shared by the integration tests: where the conformance suite is, copying fixtures, and the
//! seedable random generator the property tests draw cases with. Each test file uses part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

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
