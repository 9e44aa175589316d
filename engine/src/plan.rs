//! What evaluating some outputs of a query-model graph needs, worked out from the graph alone,
//! before any data is read, and once per run: the nodes the outputs reach (in id order, so
//! children come first), the tables they read, and the indexes and plans the evaluators
//! consult per node (literal sets indexed for membership, picks' sort plans and ehrQL's
//! tie-break columns, inline tables keyed by patient). Both evaluators are built on one
//! [`QueryPlan`]; the dummy-data generator shares one between its columnar evaluator and the
//! reference evaluators it makes per batch.

use std::collections::HashMap;
use std::sync::Arc;

use quarry_queries::qm::{Graph, NodeId, RowsId, TableId};
use quarry_queries::semantics::Scalar;

use crate::kernels::{PickPlan, SetIndex, inline_tables, pick_plans, set_indexes, sort_ties};

pub struct QueryPlan {
    pub outputs: Vec<NodeId>,
    /// Every node the outputs reach, in id order (children before parents).
    pub needed: Vec<NodeId>,
    /// The tables the needed nodes read, in first-use order.
    pub tables: Vec<TableId>,
    /// Per pick (`Sort`ed frame picked first or last): how it is made.
    pub picks: HashMap<NodeId, PickPlan>,
    /// ehrQL's tie-break sorts under a picked frame's lowest sort (`kernels::sort_ties`).
    pub ties: HashMap<NodeId, Vec<usize>>,
    /// Literal sets used by `In`, by node: their `Value` nodes are never copied per patient.
    pub sets: HashMap<NodeId, SetIndex>,
    /// `table_from_file` tables' rows by patient.
    pub inline: HashMap<RowsId, HashMap<i64, Arc<Vec<Scalar>>>>,
}

impl QueryPlan {
    pub fn new(graph: &Graph, outputs: &[NodeId]) -> Arc<QueryPlan> {
        let needed: Vec<NodeId> = crate::reference::reachable(graph, outputs).into_iter().collect();
        Arc::new(QueryPlan {
            outputs: outputs.to_vec(),
            tables: crate::store::tables_read(graph, needed.iter().copied()),
            picks: pick_plans(graph, &needed),
            ties: sort_ties(graph, &needed),
            sets: set_indexes(graph, &needed),
            inline: inline_tables(graph, &needed),
            needed,
        })
    }
}
