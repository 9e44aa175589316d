//! `quarry check-outputs [PATHS...]`: the checks an output checker and the job runner apply to
//! moderately_sensitive files — the job runner's level-4 rules (`patient_id` column, 5,000 rows,
//! 16 MB, file type) and the disclosure checks of CSV contents (counts of 1–7, unrounded
//! counts), with a per-column summary like the output checkers' panel. Without paths, every
//! existing moderately_sensitive output of the project is checked.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::pipeline::{level4, patterns, project};

/// The disclosure checks of a CSV's contents (nothing for other files): the report, or why
/// the file could not be checked.
pub fn disclosure_check(relative: &str, path: &Path) -> Option<Result<quarry_analysis::check::CsvReport, String>> {
    if patterns::suffix(relative) != ".csv" {
        return None;
    }
    Some(match std::fs::read(path).map(String::from_utf8) {
        Ok(Ok(text)) => quarry_analysis::check::check_csv(&text).map_err(|e| format!("not a readable CSV: {e}")),
        Ok(Err(_)) => Err("not UTF-8 text".into()),
        Err(e) => Err(format!("Could not read file: {e}")),
    })
}

/// Problems of one file: the level-4 rules, then the disclosure checks of a CSV's contents.
pub fn problems(relative: &str, path: &Path) -> (Vec<String>, Option<quarry_analysis::check::CsvReport>) {
    let mut problems = level4::check_file(relative, path);
    let mut report = None;
    if problems.iter().all(|p| !p.starts_with("Could not read")) {
        match disclosure_check(relative, path) {
            Some(Ok(r)) => {
                problems.extend(r.problems.iter().cloned());
                report = Some(r);
            }
            Some(Err(e)) => problems.push(e),
            None => {}
        }
    }
    (problems, report)
}

/// Files under `dir` (recursively), skipping hidden entries and quarry's own logs.
fn files_under(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with('.') || name.ends_with(".sdc.txt") {
            continue;
        }
        if e.file_type()?.is_dir() {
            files_under(&e.path(), out)?;
        } else {
            out.push(e.path());
        }
    }
    Ok(())
}

/// The project's existing moderately_sensitive outputs, relative to its directory.
fn project_outputs(project_dir: &Path) -> Result<Vec<String>> {
    let project = project::load(&project_dir.join("project.yaml")).map_err(|e| anyhow::anyhow!("{e}"))?;
    let ms: Vec<&str> = project
        .actions
        .iter()
        .flat_map(|a| a.outputs.iter())
        .filter(|o| o.level == project::PrivacyLevel::ModeratelySensitive)
        .map(|o| o.pattern.as_str())
        .collect();
    let mut all = vec![];
    for top in std::fs::read_dir(project_dir)? {
        let top = top?;
        let name = top.file_name().to_string_lossy().to_string();
        if top.file_type()?.is_dir() && !name.starts_with('.') && name != "metadata" {
            files_under(&top.path(), &mut all)?;
        }
    }
    Ok(all
        .into_iter()
        .filter_map(|p| p.strip_prefix(project_dir).ok().map(|r| r.to_string_lossy().replace('\\', "/")))
        .filter(|r| ms.iter().any(|pattern| patterns::matches(pattern, r)))
        .collect())
}

pub fn run(paths: &[PathBuf], project_dir: &Path) -> Result<u8> {
    let mut files: Vec<(String, PathBuf)> = vec![];
    if paths.is_empty() {
        for r in project_outputs(project_dir)? {
            files.push((r.clone(), project_dir.join(&r)));
        }
        if files.is_empty() {
            println!("no moderately_sensitive outputs exist yet in {}; run the project first", project_dir.display());
            return Ok(0);
        }
    }
    for p in paths {
        if p.is_dir() {
            let mut found = vec![];
            files_under(p, &mut found)?;
            files.extend(found.into_iter().map(|f| (f.display().to_string(), f)));
        } else {
            files.push((p.display().to_string(), p.clone()));
        }
    }
    let mut failing = 0;
    for (shown, path) in &files {
        let (problems, report) = problems(shown, path);
        println!("{shown}");
        if let Some(r) = &report {
            print!("{}", quarry_analysis::check::render(r));
        }
        for p in &problems {
            println!("  PROBLEM: {p}");
        }
        failing += !problems.is_empty() as usize;
    }
    println!(
        "checked {} file(s): {}",
        files.len(),
        if failing == 0 { "no problems found".to_string() } else { format!("{failing} with problems") }
    );
    Ok(u8::from(failing > 0))
}
