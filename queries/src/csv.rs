//! Reading CSV as Python's `csv` module does (ehrQL reads dummy tables, codelists and
//! `table_from_file` files with it), on the `csv` crate: comma, `"` quoting with doubled
//! quotes, text after a closing quote kept, a quote inside an unquoted field literal, `\r\n`,
//! `\n` or `\r` line ends, blank lines skipped (as `DictReader` does), and a quoted field left
//! open at the end kept as it is (Python's reader is not strict either). One difference: a
//! UTF-8 byte-order mark at the start is dropped (Python keeps it unless the file is opened as
//! `utf-8-sig`), so a spreadsheet's export still has its `patient_id` column.

/// Parses `text` into rows; an error is `(row number, message)` (1-based, header = row 0).
pub fn parse(text: &str) -> Result<Vec<Vec<String>>, (usize, String)> {
    let mut rows = Vec::new();
    let mut reader = Reader::new(text);
    while let Some(row) = reader.next_row().map_err(|m| (rows.len(), m))? {
        rows.push(row);
    }
    Ok(rows)
}

/// Streams rows out of a text.
pub struct Reader<'a> {
    inner: csv::Reader<&'a [u8]>,
    record: csv::StringRecord,
}

impl<'a> Reader<'a> {
    pub fn new(text: &'a str) -> Reader<'a> {
        let inner = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(text.as_bytes());
        Reader { inner, record: csv::StringRecord::new() }
    }

    /// The next row, or `None` at the end. Blank lines are skipped, as Python's reader does.
    pub fn next_row(&mut self) -> Result<Option<Vec<String>>, String> {
        let mut row = Vec::new();
        self.next_row_into(&mut row).map(|more| more.then_some(row))
    }

    /// Reads the next row into `row` (cleared first); false at the end of input.
    pub fn next_row_into(&mut self, row: &mut Vec<String>) -> Result<bool, String> {
        row.clear();
        // The input is a `str`, so the only error would be one of reading memory: none.
        if !self.inner.read_record(&mut self.record).map_err(|e| e.to_string())? {
            return Ok(false);
        }
        row.extend(self.record.iter().map(str::to_string));
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn quoting_and_line_ends() {
        let rows = super::parse("a,b\r\n1,\"x,\"\"y\"\"\"\n\n2,\n").unwrap();
        assert_eq!(rows, vec![vec!["a", "b"], vec!["1", "x,\"y\""], vec!["2", ""]]);
    }

    /// The same texts through python3's `csv.reader` (blank rows dropped, as `DictReader`
    /// does): the rows must be Python's.
    #[test]
    fn agrees_with_python_on_tricky_texts() {
        let cases = [
            "a,b\n1,2\n",
            "a,\"b\n",
            "a,\"b",
            "x\n\n\ny\n",
            "a\"b,c\n",
            "\"a\"b,c\n",
            "a,b\r\rc,d\r\n",
            "\"\"\n",
            ",\n",
            "a,b\r\nc,d",
            "\"multi\nline\",x\r\n",
            "\"q\"\"uote\",\"\"\"\"\n",
            " spaced , cells \n",
            "a,,b,,\n",
            "é,ü,\u{1F600}\n",
            "a\rb\n",
            "\"a\"\"\n",
            "\"\"\"\n",
        ];
        let python = std::env::var("QUARRY_PYTHON").unwrap_or_else(|_| "python3".into());
        let script = "import csv, io, json, sys\n\
                      print(json.dumps([[r for r in csv.reader(io.StringIO(t, newline='')) if r] for t in json.loads(sys.stdin.read())]))";
        let mut child = std::process::Command::new(&python)
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("this test compares with Python's csv and needs {python}: {e}"));
        use std::io::Write;
        child.stdin.take().unwrap().write_all(serde_json::to_string(&cases).unwrap().as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let expected: Vec<Vec<Vec<String>>> = serde_json::from_slice(&out.stdout).unwrap();
        for (case, want) in cases.iter().zip(expected) {
            assert_eq!(super::parse(case).unwrap(), want, "csv.reader({case:?})");
        }
    }
}
