//! What a definition asks for, in query-model terms: a dataset (population, variables,
//! event tables) or a set of measures, and how dummy data should be generated for it.
//! The front end (quarry-python) builds these; the engines read them.

use jiff::civil::Date;

use crate::qm::NodeId;

/// `configure_dummy_data(...)`.
#[derive(Debug, Clone, Default)]
pub struct DummyConfig {
    pub population_size: Option<i64>,
    pub timeout: Option<f64>,
    pub additional_population_constraint: Option<NodeId>,
    pub legacy: bool,
}

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

/// One `define_measure(...)`, its defaults applied.
#[derive(Debug, Clone)]
pub struct MeasureDef {
    pub name: String,
    pub numerator: NodeId,
    pub denominator: NodeId,
    pub group_by: Vec<(String, NodeId)>,
    pub intervals: Vec<(Date, Date)>,
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
