//! The steps: grouped counts (frequency tables, crosstabs) and per-column value counts, each
//! count protected by a disclosure-control rule and each rule recorded.

use std::collections::HashMap;

use crate::AnalysisError;
use crate::data::Frame;
use crate::recipe::{Frequency, Sort, ValueCounts};
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
    let rounded: f64 = format!("{x:.3}").parse().unwrap_or(x);
    format!("{rounded}")
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
    let columns: Vec<&[Option<String>]> = spec.by.iter().map(|c| frame.column(c)).collect::<Result<_, _>>()?;
    let numeric: Vec<bool> = columns.iter().map(|c| c.iter().flatten().all(|v| parse_num(v).is_some())).collect();
    let mut counts: HashMap<Vec<Option<&str>>, i64> = HashMap::new();
    for i in 0..frame.rows() {
        let key: Vec<Option<&str>> = columns.iter().map(|c| c[i].as_deref()).collect();
        *counts.entry(key).or_default() += 1;
    }
    let mut groups: Vec<(Vec<Option<&str>>, i64)> = counts.into_iter().collect();
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
    Ok(Written { path: spec.output.clone(), text, log, bars })
}

/// pandas' `value_counts()` of every matching column: NULLs dropped, most frequent first
/// (ties in order of first appearance), each count protected; one file per column.
pub fn value_counts(frame: &Frame, spec: &ValueCounts) -> Result<Vec<Written>, AnalysisError> {
    let matching: Vec<&String> = frame
        .names
        .iter()
        .filter(|n| spec.starts_with.as_ref().is_none_or(|p| n.starts_with(p.as_str())) && spec.ends_with.as_ref().is_none_or(|s| n.ends_with(s.as_str())))
        .collect();
    if matching.is_empty() {
        return Err(AnalysisError(format!(
            "{}: no dataset column starts with {:?} and ends with {:?} (columns: {})",
            spec.output,
            spec.starts_with.as_deref().unwrap_or(""),
            spec.ends_with.as_deref().unwrap_or(""),
            frame.names.join(", ")
        )));
    }
    if matching.len() > 1 && !spec.output.contains("{column}") {
        return Err(AnalysisError(format!("{}: {} columns match; put {{column}} in the output path", spec.output, matching.len())));
    }
    let token = spec.redacted.as_deref().unwrap_or(sdc::REDACTED);
    let mut out = vec![];
    for name in matching {
        let column = frame.column(name)?;
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut counts: Vec<(&str, i64)> = vec![];
        for v in column.iter().flatten() {
            match index.get(v.as_str()) {
                Some(&i) => counts[i].1 += 1,
                None => {
                    index.insert(v, counts.len());
                    counts.push((v, 1));
                }
            }
        }
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
}
