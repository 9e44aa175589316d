//! The measures cases (`fixtures/measures/`, layout in its README): small measures definitions
//! whose expected outputs real ehrQL produced, run through `quarry generate-measures` on both
//! evaluators and compared byte for byte (or, for the cases ehrQL rejects, its exit code and
//! the key phrase of its message).

use std::path::{Path, PathBuf};
use std::process::Command;

const QUARRY: &str = env!("CARGO_BIN_EXE_quarry");

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/measures");
    let mut cases: Vec<PathBuf> =
        std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).filter(|p| p.join("definition.py").is_file()).collect();
    cases.sort();
    cases
}

/// The case's arguments after `generate-measures definition.py`, with `{out}` replaced.
fn arguments(case: &Path, out: &Path) -> Vec<String> {
    let out = out.to_str().unwrap();
    match std::fs::read_to_string(case.join("command")) {
        Ok(text) => text.lines().map(|l| l.replace("{out}", out)).collect(),
        Err(_) => vec!["--dummy-tables".into(), "tables".into(), "--output".into(), format!("{out}.csv")],
    }
}

/// Files below `dir`, as relative paths, in order.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path().strip_prefix(dir).unwrap().to_path_buf()).collect();
    out.sort();
    out
}

/// Why the run of `case` on `engine` does not give ehrQL's result, if it does not.
fn check(case: &Path, engine: &str) -> Option<String> {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    // A run that fails must leave an earlier output of the same name as it was.
    let failing = case.join("expected_error.txt").exists();
    if failing {
        std::fs::write(out.with_extension("csv"), "earlier\n").unwrap();
    }
    let run = Command::new(QUARRY)
        .current_dir(case)
        // The columnar engine writes its rows in chunks of two (`measures::write_measures`).
        .env("QUARRY_WRITE_ROWS", "2")
        .args(["generate-measures", "definition.py"])
        .args(arguments(case, &out))
        .args(["--engine", engine])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    if let Ok(expected) = std::fs::read_to_string(case.join("expected_error.txt")) {
        assert!(failing);
        let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        if left != ["out.csv"] || std::fs::read_to_string(out.with_extension("csv")).unwrap() != "earlier\n" {
            return Some(format!("a failed run left {left:?}, or changed out.csv"));
        }
        let code: i32 = expected.lines().next().unwrap().trim().parse().unwrap();
        let key =
            std::fs::read_to_string(case.join("expected_error_key.txt")).expect("an expected_error_key.txt beside expected_error.txt");
        if run.status.code() != Some(code) {
            return Some(format!("exit {:?}, ehrQL's is {code}\n{stderr}", run.status.code()));
        }
        if !stderr.to_lowercase().contains(&key.trim().to_lowercase()) {
            return Some(format!("the message does not say {:?}\n{stderr}", key.trim()));
        }
        return None;
    }
    if !run.status.success() {
        return Some(format!("exit {:?}\n{stderr}", run.status.code()));
    }
    let pairs: Vec<(PathBuf, PathBuf)> = if case.join("expected").is_dir() {
        let (expected, got) = (files(&case.join("expected")), files(&out));
        if expected != got {
            return Some(format!("files {got:?}, ehrQL wrote {expected:?}"));
        }
        expected.iter().map(|f| (case.join("expected").join(f), out.join(f))).collect()
    } else {
        vec![(case.join("expected.csv"), out.with_extension("csv"))]
    };
    for (expected, got) in pairs {
        let (expected_bytes, got_bytes) = (std::fs::read(&expected).unwrap(), std::fs::read(&got).unwrap());
        if expected_bytes != got_bytes {
            let (e, g) = (String::from_utf8_lossy(&expected_bytes), String::from_utf8_lossy(&got_bytes));
            let first = e.lines().zip(g.lines()).position(|(a, b)| a != b).unwrap_or(e.lines().count().min(g.lines().count()));
            return Some(format!(
                "{} differs from ehrQL's at line {}:\n  ehrQL:  {}\n  quarry: {}",
                expected.file_name().unwrap().to_string_lossy(),
                first + 1,
                e.lines().nth(first).unwrap_or("<end>"),
                g.lines().nth(first).unwrap_or("<end>")
            ));
        }
    }
    None
}

#[test]
fn measures_cases_match_ehrql_on_both_evaluators() {
    let cases = cases();
    assert!(cases.len() >= 10, "the measures cases are in fixtures/measures");
    let mut failures = vec![];
    for case in &cases {
        for engine in ["reference", "columnar"] {
            if let Some(why) = check(case, engine) {
                failures.push(format!("{} (--engine {engine}): {why}", case.file_name().unwrap().to_string_lossy()));
            }
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

/// ehrQL's grouping quirks are reproduced, and said: a warning names what the user likely did
/// not mean. Definitions without them get no warning.
#[test]
fn grouping_quirks_are_warned_about() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/measures");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.csv");
    let warnings = |case: &str| -> Vec<String> {
        let run = Command::new(QUARRY)
            .current_dir(root.join(case))
            .args(["generate-measures", "definition.py", "--dummy-tables", "tables", "--output", out.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(run.status.success(), "{case}: {}", String::from_utf8_lossy(&run.stderr));
        String::from_utf8_lossy(&run.stderr).lines().filter(|l| l.starts_with("[warning]")).map(str::to_string).collect()
    };
    let orders = warnings("008_same_columns_in_two_orders");
    assert_eq!(orders.len(), 1, "{orders:?}");
    assert!(
        orders[0]
            .contains("measures sex_practice and practice_sex, practice_sex_same_numerator group by the same columns in different orders")
    );
    let names = warnings("009_one_series_under_two_names");
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names[0].contains("the group_by columns sex, gender are one series"));
    assert!(names[1].contains("the group_by columns sex, sex_again are one series"));
    for case in ["001_interleaved_denominators_and_intervals", "002_group_by_subsets_in_one_group", "007_per_measure_files"] {
        assert!(warnings(case).is_empty(), "{case}: {:?}", warnings(case));
    }
}

/// `where(date.is_during(INTERVAL))` is found per partition by looking each row's date up among
/// the intervals (or among the rows sorted by date, when a run's intervals overlap), not by
/// evaluating the condition per interval: on generated patients (NULL dates among them) both
/// evaluators give the same bytes, for disjoint intervals (weeks, and days, whose every event
/// is on both bounds), overlapping ones, and beside a filter of another shape.
#[test]
fn interval_filters_give_the_reference_evaluators_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let definition = |intervals: &str| {
        format!(
            r#"from datetime import date
from ehrql import INTERVAL, create_measures, days, weeks
from ehrql.tables.core import patients, clinical_events, medications

measures = create_measures()
measures.configure_disclosure_control(enabled=False)
measures.configure_dummy_data(population_size=400)
events = clinical_events.where(clinical_events.date.is_during(INTERVAL))
late = clinical_events.where(clinical_events.date >= INTERVAL.start_date)
measures.define_measure(
    "events",
    numerator=events.count_for_patient(),
    denominator=patients.exists_for_patient(),
    intervals={intervals},
    group_by={{"sex": patients.sex}},
)
measures.define_measure(
    "meds",
    numerator=medications.where(medications.date.is_during(INTERVAL)).where(medications.date.is_not_null()).exists_for_patient(),
    denominator=late.exists_for_patient(),
    intervals={intervals},
)
"#
        )
    };
    let run = |engine: &str, intervals: &str| {
        std::fs::write(tmp.path().join("definition.py"), definition(intervals)).unwrap();
        let out = tmp.path().join(format!("{engine}.csv"));
        let run = Command::new(QUARRY)
            .current_dir(tmp.path())
            .args(["generate-measures", "definition.py", "--output", out.to_str().unwrap(), "--engine", engine])
            .output()
            .unwrap();
        assert!(run.status.success(), "{engine}: {}", String::from_utf8_lossy(&run.stderr));
        std::fs::read_to_string(out).unwrap()
    };
    for intervals in [
        r#"weeks(30).starting_on("2020-01-01")"#,
        r#"days(60).starting_on("2020-03-01")"#,
        "[(date(2019, 1, 1), date(2021, 12, 31)), (date(2020, 6, 1), date(2020, 6, 30)), (date(2020, 6, 30), date(2022, 1, 1))]",
    ] {
        let (reference, columnar) = (run("reference", intervals), run("columnar", intervals));
        // Counts that are not all zero, for the comparison to mean something.
        let counted = reference.lines().skip(1).filter(|l| l.split(',').nth(4).is_some_and(|n| n != "0")).count();
        assert!(counted >= 5, "{intervals}:\n{reference}");
        assert_eq!(columnar, reference, "{intervals}");
    }
}

/// A condition on the interval's dates is pushed into a backend's scan as the union of the
/// intervals (`engine::pushdown`): for conditions of several shapes (strict and inclusive
/// bounds, one bound, the date on either side, an alternative on another column, date
/// arithmetic, which is not pushed) over consecutive, overlapping and single-day intervals,
/// `generate-measures --backend` gives the bytes it gives with pushing turned off, and the
/// scan says it dropped rows where the condition can be pushed.
#[test]
fn interval_filters_pushed_into_a_scan_keep_the_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let backend = tmp.path().join("backend");
    let made = Command::new(QUARRY)
        .args(["make-backend", "--patients", "2000", "--seed", "5", "--out", backend.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let shapes = [
        ("clinical_events.date.is_during(INTERVAL)", true),
        ("clinical_events.date >= INTERVAL.start_date", true),
        ("clinical_events.date.is_after(INTERVAL.start_date) & clinical_events.date.is_before(INTERVAL.end_date)", true),
        ("(clinical_events.date == INTERVAL.start_date) | (INTERVAL.end_date == clinical_events.date)", true),
        (r#"clinical_events.date.is_during(INTERVAL) | (clinical_events.ctv3_code == CTV3Code("22K.."))"#, true),
        ("clinical_events.ctv3_code.is_in(vte) & clinical_events.date.is_during(INTERVAL)", true),
        ("clinical_events.date.is_on_or_before(INTERVAL.end_date - days(10))", false),
    ];
    // The definition reads only below its directory.
    let vte = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/projects/vte/codelists/opensafely-venous-thromboembolic-disease.csv");
    std::fs::copy(vte, tmp.path().join("vte.csv")).unwrap();
    let intervals = [
        r#"months(6).starting_on("2021-11-01")"#,
        "[(date(2020, 1, 1), date(2020, 1, 1)), (date(2019, 1, 1), date(2021, 12, 31)), (date(2023, 3, 1), date(2023, 3, 31))]",
    ];
    for (shape, pushed) in shapes {
        for interval in intervals {
            let definition = format!(
                r#"from datetime import date
from ehrql import INTERVAL, create_measures, days, months
from ehrql.codes import CTV3Code
from ehrql import codelist_from_csv
from ehrql.tables.tpp import clinical_events, patients
vte = codelist_from_csv("vte.csv", column="CTV3Code")
measures = create_measures()
measures.configure_disclosure_control(enabled=False)
events = clinical_events.where({shape})
measures.define_measure(
    "events",
    numerator=events.count_for_patient(),
    denominator=patients.exists_for_patient(),
    intervals={interval},
    group_by={{"sex": patients.sex}},
)
"#
            );
            std::fs::write(tmp.path().join("definition.py"), definition).unwrap();
            let run = |pushdown: &str| {
                let out = tmp.path().join(format!("out-{pushdown}.csv"));
                let o = Command::new(QUARRY)
                    .current_dir(tmp.path())
                    .env("QUARRY_PUSHDOWN", pushdown)
                    .args(["generate-measures", "definition.py", "--backend", backend.to_str().unwrap(), "--output", out.to_str().unwrap()])
                    .output()
                    .unwrap();
                let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
                assert!(o.status.success(), "{shape} over {interval}: {stderr}");
                (std::fs::read_to_string(out).unwrap(), stderr)
            };
            let ((with, said), (without, _)) = (run("1"), run("0"));
            let counted = with.lines().skip(1).filter(|l| l.split(',').nth(4).is_some_and(|n| n != "0")).count();
            assert!(counted > 0, "{shape} over {interval}: nothing counted\n{with}");
            assert_eq!(with, without, "{shape} over {interval}");
            assert_eq!(said.contains("clinical_events: "), pushed, "{shape} over {interval}: {said}");
        }
    }
}

/// Group columns of every type (a date, a float with NULLs, a boolean, an integer) are coded
/// by the columnar engine from their arrays' bits and by the reference evaluator from values:
/// both give the same rows, over partitions of a few patients.
#[test]
fn group_columns_of_every_type_give_the_reference_evaluators_rows() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("definition.py"),
        r#"from ehrql import create_measures, years
from ehrql.tables.core import patients, clinical_events
measures = create_measures()
measures.configure_disclosure_control(enabled=False)
measures.configure_dummy_data(population_size=300)
last = clinical_events.sort_by(clinical_events.date).last_for_patient()
measures.define_measure(
    "events",
    numerator=clinical_events.count_for_patient(),
    denominator=patients.exists_for_patient(),
    intervals=years(2).starting_on("2020-01-01"),
    group_by={
        "born": patients.date_of_birth,
        "value": last.numeric_value,
        "died": patients.date_of_death.is_not_null(),
        "year": patients.date_of_birth.year,
    },
)
"#,
    )
    .unwrap();
    let run = |engine: &str| {
        let out = tmp.path().join(format!("{engine}.csv"));
        let o = Command::new(QUARRY)
            .current_dir(tmp.path())
            .env("QUARRY_PARTITION_SIZE", "7")
            .args(["generate-measures", "definition.py", "--output", out.to_str().unwrap(), "--engine", engine])
            .output()
            .unwrap();
        assert!(o.status.success(), "{engine}: {}", String::from_utf8_lossy(&o.stderr));
        std::fs::read_to_string(out).unwrap()
    };
    let (reference, columnar) = (run("reference"), run("columnar"));
    assert!(reference.lines().count() > 100, "{reference}");
    assert!(reference.lines().skip(1).any(|l| l.split(',').nth(7) == Some("")), "no NULL float:\n{reference}");
    assert!(reference.lines().skip(1).any(|l| l.split(',').nth(8) == Some("T")), "nobody died:\n{reference}");
    assert_eq!(columnar, reference);
}

/// Disclosure control refuses a row before any output is opened, as in ehrQL: with an output
/// path that cannot be written too, the run reports the refused row, and creates nothing.
#[test]
fn a_refused_row_is_reported_before_the_output_is_opened() {
    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/measures/017_negative_count_with_disclosure_control");
    let tmp = tempfile::tempdir().unwrap();
    let taken = tmp.path().join("taken.csv");
    std::fs::create_dir(&taken).unwrap();
    for (out, engine) in [(&taken, "columnar"), (&taken, "reference"), (&tmp.path().join("new/dir/out.csv"), "columnar")] {
        let run = Command::new(QUARRY)
            .current_dir(&case)
            .args(["generate-measures", "definition.py", "--dummy-tables", "tables", "--engine", engine, "--output"])
            .arg(out)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("disclosure control needs counts of 0 or more"), "{engine}, {}: {stderr}", out.display());
    }
    assert!(!tmp.path().join("new").exists());
}
