//! CSV output: a table's rows as the columnar engine computes them (one [`Array`] per output
//! column, all the same length) rendered as ehrQL's CSV without making a value per cell
//! ([`csv_text`]), and rows of values for the other paths ([`rows_text`]). Both write the
//! bytes of Python's `csv.writer` (minimal quoting, doubled quotes, CRLF; `T`/`F`, ISO dates,
//! Python's float repr, empty for NULL); `tests` below compares them with the `csv` crate's
//! writer, configured as ehrQL's dialect, on random columns.
//!
//! Integers are formatted with `itoa`, dates from their day numbers, and a text column's
//! values (quoted where they need it) once per dictionary value rather than once per row.

use arrow_buffer::NullBuffer;
use quarry_queries::pyrepr::float_repr;
use quarry_queries::qm::Value;
use quarry_queries::semantics::Scalar;

use crate::column::{Array, Dict};
use crate::dummy::days;

/// The rows of `columns` as CSV text (no header).
pub fn csv_text(columns: &[Array]) -> String {
    render(columns, None)
}

/// As [`csv_text`], with where each row's text ends.
pub fn csv_rows(columns: &[Array]) -> (String, Vec<usize>) {
    let mut ends = Vec::with_capacity(columns.first().map_or(0, Array::len));
    let text = render(columns, Some(&mut ends));
    (text, ends)
}

fn render(columns: &[Array], mut ends: Option<&mut Vec<usize>>) -> String {
    let rows = columns.first().map_or(0, Array::len);
    debug_assert!(columns.iter().all(|c| c.len() == rows), "output columns of one length");
    let fields: Vec<Field> = columns.iter().map(|c| Field::new(c, rows)).collect();
    let mut out: Vec<u8> = Vec::with_capacity(rows * (columns.len() * 8 + 2));
    let mut int = itoa::Buffer::new();
    for r in 0..rows {
        let start = out.len();
        for (c, f) in fields.iter().enumerate() {
            if c > 0 {
                out.push(b',');
            }
            f.write(r, &mut out, &mut int);
        }
        // A record of one empty field is written `""`, or it would read as no field at all.
        if fields.len() == 1 && out.len() == start {
            out.extend_from_slice(b"\"\"");
        }
        out.extend_from_slice(b"\r\n");
        if let Some(ends) = ends.as_deref_mut() {
            ends.push(out.len());
        }
    }
    String::from_utf8(out).expect("CSV of UTF-8 fields is UTF-8")
}

/// Rows of values as CSV text (no header): the same bytes as [`csv_text`] over the same
/// values in typed columns.
pub fn rows_text(rows: &[Vec<Scalar>]) -> String {
    let mut out: Vec<u8> = Vec::with_capacity(rows.iter().map(|r| r.len() * 8 + 2).sum());
    let mut int = itoa::Buffer::new();
    for row in rows {
        for (c, v) in row.iter().enumerate() {
            if c > 0 {
                out.push(b',');
            }
            value(v, &mut out, &mut int);
        }
        if row.len() <= 1 && row.first().is_none_or(|v| v.is_none() || empty_text(v)) {
            out.extend_from_slice(b"\"\"");
        }
        out.extend_from_slice(b"\r\n");
    }
    String::from_utf8(out).expect("CSV of UTF-8 fields is UTF-8")
}

/// Typed columns' rows as values (for what keeps values: the evaluators' `Table`s).
pub fn rows_of(columns: &[Array]) -> Vec<Vec<Scalar>> {
    let len = columns.first().map_or(0, Array::len);
    (0..len).map(|r| columns.iter().map(|c| c.get(r)).collect()).collect()
}

fn empty_text(v: &Scalar) -> bool {
    matches!(v, Some(Value::Str(s) | Value::Code(_, s)) if s.is_empty())
}

/// One value as a CSV field.
fn value(v: &Scalar, out: &mut Vec<u8>, int: &mut itoa::Buffer) {
    match v {
        None => {}
        Some(Value::Bool(b)) => out.push(if *b { b'T' } else { b'F' }),
        Some(Value::Int(i)) => out.extend_from_slice(int.format(*i).as_bytes()),
        Some(Value::Float(f)) => out.extend_from_slice(float_repr(f.0).as_bytes()),
        Some(Value::Date(d)) => date(crate::column::date_days(*d), out),
        Some(Value::Str(s) | Value::Code(_, s)) => escaped(s.as_bytes(), out),
        Some(Value::Set(..)) => escaped(crate::output::render_value(v).as_bytes(), out),
    }
}

/// One column being written: its values, and a text column's dictionary values encoded.
enum Field<'a> {
    Bool(&'a arrow_buffer::BooleanBuffer, Option<&'a NullBuffer>),
    Int(&'a [i64], Option<&'a NullBuffer>),
    Float(&'a [f64], Option<&'a NullBuffer>),
    Date(&'a [i32], Option<&'a NullBuffer>),
    /// Each dictionary value's field bytes (`spans[key]` into `bytes`), when the dictionary is
    /// not much larger than the rows; else each row's text is encoded as it comes.
    Text {
        keys: &'a [u32],
        dict: &'a Dict,
        nulls: Option<&'a NullBuffer>,
        encoded: Option<Encoded>,
    },
    Values(&'a [Scalar]),
}

/// A dictionary's values as CSV fields: value `k`'s bytes are `bytes[spans[k].0..spans[k].1]`.
struct Encoded {
    bytes: Vec<u8>,
    spans: Vec<(u32, u32)>,
}

impl<'a> Field<'a> {
    fn new(a: &'a Array, rows: usize) -> Field<'a> {
        match a {
            Array::Bool(v, n) => Field::Bool(v, n.as_ref()),
            Array::Int(v, n) => Field::Int(v, n.as_ref()),
            Array::Float(v, n) => Field::Float(v, n.as_ref()),
            Array::Date(v, n) => Field::Date(v, n.as_ref()),
            Array::Text(keys, dict, n) => {
                let encoded = (dict.values.len() <= rows.max(64)).then(|| {
                    let mut bytes = vec![];
                    let spans = (0..dict.values.len() as u32)
                        .map(|k| {
                            let start = bytes.len() as u32;
                            escaped(dict.text(k).as_bytes(), &mut bytes);
                            (start, bytes.len() as u32)
                        })
                        .collect();
                    Encoded { bytes, spans }
                });
                Field::Text { keys, dict, nulls: n.as_ref(), encoded }
            }
            Array::Values(v) => Field::Values(v),
        }
    }

    fn write(&self, r: usize, out: &mut Vec<u8>, int: &mut itoa::Buffer) {
        let valid = |n: Option<&NullBuffer>| n.is_none_or(|n| n.is_valid(r));
        match self {
            Field::Bool(v, n) if valid(*n) => out.push(if v.value(r) { b'T' } else { b'F' }),
            Field::Int(v, n) if valid(*n) => out.extend_from_slice(int.format(v[r]).as_bytes()),
            Field::Float(v, n) if valid(*n) => out.extend_from_slice(float_repr(v[r]).as_bytes()),
            Field::Date(v, n) if valid(*n) => date(v[r], out),
            Field::Text { keys, dict, nulls, encoded } if valid(*nulls) => match encoded {
                Some(Encoded { bytes, spans }) => {
                    let (s, e) = spans[keys[r] as usize];
                    out.extend_from_slice(&bytes[s as usize..e as usize]);
                }
                None => escaped(dict.text(keys[r]).as_bytes(), out),
            },
            Field::Values(v) => value(&v[r], out, int),
            // NULL: an empty field.
            _ => {}
        }
    }
}

/// A field's bytes as Python's `csv.writer` (and the `csv` crate, `QuoteStyle::Necessary`)
/// writes them: quoted, with quotes doubled, when it holds a comma, a quote or a line end.
fn escaped(field: &[u8], out: &mut Vec<u8>) {
    if !field.iter().any(|b| matches!(b, b',' | b'"' | b'\r' | b'\n')) {
        out.extend_from_slice(field);
        return;
    }
    out.push(b'"');
    for &b in field {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// A day number as ISO `YYYY-MM-DD` (years 1–9999, the only ones the engine holds).
fn date(n: i32, out: &mut Vec<u8>) {
    let (y, m, d) = days::civil(n as i64);
    if !(1..=9999).contains(&y) {
        out.extend_from_slice(crate::column::days_date(n).to_string().as_bytes());
        return;
    }
    let (y, m, d) = (y as u32, m as u8, d as u8);
    out.extend_from_slice(&[
        b'0' + (y / 1000) as u8,
        b'0' + (y / 100 % 10) as u8,
        b'0' + (y / 10 % 10) as u8,
        b'0' + (y % 10) as u8,
        b'-',
        b'0' + m / 10,
        b'0' + m % 10,
        b'-',
        b'0' + d / 10,
        b'0' + d % 10,
    ]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use quarry_queries::qm::{Float, Type, Value};

    /// A small deterministic generator (the test needs no crate of its own).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            self.0 >> 33
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn random_value(t: &Type, g: &mut Lcg) -> Scalar {
        if g.below(5) == 0 {
            return None;
        }
        const TEXT: [&str; 10] = ["", "a", "a,b", "say \"hi\"", "line\nend", "cr\rx", "\"", ",", "ünï", "  spaced  "];
        Some(match t {
            Type::Bool => Value::Bool(g.below(2) == 0),
            Type::Int => Value::Int(match g.below(4) {
                0 => i64::MIN,
                1 => i64::MAX,
                _ => g.next() as i64 - (1 << 30),
            }),
            Type::Float => Value::Float(Float(match g.below(6) {
                0 => f64::NAN,
                1 => f64::INFINITY,
                2 => -0.0,
                3 => 1e22,
                4 => 0.1 + 0.2,
                _ => (g.next() as f64 - 1e9) / 7.0,
            })),
            Type::Date => Value::Date(crate::column::days_date(
                *days::SUPPORTED.start() as i32 + g.below((days::SUPPORTED.end() - days::SUPPORTED.start() + 1) as u64) as i32,
            )),
            _ => Value::Str(TEXT[g.below(TEXT.len() as u64) as usize].to_string()),
        })
    }

    /// Random columns of every type, including a lone column (whose empty field is quoted),
    /// and the same rows as values, render as the `csv` crate renders them.
    #[test]
    fn typed_csv_is_the_value_writers_bytes() {
        let types = [Type::Bool, Type::Int, Type::Float, Type::Date, Type::Str];
        let mut g = Lcg(7);
        for case in 0..300 {
            let rows = g.below(40) as usize + usize::from(case % 7 == 0) * 200;
            let width = 1 + g.below(5) as usize;
            let kinds: Vec<&Type> = (0..width).map(|_| &types[g.below(types.len() as u64) as usize]).collect();
            let values: Vec<Vec<Scalar>> = kinds.iter().map(|t| (0..rows).map(|_| random_value(t, &mut g)).collect()).collect();
            let columns: Vec<Array> = kinds.iter().zip(&values).map(|(t, v)| Array::from_scalars(t, v)).collect();
            let by_row: Vec<Vec<Scalar>> = (0..rows).map(|r| values.iter().map(|c| c[r].clone()).collect()).collect();
            let oracle = crate::output::csv_text(by_row.iter().map(|r| r.iter().map(crate::output::render_value)));
            assert_eq!(csv_text(&columns), oracle, "case {case}: {kinds:?}");
            assert_eq!(rows_text(&by_row), oracle, "case {case}: {kinds:?}");
            let (text, ends) = csv_rows(&columns);
            let mut start = 0;
            for (row, end) in by_row.iter().zip(&ends) {
                assert_eq!(&text[start..*end], rows_text(std::slice::from_ref(row)), "case {case}");
                start = *end;
            }
            assert_eq!((ends.len(), start), (rows, text.len()));
        }
    }

    /// Every date the engine can hold is written as the value writer (jiff) writes it.
    #[test]
    fn every_supported_date_is_written_as_iso() {
        let mut out = vec![];
        for n in days::SUPPORTED.step_by(13).chain([*days::SUPPORTED.end()]) {
            out.clear();
            date(n as i32, &mut out);
            assert_eq!(std::str::from_utf8(&out).unwrap(), crate::column::days_date(n as i32).to_string(), "day {n}");
        }
    }

    /// An integer in a float-typed series (ehrQL's `int ** int`) is written as an integer.
    #[test]
    fn values_columns_are_written_slot_by_slot() {
        let column = Array::Values(std::sync::Arc::new(vec![Some(Value::Int(49)), None, Some(Value::Float(Float(2.5)))]));
        assert_eq!(csv_text(&[column]), "49\r\n\"\"\r\n2.5\r\n");
    }
}
