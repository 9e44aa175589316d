//! Backends as users have them (docs/backend.md, "Layouts"): a make-backend backend rewritten
//! with pyarrow as unsorted files and as unsorted directories of part files (one part with its
//! columns in another order, a `_SUCCESS` marker) gives the bytes of the sorted single files,
//! for the seed definitions and a measures definition; the sorted copy quarry makes is reused;
//! mismatched parts are named. And `generate-measures --backend` gives the bytes of
//! `--dummy-tables` over the same tables, for the conformance suite's measures definitions.
//! The pyarrow tests need `ARROW_PYTHON` (which `.ci/run` provides) and say when they skip.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::{case_args, pyarrow, suite};

const QUARRY: &str = env!("CARGO_BIN_EXE_quarry");

fn vte() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/projects/vte")
}

fn run_py(python: &str, script: &str, args: &[&Path]) {
    let out = Command::new(python).arg("-c").arg(script).args(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Rewrites every table of `src` shuffled, into `shuffled/<table>.parquet` (row groups of 700
/// rows) and into `parts/<table>/part-000k.parquet` (three parts, the second with its columns
/// reversed, plus `_SUCCESS`).
const RESHUFFLE: &str = r#"
import glob, os, random, sys
import pyarrow as pa, pyarrow.parquet as pq
src, shuffled, parts = sys.argv[1:4]
for f in sorted(glob.glob(os.path.join(src, "*.parquet"))):
    name = os.path.basename(f)[:-len(".parquet")]
    t = pq.read_table(f)
    order = list(range(t.num_rows))
    random.Random(7).shuffle(order)
    s = t.take(pa.array(order, type=pa.int64()))
    os.makedirs(shuffled, exist_ok=True)
    pq.write_table(s, os.path.join(shuffled, name + ".parquet"), row_group_size=700)
    d = os.path.join(parts, name)
    os.makedirs(d, exist_ok=True)
    n = s.num_rows
    for i in range(3):
        part = s.slice(i * n // 3, (i + 1) * n // 3 - i * n // 3)
        if i == 1:
            part = part.select(list(reversed(part.column_names)))
        pq.write_table(part, os.path.join(d, f"part-{i:04d}.parquet"), row_group_size=500)
    open(os.path.join(d, "_SUCCESS"), "w").close()
"#;

fn generate(kind: &str, def: &str, backend: &Path, out: &Path, cache: &Path) -> String {
    let o = Command::new(QUARRY)
        .current_dir(vte())
        .env("QUARRY_BACKEND_CACHE", cache)
        .env("QUARRY_SORT_RANGE_ROWS", "5000")
        .env("QUARRY_PARTITION_SIZE", "50")
        .args([kind, def, "--backend", backend.to_str().unwrap(), "--output", out.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{def} on {}: {stderr}", backend.display());
    stderr
}

#[test]
fn unsorted_tables_and_part_directories_give_the_bytes_of_sorted_files() {
    let Some(python) = pyarrow() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (sorted, shuffled, parts, cache) =
        (tmp.path().join("sorted"), tmp.path().join("shuffled"), tmp.path().join("parts"), tmp.path().join("cache"));
    let out = Command::new(QUARRY)
        .args(["make-backend", "--patients", "3000", "--seed", "3", "--out", sorted.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    run_py(&python, RESHUFFLE, &[&sorted, &shuffled, &parts]);
    let measures = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/definitions/measures.py");
    for (kind, def) in [
        ("generate-dataset", "analysis/dataset_definition_v1.py".to_string()),
        ("generate-dataset", "analysis/dataset_definition_pivoted.py".to_string()),
        ("generate-dataset", Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/definitions/whole_table.py").display().to_string()),
        ("generate-measures", measures.display().to_string()),
    ] {
        let bytes = |backend: &Path, name: &str| {
            let out = tmp.path().join(format!("{name}.csv"));
            let log = generate(kind, &def, backend, &out, &cache);
            (std::fs::read(&out).unwrap(), log)
        };
        let (want, _) = bytes(&sorted, "sorted");
        assert!(want.iter().filter(|&&b| b == b'\n').count() > 5, "{def}: some rows to compare");
        for (backend, name) in [(&shuffled, "shuffled"), (&parts, "parts")] {
            let (got, log) = bytes(backend, name);
            assert!(got == want, "{def} on {name} differs from the sorted backend\n{log}");
        }
    }
    // The sorted copies were made (in several ranges) and are reused while the files stay.
    let (_, log) = {
        let out = tmp.path().join("again.csv");
        let log = generate("generate-dataset", "analysis/dataset_definition_v1.py", &parts, &out, &cache);
        (std::fs::read(&out).unwrap(), log)
    };
    assert!(!log.contains("partitioning"), "the sorted copy is reused:\n{log}");
    // A changed file is partitioned again.
    let events = parts.join("clinical_events/part-0002.parquet");
    let text = std::fs::read(&events).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&events, text).unwrap();
    let out = tmp.path().join("changed.csv");
    let log = generate("generate-dataset", "analysis/dataset_definition_v1.py", &parts, &out, &cache);
    assert!(log.contains("clinical_events is not sorted by patient_id: partitioning"), "{log}");
    assert!(log.contains("sorted parts in"), "{log}");
    // Measures over a backend equal measures over the same files read into memory.
    let out = tmp.path().join("memory.csv");
    let o = Command::new(QUARRY)
        .current_dir(vte())
        .args(["generate-measures", measures.to_str().unwrap(), "--dummy-tables", sorted.to_str().unwrap(), "--output"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let backend_out = tmp.path().join("backend.csv");
    generate("generate-measures", measures.to_str().unwrap(), &parts, &backend_out, &cache);
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&backend_out).unwrap(), "--backend and --dummy-tables differ");
}

#[test]
fn mismatched_part_files_are_named_with_the_column() {
    let Some(python) = pyarrow() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let backend = tmp.path().join("backend");
    run_py(
        &python,
        r#"
import os, sys
import pyarrow as pa, pyarrow.parquet as pq
d = os.path.join(sys.argv[1], "patients")
os.makedirs(d)
pq.write_table(pa.table({"patient_id": [1, 2], "sex": ["male", "female"], "date_of_birth": pa.array([0, 1], pa.date32())}), os.path.join(d, "part-0.parquet"))
pq.write_table(pa.table({"patient_id": [3], "sex": ["male"], "date_of_birth": pa.array(["1990-01-01"])}), os.path.join(d, "part-1.parquet"))
"#,
        &[&backend],
    );
    std::fs::write(
        tmp.path().join("d.py"),
        "from ehrql import create_dataset\nfrom ehrql.tables.core import patients\ndataset = create_dataset()\n\
         dataset.define_population(patients.exists_for_patient())\ndataset.dob = patients.date_of_birth\n",
    )
    .unwrap();
    let refused = || {
        let o = Command::new(QUARRY)
            .current_dir(tmp.path())
            .args(["generate-dataset", "d.py", "--backend", "backend", "--output", "o.csv"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(11), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let stderr = refused();
    assert!(stderr.contains("part-1.parquet: column 'date_of_birth' is Utf8 here but Date32 in"), "{stderr}");
    // An empty directory is named too.
    std::fs::remove_dir_all(backend.join("patients")).unwrap();
    std::fs::create_dir_all(backend.join("patients")).unwrap();
    let stderr = refused();
    assert!(stderr.contains("patients/ holds no .parquet part files"), "{stderr}");
}

/// Every measures definition of the conformance suite that ehrQL accepts: tables written by
/// create-dummy-tables as CSV and as Parquet, `--dummy-tables` (CSV) against `--backend`
/// (Parquet), byte for byte.
#[test]
fn measures_on_a_backend_give_the_bytes_of_dummy_tables() {
    let root = suite();
    let manifest = std::fs::read_to_string(root.join("MANIFEST.tsv")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for line in manifest.lines().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        let (id, kind, code) = (f[0], f[3], f[4]);
        if code != "0" || kind != "measures" {
            continue;
        }
        let dir = root.join("cases").join(id);
        let args = case_args(&dir);
        let run = |a: &[&str]| {
            let mut all: Vec<&str> = a.to_vec();
            all.extend(args.iter().map(String::as_str));
            let o = Command::new(QUARRY).current_dir(&dir).env("QUARRY_PARTITION_SIZE", "3").args(&all).output().unwrap();
            assert!(o.status.success(), "{id} {a:?}: {}", String::from_utf8_lossy(&o.stderr));
            o.stdout
        };
        let name = id.replace('/', "_");
        let csv = tmp.path().join(format!("{name}-csv"));
        let parquet = tmp.path().join(format!("{name}-parquet"));
        // Some definitions' populations are beyond the generator (an int denominator that
        // counts events in the interval): those are left to the other tests.
        let made = [(&csv, "csv"), (&parquet, "parquet")].iter().all(|(target, format)| {
            Command::new(QUARRY)
                .current_dir(&dir)
                .args(["create-dummy-tables", "definition.py", &format!("{}:{format}", target.display()), "--population-size", "60"])
                .args(&args)
                .output()
                .unwrap()
                .status
                .success()
        });
        if !made {
            continue;
        }
        let want = run(&["generate-measures", "definition.py", "--dummy-tables", csv.to_str().unwrap()]);
        let got = run(&["generate-measures", "definition.py", "--backend", parquet.to_str().unwrap()]);
        assert!(
            got == want,
            "{id}: --backend differs from --dummy-tables\n{}\n---\n{}",
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want)
        );
        checked += 1;
    }
    assert!(checked >= 4, "checked {checked} measures definitions");
}
