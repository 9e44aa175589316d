//! quarry-analysis: native aggregation steps with disclosure control built in (issue 7).
//!
//! A recipe (docs/recipes.md) names an input dataset, derived flags and steps; the dataset is
//! read once, the steps run in parallel, and every output is written atomically beside a
//! `<output>.sdc.txt` log of the rounding and redaction applied to it.

pub mod check;
pub mod data;
pub mod plot;
pub mod recipe;
pub mod sdc;
pub mod steps;

use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AnalysisError(pub String);

/// Adds the recipe's derived 0/1 columns.
fn derive(frame: &mut data::Frame, rules: &[recipe::Derive], shown: &str) -> Result<(), AnalysisError> {
    for rule in rules {
        let values = match (&rule.positive, &rule.any_of) {
            (Some(col), None) => {
                let column = frame.column(col)?;
                let per_code: Vec<Option<&str>> = (0..column.cardinality() as u32)
                    .map(|k| column.value(k).map(|s| if s.trim().parse::<f64>().is_ok_and(|x| x > 0.0) { "1" } else { "0" }))
                    .collect();
                data::Column::from_cells(column.codes().iter().map(|&k| per_code[k as usize]))
            }
            (None, Some(cols)) => {
                let columns: Vec<&data::Column> = cols.iter().map(|c| frame.column(c)).collect::<Result<_, _>>()?;
                data::Column::from_cells(
                    (0..frame.rows()).map(|i| Some(if columns.iter().any(|c| c.get(i) == Some("1")) { "1" } else { "0" })),
                )
            }
            _ => return Err(AnalysisError(format!("{shown}: derived column `{}` needs exactly one of `positive` or `any_of`", rule.name))),
        };
        frame.add(&rule.name, values);
    }
    Ok(())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), AnalysisError> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|e| AnalysisError(format!("cannot create {}: {e}", parent.display())))?;
    }
    refuse_directory(path)?;
    let tmp = temp_path(path);
    let written = std::fs::write(&tmp, bytes)
        .map_err(|e| AnalysisError(format!("cannot write {}: {e}", tmp.display())))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| AnalysisError(format!("cannot write {}: {e}", path.display()))));
    if written.is_err() {
        // No temporary file is left behind, whatever failed.
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

fn refuse_directory(path: &Path) -> Result<(), AnalysisError> {
    if path.is_dir() {
        return Err(AnalysisError(format!("cannot write {}: it is a directory", path.display())));
    }
    Ok(())
}

/// `dir/.name.quarry-tmp.ext`: hidden, and with the real extension (plotters picks the image
/// format from it).
fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let (stem, ext) = name.rsplit_once('.').unwrap_or((&name, ""));
    path.with_file_name(format!(".{stem}.quarry-tmp.{ext}"))
}

/// Runs a recipe file; paths in it are relative to `workdir`. Returns the files written.
pub fn run_recipe(recipe_path: &Path, workdir: &Path) -> Result<Vec<PathBuf>, AnalysisError> {
    let shown = recipe_path.display().to_string();
    let text =
        std::fs::read_to_string(workdir.join(recipe_path)).map_err(|e| AnalysisError(format!("cannot read the recipe {shown}: {e}")))?;
    run_reading(&recipe::parse(&text, &shown)?, &shown, workdir, &[(workdir.join(recipe_path), "the recipe")])
}

/// Runs a recipe (`shown` names it in messages); paths are relative to `workdir`.
pub fn run(recipe: &recipe::Recipe, shown: &str, workdir: &Path) -> Result<Vec<PathBuf>, AnalysisError> {
    run_reading(recipe, shown, workdir, &[])
}

/// One step's outputs: each table written, and the chart drawn from it.
pub type StepOutput<'r> = Vec<(steps::Written, Option<&'r recipe::Chart>)>;

/// Reads the recipe's dataset, derives its columns and computes every step (in parallel),
/// writing nothing: what [`run`] then writes.
pub fn compute<'r>(recipe: &'r recipe::Recipe, shown: &str, workdir: &Path) -> Result<Vec<StepOutput<'r>>, AnalysisError> {
    let started = Instant::now();
    let mut frame = data::read(&workdir.join(&recipe.input), &|c| recipe.uses(c))?;
    eprintln!(
        "[analysis] read {} rows from {} in {:.2} s ({} of its {} columns used)",
        frame.rows(),
        recipe.input,
        started.elapsed().as_secs_f64(),
        frame.names.len(),
        frame.all_names.len()
    );
    derive(&mut frame, &recipe.derive, shown)?;
    let results: Vec<Result<StepOutput, AnalysisError>> = recipe
        .steps
        .par_iter()
        .enumerate()
        .map(|(i, step)| {
            let started = Instant::now();
            let (kind, out) = match step {
                recipe::Step::Frequency(f) => ("frequency", vec![(steps::frequency(&frame, f, false)?, f.chart.as_ref())]),
                recipe::Step::Crosstab(f) => ("crosstab", vec![(steps::frequency(&frame, f, true)?, f.chart.as_ref())]),
                recipe::Step::ValueCounts(v) => ("value_counts", steps::value_counts(&frame, v)?.into_iter().map(|w| (w, None)).collect()),
                recipe::Step::Summary(s) => ("summary", vec![(steps::summary(&frame, s)?, None)]),
                recipe::Step::Histogram(h) => ("histogram", vec![(steps::histogram(&frame, h)?, h.chart.as_ref())]),
            };
            eprintln!("[analysis] step {} ({kind}): computed in {:.3} s", i + 1, started.elapsed().as_secs_f64());
            Ok(out)
        })
        .collect();
    results.into_iter().collect()
}

/// Runs a recipe that also reads `inputs` (the recipe file): no output may replace one of
/// them or the dataset, and that is checked before anything is written; nothing is written
/// unless every step succeeded.
fn run_reading(recipe: &recipe::Recipe, shown: &str, workdir: &Path, inputs: &[(PathBuf, &str)]) -> Result<Vec<PathBuf>, AnalysisError> {
    let results = compute(recipe, shown, workdir)?;
    let mut inputs = inputs.to_vec();
    inputs.push((workdir.join(&recipe.input), "the recipe's input dataset"));
    for (w, chart) in results.iter().flatten() {
        let outputs = [Some(w.path.clone()), chart.map(|c| c.output.clone()), Some(format!("{}.sdc.txt", w.path))];
        for output in outputs.into_iter().flatten() {
            if let Some((input, what)) = inputs.iter().find(|(i, _)| quarry_engine::output::same_file(&workdir.join(&output), i)) {
                return Err(AnalysisError(format!(
                    "{shown}: the output {output} would replace {}, which is {what}: write the output somewhere else",
                    input.display()
                )));
            }
        }
    }
    let mut written = vec![];
    for r in results {
        for (w, chart) in r {
            let path = workdir.join(&w.path);
            write_atomic(&path, w.text.as_bytes())?;
            let mut log = w.log.clone();
            if let Some(chart) = chart {
                let chart_path = workdir.join(&chart.output);
                if let Some(parent) = chart_path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| AnalysisError(format!("cannot create {}: {e}", parent.display())))?;
                }
                refuse_directory(&chart_path)?;
                let tmp = temp_path(&chart_path);
                let started = Instant::now();
                let drawn = plot::bar_chart(&tmp, chart, &w.bars).and_then(|()| {
                    std::fs::rename(&tmp, &chart_path).map_err(|e| AnalysisError(format!("cannot write {}: {e}", chart_path.display())))
                });
                if drawn.is_err() {
                    let _ = std::fs::remove_file(&tmp);
                }
                drawn?;
                eprintln!("[analysis] chart {}: drawn in {:.3} s", chart.output, started.elapsed().as_secs_f64());
                log.push_str(&format!("{}: drawn from the protected counts of {}\n", chart.output, w.path));
                written.push(chart_path);
            }
            write_atomic(&workdir.join(format!("{}.sdc.txt", w.path)), log.as_bytes())?;
            eprint!("[sdc] {log}");
            written.push(path);
        }
    }
    Ok(written)
}
