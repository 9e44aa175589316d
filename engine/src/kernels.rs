//! What both evaluators share beyond scalar semantics: indexed literal sets for `In`, the sort
//! keys and tie-break columns of each pick, inline tables by patient, and the aggregations
//! over one patient's values. Keeping one copy keeps the evaluators' answers the same.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use quarry_queries::qm::{AggregateByPatient as A, Graph, Kind, Node, NodeId, Position, RowsId, TableId, Type, Value};
use quarry_queries::semantics::{self, EvalError, Scalar, compare_nulls_first};

/// A literal set (a codelist), indexed for `In`: text members hashed, the rest scanned.
pub struct SetIndex {
    text: std::collections::HashSet<String>,
    other: Vec<Value>,
    empty: bool,
}

impl SetIndex {
    pub fn new(values: &[Value]) -> SetIndex {
        let mut index = SetIndex { text: Default::default(), other: vec![], empty: values.is_empty() };
        for v in values {
            match v {
                Value::Str(s) | Value::Code(_, s) => {
                    index.text.insert(s.clone());
                }
                v => index.other.push(v.clone()),
            }
        }
        index
    }

    /// `x IN set` with ehrQL's NULL rule (`semantics::apply` for `In`, without copying the set).
    pub fn test(&self, x: &Scalar) -> Scalar {
        if self.empty {
            return Some(Value::Bool(false));
        }
        let x = x.as_ref()?;
        Some(Value::Bool(match x {
            Value::Str(s) | Value::Code(_, s) => self.text.contains(s),
            x => self.other.iter().any(|v| semantics::equal(v, x)),
        }))
    }
}

/// The literal sets `In` reads among the `needed` nodes, by the set's node.
pub fn set_indexes(graph: &Graph, needed: &[NodeId]) -> HashMap<NodeId, SetIndex> {
    let mut sets = HashMap::new();
    for &n in needed {
        if let Node::Function(quarry_queries::qm::Function::In(_, set)) = graph.node(n)
            && let Node::Value(Value::Set(_, values)) = graph.node(*set)
        {
            sets.insert(*set, SetIndex::new(values));
        }
    }
    sets
}

/// What `PickOneRowPerPatient` orders by: the user's sorts, then ehrQL's tie-break on every
/// selected column not sorted on directly (ehrql.md §1.6).
pub struct PickPlan {
    pub keys: Vec<NodeId>,
    pub tie_columns: Vec<usize>,
}

pub fn frame_table(graph: &Graph, frame: NodeId) -> TableId {
    match graph.kind(frame) {
        Kind::EventFrame { table, .. } | Kind::PatientFrame { table } => *table,
        Kind::Series(_) => unreachable!("a frame"),
    }
}

pub fn column_index(graph: &Graph, frame: NodeId, name: &str) -> usize {
    graph.table(frame_table(graph, frame)).columns.iter().position(|c| c.name == name).expect("validated column")
}

impl PickPlan {
    /// The row `position` picks among `rows` (row numbers into `keys`, the sort keys' values,
    /// and into `row`, the table's rows): ordered by the keys, then the tie-break columns,
    /// NULLs first; `last` takes the last of equal rows, `first` the first.
    pub fn pick<'r>(
        &self,
        rows: impl IntoIterator<Item = usize>,
        position: Position,
        keys: &[&[Scalar]],
        row: impl Fn(usize) -> &'r [Scalar],
    ) -> Option<usize> {
        let order = |a: usize, b: usize| {
            keys.iter()
                .map(|k| compare_nulls_first(&k[a], &k[b]))
                .chain(self.tie_columns.iter().map(|&c| compare_nulls_first(&row(a)[c], &row(b)[c])))
                .find(|o| o.is_ne())
                .unwrap_or(std::cmp::Ordering::Equal)
        };
        let mut best: Option<usize> = None;
        for r in rows {
            best = Some(match best {
                None => r,
                Some(b) => match (position, order(r, b)) {
                    (Position::First, o) if o.is_lt() => r,
                    (Position::Last, o) if o.is_ge() => r,
                    _ => b,
                },
            });
        }
        best
    }
}

/// The pick plans of the `needed` picks.
pub fn pick_plans(graph: &Graph, needed: &[NodeId]) -> HashMap<NodeId, PickPlan> {
    let mut selected: HashMap<NodeId, BTreeSet<String>> = HashMap::new();
    for (_, node) in graph.iter() {
        if let Node::SelectColumn { source, name } = node
            && matches!(graph.node(*source), Node::PickOneRowPerPatient { .. })
        {
            selected.entry(*source).or_default().insert(name.clone());
        }
    }
    let mut picks = HashMap::new();
    for &n in needed {
        let Node::PickOneRowPerPatient { source, .. } = graph.node(n) else { continue };
        let (mut keys, mut chain, mut cur) = (vec![], vec![], *source);
        loop {
            chain.push(cur);
            match graph.node(cur) {
                Node::Sort { source, sort_by } => {
                    keys.push(*sort_by);
                    cur = *source;
                }
                Node::Filter { source, .. } => cur = *source,
                _ => break,
            }
        }
        let directly_sorted: Vec<&str> = keys
            .iter()
            .filter_map(|k| match graph.node(*k) {
                Node::SelectColumn { source, name } if chain.contains(source) => Some(name.as_str()),
                _ => None,
            })
            .collect();
        let tie_columns = selected
            .get(&n)
            .map(|cols| cols.iter().filter(|c| !directly_sorted.contains(&c.as_str())).map(|c| column_index(graph, *source, c)).collect())
            .unwrap_or_default();
        picks.insert(n, PickPlan { keys, tie_columns });
    }
    picks
}

/// Inline (`table_from_file`) tables among the `needed` nodes: each patient's values.
pub fn inline_tables(graph: &Graph, needed: &[NodeId]) -> HashMap<RowsId, HashMap<i64, Arc<Vec<Scalar>>>> {
    let mut inline = HashMap::new();
    for &n in needed {
        if let Node::InlinePatientTable { rows, .. } = graph.node(n) {
            let map = graph
                .inline_rows(*rows)
                .iter()
                .map(|r| {
                    let pid = if let Some(Value::Int(p)) = &r[0] { *p } else { 0 };
                    (pid, Arc::new(r[1..].to_vec()))
                })
                .collect();
            inline.insert(*rows, map);
        }
    }
    inline
}

fn num(v: &Value) -> f64 {
    match v {
        Value::Int(i) => *i as f64,
        Value::Float(f) => f.0,
        _ => f64::NAN,
    }
}

/// One patient's aggregation: `frame_len` is the size of the frame (`Exists`, `Count`),
/// `values` the non-NULL values of the series over the patient's rows, in row order.
pub fn aggregate(
    graph: &Graph,
    a: &A,
    frame_len: impl FnOnce() -> usize,
    values: impl FnOnce() -> Vec<Value>,
) -> Result<Scalar, EvalError> {
    Ok(match a {
        A::Exists(_) => Some(Value::Bool(frame_len() > 0)),
        A::Count(_) => Some(Value::Int(frame_len() as i64)),
        A::CountDistinct(_) => {
            let mut vals = values();
            vals.sort_by(semantics::compare);
            vals.dedup_by(|a, b| semantics::equal(a, b));
            Some(Value::Int(vals.len() as i64))
        }
        A::CountEpisodes { maximum_gap_days, .. } => {
            let mut dates: Vec<jiff::civil::Date> =
                values().into_iter().filter_map(|v| if let Value::Date(d) = v { Some(d) } else { None }).collect();
            dates.sort();
            if dates.is_empty() {
                Some(Value::Int(0))
            } else {
                Some(Value::Int(1 + dates.windows(2).filter(|w| semantics::days_between(w[0], w[1]) > *maximum_gap_days).count() as i64))
            }
        }
        A::Min(_) | A::Max(_) => {
            let mut best: Option<Value> = None;
            for v in values() {
                best = Some(match best {
                    None => v,
                    Some(b) => {
                        let o = semantics::compare(&v, &b);
                        if (matches!(a, A::Min(_)) && o.is_lt()) || (matches!(a, A::Max(_)) && o.is_gt()) { v } else { b }
                    }
                });
            }
            best
        }
        A::Sum(s) => {
            let vals = values();
            if vals.is_empty() {
                None
            } else if graph.type_of(*s) == Some(&Type::Int) {
                let mut acc: i64 = 0;
                for v in vals {
                    if let Value::Int(x) = v {
                        acc = acc.checked_add(x).ok_or_else(|| EvalError { kind: "OverflowError", message: "sum out of range".into() })?;
                    }
                }
                Some(Value::Int(acc))
            } else {
                Some(Value::Float(quarry_queries::qm::Float(semantics::float_sum(vals.iter().map(num)))))
            }
        }
        A::Mean(_) => {
            let vals = values();
            (!vals.is_empty())
                .then(|| Value::Float(quarry_queries::qm::Float(semantics::float_sum(vals.iter().map(num)) / vals.len() as f64)))
        }
        A::CombineAsSet(s) => {
            let t = graph.type_of(*s).cloned().expect("series");
            Some(Value::set(t, values()).map_err(|e| EvalError { kind: "TypeError", message: e.to_string() })?)
        }
    })
}
