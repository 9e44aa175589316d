//! The Parquet readers: any bytes as a backend's `patients.parquet` (streamed in rounds, with
//! a pushed filter) and as a dummy table (read whole) give rows or an error, never a panic
//! or a stack overflow.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "tables.rs"]
mod tables;

thread_local! {
    static FIXTURE: tables::Fixture = tables::fixture(&["patients"]);
}

fuzz_target!(|data: &[u8]| {
    FIXTURE.with(|f| {
        std::fs::write(f.path.join("patients.parquet"), data).unwrap();
        if let Ok(mut backend) = quarry_engine::backend::Backend::open(&f.graph, &f.roots, None, &[], &f.path) {
            while let Ok(Some(_)) = backend.next_round(1000) {}
        }
        let _ = quarry_engine::store::load_dummy_tables(&f.graph, &f.roots, &f.path);
        let _ = quarry_engine::arrow_io::read_file(&f.path.join("patients.parquet"));
    });
});
