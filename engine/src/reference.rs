//! The reference evaluator: one patient at a time, every node by an exhaustive match, with
//! ehrQL's scalar semantics from `quarry_queries::semantics`. Obviously correct, never
//! optimised; the columnar evaluator is checked against it.
//!
//! Nodes are evaluated in id order (children before parents), so nothing recurses however
//! deep a definition nests.

use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;
use std::sync::Arc;

use quarry_queries::qm::{AggregateByPatient as A, Domain, Graph, Node, NodeId, TableId, Value, function_inputs};
use quarry_queries::semantics::{self, EvalError, Scalar};

use crate::kernels::{self, column_index, frame_table};
use crate::plan::QueryPlan;
use crate::store::Rows;

/// A node's value for one patient.
#[derive(Clone, Debug)]
enum Ev {
    /// A patient-level series.
    S(Scalar),
    /// An event-level series: one value per row of its table (all of the patient's rows).
    Col(Rc<Vec<Scalar>>),
    /// An event frame: indices into the table's rows, in frame order.
    Rows(Rc<Vec<usize>>),
    /// A patient frame: the patient's row, if any.
    Row(Option<Arc<Vec<Scalar>>>),
}

pub struct Evaluator<'g> {
    graph: &'g Graph,
    /// The nodes to evaluate and what they need (`plan::QueryPlan`).
    plan: Arc<QueryPlan>,
    params: HashMap<String, Scalar>,
}

impl<'g> Evaluator<'g> {
    /// Prepares to evaluate `outputs` (and everything they depend on).
    pub fn new(graph: &'g Graph, outputs: &[NodeId]) -> Evaluator<'g> {
        Evaluator::with_plan(graph, QueryPlan::new(graph, outputs))
    }

    /// An evaluator of a plan already made (shared with other evaluators of the same run).
    pub fn with_plan(graph: &'g Graph, plan: Arc<QueryPlan>) -> Evaluator<'g> {
        Evaluator { graph, plan, params: HashMap::new() }
    }

    /// Binds `Parameter` nodes (measures' interval dates).
    pub fn set_param(&mut self, name: &str, value: Scalar) {
        self.params.insert(name.to_string(), value);
    }

    /// Patients that appear in an inline table (they join the patient universe).
    pub fn inline_patients(&self) -> impl Iterator<Item = i64> + '_ {
        self.plan.inline.values().flat_map(|m| m.keys().copied())
    }

    /// Evaluates every needed node for one patient.
    pub fn patient(&self, patient_id: i64, tables: Option<&std::collections::BTreeMap<TableId, Rows>>) -> Result<PatientValues, EvalError> {
        let empty = std::collections::BTreeMap::new();
        let tables = tables.unwrap_or(&empty);
        let g = self.graph;
        let mut memo = Memo { values: vec![None; g.len()] };
        let no_rows: Rows = vec![];
        let rows_of = |t: TableId| tables.get(&t).unwrap_or(&no_rows);
        for &id in &self.plan.needed {
            let get = |n: &NodeId| memo.values[n.index()].as_ref().expect("children are evaluated first");
            let v = match g.node(id) {
                Node::SelectTable(t) => Ev::Rows(Rc::new((0..rows_of(*t).len()).collect())),
                Node::SelectPatientTable(t) => Ev::Row(rows_of(*t).last().map(|r| Arc::new(r.clone()))),
                Node::InlinePatientTable { rows, .. } => Ev::Row(self.plan.inline.get(rows).and_then(|m| m.get(&patient_id)).cloned()),
                Node::Filter { source, condition } => {
                    let Ev::Rows(src) = get(source) else { unreachable!("filter of an event frame") };
                    let keep: Vec<usize> = match get(condition) {
                        Ev::S(Some(Value::Bool(true))) => src.to_vec(),
                        Ev::S(_) => vec![],
                        Ev::Col(c) => src.iter().copied().filter(|&i| c[i] == Some(Value::Bool(true))).collect(),
                        _ => unreachable!("a condition is a series"),
                    };
                    Ev::Rows(Rc::new(keep))
                }
                Node::Sort { source, sort_by } => {
                    let Ev::Rows(src) = get(source) else { unreachable!("sort of an event frame") };
                    let Ev::Col(key) = get(sort_by) else { unreachable!("sort keys are event-level") };
                    let ties = self.plan.ties.get(&id).map_or(&[][..], Vec::as_slice);
                    let table_rows = rows_of(frame_table(g, *source));
                    let mut rows = src.to_vec();
                    rows.sort_by(|a, b| kernels::sort_order(Some(key), ties, |r| table_rows[r].as_slice(), *a, *b));
                    Ev::Rows(Rc::new(rows))
                }
                Node::PickOneRowPerPatient { source, position } => {
                    let Ev::Rows(src) = get(source) else { unreachable!("pick from an event frame") };
                    let plan = &self.plan.picks[&id];
                    let table_rows = rows_of(frame_table(g, *source));
                    let keys: Vec<&[Scalar]> = plan
                        .keys
                        .iter()
                        .map(|k| match get(k) {
                            Ev::Col(c) => c.as_slice(),
                            _ => unreachable!("sort keys are event-level"),
                        })
                        .collect();
                    let best = plan.pick(src.iter().copied(), *position, &keys, |r| table_rows[r].as_slice());
                    Ev::Row(best.map(|i| Arc::new(table_rows[i].clone())))
                }
                // Indexed sets are read by `In` below, not through the memo.
                Node::Value(_) if self.plan.sets.contains_key(&id) => Ev::S(None),
                Node::Value(v) => Ev::S(Some(v.clone())),
                Node::Parameter { name, .. } => Ev::S(self.params.get(name).cloned().flatten()),
                Node::SelectColumn { source, name } => {
                    let c = column_index(g, *source, name);
                    match get(source) {
                        Ev::Rows(_) => Ev::Col(Rc::new(rows_of(frame_table(g, *source)).iter().map(|r| r[c].clone()).collect())),
                        Ev::Row(row) => Ev::S(row.as_ref().and_then(|r| r[c].clone())),
                        _ => unreachable!("columns of frames"),
                    }
                }
                Node::AggregateByPatient(a) => Ev::S(self.aggregate(a, &memo)?),
                Node::Function(quarry_queries::qm::Function::In(x, set)) if self.plan.sets.contains_key(set) => {
                    let index = &self.plan.sets[set];
                    match get(x) {
                        Ev::Col(c) => Ev::Col(Rc::new(c.iter().map(|v| index.test(v)).collect())),
                        v => Ev::S(index.test(&scalar(v))),
                    }
                }
                Node::Function(f) => {
                    let inputs = function_inputs(f);
                    let vals: Vec<&Ev> = inputs.iter().map(get).collect();
                    match vals.iter().find_map(|v| if let Ev::Col(c) = v { Some(c.len()) } else { None }) {
                        None => {
                            let args: Vec<Scalar> = vals.iter().map(|v| scalar(v)).collect();
                            Ev::S(semantics::apply(f, &args)?)
                        }
                        Some(n) => {
                            let mut out = Vec::with_capacity(n);
                            let mut args: Vec<Scalar> = Vec::with_capacity(vals.len());
                            for i in 0..n {
                                args.clear();
                                args.extend(vals.iter().map(|v| at(v, i)));
                                out.push(semantics::apply(f, &args)?);
                            }
                            Ev::Col(Rc::new(out))
                        }
                    }
                }
                Node::Case { cases, default } => {
                    let mut parts: Vec<&Ev> = vec![];
                    for (c, v) in cases {
                        parts.push(get(c));
                        if let Some(v) = v {
                            parts.push(get(v));
                        }
                    }
                    if let Some(d) = default {
                        parts.push(get(d));
                    }
                    let n = parts.iter().find_map(|v| if let Ev::Col(c) = v { Some(c.len()) } else { None });
                    let pick = |i: usize| -> Scalar {
                        for (c, v) in cases {
                            if at(get(c), i) == Some(Value::Bool(true)) {
                                return v.as_ref().and_then(|v| at(get(v), i));
                            }
                        }
                        default.as_ref().and_then(|d| at(get(d), i))
                    };
                    match n {
                        None => Ev::S(pick(0)),
                        Some(n) => Ev::Col(Rc::new((0..n).map(pick).collect())),
                    }
                }
            };
            memo.values[id.index()] = Some(v);
        }
        Ok(PatientValues { memo })
    }

    fn aggregate(&self, a: &A, memo: &Memo) -> Result<Scalar, EvalError> {
        let g = self.graph;
        let frame_len = |f: &NodeId| match &memo[f] {
            Ev::Rows(r) => r.len(),
            Ev::Row(r) => r.is_some() as usize,
            _ => unreachable!("a frame"),
        };
        // Non-NULL values of a series over its domain's rows, in row order.
        let values = |s: &NodeId| -> Vec<Value> {
            let Domain::Rows(d) = g.domain(*s) else { unreachable!("series aggregations are of event-level series") };
            let Ev::Rows(rows) = &memo[&d] else { unreachable!("a domain is an event frame") };
            match &memo[s] {
                Ev::Col(c) => rows.iter().filter_map(|&i| c[i].clone()).collect(),
                Ev::S(v) => rows.iter().filter_map(|_| v.clone()).collect(),
                _ => unreachable!("a series"),
            }
        };
        let input = aggregate_input(a);
        kernels::aggregate(g, a, || frame_len(&input), || values(&input))
    }
}

pub(crate) use quarry_queries::qm::aggregate_input;

fn scalar(v: &Ev) -> Scalar {
    match v {
        Ev::S(s) => s.clone(),
        _ => None,
    }
}

fn at(v: &Ev, i: usize) -> Scalar {
    match v {
        Ev::S(s) => s.clone(),
        Ev::Col(c) => c[i].clone(),
        _ => None,
    }
}

/// Every node the `roots` depend on (including series' domain frames), in id order.
pub fn reachable(graph: &Graph, roots: &[NodeId]) -> BTreeSet<NodeId> {
    let mut needed = BTreeSet::new();
    let mut stack: Vec<NodeId> = roots.to_vec();
    while let Some(n) = stack.pop() {
        if !needed.insert(n) {
            continue;
        }
        stack.extend(graph.children(n));
        if let Domain::Rows(d) = graph.domain(n) {
            stack.push(d);
        }
    }
    needed
}

/// One patient's evaluated nodes.
pub struct PatientValues {
    memo: Memo,
}

/// Evaluated nodes, by node index.
struct Memo {
    values: Vec<Option<Ev>>,
}

impl std::ops::Index<&NodeId> for Memo {
    type Output = Ev;
    fn index(&self, n: &NodeId) -> &Ev {
        self.values[n.index()].as_ref().expect("an evaluated node")
    }
}

impl Memo {
    fn get(&self, n: &NodeId) -> Option<&Ev> {
        self.values.get(n.index()).and_then(Option::as_ref)
    }
}

impl PatientValues {
    /// A patient-level series' value.
    pub fn scalar(&self, n: NodeId) -> Scalar {
        match self.memo.get(&n) {
            Some(Ev::S(s)) => s.clone(),
            _ => None,
        }
    }

    /// An event frame's rows: indices into its table's rows for the patient, in frame order.
    pub fn frame_rows(&self, frame: NodeId) -> Option<&[usize]> {
        match self.memo.get(&frame) {
            Some(Ev::Rows(rows)) => Some(rows.as_slice()),
            _ => None,
        }
    }

    /// A patient frame's row (`None`: the patient has none), or `None` if `frame` is not one.
    pub fn frame_row(&self, frame: NodeId) -> Option<Option<&[Scalar]>> {
        match self.memo.get(&frame) {
            Some(Ev::Row(row)) => Some(row.as_ref().map(|r| r.as_slice())),
            _ => None,
        }
    }

    /// An event-level series: one value per row of its table (all the patient's rows).
    pub fn column(&self, series: NodeId) -> Option<&[Scalar]> {
        match self.memo.get(&series) {
            Some(Ev::Col(c)) => Some(c.as_slice()),
            _ => None,
        }
    }

    /// The rows of an event-table output: for each row of `frame`, in the frame's order
    /// (sorted, if it is), the columns' values.
    pub fn event_rows(&self, frame: NodeId, columns: &[NodeId]) -> Vec<Vec<Scalar>> {
        let Some(Ev::Rows(rows)) = self.memo.get(&frame) else { return vec![] };
        rows.iter().map(|&i| columns.iter().map(|c| self.memo.get(c).map(|v| at(v, i)).unwrap_or(None)).collect()).collect()
    }
}
