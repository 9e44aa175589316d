//! The input dataset, read once per recipe and shared by its steps: columns of text cells
//! (`None` for an empty cell, which is how ehrQL writes NULL).

use std::io::Read;
use std::path::Path;

use crate::AnalysisError;

pub struct Frame {
    pub names: Vec<String>,
    pub columns: Vec<Vec<Option<String>>>,
}

impl Frame {
    pub fn rows(&self) -> usize {
        self.columns.first().map(Vec::len).unwrap_or(0)
    }

    pub fn column(&self, name: &str) -> Result<&[Option<String>], AnalysisError> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| self.columns[i].as_slice())
            .ok_or_else(|| AnalysisError(format!("the dataset has no column `{name}` (it has: {})", self.names.join(", "))))
    }

    pub fn add(&mut self, name: &str, values: Vec<Option<String>>) {
        match self.names.iter().position(|n| n == name) {
            Some(i) => self.columns[i] = values,
            None => {
                self.names.push(name.to_string());
                self.columns.push(values);
            }
        }
    }
}

/// Reads a `.csv` or `.csv.gz` dataset.
pub fn read(path: &Path) -> Result<Frame, AnalysisError> {
    let shown = path.display();
    let name = path.to_string_lossy();
    if name.ends_with(".arrow") || name.ends_with(".feather") || name.ends_with(".parquet") {
        return Err(AnalysisError(format!("{shown}: quarry's analysis steps read .csv and .csv.gz datasets; write the dataset as .csv.gz")));
    }
    let bytes = std::fs::read(path).map_err(|e| AnalysisError(format!("cannot read the input {shown}: {e}")))?;
    let bytes = if name.ends_with(".gz") {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&bytes[..]).read_to_end(&mut out).map_err(|e| AnalysisError(format!("{shown}: not a gzip file: {e}")))?;
        out
    } else {
        bytes
    };
    let text = String::from_utf8(bytes).map_err(|_| AnalysisError(format!("{shown}: not UTF-8 text")))?;
    let mut reader = quarry_queries::csv::Reader::new(text.strip_prefix('\u{feff}').unwrap_or(&text));
    let names = reader.next_row().map_err(|m| AnalysisError(format!("{shown}, line 1: {m}")))?.ok_or_else(|| AnalysisError(format!("{shown}: empty file, no header")))?;
    let mut columns: Vec<Vec<Option<String>>> = names.iter().map(|_| Vec::new()).collect();
    let mut row = Vec::new();
    let mut n = 1;
    while reader.next_row_into(&mut row).map_err(|m| AnalysisError(format!("{shown}, row {n}: {m}")))? {
        if row.len() != names.len() {
            return Err(AnalysisError(format!("{shown}, row {n}: expected {} fields but found {}", names.len(), row.len())));
        }
        for (c, v) in columns.iter_mut().zip(row.drain(..)) {
            c.push(if v.is_empty() { None } else { Some(v) });
        }
        n += 1;
    }
    Ok(Frame { names, columns })
}
