//! How a backend's Parquet table is scanned (docs/backend.md, "How it is read"): the tests a
//! scan applies to each row group (the population's candidates, the pushed filter in one or
//! two passes), run as Parquet row filters on the row groups in parallel, with the kept rows'
//! file numbers and the rows themselves held within budgets.

use std::collections::VecDeque;
use std::fs::File;
use std::sync::{Arc, Mutex};

use arrow_array::cast::AsArray;
use arrow_array::{BooleanArray, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReader;
use quarry_queries::qm::{TableSchema, Type, Value};
use rayon::prelude::*;

use super::held::Held;
use super::{BATCH, Batches, parquet_message};
use crate::arrow_io::{column_values, type_matches};
use crate::pushdown::TableFilter;
use crate::store::InputError;

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

/// Which rows a Parquet scan of a table may drop (`pushdown`): those of patients not among
/// `candidates`, those `filter` does not keep; and, with `collect`, the patient ids of the
/// kept rows `candidate` keeps are gathered (the population's candidates).
#[derive(Default)]
pub(super) struct Scan {
    pub candidates: Option<Arc<Vec<i64>>>,
    pub filter: Option<TableFilter>,
    pub collect: Option<(TableFilter, Arc<Mutex<Vec<i64>>>)>,
}

/// Which rows of a batch a stage keeps.
type RowTest = Box<dyn FnMut(&RecordBatch) -> Result<BooleanArray, String> + Send>;

/// The row numbers a stage hands to the next (the scan's held rows).
type RowNumbers = Arc<Mutex<VecDeque<u64>>>;

/// One test of a scan: the columns it reads and which of the rows it is given it keeps.
struct Stage {
    columns: Vec<String>,
    test: RowTest,
}

fn pid_column(batch: &RecordBatch) -> Result<&dyn arrow_array::Array, String> {
    Ok(batch.column_by_name("patient_id").ok_or("no patient_id column in the scan")?.as_ref())
}

/// Whether a file with the schema `arrow` has the filter's columns with the schema's types.
fn fits(filter: &TableFilter, arrow: &arrow_schema::Schema) -> bool {
    filter.columns.iter().all(|(name, t)| arrow.field_with_name(name).is_ok_and(|x| type_matches(x.data_type(), t)))
}

/// Which rows of a table's `patient_id` column belong to some of the (sorted) `ids`. A
/// table's rows come in patient order, so the ids are walked alongside the rows (a binary
/// search only where the rows go back).
struct Among {
    ids: Arc<Vec<i64>>,
    /// The first of the ids not below the last row's.
    at: usize,
    /// The last row's id (at first, past every id: a row group's first row is searched for).
    last: i64,
}

impl Among {
    fn new(ids: Arc<Vec<i64>>) -> Among {
        Among { ids, at: 0, last: i64::MAX }
    }

    fn has(&mut self, p: i64) -> bool {
        let ids = &self.ids;
        if p < self.last {
            self.at = ids.partition_point(|x| *x < p);
        } else {
            while self.at < ids.len() && ids[self.at] < p {
                self.at += 1;
            }
        }
        self.last = p;
        ids.get(self.at) == Some(&p)
    }

    fn test(&mut self, pid: &dyn arrow_array::Array) -> Result<BooleanArray, String> {
        Ok(match pid.as_primitive_opt::<arrow_array::types::Int64Type>() {
            Some(pids) if arrow_array::Array::null_count(pids) == 0 => {
                BooleanArray::new(arrow_buffer::BooleanBuffer::collect_bool(pids.len(), |i| self.has(pids.value(i))), None)
            }
            _ => patient_ids(pid)?.into_iter().map(|p| Some(p.is_some_and(|p| self.has(p)))).collect(),
        })
    }
}

/// A `patient_id` column's values (NULL where missing).
pub(super) fn patient_ids(pid: &dyn arrow_array::Array) -> Result<Vec<Option<i64>>, String> {
    Ok(match pid.as_primitive_opt::<arrow_array::types::Int64Type>() {
        Some(ids) => ids.iter().collect(),
        None => column_values(pid, &Type::Int)?.into_iter().map(|v| if let Some(Value::Int(p)) = v { Some(p) } else { None }).collect(),
    })
}

impl Scan {
    /// The tests for one row group, in order, for a file with the schema `arrow` (a filter
    /// whose columns the file lacks or types differently is left to the checks that report it).
    fn stages(&self, arrow: &arrow_schema::Schema, wanted: &[String]) -> Vec<Stage> {
        let mut stages = vec![];
        if let Some(ids) = &self.candidates {
            let mut among = Among::new(ids.clone());
            stages.push(Stage { columns: vec!["patient_id".into()], test: Box::new(move |b| among.test(pid_column(b)?)) });
        }
        let mut stages = self.filter_stages(arrow, wanted, stages);
        // The last test reads every column the cursor wants (for the rows the earlier ones
        // kept), so the rows it keeps can be taken from it rather than decoded again.
        if stages.last().is_some_and(|s| wanted.iter().any(|w| !s.columns.contains(w))) {
            stages.push(Stage { columns: wanted.to_vec(), test: Box::new(|b| Ok(BooleanArray::from(vec![true; b.num_rows()]))) });
        }
        stages
    }

    /// The pushed filter, when the file has its columns with the schema's types.
    fn filter_for(&self, arrow: &arrow_schema::Schema) -> Option<&TableFilter> {
        self.filter.as_ref().filter(|f| fits(f, arrow))
    }

    fn filter_stages(&self, arrow: &arrow_schema::Schema, wanted: &[String], mut stages: Vec<Stage>) -> Vec<Stage> {
        let Some(filter) = self.filter_for(arrow) else { return stages };
        let cheap = |c: &str| {
            arrow
                .field_with_name(c)
                .is_ok_and(|f| matches!(f.data_type(), arrow_schema::DataType::Utf8 | arrow_schema::DataType::Dictionary(..)))
        };
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
            && fits(candidate, arrow)
        {
            let (mut candidate, sink, mut test) = (candidate.clone(), sink.clone(), last.test);
            last.test = Box::new(move |b| {
                let keep = test(b)?;
                let mine = candidate.evaluate(b, false)?;
                let ids = patient_ids(pid_column(b)?)?;
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

/// A row group made ready to read: its part's index, its batches, and the file rows its
/// filters kept.
type BuiltGroup = (usize, Group, VecDeque<u64>);

/// Where a row group's last test puts the rows it keeps, while all groups together hold at
/// most [`EAGER_ROWS`]; past that, the group gives up its stash and is read again as a stream.
#[derive(Clone)]
struct Stash {
    budget: Arc<std::sync::atomic::AtomicUsize>,
    batches: Arc<Mutex<Option<Vec<RecordBatch>>>>,
}

impl Stash {
    fn new(budget: Arc<std::sync::atomic::AtomicUsize>) -> Stash {
        Stash { budget, batches: Arc::new(Mutex::new(Some(vec![]))) }
    }

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
/// every row, each later one the rows the one before kept. A column a test shares with the
/// test before is not read again: the one before hands on its values for the rows it keeps.
fn predicates(
    stages: Vec<Stage>,
    start: u64,
    schema: &parquet::schema::types::SchemaDescriptor,
    arrow: &arrow_schema::Schema,
    stash: &Stash,
    numbers: &Numbers,
) -> Result<(Vec<Box<dyn parquet::arrow::arrow_reader::ArrowPredicate>>, RowNumbers), arrow_schema::ArrowError> {
    let index = |c: &str| arrow.index_of(c).ok();
    // Per stage, the columns it is handed by the one before (read by both, and not all of
    // its own: a test reads at least one column itself).
    let carried: Vec<Vec<String>> = (0..stages.len())
        .map(|k| {
            let before: &[String] = if k == 0 { &[] } else { &stages[k - 1].columns };
            let shared: Vec<String> = stages[k].columns.iter().filter(|c| before.contains(c)).cloned().collect();
            if shared.len() < stages[k].columns.len() { shared } else { vec![] }
        })
        .collect();
    let mut input: Option<RowNumbers> = None;
    let mut handed: Option<Carry> = None;
    let mut out: Vec<Box<dyn parquet::arrow::arrow_reader::ArrowPredicate>> = vec![];
    let count = stages.len();
    for (k, mut stage) in stages.into_iter().enumerate() {
        let last = k + 1 == count;
        let stash = last.then(|| stash.clone());
        let numbers = numbers.clone();
        let output: Arc<Mutex<VecDeque<u64>>> = Arc::default();
        let (from, into) = (input.take(), output.clone());
        let given = handed.take();
        let hand_on = carried.get(k + 1).filter(|c| !c.is_empty()).map(|c| Carry::new(c.clone(), arrow)).transpose()?;
        handed = hand_on.clone();
        let mut seen = start;
        // The columns in the order of the file (the order a batch of all of them has).
        let mut order: Vec<(usize, String)> = stage.columns.iter().filter_map(|c| Some((index(c)?, c.clone()))).collect();
        order.sort();
        let read = order.iter().filter(|(_, c)| !carried[k].contains(c)).map(|(i, _)| *i);
        let mask = parquet::arrow::ProjectionMask::roots(schema, read);
        out.push(Box::new(parquet::arrow::arrow_reader::ArrowPredicateFn::new(mask, move |batch: RecordBatch| {
            let batch = match &given {
                Some(given) => given.join(batch, &order)?,
                None => batch,
            };
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
            if let Some(hand_on) = &hand_on {
                hand_on.put(&batch, &keep)?;
            }
            if let Some(stash) = &stash {
                stash.keep(&batch, &keep)?;
            }
            Ok(keep)
        })));
        input = Some(output);
    }
    Ok((out, input.unwrap_or_default()))
}

/// Columns one test hands the next: their values for the rows it kept, in order, which the
/// next takes as it is given batches of those rows.
#[derive(Clone)]
struct Carry {
    columns: Vec<String>,
    /// The columns' fields in the reader's schema.
    fields: Vec<arrow_schema::FieldRef>,
    queues: Arc<Mutex<Vec<VecDeque<arrow_array::ArrayRef>>>>,
}

impl Carry {
    fn new(columns: Vec<String>, arrow: &arrow_schema::Schema) -> Result<Carry, arrow_schema::ArrowError> {
        let fields =
            columns.iter().map(|c| Ok(Arc::new(arrow.field_with_name(c)?.clone()))).collect::<Result<_, arrow_schema::ArrowError>>()?;
        let queues = Arc::new(Mutex::new(columns.iter().map(|_| VecDeque::new()).collect()));
        Ok(Carry { columns, fields, queues })
    }

    /// Queues the `keep` rows of the columns of `batch`.
    fn put(&self, batch: &RecordBatch, keep: &BooleanArray) -> Result<(), arrow_schema::ArrowError> {
        if keep.true_count() == 0 {
            return Ok(());
        }
        let mut queues = self.queues.lock().expect("not poisoned");
        for (c, q) in self.columns.iter().zip(queues.iter_mut()) {
            let column =
                batch.column_by_name(c).ok_or_else(|| arrow_schema::ArrowError::SchemaError(format!("no column '{c}' to hand on")))?;
            q.push_back(arrow_select::filter::filter(column, keep)?);
        }
        Ok(())
    }

    /// `batch` (the next rows, without the carried columns) with the carried columns' values
    /// for those rows, its columns in `order`.
    fn join(&self, batch: RecordBatch, order: &[(usize, String)]) -> Result<RecordBatch, arrow_schema::ArrowError> {
        let n = batch.num_rows();
        let mut queues = self.queues.lock().expect("not poisoned");
        let mut carried = vec![];
        for (q, field) in queues.iter_mut().zip(&self.fields) {
            let mut parts = vec![arrow_array::new_empty_array(field.data_type())];
            let mut need = n;
            while need > 0 {
                let front = q.pop_front().ok_or_else(|| arrow_schema::ArrowError::ComputeError("fewer rows handed on than read".into()))?;
                if front.len() > need {
                    q.push_front(front.slice(need, front.len() - need));
                    parts.push(front.slice(0, need));
                    need = 0;
                } else {
                    need -= front.len();
                    parts.push(front);
                }
            }
            carried.push(match parts.len() {
                1 | 2 => parts.pop().expect("one"),
                _ => arrow_select::concat::concat(&parts[1..].iter().map(|a| a.as_ref()).collect::<Vec<_>>())?,
            });
        }
        let schema = batch.schema();
        let mut fields = vec![];
        let mut columns = vec![];
        for (_, name) in order {
            match self.columns.iter().position(|c| c == name) {
                Some(k) => {
                    fields.push(self.fields[k].clone());
                    columns.push(carried[k].clone());
                }
                None => {
                    let i = schema.index_of(name)?;
                    fields.push(schema.fields()[i].clone());
                    columns.push(batch.column(i).clone());
                }
            }
        }
        RecordBatch::try_new_with_options(
            Arc::new(arrow_schema::Schema::new(fields)),
            columns,
            &arrow_array::RecordBatchOptions::new().with_row_count(Some(n)),
        )
    }
}

/// `, column 'NAME'` for the first column the scan reads whose values in row group `g` of
/// `part` cannot be read on their own (asked only once reading the group failed, to say where).
fn failing_column(part: &Part, g: usize) -> Option<String> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    part.wanted.iter().find_map(|&i| {
        let file = File::open(&part.path).ok()?;
        let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(file, part.metadata.clone());
        let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), [i]);
        let fails = match builder.with_row_groups(vec![g]).with_projection(mask).with_batch_size(BATCH).build() {
            Ok(mut reader) => reader.any(|b| b.is_err()),
            Err(_) => true,
        };
        fails.then(|| format!(", column '{}'", part.arrow.field(i).name()))
    })
}

/// A parquet crate message without the wrappers its errors pass through ("External: Parquet
/// argument error: Parquet error: …").
fn tidy(message: &str) -> &str {
    let mut m = message;
    while let Some(rest) = ["External: ", "Parquet argument error: ", "Parquet error: "].iter().find_map(|p| m.strip_prefix(p)) {
        m = rest;
    }
    m
}

/// What opening a Parquet table gives a cursor: the projected columns' names and types,
/// the batches (filtered as `scan` allows), the kept rows' numbers (when held), where each part
/// file's rows start among the table's, and, when the scan filtered, a line for the user about
/// what it left.
pub(super) struct Opened {
    pub names: Vec<String>,
    pub types: Vec<arrow_schema::DataType>,
    pub batches: Batches,
    pub kept: Option<Arc<Mutex<VecDeque<u64>>>>,
    pub parts: Vec<(String, u64)>,
    pub note: Option<String>,
}

/// One part file of a table, opened: its reader metadata (text columns read as
/// dictionaries), its Arrow schema, the indices of the wanted columns, and how to put its
/// batches' columns in the first part's order.
struct Part {
    path: std::path::PathBuf,
    metadata: parquet::arrow::arrow_reader::ArrowReaderMetadata,
    arrow: arrow_schema::SchemaRef,
    wanted: Vec<usize>,
    /// Per column of the first part's projection, its position in this part's projection.
    order: Vec<usize>,
    start: u64,
}

impl Part {
    /// Whether the scan reads the leaf column `leaf` of this part.
    fn reads(&self, leaf: usize) -> bool {
        self.wanted.contains(&self.metadata.metadata().file_metadata().schema_descr().get_column_root_idx(leaf))
    }

    /// A batch of this part with its columns in the first part's order.
    fn reorder(&self, batch: RecordBatch) -> Result<RecordBatch, arrow_schema::ArrowError> {
        if self.order.iter().enumerate().all(|(i, &k)| i == k) { Ok(batch) } else { batch.project(&self.order) }
    }
}

/// Text columns as dictionaries (as Parquet stores them): each distinct value is converted,
/// and tested by a pushed filter, once.
fn hinted(arrow: &arrow_schema::Schema) -> arrow_schema::Schema {
    arrow_schema::Schema::new_with_metadata(
        arrow
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                arrow_schema::DataType::Utf8 => Arc::new(f.as_ref().clone().with_data_type(arrow_schema::DataType::Dictionary(
                    Box::new(arrow_schema::DataType::Int32),
                    Box::new(arrow_schema::DataType::Utf8),
                ))),
                _ => f.clone(),
            })
            .collect::<Vec<_>>(),
        arrow.metadata().clone(),
    )
}

/// Opens a Parquet table, one file or the part files of a directory (in order, read as one
/// table whose rows follow each other), reading the `used` columns (and `patient_id`), with
/// `scan`'s filters. The parts' schemas were checked to agree (`layout`).
pub(super) fn open_parquet(paths: &[std::path::PathBuf], schema: &TableSchema, used: &[String], scan: Scan) -> Result<Opened, InputError> {
    use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ParquetRecordBatchReaderBuilder, RowFilter};
    let mut parts: Vec<Part> = vec![];
    let mut at = 0u64;
    let mut names: Vec<String> = vec![];
    for path in paths {
        let shown = path.display().to_string();
        let err = |m: String| InputError(format!("{shown}: {m}"));
        let unreadable = |e: parquet::errors::ParquetError| err(format!("not a readable Parquet file: {e}"));
        let metadata = super::layout::metadata(path)?;
        let arrow = metadata.schema().clone();
        let reader_metadata = ArrowReaderMetadata::try_new(
            metadata.metadata().clone(),
            crate::arrow_io::parquet_options().with_schema(Arc::new(hinted(&arrow))),
        )
        .map_err(unreadable)?;
        let wanted: Vec<usize> = arrow
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| f.name() == "patient_id" || used.contains(f.name()))
            .map(|(i, _)| i)
            .collect();
        let mine: Vec<String> = wanted.iter().map(|&i| arrow.field(i).name().clone()).collect();
        if parts.is_empty() {
            names = mine.clone();
        }
        let order = names
            .iter()
            .map(|n| mine.iter().position(|m| m == n))
            .collect::<Option<Vec<usize>>>()
            .filter(|o| o.len() == mine.len())
            .ok_or_else(|| err(format!("its columns ({}) differ from the first part's ({})", mine.join(", "), names.join(", "))))?;
        let rows: i64 = reader_metadata.metadata().row_groups().iter().map(|g| g.num_rows()).sum();
        parts.push(Part { path: path.clone(), metadata: reader_metadata, arrow, wanted, order, start: at });
        at += rows as u64;
    }
    let total = at;
    let first_arrow = parts.first().ok_or_else(|| InputError(format!("{}: no part files", schema.name)))?.arrow.clone();
    let first = &first_arrow;
    let types: Vec<arrow_schema::DataType> =
        names.iter().map(|n| first.field_with_name(n).expect("a wanted column").data_type().clone()).collect();
    let part_starts: Vec<(String, u64)> = parts.iter().map(|p| (p.path.display().to_string(), p.start)).collect();
    let parts = Arc::new(parts);
    let stages_here = scan.stages(first, &names);
    if stages_here.is_empty() {
        // Each part's reader is built when the one before is exhausted.
        let all = parts.clone();
        let batches = Box::new((0..all.len()).flat_map(move |k| -> Batches {
            let parts = all.clone();
            let part = &parts[k];
            // Errors are given the file's name by the cursor that reads the batches.
            let built = File::open(&part.path).and_then(|file| Held::new(file, [])).map_err(|e| format!("cannot read: {e}")).and_then(
                |(file, _)| {
                    crate::parquet_guard::check_pages(Arc::new(file.clone()), part.metadata.metadata(), |_, leaf| part.reads(leaf))?;
                    let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(file, part.metadata.clone());
                    let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), part.wanted.iter().copied());
                    builder.with_projection(mask).with_batch_size(BATCH).build().map_err(parquet_message)
                },
            );
            match built {
                Ok(reader) => {
                    let parts = parts.clone();
                    Box::new(reader.map(move |b| b.and_then(|b| parts[k].reorder(b)).map_err(parquet_message)))
                }
                Err(e) => Box::new(std::iter::once(Err(e))),
            }
        }));
        return Ok(Opened { names, types, batches, kept: None, parts: part_starts, note: None });
    }
    // Parquet evaluates a row filter when the reader is built, so the row groups (of every
    // part) are filtered in parallel, each by its own reader; their batches then follow one
    // another in order.
    let units: Vec<(usize, usize, u64)> = parts
        .iter()
        .enumerate()
        .flat_map(|(k, p)| {
            p.metadata
                .metadata()
                .row_groups()
                .iter()
                .enumerate()
                .scan(p.start, move |at, (g, rg)| {
                    let start = *at;
                    *at += rg.num_rows() as u64;
                    Some((k, g, start))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let budget = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let numbers = Numbers::default();
    let built: Vec<Result<BuiltGroup, InputError>> = units
        .par_iter()
        .map(|&(k, g, start)| {
            let part = &parts[k];
            let err = |m: String| InputError(format!("{}: {m}", part.path.display()));
            // The row group's chunks of the columns read, each read in one call.
            let parquet = part.metadata.metadata();
            let chunks = parquet.row_group(g).columns().iter().enumerate();
            let chunks = chunks.filter(|(leaf, _)| part.reads(*leaf)).map(|(_, c)| c.byte_range());
            let (file, release) =
                File::open(&part.path).and_then(|f| Held::new(f, chunks)).map_err(|e| err(format!("cannot read: {e}")))?;
            crate::parquet_guard::check_pages(Arc::new(file.clone()), parquet, |at, leaf| at == g && part.reads(leaf)).map_err(err)?;
            let group = ParquetRecordBatchReaderBuilder::new_with_metadata(file, part.metadata.clone());
            let mask = parquet::arrow::ProjectionMask::roots(group.parquet_schema(), part.wanted.iter().copied());
            let stash = Stash::new(budget.clone());
            let mine: Vec<String> = part.wanted.iter().map(|&i| part.arrow.field(i).name().clone()).collect();
            let (predicates, rows) =
                predicates(scan.stages(&part.arrow, &mine), start, group.parquet_schema(), part.metadata.schema(), &stash, &numbers)
                    .map_err(|e| err(parquet_message(e)))?;
            let reader = group
                .with_row_groups(vec![g])
                .with_projection(mask)
                .with_batch_size(BATCH)
                .with_row_filter(RowFilter::new(predicates))
                .build()
                .map_err(|e| err(format!("row group {g}{}: {}", failing_column(part, g).unwrap_or_default(), tidy(&parquet_message(e)))))?;
            let rows = std::mem::take(&mut *rows.lock().expect("not poisoned"));
            let group = match stash.batches.lock().expect("not poisoned").take() {
                Some(batches) => Group::Stashed(batches),
                None => {
                    // Read when its turn comes, from the file: no chunks held meanwhile.
                    release.release();
                    Group::Stream(reader)
                }
            };
            Ok((k, group, rows))
        })
        .collect();
    let mut queue = VecDeque::new();
    let mut readers = vec![];
    for b in built {
        let (k, reader, rows) = b?;
        queue.extend(rows);
        readers.push((k, reader));
    }
    let why = match (scan.candidates.is_some(), scan.filter_for(first).is_some()) {
        (true, false) => "belong to patients who can be in the population",
        (false, _) => "pass the definition's filters",
        (true, true) => "pass the definition's filters and belong to patients who can be in the population",
    };
    let note = format!("{}: {} of {} rows {why}", schema.name, numbers.kept.load(std::sync::atomic::Ordering::Relaxed), total);
    let kept = (!numbers.lost()).then(|| Arc::new(Mutex::new(queue)));
    let batches = Box::new(readers.into_iter().flat_map(move |(k, g)| -> Batches {
        let parts = parts.clone();
        match g {
            Group::Stashed(batches) => Box::new(batches.into_iter().map(move |b| parts[k].reorder(b).map_err(parquet_message))),
            Group::Stream(reader) => Box::new(reader.map(move |b| b.and_then(|b| parts[k].reorder(b)).map_err(parquet_message))),
        }
    }));
    Ok(Opened { names, types, batches, kept, parts: part_starts, note: Some(note) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Array, Int64Array, StringArray};

    /// What one test hands the next arrives in the rows' order, however the next test's
    /// batches cut across the kept rows of the batches before (none, part of one, several),
    /// and joined in the file's column order.
    #[test]
    fn carried_columns_follow_the_rows_across_batches() {
        let schema = arrow_schema::Schema::new(vec![
            arrow_schema::Field::new("patient_id", arrow_schema::DataType::Int64, false),
            arrow_schema::Field::new("code", arrow_schema::DataType::Utf8, true),
        ]);
        let carry = Carry::new(vec!["code".into()], &schema).unwrap();
        let mut kept = vec![];
        for (codes, keep) in [
            (vec![Some("a"), Some("b"), None, Some("d")], vec![true, false, true, true]),
            (vec![Some("e"), Some("f")], vec![false, false]),
            (vec![Some("g"), Some("h"), Some("i")], vec![true, true, false]),
        ] {
            kept.extend(codes.iter().zip(&keep).filter(|(_, k)| **k).map(|(c, _)| c.map(String::from)));
            let batch = RecordBatch::try_from_iter([("code", Arc::new(StringArray::from(codes)) as _)]).unwrap();
            carry.put(&batch, &BooleanArray::from(keep)).unwrap();
        }
        let order = [(0, "patient_id".to_string()), (1, "code".to_string())];
        let mut got = vec![];
        for n in [0, 2, 3] {
            let ids = RecordBatch::try_from_iter([("patient_id", Arc::new(Int64Array::from_iter_values(0..n)) as _)]).unwrap();
            let joined = carry.join(ids, &order).unwrap();
            assert_eq!(joined.schema().field(0).name(), "patient_id");
            assert_eq!(joined.num_rows(), n as usize);
            let codes = joined.column(1).as_string::<i32>();
            got.extend((0..codes.len()).map(|i| codes.is_valid(i).then(|| codes.value(i).to_string())));
        }
        assert_eq!(got, kept);
        let one = RecordBatch::try_from_iter([("patient_id", Arc::new(Int64Array::from(vec![1])) as _)]).unwrap();
        assert!(carry.join(one, &order).is_err(), "no more rows were handed on");
    }

    /// A row group that cannot be read is reported with the first column that cannot be
    /// read on its own, and the parquet crate's message without its wrappers.
    #[test]
    fn a_broken_column_is_named() {
        use std::io::{Seek, SeekFrom, Write};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let ids = Int64Array::from_iter_values(0..500);
        let codes = StringArray::from_iter_values((0..500).map(|i| format!("c{}", i % 9)));
        let batch = RecordBatch::try_from_iter([("patient_id", Arc::new(ids) as _), ("code", Arc::new(codes) as _)]).unwrap();
        let props =
            parquet::file::properties::WriterProperties::builder().set_compression(parquet::basic::Compression::UNCOMPRESSED).build();
        let mut writer = parquet::arrow::ArrowWriter::try_new(File::create(&path).unwrap(), batch.schema(), Some(props)).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        let metadata = parquet::arrow::arrow_reader::ArrowReaderMetadata::load(&File::open(&path).unwrap(), Default::default()).unwrap();
        // The code column's data pages overwritten (its dictionary page, first, is kept).
        let chunk = metadata.metadata().row_group(0).column(1);
        let (start, len) = chunk.byte_range();
        let data = chunk.data_page_offset() as u64;
        assert!(data > start);
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.seek(SeekFrom::Start(data)).unwrap();
        f.write_all(&vec![0xff; (start + len - data) as usize]).unwrap();
        drop(f);
        let arrow = metadata.schema().clone();
        let part = Part { path, metadata, arrow, wanted: vec![0, 1], order: vec![0, 1], start: 0 };
        assert_eq!(failing_column(&part, 0).as_deref(), Some(", column 'code'"));
        assert_eq!(tidy("External: Parquet argument error: Parquet error: EOF"), "EOF");
        assert_eq!(tidy("Compute error: column 'date'"), "Compute error: column 'date'");
    }

    /// The walk over the candidates' ids answers as a binary search would, for rows in
    /// patient order across batches, for rows that go back, and for NULLs.
    #[test]
    fn among_the_candidates_as_a_search_would_say() {
        let ids = Arc::new(vec![2, 5, 6, 9]);
        let mut among = Among::new(ids.clone());
        let batches: [Vec<Option<i64>>; 4] = [
            vec![Some(1), Some(2), Some(2), Some(3)],
            vec![Some(5), Some(6), Some(8), Some(9), Some(12)],
            vec![Some(2), Some(9)],
            vec![None, Some(5)],
        ];
        for rows in batches {
            let got = among.test(&Int64Array::from(rows.clone())).unwrap();
            let want: BooleanArray = rows.iter().map(|p| Some(p.is_some_and(|p| ids.binary_search(&p).is_ok()))).collect();
            assert_eq!(got, want, "rows {rows:?}");
        }
    }
}
