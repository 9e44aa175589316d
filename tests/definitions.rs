//! Definitions as the binary runs them: the sandbox (reads inside the project only, no
//! writes, no programs), runaway nesting and recursion (Python's errors, never a crash), and
//! that a failed definition exits non-zero and leaves nothing behind.

use std::path::Path;
use std::process::Command;

mod common;
use common::copy_dir;

const PRELUDE: &str = "from ehrql import create_dataset\nfrom ehrql.tables.core import patients\n";
const DATASET: &str = "dataset = create_dataset()\ndataset.define_population(patients.exists_for_patient())\n";

struct Run {
    code: i32,
    stderr: String,
}

/// Runs `generate-dataset` on `source` (with `files` beside it) in a fresh project directory,
/// with an empty patients table; checks that a failure left no output.
fn run(project: &Path, source: &str) -> Run {
    std::fs::write(project.join("definition.py"), source).unwrap();
    let tables = project.join("tables");
    std::fs::create_dir_all(&tables).unwrap();
    std::fs::write(tables.join("patients.csv"), "patient_id,date_of_birth,sex,date_of_death\n1,1980-01-01,female,\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_quarry"))
        .current_dir(project)
        .args(["generate-dataset", "definition.py", "--dummy-tables", "tables", "--output", "out/dataset.csv"])
        .output()
        .unwrap();
    let code = out.status.code().unwrap_or(-1);
    if code != 0 {
        assert!(!project.join("out").exists(), "a failed run left output behind");
    }
    Run { code, stderr: String::from_utf8_lossy(&out.stderr).into_owned() }
}

fn project() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn reads_inside_the_project_work() {
    let dir = project();
    std::fs::create_dir(dir.path().join("analysis")).unwrap();
    std::fs::write(dir.path().join("analysis/dates.json"), r#"{"index": "2020-01-01"}"#).unwrap();
    let source = format!(
        "{PRELUDE}import json\nfrom pathlib import Path\nindex = json.loads(Path('analysis/dates.json').read_text())['index']\n{DATASET}dataset.age = patients.age_on(index)\n"
    );
    let r = run(dir.path(), &source);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(std::fs::read_to_string(dir.path().join("out/dataset.csv")).unwrap(), "patient_id,age\r\n1,40\r\n");
}

#[test]
fn the_sandbox_refuses_what_would_leave_or_change_the_project() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "secret").unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "an absolute path",
            "open('/etc/passwd').read()".into(),
            "PermissionError: [Errno 13] Permission denied (quarry runs definitions read-only, and only inside the project): '/etc/passwd'",
        ),
        (
            "a .. escape",
            "open('../secret.txt').read()".into(),
            "PermissionError: [Errno 13] Permission denied (quarry runs definitions read-only, and only inside the project): '../secret.txt'",
        ),
        (
            "a symlink out",
            "open('link').read()".into(),
            "PermissionError: [Errno 13] Permission denied (quarry runs definitions read-only, and only inside the project): 'link'",
        ),
        ("pathlib outside", "__import__('pathlib').Path('/etc/hostname').read_text()".into(), "'/etc/hostname'"),
        ("listing outside", "__import__('os').listdir('/')".into(), "PermissionError"),
        (
            "writing a file",
            "open('written.txt', 'w').write('x')".into(),
            "PermissionError: [Errno 13] Permission denied (quarry runs definitions read-only, and only inside the project): 'written.txt'",
        ),
        ("pathlib writing", "__import__('pathlib').Path('written.txt').write_text('x')".into(), "PermissionError"),
        ("deleting", "__import__('os').remove('definition.py')".into(), "PermissionError"),
        ("making a directory", "__import__('os').mkdir('made')".into(), "PermissionError"),
        ("os.system", "__import__('os').system('touch written.txt')".into(), "PermissionError"),
        ("subprocess", "__import__('subprocess').run(['touch', 'written.txt'])".into(), "Error"),
        ("sockets", "__import__('socket')".into(), "ModuleNotFoundError: No module named '_socket'"),
        ("changing the environment", "__import__('os').environ.__setitem__('X', '1')".into(), "PermissionError"),
    ];
    for (what, statement, expected) in cases {
        let dir = project();
        std::os::unix::fs::symlink(outside.path().join("secret.txt"), dir.path().join("link")).unwrap();
        let r = run(dir.path(), &format!("{PRELUDE}{statement}\n{DATASET}"));
        assert_eq!(r.code, 10, "{what}: {}", r.stderr);
        assert!(r.stderr.contains(expected), "{what}: expected {expected:?} in\n{}", r.stderr);
        assert!(!dir.path().join("written.txt").exists() && !dir.path().join("made").exists(), "{what}: left something behind");
        assert!(dir.path().join("definition.py").exists(), "{what}: deleted the definition");
    }
}

#[test]
fn the_environment_is_the_one_ehrql_gives_definitions() {
    let dir = project();
    let source = format!(
        "{PRELUDE}import os\nassert dict(os.environ) == {{'PYTHONPATH': '/app', 'PYTHONHASHSEED': '0', 'TMPDIR': '/tmp', 'LC_CTYPE': 'C.UTF-8'}}, dict(os.environ)\n{DATASET}"
    );
    let r = run(dir.path(), &source);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

/// `table_from_file` on a file that is not there (a study's earlier action has not run) is
/// ehrQL's `FileValidationError: Missing file: PATH` with exit code 11 (real ehrQL's words and
/// code), whatever the format.
#[test]
fn table_from_file_of_a_missing_file_is_ehrqls_file_validation_error() {
    for file in ["output/data/processed.arrow", "output/processed.csv"] {
        let dir = project();
        let source = format!(
            "{PRELUDE}from datetime import date\nfrom ehrql.query_language import PatientFrame, Series, table_from_file\n\
             @table_from_file('{file}')\nclass t(PatientFrame):\n    d = Series(date)\n{DATASET}"
        );
        let r = run(dir.path(), &source);
        assert_eq!(r.code, 11, "{file}: ehrQL's exit code for a FileValidationError; {}", r.stderr);
        assert!(r.stderr.contains(&format!("\nehrql.exceptions.FileValidationError: Missing file: {file}\n")), "{file}: {}", r.stderr);
    }
}

#[test]
fn runaway_recursion_is_a_recursion_error() {
    let dir = project();
    let r = run(dir.path(), &format!("{PRELUDE}def f(n):\n    return f(n + 1)\nf(0)\n{DATASET}"));
    assert_eq!(r.code, 10, "{}", r.stderr);
    assert!(r.stderr.contains("RecursionError: maximum recursion depth exceeded"), "{}", r.stderr);
    // A raised limit is honoured up to quarry's cap, still without a crash.
    let r = run(dir.path(), &format!("{PRELUDE}import sys\nsys.setrecursionlimit(10**9)\ndef f(n):\n    return f(n + 1)\nf(0)\n{DATASET}"));
    assert_eq!(r.code, 10, "{}", r.stderr);
    assert!(r.stderr.contains("RecursionError"), "{}", r.stderr);
}

#[test]
fn deep_nesting_fails_as_cpython_fails() {
    let dir = project();
    let parens = format!("{PRELUDE}x = {}1{}\n{DATASET}", "(".repeat(100_000), ")".repeat(100_000));
    let r = run(dir.path(), &parens);
    assert_eq!(r.code, 10, "{}", &r.stderr[r.stderr.len().saturating_sub(500)..]);
    assert!(r.stderr.ends_with("SyntaxError: too many nested parentheses\n"), "{}", &r.stderr[r.stderr.len().saturating_sub(500)..]);

    let chain = format!("{PRELUDE}a = 1\nx = {}\n{DATASET}", vec!["a"; 100_000].join(" + "));
    let r = run(dir.path(), &chain);
    assert_eq!(r.code, 10, "{}", r.stderr);
    assert!(r.stderr.contains("RecursionError: maximum recursion depth exceeded during compilation"), "{}", r.stderr);

    let unary = format!("{PRELUDE}x = {}1\n{DATASET}", "-".repeat(100_000));
    let r = run(dir.path(), &unary);
    assert_eq!(r.code, 10, "{}", r.stderr);
    assert!(r.stderr.contains("MemoryError: Parser stack overflowed - Python source too complex to parse"), "{}", r.stderr);

    // The same through eval() and an imported module.
    std::fs::write(dir.path().join("deep.py"), format!("x = {}1{}\n", "[".repeat(500), "]".repeat(500))).unwrap();
    let r = run(dir.path(), &format!("{PRELUDE}import deep\n{DATASET}"));
    assert!(r.stderr.contains("SyntaxError: too many nested parentheses"), "{}", r.stderr);
    let r = run(dir.path(), &format!("{PRELUDE}eval('(' * 300 + ')' * 300)\n{DATASET}"));
    assert!(r.stderr.contains("SyntaxError: too many nested parentheses"), "{}", r.stderr);

    // Long but shallow code is fine, as in CPython.
    let long =
        format!("{PRELUDE}a = 1\nx = {}\n{DATASET}dataset.x = patients.exists_for_patient().as_int() * x\n", vec!["a"; 5_000].join(" + "));
    let r = run(dir.path(), &long);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(std::fs::read_to_string(dir.path().join("out/dataset.csv")).unwrap(), "patient_id,x\r\n1,5000\r\n");
}

#[test]
fn errors_point_at_the_users_code() {
    let dir = project();
    std::fs::write(dir.path().join("helpers.py"), "def age(p):\n    return p.age_on('2020-13-01')\n").unwrap();
    let r = run(dir.path(), &format!("{PRELUDE}from helpers import age\n{DATASET}dataset.age = age(patients)\n"));
    assert_eq!(r.code, 10);
    let expected = [
        "Error loading file 'definition.py':",
        "Traceback (most recent call last):",
        "definition.py\", line 6, in <module>",
        "dataset.age = age(patients)",
        "helpers.py\", line 2, in age",
        "ValueError: month must be in 1..12 in '2020-13-01'",
    ];
    let mut at = 0;
    for e in expected {
        let found = r.stderr[at..].find(e).unwrap_or_else(|| panic!("{e:?} (in order) not in\n{}", r.stderr));
        at += found + e.len();
    }
    assert!(!r.stderr.contains("query_language"), "ehrQL's own frames are hidden, as ehrQL hides them:\n{}", r.stderr);

    // An error while importing a module of the project: the import line, then the module's,
    // as CPython prints it (quarry's import hooks add no frames).
    std::fs::write(dir.path().join("codelists.py"), "x = 1\nfrom databuilder.ehrql import codelist_from_csv\n").unwrap();
    let r = run(dir.path(), &format!("{PRELUDE}import codelists\n{DATASET}"));
    assert_eq!(r.code, 0, "{}", r.stderr);
    // The warning names the file with the import.
    assert!(r.stderr.contains("[warning] codelists.py: imports databuilder.ehrql, which only ehrQL's ehrql:v0 image has"), "{}", r.stderr);
    std::fs::remove_dir_all(dir.path().join("out")).unwrap();
    std::fs::write(dir.path().join("codelists.py"), "x = 1\nraise ValueError('in the helper')\n").unwrap();
    let r = run(dir.path(), &format!("{PRELUDE}import codelists\n{DATASET}"));
    assert_eq!(r.code, 10);
    let tail = "definition.py\", line 3, in <module>\n    import codelists\n  File \"";
    assert!(r.stderr.contains(tail), "{}", r.stderr);
    assert!(
        r.stderr.contains("codelists.py\", line 2, in <module>\n    raise ValueError('in the helper')\nValueError: in the helper\n"),
        "{}",
        r.stderr
    );
}

#[test]
fn python_semantics_match_cpython() {
    // fixtures/definitions/semantics/README.md: the expected files came from real ehrQL.
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/definitions/semantics");
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("project");
    copy_dir(&fixture.join("project"), &project);
    let out = Command::new(env!("CARGO_BIN_EXE_quarry"))
        .current_dir(&project)
        .args(["generate-dataset", "analysis/definition.py", "--dummy-tables", "tables", "--output", "dataset.csv", "--", "x"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let real = project.canonicalize().unwrap().display().to_string();
    let printed: String = stderr.lines().filter(|l| !l.starts_with("[info")).map(|l| l.replace(&real, "<project>") + "\n").collect();
    let expected = std::fs::read_to_string(fixture.join("expected.txt")).unwrap();
    for (i, (got, want)) in printed.lines().zip(expected.lines()).enumerate() {
        assert_eq!(got, want, "line {} of what the definition printed", i + 1);
    }
    assert_eq!(printed.lines().count(), expected.lines().count(), "{printed}");
    assert_eq!(
        std::fs::read_to_string(project.join("dataset.csv")).unwrap(),
        std::fs::read_to_string(fixture.join("expected_dataset.csv")).unwrap()
    );
}

#[test]
fn survey_cases_match_ehrql_on_both_evaluators() {
    // fixtures/definitions/cases/README.md: each case's expected files came from real ehrQL.
    let cases = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/definitions/cases");
    let mut dirs: Vec<_> = std::fs::read_dir(&cases).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    dirs.sort();
    assert!(dirs.len() >= 5);
    for case in dirs {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let args: Vec<String> =
            std::fs::read_to_string(case.join("args")).map(|a| a.lines().map(str::to_string).collect()).unwrap_or_default();
        for engine in ["reference", "columnar"] {
            let dir = tempfile::tempdir().unwrap();
            copy_dir(&case, dir.path());
            let mut command = Command::new(env!("CARGO_BIN_EXE_quarry"));
            command.current_dir(dir.path()).args(["generate-dataset", "definition.py", "--dummy-tables", "tables", "--output", "out:csv"]);
            command.args(["--engine", engine]);
            if !args.is_empty() {
                command.arg("--").args(&args);
            }
            let out = command.output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{name} ({engine}): {stderr}");
            for file in std::fs::read_dir(case.join("expected")).unwrap() {
                let file = file.unwrap();
                let got = std::fs::read_to_string(dir.path().join("out").join(file.file_name())).unwrap_or_default();
                assert_eq!(got, std::fs::read_to_string(file.path()).unwrap(), "{name} ({engine}): {:?}", file.file_name());
            }
            // What the definition printed or logged, without quarry's own progress lines and
            // its warning that only ehrql:v0 has what a pre-1.0 case imports.
            let printed: String = stderr
                .lines()
                .filter(|l| !l.starts_with("[info] ") && !l.contains("which only ehrQL's ehrql:v0 image has"))
                .map(|l| format!("{l}\n"))
                .collect();
            let expected = std::fs::read_to_string(case.join("expected_stderr.txt")).unwrap_or_default();
            assert_eq!(printed, expected, "{name} ({engine}): stderr");
        }
    }
}

/// `quarry exec ehrql:TAG` runs a definition as that image: ehrql:v1 (current ehrQL) has no
/// `ehrql.tables.beta` or `databuilder`, ehrql:v0 (ehrQL before 1.0) none of the 1.0 table
/// modules, nor `--test-data-file` or `debug`; the direct commands take both and warn when
/// only ehrql:v0 has what a definition imports.
#[test]
fn a_definition_sees_the_modules_of_the_image_it_runs_as() {
    let dir = project();
    let beta = "from ehrql import create_dataset\nfrom ehrql.tables.beta.core import patients\n".to_string() + DATASET;
    let databuilder = "from databuilder.ehrql import Dataset\nfrom databuilder.tables.beta.tpp import patients\ndataset = Dataset()\ndataset.define_population(patients.exists_for_patient())\n";
    let from_package =
        "from ehrql import create_dataset\nfrom ehrql.tables import beta\npatients = beta.core.patients\n".to_string() + DATASET;
    let current = PRELUDE.to_string() + DATASET;
    let mixed =
        "from ehrql import create_dataset\nfrom ehrql.tables.beta.tpp import clinical_events\nfrom ehrql.tables.core import patients\n"
            .to_string()
            + DATASET;
    let exec = |tag: &str, source: &str, extra: &[&str]| {
        std::fs::write(dir.path().join("definition.py"), source).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_quarry"))
            .current_dir(dir.path())
            .args(["exec", tag, "generate-dataset", "definition.py", "--output", "out/dataset.csv"])
            .args(extra)
            .output()
            .unwrap();
        let code = out.status.code().unwrap_or(-1);
        if code != 0 {
            assert!(!dir.path().join("out").exists(), "a failed run left output behind");
        }
        let _ = std::fs::remove_dir_all(dir.path().join("out"));
        (code, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let refused = |(code, stderr): (i32, String), message: &str| {
        assert_eq!(code, 10, "{stderr}");
        assert!(stderr.ends_with(&format!("{message}\n")), "{stderr}");
        assert!(stderr.contains("definition.py\", line ") && stderr.contains(", in <module>"), "{stderr}");
    };
    refused(exec("ehrql:v1", &beta, &[]), "ModuleNotFoundError: No module named 'ehrql.tables.beta'");
    refused(exec("ehrql:latest", &beta, &[]), "ModuleNotFoundError: No module named 'ehrql.tables.beta'");
    refused(exec("ehrql:v1", databuilder, &[]), "ModuleNotFoundError: No module named 'databuilder'");
    refused(exec("ehrql:v1", &from_package, &[]), "ImportError: cannot import name 'beta' from 'ehrql.tables' (unknown location)");
    refused(exec("ehrql:v0", &current, &[]), "ModuleNotFoundError: No module named 'ehrql.tables.core'");
    let by_importlib = "import importlib\n".to_string()
        + &beta.replace(
            "from ehrql.tables.beta.core import patients",
            "patients = importlib.import_module('ehrql.tables.beta.core').patients",
        );
    refused(exec("ehrql:v1", &by_importlib, &[]), "ModuleNotFoundError: No module named 'ehrql.tables.beta'");
    let parameter = "from ehrql import get_parameter\n".to_string() + &beta;
    refused(exec("ehrql:v0", &parameter, &[]), "ImportError: cannot import name 'get_parameter' from 'ehrql' (unknown location)");
    assert_eq!(exec("ehrql:v1", &parameter.replace("ehrql.tables.beta.core", "ehrql.tables.core"), &[]).0, 0);
    assert_eq!(exec("ehrql:v0", &beta, &[]).0, 0);
    // ehrQL v0's EMIS modules: re-exports of its core tables.
    let emis = beta.replace("ehrql.tables.beta.core import patients", "ehrql.tables.beta.emis import patients");
    assert_eq!(exec("ehrql:v0", &emis, &[]).0, 0);
    refused(exec("ehrql:v1", &emis, &[]), "ModuleNotFoundError: No module named 'ehrql.tables.beta'");
    assert_eq!(exec("ehrql:v0", databuilder, &[]).0, 0);
    assert_eq!(exec("ehrql:v1", &current, &[]).0, 0);
    std::fs::write(dir.path().join("test_definition.py"), "from definition import dataset\ntest_data = {}\n").unwrap();
    let (code, stderr) = exec("ehrql:v0", &beta, &["--test-data-file", "test_definition.py"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("ehrql:v0's generate-dataset has no --test-data-file"), "{stderr}");
    let out = Command::new(env!("CARGO_BIN_EXE_quarry"))
        .current_dir(dir.path())
        .args(["exec", "ehrql:v0", "debug", "definition.py"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ehrql:v0 has no debug command"), "{}", String::from_utf8_lossy(&out.stderr));

    // The direct commands run either image's definitions, and say when only ehrql:v0 would.
    let warning = "[warning] definition.py: imports ehrql.tables.beta.core, which only ehrQL's ehrql:v0 image has";
    let out = run(dir.path(), &beta);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains(warning), "{}", out.stderr);
    let out = run(dir.path(), &current);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stderr.contains("[warning]"), "{}", out.stderr);
    let out = run(dir.path(), &mixed);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "[warning] definition.py: imports ehrql.tables.beta.tpp, which only ehrQL's ehrql:v0 image has, and definition.py imports ehrql.tables.core, which it does not have: no ehrQL image has both"
        ),
        "{}",
        out.stderr
    );
}
