//! `quarry explain`: its verdict and its values are the dataset's. For every patient of a
//! generated population, whether explain says they are in the population must match whether
//! `generate-dataset` writes their row, and each variable's explained value must be the value in
//! that row; the text for a patient in and one out of the population names the deciding
//! branches, the rows read and the definition's lines.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const QUARRY: &str = env!("CARGO_BIN_EXE_quarry");

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/explain")
}

fn quarry(args: &[&str]) -> Output {
    quarry_in(&fixtures(), args)
}

/// A JSON value as ehrQL's CSV writes it.
fn as_csv(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::Bool(b) => if *b { "T" } else { "F" }.into(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Runs quarry in `dir`, which must succeed.
fn quarry_in(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(QUARRY).args(args).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "quarry {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Checks `ids` of the data `source` names (`--dummy-tables DIR` or `--backend DIR`) against
/// the dataset `definition` gives over it; returns how many were in and out of the population.
fn check_patients(dir: &Path, definition: &str, source: &[&str], ids: &[String]) -> (usize, usize) {
    let csv = String::from_utf8(quarry_in(dir, &[&["generate-dataset", definition], source].concat()).stdout).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let rows: HashMap<String, Vec<&str>> = lines.map(|l| l.split(',').collect::<Vec<_>>()).map(|r| (r[0].to_string(), r)).collect();
    let (mut inside, mut outside) = (0, 0);
    for id in ids {
        let out = quarry_in(dir, &[&["explain", definition, "--patient", id, "--format", "json"], source].concat());
        let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let in_population = e["in_population"].as_bool().unwrap();
        assert_eq!(in_population, rows.contains_key(id), "{source:?}, patient {id}: explain says in_population={in_population}");
        assert_eq!(e["population"]["value"] == serde_json::Value::Bool(true), in_population, "patient {id}");
        let Some(row) = rows.get(id) else {
            outside += 1;
            continue;
        };
        inside += 1;
        let variables = e["variables"].as_array().unwrap();
        assert_eq!(variables.len(), header.len() - 1);
        for (v, (name, value)) in variables.iter().zip(header.iter().zip(row.iter()).skip(1)) {
            assert_eq!(v["name"], *name);
            assert_eq!(as_csv(&v["explanation"]["value"]), *value, "{source:?}, patient {id}, {name}");
        }
    }
    (inside, outside)
}

/// Every patient of a directory of dummy tables.
fn check_every_patient(tables: &str) -> (usize, usize) {
    let patients = std::fs::read_to_string(fixtures().join(tables).join("patients.csv")).unwrap();
    let ids: Vec<String> = patients.lines().skip(1).map(|l| l.split(',').next().unwrap().to_string()).collect();
    check_patients(&fixtures(), "definition.py", &["--dummy-tables", tables], &ids)
}

#[test]
fn verdict_and_values_match_the_dataset_for_every_patient() {
    // Generated dummy data (ehrQL's generator keeps only patients in the population) and the
    // hand-written tables, whose patients 3, 4 and 5 are out of it (5 for a NULL date of birth).
    let dir = tempfile::tempdir().unwrap();
    let generated = dir.path().join("tables");
    let generated = generated.to_str().unwrap();
    quarry(&["create-dummy-tables", "definition.py", generated, "--population-size", "30"]);
    assert_eq!(check_every_patient(generated), (30, 0));
    assert_eq!(check_every_patient("tables"), (3, 3));
}

/// `--backend`: the seed definition over a make-backend backend, for patients in the population
/// and out of it (the first ids and the last).
#[test]
fn verdict_and_values_match_the_dataset_over_a_backend() {
    let tmp = tempfile::tempdir().unwrap();
    let backend = tmp.path().join("backend");
    let backend = backend.to_str().unwrap();
    quarry_in(tmp.path(), &["make-backend", "--patients", "1500", "--seed", "5", "--out", backend]);
    let vte = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/projects/vte");
    // Few of make-backend's patients are in the seed's population: all of them, and ten
    // others.
    let csv = quarry_in(&vte, &["generate-dataset", "analysis/dataset_definition_v1.py", "--backend", backend]).stdout;
    let mut ids: Vec<String> = String::from_utf8(csv).unwrap().lines().skip(1).map(|l| l.split(',').next().unwrap().to_string()).collect();
    let population = ids.len();
    ids.extend((1..=9).chain([1500]).map(|i| i.to_string()).filter(|i| !ids.contains(i)).collect::<Vec<_>>());
    let (inside, outside) = check_patients(&vte, "analysis/dataset_definition_v1.py", &["--backend", backend], &ids);
    assert_eq!((inside, outside), (population, ids.len() - population));
    assert!(population > 0 && outside > 0, "in: {inside}, out: {outside}");
}

#[test]
fn text_names_deciding_branches_rows_and_lines() {
    let out = quarry(&["explain", "definition.py", "--dummy-tables", "tables", "--patient", "3"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("Patient 3 is not in the population.\n\nPopulation:\n    And: False  [definition.py:11]"), "{text}");
    // The date of birth decides; the OR that was True does not.
    assert!(text.contains("\n    * Lt: False  [definition.py:12] & (patients.date_of_birth < \"2000-01-01\")\n"), "{text}");
    assert!(text.contains("\n      Or: True  [definition.py:11]"), "{text}");
    assert!(text.contains("rows read of clinical_events: 1\n            {date=2020-01-01, snomedct_code='1111111'}\n"), "{text}");
    assert!(text.contains("\n  latest_asthma = 2020-01-01\n      .date: 2020-01-01  [definition.py:16] dataset.latest_asthma = latest.date\n        picked row of clinical_events: 1\n"), "{text}");

    let out = quarry(&["explain", "definition.py", "--dummy-tables", "tables", "--patient", "2", "--variable", "asthma_count"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("Patient 2 is in the population.\n"), "{text}");
    assert!(text.contains("\n  asthma_count = 0\n      Count: 0  [definition.py:14]"), "{text}");
    assert!(!text.contains("latest_asthma"), "{text}");
}

#[test]
fn bad_input_is_one_clear_error() {
    let out = Command::new(QUARRY)
        .args(["explain", "definition.py", "--dummy-tables", "tables", "--patient", "1", "--variable", "nope"])
        .current_dir(fixtures())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--variable nope: the dataset has no such variable (it has: asthma_count, latest_asthma, age_then)"), "{err}");
    assert!(out.stdout.is_empty());

    let out = Command::new(QUARRY)
        .args(["explain", "definition.py", "--dummy-tables", "tables", "--patient", "99"])
        .current_dir(fixtures())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("[warning] patient 99 has no rows in any table the dataset reads"));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("Patient 99 is not in the population.\n"));
}

/// A literal shows its own value: the set of an `is_in` too (it has no per-patient value).
#[test]
fn literals_show_their_values() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("d.py"),
        "from ehrql import create_dataset\nfrom ehrql.tables.core import patients\n\
         dataset = create_dataset()\ndataset.define_population(patients.sex.is_in([\"female\", \"male\"]))\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("t")).unwrap();
    std::fs::write(dir.path().join("t/patients.csv"), "patient_id,date_of_birth,sex\n1,1950-01-01,intersex\n").unwrap();
    let text = String::from_utf8(quarry_in(dir.path(), &["explain", "d.py", "--dummy-tables", "t", "--patient", "1"]).stdout).unwrap();
    assert!(text.starts_with("Patient 1 is not in the population.\n\nPopulation:\n    In: False  [d.py:4]"), "{text}");
    assert!(text.contains("\n      value: {'female', 'male'}\n"), "{text}");
}
