//! What both evaluators share beyond scalar semantics: indexed literal sets for `In`, the sort
//! keys and tie-break columns of each pick, inline tables by patient, and the aggregations
//! over one patient's values. Keeping one copy keeps the evaluators' answers the same.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use quarry_queries::qm::{
    AggregateByPatient as A, Function, Graph, Kind, Node, NodeId, Position, RowsId, TableId, Type, Value, function_inputs,
};
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

    /// The empty set: `x IN set` is False, even for NULL.
    pub fn is_empty(&self) -> bool {
        self.empty
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
        pick_by(rows, position, order)
    }
}

/// The row `position` picks among `rows` in the order `order` gives: `first` the first of
/// the least, `last` the last of the greatest (the tie rule of both evaluators' picks).
pub fn pick_by(
    rows: impl IntoIterator<Item = usize>,
    position: Position,
    order: impl Fn(usize, usize) -> std::cmp::Ordering,
) -> Option<usize> {
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

/// The columns selected from each pick among `nodes`, by pick node, in name order.
fn selected_columns(graph: &Graph, nodes: impl Iterator<Item = NodeId>) -> HashMap<NodeId, BTreeSet<String>> {
    let mut selected: HashMap<NodeId, BTreeSet<String>> = HashMap::new();
    for n in nodes {
        if let Node::SelectColumn { source, name } = graph.node(n)
            && matches!(graph.node(*source), Node::PickOneRowPerPatient { .. })
        {
            selected.entry(*source).or_default().insert(name.clone());
        }
    }
    selected
}

/// A sorted frame's sorts: the keys (outermost first), the tie-break columns of a pick from
/// it (`selected` minus those sorted on directly, in name order), and its lowest `Sort` node.
/// A sort is direct when its key is a column of an event frame, as ehrQL's
/// `calculate_sorts_to_add` has it (of any frame of the domain, not only this one's).
fn frame_sorts(graph: &Graph, source: NodeId, selected: Option<&BTreeSet<String>>) -> (Vec<NodeId>, Vec<String>, Option<NodeId>) {
    let (mut keys, mut lowest, mut cur) = (vec![], None, source);
    loop {
        match graph.node(cur) {
            Node::Sort { source, sort_by } => {
                keys.push(*sort_by);
                lowest = Some(cur);
                cur = *source;
            }
            Node::Filter { source, .. } => cur = *source,
            _ => break,
        }
    }
    let directly_sorted: Vec<&str> = keys
        .iter()
        .filter_map(|k| match graph.node(*k) {
            Node::SelectColumn { name, .. } if !graph.is_patient_level(*k) => Some(name.as_str()),
            _ => None,
        })
        .collect();
    let ties = selected.map(|cols| cols.iter().filter(|c| !directly_sorted.contains(&c.as_str())).cloned().collect()).unwrap_or_default();
    (keys, ties, lowest)
}

/// The pick plans of the `needed` picks: the keys of the pick's frame, then the tie-breaks
/// ehrQL's rewrite puts under its lowest sort ([`sort_ties`]). Those are the pick's own
/// selected columns (among the `needed` nodes only, as ehrQL's `rewrite_sorts` looks at the
/// dataset's nodes: a column selected but never output does not break ties), unless another
/// pick's rewrite of the same sort won, in which case ehrQL's pick reads that one too.
pub fn pick_plans(graph: &Graph, needed: &[NodeId]) -> HashMap<NodeId, PickPlan> {
    let ties = sort_ties(graph, needed);
    let mut picks = HashMap::new();
    for &n in needed {
        let Node::PickOneRowPerPatient { source, .. } = graph.node(n) else { continue };
        let (keys, _, lowest) = frame_sorts(graph, *source, None);
        let tie_columns = lowest.and_then(|l| ties.get(&l)).cloned().unwrap_or_default();
        picks.insert(n, PickPlan { keys, tie_columns });
    }
    picks
}

/// The sorts ehrQL adds under a `Sort` that a pick reads (`rewrite_sorts` in its query-model
/// transforms): the pick's tie-break columns become sorts just below the lowest `Sort` of its
/// frame, and since ehrQL replaces that node wherever it occurs, every frame built on it (an
/// event table's, say) is ordered by them too, after its own keys. Only the picks among the
/// `needed` nodes count, with the columns selected from them among those nodes (ehrQL looks
/// at the dataset's nodes only). By `Sort` node: table column indexes, highest priority first.
///
/// ehrQL builds the tie-breaks `c1, c2, …, cn` as a chain of replacements: the lowest sort by
/// a sort on `c1` of the same rows, that sort by one on `c2`, and so on. Those replacements
/// hold for every equal node too, so a frame of the definition's own that is sorted on `ci`
/// alone (the same rows, the column itself: `e.sort_by(e.ci)`) is ordered by `c(i+1) … cn`
/// after it.
///
/// When two picks share a lowest `Sort` but break ties on different columns, ehrQL keeps one
/// of the two rewrites, which one varying from run to run (it iterates a set of nodes whose
/// hashes include type ids); here the first pick's, by node id (docs/event-tables.md).
pub fn sort_ties(graph: &Graph, needed: &[NodeId]) -> HashMap<NodeId, Vec<usize>> {
    let selected = selected_columns(graph, needed.iter().copied());
    let mut ties: HashMap<NodeId, Vec<usize>> = HashMap::new();
    let mut picks: Vec<NodeId> = needed.iter().copied().filter(|n| matches!(graph.node(*n), Node::PickOneRowPerPatient { .. })).collect();
    picks.sort();
    for n in picks {
        let Node::PickOneRowPerPatient { source, .. } = graph.node(n) else { continue };
        let (_, names, Some(lowest)) = frame_sorts(graph, *source, selected.get(&n)) else { continue };
        let Node::Sort { source: rows, .. } = graph.node(lowest) else { unreachable!("a lowest sort is a sort") };
        let columns: Vec<usize> = names.iter().map(|c| column_index(graph, *rows, c)).collect();
        if columns.is_empty() {
            continue;
        }
        ties.entry(lowest).or_insert(columns.clone());
        for (i, name) in names.iter().enumerate().take(names.len() - 1) {
            for &m in needed {
                if let Node::Sort { source, sort_by } = graph.node(m)
                    && source == rows
                    && sorts_on_column(graph, *sort_by, *rows, name)
                {
                    ties.entry(m).or_insert(columns[i + 1..].to_vec());
                }
            }
        }
    }
    ties
}

/// Whether `key` is the key ehrQL's tie-break sort on column `name` of `rows` has: the column
/// itself, or for a boolean column the column as an integer (its `make_sortable`).
fn sorts_on_column(graph: &Graph, key: NodeId, rows: NodeId, name: &str) -> bool {
    let column = |n: NodeId| matches!(graph.node(n), Node::SelectColumn { source, name: c } if *source == rows && c == name);
    match graph.node(key) {
        Node::Function(Function::CastToInt(inner)) => column(*inner) && graph.type_of(*inner) == Some(&Type::Bool),
        _ => column(key) && graph.type_of(key) != Some(&Type::Bool),
    }
}

/// Orders two rows of a table by a sort's key, then by its tie-break columns (`ties`), NULLs
/// first: the comparison of a `Sort` node in both evaluators.
pub fn sort_order<'r>(
    key: Option<&[Scalar]>,
    ties: &[usize],
    row: impl Fn(usize) -> &'r [Scalar],
    a: usize,
    b: usize,
) -> std::cmp::Ordering {
    key.map_or(std::cmp::Ordering::Equal, |k| compare_nulls_first(&k[a], &k[b])).then_with(|| {
        ties.iter().map(|&c| compare_nulls_first(&row(a)[c], &row(b)[c])).find(|o| o.is_ne()).unwrap_or(std::cmp::Ordering::Equal)
    })
}

/// The frame whose row order an event-level series has in ehrQL's in-memory engine: a
/// column's is its frame's (a sorted frame's columns carry its rows sorted); a function's is
/// its first event-level argument's; a case's, the first event-level one of its default, then
/// each condition and value (the order ehrQL flattens them in). `None` if patient-level.
pub fn order_frame(graph: &Graph, series: NodeId) -> Option<NodeId> {
    let mut cur = series;
    loop {
        let event_level = |n: &NodeId| !graph.is_patient_level(*n);
        if !event_level(&cur) {
            return None;
        }
        cur = match graph.node(cur) {
            Node::SelectColumn { source, .. } => return Some(*source),
            Node::Function(f) => function_inputs(f).into_iter().find(event_level)?,
            Node::Case { cases, default } => {
                default.iter().copied().chain(cases.iter().flat_map(|(c, v)| std::iter::once(*c).chain(*v))).find(event_level)?
            }
            _ => return None,
        };
    }
}

/// How an event table orders a patient's rows, as ehrQL does: by the rows of `frame` (the
/// first event-level column's [`order_frame`]), which is by its sort keys, outermost first,
/// then the tie-break columns ehrQL's pick rewrite put under its lowest sort, then the
/// table's row order (sorts are stable; filters keep the order).
#[derive(Debug, Clone)]
pub struct EventOrder {
    pub frame: NodeId,
    pub keys: Vec<NodeId>,
    pub ties: Vec<usize>,
}

impl EventOrder {
    /// The order of an event table with these `columns` (one at least event-level); `ties`
    /// from [`sort_ties`] over the dataset's nodes.
    pub fn new(graph: &Graph, columns: &[NodeId], ties: &HashMap<NodeId, Vec<usize>>) -> EventOrder {
        let frame = columns.iter().find_map(|c| order_frame(graph, *c)).expect("an event table has an event-level column");
        let (keys, _, lowest) = frame_sorts(graph, frame, None);
        let ties = lowest.and_then(|l| ties.get(&l)).cloned().unwrap_or_default();
        EventOrder { frame, keys, ties }
    }
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
