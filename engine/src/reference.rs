//! The reference evaluator: one patient at a time, every node by an exhaustive match, with
//! ehrQL's scalar semantics from `quarry_queries::semantics`. Obviously correct, never
//! optimised; the columnar evaluator is checked against it.
//!
//! Nodes are evaluated in id order (children before parents), so nothing recurses however
//! deep a definition nests.

use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;

use quarry_queries::qm::{AggregateByPatient as A, Domain, Graph, Kind, Node, NodeId, Position, RowsId, TableId, Type, Value, function_inputs};
use quarry_queries::semantics::{self, EvalError, Scalar, compare_nulls_first};

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
    Row(Option<Rc<Vec<Scalar>>>),
}

/// What `PickOneRowPerPatient` orders by: the user's sorts, then ehrQL's tie-break on every
/// selected column (§1.6).
struct PickPlan {
    keys: Vec<NodeId>,
    tie_columns: Vec<usize>,
}

/// A literal set (a codelist), indexed for `In`: text members hashed, the rest scanned.
struct SetIndex {
    text: std::collections::HashSet<String>,
    other: Vec<Value>,
    empty: bool,
}

impl SetIndex {
    fn new(values: &[Value]) -> SetIndex {
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
    fn test(&self, x: &Scalar) -> Scalar {
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

pub struct Evaluator<'g> {
    graph: &'g Graph,
    needed: Vec<NodeId>,
    /// Literal sets used by `In`, by node index; their `Value` nodes are never copied per
    /// patient.
    sets: Vec<Option<SetIndex>>,
    picks: HashMap<NodeId, PickPlan>,
    inline: HashMap<RowsId, HashMap<i64, Rc<Vec<Scalar>>>>,
    params: HashMap<String, Scalar>,
}

fn column_index(graph: &Graph, frame: NodeId, name: &str) -> usize {
    let table = match graph.kind(frame) {
        Kind::EventFrame { table, .. } | Kind::PatientFrame { table } => *table,
        Kind::Series(_) => unreachable!("columns are selected from frames"),
    };
    graph.table(table).columns.iter().position(|c| c.name == name).expect("validated column")
}

fn frame_table(graph: &Graph, frame: NodeId) -> TableId {
    match graph.kind(frame) {
        Kind::EventFrame { table, .. } | Kind::PatientFrame { table } => *table,
        Kind::Series(_) => unreachable!("a frame"),
    }
}

impl<'g> Evaluator<'g> {
    /// Prepares to evaluate `outputs` (and everything they depend on).
    pub fn new(graph: &'g Graph, outputs: &[NodeId]) -> Evaluator<'g> {
        let needed = reachable(graph, outputs);
        // Pick plans.
        let mut selected: HashMap<NodeId, BTreeSet<String>> = HashMap::new();
        for (_, node) in graph.iter() {
            if let Node::SelectColumn { source, name } = node
                && matches!(graph.node(*source), Node::PickOneRowPerPatient { .. })
            {
                selected.entry(*source).or_default().insert(name.clone());
            }
        }
        let mut picks = HashMap::new();
        for &n in &needed {
            if let Node::PickOneRowPerPatient { source, .. } = graph.node(n) {
                let mut keys = vec![];
                let mut chain = vec![];
                let mut cur = *source;
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
                    .map(|cols| {
                        cols.iter()
                            .filter(|c| !directly_sorted.contains(&c.as_str()))
                            .map(|c| column_index(graph, *source, c))
                            .collect()
                    })
                    .unwrap_or_default();
                picks.insert(n, PickPlan { keys, tie_columns });
            }
        }
        let mut inline = HashMap::new();
        for &n in &needed {
            if let Node::InlinePatientTable { rows, .. } = graph.node(n) {
                let map: HashMap<i64, Rc<Vec<Scalar>>> = graph
                    .inline_rows(*rows)
                    .iter()
                    .map(|r| {
                        let pid = match &r[0] {
                            Some(Value::Int(p)) => *p,
                            _ => 0,
                        };
                        (pid, Rc::new(r[1..].to_vec()))
                    })
                    .collect();
                inline.insert(*rows, map);
            }
        }
        let mut sets: Vec<Option<SetIndex>> = (0..graph.len()).map(|_| None).collect();
        for &n in &needed {
            if let Node::Function(quarry_queries::qm::Function::In(_, set)) = graph.node(n)
                && let Node::Value(Value::Set(_, values)) = graph.node(*set)
            {
                sets[set.index()] = Some(SetIndex::new(values));
            }
        }
        Evaluator { graph, needed: needed.into_iter().collect(), sets, picks, inline, params: HashMap::new() }
    }

    /// Binds `Parameter` nodes (measures' interval dates).
    pub fn set_param(&mut self, name: &str, value: Scalar) {
        self.params.insert(name.to_string(), value);
    }

    /// Patients that appear in an inline table (they join the patient universe).
    pub fn inline_patients(&self) -> impl Iterator<Item = i64> + '_ {
        self.inline.values().flat_map(|m| m.keys().copied())
    }

    /// Evaluates every needed node for one patient.
    pub fn patient(&self, patient_id: i64, tables: Option<&std::collections::BTreeMap<TableId, Rows>>) -> Result<PatientValues, EvalError> {
        let empty = std::collections::BTreeMap::new();
        let tables = tables.unwrap_or(&empty);
        let g = self.graph;
        let mut memo = Memo { values: vec![None; g.len()] };
        let no_rows: Rows = vec![];
        let rows_of = |t: TableId| tables.get(&t).unwrap_or(&no_rows);
        for &id in &self.needed {
            let get = |n: &NodeId| memo.values[n.index()].as_ref().expect("children are evaluated first");
            let v = match g.node(id) {
                Node::SelectTable(t) => Ev::Rows(Rc::new((0..rows_of(*t).len()).collect())),
                Node::SelectPatientTable(t) => Ev::Row(rows_of(*t).last().map(|r| Rc::new(r.clone()))),
                Node::InlinePatientTable { rows, .. } => Ev::Row(self.inline.get(rows).and_then(|m| m.get(&patient_id)).cloned()),
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
                    let mut rows = src.to_vec();
                    rows.sort_by(|a, b| compare_nulls_first(&key[*a], &key[*b]));
                    Ev::Rows(Rc::new(rows))
                }
                Node::PickOneRowPerPatient { source, position } => {
                    let Ev::Rows(src) = get(source) else { unreachable!("pick from an event frame") };
                    let plan = &self.picks[&id];
                    let table_rows = rows_of(frame_table(g, *source));
                    let keys: Vec<&Rc<Vec<Scalar>>> = plan
                        .keys
                        .iter()
                        .map(|k| match get(k) {
                            Ev::Col(c) => c,
                            _ => unreachable!("sort keys are event-level"),
                        })
                        .collect();
                    let order = |a: usize, b: usize| {
                        for k in &keys {
                            let o = compare_nulls_first(&k[a], &k[b]);
                            if o.is_ne() {
                                return o;
                            }
                        }
                        for &c in &plan.tie_columns {
                            let o = compare_nulls_first(&table_rows[a][c], &table_rows[b][c]);
                            if o.is_ne() {
                                return o;
                            }
                        }
                        std::cmp::Ordering::Equal
                    };
                    let mut best: Option<usize> = None;
                    for &r in src.iter() {
                        best = Some(match best {
                            None => r,
                            Some(b) => {
                                let o = order(r, b);
                                match position {
                                    Position::First if o.is_lt() => r,
                                    Position::Last if o.is_ge() => r,
                                    _ => b,
                                }
                            }
                        });
                    }
                    Ev::Row(best.map(|i| Rc::new(table_rows[i].clone())))
                }
                // Indexed sets are read by `In` below, not through the memo.
                Node::Value(_) if self.sets[id.index()].is_some() => Ev::S(None),
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
                Node::Function(quarry_queries::qm::Function::In(x, set)) if self.sets[set.index()].is_some() => {
                    let index = self.sets[set.index()].as_ref().expect("checked");
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
        Ok(match a {
            A::Exists(f) => Some(Value::Bool(frame_len(f) > 0)),
            A::Count(f) => Some(Value::Int(frame_len(f) as i64)),
            A::CountDistinct(s) => {
                let mut vals = values(s);
                vals.sort_by(semantics::compare);
                vals.dedup_by(|a, b| semantics::equal(a, b));
                Some(Value::Int(vals.len() as i64))
            }
            A::CountEpisodes { source, maximum_gap_days } => {
                let mut dates: Vec<jiff::civil::Date> = values(source)
                    .into_iter()
                    .filter_map(|v| if let Value::Date(d) = v { Some(d) } else { None })
                    .collect();
                dates.sort();
                if dates.is_empty() {
                    Some(Value::Int(0))
                } else {
                    let gaps = dates.windows(2).filter(|w| semantics::days_between(w[0], w[1]) > *maximum_gap_days).count();
                    Some(Value::Int(1 + gaps as i64))
                }
            }
            A::Min(s) | A::Max(s) => {
                let vals = values(s);
                let mut best: Option<Value> = None;
                for v in vals {
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
                let vals = values(s);
                if vals.is_empty() {
                    None
                } else if g.type_of(*s) == Some(&Type::Int) {
                    let mut acc: i64 = 0;
                    for v in vals {
                        if let Value::Int(i) = v {
                            acc = acc.checked_add(i).ok_or_else(|| EvalError { kind: "OverflowError", message: "sum out of range".into() })?;
                        }
                    }
                    Some(Value::Int(acc))
                } else {
                    Some(Value::Float(quarry_queries::qm::Float(semantics::float_sum(vals.iter().map(num)))))
                }
            }
            A::Mean(s) => {
                let vals = values(s);
                if vals.is_empty() {
                    None
                } else {
                    let total = semantics::float_sum(vals.iter().map(num));
                    Some(Value::Float(quarry_queries::qm::Float(total / vals.len() as f64)))
                }
            }
            A::CombineAsSet(s) => {
                let t = g.type_of(*s).cloned().expect("series");
                Some(Value::set(t, values(s)).map_err(|e| EvalError { kind: "TypeError", message: e.to_string() })?)
            }
        })
    }
}

fn num(v: &Value) -> f64 {
    match v {
        Value::Int(i) => *i as f64,
        Value::Float(f) => f.0,
        _ => f64::NAN,
    }
}

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
        stack.extend(children(graph, n));
        if let Domain::Rows(d) = graph.domain(n) {
            stack.push(d);
        }
    }
    needed
}

fn children(graph: &Graph, n: NodeId) -> Vec<NodeId> {
    match graph.node(n) {
        Node::SelectTable(_) | Node::SelectPatientTable(_) | Node::InlinePatientTable { .. } | Node::Value(_) | Node::Parameter { .. } => vec![],
        Node::Filter { source, condition } => vec![*source, *condition],
        Node::Sort { source, sort_by } => vec![*source, *sort_by],
        Node::PickOneRowPerPatient { source, .. } => vec![*source],
        Node::SelectColumn { source, .. } => vec![*source],
        Node::AggregateByPatient(a) => vec![match a {
            A::Exists(s) | A::Count(s) | A::CountDistinct(s) | A::Min(s) | A::Max(s) | A::Sum(s) | A::Mean(s) | A::CombineAsSet(s) => *s,
            A::CountEpisodes { source, .. } => *source,
        }],
        Node::Function(f) => function_inputs(f),
        Node::Case { cases, default } => {
            let mut out = vec![];
            for (c, v) in cases {
                out.push(*c);
                out.extend(*v);
            }
            out.extend(*default);
            out
        }
    }
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

    /// The rows of an event-table output: for each row of `domain`, the columns' values.
    pub fn event_rows(&self, domain: NodeId, columns: &[NodeId]) -> Vec<Vec<Scalar>> {
        let Some(Ev::Rows(rows)) = self.memo.get(&domain) else { return vec![] };
        rows.iter().map(|&i| columns.iter().map(|c| self.memo.get(c).map(|v| at(v, i)).unwrap_or(None)).collect()).collect()
    }
}
