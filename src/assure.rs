//! ehrQL's assurance tests: `quarry assure DEF.py` and `generate-dataset --test-data-file`.
//!
//! The definition's `test_data` is read and checked against the tables' constraints in Python
//! (`_quarry_test_data` in the quarry-python crate, which also writes that half of the report).
//! Here the rows become a table store, the dataset is evaluated over it with the reference
//! evaluator (as ehrQL uses its in-memory engine), each patient's expectations are compared
//! with Python's `==`, and the report is written in ehrQL's words and layout. Past ehrQL, a
//! failing patient's report is followed by why: the patient's other values and the test rows
//! of the tables that the wrong value reads.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use quarry_engine::store::Store;
use quarry_python::{Definition, PyValue, TestData};
use quarry_queries::pyrepr::float_repr;
use quarry_queries::qm::{Float, Graph, NodeId, TableId, Type, Value};
use quarry_queries::semantics::Scalar;
use quarry_queries::spec::DatasetSpec;

/// What running the tests gave: ehrQL's report, whether it passed, and quarry's explanation
/// of the failures (empty when there are none).
pub struct Outcome {
    pub report: String,
    pub passed: bool,
    pub why: String,
}

/// One patient's result, as ehrQL classifies it.
enum Problem {
    InPopulation,
    NotInPopulation,
    UnknownColumns { unexpected: Vec<String>, columns: Vec<String> },
    Values(Vec<(String, String, String)>),
}

/// Runs the definition's assurance tests. `Err` is a message for test data that cannot be
/// used (a value of the wrong type for its column).
pub fn run(def: &Definition, dataset: &DatasetSpec, test: &TestData) -> Result<Outcome, String> {
    let graph = &def.graph;
    let roots = dataset.roots();
    let tables: HashMap<String, TableId> =
        quarry_engine::store::used_tables(graph, &roots).into_iter().map(|t| (graph.table(t).name.clone(), t)).collect();
    let store = store_of(graph, &tables, test)?;
    let evaluated = quarry_engine::evaluate_dataset(graph, dataset, &store).map_err(|e| format!("error evaluating the dataset: {e}"))?;
    let main = &evaluated[0];
    let columns: Vec<String> = main.columns.iter().map(|c| c.name.clone()).collect();
    let results: HashMap<i64, &Vec<Scalar>> = main
        .rows
        .iter()
        .filter_map(|r| match &r[0] {
            Some(Value::Int(p)) => Some((*p, r)),
            _ => None,
        })
        .collect();

    let mut problems: Vec<(i64, Problem)> = vec![];
    for patient in &test.patients {
        let row = results.get(&patient.id);
        let problem = match (patient.expected_in_population, row) {
            (false, Some(_)) => Some(Problem::InPopulation),
            (false, None) => None,
            (true, None) => Some(Problem::NotInPopulation),
            (true, Some(row)) => {
                let unexpected: Vec<String> =
                    patient.expected_columns.iter().map(|(k, _)| k.clone()).filter(|k| !columns.contains(k)).collect();
                if !unexpected.is_empty() {
                    let mut seen = vec![];
                    for k in unexpected {
                        if !seen.contains(&k) {
                            seen.push(k);
                        }
                    }
                    Some(Problem::UnknownColumns { unexpected: seen, columns: columns.clone() })
                } else {
                    let wrong: Vec<(String, String, String)> = patient
                        .expected_columns
                        .iter()
                        .filter_map(|(k, expected)| {
                            let actual = &row[columns.iter().position(|c| c == k).expect("checked above")];
                            (!python_eq(expected, actual)).then(|| (k.clone(), py_str(expected), scalar_str(actual)))
                        })
                        .collect();
                    (!wrong.is_empty()).then_some(Problem::Values(wrong))
                }
            }
        };
        if let Some(p) = problem {
            problems.push((patient.id, p));
        }
    }

    let mut report = constraint_report(&test.findings);
    report.push('\n');
    if problems.is_empty() {
        report.push_str("Validate results: All OK!");
    } else {
        let _ = write!(report, "Validate results: Found errors with {} patient(s)", problems.len());
        for (id, problem) in &problems {
            match problem {
                Problem::InPopulation => {
                    let _ = write!(report, "\n * Patient {id} was unexpectedly in the population");
                }
                Problem::NotInPopulation => {
                    let _ = write!(report, "\n * Patient {id} was unexpectedly not in the population");
                }
                Problem::UnknownColumns { unexpected, columns } => {
                    let _ = write!(report, "\n * Patient {id} results cannot be validated");
                    let listed = columns.iter().map(|c| format!("'{c}'")).collect::<Vec<_>>().join(", ");
                    let _ = write!(report, "\n   * Columns in dataset: {listed}");
                    for k in unexpected {
                        let _ = write!(report, "\n   * Column '{k}' in expected_columns is not in the dataset");
                    }
                }
                Problem::Values(wrong) => {
                    let _ = write!(report, "\n * Patient {id} had unexpected output value(s)");
                    for (k, expected, actual) in wrong {
                        let _ = write!(report, "\n   * for column '{k}', expected '{expected}', got '{actual}'");
                    }
                }
            }
        }
    }
    let passed = test.findings.is_empty() && problems.is_empty();
    let why = explain(graph, dataset, &tables, test, &problems, &columns, &results);
    Ok(Outcome { report, passed, why })
}

/// The test rows as a table store: a patient-level table keeps a patient's last row (as
/// ehrQL's in-memory database does), an event-level table all of them in order.
fn store_of(graph: &Graph, tables: &HashMap<String, TableId>, test: &TestData) -> Result<Store, String> {
    let mut store = Store::default();
    for (name, rows) in &test.tables {
        let Some(&table) = tables.get(name) else { continue };
        let schema = graph.table(table);
        for (patient, values) in rows {
            let row = schema
                .columns
                .iter()
                .zip(values)
                .map(|(column, value)| {
                    scalar_of(&column.type_, value).ok_or_else(|| {
                        format!(
                            "test_data: patient {patient}, table '{name}', column '{}': expected {}, got {} ({})",
                            column.name,
                            type_name(&column.type_),
                            py_repr(value),
                            py_type(value)
                        )
                    })
                })
                .collect::<Result<Vec<Scalar>, String>>()?;
            let rows = store.patients.entry(*patient).or_default().entry(table).or_default();
            if schema.patient_level {
                rows.clear();
            }
            rows.push(row);
        }
    }
    Ok(store)
}

/// A test value as a value of the column's type; `None` if it is not one. An int is accepted
/// for a float column, as Python accepts it wherever a float is expected.
fn scalar_of(type_: &Type, value: &PyValue) -> Option<Scalar> {
    Some(match (type_, value) {
        (_, PyValue::None) => None,
        (Type::Bool, PyValue::Bool(b)) => Some(Value::Bool(*b)),
        (Type::Int, PyValue::Int(i)) => Some(Value::Int(i64::try_from(*i).ok()?)),
        (Type::Float, PyValue::Float(f)) => Some(Value::Float(Float(*f))),
        (Type::Float, PyValue::Int(i)) => Some(Value::Float(Float(*i as f64))),
        (Type::Str | Type::MultiCodeString(_), PyValue::Str(s)) => Some(Value::Str(s.clone())),
        (Type::Code(system), PyValue::Str(s)) => Some(Value::Code(*system, s.clone())),
        (Type::Date, PyValue::Date(d)) => Some(Value::Date(*d)),
        _ => return None,
    })
}

fn type_name(type_: &Type) -> &'static str {
    match type_ {
        Type::Bool => "a bool",
        Type::Int => "an int",
        Type::Float => "a float",
        Type::Str => "a str",
        Type::Date => "a datetime.date",
        Type::Code(_) | Type::MultiCodeString(_) => "a code as a str",
        Type::Set(_) => "a set",
    }
}

fn py_type(value: &PyValue) -> String {
    match value {
        PyValue::None => "NoneType".into(),
        PyValue::Bool(_) => "bool".into(),
        PyValue::Int(_) => "int".into(),
        PyValue::Float(_) => "float".into(),
        PyValue::Str(_) => "str".into(),
        PyValue::Date(_) => "datetime.date".into(),
        PyValue::Other { type_name, .. } => type_name.clone(),
    }
}

/// Python's `str()` of a test value.
fn py_str(value: &PyValue) -> String {
    match value {
        PyValue::None => "None".into(),
        PyValue::Bool(b) => if *b { "True" } else { "False" }.into(),
        PyValue::Int(i) => i.to_string(),
        PyValue::Float(f) => float_repr(*f),
        PyValue::Str(s) => s.clone(),
        PyValue::Date(d) => d.to_string(),
        PyValue::Other { text, .. } => text.clone(),
    }
}

/// Python's `repr()`, for messages.
fn py_repr(value: &PyValue) -> String {
    match value {
        PyValue::Str(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        PyValue::Date(d) => format!("datetime.date({}, {}, {})", d.year(), d.month(), d.day()),
        other => py_str(other),
    }
}

/// Python's `str()` of an evaluated value (ehrQL's in-memory engine holds codes as the
/// strings the test data gave).
fn scalar_str(value: &Scalar) -> String {
    match value {
        None => "None".into(),
        Some(Value::Bool(b)) => if *b { "True" } else { "False" }.into(),
        Some(Value::Int(i)) => i.to_string(),
        Some(Value::Float(f)) => float_repr(f.0),
        Some(Value::Str(s) | Value::Code(_, s)) => s.clone(),
        Some(Value::Date(d)) => d.to_string(),
        Some(Value::Set(..)) => "<set>".into(),
    }
}

/// Python's `repr()` of an evaluated value.
fn scalar_repr(value: &Scalar) -> String {
    match value {
        Some(Value::Str(s) | Value::Code(_, s)) => py_repr(&PyValue::Str(s.clone())),
        Some(Value::Date(d)) => py_repr(&PyValue::Date(*d)),
        other => scalar_str(other),
    }
}

/// Python's `expected == actual` for a test value and an evaluated one: numbers compare by
/// value across bool, int and float (exactly, as CPython compares an int with a float);
/// strings with strings and codes; dates with dates; `None` only with `None`.
pub fn python_eq(expected: &PyValue, actual: &Scalar) -> bool {
    fn int_float(i: i128, f: f64) -> bool {
        f.is_finite() && f.fract() == 0.0 && f.abs() < 1.7e38 && f as i128 == i
    }
    match (expected, actual) {
        (PyValue::None, None) => true,
        (_, None) | (PyValue::None, _) => false,
        (PyValue::Bool(b), Some(a)) => match a {
            Value::Bool(x) => x == b,
            Value::Int(x) => i128::from(*x) == i128::from(*b),
            Value::Float(x) => x.0 == f64::from(u8::from(*b)),
            _ => false,
        },
        (PyValue::Int(i), Some(a)) => match a {
            Value::Bool(x) => i128::from(*x) == *i,
            Value::Int(x) => i128::from(*x) == *i,
            Value::Float(x) => int_float(*i, x.0),
            _ => false,
        },
        (PyValue::Float(f), Some(a)) => match a {
            Value::Bool(x) => f64::from(u8::from(*x)) == *f,
            Value::Int(x) => int_float(i128::from(*x), *f),
            Value::Float(x) => x.0 == *f,
            _ => false,
        },
        (PyValue::Str(s), Some(Value::Str(x) | Value::Code(_, x))) => s == x,
        (PyValue::Date(d), Some(Value::Date(x))) => d == x,
        _ => false,
    }
}

/// Past ehrQL: for each failing patient, the dataset row they got, and the test rows of the
/// tables behind each wrong value (or, for a population verdict, behind the population).
fn explain(
    graph: &Graph,
    dataset: &DatasetSpec,
    tables: &HashMap<String, TableId>,
    test: &TestData,
    problems: &[(i64, Problem)],
    columns: &[String],
    results: &HashMap<i64, &Vec<Scalar>>,
) -> String {
    if problems.is_empty() {
        return String::new();
    }
    let rows: BTreeMap<&str, Vec<&(i64, Vec<PyValue>)>> =
        test.tables.iter().map(|(name, rows)| (name.as_str(), rows.iter().collect())).collect();
    let variable = |name: &str| -> Option<NodeId> { dataset.variables.iter().find(|(n, _)| n == name).map(|(_, id)| *id) };
    let mut out = String::from("\n\nWhy (quarry's explanation; not part of ehrQL's report):");
    for (id, problem) in problems {
        let _ = write!(out, "\n * Patient {id}");
        if let Some(row) = results.get(id) {
            let values = columns.iter().zip(row.iter()).map(|(c, v)| format!("{c}={}", scalar_repr(v))).collect::<Vec<_>>().join(", ");
            let _ = write!(out, "\n   dataset row: {values}");
        } else {
            out.push_str("\n   not in the population");
        }
        // Each table behind the verdict, with what reads it.
        let readers: Vec<(String, NodeId)> = match problem {
            Problem::Values(wrong) => wrong.iter().filter_map(|(k, _, _)| variable(k).map(|n| (format!("'{k}'"), n))).collect(),
            Problem::InPopulation | Problem::NotInPopulation => vec![("the population".into(), dataset.population)],
            Problem::UnknownColumns { .. } => continue,
        };
        let mut by_table: Vec<(TableId, Vec<&str>)> = vec![];
        for (reader, node) in &readers {
            for table in quarry_engine::store::used_tables(graph, &[*node]) {
                match by_table.iter_mut().find(|(t, _)| *t == table) {
                    Some((_, names)) => names.push(reader),
                    None => by_table.push((table, vec![reader])),
                }
            }
        }
        if by_table.is_empty() && !readers.is_empty() {
            let names = readers.iter().map(|(r, _)| r.as_str()).collect::<Vec<_>>().join(", ");
            let _ = write!(out, "\n   {names}: read no tables");
        }
        for (table, names) in by_table {
            let schema = graph.table(table);
            let name = schema.name.as_str();
            if !tables.contains_key(name) {
                continue;
            }
            let mine: Vec<&Vec<PyValue>> = rows.get(name).into_iter().flatten().filter(|(p, _)| p == id).map(|(_, v)| v).collect();
            let kept = if schema.patient_level && mine.len() > 1 { " (the last is used, as in ehrQL)" } else { "" };
            let count = match mine.len() {
                0 => "no rows".to_string(),
                1 => "1 row".to_string(),
                n => format!("{n} rows{kept}"),
            };
            let _ = write!(out, "\n   {name}, read by {}: {count}", names.join(", "));
            for values in mine {
                let cells = schema
                    .columns
                    .iter()
                    .zip(values)
                    .filter(|(_, v)| **v != PyValue::None)
                    .map(|(c, v)| format!("'{}': {}", c.name, py_repr(v)))
                    .collect::<Vec<_>>()
                    .join(", ");
                let _ = write!(out, "\n     {{{cells}}}");
            }
        }
    }
    out
}

/// The "Validate test data" half of ehrQL's report, in its words and layout.
fn constraint_report(findings: &[quarry_python::Finding]) -> String {
    use quarry_python::Finding;
    if findings.is_empty() {
        return "Validate test data: All OK!".to_string();
    }
    let who = |f: &Finding| match f {
        Finding::Values { patient, .. } | Finding::Columns { patient, .. } | Finding::Rows { patient, .. } => *patient,
    };
    let mut patients: Vec<i64> = findings.iter().map(who).collect();
    patients.dedup();
    let mut out = format!("Validate test data: Found errors with {} patient(s)", patients.len());
    for f in findings {
        let _ = match f {
            Finding::Values { patient, table, broken } => {
                let _ = write!(
                    out,
                    "\n * Patient {patient} had {} test data value(s) in table '{table}' that did not meet the constraint(s)",
                    broken.len()
                );
                broken.iter().try_for_each(|(column, rule, value)| write!(out, "\n   * for column '{column}' with '{rule}', got '{value}'"))
            }
            Finding::Columns { patient, table, unknown, known } => write!(
                out,
                "\n * Patient {patient} had invalid columns in the test data for table '{table}'\n       invalid columns: {}\n     valid columns are: {}",
                unknown.join(", "),
                known.join(", ")
            ),
            Finding::Rows { patient, table, rows } => write!(
                out,
                "\n * Patient {patient} had {rows} rows of test data for table '{table}' but this table accepts at most one row per patient"
            ),
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_equality_across_numbers_strings_and_none() {
        let int = |i: i64| Some(Value::Int(i));
        let float = |f: f64| Some(Value::Float(Float(f)));
        assert!(python_eq(&PyValue::Int(2), &float(2.0)));
        assert!(python_eq(&PyValue::Float(2.0), &int(2)));
        assert!(!python_eq(&PyValue::Float(0.3), &float(0.1 + 0.2)));
        assert!(python_eq(&PyValue::Bool(true), &int(1)));
        assert!(python_eq(&PyValue::Int(1), &Some(Value::Bool(true))));
        assert!(!python_eq(&PyValue::Str("1".into()), &int(1)));
        assert!(python_eq(&PyValue::Str("123".into()), &Some(Value::Code(quarry_queries::qm::CodeSystem::SNOMEDCT, "123".into()))));
        assert!(!python_eq(&PyValue::Str("2020-01-01".into()), &Some(Value::Date(jiff::civil::date(2020, 1, 1)))));
        assert!(python_eq(&PyValue::None, &None));
        assert!(!python_eq(&PyValue::Int(0), &None));
        assert!(!python_eq(&PyValue::Float(f64::NAN), &float(f64::NAN)));
        assert!(!python_eq(&PyValue::Int((1 << 100) + 1), &float(2f64.powi(100))));
        assert!(python_eq(&PyValue::Int(1 << 100), &float(2f64.powi(100))));
    }
}
