//! Writing results as ehrQL does (ehrql.md §4.2–4.3): CSV with CRLF line ends, minimal
//! quoting, `T`/`F`, empty for NULL, ISO dates and Python's float repr; `.csv.gz`; multi-table
//! output to `DIR/:csv`. Files are written to a temporary name and renamed into place, so a
//! failure never leaves a partial output.

use std::io::Write;
use std::path::{Path, PathBuf};

use quarry_queries::python::value::float_repr;
use quarry_queries::qm::Value;
use quarry_queries::semantics::Scalar;

/// A results table: a header and rows.
pub struct Table {
    pub name: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<Scalar>>,
}

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

pub fn render_csv(table: &Table) -> String {
    let mut out = render_header(&table.header);
    for row in &table.rows {
        push_row(&mut out, row);
    }
    out
}

fn render_header(header: &[String]) -> String {
    let mut out = String::new();
    for (i, h) in header.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_field(&mut out, h);
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
}

impl Format {
    fn ext(self) -> &'static str {
        match self {
            Format::Csv => ".csv",
            Format::CsvGz => ".csv.gz",
        }
    }
}

fn parse_format(ext: &str, shown: &str) -> Result<Format, String> {
    match ext {
        "csv" => Ok(Format::Csv),
        "csv.gz" => Ok(Format::CsvGz),
        "arrow" | "parquet" => Err(format!("{shown}: quarry cannot write .{ext} output yet; use .csv or .csv.gz")),
        other => Err(format!("{shown}: unknown output format '.{other}'; use .csv or .csv.gz")),
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
            None => return Err(format!("{o}: the output file needs an extension (.csv or .csv.gz)")),
        }
    };
    Ok(Target::File(PathBuf::from(o), parse_format(ext, o)?))
}

fn encode(text: &str, format: Format) -> std::io::Result<Vec<u8>> {
    match format {
        Format::Csv => Ok(text.as_bytes().to_vec()),
        Format::CsvGz => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
            enc.write_all(text.as_bytes())?;
            enc.finish()
        }
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    let tmp = path.with_file_name(format!(".{}.quarry-tmp", path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()));
    std::fs::write(&tmp, bytes).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {}: {e}", path.display())
    })
}

/// Writes the tables (the first is the main one) to the target.
pub fn write_tables(target: &Target, tables: &[Table]) -> Result<(), String> {
    match target {
        Target::Stdout => {
            let names: Vec<String> = tables.iter().map(|t| t.name.clone()).collect();
            let texts: Vec<String> = tables.iter().map(render_csv).collect();
            print_tables(&names, &texts)
        }
        Target::File(path, format) => {
            one_table(path, tables.len())?;
            let bytes = encode(&render_csv(&tables[0]), *format).map_err(|e| e.to_string())?;
            write_atomic(path, &bytes)
        }
        Target::Directory(dir, format) => {
            // Render everything first, then write: nothing is written if rendering fails.
            let mut files = vec![];
            for t in tables {
                files.push((dir.join(format!("{}{}", t.name, format.ext())), encode(&render_csv(t), *format).map_err(|e| e.to_string())?));
            }
            for (p, b) in files {
                write_atomic(&p, &b)?;
            }
            Ok(())
        }
    }
}

/// Tables written as their rows arrive (large generated outputs), each to a temporary file
/// renamed into place by [`TableStream::finish`]; dropped unfinished, the temporary files are
/// removed, so a failure never leaves a partial output.
pub struct TableStream {
    names: Vec<String>,
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
    Gz(Box<flate2::write::GzEncoder<std::io::BufWriter<std::fs::File>>>),
}

impl TableStream {
    /// Opens the target for tables with these names and headers (the first is the main one).
    pub fn open(target: &Target, tables: &[(String, Vec<String>)]) -> Result<TableStream, String> {
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
        Ok(TableStream { names, dest, finished: false })
    }

    /// Appends rendered records to table `index`.
    pub fn write(&mut self, index: usize, text: &str) -> Result<(), String> {
        match &mut self.dest {
            StreamDest::Stdout(bufs) => {
                bufs[index].push_str(text);
                Ok(())
            }
            StreamDest::Files(files) => files[index].write(text.as_bytes()),
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
    fn create(path: &Path, format: Format, header: &[String]) -> Result<StreamFile, String> {
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        let tmp = path.with_file_name(format!(".{}.quarry-tmp", path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()));
        let file = std::fs::File::create(&tmp).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        let buffered = std::io::BufWriter::with_capacity(1 << 20, file);
        let writer = match format {
            Format::Csv => StreamWriter::Plain(buffered),
            Format::CsvGz => StreamWriter::Gz(Box::new(flate2::write::GzEncoder::new(buffered, flate2::Compression::new(6)))),
        };
        let mut f = StreamFile { tmp, path: path.to_path_buf(), writer: Some(writer) };
        f.write(render_header(header).as_bytes())?;
        Ok(f)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        let r = match self.writer.as_mut().expect("open until closed") {
            StreamWriter::Plain(w) => w.write_all(bytes),
            StreamWriter::Gz(w) => w.write_all(bytes),
        };
        r.map_err(|e| format!("cannot write {}: {e}", self.tmp.display()))
    }

    fn close(&mut self) -> Result<(), String> {
        let err = |e: std::io::Error| format!("cannot write {}: {e}", self.tmp.display());
        let buffered = match self.writer.take() {
            None => return Ok(()),
            Some(StreamWriter::Plain(w)) => w,
            Some(StreamWriter::Gz(w)) => w.finish().map_err(err)?,
        };
        let file = buffered.into_inner().map_err(|e| err(e.into_error()))?;
        file.sync_all().map_err(err)
    }
}
