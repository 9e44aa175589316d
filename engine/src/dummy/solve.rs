//! The population solver: walks the population predicate (and the filters of the frames it
//! reads) choosing one satisfying branch of each `|` and `&`-negation, and records what each
//! table must contain — required rows with per-column constraints, patient-level values, and
//! tables that must stay quiet. Atoms it cannot invert are left to the generator's check.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use quarry_queries::qm::{AggregateByPatient as A, Function as F, Graph, Kind, Node, NodeId, TableId, Value};
use quarry_queries::semantics::{self, compare, equal};
use rustc_hash::{FxHashMap, FxHashSet};

use super::days;
use super::rng::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    NotIn,
    Contains,
    NotContains,
    Null,
    NotNull,
}

impl Op {
    pub fn negate(self) -> Op {
        match self {
            Op::Eq => Op::Ne,
            Op::Ne => Op::Eq,
            Op::Lt => Op::Ge,
            Op::Le => Op::Gt,
            Op::Gt => Op::Le,
            Op::Ge => Op::Lt,
            Op::In => Op::NotIn,
            Op::NotIn => Op::In,
            Op::Contains => Op::NotContains,
            Op::NotContains => Op::Contains,
            Op::Null => Op::NotNull,
            Op::NotNull => Op::Null,
        }
    }

    /// The operator with its operands swapped (`c < x` is `x > c`).
    fn flip(self) -> Op {
        match self {
            Op::Lt => Op::Gt,
            Op::Le => Op::Ge,
            Op::Gt => Op::Lt,
            Op::Ge => Op::Le,
            other => other,
        }
    }
}

/// A shared literal (codelists are shared, never copied per patient).
pub type Lit = Arc<Value>;

/// The values a column may take: a shared literal set, one value, or an intersection.
#[derive(Clone, Debug)]
pub enum Members {
    Shared(Lit),
    List(Vec<Value>),
}

impl Members {
    pub fn values(&self) -> &[Value] {
        match self {
            Members::Shared(v) => match &**v {
                Value::Set(_, vs) => vs,
                v => std::slice::from_ref(v),
            },
            Members::List(vs) => vs,
        }
    }
}

/// What one column of one row must hold.
#[derive(Clone, Debug, Default)]
pub struct ColCons {
    /// `Some(true)`: must be NULL; `Some(false)`: must not be.
    pub null: Option<bool>,
    pub one_of: Option<Members>,
    /// Values (or sets of values) it must not equal.
    pub not_in: Vec<Lit>,
    /// Bounds, with whether they are inclusive.
    pub lo: Option<(Lit, bool)>,
    pub hi: Option<(Lit, bool)>,
    pub contains: Vec<String>,
    pub conflict: bool,
}

fn as_text(v: &Value) -> Option<&str> {
    match v {
        Value::Str(s) | Value::Code(_, s) => Some(s),
        _ => None,
    }
}

/// Whether bound `v` (inclusive or not) is tighter than `current`; `inward` is the direction
/// that narrows (`Less` for an upper bound).
fn tighter(current: &Option<(Lit, bool)>, v: &Value, inclusive: bool, inward: std::cmp::Ordering) -> bool {
    match current {
        None => true,
        Some((c, c_inclusive)) => {
            let o = compare(v, c);
            o == inward || (o.is_eq() && *c_inclusive && !inclusive)
        }
    }
}

fn member(lit: &Value, v: &Value) -> bool {
    match lit {
        Value::Set(_, vs) => vs.iter().any(|x| equal(x, v)),
        lit => equal(lit, v),
    }
}

impl ColCons {
    pub fn apply(&mut self, op: Op, value: Option<Lit>) {
        match op {
            Op::Null => {
                if self.null == Some(false) {
                    self.conflict = true;
                }
                self.null = Some(true);
                return;
            }
            Op::NotContains => {}
            _ => {
                if self.null == Some(true) {
                    self.conflict = true;
                }
                self.null = Some(false);
            }
        }
        let Some(v) = value else { return };
        match op {
            Op::Eq | Op::In => self.restrict(Members::Shared(v)),
            Op::Ne | Op::NotIn => self.not_in.push(v),
            Op::Lt | Op::Le => {
                if tighter(&self.hi, &v, op == Op::Le, std::cmp::Ordering::Less) {
                    self.hi = Some((v, op == Op::Le));
                }
            }
            Op::Gt | Op::Ge => {
                if tighter(&self.lo, &v, op == Op::Ge, std::cmp::Ordering::Greater) {
                    self.lo = Some((v, op == Op::Ge));
                }
            }
            Op::Contains => {
                if let Some(s) = as_text(&v) {
                    self.contains.push(s.to_string())
                }
            }
            Op::NotContains | Op::Null | Op::NotNull => {}
        }
    }

    /// Narrows the allowed values to `members`.
    fn restrict(&mut self, members: Members) {
        let next = match &self.one_of {
            None => members,
            Some(old) => Members::List(old.values().iter().filter(|o| members.values().iter().any(|m| equal(m, o))).cloned().collect()),
        };
        if next.values().is_empty() {
            self.conflict = true;
        }
        self.one_of = Some(next);
    }

    /// Whether a non-NULL value meets every constraint.
    pub fn admits(&self, v: &Value) -> bool {
        if let Some(list) = &self.one_of
            && !list.values().iter().any(|o| equal(o, v))
        {
            return false;
        }
        self.admits_besides_members(v)
    }

    /// Whether a value taken from `one_of` meets the other constraints.
    pub fn admits_besides_members(&self, v: &Value) -> bool {
        if self.null == Some(true) || self.conflict {
            return false;
        }
        if self.not_in.iter().any(|o| member(o, v)) {
            return false;
        }
        if let Some((l, inc)) = &self.lo {
            match compare(v, l) {
                std::cmp::Ordering::Less => return false,
                std::cmp::Ordering::Equal if !inc => return false,
                _ => {}
            }
        }
        if let Some((h, inc)) = &self.hi {
            match compare(v, h) {
                std::cmp::Ordering::Greater => return false,
                std::cmp::Ordering::Equal if !inc => return false,
                _ => {}
            }
        }
        if !self.contains.is_empty() {
            let Some(s) = as_text(v) else { return false };
            if !self.contains.iter().all(|c| s.contains(c.as_str())) {
                return false;
            }
        }
        true
    }

    /// Inclusive day bounds, when the bounds are dates.
    pub fn day_bounds(&self) -> (Option<i64>, Option<i64>) {
        let lo = match self.lo.as_ref().map(|(v, inc)| (&**v, inc)) {
            Some((Value::Date(d), inc)) => Some(days::to_days(*d) + if *inc { 0 } else { 1 }),
            _ => None,
        };
        let hi = match self.hi.as_ref().map(|(v, inc)| (&**v, inc)) {
            Some((Value::Date(d), inc)) => Some(days::to_days(*d) - if *inc { 0 } else { 1 }),
            _ => None,
        };
        (lo, hi)
    }
}

/// Column index → constraint, for one row.
pub type RowCons = BTreeMap<usize, ColCons>;

/// A row some table must contain.
#[derive(Clone, Debug)]
pub struct RowNeed {
    pub frame: NodeId,
    pub table: TableId,
    pub cons: RowCons,
    /// Only "some row of this frame" (no extra column constraint).
    pub generic: bool,
}

/// Everything the solver decided for one patient.
#[derive(Default, Debug)]
pub struct Needs {
    pub rows: Vec<RowNeed>,
    /// Constraints on patient-level tables' single row (the row must exist).
    pub patient: FxHashMap<TableId, RowCons>,
    /// Patient-level tables that must have no row.
    pub no_row: FxHashSet<TableId>,
    /// Event tables that get no background rows.
    pub quiet: FxHashSet<TableId>,
    pub conflict: bool,
    /// Atoms the solver could not invert (left to the check).
    pub unsolved: u32,
}

struct RowCtx {
    table: TableId,
    cons: RowCons,
}

pub struct Solver<'a> {
    pub graph: &'a Graph,
    /// Every constant node's value (literals, bound parameters, functions of them).
    pub consts: &'a FxHashMap<NodeId, Lit>,
    pub rng: &'a mut Rng,
    pub needs: Needs,
}

/// The frame chain of an event or patient frame: its table and its filters' conditions.
pub fn frame_chain(graph: &Graph, mut frame: NodeId) -> Option<(TableId, Vec<NodeId>)> {
    let mut conds = vec![];
    loop {
        match graph.node(frame) {
            Node::Filter { source, condition } => {
                conds.push(*condition);
                frame = *source;
            }
            Node::Sort { source, .. } => frame = *source,
            Node::SelectTable(t) | Node::SelectPatientTable(t) => return Some((*t, conds)),
            _ => return None,
        }
    }
}

fn column_index(graph: &Graph, table: TableId, name: &str) -> Option<usize> {
    graph.table(table).columns.iter().position(|c| c.name == name)
}

fn frame_table(graph: &Graph, frame: NodeId) -> Option<TableId> {
    match graph.kind(frame) {
        Kind::EventFrame { table, .. } | Kind::PatientFrame { table } => Some(*table),
        Kind::Series(_) => None,
    }
}

/// The comparison a function is, if it is one: `(lhs, rhs, op)`.
pub fn comparison(f: &F) -> Option<(NodeId, NodeId, Op)> {
    Some(match f {
        F::Eq(l, r) => (*l, *r, Op::Eq),
        F::Ne(l, r) => (*l, *r, Op::Ne),
        F::Lt(l, r) => (*l, *r, Op::Lt),
        F::Le(l, r) => (*l, *r, Op::Le),
        F::Gt(l, r) => (*l, *r, Op::Gt),
        F::Ge(l, r) => (*l, *r, Op::Ge),
        F::In(l, r) => (*l, *r, Op::In),
        F::StringContains(l, r) => (*l, *r, Op::Contains),
        _ => return None,
    })
}

/// A node's value when it does not depend on any patient (literals, bound parameters and
/// functions of them).
pub fn constant(graph: &Graph, params: &HashMap<String, Value>, n: NodeId) -> Option<Value> {
    match graph.node(n) {
        Node::Value(v) => Some(v.clone()),
        Node::Parameter { name, .. } => params.get(name).cloned(),
        Node::Function(f) => {
            let inputs = quarry_queries::qm::function_inputs(f);
            let mut args = Vec::with_capacity(inputs.len());
            for i in inputs {
                args.push(Some(constant(graph, params, i)?));
            }
            semantics::apply(f, &args).ok().flatten()
        }
        _ => None,
    }
}

fn int_of(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::Float(f) if f.0.fract() == 0.0 => Some(f.0 as i64),
        _ => None,
    }
}

fn date_value(n: i64) -> Lit {
    Arc::new(Value::Date(days::to_date(n)))
}

impl Solver<'_> {
    fn unsolved(&mut self) {
        self.needs.unsolved += 1;
    }

    fn constant(&self, n: NodeId) -> Option<Lit> {
        self.consts.get(&n).cloned()
    }

    /// Makes the boolean `n` have the value `truth` (for the patient, or for a row).
    fn want_in(&mut self, n: NodeId, truth: bool, row: &mut Option<RowCtx>) {
        let g = self.graph;
        match g.node(n) {
            Node::Value(Value::Bool(b)) => {
                if *b != truth {
                    self.needs.conflict = true;
                }
            }
            Node::Function(F::And(xs)) => {
                if truth {
                    for x in xs {
                        self.want_in(*x, true, row);
                    }
                } else {
                    let x = *self.rng.pick(xs);
                    self.want_in(x, false, row);
                }
            }
            Node::Function(F::Or(xs)) => {
                if truth {
                    let x = *self.rng.pick(xs);
                    self.want_in(x, true, row);
                } else {
                    for x in xs {
                        self.want_in(*x, false, row);
                    }
                }
            }
            Node::Function(F::Not(x)) => self.want_in(*x, !truth, row),
            Node::Function(F::IsNull(x)) => self.constrain(*x, if truth { Op::Null } else { Op::NotNull }, None, row),
            Node::Function(f) => {
                let Some((l, r, op)) = comparison(f) else { return self.unsolved() };
                match (self.constant(l), self.constant(r)) {
                    (None, Some(v)) => self.constrain(l, if truth { op } else { op.negate() }, Some(v), row),
                    (Some(v), None) if !matches!(op, Op::In | Op::Contains) => {
                        let op = op.flip();
                        self.constrain(r, if truth { op } else { op.negate() }, Some(v), row)
                    }
                    (Some(_), Some(_)) => {
                        if self.constant(n).as_deref() != Some(&Value::Bool(truth)) {
                            self.needs.conflict = true;
                        }
                    }
                    _ => self.unsolved(),
                }
            }
            Node::AggregateByPatient(A::Exists(frame)) if row.is_none() => self.exists(*frame, truth),
            Node::SelectColumn { .. } | Node::Case { .. } => self.constrain(n, Op::Eq, Some(Arc::new(Value::Bool(truth))), row),
            _ => self.unsolved(),
        }
    }

    /// Makes the patient-level boolean `n` true (or false).
    pub fn want(&mut self, n: NodeId, truth: bool) {
        self.want_in(n, truth, &mut None)
    }

    /// Constrains `series op value`.
    fn constrain(&mut self, series: NodeId, op: Op, value: Option<Lit>, row: &mut Option<RowCtx>) {
        let g = self.graph;
        match g.node(series) {
            Node::SelectColumn { source, name } => {
                if let Some(ctx) = row.as_mut() {
                    // A row-level column of the row's own table.
                    if matches!(g.kind(*source), Kind::EventFrame { .. })
                        && frame_table(g, *source) == Some(ctx.table)
                        && let Some(i) = column_index(g, ctx.table, name)
                    {
                        ctx.cons.entry(i).or_default().apply(op, value);
                        return;
                    }
                    if !g.is_patient_level(series) {
                        return self.unsolved();
                    }
                    // A patient-level value inside a row condition: constrain it for the
                    // patient (it is one value for all of their rows).
                }
                match g.node(*source) {
                    Node::SelectPatientTable(t) => {
                        let Some(i) = column_index(g, *t, name) else { return self.unsolved() };
                        if op == Op::Null && g.table(*t).name != "patients" && self.rng.chance(0.5) {
                            // NULL because there is no row at all.
                            if !self.needs.patient.contains_key(t) {
                                self.needs.no_row.insert(*t);
                                return;
                            }
                        }
                        self.needs.patient.entry(*t).or_default().entry(i).or_default().apply(op, value);
                    }
                    Node::PickOneRowPerPatient { source: frame, .. } => {
                        if op == Op::Null {
                            return self.forbid(*frame);
                        }
                        let Some((t, _)) = frame_chain(g, *frame) else { return self.unsolved() };
                        let Some(i) = column_index(g, t, name) else { return self.unsolved() };
                        let mut cons = RowCons::new();
                        cons.entry(i).or_default().apply(op, value);
                        // Other rows of the frame may be picked instead; the check decides.
                        self.needs.unsolved += 1;
                        self.need_rows(*frame, cons, 1, false);
                    }
                    _ => self.unsolved(),
                }
            }
            Node::AggregateByPatient(agg) if row.is_none() => self.constrain_aggregate(agg.clone(), op, value),
            Node::Function(f) => self.constrain_function(f.clone(), op, value, row),
            Node::Case { cases, default } => self.constrain_case(cases.clone(), *default, op, value, row),
            _ => self.unsolved(),
        }
    }

    fn constrain_aggregate(&mut self, agg: A, op: Op, value: Option<Lit>) {
        let g = self.graph;
        match agg {
            A::Count(frame) | A::CountDistinct(frame) => {
                let frame = match g.domain(frame) {
                    quarry_queries::qm::Domain::Rows(d) if matches!(agg, A::CountDistinct(_)) => d,
                    _ => frame,
                };
                let k = value.as_deref().and_then(int_of);
                let n = match (op, k) {
                    (Op::Null, _) => return self.needs.conflict = true,
                    (Op::NotNull, _) => return,
                    (Op::Eq, Some(k)) => k,
                    (Op::Ne, Some(k)) => {
                        if k > 0 && self.rng.chance(0.3) {
                            self.rng.range(0, k - 1)
                        } else {
                            k + 1 + self.rng.range(0, 2)
                        }
                    }
                    (Op::Gt, Some(k)) => k.max(-1) + 1 + self.rng.range(0, 2),
                    (Op::Ge, Some(k)) => k.max(0) + self.rng.range(0, 2),
                    (Op::Lt, Some(k)) if k >= 1 => self.rng.range(0, k - 1),
                    (Op::Le, Some(k)) if k >= 0 => self.rng.range(0, k),
                    (Op::In, _) => match value.as_deref() {
                        Some(Value::Set(_, vs)) if !vs.is_empty() => int_of(self.rng.pick(vs)).unwrap_or(1),
                        _ => return self.unsolved(),
                    },
                    _ => return self.unsolved(),
                };
                if !(0..=200).contains(&n) {
                    return self.unsolved();
                }
                if matches!(op, Op::Eq | Op::Lt | Op::Le) || (op == Op::Ne && n < k.unwrap_or(0)) || n == 0 {
                    if n == 0 {
                        self.forbid(frame);
                    } else if let Some((t, _)) = frame_chain(g, frame) {
                        self.needs.quiet.insert(t);
                    }
                }
                if matches!(agg, A::CountDistinct(_)) {
                    self.needs.unsolved += 1;
                }
                self.need_rows(frame, RowCons::new(), n as usize, false);
            }
            A::Exists(frame) => match (op, value.as_deref()) {
                (Op::Eq, Some(Value::Bool(b))) => self.exists(frame, *b),
                (Op::Ne, Some(Value::Bool(b))) => self.exists(frame, !*b),
                (Op::NotNull, _) => {}
                _ => self.unsolved(),
            },
            A::Min(s) | A::Max(s) | A::Sum(s) | A::Mean(s) => {
                let quarry_queries::qm::Domain::Rows(frame) = g.domain(s) else { return self.unsolved() };
                if op == Op::Null {
                    return self.forbid(frame);
                }
                let mut cons = RowCons::new();
                if let Node::SelectColumn { name, .. } = g.node(s)
                    && let Some((t, _)) = frame_chain(g, frame)
                    && let Some(i) = column_index(g, t, name)
                {
                    cons.entry(i).or_default().apply(op, value);
                }
                // Other rows also count towards the aggregate; the check decides.
                self.needs.unsolved += 1;
                self.need_rows(frame, cons, 1, false);
            }
            _ => self.unsolved(),
        }
    }

    /// Makes `frame.exists_for_patient()` true (one row) or false (no rows).
    fn exists(&mut self, frame: NodeId, truth: bool) {
        if truth { self.need_rows(frame, RowCons::new(), 1, true) } else { self.forbid(frame) }
    }

    fn constrain_function(&mut self, f: F, op: Op, value: Option<Lit>, row: &mut Option<RowCtx>) {
        let g = self.graph;
        let Some(v) = value.as_deref().cloned() else {
            // IS NULL of a function: NULL in, NULL out for everything solved here.
            return match f {
                F::DateAddDays(x, _)
                | F::DateAddMonths(x, _)
                | F::DateAddYears(x, _)
                | F::YearFromDate(x)
                | F::MonthFromDate(x)
                | F::ToFirstOfMonth(x)
                | F::ToFirstOfYear(x)
                | F::CastToFloat(x)
                | F::CastToInt(x)
                | F::Negate(x) => self.constrain(x, op, None, row),
                _ => self.unsolved(),
            };
        };
        match f {
            F::DateAddDays(x, c) | F::DateAddMonths(x, c) | F::DateAddYears(x, c) => {
                let (Some(k), Value::Date(d)) = (self.constant(c).as_deref().and_then(int_of), &v) else { return self.unsolved() };
                let d = days::to_days(*d);
                let shifted = match f {
                    F::DateAddDays(..) => d - k,
                    F::DateAddMonths(..) => days::add_months(d, -k),
                    _ => days::add_years(d, -k),
                };
                if !matches!(f, F::DateAddDays(..)) {
                    self.needs.unsolved += 1;
                }
                self.constrain(x, op, Some(date_value(shifted)), row)
            }
            F::DateDifferenceInYears(end, start) | F::DateDifferenceInDays(end, start) | F::DateDifferenceInMonths(end, start) => {
                let Some(k) = int_of(&v) else { return self.unsolved() };
                let shift = |d: i64, n: i64| match f {
                    F::DateDifferenceInYears(..) => days::add_years(d, n),
                    F::DateDifferenceInMonths(..) => days::add_months(d, n),
                    _ => d + n,
                };
                // diff(end, start) = whole units from start to end.
                let ops: Vec<(Op, i64)> = match op {
                    Op::Eq => vec![(Op::Ge, k), (Op::Le, k)],
                    Op::Ge | Op::Le => vec![(op, k)],
                    Op::Gt => vec![(Op::Ge, k + 1)],
                    Op::Lt => vec![(Op::Le, k - 1)],
                    _ => return self.unsolved(),
                };
                match (self.constant(end).as_deref(), self.constant(start).as_deref()) {
                    (Some(Value::Date(e)), None) => {
                        let e = days::to_days(*e);
                        for (op, k) in ops {
                            // diff >= k  <=>  start <= end - k units; diff <= k <=> start > end - (k+1) units.
                            match op {
                                Op::Ge => self.constrain(start, Op::Le, Some(date_value(shift(e, -k))), row),
                                _ => self.constrain(start, Op::Gt, Some(date_value(shift(e, -(k + 1)))), row),
                            }
                        }
                    }
                    (None, Some(Value::Date(s))) => {
                        let s = days::to_days(*s);
                        for (op, k) in ops {
                            match op {
                                Op::Ge => self.constrain(end, Op::Ge, Some(date_value(shift(s, k))), row),
                                _ => self.constrain(end, Op::Lt, Some(date_value(shift(s, k + 1))), row),
                            }
                        }
                    }
                    _ => self.unsolved(),
                }
            }
            F::YearFromDate(x) => {
                let y = match (op, &v) {
                    (Op::In, Value::Set(_, vs)) if !vs.is_empty() => int_of(self.rng.pick(vs)),
                    _ => int_of(&v),
                };
                let Some(y) = y else { return self.unsolved() };
                let first = |y: i64| date_value(days::from_civil(y, 1, 1));
                match op {
                    Op::Eq | Op::In => {
                        self.constrain(x, Op::Ge, Some(first(y)), row);
                        self.constrain(x, Op::Lt, Some(first(y + 1)), row);
                    }
                    Op::Ge => self.constrain(x, Op::Ge, Some(first(y)), row),
                    Op::Gt => self.constrain(x, Op::Ge, Some(first(y + 1)), row),
                    Op::Le => self.constrain(x, Op::Lt, Some(first(y + 1)), row),
                    Op::Lt => self.constrain(x, Op::Lt, Some(first(y)), row),
                    _ => self.unsolved(),
                }
            }
            F::ToFirstOfMonth(x) | F::ToFirstOfYear(x) => {
                let Value::Date(d) = &v else { return self.unsolved() };
                let d = days::to_days(*d);
                let next = if matches!(f, F::ToFirstOfMonth(_)) {
                    days::next_month_start(d)
                } else {
                    days::from_civil(days::civil(d).0 + 1, 1, 1)
                };
                match op {
                    Op::Eq => {
                        self.constrain(x, Op::Ge, Some(date_value(d)), row);
                        self.constrain(x, Op::Lt, Some(date_value(next)), row);
                    }
                    Op::Ge | Op::Lt => self.constrain(x, op, Some(date_value(d)), row),
                    Op::Gt => self.constrain(x, Op::Ge, Some(date_value(next)), row),
                    Op::Le => self.constrain(x, Op::Lt, Some(date_value(next)), row),
                    _ => self.unsolved(),
                }
            }
            F::CastToFloat(x) | F::CastToInt(x) => {
                let target = g.type_of(x).cloned();
                let converted = match (&v, target) {
                    (Value::Float(fl), Some(quarry_queries::qm::Type::Int)) if fl.0.fract() == 0.0 => Value::Int(fl.0 as i64),
                    (Value::Int(i), Some(quarry_queries::qm::Type::Float)) => Value::Float(quarry_queries::qm::Float(*i as f64)),
                    (v, _) => v.clone(),
                };
                self.needs.unsolved += 1;
                self.constrain(x, op, Some(Arc::new(converted)), row)
            }
            F::Add(x, c) | F::Subtract(x, c) => {
                let c = self.constant(c);
                let (Some(Value::Int(k)), Value::Int(t)) = (c.as_deref(), &v) else { return self.unsolved() };
                let t = if matches!(f, F::Add(..)) { t - k } else { t + k };
                self.constrain(x, op, Some(Arc::new(Value::Int(t))), row)
            }
            F::Negate(x) => {
                let negated = match &v {
                    Value::Int(i) => Value::Int(-i),
                    Value::Float(fl) => Value::Float(quarry_queries::qm::Float(-fl.0)),
                    _ => return self.unsolved(),
                };
                self.constrain(x, op.flip(), Some(Arc::new(negated)), row)
            }
            _ => self.unsolved(),
        }
    }

    fn constrain_case(
        &mut self,
        cases: Vec<(NodeId, Option<NodeId>)>,
        default: Option<NodeId>,
        op: Op,
        value: Option<Lit>,
        row: &mut Option<RowCtx>,
    ) {
        // Each outcome's value, when constant; NULL for a missing value or default.
        let mut outcomes: Vec<Option<Lit>> = vec![];
        for (_, v) in &cases {
            match v {
                None => outcomes.push(None),
                Some(v) => match self.constant(*v) {
                    Some(c) => outcomes.push(Some(c)),
                    None => return self.unsolved(),
                },
            }
        }
        match default {
            None => outcomes.push(None),
            Some(d) => match self.constant(d) {
                Some(c) => outcomes.push(Some(c)),
                None => return self.unsolved(),
            },
        }
        let mut probe = ColCons::default();
        probe.apply(op, value);
        let fits: Vec<usize> = outcomes
            .iter()
            .enumerate()
            .filter(|(_, o)| match o {
                None => op == Op::Null,
                Some(v) => op != Op::Null && probe.admits(v),
            })
            .map(|(i, _)| i)
            .collect();
        if fits.is_empty() {
            self.needs.conflict = true;
            return;
        }
        let chosen = *self.rng.pick(&fits);
        for (i, (cond, _)) in cases.iter().enumerate() {
            if i < chosen {
                self.want_in(*cond, false, row);
            } else if i == chosen {
                self.want_in(*cond, true, row);
                return;
            }
        }
    }

    /// Requires `count` rows of `frame` (satisfying its filters and `extra`).
    pub fn need_rows(&mut self, frame: NodeId, extra: RowCons, count: usize, generic: bool) {
        let g = self.graph;
        let Some((table, conds)) = frame_chain(g, frame) else { return self.unsolved() };
        if g.table(table).patient_level {
            let mut ctx = Some(RowCtx { table, cons: extra });
            for c in &conds {
                self.want_in(*c, true, &mut ctx);
            }
            let cons = ctx.expect("set above").cons;
            if self.needs.no_row.contains(&table) {
                self.needs.conflict = true;
            }
            let merged = self.needs.patient.entry(table).or_default();
            for (i, c) in cons {
                let m = merged.entry(i).or_default();
                merge(m, c);
            }
            return;
        }
        if generic && self.needs.rows.iter().any(|r| r.frame == frame) {
            return;
        }
        if !generic && let Some(pos) = self.needs.rows.iter().position(|r| r.frame == frame && r.generic) {
            self.needs.rows.remove(pos);
        }
        for _ in 0..count {
            let mut ctx = Some(RowCtx { table, cons: extra.clone() });
            for c in &conds {
                self.want_in(*c, true, &mut ctx);
            }
            let cons = ctx.expect("set above").cons;
            self.needs.rows.push(RowNeed { frame, table, cons, generic });
        }
    }

    /// Requires `frame` to have no rows.
    pub fn forbid(&mut self, frame: NodeId) {
        let g = self.graph;
        let Some((table, conds)) = frame_chain(g, frame) else { return self.unsolved() };
        if g.table(table).patient_level {
            if g.table(table).name == "patients" && !conds.is_empty() {
                return self.unsolved();
            }
            if self.needs.patient.contains_key(&table) {
                self.needs.unsolved += 1;
            } else {
                self.needs.no_row.insert(table);
            }
            return;
        }
        if self.needs.rows.iter().any(|r| r.table == table) {
            // Required rows of the same table may fall in the forbidden frame.
            self.needs.unsolved += 1;
        }
        self.needs.quiet.insert(table);
    }
}

fn merge(into: &mut ColCons, from: ColCons) {
    if from.conflict {
        into.conflict = true;
    }
    match from.null {
        Some(true) => into.apply(Op::Null, None),
        Some(false) => into.apply(Op::NotNull, None),
        None => {}
    }
    if let Some(list) = from.one_of {
        into.restrict(list);
    }
    into.not_in.extend(from.not_in);
    if let Some((v, inc)) = from.lo {
        into.apply(if inc { Op::Ge } else { Op::Gt }, Some(v));
    }
    if let Some((v, inc)) = from.hi {
        into.apply(if inc { Op::Le } else { Op::Lt }, Some(v));
    }
    into.contains.extend(from.contains);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Lit {
        Arc::new(Value::Date(s.parse().unwrap()))
    }

    fn lit(v: Value) -> Option<Lit> {
        Some(Arc::new(v))
    }

    #[test]
    fn bounds_tighten_and_admit() {
        let mut c = ColCons::default();
        c.apply(Op::Ge, Some(d("2020-01-01")));
        c.apply(Op::Gt, Some(d("2019-01-01")));
        c.apply(Op::Lt, Some(d("2021-01-01")));
        c.apply(Op::Le, Some(d("2021-01-01")));
        assert!(c.admits(&d("2020-01-01")));
        assert!(c.admits(&d("2020-12-31")));
        assert!(!c.admits(&d("2021-01-01")));
        assert!(!c.admits(&d("2019-12-31")));
        assert_eq!(c.day_bounds(), (Some(days::from_civil(2020, 1, 1)), Some(days::from_civil(2020, 12, 31))));
    }

    #[test]
    fn sets_intersect_and_conflict_is_recorded() {
        let mut c = ColCons::default();
        c.apply(Op::In, lit(Value::Set(quarry_queries::qm::Type::Int, vec![Value::Int(1), Value::Int(2), Value::Int(3)])));
        c.apply(Op::Ne, lit(Value::Int(2)));
        assert!(c.admits(&Value::Int(1)) && !c.admits(&Value::Int(2)) && !c.admits(&Value::Int(4)));
        c.apply(Op::Eq, lit(Value::Int(9)));
        assert!(c.conflict);
        let mut n = ColCons::default();
        n.apply(Op::Null, None);
        n.apply(Op::Eq, lit(Value::Int(1)));
        assert!(n.conflict, "NULL and equal to 1");
    }
}
