//! Input tables: ehrQL's `--dummy-tables DIR` files (`<table>.csv`, `.csv.gz`), loaded into
//! per-patient rows. Rules and messages follow ehrQL's local-file engine (ehrql.md §4.5):
//! missing columns are NULL, extra columns ignored, empty cells NULL, values parsed with
//! Python's rules, categories validated, errors name the file, row and column.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use quarry_queries::inline::{check_categories, parse_cell, parse_int};
use quarry_queries::qm::{Graph, Node, NodeId, TableId};
use quarry_queries::semantics::Scalar;

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
    let mut out = vec![];
    for n in crate::reference::reachable(graph, roots) {
        if let Node::SelectTable(t) | Node::SelectPatientTable(t) = graph.node(n)
            && !out.contains(t)
        {
            out.push(*t);
        }
    }
    out
}

fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    for ext in ["csv", "csv.gz"] {
        let p = dir.join(format!("{name}.{ext}"));
        if p.is_file() {
            return Some(p);
        }
    }
    None
}

/// Loads the used tables from a dummy-tables directory.
pub fn load_dummy_tables(graph: &Graph, roots: &[NodeId], dir: &Path) -> Result<Store, InputError> {
    let mut store = Store::default();
    if !dir.is_dir() {
        return Err(InputError(format!("Dummy tables directory not found: {}", dir.display())));
    }
    for table in used_tables(graph, roots) {
        let schema = graph.table(table);
        let Some(path) = find_file(dir, &schema.name) else {
            if dir.join(format!("{}.arrow", schema.name)).is_file() {
                return Err(InputError(format!(
                    "{}: quarry does not read .arrow dummy tables yet; convert it to .csv",
                    dir.join(format!("{}.arrow", schema.name)).display()
                )));
            }
            return Err(InputError(format!("Missing file: {}", dir.join(format!("{}.csv", schema.name)).display())));
        };
        let shown = path.display().to_string();
        let text = read_text(&path).map_err(|e| InputError(format!("Cannot read {shown}: {e}")))?;
        let mut reader = quarry_queries::csv::Reader::new(&text);
        let header = reader.next_row().map_err(|m| InputError(format!("'{shown}': {m}")))?.unwrap_or_default();
        let pid = header.iter().position(|h| h == "patient_id").ok_or_else(|| InputError(format!("'{shown}': missing column 'patient_id'")))?;
        let columns: Vec<Option<usize>> = schema.columns.iter().map(|c| header.iter().position(|h| *h == c.name)).collect();
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
            let patient = parse_int(&row[pid]).ok_or_else(|| at(format!("column 'patient_id': invalid literal for int() with base 10: '{}'", row[pid])))?;
            let mut values = Vec::with_capacity(columns.len());
            for (c, idx) in schema.columns.iter().zip(&columns) {
                let v = match idx {
                    Some(i) => parse_cell(&c.type_, &row[*i]).map_err(|m| at(format!("column '{}': {m}", c.name)))?,
                    None => None,
                };
                if let Some(v) = &v {
                    check_categories(c, v).map_err(|m| at(format!("column '{}': {m}", c.name)))?;
                }
                values.push(v);
            }
            let rows = store.patients.entry(patient).or_default().entry(table).or_default();
            if schema.patient_level {
                // ehrQL's local-file engine keeps the last row for a patient.
                rows.clear();
            }
            rows.push(values);
        }
    }
    Ok(store)
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
