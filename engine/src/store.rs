//! Input tables: ehrQL's `--dummy-tables DIR` files (`<table>.csv`, `.csv.gz`, `.arrow`, and
//! `.parquet`, which ehrQL lacks), loaded into
//! per-patient rows. Rules and messages follow ehrQL's local-file engine (ehrql.md §4.5):
//! missing columns are NULL, extra columns ignored, empty cells NULL, values parsed with
//! Python's rules, categories validated, errors name the file, row and column.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use quarry_queries::inline::{check_categories, parse_cell, parse_int};
use quarry_queries::qm::{Column, Graph, Node, NodeId, TableId, TableSchema, Type, Value};
use quarry_queries::semantics::Scalar;

use crate::columns::{ColumnKind, ColumnSpec};

/// One table's rows for one patient (values in schema column order).
pub type Rows = Vec<Vec<Scalar>>;

/// Every loaded table's rows, by patient.
#[derive(Default)]
pub struct Store {
    /// patient → table → rows.
    pub patients: BTreeMap<i64, BTreeMap<TableId, Rows>>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);

/// The tables the `roots` read (`SelectTable` / `SelectPatientTable`), in first-use order.
pub fn used_tables(graph: &Graph, roots: &[NodeId]) -> Vec<TableId> {
    tables_read(graph, crate::reference::reachable(graph, roots))
}

/// The tables `nodes` select, in the order of the nodes' first selection of each.
pub(crate) fn tables_read(graph: &Graph, nodes: impl IntoIterator<Item = NodeId>) -> Vec<TableId> {
    let mut out = vec![];
    for n in nodes {
        if let Node::SelectTable(t) | Node::SelectPatientTable(t) = graph.node(n)
            && !out.contains(t)
        {
            out.push(*t);
        }
    }
    out
}

/// The first `DIR/<name>.<ext>` that exists, trying `extensions` in order.
pub(crate) fn find_file(dir: &Path, name: &str, extensions: &[&str]) -> Option<PathBuf> {
    extensions.iter().map(|ext| dir.join(format!("{name}.{ext}"))).find(|p| p.is_file())
}

/// The files a run over `dir` reads for the tables the `roots` use (the first of
/// `extensions` that exists for each table), for keeping outputs from replacing them.
pub fn table_files(graph: &Graph, roots: &[NodeId], dir: &Path, extensions: &[&str]) -> Vec<PathBuf> {
    used_tables(graph, roots).into_iter().filter_map(|t| find_file(dir, &graph.table(t).name, extensions)).collect()
}

/// The extensions a dummy table may have, in the order they are looked for.
pub const DUMMY_TABLE_EXTENSIONS: &[&str] = &["csv", "csv.gz", "arrow", "parquet"];

/// Loads the used tables from a dummy-tables directory.
pub fn load_dummy_tables(graph: &Graph, roots: &[NodeId], dir: &Path) -> Result<Store, InputError> {
    let mut store = Store::default();
    if !dir.is_dir() {
        return Err(InputError(format!("Dummy tables directory not found: {}", dir.display())));
    }
    for table in used_tables(graph, roots) {
        let schema = graph.table(table);
        let Some(path) = find_file(dir, &schema.name, DUMMY_TABLE_EXTENSIONS) else {
            return Err(InputError(format!("Missing file: {}", dir.join(format!("{}.csv", schema.name)).display())));
        };
        let shown = path.display().to_string();
        if path.extension().is_some_and(|e| e == "arrow" || e == "parquet") {
            load_typed(&mut store, table, schema, &path)?;
            continue;
        }
        let text = read_text(&path).map_err(|e| InputError(format!("Cannot read {shown}: {e}")))?;
        let mut reader = quarry_queries::csv::Reader::new(&text);
        let header = reader.next_row().map_err(|m| InputError(format!("'{shown}': {m}")))?.unwrap_or_default();
        let pid =
            header.iter().position(|h| h == "patient_id").ok_or_else(|| InputError(format!("'{shown}': missing column 'patient_id'")))?;
        let columns: Vec<Option<usize>> = schema.columns.iter().map(|c| header.iter().position(|h| *h == c.name)).collect();
        let mut seen = PatientRows::new(schema);
        let mut row = Vec::new();
        let mut n = 0usize;
        loop {
            let more = reader.next_row_into(&mut row).map_err(|m| InputError(format!("'{shown}', row {}: {m}", n + 1)))?;
            if !more {
                break;
            }
            n += 1;
            let at = |m: String| InputError(format!("'{shown}', row {n}: {m}"));
            if row.len() != header.len() {
                return Err(at(format!("expected {} columns but got {}", header.len(), row.len())));
            }
            if row[pid].is_empty() {
                return Err(at("NULL value in non-nullable column 'patient_id'".into()));
            }
            let patient = parse_int(&row[pid])
                .ok_or_else(|| at(format!("column 'patient_id': invalid literal for int() with base 10: '{}'", row[pid])))?;
            seen.check(patient, n).map_err(at)?;
            let values = row_values(schema, &columns, |i, c| parse_cell(&c.type_, &row[i])).map_err(at)?;
            store.push(table, schema.patient_level, patient, values);
        }
    }
    Ok(store)
}

/// Loads an Arrow dummy table: types checked per column (ehrQL checks the first batch; every
/// batch of an IPC file shares the schema), categories checked per value.
fn load_typed(store: &mut Store, table: TableId, schema: &TableSchema, path: &Path) -> Result<(), InputError> {
    let shown = path.display().to_string();
    let file = crate::arrow_io::read_file(path).map_err(InputError)?;
    let position = |name: &str| file.names.iter().position(|n| n == name);
    let pid = position("patient_id").ok_or_else(|| InputError(format!("'{shown}': missing column 'patient_id'")))?;
    let columns: Vec<Option<usize>> = schema.columns.iter().map(|c| position(&c.name)).collect();
    if let Some(batch) = file.batches.first() {
        let mut wanted: Vec<(&str, Type, usize)> = vec![("patient_id", Type::Int, pid)];
        wanted.extend(schema.columns.iter().zip(&columns).filter_map(|(c, i)| i.map(|i| (c.name.as_str(), c.type_.clone(), i))));
        for (name, type_, i) in wanted {
            let data_type = batch.column(i).data_type();
            if !crate::arrow_io::type_matches(data_type, &type_) {
                return Err(InputError(format!("'{shown}': Type mismatch in column '{name}': expected {}, got {data_type}", type_.name())));
            }
        }
    }
    let mut seen = PatientRows::new(schema);
    let mut n = 0usize;
    for batch in &file.batches {
        for r in 0..batch.num_rows() {
            n += 1;
            let at = |m: String| InputError(format!("'{shown}', row {n}: {m}"));
            let patient = match crate::arrow_io::value_at(batch.column(pid).as_ref(), r).map_err(at)? {
                Some(Value::Int(p)) => p,
                _ => return Err(at("NULL value in non-nullable column 'patient_id'".into())),
            };
            seen.check(patient, n).map_err(at)?;
            let values =
                row_values(schema, &columns, |i, c| crate::arrow_io::typed_value_at(batch.column(i).as_ref(), r, &c.type_)).map_err(at)?;
            store.push(table, schema.patient_level, patient, values);
        }
    }
    Ok(())
}

/// The row each patient of a patient-level table was first seen in: a second row is an
/// error (ehrQL keeps the last one silently; it is almost always an export bug).
struct PatientRows(Option<std::collections::HashMap<i64, usize>>);

impl PatientRows {
    fn new(schema: &TableSchema) -> PatientRows {
        PatientRows(schema.patient_level.then(std::collections::HashMap::new))
    }

    /// Notes that row `n` is `patient`'s; the message says which rows when it is a second.
    fn check(&mut self, patient: i64, n: usize) -> Result<(), String> {
        let Some(first) = &mut self.0 else { return Ok(()) };
        match first.insert(patient, n) {
            Some(earlier) => Err(format!("patient_id {patient} is also in row {earlier}: a patient-level table has one row per patient")),
            None => Ok(()),
        }
    }
}

/// One row's values in schema order: `read(i, column)` gives the value of file column `i`;
/// columns missing from the file are NULL; categories are checked.
fn row_values(
    schema: &TableSchema,
    columns: &[Option<usize>],
    read: impl Fn(usize, &Column) -> Result<Scalar, String>,
) -> Result<Vec<Scalar>, String> {
    let mut values = Vec::with_capacity(columns.len());
    for (c, idx) in schema.columns.iter().zip(columns) {
        let v = match idx {
            Some(i) => read(*i, c).map_err(|m| format!("column '{}': {m}", c.name))?,
            None => None,
        };
        if let Some(v) = &v {
            check_categories(c, v).map_err(|m| format!("column '{}': {m}", c.name))?;
        }
        values.push(v);
    }
    Ok(values)
}

impl Store {
    /// `patient`'s rows of `table`, emptied first for a patient-level table (ehrQL's local-file
    /// engine keeps the last row for a patient).
    fn slot(&mut self, table: TableId, patient_level: bool, patient: i64) -> &mut Rows {
        let rows = self.patients.entry(patient).or_default().entry(table).or_default();
        if patient_level {
            rows.clear();
        }
        rows
    }

    /// Adds a row of `table` for `patient`.
    pub(crate) fn push(&mut self, table: TableId, patient_level: bool, patient: i64, values: Vec<Scalar>) {
        self.slot(table, patient_level, patient).push(values);
    }
}

/// `--dummy-data-file`: a ready-made dataset (ehrQL's rules, ehrql.md §4.5): every output
/// column must be present (extra ones are ignored), values are parsed and categories checked;
/// the rows are returned in the file's order, as ehrQL copies them.
pub fn read_dummy_dataset(path: &Path, columns: &[ColumnSpec]) -> Result<Vec<Vec<Scalar>>, InputError> {
    let shown = path.display().to_string();
    let type_of = |c: &ColumnSpec| match c.kind {
        ColumnKind::Bool => Type::Bool,
        ColumnKind::Int { .. } => Type::Int,
        ColumnKind::Float => Type::Float,
        ColumnKind::Str => Type::Str,
        ColumnKind::Date => Type::Date,
    };
    let check = |c: &ColumnSpec, v: Scalar| -> Result<Scalar, String> {
        match (&v, &c.categories) {
            (None, _) if !c.nullable => Err(format!("NULL value in non-nullable column '{}'", c.name)),
            (Some(x), Some(categories)) if !categories.iter().any(|k| crate::arrow_io::same_category(k, x)) => {
                let list: Vec<String> = categories.iter().map(|k| format!("'{}'", crate::output::render_value(&Some(k.clone())))).collect();
                Err(format!("column '{}': '{}' not in valid categories: {}", c.name, crate::output::render_value(&v), list.join(", ")))
            }
            _ => Ok(v),
        }
    };
    let missing = |names: &[String]| -> Result<Vec<usize>, InputError> {
        let absent: Vec<&str> = columns.iter().filter(|c| !names.contains(&c.name)).map(|c| c.name.as_str()).collect();
        if !absent.is_empty() {
            return Err(InputError(format!("{shown}: Missing columns: {}", absent.join(", "))));
        }
        Ok(columns.iter().map(|c| names.iter().position(|n| *n == c.name).expect("checked")).collect())
    };
    let mut out = vec![];
    if path.extension().is_some_and(|e| e == "arrow" || e == "parquet") {
        let file = crate::arrow_io::read_file(path).map_err(InputError)?;
        let index = missing(&file.names)?;
        if let Some(batch) = file.batches.first() {
            for (c, &i) in columns.iter().zip(&index) {
                let data_type = batch.column(i).data_type();
                let type_ = type_of(c);
                if !crate::arrow_io::type_matches(data_type, &type_) {
                    return Err(InputError(format!(
                        "{shown}: Type mismatch in column '{}': expected {}, got {data_type}",
                        c.name,
                        type_.name()
                    )));
                }
            }
        }
        let mut n = 0;
        for batch in &file.batches {
            for r in 0..batch.num_rows() {
                n += 1;
                let mut row = Vec::with_capacity(columns.len());
                for (c, &i) in columns.iter().zip(&index) {
                    let v = crate::arrow_io::value_at(batch.column(i).as_ref(), r)
                        .map_err(|m| format!("column '{}': {m}", c.name))
                        .and_then(|v| check(c, v))
                        .map_err(|m| InputError(format!("{shown}: row {n}: {m}")))?;
                    row.push(v);
                }
                out.push(row);
            }
        }
        return Ok(out);
    }
    let text = read_text(path).map_err(|e| InputError(format!("Cannot read {shown}: {e}")))?;
    let mut reader = quarry_queries::csv::Reader::new(&text);
    let header = reader.next_row().map_err(|m| InputError(format!("{shown}: {m}")))?.unwrap_or_default();
    let index = missing(&header)?;
    let mut cells = Vec::new();
    let mut n = 0;
    while reader.next_row_into(&mut cells).map_err(|m| InputError(format!("{shown}: row {}: {m}", n + 1)))? {
        n += 1;
        let at = |m: String| InputError(format!("{shown}: row {n}: {m}"));
        if cells.len() != header.len() {
            return Err(at(format!("expected {} columns but got {}", header.len(), cells.len())));
        }
        let mut row = Vec::with_capacity(columns.len());
        for (c, &i) in columns.iter().zip(&index) {
            let v = parse_cell(&type_of(c), &cells[i])
                .map_err(|m| format!("column '{}': {m}", c.name))
                .and_then(|v| check(c, v))
                .map_err(at)?;
            row.push(v);
        }
        out.push(row);
    }
    Ok(out)
}

fn read_text(path: &Path) -> std::io::Result<String> {
    let bytes = std::fs::read(path)?;
    let bytes = if path.to_string_lossy().ends_with(".gz") {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&bytes[..]).read_to_end(&mut out)?;
        out
    } else {
        bytes
    };
    let text = String::from_utf8(bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not UTF-8: {e}")))?;
    Ok(text.strip_prefix('\u{feff}').map(str::to_string).unwrap_or(text))
}
