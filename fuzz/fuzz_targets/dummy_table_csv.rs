//! The dummy-table reader (`--dummy-tables DIR`): any bytes as `patients.csv` or
//! `clinical_events.csv` (the first byte chooses; `.csv.gz` too) give rows or an error, never a
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "tables.rs"]
mod tables;

thread_local! {
    static FIXTURE: tables::Fixture = tables::fixture(&["patients", "clinical_events"]);
}

fuzz_target!(|data: &[u8]| {
    let Some((&choice, bytes)) = data.split_first() else { return };
    FIXTURE.with(|f| {
        for name in ["patients.csv", "clinical_events.csv", "patients.csv.gz", "clinical_events.csv.gz"] {
            let _ = std::fs::remove_file(f.path.join(name));
        }
        let (table, other) = if choice & 1 == 0 { ("patients", "clinical_events") } else { ("clinical_events", "patients") };
        let gz = choice & 2 != 0;
        let name = format!("{table}.csv{}", if gz { ".gz" } else { "" });
        std::fs::write(f.path.join(name), bytes).unwrap();
        std::fs::write(f.path.join(format!("{other}.csv")), "patient_id\n").unwrap();
        let _ = quarry_engine::store::load_dummy_tables(&f.graph, &f.roots, &f.path);
    });
});
