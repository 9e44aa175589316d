//! `--backend DIR` (Parquet/Arrow tables streamed in rounds of patients) gives the same bytes
//! (CSV, and Arrow or Parquet files) as reading the same tables into memory with
//! `--dummy-tables`, for every dataset definition
//! of the conformance suite that ehrQL accepts and for the seed study; and `--dummy-data-file`
//! follows ehrQL's rules.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::{case_args, pyarrow, suite};

const QUARRY: &str = env!("CARGO_BIN_EXE_quarry");

fn quarry(dir: &Path, args: &[&str]) -> std::process::Output {
    // Tiny partitions and rounds, so rounds split patients' tables at many places.
    Command::new(QUARRY).current_dir(dir).env("QUARRY_PARTITION_SIZE", "3").args(args).output().unwrap()
}

/// Tables for `definition` written by create-dummy-tables in `format`.
fn tables(dir: &Path, definition: &str, format: &str, extra: &[String]) -> PathBuf {
    let out_dir = std::env::temp_dir().join(format!("quarry-backend-{}-{format}", std::process::id()));
    let target = out_dir.join(dir.file_name().unwrap());
    let _ = std::fs::remove_dir_all(&target);
    let spec = format!("{}:{format}", target.display());
    let mut args = vec!["create-dummy-tables", definition, &spec, "--population-size", "40"];
    args.extend(extra.iter().map(String::as_str));
    let out = quarry(dir, &args);
    assert!(out.status.success(), "{}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
    target
}

#[test]
fn backends_give_the_same_bytes_as_in_memory_tables() {
    let root = suite();
    let manifest = std::fs::read_to_string(root.join("MANIFEST.tsv")).unwrap();
    let mut checked = 0;
    for line in manifest.lines().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        let (id, features, kind, code) = (f[0], f[2], f[3], f[4]);
        if code != "0" || kind != "dataset" || features.contains("generate-measures") {
            continue;
        }
        let dir = root.join("cases").join(id);
        let args = case_args(&dir);
        let csv = tables(&dir, "definition.py", "csv", &args);
        let reference = {
            let mut a = vec!["generate-dataset", "definition.py", "--dummy-tables", csv.to_str().unwrap()];
            a.extend(args.iter().map(String::as_str));
            quarry(&dir, &a)
        };
        assert!(reference.status.success(), "{id}: {}", String::from_utf8_lossy(&reference.stderr));
        for format in ["parquet", "arrow"] {
            let backend = tables(&dir, "definition.py", format, &args);
            let mut a = vec!["generate-dataset", "definition.py", "--backend", backend.to_str().unwrap()];
            a.extend(args.iter().map(String::as_str));
            let out = quarry(&dir, &a);
            assert!(out.status.success(), "{id} ({format}): {}", String::from_utf8_lossy(&out.stderr));
            assert!(out.stdout == reference.stdout, "{id} ({format}): --backend differs from --dummy-tables");
            // Typed output files too (the backend's stream writes the engine's typed columns,
            // the in-memory path rows of values): the same bytes, in one format per case — or
            // the same error (an int a float column cannot hold exactly, as pyarrow refuses).
            if format == ["parquet", "arrow"][checked % 2] {
                let file = |how: &str, tables: &Path| -> Result<Vec<u8>, String> {
                    let path = std::env::temp_dir().join(format!("quarry-backend-{}-out-{how}.{format}", std::process::id()));
                    let mut a =
                        vec!["generate-dataset", "definition.py", how, tables.to_str().unwrap(), "--output", path.to_str().unwrap()];
                    a.extend(args.iter().map(String::as_str));
                    let out = quarry(&dir, &a);
                    if !out.status.success() {
                        assert!(!path.exists(), "{id}: a failed run left {}", path.display());
                        let stderr = String::from_utf8_lossy(&out.stderr);
                        let error = stderr.lines().find(|l| l.starts_with("error:")).unwrap_or_default();
                        return Err(error.replacen(path.to_str().unwrap(), "OUT", 1));
                    }
                    let bytes = std::fs::read(&path).unwrap();
                    std::fs::remove_file(&path).unwrap();
                    Ok(bytes)
                };
                let (streamed, in_memory) = (file("--backend", &backend), file("--dummy-tables", &csv));
                if let (Err(a), Err(b)) = (&streamed, &in_memory) {
                    assert_eq!(a, b, "{id}: --backend and --dummy-tables fail differently");
                }
                assert!(streamed == in_memory, "{id}: --backend's {format} output differs: {:?}", (streamed.err(), in_memory.err()));
            }
        }
        checked += 1;
    }
    assert!(checked > 150, "checked {checked} definitions");
}

#[test]
fn a_missing_backend_table_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let vte = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/projects/vte");
    let out = quarry(
        &vte,
        &[
            "generate-dataset",
            "analysis/dataset_definition.py",
            "--backend",
            tmp.path().to_str().unwrap(),
            "--output",
            tmp.path().join("o.csv").to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(11), "{stderr}");
    assert!(stderr.contains("Missing table: patients") && stderr.contains("docs/backend.md"), "{stderr}");
    assert!(!tmp.path().join("o.csv").exists());
}

/// `d.py`: every patient, with these `dataset.<name> = <expression>` variables.
fn patients_definition(dir: &Path, variables: &[&str]) {
    let mut text = String::from(
        "from ehrql import create_dataset\nfrom ehrql.tables.core import patients\ndataset = create_dataset()\ndataset.define_population(patients.exists_for_patient())\n",
    );
    for v in variables {
        text.push_str(&format!("dataset.{v}\n"));
    }
    std::fs::write(dir.join("d.py"), text).unwrap();
}

#[test]
fn dummy_data_files_are_validated_and_copied() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    patients_definition(dir, &["sex = patients.sex", "dob = patients.date_of_birth"]);
    // Rows are copied in the file's order; extra columns are ignored.
    std::fs::write(dir.join("good.csv"), "patient_id,dob,sex,extra\n3,1980-01-01,male,x\n1,,female,y\n").unwrap();
    let out = quarry(dir, &["generate-dataset", "d.py", "--dummy-data-file", "good.csv"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "patient_id,sex,dob\r\n3,male,1980-01-01\r\n1,female,\r\n");
    for (text, want) in [
        ("patient_id,sex\n1,male\n", "Missing columns: dob"),
        (
            "patient_id,sex,dob\n1,man,1980-01-01\n",
            "row 1: column 'sex': 'man' not in valid categories: 'female', 'male', 'intersex', 'unknown'",
        ),
        ("patient_id,sex,dob\n,male,1980-01-01\n", "row 1: NULL value in non-nullable column 'patient_id'"),
        ("patient_id,sex,dob\n1,male,1980-13-01\n", "row 1: column 'dob'"),
    ] {
        std::fs::write(dir.join("bad.csv"), text).unwrap();
        let out = quarry(dir, &["generate-dataset", "d.py", "--dummy-data-file", "bad.csv", "--output", "out.csv"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(11), "{text}: {stderr}");
        assert!(stderr.contains(want), "{text}: want {want:?} in {stderr}");
        assert!(!dir.join("out.csv").exists());
    }
}

#[test]
fn an_unsorted_parquet_table_is_sorted_and_an_unsorted_arrow_table_is_reported_with_its_row() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // A patients table whose rows are out of patient_id order, written by quarry itself
    // (--dummy-data-file copies rows in the file's order).
    patients_definition(dir, &["date_of_birth = patients.date_of_birth", "sex = patients.sex"]);
    std::fs::write(dir.join("rows.csv"), "patient_id,date_of_birth,sex\n1,1980-01-01,male\n5,1990-01-01,female\n2,1970-01-01,male\n")
        .unwrap();
    std::fs::create_dir(dir.join("backend")).unwrap();
    let out = quarry(dir, &["generate-dataset", "d.py", "--dummy-data-file", "rows.csv", "--output", "backend/patients.parquet"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Parquet: quarry partitions it by patient itself (docs/backend.md, "Layouts").
    let out = quarry(dir, &["generate-dataset", "d.py", "--backend", "backend", "--output", "o.csv"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("patients is not sorted by patient_id: partitioning its 3 rows"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(dir.join("o.csv")).unwrap(),
        "patient_id,date_of_birth,sex\r\n1,1980-01-01,male\r\n2,1970-01-01,male\r\n5,1990-01-01,female\r\n"
    );
    // Arrow IPC files are read as they are.
    std::fs::remove_dir_all(dir.join("backend")).unwrap();
    std::fs::create_dir(dir.join("backend")).unwrap();
    let out = quarry(dir, &["generate-dataset", "d.py", "--dummy-data-file", "rows.csv", "--output", "backend/patients.arrow"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = quarry(dir, &["generate-dataset", "d.py", "--backend", "backend", "--output", "o2.csv"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(11), "{stderr}");
    assert!(stderr.contains("patients.arrow, row 3: patient_id 2 follows 5; backend tables must be sorted by patient_id"), "{stderr}");
    assert!(!dir.join("o2.csv").exists(), "no partial output");
}

/// The seed definitions on a make-backend backend with small row groups: the filters pushed
/// into the scan (and the population's candidates) give the same bytes as reading every row
/// (`QUARRY_PUSHDOWN=0`), whether the filtered rows are held or streamed (`QUARRY_HELD_ROWS`).
#[test]
fn pushed_filters_give_the_same_rows_as_reading_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let backend = tmp.path().join("backend");
    let vte = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/projects/vte");
    let out = Command::new(QUARRY)
        .env("QUARRY_PARQUET_ROW_GROUP_ROWS", "4000")
        .args(["make-backend", "--patients", "3000", "--seed", "5", "--out", backend.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A definition with an event table and conditions of every pushed kind, beside the seed's.
    std::fs::write(
        tmp.path().join("events.py"),
        "from ehrql import claim_permissions, create_dataset, codelist_from_csv\n\
         claim_permissions('event_level_data')\n\
         from ehrql.tables.tpp import clinical_events, patients\n\
         codes = codelist_from_csv('codelists/opensafely-venous-thromboembolic-disease.csv', column='CTV3Code')\n\
         dataset = create_dataset()\n\
         e = clinical_events.where(~clinical_events.ctv3_code.is_in(codes).is_null() & (clinical_events.ctv3_code.is_in(codes) | (clinical_events.date < '1990-01-01')) & (clinical_events.numeric_value.is_null() | (clinical_events.numeric_value != 3.0)))\n\
         dataset.define_population(e.exists_for_patient() & (patients.sex != 'unknown'))\n\
         dataset.n = e.count_for_patient()\n\
         dataset.add_event_table('events', date=e.date, code=e.ctv3_code, value=e.numeric_value)\n",
    )
    .unwrap();
    std::fs::create_dir_all(tmp.path().join("codelists")).unwrap();
    std::fs::copy(
        vte.join("codelists/opensafely-venous-thromboembolic-disease.csv"),
        tmp.path().join("codelists/opensafely-venous-thromboembolic-disease.csv"),
    )
    .unwrap();
    for (dir, def) in [
        (vte.as_path(), "analysis/dataset_definition_v1.py"),
        (vte.as_path(), "analysis/dataset_definition_pivoted.py"),
        (tmp.path(), "events.py"),
    ] {
        let run = |env: &[(&str, &str)], name: &str| {
            // Event tables go to a directory (`DIR:csv`), a plain dataset to one file.
            let events = def == "events.py";
            let out_path = tmp.path().join(if events { name.to_string() } else { format!("{name}.csv") });
            let target = if events { format!("{}:csv", out_path.display()) } else { out_path.display().to_string() };
            let mut c = Command::new(QUARRY);
            c.current_dir(dir).envs(env.iter().copied()).args([
                "generate-dataset",
                def,
                "--backend",
                backend.to_str().unwrap(),
                "--output",
                &target,
            ]);
            let o = c.output().unwrap();
            assert!(o.status.success(), "{def} {env:?}: {}", String::from_utf8_lossy(&o.stderr));
            if events {
                let mut files: Vec<PathBuf> = std::fs::read_dir(&out_path).unwrap().map(|e| e.unwrap().path()).collect();
                files.sort();
                files
                    .iter()
                    .map(|p| format!("{}\n{}", p.file_name().unwrap().to_string_lossy(), std::fs::read_to_string(p).unwrap()))
                    .collect::<String>()
            } else {
                std::fs::read_to_string(&out_path).unwrap()
            }
        };
        let everything = run(&[("QUARRY_PUSHDOWN", "0")], "all");
        let pushed = run(&[], "pushed");
        let streamed = run(&[("QUARRY_HELD_ROWS", "50")], "streamed");
        assert!(everything.lines().count() > 20, "{def}: a population to compare:\n{everything}");
        assert_eq!(pushed, everything, "{def}: pushed filters");
        assert_eq!(streamed, everything, "{def}: pushed filters, streamed");
    }
}

/// An unsorted table whose scan is filtered: sorted by quarry first, then filtered, with the
/// population's rows in patient order.
#[test]
fn an_unsorted_filtered_table_gives_its_patients_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(
        dir.join("rows.py"),
        "from ehrql import create_dataset\nfrom ehrql.tables.core import clinical_events\ndataset = create_dataset()\n\
         dataset.define_population(clinical_events.exists_for_patient())\n\
         dataset.date = clinical_events.sort_by(clinical_events.date).first_for_patient().date\n\
         dataset.snomedct_code = clinical_events.sort_by(clinical_events.date).first_for_patient().snomedct_code\n",
    )
    .unwrap();
    // Row 2 (dropped by the filter) is out of order; row 4 is out of order among the kept.
    std::fs::write(
        dir.join("rows.csv"),
        "patient_id,date,snomedct_code\n1,2020-01-01,271649006\n9,2020-01-01,999999999\n3,2020-01-01,271649006\n2,2020-01-01,271649006\n",
    )
    .unwrap();
    std::fs::create_dir(dir.join("backend")).unwrap();
    let out = quarry(dir, &["generate-dataset", "rows.py", "--dummy-data-file", "rows.csv", "--output", "backend/clinical_events.parquet"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(
        dir.join("d.py"),
        "from ehrql import create_dataset\nfrom ehrql.tables.core import clinical_events\ndataset = create_dataset()\n\
         dataset.define_population(clinical_events.where(clinical_events.snomedct_code == '271649006').exists_for_patient())\n",
    )
    .unwrap();
    let out = quarry(dir, &["generate-dataset", "d.py", "--backend", "backend", "--output", "o.csv"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(std::fs::read_to_string(dir.join("o.csv")).unwrap(), "patient_id\r\n1\r\n2\r\n3\r\n");
}

/// A Parquet backend as other tools write it: snappy-compressed (pyarrow's and Spark's
/// default), several row groups, and a text column of mostly distinct values (its dictionary
/// pages fall back to plain ones). The pushed filter finds the right rows. Needs pyarrow
/// (`ARROW_PYTHON`, which `.ci/run` provides); without it the test says it skipped.
#[test]
fn a_snappy_backend_with_distinct_codes_is_filtered_right() {
    let Some(python) = pyarrow() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir(dir.join("backend")).unwrap();
    let script = "import pyarrow as pa, pyarrow.parquet as pq\n\
                  n = 400000\n\
                  ids = [i // 4 + 1 for i in range(n)]\n\
                  codes = ['%018d' % (i * 7919 % 10**12 + 10**17) for i in range(n)]\n\
                  pq.write_table(pa.table({'patient_id': pa.array(ids, pa.int64()), 'date': pa.array([None] * n, pa.date32()), 'snomedct_code': pa.array(codes)}), 'backend/clinical_events.parquet', row_group_size=150000, compression='snappy')\n";
    let out = Command::new(&python).current_dir(dir).args(["-c", script]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(
        dir.join("d.py"),
        "from ehrql import create_dataset\nfrom ehrql.tables.core import clinical_events\ndataset = create_dataset()\n\
         e = clinical_events.where(clinical_events.snomedct_code.is_in(['100000000000007919', '100000000000015838', '100000000791900000']))\n\
         dataset.define_population(e.exists_for_patient())\n\
         dataset.n = e.count_for_patient()\n\
         dataset.last = e.sort_by(e.snomedct_code).last_for_patient().snomedct_code\n",
    )
    .unwrap();
    let out = quarry(dir, &["generate-dataset", "d.py", "--backend", "backend"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Patient 1 has rows 0–3 (codes ending 0, 7919, 15838, 23757); patient 25001 rows
    // 100000–100003, the first ending 791900000. Held rows keep the column chunk's whole
    // dictionary, so reading them converts only the values used.
    assert_eq!(String::from_utf8_lossy(&out.stdout), "patient_id,n,last\r\n1,2,100000000000015838\r\n25001,1,100000000791900000\r\n");
}

/// A date beyond ehrQL's years (1–9999) in a backend file is a named error, not a crash.
#[test]
fn a_date_out_of_range_is_reported() {
    let Some(python) = pyarrow() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir(dir.join("backend")).unwrap();
    let script = "import pyarrow as pa, pyarrow.parquet as pq\n\
                  pq.write_table(pa.table({'patient_id': pa.array([1, 2], pa.int64()), 'date_of_birth': pa.array([0, 3000000], pa.date32())}), 'backend/patients.parquet')\n";
    let out = Command::new(&python).current_dir(dir).args(["-c", script]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    patients_definition(dir, &["dob = patients.date_of_birth"]);
    let out = quarry(dir, &["generate-dataset", "d.py", "--backend", "backend", "--output", "o.csv"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(11), "{stderr}");
    assert!(
        stderr.contains("patients.parquet") && stderr.contains("the date 3000000 days from 1970-01-01 is outside years 1–9999"),
        "{stderr}"
    );
    assert!(!dir.join("o.csv").exists());
}
