//! `quarry make-backend`: a TPP-shaped synthetic backend for throughput benchmarks (issue 8),
//! written in the `--backend` layout (docs/backend.md): one Parquet file per table, sorted by
//! `patient_id`, streamed in chunks of patients so that its size is limited by disk only.
//!
//! Shapes: an age pyramid and ehrQL's sex categories; registrations, addresses; clinical events
//! per patient exponentially distributed (mean `events_per_patient`, a long tail); codes drawn
//! from a Zipf law over synthetic code lists; dates over decades between birth and death; 1 %
//! of patients dead. 1.5 % of patients have venous thromboembolism: primary-care events with
//! codes of the seed study's CTV3 codelist and, for half of them, a hospital admission with a
//! code of its ICD-10 codelists (`assets/`), so the seed definitions select a realistic share.
//! Every table name's columns are the union over ehrQL's modules (core, tpp, the pre-1.0 beta
//! spellings), so any definition's columns are present. Deterministic for a seed: each patient
//! has its own random stream.

use std::path::Path;
use std::time::Instant;

use quarry_queries::qm::{CodeSystem, Column, Constraint, Float, Value};
use quarry_queries::semantics::Scalar;
use rayon::prelude::*;

use crate::columns::ColumnSpec;
use crate::dummy::days;
use crate::dummy::rng::Rng;
use crate::dummy::values::{ColPlan, Window, choose, random_code};
use crate::output::{Format, TableStream, Target};

const VTE_CTV3: &str = include_str!("../assets/opensafely-venous-thromboembolic-disease.csv");
const VTE_ICD10: &str = include_str!("../assets/opensafely-venous-thromboembolic-disease-hospital.csv");
const VTE_ICD10_MB: &str = include_str!("../assets/user-matthewberesford92-venous-thromboembolism.csv");

/// The tables written, by ehrQL table name.
pub const TABLES: [&str; 8] =
    ["patients", "practice_registrations", "addresses", "clinical_events", "medications", "apcs", "hospital_admissions", "ons_deaths"];
/// Patients generated (in parallel) and written per chunk.
const CHUNK: u64 = 20_000;
const VTE_SHARE: f64 = 0.015;
const DEAD_SHARE: f64 = 0.01;

pub struct Options {
    pub patients: u64,
    pub seed: u64,
    /// Mean clinical events per patient.
    pub events_per_patient: f64,
}

pub struct Report {
    pub patients: u64,
    /// Rows written per table, in [`TABLES`] order.
    pub rows: Vec<(String, u64)>,
    pub seconds: f64,
}

/// Codes drawn with Zipf weights (rank `k` has weight `1 / k^1.1`).
struct Zipf {
    codes: Vec<String>,
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(codes: Vec<String>) -> Zipf {
        let mut total = 0.0;
        let cumulative = (1..=codes.len())
            .map(|k| {
                total += 1.0 / (k as f64).powf(1.1);
                total
            })
            .collect();
        Zipf { codes, cumulative }
    }

    fn draw(&self, rng: &mut Rng) -> &str {
        let x = rng.unit() * self.cumulative.last().copied().unwrap_or(0.0);
        let i = self.cumulative.partition_point(|c| *c < x).min(self.codes.len() - 1);
        &self.codes[i]
    }
}

fn codelist(csv: &str) -> Vec<String> {
    csv.lines().skip(1).filter_map(|l| l.split(',').next()).map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect()
}

/// Synthetic codes of a system, avoiding `exclude` (so only VTE patients match the VTE lists).
fn universe(seed: u64, system: CodeSystem, n: usize, exclude: &[String]) -> Zipf {
    let mut rng = Rng::new(seed, 0x5eed_c0de, system as u64);
    let mut seen = std::collections::HashSet::new();
    let mut codes = vec![];
    while codes.len() < n {
        let c = random_code(&mut rng, system);
        if !exclude.contains(&c) && seen.insert(c.clone()) {
            codes.push(c);
        }
    }
    Zipf::new(codes)
}

struct TableOut {
    name: &'static str,
    columns: Vec<Column>,
    plans: Vec<ColPlan>,
}

/// Every column any ehrQL module declares for a table name, first declaration's type winning.
fn union_columns(name: &str) -> Vec<(Column, Vec<Constraint>)> {
    let mut out: Vec<(Column, Vec<Constraint>)> = vec![];
    for (_, tables) in &quarry_queries::tables::catalog().modules {
        for (_, def) in tables.iter().filter(|(_, d)| d.schema.name == name) {
            for c in &def.schema.columns {
                if !out.iter().any(|(o, _)| o.name == c.name) {
                    out.push((c.clone(), def.dummy_constraints.get(&c.name).cloned().unwrap_or_default()));
                }
            }
        }
    }
    out
}

struct Universes {
    snomed: Zipf,
    ctv3: Zipf,
    icd10: Zipf,
    dmd: Zipf,
    vte_ctv3: Vec<String>,
    vte_icd10: Vec<String>,
}

/// One patient's life: what the tables' rows are made from.
struct Patient {
    birth: i64,
    death: Option<i64>,
    vte: bool,
}

const TODAY: (i64, i64, i64) = (2025, 6, 30);

fn patient(rng: &mut Rng) -> Patient {
    // An age pyramid: roughly flat to 60, thinning after.
    let age = loop {
        let a = rng.below(100) as i64;
        if a < 60 || rng.chance(1.0 - (a - 60) as f64 / 45.0) {
            break a;
        }
    };
    let today = days::from_civil(TODAY.0, TODAY.1, TODAY.2);
    let birth = days::month_start(today - age * 365 - rng.below(365) as i64);
    let death = rng.chance(DEAD_SHARE).then(|| rng.range(birth.max(days::from_civil(2010, 1, 1)), today));
    Patient { birth, death, vte: rng.chance(VTE_SHARE) }
}

fn date(d: i64) -> Scalar {
    Some(Value::Date(days::to_date(d)))
}

fn code(system: CodeSystem, c: &str) -> Scalar {
    Some(Value::Code(system, c.to_string()))
}

impl TableOut {
    /// A row: named overrides, other columns filled within their constraints.
    fn row(&self, rng: &mut Rng, window: Window, set: &[(&str, Scalar)]) -> Vec<Scalar> {
        self.columns
            .iter()
            .zip(&self.plans)
            .map(|(c, plan)| match set.iter().find(|(n, _)| *n == c.name) {
                Some((_, v)) => v.clone(),
                None => choose(rng, plan, None, window, true).flatten(),
            })
            .collect()
    }
}

fn rows_for(pid: i64, seed: u64, o: &Options, tables: &[TableOut], u: &Universes) -> Vec<Vec<Vec<Scalar>>> {
    let mut rng = Rng::new(seed, pid as u64, 0);
    let p = patient(&mut rng);
    let end = p.death.unwrap_or(days::from_civil(TODAY.0, TODAY.1, TODAY.2));
    let adult = (p.birth + 18 * 365).min(end);
    let window = Window { lo: p.birth, hi: end, focus: (p.birth.max(days::from_civil(2000, 1, 1)).min(end), end) };
    let when = |rng: &mut Rng, from: i64| rng.range(from.max(days::from_civil(1990, 1, 1)).min(end), end);
    let mut out: Vec<Vec<Vec<Scalar>>> = vec![vec![]; tables.len()];
    for (t, table) in tables.iter().enumerate() {
        let rows = &mut out[t];
        match table.name {
            "patients" => {
                let sex = match rng.below(200) {
                    0 => "intersex",
                    1 => "unknown",
                    k if k % 2 == 0 => "female",
                    _ => "male",
                };
                rows.push(table.row(
                    &mut rng,
                    window,
                    &[("date_of_birth", date(p.birth)), ("sex", Some(Value::Str(sex.into()))), ("date_of_death", p.death.and_then(date))],
                ));
            }
            "practice_registrations" | "addresses" => {
                let n = 1 + rng.geometric(0.6, 4);
                let mut start = p.birth;
                for k in 0..n {
                    let stop = (k + 1 < n).then(|| rng.range(start, end));
                    rows.push(table.row(&mut rng, window, &[("start_date", date(start)), ("end_date", stop.and_then(date))]));
                    start = stop.unwrap_or(end);
                }
            }
            "clinical_events" => {
                let n = (-o.events_per_patient * (1.0 - rng.unit()).ln()) as u64;
                let mut events: Vec<(i64, Scalar, Scalar)> = (0..n)
                    .map(|_| {
                        (
                            when(&mut rng, p.birth),
                            code(CodeSystem::SNOMEDCT, u.snomed.draw(&mut rng)),
                            code(CodeSystem::CTV3, u.ctv3.draw(&mut rng)),
                        )
                    })
                    .collect();
                if p.vte {
                    for _ in 0..1 + rng.below(3) {
                        let c = rng.pick(&u.vte_ctv3).clone();
                        events.push((
                            when(&mut rng, adult),
                            code(CodeSystem::SNOMEDCT, u.snomed.draw(&mut rng)),
                            code(CodeSystem::CTV3, &c),
                        ));
                    }
                }
                events.sort_by_key(|e| e.0);
                for (d, snomed, ctv3) in events {
                    let value = rng.chance(0.4).then(|| Value::Float(Float((rng.unit() * 1000.0).round() / 10.0)));
                    rows.push(table.row(
                        &mut rng,
                        window,
                        &[("date", date(d)), ("snomedct_code", snomed), ("ctv3_code", ctv3), ("numeric_value", value)],
                    ));
                }
            }
            "medications" => {
                let n = (-o.events_per_patient / 4.0 * (1.0 - rng.unit()).ln()) as u64;
                let mut dates: Vec<i64> = (0..n).map(|_| when(&mut rng, p.birth)).collect();
                dates.sort();
                for d in dates {
                    let c = u.dmd.draw(&mut rng).to_string();
                    rows.push(table.row(&mut rng, window, &[("date", date(d)), ("dmd_code", code(CodeSystem::DMD, &c))]));
                }
            }
            "apcs" | "hospital_admissions" => {
                // The same admissions in both spellings: re-seeded so they agree.
                let mut arng = Rng::new(seed, pid as u64, 1);
                let mut admissions: Vec<(i64, String)> =
                    (0..arng.geometric(0.3, 20)).map(|_| (when(&mut arng, p.birth), u.icd10.draw(&mut arng).to_string())).collect();
                if p.vte && arng.chance(0.5) {
                    admissions.push((when(&mut arng, adult), arng.pick(&u.vte_icd10).clone()));
                }
                admissions.sort_by_key(|a| a.0);
                for (d, diagnosis) in admissions {
                    let discharge = (d + arng.geometric(4.0, 200) as i64).min(end.max(d));
                    let all = format!("{diagnosis}||{}", u.icd10.draw(&mut arng));
                    let primary = if table.name == "apcs" {
                        ("primary_diagnosis", code(CodeSystem::ICD10, &diagnosis))
                    } else {
                        ("primary_diagnoses", Some(Value::Str(diagnosis.clone())))
                    };
                    rows.push(table.row(
                        &mut rng,
                        window,
                        &[
                            ("admission_date", date(d)),
                            ("discharge_date", date(discharge)),
                            primary,
                            ("all_diagnoses", Some(Value::Str(all))),
                        ],
                    ));
                }
            }
            "ons_deaths" => {
                if let Some(d) = p.death {
                    let cause = u.icd10.draw(&mut rng).to_string();
                    let mut set: Vec<(&str, Scalar)> =
                        vec![("date", date(d)), ("underlying_cause_of_death", code(CodeSystem::ICD10, &cause))];
                    let causes: Vec<String> = (1..=15).map(|k| format!("cause_of_death_{k:02}")).collect();
                    for (k, c) in causes.iter().enumerate() {
                        set.push((c.as_str(), (k == 0).then(|| Value::Code(CodeSystem::ICD10, cause.clone()))));
                    }
                    rows.push(table.row(&mut rng, window, &set));
                }
            }
            other => unreachable!("no generator for {other}"),
        }
    }
    out
}

/// Writes the backend into `dir` (created; existing tables replaced only when all are written).
pub fn make_backend(dir: &Path, o: &Options, mut progress: impl FnMut(u64)) -> Result<Report, String> {
    let started = Instant::now();
    let vte_ctv3 = codelist(VTE_CTV3);
    let mut vte_icd10 = codelist(VTE_ICD10);
    vte_icd10.extend(codelist(VTE_ICD10_MB));
    vte_icd10.sort();
    vte_icd10.dedup();
    let u = Universes {
        snomed: universe(o.seed, CodeSystem::SNOMEDCT, 20_000, &[]),
        ctv3: universe(o.seed, CodeSystem::CTV3, 20_000, &vte_ctv3),
        icd10: universe(o.seed, CodeSystem::ICD10, 5_000, &vte_icd10),
        dmd: universe(o.seed, CodeSystem::DMD, 5_000, &[]),
        vte_ctv3,
        vte_icd10,
    };
    let tables: Vec<TableOut> = TABLES
        .iter()
        .map(|name| {
            let cols = union_columns(name);
            TableOut {
                name,
                plans: cols.iter().map(|(c, d)| ColPlan::new(c, d, true)).collect(),
                columns: cols.into_iter().map(|(c, _)| c).collect(),
            }
        })
        .collect();
    let layouts: Vec<crate::output::Layout> = tables
        .iter()
        .map(|t| {
            let mut columns = vec![ColumnSpec::patient_id()];
            columns.extend(t.columns.iter().map(ColumnSpec::of_column));
            (t.name.to_string(), columns)
        })
        .collect();
    let mut stream = TableStream::open(&Target::Directory(dir.to_path_buf(), Format::Parquet), &layouts)?;
    let encoder = stream.encoder();
    let mut counts = vec![0u64; tables.len()];
    let mut next = 1u64;
    while next <= o.patients {
        let last = (next + CHUNK - 1).min(o.patients);
        let chunk: Vec<Vec<Vec<Vec<Scalar>>>> = (next..=last)
            .into_par_iter()
            .map(|pid| {
                rows_for(pid as i64, o.seed, o, &tables, &u)
                    .into_iter()
                    .map(|rows| rows.into_iter().map(|r| std::iter::once(Some(Value::Int(pid as i64))).chain(r).collect()).collect())
                    .collect()
            })
            .collect();
        let mut per_table: Vec<Vec<Vec<Scalar>>> = vec![vec![]; tables.len()];
        for patient in chunk {
            for (t, rows) in patient.into_iter().enumerate() {
                per_table[t].extend(rows);
            }
        }
        for (t, rows) in per_table.into_iter().enumerate() {
            counts[t] += rows.len() as u64;
            stream.write(t, encoder.chunk(rows))?;
        }
        progress(last);
        next = last + 1;
    }
    stream.finish()?;
    Ok(Report {
        patients: o.patients,
        rows: TABLES.iter().map(|t| t.to_string()).zip(counts).collect(),
        seconds: started.elapsed().as_secs_f64(),
    })
}
