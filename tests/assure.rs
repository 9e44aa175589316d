//! Assurance tests (`test_data`): `quarry assure`, `generate-dataset --test-data-file`, through
//! `exec ehrql:v1` and in a project.yaml action (a small project: the seed study's actions run
//! as ehrql:v0, which had no --test-data-file). The expected outputs in fixtures/assure/expected
//! are real ehrQL's (`ehrql assure FILE`, run in fixtures/assure): stdout byte for byte, the exit
//! code, and stderr without ehrQL's log lines; quarry's explanation follows ehrQL's report.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;

const QUARRY: &str = env!("CARGO_BIN_EXE_quarry");

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/assure")
}

fn quarry(dir: &Path, args: &[&str]) -> Output {
    Command::new(QUARRY).args(args).current_dir(dir).output().unwrap()
}

/// stderr without quarry's log lines.
fn report(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter(|l| !l.starts_with("[info") && !l.starts_with("[warning"))
        .map(|l| format!("{l}\n"))
        .collect()
}

const WHY: &str = "\nWhy (quarry's explanation; not part of ehrQL's report):\n";

#[test]
fn every_case_as_real_ehrql() {
    let dir = fixtures();
    let mut cases: Vec<PathBuf> = fs::read_dir(dir.join("expected"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "exit"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 7, "the fixtures are missing");
    for case in cases {
        let name = case.file_stem().unwrap().to_str().unwrap();
        let expected = |ext: &str| fs::read_to_string(case.with_extension(ext)).unwrap();
        let out = quarry(&dir, &["assure", &format!("{name}.py")]);
        assert_eq!(out.status.code().unwrap().to_string(), expected("exit").trim(), "{name}: exit code; stderr: {}", report(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), expected("stdout"), "{name}: stdout");
        let stderr = report(&out.stderr);
        let ehrql = expected("stderr");
        // ehrQL's report exactly, then (only for failures) quarry's explanation.
        let (ours, why) = match stderr.split_once(WHY) {
            Some((ours, why)) => (ours.to_string(), Some(why.to_string())),
            None => (stderr.clone(), None),
        };
        assert_eq!(ours, ehrql, "{name}: stderr");
        assert_eq!(why.is_some(), expected("exit").trim() == "13" && ehrql.contains("Validate results: Found"), "{name}: explanation");
    }
}

#[test]
fn the_explanation_shows_the_other_values_and_the_rows_behind_a_wrong_value() {
    let out = quarry(&fixtures(), &["assure", "test_bad.py"]);
    let stderr = report(&out.stderr);
    let why = stderr.split_once(WHY).expect("an explanation").1;
    assert_eq!(
        why,
        " * Patient 1\n   dataset row: patient_id=1, n=1, sex='fem'\n \
         * Patient 2\n   not in the population\n   patients, read by the population: 2 rows (the last is used, as in ehrQL)\n     \
         {'date_of_birth': datetime.date(2010, 1, 1), 'sex': 'male'}\n     {'date_of_birth': datetime.date(2011, 1, 1), 'sex': 'male'}\n \
         * Patient 3\n   dataset row: patient_id=3, n=0, sex='male'\n   clinical_events, read by 'n': no rows\n   \
         patients, read by 'sex': 1 row\n     {'date_of_birth': datetime.date(1990, 1, 1), 'sex': 'male'}\n \
         * Patient 4\n   dataset row: patient_id=4, n=0, sex='male'\n   patients, read by the population: 1 row\n     \
         {'date_of_birth': datetime.date(1990, 1, 1), 'sex': 'male'}\n"
    );
}

#[test]
fn test_data_quarry_cannot_use_is_named_not_crashed_on() {
    let dir = tempfile::tempdir().unwrap();
    fs::copy(fixtures().join("dataset_definition.py"), dir.path().join("dataset_definition.py")).unwrap();
    let cases = [
        (
            r#"{1: {"patients": {"date_of_birth": "1980-01-01"}, "clinical_events": [], "expected_columns": {}}}"#,
            "test_data: patient 1, table 'patients', column 'date_of_birth': expected a datetime.date, got '1980-01-01' (str)",
        ),
        (
            r#"{1: {"patients": {}, "expected_columns": {}}}"#,
            "test_data: patient 1 has no entry for table 'clinical_events', which the dataset uses (ehrQL stops with KeyError: 'clinical_events'); give \"clinical_events\": [] for no rows",
        ),
        (
            r#"{1: {"patients": {}, "clinical_events": []}}"#,
            "test_data: patient 1 is expected in the population but has no 'expected_columns' (ehrQL stops with KeyError: 'expected_columns')",
        ),
        (r#"[1, 2]"#, "test_data must be a dict of patient ids to test data, not list"),
        (r#"{"1": {}}"#, "test_data: patient ids must be 64-bit integers, got '1'"),
        (
            r#"{1: {"patients": {}, "clinical_events": [3], "expected_columns": {}}}"#,
            "test_data: patient 1, table 'clinical_events': each row must be a dict, not int",
        ),
    ];
    for (data, message) in cases {
        fs::write(dir.path().join("t.py"), format!("from dataset_definition import dataset\ntest_data = {data}\n")).unwrap();
        let out = quarry(dir.path(), &["assure", "t.py"]);
        assert_eq!(out.status.code(), Some(10), "{data}");
        assert_eq!(report(&out.stderr), format!("{message}\n"), "{data}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn generate_dataset_runs_the_tests_first_and_a_failure_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    common::copy_dir(&fixtures(), dir.path());
    let out =
        quarry(dir.path(), &["generate-dataset", "dataset_definition.py", "--test-data-file", "test_bad.py", "--output", "out/d.csv"]);
    assert_eq!(out.status.code(), Some(13));
    assert!(report(&out.stderr).starts_with("AssuranceTestError: \nValidate test data: Found errors with 2 patient(s)\n"));
    assert!(!dir.path().join("out").exists(), "no output (nor its directory) after a failing test");

    let out = quarry(dir.path(), &["generate-dataset", "dataset_definition.py", "--test-data-file", "test_ok.py", "--output", "out/d.csv"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Validate test data: All OK!\nValidate results: All OK!\n");
    assert!(dir.path().join("out/d.csv").is_file());

    // The same through `exec ehrql:v1`, as a project.yaml action runs it.
    let out = quarry(dir.path(), &["exec", "ehrql:v1", "assure", "test_ok.py"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Validate test data: All OK!\nValidate results: All OK!\n");
    let out = quarry(dir.path(), &["exec", "ehrql:v1", "generate-dataset", "dataset_definition.py", "--test-data-file", "test_bad.py"]);
    assert_eq!(out.status.code(), Some(13));
    assert!(out.stdout.is_empty(), "no dataset on stdout after a failing test");

    let out = quarry(dir.path(), &["generate-measures", "dataset_definition.py", "--test-data-file", "test_ok.py"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(report(&out.stderr).contains("--test-data-file runs a dataset's assurance tests: use it with generate-dataset"));
}

#[test]
fn the_seed_studys_tests_pass() {
    // The seed study's actions run as ehrql:v0, which had no --test-data-file: its tests run
    // with `quarry assure`.
    let project = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/projects/vte");
    for tests in ["analysis/test_dataset_definition.py", "analysis/test_dataset_definition_pivoted.py"] {
        let out = quarry(&project, &["assure", tests]);
        assert!(out.status.success(), "{tests}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "Validate test data: All OK!\nValidate results: All OK!\n", "{tests}");
    }
}

#[test]
fn an_action_runs_its_tests_and_a_failing_test_fails_the_action() {
    let dir = tempfile::tempdir().unwrap();
    common::copy_dir(&fixtures(), dir.path());
    let yaml = |tests: &str| {
        format!(
            "version: '3.0'\nexpectations:\n  population_size: 10\nactions:\n  generate_dataset:\n    run: ehrql:v1 generate-dataset dataset_definition.py \
             --test-data-file {tests} --output output/dataset.csv.gz\n    outputs:\n      highly_sensitive:\n        \
             cohort: output/dataset.csv.gz\n"
        )
    };
    fs::write(dir.path().join("project.yaml"), yaml("test_ok.py")).unwrap();
    let out = quarry(dir.path(), &["run", "generate_dataset", "--project-dir", "."]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let log = fs::read_to_string(dir.path().join("metadata/generate_dataset.log")).unwrap();
    assert!(log.contains("Validate results: All OK!"), "{log}");

    // A failing test: the action fails with ehrQL's exit code and writes no dataset.
    fs::remove_file(dir.path().join("output/dataset.csv.gz")).unwrap();
    fs::write(dir.path().join("project.yaml"), yaml("test_bad.py")).unwrap();
    let out = quarry(dir.path(), &["run", "generate_dataset", "--project-dir", "."]);
    assert!(!out.status.success());
    assert!(!dir.path().join("output/dataset.csv.gz").exists());
    let log = fs::read_to_string(dir.path().join("metadata/generate_dataset.log")).unwrap();
    assert!(log.contains("AssuranceTestError"), "{log}");
    assert!(log.contains("exit_code: 13"), "{log}");
}
