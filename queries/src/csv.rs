//! A small CSV reader with Python `csv` module semantics (comma, `"` quoting with doubled
//! quotes, `\r\n` or `\n` line ends), for codelists and table files.

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
    s: &'a [u8],
    text: &'a str,
    i: usize,
}

impl<'a> Reader<'a> {
    pub fn new(text: &'a str) -> Reader<'a> {
        Reader { s: text.as_bytes(), text, i: 0 }
    }

    /// The next row, or `None` at the end. Blank lines are skipped, as Python's reader does.
    pub fn next_row(&mut self) -> Result<Option<Vec<String>>, String> {
        let mut row = Vec::new();
        self.next_row_into(&mut row).map(|more| more.then_some(row))
    }

    /// Reads the next row into `row` (cleared first); false at the end of input.
    pub fn next_row_into(&mut self, row: &mut Vec<String>) -> Result<bool, String> {
        row.clear();
        let s = self.s;
        loop {
            if self.i >= s.len() {
                return Ok(false);
            }
            // Skip empty lines.
            if s[self.i] == b'\n' {
                self.i += 1;
                continue;
            }
            if s[self.i] == b'\r' && s.get(self.i + 1) == Some(&b'\n') {
                self.i += 2;
                continue;
            }
            break;
        }
        loop {
            // One field.
            if s.get(self.i) == Some(&b'"') {
                self.i += 1;
                let mut field = String::new();
                let mut start = self.i;
                loop {
                    match s.get(self.i) {
                        None => return Err("unexpected end of data inside a quoted field".into()),
                        Some(b'"') if s.get(self.i + 1) == Some(&b'"') => {
                            field.push_str(&self.text[start..=self.i]);
                            self.i += 2;
                            start = self.i;
                        }
                        Some(b'"') => {
                            field.push_str(&self.text[start..self.i]);
                            self.i += 1;
                            break;
                        }
                        Some(_) => self.i += 1,
                    }
                }
                // Python keeps going after a closing quote until the delimiter.
                let rest_start = self.i;
                while let Some(&c) = s.get(self.i) {
                    if c == b',' || c == b'\n' || c == b'\r' {
                        break;
                    }
                    self.i += 1;
                }
                field.push_str(&self.text[rest_start..self.i]);
                row.push(field);
            } else {
                let start = self.i;
                while let Some(&c) = s.get(self.i) {
                    if c == b',' || c == b'\n' || c == b'\r' {
                        break;
                    }
                    self.i += 1;
                }
                row.push(self.text[start..self.i].to_string());
            }
            match s.get(self.i) {
                Some(b',') => {
                    self.i += 1;
                }
                Some(b'\r') => {
                    self.i += 1;
                    if s.get(self.i) == Some(&b'\n') {
                        self.i += 1;
                    }
                    return Ok(true);
                }
                Some(b'\n') => {
                    self.i += 1;
                    return Ok(true);
                }
                None => return Ok(true),
                Some(_) => unreachable!("fields stop at a delimiter"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn quoting_and_line_ends() {
        let rows = super::parse("a,b\r\n1,\"x,\"\"y\"\"\"\n\n2,\n").unwrap();
        assert_eq!(rows, vec![vec!["a", "b"], vec!["1", "x,\"y\""], vec!["2", ""]]);
    }
}
