//! `quarry analysis STEP ...`: one analysis step from the command line, for quick use; the
//! same code as a recipe with a single step (docs/recipes.md).

use std::path::Path;

use clap::{Args, Subcommand};
use quarry_analysis::recipe::{Chart, Frequency, Histogram, Recipe, Sort, Step, Summary, ValueCounts};
use quarry_analysis::sdc::Rounding;

#[derive(Args)]
pub struct AnalysisArgs {
    #[command(subcommand)]
    step: StepCommand,
}

#[derive(Subcommand)]
enum StepCommand {
    /// Counts per group of one or more columns (`--by a,b`).
    Frequency(FrequencyArgs),
    /// Counts per combination of two or more columns, with proportions.
    Crosstab(FrequencyArgs),
    /// Per matching column, its values and their counts, most frequent first.
    ValueCounts(ValueCountsArgs),
    /// n, missing, mean, sd, min, quantiles and max of numeric columns.
    Summary(SummaryArgs),
    /// Counts of a numeric column in fixed-width bins, optionally charted.
    Histogram(HistogramArgs),
}

#[derive(Args)]
struct Common {
    /// The dataset: .csv, .csv.gz, .arrow or .parquet.
    #[arg(long)]
    input: String,
    /// Where to write the table (a `<output>.sdc.txt` log is written beside it).
    #[arg(long)]
    output: String,
    /// Disclosure control: none, midpoint6, nearest5, redact or redact_and_round.
    #[arg(long, default_value = "redact_and_round")]
    rounding: Rounding,
    /// What a redacted value is written as.
    #[arg(long, default_value = quarry_analysis::sdc::REDACTED)]
    redacted: String,
}

#[derive(Args)]
struct FrequencyArgs {
    #[command(flatten)]
    common: Common,
    /// The grouping columns, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    by: Vec<String>,
    /// Add a `p` column (always on for a crosstab).
    #[arg(long)]
    proportions: bool,
    /// Sort by descending proportion instead of by group.
    #[arg(long)]
    sort_by_proportion: bool,
    /// Add `Total` rows (per level of each column, and overall) from the protected counts.
    #[arg(long)]
    margins: bool,
    /// Also draw a bar chart of the protected counts (.png or .svg).
    #[arg(long)]
    chart: Option<String>,
    /// The chart's title (default: the grouping columns).
    #[arg(long)]
    title: Option<String>,
}

#[derive(Args)]
struct ValueCountsArgs {
    #[command(flatten)]
    common: Common,
    /// Columns whose names start with this.
    #[arg(long)]
    starts_with: Option<String>,
    /// Columns whose names end with this.
    #[arg(long)]
    ends_with: Option<String>,
    /// Write a `value,count` header row.
    #[arg(long)]
    header: bool,
}

#[derive(Args)]
struct SummaryArgs {
    #[command(flatten)]
    common: Common,
    /// The numeric columns, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    columns: Vec<String>,
    /// Optional grouping columns, comma-separated.
    #[arg(long, value_delimiter = ',')]
    by: Vec<String>,
    /// Quantiles, comma-separated, each from 0 to 1.
    #[arg(long, value_delimiter = ',', default_value = "0.25,0.5,0.75", value_parser = quantile)]
    quantiles: Vec<f64>,
    /// Decimal places of the mean, sd and quantiles (0 to 15).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=i64::from(quarry_analysis::steps::MAX_DIGITS)))]
    digits: u32,
}

#[derive(Args)]
struct HistogramArgs {
    #[command(flatten)]
    common: Common,
    /// The numeric column.
    #[arg(long)]
    column: String,
    /// The width of each bin (a number above 0).
    #[arg(long, value_parser = positive)]
    bin_width: f64,
    /// A fixed range `FROM,TO` with FROM < TO (values outside it are counted as below/above).
    #[arg(long, value_name = "FROM,TO", value_parser = parse_range)]
    range: Option<[f64; 2]>,
    /// Also draw the histogram of the protected counts (.png or .svg).
    #[arg(long)]
    chart: Option<String>,
    /// The chart's title (default: the column).
    #[arg(long)]
    title: Option<String>,
}

fn number(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(format!("`{s}` is not a number")),
    }
}

fn positive(s: &str) -> Result<f64, String> {
    let v = number(s)?;
    if v > 0.0 { Ok(v) } else { Err(format!("{v} is not above 0")) }
}

fn quantile(s: &str) -> Result<f64, String> {
    let v = number(s)?;
    if (0.0..=1.0).contains(&v) { Ok(v) } else { Err(format!("{v} is not from 0 to 1")) }
}

fn parse_range(s: &str) -> Result<[f64; 2], String> {
    let parts: Vec<f64> = s.split(',').map(number).collect::<Result<_, _>>()?;
    match parts[..] {
        [from, to] if from < to => Ok([from, to]),
        [from, to] => Err(format!("FROM must be below TO, not {from},{to}")),
        _ => Err("give the range as FROM,TO".into()),
    }
}

fn chart(output: Option<String>, title: Option<String>, default_title: String, x_label: String, common: &Common) -> Option<Chart> {
    output.map(|output| Chart {
        output,
        title: title.unwrap_or(default_title),
        x_label,
        y_label: "Count".into(),
        subtitle: Some(format!("{}: {}", common.rounding.describe(), common.input)),
    })
}

fn frequency(a: FrequencyArgs, crosstab: bool) -> (String, Step) {
    let chart = chart(a.chart, a.title, a.by.join(" by "), a.by.join(" / "), &a.common);
    let f = Frequency {
        by: a.by,
        rounding: a.common.rounding,
        output: a.common.output,
        proportions: Some(a.proportions || crosstab),
        sort: Some(if a.sort_by_proportion { Sort::ProportionDesc } else { Sort::Groups }),
        redacted: Some(a.common.redacted),
        margins: a.margins,
        chart,
    };
    (a.common.input, if crosstab { Step::Crosstab(f) } else { Step::Frequency(f) })
}

/// Runs the step; returns the exit code.
pub fn run(args: AnalysisArgs) -> u8 {
    let (input, step) = match args.step {
        StepCommand::Frequency(a) => frequency(a, false),
        StepCommand::Crosstab(a) => frequency(a, true),
        StepCommand::ValueCounts(a) => (
            a.common.input,
            Step::ValueCounts(ValueCounts {
                starts_with: a.starts_with,
                ends_with: a.ends_with,
                rounding: a.common.rounding,
                output: a.common.output,
                redacted: Some(a.common.redacted),
                header: a.header,
            }),
        ),
        StepCommand::Histogram(a) => (
            a.common.input.clone(),
            Step::Histogram(Histogram {
                chart: chart(a.chart, a.title, a.column.clone(), a.column.clone(), &a.common),
                column: a.column,
                bin_width: a.bin_width,
                range: a.range,
                rounding: a.common.rounding,
                output: a.common.output,
                redacted: Some(a.common.redacted),
            }),
        ),
        StepCommand::Summary(a) => (
            a.common.input,
            Step::Summary(Summary {
                columns: a.columns,
                by: a.by,
                rounding: a.common.rounding,
                output: a.common.output,
                quantiles: a.quantiles,
                digits: a.digits,
                redacted: Some(a.common.redacted),
            }),
        ),
    };
    let recipe = Recipe { input, derive: vec![], steps: vec![step] };
    match quarry_analysis::run(&recipe, "quarry analysis", Path::new(".")) {
        Ok(files) => {
            for f in files {
                eprintln!("[analysis] wrote {}", f.display());
            }
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}
