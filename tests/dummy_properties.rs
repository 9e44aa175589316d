//! Property test of the dummy-data generator (issue 6): for random dataset definitions whose
//! population is satisfiable, generation gives exactly the requested number of patients.
//!
//! Satisfiability is decided by a witness: each case draws one random patient (tables written
//! as `--dummy-tables` CSV) and a random population — AND, OR and NOT over atoms about sex,
//! age, dates of birth and death, codes, counts, date windows and picked rows, with thresholds
//! drawn near the witness's own values, so about half the atoms hold for it. The reference
//! evaluator says whether the witness is in the population; when it is, the predicate is
//! satisfiable and the generator must produce every patient asked for.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

mod common;

const QUARRY: &str = env!("CARGO_BIN_EXE_quarry");
const CASES: u64 = 120;
const SIZE: usize = 40;

use common::Rng;

trait Draw {
    fn year(&mut self, from: i32, to: i32) -> i32;
    fn date(&mut self, from: i32, to: i32) -> String;
}

impl Draw for Rng {
    fn year(&mut self, from: i32, to: i32) -> i32 {
        from + self.below((to - from + 1) as u64) as i32
    }

    fn date(&mut self, from: i32, to: i32) -> String {
        format!("{}-{:02}-{:02}", self.year(from, to), 1 + self.below(12), 1 + self.below(28))
    }
}

const CODES: [&str; 6] = ["123456", "234567", "345678", "456789", "567891", "678912"];
const DMD: [&str; 3] = ["10000000", "20000000", "30000000"];
const SEXES: [&str; 4] = ["female", "male", "intersex", "unknown"];

struct Witness {
    birth_year: i32,
    sex: &'static str,
    death: Option<String>,
    events: Vec<(String, &'static str, f64)>,
    medications: Vec<(String, &'static str)>,
}

impl Witness {
    fn draw(rng: &mut Rng) -> Witness {
        let birth_year = rng.year(1925, 2015);
        let death = (rng.below(4) == 0).then(|| rng.date(2016, 2023));
        let events = (0..rng.below(5)).map(|_| (rng.date(2010, 2023), *rng.pick(&CODES), rng.below(400) as f64 / 10.0)).collect();
        let medications = (0..rng.below(3)).map(|_| (rng.date(2010, 2023), *rng.pick(&DMD))).collect();
        Witness { birth_year, sex: SEXES[rng.below(SEXES.len() as u64) as usize], death, events, medications }
    }

    fn write(&self, dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(
            dir.join("patients.csv"),
            format!(
                "patient_id,date_of_birth,sex,date_of_death\n1,{}-06-01,{},{}\n",
                self.birth_year,
                self.sex,
                self.death.as_deref().unwrap_or("")
            ),
        )
        .unwrap();
        let mut events = String::from("patient_id,date,snomedct_code,numeric_value\n");
        for (d, c, v) in &self.events {
            let _ = writeln!(events, "1,{d},{c},{v}");
        }
        std::fs::write(dir.join("clinical_events.csv"), events).unwrap();
        let mut meds = String::from("patient_id,date,dmd_code\n");
        for (d, c) in &self.medications {
            let _ = writeln!(meds, "1,{d},{c}");
        }
        std::fs::write(dir.join("medications.csv"), meds).unwrap();
    }
}

fn codes(rng: &mut Rng) -> String {
    let n = 1 + rng.below(3) as usize;
    let mut picked: Vec<&str> = (0..n).map(|_| *rng.pick(&CODES)).collect();
    picked.dedup();
    picked.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ")
}

/// One atom, its thresholds drawn near the witness's values.
fn atom(rng: &mut Rng, w: &Witness) -> String {
    let age = 2020 - w.birth_year;
    let event_year = w.events.first().map(|e| e.0[..4].parse::<i32>().unwrap()).unwrap_or(2015);
    let near = |rng: &mut Rng, y: i32| format!("{}-{:02}-01", y - 2 + rng.below(5) as i32, 1 + rng.below(12));
    match rng.below(11) {
        0 => format!("(patients.sex == \"{}\")", if rng.below(2) == 0 { w.sex } else { *rng.pick(&SEXES) }),
        1 => format!("(patients.age_on(\"2020-01-01\") >= {})", (age - 10 + rng.below(20) as i32).max(0)),
        2 => format!("(patients.age_on(\"2020-01-01\") < {})", (age - 10 + rng.below(20) as i32).max(1)),
        3 => format!("patients.date_of_birth.is_before(\"{}\")", near(rng, w.birth_year)),
        4 => format!("clinical_events.where(clinical_events.snomedct_code.is_in([{}])).exists_for_patient()", codes(rng)),
        5 => format!(
            "(clinical_events.where(clinical_events.date.is_on_or_after(\"{}\")).count_for_patient() >= {})",
            near(rng, event_year),
            rng.below(3)
        ),
        6 => format!("(clinical_events.sort_by(clinical_events.date).last_for_patient().numeric_value > {})", rng.below(400) as f64 / 10.0),
        7 => {
            let from = near(rng, event_year);
            format!("medications.where(medications.date.is_on_or_between(\"{from}\", \"2023-12-31\")).exists_for_patient()")
        }
        8 => "patients.date_of_death.is_not_null()".into(),
        9 => "patients.date_of_death.is_null()".into(),
        _ => format!(
            "clinical_events.where(clinical_events.snomedct_code.is_in([{}])).sort_by(clinical_events.date).first_for_patient().date.is_after(\"{}\")",
            codes(rng),
            near(rng, event_year)
        ),
    }
}

fn formula(rng: &mut Rng, w: &Witness, depth: u32) -> String {
    if depth == 0 || rng.below(3) == 0 {
        return atom(rng, w);
    }
    match rng.below(5) {
        0 | 1 => format!("({} & {})", formula(rng, w, depth - 1), formula(rng, w, depth - 1)),
        2 | 3 => format!("({} | {})", formula(rng, w, depth - 1), formula(rng, w, depth - 1)),
        _ => format!("~({})", formula(rng, w, depth - 1)),
    }
}

fn definition(population: &str) -> String {
    format!(
        "from ehrql import create_dataset\n\
         from ehrql.tables.core import patients, clinical_events, medications\n\
         dataset = create_dataset()\n\
         dataset.define_population(patients.exists_for_patient() & {population})\n\
         dataset.sex = patients.sex\n\
         dataset.events = clinical_events.count_for_patient()\n\
         dataset.last_code = clinical_events.sort_by(clinical_events.date).last_for_patient().snomedct_code\n"
    )
}

fn run(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(QUARRY).current_dir(dir).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string())
}

#[test]
fn satisfiable_random_populations_generate_exactly_the_requested_size() {
    let tmp = tempfile::tempdir().unwrap();
    let mut satisfiable = 0;
    let mut failures = vec![];
    for seed in 0..CASES {
        let mut rng = Rng::new(seed, 0xdead_beef, 0);
        let witness = Witness::draw(&mut rng);
        let population = formula(&mut rng, &witness, 4);
        let dir = tmp.path().join(format!("case{seed}"));
        witness.write(&dir.join("witness"));
        std::fs::write(dir.join("definition.py"), definition(&population)).unwrap();
        let (ok, stdout, stderr) = run(&dir, &["generate-dataset", "definition.py", "--dummy-tables", "witness"]);
        assert!(ok, "case {seed}: the definition must be valid: {population}\n{stderr}");
        if !stdout.lines().skip(1).any(|l| l.starts_with("1,")) {
            continue;
        }
        satisfiable += 1;
        let (ok, _, stderr) =
            run(&dir, &["generate-dataset", "definition.py", "--population-size", &SIZE.to_string(), "--output", "out.csv"]);
        let rows = std::fs::read_to_string(dir.join("out.csv")).map(|t| t.lines().count() - 1).unwrap_or(0);
        if !ok || rows != SIZE {
            failures.push(format!("case {seed}: {rows} of {SIZE} rows for population {population}\n{stderr}"));
        }
    }
    eprintln!("{satisfiable} of {CASES} random populations held for their witness");
    assert!(satisfiable >= CASES as usize / 4, "only {satisfiable} of {CASES} random populations held for their witness");
    assert!(failures.is_empty(), "{} of {satisfiable} satisfiable populations failed:\n{}", failures.len(), failures.join("\n"));
}
