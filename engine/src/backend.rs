//! `--backend DIR`: a directory of tables too large for memory (docs/backend.md), one file per
//! table (`<table>.parquet` or `<table>.arrow`), each sorted by `patient_id`. Tables are read
//! as streams of record batches, only the columns the definition uses, and cut into rounds of
//! whole patients: the driving table (`patients` when used) decides each round's upper patient
//! id, and every other table contributes its rows below it. A round is evaluated (in parallel
//! partitions) and written before the next is read, so memory depends on the round size, not
//! on the backend's. Parquet scans drop rows that cannot matter (`scan`, `crate::pushdown`).

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use arrow_array::RecordBatch;
use quarry_queries::qm::{Graph, NodeId, TableId, TableSchema, Type};

use crate::arrow_io::type_matches;
use crate::batch::{Batch, Chunk, TableBuilder, TableData, all_patients};
use crate::column::{DictMemo, from_arrow};
mod held;
mod layout;
mod scan;

use crate::store::{InputError, used_tables};
use layout::Source;
use scan::Scan;

/// The extensions a backend table may have, in the order they are looked for.
pub const TABLE_EXTENSIONS: &[&str] = &["parquet", "arrow"];

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

/// A table's record batches, in file order (filtered when the scan filters).
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
    /// The current batch, converted: patient ids, and per schema column its typed values
    /// (`None` for columns not read).
    ids: Vec<Option<i64>>,
    chunk: Chunk,
    /// Per schema column, the text dictionary of the last batch (batches of a Parquet column
    /// chunk share one).
    dicts: Vec<DictMemo>,
    row: usize,
    /// Rows read so far (for messages) and the last patient id (to check the order).
    read: usize,
    last: Option<i64>,
    /// Where the last row passed was (`at`), for a duplicate patient's message.
    last_row: (Option<u64>, usize),
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
    /// Each part file's name and where its rows start among the table's (one entry for a
    /// single file).
    parts: Vec<(String, u64)>,
}

impl Cursor {
    /// Opens a table's file or part files, reading only the `used` columns (the others are
    /// NULL). `scan` says which rows a Parquet file's scan may drop.
    fn open(table: TableId, schema: &TableSchema, source: &Source, used: &[String], scan: Scan) -> Result<Cursor, InputError> {
        let (shown, mut parts) = match source {
            Source::Arrow(path) => (path.display().to_string(), vec![(path.display().to_string(), 0)]),
            Source::Parquet { shown, .. } => (shown.clone(), vec![]),
        };
        let err = |m: String| InputError(format!("{shown}: {m}"));
        let mut kept = None;
        let mut filtered = false;
        let mut note = None;
        let (names, types, batches): (Vec<String>, Vec<arrow_schema::DataType>, Batches) = match source {
            Source::Parquet { parts: files, .. } => {
                let opened = scan::open_parquet(files, schema, used, scan)?;
                (kept, filtered, note, parts) = (opened.kept, opened.note.is_some(), opened.note, opened.parts);
                (opened.names, opened.types, opened.batches)
            }
            Source::Arrow(path) => {
                let file = File::open(path).map_err(|e| err(format!("cannot read: {e}")))?;
                let reader = arrow_ipc::reader::FileReader::try_new_buffered(file, None)
                    .map_err(|e| err(format!("not a readable Arrow IPC file: {e}")))?;
                let arrow = reader.schema();
                let names = arrow.fields().iter().map(|f| f.name().clone()).collect();
                let types = arrow.fields().iter().map(|f| f.data_type().clone()).collect();
                (names, types, Box::new(reader.map(|b| b.map_err(|e| e.to_string()))))
            }
        };
        // Messages about the table as a whole name its first file when it has one.
        let shown = if parts.len() == 1 { parts[0].0.clone() } else { shown };
        let err = |m: String| InputError(format!("{shown}: {m}"));
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
        Ok(Cursor {
            table,
            patient_level: schema.patient_level,
            shown,
            columns,
            pid,
            batches,
            ids: vec![],
            chunk: Arc::default(),
            dicts: (0..schema.columns.len()).map(|_| DictMemo::default()).collect(),
            row: 0,
            read: 0,
            last: None,
            last_row: Default::default(),
            kept,
            filtered,
            lazy: false,
            batch: None,
            batch_no: 0,
            note,
            parts,
        })
    }

    /// Where the next row is, cheaply (made into words only for a message, by `file_row_at`):
    /// its number among all the table's rows, or, when a filter dropped rows without keeping
    /// the kept rows' numbers, `None` and the number of rows read.
    fn at(&self) -> (Option<u64>, usize) {
        let global = match &self.kept {
            Some(queue) => Some(queue.lock().expect("not poisoned").front().map_or(self.read as u64, |r| *r)),
            None if self.filtered => None,
            None => Some(self.read as u64),
        };
        (global, self.read)
    }

    /// The next row's file and number in it (1-based), for messages; or, when a filter
    /// dropped rows without keeping the kept rows' numbers, its number among the rows it kept.
    fn file_row(&self) -> (String, String) {
        self.file_row_at(self.at())
    }

    fn file_row_at(&self, (global, read): (Option<u64>, usize)) -> (String, String) {
        match global {
            Some(g) => match self.parts.iter().rev().find(|(_, start)| *start <= g) {
                Some((file, start)) => (file.clone(), (g - start + 1).to_string()),
                None => (self.shown.clone(), (g + 1).to_string()),
            },
            None => (self.shown.clone(), format!("{} of those the definition's filters kept", read + 1)),
        }
    }

    /// The patient id of the next row, reading a batch if needed; `None` at the end.
    fn peek(&mut self) -> Result<Option<i64>, InputError> {
        loop {
            if self.row < self.ids.len() {
                return match self.ids[self.row] {
                    Some(p) => Ok(Some(p)),
                    None => {
                        let (file, row) = self.file_row();
                        Err(InputError(format!("{file}, row {row}: NULL value in non-nullable column 'patient_id'")))
                    }
                };
            }
            match self.batches.next() {
                None => return Ok(None),
                Some(b) => {
                    let b = b.map_err(|e| InputError(format!("{}: {e}", self.shown)))?;
                    let (file, first) = self.file_row();
                    let last = first.parse::<usize>().map_or(0, |f| f + b.num_rows() - 1);
                    let filtered = self.filtered;
                    let at = |m: String| match filtered {
                        false => InputError(format!("{file}, rows {first}–{last}: {m}")),
                        true => InputError(format!("{file}, rows from {first}: {m}")),
                    };
                    self.ids = scan::patient_ids(b.column(self.pid).as_ref()).map_err(at)?;
                    self.row = 0;
                    self.batch_no += 1;
                    if self.lazy {
                        // The batch is typed only if one of its rows is kept.
                        self.batch = Some(b);
                        continue;
                    }
                    let typed = self.typed(&b);
                    self.chunk = typed.map_err(at)?;
                }
            }
        }
    }

    /// A batch's read columns, typed.
    fn typed(&mut self, batch: &RecordBatch) -> Result<Chunk, String> {
        let mut out = Vec::with_capacity(self.columns.len());
        for ((i, type_), memo) in self.columns.iter().zip(&mut self.dicts) {
            out.push(match i {
                Some(i) => Some(from_arrow(batch.column(*i).as_ref(), type_, memo)?),
                None => None,
            });
        }
        Ok(Arc::new(out))
    }

    /// Takes the next row (after `peek` returned its patient) into `table`.
    fn take(&mut self, patient: i64, table: &mut TableBuilder) -> Result<(), InputError> {
        let row = self.advance(patient)?;
        table.push(patient, &self.chunk, row as u32);
        Ok(())
    }

    /// Passes the next row (after `peek` returned its patient), checking the order; returns
    /// its index in the current batch.
    fn advance(&mut self, patient: i64) -> Result<usize, InputError> {
        if self.last.is_some_and(|l| l > patient) {
            let (file, row) = self.file_row();
            return Err(InputError(format!(
                "{file}, row {row}: patient_id {patient} follows {}; backend tables must be sorted by patient_id (Arrow IPC tables are read as they are; quarry partitions unsorted Parquet tables itself)",
                self.last.unwrap_or_default()
            )));
        }
        let this_row = self.at();
        if self.patient_level && self.last == Some(patient) {
            let ((file, before), (this_file, row)) = (self.file_row_at(self.last_row), self.file_row_at(this_row));
            let rows = if file == this_file {
                format!("{file}, rows {before} and {row}")
            } else {
                format!("{file}, row {before} and {this_file}, row {row}")
            };
            return Err(InputError(format!(
                "{rows}: patient_id {patient} appears more than once; a patient-level table has one row per patient"
            )));
        }
        self.last_row = this_row;
        let row = self.row;
        self.row += 1;
        self.read += 1;
        if let Some(queue) = &self.kept {
            queue.lock().expect("not poisoned").pop_front();
        }
        self.last = Some(patient);
        Ok(row)
    }

    /// Moves every row with a patient id below `bound` (all rows if `None`) into `table`.
    fn take_below(&mut self, bound: Option<i64>, table: &mut TableBuilder) -> Result<(), InputError> {
        while let Some(p) = self.peek()? {
            if bound.is_some_and(|b| p >= b) {
                break;
            }
            self.take(p, table)?;
        }
        Ok(())
    }
}

/// A row of the driving table in a round: taken, or (for a lazy cursor) its batch and row,
/// converted only if its patient stays.
enum DrivingRow {
    Taken,
    Deferred(usize, usize),
}

/// The open backend: one cursor per used table, the first driving the rounds.
pub struct Backend {
    cursors: Vec<Cursor>,
    /// Tables a patient needs a row in to be in the population (`pushdown::required_frames`),
    /// when the driving table is not one of them: the other patients are left out of rounds.
    required: Vec<TableId>,
    /// Patients of the driving table read so far.
    read: usize,
    /// The backend's directory, for messages.
    dir: std::path::PathBuf,
}

impl Backend {
    /// Opens the tables `roots` read. With the dataset's `population`, rounds hold only the
    /// patients who could be in it. `bindings`: the values the definition's parameters take
    /// (a measures definition's intervals), so that conditions reading them are pushed too.
    pub fn open(
        graph: &Graph,
        roots: &[NodeId],
        population: Option<NodeId>,
        bindings: &[crate::pushdown::Bindings],
        dir: &Path,
    ) -> Result<Backend, InputError> {
        crate::parquet_guard::contain(&dir.display().to_string(), || {
            Backend::open_unguarded(graph, roots, population, bindings, dir).map_err(|e| e.0)
        })
        .map_err(InputError)
    }

    fn open_unguarded(
        graph: &Graph,
        roots: &[NodeId],
        population: Option<NodeId>,
        bindings: &[crate::pushdown::Bindings],
        dir: &Path,
    ) -> Result<Backend, InputError> {
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
        let mut filters = if enabled { crate::pushdown::plan(graph, roots, bindings) } else { Default::default() };
        // When only patients with certain rows can be in the population, those tables are
        // scanned first, gathering the candidates' ids, and the others read only their rows.
        let frames = population.filter(|_| enabled).and_then(|p| crate::pushdown::required_frames(graph, p)).unwrap_or_default();
        let candidates = crate::pushdown::candidates(graph, &frames).filter(|c| !c.iter().any(|(t, _)| Some(t) == tables.first()));
        let mut required: Vec<TableId> = frames.iter().map(|f| crate::kernels::frame_table(graph, *f)).collect();
        let sink: Arc<Mutex<Vec<i64>>> = Arc::default();
        let mut paths = HashMap::new();
        let cache = layout::cache_root(dir);
        for &t in &tables {
            let schema = graph.table(t);
            let source = layout::locate(dir, &schema.name)?.ok_or_else(|| {
                InputError(format!(
                    "Missing table: {} (expected {}.parquet, {}.arrow or a directory {}/ of .parquet part files; see docs/backend.md)",
                    schema.name,
                    dir.join(&schema.name).display(),
                    schema.name,
                    schema.name
                ))
            })?;
            // Part files must agree; an unsorted table is read from its sorted copy.
            let source = match source {
                Source::Parquet { shown, parts } => {
                    let wanted = used.get(&t).map(Vec::as_slice).unwrap_or(&[]);
                    layout::check_parts(&parts, wanted)?;
                    let sorted = layout::sorted_parts(&schema.name, parts.clone(), wanted, cache.as_deref())?;
                    let shown = if sorted == parts { shown } else { format!("{shown} (sorted by quarry)") };
                    Source::Parquet { shown, parts: sorted }
                }
                arrow => arrow,
            };
            paths.insert(t, source);
        }
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
        let open = |(i, t, scan): (usize, TableId, Scan)| -> Result<(usize, Cursor), InputError> {
            Ok((i, Cursor::open(t, graph.table(t), &paths[&t], columns(t), scan)?))
        };
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
        let rest: Vec<(usize, TableId, Scan)> = tables
            .iter()
            .enumerate()
            .filter(|(i, _)| opened[*i].is_none())
            .map(|(i, &t)| (i, t, Scan { candidates: ids.clone(), filter: filters.remove(&t), collect: None }))
            .collect();
        for r in rest.into_par_iter().map(open).collect::<Vec<_>>() {
            let (i, cursor) = r?;
            opened[i] = Some(cursor);
        }
        let mut cursors: Vec<Cursor> = opened.into_iter().map(|c| c.expect("every table opened")).collect();
        if cursors.first().is_some_and(|c| required.contains(&c.table)) {
            required.clear();
        }
        // Without the candidates' ids, the driving table's rows wait (unconverted) until the
        // other tables say which of its patients can be in the population.
        if let Some(driver) = cursors.first_mut() {
            driver.lazy = !required.is_empty() && ids.is_none();
        }
        Ok(Backend { cursors, required, read: 0, dir: dir.to_path_buf() })
    }

    /// What the scans' filters left, one line per filtered table (for the user).
    pub fn notes(&self) -> Vec<String> {
        self.cursors.iter().filter_map(|c| c.note.clone()).collect()
    }

    /// Patients of the driving table read so far (for progress).
    pub fn patients_read(&self) -> usize {
        self.read
    }

    /// Every round of `patients` patients (`next_round`), in order, handed to `each` with the
    /// patients read so far. Rounds are read on a thread of their own, one round ahead of
    /// `each`, so reading (one core: Parquet decoding, typing the columns) overlaps evaluating
    /// (every core); memory holds two rounds. An error from either side stops both.
    pub fn each_round<E: From<InputError>>(
        &mut self,
        patients: usize,
        mut each: impl FnMut(Batch, Option<i64>, usize) -> Result<(), E>,
    ) -> Result<(), E> {
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::sync_channel(0);
            scope.spawn(move || {
                loop {
                    let round = self.next_round(patients).map(|r| r.map(|(batch, hi)| (batch, hi, self.patients_read())));
                    let last = !matches!(round, Ok(Some(_)));
                    if tx.send(round).is_err() || last {
                        break;
                    }
                }
            });
            for round in rx {
                match round? {
                    Some((batch, hi, read)) => each(batch, hi, read)?,
                    None => break,
                }
            }
            Ok(())
        })
    }

    /// The next round: at least `patients` whole patients of the driving table (fewer at the
    /// end) and every other table's rows for ids below the next driving patient. `None` when
    /// every table is exhausted. Also returns the round's id range `[lo, hi)` (`hi` `None`: to
    /// the end).
    pub fn next_round(&mut self, patients: usize) -> Result<Option<(Batch, Option<i64>)>, InputError> {
        let dir = self.dir.display().to_string();
        crate::parquet_guard::contain(&dir, || self.next_round_unguarded(patients).map_err(|e| e.0)).map_err(InputError)
    }

    fn next_round_unguarded(&mut self, patients: usize) -> Result<Option<(Batch, Option<i64>)>, InputError> {
        let Some((driver, rest)) = self.cursors.split_first_mut() else { return Ok(None) };
        let mut distinct = 0;
        let mut bound = None;
        // The driving table's rows: taken as read, or (when only some patients can be in the
        // population) kept as batch and row until the other tables say which.
        let mut driven = TableBuilder::new(driver.columns.len());
        let mut driving: Vec<(i64, DrivingRow)> = vec![];
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
                driving.push((p, DrivingRow::Deferred(batches.len() - 1, row)));
            } else {
                driver.take(p, &mut driven)?;
                driving.push((p, DrivingRow::Taken));
            }
        }
        self.read += distinct;
        let mut others: Vec<(TableId, TableBuilder)> = vec![];
        for c in rest {
            let mut table = TableBuilder::new(c.columns.len());
            c.take_below(bound, &mut table)?;
            others.push((c.table, table));
        }
        // Only patients with rows in a required table can be in the population.
        let keep: Option<rustc_hash::FxHashSet<i64>> = (!self.required.is_empty())
            .then(|| others.iter().filter(|(t, _)| self.required.contains(t)).flat_map(|(_, b)| b.patients().iter().copied()).collect());
        let kept = |p: i64| keep.as_ref().is_none_or(|k| k.contains(&p));
        if driver.lazy {
            // Each batch with a kept row is typed once.
            let mut typed: rustc_hash::FxHashMap<usize, Chunk> = Default::default();
            for (p, row) in &driving {
                let DrivingRow::Deferred(b, r) = row else { unreachable!("a lazy cursor defers its rows") };
                if !kept(*p) {
                    continue;
                }
                let chunk = match typed.get(b) {
                    Some(c) => c.clone(),
                    None => {
                        let c = driver.typed(&batches[*b]).map_err(|m| InputError(format!("{}: {m}", driver.shown)))?;
                        typed.insert(*b, c.clone());
                        c
                    }
                };
                driven.push(*p, &chunk, *r as u32);
            }
        } else if keep.is_some() {
            driven = driven.retain(kept);
        }
        let mut tables: HashMap<TableId, TableData> = HashMap::new();
        tables.insert(driver.table, driven.finish());
        for (t, b) in others {
            tables.insert(t, if keep.is_some() { b.retain(kept) } else { b }.finish());
        }
        let ids = all_patients(tables.values());
        if ids.is_empty() && bound.is_none() {
            return Ok(None);
        }
        Ok(Some((Batch { ids, tables }, bound)))
    }
}
