//! Patient batches: what the columnar engine reads. A batch holds some patients' rows of the
//! tables a query uses, each table grouped by patient (ids ascending, a patient's rows in file
//! order) as typed columns (`column::Array`). A backend's rounds are built as batches straight
//! from its Arrow record batches (`backend`); dummy tables and generated data, read into a
//! row [`Store`], become one batch by typing each used column once (`Batch::from_store`).
//! The reference evaluator reads rows (`Batch::patient_rows` is its view of a batch).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use quarry_queries::qm::{Graph, TableId, Type, Value};
use quarry_queries::semantics::Scalar;

use crate::column::{Array, Builder, Dict};
use crate::store::{Rows, Store};

/// One table's rows in a batch, grouped by patient.
#[derive(Debug, Clone, Default)]
pub struct TableData {
    /// The patients with rows, ascending.
    pub patients: Vec<i64>,
    /// `starts[k]..starts[k + 1]`: patient `patients[k]`'s rows.
    pub starts: Vec<u32>,
    /// Per schema column, its values over the rows (`None`: not read, all NULL).
    pub columns: Vec<Option<Array>>,
}

impl TableData {
    /// Patient `p`'s rows.
    pub fn rows_of(&self, p: i64) -> std::ops::Range<usize> {
        match self.patients.binary_search(&p) {
            Ok(k) => self.starts[k] as usize..self.starts[k + 1] as usize,
            Err(_) => 0..0,
        }
    }

    /// Row `r`'s values, in schema order.
    pub fn row(&self, r: usize) -> Vec<Scalar> {
        self.columns.iter().map(|c| c.as_ref().and_then(|c| c.get(r))).collect()
    }
}

/// Some patients' rows of the used tables.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// Every patient of the batch (with rows in some table, or given without any), ascending.
    pub ids: Vec<i64>,
    pub tables: HashMap<TableId, TableData>,
}

impl Batch {
    /// A row store's patients and its `tables`, each used column typed once.
    pub fn from_store(graph: &Graph, store: &Store, tables: &[TableId]) -> Batch {
        let ids: Vec<i64> = store.patients.keys().copied().collect();
        let mut out = HashMap::new();
        for &t in tables {
            let types: Vec<Type> = graph.table(t).columns.iter().map(|c| c.type_.clone()).collect();
            let mut data = TableData { starts: vec![0], ..TableData::default() };
            let mut builders: Vec<Builder> = types.iter().map(|t| Builder::new(t, 0)).collect();
            for (&p, patient) in &store.patients {
                let Some(rows) = patient.get(&t).filter(|r| !r.is_empty()) else { continue };
                for row in rows {
                    for (b, v) in builders.iter_mut().zip(row) {
                        b.push_scalar(v);
                    }
                }
                data.patients.push(p);
                data.starts.push(data.starts.last().copied().unwrap_or(0) + rows.len() as u32);
            }
            data.columns = builders.into_iter().map(|b| Some(b.finish())).collect();
            out.insert(t, data);
        }
        Batch { ids, tables: out }
    }

    /// Patient `p`'s rows per table (the tables where they have some), if `p` is in the batch:
    /// the row view the reference evaluator and `explain` read.
    pub fn patient_rows(&self, p: i64) -> Option<BTreeMap<TableId, Rows>> {
        self.ids.binary_search(&p).ok()?;
        Some(
            self.tables
                .iter()
                .filter_map(|(t, data)| {
                    let rows = data.rows_of(p);
                    (!rows.is_empty()).then(|| (*t, rows.map(|r| data.row(r)).collect()))
                })
                .collect(),
        )
    }
}

/// The typed columns of one record batch a backend read (per schema column; `None`: not read).
pub type Chunk = Arc<Vec<Option<Array>>>;

/// Builds one table of a batch from rows drawn from several typed chunks (the Arrow batches a
/// backend read them from): per chunk the rows taken, then the parts joined.
pub struct TableBuilder {
    patients: Vec<i64>,
    starts: Vec<u32>,
    /// Per chunk used, in order: its columns and the rows taken from it.
    parts: Vec<(Chunk, Vec<u32>)>,
    width: usize,
}

impl TableBuilder {
    pub fn new(width: usize) -> TableBuilder {
        TableBuilder { patients: vec![], starts: vec![0], parts: vec![], width }
    }

    /// Adds row `row` of `chunk` for patient `p` (patients in ascending order, a patient's rows
    /// together).
    pub fn push(&mut self, p: i64, chunk: &Chunk, row: u32) {
        if self.patients.last() != Some(&p) {
            self.patients.push(p);
            self.starts.push(*self.starts.last().expect("starts at 0"));
        }
        *self.starts.last_mut().expect("a patient's start") += 1;
        match self.parts.last_mut() {
            Some((c, rows)) if Arc::ptr_eq(c, chunk) => rows.push(row),
            _ => self.parts.push((chunk.clone(), vec![row])),
        }
    }

    pub fn patients(&self) -> &[i64] {
        &self.patients
    }

    /// Keeps only the patients `keep` accepts.
    pub fn retain(self, keep: impl Fn(i64) -> bool) -> TableBuilder {
        if self.patients.iter().all(|p| keep(*p)) {
            return self;
        }
        let mut out = TableBuilder::new(self.width);
        let mut rows = self.parts.iter().flat_map(|(c, rows)| rows.iter().map(move |r| (c, *r)));
        for (k, &p) in self.patients.iter().enumerate() {
            let n = (self.starts[k + 1] - self.starts[k]) as usize;
            for (c, r) in rows.by_ref().take(n) {
                if keep(p) {
                    out.push(p, c, r);
                }
            }
        }
        out
    }

    pub fn finish(self) -> TableData {
        let columns = (0..self.width)
            .map(|c| {
                let parts: Vec<Array> = self.parts.iter().filter_map(|(chunk, rows)| chunk[c].as_ref().map(|a| a.take(rows))).collect();
                (!parts.is_empty()).then(|| concat(&parts))
            })
            .collect();
        TableData { patients: self.patients, starts: self.starts, columns }
    }
}

/// Arrays of one type, one after the other (text of different dictionaries re-keyed into
/// one, each source dictionary value looked up once).
pub fn concat(parts: &[Array]) -> Array {
    if parts.len() == 1 {
        return parts[0].clone();
    }
    let len: usize = parts.iter().map(Array::len).sum();
    // Validity part after part (no NULLs in any part: none at all).
    let nulls = parts.iter().any(|p| p.nulls().is_some() || matches!(p, Array::Values(_))).then(|| {
        let mut valid = arrow_buffer::BooleanBufferBuilder::new(len);
        for p in parts {
            match (p, p.nulls()) {
                (Array::Values(_), _) => (0..p.len()).for_each(|i| valid.append(p.is_valid(i))),
                (_, Some(n)) => valid.append_buffer(n.inner()),
                (_, None) => valid.append_n(p.len(), true),
            }
        }
        arrow_buffer::NullBuffer::new(valid.finish())
    });
    let nulls = nulls.filter(|n| n.null_count() > 0);
    match &parts[0] {
        Array::Int(..) => Array::Int(Arc::new(flat(parts, |p| if let Array::Int(v, _) = p { Some(v.as_slice()) } else { None })), nulls),
        Array::Float(..) => {
            Array::Float(Arc::new(flat(parts, |p| if let Array::Float(v, _) = p { Some(v.as_slice()) } else { None })), nulls)
        }
        Array::Date(..) => Array::Date(Arc::new(flat(parts, |p| if let Array::Date(v, _) = p { Some(v.as_slice()) } else { None })), nulls),
        Array::Bool(..) => {
            let mut values = arrow_buffer::BooleanBufferBuilder::new(len);
            for p in parts {
                let Array::Bool(v, _) = p else { unreachable!("parts of one type") };
                values.append_buffer(v);
            }
            Array::Bool(values.finish(), nulls)
        }
        Array::Text(_, first, _) if parts.iter().all(|p| matches!(p, Array::Text(_, d, _) if Arc::ptr_eq(d, first))) => {
            // One dictionary (a Parquet column chunk's, shared by its batches): keys as they are.
            Array::Text(Arc::new(flat(parts, |p| if let Array::Text(k, ..) = p { Some(k.as_slice()) } else { None })), first.clone(), nulls)
        }
        Array::Text(..) => {
            let mut values: Vec<Value> = vec![];
            let mut index: rustc_hash::FxHashMap<Value, u32> = Default::default();
            let mut keys = Vec::with_capacity(len);
            // Each distinct dictionary is re-keyed once, however many parts share it.
            let mut remaps: Vec<(&Arc<Dict>, Vec<u32>)> = vec![];
            for p in parts {
                let Array::Text(k, d, _) = p else { unreachable!("parts of one type") };
                let at = match remaps.iter().position(|(seen, _)| Arc::ptr_eq(seen, d)) {
                    Some(at) => at,
                    None => {
                        let remap = d
                            .values
                            .iter()
                            .map(|v| {
                                *index.entry(v.clone()).or_insert_with(|| {
                                    values.push(v.clone());
                                    values.len() as u32 - 1
                                })
                            })
                            .collect();
                        remaps.push((d, remap));
                        remaps.len() - 1
                    }
                };
                let remap = &remaps[at].1;
                keys.extend(k.iter().map(|k| remap[*k as usize]));
            }
            Array::Text(Arc::new(keys), Arc::new(Dict::new(values)), nulls)
        }
        Array::Values(_) => Array::Values(Arc::new(parts.iter().flat_map(|p| (0..p.len()).map(move |i| p.get(i))).collect())),
    }
}

fn flat<T: Copy>(parts: &[Array], slice: impl Fn(&Array) -> Option<&[T]>) -> Vec<T> {
    let mut out = Vec::with_capacity(parts.iter().map(Array::len).sum());
    for p in parts {
        out.extend_from_slice(slice(p).expect("parts of one type"));
    }
    out
}

/// Patients in any of the tables, ascending.
pub fn all_patients<'a>(tables: impl IntoIterator<Item = &'a TableData>) -> Vec<i64> {
    let set: BTreeSet<i64> = tables.into_iter().flat_map(|t| t.patients.iter().copied()).collect();
    set.into_iter().collect()
}
