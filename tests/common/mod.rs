//! Shared by the integration tests: where the conformance suite is, and a small seedable
//! random generator (SplitMix64) for the property tests. Each test file uses part of it.
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
    [
        std::env::var_os("QUARRY_CONFORMANCE").map(PathBuf::from),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance")),
        Some(PathBuf::from("/work/shared/conformance")),
    ]
    .into_iter()
    .flatten()
    .find(|p| p.join("check.sh").is_file())
    .expect("the conformance suite: set QUARRY_CONFORMANCE to the directory holding check.sh")
}

pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
