//! The input dataset, read once per recipe and shared by its steps: dictionary-encoded columns
//! of text cells (NULL for an empty cell, which is how ehrQL writes NULL), only the columns
//! the steps use. Arrow and Parquet datasets are
//! rendered to the same text as ehrQL's CSV.

use std::io::Read;
use std::path::Path;

use rayon::prelude::*;

use crate::AnalysisError;

/// One column, dictionary-encoded: a code per row (0 for NULL, `k` for `values[k - 1]`). Steps
/// count and group by codes, and look at each distinct text once.
#[derive(Default)]
pub struct Column {
    codes: Vec<u32>,
    values: Vec<String>,
}

impl Column {
    /// Interns cells into a column.
    pub fn from_cells<'a>(cells: impl IntoIterator<Item = Option<&'a str>>) -> Column {
        let mut builder = Interner::default();
        let mut column = Column::default();
        for c in cells {
            column.codes.push(builder.code(c));
        }
        column.values = builder.values.into_iter().map(str::to_string).collect();
        column
    }

    pub fn len(&self) -> usize {
        self.codes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.codes.is_empty()
    }

    pub fn codes(&self) -> &[u32] {
        &self.codes
    }

    /// How many codes there are (distinct values plus NULL).
    pub fn cardinality(&self) -> usize {
        self.values.len() + 1
    }

    /// The text of a code (`None` for NULL).
    pub fn value(&self, code: u32) -> Option<&str> {
        code.checked_sub(1).map(|i| self.values[i as usize].as_str())
    }

    pub fn get(&self, row: usize) -> Option<&str> {
        self.value(self.codes[row])
    }
}

/// Codes for the texts of one chunk, borrowing them (no allocation per repeated value).
#[derive(Default)]
struct Interner<'a> {
    index: rustc_hash::FxHashMap<&'a str, u32>,
    values: Vec<&'a str>,
}

impl<'a> Interner<'a> {
    fn code(&mut self, cell: Option<&'a str>) -> u32 {
        match cell {
            None => 0,
            Some(s) => *self.index.entry(s).or_insert_with(|| {
                self.values.push(s);
                self.values.len() as u32
            }),
        }
    }
}

pub struct Frame {
    /// The columns read (the ones the steps use), in file order.
    pub names: Vec<String>,
    pub columns: Vec<Column>,
    /// Every column of the file, for messages.
    pub all_names: Vec<String>,
    rows: usize,
}

impl Frame {
    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn column(&self, name: &str) -> Result<&Column, AnalysisError> {
        self.names.iter().position(|n| n == name).map(|i| &self.columns[i]).ok_or_else(|| {
            let suggestion = quarry_queries::suggest::did_you_mean(name, self.all_names.iter().map(String::as_str));
            AnalysisError(format!("the dataset has no column `{name}`{suggestion} (it has: {})", self.all_names.join(", ")))
        })
    }

    pub fn add(&mut self, name: &str, column: Column) {
        match self.names.iter().position(|n| n == name) {
            Some(i) => self.columns[i] = column,
            None => {
                self.names.push(name.to_string());
                self.all_names.push(name.to_string());
                self.columns.push(column);
            }
        }
    }
}

/// Reads a `.csv`, `.csv.gz`, `.arrow` (`.feather`) or `.parquet` dataset, keeping only the
/// columns `keep` accepts (the steps' columns: a million-row dataset is read in a fraction of
/// the time and memory when most of its columns are skipped).
pub fn read(path: &Path, keep: &(dyn Fn(&str) -> bool + Sync)) -> Result<Frame, AnalysisError> {
    let shown = path.display();
    let name = path.to_string_lossy();
    if name.ends_with(".arrow") || name.ends_with(".feather") || name.ends_with(".parquet") {
        return read_typed(path, keep);
    }
    let bytes = std::fs::read(path).map_err(|e| AnalysisError(format!("cannot read the input {shown}: {e}")))?;
    let bytes = if name.ends_with(".gz") {
        let mut out = Vec::with_capacity(bytes.len() * 4);
        flate2::read::MultiGzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .map_err(|e| AnalysisError(format!("{shown}: not a gzip file: {e}")))?;
        out
    } else {
        bytes
    };
    let text = String::from_utf8(bytes).map_err(|_| AnalysisError(format!("{shown}: not UTF-8 text")))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut reader = quarry_queries::csv::Reader::new(text);
    let all_names = reader
        .next_row()
        .map_err(|m| AnalysisError(format!("{shown}, line 1: {m}")))?
        .ok_or_else(|| AnalysisError(format!("{shown}: empty file, no header")))?;
    let kept: Vec<usize> = (0..all_names.len()).filter(|&i| keep(&all_names[i])).collect();
    let body = &text[text.find('\n').map(|i| i + 1).unwrap_or(text.len())..];
    // Without a quote anywhere, every line is one row: parse chunks of lines in parallel.
    let parsed: Vec<Result<Chunk, (usize, String)>> = if body.contains('"') {
        vec![parse_chunk(body, all_names.len(), &kept)]
    } else {
        split_lines(body, 4 * rayon::current_num_threads()).par_iter().map(|c| parse_plain_chunk(c, all_names.len(), &kept)).collect()
    };
    // Merge the chunks' dictionaries into one per column.
    let mut merged: Vec<(Column, rustc_hash::FxHashMap<String, u32>)> = kept.iter().map(|_| Default::default()).collect();
    let mut rows = 0;
    for chunk in parsed {
        // Row numbers count data rows from 1 (the header is line 1).
        let chunk = chunk.map_err(|(row, m)| AnalysisError(format!("{shown}, row {}: {m}", rows + row)))?;
        for ((column, index), local) in merged.iter_mut().zip(chunk.columns) {
            let remap: Vec<u32> = std::iter::once(0)
                .chain(local.values.into_iter().map(|v| {
                    *index.entry(v).or_insert_with_key(|v| {
                        column.values.push(v.clone());
                        column.values.len() as u32
                    })
                }))
                .collect();
            column.codes.extend(local.codes.iter().map(|&c| remap[c as usize]));
        }
        rows += chunk.rows;
    }
    let columns = merged.into_iter().map(|(c, _)| c).collect();
    Ok(Frame { names: kept.iter().map(|&i| all_names[i].clone()).collect(), columns, all_names, rows })
}

/// About `n` pieces of `text`, each ending at a line end.
fn split_lines(text: &str, n: usize) -> Vec<&str> {
    let target = (text.len() / n.max(1)).max(1 << 16);
    let mut out = vec![];
    let mut rest = text;
    while rest.len() > target {
        let cut = rest[target..].find('\n').map(|i| target + i + 1).unwrap_or(rest.len());
        out.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

struct Chunk {
    rows: usize,
    columns: Vec<Column>,
}

/// Interners of a chunk's kept columns, turned into [`Column`]s at its end.
fn interners<'a>(n: usize) -> Vec<(Interner<'a>, Vec<u32>)> {
    (0..n).map(|_| Default::default()).collect()
}

fn finish(rows: usize, columns: Vec<(Interner<'_>, Vec<u32>)>) -> Chunk {
    Chunk {
        rows,
        columns: columns
            .into_iter()
            .map(|(i, codes)| Column { codes, values: i.values.into_iter().map(str::to_string).collect() })
            .collect(),
    }
}

/// Parses lines without quotes (so a field is the text between commas), allocating only the
/// kept fields. Blank lines are skipped, as Python's reader does.
fn parse_plain_chunk(text: &str, width: usize, kept: &[usize]) -> Result<Chunk, (usize, String)> {
    let mut columns = interners(kept.len());
    let mut n = 0;
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        n += 1;
        let mut next = kept.iter().zip(columns.iter_mut()).peekable();
        let mut fields = 0;
        for (i, field) in line.split(',').enumerate() {
            fields += 1;
            if let Some((_, (interner, codes))) = next.next_if(|(k, _)| **k == i) {
                codes.push(interner.code((!field.is_empty()).then_some(field)));
            }
        }
        if fields != width {
            return Err((n, format!("expected {width} fields but found {fields}")));
        }
    }
    Ok(finish(n, columns))
}

/// Parses data rows, keeping the `kept` fields; an error carries the chunk-local row (1-based).
fn parse_chunk(text: &str, width: usize, kept: &[usize]) -> Result<Chunk, (usize, String)> {
    let mut reader = quarry_queries::csv::Reader::new(text);
    let mut columns: Vec<Vec<Option<String>>> = kept.iter().map(|_| Vec::new()).collect();
    let mut row = Vec::new();
    // Quoted fields are unescaped into owned strings, interned at the end.
    let mut n = 0;
    loop {
        match reader.next_row_into(&mut row) {
            Ok(false) => break,
            Ok(true) => {}
            Err(m) => return Err((n + 1, m)),
        }
        n += 1;
        if row.len() != width {
            return Err((n, format!("expected {width} fields but found {}", row.len())));
        }
        for (c, &i) in columns.iter_mut().zip(kept) {
            let v = std::mem::take(&mut row[i]);
            c.push(if v.is_empty() { None } else { Some(v) });
        }
    }
    Ok(Chunk { rows: n, columns: columns.iter().map(|c| Column::from_cells(c.iter().map(Option::as_deref))).collect() })
}

/// A typed dataset, its values rendered as ehrQL writes them to CSV (`T`/`F`, ISO dates,
/// Python's float repr), so every step sees the same text whatever the input format.
fn read_typed(path: &Path, keep: &(dyn Fn(&str) -> bool + Sync)) -> Result<Frame, AnalysisError> {
    let file = quarry_engine::arrow_io::read_file(path).map_err(AnalysisError)?;
    let kept: Vec<usize> = (0..file.names.len()).filter(|&i| keep(&file.names[i])).collect();
    let mut columns: Vec<Vec<Option<String>>> = kept.iter().map(|_| Vec::with_capacity(file.rows())).collect();
    let mut n = 0;
    // Rendered once per cell, then interned.
    for batch in &file.batches {
        for (column, &c) in columns.iter_mut().zip(&kept) {
            let array = batch.column(c);
            for r in 0..batch.num_rows() {
                let v = quarry_engine::arrow_io::value_at(array.as_ref(), r)
                    .map_err(|m| AnalysisError(format!("{}, row {}, column `{}`: {m}", path.display(), n + r + 1, file.names[c])))?;
                column.push(v.map(|v| quarry_engine::output::render_value(&Some(v))));
            }
        }
        n += batch.num_rows();
    }
    let columns = columns.iter().map(|c| Column::from_cells(c.iter().map(Option::as_deref))).collect();
    Ok(Frame { names: kept.iter().map(|&i| file.names[i].clone()).collect(), columns, rows: file.rows(), all_names: file.names })
}
