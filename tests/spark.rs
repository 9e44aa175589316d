//! `--engine spark`: the query model translated to Spark SQL and run through Spark Connect.
//!
//! These need a Spark Connect server, named by `QUARRY_SPARK_REMOTE` (`.ci/run` starts a local
//! one with `scripts/spark-cluster.sh start`). Without it each test says so and passes, except
//! under CI (`CI` set), where a missing server is a failure: CI must run them.
//!
//! They need the binary's `spark` feature (`cargo test --features spark --test spark`, as
//! `.ci/run` does); a build without it is tested to refuse `--engine spark` in tests/hardening.rs.
#![cfg(feature = "spark")]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::{realworld_suite, suite, unexpected_failures};

const QUARRY: &str = env!("CARGO_BIN_EXE_quarry");

fn remote() -> Option<String> {
    match std::env::var("QUARRY_SPARK_REMOTE") {
        Ok(r) if !r.is_empty() => Some(r),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run the Spark tests: start scripts/spark-cluster.sh and set QUARRY_SPARK_REMOTE"
            );
            eprintln!(
                "skipped: no Spark Connect server (run scripts/spark-cluster.sh start and set QUARRY_SPARK_REMOTE=sc://127.0.0.1:15002)"
            );
            None
        }
    }
}

/// The conformance suite's check.sh over the cases starting with `prefixes` (all when empty)
/// on Spark.
fn check(remote: &str, prefixes: &[&str], env: &[(&str, &str)]) -> String {
    check_suite(&suite(), remote, prefixes, env)
}

fn check_suite(suite: &Path, remote: &str, prefixes: &[&str], env: &[(&str, &str)]) -> String {
    let mut command = Command::new("bash");
    command.arg(suite.join("check.sh")).args(["-j", "3"]);
    if std::env::var_os("ARROW_PYTHON").is_some() {
        command.arg("--arrow");
    }
    command.args(prefixes);
    command.env("QUARRY", QUARRY).env("QUARRY_FLAGS", format!("--engine spark --spark-remote {remote}"));
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().expect("run check.sh");
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn conformance_suite_passes_on_spark() {
    let Some(remote) = remote() else { return };
    let stdout = check(&remote, &[], &[]);
    let (failed, counted) = unexpected_failures(&stdout);
    assert!(failed.is_empty(), "conformance failures on Spark: {failed:#?}\n{stdout}");
    assert!(counted, "unexpected check.sh output\n{stdout}");
}

#[test]
fn realworld_suite_passes_on_spark() {
    let Some(remote) = remote() else { return };
    let stdout = check_suite(&realworld_suite(), &remote, &[], &[]);
    assert!(!stdout.contains("FAIL "), "real-world failures on Spark:\n{stdout}");
    assert!(stdout.lines().last().is_some_and(|l| l.ends_with(" passed, 0 failed")), "unexpected check.sh output\n{stdout}");
}

#[test]
fn codelists_sent_as_views_give_the_same_answers() {
    let Some(remote) = remote() else { return };
    // Every non-empty literal set becomes a view joined in, instead of an IN (...) list.
    let stdout = check(&remote, &["codes/", "legacy_api/00", "table_helpers/009"], &[("QUARRY_SPARK_INLINE_SET_MAX", "0")]);
    let (failed, counted) = unexpected_failures(&stdout);
    assert!(failed.is_empty() && counted, "{stdout}");
}

fn run(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(QUARRY).current_dir(dir).args(args).output().unwrap()
}

#[test]
fn the_seed_definitions_give_the_same_bytes_as_the_columnar_engine_on_a_backend() {
    let Some(remote) = remote() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let backend = tmp.path().join("backend");
    let out = run(tmp.path(), &["make-backend", "--patients", "20000", "--out", backend.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let vte = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/projects/vte");
    for def in ["analysis/dataset_definition_v1.py", "analysis/dataset_definition_pivoted.py"] {
        let (local, spark) = (tmp.path().join("local.csv"), tmp.path().join("spark.csv"));
        let out = run(&vte, &["generate-dataset", def, "--backend", backend.to_str().unwrap(), "--output", local.to_str().unwrap()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let out = run(
            &vte,
            &[
                "generate-dataset",
                def,
                "--backend",
                backend.to_str().unwrap(),
                "--engine",
                "spark",
                "--spark-remote",
                &remote,
                "--output",
                spark.to_str().unwrap(),
            ],
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let (a, b) = (std::fs::read(&local).unwrap(), std::fs::read(&spark).unwrap());
        assert!(a.len() > 1000, "{def}: a dataset with rows");
        assert!(a == b, "{def}: Spark's output differs from the columnar engine's");
    }
}

#[test]
fn missing_tables_and_columns_are_named() {
    let Some(remote) = remote() else { return };
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("uses_sex.py"), "from ehrql import create_dataset\nfrom ehrql.tables.core import patients\ndataset = create_dataset()\ndataset.define_population(patients.sex == \"female\")\n").unwrap();
    std::fs::write(tmp.path().join("uses_dob.py"), "from ehrql import create_dataset\nfrom ehrql.tables.core import patients\ndataset = create_dataset()\ndataset.define_population(patients.date_of_birth.is_not_null())\n").unwrap();
    // Parquet tables holding only the columns the first definition reads.
    let out = run(tmp.path(), &["create-dummy-tables", "uses_sex.py", "tables:parquet"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let spark = ["--engine", "spark", "--spark-remote", remote.as_str()];
    let out = run(tmp.path(), &[&["generate-dataset", "uses_dob.py", "--backend", "tables", "--output", "out.csv"][..], &spark].concat());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(11), "{stderr}");
    assert!(stderr.contains("Table patients") && stderr.contains("has no column 'date_of_birth'"), "{stderr}");
    assert!(!tmp.path().join("out.csv").exists());
    let out = run(
        tmp.path(),
        &[&["generate-dataset", "uses_sex.py", "--spark-tables", "no_such_database.", "--output", "out.csv"][..], &spark].concat(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(11), "{stderr}");
    assert!(stderr.contains("Missing table: patients (Spark relation no_such_database.patients)"), "{stderr}");
    assert!(!tmp.path().join("out.csv").exists());
}

#[test]
fn an_unreachable_remote_fails_at_once_with_what_to_do() {
    // No server needed: a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let case = suite().join("cases/population/001_patients_exist");
    let started = Instant::now();
    let remote = format!("sc://127.0.0.1:{port}");
    let out =
        run(&case, &["generate-dataset", "definition.py", "--dummy-tables", "tables", "--engine", "spark", "--spark-remote", &remote]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot reach the Spark Connect server at 127.0.0.1:{port}"))
            && stderr.contains("scripts/spark-cluster.sh start"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    // No remote at all, and no tables for Spark to read.
    let out = Command::new(QUARRY)
        .current_dir(&case)
        .env_remove("SPARK_REMOTE")
        .args(["generate-dataset", "definition.py", "--dummy-tables", "tables", "--engine", "spark"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--engine spark needs a Spark Connect server"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&case, &["generate-dataset", "definition.py", "--engine", "spark", "--spark-remote", &remote]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--engine spark evaluates existing tables"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Event tables in ehrQL's order (`fixtures/spec/event_tables/`, expected outputs from ehrQL):
/// the translation orders each by its frame's sort keys, tie-breaks, then the input order.
#[test]
fn event_table_cases_give_ehrqls_bytes_on_spark() {
    let Some(remote) = remote() else { return };
    let failures: Vec<String> = common::event_table_cases()
        .iter()
        .filter_map(|case| {
            common::check_event_table_case(QUARRY, case, &["--engine", "spark", "--spark-remote", &remote], &[])
                .err()
                .map(|e| format!("{}: {e}", case.file_name().unwrap().to_string_lossy()))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn event_tables_on_parquet_keep_the_files_row_order() {
    let Some(remote) = remote() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for case in ["001_basic_event_table", "002_filtered_event_table_with_expressions", "003_two_event_tables"] {
        let dir = suite().join("cases/event_tables").join(case);
        let tables = tmp.path().join(case).join("tables");
        let out = run(&dir, &["create-dummy-tables", "definition.py", &format!("{}:parquet", tables.display()), "--population-size", "50"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let (local, spark) = (tmp.path().join(case).join("local"), tmp.path().join(case).join("spark"));
        let out = run(
            &dir,
            &["generate-dataset", "definition.py", "--backend", tables.to_str().unwrap(), "--output", &format!("{}:csv", local.display())],
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let out = run(
            &dir,
            &[
                "generate-dataset",
                "definition.py",
                "--backend",
                tables.to_str().unwrap(),
                "--engine",
                "spark",
                "--spark-remote",
                &remote,
                "--output",
                &format!("{}:csv", spark.display()),
            ],
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        for f in std::fs::read_dir(&local).unwrap() {
            let f = f.unwrap();
            let (a, b) = (std::fs::read(f.path()).unwrap(), std::fs::read(spark.join(f.file_name())).unwrap());
            assert!(a == b, "{case}: {:?} differs", f.file_name());
            checked += 1;
        }
    }
    assert!(checked >= 6, "{checked} files compared");
}
