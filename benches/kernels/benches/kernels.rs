//! The columnar engine's segment kernels — filter by codelist, count, exists, first/last by
//! date — each as a one-variable dataset over 10 M generated event rows (200,000 patients), and
//! beside it the same operation as a polars lazy group-by over the same rows, in one criterion
//! run. quarry's figure is the whole evaluation of a typed patient batch built once beforehand
//! (partitions, kernels, output rows for every patient); polars' is the filter, group-by and
//! aggregation over a data frame built once beforehand.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use polars::prelude::*;
use quarry_queries::qm::{TableId, Value};
use quarry_queries::semantics::Scalar;

const PATIENTS: i64 = 200_000;
const CODES: u64 = 5_000;
/// One code in ten is in the codelist.
const CODELIST_EVERY: u64 = 10;

struct Event {
    patient: i64,
    day: i32,
    code: u64,
    value: f64,
}

/// SplitMix64, for reproducible data.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// About 50 events per patient (20 to 80), codes skewed towards small numbers, dates over 22 years.
fn events() -> Vec<Event> {
    let mut out = Vec::with_capacity(10_100_000);
    for p in 1..=PATIENTS {
        let n = 20 + mix(p as u64) % 61;
        for k in 0..n {
            let r = mix((p as u64) << 20 | k);
            let skew = (r % CODES) * (r >> 40 & 0xff) / 255;
            out.push(Event { patient: p, day: 10_957 + (r >> 16 & 0x1fff) as i32, code: skew, value: ((r >> 32) % 1000) as f64 / 10.0 });
        }
    }
    out
}

fn code_text(c: u64) -> String {
    (1_000_000 + c).to_string()
}

fn codelist() -> Vec<String> {
    (0..CODES).filter(|c| c % CODELIST_EVERY == 0).map(code_text).collect()
}

const PRELUDE: &str = "from ehrql import create_dataset\nfrom ehrql.tables.core import patients, clinical_events\n";

/// The kernels: a name and the expression of `dataset.value` (`codes` is the codelist).
const KERNELS: [(&str, &str); 4] = [
    ("filter by codelist + count", "clinical_events.where(clinical_events.snomedct_code.is_in(codes)).count_for_patient()"),
    ("exists", "clinical_events.where(clinical_events.snomedct_code.is_in(codes)).exists_for_patient()"),
    (
        "first by date",
        "clinical_events.where(clinical_events.snomedct_code.is_in(codes)).sort_by(clinical_events.date).first_for_patient().date",
    ),
    (
        "last by date",
        "clinical_events.where(clinical_events.snomedct_code.is_in(codes)).sort_by(clinical_events.date).last_for_patient().numeric_value",
    ),
];

fn definition(dir: &std::path::Path, expression: &str) -> quarry_python::Definition {
    let codes: Vec<String> = codelist().iter().map(|c| format!("\"{c}\"")).collect();
    let text = format!(
        "{PRELUDE}codes = [{}]\ndataset = create_dataset()\ndataset.define_population(patients.exists_for_patient())\ndataset.value = {expression}\n",
        codes.join(", ")
    );
    let path = dir.join("definition.py");
    std::fs::write(&path, text).unwrap();
    quarry_python::load_definition(&path, &[], Box::new(std::io::sink())).unwrap_or_else(|e| panic!("{e}"))
}

/// The events as quarry's in-memory store (patients first, then clinical_events).
fn store(events: &[Event], patients: TableId, clinical_events: TableId) -> quarry_engine::store::Store {
    let mut store = quarry_engine::store::Store::default();
    for p in 1..=PATIENTS {
        // patients: date_of_birth, sex, date_of_death (all NULL here).
        store.patients.entry(p).or_insert_with(BTreeMap::new).insert(patients, vec![vec![None, None, None]]);
    }
    for e in events {
        let date = jiff::civil::Date::new(2000, 1, 1).unwrap().checked_add(jiff::Span::new().days(e.day - 10_957)).unwrap();
        let row: Vec<Scalar> = vec![
            Some(Value::Date(date)),
            Some(Value::Code(quarry_queries::qm::CodeSystem::SNOMEDCT, code_text(e.code))),
            Some(Value::Float(quarry_queries::qm::Float(e.value))),
        ];
        store.patients.get_mut(&e.patient).unwrap().entry(clinical_events).or_default().push(row);
    }
    store
}

fn frame(events: &[Event]) -> DataFrame {
    let date = Series::new("date".into(), events.iter().map(|e| e.day).collect::<Vec<i32>>()).cast(&DataType::Date).unwrap();
    DataFrame::new(
        events.len(),
        vec![
            Column::new("patient_id".into(), events.iter().map(|e| e.patient).collect::<Vec<i64>>()),
            date.into(),
            Column::new("code".into(), events.iter().map(|e| code_text(e.code)).collect::<Vec<String>>()),
            Column::new("value".into(), events.iter().map(|e| e.value).collect::<Vec<f64>>()),
        ],
    )
    .unwrap()
}

fn polars_query(df: &DataFrame, kernel: usize) -> DataFrame {
    let codes = Series::new("codes".into(), codelist());
    let filtered = df.clone().lazy().filter(col("code").is_in(lit(codes).implode(false), false));
    let agg = match kernel {
        0 => len().alias("value"),
        1 => len().gt(lit(0)).alias("value"),
        2 => col("date").sort_by([col("date")], SortMultipleOptions::default()).first().alias("value"),
        _ => col("value").sort_by([col("date")], SortMultipleOptions::default()).last().alias("value"),
    };
    filtered.group_by([col("patient_id")]).agg([agg]).collect().unwrap()
}

fn kernels(c: &mut Criterion) {
    eprintln!("generating 200,000 patients' events…");
    let events = events();
    eprintln!("{} events", events.len());
    let tmp = tempfile::tempdir().unwrap();
    let definitions: Vec<_> = KERNELS.iter().map(|(_, e)| definition(tmp.path(), e)).collect();
    let graph = &definitions[0].graph;
    let dataset = definitions[0].dataset.as_ref().unwrap();
    let tables = quarry_engine::store::used_tables(graph, &dataset.roots());
    let id = |name: &str| *tables.iter().find(|t| graph.table(**t).name == name).unwrap();
    let (patients, clinical_events) = (id("patients"), id("clinical_events"));
    for d in &definitions {
        let t = quarry_engine::store::used_tables(&d.graph, &d.dataset.as_ref().unwrap().roots());
        assert!(t.contains(&patients) && t.contains(&clinical_events), "every definition declares the tables alike");
    }
    // The engine's input is a typed patient batch, as a backend's rounds are; the row store
    // is typed into one once, outside the timed loop (as polars' frame is built once).
    let batch = quarry_engine::batch::Batch::from_store(graph, &store(&events, patients, clinical_events), &tables);
    let df = frame(&events);
    drop(events);
    for (k, (name, _)) in KERNELS.iter().enumerate() {
        let mut group = c.benchmark_group(*name);
        group.sample_size(10).measurement_time(Duration::from_secs(20)).warm_up_time(Duration::from_secs(1));
        let d = &definitions[k];
        group.bench_function("quarry columnar", |b| {
            b.iter(|| {
                black_box(
                    quarry_engine::evaluate_batch_columnar(&d.graph, d.dataset.as_ref().unwrap(), &batch, &Default::default()).unwrap(),
                )
            })
        });
        group.bench_function("polars lazy", |b| b.iter(|| black_box(polars_query(&df, k))));
        group.finish();
    }
}

criterion_group!(benches, kernels);
criterion_main!(benches);
