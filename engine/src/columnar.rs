//! The columnar evaluator: patients in partitions (a few thousand each, in `patient_id`
//! order), every node of the query evaluated once per partition over whole columns, with
//! segment kernels for what is per patient (filter, sort, pick, aggregate); partitions run in
//! parallel (rayon) and their results are concatenated in order. Scalar semantics are the
//! shared ones (`quarry_queries::semantics`), so it gives the reference evaluator's answers; the
//! conformance suite and the property tests check that it does.
//!
//! Layout of a partition: per table, the rows of its patients, grouped by patient
//! (`offsets[i]..offsets[i + 1]` are patient `i`'s rows). An event-level series is one value
//! per table row (as in the reference evaluator, filters select rows rather than copy them);
//! an event frame is a list of selected rows with per-patient segments; a patient-level
//! series is one value per patient.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use quarry_queries::qm::{AggregateByPatient as A, Domain, Function, Graph, Node, NodeId, RowsId, TableId, Value, function_inputs};
use quarry_queries::semantics::{self, EvalError, Scalar};
use rayon::prelude::*;

use crate::kernels::{self, PickPlan, SetIndex, column_index, frame_table, inline_tables, pick_plans, set_indexes, sort_ties};
use crate::store::{Rows, Store};

/// Patients per partition: large enough to amortise per-node work, small enough that a
/// partition's columns stay in cache-sized pieces and memory is bounded by partition × threads.
pub const PARTITION: usize = 4096;

/// The partition size: [`PARTITION`], or `QUARRY_PARTITION_SIZE` (tests use tiny partitions
/// so that every patient-segment boundary case is crossed).
pub fn partition_size() -> usize {
    static SIZE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *SIZE.get_or_init(|| std::env::var("QUARRY_PARTITION_SIZE").ok().and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or(PARTITION))
}

/// A node's value over a partition.
#[derive(Clone)]
enum Cv {
    /// The same value for every patient and row (a literal, a parameter).
    K(Scalar),
    /// A patient-level series: one value per patient.
    S(Arc<Vec<Scalar>>),
    /// An event-level series: one value per row of its table in the partition.
    Col(Arc<Vec<Scalar>>),
    /// An event frame: selected rows of a table, `seg[i]..seg[i + 1]` being patient `i`'s.
    Rows { rows: Arc<Vec<u32>>, seg: Arc<Vec<u32>> },
    /// A patient frame: each patient's row of a table, if any.
    Row(Arc<Vec<Option<u32>>>),
    /// A patient frame from an inline table: each patient's values, if any.
    Inline(Arc<Vec<Option<Arc<Vec<Scalar>>>>>),
}

/// One partition's table: row references grouped by patient.
struct PartTable<'s> {
    rows: Vec<&'s [Scalar]>,
    /// `offsets[i]..offsets[i + 1]`: patient `i`'s rows.
    offsets: Vec<u32>,
    /// Each row's patient (index in the partition).
    owner: Vec<u32>,
}

pub struct Evaluator<'g> {
    graph: &'g Graph,
    needed: Vec<NodeId>,
    tables: Vec<TableId>,
    picks: HashMap<NodeId, PickPlan>,
    /// ehrQL's tie-break sorts under a picked frame's lowest sort (`kernels::sort_ties`).
    ties: HashMap<NodeId, Vec<usize>>,
    sets: HashMap<NodeId, SetIndex>,
    inline: HashMap<RowsId, HashMap<i64, Arc<Vec<Scalar>>>>,
    params: HashMap<String, Scalar>,
    /// Patients per partition ([`partition_size`] unless set).
    partition: usize,
}

/// A partition's evaluated nodes.
pub struct Partition {
    pub patients: Vec<i64>,
    values: Vec<Option<Cv>>,
}

impl<'g> Evaluator<'g> {
    pub fn new(graph: &'g Graph, outputs: &[NodeId]) -> Evaluator<'g> {
        let needed: Vec<NodeId> = crate::reference::reachable(graph, outputs).into_iter().collect();
        let mut tables = vec![];
        for &n in &needed {
            if let Node::SelectTable(t) | Node::SelectPatientTable(t) = graph.node(n)
                && !tables.contains(t)
            {
                tables.push(*t);
            }
        }
        Evaluator {
            graph,
            tables,
            picks: pick_plans(graph, &needed),
            ties: sort_ties(graph, &needed),
            sets: set_indexes(graph, &needed),
            inline: inline_tables(graph, &needed),
            needed,
            params: HashMap::new(),
            partition: partition_size(),
        }
    }

    pub fn set_param(&mut self, name: &str, value: Scalar) {
        self.params.insert(name.to_string(), value);
    }

    /// Sets the patients per partition (at least one): the engine's tests cross every
    /// partition boundary with tiny partitions, in process.
    pub fn set_partition_size(&mut self, patients: usize) {
        self.partition = patients.max(1);
    }

    /// Every patient to evaluate: the store's and the inline tables' in `[lo, hi)`, in id order.
    fn patients(&self, store: &Store, lo: Option<i64>, hi: Option<i64>) -> Vec<i64> {
        let mut all: BTreeSet<i64> = store.patients.keys().copied().collect();
        let in_range = |p: &i64| lo.is_none_or(|l| *p >= l) && hi.is_none_or(|h| *p < h);
        all.extend(self.inline.values().flat_map(|m| m.keys().copied()).filter(in_range));
        all.into_iter().collect()
    }

    /// Evaluates every partition in parallel and hands each, in patient order, to `sink`.
    pub fn run<T: Send, E: From<EvalError>>(
        &self,
        store: &Store,
        each: impl Fn(&Partition) -> T + Sync,
        sink: impl FnMut(T) -> Result<(), E>,
    ) -> Result<(), E> {
        self.run_range(store, None, None, each, sink)
    }

    /// As [`Evaluator::run`] for one round of a backend: `store` holds the patients in
    /// `[lo, hi)`, and only the inline tables' patients in that range join them.
    /// `sink`'s own errors (writing, say) stop the run too, as they are.
    pub fn run_range<T: Send, E: From<EvalError>>(
        &self,
        store: &Store,
        lo: Option<i64>,
        hi: Option<i64>,
        each: impl Fn(&Partition) -> T + Sync,
        mut sink: impl FnMut(T) -> Result<(), E>,
    ) -> Result<(), E> {
        let patients = self.patients(store, lo, hi);
        // Rounds of a few partitions per thread keep memory bounded and output in order.
        let per_round = rayon::current_num_threads().max(1) * 2;
        let size = self.partition;
        for round in patients.chunks(size * per_round) {
            let results: Vec<Result<T, EvalError>> =
                round.par_chunks(size).map(|ids| self.partition(ids, &store.patients).map(|p| each(&p))).collect();
            for r in results {
                sink(r?)?;
            }
        }
        Ok(())
    }

    /// Evaluates the needed nodes for the patients `ids` (ascending).
    pub fn partition(&self, ids: &[i64], data: &BTreeMap<i64, BTreeMap<TableId, Rows>>) -> Result<Partition, EvalError> {
        let tables = self.part_tables(ids, data);
        let mut values: Vec<Option<Cv>> = vec![None; self.graph.len()];
        let mut columns = HashMap::new();
        self.evaluate(&self.needed, &self.params, ids, &tables, &mut values, &mut columns)?;
        Ok(Partition { patients: ids.to_vec(), values })
    }

    /// The needed nodes that read a parameter (directly, through a child or through their
    /// domain): those that differ between intervals of a measures run.
    fn parameter_dependent(&self) -> Vec<bool> {
        let g = self.graph;
        let mut dependent = vec![false; g.len()];
        for &id in &self.needed {
            dependent[id.index()] = matches!(g.node(id), Node::Parameter { .. })
                || g.children(id).iter().any(|c| dependent[c.index()])
                || matches!(g.domain(id), Domain::Rows(d) if dependent[d.index()]);
        }
        dependent
    }

    /// As [`Evaluator::partition`] once per set of parameter values (a measures run's
    /// intervals), from one read of the patients' rows: the partition's tables are built once,
    /// the nodes that read no parameter are evaluated once, and only the others per set. Each
    /// set's partition is handed to `each` (with the set's index) and dropped before the next
    /// is evaluated, so memory holds one set's values at a time.
    pub fn partition_per_params<T>(
        &self,
        ids: &[i64],
        data: &BTreeMap<i64, BTreeMap<TableId, Rows>>,
        params: &[HashMap<String, Scalar>],
        dependent: &[bool],
        acc: &mut T,
        each: impl Fn(&mut T, usize, &Partition),
    ) -> Result<(), EvalError> {
        let tables = self.part_tables(ids, data);
        let (varying, fixed): (Vec<NodeId>, Vec<NodeId>) = self.needed.iter().partition(|n| dependent[n.index()]);
        let mut shared: Vec<Option<Cv>> = vec![None; self.graph.len()];
        let mut columns = HashMap::new();
        self.evaluate(&fixed, &self.params, ids, &tables, &mut shared, &mut columns)?;
        for (k, set) in params.iter().enumerate() {
            let mut values = shared.clone();
            self.evaluate(&varying, set, ids, &tables, &mut values, &mut columns)?;
            each(acc, k, &Partition { patients: ids.to_vec(), values });
        }
        Ok(())
    }

    /// As [`Evaluator::run_range`], evaluating each partition once per set of parameter
    /// values (`partition_per_params`) into an accumulator made by `init` (one per partition,
    /// handed to `sink` in patient order).
    #[allow(clippy::too_many_arguments)]
    pub fn run_range_per_params<T: Send, E: From<EvalError>>(
        &self,
        store: &Store,
        lo: Option<i64>,
        hi: Option<i64>,
        params: &[HashMap<String, Scalar>],
        init: impl Fn() -> T + Sync,
        each: impl Fn(&mut T, usize, &Partition) + Sync,
        mut sink: impl FnMut(T) -> Result<(), E>,
    ) -> Result<(), E> {
        let patients = self.patients(store, lo, hi);
        let dependent = self.parameter_dependent();
        let per_round = rayon::current_num_threads().max(1) * 2;
        let size = self.partition;
        for round in patients.chunks(size * per_round) {
            let results: Vec<Result<T, EvalError>> = round
                .par_chunks(size)
                .map(|ids| {
                    let mut acc = init();
                    self.partition_per_params(ids, &store.patients, params, &dependent, &mut acc, &each).map(|_| acc)
                })
                .collect();
            for r in results {
                sink(r?)?;
            }
        }
        Ok(())
    }

    /// The partition's tables: each table's rows of the patients `ids`, grouped by patient.
    fn part_tables<'s>(&self, ids: &[i64], data: &'s BTreeMap<i64, BTreeMap<TableId, Rows>>) -> HashMap<TableId, PartTable<'s>> {
        let n = ids.len();
        let mut tables: HashMap<TableId, PartTable> = HashMap::new();
        for &t in &self.tables {
            let mut part = PartTable { rows: vec![], offsets: Vec::with_capacity(n + 1), owner: vec![] };
            part.offsets.push(0);
            for (i, id) in ids.iter().enumerate() {
                if let Some(rows) = data.get(id).and_then(|m| m.get(&t)) {
                    part.rows.extend(rows.iter().map(Vec::as_slice));
                    part.owner.extend(std::iter::repeat_n(i as u32, rows.len()));
                }
                part.offsets.push(part.rows.len() as u32);
            }
            tables.insert(t, part);
        }
        tables
    }

    /// Evaluates `nodes` (in id order, their children already in `values` or among them) with
    /// the parameter values `params`.
    fn evaluate(
        &self,
        nodes: &[NodeId],
        params: &HashMap<String, Scalar>,
        ids: &[i64],
        tables: &HashMap<TableId, PartTable>,
        values: &mut [Option<Cv>],
        columns: &mut HashMap<(TableId, usize), Arc<Vec<Scalar>>>,
    ) -> Result<(), EvalError> {
        let g = self.graph;
        let n = ids.len();
        for &id in nodes {
            let get = |x: &NodeId| values[x.index()].as_ref().expect("children are evaluated first");
            let table_of = |frame: NodeId| &tables[&frame_table(g, frame)];
            let v = match g.node(id) {
                Node::SelectTable(t) => {
                    let part = &tables[t];
                    Cv::Rows { rows: Arc::new((0..part.rows.len() as u32).collect()), seg: Arc::new(part.offsets.clone()) }
                }
                Node::SelectPatientTable(t) => {
                    // ehrQL's local engine keeps a patient's last row.
                    let part = &tables[t];
                    Cv::Row(Arc::new((0..n).map(|i| (part.offsets[i + 1] > part.offsets[i]).then(|| part.offsets[i + 1] - 1)).collect()))
                }
                Node::InlinePatientTable { rows, .. } => {
                    let map = &self.inline[rows];
                    Cv::Inline(Arc::new(ids.iter().map(|p| map.get(p).cloned()).collect()))
                }
                Node::Filter { source, condition } => {
                    let Cv::Rows { rows, seg } = get(source) else { unreachable!("filter of an event frame") };
                    let keep = |r: u32, i: usize| match get(condition) {
                        Cv::K(v) => *v == Some(Value::Bool(true)),
                        Cv::S(s) => s[i] == Some(Value::Bool(true)),
                        Cv::Col(c) => c[r as usize] == Some(Value::Bool(true)),
                        _ => unreachable!("a condition is a series"),
                    };
                    let mut out = Vec::with_capacity(rows.len());
                    let mut out_seg = Vec::with_capacity(n + 1);
                    out_seg.push(0);
                    for i in 0..n {
                        out.extend(rows[seg[i] as usize..seg[i + 1] as usize].iter().copied().filter(|&r| keep(r, i)));
                        out_seg.push(out.len() as u32);
                    }
                    Cv::Rows { rows: Arc::new(out), seg: Arc::new(out_seg) }
                }
                Node::Sort { source, sort_by } => {
                    let Cv::Rows { rows, seg } = get(source) else { unreachable!("sort of an event frame") };
                    let mut sorted = rows.to_vec();
                    // A key that is the same for all of a patient's rows leaves their order
                    // to the tie-breaks, if any.
                    let key = match get(sort_by) {
                        Cv::Col(key) => Some(key.as_slice()),
                        Cv::K(_) | Cv::S(_) => None,
                        _ => unreachable!("sort keys are series"),
                    };
                    let ties = self.ties.get(&id).map_or(&[][..], Vec::as_slice);
                    if key.is_some() || !ties.is_empty() {
                        let part = table_of(*source);
                        for i in 0..n {
                            sorted[seg[i] as usize..seg[i + 1] as usize]
                                .sort_by(|a, b| kernels::sort_order(key, ties, |r| part.rows[r], *a as usize, *b as usize));
                        }
                    }
                    Cv::Rows { rows: Arc::new(sorted), seg: seg.clone() }
                }
                Node::PickOneRowPerPatient { source, position } => {
                    let Cv::Rows { rows, seg } = get(source) else { unreachable!("pick from an event frame") };
                    let plan = &self.picks[&id];
                    let part = table_of(*source);
                    let keys: Vec<&[Scalar]> = plan
                        .keys
                        .iter()
                        .filter_map(|k| match get(k) {
                            Cv::Col(c) => Some(c.as_slice()),
                            _ => None,
                        })
                        .collect();
                    let picked = (0..n)
                        .map(|i| {
                            let mine = rows[seg[i] as usize..seg[i + 1] as usize].iter().map(|&r| r as usize);
                            plan.pick(mine, *position, &keys, |r| part.rows[r]).map(|r| r as u32)
                        })
                        .collect();
                    Cv::Row(Arc::new(picked))
                }
                // Indexed sets are read by `In`, never copied.
                Node::Value(_) if self.sets.contains_key(&id) => Cv::K(None),
                Node::Value(v) => Cv::K(Some(v.clone())),
                Node::Parameter { name, .. } => Cv::K(params.get(name).cloned().flatten()),
                Node::SelectColumn { source, name } => {
                    let c = column_index(g, *source, name);
                    match get(source) {
                        // Event-level series span all the table's rows whatever the frame, so a
                        // column is copied out of the rows once per partition and shared.
                        Cv::Rows { .. } => Cv::Col(
                            columns
                                .entry((frame_table(g, *source), c))
                                .or_insert_with(|| Arc::new(table_of(*source).rows.iter().map(|r| r[c].clone()).collect()))
                                .clone(),
                        ),
                        Cv::Row(picked) => {
                            let part = table_of(*source);
                            Cv::S(Arc::new(picked.iter().map(|r| r.and_then(|r| part.rows[r as usize][c].clone())).collect()))
                        }
                        Cv::Inline(rows) => Cv::S(Arc::new(rows.iter().map(|r| r.as_ref().and_then(|r| r[c].clone())).collect())),
                        _ => unreachable!("columns of frames"),
                    }
                }
                Node::AggregateByPatient(a) => Cv::S(Arc::new(self.aggregate(a, values, n)?)),
                Node::Function(Function::In(x, set)) if self.sets.contains_key(set) => {
                    let index = &self.sets[set];
                    map1(get(x), |v| Ok(index.test(v)))?
                }
                Node::Function(f) => {
                    let inputs = function_inputs(f);
                    let args: Vec<&Cv> = inputs.iter().map(get).collect();
                    elementwise(&args, |row| semantics::apply(f, row), tables, g, id, n)?
                }
                Node::Case { cases, default } => {
                    // Arguments in order: condition, value (if any) for each case, then default.
                    let mut args: Vec<&Cv> = vec![];
                    let mut layout: Vec<(usize, Option<usize>)> = vec![];
                    for (c, v) in cases {
                        let ci = args.len();
                        args.push(get(c));
                        let vi = v.map(|v| {
                            args.push(get(&v));
                            args.len() - 1
                        });
                        layout.push((ci, vi));
                    }
                    let d = default.map(|d| {
                        args.push(get(&d));
                        args.len() - 1
                    });
                    elementwise(
                        &args,
                        |row| {
                            for (c, v) in &layout {
                                if row[*c] == Some(Value::Bool(true)) {
                                    return Ok(v.and_then(|v| row[v].clone()));
                                }
                            }
                            Ok(d.and_then(|d| row[d].clone()))
                        },
                        tables,
                        g,
                        id,
                        n,
                    )?
                }
            };
            values[id.index()] = Some(v);
        }
        Ok(())
    }

    fn aggregate(&self, a: &A, values: &[Option<Cv>], n: usize) -> Result<Vec<Scalar>, EvalError> {
        let g = self.graph;
        let get = |x: &NodeId| values[x.index()].as_ref().expect("children are evaluated first");
        let input = crate::reference::aggregate_input(a);
        let frame_len = |i: usize| match get(&input) {
            Cv::Rows { seg, .. } => (seg[i + 1] - seg[i]) as usize,
            Cv::Row(r) => r[i].is_some() as usize,
            Cv::Inline(r) => r[i].is_some() as usize,
            _ => unreachable!("a frame"),
        };
        // The series' non-NULL values over patient `i`'s rows of its domain, in row order.
        let series_values = |i: usize| -> Vec<Value> {
            let Domain::Rows(d) = g.domain(input) else { unreachable!("aggregations of event-level series") };
            let Cv::Rows { rows, seg } = get(&d) else { unreachable!("a domain is an event frame") };
            let mine = &rows[seg[i] as usize..seg[i + 1] as usize];
            match get(&input) {
                Cv::Col(c) => mine.iter().filter_map(|&r| c[r as usize].clone()).collect(),
                Cv::K(v) => mine.iter().filter_map(|_| v.clone()).collect(),
                Cv::S(v) => mine.iter().filter_map(|_| v[i].clone()).collect(),
                _ => unreachable!("a series"),
            }
        };
        (0..n).map(|i| kernels::aggregate(g, a, || frame_len(i), || series_values(i))).collect()
    }
}

/// Applies `f` to one argument, keeping its shape.
fn map1(x: &Cv, f: impl Fn(&Scalar) -> Result<Scalar, EvalError>) -> Result<Cv, EvalError> {
    Ok(match x {
        Cv::K(v) => Cv::K(f(v)?),
        Cv::S(v) => Cv::S(Arc::new(v.iter().map(&f).collect::<Result<_, _>>()?)),
        Cv::Col(v) => Cv::Col(Arc::new(v.iter().map(&f).collect::<Result<_, _>>()?)),
        _ => unreachable!("a series"),
    })
}

/// Applies `f` row by row: over table rows when any argument is event-level (patient-level
/// arguments broadcast to their patients' rows), else over patients, else once.
fn elementwise(
    args: &[&Cv],
    f: impl Fn(&[Scalar]) -> Result<Scalar, EvalError>,
    tables: &HashMap<TableId, PartTable>,
    g: &Graph,
    id: NodeId,
    n: usize,
) -> Result<Cv, EvalError> {
    let mut row: Vec<Scalar> = Vec::with_capacity(args.len());
    if args.iter().any(|a| matches!(a, Cv::Col(_))) {
        let Domain::Rows(d) = g.domain(id) else { unreachable!("an event-level result has a row domain") };
        let part = &tables[&frame_table(g, d)];
        let len = part.rows.len();
        let mut out = Vec::with_capacity(len);
        for r in 0..len {
            row.clear();
            row.extend(args.iter().map(|a| match a {
                Cv::K(v) => v.clone(),
                Cv::S(v) => v[part.owner[r] as usize].clone(),
                Cv::Col(v) => v[r].clone(),
                _ => unreachable!("a series"),
            }));
            out.push(f(&row)?);
        }
        return Ok(Cv::Col(Arc::new(out)));
    }
    if args.iter().any(|a| matches!(a, Cv::S(_))) {
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            row.clear();
            row.extend(args.iter().map(|a| match a {
                Cv::K(v) => v.clone(),
                Cv::S(v) => v[i].clone(),
                _ => unreachable!("a patient-level series"),
            }));
            out.push(f(&row)?);
        }
        return Ok(Cv::S(Arc::new(out)));
    }
    row.extend(args.iter().map(|a| if let Cv::K(v) = a { v.clone() } else { None }));
    Ok(Cv::K(f(&row)?))
}

impl Partition {
    pub fn len(&self) -> usize {
        self.patients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.patients.is_empty()
    }

    /// A patient-level series' value for patient `i` of the partition.
    pub fn scalar(&self, n: NodeId, i: usize) -> Scalar {
        match self.values[n.index()].as_ref() {
            Some(Cv::K(v)) => v.clone(),
            Some(Cv::S(v)) => v[i].clone(),
            _ => None,
        }
    }

    /// Patient `i`'s rows of an event-table output: for each row of `frame`, in the frame's
    /// order (sorted, if it is), the columns.
    pub fn event_rows(&self, frame: NodeId, columns: &[NodeId], i: usize) -> Vec<Vec<Scalar>> {
        let Some(Cv::Rows { rows, seg }) = self.values[frame.index()].as_ref() else { return vec![] };
        rows[seg[i] as usize..seg[i + 1] as usize]
            .iter()
            .map(|&r| {
                columns
                    .iter()
                    .map(|c| match self.values[c.index()].as_ref() {
                        Some(Cv::Col(v)) => v[r as usize].clone(),
                        Some(Cv::S(v)) => v[i].clone(),
                        Some(Cv::K(v)) => v.clone(),
                        _ => None,
                    })
                    .collect()
            })
            .collect()
    }
}
