//! Writing results as ehrQL does (ehrql.md §4.2–4.4): CSV with CRLF line ends, minimal
//! quoting, `T`/`F`, empty for NULL, ISO dates and Python's float repr; `.csv.gz`; `.arrow`
//! (and `.parquet`, which ehrQL lacks) through [`crate::arrow_io`]; multi-table output to
//! `DIR/:csv`. Files are written to a temporary name and renamed into place, so a failure
//! never leaves a partial output.

use std::io::Write;
use std::path::{Path, PathBuf};

use quarry_queries::pyrepr::float_repr;
use quarry_queries::qm::Value;
use quarry_queries::semantics::Scalar;

use crate::arrow_io::TypedWriter;
use crate::column::Array;
pub use crate::columns::{ColumnKind, ColumnSpec};

/// A results table: its columns and rows.
pub struct Table {
    pub name: String,
    pub columns: Vec<ColumnSpec>,
    pub rows: Vec<Vec<Scalar>>,
}

/// An output table's name and columns.
pub type Layout = (String, Vec<ColumnSpec>);

pub fn render_value(v: &Scalar) -> String {
    match v {
        None => String::new(),
        Some(Value::Bool(b)) => if *b { "T" } else { "F" }.into(),
        Some(Value::Int(i)) => i.to_string(),
        Some(Value::Float(f)) => float_repr(f.0),
        Some(Value::Str(s)) | Some(Value::Code(_, s)) => s.clone(),
        Some(Value::Date(d)) => d.to_string(),
        Some(Value::Set(..)) => String::from("<set>"),
    }
}

/// CSV as ehrQL writes it (Python's `csv.writer`): minimal quoting (a field with a comma, a
/// quote or a line end; a record of one empty field), doubled quotes, CRLF line ends. The
/// header's writer, and the oracle `sink`'s tests compare its fast writers with.
pub(crate) fn csv_text<R: IntoIterator<Item = F>, F: AsRef<[u8]>>(records: impl IntoIterator<Item = R>) -> String {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .quote_style(csv::QuoteStyle::Necessary)
        .flexible(true)
        .from_writer(Vec::new());
    for record in records {
        w.write_record(record).expect("writing to memory");
    }
    let bytes = w.into_inner().expect("writing to memory");
    String::from_utf8(bytes).expect("fields are UTF-8")
}

fn render_header(columns: &[ColumnSpec]) -> String {
    csv_text([columns.iter().map(|c| c.name.as_str())])
}

/// A single output file takes a single table.
fn one_table(path: &Path, tables: usize) -> Result<(), String> {
    if tables > 1 {
        return Err(format!(
            "{}: this definition produces {tables} tables; write them to a directory with --output DIR:csv",
            path.display()
        ));
    }
    Ok(())
}

/// Prints tables to stdout as ehrQL does: a name line before each when there are several.
fn print_tables(names: &[String], texts: &[String]) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    for (i, text) in texts.iter().enumerate() {
        if texts.len() > 1 {
            if i > 0 {
                let _ = out.write_all(b"\n\n");
            }
            let _ = writeln!(out, "{}", names[i]);
        }
        out.write_all(text.as_bytes()).map_err(|e| format!("cannot write to stdout: {e}"))?;
    }
    Ok(())
}

/// Where output goes.
pub enum Target {
    Stdout,
    File(PathBuf, Format),
    /// `DIR/:csv`: one file per table.
    Directory(PathBuf, Format),
}

impl Target {
    /// The files written for tables with these names (none for stdout).
    pub fn files(&self, names: &[String]) -> Vec<PathBuf> {
        match self {
            Target::Stdout => vec![],
            Target::File(path, _) => vec![path.clone()],
            Target::Directory(dir, format) => names.iter().map(|n| dir.join(format!("{n}{}", format.ext()))).collect(),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Format {
    Csv,
    CsvGz,
    Arrow,
    Parquet,
}

impl Format {
    fn ext(self) -> &'static str {
        match self {
            Format::Csv => ".csv",
            Format::CsvGz => ".csv.gz",
            Format::Arrow => ".arrow",
            Format::Parquet => ".parquet",
        }
    }

    fn is_text(self) -> bool {
        matches!(self, Format::Csv | Format::CsvGz)
    }
}

fn parse_format(ext: &str, shown: &str) -> Result<Format, String> {
    match ext {
        "csv" => Ok(Format::Csv),
        "csv.gz" => Ok(Format::CsvGz),
        "arrow" => Ok(Format::Arrow),
        "parquet" => Ok(Format::Parquet),
        other => Err(format!("{shown}: unknown output format '.{other}'; use .csv, .csv.gz, .arrow or .parquet")),
    }
}

/// Parses `--output`: a file with an extension, or `DIR:ext` / `DIR/:ext`.
pub fn parse_target(output: Option<&str>) -> Result<Target, String> {
    let Some(o) = output else { return Ok(Target::Stdout) };
    if let Some((dir, ext)) = o.rsplit_once(':')
        && !ext.contains('/')
    {
        return Ok(Target::Directory(PathBuf::from(dir.trim_end_matches('/')), parse_format(ext, o)?));
    }
    let name = Path::new(o).file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let ext = if name.ends_with(".csv.gz") {
        "csv.gz"
    } else {
        match name.rsplit_once('.') {
            Some((_, e)) => e,
            None => return Err(format!("{o}: the output file needs an extension (.csv, .csv.gz, .arrow or .parquet)")),
        }
    };
    Ok(Target::File(PathBuf::from(o), parse_format(ext, o)?))
}

/// Whether two paths name the same file: the same existing file (through symbolic and hard
/// links too), or, for a file not yet written, the same canonical directory and name. An
/// output that is the same file as an input would replace it.
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (file_identity(a), file_identity(b)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// What a path names on disk: the (device, inode) of an existing file, else its canonical
/// directory and name (a file not yet written can still be the same path as an input).
#[derive(PartialEq)]
enum FileIdentity {
    Inode(u64, u64),
    Path(PathBuf),
}

fn file_identity(path: &Path) -> Option<FileIdentity> {
    use std::os::unix::fs::MetadataExt;
    if let Ok(m) = std::fs::metadata(path) {
        return Some(FileIdentity::Inode(m.dev(), m.ino()));
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Some(FileIdentity::Path(parent.canonicalize().ok()?.join(path.file_name()?)))
}

/// Writes the tables (the first is the main one) to the target.
pub fn write_tables(target: &Target, tables: Vec<Table>) -> Result<(), String> {
    let layouts: Vec<Layout> = tables.iter().map(|t| (t.name.clone(), t.columns.clone())).collect();
    let mut stream = TableStream::open(target, &layouts)?;
    let encoder = stream.encoder();
    for (i, t) in tables.into_iter().enumerate() {
        stream.write(i, encoder.chunk(t.rows))?;
    }
    stream.finish()
}

/// Rows ready for one table of a [`TableStream`]: rendered CSV text, or, for Arrow and
/// Parquet, rows of values or the engine's typed columns.
pub enum Chunk {
    Text(String),
    Rows(Vec<Vec<Scalar>>),
    Columns(Vec<Array>),
}

/// Turns rows into [`Chunk`]s; cheap to share between threads, so CSV is rendered in parallel.
#[derive(Clone, Copy)]
pub struct Encoder {
    text: bool,
}

impl Encoder {
    /// Whether chunks are CSV text (else typed rows).
    pub fn is_text(&self) -> bool {
        self.text
    }

    pub fn chunk(&self, rows: Vec<Vec<Scalar>>) -> Chunk {
        if self.text { Chunk::Text(crate::sink::rows_text(&rows)) } else { Chunk::Rows(rows) }
    }

    /// Rows given as typed columns (all the same length), with their number: CSV is rendered
    /// from the columns ([`crate::sink::csv_text`]); Arrow and Parquet convert them whole
    /// (`TypedWriter::push_columns`).
    pub fn columns(&self, columns: Vec<Array>) -> (usize, Chunk) {
        let rows = columns.first().map_or(0, Array::len);
        if self.text {
            return (rows, Chunk::Text(crate::sink::csv_text(&columns)));
        }
        (rows, Chunk::Columns(columns))
    }
}

/// Tables written as their rows arrive (large generated outputs), each to a temporary file
/// renamed into place by [`TableStream::finish`]; dropped unfinished, the temporary files are
/// removed, so a failure never leaves a partial output.
pub struct TableStream {
    names: Vec<String>,
    /// Text for CSV (and stdout), typed rows for Arrow and Parquet.
    encoder: Encoder,
    dest: StreamDest,
    /// Directories the stream created for its files, deepest first: removed again (when
    /// empty) if the stream does not finish, so a failed run leaves nothing behind.
    created: Vec<PathBuf>,
}

enum StreamDest {
    /// Everything is printed at the end, table after table.
    Stdout(Vec<String>),
    Files(Vec<StreamFile>),
}

struct StreamFile {
    tmp: PathBuf,
    path: PathBuf,
    writer: Option<StreamWriter>,
    renamed: bool,
}

enum StreamWriter {
    Plain(std::io::BufWriter<std::fs::File>),
    Gz(Box<GzMembers>),
    Typed(Box<TypedWriter>),
}

impl TableStream {
    /// Opens the target for tables with these names and headers (the first is the main one).
    pub fn open(target: &Target, tables: &[Layout]) -> Result<TableStream, String> {
        let names = tables.iter().map(|(n, _)| n.clone()).collect();
        let text = match target {
            Target::Stdout => true,
            Target::File(_, format) | Target::Directory(_, format) => format.is_text(),
        };
        let mut stream = TableStream { names, encoder: Encoder { text }, dest: StreamDest::Files(vec![]), created: vec![] };
        let files: Vec<(PathBuf, Format, &[ColumnSpec])> = match target {
            Target::Stdout => {
                stream.dest = StreamDest::Stdout(tables.iter().map(|(_, h)| render_header(h)).collect());
                return Ok(stream);
            }
            Target::File(path, format) => {
                one_table(path, tables.len())?;
                vec![(path.clone(), *format, &tables[0].1)]
            }
            Target::Directory(dir, format) => {
                tables.iter().map(|(name, header)| (dir.join(format!("{name}{}", format.ext())), *format, &header[..])).collect()
            }
        };
        for (path, format, header) in files {
            // The directories this file needs that are not there yet, deepest first.
            let mut missing: Vec<PathBuf> =
                path.ancestors().skip(1).take_while(|d| !d.as_os_str().is_empty() && !d.exists()).map(Path::to_path_buf).collect();
            stream.created.append(&mut missing);
            let file = StreamFile::create(&path, format, header)?;
            if let StreamDest::Files(files) = &mut stream.dest {
                files.push(file);
            }
        }
        stream.created.sort_by(|a, b| b.components().count().cmp(&a.components().count()).then_with(|| a.cmp(b)));
        stream.created.dedup();
        Ok(stream)
    }

    pub fn encoder(&self) -> Encoder {
        self.encoder
    }

    /// Appends rows (made by [`TableStream::encoder`]) to table `index`.
    pub fn write(&mut self, index: usize, chunk: Chunk) -> Result<(), String> {
        match (&mut self.dest, chunk) {
            (StreamDest::Stdout(bufs), Chunk::Text(text)) => {
                bufs[index].push_str(&text);
                Ok(())
            }
            (StreamDest::Files(files), chunk) => files[index].write(chunk),
            (StreamDest::Stdout(_), Chunk::Rows(_) | Chunk::Columns(_)) => unreachable!("stdout takes text chunks"),
        }
    }

    /// Closes the files and renames them into place; on any failure the temporary files are
    /// removed (by `StreamFile`'s `Drop`), so nothing is left behind.
    pub fn finish(mut self) -> Result<(), String> {
        match &mut self.dest {
            StreamDest::Stdout(bufs) => print_tables(&self.names, bufs),
            StreamDest::Files(files) => {
                for f in files.iter_mut() {
                    f.close()?;
                }
                for f in files.iter_mut() {
                    std::fs::rename(&f.tmp, &f.path).map_err(|e| format!("cannot write {}: {e}", f.path.display()))?;
                    f.renamed = true;
                }
                Ok(())
            }
        }
    }
}

impl Drop for TableStream {
    /// An unfinished stream's files are removed (by `StreamFile`'s `Drop`), then the
    /// directories it made for them, if nothing else is in them.
    fn drop(&mut self) {
        if self.created.is_empty() || matches!(&self.dest, StreamDest::Files(files) if files.iter().all(|f| f.renamed)) {
            return;
        }
        self.dest = StreamDest::Files(vec![]);
        for dir in &self.created {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

impl Drop for StreamFile {
    /// A file not renamed into place is removed, whatever stopped it: an error in this table,
    /// in another table of the stream, or in the caller.
    fn drop(&mut self) {
        if !self.renamed {
            self.writer = None;
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

impl StreamFile {
    fn create(path: &Path, format: Format, columns: &[ColumnSpec]) -> Result<StreamFile, String> {
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        if path.is_dir() {
            return Err(format!(
                "cannot write {}: it is a directory (give a file name, or DIR:csv for one file per table)",
                path.display()
            ));
        }
        let tmp = path.with_file_name(format!(".{}.quarry-tmp", path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()));
        let file = std::fs::File::create(&tmp).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        // From here on the temporary file is the StreamFile's: removed if anything fails.
        let mut f = StreamFile { tmp, path: path.to_path_buf(), writer: None, renamed: false };
        f.writer = Some(match format {
            Format::Csv => StreamWriter::Plain(std::io::BufWriter::with_capacity(1 << 20, file)),
            Format::CsvGz => StreamWriter::Gz(Box::new(GzMembers::new(file))),
            Format::Arrow | Format::Parquet => StreamWriter::Typed(Box::new(
                TypedWriter::create(file, columns, format == Format::Parquet)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?,
            )),
        });
        if format.is_text() {
            f.write(Chunk::Text(render_header(columns)))?;
        }
        Ok(f)
    }

    fn write(&mut self, chunk: Chunk) -> Result<(), String> {
        let io = |e: std::io::Error| format!("cannot write {}: {e}", self.tmp.display());
        match (self.writer.as_mut().expect("open until closed"), chunk) {
            (StreamWriter::Plain(w), Chunk::Text(t)) => w.write_all(t.as_bytes()).map_err(io),
            (StreamWriter::Gz(w), Chunk::Text(t)) => w.write(t.as_bytes()).map_err(io),
            (StreamWriter::Typed(w), Chunk::Rows(rows)) => w.push(rows).map_err(|e| format!("cannot write {}: {e}", self.path.display())),
            (StreamWriter::Typed(w), Chunk::Columns(c)) => {
                w.push_columns(&c).map_err(|e| format!("cannot write {}: {e}", self.path.display()))
            }
            _ => unreachable!("chunks come from the stream's own encoder"),
        }
    }

    fn close(&mut self) -> Result<(), String> {
        let err = |e: std::io::Error| format!("cannot write {}: {e}", self.tmp.display());
        let buffered = match self.writer.take() {
            None => return Ok(()),
            Some(StreamWriter::Plain(w)) => w,
            Some(StreamWriter::Gz(w)) => w.finish().map_err(err)?,
            Some(StreamWriter::Typed(w)) => {
                let file = w.finish().map_err(|e| format!("cannot write {}: {e}", self.path.display()))?;
                return file.sync_all().map_err(err);
            }
        };
        let file = buffered.into_inner().map_err(|e| err(e.into_error()))?;
        file.sync_all().map_err(err)
    }
}

/// Bytes of CSV per gzip member: outputs smaller than this are one member, as ehrQL writes them.
const GZ_MEMBER: usize = 4 << 20;

/// Full members compressed together, at most (16 × 4 MB of text per batch).
const GZ_BATCH: usize = 16;

/// `.csv.gz` written as a series of gzip members (a valid gzip file: readers concatenate
/// members), compressed in parallel on a thread of its own once there is more than one batch
/// of them, so a large output is not limited by one core's deflate and the work that makes
/// the text does not wait for it; an output of less than a batch (most) is compressed when it
/// finishes, with no thread. At most two batches of text are held: one compressing, one
/// filling. (`write` must not be called from inside rayon's pool: the compressing thread
/// uses the pool and waits for it.)
pub struct GzMembers {
    pending: Vec<u8>,
    /// Full members waiting to be compressed together.
    full: Vec<Vec<u8>>,
    /// Members per batch: two per thread, up to [`GZ_BATCH`].
    batch: usize,
    /// The file, until the compressing thread takes it.
    file: Option<std::fs::File>,
    /// The compressing thread, once started: where to send it batches of members (in order),
    /// and the file it returns when done, or its first error.
    worker: Option<(std::sync::mpsc::SyncSender<Vec<Vec<u8>>>, GzThread)>,
    /// Set when the writer is dropped unfinished: the thread stops at the next member.
    abandoned: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

type GzThread = std::thread::JoinHandle<std::io::Result<std::io::BufWriter<std::fs::File>>>;

/// Compresses members in parallel and writes them in order.
fn write_members(out: &mut impl Write, members: &[Vec<u8>], stop: &std::sync::atomic::AtomicBool) -> std::io::Result<()> {
    use rayon::prelude::*;
    let compressed: Vec<std::io::Result<Vec<u8>>> = members
        .par_iter()
        .map(|text| if stop.load(std::sync::atomic::Ordering::Relaxed) { Err(std::io::Error::other("abandoned")) } else { gzip(text) })
        .collect();
    for m in compressed {
        out.write_all(&m?)?;
    }
    Ok(())
}

impl GzMembers {
    fn new(file: std::fs::File) -> GzMembers {
        GzMembers {
            pending: Vec::new(),
            full: Vec::new(),
            batch: (rayon::current_num_threads() * 2).clamp(1, GZ_BATCH),
            file: Some(file),
            worker: None,
            abandoned: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.pending.extend_from_slice(bytes);
        if self.pending.len() >= GZ_MEMBER {
            self.full.push(std::mem::take(&mut self.pending));
            if self.full.len() >= self.batch {
                self.send()?;
            }
        }
        Ok(())
    }

    /// Hands the full members to the compressing thread (started on the first batch); if it
    /// has stopped, its error.
    fn send(&mut self) -> std::io::Result<()> {
        if self.worker.is_none() {
            let file = self.file.take().ok_or_else(|| std::io::Error::other("the gzip thread has already stopped"))?;
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Vec<u8>>>(0);
            let stop = self.abandoned.clone();
            let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
            let thread = std::thread::Builder::new().name("gzip".into()).spawn(move || {
                for batch in rx {
                    write_members(&mut out, &batch, &stop)?;
                }
                Ok(out)
            })?;
            self.worker = Some((tx, thread));
        }
        let batch = std::mem::take(&mut self.full);
        match self.worker.as_ref().map(|(tx, _)| tx.send(batch)) {
            Some(Ok(())) => Ok(()),
            _ => self.join().map(|_| ()),
        }
    }

    /// Waits for the compressing thread (no more batches) and returns the file it wrote.
    fn join(&mut self) -> std::io::Result<std::io::BufWriter<std::fs::File>> {
        let (sender, thread) = self.worker.take().ok_or_else(|| std::io::Error::other("the gzip thread has already stopped"))?;
        drop(sender); // ends the thread's loop

        match thread.join() {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(std::io::Error::other("the gzip thread panicked")),
        }
    }

    fn finish(mut self) -> std::io::Result<std::io::BufWriter<std::fs::File>> {
        if !self.pending.is_empty() || (self.full.is_empty() && self.worker.is_none()) {
            self.full.push(std::mem::take(&mut self.pending));
        }
        match self.file.take() {
            // Less than a batch in all: compressed here.
            Some(file) => {
                let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
                write_members(&mut out, &self.full, &self.abandoned)?;
                Ok(out)
            }
            None => {
                if !self.full.is_empty() {
                    self.send()?;
                }
                self.join()
            }
        }
    }
}

impl Drop for GzMembers {
    /// Unfinished (an error elsewhere stopped the output): the thread is told to stop
    /// compressing, and ends when its batch does.
    fn drop(&mut self) {
        if self.worker.is_some() {
            self.abandoned.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// One gzip member at ehrQL's level (6), by libdeflate: a member is compressed whole, which
/// is what libdeflate does, and it does it in 60 % of zlib's time (zlib-rs) at the same
/// level, into a 4 % smaller file (docs/performance.md).
fn gzip(text: &[u8]) -> std::io::Result<Vec<u8>> {
    let level = libdeflater::CompressionLvl::new(6).map_err(|e| std::io::Error::other(format!("{e:?}")))?;
    let mut compressor = libdeflater::Compressor::new(level);
    let mut out = vec![0; compressor.gzip_compress_bound(text.len())];
    let n = compressor.gzip_compress(text, &mut out).map_err(|e| std::io::Error::other(format!("gzip: {e}")))?;
    out.truncate(n);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::columns::{ColumnKind, ColumnSpec};

    fn layout() -> Vec<Layout> {
        vec![(
            "dataset".into(),
            vec![ColumnSpec {
                name: "patient_id".into(),
                kind: ColumnKind::Int { min: None, max: None },
                nullable: false,
                categories: None,
            }],
        )]
    }

    /// A stream stopped before it finished (an evaluation error after the output was opened)
    /// leaves neither its files nor the directories it made for them; one that finishes
    /// leaves its file, and a directory that was there before stays.
    /// More text than one batch of members: compressed on the gzip thread, the members in
    /// order; less than a batch: compressed at the end, one member for a small output.
    #[test]
    fn gzip_members_come_back_in_order() {
        use std::io::Read;
        let dir = tempfile::tempdir().unwrap();
        for lines in [3, 1_500_000] {
            let path = dir.path().join(format!("{lines}.csv.gz"));
            let mut gz = GzMembers::new(std::fs::File::create(&path).unwrap());
            gz.batch = 2; // whatever the machine's cores: the large output takes the thread
            let mut text = Vec::new();
            for i in 0..lines {
                let line = format!("{i},{}\n", i % 7);
                text.extend_from_slice(line.as_bytes());
                gz.write(line.as_bytes()).unwrap();
            }
            assert_eq!(gz.worker.is_some(), lines > 3, "{lines} lines: the thread only for more than a batch");
            gz.finish().unwrap().flush().unwrap();
            let bytes = std::fs::read(&path).unwrap();
            let mut back = Vec::new();
            flate2::read::MultiGzDecoder::new(&bytes[..]).read_to_end(&mut back).unwrap();
            assert!(back == text, "{lines} lines");
            let mut first = Vec::new();
            flate2::read::GzDecoder::new(&bytes[..]).read_to_end(&mut first).unwrap();
            assert_eq!(first.len() == text.len(), text.len() < GZ_MEMBER, "{lines} lines: one member only when small");
        }
    }

    #[test]
    fn an_unfinished_stream_leaves_nothing_behind() {
        for format in [Format::Csv, Format::CsvGz, Format::Arrow, Format::Parquet] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("there")).unwrap();
            let target = Target::File(dir.path().join("there/new/deeper/out").with_extension(format.ext().trim_start_matches('.')), format);
            let mut stream = TableStream::open(&target, &layout()).unwrap();
            stream.write(0, stream.encoder().chunk(vec![vec![Some(Value::Int(1))]])).unwrap();
            assert!(dir.path().join("there/new/deeper").is_dir());
            drop(stream);
            let left: Vec<_> = std::fs::read_dir(dir.path().join("there")).unwrap().collect();
            assert!(left.is_empty(), "{format:?}: {left:?}");

            let mut stream = TableStream::open(&target, &layout()).unwrap();
            stream.write(0, stream.encoder().chunk(vec![vec![Some(Value::Int(1))]])).unwrap();
            stream.finish().unwrap();
            let Target::File(path, _) = &target else { unreachable!() };
            assert!(path.is_file(), "{format:?}");
        }
    }
}
