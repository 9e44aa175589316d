//! Property test comparing the evaluators (issue 5): random valid dataset definitions over
//! random tables must give byte-identical output on the reference evaluator and on the
//! columnar one, with tiny partitions (`QUARRY_PARTITION_SIZE`) so that patients fall on every
//! side of a partition boundary.
//!
//! Each case draws a definition from a grammar of typed expressions — aggregations, sorted
//! picks with ties, date arithmetic, patient-level values broadcast into event-level filters,
//! case, boolean logic with NULLs, sets; in most cases event tables from sorted frames, whose
//! rows must come in the same order — and tables from `create-dummy-tables` (whose
//! background rows give every variable matches, non-matches and NULLs), then perturbs them
//! with extra patients who have no rows at all. The same tables as a Parquet backend (small
//! row groups) must give the same bytes through `--backend`, whose scan pushes filters down
//! and reads only the population's candidates. Every output table is compared.

use std::path::Path;
use std::process::Command;

mod common;

const QUARRY: &str = env!("CARGO_BIN_EXE_quarry");
const CASES: u64 = 80;

use common::Rng;

trait Dates {
    fn date(&mut self) -> String;
}

impl Dates for Rng {
    fn date(&mut self) -> String {
        format!("{}-{:02}-{:02}", 2000 + self.below(24), 1 + self.below(12), 1 + self.below(28))
    }
}

const E: &str = "clinical_events";
const CODES: [&str; 4] = ["123456", "234567", "345678", "456789"];

fn codes(rng: &mut Rng) -> String {
    let n = 1 + rng.below(3) as usize;
    (0..n).map(|i| format!("\"{}\"", CODES[(rng.below(4) as usize + i) % 4])).collect::<Vec<_>>().join(", ")
}

/// An event-level boolean condition on `clinical_events`, sometimes mixing in patient-level
/// values (broadcast to each row).
fn event_condition(rng: &mut Rng, depth: u32) -> String {
    match rng.below(if depth == 0 { 5 } else { 7 }) {
        0 => format!("{E}.snomedct_code.is_in([{}])", codes(rng)),
        1 => format!("{E}.date.is_on_or_after(\"{}\")", rng.date()),
        2 => format!("({E}.numeric_value > {})", rng.below(40)),
        3 => format!("(({E}.date - patients.date_of_birth).years >= {})", rng.below(80)),
        4 => format!("{E}.date.is_on_or_between(patients.date_of_birth + years({}), \"{}\")", rng.below(60), rng.date()),
        5 => format!("({} & {})", event_condition(rng, depth - 1), event_condition(rng, depth - 1)),
        _ => format!("({} | ~{})", event_condition(rng, depth - 1), event_condition(rng, depth - 1)),
    }
}

fn frame(rng: &mut Rng) -> String {
    match rng.below(3) {
        0 => E.to_string(),
        _ => format!("{E}.where({})", event_condition(rng, 2)),
    }
}

fn int(rng: &mut Rng, depth: u32) -> String {
    match rng.below(if depth == 0 { 7 } else { 10 }) {
        0 => format!("{}.count_for_patient()", frame(rng)),
        1 => format!("{}.snomedct_code.count_distinct_for_patient()", frame(rng)),
        2 => format!("{}.date.count_episodes_for_patient(days({}))", frame(rng), rng.below(400)),
        3 => format!("patients.age_on(\"{}\")", rng.date()),
        4 => "patients.date_of_birth.year".into(),
        5 => format!("({}.date.maximum_for_patient() - patients.date_of_birth).years", frame(rng)),
        6 => "practice_registrations.for_patient_on(\"2020-01-01\").practice_pseudo_id".into(),
        7 => format!("({} // {})", int(rng, depth - 1), int(rng, depth - 1)),
        8 => format!("({} - {})", int(rng, depth - 1), int(rng, depth - 1)),
        _ => format!("maximum_of({}, {})", int(rng, depth - 1), int(rng, depth - 1)),
    }
}

fn float(rng: &mut Rng, depth: u32) -> String {
    match rng.below(if depth == 0 { 4 } else { 6 }) {
        0 => format!("{}.numeric_value.mean_for_patient()", frame(rng)),
        1 => format!("{}.numeric_value.sum_for_patient()", frame(rng)),
        2 => format!("{}.numeric_value.maximum_for_patient()", frame(rng)),
        3 => format!("{E}.sort_by({E}.date).last_for_patient().numeric_value"),
        4 => format!("({} / {}.as_float())", float(rng, depth - 1), int(rng, depth - 1)),
        _ => format!("({} + {}.5)", float(rng, depth - 1), rng.below(10)),
    }
}

fn date(rng: &mut Rng, depth: u32) -> String {
    match rng.below(if depth == 0 { 5 } else { 7 }) {
        0 => format!("{}.date.minimum_for_patient()", frame(rng)),
        1 => format!("{}.sort_by({E}.date, {E}.numeric_value).first_for_patient().date", frame(rng)),
        2 => format!("(patients.date_of_birth + days({}))", rng.below(20000)),
        3 => format!("(patients.date_of_birth + months({}))", rng.below(900)),
        4 => "patients.date_of_death".into(),
        5 => format!("({} + years({})).to_first_of_month()", date(rng, depth - 1), rng.below(30)),
        _ => format!("minimum_of({}, {})", date(rng, depth - 1), date(rng, depth - 1)),
    }
}

fn boolean(rng: &mut Rng, depth: u32) -> String {
    match rng.below(if depth == 0 { 6 } else { 9 }) {
        0 => format!("{}.exists_for_patient()", frame(rng)),
        1 => "patients.sex.is_in([\"female\", \"intersex\"])".into(),
        2 => format!("({} > {})", int(rng, 0), rng.below(50)),
        3 => format!("{}.is_before(\"{}\")", date(rng, 0), rng.date()),
        4 => "patients.date_of_death.is_null()".into(),
        5 => format!("medications.where(medications.date.is_after(\"{}\")).exists_for_patient()", rng.date()),
        6 => format!("({} & {})", boolean(rng, depth - 1), boolean(rng, depth - 1)),
        7 => format!("({} | {})", boolean(rng, depth - 1), boolean(rng, depth - 1)),
        _ => format!("(~{}).when_null_then(False)", boolean(rng, depth - 1)),
    }
}

fn text(rng: &mut Rng) -> String {
    match rng.below(3) {
        0 => format!("{}.sort_by({E}.date).first_for_patient().snomedct_code", frame(rng)),
        1 => "patients.sex".into(),
        _ => {
            let age = int(rng, 0);
            format!("case(when({age} < {}).then(\"low\"), when({}).then(\"flag\"), otherwise=\"other\")", rng.below(60), boolean(rng, 1))
        }
    }
}

fn definition(rng: &mut Rng) -> String {
    let mut out = String::from(
        "from ehrql import create_dataset, case, when, days, months, years, minimum_of, maximum_of\n\
         from ehrql.tables.core import patients, clinical_events, medications, practice_registrations\n\
         dataset = create_dataset()\n",
    );
    let population = match rng.below(4) {
        0 => "patients.exists_for_patient()".to_string(),
        1 => format!("patients.exists_for_patient() & {}", boolean(rng, 1)),
        // Only patients with certain rows (a backend reads just those patients).
        2 => format!("medications.where(medications.date.is_after(\"{}\")).exists_for_patient()", rng.date()),
        _ => format!(
            "{}.exists_for_patient() | medications.where(medications.date.is_after(\"{}\")).exists_for_patient()",
            frame(rng),
            rng.date()
        ),
    };
    out.push_str(&format!("dataset.define_population({population})\n"));
    for v in 0..8 {
        let expr = match rng.below(5) {
            0 => int(rng, 2),
            1 => float(rng, 2),
            2 => date(rng, 2),
            3 => boolean(rng, 2),
            _ => text(rng),
        };
        out.push_str(&format!("dataset.v{v} = {expr}\n"));
    }
    out
}

/// Event tables from sorted frames, on their own random stream (the rest of the definition
/// stays as it was): sorts by one or two keys with ties and NULLs, filters before or after the
/// sort or none, a second sort, the same rows sorted another way, columns that are functions
/// of the frame's, case, a patient-level column, and sometimes a pick from the frame (whose
/// tie-break sorts order the table's ties too). ehrQL lists each table's rows in its first
/// event-level column's order.
fn event_tables(rng: &mut Rng) -> String {
    let mut out = String::from("from ehrql import claim_permissions\nclaim_permissions(\"event_level_data\")\n");
    for t in 0..1 + rng.below(2) {
        let f = format!("f{t}");
        let filtered = rng.chance(0.5);
        out.push_str(&format!("{f} = {}\n", if filtered { frame(rng) } else { E.to_string() }));
        let key = |rng: &mut Rng, x: &str| match rng.below(6) {
            0 => format!("{x}.date"),
            1 => format!("{x}.numeric_value"),
            2 => format!("{x}.snomedct_code"),
            3 => format!("-{x}.numeric_value"),
            4 => format!("({x}.date - patients.date_of_birth).days"),
            _ => format!("{E}.date"),
        };
        let keys: Vec<String> = (0..1 + rng.below(2)).map(|_| key(rng, &f)).collect();
        let s = format!("s{t}");
        out.push_str(&format!("{s} = {f}.sort_by({})\n", keys.join(", ")));
        if rng.chance(0.3) {
            out.push_str(&format!("{s} = {s}.where({s}.numeric_value > {})\n", rng.below(30)));
        }
        if rng.chance(0.3) {
            out.push_str(&format!("{s} = {s}.sort_by({})\n", key(rng, &s)));
        }
        let o = format!("o{t}");
        out.push_str(&format!("{o} = {s}.sort_by({})\n", key(rng, &s)));
        if rng.chance(0.4) {
            let (position, column) = (rng.pick(&["first", "last"]), rng.pick(&["date", "numeric_value", "snomedct_code"]));
            out.push_str(&format!("dataset.p{t} = {}.{position}_for_patient().{column}\n", rng.pick(&[&s, &o])));
        }
        let event_column = |rng: &mut Rng| {
            let x = rng.pick(&[&s, &o]).to_string();
            match rng.below(7) {
                0 => format!("{x}.date"),
                1 => format!("{x}.numeric_value"),
                2 => format!("{x}.snomedct_code"),
                3 => format!("{x}.date + days({})", rng.below(30)),
                4 => format!("({x}.numeric_value * 2.0 + {}.numeric_value)", rng.pick(&[&s, &o])),
                5 => format!("({x}.date - patients.date_of_birth).years"),
                _ => format!(
                    "case(when({x}.numeric_value > {}).then({}.date), otherwise={}.date)",
                    rng.below(30),
                    rng.pick(&[&s, &o]),
                    rng.pick(&[&s, &o])
                ),
            }
        };
        let mut columns = vec![event_column(rng)];
        for _ in 0..1 + rng.below(3) {
            columns.push(match rng.below(4) {
                0 => "patients.sex".into(),
                1 => format!("{s}.count_for_patient()"),
                _ => event_column(rng),
            });
        }
        let columns: Vec<String> = columns.iter().enumerate().map(|(i, c)| format!("c{i}={c}")).collect();
        out.push_str(&format!("dataset.add_event_table(\"e{t}\", {})\n", columns.join(", ")));
    }
    out
}

fn quarry(dir: &Path, args: &[&str], partition: &str) -> std::process::Output {
    Command::new(QUARRY).current_dir(dir).env("QUARRY_PARTITION_SIZE", partition).args(args).output().unwrap()
}

/// `generate-dataset definition.py` with `args`, every table written to `dir/tag/` as CSV.
fn generate(dir: &Path, tag: &str, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let output = format!("{tag}:csv");
    Command::new(QUARRY)
        .current_dir(dir)
        .envs(env.iter().copied())
        .args(["generate-dataset", "definition.py", "--output", &output])
        .args(args)
        .output()
        .unwrap()
}

/// How the tables in `dir/a/` and `dir/b/` differ (names and bytes), if they do.
fn differ(dir: &Path, a: &str, b: &str) -> Option<String> {
    let read = |tag: &str| -> std::collections::BTreeMap<String, String> {
        std::fs::read_dir(dir.join(tag))
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| (p.file_name().unwrap().to_string_lossy().to_string(), std::fs::read_to_string(&p).unwrap()))
            .collect()
    };
    let (x, y) = (read(a), read(b));
    if x == y {
        return None;
    }
    let names: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
    let shown: Vec<String> = names
        .into_iter()
        .filter(|n| x.get(*n) != y.get(*n))
        .map(|n| {
            format!("{n}\n{a}:\n{}\n{b}:\n{}", x.get(n).map_or("(missing)", |t| t.as_str()), y.get(n).map_or("(missing)", |t| t.as_str()))
        })
        .collect();
    Some(shown.join("\n"))
}

/// Adds patients with no rows in any table but `patients` (a row with only an id), which
/// exercise the empty segments of every kernel.
fn add_bare_patients(tables: &Path) {
    let path = tables.join("patients.csv");
    let mut text = std::fs::read_to_string(&path).unwrap();
    let width = text.lines().next().unwrap().split(',').count();
    for id in [100_001, 100_002, 100_003] {
        text.push_str(&format!("{id}{}\n", ",".repeat(width - 1)));
    }
    std::fs::write(path, text).unwrap();
}

#[test]
fn random_definitions_give_the_same_bytes_on_both_evaluators() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut with_rows, mut with_events, mut with_event_rows, mut pushed, mut candidates) = (0, 0, 0, 0, 0);
    for seed in 0..CASES {
        let mut rng = Rng::new(seed, 0x5eed, 0);
        let dir = tmp.path().join(format!("case{seed}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut def = definition(&mut rng);
        let mut events_rng = Rng::new(seed, 0xe7e7, 0);
        if events_rng.chance(0.6) {
            def.push_str(&event_tables(&mut events_rng));
            with_events += 1;
        }
        std::fs::write(dir.join("definition.py"), &def).unwrap();
        // Tables from the same variables over everyone (a random population may be a
        // contradiction), so they hold what the variables look for.
        let everyone: String = def
            .lines()
            .map(|l| match l.strip_prefix("dataset.define_population(").and_then(|r| r.strip_suffix(')')) {
                Some(p) => format!("dataset.define_population(patients.exists_for_patient() | ({p}))"),
                None => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(dir.join("tables.py"), everyone).unwrap();
        let out =
            quarry(&dir, &["create-dummy-tables", "tables.py", "tables", "--population-size", "60", "--seed", &seed.to_string()], "5");
        assert!(out.status.success(), "case {seed}: {}\n{def}", String::from_utf8_lossy(&out.stderr));
        // The same tables as a Parquet backend of small row groups: the backend scan (filters
        // pushed into it, only the population's candidates read) gives the reference's bytes.
        let backend = dir.join("backend");
        let out = Command::new(QUARRY)
            .current_dir(&dir)
            .env("QUARRY_PARQUET_ROW_GROUP_ROWS", "40")
            .args([
                "create-dummy-tables",
                "tables.py",
                &format!("{}:parquet", backend.display()),
                "--population-size",
                "60",
                "--seed",
                &seed.to_string(),
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "case {seed}: {}", String::from_utf8_lossy(&out.stderr));
        let plain = generate(&dir, "plain", &["--dummy-tables", "tables", "--engine", "reference"], &[("QUARRY_PARTITION_SIZE", "5")]);
        assert!(plain.status.success(), "case {seed}, reference: {}\n{def}", String::from_utf8_lossy(&plain.stderr));
        let scanned = generate(&dir, "scanned", &["--backend", "backend"], &[("QUARRY_PARTITION_SIZE", "3"), ("QUARRY_HELD_ROWS", "30")]);
        assert!(scanned.status.success(), "case {seed}, backend: {}\n{def}", String::from_utf8_lossy(&scanned.stderr));
        pushed += String::from_utf8_lossy(&scanned.stderr).contains("rows pass the definition's filters") as u64;
        candidates += String::from_utf8_lossy(&scanned.stderr).contains("belong to patients who can be in the population") as u64;
        if let Some(difference) = differ(&dir, "plain", "scanned") {
            panic!("case {seed}: the backend scan differs\n{def}\n{difference}");
        }
        add_bare_patients(&dir.join("tables"));
        let reference =
            generate(&dir, "reference", &["--dummy-tables", "tables", "--engine", "reference"], &[("QUARRY_PARTITION_SIZE", "5")]);
        assert!(
            reference.status.success(),
            "case {seed}: the reference evaluator failed: {}\n{def}",
            String::from_utf8_lossy(&reference.stderr)
        );
        let rows = |table: &str| std::fs::read_to_string(dir.join("reference").join(table)).map_or(0, |t| t.lines().count() - 1);
        with_rows += (rows("dataset.csv") > 0) as u64;
        with_event_rows += (rows("e0.csv") > 1) as u64;
        for partition in ["1", "7", "4096"] {
            let tag = format!("columnar{partition}");
            let columnar =
                generate(&dir, &tag, &["--dummy-tables", "tables", "--engine", "columnar"], &[("QUARRY_PARTITION_SIZE", partition)]);
            assert!(
                columnar.status.success(),
                "case {seed}, partitions of {partition}: {}\n{def}",
                String::from_utf8_lossy(&columnar.stderr)
            );
            if let Some(difference) = differ(&dir, "reference", &tag) {
                panic!("case {seed}, partitions of {partition}: the evaluators differ\n{def}\n{difference}");
            }
        }
    }
    assert!(with_rows >= CASES / 2, "only {with_rows} of {CASES} cases had patients in their population");
    assert!(
        with_events >= CASES / 3 && with_event_rows >= CASES / 4,
        "only {with_events} of {CASES} cases had event tables, {with_event_rows} with rows"
    );
    eprintln!("{with_events} of {CASES} cases had event tables, {with_event_rows} with rows");
    eprintln!("{pushed} of {CASES} cases had filters pushed into the scan, {candidates} read only the population's candidates");
    assert!(
        pushed >= CASES / 2 && candidates >= CASES / 8,
        "too few cases exercise the scan's filters: {pushed} pushed, {candidates} with candidates"
    );
}
