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

use quarry_queries::qm::{Graph, NodeId};
pub use quarry_queries::spec::{DatasetSpec, DummyConfig, MeasureDef, MeasuresSpec};

pub use runtime::{debug_definition, load_definition, load_definition_as};

/// What a `show()` call asks to see, in debug mode.
#[derive(Debug, Clone, PartialEq)]
pub enum ShowRequest {
    /// `show(dataset)`: its population (if defined) and variables.
    Dataset { population: Option<NodeId>, variables: Vec<(String, NodeId)> },
    /// `show(element, *others)`: a frame, or series (each flagged when it is a date difference,
    /// shown in days).
    Elements(Vec<(NodeId, bool)>),
}

/// Evaluates and renders what `show()` asks for (`quarry debug`); the text goes to stderr.
pub trait Debugger {
    /// The rendered records; an error fails the `show()` call.
    fn show(&mut self, graph: &Graph, request: &ShowRequest, head: usize, tail: usize) -> Result<String, ShowError>;
}

/// A boxed debugger handed to a run.
pub type BoxedDebugger = Box<dyn Debugger + Send>;

/// Why `show()` failed.
#[derive(Debug, Clone, PartialEq)]
pub enum ShowError {
    /// The elements are not one ehrQL object or series of one domain (ehrQL's TypeError).
    NotShowable,
    /// Anything else (a missing table file, an evaluation error), as its message.
    Failed(String),
}

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
    /// The files the definition read through the sandbox (codelists, `table_from_file`
    /// tables, imported modules, anything it opened), resolved: inputs an output may not replace.
    pub files_read: Vec<std::path::PathBuf>,
    /// Where each node was first made in the user's code: (file, line).
    pub locations: std::collections::HashMap<NodeId, (String, u32)>,
    /// The module's assurance tests (`test_data`), checked against the dataset's tables.
    pub test_data: Option<TestData>,
    /// Why `test_data` is missing or unusable, reported only if assurance tests are asked for.
    pub test_data_error: Option<DefinitionError>,
    /// Run as no particular image ([`Image::Any`]): the first module the definition's own code
    /// imported that each ehrQL image lacks.
    pub missing_from: Vec<MissingFrom>,
}

/// A module (or a name of the `ehrql` package) that the definition's code imported and an
/// ehrQL image lacks.
#[derive(Debug, Clone, PartialEq)]
pub struct MissingFrom {
    /// `"v0"` or `"v1"`.
    pub image: String,
    pub module: String,
    /// The file that imported it (the definition or a module of the project), absolute.
    pub file: String,
}

/// Which ehrQL a definition runs as. quarry has the modules of both images, `ehrql:v0`
/// (pre-1.0: `ehrql.tables.beta`, `databuilder`) and `ehrql:v1` (`ehrql.tables.core`,
/// `ehrql.tables.tpp`, ...); run as one image, a definition that imports a module the image
/// lacks fails there, as it would on the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Image {
    /// The direct commands: either image's modules, what the other lacks noted.
    #[default]
    Any,
    V0,
    V1,
}

impl Image {
    /// The image an action's `ehrql:TAG` runs: `v0`, or the current one (`v1`, `latest`,
    /// `dev`); `None` for a tag OpenSAFELY has no image for.
    pub fn from_tag(tag: &str) -> Option<Image> {
        match tag {
            "v0" => Some(Image::V0),
            "v1" | "latest" | "dev" => Some(Image::V1),
            _ => None,
        }
    }

    fn python_name(self) -> Option<&'static str> {
        match self {
            Image::Any => None,
            Image::V0 => Some("v0"),
            Image::V1 => Some("v1"),
        }
    }
}

/// A definition's `test_data`, as ehrQL's assurance tests read it.
#[derive(Debug, Clone, PartialEq)]
pub struct TestData {
    /// What breaks the tables' rules, patient by patient in test_data's order (empty: all OK);
    /// `quarry::assure` words them as ehrQL's "Validate test data" report does.
    pub findings: Vec<Finding>,
    /// Each table the dataset reads (by name, sorted) with every patient's rows, values in
    /// the schema's column order, in test_data's order.
    pub tables: Vec<(String, TestRows)>,
    pub patients: Vec<TestPatient>,
}

/// One problem with a patient's rows of one table, as Python sees it (its `str()` of a rule
/// and of a value, its `repr()` of column names).
#[derive(Debug, Clone, PartialEq)]
pub enum Finding {
    /// Values breaking a column's constraint: (column, rule, value) each.
    Values { patient: i64, table: String, broken: Vec<(String, String, String)> },
    /// Columns the table does not have (reprs, first-seen order) and those it has.
    Columns { patient: i64, table: String, unknown: Vec<String>, known: Vec<String> },
    /// More than one row for a patient-level table.
    Rows { patient: i64, table: String, rows: usize },
}

/// A table's rows in test data: each patient's id with a row's values.
pub type TestRows = Vec<(i64, Vec<PyValue>)>;

/// One patient's expectations.
#[derive(Debug, Clone, PartialEq)]
pub struct TestPatient {
    pub id: i64,
    pub expected_in_population: bool,
    /// `expected_columns` in the order given (present when expected in the population).
    pub expected_columns: Vec<(String, PyValue)>,
}

/// A Python value from test data.
#[derive(Debug, Clone, PartialEq)]
pub enum PyValue {
    None,
    Bool(bool),
    /// Python's ints are unbounded; one beyond i128 is kept as `Other`.
    Int(i128),
    Float(f64),
    Str(String),
    Date(jiff::civil::Date),
    /// Any other object: its type's name and `str()`.
    Other {
        type_name: String,
        text: String,
    },
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
