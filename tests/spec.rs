//! Spec cases as data (`fixtures/spec/*.txt`, format in its README): one expression over small
//! tables with each patient's expected value, run on both evaluators; together the cases must
//! use every node of the query model (but `Parameter`, bound only by measures).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

const QUARRY: &str = env!("CARGO_BIN_EXE_quarry");

struct Case {
    file: String,
    title: String,
    tables: Vec<(String, Vec<Vec<String>>)>,
    code: Vec<String>,
    expected: Vec<Vec<String>>,
}

fn pipe_row(line: &str) -> Vec<String> {
    line.split('|').map(|c| c.trim().to_string()).collect()
}

fn parse(file: &str, text: &str) -> Vec<Case> {
    let mut cases = vec![];
    for chunk in text.split("\n=== ").map(|c| c.trim_start_matches("=== ")) {
        let (title, body) = chunk.split_once('\n').unwrap_or((chunk, ""));
        let sections: Vec<&str> = body.split("\n---\n").collect();
        assert_eq!(sections.len(), 3, "{file}: `{title}` needs tables, code and expected values separated by ---");
        let mut tables = vec![];
        for block in sections[0].split("\n\n").map(str::trim).filter(|b| !b.is_empty()) {
            let mut lines = block.lines();
            let name = lines.next().unwrap().trim().to_string();
            tables.push((name, lines.map(pipe_row).collect()));
        }
        let code = sections[1].lines().map(str::to_string).filter(|l| !l.trim().is_empty()).collect();
        let expected = sections[2].lines().filter(|l| !l.trim().is_empty()).map(pipe_row).collect();
        cases.push(Case { file: file.to_string(), title: title.trim().to_string(), tables, code, expected });
    }
    cases
}

fn write_case(case: &Case, dir: &Path) {
    let tables = dir.join("tables");
    std::fs::create_dir_all(&tables).unwrap();
    let mut ids: BTreeSet<i64> = BTreeSet::new();
    for (name, rows) in &case.tables {
        let csv: String = rows.iter().map(|r| r.join(",") + "\n").collect();
        ids.extend(rows.iter().skip(1).filter_map(|r| r[0].parse::<i64>().ok()));
        match name.strip_prefix("file:") {
            Some(file) => std::fs::write(dir.join(file), csv).unwrap(),
            None => std::fs::write(tables.join(format!("{name}.csv")), csv).unwrap(),
        }
    }
    if !case.tables.iter().any(|(n, _)| n == "patients") {
        let csv: String = std::iter::once("patient_id".to_string()).chain(ids.iter().map(i64::to_string)).map(|l| l + "\n").collect();
        std::fs::write(tables.join("patients.csv"), csv).unwrap();
    }
    let (setup, expression) = case.code.split_at(case.code.len() - 1);
    let definition = format!(
        "from ehrql import create_dataset, case, when, days, weeks, months, years, minimum_of, maximum_of\n\
         from ehrql.tables import table_from_file\n\
         from ehrql.tables.core import patients, clinical_events, medications, practice_registrations\n\
         {}\ndataset = create_dataset()\ndataset.define_population(patients.exists_for_patient())\ndataset.value = {}\n",
        setup.join("\n"),
        expression[0]
    );
    std::fs::write(dir.join("definition.py"), definition).unwrap();
}

fn spec_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/spec")
}

#[test]
fn spec_cases_pass_on_both_evaluators_and_cover_every_node() {
    let mut cases = vec![];
    for entry in std::fs::read_dir(spec_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "txt") {
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            cases.extend(parse(&name, &std::fs::read_to_string(&path).unwrap()));
        }
    }
    assert!(cases.len() > 50, "{} spec cases", cases.len());
    let tmp = tempfile::tempdir().unwrap();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut failures = vec![];
    for (i, case) in cases.iter().enumerate() {
        let dir = tmp.path().join(i.to_string());
        write_case(case, &dir);
        let want: String = case.expected.iter().map(|r| r.join(",") + "\r\n").collect();
        for engine in ["reference", "columnar"] {
            let out = Command::new(QUARRY)
                .current_dir(&dir)
                .args(["generate-dataset", "definition.py", "--dummy-tables", "tables", "--engine", engine])
                .output()
                .unwrap();
            let got = String::from_utf8_lossy(&out.stdout);
            if !out.status.success() || got != want {
                failures.push(format!(
                    "{} / {} ({engine}):\n{}\nwant:\n{want}got:\n{got}",
                    case.file,
                    case.title,
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        let out = Command::new(QUARRY).current_dir(&dir).args(["serialize-definition", "definition.py"]).output().unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if let Some(nodes) = json["nodes"].as_object() {
            seen.extend(nodes.values().filter_map(|n| n.as_object().and_then(|o| o.keys().next().cloned())));
        }
    }
    assert!(failures.is_empty(), "{} of {} spec runs failed:\n\n{}", failures.len(), cases.len() * 2, failures.join("\n\n"));
    // `Parameter` is bound only by measures.
    let kinds = quarry_queries::serialize::NODE_KINDS.iter().filter(|k| **k != "Parameter");
    let missing: Vec<&&str> = kinds.filter(|k| !seen.contains(**k)).collect();
    assert!(missing.is_empty(), "no spec case uses {missing:?}");
}

/// Event tables list each patient's rows in ehrQL's order (`fixtures/spec/event_tables/`,
/// expected outputs from ehrQL itself): on both evaluators, the columnar one with partitions
/// of one and two patients too.
#[test]
fn event_table_cases_give_ehrqls_bytes_on_both_evaluators() {
    let cases = common::event_table_cases();
    assert!(cases.len() >= 8, "{} event-table cases", cases.len());
    let mut failures = vec![];
    for case in &cases {
        for (engine, partition) in [("reference", "4096"), ("columnar", "4096"), ("columnar", "1"), ("columnar", "2")] {
            if let Err(e) = common::check_event_table_case(QUARRY, case, &["--engine", engine], &[("QUARRY_PARTITION_SIZE", partition)]) {
                failures.push(format!("{} ({engine}, partitions of {partition}): {e}", case.file_name().unwrap().to_string_lossy()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
