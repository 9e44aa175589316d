//! What each output column holds, as ehrQL's `column_specs.py` works it out: the value type,
//! the categories (from `Categorical` constraints, literal values and `case`/`map_values`
//! whose outputs are all categorical, kept through `minimum_for_patient`/`maximum_for_patient`)
//! and the integer range (counts 0..65535, `ClosedRange` columns). Typed formats (Arrow,
//! Parquet) use it to choose narrow integer types and dictionary-encoded categories; CSV
//! ignores it.

use quarry_queries::qm::{AggregateByPatient, Column, Constraint, Graph, Node, NodeId, TableSchema, Type, Value};

#[derive(Debug, Clone, PartialEq)]
pub enum ColumnKind {
    Bool,
    /// An integer with its known range, if any.
    Int {
        min: Option<i64>,
        max: Option<i64>,
    },
    Float,
    /// Strings, codes and multi-code strings.
    Str,
    Date,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ColumnSpec {
    pub name: String,
    pub kind: ColumnKind,
    pub nullable: bool,
    /// The allowed values in order, for a categorical column.
    pub categories: Option<Vec<Value>>,
}

impl ColumnSpec {
    pub fn new(name: &str, kind: ColumnKind) -> ColumnSpec {
        ColumnSpec { name: name.to_string(), kind, nullable: true, categories: None }
    }

    pub fn patient_id() -> ColumnSpec {
        ColumnSpec { nullable: false, ..ColumnSpec::new("patient_id", ColumnKind::Int { min: None, max: None }) }
    }

    /// A plain column of a series node.
    pub fn of_series(graph: &Graph, name: &str, node: NodeId) -> ColumnSpec {
        let type_ = graph.type_of(node).expect("output columns are series");
        let (min, max) = range(graph, node);
        ColumnSpec { categories: categories(graph, node), ..ColumnSpec::new(name, kind(type_, min, max)) }
    }

    /// A schema column, as `create-dummy-tables` writes it.
    pub fn of_column(column: &Column) -> ColumnSpec {
        let (min, max) = closed_range(column);
        ColumnSpec { categories: column_categories(column), ..ColumnSpec::new(&column.name, kind(&column.type_, min, max)) }
    }
}

fn kind(type_: &Type, min: Option<i64>, max: Option<i64>) -> ColumnKind {
    match type_ {
        Type::Bool => ColumnKind::Bool,
        Type::Int => ColumnKind::Int { min, max },
        Type::Float => ColumnKind::Float,
        Type::Str | Type::Code(_) | Type::MultiCodeString(_) => ColumnKind::Str,
        Type::Date => ColumnKind::Date,
        Type::Set(_) => unreachable!("sets are never output columns"),
    }
}

/// The schema a column of a frame comes from.
fn root_schema(graph: &Graph, mut frame: NodeId) -> &TableSchema {
    loop {
        match graph.node(frame) {
            Node::SelectTable(t) | Node::SelectPatientTable(t) | Node::InlinePatientTable { table: t, .. } => return graph.table(*t),
            Node::Filter { source, .. } | Node::Sort { source, .. } | Node::PickOneRowPerPatient { source, .. } => frame = *source,
            other => unreachable!("not a frame: {other:?}"),
        }
    }
}

fn column_categories(column: &Column) -> Option<Vec<Value>> {
    column.constraints.iter().find_map(|c| match c {
        Constraint::Categorical(values) => Some(values.clone()),
        _ => None,
    })
}

fn closed_range(column: &Column) -> (Option<i64>, Option<i64>) {
    column
        .constraints
        .iter()
        .find_map(|c| match c {
            Constraint::ClosedRange { minimum, maximum, .. } => Some((Some(*minimum), Some(*maximum))),
            _ => None,
        })
        .unwrap_or((None, None))
}

fn categories(graph: &Graph, node: NodeId) -> Option<Vec<Value>> {
    match graph.node(node) {
        Node::SelectColumn { source, name } => root_schema(graph, *source).column(name).and_then(column_categories),
        Node::AggregateByPatient(AggregateByPatient::Min(s) | AggregateByPatient::Max(s)) => categories(graph, *s),
        Node::Value(v) => Some(vec![v.clone()]),
        Node::Case { cases, default } => {
            let mut all: Vec<Value> = vec![];
            for output in cases.iter().map(|(_, v)| *v).chain(default.iter().map(|d| Some(*d))) {
                // A NULL output (`then(None)`) is not categorical, so neither is the case.
                for c in categories(graph, output?)? {
                    if !all.contains(&c) {
                        all.push(c);
                    }
                }
            }
            Some(all)
        }
        _ => None,
    }
}

fn range(graph: &Graph, node: NodeId) -> (Option<i64>, Option<i64>) {
    match graph.node(node) {
        Node::AggregateByPatient(AggregateByPatient::Count(_)) => (Some(0), Some(65535)),
        Node::SelectColumn { source, name } => root_schema(graph, *source).column(name).map(closed_range).unwrap_or((None, None)),
        _ => (None, None),
    }
}
