//! The engine's property test, in process (issue 22): random valid query-model graphs — built
//! through the graph's own validating constructors, not from Python text — over random tables,
//! evaluated by the reference evaluator and by the columnar one with partitions of one, two,
//! three, seven and the default number of patients. Every output table must be equal, columns
//! and rows, or both evaluators must fail with the same kind of error.
//!
//! The generator grows a pool of nodes by trying random constructions (a filter of a frame by
//! a condition in its domain, a sort, a pick, a column, a value or set, an aggregation, any
//! function, a case, an inline table, a parameter); the graph refuses the invalid ones, as it
//! refuses them from a definition. A dataset then takes a patient-level boolean as its
//! population, patient-level series as variables and, in some cases, event tables of one
//! domain's series. The test fails if some node kind, function or aggregation never reached an
//! output in any case, so it cannot quietly stop covering one.

use std::collections::{BTreeMap, BTreeSet};

use jiff::civil::{Date, date};
use quarry_engine::dummy::rng::Rng;
use quarry_engine::output::Table;
use quarry_engine::store::Store;
use quarry_engine::{EvalOptions, evaluate_dataset_columnar_with, evaluate_dataset_with};
use quarry_queries::qm::{
    AggregateByPatient as A, CodeSystem, Column, Domain, Float, Function as F, Graph, Kind, Node, NodeId, Position, TableId, TableSchema,
    Type, Value,
};
use quarry_queries::semantics::{EvalError, Scalar};
use quarry_queries::spec::DatasetSpec;

const CASES: u64 = 1500;
const PARTITIONS: [Option<usize>; 5] = [Some(1), Some(2), Some(3), Some(7), None];

fn column(name: &str, type_: Type) -> Column {
    Column { name: name.into(), type_, constraints: vec![], description: String::new() }
}

struct Schemas {
    patients: TableId,
    events: TableId,
    meds: TableId,
    inline: TableId,
}

fn declare(g: &mut Graph) -> Schemas {
    let table = |name: &str, patient_level: bool, columns: Vec<Column>| TableSchema {
        name: name.into(),
        columns,
        patient_level,
        required_permission: None,
    };
    let patients = table(
        "patients",
        true,
        vec![
            column("date_of_birth", Type::Date),
            column("sex", Type::Str),
            column("height", Type::Float),
            column("smoker", Type::Bool),
            column("children", Type::Int),
        ],
    );
    let events = table(
        "events",
        false,
        vec![
            column("date", Type::Date),
            column("code", Type::Code(CodeSystem::SNOMEDCT)),
            column("value", Type::Float),
            column("count", Type::Int),
            column("flag", Type::Bool),
            column("note", Type::Str),
        ],
    );
    let meds = table("meds", false, vec![column("date", Type::Date), column("dmd", Type::Code(CodeSystem::DMD)), column("qty", Type::Int)]);
    let inline = table("inline", true, vec![column("score", Type::Int), column("onset", Type::Date), column("label", Type::Str)]);
    Schemas {
        patients: g.declare_table(patients).unwrap(),
        events: g.declare_table(events).unwrap(),
        meds: g.declare_table(meds).unwrap(),
        inline: g.declare_table(inline).unwrap(),
    }
}

/// Few distinct values per type, so that equal values, ties and set hits are common.
fn value(rng: &mut Rng, type_: &Type) -> Value {
    match type_ {
        Type::Bool => Value::Bool(rng.chance(0.5)),
        // Now and then an integer at the edges: month and year arithmetic leaving years
        // 1–9999, overflowing sums and products, the smallest integer divided by -1.
        Type::Int if rng.chance(0.03) => Value::Int(*rng.pick(&[i64::MIN, i64::MAX, -1, 120_001, -95_000, 8_000, -2_020])),
        Type::Int => Value::Int(rng.range(-3, 12)),
        Type::Float => Value::Float(Float(*rng.pick(&[0.5, 1.0, 2.25, -1.5, 3.0, 0.1, 0.0, 1e-3, 7.75]))),
        Type::Str => Value::Str(rng.pick(&["a", "b", "ab", "", "x y", "B"]).to_string()),
        Type::Date => Value::Date(random_date(rng)),
        Type::Code(s) => Value::Code(*s, rng.pick(&["1", "2", "12", "123", "21"]).to_string()),
        Type::MultiCodeString(_) | Type::Set(_) => unreachable!("no such columns here"),
    }
}

fn random_date(rng: &mut Rng) -> Date {
    // Month ends and leap days too, for month and year arithmetic.
    let days = *rng.pick(&[0i64, 1, 27, 28, 30, 58, 59, 365, 366, 400, 1000, 1500, 2000, 2100]) + rng.range(0, 2);
    date(2019, 12, 31).checked_add(jiff::Span::new().days(days)).unwrap()
}

fn scalar(rng: &mut Rng, type_: &Type) -> Scalar {
    (!rng.chance(0.2)).then(|| value(rng, type_))
}

fn row(rng: &mut Rng, schema: &TableSchema) -> Vec<Scalar> {
    schema.columns.iter().map(|c| scalar(rng, &c.type_)).collect()
}

/// Patients with a `patients` row (most), events and medications (some none at all).
fn store(rng: &mut Rng, g: &Graph, s: &Schemas) -> (Store, Vec<i64>) {
    let mut ids: BTreeSet<i64> = BTreeSet::new();
    for _ in 0..rng.range(0, 12) {
        ids.insert(rng.range(1, 30));
    }
    let mut store = Store::default();
    for &p in &ids {
        let tables = store.patients.entry(p).or_default();
        if rng.chance(0.85) {
            tables.insert(s.patients, vec![row(rng, g.table(s.patients))]);
        }
        for (t, mean) in [(s.events, 2.5), (s.meds, 1.0)] {
            let n = rng.geometric(mean, 6);
            if n > 0 {
                tables.insert(t, (0..n).map(|_| row(rng, g.table(t))).collect());
            }
        }
    }
    (store, ids.into_iter().collect())
}

fn type_of(g: &Graph, n: NodeId) -> Option<&Type> {
    g.type_of(n)
}

fn is_series(g: &Graph, n: NodeId) -> bool {
    matches!(g.kind(n), Kind::Series(_))
}

/// A random node of the pool that `keep` accepts.
fn choose(rng: &mut Rng, pool: &[NodeId], keep: impl Fn(NodeId) -> bool) -> Option<NodeId> {
    let candidates: Vec<NodeId> = pool.iter().copied().filter(|n| keep(*n)).collect();
    (!candidates.is_empty()).then(|| *rng.pick(&candidates))
}

/// A series that can be combined with `a`: the same domain, or either patient-level.
fn partner(rng: &mut Rng, g: &Graph, pool: &[NodeId], a: NodeId, type_ok: impl Fn(&Type) -> bool) -> Option<NodeId> {
    let da = g.domain(a);
    choose(rng, pool, |n| {
        is_series(g, n)
            && type_of(g, n).is_some_and(&type_ok)
            && (g.domain(n) == da || g.domain(n) == Domain::Patient || da == Domain::Patient)
    })
}

fn numeric(t: &Type) -> bool {
    matches!(t, Type::Int | Type::Float)
}

fn not_set(t: &Type) -> bool {
    !matches!(t, Type::Set(_))
}

/// One attempted construction; `None` when the pool has nothing suitable or the graph refuses.
fn grow(rng: &mut Rng, g: &mut Graph, s: &Schemas, pool: &[NodeId], inline_rows: &[i64]) -> Option<NodeId> {
    let event_frame = |g: &Graph, n: NodeId| matches!(g.kind(n), Kind::EventFrame { .. });
    match rng.below(20) {
        0 => g.select_table(if rng.chance(0.7) { s.events } else { s.meds }).ok(),
        1 => g.select_patient_table(s.patients).ok(),
        2 | 3 => {
            let frame = choose(rng, pool, |n| event_frame(g, n))?;
            let condition = choose(rng, pool, |n| type_of(g, n) == Some(&Type::Bool))?;
            g.filter(frame, condition).ok()
        }
        4 => {
            let frame = choose(rng, pool, |n| event_frame(g, n))?;
            let key =
                choose(rng, pool, |n| type_of(g, n).is_some_and(|t| not_set(t) && *t != Type::Bool) && g.domain(n) != Domain::Patient)?;
            g.sort(frame, key).ok()
        }
        5 => {
            let frame = choose(rng, pool, |n| matches!(g.kind(n), Kind::EventFrame { sorted: true, .. }))?;
            g.pick_one_row_per_patient(frame, if rng.chance(0.5) { Position::First } else { Position::Last }).ok()
        }
        6..=8 => {
            let frame = choose(rng, pool, |n| !is_series(g, n))?;
            let table = match g.kind(frame) {
                Kind::EventFrame { table, .. } | Kind::PatientFrame { table } => *table,
                Kind::Series(_) => unreachable!("a frame"),
            };
            let name = rng.pick(&g.table(table).columns).name.clone();
            g.select_column(frame, &name).ok()
        }
        9 => {
            let types =
                [Type::Bool, Type::Int, Type::Float, Type::Str, Type::Date, Type::Code(CodeSystem::SNOMEDCT), Type::Code(CodeSystem::DMD)];
            let t = rng.pick(&types).clone();
            if rng.chance(0.4) && t != Type::Bool {
                let values = (0..rng.range(0, 4)).map(|_| value(rng, &t)).collect();
                Some(g.value(Value::set(t, values).unwrap()))
            } else {
                Some(g.value(value(rng, &t)))
            }
        }
        10 | 11 => {
            let series = |g: &Graph, n: NodeId| is_series(g, n) && g.domain(n) != Domain::Patient;
            let aggregate = match rng.below(9) {
                0 => A::Exists(choose(rng, pool, |n| !is_series(g, n))?),
                1 => A::Count(choose(rng, pool, |n| !is_series(g, n))?),
                2 => A::CountDistinct(choose(rng, pool, |n| series(g, n))?),
                3 => A::CountEpisodes {
                    source: choose(rng, pool, |n| series(g, n) && type_of(g, n) == Some(&Type::Date))?,
                    maximum_gap_days: rng.range(0, 400),
                },
                4 => A::Min(choose(rng, pool, |n| series(g, n))?),
                5 => A::Max(choose(rng, pool, |n| series(g, n))?),
                6 => A::Sum(choose(rng, pool, |n| series(g, n) && type_of(g, n).is_some_and(numeric))?),
                7 => A::Mean(choose(rng, pool, |n| series(g, n) && type_of(g, n).is_some_and(numeric))?),
                _ => A::CombineAsSet(choose(rng, pool, |n| series(g, n))?),
            };
            g.aggregate(aggregate).ok()
        }
        12..=16 => function(rng, g, pool),
        17 | 18 => {
            let cases = (0..rng.range(1, 3))
                .map(|_| {
                    let condition = choose(rng, pool, |n| type_of(g, n) == Some(&Type::Bool))?;
                    let value = if rng.chance(0.85) { Some(partner(rng, g, pool, condition, not_set)?) } else { None };
                    Some((condition, value))
                })
                .collect::<Option<Vec<_>>>()?;
            let anchor = cases[0].1.unwrap_or(cases[0].0);
            let default = if rng.chance(0.6) { Some(partner(rng, g, pool, anchor, not_set)?) } else { None };
            g.case(cases, default).ok()
        }
        _ => {
            if rng.chance(0.5) {
                let mut rows = vec![];
                for &p in inline_rows {
                    if rng.chance(0.6) {
                        rows.push((p, row(rng, g.table(s.inline))));
                    }
                }
                g.inline_patient_table(s.inline, rows).ok()
            } else if rng.chance(0.5) {
                Some(g.parameter("interval_start_date", Type::Date))
            } else {
                Some(g.parameter("threshold", Type::Int))
            }
        }
    }
}

/// `a` and one or two partners of it (the arguments of an n-ary function).
fn with_partners(rng: &mut Rng, g: &Graph, pool: &[NodeId], a: NodeId, type_ok: impl Fn(&Type) -> bool) -> Option<Vec<NodeId>> {
    let n = rng.range(1, 2);
    let mut args = vec![a];
    for _ in 0..n {
        args.push(partner(rng, g, pool, a, &type_ok)?);
    }
    Some(args)
}

fn function(rng: &mut Rng, g: &mut Graph, pool: &[NodeId]) -> Option<NodeId> {
    let a = choose(rng, pool, |n| is_series(g, n) && type_of(g, n).is_some_and(not_set))?;
    let ta = type_of(g, a)?.clone();
    let same = |t: &Type| *t == ta || (numeric(t) && numeric(&ta));
    let f = match rng.below(35) {
        0 => F::Eq(a, partner(rng, g, pool, a, same)?),
        1 => F::Ne(a, partner(rng, g, pool, a, same)?),
        2 => F::Lt(a, partner(rng, g, pool, a, same)?),
        3 => F::Le(a, partner(rng, g, pool, a, same)?),
        4 => F::Gt(a, partner(rng, g, pool, a, same)?),
        5 => F::Ge(a, partner(rng, g, pool, a, same)?),
        6 | 7 => {
            let args = with_partners(rng, g, pool, a, |t| *t == Type::Bool)?;
            if rng.chance(0.5) { F::And(args) } else { F::Or(args) }
        }
        8 => F::Not(a),
        9 => F::IsNull(a),
        10 => F::Negate(a),
        11 => F::Absolute(a),
        12 => F::Add(a, partner(rng, g, pool, a, numeric)?),
        13 => F::Subtract(a, partner(rng, g, pool, a, numeric)?),
        14 => F::Multiply(a, partner(rng, g, pool, a, numeric)?),
        15 => F::TrueDivide(a, partner(rng, g, pool, a, numeric)?),
        16 => F::FloorDivide(a, partner(rng, g, pool, a, numeric)?),
        17 => F::Power(a, partner(rng, g, pool, a, numeric)?),
        18 => F::CastToInt(a),
        19 => F::CastToFloat(a),
        20 => F::DateAddDays(a, partner(rng, g, pool, a, |t| *t == Type::Int)?),
        21 => F::DateAddMonths(a, partner(rng, g, pool, a, |t| *t == Type::Int)?),
        22 => F::DateAddYears(a, partner(rng, g, pool, a, |t| *t == Type::Int)?),
        23 => F::DateDifferenceInDays(a, partner(rng, g, pool, a, |t| *t == Type::Date)?),
        24 => F::DateDifferenceInMonths(a, partner(rng, g, pool, a, |t| *t == Type::Date)?),
        25 => F::DateDifferenceInYears(a, partner(rng, g, pool, a, |t| *t == Type::Date)?),
        26 => F::YearFromDate(a),
        27 => F::MonthFromDate(a),
        28 => F::DayFromDate(a),
        29 => F::ToFirstOfYear(a),
        30 => F::ToFirstOfMonth(a),
        31 => F::StringContains(a, partner(rng, g, pool, a, |t| *t == Type::Str)?),
        32 => {
            // Membership in a set of the series' type: a literal set, or a patient's
            // `combine_as_set()`.
            let set = partner(rng, g, pool, a, |t| matches!(t, Type::Set(e) if **e == ta)).or_else(|| {
                let values = (0..rng.range(0, 3)).map(|_| value(rng, &ta)).collect();
                Value::set(ta.clone(), values).ok().map(|v| g.value(v))
            })?;
            F::In(a, set)
        }
        33 | 34 => {
            let args = with_partners(rng, g, pool, a, same)?;
            if rng.chance(0.5) { F::MinimumOf(args) } else { F::MaximumOf(args) }
        }
        _ => unreachable!(),
    };
    g.function(f).ok()
}

/// A random dataset over the pool, or `None` if the pool has no patient-level boolean.
fn dataset(rng: &mut Rng, g: &mut Graph, pool: &[NodeId]) -> Option<DatasetSpec> {
    let outputtable = |g: &Graph, n: NodeId| is_series(g, n) && type_of(g, n).is_some_and(not_set);
    let c = choose(rng, pool, |n| type_of(g, n) == Some(&Type::Bool) && g.domain(n) == Domain::Patient)?;
    let population = match rng.below(4) {
        0 => c,
        1 => {
            let null = g.function(F::IsNull(c)).ok()?;
            g.function(F::Or(vec![c, null])).ok()?
        }
        2 => {
            let not = g.function(F::Not(c)).ok()?;
            g.function(F::Or(vec![c, not])).ok()?
        }
        _ => g.function(F::IsNull(c)).ok()?,
    };
    let variables = (0..rng.range(1, 6))
        .filter_map(|i| choose(rng, pool, |n| outputtable(g, n) && g.domain(n) == Domain::Patient).map(|n| (format!("v{i}"), n)))
        .collect();
    let mut events = vec![];
    let domains: BTreeSet<NodeId> = pool
        .iter()
        .filter_map(|&n| match g.domain(n) {
            Domain::Rows(d) if outputtable(g, n) => Some(d),
            _ => None,
        })
        .collect();
    let domains: Vec<NodeId> = domains.into_iter().collect();
    for t in 0..rng.range(0, 2) {
        if domains.is_empty() {
            break;
        }
        let d = *rng.pick(&domains);
        let columns: Vec<(String, NodeId)> = (0..rng.range(1, 3))
            .filter_map(|i| choose(rng, pool, |n| outputtable(g, n) && g.domain(n) == Domain::Rows(d)).map(|n| (format!("c{i}"), n)))
            .collect();
        let mut seen = BTreeSet::new();
        let columns: Vec<(String, NodeId)> = columns.into_iter().filter(|(_, n)| seen.insert(*n)).collect();
        events.push((format!("events_{t}"), columns));
    }
    Some(DatasetSpec { population, variables, events, dummy: Default::default() })
}

/// A node's kind for the coverage check: its serialized kind, literal sets apart.
fn kind_name(node: &Node) -> String {
    match node {
        Node::Value(Value::Set(..)) => "Value(set)".into(),
        other => quarry_queries::serialize::node_kind(other),
    }
}

fn describe(tables: &Result<Vec<Table>, EvalError>) -> String {
    match tables {
        Err(e) => format!("error: {e}"),
        Ok(tables) => tables
            .iter()
            .map(|t| {
                let names: Vec<&str> = t.columns.iter().map(|c| c.name.as_str()).collect();
                format!("{} {:?}\n{}", t.name, names, quarry_engine::sink::rows_text(&t.rows))
            })
            .collect(),
    }
}

fn same(a: &Result<Vec<Table>, EvalError>, b: &Result<Vec<Table>, EvalError>) -> bool {
    match (a, b) {
        (Ok(a), Ok(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.name == y.name && x.columns == y.columns && x.rows == y.rows)
        }
        // Partitions may meet a different failing patient first; the failure is the same kind.
        (Err(a), Err(b)) => a.kind == b.kind,
        _ => false,
    }
}

#[test]
fn columnar_equals_reference_on_random_query_model_graphs() {
    let mut covered: BTreeMap<String, usize> = BTreeMap::new();
    let (mut datasets, mut rows, mut errors) = (0, 0, 0);
    for case in 0..CASES {
        let mut rng = Rng::new(22, case, 0);
        let mut g = Graph::new();
        let s = declare(&mut g);
        let (store, ids) = store(&mut rng, &g, &s);
        // Inline tables name some stored patients and some of their own.
        let mut inline_rows: Vec<i64> = ids.iter().copied().filter(|_| rng.chance(0.5)).collect();
        inline_rows.extend([40, 41].into_iter().filter(|_| rng.chance(0.3)));
        let mut pool: Vec<NodeId> = vec![g.select_table(s.events).unwrap(), g.select_patient_table(s.patients).unwrap()];
        for _ in 0..rng.range(20, 90) {
            if let Some(n) = grow(&mut rng, &mut g, &s, &pool, &inline_rows)
                && !pool.contains(&n)
            {
                pool.push(n);
            }
        }
        let Some(spec) = dataset(&mut rng, &mut g, &pool) else { continue };
        datasets += 1;
        let options = EvalOptions {
            params: vec![("interval_start_date".into(), scalar(&mut rng, &Type::Date)), ("threshold".into(), scalar(&mut rng, &Type::Int))],
            partition: None,
        };
        let expected = evaluate_dataset_with(&g, &spec, &store, &options);
        match &expected {
            Ok(tables) => rows += tables.iter().map(|t| t.rows.len()).sum::<usize>(),
            Err(_) => errors += 1,
        }
        for partition in PARTITIONS {
            let got = evaluate_dataset_columnar_with(&g, &spec, &store, &EvalOptions { partition, ..options.clone() });
            assert!(
                same(&expected, &got),
                "case {case}, partition {partition:?}: the columnar evaluator differs from the reference\n\
                 graph: {g:#?}\ndataset: {spec:#?}\n--- reference\n{}\n--- columnar\n{}",
                describe(&expected),
                describe(&got)
            );
        }
        for n in g.reachable_from(&spec.roots()) {
            *covered.entry(kind_name(g.node(n))).or_default() += 1;
        }
    }
    eprintln!("{datasets} datasets, {rows} output rows, {errors} evaluation errors; nodes reaching an output, by kind: {covered:?}");
    let kinds = quarry_queries::serialize::NODE_KINDS.iter().chain(&["Value(set)"]);
    let missing: Vec<&&str> = kinds.filter(|k| !covered.contains_key(**k)).collect();
    assert!(missing.is_empty(), "never reached an output in {CASES} cases: {missing:?} (covered: {covered:?})");
    assert!(datasets > CASES * 3 / 4, "only {datasets} of {CASES} cases built a dataset");
    assert!(rows > 1000, "only {rows} output rows over all cases");
    assert!(errors * 4 < datasets, "{errors} of {datasets} datasets failed to evaluate");
}
