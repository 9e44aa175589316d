//! Row filters pushed into a backend's scan. When every set of rows a definition can observe
//! from an event table (a frame it aggregates, picks from or outputs, or the domain of a series
//! it aggregates) starts with a `where` on the table itself whose condition reads only that
//! table's columns and literals, a row that satisfies none of those conditions can never reach
//! a result, so the scan drops it. A condition that reads parameters (a measures definition's
//! `INTERVAL`) is pushed as the union over the bindings (intervals): its parts that read none
//! are compiled once, the others once per binding, and alternatives that are ranges of one
//! date column are merged, so 24 monthly intervals are one range test. This is what makes a codelist query over tens of millions
//! of events cheap: the condition is tested on the Parquet column's dictionary (each distinct
//! code once) and the other columns are decoded only for the rows kept.
//!
//! A pushed condition is computed as the columnar engine computes a `Filter` node's: the
//! batch's columns typed by `column::from_arrow` (a Parquet dictionary converted once per
//! column chunk), then the column kernels (`column_kernels::apply`, `columnar::member`);
//! only the three-valued "unknown" of a first pass over some of the columns is the scan's own.
//!
//! The evaluator still applies every condition afterwards; the pushed filter only removes rows
//! no condition keeps. Only functions that cannot fail are pushed (comparisons, `is_in`,
//! `is_null`, and/or/not), so a pushed filter never raises an error the query would not — but
//! its columns are typed as the engine types them, so a value the engine refuses (a date
//! outside years 1–9999) stops the scan even in a row the filter would drop.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{BooleanArray, RecordBatch};
use arrow_buffer::BooleanBuffer;
use quarry_queries::qm::{Function, Graph, Kind, Node, NodeId, TableId, Type, Value, function_inputs};
use quarry_queries::semantics::{self, Scalar};

use crate::column::{Array, Dict, DictMemo, from_arrow};
use crate::column_kernels as ck;
use crate::kernels::SetIndex;

/// One table's pushed filter: a row is kept when any of the conditions holds.
pub struct TableFilter {
    /// The columns the conditions read, with their schema types.
    pub columns: Vec<(String, Type)>,
    expr: Expr,
    /// Per column, its text dictionary while batches share it (`column::from_arrow`).
    memos: Vec<DictMemo>,
    /// Which rows to keep per value of the last Parquet dictionary met, when the filter read
    /// one dictionary-encoded column only.
    verdicts: Option<Verdicts>,
    /// Such a filter's result per text, in a first pass and a full one, shared by the clones
    /// of the filter (one per row group scanned): a table's column chunks mostly hold the same
    /// codes, so each is computed about once per scan rather than once per chunk.
    known: Arc<std::sync::Mutex<[Known; 2]>>,
}

/// Which rows to keep, per text.
type Known = rustc_hash::FxHashMap<Box<str>, bool>;

/// The most texts a filter remembers (a free-text column's values are not all kept).
const KNOWN: usize = 1 << 20;

/// A filter's result for each value of an Arrow dictionary (the values held, so that they are
/// compared by pointer and never a freed look-alike), and for a NULL, under one pass.
struct Verdicts {
    values: arrow_array::ArrayRef,
    partial: bool,
    keep: Vec<bool>,
    null: bool,
}

impl TableFilter {
    fn new(columns: Vec<(String, Type)>, expr: Expr) -> TableFilter {
        let memos = columns.iter().map(|_| DictMemo::default()).collect();
        TableFilter { columns, expr, memos, verdicts: None, known: Arc::default() }
    }
}

impl Clone for TableFilter {
    /// The same filter, with nothing remembered of the batches this one has seen (but what it
    /// knows of texts, which is the same for every batch).
    fn clone(&self) -> TableFilter {
        TableFilter { known: self.known.clone(), ..TableFilter::new(self.columns.clone(), self.expr.clone()) }
    }
}

#[derive(Clone)]
enum Expr {
    Column(usize),
    /// A literal, with its type in the query (for broadcasting it to a column).
    Literal(Scalar, Type),
    /// A literal set, the right-hand side of `In`.
    Set(Arc<SetIndex>),
    Apply {
        function: Function,
        args: Vec<Expr>,
        cache: Option<MemberCache>,
    },
}

/// `In`'s result per value of the last text dictionary it met (batches of a column chunk share
/// one): the dictionary, held so that it is compared by pointer and never a freed look-alike.
#[derive(Clone)]
struct MemberCache {
    dict: Arc<Dict>,
    hits: Arc<Vec<bool>>,
}

/// A value over a batch: the same for every row, a typed column, or unknown (it reads a
/// column a first pass does not have).
enum Tv {
    Const(Scalar),
    Col(Array),
    Unknown,
}

/// The pushed filter of each event table the `roots` read, where one applies. `bindings`: the
/// values the definition's parameters take, one map per evaluation (a measures definition's
/// intervals); a condition reading a parameter is pushed as the union of its bindings' rows,
/// and is not pushed without them.
pub fn plan(graph: &Graph, roots: &[NodeId], bindings: &[Bindings]) -> HashMap<TableId, TableFilter> {
    let reachable: Vec<NodeId> = crate::reference::reachable(graph, roots).into_iter().collect();
    // The row sets the query observes.
    let mut observed: Vec<NodeId> = vec![];
    let observe_domain = |n: NodeId, observed: &mut Vec<NodeId>| match graph.kind(n) {
        Kind::EventFrame { .. } => observed.push(n),
        Kind::Series(_) => {
            if let quarry_queries::qm::Domain::Rows(d) = graph.domain(n) {
                observed.push(d)
            }
        }
        Kind::PatientFrame { .. } => {}
    };
    for &n in &reachable {
        match graph.node(n) {
            Node::AggregateByPatient(a) => observe_domain(quarry_queries::qm::aggregate_input(a), &mut observed),
            Node::PickOneRowPerPatient { source, .. } => observed.push(*source),
            _ => {}
        }
    }
    for &r in roots {
        observe_domain(r, &mut observed);
    }
    // Per table: the condition each observed row set starts with (`None`: the whole table).
    let mut starts: HashMap<TableId, Vec<Option<(NodeId, NodeId)>>> = HashMap::new();
    for frame in observed {
        let list = starts.entry(crate::kernels::frame_table(graph, frame)).or_default();
        let start = start(graph, frame);
        if !list.contains(&start) {
            list.push(start);
        }
    }
    starts.into_iter().filter_map(|(table, list)| Some((table, filter_of(graph, &list, bindings)?))).collect()
}

/// One evaluation's parameter values, by name.
pub type Bindings = HashMap<String, Scalar>;

/// The `where` on the table itself that a frame's rows start with: the table's select node
/// and the condition. `None` when the frame has rows no condition chose.
fn start(graph: &Graph, frame: NodeId) -> Option<(NodeId, NodeId)> {
    let mut cur = frame;
    loop {
        match graph.node(cur) {
            Node::Filter { source, condition } if matches!(graph.node(*source), Node::SelectTable(_)) => {
                return Some((*source, *condition));
            }
            Node::Filter { source, .. } | Node::Sort { source, .. } => cur = *source,
            _ => return None,
        }
    }
}

/// A filter keeping the rows any of the `starts` keeps, if each can be pushed: a condition
/// that reads parameters as the union over the bindings (`alternatives`). Date ranges on one
/// column are merged (`merge_ranges`), so a measures definition's consecutive monthly
/// intervals cost the scan two comparisons a row, not two per interval.
fn filter_of(graph: &Graph, starts: &[Option<(NodeId, NodeId)>], bindings: &[Bindings]) -> Option<TableFilter> {
    let mut columns = vec![];
    let mut conditions = vec![];
    for s in starts {
        let (select, condition) = (*s)?;
        conditions.extend(alternatives(graph, condition, select, bindings, &mut columns)?);
    }
    let expr = any(merge_ranges(conditions));
    Some(TableFilter::new(columns, expr))
}

/// The most alternatives a condition that reads parameters is pushed as (after merging): past
/// it, testing them all on every row could cost the scan more than it saves.
const ALTERNATIVES: usize = 64;

/// Alternatives whose `or` keeps what the condition keeps under some binding. A part that
/// reads no parameter is compiled once: an `or` is taken apart, and an `and` keeps the
/// conjuncts that read no parameter outside the union of the others (`a & p(k)` over the
/// bindings `k` is `a & (p(1) | p(2) | …)`), so a codelist test beside `is_during(INTERVAL)`
/// is not repeated per interval. `None` when it cannot be pushed.
fn alternatives(
    graph: &Graph,
    node: NodeId,
    select: NodeId,
    bindings: &[Bindings],
    columns: &mut Vec<(String, Type)>,
) -> Option<Vec<Expr>> {
    if !reads_parameter(graph, node) {
        return Some(vec![compile(graph, node, select, None, columns)?]);
    }
    if bindings.is_empty() {
        return None;
    }
    let union = |parts: &[NodeId], columns: &mut Vec<(String, Type)>| -> Option<Vec<Expr>> {
        let mut each = vec![];
        for b in bindings {
            let compiled = parts.iter().map(|&x| compile(graph, x, select, Some(b), columns)).collect::<Option<Vec<Expr>>>()?;
            each.push(all(compiled));
        }
        capped(each)
    };
    match graph.node(node) {
        Node::Function(Function::Or(xs)) => {
            let mut out = vec![];
            for &x in xs {
                out.extend(alternatives(graph, x, select, bindings, columns)?);
            }
            capped(out)
        }
        Node::Function(Function::And(xs)) => {
            let (fixed, varying): (Vec<NodeId>, Vec<NodeId>) = xs.iter().partition(|&&x| !reads_parameter(graph, x));
            let mut parts = fixed.iter().map(|&x| compile(graph, x, select, None, columns)).collect::<Option<Vec<Expr>>>()?;
            parts.push(any(union(&varying, columns)?));
            Some(vec![all(parts)])
        }
        _ => union(&[node], columns),
    }
}

/// Alternatives merged (`merge_ranges`), if no more than [`ALTERNATIVES`] are left.
fn capped(alternatives: Vec<Expr>) -> Option<Vec<Expr>> {
    Some(merge_ranges(alternatives)).filter(|a| a.len() <= ALTERNATIVES)
}

/// The `and` of conditions (the one condition itself when there is one).
fn all(mut parts: Vec<Expr>) -> Expr {
    if parts.len() == 1 {
        return parts.pop().expect("one");
    }
    Expr::Apply { function: Function::And(vec![]), args: parts, cache: None }
}

/// The `or` of alternatives (the one alternative itself when there is one).
fn any(mut alternatives: Vec<Expr>) -> Expr {
    if alternatives.len() == 1 {
        return alternatives.pop().expect("one");
    }
    Expr::Apply { function: Function::Or(vec![]), args: alternatives, cache: None }
}

fn reads_parameter(graph: &Graph, node: NodeId) -> bool {
    graph.reachable_from(&[node]).into_iter().any(|n| matches!(graph.node(n), Node::Parameter { .. }))
}

/// Alternatives (of an `or`) with every date range on one column (a comparison of the column
/// with a date, or an `and` of such) merged with the ranges it overlaps or adjoins: the same
/// rows kept, by fewer comparisons. Other alternatives are left as they are.
fn merge_ranges(alternatives: Vec<Expr>) -> Vec<Expr> {
    let mut flat = vec![];
    for a in alternatives {
        match a {
            Expr::Apply { function: Function::Or(_), args, .. } => flat.extend(args),
            a => flat.push(a),
        }
    }
    let (mut ranges, mut out): (Vec<(usize, i64, i64)>, Vec<Expr>) = (vec![], vec![]);
    for a in flat {
        match date_range(&a) {
            Some(Some(r)) => ranges.push(r),
            // An empty range keeps no row.
            Some(None) => {}
            None => out.push(a),
        }
    }
    ranges.sort_unstable();
    let mut merged: Vec<(usize, i64, i64)> = vec![];
    for (c, lo, hi) in ranges {
        match merged.last_mut() {
            Some((pc, _, phi)) if *pc == c && lo <= phi.saturating_add(1) => *phi = (*phi).max(hi),
            _ => merged.push((c, lo, hi)),
        }
    }
    let date = |d: i64| Expr::Literal(Some(Value::Date(crate::dummy::days::to_date(d))), Type::Date);
    let apply = |function, args| Expr::Apply { function, args, cache: None };
    let id = NodeId::default;
    for (c, lo, hi) in merged {
        let mut bounds = vec![];
        if lo != i64::MIN {
            bounds.push(apply(Function::Ge(id(), id()), vec![Expr::Column(c), date(lo)]));
        }
        if hi != i64::MAX {
            bounds.push(apply(Function::Le(id(), id()), vec![Expr::Column(c), date(hi)]));
        }
        out.push(match bounds.is_empty() {
            // Every date: every row but NULL.
            true => apply(Function::Not(id()), vec![apply(Function::IsNull(id()), vec![Expr::Column(c)])]),
            false => all(bounds),
        });
    }
    if out.is_empty() {
        // No alternative keeps a row: an `or` of nothing is False.
        out.push(Expr::Literal(Some(Value::Bool(false)), Type::Bool));
    }
    out
}

/// The days `[lo, hi]` an expression keeps of one date column (`i64::MIN`/`MAX`: unbounded;
/// the engine reads no date outside years 1–9999): a comparison of the column with a date, or
/// an `and` of them. `Some(None)` when it keeps no date; `None` when it is not of that shape.
fn date_range(e: &Expr) -> Option<Option<(usize, i64, i64)>> {
    let Expr::Apply { function, args, .. } = e else { return None };
    let within = |(c, lo, hi): (usize, i64, i64)| {
        let (first, last) = (*crate::dummy::days::SUPPORTED.start(), *crate::dummy::days::SUPPORTED.end());
        let (lo, hi) = (if lo <= first { i64::MIN } else { lo }, if hi >= last { i64::MAX } else { hi });
        (lo <= hi && lo <= last && hi >= first).then_some((c, lo, hi))
    };
    if let Function::And(_) = function {
        if args.is_empty() {
            return None;
        }
        let mut range: Option<(usize, i64, i64)> = None;
        let mut empty = false;
        for a in args {
            match date_range(a)? {
                None => empty = true,
                Some((c, lo, hi)) => {
                    range = Some(match range {
                        None => (c, lo, hi),
                        Some((rc, rlo, rhi)) if rc == c => (c, rlo.max(lo), rhi.min(hi)),
                        Some(_) => return None,
                    })
                }
            }
        }
        return Some(range.filter(|_| !empty).and_then(within));
    }
    let [x, y] = args.as_slice() else { return None };
    let (c, d, flipped) = match (x, y) {
        (Expr::Column(c), Expr::Literal(Some(Value::Date(d)), _)) => (*c, *d, false),
        (Expr::Literal(Some(Value::Date(d)), _), Expr::Column(c)) => (*c, *d, true),
        _ => return None,
    };
    let d = crate::dummy::days::to_days(d);
    // The column's bound, the column on the left.
    let (lo, hi) = match (function, flipped) {
        (Function::Eq(..), _) => (d, d),
        (Function::Ge(..), false) | (Function::Le(..), true) => (d, i64::MAX),
        (Function::Gt(..), false) | (Function::Lt(..), true) => (d + 1, i64::MAX),
        (Function::Le(..), false) | (Function::Ge(..), true) => (i64::MIN, d),
        (Function::Lt(..), false) | (Function::Gt(..), true) => (i64::MIN, d - 1),
        _ => return None,
    };
    Some(within((c, lo, hi)))
}

/// A frame's start: the filter node and the condition it begins with, if it has one.
type FrameStart = Option<(NodeId, NodeId)>;

/// Which patients can be in the population, given the `frames` it needs a row in
/// ([`required_frames`]): per table, a filter whose rows' patients are the candidates (a
/// patient with no such row in any of the tables is not in the population). `None` when there
/// are no such frames or a frame's rows cannot be described by a pushed filter.
pub fn candidates(graph: &Graph, frames: &[NodeId]) -> Option<Vec<(TableId, TableFilter)>> {
    if frames.is_empty() {
        return None;
    }
    // Per table, each frame's start: the filter node and the condition it begins with.
    let mut by_table: Vec<(TableId, Vec<FrameStart>)> = vec![];
    for &frame in frames {
        let table = crate::kernels::frame_table(graph, frame);
        let s = start(graph, frame);
        match by_table.iter_mut().find(|(t, _)| *t == table) {
            Some((_, list)) => list.push(s),
            None => by_table.push((table, vec![s])),
        }
    }
    by_table.into_iter().map(|(t, list)| Some((t, filter_of(graph, &list, &[])?))).collect()
}

/// The condition as a pushed expression, if it reads only `select`'s columns and literals
/// through functions that cannot fail.
fn compile(graph: &Graph, node: NodeId, select: NodeId, binding: Option<&Bindings>, columns: &mut Vec<(String, Type)>) -> Option<Expr> {
    match graph.node(node) {
        Node::Parameter { name, type_ } => Some(Expr::Literal(binding?.get(name)?.clone(), type_.clone())),
        Node::Value(Value::Set(..)) => None,
        Node::Value(v) => Some(Expr::Literal(Some(v.clone()), graph.type_of(node).cloned()?)),
        Node::SelectColumn { source, name } if *source == select => {
            let i = columns.iter().position(|(c, _)| c == name).unwrap_or_else(|| {
                columns.push((name.clone(), graph.type_of(node).cloned().expect("a column is a series")));
                columns.len() - 1
            });
            Some(Expr::Column(i))
        }
        Node::Function(f @ Function::In(x, set)) => {
            let Node::Value(Value::Set(_, values)) = graph.node(*set) else { return None };
            let x = compile(graph, *x, select, binding, columns)?;
            Some(Expr::Apply { function: f.clone(), args: vec![x, Expr::Set(Arc::new(SetIndex::new(values)))], cache: None })
        }
        Node::Function(
            f @ (Function::Eq(..)
            | Function::Ne(..)
            | Function::Lt(..)
            | Function::Le(..)
            | Function::Gt(..)
            | Function::Ge(..)
            | Function::And(_)
            | Function::Or(_)
            | Function::Not(_)
            | Function::IsNull(_)),
        ) => {
            let args = function_inputs(f).into_iter().map(|a| compile(graph, a, select, binding, columns)).collect::<Option<Vec<_>>>()?;
            Some(Expr::Apply { function: f.clone(), args, cache: None })
        }
        _ => None,
    }
}

impl TableFilter {
    /// Which rows of `batch` to keep. With every filter column in the batch, the rows where
    /// the filter holds. With some missing (`partial`: a first pass over the cheap columns),
    /// the rows where it may hold: missing columns count as unknown, and Kleene logic never
    /// turns an unknown into a false that a known value would make true, so a row this drops
    /// the full filter would drop too.
    pub fn evaluate(&mut self, batch: &RecordBatch, partial: bool) -> Result<BooleanArray, String> {
        let schema = batch.schema();
        if let Some(keep) = self.by_dictionary(batch, partial)? {
            return Ok(keep);
        }
        let mut columns: Vec<Option<Array>> = Vec::with_capacity(self.columns.len());
        for ((name, t), memo) in self.columns.iter().zip(&mut self.memos) {
            columns.push(match schema.index_of(name) {
                Ok(i) => Some(from_arrow(batch.column(i).as_ref(), t, memo).map_err(|m| format!("column '{name}': {m}"))?),
                Err(_) => None,
            });
        }
        if !partial && columns.iter().any(Option::is_none) {
            return Err("a filter column is missing from the batch".into());
        }
        let n = batch.num_rows();
        Ok(BooleanArray::new(kept(self.expr.eval(&columns, n)?, n, partial)?, None))
    }

    /// When the only filter column in `batch` is dictionary-encoded text (a codelist test on
    /// a code column, the usual first pass), which rows to keep: the filter is a function of
    /// that column's value, so it is computed once per dictionary value (and for NULL), and
    /// each row looks its value's result up. `None` when the batch is not of that shape.
    fn by_dictionary(&mut self, batch: &RecordBatch, partial: bool) -> Result<Option<BooleanArray>, String> {
        use arrow_array::Array as _;
        use arrow_array::cast::AsArray;
        let schema = batch.schema();
        let mut present = self.columns.iter().enumerate().filter_map(|(k, (name, _))| Some((k, schema.index_of(name).ok()?)));
        let (Some((column, at)), None) = (present.next(), present.next()) else { return Ok(None) };
        if !partial && self.columns.len() != 1 {
            // A full pass with columns missing: the caller says so.
            return Ok(None);
        }
        let t = self.columns[column].1.clone();
        let array = batch.column(at);
        let Some(dict) = array.as_dictionary_opt::<arrow_array::types::Int32Type>() else { return Ok(None) };
        let values = dict.values();
        if !matches!(t, Type::Str | Type::Code(_) | Type::MultiCodeString(_)) || values.data_type() != &arrow_schema::DataType::Utf8 {
            return Ok(None);
        }
        let same = |v: &Verdicts| v.partial == partial && (Arc::ptr_eq(&v.values, values) || v.values.to_data().ptr_eq(&values.to_data()));
        if !self.verdicts.as_ref().is_some_and(same) {
            let keep = self.per_value(column, values.as_string::<i32>(), partial)?;
            let mut columns: Vec<Option<Array>> = vec![None; self.columns.len()];
            columns[column] = Some(Array::splat(&t, &None, 1));
            let null = kept(self.expr.eval(&columns, 1)?, 1, partial)?.value(0);
            self.verdicts = Some(Verdicts { values: values.clone(), partial, keep, null });
        }
        let v = self.verdicts.as_ref().expect("just made");
        let keys = dict.keys().values();
        // A key past the dictionary (a damaged file) keeps its row, for the reading that
        // follows to report.
        let keep = match dict.nulls() {
            None => BooleanBuffer::collect_bool(keys.len(), |i| v.keep.get(keys[i] as usize).copied().unwrap_or(true)),
            Some(nulls) => BooleanBuffer::collect_bool(keys.len(), |i| {
                if nulls.is_valid(i) { v.keep.get(keys[i] as usize).copied().unwrap_or(true) } else { v.null }
            }),
        };
        Ok(Some(BooleanArray::new(keep, None)))
    }

    /// Whether a first pass over the `cheap` columns (the others read only for the rows it
    /// keeps) can drop rows: the filter reads both kinds.
    pub fn splits(&self, cheap: impl Fn(&str) -> bool) -> bool {
        let n = self.columns.iter().filter(|(c, _)| cheap(c)).count();
        n > 0 && n < self.columns.len()
    }

    /// The rows to keep for each value of a dictionary of `column`'s texts: those known from
    /// other chunks looked up, the rest computed (as a column of the texts) and remembered.
    fn per_value(&mut self, column: usize, texts: &arrow_array::StringArray, partial: bool) -> Result<Vec<bool>, String> {
        use arrow_array::Array as _;
        let (name, t) = &self.columns[column];
        let mut keep = vec![false; texts.len()];
        let mut unknown = vec![];
        {
            let known = self.known.lock().expect("not poisoned");
            for (i, slot) in keep.iter_mut().enumerate() {
                match texts.is_valid(i).then(|| known[partial as usize].get(texts.value(i))).flatten() {
                    Some(k) => *slot = *k,
                    None => unknown.push(i),
                }
            }
        }
        if unknown.is_empty() {
            return Ok(keep);
        }
        let these: arrow_array::StringArray = unknown.iter().map(|&i| texts.is_valid(i).then(|| texts.value(i))).collect();
        let mut columns: Vec<Option<Array>> = vec![None; self.columns.len()];
        columns[column] = Some(from_arrow(&these, t, &mut DictMemo::default()).map_err(|m| format!("column '{name}': {m}"))?);
        let verdicts = kept(self.expr.eval(&columns, these.len())?, these.len(), partial)?;
        let mut known = self.known.lock().expect("not poisoned");
        for (j, &i) in unknown.iter().enumerate() {
            keep[i] = verdicts.value(j);
            if texts.is_valid(i) && known[partial as usize].len() < KNOWN {
                known[partial as usize].insert(texts.value(i).into(), keep[i]);
            }
        }
        Ok(keep)
    }
}

/// The rows to keep of a filter's value over `n` rows: where it is True; in a first pass
/// (`partial`), also where it is NULL or unknown (a later column may still make it True).
fn kept(value: Tv, n: usize, partial: bool) -> Result<BooleanBuffer, String> {
    Ok(match value {
        Tv::Unknown | Tv::Const(None) => BooleanBuffer::collect_bool(n, |_| partial),
        Tv::Const(Some(Value::Bool(b))) => BooleanBuffer::collect_bool(n, |_| b),
        Tv::Col(a @ Array::Bool(..)) if !partial => a.true_bits(),
        Tv::Col(Array::Bool(v, nulls)) => match nulls {
            None => v,
            Some(nulls) => &v | &!nulls.inner(),
        },
        Tv::Const(Some(other)) => return Err(format!("a pushed condition gave {other:?}, not a boolean")),
        Tv::Col(_) => return Err("a pushed condition gave a column that is not boolean".into()),
    })
}

impl Expr {
    /// The expression over a batch's typed columns (`None`: not in this pass), through the
    /// column kernels a `Filter` node's condition is computed with; arguments that are the
    /// same for every row are computed once.
    fn eval(&mut self, columns: &[Option<Array>], n: usize) -> Result<Tv, String> {
        let (function, args, cache) = match self {
            Expr::Column(i) => return Ok(columns[*i].clone().map_or(Tv::Unknown, Tv::Col)),
            Expr::Literal(v, _) => return Ok(Tv::Const(v.clone())),
            Expr::Set(_) => unreachable!("sets are read by In"),
            Expr::Apply { function, args, cache } => (function, args, cache),
        };
        if let Function::In(..) = function {
            let Expr::Set(set) = &args[1] else { unreachable!("compiled with a set") };
            let set = set.clone();
            return Ok(match args[0].eval(columns, n)? {
                Tv::Unknown => Tv::Unknown,
                Tv::Const(v) => Tv::Const(set.test(&v)),
                Tv::Col(a) => Tv::Col(member(&set, &a, cache)),
            });
        }
        let logic = matches!(function, Function::And(_) | Function::Or(_));
        let mut values = Vec::with_capacity(args.len());
        for a in args.iter_mut() {
            match a.eval(columns, n)? {
                // Kleene logic never turns an unknown into a False that a known value would
                // make True: in `and`/`or` an unknown is a NULL; elsewhere it stays unknown.
                Tv::Unknown if logic => values.push(Tv::Const(None)),
                Tv::Unknown => return Ok(Tv::Unknown),
                v => values.push(v),
            }
        }
        if values.iter().all(|v| matches!(v, Tv::Const(_))) {
            let row: Vec<Scalar> = values.into_iter().map(|v| if let Tv::Const(c) = v { c } else { None }).collect();
            return Ok(Tv::Const(semantics::apply(function, &row).map_err(|e| e.message)?));
        }
        let arrays: Vec<Array> = values
            .into_iter()
            .zip(args.iter())
            .map(|(v, a)| match v {
                Tv::Col(c) => c,
                Tv::Const(c) => Array::splat(&a.type_when_same(), &c, n),
                Tv::Unknown => unreachable!("handled above"),
            })
            .collect();
        Ok(Tv::Col(ck::apply(function, &arrays, &Type::Bool, n).map_err(|e| e.message)?))
    }

    /// The alternatives of a top-level `or` (one for anything else).
    #[cfg(test)]
    fn alternatives(&self) -> usize {
        match self {
            Expr::Apply { function: Function::Or(_), args, .. } => args.len(),
            _ => 1,
        }
    }

    /// The type of an argument that evaluated to one value for every row: a literal's, or a
    /// boolean (conditions, and unknown columns under `and`/`or`).
    fn type_when_same(&self) -> Type {
        match self {
            Expr::Literal(_, t) => t.clone(),
            _ => Type::Bool,
        }
    }
}

/// `In` over a column: a text column's dictionary tested once (and the results kept while
/// batches share it), anything else as the evaluator's `In` does.
fn member(set: &SetIndex, a: &Array, cache: &mut Option<MemberCache>) -> Array {
    let Array::Text(keys, dict, nulls) = a else { return crate::columnar::member(set, a) };
    if set.is_empty() {
        return crate::columnar::member(set, a);
    }
    if !cache.as_ref().is_some_and(|c| Arc::ptr_eq(&c.dict, dict)) {
        *cache = Some(MemberCache { dict: dict.clone(), hits: Arc::new(crate::columnar::dict_hits(set, dict)) });
    }
    crate::columnar::by_key(keys, &cache.as_ref().expect("just filled").hits, nulls)
}

/// The frames a patient must have a row in for `population` to hold: each
/// `exists_for_patient` names its frame, `|` needs one of its sides', `&` either side's.
/// `None` when the population can hold for a patient without rows (or the shape is not one of
/// these).
pub fn required_frames(graph: &Graph, population: NodeId) -> Option<Vec<NodeId>> {
    match graph.node(population) {
        Node::AggregateByPatient(quarry_queries::qm::AggregateByPatient::Exists(frame))
            if matches!(graph.kind(*frame), Kind::EventFrame { .. }) =>
        {
            Some(vec![*frame])
        }
        Node::Function(Function::Or(args)) => {
            let mut all = vec![];
            for a in args {
                for f in required_frames(graph, *a)? {
                    if !all.contains(&f) {
                        all.push(f);
                    }
                }
            }
            Some(all)
        }
        Node::Function(Function::And(args)) => args.iter().filter_map(|a| required_frames(graph, *a)).min_by_key(Vec::len),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{DictionaryArray, Int64Array, StringArray, types::Int32Type};
    use quarry_queries::qm::{AggregateByPatient, CodeSystem, Column, TableSchema};

    /// A table `events` of a column `name` of type `t` and an integer column `n`.
    fn events_table(g: &mut Graph, t: Type, name: &str) -> TableId {
        let column = |name: &str, type_| Column { name: name.into(), type_, constraints: vec![], description: String::new() };
        let schema = TableSchema {
            name: "events".into(),
            columns: vec![column(name, t), column("n", Type::Int)],
            patient_level: false,
            required_permission: None,
        };
        g.declare_table(schema).unwrap()
    }

    /// A filter over one dictionary-encoded column is computed per dictionary value
    /// (`by_dictionary`); it must keep exactly the rows the per-row route keeps, in a first
    /// pass and a full one, with NULL rows and a NULL dictionary value, across batches that
    /// share a dictionary and one that does not.
    #[test]
    fn a_filter_over_one_dictionary_column_keeps_what_the_per_row_route_keeps() {
        let mut g = Graph::new();
        let events = events_table(&mut g, Type::Code(CodeSystem::CTV3), "code");
        let t = g.select_table(events).unwrap();
        let code = g.select_column(t, "code").unwrap();
        let n = g.select_column(t, "n").unwrap();
        let ctv3 = |s: &str| Value::Code(CodeSystem::CTV3, s.into());
        let set = g.value(Value::set(Type::Code(CodeSystem::CTV3), vec![ctv3("A1"), ctv3("C3")]).unwrap());
        let in_set = g.function(Function::In(code, set)).unwrap();
        let b2 = g.value(ctv3("B2"));
        let is_b2 = g.function(Function::Eq(code, b2)).unwrap();
        let not_b2 = g.function(Function::Ne(code, b2)).unwrap();
        let null = g.function(Function::IsNull(code)).unwrap();
        let either = g.function(Function::Or(vec![in_set, is_b2])).unwrap();
        let not_in = g.function(Function::Not(in_set)).unwrap();
        let three = g.value(Value::Int(3));
        let small = g.function(Function::Lt(n, three)).unwrap();
        let mixed = g.function(Function::And(vec![in_set, small])).unwrap();
        let dict = |keys: Vec<Option<i32>>, values: Vec<Option<&str>>| {
            DictionaryArray::<Int32Type>::try_new(keys.into(), Arc::new(StringArray::from(values))).unwrap()
        };
        let shared = Arc::new(StringArray::from(vec![Some("A1"), Some("B2"), None, Some("C3"), Some("D4")]));
        let batches = [
            DictionaryArray::<Int32Type>::try_new(vec![Some(0), Some(1), None, Some(2), Some(3), Some(4)].into(), shared.clone()).unwrap(),
            DictionaryArray::<Int32Type>::try_new(vec![Some(4), Some(3), Some(0), None].into(), shared).unwrap(),
            dict(vec![Some(1), Some(0), None, Some(0)], vec![Some("C3"), Some("B2")]),
        ];
        // The same texts, not dictionary-encoded.
        let plain = |keys: &DictionaryArray<Int32Type>| -> arrow_array::ArrayRef {
            use arrow_array::Array as _;
            use arrow_array::cast::AsArray;
            let values = keys.values().as_string::<i32>();
            let text = |k: i32| values.is_valid(k as usize).then(|| values.value(k as usize));
            Arc::new(keys.keys().iter().map(|k| k.and_then(text)).collect::<StringArray>())
        };
        for condition in [in_set, is_b2, not_b2, null, either, not_in, mixed] {
            let frame = g.filter(t, condition).unwrap();
            let exists = g.aggregate(AggregateByPatient::Exists(frame)).unwrap();
            let mut filters = plan(&g, &[exists], &[]);
            let filter = filters.remove(&events).expect("pushed");
            for partial in [true, false] {
                let (mut by_value, mut by_row) = (filter.clone(), filter.clone());
                for keys in &batches {
                    let rows = keys.len();
                    let ns = Arc::new(Int64Array::from((0..rows as i64).collect::<Vec<_>>()));
                    let plain = plain(keys);
                    let only_code = |code: arrow_array::ArrayRef| RecordBatch::try_from_iter([("code", code)]).unwrap();
                    let with_n =
                        |code: arrow_array::ArrayRef| RecordBatch::try_from_iter([("code", code), ("n", ns.clone() as _)]).unwrap();
                    let reads_n = filter.columns.len() == 2;
                    if reads_n && !partial {
                        // Two columns: the per-row route, whatever the encoding.
                        let a = by_value.evaluate(&with_n(Arc::new(keys.clone())), false).unwrap();
                        assert_eq!(a, by_row.evaluate(&with_n(plain), false).unwrap());
                        continue;
                    }
                    let a = by_value.evaluate(&only_code(Arc::new(keys.clone())), partial).unwrap();
                    let b = by_row.evaluate(&only_code(plain), partial).unwrap();
                    assert_eq!(a, b, "condition {condition:?}, partial {partial}, keys {keys:?}");
                }
            }
        }
    }

    /// A condition reading parameters (a measures definition's `is_during(INTERVAL)`) is
    /// pushed as the union of its bindings, with date ranges merged: the rows kept are exactly
    /// those some binding keeps, for adjoining, overlapping and separate intervals, single
    /// days, strict bounds and the date on either side, NULL dates dropped (kept by a first
    /// pass); a condition mixing in another column is pushed unmerged; without bindings,
    /// nothing is pushed.
    #[test]
    fn a_condition_on_parameters_keeps_what_some_binding_keeps() {
        use arrow_array::Date32Array;
        use jiff::civil::date;
        let mut g = Graph::new();
        let events = events_table(&mut g, Type::Date, "d");
        let t = g.select_table(events).unwrap();
        let d = g.select_column(t, "d").unwrap();
        let n = g.select_column(t, "n").unwrap();
        let (start, end) = (g.parameter("interval_start_date", Type::Date), g.parameter("interval_end_date", Type::Date));
        let after = g.function(Function::Ge(d, start)).unwrap();
        let before = g.function(Function::Le(d, end)).unwrap();
        let during = g.function(Function::And(vec![after, before])).unwrap();
        // The same interval written with strict bounds and the date on the right.
        let strictly_after = g.function(Function::Lt(start, d)).unwrap();
        let strictly_before = g.function(Function::Gt(end, d)).unwrap();
        let open = g.function(Function::And(vec![strictly_after, strictly_before])).unwrap();
        let on_start = g.function(Function::Eq(d, start)).unwrap();
        let three = g.value(Value::Int(3));
        let small = g.function(Function::Lt(n, three)).unwrap();
        let mixed = g.function(Function::And(vec![during, small])).unwrap();
        let either = g.function(Function::Or(vec![during, small])).unwrap();
        // `is_during` written the other way round: end >= d and start <= d.
        let (end_after, start_before) = (g.function(Function::Ge(end, d)).unwrap(), g.function(Function::Le(start, d)).unwrap());
        let flipped = g.function(Function::And(vec![end_after, start_before])).unwrap();
        let bind = |intervals: &[(jiff::civil::Date, jiff::civil::Date)]| -> Vec<Bindings> {
            intervals.iter().map(|&interval| crate::measures::interval_parameters(interval)).collect()
        };
        let months = [(date(2020, 1, 1), date(2020, 1, 31)), (date(2020, 2, 1), date(2020, 2, 29)), (date(2020, 3, 1), date(2020, 3, 31))];
        let apart = [(date(2020, 1, 5), date(2020, 1, 9)), (date(2020, 2, 1), date(2020, 2, 1)), (date(2020, 3, 10), date(2020, 3, 20))];
        let overlapping =
            [(date(2020, 3, 1), date(2020, 3, 20)), (date(2020, 1, 1), date(2020, 2, 10)), (date(2020, 2, 5), date(2020, 3, 2))];
        // Every day from Christmas 2019 to April 2020, and NULLs.
        let first = crate::column::date_days(date(2019, 12, 25));
        let days: Vec<Option<i32>> = (first..first + 110).map(Some).chain([None, None]).collect();
        let rows = days.len();
        let ns = Arc::new(Int64Array::from((0..rows as i64).map(|i| i % 5).collect::<Vec<_>>()));
        let dates = Arc::new(Date32Array::from(days.clone()));
        let only_d = RecordBatch::try_from_iter([("d", dates.clone() as arrow_array::ArrayRef)]).unwrap();
        let both = RecordBatch::try_from_iter([("d", dates as arrow_array::ArrayRef), ("n", ns as _)]).unwrap();
        for intervals in [&months[..], &apart, &overlapping, &months[..1]] {
            let bindings = bind(intervals);
            for condition in [during, open, on_start, mixed, either, flipped] {
                let frame = g.filter(t, condition).unwrap();
                let exists = g.aggregate(AggregateByPatient::Exists(frame)).unwrap();
                assert!(plan(&g, &[exists], &[]).is_empty(), "pushed without bindings");
                let mut filter = plan(&g, &[exists], &bindings).remove(&events).expect("pushed");
                // The date part under some binding (false for a NULL date), and the `n` part.
                let dated = |row: usize| {
                    let Some(day) = days[row] else { return false };
                    let day = crate::column::days_date(day);
                    intervals.iter().any(|&(s, e)| match condition {
                        c if c == open => s < day && day < e,
                        c if c == on_start => day == s,
                        _ => s <= day && day <= e,
                    })
                };
                let small_n = |row: usize| row % 5 < 3;
                let want: Vec<bool> = (0..rows)
                    .map(|r| match condition {
                        c if c == mixed => dated(r) && small_n(r),
                        c if c == either => dated(r) || small_n(r),
                        _ => dated(r),
                    })
                    .collect();
                let bits = |a: BooleanArray| a.values().iter().collect::<Vec<_>>();
                assert_eq!(bits(filter.evaluate(&both, false).unwrap()), want, "{condition:?} over {intervals:?}");
                // A first pass over the dates alone keeps what may hold: NULL dates too, and
                // every row when the unread `n` alone could make the condition hold.
                let may: Vec<bool> = (0..rows).map(|r| days[r].is_none() || dated(r) || condition == either).collect();
                assert_eq!(bits(filter.evaluate(&only_d, true).unwrap()), may, "first pass, {condition:?} over {intervals:?}");
                // Merged: one range per run of consecutive days kept; the `n` test kept once,
                // beside the ranges (`mixed`: an `and` of it and the ranges' `or`).
                let runs = (0..rows).filter(|&r| dated(r) && (r == 0 || !dated(r - 1))).count();
                let expected = match condition {
                    c if c == mixed => 1,
                    c if c == either => runs + 1,
                    _ => runs,
                };
                assert_eq!(filter.expr.alternatives(), expected, "{condition:?} over {intervals:?}");
            }
        }
        // A hundred separate days would be a hundred alternatives to test on every row: not
        // pushed (the scan reads the rows, the evaluator applies the condition).
        let separate: Vec<_> = (0..100).map(|k| crate::column::days_date(first + 2 * k)).map(|day| (day, day)).collect();
        let frame = g.filter(t, on_start).unwrap();
        let exists = g.aggregate(AggregateByPatient::Exists(frame)).unwrap();
        assert!(plan(&g, &[exists], &bind(&separate)).is_empty());
        assert!(!plan(&g, &[exists], &bind(&separate[..ALTERNATIVES])).is_empty());
    }
}
