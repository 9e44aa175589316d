//! Disclosure checks of a CSV meant for release, like the output checkers' summary panel
//! (pipeline.md §4.2): per column its type, missing and redacted cells, min, min non-zero,
//! max, sum and whether every value is a multiple of 5 or a midpoint-6 value; and the problems
//! an output checker would reject: counts of 1–7, counts neither rounded to 5 nor midpoint-6
//! rounded. (The job runner's own rules — `patient_id` column, 5,000 rows, 16 MB, file types —
//! are checked by the pipeline; `quarry check-outputs` reports both.)

use crate::sdc::{self, REDACTION_THRESHOLD, ROUNDING_BASE};

/// Cells that read as redacted (case- and space-insensitive, as the checkers' panel reads them).
const REDACTED_TOKENS: [&str; 5] = ["[redacted]", "redacted", "na", "n/a", "<=7"];
/// Cells that read as missing.
const MISSING_TOKENS: [&str; 4] = ["", "null", "none", "nan"];

/// Column names that hold counts (`n`, `total`, …), as whole names or as the first or last
/// word of one (`n_patients`, `events_count`, `n_midpoint6`). Other columns — group labels such
/// as `vte_count_primary_diagnoses` or 0/1 flags — are summarised but not judged as counts.
const COUNT_WORDS: [&str; 10] = ["n", "count", "counts", "total", "numerator", "denominator", "frequency", "freq", "num", "midpoint6"];

#[derive(Debug, Clone, PartialEq)]
pub struct ColumnSummary {
    pub name: String,
    /// `integer`, `float`, `mixed` or `text`.
    pub kind: &'static str,
    pub numeric: usize,
    pub missing: usize,
    pub redacted: usize,
    pub min: Option<f64>,
    pub min_nonzero: Option<f64>,
    pub max: Option<f64>,
    pub sum: Option<f64>,
    pub divisible_by_5: bool,
    /// Every value is a multiple of 6 (midpoint-6 derived: sums of midpoint-6 values).
    pub divisible_by_6: bool,
    pub midpoint6: bool,
    /// Checked as counts: whole numbers ≥ 0 in a column named as counts, or the last column of
    /// a headerless file.
    pub counts: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CsvReport {
    pub rows: usize,
    /// False when the first line is data (pandas' `to_csv(header=False)`).
    pub has_header: bool,
    pub columns: Vec<ColumnSummary>,
    pub problems: Vec<String>,
}

fn is_redacted(cell: &str) -> bool {
    let c: String = cell.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_lowercase();
    REDACTED_TOKENS.contains(&c.as_str())
}

fn is_missing(cell: &str) -> bool {
    MISSING_TOKENS.contains(&cell.trim().to_lowercase().as_str())
}

fn looks_like_count(name: &str) -> bool {
    let lower = name.to_lowercase();
    let words: Vec<&str> = lower.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).collect();
    match (words.first(), words.last()) {
        (Some(first), Some(last)) => COUNT_WORDS.contains(first) || COUNT_WORDS.contains(last),
        _ => false,
    }
}

/// Whether `x` is what midpoint-6 rounding produces (0, 3, 9, 15, …).
fn is_midpoint6(x: i64) -> bool {
    x == 0 || (x - sdc::MIDPOINT_BASE / 2) % sdc::MIDPOINT_BASE == 0
}

fn summarise(name: &str, cells: &[&str], count_column: bool) -> ColumnSummary {
    let (mut numeric, mut missing, mut redacted, mut text) = (0, 0, 0, 0);
    let mut values: Vec<f64> = vec![];
    for cell in cells {
        if is_missing(cell) {
            missing += 1;
        } else if is_redacted(cell) {
            redacted += 1;
        } else if let Some(x) = cell.trim().parse::<f64>().ok().filter(|x| x.is_finite()) {
            numeric += 1;
            values.push(x);
        } else {
            text += 1;
        }
    }
    let all_int = values.iter().all(|x| x.fract() == 0.0);
    let kind = match (numeric > 0, text > 0) {
        (true, true) => "mixed",
        (false, _) => "text",
        (true, false) if all_int => "integer",
        (true, false) => "float",
    };
    let numeric_column = kind == "integer" || kind == "float";
    let ints: Vec<i64> = if kind == "integer" { values.iter().map(|x| *x as i64).collect() } else { vec![] };
    ColumnSummary {
        name: name.to_string(),
        kind,
        numeric,
        missing,
        redacted,
        min: numeric_column.then(|| values.iter().copied().fold(f64::INFINITY, f64::min)),
        min_nonzero: numeric_column
            .then(|| values.iter().copied().filter(|x| *x != 0.0).fold(f64::INFINITY, f64::min))
            .filter(|x| x.is_finite()),
        max: numeric_column.then(|| values.iter().copied().fold(f64::NEG_INFINITY, f64::max)),
        sum: numeric_column.then(|| values.iter().sum()),
        divisible_by_5: kind == "integer" && ints.iter().all(|x| x % ROUNDING_BASE == 0),
        divisible_by_6: kind == "integer" && ints.iter().all(|x| x % sdc::MIDPOINT_BASE == 0),
        midpoint6: kind == "integer" && ints.iter().all(|x| is_midpoint6(*x)),
        counts: kind == "integer" && ints.iter().all(|x| *x >= 0) && count_column,
    }
}

/// Checks CSV text (`shown` names the file in messages).
pub fn check_csv(text: &str) -> Result<CsvReport, String> {
    let mut reader = quarry_queries::csv::Reader::new(text.strip_prefix('\u{feff}').unwrap_or(text));
    let mut rows: Vec<Vec<String>> = vec![];
    let mut row = vec![];
    let mut n = 0;
    while reader.next_row_into(&mut row).map_err(|m| format!("row {}: {m}", n + 1))? {
        n += 1;
        if !(row.len() == 1 && row[0].is_empty()) {
            rows.push(std::mem::take(&mut row));
        }
    }
    let Some(first) = rows.first() else {
        return Ok(CsvReport { rows: 0, has_header: false, columns: vec![], problems: vec![] });
    };
    // A first line whose last field is a number is data: value counts are written headerless.
    let has_header = first.last().is_none_or(|f| f.trim().parse::<f64>().is_err() && !is_redacted(f));
    let (names, data): (Vec<String>, &[Vec<String>]) =
        if has_header { (first.clone(), &rows[1..]) } else { ((1..=first.len()).map(|i| format!("column {i}")).collect(), &rows[..]) };
    let mut problems = vec![];
    let mut columns = vec![];
    for (i, name) in names.iter().enumerate() {
        let cells: Vec<&str> = data.iter().map(|r| r.get(i).map(String::as_str).unwrap_or("")).collect();
        let count_column = if has_header { looks_like_count(name) } else { i + 1 == names.len() };
        let s = summarise(name, &cells, count_column);
        // Midpoint-6 columns hold rounded values (0, 3, 9, …) and totals derived from them
        // (multiples of 3: sums of values ≡ 3 mod 6 are ≡ 0 or 3 mod 6).
        let midpoint6_scheme =
            s.kind == "integer" && cells.iter().filter_map(|c| c.trim().parse::<i64>().ok()).all(|x| x % (sdc::MIDPOINT_BASE / 2) == 0);
        if s.counts && !(s.midpoint6 || (midpoint6_scheme && !s.divisible_by_5)) {
            let small = cells.iter().filter_map(|c| c.trim().parse::<i64>().ok()).filter(|x| *x > 0 && *x <= REDACTION_THRESHOLD).count();
            if small > 0 {
                problems.push(format!(
                    "column `{name}`: {small} count(s) between 1 and {REDACTION_THRESHOLD}; redact them (or use midpoint-6 rounding)"
                ));
            }
            if !s.divisible_by_5 {
                let unrounded = cells.iter().filter_map(|c| c.trim().parse::<i64>().ok()).filter(|x| x % ROUNDING_BASE != 0).count();
                problems.push(format!(
                    "column `{name}`: {unrounded} count(s) neither rounded to a multiple of {ROUNDING_BASE} nor midpoint-6 rounded"
                ));
            }
        }
        columns.push(s);
    }
    Ok(CsvReport { rows: data.len(), has_header, columns, problems })
}

fn number(x: Option<f64>) -> String {
    x.map(|x| format!("{x}")).unwrap_or_else(|| "-".into())
}

/// The report's lines for one file, indented under its name.
pub fn render(report: &CsvReport) -> String {
    let mut out = format!("  {} data rows{}\n", report.rows, if report.has_header { "" } else { " (no header row)" });
    for c in &report.columns {
        out.push_str(&format!("  {}: {}, {} numeric, {} missing, {} redacted", c.name, c.kind, c.numeric, c.missing, c.redacted));
        if c.kind == "integer" || c.kind == "float" {
            out.push_str(&format!(
                ", min {}, min non-zero {}, max {}, sum {}",
                number(c.min),
                number(c.min_nonzero),
                number(c.max),
                number(c.sum)
            ));
        }
        if c.kind == "integer" {
            let yes = |b: bool| if b { "yes" } else { "no" };
            out.push_str(&format!(
                ", divisible by 5: {}, divisible by 6: {}, midpoint 6 rounded: {}",
                yes(c.divisible_by_5),
                yes(c.divisible_by_6),
                yes(c.midpoint6)
            ));
            out.push_str(if c.counts { " (checked as counts)" } else { "" });
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounded_and_redacted_counts_pass() {
        let r = check_csv("group,n\r\na,10\r\nb,[REDACTED]\r\nc,0\r\nd,125\r\n").unwrap();
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(r.rows, 4);
        let n = &r.columns[1];
        assert_eq!(
            (n.kind, n.redacted, n.min_nonzero, n.sum, n.divisible_by_5, n.counts),
            ("integer", 1, Some(10.0), Some(135.0), true, true)
        );
        let r = check_csv("x,n_midpoint6\n1,3\n2,9\n3,0\n").unwrap();
        assert!(r.problems.is_empty() && r.columns[1].midpoint6, "{:?}", r.problems);
        // Margins of midpoint-6 cells (9 + 3 = 12, 24) are midpoint-6 derived.
        let r = check_csv("a,b,n\n0,0,9\n0,1,3\n0,Total,12\nTotal,Total,24\n").unwrap();
        assert!(r.problems.is_empty() && !r.columns[2].divisible_by_6, "{:?}", r.problems);
    }

    #[test]
    fn small_and_unrounded_counts_are_problems() {
        let r = check_csv("group,n\na,5\nb,12\nc,20\n").unwrap();
        assert_eq!(
            r.problems,
            [
                "column `n`: 1 count(s) between 1 and 7; redact them (or use midpoint-6 rounding)",
                "column `n`: 1 count(s) neither rounded to a multiple of 5 nor midpoint-6 rounded"
            ]
        );
    }

    #[test]
    fn labels_statistics_and_headerless_files() {
        // Group labels, flags and statistics are not counts; names made of count words are.
        let r = check_csv("age,vte_count_primary_diagnoses,has_event,p50,mean,n\n41,2,1,52,3,10\n").unwrap();
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(r.columns.iter().filter(|c| c.counts).map(|c| c.name.as_str()).collect::<Vec<_>>(), ["n"]);
        for name in ["n_patients", "events_count", "numerator", "n_midpoint6", "Total"] {
            assert!(looks_like_count(name), "{name}");
        }
        for name in ["vte_count_primary_diagnoses", "age", "p25", "interval_start", "patients_with_event"] {
            assert!(!looks_like_count(name), "{name}");
        }
        // pandas' headerless value counts: the first line is data.
        let r = check_csv("XaBCD,10\nL43y2,2\n").unwrap();
        assert!(!r.has_header);
        assert_eq!(r.rows, 2);
        assert_eq!(r.problems.len(), 2, "{:?}", r.problems);
        assert_eq!(check_csv("XaBCD,10\nL43y2,redacted\n").unwrap().problems, Vec::<String>::new());
    }
}
