//! The steps: grouped counts (frequency tables, crosstabs) and per-column value counts, each
//! count protected by a disclosure-control rule and each rule recorded.

use crate::AnalysisError;
use crate::data::{Column, Frame};
use crate::recipe::{Frequency, Histogram, Sort, Summary, ValueCounts};
use crate::sdc::{self, Protected, Rounding};

/// One written table: its text and what disclosure control did to it.
pub struct Written {
    pub path: String,
    pub text: String,
    pub log: String,
    /// For charts: group labels and protected counts.
    pub bars: Vec<(String, Option<i64>)>,
}

fn parse_num(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|f| f.is_finite())
}

/// dplyr's group order: ascending, numerically when every value is a number, NA last.
fn group_order(a: &[Option<&str>], b: &[Option<&str>], numeric: &[bool]) -> std::cmp::Ordering {
    for ((x, y), num) in a.iter().zip(b).zip(numeric) {
        let o = match (x, y) {
            (None, None) => std::cmp::Ordering::Equal,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(_), None) => std::cmp::Ordering::Less,
            (Some(x), Some(y)) if *num => parse_num(x).partial_cmp(&parse_num(y)).unwrap_or(std::cmp::Ordering::Equal),
            (Some(x), Some(y)) => x.cmp(y),
        };
        if o.is_ne() {
            return o;
        }
    }
    std::cmp::Ordering::Equal
}

/// Groups rows by the columns' codes: the groups' keys (decoded) and each row's group. A dense
/// table when the codes' combinations are few (the usual case), a hash map otherwise.
fn group_rows<'f>(columns: &[&'f Column], rows: usize) -> (Vec<Vec<Option<&'f str>>>, Vec<u32>) {
    let mut keys: Vec<Vec<u32>> = vec![];
    let mut ids: Vec<u32> = Vec::with_capacity(rows);
    let key_of = |i: usize| columns.iter().map(|c| c.codes()[i]).collect::<Vec<u32>>();
    match columns.iter().try_fold(1usize, |p, c| p.checked_mul(c.cardinality())).filter(|p| *p <= 1 << 22) {
        Some(size) => {
            let mut slot = vec![u32::MAX; size];
            for i in 0..rows {
                let k = columns.iter().fold(0usize, |k, c| k * c.cardinality() + c.codes()[i] as usize);
                if slot[k] == u32::MAX {
                    slot[k] = keys.len() as u32;
                    keys.push(key_of(i));
                }
                ids.push(slot[k]);
            }
        }
        None => {
            let mut index: rustc_hash::FxHashMap<Vec<u32>, u32> = Default::default();
            for i in 0..rows {
                let next = index.len() as u32;
                let id = *index.entry(key_of(i)).or_insert_with_key(|k| {
                    keys.push(k.clone());
                    next
                });
                ids.push(id);
            }
        }
    }
    let decoded = keys.iter().map(|k| k.iter().zip(columns).map(|(&code, c)| c.value(code)).collect()).collect();
    (decoded, ids)
}

/// Each code's number (NULL for code 0): each distinct text parsed once, and a bad one reported
/// at its first row.
fn numbers_by_code(column: &Column, name: &str, output: &str) -> Result<Vec<Option<f64>>, AnalysisError> {
    let mut numbers: Vec<Option<f64>> = vec![None];
    for k in 1..column.cardinality() as u32 {
        let s = column.value(k).unwrap_or_default();
        let row = || column.codes().iter().position(|&c| c == k).unwrap_or(0) + 1;
        numbers.push(Some(
            parse_num(s).ok_or_else(|| AnalysisError(format!("{output}: column `{name}`, row {}: `{s}` is not a number", row())))?,
        ));
    }
    Ok(numbers)
}

/// Whether every value of a column is a number (so groups sort numerically).
fn all_numeric(c: &Column) -> bool {
    (1..c.cardinality() as u32).all(|k| c.value(k).and_then(parse_num).is_some())
}

/// A CSV field as R's `write_csv` writes it: `NA` for missing, quoted when needed.
pub fn field(v: Option<&str>) -> String {
    match v {
        None => "NA".to_string(),
        Some(s) if s.contains([',', '"', '\n', '\r']) => format!("\"{}\"", s.replace('"', "\"\"")),
        Some(s) => s.to_string(),
    }
}

/// R's `round(x, 3)`, printed as R prints a double (shortest form: `0.5`, `0.333`, `1`).
pub fn proportion(x: f64) -> String {
    rounded(x, 3)
}

/// The most decimal places a summary prints (an f64 has about 15 significant digits).
pub const MAX_DIGITS: u32 = 15;

/// `x` rounded to `digits` places, printed in its shortest form.
fn rounded(x: f64, digits: u32) -> String {
    let r: f64 = format!("{x:.*}", digits as usize).parse().unwrap_or(x);
    if r == 0.0 { "0".to_string() } else { format!("{r}") }
}

fn protected_text(p: Protected, token: &str) -> String {
    match p {
        Protected::Count(n) => n.to_string(),
        Protected::Redacted => token.to_string(),
    }
}

fn log_line(path: &str, column: &str, rounding: Rounding, counts: &[i64], protected: &[Protected]) -> String {
    let redacted = protected.iter().filter(|p| **p == Protected::Redacted).count();
    let changed = counts.iter().zip(protected).filter(|(c, p)| matches!(p, Protected::Count(n) if n != *c)).count();
    format!(
        "{path}: column `{column}`: {}; {} counts, {changed} changed by rounding, {redacted} redacted\n",
        rounding.describe(),
        counts.len()
    )
}

/// Counts rows per group of `spec.by`, protects the counts, adds proportions, sorts.
pub fn frequency(frame: &Frame, spec: &Frequency, crosstab: bool) -> Result<Written, AnalysisError> {
    if spec.by.is_empty() || (crosstab && spec.by.len() < 2) {
        return Err(AnalysisError(format!(
            "{}: a {} needs {} columns in `by`",
            spec.output,
            if crosstab { "crosstab" } else { "frequency table" },
            if crosstab { "two or more" } else { "one or more" }
        )));
    }
    let columns: Vec<&Column> = spec.by.iter().map(|c| frame.column(c)).collect::<Result<_, _>>()?;
    let numeric: Vec<bool> = columns.iter().map(|c| all_numeric(c)).collect();
    let (keys, ids) = group_rows(&columns, frame.rows());
    let mut counts = vec![0i64; keys.len()];
    for id in ids {
        counts[id as usize] += 1;
    }
    let mut groups: Vec<(Vec<Option<&str>>, i64)> = keys.into_iter().zip(counts).collect();
    groups.sort_by(|a, b| group_order(&a.0, &b.0, &numeric));
    let raw: Vec<i64> = groups.iter().map(|g| g.1).collect();
    let protected: Vec<Protected> = raw.iter().map(|&n| sdc::protect(spec.rounding, n)).collect();
    let with_p = spec.proportions.unwrap_or(crosstab);
    // Proportions come from the protected counts; redacted rows count for nothing.
    let total: i64 = protected.iter().map(|p| if let Protected::Count(n) = p { *n } else { 0 }).sum();
    let p: Vec<Option<f64>> = protected
        .iter()
        .map(|x| match x {
            Protected::Count(n) if total > 0 => Some(*n as f64 / total as f64),
            _ => None,
        })
        .collect();
    let mut order: Vec<usize> = (0..groups.len()).collect();
    if spec.sort.unwrap_or(if crosstab { Sort::ProportionDesc } else { Sort::Groups }) == Sort::ProportionDesc {
        // dplyr's arrange(desc(p)): stable, NA last; compares the rounded p as R does.
        let key = |i: usize| p[i].map(|x| proportion(x).parse::<f64>().unwrap_or(x));
        order.sort_by(|&a, &b| match (key(a), key(b)) {
            (Some(x), Some(y)) => y.partial_cmp(&x).unwrap_or(std::cmp::Ordering::Equal),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        });
    }
    let token = spec.redacted.as_deref().unwrap_or(sdc::REDACTED);
    let mut text = spec.by.iter().map(|c| field(Some(c))).collect::<Vec<_>>().join(",");
    text.push_str(if with_p { ",n,p\n" } else { ",n\n" });
    let mut bars = vec![];
    for &i in &order {
        let values: Vec<String> = groups[i].0.iter().map(|v| field(*v)).collect();
        text.push_str(&values.join(","));
        text.push(',');
        text.push_str(&protected_text(protected[i], token));
        if with_p {
            text.push(',');
            text.push_str(&p[i].map(proportion).unwrap_or_else(|| "NA".into()));
        }
        text.push('\n');
        bars.push((values.join(" / "), if let Protected::Count(n) = protected[i] { Some(n) } else { None }));
    }
    let mut log = log_line(&spec.output, "n", spec.rounding, &raw, &protected);
    if with_p {
        log.push_str(&format!("{}: column `p`: round(n / sum(n), 3) over the protected counts (total {total})\n", spec.output));
    }
    if spec.margins {
        // Per level of each column (the others `Total`), then the grand total: sums of the
        // protected cells, so no total reveals a redacted or unrounded count.
        for (j, _) in spec.by.iter().enumerate() {
            let mut levels: Vec<(Option<&str>, i64)> = vec![];
            for (g, p) in groups.iter().zip(&protected) {
                let n = if let Protected::Count(n) = p { *n } else { 0 };
                match levels.iter_mut().find(|(l, _)| *l == g.0[j]) {
                    Some(level) => level.1 += n,
                    None => levels.push((g.0[j], n)),
                }
            }
            levels.sort_by(|a, b| group_order(&[a.0], &[b.0], &numeric[j..=j]));
            for (level, n) in levels {
                let key: Vec<String> = (0..spec.by.len()).map(|k| if k == j { field(level) } else { "Total".to_string() }).collect();
                push_margin(&mut text, &key, n, total, with_p);
            }
        }
        push_margin(&mut text, &vec!["Total".to_string(); spec.by.len()], total, total, with_p);
        log.push_str(&format!(
            "{}: margins (rows with `Total`) are sums of the protected counts, redacted cells counting 0\n",
            spec.output
        ));
    }
    Ok(Written { path: spec.output.clone(), text, log, bars })
}

fn push_margin(text: &mut String, key: &[String], n: i64, total: i64, with_p: bool) {
    text.push_str(&key.join(","));
    text.push_str(&format!(",{n}"));
    if with_p {
        text.push(',');
        text.push_str(&if total > 0 { proportion(n as f64 / total as f64) } else { "NA".into() });
    }
    text.push('\n');
}

/// pandas' `value_counts()` of every matching column: NULLs dropped, most frequent first
/// (ties in order of first appearance), each count protected; one file per column.
pub fn value_counts(frame: &Frame, spec: &ValueCounts) -> Result<Vec<Written>, AnalysisError> {
    let matching: Vec<&String> = frame.names.iter().filter(|n| spec.matches(n)).collect();
    if matching.is_empty() {
        return Err(AnalysisError(format!(
            "{}: no dataset column starts with {:?} and ends with {:?} (columns: {})",
            spec.output,
            spec.starts_with.as_deref().unwrap_or(""),
            spec.ends_with.as_deref().unwrap_or(""),
            frame.all_names.join(", ")
        )));
    }
    if matching.len() > 1 && !spec.output.contains("{column}") {
        return Err(AnalysisError(format!("{}: {} columns match; put {{column}} in the output path", spec.output, matching.len())));
    }
    let token = spec.redacted.as_deref().unwrap_or(sdc::REDACTED);
    let mut out = vec![];
    for name in matching {
        let column = frame.column(name)?;
        // Codes are numbered in order of first appearance, so a stable sort by count keeps
        // ties in that order, as pandas does.
        let mut per_code = vec![0i64; column.cardinality()];
        for &c in column.codes() {
            per_code[c as usize] += 1;
        }
        let mut counts: Vec<(&str, i64)> =
            (1..column.cardinality() as u32).map(|k| (column.value(k).unwrap_or_default(), per_code[k as usize])).collect();
        counts.sort_by_key(|c| std::cmp::Reverse(c.1));
        let raw: Vec<i64> = counts.iter().map(|c| c.1).collect();
        let protected: Vec<Protected> = raw.iter().map(|&n| sdc::protect(spec.rounding, n)).collect();
        let path = spec.output.replace("{column}", name);
        let mut text = if spec.header { format!("{},count\n", field(Some(name))) } else { String::new() };
        for ((value, _), p) in counts.iter().zip(&protected) {
            text.push_str(&format!("{},{}\n", field(Some(value)), protected_text(*p, token)));
        }
        let log = log_line(&path, "count", spec.rounding, &raw, &protected);
        out.push(Written { path, text, log, bars: vec![] });
    }
    Ok(out)
}

/// The type-7 quantile of sorted values (R's `quantile` default, pandas' `linear`).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

fn quantile_name(q: f64) -> String {
    let pct = q * 100.0;
    if pct.fract() == 0.0 { format!("p{}", pct as i64) } else { format!("p{}", format!("{pct}").replace('.', "_")) }
}

/// Summary statistics of numeric columns per group: `n` and `missing` protected like any
/// count; the mean, sd and quantiles of 7 or fewer values redacted; minima and maxima
/// redacted (they are one patient's value) unless the rounding is `none`.
pub fn summary(frame: &Frame, spec: &Summary) -> Result<Written, AnalysisError> {
    if spec.columns.is_empty() {
        return Err(AnalysisError(format!("{}: a summary needs one or more `columns`", spec.output)));
    }
    if let Some(q) = spec.quantiles.iter().find(|q| !(0.0..=1.0).contains(*q)) {
        return Err(AnalysisError(format!("{}: quantile {q} is not between 0 and 1", spec.output)));
    }
    if spec.digits > MAX_DIGITS {
        return Err(AnalysisError(format!("{}: digits must be 0 to {MAX_DIGITS}, not {}", spec.output, spec.digits)));
    }
    let by: Vec<&Column> = spec.by.iter().map(|c| frame.column(c)).collect::<Result<_, _>>()?;
    let numeric_by: Vec<bool> = by.iter().map(|c| all_numeric(c)).collect();
    // Group → row indices, groups in dplyr order.
    let (keys, ids) = group_rows(&by, frame.rows());
    let mut members: Vec<Vec<usize>> = vec![vec![]; keys.len()];
    for (i, id) in ids.into_iter().enumerate() {
        members[id as usize].push(i);
    }
    let mut groups: Vec<(Vec<Option<&str>>, Vec<usize>)> = keys.into_iter().zip(members).collect();
    groups.sort_by(|a, b| group_order(&a.0, &b.0, &numeric_by));

    let token = spec.redacted.as_deref().unwrap_or(sdc::REDACTED);
    let protecting = spec.rounding != Rounding::None;
    let mut header: Vec<String> = spec.by.iter().map(|c| field(Some(c))).collect();
    header.extend(["variable", "n", "missing", "mean", "sd", "min"].map(String::from));
    header.extend(spec.quantiles.iter().map(|q| quantile_name(*q)));
    header.push("max".into());
    let mut text = header.join(",") + "\n";
    let (mut raw, mut protected, mut suppressed) = (vec![], vec![], 0);
    for name in &spec.columns {
        let column = frame.column(name)?;
        let numbers = numbers_by_code(column, name, &spec.output)?;
        let values: Vec<Option<f64>> = column.codes().iter().map(|&c| numbers[c as usize]).collect();
        for (key, rows) in &groups {
            let mut xs: Vec<f64> = rows.iter().filter_map(|&i| values[i]).collect();
            xs.sort_by(f64::total_cmp);
            let (n, missing) = (xs.len() as i64, (rows.len() - xs.len()) as i64);
            let counts = [sdc::protect(spec.rounding, n), sdc::protect(spec.rounding, missing)];
            raw.extend([n, missing]);
            protected.extend(counts);
            let mut cells: Vec<String> = key.iter().map(|v| field(*v)).collect();
            cells.push(field(Some(name)));
            cells.extend(counts.map(|p| protected_text(p, token)));
            let small = protecting && sdc::is_small(n);
            suppressed += small as usize;
            let stat = |x: Option<f64>, hide: bool| match x {
                None => "NA".to_string(),
                Some(_) if hide => token.to_string(),
                Some(x) => rounded(x, spec.digits),
            };
            let mean = (n > 0).then(|| xs.iter().sum::<f64>() / n as f64);
            let sd = mean.filter(|_| n > 1).map(|m| (xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1) as f64).sqrt());
            cells.push(stat(mean, small));
            cells.push(stat(sd, small));
            cells.push(stat(xs.first().copied(), protecting));
            cells.extend(spec.quantiles.iter().map(|q| stat((n > 0).then(|| quantile(&xs, *q)), small)));
            cells.push(stat(xs.last().copied(), protecting));
            text.push_str(&cells.join(","));
            text.push('\n');
        }
    }
    let mut log = log_line(&spec.output, "n` and `missing", spec.rounding, &raw, &protected);
    if protecting {
        log.push_str(&format!(
            "{}: mean, sd and quantiles redacted in {suppressed} rows describing 7 or fewer values; min and max redacted in every row (individual values)\n",
            spec.output
        ));
    }
    Ok(Written { path: spec.output.clone(), text, log, bars: vec![] })
}

/// Counts per fixed-width bin of a numeric column (NULLs left out), each protected; the chart
/// is drawn from these protected counts. Bin edges are multiples of the width, so they say
/// nothing finer than the width about the extremes; with `range`, values outside it are
/// counted in `below` and `above` rows.
pub fn histogram(frame: &Frame, spec: &Histogram) -> Result<Written, AnalysisError> {
    let width = spec.bin_width;
    if !(width.is_finite() && width > 0.0) {
        return Err(AnalysisError(format!("{}: bin_width must be a positive number, not {width}", spec.output)));
    }
    let column = frame.column(&spec.column)?;
    let numbers = numbers_by_code(column, &spec.column, &spec.output)?;
    let bin = |x: f64| (x / width).floor() as i64;
    let present = numbers.iter().flatten();
    let (lo, hi) = match spec.range {
        Some([from, to]) if from < to => (bin(from), bin(to - width * 1e-9)),
        Some([from, to]) => {
            return Err(AnalysisError(format!("{}: range must be [from, to] with from < to, not [{from}, {to}]", spec.output)));
        }
        None => (present.clone().map(|x| bin(*x)).min().unwrap_or(0), present.map(|x| bin(*x)).max().unwrap_or(-1)),
    };
    if hi - lo > 10_000 {
        return Err(AnalysisError(format!("{}: {} bins of width {width}; choose a wider bin_width or a range", spec.output, hi - lo + 1)));
    }
    let mut counts = vec![0i64; (hi - lo + 1).max(0) as usize];
    let (mut below, mut above) = (0i64, 0i64);
    for &c in column.codes() {
        if let Some(x) = numbers[c as usize] {
            match bin(x) {
                b if b < lo => below += 1,
                b if b > hi => above += 1,
                b => counts[(b - lo) as usize] += 1,
            }
        }
    }
    let edge = |k: i64| rounded(k as f64 * width, 6);
    let mut rows: Vec<(String, String, i64)> = (lo..=hi).zip(&counts).map(|(k, n)| (edge(k), edge(k + 1), *n)).collect();
    if spec.range.is_some() {
        rows.insert(0, ("below".into(), edge(lo), below));
        rows.push((edge(hi + 1), "above".into(), above));
    }
    let raw: Vec<i64> = rows.iter().map(|r| r.2).collect();
    let protected: Vec<Protected> = raw.iter().map(|&n| sdc::protect(spec.rounding, n)).collect();
    let token = spec.redacted.as_deref().unwrap_or(sdc::REDACTED);
    let mut text = format!("{},bin_start,bin_end,n\n", field(Some("variable")));
    let mut bars = vec![];
    for ((start, end, _), p) in rows.iter().zip(&protected) {
        text.push_str(&format!("{},{start},{end},{}\n", field(Some(&spec.column)), protected_text(*p, token)));
        bars.push((start.clone(), if let Protected::Count(n) = p { Some(*n) } else { None }));
    }
    let log = log_line(&spec.output, "n", spec.rounding, &raw, &protected);
    Ok(Written { path: spec.output.clone(), text, log, bars })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proportions_print_as_r_does() {
        assert_eq!(proportion(1.0 / 3.0), "0.333");
        assert_eq!(proportion(0.5), "0.5");
        assert_eq!(proportion(1.0), "1");
        assert_eq!(proportion(2.0 / 3.0), "0.667");
        assert_eq!(proportion(0.0), "0");
    }

    #[test]
    fn quantiles_interpolate_as_r_type_7() {
        let xs = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&xs, 0.5), 2.5);
        assert_eq!(quantile(&xs, 0.25), 1.75);
        assert_eq!(quantile(&xs, 0.0), 1.0);
        assert_eq!(quantile(&xs, 1.0), 4.0);
        assert_eq!(quantile(&[7.0], 0.9), 7.0);
        assert_eq!(quantile_name(0.5), "p50");
        assert_eq!(quantile_name(0.025), "p2_5");
    }
}
