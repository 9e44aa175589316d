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

fn push_field(out: &mut String, field: &str) {
    if field.contains([',', '"', '\r', '\n']) {
        out.push('"');
        out.push_str(&field.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(field);
    }
}

/// Appends one CSV record (with ehrQL's CRLF line end).
pub fn push_row(out: &mut String, values: &[Scalar]) {
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_field(out, &render_value(v));
    }
    out.push_str("\r\n");
}

fn render_header(columns: &[ColumnSpec]) -> String {
    let mut out = String::new();
    for (i, c) in columns.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_field(&mut out, &c.name);
    }
    out.push_str("\r\n");
    out
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

/// Rows ready for one table of a [`TableStream`]: rendered CSV text, or the typed rows.
pub enum Chunk {
    Text(String),
    Rows(Vec<Vec<Scalar>>),
}

/// Turns rows into [`Chunk`]s; cheap to share between threads, so CSV is rendered in parallel.
#[derive(Clone, Copy)]
pub struct Encoder {
    text: bool,
}

impl Encoder {
    pub fn chunk(&self, rows: Vec<Vec<Scalar>>) -> Chunk {
        if self.text {
            let mut text = String::new();
            for r in &rows {
                push_row(&mut text, r);
            }
            Chunk::Text(text)
        } else {
            Chunk::Rows(rows)
        }
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
    finished: bool,
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
        let dest = match target {
            Target::Stdout => StreamDest::Stdout(tables.iter().map(|(_, h)| render_header(h)).collect()),
            Target::File(path, format) => {
                one_table(path, tables.len())?;
                StreamDest::Files(vec![StreamFile::create(path, *format, &tables[0].1)?])
            }
            Target::Directory(dir, format) => {
                let mut files = vec![];
                for (name, header) in tables {
                    files.push(StreamFile::create(&dir.join(format!("{name}{}", format.ext())), *format, header)?);
                }
                StreamDest::Files(files)
            }
        };
        let text = match target {
            Target::Stdout => true,
            Target::File(_, format) | Target::Directory(_, format) => format.is_text(),
        };
        Ok(TableStream { names, encoder: Encoder { text }, dest, finished: false })
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
            (StreamDest::Stdout(_), Chunk::Rows(_)) => unreachable!("stdout takes text chunks"),
        }
    }

    pub fn finish(mut self) -> Result<(), String> {
        self.finished = true;
        match &mut self.dest {
            StreamDest::Stdout(bufs) => print_tables(&self.names, bufs),
            StreamDest::Files(files) => {
                for f in files.iter_mut() {
                    f.close()?;
                }
                for f in files.iter() {
                    std::fs::rename(&f.tmp, &f.path).map_err(|e| format!("cannot write {}: {e}", f.path.display()))?;
                }
                Ok(())
            }
        }
    }
}

impl Drop for TableStream {
    fn drop(&mut self) {
        if let StreamDest::Files(files) = &mut self.dest
            && !self.finished
        {
            for f in files.iter_mut() {
                f.writer = None;
                let _ = std::fs::remove_file(&f.tmp);
            }
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
        let tmp = path.with_file_name(format!(".{}.quarry-tmp", path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()));
        let file = std::fs::File::create(&tmp).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        let writer = match format {
            Format::Csv => StreamWriter::Plain(std::io::BufWriter::with_capacity(1 << 20, file)),
            Format::CsvGz => StreamWriter::Gz(Box::new(GzMembers {
                out: std::io::BufWriter::with_capacity(1 << 20, file),
                pending: Vec::new(),
                full: Vec::new(),
            })),
            Format::Arrow | Format::Parquet => StreamWriter::Typed(Box::new(
                TypedWriter::create(file, columns, format == Format::Parquet)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?,
            )),
        };
        let mut f = StreamFile { tmp, path: path.to_path_buf(), writer: Some(writer) };
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

/// `.csv.gz` written as a series of gzip members (a valid gzip file: readers concatenate
/// members), compressed in parallel, so a large output is not limited by one core's deflate.
pub struct GzMembers {
    out: std::io::BufWriter<std::fs::File>,
    pending: Vec<u8>,
    /// Full members waiting to be compressed together.
    full: Vec<Vec<u8>>,
}

impl GzMembers {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.pending.extend_from_slice(bytes);
        if self.pending.len() >= GZ_MEMBER {
            self.full.push(std::mem::take(&mut self.pending));
            if self.full.len() >= rayon::current_num_threads().max(1) * 2 {
                self.compress_full()?;
            }
        }
        Ok(())
    }

    fn compress_full(&mut self) -> std::io::Result<()> {
        use rayon::prelude::*;
        let members: Vec<std::io::Result<Vec<u8>>> = self.full.par_iter().map(|text| gzip(text)).collect();
        self.full.clear();
        for m in members {
            self.out.write_all(&m?)?;
        }
        Ok(())
    }

    fn finish(mut self) -> std::io::Result<std::io::BufWriter<std::fs::File>> {
        if !self.pending.is_empty() || self.full.is_empty() {
            self.full.push(std::mem::take(&mut self.pending));
        }
        self.compress_full()?;
        Ok(self.out)
    }
}

/// One gzip member at ehrQL's level (6).
fn gzip(text: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(text.len() / 4), flate2::Compression::new(6));
    enc.write_all(text)?;
    enc.finish()
}
