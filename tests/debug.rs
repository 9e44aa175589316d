//! `quarry debug`: every `show()` rendered as ehrQL's debugger renders it. The expected outputs
//! in fixtures/debug/expected are real ehrQL's (`ehrql debug DEF.py --dummy-tables tables
//! --display-format FORMAT`, its stderr), byte for byte: patient-level series alone and
//! together, event frames and series with `row_id`, sorted frames, picked rows, date
//! differences in days, datasets with and without a population or variables, labels, head and
//! tail, in both formats.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const QUARRY: &str = env!("CARGO_BIN_EXE_quarry");

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/debug")
}

fn quarry(args: &[&str]) -> Output {
    Command::new(QUARRY).args(args).current_dir(fixtures()).output().unwrap()
}

#[test]
fn show_renders_as_ehrql_in_both_formats() {
    for definition in ["show_everything", "show_more"] {
        for format in ["ascii", "html"] {
            let out = quarry(&["debug", &format!("{definition}.py"), "--dummy-tables", "tables", "--display-format", format]);
            assert!(out.status.success(), "{definition} {format}: {}", String::from_utf8_lossy(&out.stderr));
            let expected = std::fs::read_to_string(fixtures().join(format!("expected/{definition}.{format}.txt"))).unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stderr), expected, "{definition} {format}");
            assert!(out.stdout.is_empty());
        }
    }
}

#[test]
fn show_of_unrelated_elements_is_ehrqls_type_error() {
    let out = quarry(&["debug", "different_domains.py", "--dummy-tables", "tables"]);
    assert_eq!(out.status.code(), Some(10));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("Show line 3:\nError loading file 'different_domains.py':\n"), "{err}");
    assert!(err.contains("\nTypeError: \n\nshow() can be used in two ways. Either:\n"), "{err}");
}

#[test]
fn outside_debug_mode_show_prints_ehrqls_notice_and_the_run_goes_on() {
    let out = Command::new(QUARRY)
        .args(["generate-dataset", "show_everything.py", "--dummy-tables", "tables"])
        .current_dir(fixtures())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Show line 4:\n - show() ignored because we're not running in debug mode\nShow line 5: dob\n"), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "patient_id,n,code\r\n1,2,4567890\r\n2,0,\r\n4,0,\r\n");
}

#[test]
fn without_dummy_tables_they_are_generated_from_the_dataset() {
    let out = quarry(&["debug", "show_everything.py"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("[info] No --dummy-tables: show() uses dummy tables generated from the dataset"), "{err}");
    assert!(err.contains("Show line 18:\npatient_id        | n                 | code\n"), "{err}");
    // Without a dataset there is nothing to generate from: show() says what is needed.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("d.py"), "from ehrql import show\nfrom ehrql.tables.core import patients\nshow(patients.sex)\n")
        .unwrap();
    let out = Command::new(QUARRY).args(["debug", "d.py"]).current_dir(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(10));
    assert!(String::from_utf8_lossy(&out.stderr).contains("quarry debug needs --dummy-tables DIR to show values here"));
}
