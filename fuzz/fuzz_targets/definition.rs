//! The definition front end (the embedded Python, `quarry_python::load_definition`): any
//! source text loads as a definition or gives a located error, never a panic or a stack
//! overflow. Imports of sibling files and codelists resolve in an empty directory.
#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

thread_local! {
    static FIXTURE: Fixture = {
        let dir = tempfile::tempdir().unwrap();
        Fixture { path: dir.path().join("definition.py"), _dir: dir }
    };
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    FIXTURE.with(|f| {
        std::fs::write(&f.path, text).unwrap();
        let _ = quarry_python::load_definition(&f.path, &[], Box::new(std::io::sink()));
    });
});
