//! Definitions at the sizes real studies reach (issue 4): 500 variables, and a 5,000-code
//! `contains_any_of` (a 5,000-way OR) — interpreted, serialized and evaluated on both engines
//! without deep recursion anywhere. `benches/big_definitions.sh` times them.

use std::path::Path;
use std::process::Command;

const QUARRY: &str = env!("CARGO_BIN_EXE_quarry");

/// Writes `codes.csv` (5,000 ICD-10 codes), `contains.py` and `wide.py` (500 variables).
fn write_definitions(dir: &Path) {
    let codes: Vec<String> = (0..5000).map(|i| format!("{}{:03}", (b'A' + (i / 1000) as u8) as char, i % 1000)).collect();
    std::fs::write(dir.join("codes.csv"), format!("code\n{}\n", codes.join("\n"))).unwrap();
    std::fs::write(
        dir.join("contains.py"),
        "from ehrql import create_dataset, codelist_from_csv\nfrom ehrql.tables.tpp import patients, apcs\n\
         codes = codelist_from_csv(\"codes.csv\", column=\"code\")\ndataset = create_dataset()\n\
         dataset.define_population(patients.exists_for_patient())\n\
         dataset.has_code = apcs.where(apcs.all_diagnoses.contains_any_of(codes)).exists_for_patient()\n",
    )
    .unwrap();
    let mut wide = String::from(
        "from ehrql import create_dataset\nfrom ehrql.tables.core import patients, clinical_events\ndataset = create_dataset()\n\
         dataset.define_population(patients.exists_for_patient())\n",
    );
    for i in 0..500 {
        let e = match i % 5 {
            0 => format!("clinical_events.where(clinical_events.numeric_value > {i}).count_for_patient()"),
            1 => format!("clinical_events.where(clinical_events.date.is_after(\"{}-01-01\")).exists_for_patient()", 2000 + i % 24),
            2 => format!("clinical_events.sort_by(clinical_events.date).first_for_patient().numeric_value + {i}"),
            3 => format!("patients.age_on(\"{}-06-01\") > {}", 2000 + i % 24, i % 90),
            _ => format!("clinical_events.where(clinical_events.numeric_value < {i}).numeric_value.mean_for_patient()"),
        };
        wide.push_str(&format!("dataset.v{i} = {e}\n"));
    }
    std::fs::write(dir.join("wide.py"), wide).unwrap();
}

fn quarry(dir: &Path, args: &[&str]) -> std::process::Output {
    let out = Command::new(QUARRY).current_dir(dir).args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

#[test]
fn wide_definitions_and_huge_codelists_run_on_both_engines() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_definitions(dir);
    for (definition, columns) in [("contains.py", 2), ("wide.py", 501)] {
        let json = quarry(dir, &["serialize-definition", definition]).stdout;
        assert!(json.len() > 1000, "{definition}: serialized");
        quarry(dir, &["create-dummy-tables", definition, "tables", "--population-size", "20"]);
        let reference = quarry(dir, &["generate-dataset", definition, "--dummy-tables", "tables", "--engine", "reference"]).stdout;
        let columnar = quarry(dir, &["generate-dataset", definition, "--dummy-tables", "tables"]).stdout;
        assert!(reference == columnar, "{definition}: the engines differ");
        let text = String::from_utf8(columnar).unwrap();
        assert_eq!(text.lines().count(), 21, "{definition}");
        assert_eq!(text.lines().next().unwrap().split(',').count(), columns, "{definition}");
        std::fs::remove_dir_all(dir.join("tables")).unwrap();
    }
}
