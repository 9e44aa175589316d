//! The level-4 checks applied to moderately_sensitive outputs when a job finishes
//! (upstream's `check_l4_file`, pipeline.md §2.5). Locally they are reported, not enforced.

use std::io::{BufRead, BufReader};
use std::path::Path;

use super::patterns::{LEVEL4_FILE_TYPES, suffix};

/// Largest file that may be released: 16 MiB.
pub const LEVEL4_MAX_FILE_SIZE: u64 = 16 * 1024 * 1024;
/// Most data rows a released CSV may have.
pub const LEVEL4_MAX_CSV_ROWS: usize = 5000;

/// Python's `repr(round(bytes / 2**20, 2))`, as upstream prints sizes.
fn megabytes(bytes: u64) -> String {
    let mb = (bytes as f64 / (1024.0 * 1024.0) * 100.0).round() / 100.0;
    let s = format!("{mb}");
    if s.contains('.') { s } else { format!("{s}.0") }
}

/// The problems of one moderately_sensitive file (`relative` names it, `path` is where it is).
pub fn check_file(relative: &str, path: &Path) -> Vec<String> {
    let size = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) => return vec![format!("Could not read file: {e}")],
    };
    let mut problems = Vec::new();
    let suffix = suffix(relative);
    if size > LEVEL4_MAX_FILE_SIZE {
        problems.push(format!("File size of {}Mb is larger that limit of {}Mb.", megabytes(size), megabytes(LEVEL4_MAX_FILE_SIZE)));
    } else if !LEVEL4_FILE_TYPES.contains(&suffix) {
        problems.push(format!("File type of {suffix} is not valid level 4 file"));
    } else if suffix == ".csv"
        && let Ok(file) = std::fs::File::open(path)
    {
        let mut lines = BufReader::new(file).lines();
        let header = lines.next().and_then(Result::ok).unwrap_or_default();
        if csv_header_fields(&header).iter().any(|f| f == "patient_id") {
            problems.push("File has patient_id column".to_string());
        }
        let rows = lines.map_while(Result::ok).filter(|l| !l.trim_end_matches('\r').is_empty()).count();
        if rows > LEVEL4_MAX_CSV_ROWS {
            problems.push(format!("File row count ({rows}) exceeds maximum allowed rows ({LEVEL4_MAX_CSV_ROWS})"));
        }
    }
    problems
}

/// The fields of a CSV header line (quotes removed).
fn csv_header_fields(line: &str) -> Vec<String> {
    let line = line.trim_end_matches(['\r', '\n']).trim_start_matches('\u{feff}');
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    fields.push(field);
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_like_python() {
        assert_eq!(megabytes(LEVEL4_MAX_FILE_SIZE), "16.0");
        assert_eq!(megabytes(1024 * 1024), "1.0");
        assert_eq!(megabytes(17 * 1024 * 1024 + 300_000), "17.29");
    }

    #[test]
    fn file_types_outside_level4_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv.gz");
        std::fs::write(&path, b"x").unwrap();
        assert_eq!(check_file("o/t.csv.gz", &path), ["File type of .gz is not valid level 4 file"]);
        let ok = dir.path().join("t.csv");
        std::fs::write(&ok, "group,n\r\na,5\r\n").unwrap();
        assert!(check_file("o/t.csv", &ok).is_empty());
    }

    #[test]
    fn header_fields() {
        assert_eq!(csv_header_fields("a,\"patient_id\",\"x,y\"\r"), ["a", "patient_id", "x,y"]);
    }
}
