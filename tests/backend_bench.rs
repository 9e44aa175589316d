//! The large-backend benchmark (issue 8) must not rot: `benches/backend.sh` runs at 10,000
//! patients with the test binary — make-backend, quarry over the backend, DuckDB over the same
//! Parquet files, the outputs compared, the analysis recipe — and must succeed. It needs a
//! Python with duckdb (`ARROW_PYTHON`, which `.ci/run` provides); without one it says it skipped.

use std::process::Command;

#[test]
fn the_backend_benchmark_runs_at_ten_thousand_patients() {
    let python = std::env::var("ARROW_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_duckdb = Command::new(&python).args(["-c", "import duckdb"]).output().is_ok_and(|o| o.status.success());
    if !has_duckdb {
        eprintln!(
            "SKIPPED the backend benchmark run: {python} cannot import duckdb (set ARROW_PYTHON to a Python with duckdb; .ci/run does)"
        );
        return;
    }
    let cache = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/backend.sh"))
        .arg("10000")
        .env("QUARRY", env!("CARGO_BIN_EXE_quarry"))
        .env("RUNS", "1")
        .env("PEER_PYTHON", &python)
        .env("BACKEND_CACHE", cache.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<&str> = stdout.lines().filter(|l| l.starts_with("10000 ")).collect();
    assert_eq!(rows.len(), 3, "one line per dataset:\n{stdout}");
    for r in rows {
        let selected: u64 = r.split_whitespace().nth(2).unwrap().parse().unwrap();
        if r.split_whitespace().nth(1) == Some("whole") {
            // Every patient.
            assert_eq!(selected, 10_000, "{r}");
        } else {
            // About 1.5% of patients have VTE, and the seed definitions select them.
            assert!((50..=400).contains(&selected), "{r}");
        }
    }
}
