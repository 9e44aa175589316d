//! Reading typed values from text cells, with Python's rules and messages (ehrQL reads
//! dummy tables and `table_from_file` files this way): empty is NULL, ints via `int()`,
//! floats via `float()`, dates via `date.fromisoformat`, booleans only `T`/`F`.

use crate::qm::{Column, Constraint, Float, Type, Value};

/// Parses one cell; the error is the message after `column 'x': `.
pub fn parse_cell(type_: &Type, text: &str) -> Result<Option<Value>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    Ok(Some(match type_ {
        Type::Int => Value::Int(parse_int(text).ok_or_else(|| format!("invalid literal for int() with base 10: '{text}'"))?),
        Type::Float => Value::Float(Float(parse_float(text).ok_or_else(|| format!("could not convert string to float: '{text}'"))?)),
        Type::Bool => match text {
            "T" => Value::Bool(true),
            "F" => Value::Bool(false),
            _ => return Err(format!("invalid boolean, must be 'T' or 'F', not '{text}'")),
        },
        Type::Date => Value::Date(parse_date(text)?),
        Type::Str | Type::MultiCodeString(_) => Value::Str(text.to_string()),
        Type::Code(c) => Value::Code(*c, text.to_string()),
        Type::Set(_) => return Err("sets cannot be read from files".into()),
    }))
}

/// Python's `int()`: optional sign, digits, underscores between digits, surrounding spaces.
pub fn parse_int(text: &str) -> Option<i64> {
    let t = text.trim();
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
        || !digits.bytes().all(|b| b.is_ascii_digit() || b == b'_')
    {
        return None;
    }
    t.replace('_', "").parse().ok()
}

pub fn parse_float(text: &str) -> Option<f64> {
    let t = text.trim();
    match t.to_ascii_lowercase().trim_start_matches(['+', '-']) {
        "nan" => return Some(f64::NAN),
        "inf" | "infinity" => return Some(if t.starts_with('-') { f64::NEG_INFINITY } else { f64::INFINITY }),
        _ => {}
    }
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-' | b'_')) {
        return None;
    }
    t.replace('_', "").parse().ok()
}

/// `date.fromisoformat` for `YYYY-MM-DD` (and `YYYYMMDD`), with Python's messages.
pub fn parse_date(text: &str) -> Result<jiff::civil::Date, String> {
    let b = text.as_bytes();
    let (y, m, d) = if b.len() == 10 && b[4] == b'-' && b[7] == b'-' {
        (&text[0..4], &text[5..7], &text[8..10])
    } else if b.len() == 8 && b.iter().all(u8::is_ascii_digit) {
        (&text[0..4], &text[4..6], &text[6..8])
    } else if let Some(d) = parse_iso_week(text) {
        return Ok(d);
    } else {
        return Err(format!("Invalid isoformat string: '{text}'"));
    };
    let num = |s: &str| -> Result<i64, String> {
        if s.bytes().all(|c| c.is_ascii_digit()) {
            s.parse().map_err(|_| format!("Invalid isoformat string: '{text}'"))
        } else {
            Err(format!("Invalid isoformat string: '{text}'"))
        }
    };
    let (y, m, d) = (num(y)?, num(m)?, num(d)?);
    // Python's messages, and the value they are about.
    if y < 1 {
        return Err(format!("year {y} is out of range: '{text}'"));
    }
    if !(1..=12).contains(&m) {
        return Err(format!("month must be in 1..12: '{text}'"));
    }
    jiff::civil::Date::new(y as i16, m as i8, d as i8).map_err(|_| format!("day is out of range for month: '{text}'"))
}

/// ISO week dates, which `date.fromisoformat` accepts: `2020-W01-1`, `2020W011`, `2020-W01`.
fn parse_iso_week(text: &str) -> Option<jiff::civil::Date> {
    let compact = text.replace('-', "");
    let b = compact.as_bytes();
    if !(b.len() == 7 || b.len() == 8) || b[4] != b'W' {
        return None;
    }
    let year: i16 = compact[0..4].parse().ok()?;
    let week: i8 = compact[5..7].parse().ok()?;
    let day: i8 = if b.len() == 8 { compact[7..8].parse().ok()? } else { 1 };
    let weekday = jiff::civil::Weekday::from_monday_one_offset(day).ok()?;
    jiff::civil::ISOWeekDate::new(year, week, weekday).ok().map(|w| w.date())
}

/// Checks a value against a column's `Categorical` constraint.
pub fn check_categories(column: &Column, value: &Value) -> Result<(), String> {
    for c in &column.constraints {
        if let Constraint::Categorical(values) = c
            && !values.is_empty()
            && !values.contains(value)
        {
            let shown = |v: &Value| match v {
                Value::Str(s) => format!("'{s}'"),
                Value::Int(i) => i.to_string(),
                Value::Date(d) => format!("'{d}'"),
                other => format!("{other:?}"),
            };
            return Err(format!("{} not in valid categories: {}", shown(value), values.iter().map(shown).collect::<Vec<_>>().join(", ")));
        }
    }
    Ok(())
}

/// A `table_from_file` table's rows: patient_id and the values in column order.
pub type InlineRows = Vec<(i64, Vec<Option<Value>>)>;

/// Parses a `table_from_file` CSV's text: `patient_id` plus the given columns, in the
/// columns' order; `shown` names the file in messages.
pub fn parse_inline_table(text: &str, shown: &str, columns: &[Column]) -> Result<InlineRows, String> {
    let rows = crate::csv::parse(text).map_err(|(r, m)| format!("'{shown}', row {r}: {m}"))?;
    let Some((header, body)) = rows.split_first() else {
        return Err(format!("'{shown}' is empty"));
    };
    let find = |name: &str| header.iter().position(|h| h == name).ok_or_else(|| format!("'{shown}': missing column '{name}'"));
    let pid = find("patient_id")?;
    let idx = columns.iter().map(|c| find(&c.name)).collect::<Result<Vec<_>, _>>()?;
    let mut out = vec![];
    for (r, row) in body.iter().enumerate() {
        let at = |m: String| format!("'{shown}', row {}: {m}", r + 1);
        if row.len() != header.len() {
            return Err(at(format!("expected {} columns but got {}", header.len(), row.len())));
        }
        let p = parse_int(&row[pid])
            .ok_or_else(|| at(format!("column 'patient_id': invalid literal for int() with base 10: '{}'", row[pid])))?;
        let mut values = vec![];
        for (c, &i) in columns.iter().zip(&idx) {
            values.push(parse_cell(&c.type_, &row[i]).map_err(|m| at(format!("column '{}': {m}", c.name)))?);
        }
        out.push((p, values));
    }
    Ok(out)
}
