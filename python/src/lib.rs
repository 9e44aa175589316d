//! quarry-python: runs ehrQL dataset and measures definitions, unchanged, and returns the
//! query model they build.
//!
//! A definition is ordinary Python, so it runs on a real Python: RustPython, embedded, with
//! CPython's standard library frozen into the binary. ehrQL's API is quarry's own Python
//! package `ehrql` (python/py/ehrql), whose series, frames and datasets build query-model
//! nodes through the native `_quarry` module into a [`Graph`]. The interpreter has no host
//! access of its own: every file it reads goes through [`sandbox`], which allows reads of
//! regular files inside the project and nothing else.
//!
//! Each run gets a fresh interpreter on its own thread with a large stack, so deep but
//! legal Python (long operator chains, deep recursion up to the recursion limit) works and
//! runaway recursion ends in `RecursionError`, never in a crashed process.
//!
//! ```no_run
//! let def = quarry_python::load_definition(std::path::Path::new("analysis/dataset_definition.py"), &[], Box::new(std::io::stderr())).unwrap();
//! assert!(def.dataset.is_some());
//! ```

pub mod depth;
mod native;
mod numbers;
mod runtime;
pub mod sandbox;
mod state;
pub mod stdlib;

use quarry_queries::qm::Graph;
pub use quarry_queries::spec::{DatasetSpec, DummyConfig, MeasureDef, MeasuresSpec};

pub use runtime::load_definition;

/// Everything a definition file produced.
pub struct Definition {
    pub graph: Graph,
    pub dataset: Option<DatasetSpec>,
    pub measures: Option<MeasuresSpec>,
    /// Why `dataset` is missing or invalid, reported only if a dataset is asked for.
    pub dataset_error: Option<DefinitionError>,
    /// Why `measures` is missing or invalid, reported only if measures are asked for.
    pub measures_error: Option<DefinitionError>,
    pub claimed_permissions: Vec<String>,
}

/// A definition that Python or ehrQL rejects, located in the user's code.
#[derive(Debug, Clone)]
pub struct DefinitionError {
    /// The exception class (`TypeError`, `ehrql.Error`, …).
    pub kind: String,
    pub message: String,
    /// `file:line`, the innermost frame in the user's own code, when there is one.
    pub location: Option<String>,
    /// The offending source line.
    pub source_line: Option<String>,
    /// The traceback as ehrQL prints it: the user's own frames only.
    pub traceback: Option<String>,
    /// The definition file, as given.
    pub file: String,
    /// ehrQL's exit code for this error (10 unless the error says otherwise).
    pub exit_code: u8,
}

impl DefinitionError {
    /// An error about the definition as a whole (no traceback).
    pub fn plain(file: &str, kind: &str, message: impl Into<String>) -> DefinitionError {
        DefinitionError {
            kind: kind.into(),
            message: message.into(),
            location: None,
            source_line: None,
            traceback: None,
            file: file.into(),
            exit_code: 10,
        }
    }
}

impl std::fmt::Display for DefinitionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.traceback {
            Some(tb) => write!(f, "Error loading file '{}':\n\n{}", self.file, tb.trim_end()),
            None => write!(f, "{}", self.message),
        }
    }
}

impl std::error::Error for DefinitionError {}
