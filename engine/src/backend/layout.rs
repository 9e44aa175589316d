//! Where a backend table's rows are and in what order (docs/backend.md, "Layouts"): a file
//! (`clinical_events.parquet`, `.arrow`) or a directory of Parquet part files
//! (`clinical_events/part-*.parquet`, as Spark, DuckDB and warehouse exports write them, read
//! in path order as one table). The cursor streams patients in `patient_id` order, so a
//! Parquet table is checked to be sorted (its row groups' statistics, else its `patient_id`
//! column; the verdict is remembered in the cache while the files are unchanged), and a table
//! that is not is partitioned by quarry: its used columns are spilled into ranges of patient
//! ids, each range sorted (stably: a patient's rows keep their order) and written as a sorted
//! part file in the cache, reused while the input files are unchanged (size and mtime).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ParquetRecordBatchReaderBuilder};
use parquet::file::properties::WriterProperties;
use rayon::prelude::*;

use crate::store::InputError;

/// A table's files.
pub(super) enum Source {
    Arrow(PathBuf),
    /// One Parquet file, or a directory's part files in path order; `shown` names it.
    Parquet {
        shown: String,
        parts: Vec<PathBuf>,
    },
}

/// Rows per range of patient ids that quarry sorts in memory when it partitions a table.
const RANGE_ROWS: u64 = 1_000_000;

/// [`RANGE_ROWS`], or `QUARRY_SORT_RANGE_ROWS` (tests set it low to make many ranges).
fn range_rows() -> u64 {
    std::env::var("QUARRY_SORT_RANGE_ROWS").ok().and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or(RANGE_ROWS)
}

/// Rows per row group of the sorted part files quarry writes (the scan filters row groups in
/// parallel).
const SORTED_ROW_GROUP: usize = 65_536;

/// The table `name` in `dir`: `<name>.parquet`, `<name>.arrow`, or a directory `<name>/` of
/// `.parquet` part files (searched recursively, hidden and `_`-prefixed names such as
/// `_SUCCESS` skipped). `None` when there is none.
pub(super) fn locate(dir: &Path, name: &str) -> Result<Option<Source>, InputError> {
    if let Some(path) = crate::store::find_file(dir, name, &["parquet"]) {
        return Ok(Some(Source::Parquet { shown: path.display().to_string(), parts: vec![path] }));
    }
    if let Some(path) = crate::store::find_file(dir, name, &["arrow"]) {
        return Ok(Some(Source::Arrow(path)));
    }
    let folder = dir.join(name);
    if !folder.is_dir() {
        return Ok(None);
    }
    let mut parts = vec![];
    let mut pending = vec![folder.clone()];
    while let Some(d) = pending.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| InputError(format!("{}: cannot read: {e}", d.display())))?;
        for entry in entries {
            let entry = entry.map_err(|e| InputError(format!("{}: cannot read: {e}", d.display())))?;
            let file_name = entry.file_name().to_string_lossy().into_owned();
            if file_name.starts_with('.') || file_name.starts_with('_') {
                continue;
            }
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if file_name.ends_with(".parquet") {
                parts.push(path);
            }
        }
    }
    parts.sort();
    if parts.is_empty() {
        return Err(InputError(format!(
            "{}/ holds no .parquet part files (a table is <table>.parquet, <table>.arrow or a directory of .parquet parts; see docs/backend.md)",
            folder.display()
        )));
    }
    Ok(Some(Source::Parquet { shown: format!("{}/", folder.display()), parts }))
}

/// A part file's footer, read as quarry reads every untrusted Parquet file: its schema's depth
/// checked first (`parquet_guard`), the Arrow types taken from the Parquet schema.
pub(super) fn metadata(path: &Path) -> Result<ArrowReaderMetadata, InputError> {
    let err = |m: String| InputError(format!("{}: {m}", path.display()));
    let mut file = File::open(path).map_err(|e| err(format!("cannot read: {e}")))?;
    crate::parquet_guard::check(&mut file).map_err(err)?;
    let metadata = ArrowReaderMetadata::load(&file, crate::arrow_io::parquet_options())
        .map_err(|e| err(format!("not a readable Parquet file: {e}")))?;
    crate::parquet_guard::check_dictionaries(&file, metadata.metadata(), None).map_err(err)?;
    Ok(metadata)
}

/// `file` for reading the `columns` (root fields) of row group `g`, its dictionary pages in
/// them checked first (`parquet_guard::check_pages`).
fn checked(file: File, m: &ArrowReaderMetadata, g: usize, columns: &[usize]) -> Result<super::held::Held, String> {
    let (file, _) = super::held::Held::new(file, []).map_err(|e| format!("cannot read: {e}"))?;
    let schema = m.metadata().file_metadata().schema_descr();
    crate::parquet_guard::check_pages(Arc::new(file.clone()), m.metadata(), |at, leaf| {
        at == g && columns.contains(&schema.get_column_root_idx(leaf))
    })?;
    Ok(file)
}

/// Every part has `patient_id` and the `used` columns the first part has, with the first
/// part's types, and none of them the first part lacks: otherwise an error naming the part
/// and the column.
pub(super) fn check_parts(parts: &[PathBuf], used: &[String]) -> Result<(), InputError> {
    if parts.len() < 2 {
        return Ok(());
    }
    let schemas: Vec<arrow_schema::SchemaRef> =
        parts.par_iter().map(|p| metadata(p).map(|m| m.schema().clone())).collect::<Result<_, _>>()?;
    let first = &schemas[0];
    let columns = std::iter::once("patient_id").chain(used.iter().map(String::as_str));
    for column in columns {
        let want = first.field_with_name(column).ok().map(|f| f.data_type().clone());
        for (part, schema) in parts.iter().zip(&schemas).skip(1) {
            let got = schema.field_with_name(column).ok().map(|f| f.data_type().clone());
            if got != want {
                let shown = |t: &Option<arrow_schema::DataType>| t.as_ref().map_or("missing".to_string(), |t| format!("{t}"));
                return Err(InputError(format!(
                    "{}: column '{column}' is {} here but {} in {}; every part file of a table must have the same columns and types",
                    part.display(),
                    shown(&got),
                    shown(&want),
                    parts[0].display()
                )));
            }
        }
    }
    Ok(())
}

/// A `patient_id` array's values as i64 (`None` for NULL).
fn ids(array: &dyn Array) -> Result<Vec<Option<i64>>, String> {
    super::scan::patient_ids(array)
}

/// What quarry knows of a table's order: whether it is sorted by `patient_id`, its rows and
/// its smallest and largest id.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Order {
    sorted: bool,
    rows: u64,
    min: i64,
    max: i64,
}

/// A row group's smallest and largest `patient_id` and its rows, from its statistics.
struct GroupRange {
    min: i64,
    max: i64,
    rows: u64,
}

/// The row groups' `patient_id` statistics, when every row group has them.
fn statistics(parts: &[PathBuf]) -> Result<Option<Vec<GroupRange>>, InputError> {
    use parquet::file::statistics::Statistics;
    let mut out = vec![];
    for part in parts {
        let m = metadata(part)?;
        let Some(leaf) = m.metadata().file_metadata().schema_descr().columns().iter().position(|c| c.name() == "patient_id") else {
            return Ok(None);
        };
        for rg in m.metadata().row_groups() {
            let rows = rg.num_rows() as u64;
            if rows == 0 {
                continue;
            }
            let range = match rg.column(leaf).statistics() {
                Some(Statistics::Int64(s)) => s.min_opt().zip(s.max_opt()).map(|(a, b)| (*a, *b)),
                Some(Statistics::Int32(s)) => s.min_opt().zip(s.max_opt()).map(|(a, b)| (*a as i64, *b as i64)),
                _ => None,
            };
            let Some((min, max)) = range else { return Ok(None) };
            out.push(GroupRange { min, max, rows });
        }
    }
    Ok(Some(out))
}

/// The table's order: from the row groups' statistics when they show it unsorted, else from
/// its `patient_id` column (read in parallel, row group by row group).
fn find_order(parts: &[PathBuf]) -> Result<Order, InputError> {
    if let Some(stats) = statistics(parts)?
        && !stats.is_empty()
    {
        let min = stats.iter().map(|s| s.min).min().unwrap_or(0);
        let max = stats.iter().map(|s| s.max).max().unwrap_or(0);
        let rows = stats.iter().map(|s| s.rows).sum();
        if stats.windows(2).any(|w| w[0].max > w[1].min) {
            return Ok(Order { sorted: false, rows, min, max });
        }
    }
    let mut units = vec![];
    for part in parts {
        let m = metadata(part)?;
        for g in 0..m.metadata().num_row_groups() {
            units.push((part.clone(), m.clone(), g));
        }
    }
    let scanned: Vec<Option<Scanned>> = units
        .par_iter()
        .map(|(part, m, g)| {
            let err = |e: String| InputError(format!("{}: {e}", part.display()));
            let file = File::open(part).map_err(|e| err(format!("cannot read: {e}")))?;
            let index = m.schema().index_of("patient_id").map_err(|_| err("missing column 'patient_id'".into()))?;
            let file = checked(file, m, *g, &[index]).map_err(err)?;
            let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(file, m.clone());
            let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), [index]);
            let reader =
                builder.with_row_groups(vec![*g]).with_projection(mask).with_batch_size(65_536).build().map_err(|e| err(e.to_string()))?;
            let mut acc: Option<Scanned> = None;
            for batch in reader {
                let batch = batch.map_err(|e| err(e.to_string()))?;
                for p in ids(batch.column(0).as_ref()).map_err(err)? {
                    let p = p.ok_or_else(|| err("NULL value in non-nullable column 'patient_id'".into()))?;
                    acc = Some(match acc {
                        None => Scanned { first: p, last: p, min: p, max: p, sorted: true, rows: 1 },
                        Some(s) => Scanned {
                            first: s.first,
                            last: p,
                            min: s.min.min(p),
                            max: s.max.max(p),
                            sorted: s.sorted && s.last <= p,
                            rows: s.rows + 1,
                        },
                    });
                }
            }
            Ok(acc)
        })
        .collect::<Result<_, InputError>>()?;
    let groups: Vec<_> = scanned.into_iter().flatten().collect();
    let sorted = groups.iter().all(|g| g.sorted) && groups.windows(2).all(|w| w[0].last <= w[1].first);
    Ok(Order {
        sorted,
        rows: groups.iter().map(|g| g.rows).sum(),
        min: groups.iter().map(|g| g.min).min().unwrap_or(0),
        max: groups.iter().map(|g| g.max).max().unwrap_or(0),
    })
}

/// What reading a row group's `patient_id` column found: its first and last id, its
/// smallest and largest, whether it is sorted inside, and its rows.
struct Scanned {
    first: i64,
    last: i64,
    min: i64,
    max: i64,
    sorted: bool,
    rows: u64,
}

/// Where quarry keeps what it learns about a backend: `QUARRY_BACKEND_CACHE`, else
/// `.quarry-cache` inside the backend when it can be written, else
/// `$HOME/.cache/quarry/backend-cache/<the backend's path, hashed>`.
pub(super) fn cache_root(dir: &Path) -> Option<PathBuf> {
    let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let hashed = || {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        canonical.hash(&mut h);
        format!("{:016x}", h.finish())
    };
    if let Some(root) = std::env::var_os("QUARRY_BACKEND_CACHE") {
        return Some(PathBuf::from(root).join(hashed()));
    }
    let beside = dir.join(".quarry-cache");
    if std::fs::create_dir_all(&beside).is_ok() && tempfile_in(&beside) {
        return Some(beside);
    }
    let home = std::env::var_os("HOME")?;
    let under = PathBuf::from(home).join(".cache/quarry/backend-cache").join(hashed());
    std::fs::create_dir_all(&under).ok().map(|_| under)
}

/// Whether a file can be created in `dir`.
fn tempfile_in(dir: &Path) -> bool {
    let probe = dir.join(format!(".probe-{}", std::process::id()));
    let ok = File::create(&probe).is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

/// The input files' identity: path, size and modification time, one line each.
fn fingerprint(parts: &[PathBuf]) -> String {
    parts
        .iter()
        .map(|p| {
            let m = std::fs::metadata(p).ok();
            let size = m.as_ref().map_or(0, |m| m.len());
            let mtime =
                m.and_then(|m| m.modified().ok()).and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
            format!("{size} {mtime} {}\n", p.canonicalize().unwrap_or_else(|_| p.clone()).display())
        })
        .collect()
}

/// Writes `text` to `path` atomically (a temporary file renamed into place); failures are
/// ignored (the cache is an optimisation).
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    if std::fs::write(&tmp, text).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

/// The table's order, remembered in `cache` (`<table>/order`) while its files are unchanged.
fn order(table: &str, parts: &[PathBuf], cache: Option<&Path>) -> Result<Order, InputError> {
    let files = fingerprint(parts);
    let file = cache.map(|c| c.join(table).join("order"));
    if let Some(text) = file.as_ref().and_then(|f| std::fs::read_to_string(f).ok())
        && let Some((head, rest)) = text.split_once('\n')
        && rest == files
    {
        let f: Vec<&str> = head.split(' ').collect();
        if let [sorted, rows, min, max] = f.as_slice()
            && let (Ok(rows), Ok(min), Ok(max)) = (rows.parse(), min.parse(), max.parse())
        {
            return Ok(Order { sorted: *sorted == "sorted", rows, min, max });
        }
    }
    let started = Instant::now();
    let order = find_order(parts)?;
    if started.elapsed().as_secs_f64() > 0.5 {
        eprintln!(
            "[info] {table}: checked the order of {} rows by patient_id in {:.1} s (remembered while the files are unchanged)",
            order.rows,
            started.elapsed().as_secs_f64()
        );
    }
    if let Some(file) = file
        && std::fs::create_dir_all(file.parent().expect("a table directory")).is_ok()
    {
        let head = format!("{} {} {} {}", if order.sorted { "sorted" } else { "unsorted" }, order.rows, order.min, order.max);
        write_atomically(&file, &format!("{head}\n{files}"));
    }
    Ok(order)
}

/// The table's Parquet files in `patient_id` order: `parts` when they are sorted, else the
/// sorted parts quarry wrote into the cache for them (made now when missing or stale; they
/// hold `patient_id` and at least the `used` columns the files have).
pub(super) fn sorted_parts(table: &str, parts: Vec<PathBuf>, used: &[String], cache: Option<&Path>) -> Result<Vec<PathBuf>, InputError> {
    let order = order(table, &parts, cache)?;
    if order.sorted {
        return Ok(parts);
    }
    let Some(cache) = cache else {
        return Err(InputError(format!(
            "{table} is not sorted by patient_id, and quarry found nowhere to write its sorted copy (the backend directory and $HOME/.cache are not writable): set QUARRY_BACKEND_CACHE to a writable directory"
        )));
    };
    let files = fingerprint(&parts);
    let first = metadata(&parts[0])?;
    let present: Vec<String> = first.schema().fields().iter().map(|f| f.name().clone()).filter(|n| used.contains(n)).collect();
    let home = cache.join(table).join("sorted");
    let manifest = home.join("manifest");
    // Reused when made from the same files with every column needed now.
    let mut columns = present.clone();
    if let Ok(text) = std::fs::read_to_string(&manifest)
        && let Some((head, rest)) = text.split_once('\n')
        && let Some((cols, made)) = rest.split_once('\n')
        && head.starts_with("parts ")
        && made == files
    {
        let have: Vec<String> = cols.split(',').filter(|c| !c.is_empty()).map(String::from).collect();
        if present.iter().all(|c| have.contains(c)) {
            let n: usize = head["parts ".len()..].parse().unwrap_or(0);
            let sorted: Vec<PathBuf> = (0..n).map(|k| home.join(format!("part-{k:05}.parquet"))).collect();
            if sorted.iter().all(|p| p.is_file()) {
                return Ok(sorted);
            }
        }
        // Keep the columns made before, so definitions that use different columns take turns
        // without spilling again each time.
        for c in have {
            if !columns.contains(&c) && first.schema().field_with_name(&c).is_ok() {
                columns.push(c);
            }
        }
    }
    let started = Instant::now();
    eprintln!(
        "[info] {table} is not sorted by patient_id: partitioning its {} rows ({} columns) into {} (once; reused while the files are unchanged)",
        order.rows,
        columns.len() + 1,
        home.display()
    );
    let work = cache.join(table).join(format!("work-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| InputError(format!("{}: cannot create: {e}", work.display())))?;
    let made = spill(&parts, &columns, order, &work);
    let made = match made {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&work);
            return Err(e);
        }
    };
    write_atomically(&work.join("manifest"), &format!("parts {made}\n{}\n{files}", columns.join(",")));
    let _ = std::fs::remove_dir_all(&home);
    std::fs::rename(&work, &home).map_err(|e| InputError(format!("{}: cannot create: {e}", home.display())))?;
    eprintln!("[info] {table}: partitioned into {made} sorted parts in {:.1} s", started.elapsed().as_secs_f64());
    Ok((0..made).map(|k| home.join(format!("part-{k:05}.parquet"))).collect())
}

/// The column quarry adds while partitioning: each row's place in the table, so that sorting
/// keeps a patient's rows in their order.
const ROW: &str = "__quarry_row";

/// Spills `parts`' `patient_id` and `columns` into ranges of patient ids (Parquet files in
/// `work`), then sorts each range by (patient_id, place) into `work/part-NNNNN.parquet`.
/// Returns the number of sorted parts.
fn spill(parts: &[PathBuf], columns: &[String], order: Order, work: &Path) -> Result<usize, InputError> {
    let ranges = order.rows.div_ceil(range_rows()).clamp(1, 512) as usize;
    let span = (order.max as i128 - order.min as i128 + 1).max(1);
    let range_of = |p: i64| (((p as i128 - order.min as i128) * ranges as i128 / span) as usize).min(ranges - 1);
    let props = || {
        WriterProperties::builder()
            .set_compression(parquet::basic::Compression::UNCOMPRESSED)
            .set_max_row_group_row_count(Some(8192))
            .build()
    };
    // The row groups, each with its first row's place in the table.
    let mut units = vec![];
    let mut at = 0u64;
    for part in parts {
        let m = metadata(part)?;
        for (g, rg) in m.metadata().row_groups().iter().enumerate() {
            units.push((part.clone(), m.clone(), g, at));
            at += rg.num_rows() as u64;
        }
    }
    let writers: Vec<Mutex<Option<ArrowWriter<File>>>> = (0..ranges).map(|_| Mutex::new(None)).collect();
    units.par_iter().try_for_each(|(part, m, g, start)| -> Result<(), InputError> {
        let err = |e: String| InputError(format!("{}: {e}", part.display()));
        let file = File::open(part).map_err(|e| err(format!("cannot read: {e}")))?;
        let schema = m.schema();
        let indices: Vec<usize> = std::iter::once("patient_id")
            .chain(columns.iter().map(String::as_str))
            .map(|c| schema.index_of(c).map_err(|_| err(format!("missing column '{c}'"))))
            .collect::<Result<_, _>>()?;
        let file = checked(file, m, *g, &indices).map_err(err)?;
        let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(file, m.clone());
        let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), indices.iter().copied());
        let reader =
            builder.with_row_groups(vec![*g]).with_projection(mask).with_batch_size(65_536).build().map_err(|e| err(e.to_string()))?;
        let mut place = *start;
        for batch in reader {
            let batch = batch.map_err(|e| err(e.to_string()))?;
            let n = batch.num_rows();
            // Columns in the order asked for (the reader gives the file's order).
            let names: Vec<&str> = std::iter::once("patient_id").chain(columns.iter().map(String::as_str)).collect();
            let mut fields = vec![];
            let mut arrays = vec![];
            for name in names {
                let i = batch.schema().index_of(name).map_err(|e| err(e.to_string()))?;
                fields.push(batch.schema().field(i).clone());
                arrays.push(batch.column(i).clone());
            }
            fields.push(arrow_schema::Field::new(ROW, arrow_schema::DataType::UInt64, false));
            arrays.push(Arc::new(arrow_array::UInt64Array::from_iter_values(place..place + n as u64)));
            place += n as u64;
            let batch = RecordBatch::try_new(Arc::new(arrow_schema::Schema::new(fields)), arrays).map_err(|e| err(e.to_string()))?;
            // Rows grouped by range (a counting sort), then one slice per range.
            let pids = ids(batch.column(0).as_ref()).map_err(err)?;
            let mut which = Vec::with_capacity(n);
            let mut counts = vec![0usize; ranges];
            for p in &pids {
                let p = p.ok_or_else(|| err("NULL value in non-nullable column 'patient_id'".into()))?;
                let r = range_of(p);
                counts[r] += 1;
                which.push(r);
            }
            let mut offsets = vec![0usize; ranges + 1];
            for r in 0..ranges {
                offsets[r + 1] = offsets[r] + counts[r];
            }
            let mut next = offsets.clone();
            let mut indices = vec![0u32; n];
            for (i, &r) in which.iter().enumerate() {
                indices[next[r]] = i as u32;
                next[r] += 1;
            }
            let grouped =
                arrow_select::take::take_record_batch(&batch, &arrow_array::UInt32Array::from(indices)).map_err(|e| err(e.to_string()))?;
            for r in 0..ranges {
                if counts[r] == 0 {
                    continue;
                }
                let slice = grouped.slice(offsets[r], counts[r]);
                let mut w = writers[r].lock().expect("not poisoned");
                if w.is_none() {
                    let path = work.join(format!("range-{r:05}.parquet"));
                    let f = File::create(&path).map_err(|e| InputError(format!("{}: cannot create: {e}", path.display())))?;
                    *w = Some(ArrowWriter::try_new(f, slice.schema(), Some(props())).map_err(|e| err(e.to_string()))?);
                }
                w.as_mut().expect("opened").write(&slice).map_err(|e| err(e.to_string()))?;
            }
        }
        Ok(())
    })?;
    let mut filled = vec![];
    for (r, w) in writers.into_iter().enumerate() {
        if let Some(w) = w.into_inner().expect("not poisoned") {
            w.close().map_err(|e| InputError(format!("{}: {e}", work.display())))?;
            filled.push(r);
        }
    }
    // Each range sorted by (patient_id, place), in parallel, into the k-th sorted part.
    filled.par_iter().enumerate().try_for_each(|(k, &r)| -> Result<(), InputError> {
        let path = work.join(format!("range-{r:05}.parquet"));
        let err = |e: String| InputError(format!("{}: {e}", path.display()));
        let file = File::open(&path).map_err(|e| err(e.to_string()))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| err(e.to_string()))?
            .with_batch_size(65_536)
            .build()
            .map_err(|e| err(e.to_string()))?;
        let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>().map_err(|e| err(e.to_string()))?;
        let Some(schema) = batches.first().map(|b| b.schema()) else { return Ok(()) };
        let all = arrow_select::concat::concat_batches(&schema, &batches).map_err(|e| err(e.to_string()))?;
        drop(batches);
        let pids = ids(all.column(0).as_ref()).map_err(err)?;
        let places = all.column(all.num_columns() - 1).as_primitive::<arrow_array::types::UInt64Type>().values().clone();
        let mut indices: Vec<u32> = (0..all.num_rows() as u32).collect();
        indices.sort_unstable_by_key(|&i| (pids[i as usize], places[i as usize]));
        let sorted =
            arrow_select::take::take_record_batch(&all, &arrow_array::UInt32Array::from(indices)).map_err(|e| err(e.to_string()))?;
        let sorted = sorted.project(&(0..sorted.num_columns() - 1).collect::<Vec<_>>()).map_err(|e| err(e.to_string()))?;
        let out = work.join(format!("part-{k:05}.parquet"));
        let f = File::create(&out).map_err(|e| InputError(format!("{}: cannot create: {e}", out.display())))?;
        let props = WriterProperties::builder()
            .set_compression(parquet::basic::Compression::SNAPPY)
            .set_max_row_group_row_count(Some(SORTED_ROW_GROUP))
            .build();
        let mut w = ArrowWriter::try_new(f, sorted.schema(), Some(props)).map_err(|e| err(e.to_string()))?;
        w.write(&sorted).map_err(|e| err(e.to_string()))?;
        w.close().map_err(|e| err(e.to_string()))?;
        let _ = std::fs::remove_file(&path);
        Ok(())
    })?;
    Ok(filled.len())
}
