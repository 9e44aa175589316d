//! Row filters pushed into a backend's scan. When every set of rows a definition can observe
//! from an event table (a frame it aggregates, picks from or outputs, or the domain of a series
//! it aggregates) starts with a `where` on the table itself whose condition reads only that
//! table's columns and literals, a row that satisfies none of those conditions can never reach
//! a result, so the scan drops it. This is what makes a codelist query over tens of millions
//! of events cheap: the condition is tested on the Parquet column's dictionary (each distinct
//! code once) and the other columns are decoded only for the rows kept.
//!
//! The evaluator still applies every condition afterwards; the pushed filter only removes rows
//! no condition keeps. Only functions that cannot fail are pushed (comparisons, `is_in`,
//! `is_null`, and/or/not), so a pushed filter never raises an error the query would not.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Int32Type, Int64Type};
use arrow_array::{Array, ArrayRef, BooleanArray, RecordBatch};
use arrow_schema::DataType;
use quarry_queries::qm::{Function, Graph, Kind, Node, NodeId, TableId, Type, Value, function_inputs};
use quarry_queries::semantics::{self, Scalar};

use crate::arrow_io::{column_values, typed_value_at};
use crate::kernels::SetIndex;

/// One table's pushed filter: a row is kept when any of the conditions holds.
#[derive(Clone)]
pub struct TableFilter {
    /// The columns the conditions read, with their schema types.
    pub columns: Vec<(String, Type)>,
    expr: Expr,
}

#[derive(Clone)]
enum Expr {
    Column(usize),
    Literal(Scalar),
    /// A literal set, the right-hand side of `In`.
    Set(Arc<SetIndex>),
    Apply {
        function: Function,
        args: Vec<Expr>,
        cache: Option<DictCache>,
    },
}

/// A test's results over the last dictionary seen (Parquet hands every batch of a column chunk
/// the same dictionary): the dictionary, held so it is compared and never a freed look-alike,
/// and a result per dictionary value.
#[derive(Clone)]
struct DictCache {
    values: ArrayRef,
    results: Vec<u8>,
}

const FALSE: u8 = 0;
const TRUE: u8 = 1;
const NULL: u8 = 2;

/// A value over a batch: the same for every row, a column, three-valued booleans, or unknown
/// (it reads a column a first pass does not have).
enum Tv {
    Const(Scalar),
    Array(ArrayRef, Type),
    Tri(Vec<u8>),
    Unknown,
}

/// The pushed filter of each event table the `roots` read, where one applies.
pub fn plan(graph: &Graph, roots: &[NodeId]) -> HashMap<TableId, TableFilter> {
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
    starts.into_iter().filter_map(|(table, list)| Some((table, filter_of(graph, &list)?))).collect()
}

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

/// A filter keeping the rows any of the `starts` keeps, if each can be pushed.
fn filter_of(graph: &Graph, starts: &[Option<(NodeId, NodeId)>]) -> Option<TableFilter> {
    let mut columns = vec![];
    let mut conditions = vec![];
    for s in starts {
        let (select, condition) = (*s)?;
        conditions.push(compile(graph, condition, select, &mut columns)?);
    }
    let expr = if conditions.len() == 1 {
        conditions.pop().expect("one")
    } else {
        Expr::Apply { function: Function::Or(vec![]), args: conditions, cache: None }
    };
    Some(TableFilter { columns, expr })
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
    by_table.into_iter().map(|(t, list)| Some((t, filter_of(graph, &list)?))).collect()
}

/// The condition as a pushed expression, if it reads only `select`'s columns and literals
/// through functions that cannot fail.
fn compile(graph: &Graph, node: NodeId, select: NodeId, columns: &mut Vec<(String, Type)>) -> Option<Expr> {
    match graph.node(node) {
        Node::Value(Value::Set(..)) => None,
        Node::Value(v) => Some(Expr::Literal(Some(v.clone()))),
        Node::SelectColumn { source, name } if *source == select => {
            let i = columns.iter().position(|(c, _)| c == name).unwrap_or_else(|| {
                columns.push((name.clone(), graph.type_of(node).cloned().expect("a column is a series")));
                columns.len() - 1
            });
            Some(Expr::Column(i))
        }
        Node::Function(f @ Function::In(x, set)) => {
            let Node::Value(Value::Set(_, values)) = graph.node(*set) else { return None };
            let x = compile(graph, *x, select, columns)?;
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
            let args = function_inputs(f).into_iter().map(|a| compile(graph, a, select, columns)).collect::<Option<Vec<_>>>()?;
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
        let columns: Vec<Option<(ArrayRef, Type)>> =
            self.columns.iter().map(|(name, t)| schema.index_of(name).ok().map(|i| (batch.column(i).clone(), t.clone()))).collect();
        if !partial && columns.iter().any(Option::is_none) {
            return Err("a filter column is missing from the batch".into());
        }
        let n = batch.num_rows();
        let tri = to_tri(self.expr.eval(&columns, n)?, n)?;
        let pass = |t: u8| if partial { t != FALSE } else { t == TRUE };
        Ok(BooleanArray::new(arrow_buffer::BooleanBuffer::collect_bool(n, |i| pass(tri[i])), None))
    }

    /// Whether a first pass over the `cheap` columns (the others read only for the rows it
    /// keeps) can drop rows: the filter reads both kinds.
    pub fn splits(&self, cheap: impl Fn(&str) -> bool) -> bool {
        let n = self.columns.iter().filter(|(c, _)| cheap(c)).count();
        n > 0 && n < self.columns.len()
    }
}

fn bool_tri(v: &Scalar) -> Result<u8, String> {
    match v {
        None => Ok(NULL),
        Some(Value::Bool(b)) => Ok(*b as u8),
        Some(other) => Err(format!("a pushed condition gave {other:?}, not a boolean")),
    }
}

/// Per row: `NULL` where the array is null, else `value(i)`.
fn per_row(a: &dyn Array, n: usize, value: impl Fn(usize) -> u8) -> Vec<u8> {
    match a.logical_nulls() {
        None => (0..n).map(value).collect(),
        Some(nulls) => (0..n).map(|i| if nulls.is_valid(i) { value(i) } else { NULL }).collect(),
    }
}

fn to_tri(v: Tv, n: usize) -> Result<Vec<u8>, String> {
    Ok(match v {
        Tv::Tri(t) => t,
        Tv::Unknown => vec![NULL; n],
        Tv::Const(c) => vec![bool_tri(&c)?; n],
        Tv::Array(a, _) if *a.data_type() == DataType::Boolean => {
            let b = a.as_boolean();
            per_row(b, n, |i| b.value(i) as u8)
        }
        Tv::Array(a, _) => return Err(format!("a pushed condition read a {} column as a boolean", a.data_type())),
    })
}

/// The values of an argument, one per row.
fn to_scalars(v: &Tv, n: usize) -> Result<Vec<Scalar>, String> {
    Ok(match v {
        Tv::Const(c) => vec![c.clone(); n],
        Tv::Array(a, t) => column_values(a.as_ref(), t)?,
        Tv::Tri(t) => t.iter().map(|&t| (t != NULL).then_some(Value::Bool(t == TRUE))).collect(),
        Tv::Unknown => unreachable!("unknown values are not compared"),
    })
}

/// The ordering a comparison asks for, applied to `a ? b`.
fn compares(function: &Function, o: std::cmp::Ordering) -> bool {
    match function {
        Function::Eq(..) => o.is_eq(),
        Function::Ne(..) => o.is_ne(),
        Function::Lt(..) => o.is_lt(),
        Function::Le(..) => o.is_le(),
        Function::Gt(..) => o.is_gt(),
        Function::Ge(..) => o.is_ge(),
        _ => unreachable!("comparisons only"),
    }
}

/// `Lt` for `Gt` and so on: the comparison with its sides swapped.
fn swapped(function: &Function) -> Function {
    match *function {
        Function::Lt(l, r) => Function::Gt(r, l),
        Function::Le(l, r) => Function::Ge(r, l),
        Function::Gt(l, r) => Function::Lt(r, l),
        Function::Ge(l, r) => Function::Le(r, l),
        Function::Eq(l, r) => Function::Eq(r, l),
        Function::Ne(l, r) => Function::Ne(r, l),
        ref other => other.clone(),
    }
}

impl Expr {
    fn eval(&mut self, columns: &[Option<(ArrayRef, Type)>], n: usize) -> Result<Tv, String> {
        let (function, args, cache) = match self {
            Expr::Column(i) => return Ok(columns[*i].as_ref().map_or(Tv::Unknown, |(a, t)| Tv::Array(a.clone(), t.clone()))),
            Expr::Literal(v) => return Ok(Tv::Const(v.clone())),
            Expr::Set(_) => unreachable!("sets are read by In"),
            Expr::Apply { function, args, cache } => (function, args, cache),
        };
        if let Function::In(..) = function {
            let Expr::Set(set) = &args[1] else { unreachable!("compiled with a set") };
            let set = set.clone();
            let x = args[0].eval(columns, n)?;
            if let Tv::Unknown = x {
                return Ok(Tv::Unknown);
            }
            return by_value(&x, n, cache, |v| bool_tri(&set.test(v)));
        }
        let values: Vec<Tv> = args.iter_mut().map(|a| a.eval(columns, n)).collect::<Result<_, _>>()?;
        match function {
            Function::And(_) | Function::Or(_) => {
                let (decisive, other) = if matches!(function, Function::Or(_)) { (TRUE, FALSE) } else { (FALSE, TRUE) };
                let mut out = vec![other; n];
                // Unknown arguments count once (as NULL), and only if no argument decides.
                let unknown = values.iter().any(|v| matches!(v, Tv::Unknown));
                let values = values.into_iter().filter(|v| !matches!(v, Tv::Unknown)).chain(unknown.then_some(Tv::Unknown));
                for v in values {
                    for (o, t) in out.iter_mut().zip(to_tri(v, n)?) {
                        if *o != decisive && t != other {
                            *o = t;
                        }
                    }
                }
                Ok(Tv::Tri(out))
            }
            _ if values.iter().any(|v| matches!(v, Tv::Unknown)) => Ok(Tv::Unknown),
            Function::Not(_) => Ok(Tv::Tri(
                to_tri(values.into_iter().next().expect("one argument"), n)?
                    .into_iter()
                    .map(|t| if t == NULL { NULL } else { 1 - t })
                    .collect(),
            )),
            Function::IsNull(_) => Ok(match &values[0] {
                Tv::Const(c) => Tv::Const(Some(Value::Bool(c.is_none()))),
                Tv::Array(a, _) => Tv::Tri(match a.logical_nulls() {
                    None => vec![FALSE; n],
                    Some(nulls) => (0..n).map(|i| nulls.is_null(i) as u8).collect(),
                }),
                Tv::Tri(t) => Tv::Tri(t.iter().map(|&t| (t == NULL) as u8).collect()),
                Tv::Unknown => unreachable!("handled above"),
            }),
            _ => compare(function, &values, n, cache),
        }
    }
}

/// A comparison: on a dictionary column against a literal, once per distinct value; on a
/// date or integer column against a literal, on the raw numbers; otherwise value by value
/// with the shared semantics.
fn compare(function: &Function, values: &[Tv], n: usize, cache: &mut Option<DictCache>) -> Result<Tv, String> {
    let (x, lit, f) = match values {
        [x @ Tv::Array(..), Tv::Const(c)] => (x, c, function.clone()),
        [Tv::Const(c), x @ Tv::Array(..)] => (x, c, swapped(function)),
        _ => {
            let (a, b) = (to_scalars(&values[0], n)?, to_scalars(&values[1], n)?);
            return Ok(Tv::Tri(
                a.into_iter()
                    .zip(b)
                    .map(|(a, b)| semantics::apply(function, &[a, b]).map_err(|e| e.message).and_then(|v| bool_tri(&v)))
                    .collect::<Result<_, _>>()?,
            ));
        }
    };
    let Tv::Array(a, _) = x else { unreachable!("matched an array") };
    match (a.data_type(), lit) {
        (DataType::Date32, Some(Value::Date(d))) => {
            let d = crate::dummy::days::to_days(*d);
            let v = a.as_primitive::<Date32Type>().values();
            return Ok(Tv::Tri(per_row(a.as_ref(), n, |i| compares(&f, (v[i] as i64).cmp(&d)) as u8)));
        }
        (DataType::Int64, Some(Value::Int(k))) => {
            let v = a.as_primitive::<Int64Type>().values();
            return Ok(Tv::Tri(per_row(a.as_ref(), n, |i| compares(&f, v[i].cmp(k)) as u8)));
        }
        _ => {}
    }
    let lit = lit.clone();
    by_value(x, n, cache, |v| semantics::apply(&f, &[v.clone(), lit.clone()]).map_err(|e| e.message).and_then(|r| bool_tri(&r)))
}

/// A one-argument test over `x`: per distinct value of a dictionary column (cached while the
/// dictionary stays the same), else per row.
fn by_value(x: &Tv, n: usize, cache: &mut Option<DictCache>, test: impl Fn(&Scalar) -> Result<u8, String>) -> Result<Tv, String> {
    match x {
        Tv::Array(a, t) if matches!(a.data_type(), DataType::Dictionary(..)) => {
            let dict = a.as_any_dictionary();
            let values = dict.values();
            let fresh = cache.as_ref().is_none_or(|c| {
                let (held, new) = (c.values.to_data(), values.to_data());
                !Arc::ptr_eq(&c.values, values) && !held.ptr_eq(&new) && held != new
            });
            if fresh {
                let results =
                    (0..values.len()).map(|i| typed_value_at(values.as_ref(), i, t).and_then(|v| test(&v))).collect::<Result<_, _>>()?;
                *cache = Some(DictCache { values: values.clone(), results });
            }
            let results = &cache.as_ref().expect("filled").results;
            let null = test(&None)?;
            // A null key or a null dictionary value is NULL.
            let nulls = a.logical_nulls();
            let valid = |i: usize| nulls.as_ref().is_none_or(|b| b.is_valid(i));
            Ok(Tv::Tri(match a.as_dictionary_opt::<Int32Type>() {
                Some(d) => {
                    let keys = d.keys().values();
                    (0..n).map(|i| if valid(i) { results[keys[i] as usize] } else { null }).collect()
                }
                None => {
                    let keys = dict.normalized_keys();
                    (0..n).map(|i| if valid(i) { results[keys[i]] } else { null }).collect()
                }
            }))
        }
        other => Ok(Tv::Tri(to_scalars(other, n)?.iter().map(&test).collect::<Result<_, _>>()?)),
    }
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
