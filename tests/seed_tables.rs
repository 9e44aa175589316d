//! The seed study's two ehrQL actions through `quarry run` on tables rather than generated
//! data (issue 5): on hand-made tables with VTE codes (`fixtures/projects/vte/vte-tables`,
//! expected datasets worked out by hand from the definitions), and on the study's own example
//! tables (which hold no hospital admissions table, so an empty one is added — ehrQL needs
//! every used table too).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::copy_dir;

const QUARRY: &str = env!("CARGO_BIN_EXE_quarry");

fn gunzip(path: &Path) -> String {
    let mut out = String::new();
    flate2::read::MultiGzDecoder::new(std::fs::File::open(path).unwrap()).read_to_string(&mut out).unwrap();
    out
}

/// A copy of the seed project whose two dataset actions read `tables`.
fn project_reading(tables: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/projects/vte"), tmp.path());
    let yaml = std::fs::read_to_string(tmp.path().join("project.yaml")).unwrap();
    let yaml = yaml.replace(".py --output output/dataset", &format!(".py --dummy-tables {tables} --output output/dataset"));
    assert_eq!(yaml.matches("--dummy-tables").count(), 2);
    std::fs::write(tmp.path().join("project.yaml"), yaml).unwrap();
    tmp
}

fn run(dir: &Path) {
    let out =
        Command::new(QUARRY).args(["run", "generate_dataset", "generate_pivoted_dataset", "--project-dir"]).arg(dir).output().unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_seed_actions_on_hand_made_tables_with_vte_codes() {
    let tmp = project_reading("vte-tables");
    run(tmp.path());
    for (output, expected) in [("dataset.csv.gz", "dataset.csv"), ("dataset_pivoted.csv.gz", "dataset_pivoted.csv")] {
        let got = gunzip(&tmp.path().join("output").join(output));
        let want = std::fs::read_to_string(tmp.path().join("vte-tables/expected").join(expected)).unwrap();
        assert_eq!(got, want, "{output}");
    }
}

#[test]
fn the_seed_actions_on_the_studys_example_tables() {
    let tmp = project_reading("example-tables");
    copy_dir(&tmp.path().join("example-data"), &tmp.path().join("example-tables"));
    std::fs::write(tmp.path().join("example-tables/hospital_admissions.csv"), "patient_id,admission_date,primary_diagnoses\n").unwrap();
    run(tmp.path());
    let text = gunzip(&tmp.path().join("output/dataset.csv.gz"));
    assert!(text.starts_with("patient_id,date_of_last_vte_primary_diagnosis,"), "{text}");
    let pivoted = gunzip(&tmp.path().join("output/dataset_pivoted.csv.gz"));
    assert_eq!(text.lines().count(), pivoted.lines().count(), "the same population");
}
