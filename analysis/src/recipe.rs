//! The recipe format (docs/recipes.md): an input dataset, derived columns, and steps.

use serde::Deserialize;

use crate::sdc::Rounding;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// The dataset (`.csv`, `.csv.gz`, `.arrow`, `.parquet`), relative to the working directory.
    pub input: String,
    /// Columns computed before the steps run, in order.
    #[serde(default)]
    pub derive: Vec<Derive>,
    pub steps: Vec<Step>,
}

/// A derived 0/1 flag.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Derive {
    pub name: String,
    /// 1 where this numeric column is greater than 0, else 0.
    pub positive: Option<String>,
    /// 1 where any of these columns is 1, else 0.
    pub any_of: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Counts per group of one or more columns.
    Frequency(Frequency),
    /// Counts per combination of two or more columns, with proportions.
    Crosstab(Frequency),
    /// The distinct values of every matching column, most frequent first (pandas' value_counts).
    ValueCounts(ValueCounts),
    /// n, missing, mean, sd, min, quantiles and max of numeric columns, optionally per group.
    Summary(Summary),
    /// Counts of a numeric column in fixed-width bins, protected, optionally charted.
    Histogram(Histogram),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Frequency {
    pub by: Vec<String>,
    pub rounding: Rounding,
    pub output: String,
    /// Add `p = round(n / sum(n), 3)`, from the protected counts.
    #[serde(default)]
    pub proportions: Option<bool>,
    /// Row order: `groups` (ascending group values, NA last) or `proportion_desc`.
    #[serde(default)]
    pub sort: Option<Sort>,
    /// What a redacted count is written as (default `[REDACTED]`).
    #[serde(default)]
    pub redacted: Option<String>,
    /// Add `Total` rows: per level of each column, and the grand total, summed from the
    /// protected counts.
    #[serde(default)]
    pub margins: bool,
    #[serde(default)]
    pub chart: Option<Chart>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Sort {
    Groups,
    ProportionDesc,
}

/// A bar chart of the protected counts (never of row-level values), `.png` or `.svg`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chart {
    pub output: String,
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    #[serde(default)]
    pub subtitle: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueCounts {
    #[serde(default)]
    pub starts_with: Option<String>,
    #[serde(default)]
    pub ends_with: Option<String>,
    pub rounding: Rounding,
    /// The output path, with `{column}` replaced by each column's name.
    pub output: String,
    #[serde(default)]
    pub redacted: Option<String>,
    /// Write a header row (`value,count`); pandas' `to_csv(header=False)` writes none.
    #[serde(default)]
    pub header: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    /// The numeric columns to summarise, one output row each (per group).
    pub columns: Vec<String>,
    /// Optional grouping columns.
    #[serde(default)]
    pub by: Vec<String>,
    /// Protects `n` and `missing`; unless `none`, statistics of 7 or fewer values are
    /// redacted, and so are minima and maxima (individual values, pipeline.md §4.1).
    pub rounding: Rounding,
    pub output: String,
    /// Which quantiles (R's and pandas' default method, type 7), as `p25`, `p50`, ….
    #[serde(default = "default_quantiles")]
    pub quantiles: Vec<f64>,
    /// Decimal places of the mean, sd and quantiles.
    #[serde(default = "default_digits")]
    pub digits: u32,
    #[serde(default)]
    pub redacted: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Histogram {
    /// The numeric column.
    pub column: String,
    /// Bins are `[k * bin_width, (k + 1) * bin_width)`.
    pub bin_width: f64,
    /// Optional fixed `[from, to)` range; by default the bins cover the data. Values outside
    /// a fixed range are counted in the first or last bin's `below`/`above` rows.
    #[serde(default)]
    pub range: Option<[f64; 2]>,
    pub rounding: Rounding,
    pub output: String,
    #[serde(default)]
    pub redacted: Option<String>,
    #[serde(default)]
    pub chart: Option<Chart>,
}

fn default_quantiles() -> Vec<f64> {
    vec![0.25, 0.5, 0.75]
}

fn default_digits() -> u32 {
    2
}

impl Recipe {
    /// Whether a dataset column is used by any derive rule or step (only those are read).
    pub fn uses(&self, column: &str) -> bool {
        let named = |names: &[String]| names.iter().any(|n| n == column);
        self.derive.iter().any(|d| d.positive.as_deref() == Some(column) || d.any_of.as_deref().is_some_and(named))
            || self.steps.iter().any(|s| match s {
                Step::Frequency(f) | Step::Crosstab(f) => named(&f.by),
                Step::ValueCounts(v) => v.matches(column),
                Step::Summary(s) => named(&s.columns) || named(&s.by),
                Step::Histogram(h) => h.column == column,
            })
    }
}

impl ValueCounts {
    pub fn matches(&self, column: &str) -> bool {
        self.starts_with.as_ref().is_none_or(|p| column.starts_with(p.as_str()))
            && self.ends_with.as_ref().is_none_or(|s| column.ends_with(s.as_str()))
    }
}

pub fn parse(text: &str, shown: &str) -> Result<Recipe, crate::AnalysisError> {
    serde_saphyr::from_str(text).map_err(|e| crate::AnalysisError(format!("{shown}: not a valid recipe: {e}")))
}
