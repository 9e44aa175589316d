//! `quarry debug DEF.py --dummy-tables DIR`: the definition runs in debug mode and every
//! `show()` is rendered as ehrQL's debugger renders it (ehrql/debugger.py, renderers.py).
//!
//! ehrQL evaluates a shown element with its in-memory engine over the dummy tables the element
//! reads, and the engine decides which patients a result has: those with rows in a table, for
//! a column or an aggregate of it; every patient of the loaded tables, for a literal; the
//! union of the arguments', for a function; for a picked row, only patients with a row left.
//! quarry evaluates the values with its reference evaluator and takes the patients by those
//! rules. Event-level rows carry ehrQL's `row_id`, their 1-based position in the table's file.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use quarry_engine::reference::{Evaluator, PatientValues};
use quarry_engine::store::Store;
use quarry_python::{Debugger, ShowError, ShowRequest};
use quarry_queries::pyrepr::float_repr;
use quarry_queries::qm::{Domain, Graph, Kind, Node, NodeId, TableId, Value};
use quarry_queries::semantics::Scalar;

/// How `show()` output is rendered (ehrQL's `--display-format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Ascii,
    Html,
}

/// Renders `show()` over a dummy-tables directory.
pub struct TablesDebugger {
    pub dir: Option<PathBuf>,
    pub format: Format,
}

/// Records as ehrQL's renderers take them: column names and rows of rendered values.
struct Records {
    names: Vec<String>,
    rows: Vec<Vec<String>>,
}

/// The dummy tables one `show()` reads, evaluated for every patient in them.
struct Loaded {
    store: Store,
    /// Event tables: each patient's rows' `row_id`s, in file order.
    row_ids: HashMap<TableId, HashMap<i64, Vec<usize>>>,
    values: BTreeMap<i64, PatientValues>,
}

impl Debugger for TablesDebugger {
    fn show(&mut self, graph: &Graph, request: &ShowRequest, head: usize, tail: usize) -> Result<String, ShowError> {
        let Some(dir) = &self.dir else {
            return Err(ShowError::Failed(
                "quarry debug needs --dummy-tables DIR to show values here: without it, it generates \
                 dummy tables from the definition's dataset, and this definition has no valid dataset"
                    .into(),
            ));
        };
        let records = match request {
            ShowRequest::Dataset { population, variables } => dataset(graph, dir, *population, variables)?,
            ShowRequest::Elements(items) => elements(graph, dir, items)?,
        };
        Ok(match self.format {
            Format::Ascii => ascii(&records, head, tail),
            Format::Html => html(&records, head, tail),
        })
    }
}

fn load(graph: &Graph, dir: &Path, roots: &[NodeId]) -> Result<Loaded, ShowError> {
    let store = quarry_engine::store::load_dummy_tables(graph, roots, dir).map_err(|e| ShowError::Failed(e.to_string()))?;
    let mut row_ids = HashMap::new();
    for table in quarry_engine::store::used_tables(graph, roots) {
        let schema = graph.table(table);
        if schema.patient_level {
            continue;
        }
        row_ids.insert(table, file_row_ids(&dir.join(format!("{}.csv", schema.name)))?);
    }
    let evaluator = Evaluator::new(graph, roots);
    let mut values = BTreeMap::new();
    let mut patients: BTreeSet<i64> = store.patients.keys().copied().collect();
    patients.extend(evaluator.inline_patients());
    for p in patients {
        let v = evaluator
            .patient(p, store.patients.get(&p))
            .map_err(|e| ShowError::Failed(format!("error evaluating for patient {p}: {e}")))?;
        values.insert(p, v);
    }
    Ok(Loaded { store, row_ids, values })
}

/// Each patient's row numbers (1-based, in file order) in an event table's CSV file.
fn file_row_ids(path: &Path) -> Result<HashMap<i64, Vec<usize>>, ShowError> {
    let text = std::fs::read_to_string(path).map_err(|_| {
        ShowError::Failed(format!("quarry debug reads event tables from CSV files (for ehrQL's row_id): {} not found", path.display()))
    })?;
    let mut reader = quarry_queries::csv::Reader::new(&text);
    let failed = |m: String| ShowError::Failed(format!("{}: {m}", path.display()));
    let header = reader.next_row().map_err(failed)?.unwrap_or_default();
    let pid = header.iter().position(|h| h == "patient_id").ok_or_else(|| failed("missing column 'patient_id'".into()))?;
    let mut ids: HashMap<i64, Vec<usize>> = HashMap::new();
    let mut n = 0;
    while let Some(row) = reader.next_row().map_err(failed)? {
        n += 1;
        let p =
            row.get(pid).and_then(|v| quarry_queries::inline::parse_int(v)).ok_or_else(|| failed(format!("row {n}: bad patient_id")))?;
        ids.entry(p).or_default().push(n);
    }
    Ok(ids)
}

impl Loaded {
    /// Whether ehrQL's in-memory engine has `patient` in the result of `node`.
    fn has(&self, graph: &Graph, node: NodeId, patient: i64) -> bool {
        let values = &self.values[&patient];
        match graph.node(node) {
            Node::SelectTable(t) | Node::SelectPatientTable(t) => {
                self.store.patients.get(&patient).and_then(|tables| tables.get(t)).is_some_and(|rows| !rows.is_empty())
            }
            Node::InlinePatientTable { .. } => values.frame_row(node).is_some_and(|r| r.is_some()),
            Node::Value(_) | Node::Parameter { .. } => self.store.patients.contains_key(&patient),
            Node::Filter { source, condition } => {
                self.has(graph, *source, patient)
                    && (matches!(graph.kind(node), Kind::EventFrame { .. }) || values.scalar(*condition) == Some(Value::Bool(true)))
            }
            Node::Sort { source, .. } | Node::SelectColumn { source, .. } => self.has(graph, *source, patient),
            Node::PickOneRowPerPatient { source, .. } => {
                self.has(graph, *source, patient) && values.frame_row(node).is_some_and(|r| r.is_some())
            }
            Node::AggregateByPatient(_) | Node::Function(_) | Node::Case { .. } => {
                graph.children(node).iter().any(|c| self.has(graph, *c, patient))
            }
        }
    }

    fn patients(&self, graph: &Graph, nodes: &[NodeId]) -> Vec<i64> {
        self.values.keys().copied().filter(|p| nodes.iter().any(|n| self.has(graph, *n, *p))).collect()
    }

    /// An event frame's rows for `patient`, each with its `row_id` and its table row.
    fn frame_rows(&self, graph: &Graph, frame: NodeId, patient: i64) -> Vec<(usize, usize)> {
        let table = frame_table(graph, frame);
        let ids = self.row_ids.get(&table).and_then(|m| m.get(&patient));
        self.values[&patient].frame_rows(frame).unwrap_or_default().iter().map(|&i| (ids.map_or(i + 1, |ids| ids[i]), i)).collect()
    }
}

/// The table under a frame.
fn frame_table(graph: &Graph, frame: NodeId) -> TableId {
    match graph.kind(frame) {
        Kind::EventFrame { table, .. } | Kind::PatientFrame { table } => *table,
        Kind::Series(_) => unreachable!("a frame"),
    }
}

/// The frame whose rows an event-level series follows: its column's frame, or its first
/// event-level argument's.
fn series_frame(graph: &Graph, series: NodeId) -> Option<NodeId> {
    match graph.node(series) {
        Node::SelectColumn { source, .. } => Some(*source),
        _ => graph.children(series).into_iter().filter(|c| matches!(graph.domain(*c), Domain::Rows(_))).find_map(|c| match graph.kind(c) {
            Kind::EventFrame { .. } => Some(c),
            _ => series_frame(graph, c),
        }),
    }
}

fn dataset(graph: &Graph, dir: &Path, population: Option<NodeId>, variables: &[(String, NodeId)]) -> Result<Records, ShowError> {
    let mut roots: Vec<NodeId> = population.into_iter().collect();
    roots.extend(variables.iter().map(|(_, n)| *n));
    if roots.is_empty() {
        // ehrQL's EmptyDataset: one record with an empty patient_id.
        return Ok(Records { names: vec!["patient_id".into()], rows: vec![vec![String::new()]] });
    }
    let loaded = load(graph, dir, &roots)?;
    // Without a population, ehrQL's debugger takes everyone with a row in a table the
    // variables read.
    let tables = quarry_engine::store::used_tables(graph, &roots);
    let mut names = vec!["patient_id".to_string()];
    names.extend(variables.iter().map(|(n, _)| n.clone()));
    let mut rows = vec![];
    for (p, values) in &loaded.values {
        let included = match population {
            Some(n) => values.scalar(n) == Some(Value::Bool(true)),
            None => loaded.store.patients.get(p).is_some_and(|t| tables.iter().any(|id| t.get(id).is_some_and(|r| !r.is_empty()))),
        };
        if included {
            let mut row = vec![p.to_string()];
            row.extend(variables.iter().map(|(_, n)| render(&values.scalar(*n), false)));
            rows.push(row);
        }
    }
    Ok(Records { names, rows })
}

fn elements(graph: &Graph, dir: &Path, items: &[(NodeId, bool)]) -> Result<Records, ShowError> {
    let nodes: Vec<NodeId> = items.iter().map(|(n, _)| *n).collect();
    let series = nodes.iter().all(|n| matches!(graph.kind(*n), Kind::Series(_)));
    if nodes.len() > 1 && (!series || nodes.iter().any(|n| graph.domain(*n) != graph.domain(nodes[0]))) {
        return Err(ShowError::NotShowable);
    }
    let loaded = load(graph, dir, &nodes)?;
    let first = nodes[0];
    let names_of = |prefix: &[&str]| -> Vec<String> {
        let mut names: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
        if items.len() == 1 {
            names.push("value".into());
        } else {
            names.extend((1..=items.len()).map(|i| format!("series_{i}")));
        }
        names
    };
    match graph.kind(first) {
        Kind::EventFrame { table, .. } => {
            let schema = graph.table(*table);
            let mut names = vec!["patient_id".to_string(), "row_id".to_string()];
            names.extend(schema.columns.iter().map(|c| c.name.clone()));
            let mut rows = vec![];
            for p in loaded.patients(graph, &[first]) {
                let table_rows = &loaded.store.patients[&p][table];
                for (row_id, i) in loaded.frame_rows(graph, first, p) {
                    let mut row = vec![p.to_string(), row_id.to_string()];
                    row.extend(table_rows[i].iter().map(|v| render(v, false)));
                    rows.push(row);
                }
            }
            Ok(Records { names, rows })
        }
        Kind::PatientFrame { table } => {
            let schema = graph.table(*table);
            let mut names = vec!["patient_id".to_string()];
            names.extend(schema.columns.iter().map(|c| c.name.clone()));
            let mut rows = vec![];
            for p in loaded.patients(graph, &[first]) {
                if let Some(Some(values)) = loaded.values[&p].frame_row(first) {
                    let mut row = vec![p.to_string()];
                    row.extend(values.iter().map(|v| render(v, false)));
                    rows.push(row);
                }
            }
            Ok(Records { names, rows })
        }
        Kind::Series(_) if graph.domain(first) == Domain::Patient => {
            let mut rows = vec![];
            for p in loaded.patients(graph, &nodes) {
                let mut row = vec![p.to_string()];
                row.extend(items.iter().map(|(n, days)| render(&loaded.values[&p].scalar(*n), *days)));
                rows.push(row);
            }
            Ok(Records { names: names_of(&["patient_id"]), rows })
        }
        Kind::Series(_) => {
            let Some(frame) = series_frame(graph, first) else { return Err(ShowError::NotShowable) };
            let mut rows = vec![];
            let mut patients = loaded.patients(graph, &[first]);
            if items.len() > 1 && matches!(graph.node(first), Node::SelectColumn { .. }) {
                // ehrQL lists related event series in the first one's patient order: for a
                // column, its table's (first appearance in the file: a dict's insertion
                // order). A computed first series follows a Python set of the patient ids,
                // which is ascending while the ids are below the set's table size (dummy
                // tables numbered from 1): quarry lists those ascending (docs/debug.md).
                let table = frame_table(graph, frame);
                patients.sort_by_key(|p| loaded.row_ids.get(&table).and_then(|m| m.get(p)).and_then(|ids| ids.first().copied()));
            }
            for p in patients {
                let columns: Vec<&[Scalar]> = nodes.iter().map(|n| loaded.values[&p].column(*n).unwrap_or_default()).collect();
                for (row_id, i) in loaded.frame_rows(graph, frame, p) {
                    let mut row = vec![p.to_string(), row_id.to_string()];
                    row.extend(columns.iter().zip(items).map(|(c, (_, days))| render(&c.get(i).cloned().flatten(), *days)));
                    rows.push(row);
                }
            }
            Ok(Records { names: names_of(&["patient_id", "row_id"]), rows })
        }
    }
}

/// A value as ehrQL's debugger prints it (`str()`, NULL as nothing; a date difference in days).
fn render(value: &Scalar, days: bool) -> String {
    match value {
        None => String::new(),
        Some(Value::Int(i)) if days => format!("{i} days"),
        Some(Value::Bool(b)) => if *b { "True" } else { "False" }.into(),
        Some(Value::Int(i)) => i.to_string(),
        Some(Value::Float(f)) => float_repr(f.0),
        Some(Value::Str(s) | Value::Code(_, s)) => s.clone(),
        Some(Value::Date(d)) => d.to_string(),
        Some(Value::Set(_, items)) => {
            let inner: Vec<String> = items.iter().map(|v| render(&Some(v.clone()), false)).collect();
            format!("frozenset({{{}}})", inner.join(", "))
        }
    }
}

/// The rows to show: all, or the first `head` and last `tail` with an ellipsis between.
fn head_tail(rows: &[Vec<String>], head: usize, tail: usize) -> (&[Vec<String>], bool, &[Vec<String>]) {
    if (head == 0 && tail == 0) || rows.len() <= head + tail {
        return (rows, false, &[]);
    }
    (&rows[..head], true, &rows[rows.len() - tail..])
}

fn ascii(records: &Records, head: usize, tail: usize) -> String {
    let pad = |s: &str| format!("{s:<17}");
    let line = |cells: &[String]| cells.iter().map(|c| pad(c)).collect::<Vec<_>>().join(" | ");
    let (top, ellipsis, bottom) = head_tail(&records.rows, head, tail);
    let mut lines = vec![line(&records.names), records.names.iter().map(|_| "-".repeat(17)).collect::<Vec<_>>().join("-+-")];
    lines.extend(top.iter().map(|r| line(r)));
    if ellipsis {
        lines.push(line(&vec!["...".to_string(); records.names.len()]));
    }
    lines.extend(bottom.iter().map(|r| line(r)));
    lines.iter().map(|l| l.trim()).collect::<Vec<_>>().join("\n")
}

fn html(records: &Records, head: usize, tail: usize) -> String {
    let headers: String = records.names.iter().map(|h| format!("<th>{h}</th>")).collect();
    let row = |r: &Vec<String>| format!("<tr>{}</tr>", r.iter().map(|v| format!("<td>{v}</td>")).collect::<String>());
    let (top, ellipsis, bottom) = head_tail(&records.rows, head, tail);
    let mut rows: String = top.iter().map(row).collect();
    if ellipsis {
        rows.push_str(&format!("<tr>{}</tr>", "<td>&hellip;</td>".repeat(records.names.len())));
    }
    rows.extend(bottom.iter().map(row));
    format!("<!-- start debug output --><table><thead><tr>{headers}</tr></thead><tbody>{rows}</tbody></table><!-- end debug output -->")
}
