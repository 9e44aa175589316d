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

pub fn render_csv(table: &Table) -> String {
    let mut out = String::new();
    for (i, h) in table.header.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_field(&mut out, h);
    }
    out.push_str("\r\n");
    for row in &table.rows {
        for (i, v) in row.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_field(&mut out, &render_value(v));
        }
        out.push_str("\r\n");
    }
    out
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
            let mut out = std::io::stdout().lock();
            for (i, t) in tables.iter().enumerate() {
                if tables.len() > 1 {
                    if i > 0 {
                        let _ = out.write_all(b"\n\n");
                    }
                    let _ = writeln!(out, "{}", t.name);
                }
                out.write_all(render_csv(t).as_bytes()).map_err(|e| format!("cannot write to stdout: {e}"))?;
            }
            Ok(())
        }
        Target::File(path, format) => {
            if tables.len() > 1 {
                return Err(format!(
                    "{}: this definition produces {} tables; write them to a directory with --output DIR:csv",
                    path.display(),
                    tables.len()
                ));
            }
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
