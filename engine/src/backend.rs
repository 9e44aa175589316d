//! `--backend DIR`: a directory of tables too large for memory (docs/backend.md), one file per
//! table (`<table>.parquet` or `<table>.arrow`), each sorted by `patient_id`. Tables are read
//! as streams of record batches, only the columns the definition uses, and cut into rounds of
//! whole patients: the driving table (`patients` when used) decides each round's upper patient
//! id, and every other table contributes its rows below it. A round is evaluated (in parallel
//! partitions) and written before the next is read, so memory depends on the round size, not
//! on the backend's.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Mutex};

use parquet::arrow::arrow_reader::ParquetRecordBatchReader;
use rayon::prelude::*;

use arrow_array::{BooleanArray, RecordBatch};
use arrow_array::cast::AsArray;
use quarry_queries::qm::{Graph, NodeId, TableId, TableSchema, Type, Value};
use quarry_queries::semantics::Scalar;

use crate::arrow_io::{column_values, type_matches, typed_value_at};
use crate::pushdown::TableFilter;
use crate::store::{InputError, Store, used_tables};

/// A Parquet reader's error, with what to do when the file uses a codec quarry lacks.
fn parquet_message(e: impl std::fmt::Display) -> String {
    let m = e.to_string();
    if m.contains("Disabled feature at compile time") {
        format!("{m} (quarry reads Parquet compressed with zstd, snappy, gzip or lz4, or uncompressed; rewrite the file with one of those)")
    } else {
        m
    }
}

/// Whether filters are pushed into the scan (`QUARRY_PUSHDOWN=0` turns it off, so tests and
/// benchmarks can compare both ways).
fn pushdown_enabled() -> bool {
    std::env::var("QUARRY_PUSHDOWN").map_or(true, |v| v != "0")
}

/// Rows per record batch read.
const BATCH: usize = 16_384;

/// Filtered rows held in memory from the filters' own decoding, across a table's row groups
/// (a few hundred MB at most); beyond it, row groups are streamed (decoded a second time).
const EAGER_ROWS: usize = 2_000_000;

/// File row numbers kept for messages about a filtered table's rows (32 MB), or
/// `QUARRY_ROW_NUMBERS` (tests set it low).
const ROW_NUMBERS: usize = 4_000_000;

fn row_numbers() -> usize {
    std::env::var("QUARRY_ROW_NUMBERS").ok().and_then(|v| v.parse().ok()).unwrap_or(ROW_NUMBERS)
}

/// [`EAGER_ROWS`], or `QUARRY_HELD_ROWS` (tests set it low to stream filtered row groups).
fn eager_rows() -> usize {
    std::env::var("QUARRY_HELD_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(EAGER_ROWS)
}

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
    /// With a pushed filter: the file row numbers of the rows it kept, not yet taken (so that
    /// messages name the row in the file).
    kept: Option<Arc<Mutex<VecDeque<u64>>>>,
    /// Whether a filter ran in the scan (with or without the row numbers).
    filtered: bool,
    /// Lazy: batches are kept as read, and a row's values converted only if it is kept.
    lazy: bool,
    batch: Option<RecordBatch>,
    /// Batches read so far.
    batch_no: usize,
    /// What the scan's filters left, for the user.
    note: Option<String>,
}

/// Which rows a Parquet scan of a table may drop (`pushdown`): those of patients not among
/// `candidates`, those `filter` does not keep; and, with `collect`, the patient ids of the
/// kept rows `candidate` keeps are gathered (the population's candidates).
#[derive(Default)]
struct Scan {
    candidates: Option<Arc<Vec<i64>>>,
    filter: Option<TableFilter>,
    collect: Option<(TableFilter, Arc<Mutex<Vec<i64>>>)>,
}

/// One test of a scan: the columns it reads and which of the rows it is given it keeps.
struct Stage {
    columns: Vec<String>,
    test: Box<dyn FnMut(&RecordBatch) -> Result<BooleanArray, String> + Send>,
}

fn patient_ids(batch: &RecordBatch) -> Result<Vec<Option<i64>>, String> {
    let pid = batch.column_by_name("patient_id").ok_or("no patient_id column in the scan")?;
    Ok(match pid.as_primitive_opt::<arrow_array::types::Int64Type>() {
        Some(ids) => ids.iter().collect(),
        None => column_values(pid.as_ref(), &Type::Int)?.into_iter().map(|v| if let Some(Value::Int(p)) = v { Some(p) } else { None }).collect(),
    })
}

impl Scan {
    /// The tests for one row group, in order, for a file with the schema `arrow` (a filter
    /// whose columns the file lacks or types differently is left to the checks that report it).
    fn stages(&self, arrow: &arrow_schema::Schema, wanted: &[String]) -> Vec<Stage> {
        let mut stages = vec![];
        if let Some(ids) = &self.candidates {
            let ids = ids.clone();
            stages.push(Stage {
                columns: vec!["patient_id".into()],
                test: Box::new(move |b| Ok(patient_ids(b)?.into_iter().map(|p| Some(p.is_some_and(|p| ids.binary_search(&p).is_ok()))).collect())),
            });
        }
        let mut stages = self.filter_stages(arrow, wanted, stages);
        // The last test reads every column the cursor wants (for the rows the earlier ones
        // kept), so the rows it keeps can be taken from it rather than decoded again.
        if stages.last().is_some_and(|s| wanted.iter().any(|w| !s.columns.contains(w))) {
            stages.push(Stage { columns: wanted.to_vec(), test: Box::new(|b| Ok(BooleanArray::from(vec![true; b.num_rows()]))) });
        }
        stages
    }

    fn filter_stages(&self, arrow: &arrow_schema::Schema, wanted: &[String], mut stages: Vec<Stage>) -> Vec<Stage> {
        let fits = |f: &TableFilter| f.columns.iter().all(|(name, t)| arrow.fields().iter().any(|x| x.name() == name && type_matches(x.data_type(), t)));
        let Some(filter) = self.filter.as_ref().filter(|f| fits(f)) else { return stages };
        let cheap = |c: &str| arrow.field_with_name(c).is_ok_and(|f| matches!(f.data_type(), arrow_schema::DataType::Utf8 | arrow_schema::DataType::Dictionary(..)));
        if filter.splits(cheap) {
            // First the text columns (tested per dictionary value), then the rest only for
            // the rows that pass.
            let mut partial = filter.clone();
            let columns = filter.columns.iter().map(|(c, _)| c.clone()).filter(|c| cheap(c)).collect();
            stages.push(Stage { columns, test: Box::new(move |b| partial.evaluate(b, true)) });
        }
        let mut full = filter.clone();
        let mut last = Stage { columns: wanted.to_vec(), test: Box::new(move |b| full.evaluate(b, false)) };
        if let Some((candidate, sink)) = &self.collect
            && fits(candidate)
        {
            let (mut candidate, sink, mut test) = (candidate.clone(), sink.clone(), last.test);
            last.test = Box::new(move |b| {
                let keep = test(b)?;
                let mine = candidate.evaluate(b, false)?;
                let ids = patient_ids(b)?;
                // Rows come in patient order: one id per run of a patient's rows.
                let mut sink = sink.lock().expect("not poisoned");
                for p in keep.values().set_indices().filter(|&i| mine.value(i)).filter_map(|i| ids[i]) {
                    if sink.last() != Some(&p) {
                        sink.push(p);
                    }
                }
                Ok(keep)
            });
        }
        stages.push(last);
        stages
    }
}

/// A row group's filtered rows, taken from its last test (`Stashed`), or its reader when they
/// were too many to hold.
enum Group {
    Stashed(Vec<RecordBatch>),
    Stream(ParquetRecordBatchReader),
}

/// Where a row group's last test puts the rows it keeps, while all groups together hold at
/// most [`EAGER_ROWS`]; past that, the group gives up its stash and is read again as a stream.
#[derive(Clone)]
struct Stash {
    budget: Arc<std::sync::atomic::AtomicUsize>,
    batches: Arc<Mutex<Option<Vec<RecordBatch>>>>,
}

impl Stash {
    fn keep(&self, batch: &RecordBatch, keep: &BooleanArray) -> Result<(), arrow_schema::ArrowError> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut batches = self.batches.lock().expect("not poisoned");
        let Some(held) = batches.as_mut() else { return Ok(()) };
        let rows = keep.true_count();
        if self.budget.fetch_add(rows, Relaxed) + rows > eager_rows() {
            let given_back: usize = held.iter().map(RecordBatch::num_rows).sum::<usize>() + rows;
            self.budget.fetch_sub(given_back, Relaxed);
            *batches = None;
            return Ok(());
        }
        if rows > 0 {
            held.push(arrow_select::filter::filter_record_batch(batch, keep)?);
        }
        Ok(())
    }
}

/// A budget for the kept rows' file row numbers across a table's row groups (8 bytes each):
/// past [`ROW_NUMBERS`], they are dropped and messages count rows among those kept.
/// It also counts the rows the filters keep.
#[derive(Clone, Default)]
struct Numbers {
    kept: Arc<std::sync::atomic::AtomicUsize>,
    used: Arc<std::sync::atomic::AtomicUsize>,
    lost: Arc<std::sync::atomic::AtomicBool>,
}

impl Numbers {
    /// Counts `rows` kept; whether their numbers may be recorded.
    fn allow(&self, rows: usize) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        self.kept.fetch_add(rows, Relaxed);
        if self.lost.load(Relaxed) || self.used.fetch_add(rows, Relaxed) + rows > row_numbers() {
            self.lost.store(true, Relaxed);
            return false;
        }
        true
    }

    fn lost(&self) -> bool {
        self.lost.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A row group's tests as Parquet predicates, and where the row numbers (in the file, from
/// the group's first row `start`) of the rows the last keeps are gathered: the first test sees
/// every row, each later one the rows the one before kept.
fn predicates(
    stages: Vec<Stage>,
    start: u64,
    schema: &parquet::schema::types::SchemaDescriptor,
    index: impl Fn(&str) -> Option<usize>,
    stash: &Stash,
    numbers: &Numbers,
) -> (Vec<Box<dyn parquet::arrow::arrow_reader::ArrowPredicate>>, Arc<Mutex<VecDeque<u64>>>) {
    let mut input: Option<Arc<Mutex<VecDeque<u64>>>> = None;
    let mut out: Vec<Box<dyn parquet::arrow::arrow_reader::ArrowPredicate>> = vec![];
    let count = stages.len();
    *stash.batches.lock().expect("not poisoned") = Some(vec![]);
    for (k, mut stage) in stages.into_iter().enumerate() {
        let last = k + 1 == count;
        let stash = last.then(|| stash.clone());
        let numbers = numbers.clone();
        let output: Arc<Mutex<VecDeque<u64>>> = Arc::default();
        let (from, into) = (input.take(), output.clone());
        let mut seen = start;
        let mask = parquet::arrow::ProjectionMask::roots(schema, stage.columns.iter().filter_map(|c| index(c)));
        out.push(Box::new(parquet::arrow::arrow_reader::ArrowPredicateFn::new(mask, move |batch: RecordBatch| {
            let keep = (stage.test)(&batch).map_err(arrow_schema::ArrowError::ComputeError)?;
            let n = batch.num_rows();
            let rows: Vec<u64> = match &from {
                Some(q) => q.lock().expect("not poisoned").drain(..n).collect(),
                None => {
                    seen += n as u64;
                    (seen - n as u64..seen).collect()
                }
            };
            if !last || numbers.allow(keep.true_count()) {
                into.lock().expect("not poisoned").extend(keep.values().set_indices().map(|i| rows[i]));
            }
            if let Some(stash) = &stash {
                stash.keep(&batch, &keep)?;
            }
            Ok(keep)
        })));
        input = Some(output);
    }
    (out, input.unwrap_or_default())
}

impl Cursor {
    /// Opens a table's file, reading only the `used` columns (the others are NULL). `scan`
    /// says which rows a Parquet file's scan may drop.
    fn open(table: TableId, schema: &TableSchema, path: &Path, used: &[String], scan: Scan) -> Result<Cursor, InputError> {
        let shown = path.display().to_string();
        let err = |m: String| InputError(format!("{shown}: {m}"));
        let file = File::open(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let parquet = path.extension().is_some_and(|e| e == "parquet");
        let mut kept = None;
        let mut filtered = false;
        let mut note = None;
        let (names, types, batches): (Vec<String>, Vec<arrow_schema::DataType>, Batches) = if parquet {
            use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowFilter};
            let unreadable = |e: parquet::errors::ParquetError| err(format!("not a readable Parquet file: {e}"));
            let metadata = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new()).map_err(unreadable)?;
            let arrow = metadata.schema().clone();
            // Text columns are read as dictionaries (as Parquet stores them): each distinct
            // value is converted, and tested by a pushed filter, once.
            let hinted = arrow_schema::Schema::new_with_metadata(
                arrow
                    .fields()
                    .iter()
                    .map(|f| match f.data_type() {
                        arrow_schema::DataType::Utf8 => Arc::new(f.as_ref().clone().with_data_type(arrow_schema::DataType::Dictionary(Box::new(arrow_schema::DataType::Int32), Box::new(arrow_schema::DataType::Utf8)))),
                        _ => f.clone(),
                    })
                    .collect::<Vec<_>>(),
                arrow.metadata().clone(),
            );
            let reader_metadata = ArrowReaderMetadata::try_new(metadata.metadata().clone(), ArrowReaderOptions::new().with_schema(Arc::new(hinted))).map_err(unreadable)?;
            let wanted: Vec<usize> = arrow
                .fields()
                .iter()
                .enumerate()
                .filter(|(_, f)| f.name() == "patient_id" || used.contains(f.name()))
                .map(|(i, _)| i)
                .collect();
            let wanted_names: Vec<String> = wanted.iter().map(|&i| arrow.field(i).name().clone()).collect();
            let stages = scan.stages(&arrow, &wanted_names);
            let reader: Batches = if stages.is_empty() {
                let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(file, reader_metadata);
                let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), wanted.iter().copied());
                let reader = builder.with_projection(mask).with_batch_size(BATCH).build().map_err(|e| err(parquet_message(e)))?;
                Box::new(reader.map(|b| b.map_err(parquet_message)))
            } else {
                // Parquet evaluates a row filter when the reader is built, so the row groups
                // are filtered in parallel, each by its own reader; their batches then follow
                // one another in file order.
                let starts: Vec<u64> = reader_metadata
                    .metadata()
                    .row_groups()
                    .iter()
                    .scan(0u64, |at, g| {
                        let start = *at;
                        *at += g.num_rows() as u64;
                        Some(start)
                    })
                    .collect();
                let budget = Arc::new(std::sync::atomic::AtomicUsize::new(0));
                let numbers = Numbers::default();
                let built: Vec<Result<(Group, VecDeque<u64>), InputError>> = starts
                    .par_iter()
                    .enumerate()
                    .map(|(g, &start)| {
                        let file = File::open(path).map_err(|e| err(format!("cannot read: {e}")))?;
                        let group = ParquetRecordBatchReaderBuilder::new_with_metadata(file, reader_metadata.clone());
                        let mask = parquet::arrow::ProjectionMask::roots(group.parquet_schema(), wanted.iter().copied());
                        let stash = Stash { budget: budget.clone(), batches: Arc::default() };
                        let (predicates, rows) = predicates(scan.stages(&arrow, &wanted_names), start, group.parquet_schema(), |c| arrow.index_of(c).ok(), &stash, &numbers);
                        let reader = group
                            .with_row_groups(vec![g])
                            .with_projection(mask)
                            .with_batch_size(BATCH)
                            .with_row_filter(RowFilter::new(predicates))
                            .build()
                            .map_err(|e| err(parquet_message(e)))?;
                        let rows = std::mem::take(&mut *rows.lock().expect("not poisoned"));
                        let group = match stash.batches.lock().expect("not poisoned").take() {
                            Some(batches) => Group::Stashed(batches),
                            None => Group::Stream(reader),
                        };
                        Ok((group, rows))
                    })
                    .collect();
                let mut queue = VecDeque::new();
                let mut readers = vec![];
                for b in built {
                    let (reader, rows) = b?;
                    queue.extend(rows);
                    readers.push(reader);
                }
                let total: i64 = reader_metadata.metadata().row_groups().iter().map(|g| g.num_rows()).sum();
                let why = match (&scan.candidates, &scan.filter) {
                    (Some(_), None) => "belong to patients who can be in the population",
                    (None, _) => "pass the definition's filters",
                    (Some(_), Some(_)) => "pass the definition's filters and belong to patients who can be in the population",
                };
                filtered = true;
                note = Some(format!("{}: {} of {} rows {why}", schema.name, numbers.kept.load(std::sync::atomic::Ordering::Relaxed), total));
                if !numbers.lost() {
                    kept = Some(Arc::new(Mutex::new(queue)));
                }
                Box::new(readers.into_iter().flat_map(|g| -> Batches {
                    match g {
                        Group::Stashed(batches) => Box::new(batches.into_iter().map(Ok)),
                        Group::Stream(reader) => Box::new(reader.map(|b| b.map_err(parquet_message))),
                    }
                }))
            };
            let names = wanted.iter().map(|&i| arrow.field(i).name().clone()).collect();
            let types = wanted.iter().map(|&i| arrow.field(i).data_type().clone()).collect();
            (names, types, reader)
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
        Ok(Cursor { table, patient_level: schema.patient_level, shown, columns, pid, batches, ids: vec![], values: vec![], row: 0, read: 0, last: None, kept, filtered, lazy: false, batch: None, batch_no: 0, note })
    }

    /// The next row's number in the file (1-based), for messages; or, when a filter dropped
    /// rows without keeping the kept rows' numbers, among the rows it kept.
    fn file_row(&self) -> String {
        match &self.kept {
            Some(queue) => (queue.lock().expect("not poisoned").front().map_or(self.read as u64, |r| *r) + 1).to_string(),
            None if self.filtered => format!("{} of those the definition's filters kept", self.read + 1),
            None => (self.read + 1).to_string(),
        }
    }

    /// The patient id of the next row, reading a batch if needed; `None` at the end.
    fn peek(&mut self) -> Result<Option<i64>, InputError> {
        loop {
            if self.row < self.ids.len() {
                return match self.ids[self.row] {
                    Some(p) => Ok(Some(p)),
                    None => Err(InputError(format!("{}, row {}: NULL value in non-nullable column 'patient_id'", self.shown, self.file_row()))),
                };
            }
            match self.batches.next() {
                None => return Ok(None),
                Some(b) => {
                    let b = b.map_err(|e| InputError(format!("{}: {e}", self.shown)))?;
                    let first = self.file_row();
                    let at = |m: String| match self.filtered {
                        false => InputError(format!("{}, rows {}–{}: {m}", self.shown, first, self.read + b.num_rows())),
                        true => InputError(format!("{}, rows from {first}: {m}", self.shown)),
                    };
                    let pid = b.column(self.pid);
                    self.ids = match pid.as_primitive_opt::<arrow_array::types::Int64Type>() {
                        Some(ids) => ids.iter().collect(),
                        None => column_values(pid.as_ref(), &Type::Int).map_err(at)?.into_iter().map(|v| if let Some(Value::Int(p)) = v { Some(p) } else { None }).collect(),
                    };
                    self.row = 0;
                    self.batch_no += 1;
                    if self.lazy {
                        // Rows are converted one by one when they are kept.
                        self.batch = Some(b);
                        continue;
                    }
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
        let row = self.advance(patient)?;
        Ok(self.values.iter_mut().map(|c| c.get_mut(row).map(std::mem::take).unwrap_or(None)).collect())
    }

    /// Passes the next row (after `peek` returned its patient), checking the order; returns
    /// its index in the current batch.
    fn advance(&mut self, patient: i64) -> Result<usize, InputError> {
        if self.last.is_some_and(|l| l > patient) {
            return Err(InputError(format!(
                "{}, row {}: patient_id {patient} follows {}; backend tables must be sorted by patient_id",
                self.shown,
                self.file_row(),
                self.last.unwrap_or_default()
            )));
        }
        let row = self.row;
        self.row += 1;
        self.read += 1;
        if let Some(queue) = &self.kept {
            queue.lock().expect("not poisoned").pop_front();
        }
        self.last = Some(patient);
        Ok(row)
    }

    /// One row of a batch a lazy cursor read, converted.
    fn convert(&self, batch: &RecordBatch, row: usize) -> Result<Vec<Scalar>, InputError> {
        self.columns
            .iter()
            .map(|(i, type_)| match i {
                Some(i) => typed_value_at(batch.column(*i).as_ref(), row, type_),
                None => Ok(None),
            })
            .collect::<Result<_, _>>()
            .map_err(|m| InputError(format!("{}: {m}", self.shown)))
    }

    /// Moves every row with a patient id below `bound` (all rows if `None`) into `store`.
    fn take_below(&mut self, bound: Option<i64>, store: &mut Store) -> Result<(), InputError> {
        // A patient's rows are consecutive: they go into the store together.
        let mut current: Option<(i64, Vec<Vec<Scalar>>)> = None;
        while let Some(p) = self.peek()? {
            if bound.is_some_and(|b| p >= b) {
                break;
            }
            let row = self.take(p)?;
            match &mut current {
                Some((q, rows)) if *q == p => rows.push(row),
                _ => {
                    if let Some((q, rows)) = current.replace((p, vec![row])) {
                        store.push_rows(self.table, self.patient_level, q, rows);
                    }
                }
            }
        }
        if let Some((q, rows)) = current {
            store.push_rows(self.table, self.patient_level, q, rows);
        }
        Ok(())
    }
}

/// The open backend: one cursor per used table, the first driving the rounds.
pub struct Backend {
    cursors: Vec<Cursor>,
    /// Tables a patient needs a row in to be in the population (`pushdown::required_tables`),
    /// when the driving table is not one of them: the other patients are left out of rounds.
    required: Vec<TableId>,
    /// Patients of the driving table read so far.
    read: usize,
}

impl Backend {
    /// Opens the tables `roots` read. With the dataset's `population`, rounds hold only the
    /// patients who could be in it.
    pub fn open(graph: &Graph, roots: &[NodeId], population: Option<NodeId>, dir: &Path) -> Result<Backend, InputError> {
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
        let enabled = pushdown_enabled();
        let mut filters = if enabled { crate::pushdown::plan(graph, roots) } else { Default::default() };
        // When only patients with certain rows can be in the population, those tables are
        // scanned first, gathering the candidates' ids, and the others read only their rows.
        let candidates = population.filter(|_| enabled).and_then(|p| crate::pushdown::candidates(graph, p)).filter(|c| !c.iter().any(|(t, _)| Some(t) == tables.first()));
        let required: Vec<TableId> = population.filter(|_| enabled).and_then(|p| crate::pushdown::required_frames(graph, p)).map(|frames| frames.iter().map(|f| crate::kernels::frame_table(graph, *f)).collect()).unwrap_or_default();
        let sink: Arc<Mutex<Vec<i64>>> = Arc::default();
        let mut paths = HashMap::new();
        for &t in &tables {
            let schema = graph.table(t);
            let path = crate::store::find_file(dir, &schema.name, &["parquet", "arrow"])
                .ok_or_else(|| InputError(format!("Missing table: {} (expected {}.parquet or {}.arrow; see docs/backend.md)", schema.name, dir.join(&schema.name).display(), schema.name)))?;
            paths.insert(t, path);
        }
        let path_of = |t: TableId| -> Result<&std::path::PathBuf, InputError> { Ok(&paths[&t]) };
        let columns = |t: TableId| used.get(&t).map(Vec::as_slice).unwrap_or(&[]);
        // Tables are opened (and their filters run) in parallel: first those that gather the
        // candidates, then the rest, which read only the candidates' rows.
        let scans: Vec<(usize, TableId, Scan)> = tables
            .iter()
            .enumerate()
            .filter_map(|(i, &t)| {
                let (_, candidate) = candidates.as_ref()?.iter().find(|(x, _)| *x == t)?;
                Some((i, t, Scan { filter: filters.remove(&t), collect: Some((candidate.clone(), sink.clone())), ..Scan::default() }))
            })
            .collect();
        // The table's own filter keeps every row a candidate frame has, so when each such table
        // has one (and the scan ran it), their kept rows' patients are the candidates.
        let mut gathered = candidates.is_some() && scans.iter().all(|(_, _, s)| s.filter.is_some());
        let open = |(i, t, scan): (usize, TableId, Scan)| -> Result<(usize, Cursor), InputError> { Ok((i, Cursor::open(t, graph.table(t), path_of(t)?, columns(t), scan)?)) };
        let mut opened: Vec<Option<Cursor>> = tables.iter().map(|_| None).collect();
        for r in scans.into_par_iter().map(open).collect::<Vec<_>>() {
            let (i, cursor) = r?;
            gathered &= cursor.filtered;
            opened[i] = Some(cursor);
        }
        let ids = gathered.then(|| {
            let mut ids = std::mem::take(&mut *sink.lock().expect("not poisoned"));
            ids.sort_unstable();
            ids.dedup();
            Arc::new(ids)
        });
        let rest: Vec<(usize, TableId, Scan)> = tables.iter().enumerate().filter(|(i, _)| opened[*i].is_none()).map(|(i, &t)| (i, t, Scan { candidates: ids.clone(), filter: filters.remove(&t), collect: None })).collect();
        for r in rest.into_par_iter().map(open).collect::<Vec<_>>() {
            let (i, cursor) = r?;
            opened[i] = Some(cursor);
        }
        let mut cursors: Vec<Cursor> = opened.into_iter().map(|c| c.expect("every table opened")).collect();
        let mut required = required;
        if cursors.first().is_some_and(|c| required.contains(&c.table)) {
            required.clear();
        }
        // Without the candidates' ids, the driving table's rows wait (unconverted) until the
        // other tables say which of its patients can be in the population.
        if let Some(driver) = cursors.first_mut() {
            driver.lazy = !required.is_empty() && ids.is_none();
        }
        Ok(Backend { cursors, required, read: 0 })
    }

    /// What the scans' filters left, one line per filtered table (for the user).
    pub fn notes(&self) -> Vec<String> {
        self.cursors.iter().filter_map(|c| c.note.clone()).collect()
    }

    /// Patients of the driving table read so far (for progress).
    pub fn patients_read(&self) -> usize {
        self.read
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
        // The driving table's rows: converted as taken, or (when only some patients can be
        // in the population) kept as batch and row until the other tables say which.
        let mut driving: Vec<(i64, Result<Vec<Scalar>, (usize, usize)>)> = vec![];
        let mut batches: Vec<RecordBatch> = vec![];
        let mut batch_no = usize::MAX;
        while let Some(p) = driver.peek()? {
            if driving.last().is_none_or(|(last, _)| *last != p) {
                if distinct == patients {
                    bound = Some(p);
                    break;
                }
                distinct += 1;
            }
            if driver.lazy {
                let row = driver.advance(p)?;
                if driver.batch_no != batch_no {
                    batches.push(driver.batch.clone().expect("a lazy cursor keeps its batch"));
                    batch_no = driver.batch_no;
                }
                driving.push((p, Err((batches.len() - 1, row))));
            } else {
                driving.push((p, Ok(driver.take(p)?)));
            }
        }
        self.read += distinct;
        for c in rest {
            c.take_below(bound, &mut store)?;
        }
        if !self.required.is_empty() {
            store.patients.retain(|_, tables| self.required.iter().any(|t| tables.contains_key(t)));
        }
        for (p, row) in driving {
            if self.required.is_empty() || store.patients.contains_key(&p) {
                let row = match row {
                    Ok(values) => values,
                    Err((b, r)) => driver.convert(&batches[b], r)?,
                };
                store.push(driver.table, driver.patient_level, p, row);
            }
        }
        if store.patients.is_empty() && bound.is_none() {
            return Ok(None);
        }
        Ok(Some((store, bound)))
    }
}
