//! `--backend DIR`: a directory of tables too large for memory (docs/backend.md), one file per
//! table (`<table>.parquet` or `<table>.arrow`), each sorted by `patient_id`. Tables are read
//! as streams of record batches, only the columns the definition uses, and cut into rounds of
//! whole patients: the driving table (`patients` when used) decides each round's upper patient
//! id, and every other table contributes its rows below it. A round is evaluated (in parallel
//! partitions) and written before the next is read, so memory depends on the round size, not
//! on the backend's.

use std::fs::File;
use std::path::Path;

use arrow_array::RecordBatch;
use quarry_queries::qm::{Graph, NodeId, TableId, TableSchema, Type, Value};
use quarry_queries::semantics::Scalar;

use crate::arrow_io::{column_values, type_matches};
use crate::store::{InputError, Store, used_tables};

/// Rows per record batch read.
const BATCH: usize = 16_384;

type Batches = Box<dyn Iterator<Item = Result<RecordBatch, String>> + Send>;

/// One table's stream: the current batch and the next row in it.
struct Cursor {
    table: TableId,
    patient_level: bool,
    shown: String,
    /// Per schema column: its column in the batches (`None`: missing, NULL), and its type.
    columns: Vec<(Option<usize>, Type)>,
    pid: usize,
    batches: Batches,
    /// The current batch, converted: patient ids, and per schema column its values (empty
    /// for columns not read).
    ids: Vec<Option<i64>>,
    values: Vec<Vec<Scalar>>,
    row: usize,
    /// Rows read so far (for messages) and the last patient id (to check the order).
    read: usize,
    last: Option<i64>,
}

impl Cursor {
    /// Opens a table's file, reading only the `used` columns (the others are NULL).
    fn open(table: TableId, schema: &TableSchema, path: &Path, used: &[String]) -> Result<Cursor, InputError> {
        let shown = path.display().to_string();
        let err = |m: String| InputError(format!("{shown}: {m}"));
        let file = File::open(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let parquet = path.extension().is_some_and(|e| e == "parquet");
        let (names, types, batches): (Vec<String>, Vec<arrow_schema::DataType>, Batches) = if parquet {
            let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| err(format!("not a readable Parquet file: {e}")))?;
            let arrow = builder.schema().clone();
            let wanted: Vec<usize> = arrow
                .fields()
                .iter()
                .enumerate()
                .filter(|(_, f)| f.name() == "patient_id" || used.contains(f.name()))
                .map(|(i, _)| i)
                .collect();
            let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), wanted.iter().copied());
            let reader = builder.with_projection(mask).with_batch_size(BATCH).build().map_err(|e| err(e.to_string()))?;
            let names = wanted.iter().map(|&i| arrow.field(i).name().clone()).collect();
            let types = wanted.iter().map(|&i| arrow.field(i).data_type().clone()).collect();
            (names, types, Box::new(reader.map(|b| b.map_err(|e| e.to_string()))))
        } else {
            let reader = arrow_ipc::reader::FileReader::try_new_buffered(file, None).map_err(|e| err(format!("not a readable Arrow IPC file: {e}")))?;
            let arrow = reader.schema();
            let names = arrow.fields().iter().map(|f| f.name().clone()).collect();
            let types = arrow.fields().iter().map(|f| f.data_type().clone()).collect();
            (names, types, Box::new(reader.map(|b| b.map_err(|e| e.to_string()))))
        };
        let position = |n: &str| names.iter().position(|x| x == n);
        let pid = position("patient_id").ok_or_else(|| err("missing column 'patient_id'".into()))?;
        if !type_matches(&types[pid], &Type::Int) {
            return Err(err(format!("Type mismatch in column 'patient_id': expected int, got {}", types[pid])));
        }
        let mut columns = vec![];
        for c in &schema.columns {
            let i = position(&c.name).filter(|_| used.contains(&c.name));
            if let Some(i) = i
                && !type_matches(&types[i], &c.type_)
            {
                return Err(err(format!("Type mismatch in column '{}': expected {}, got {}", c.name, c.type_.name(), types[i])));
            }
            columns.push((i, c.type_.clone()));
        }
        Ok(Cursor { table, patient_level: schema.patient_level, shown, columns, pid, batches, ids: vec![], values: vec![], row: 0, read: 0, last: None })
    }

    /// The patient id of the next row, reading a batch if needed; `None` at the end.
    fn peek(&mut self) -> Result<Option<i64>, InputError> {
        loop {
            if self.row < self.ids.len() {
                return match self.ids[self.row] {
                    Some(p) => Ok(Some(p)),
                    None => Err(InputError(format!("{}, row {}: NULL value in non-nullable column 'patient_id'", self.shown, self.read + 1))),
                };
            }
            match self.batches.next() {
                None => return Ok(None),
                Some(b) => {
                    let b = b.map_err(|e| InputError(format!("{}: {e}", self.shown)))?;
                    let at = |m: String| InputError(format!("{}, rows {}–{}: {m}", self.shown, self.read + 1, self.read + b.num_rows()));
                    self.ids = column_values(b.column(self.pid).as_ref(), &Type::Int)
                        .map_err(at)?
                        .into_iter()
                        .map(|v| if let Some(Value::Int(p)) = v { Some(p) } else { None })
                        .collect();
                    self.values = self
                        .columns
                        .iter()
                        .map(|(i, type_)| match i {
                            Some(i) => column_values(b.column(*i).as_ref(), type_),
                            None => Ok(vec![]),
                        })
                        .collect::<Result<_, _>>()
                        .map_err(at)?;
                    self.row = 0;
                }
            }
        }
    }

    /// Takes the next row (after `peek` returned its patient).
    fn take(&mut self, patient: i64) -> Result<Vec<Scalar>, InputError> {
        if self.last.is_some_and(|l| l > patient) {
            return Err(InputError(format!(
                "{}, row {}: patient_id {patient} follows {}; backend tables must be sorted by patient_id",
                self.shown,
                self.read + 1,
                self.last.unwrap_or_default()
            )));
        }
        let row = self.row;
        let values = self.values.iter_mut().map(|c| c.get_mut(row).map(std::mem::take).unwrap_or(None)).collect();
        self.row += 1;
        self.read += 1;
        self.last = Some(patient);
        Ok(values)
    }

    /// Moves every row with a patient id below `bound` (all rows if `None`) into `store`.
    fn take_below(&mut self, bound: Option<i64>, store: &mut Store) -> Result<(), InputError> {
        while let Some(p) = self.peek()? {
            if bound.is_some_and(|b| p >= b) {
                break;
            }
            let row = self.take(p)?;
            store.push(self.table, self.patient_level, p, row);
        }
        Ok(())
    }
}

/// The open backend: one cursor per used table, the first driving the rounds.
pub struct Backend {
    cursors: Vec<Cursor>,
}

impl Backend {
    pub fn open(graph: &Graph, roots: &[NodeId], dir: &Path) -> Result<Backend, InputError> {
        if !dir.is_dir() {
            return Err(InputError(format!("Backend directory not found: {}", dir.display())));
        }
        let mut tables = used_tables(graph, roots);
        // `patients` (one row per patient) drives the rounds when it is used.
        if let Some(i) = tables.iter().position(|t| graph.table(*t).name == "patients") {
            tables.swap(0, i);
        }
        // The columns the definition reads, per table.
        let mut used: std::collections::HashMap<TableId, Vec<String>> = std::collections::HashMap::new();
        for n in graph.reachable_from(roots) {
            if let quarry_queries::qm::Node::SelectColumn { source, name } = graph.node(n) {
                used.entry(crate::kernels::frame_table(graph, *source)).or_default().push(name.clone());
            }
        }
        let mut cursors = vec![];
        for t in tables {
            let schema = graph.table(t);
            let path = crate::store::find_file(dir, &schema.name, &["parquet", "arrow"])
                .ok_or_else(|| InputError(format!("Missing table: {} (expected {}.parquet or {}.arrow; see docs/backend.md)", schema.name, dir.join(&schema.name).display(), schema.name)))?;
            cursors.push(Cursor::open(t, schema, &path, used.get(&t).map(Vec::as_slice).unwrap_or(&[]))?);
        }
        Ok(Backend { cursors })
    }

    /// The next round: at least `patients` whole patients of the driving table (fewer at the
    /// end) and every other table's rows for ids below the next driving patient. `None` when
    /// every table is exhausted. Also returns the round's id range `[lo, hi)` (`hi` `None`: to
    /// the end).
    pub fn next_round(&mut self, patients: usize) -> Result<Option<(Store, Option<i64>)>, InputError> {
        let mut store = Store::default();
        let Some((driver, rest)) = self.cursors.split_first_mut() else { return Ok(None) };
        let mut distinct = 0;
        let mut bound = None;
        while let Some(p) = driver.peek()? {
            if !store.patients.contains_key(&p) {
                if distinct == patients {
                    bound = Some(p);
                    break;
                }
                distinct += 1;
            }
            let row = driver.take(p)?;
            store.push(driver.table, driver.patient_level, p, row);
        }
        for c in rest {
            c.take_below(bound, &mut store)?;
        }
        if store.patients.is_empty() && bound.is_none() {
            return Ok(None);
        }
        Ok(Some((store, bound)))
    }
}
