//! The columnar evaluator: patients in partitions (a few thousand each, in `patient_id`
//! order), every node of the query evaluated once per partition over whole typed columns
//! (`column::Array`: unboxed integers, floats and day numbers, bitmaps, dictionary-keyed
//! text), with typed kernels (`column_kernels`) for functions and segment loops for what is per
//! patient (filter, sort, pick, aggregate); partitions run in parallel (rayon) and their
//! results are concatenated in order. It gives the reference evaluator's answers: the
//! conformance suite, the spec cases and the property tests (the engine's own, on random
//! query-model graphs, and the binary's, on random definitions) check that it does.
//!
//! Layout of a partition: per table, the rows of its patients, grouped by patient
//! (`offsets[i]..offsets[i + 1]` are patient `i`'s rows); each used column of a table is typed
//! once per partition and shared by every frame of the table. An event-level series is one
//! slot per table row (filters select rows rather than copy them); an event frame is a list
//! of selected rows with per-patient segments; a patient-level series is one slot per patient,
//! broadcast to its rows (a `take` by each row's patient) when mixed into event-level
//! expressions.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use quarry_queries::qm::{
    AggregateByPatient as A, Domain, Float, Function, Graph, Kind, Node, NodeId, TableId, Type, Value, function_inputs,
};
use quarry_queries::semantics::{self, EvalError, Scalar};
use rayon::prelude::*;

use crate::batch::{Batch, TableData};
use crate::column::{Array, Builder};
use crate::column_kernels::{self as ck, cmp_at, cmp_nulls_first, eq_at};
use crate::kernels::{self, PickPlan, SetIndex, column_index, frame_table};
use crate::plan::QueryPlan;

/// Patients per partition: large enough to amortise per-node work, small enough that a
/// partition's columns stay in cache-sized pieces and memory is bounded by partition × threads.
pub const PARTITION: usize = 4096;

/// The partition size: [`PARTITION`], or `QUARRY_PARTITION_SIZE` (tests use tiny partitions
/// so that every patient-segment boundary case is crossed).
pub fn partition_size() -> usize {
    partition_size_or(PARTITION)
}

/// `QUARRY_PARTITION_SIZE` if set, else `default`.
pub fn partition_size_or(default: usize) -> usize {
    static SIZE: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    SIZE.get_or_init(|| std::env::var("QUARRY_PARTITION_SIZE").ok().and_then(|v| v.parse().ok()).filter(|n| *n > 0)).unwrap_or(default)
}

/// A node's value over a partition.
#[derive(Clone)]
enum Cv {
    /// The same value for every patient and row (a literal, a parameter).
    K(Scalar),
    /// A patient-level series: one slot per patient.
    S(Array),
    /// An event-level series: one slot per row of its table in the partition.
    Col(Array),
    /// An event frame: selected rows of a table, `seg[i]..seg[i + 1]` being patient `i`'s.
    Rows { rows: Arc<Vec<u32>>, seg: Arc<Vec<u32>> },
    /// A patient frame: each patient's row of a table, if any.
    Row(Arc<Vec<Option<u32>>>),
    /// A patient frame from an inline table: each patient's values, if any.
    Inline(Arc<Vec<Option<Arc<Vec<Scalar>>>>>),
}

/// One partition's table: its rows in the batch's table, grouped by patient.
struct PartTable<'s> {
    data: Option<&'s TableData>,
    /// The rows (indexes into `data`'s columns).
    index: Vec<u32>,
    /// `offsets[i]..offsets[i + 1]`: patient `i`'s rows.
    offsets: Vec<u32>,
    /// Each row's patient (index in the partition).
    owner: Vec<u32>,
}

pub struct Evaluator<'g> {
    graph: &'g Graph,
    /// The nodes to evaluate and what they need (`plan::QueryPlan`).
    plan: Arc<QueryPlan>,
    params: HashMap<String, Scalar>,
    /// Patients per partition ([`partition_size`] unless set).
    partition: usize,
}

/// How partitions are evaluated once per set of parameters (`Evaluator::per_params`): the
/// nodes that read no parameter (once), those that do (per set), the range filters with each
/// set's bounds, and the varying nodes left to evaluate when the range filters' rows are found
/// without their conditions.
struct PerParams {
    fixed: Vec<NodeId>,
    varying: Vec<NodeId>,
    ranges: Vec<RangeFilter>,
    bounds: Vec<Vec<Option<(i32, i32)>>>,
    ranged: Vec<NodeId>,
}

/// A `Filter` keeping the rows of `source` whose date `column` lies between two parameters
/// (`Evaluator::range_filters`).
struct RangeFilter {
    filter: NodeId,
    source: NodeId,
    column: NodeId,
    lo: String,
    hi: String,
}

/// A range filter's kept rows (positions in its frame, ascending) for every set of
/// parameters, found from one pass over the frame: each row's date looked up among the
/// sets' ranges (when they do not overlap, as measures' intervals), or among the rows sorted
/// by date (when they do).
struct Kept(Vec<Vec<u32>>);

impl RangeFilter {
    /// The bounds of each set of parameters, as day numbers (`None`: a NULL bound, so the
    /// condition is NULL and keeps nothing).
    fn bounds(&self, params: &[HashMap<String, Scalar>]) -> Vec<Option<(i32, i32)>> {
        let day = |set: &HashMap<String, Scalar>, name: &str| match set.get(name) {
            Some(Some(Value::Date(d))) => Some(crate::column::date_days(*d)),
            _ => None,
        };
        params.iter().map(|set| day(set, &self.lo).zip(day(set, &self.hi))).collect()
    }

    fn keep(&self, shared: &[Option<Cv>], bounds: &[Option<(i32, i32)>]) -> Option<Kept> {
        let (Some(Cv::Rows { rows, .. }), Some(Cv::Col(Array::Date(d, nulls)))) =
            (shared[self.source.index()].as_ref(), shared[self.column.index()].as_ref())
        else {
            return None;
        };
        let date = |j: u32| {
            let r = rows[j as usize] as usize;
            nulls.as_ref().is_none_or(|n| n.is_valid(r)).then(|| d[r])
        };
        let mut kept: Vec<Vec<u32>> = vec![vec![]; bounds.len()];
        // The sets' ranges by start; if none overlaps the next, a date is in at most one.
        let mut by_start: Vec<(i32, i32, usize)> =
            bounds.iter().enumerate().filter_map(|(k, b)| b.filter(|(lo, hi)| lo <= hi).map(|(lo, hi)| (lo, hi, k))).collect();
        by_start.sort_unstable();
        if by_start.windows(2).all(|w| w[0].1 < w[1].0) {
            for j in 0..rows.len() as u32 {
                let Some(x) = date(j) else { continue };
                let at = by_start.partition_point(|(lo, _, _)| *lo <= x);
                if at > 0 && x <= by_start[at - 1].1 {
                    kept[by_start[at - 1].2].push(j);
                }
            }
            return Some(Kept(kept));
        }
        let mut sorted: Vec<(i32, u32)> = (0..rows.len() as u32).filter_map(|j| date(j).map(|x| (x, j))).collect();
        sorted.sort_unstable();
        for (k, b) in bounds.iter().enumerate() {
            if let Some((lo, hi)) = b {
                let from = sorted.partition_point(|(x, _)| x < lo);
                let to = sorted.partition_point(|(x, _)| x <= hi).max(from);
                kept[k] = sorted[from..to].iter().map(|(_, j)| *j).collect();
                kept[k].sort_unstable();
            }
        }
        Some(Kept(kept))
    }

    /// The filter's rows for set `k`: as `Filter` would keep them (where `lo <= date <= hi` is
    /// True), in the frame's order, with the frame's patients.
    fn rows(&self, shared: &[Option<Cv>], kept: &Kept, k: usize) -> Cv {
        let Some(Cv::Rows { rows, seg }) = shared[self.source.index()].as_ref() else { unreachable!("an event frame") };
        let kept = &kept.0[k];
        let mut out_seg = Vec::with_capacity(seg.len());
        out_seg.push(0);
        let mut at = 0;
        for i in 0..seg.len() - 1 {
            while at < kept.len() && kept[at] < seg[i + 1] {
                at += 1;
            }
            out_seg.push(at as u32);
        }
        Cv::Rows { rows: Arc::new(kept.iter().map(|&j| rows[j as usize]).collect()), seg: Arc::new(out_seg) }
    }
}

/// A patient-level series of a partition ([`Partition::series`]).
pub enum Series<'a> {
    Same(&'a Scalar),
    Each(&'a Array),
}

/// Patient `.1` of a partition (a `PatientView`).
pub struct PartitionPatient<'a>(pub &'a Partition, pub usize);

/// A partition's evaluated nodes.
pub struct Partition {
    pub patients: Vec<i64>,
    values: Vec<Option<Cv>>,
}

impl<'g> Evaluator<'g> {
    pub fn new(graph: &'g Graph, outputs: &[NodeId]) -> Evaluator<'g> {
        Evaluator::with_plan(graph, QueryPlan::new(graph, outputs))
    }

    /// An evaluator of a plan already made (shared with other evaluators of the same run).
    pub fn with_plan(graph: &'g Graph, plan: Arc<QueryPlan>) -> Evaluator<'g> {
        Evaluator { graph, plan, params: HashMap::new(), partition: partition_size() }
    }

    pub fn plan(&self) -> &Arc<QueryPlan> {
        &self.plan
    }

    pub fn set_param(&mut self, name: &str, value: Scalar) {
        self.params.insert(name.to_string(), value);
    }

    /// The tables the evaluated nodes read, in first-use order.
    pub fn tables(&self) -> &[TableId] {
        &self.plan.tables
    }

    /// Sets the patients per partition (at least one): the engine's tests cross every
    /// partition boundary with tiny partitions, in process.
    pub fn set_partition_size(&mut self, patients: usize) {
        self.partition = patients.max(1);
    }

    /// The patients per partition.
    pub fn partition_size(&self) -> usize {
        self.partition
    }

    /// Every patient to evaluate: the batch's and the inline tables' in `[lo, hi)`, in id order.
    fn patients(&self, batch: &Batch, lo: Option<i64>, hi: Option<i64>) -> Vec<i64> {
        if self.plan.inline.is_empty() {
            return batch.ids.clone();
        }
        let mut all: BTreeSet<i64> = batch.ids.iter().copied().collect();
        let in_range = |p: &i64| lo.is_none_or(|l| *p >= l) && hi.is_none_or(|h| *p < h);
        all.extend(self.plan.inline.values().flat_map(|m| m.keys().copied()).filter(in_range));
        all.into_iter().collect()
    }

    /// Evaluates every partition in parallel and hands each, in patient order, to `sink`.
    pub fn run<T: Send, E: From<EvalError>>(
        &self,
        batch: &Batch,
        each: impl Fn(&Partition) -> T + Sync,
        sink: impl FnMut(T) -> Result<(), E>,
    ) -> Result<(), E> {
        self.run_range(batch, None, None, each, sink)
    }

    /// As [`Evaluator::run`] for one round of a backend: `batch` holds the patients in
    /// `[lo, hi)`, and only the inline tables' patients in that range join them.
    /// `sink`'s own errors (writing, say) stop the run too, as they are.
    pub fn run_range<T: Send, E: From<EvalError>>(
        &self,
        batch: &Batch,
        lo: Option<i64>,
        hi: Option<i64>,
        each: impl Fn(&Partition) -> T + Sync,
        mut sink: impl FnMut(T) -> Result<(), E>,
    ) -> Result<(), E> {
        let patients = self.patients(batch, lo, hi);
        // Rounds of a few partitions per thread keep memory bounded and output in order.
        let per_round = rayon::current_num_threads().max(1) * 2;
        let size = self.partition;
        for round in patients.chunks(size * per_round) {
            let results: Vec<Result<T, EvalError>> =
                round.par_chunks(size).map(|ids| self.partition(ids, batch).map(|p| each(&p))).collect();
            for r in results {
                sink(r?)?;
            }
        }
        Ok(())
    }

    /// Evaluates the needed nodes for the patients `ids` (ascending).
    pub fn partition(&self, ids: &[i64], batch: &Batch) -> Result<Partition, EvalError> {
        let tables = self.part_tables(ids, batch);
        let mut values: Vec<Option<Cv>> = vec![None; self.graph.len()];
        let mut columns = HashMap::new();
        self.evaluate(&self.plan.needed, &self.params, ids, &tables, &mut values, &mut columns)?;
        Ok(Partition { patients: ids.to_vec(), values })
    }

    /// The needed nodes that read a parameter (directly, through a child or through their
    /// domain): those that differ between intervals of a measures run.
    fn parameter_dependent(&self) -> Vec<bool> {
        let g = self.graph;
        let mut dependent = vec![false; g.len()];
        for &id in &self.plan.needed {
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
    fn partition_per_params<T>(
        &self,
        ids: &[i64],
        batch: &Batch,
        params: &[HashMap<String, Scalar>],
        plan: &PerParams,
        acc: &mut T,
        each: impl Fn(&mut T, usize, &Partition),
    ) -> Result<(), EvalError> {
        let tables = self.part_tables(ids, batch);
        let mut shared: Vec<Option<Cv>> = vec![None; self.graph.len()];
        let mut columns = HashMap::new();
        self.evaluate(&plan.fixed, &self.params, ids, &tables, &mut shared, &mut columns)?;
        // Range filters: their rows for every set found in one pass; their conditions are not
        // evaluated (unless a date column did not come as plain dates: then as any filter).
        let kept: Vec<Kept> = plan.ranges.iter().zip(&plan.bounds).map_while(|(r, b)| r.keep(&shared, b)).collect();
        let (ranges, varying) = if kept.len() == plan.ranges.len() { (&plan.ranges[..], &plan.ranged) } else { (&[][..], &plan.varying) };
        for (k, set) in params.iter().enumerate() {
            let mut values = shared.clone();
            for (r, kept) in ranges.iter().zip(&kept) {
                values[r.filter.index()] = Some(r.rows(&shared, kept, k));
            }
            self.evaluate(varying, set, ids, &tables, &mut values, &mut columns)?;
            each(acc, k, &Partition { patients: ids.to_vec(), values });
        }
        Ok(())
    }

    /// What evaluating partitions once per set of `params` needs, worked out once for the run.
    fn per_params(&self, params: &[HashMap<String, Scalar>]) -> PerParams {
        let dependent = self.parameter_dependent();
        let (varying, fixed): (Vec<NodeId>, Vec<NodeId>) = self.plan.needed.iter().partition(|n| dependent[n.index()]);
        let ranges = self.range_filters(&dependent);
        let bounds = ranges.iter().map(|r| r.bounds(params)).collect();
        let used = self.reachable_past(&ranges);
        let ranged = varying.iter().copied().filter(|n| used[n.index()] && !ranges.iter().any(|r| r.filter == *n)).collect();
        PerParams { fixed, varying, ranges, bounds, ranged }
    }

    /// The varying `Filter`s of the shape `is_during` gives — `date >= P & date <= Q` on a
    /// date column of a frame that reads no parameter, `P` and `Q` parameters — whose rows
    /// for every set of parameters are found in one pass over the frame's dates.
    fn range_filters(&self, dependent: &[bool]) -> Vec<RangeFilter> {
        let g = self.graph;
        let param = |n: NodeId| match g.node(n) {
            Node::Parameter { name, type_: Type::Date } => Some(name.clone()),
            _ => None,
        };
        let mut out = vec![];
        for &id in &self.plan.needed {
            let Node::Filter { source, condition } = g.node(id) else { continue };
            if dependent[source.index()] || !matches!(g.kind(*source), Kind::EventFrame { .. }) {
                continue;
            }
            let Node::Function(Function::And(args)) = g.node(*condition) else { continue };
            let [ge, le] = args.as_slice() else { continue };
            let (Node::Function(Function::Ge(c1, p)), Node::Function(Function::Le(c2, q))) = (g.node(*ge), g.node(*le)) else { continue };
            if c1 != c2 || dependent[c1.index()] || g.type_of(*c1) != Some(&Type::Date) {
                continue;
            }
            if !matches!(g.domain(*c1), Domain::Rows(d) if d == *source) {
                continue;
            }
            let (Some(lo), Some(hi)) = (param(*p), param(*q)) else { continue };
            out.push(RangeFilter { filter: id, source: *source, column: *c1, lo, hi });
        }
        out
    }

    /// Which nodes the outputs need when the range filters' conditions are not evaluated.
    fn reachable_past(&self, ranges: &[RangeFilter]) -> Vec<bool> {
        let g = self.graph;
        let mut used = vec![false; g.len()];
        let mut stack: Vec<NodeId> = self.plan.outputs.clone();
        while let Some(n) = stack.pop() {
            if std::mem::replace(&mut used[n.index()], true) {
                continue;
            }
            match ranges.iter().find(|r| r.filter == n) {
                Some(r) => stack.extend([r.source, r.column]),
                None => {
                    stack.extend(g.children(n));
                    if let Domain::Rows(d) = g.domain(n) {
                        stack.push(d);
                    }
                }
            }
        }
        used
    }

    /// As [`Evaluator::run_range`], evaluating each partition once per set of parameter
    /// values (`partition_per_params`) into an accumulator made by `init` (one per partition,
    /// handed to `sink` in patient order).
    #[allow(clippy::too_many_arguments)]
    pub fn run_range_per_params<T: Send, E: From<EvalError>>(
        &self,
        batch: &Batch,
        lo: Option<i64>,
        hi: Option<i64>,
        params: &[HashMap<String, Scalar>],
        init: impl Fn() -> T + Sync,
        each: impl Fn(&mut T, usize, &Partition) + Sync,
        mut sink: impl FnMut(T) -> Result<(), E>,
    ) -> Result<(), E> {
        let patients = self.patients(batch, lo, hi);
        let plan = self.per_params(params);
        let per_round = rayon::current_num_threads().max(1) * 2;
        let size = self.partition;
        for round in patients.chunks(size * per_round) {
            let results: Vec<Result<T, EvalError>> = round
                .par_chunks(size)
                .map(|ids| {
                    let mut acc = init();
                    self.partition_per_params(ids, batch, params, &plan, &mut acc, &each).map(|_| acc)
                })
                .collect();
            for r in results {
                sink(r?)?;
            }
        }
        Ok(())
    }

    /// The partition's tables: each table's rows of the patients `ids`, grouped by patient.
    fn part_tables<'s>(&self, ids: &[i64], batch: &'s Batch) -> HashMap<TableId, PartTable<'s>> {
        let n = ids.len();
        let mut tables: HashMap<TableId, PartTable> = HashMap::new();
        for &t in &self.plan.tables {
            let data = batch.tables.get(&t);
            let mut part = PartTable { data, index: vec![], offsets: Vec::with_capacity(n + 1), owner: vec![] };
            part.offsets.push(0);
            // Both id lists ascend: one walk.
            let (patients, starts) = data.map_or((&[][..], &[0][..]), |d| (d.patients.as_slice(), d.starts.as_slice()));
            let mut k = patients.partition_point(|p| *p < ids.first().copied().unwrap_or(i64::MIN));
            for (i, id) in ids.iter().enumerate() {
                while k < patients.len() && patients[k] < *id {
                    k += 1;
                }
                if k < patients.len() && patients[k] == *id {
                    part.index.extend(starts[k]..starts[k + 1]);
                    part.owner.extend(std::iter::repeat_n(i as u32, (starts[k + 1] - starts[k]) as usize));
                }
                part.offsets.push(part.index.len() as u32);
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
        columns: &mut HashMap<(TableId, usize), Array>,
    ) -> Result<(), EvalError> {
        for &id in nodes {
            let v = self.node(id, params, ids, tables, values, columns)?;
            values[id.index()] = Some(v);
        }
        Ok(())
    }

    /// A table's column over the partition's rows, gathered once per partition and shared by
    /// every frame of the table (all NULL where the source did not read it).
    fn table_column(
        &self,
        columns: &mut HashMap<(TableId, usize), Array>,
        tables: &HashMap<TableId, PartTable>,
        t: TableId,
        c: usize,
    ) -> Array {
        columns
            .entry((t, c))
            .or_insert_with(|| {
                let part = &tables[&t];
                match part.data.and_then(|d| d.columns[c].as_ref()) {
                    Some(column) => column.take(&part.index),
                    None => Array::splat(&self.graph.table(t).columns[c].type_, &None, part.index.len()),
                }
            })
            .clone()
    }

    /// One node's value, its children's in `values`.
    fn node(
        &self,
        id: NodeId,
        params: &HashMap<String, Scalar>,
        ids: &[i64],
        tables: &HashMap<TableId, PartTable>,
        values: &[Option<Cv>],
        columns: &mut HashMap<(TableId, usize), Array>,
    ) -> Result<Cv, EvalError> {
        let g = self.graph;
        let n = ids.len();
        let get = |x: &NodeId| values[x.index()].as_ref().expect("children are evaluated first");
        Ok(match g.node(id) {
            Node::SelectTable(t) => {
                let part = &tables[t];
                Cv::Rows { rows: Arc::new((0..part.index.len() as u32).collect()), seg: Arc::new(part.offsets.clone()) }
            }
            Node::SelectPatientTable(t) => {
                // ehrQL's local engine keeps a patient's last row.
                let part = &tables[t];
                Cv::Row(Arc::new((0..n).map(|i| (part.offsets[i + 1] > part.offsets[i]).then(|| part.offsets[i + 1] - 1)).collect()))
            }
            Node::InlinePatientTable { rows, .. } => {
                let map = &self.plan.inline[rows];
                Cv::Inline(Arc::new(ids.iter().map(|p| map.get(p).cloned()).collect()))
            }
            Node::Filter { source, condition } => {
                let Cv::Rows { rows, seg } = get(source) else { unreachable!("filter of an event frame") };
                let mut out = vec![];
                let mut out_seg = Vec::with_capacity(n + 1);
                out_seg.push(0);
                let mine = |i: usize| &rows[seg[i] as usize..seg[i + 1] as usize];
                match get(condition) {
                    // A row is kept where the condition is True: one bitmap of value and validity.
                    Cv::Col(c) => {
                        let keep = c.true_bits();
                        // Sized to what is kept: a selective filter of a large frame (once per
                        // interval, for measures) allocates little.
                        // (A frame of every row of the table, in any order: the bitmap's count.)
                        let kept = if rows.len() == keep.len() {
                            keep.count_set_bits()
                        } else {
                            rows.iter().filter(|&&r| keep.value(r as usize)).count()
                        };
                        out.reserve_exact(kept);
                        for i in 0..n {
                            out.extend(mine(i).iter().copied().filter(|&r| keep.value(r as usize)));
                            out_seg.push(out.len() as u32);
                        }
                    }
                    // The same for every row of a patient: all of its rows or none.
                    Cv::S(s) => {
                        for i in 0..n {
                            if s.is_true(i) {
                                out.extend_from_slice(mine(i));
                            }
                            out_seg.push(out.len() as u32);
                        }
                    }
                    Cv::K(Some(Value::Bool(true))) => return Ok(Cv::Rows { rows: rows.clone(), seg: seg.clone() }),
                    Cv::K(_) => out_seg.resize(n + 1, 0),
                    _ => unreachable!("a condition is a series"),
                }
                Cv::Rows { rows: Arc::new(out), seg: Arc::new(out_seg) }
            }
            Node::Sort { source, sort_by } => {
                let Cv::Rows { rows, seg } = get(source) else { unreachable!("sort of an event frame") };
                // A key that is the same for all of a patient's rows leaves their order to the
                // tie-breaks, if any.
                let key = match get(sort_by) {
                    Cv::Col(key) => Some(key),
                    Cv::K(_) | Cv::S(_) => None,
                    _ => unreachable!("sort keys are series"),
                };
                let t = frame_table(g, *source);
                let ties: Vec<Array> = self
                    .plan
                    .ties
                    .get(&id)
                    .map_or(&[][..], Vec::as_slice)
                    .iter()
                    .map(|&c| self.table_column(columns, tables, t, c))
                    .collect();
                let mut sorted = rows.to_vec();
                if key.is_some() || !ties.is_empty() {
                    let order = |a: &u32, b: &u32| {
                        let (a, b) = (*a as usize, *b as usize);
                        key.map_or(Ordering::Equal, |k| cmp_nulls_first(k, a, b))
                            .then_with(|| ties.iter().map(|c| cmp_nulls_first(c, a, b)).find(|o| o.is_ne()).unwrap_or(Ordering::Equal))
                    };
                    for i in 0..n {
                        sorted[seg[i] as usize..seg[i + 1] as usize].sort_by(order);
                    }
                }
                Cv::Rows { rows: Arc::new(sorted), seg: seg.clone() }
            }
            Node::PickOneRowPerPatient { source, position } => {
                let Cv::Rows { rows, seg } = get(source) else { unreachable!("pick from an event frame") };
                let plan: &PickPlan = &self.plan.picks[&id];
                let t = frame_table(g, *source);
                let mut keys: Vec<Array> = plan
                    .keys
                    .iter()
                    .filter_map(|k| match get(k) {
                        Cv::Col(c) => Some(c.clone()),
                        _ => None,
                    })
                    .collect();
                keys.extend(plan.tie_columns.iter().map(|&c| self.table_column(columns, tables, t, c)));
                let order =
                    |a: usize, b: usize| keys.iter().map(|k| cmp_nulls_first(k, a, b)).find(|o| o.is_ne()).unwrap_or(Ordering::Equal);
                let picked = (0..n)
                    .map(|i| {
                        let mine = rows[seg[i] as usize..seg[i + 1] as usize].iter().map(|&r| r as usize);
                        kernels::pick_by(mine, *position, order).map(|r| r as u32)
                    })
                    .collect();
                Cv::Row(Arc::new(picked))
            }
            // Indexed sets are read by `In`, never copied.
            Node::Value(_) if self.plan.sets.contains_key(&id) => Cv::K(None),
            Node::Value(v) => Cv::K(Some(v.clone())),
            Node::Parameter { name, .. } => Cv::K(params.get(name).cloned().flatten()),
            Node::SelectColumn { source, name } => {
                let c = column_index(g, *source, name);
                let type_ = g.type_of(id).expect("a column is a series");
                match get(source) {
                    // Event-level series span all the table's rows whatever the frame.
                    Cv::Rows { .. } => Cv::Col(self.table_column(columns, tables, frame_table(g, *source), c)),
                    Cv::Row(picked) => {
                        let column = self.table_column(columns, tables, frame_table(g, *source), c);
                        let mut b = Builder::new(type_, n);
                        for r in picked.iter() {
                            match r {
                                Some(r) => b.push_from(&column, *r as usize),
                                None => b.push_null(),
                            }
                        }
                        Cv::S(b.finish())
                    }
                    Cv::Inline(rows) => Cv::S(Array::from_scalars(type_, rows.iter().map(|r| r.as_ref().map_or(&None, |r| &r[c])))),
                    _ => unreachable!("columns of frames"),
                }
            }
            Node::AggregateByPatient(a) => Cv::S(self.aggregate(id, a, values, n, tables)?),
            Node::Function(Function::In(x, set)) if self.plan.sets.contains_key(set) => {
                let index = &self.plan.sets[set];
                match get(x) {
                    Cv::K(v) => Cv::K(index.test(v)),
                    Cv::S(a) => Cv::S(member(index, a)),
                    Cv::Col(a) => Cv::Col(member(index, a)),
                    _ => unreachable!("a series"),
                }
            }
            Node::Function(f) => {
                let args: Vec<NodeId> = function_inputs(f);
                match self.shape(id, &args, values, tables, n) {
                    None => {
                        let row: Vec<Scalar> = args.iter().map(|x| if let Cv::K(v) = get(x) { v.clone() } else { None }).collect();
                        Cv::K(semantics::apply(f, &row)?)
                    }
                    Some((event, len, owner)) => {
                        let arrays: Vec<Array> = args.iter().map(|x| materialise(g, *x, get(x), len, owner)).collect();
                        let out = ck::apply(f, &arrays, g.type_of(id).expect("a function is a series"), len)?;
                        if event { Cv::Col(out) } else { Cv::S(out) }
                    }
                }
            }
            Node::Case { cases, default } => {
                // Arguments in order: condition, value (if any) for each case, then default.
                let mut args: Vec<NodeId> = vec![];
                let mut layout: Vec<(usize, Option<usize>)> = vec![];
                for (c, v) in cases {
                    args.push(*c);
                    layout.push((
                        args.len() - 1,
                        v.map(|v| {
                            args.push(v);
                            args.len() - 1
                        }),
                    ));
                }
                let d = default.map(|d| {
                    args.push(d);
                    args.len() - 1
                });
                match self.shape(id, &args, values, tables, n) {
                    None => {
                        let row: Vec<Scalar> = args.iter().map(|x| if let Cv::K(v) = get(x) { v.clone() } else { None }).collect();
                        let hit = layout.iter().find(|(c, _)| row[*c] == Some(Value::Bool(true)));
                        Cv::K(match hit {
                            Some((_, v)) => v.and_then(|v| row[v].clone()),
                            None => d.and_then(|d| row[d].clone()),
                        })
                    }
                    Some((event, len, owner)) => {
                        let arrays: Vec<Array> = args.iter().map(|x| materialise(g, *x, get(x), len, owner)).collect();
                        let mut b = Builder::new(g.type_of(id).expect("a case is a series"), len);
                        for i in 0..len {
                            let hit = layout.iter().find(|(c, _)| arrays[*c].is_true(i)).map(|(_, v)| *v).unwrap_or(d);
                            match hit {
                                Some(v) => b.push_from(&arrays[v], i),
                                None => b.push_null(),
                            }
                        }
                        if event { Cv::Col(b.finish()) } else { Cv::S(b.finish()) }
                    }
                }
            }
        })
    }

    /// Where a function or case of `args` is computed: over its domain's table rows when any
    /// argument is event-level (`true`, the length, each row's patient), over patients when any
    /// is patient-level, or once (`None`) when all are constants.
    fn shape<'t>(
        &self,
        id: NodeId,
        args: &[NodeId],
        values: &[Option<Cv>],
        tables: &'t HashMap<TableId, PartTable>,
        n: usize,
    ) -> Option<(bool, usize, &'t [u32])> {
        let cv = |x: &NodeId| values[x.index()].as_ref().expect("children are evaluated first");
        if args.iter().any(|a| matches!(cv(a), Cv::Col(_))) {
            let Domain::Rows(d) = self.graph.domain(id) else { unreachable!("an event-level result has a row domain") };
            let part = &tables[&frame_table(self.graph, d)];
            return Some((true, part.index.len(), &part.owner));
        }
        args.iter().any(|a| matches!(cv(a), Cv::S(_))).then_some((false, n, &[][..]))
    }

    fn aggregate(
        &self,
        id: NodeId,
        a: &A,
        values: &[Option<Cv>],
        n: usize,
        tables: &HashMap<TableId, PartTable>,
    ) -> Result<Array, EvalError> {
        let g = self.graph;
        let get = |x: &NodeId| values[x.index()].as_ref().expect("children are evaluated first");
        let input = crate::reference::aggregate_input(a);
        if let A::Exists(_) | A::Count(_) = a {
            let frame_len = |i: usize| match get(&input) {
                Cv::Rows { seg, .. } => (seg[i + 1] - seg[i]) as usize,
                Cv::Row(r) => r[i].is_some() as usize,
                Cv::Inline(r) => r[i].is_some() as usize,
                _ => unreachable!("a frame"),
            };
            return Ok(match a {
                A::Exists(_) => Array::Bool(arrow_buffer::BooleanBuffer::collect_bool(n, |i| frame_len(i) > 0), None),
                _ => Array::Int(Arc::new((0..n).map(|i| frame_len(i) as i64).collect()), None),
            });
        }
        let Domain::Rows(d) = g.domain(input) else { unreachable!("aggregations of event-level series") };
        let Cv::Rows { rows, seg } = get(&d) else { unreachable!("a domain is an event frame") };
        let part = &tables[&frame_table(g, d)];
        let series = materialise(g, input, get(&input), part.index.len(), &part.owner);
        // Patient `i`'s rows of the domain whose value is not NULL, in row order.
        let mine = |i: usize| rows[seg[i] as usize..seg[i + 1] as usize].iter().map(|r| *r as usize).filter(|r| series.is_valid(*r));
        let out_type = g.type_of(id).expect("an aggregation is a series");
        let mut b = Builder::new(out_type, n);
        for i in 0..n {
            match a {
                A::Min(_) | A::Max(_) => {
                    let want = if matches!(a, A::Min(_)) { Ordering::Less } else { Ordering::Greater };
                    let mut best: Option<usize> = None;
                    for r in mine(i) {
                        best = Some(match best {
                            Some(cur) if cmp_at(&series, r, &series, cur) != want => cur,
                            _ => r,
                        });
                    }
                    match best {
                        Some(r) => b.push_from(&series, r),
                        None => b.push_null(),
                    }
                }
                A::Sum(_) | A::Mean(_) => {
                    let mut mine = mine(i).peekable();
                    if mine.peek().is_none() {
                        b.push_null();
                        continue;
                    }
                    b.push_scalar(&Some(match (&series, a) {
                        (Array::Int(v, _), A::Sum(_)) => {
                            let mut acc: i64 = 0;
                            for r in mine {
                                acc = acc
                                    .checked_add(v[r])
                                    .ok_or_else(|| EvalError { kind: "OverflowError", message: "sum out of range".into() })?;
                            }
                            Value::Int(acc)
                        }
                        (_, A::Sum(_)) => Value::Float(Float(semantics::float_sum(mine.map(|r| number(&series, r))))),
                        _ => {
                            let xs: Vec<f64> = mine.map(|r| number(&series, r)).collect();
                            Value::Float(Float(semantics::float_sum(xs.iter().copied()) / xs.len() as f64))
                        }
                    }));
                }
                A::CountDistinct(_) => {
                    let mut distinct: Vec<usize> = mine(i).collect();
                    distinct.sort_by(|x, y| cmp_at(&series, *x, &series, *y));
                    distinct.dedup_by(|x, y| eq_at(&series, *x, &series, *y));
                    b.push_scalar(&Some(Value::Int(distinct.len() as i64)));
                }
                A::CountEpisodes { maximum_gap_days, .. } => {
                    let Array::Date(v, _) = &series else { unreachable!("episodes of dates") };
                    let mut dates: Vec<i64> = mine(i).map(|r| v[r] as i64).collect();
                    dates.sort_unstable();
                    let episodes =
                        if dates.is_empty() { 0 } else { 1 + dates.windows(2).filter(|w| w[1] - w[0] > *maximum_gap_days).count() };
                    b.push_scalar(&Some(Value::Int(episodes as i64)));
                }
                A::CombineAsSet(s) => {
                    let t = g.type_of(*s).cloned().expect("series");
                    let set = Value::set(t, mine(i).filter_map(|r| series.get(r)).collect())
                        .map_err(|e| EvalError { kind: "TypeError", message: e.to_string() })?;
                    b.push_scalar(&Some(set));
                }
                A::Exists(_) | A::Count(_) => unreachable!("frame aggregations are above"),
            }
        }
        Ok(b.finish())
    }
}

fn number(a: &Array, i: usize) -> f64 {
    match a {
        Array::Int(v, _) => v[i] as f64,
        Array::Float(v, _) => v[i],
        _ => match a.get(i) {
            Some(Value::Int(x)) => x as f64,
            Some(Value::Float(x)) => x.0,
            _ => f64::NAN,
        },
    }
}

/// A node's value as a column of `len` slots: event-level values as they are, patient-level
/// ones broadcast to their patients' rows (`owner`), constants repeated.
fn materialise(g: &Graph, node: NodeId, v: &Cv, len: usize, owner: &[u32]) -> Array {
    match v {
        Cv::K(value) => Array::splat(g.type_of(node).expect("a series"), value, len),
        Cv::S(a) if a.len() == len && owner.is_empty() => a.clone(),
        Cv::S(a) => a.take(owner),
        Cv::Col(a) => a.clone(),
        _ => unreachable!("a series"),
    }
}

/// `x IN set` for a literal set: a text column tests each dictionary value once.
pub(crate) fn member(index: &SetIndex, a: &Array) -> Array {
    let len = a.len();
    if index.is_empty() {
        return Array::Bool(arrow_buffer::BooleanBuffer::new_unset(len), None);
    }
    match a {
        Array::Text(keys, dict, nulls) => by_key(keys, &dict_hits(index, dict), nulls),
        _ => Array::Bool(
            arrow_buffer::BooleanBuffer::collect_bool(len, |i| a.is_valid(i) && index.test(&a.get(i)) == Some(Value::Bool(true))),
            crate::column::nulls_from(len, |i| a.is_valid(i)),
        ),
    }
}

/// Whether each value of a text dictionary is in `index`.
pub(crate) fn dict_hits(index: &SetIndex, dict: &crate::column::Dict) -> Vec<bool> {
    dict.values.iter().map(|v| index.test(&Some(v.clone())) == Some(Value::Bool(true))).collect()
}

/// A text column's membership from its dictionary's (`dict_hits`).
pub(crate) fn by_key(keys: &[u32], hits: &[bool], nulls: &crate::column::Nulls) -> Array {
    Array::Bool(arrow_buffer::BooleanBuffer::collect_bool(keys.len(), |i| hits[keys[i] as usize]), nulls.clone())
}

impl Partition {
    pub fn len(&self) -> usize {
        self.patients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.patients.is_empty()
    }

    /// A patient-level series for all the partition's patients: one value for all of them
    /// (a literal, a parameter), or one slot per patient; `None` if `n` was not evaluated.
    pub fn series(&self, n: NodeId) -> Option<Series<'_>> {
        match self.values[n.index()].as_ref() {
            Some(Cv::K(v)) => Some(Series::Same(v)),
            Some(Cv::S(v)) => Some(Series::Each(v)),
            _ => None,
        }
    }

    /// A patient-level series' value for patient `i` of the partition.
    pub fn scalar(&self, n: NodeId, i: usize) -> Scalar {
        match self.values[n.index()].as_ref() {
            Some(Cv::K(v)) => v.clone(),
            Some(Cv::S(v)) => v.get(i),
            _ => None,
        }
    }

    /// The partition's patients (their indexes) for whom boolean series `n` is True.
    pub fn where_true(&self, n: NodeId) -> Vec<u32> {
        match self.values[n.index()].as_ref() {
            Some(Cv::S(a)) => a.true_bits().set_indices().map(|i| i as u32).collect(),
            Some(Cv::K(Some(Value::Bool(true)))) => (0..self.len() as u32).collect(),
            _ => vec![],
        }
    }

    /// Patient-level series `n` for the patients `keep` (indexes), as a typed column.
    pub fn patient_column(&self, g: &Graph, n: NodeId, keep: &[u32]) -> Array {
        self.column_at(g, n, keep.len(), keep)
    }

    /// Series `n` at `len` slots, each patient-level value at its patient (`owner`); NULLs if
    /// `n` was not evaluated.
    fn column_at(&self, g: &Graph, n: NodeId, len: usize, owner: &[u32]) -> Array {
        let v = self.values[n.index()].as_ref().unwrap_or(&Cv::K(None));
        materialise(g, n, v, len, owner)
    }

    /// The rows of event frame `frame` of the patients `keep`, patient by patient in the
    /// frame's order (sorted, if it is): each row's index in its table and its patient's
    /// index in the partition.
    pub fn frame_rows(&self, frame: NodeId, keep: &[u32]) -> (Vec<u32>, Vec<u32>) {
        let Some(Cv::Rows { rows, seg }) = self.values[frame.index()].as_ref() else { return (vec![], vec![]) };
        let (mut index, mut owners) = (vec![], vec![]);
        for &i in keep {
            let mine = &rows[seg[i as usize] as usize..seg[i as usize + 1] as usize];
            index.extend_from_slice(mine);
            owners.extend(std::iter::repeat_n(i, mine.len()));
        }
        (index, owners)
    }

    /// Series `n` over rows of an event frame (`frame_rows`): an event-level series at each
    /// row, a patient-level one at each row's patient.
    pub fn row_column(&self, g: &Graph, n: NodeId, rows: &[u32], owners: &[u32]) -> Array {
        match self.values[n.index()].as_ref() {
            Some(Cv::Col(a)) => a.take(rows),
            _ => self.column_at(g, n, rows.len(), owners),
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
                        Some(Cv::Col(v)) => v.get(r as usize),
                        Some(Cv::S(v)) => v.get(i),
                        Some(Cv::K(v)) => v.clone(),
                        _ => None,
                    })
                    .collect()
            })
            .collect()
    }
}
