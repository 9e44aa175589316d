//! `quarry explain DEF.py --patient ID`: whether one patient is in the population and why,
//! and where each variable's value came from. None of the peers has it.
//!
//! The dataset is evaluated for the patient with the reference evaluator (slow, always right).
//! The population condition is shown as the tree of its sub-expressions, each with its value
//! for the patient (three-valued: True, False, NULL) and the line of the definition that made
//! it; in `&`, `|` and `~` the branches that decide the result are marked `*`. Where an
//! expression reads rows, the patient's rows are listed: the frame's rows an aggregate counted,
//! the row a pick chose.

use std::collections::HashMap;

use quarry_engine::reference::{Evaluator, PatientValues};
use quarry_engine::store::Store;
use quarry_python::Definition;
use quarry_queries::qm::{AggregateByPatient, Function, Graph, Kind, Node, NodeId, Value};
use quarry_queries::semantics::Scalar;
use quarry_queries::spec::DatasetSpec;
use serde_json::json;

/// Rows listed per frame at most.
const MAX_ROWS: usize = 20;

/// One explained sub-expression.
pub struct Explained {
    pub op: String,
    pub value: Scalar,
    pub at: Option<(String, u32)>,
    /// In `&`/`|`/`~`: whether this branch decides its parent's value.
    pub decides: bool,
    pub children: Vec<Explained>,
    /// Rows read here: (what, table, rows as `column: value` pairs).
    pub rows: Option<RowsRead>,
}

/// Rows an expression read: what they are (`rows read`, `picked row`, `row`), their table, and
/// each row's non-NULL cells.
pub struct RowsRead {
    pub what: &'static str,
    pub table: String,
    pub rows: Vec<Vec<(String, Scalar)>>,
}

pub struct Explanation {
    pub patient: i64,
    pub in_population: bool,
    pub population: Explained,
    pub variables: Vec<(String, Explained)>,
}

struct Context<'a> {
    graph: &'a Graph,
    def: &'a Definition,
    values: &'a PatientValues,
    store: &'a Store,
    patient: i64,
}

/// Explains `patient` (who need not be in the store: a patient with no rows anywhere).
pub fn explain(def: &Definition, dataset: &DatasetSpec, store: &Store, patient: i64, only: Option<&str>) -> Result<Explanation, String> {
    let graph = &def.graph;
    let mut roots = vec![dataset.population];
    roots.extend(dataset.variables.iter().map(|(_, n)| *n));
    let evaluator = Evaluator::new(graph, &roots);
    let values =
        evaluator.patient(patient, store.patients.get(&patient)).map_err(|e| format!("error evaluating patient {patient}: {e}"))?;
    let cx = Context { graph, def, values: &values, store, patient };
    let population = cx.explain(dataset.population, 0);
    let in_population = values.scalar(dataset.population) == Some(Value::Bool(true));
    let variables = dataset
        .variables
        .iter()
        .filter(|(name, _)| only.is_none_or(|o| o == name))
        .map(|(name, n)| (name.clone(), cx.explain(*n, 0)))
        .collect();
    Ok(Explanation { patient, in_population, population, variables })
}

impl Context<'_> {
    fn explain(&self, node: NodeId, depth: usize) -> Explained {
        let graph = self.graph;
        // A literal is its own value (a set literal of `is_in` has no per-patient value).
        let value = match graph.node(node) {
            Node::Value(v) => Some(v.clone()),
            _ => self.values.scalar(node),
        };
        let (op, children): (String, Vec<NodeId>) = match graph.node(node) {
            Node::Function(f) => (function_name(f), graph.children(node)),
            Node::Case { .. } => ("case".into(), graph.children(node)),
            Node::AggregateByPatient(a) => (aggregate_name(a), vec![]),
            Node::SelectColumn { name, .. } => (format!(".{name}"), vec![]),
            Node::Value(_) => ("value".into(), vec![]),
            Node::Parameter { name, .. } => (format!("parameter {name}"), vec![]),
            other => (format!("{other:?}"), vec![]),
        };
        let mut children: Vec<Explained> = if depth < 40 {
            children.into_iter().filter(|c| matches!(graph.kind(*c), Kind::Series(_))).map(|c| self.explain(c, depth + 1)).collect()
        } else {
            vec![]
        };
        if let Node::Function(Function::And(_) | Function::Or(_) | Function::Not(_)) = graph.node(node) {
            let deciding = |c: &Explained| match (graph.node(node), &value) {
                (Node::Function(Function::Not(_)), _) => true,
                (Node::Function(Function::And(_)), Some(Value::Bool(false))) => c.value == Some(Value::Bool(false)),
                (Node::Function(Function::Or(_)), Some(Value::Bool(true))) => c.value == Some(Value::Bool(true)),
                (_, None) => c.value.is_none(),
                _ => true,
            };
            for c in &mut children {
                c.decides = deciding(c);
            }
        }
        Explained { op, value, at: self.def.locations.get(&node).cloned(), decides: false, children, rows: self.rows(node) }
    }

    /// The rows an expression reads directly: a column of a picked row, or the frame an
    /// aggregate reads.
    fn rows(&self, node: NodeId) -> Option<RowsRead> {
        let graph = self.graph;
        match graph.node(node) {
            Node::SelectColumn { source, .. } => match graph.kind(*source) {
                Kind::PatientFrame { table } => {
                    let schema = graph.table(*table);
                    let row = self.values.frame_row(*source).flatten();
                    let what = if matches!(graph.node(*source), Node::PickOneRowPerPatient { .. }) { "picked row" } else { "row" };
                    Some(RowsRead { what, table: schema.name.clone(), rows: row.map(|r| vec![self.cells(*table, r)]).unwrap_or_default() })
                }
                _ => None,
            },
            Node::AggregateByPatient(a) => {
                let source = quarry_queries::qm::aggregate_input(a);
                let frame = match graph.kind(source) {
                    Kind::EventFrame { .. } | Kind::PatientFrame { .. } => source,
                    Kind::Series(_) => frame_of(graph, source)?,
                };
                let (Kind::EventFrame { table, .. } | Kind::PatientFrame { table }) = graph.kind(frame).clone() else { return None };
                let schema = graph.table(table);
                let all = self.store.patients.get(&self.patient).and_then(|t| t.get(&table));
                let indices: Vec<usize> = match self.values.frame_rows(frame) {
                    Some(rows) => rows.to_vec(),
                    None => self.values.frame_row(frame).flatten().map(|_| vec![0]).unwrap_or_default(),
                };
                let rows = indices.iter().filter_map(|&i| all.and_then(|rows| rows.get(i))).map(|r| self.cells(table, r)).collect();
                Some(RowsRead { what: "rows read", table: schema.name.clone(), rows })
            }
            _ => None,
        }
    }

    fn cells(&self, table: quarry_queries::qm::TableId, row: &[Scalar]) -> Vec<(String, Scalar)> {
        let schema = self.graph.table(table);
        schema.columns.iter().zip(row).filter(|(_, v)| v.is_some()).map(|(c, v)| (c.name.clone(), v.clone())).collect()
    }
}

fn aggregate_name(a: &AggregateByPatient) -> String {
    let name = format!("{a:?}");
    name.split(['(', ' ', '{']).next().unwrap_or_default().to_string()
}

fn function_name(f: &Function) -> String {
    let name = format!("{f:?}");
    name.split(['(', ' ', '{']).next().unwrap_or_default().to_string()
}

/// The frame an event-level series reads.
fn frame_of(graph: &Graph, series: NodeId) -> Option<NodeId> {
    match graph.node(series) {
        Node::SelectColumn { source, .. } => Some(*source),
        _ => graph.children(series).into_iter().find_map(|c| match graph.kind(c) {
            Kind::EventFrame { .. } => Some(c),
            Kind::Series(_) => frame_of(graph, c),
            Kind::PatientFrame { .. } => None,
        }),
    }
}

/// A value as Python prints it; NULL for None.
fn render(v: &Scalar) -> String {
    match v {
        None => "NULL".into(),
        Some(Value::Bool(b)) => if *b { "True" } else { "False" }.into(),
        Some(Value::Int(i)) => i.to_string(),
        Some(Value::Float(f)) => quarry_queries::pyrepr::float_repr(f.0),
        Some(Value::Str(s) | Value::Code(_, s)) => format!("'{s}'"),
        Some(Value::Date(d)) => d.to_string(),
        Some(Value::Set(_, items)) => format!("{{{}}}", items.iter().map(|i| render(&Some(i.clone()))).collect::<Vec<_>>().join(", ")),
    }
}

/// The lines of the definition's files, for showing where an expression was made.
struct Sources(HashMap<String, Vec<String>>);

impl Sources {
    fn line(&mut self, file: &str, line: u32) -> String {
        let lines = self
            .0
            .entry(file.to_string())
            .or_insert_with(|| std::fs::read_to_string(file).map(|t| t.lines().map(str::to_string).collect()).unwrap_or_default());
        lines.get(line as usize - 1).map(|l| l.trim().to_string()).unwrap_or_default()
    }
}

fn shown(file: &str) -> String {
    let cwd = std::env::current_dir().unwrap_or_default();
    std::path::Path::new(file).strip_prefix(&cwd).map(|p| p.display().to_string()).unwrap_or_else(|_| file.to_string())
}

/// The explanation as text for a terminal.
pub fn text(e: &Explanation) -> String {
    let mut sources = Sources(HashMap::new());
    let mut out = format!("Patient {} is {}in the population.\n\nPopulation:\n", e.patient, if e.in_population { "" } else { "not " });
    tree(&mut out, &e.population, 1, &mut sources);
    if !e.variables.is_empty() {
        out.push_str("\nVariables:\n");
        for (name, v) in &e.variables {
            out.push_str(&format!("  {name} = {}\n", render(&v.value)));
            tree(&mut out, v, 2, &mut sources);
        }
    }
    out
}

fn tree(out: &mut String, e: &Explained, depth: usize, sources: &mut Sources) {
    let indent = "  ".repeat(depth);
    let mark = if e.decides { "* " } else { "  " };
    let at = match &e.at {
        Some((file, line)) => format!("  [{}:{line}] {}", shown(file), sources.line(file, *line)),
        None => String::new(),
    };
    out.push_str(&format!("{indent}{mark}{}: {}{at}\n", e.op, render(&e.value)));
    if let Some(RowsRead { what, table, rows }) = &e.rows {
        out.push_str(&format!(
            "{indent}    {what} of {table}: {}\n",
            if rows.is_empty() { "none".to_string() } else { rows.len().to_string() }
        ));
        for row in rows.iter().take(MAX_ROWS) {
            let cells: Vec<String> = row.iter().map(|(c, v)| format!("{c}={}", render(v))).collect();
            out.push_str(&format!("{indent}      {{{}}}\n", cells.join(", ")));
        }
        if rows.len() > MAX_ROWS {
            out.push_str(&format!("{indent}      ... {} more\n", rows.len() - MAX_ROWS));
        }
    }
    for c in &e.children {
        tree(out, c, depth + 1, sources);
    }
}

/// The explanation as JSON for tools: values typed (dates as `YYYY-MM-DD` strings, sets as
/// arrays, NULL as null).
pub fn json(e: &Explanation) -> serde_json::Value {
    fn node(e: &Explained) -> serde_json::Value {
        json!({
            "op": e.op,
            "value": typed(&e.value),
            "file": e.at.as_ref().map(|(f, _)| shown(f)),
            "line": e.at.as_ref().map(|(_, l)| l),
            "decides": e.decides,
            "rows": e.rows.as_ref().map(|RowsRead { what, table, rows }| json!({
                "what": what,
                "table": table,
                "rows": rows.iter().map(|r| r.iter().map(|(c, v)| (c.clone(), typed(v))).collect::<serde_json::Map<_, _>>()).collect::<Vec<_>>(),
            })),
            "children": e.children.iter().map(node).collect::<Vec<_>>(),
        })
    }
    json!({
        "patient_id": e.patient,
        "in_population": e.in_population,
        "population": node(&e.population),
        "variables": e.variables.iter().map(|(name, v)| json!({"name": name, "explanation": node(v)})).collect::<Vec<_>>(),
    })
}

fn typed(v: &Scalar) -> serde_json::Value {
    match v {
        None => serde_json::Value::Null,
        Some(Value::Bool(b)) => json!(b),
        Some(Value::Int(i)) => json!(i),
        Some(Value::Float(f)) => json!(f.0),
        Some(Value::Str(s) | Value::Code(_, s)) => json!(s),
        Some(Value::Date(d)) => json!(d.to_string()),
        Some(Value::Set(_, items)) => items.iter().map(|i| typed(&Some(i.clone()))).collect(),
    }
}
