//! ehrQL's measures (ehrql.md §6.4): for each interval and measure, the sums of numerator and
//! denominator per group over the patients in the denominator, then disclosure control.

use std::collections::{BTreeSet, HashMap};

use quarry_queries::qm::{Float, Graph, NodeId, Value};
use quarry_queries::semantics::{EvalError, Scalar};
use quarry_queries::spec::MeasuresSpec;

use crate::columns::{ColumnKind, ColumnSpec};
use crate::output::Table;
use crate::reference::Evaluator;
use crate::store::Store;

fn as_count(v: &Scalar) -> i64 {
    match v {
        Some(Value::Bool(b)) => *b as i64,
        Some(Value::Int(i)) => *i,
        _ => 0,
    }
}

enum Engine<'g> {
    Reference(Evaluator<'g>, BTreeSet<i64>),
    Columnar(crate::columnar::Evaluator<'g>),
}

/// ehrQL's default disclosure control: counts ≤ 7 become 0, others round to the nearest 5.
pub fn round_count(n: i64) -> i64 {
    if n <= 7 { 0 } else { ((n as f64 / 5.0).round() as i64) * 5 }
}

/// The nodes a measures run evaluates per patient: numerators, denominators and group-by
/// series, each once.
pub fn measures_outputs(spec: &MeasuresSpec) -> Vec<NodeId> {
    let mut outputs: Vec<NodeId> = vec![];
    for m in &spec.measures {
        for n in [m.numerator, m.denominator].into_iter().chain(m.group_by.iter().map(|(_, n)| *n)) {
            if !outputs.contains(&n) {
                outputs.push(n);
            }
        }
    }
    outputs
}

/// All measures in one table: `measure, interval_start, interval_end, ratio, numerator,
/// denominator`, then every group-by column.
pub fn evaluate_measures(graph: &Graph, spec: &MeasuresSpec, store: &Store, columnar: bool) -> Result<Vec<Table>, EvalError> {
    let outputs = measures_outputs(spec);
    // The reference evaluator goes patient by patient (store and inline patients, in id
    // order); the columnar one finds its patients itself.
    let mut engine = if columnar {
        Engine::Columnar(crate::columnar::Evaluator::new(graph, &outputs))
    } else {
        let reference = Evaluator::new(graph, &outputs);
        let mut patients: BTreeSet<i64> = store.patients.keys().copied().collect();
        patients.extend(reference.inline_patients());
        Engine::Reference(reference, patients)
    };
    aggregate_measures(graph, spec, |(start, end), add| {
        for (name, date) in [("interval_start_date", start), ("interval_end_date", end)] {
            match &mut engine {
                Engine::Reference(e, _) => e.set_param(name, Some(Value::Date(date))),
                Engine::Columnar(e) => e.set_param(name, Some(Value::Date(date))),
            }
        }
        match &engine {
            Engine::Columnar(e) => e.run(
                store,
                |p| (0..p.len()).map(|i| outputs.iter().map(|n| p.scalar(*n, i)).collect::<Vec<Scalar>>()).collect::<Vec<_>>(),
                |rows| {
                    rows.iter().for_each(|r| add(r));
                    Ok::<(), EvalError>(())
                },
            ),
            Engine::Reference(e, patients) => {
                for &p in patients {
                    let values = e.patient(p, store.patients.get(&p))?;
                    add(&outputs.iter().map(|n| values.scalar(*n)).collect::<Vec<_>>());
                }
                Ok(())
            }
        }
    })
}

/// The measures table from per-patient values: `patients` is called once per interval with
/// a sink for each patient's values of `measures_outputs(spec)`, patients in id order.
pub fn aggregate_measures<E>(
    graph: &Graph,
    spec: &MeasuresSpec,
    mut patients: impl FnMut((jiff::civil::Date, jiff::civil::Date), &mut dyn FnMut(&[Scalar])) -> Result<(), E>,
) -> Result<Vec<Table>, E> {
    let mut group_columns: Vec<String> = vec![];
    for m in &spec.measures {
        for (g, _) in &m.group_by {
            if !group_columns.contains(g) {
                group_columns.push(g.clone());
            }
        }
    }
    let outputs = measures_outputs(spec);
    let position: HashMap<NodeId, usize> = outputs.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let mut intervals: Vec<(jiff::civil::Date, jiff::civil::Date)> =
        spec.measures.iter().flat_map(|m| m.intervals.iter().copied()).collect();
    intervals.sort();
    intervals.dedup();
    let mut table = Table { name: "measures".into(), columns: measures_columns(graph, spec, &group_columns), rows: vec![] };
    for (start, end) in intervals {
        let measures: Vec<_> = spec.measures.iter().filter(|m| m.intervals.contains(&(start, end))).collect();
        // Per measure: group key → (numerator, denominator), in first-seen order.
        let mut sums: Vec<(Vec<Vec<Scalar>>, HashMap<Vec<Scalar>, (i64, i64)>)> =
            measures.iter().map(|_| (vec![], HashMap::new())).collect();
        // Adds one patient (its outputs' values, in `outputs` order), patients in id order.
        let mut add = |values: &[Scalar]| {
            let value = |n: NodeId| values[position[&n]].clone();
            for (m, (order, acc)) in measures.iter().zip(sums.iter_mut()) {
                let den = value(m.denominator);
                let in_population = match &den {
                    Some(Value::Bool(b)) => *b,
                    Some(Value::Int(i)) => *i > 0,
                    _ => false,
                };
                if !in_population {
                    continue;
                }
                let key: Vec<Scalar> = m.group_by.iter().map(|(_, n)| value(*n)).collect();
                let entry = acc.entry(key.clone()).or_insert_with(|| {
                    order.push(key);
                    (0, 0)
                });
                entry.0 += as_count(&value(m.numerator));
                entry.1 += as_count(&den);
            }
        };
        patients((start, end), &mut add)?;
        for (m, (order, acc)) in measures.iter().zip(sums) {
            for key in order {
                let (mut num, mut den) = acc[&key];
                if spec.disclosure_control {
                    num = round_count(num);
                    den = round_count(den);
                }
                let ratio = if den == 0 { None } else { Some(Value::Float(Float(num as f64 / den as f64))) };
                let mut row: Vec<Scalar> = vec![
                    Some(Value::Str(m.name.clone())),
                    Some(Value::Date(start)),
                    Some(Value::Date(end)),
                    ratio,
                    Some(Value::Int(num)),
                    Some(Value::Int(den)),
                ];
                for g in &group_columns {
                    row.push(m.group_by.iter().position(|(n, _)| n == g).and_then(|i| key[i].clone()));
                }
                table.rows.push(row);
            }
        }
    }
    Ok(vec![table])
}

/// ehrQL's `get_column_specs_for_measures`.
fn measures_columns(graph: &Graph, spec: &MeasuresSpec, group_columns: &[String]) -> Vec<ColumnSpec> {
    let names = spec.measures.iter().map(|m| Value::Str(m.name.clone())).collect();
    let int = || ColumnKind::Int { min: None, max: None };
    let mut out = vec![
        ColumnSpec { nullable: false, categories: Some(names), ..ColumnSpec::new("measure", ColumnKind::Str) },
        ColumnSpec { nullable: false, ..ColumnSpec::new("interval_start", ColumnKind::Date) },
        ColumnSpec { nullable: false, ..ColumnSpec::new("interval_end", ColumnKind::Date) },
        ColumnSpec::new("ratio", ColumnKind::Float),
        ColumnSpec::new("numerator", int()),
        ColumnSpec::new("denominator", int()),
    ];
    for g in group_columns {
        let node = spec
            .measures
            .iter()
            .find_map(|m| m.group_by.iter().find(|(n, _)| n == g).map(|(_, node)| *node))
            .expect("a group column of some measure");
        out.push(ColumnSpec::of_series(graph, g, node));
    }
    out
}

/// Splits the combined table into one table per measure (for `--output DIR:csv`), dropping
/// the `measure` column and group columns the measure does not use.
pub fn per_measure_tables(spec: &MeasuresSpec, combined: &Table) -> Vec<Table> {
    spec.measures
        .iter()
        .map(|m| {
            let keep: Vec<usize> = combined
                .columns
                .iter()
                .enumerate()
                .filter(|(i, c)| *i > 0 && (*i < 6 || m.group_by.iter().any(|(g, _)| *g == c.name)))
                .map(|(i, _)| i)
                .collect();
            Table {
                name: m.name.clone(),
                columns: keep.iter().map(|&i| combined.columns[i].clone()).collect(),
                rows: combined
                    .rows
                    .iter()
                    .filter(|r| r[0] == Some(Value::Str(m.name.clone())))
                    .map(|r| keep.iter().map(|&i| r[i].clone()).collect())
                    .collect(),
            }
        })
        .collect()
}
