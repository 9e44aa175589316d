//! Generated dummy data (issue 6): every dataset definition the conformance suite holds that
//! ehrQL accepts, and the seed study's definitions, give exactly `--population-size` rows;
//! `create-dummy-tables` round-trips through `--dummy-tables`; the same seed gives the same
//! bytes; a contradiction is reported, naming the part that is never true.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::suite;

const QUARRY: &str = env!("CARGO_BIN_EXE_quarry");

fn vte() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/projects/vte")
}

struct Case {
    dir: PathBuf,
    multi_table: bool,
    args: Vec<String>,
    /// The population needs rows of a `table_from_file` table, which holds few patients.
    from_file: bool,
}

/// Dataset definitions that ehrQL accepts (exit code 0), as check.sh runs them.
fn cases() -> Vec<Case> {
    let root = suite();
    let manifest = std::fs::read_to_string(root.join("MANIFEST.tsv")).unwrap();
    let mut out = vec![];
    for line in manifest.lines().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        let (id, features, kind, code) = (f[0], f[2], f[3], f[4]);
        if code != "0" || !(kind == "dataset" || kind == "multi-table") || features.contains("generate-measures") {
            continue;
        }
        let dir = root.join("cases").join(id);
        let args = match std::fs::read_to_string(dir.join("args")) {
            Ok(text) => std::iter::once("--".to_string())
                .chain(text.lines().map(|l| l.trim_end_matches('\r').to_string()).filter(|l| !l.is_empty()))
                .collect(),
            Err(_) => vec![],
        };
        let from_file = std::fs::read_to_string(dir.join("definition.py")).unwrap().contains("table_from_file");
        out.push(Case { dir, multi_table: kind == "multi-table", args, from_file });
    }
    assert!(out.len() > 150, "found {} cases", out.len());
    out
}

fn generate(dir: &Path, definition: &str, size: usize, output: &str, extra: &[String]) -> std::process::Output {
    Command::new(QUARRY)
        .current_dir(dir)
        .args(["generate-dataset", definition, "--population-size", &size.to_string(), "--output", output])
        .args(extra)
        .output()
        .unwrap()
}

fn data_rows(path: &Path) -> usize {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().count() - 1
}

#[test]
fn every_accepted_conformance_definition_generates_exactly_the_population_size() {
    let tmp = tempfile::tempdir().unwrap();
    let mut problems = vec![];
    for case in cases() {
        for size in [10, 1000] {
            let (output, file) = if case.multi_table {
                (format!("{}:csv", tmp.path().join("multi").display()), tmp.path().join("multi/dataset.csv"))
            } else {
                (tmp.path().join("out.csv").display().to_string(), tmp.path().join("out.csv"))
            };
            let out = generate(&case.dir, "definition.py", size, &output, &case.args);
            let name = case.dir.strip_prefix(suite().join("cases")).unwrap().display().to_string();
            if !out.status.success() {
                problems.push(format!("{name} at {size}: exit {:?}: {}", out.status.code(), String::from_utf8_lossy(&out.stderr)));
                continue;
            }
            let rows = data_rows(&file);
            // A population that needs `table_from_file` rows holds at most the file's patients.
            let ok = if case.from_file { rows >= 1 && rows <= size } else { rows == size };
            if !ok {
                problems.push(format!("{name} at {size}: {rows} rows\n{}", String::from_utf8_lossy(&out.stderr)));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn seed_definitions_generate_exactly_the_population_size_up_to_100_000() {
    let tmp = tempfile::tempdir().unwrap();
    for def in ["analysis/dataset_definition.py", "analysis/dataset_definition_v1.py", "analysis/dataset_definition_pivoted.py"] {
        for size in [10, 1000, 100_000] {
            let file = tmp.path().join("out.csv.gz");
            let out = generate(&vte(), def, size, &file.display().to_string(), &[]);
            assert!(out.status.success(), "{def} at {size}: {}", String::from_utf8_lossy(&out.stderr));
            let mut text = String::new();
            std::io::Read::read_to_string(&mut flate2::read::MultiGzDecoder::new(std::fs::File::open(&file).unwrap()), &mut text).unwrap();
            assert_eq!(text.lines().count() - 1, size, "{def} at {size}");
        }
    }
}

#[test]
fn the_population_size_comes_from_the_flag_then_the_definition_then_the_project() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("out.csv");
    let run = |args: &[&str], env: Option<&str>| {
        let mut c = Command::new(QUARRY);
        c.current_dir(vte()).args(["generate-dataset"]).args(args).args(["--output", &file.display().to_string()]);
        c.env_remove("QUARRY_EXPECTATIONS_POPULATION_SIZE");
        if let Some(n) = env {
            c.env("QUARRY_EXPECTATIONS_POPULATION_SIZE", n);
        }
        let out = c.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        data_rows(&file)
    };
    // dataset_definition.py does not configure dummy data; _v1 sets population_size=1000.
    assert_eq!(run(&["analysis/dataset_definition.py"], None), 10, "ehrQL's default");
    assert_eq!(run(&["analysis/dataset_definition.py"], Some("37")), 37, "project.yaml's expectations");
    assert_eq!(run(&["analysis/dataset_definition_v1.py"], Some("37")), 1000, "the definition's own setting");
    assert_eq!(run(&["analysis/dataset_definition_v1.py", "--population-size", "12"], Some("37")), 12, "the flag");
}

#[test]
fn same_seed_same_bytes_and_another_seed_differs() {
    let tmp = tempfile::tempdir().unwrap();
    let read = |name: &str, seed: &str| {
        let file = tmp.path().join(name);
        let out = generate(&vte(), "analysis/dataset_definition.py", 500, &file.display().to_string(), &["--seed".into(), seed.into()]);
        assert!(out.status.success());
        std::fs::read(&file).unwrap()
    };
    let a = read("a.csv", "7");
    let b = read("b.csv", "7");
    let c = read("c.csv", "8");
    assert_eq!(a, b);
    assert_ne!(a, c);
    // Not every patient looks the same: counts vary, and some variables are NULL.
    let text = String::from_utf8(a).unwrap();
    let counts: std::collections::BTreeSet<&str> = text.lines().skip(1).map(|l| l.split(',').nth(3).unwrap()).collect();
    assert!(counts.len() >= 3, "varied primary-care counts: {counts:?}");
    assert!(text.lines().skip(1).any(|l| l.split(',').nth(1) == Some("")), "some patients have no primary-care event");
}

#[test]
fn dummy_tables_round_trip_through_create_dummy_tables_in_every_format() {
    let tmp = tempfile::tempdir().unwrap();
    let direct = tmp.path().join("direct.csv");
    assert!(generate(&vte(), "analysis/dataset_definition.py", 300, &direct.display().to_string(), &[]).status.success());
    let direct = std::fs::read_to_string(direct).unwrap();
    assert_eq!(direct.lines().count(), 301);
    for format in ["csv", "csv.gz", "arrow", "parquet"] {
        let tables = tmp.path().join(format!("tables_{format}"));
        let out = Command::new(QUARRY)
            .current_dir(vte())
            .args([
                "create-dummy-tables",
                "analysis/dataset_definition.py",
                &format!("{}:{format}", tables.display()),
                "--population-size",
                "300",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let mut written: Vec<String> =
            std::fs::read_dir(&tables).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
        written.sort();
        assert_eq!(written, ["clinical_events", "hospital_admissions", "ons_deaths", "patients"].map(|t| format!("{t}.{format}")));
        if format == "csv" {
            // Only used columns.
            let header = std::fs::read_to_string(tables.join("clinical_events.csv")).unwrap().lines().next().unwrap().to_string();
            assert_eq!(header, "patient_id,date,ctv3_code,numeric_value");
        }
        let via_tables = tmp.path().join(format!("via_{format}.csv"));
        let out = Command::new(QUARRY)
            .current_dir(vte())
            .args([
                "generate-dataset",
                "analysis/dataset_definition.py",
                "--dummy-tables",
                &tables.display().to_string(),
                "--output",
                &via_tables.display().to_string(),
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let via = std::fs::read_to_string(via_tables).unwrap();
        assert!(direct == via, "the dataset from the written {format} tables differs from direct generation");
    }
}

#[test]
fn a_contradiction_is_reported_with_the_part_that_is_never_true() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("def.py"),
        "from ehrql import create_dataset\nfrom ehrql.tables.core import patients\n\ndataset = create_dataset()\n\
         dataset.define_population((patients.sex == \"male\") & (patients.sex == \"female\"))\n",
    )
    .unwrap();
    let out = Command::new(QUARRY).current_dir(tmp.path()).args(["generate-dataset", "def.py", "--output", "out.csv"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no generated patient satisfied the population"), "{stderr}");
    assert!(stderr.contains("patients.sex == \"male\"") || stderr.contains("patients.sex == \"female\""), "{stderr}");
    assert!(!tmp.path().join("out.csv").exists(), "no partial output");
}
