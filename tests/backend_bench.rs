//! The large-backend and measures benchmarks (issues 8, 22) must not rot: `benches/backend.sh` runs at 10,000
//! patients with the test binary — make-backend, quarry over the backend, DuckDB over the same
//! Parquet files, the outputs compared, the analysis recipe — and must succeed. It needs a
//! Python with duckdb (`ARROW_PYTHON`, which `.ci/run` provides); without one it says it skipped.

use std::process::Command;

/// Runs `benches/<script>` at `n` patients (one run, the test binary, a fresh backend cache);
/// its output, or `None` after saying it skipped when there is no Python with duckdb.
fn bench(script: &str, n: &str) -> Option<String> {
    let python = std::env::var("ARROW_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_duckdb = Command::new(&python).args(["-c", "import duckdb"]).output().is_ok_and(|o| o.status.success());
    if !has_duckdb {
        eprintln!("SKIPPED {script}: {python} cannot import duckdb (set ARROW_PYTHON to a Python with duckdb; .ci/run does)");
        return None;
    }
    let cache = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg(format!("{}/benches/{script}", env!("CARGO_MANIFEST_DIR")))
        .arg(n)
        .env("QUARRY", env!("CARGO_BIN_EXE_quarry"))
        .env("RUNS", "1")
        .env("PEER_PYTHON", &python)
        .env("BACKEND_CACHE", cache.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    Some(stdout)
}

#[test]
fn the_backend_benchmark_runs_at_ten_thousand_patients() {
    let Some(stdout) = bench("backend.sh", "10000") else { return };
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

/// `benches/measures.sh` (issue 22) at 2,000 patients: make-backend, `generate-measures
/// --backend`, DuckDB's SQL over the same files, the rows compared.
#[test]
fn the_measures_benchmark_runs_at_two_thousand_patients() {
    let Some(stdout) = bench("measures.sh", "2000") else { return };
    let rows: Vec<&str> = stdout.lines().filter(|l| l.starts_with("2000 ")).collect();
    assert_eq!(rows.len(), 1, "one line:\n{stdout}");
    let measured: u64 = rows[0].split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(measured > 1000, "{}", rows[0]);
}
