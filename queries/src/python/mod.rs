//! Runs ehrQL dataset and measures definitions, unchanged, with quarry's own interpreter for
//! the subset of Python they use, and returns the query model they build.

pub mod api;
mod builtins;
pub mod interp;
pub mod value;

use std::path::Path;

pub use api::{DummyConfig, MeasureDef};
use interp::{Flow, Interp};
use value::V;

use crate::qm::{Graph, NodeId};

/// A dataset definition's result.
#[derive(Debug, Clone)]
pub struct DatasetSpec {
    pub population: NodeId,
    pub variables: Vec<(String, NodeId)>,
    /// `add_event_table(...)` tables: name and columns.
    pub events: Vec<(String, Vec<(String, NodeId)>)>,
    pub dummy: DummyConfig,
}

impl DatasetSpec {
    /// The nodes whose values are output (population, variables, event-table columns).
    pub fn roots(&self) -> Vec<NodeId> {
        let mut out = vec![self.population];
        out.extend(self.variables.iter().map(|(_, n)| *n));
        out.extend(self.events.iter().flat_map(|(_, cols)| cols.iter().map(|(_, n)| *n)));
        out
    }
}

/// A measures definition's result.
#[derive(Debug, Clone)]
pub struct MeasuresSpec {
    pub measures: Vec<MeasureDef>,
    pub dummy: DummyConfig,
    pub disclosure_control: bool,
}

impl MeasuresSpec {
    pub fn roots(&self) -> Vec<NodeId> {
        self.measures.iter().flat_map(|m| [m.numerator, m.denominator].into_iter().chain(m.group_by.iter().map(|(_, n)| *n))).collect()
    }
}

/// Everything a definition file produced.
pub struct Definition {
    pub graph: Graph,
    pub dataset: Option<DatasetSpec>,
    pub measures: Option<MeasuresSpec>,
    /// Why `dataset` is missing or invalid, reported only if a dataset is asked for.
    pub dataset_error: Option<DefinitionError>,
    pub claimed_permissions: Vec<String>,
}

/// A definition that Python or ehrQL would reject, located in the user's file.
#[derive(Debug, Clone)]
pub struct DefinitionError {
    /// The exception class (`TypeError`, `ehrql.Error`, …).
    pub kind: String,
    pub message: String,
    /// `file:line:column`, when known.
    pub location: Option<String>,
    /// The offending source line.
    pub source_line: Option<String>,
}

impl std::fmt::Display for DefinitionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(loc) = &self.location {
            write!(f, "{loc}: ")?;
        }
        write!(f, "{}: {}", self.kind, self.message)?;
        if let Some(line) = &self.source_line {
            write!(f, "\n    {}", line.trim())?;
        }
        Ok(())
    }
}

impl std::error::Error for DefinitionError {}

fn plain(kind: &str, message: &str) -> DefinitionError {
    DefinitionError { kind: kind.into(), message: message.into(), location: None, source_line: None }
}

/// Runs `path` with `sys.argv = [path, *user_args]`; `print()` output goes to `out`.
pub fn load_definition(path: &Path, user_args: &[String], out: Box<dyn std::io::Write>) -> Result<Definition, DefinitionError> {
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let base = if base.as_os_str().is_empty() { std::path::PathBuf::from(".") } else { base };
    let shown = path.display().to_string();
    let mut argv = vec![shown.clone()];
    argv.extend(user_args.iter().cloned());
    let mut interp = Interp::new(base, argv);
    interp.out = out;
    let scope = match interp.run_file(path, &shown, "__main__") {
        Ok(s) => s,
        Err(Flow::Err(e)) => {
            let located = interp.describe_location(e.loc);
            return Err(DefinitionError {
                kind: e.kind,
                message: e.message,
                location: located.as_ref().map(|(l, _)| l.clone()),
                source_line: located.map(|(_, s)| s),
            });
        }
        Err(_) => return Err(plain("SyntaxError", "control flow outside a function or loop")),
    };
    let globals = scope.vars.borrow();
    let mut dataset = None;
    let mut dataset_error = None;
    match globals.get("dataset") {
        Some(V::Dataset(d)) => {
            let d = d.borrow();
            match d.population {
                Some(population) => {
                    dataset =
                        Some(DatasetSpec { population, variables: d.variables.clone(), events: d.events.clone(), dummy: d.dummy.clone() })
                }
                None => {
                    dataset_error = Some(plain("ehrql.Error", "A population has not been defined; define one with define_population()"))
                }
            }
        }
        Some(other) => {
            dataset_error =
                Some(plain("ehrql.Error", &format!("'dataset' must be an instance of ehrql.Dataset(), not '{}'", other.type_name())))
        }
        None => {
            dataset_error =
                Some(plain("ehrql.Error", &format!("Did not find a variable called 'dataset' in dataset definition file {shown}")))
        }
    }
    let measures = match globals.get("measures") {
        Some(V::Measures(m)) => {
            let m = m.borrow();
            Some(MeasuresSpec { measures: m.measures.clone(), dummy: m.dummy.clone(), disclosure_control: m.disclosure_control })
        }
        _ => None,
    };
    drop(globals);
    Ok(Definition {
        graph: std::mem::take(&mut interp.graph),
        dataset,
        measures,
        dataset_error,
        claimed_permissions: interp.claimed_permissions,
    })
}
