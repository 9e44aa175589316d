//! The query model as Spark SQL, for `--engine spark` (docs/spark.md).
//!
//! One query per output table, in the style of ehrQL's base SQL engine: the patients of every
//! table the definition reads form the universe; each patient-level value that needs its own
//! pass over a table (an aggregation, a picked row, a patient frame) is a common table
//! expression keyed by `patient_id` and LEFT JOINed where it is used, in the patient scope or
//! in the row scope of an event frame. Aggregations over one frame share one `GROUP BY`; picks
//! are `row_number()` windows with ehrQL's tie-break (kernels::pick_plans). Functions follow
//! `semantics::apply` exactly, NULLs included: SQL's three-valued logic is ehrQL's, and where
//! Spark's built-ins differ (month arithmetic clamps where ehrQL rolls forward, floor
//! division, Python's compensated float sums) the translation spells ehrQL's rule out. Where
//! ehrQL fails at run time (overflow), the query calls `raise_error` with ehrQL's message.
//!
//! The translator only writes text. The relations it reads are named by the caller: each
//! table's relation, and the views it asks for — large literal sets (codelists) and inline
//! (`table_from_file`) patient tables — which the caller registers before running.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;

use quarry_queries::qm::{
    AggregateByPatient as A, Domain, Float, Function as F, Graph, Node, NodeId, Position, RowsId, TableId, Type, Value,
};

use crate::kernels::{EventOrder, PickPlan, pick_plans};

/// Literal sets with more members than this are sent as views rather than literals.
pub const INLINE_SET_MAX: usize = 64;

/// Why a definition cannot be translated.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct SqlError(pub String);

fn err(m: impl Into<String>) -> SqlError {
    SqlError(m.into())
}

/// A view the caller registers before running the queries.
#[derive(Debug, Clone)]
pub enum View {
    /// A literal set: one column `v` holding the distinct members.
    Set { name: String, element: Type, members: Vec<Value> },
    /// An inline patient table: `patient_id` then the table's columns.
    Inline { name: String, table: TableId, rows: RowsId },
}

/// How output rows of event tables are ordered within a patient.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RowOrder {
    /// Every table relation has a `__row` column: the input order.
    RowColumn,
    /// No row order: ties of the sorts (or all rows, unsorted) by the output columns
    /// (deterministic, though not ehrQL's input order).
    OutputColumns,
}

/// Translates one definition's nodes; queries share the views it asks for.
pub struct Translator<'g> {
    graph: &'g Graph,
    relation: Box<dyn Fn(&str) -> String + 'g>,
    params: HashMap<String, Value>,
    row_order: RowOrder,
    inline_set_max: usize,
    views: Vec<View>,
    set_views: HashMap<NodeId, String>,
    inline_views: HashMap<RowsId, String>,
    picks: HashMap<NodeId, PickPlan>,
}

/// The common table expressions of one query, in dependency order.
#[derive(Default)]
struct Query {
    ctes: Vec<(String, String)>,
    built: HashMap<NodeId, String>,
    /// Aggregations (except episodes) by the domain node of the rows they aggregate.
    aggs: HashMap<NodeId, Vec<NodeId>>,
    fresh: usize,
}

/// Where an expression is evaluated: per patient (`u`), or per row (`r`) of one table.
struct Scope {
    pid: &'static str,
    rows: bool,
    joins: Vec<String>,
    joined: BTreeSet<String>,
}

impl Scope {
    fn patients() -> Scope {
        Scope { pid: "u.patient_id", rows: false, joins: vec![], joined: BTreeSet::new() }
    }
    fn rows() -> Scope {
        Scope { pid: "r.patient_id", rows: true, joins: vec![], joined: BTreeSet::new() }
    }
    /// LEFT JOINs a patient-keyed CTE once; returns its alias.
    fn join(&mut self, cte: &str) -> String {
        if self.joined.insert(cte.to_string()) {
            self.joins.push(format!("LEFT JOIN {cte} ON {cte}.patient_id = {}", self.pid));
        }
        cte.to_string()
    }
}

/// A frame's chain: the table it reads, its filter conditions (innermost first).
struct Chain {
    base: Base,
    conditions: Vec<NodeId>,
    /// The node that names the frame's rows (the outermost Filter, or the base).
    key: NodeId,
}

enum Base {
    Table(TableId),
    /// The rows picked from a sorted frame.
    Pick(NodeId),
    Inline(TableId, RowsId),
}

pub fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// A Spark SQL string literal.
pub fn string_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// The Spark SQL type of an ehrQL type.
pub fn sql_type(t: &Type) -> String {
    match t {
        Type::Bool => "BOOLEAN".into(),
        Type::Int => "BIGINT".into(),
        Type::Float => "DOUBLE".into(),
        Type::Str | Type::Code(_) | Type::MultiCodeString(_) => "STRING".into(),
        Type::Date => "DATE".into(),
        Type::Set(e) => format!("ARRAY<{}>", sql_type(e)),
    }
}

pub fn literal(v: &Value) -> String {
    match v {
        Value::Bool(b) => if *b { "TRUE" } else { "FALSE" }.into(),
        Value::Int(i) if *i == i64::MIN => "CAST('-9223372036854775808' AS BIGINT)".into(),
        Value::Int(i) => format!("{i}L"),
        Value::Float(Float(f)) => {
            let text = if f.is_nan() {
                "NaN".to_string()
            } else if f.is_infinite() {
                if *f > 0.0 { "Infinity" } else { "-Infinity" }.to_string()
            } else {
                format!("{f:?}")
            };
            format!("CAST('{text}' AS DOUBLE)")
        }
        Value::Str(s) | Value::Code(_, s) => string_literal(s),
        Value::Date(d) => format!("DATE '{:04}-{:02}-{:02}'", d.year(), d.month(), d.day()),
        Value::Set(t, values) => {
            if values.is_empty() {
                format!("CAST(array() AS ARRAY<{}>)", sql_type(t))
            } else {
                format!("array({})", values.iter().map(literal).collect::<Vec<_>>().join(", "))
            }
        }
    }
}

fn raise(message: &str) -> String {
    format!("raise_error({})", string_literal(message))
}

impl<'g> Translator<'g> {
    /// `relation` names the SQL relation that holds a table (by the table's name); `roots` are
    /// the nodes the queries will output (a pick's tie-breaks are the columns selected from it
    /// among what they reach, `kernels::pick_plans`).
    pub fn new(graph: &'g Graph, relation: impl Fn(&str) -> String + 'g, row_order: RowOrder, roots: &[NodeId]) -> Translator<'g> {
        let needed: Vec<NodeId> = crate::reference::reachable(graph, roots).into_iter().collect();
        Translator {
            graph,
            relation: Box::new(relation),
            params: HashMap::new(),
            row_order,
            inline_set_max: INLINE_SET_MAX,
            views: vec![],
            set_views: HashMap::new(),
            inline_views: HashMap::new(),
            picks: pick_plans(graph, &needed),
        }
    }

    /// Sets more than `n` members go to views (tests lower it to exercise views).
    pub fn inline_set_max(mut self, n: usize) -> Self {
        self.inline_set_max = n;
        self
    }

    pub fn set_param(&mut self, name: &str, value: Value) {
        self.params.insert(name.to_string(), value);
    }

    /// The views the queries so far read, to register before running them.
    pub fn views(&self) -> &[View] {
        &self.views
    }

    /// The patients of every table the `roots` read, plus inline tables' patients.
    fn universe(&mut self, q: &mut Query, roots: &[NodeId]) -> String {
        let mut parts = vec![];
        let reachable = self.graph.reachable_from(roots);
        for &n in &reachable {
            match self.graph.node(n) {
                Node::SelectTable(t) | Node::SelectPatientTable(t) => {
                    let rel = (self.relation)(&self.graph.table(*t).name);
                    let part = format!("SELECT patient_id FROM {rel}");
                    if !parts.contains(&part) {
                        parts.push(part);
                    }
                }
                Node::InlinePatientTable { table, rows } => {
                    let view = self.inline_view(*table, *rows);
                    parts.push(format!("SELECT patient_id FROM {view}"));
                }
                _ => {}
            }
        }
        for &n in &reachable {
            if let Node::AggregateByPatient(a) = self.graph.node(n)
                && !matches!(a, A::CountEpisodes { .. })
                && let Some(d) = self.agg_domain(a)
            {
                q.aggs.entry(d).or_default().push(n);
            }
        }
        if parts.is_empty() {
            // A definition that reads no table has no patients.
            parts.push("SELECT CAST(NULL AS BIGINT) AS patient_id WHERE FALSE".into());
        }
        let body = format!("SELECT DISTINCT patient_id FROM ({})", parts.join(" UNION ALL "));
        q.ctes.push(("universe".into(), body));
        "universe".into()
    }

    fn inline_view(&mut self, table: TableId, rows: RowsId) -> String {
        if let Some(v) = self.inline_views.get(&rows) {
            return v.clone();
        }
        let name = format!("quarry_inline_{}", self.inline_views.len());
        self.inline_views.insert(rows, name.clone());
        self.views.push(View::Inline { name: name.clone(), table, rows });
        name
    }

    /// The query for the main table: `patient_id` and the variables, for the patients in the
    /// population, by `patient_id`.
    pub fn dataset_query(&mut self, population: NodeId, variables: &[NodeId]) -> Result<String, SqlError> {
        let mut roots = vec![population];
        roots.extend(variables);
        let mut q = Query::default();
        let universe = self.universe(&mut q, &roots);
        let mut s = Scope::patients();
        let mut columns = vec!["u.patient_id AS patient_id".to_string()];
        for (i, v) in variables.iter().enumerate() {
            columns.push(format!("{} AS c{i}", self.output(&mut q, &mut s, *v)?));
        }
        let population = self.expr(&mut q, &mut s, population)?;
        let select =
            format!("SELECT {} FROM {universe} u {} WHERE {population} ORDER BY u.patient_id", columns.join(", "), s.joins.join(" "));
        Ok(with(&q, &select))
    }

    /// The per-patient values of `outputs` for every patient (measures aggregate them).
    pub fn patients_query(&mut self, outputs: &[NodeId]) -> Result<String, SqlError> {
        let mut q = Query::default();
        let universe = self.universe(&mut q, outputs);
        let mut s = Scope::patients();
        let mut columns = vec!["u.patient_id AS patient_id".to_string()];
        for (i, v) in outputs.iter().enumerate() {
            columns.push(format!("{} AS c{i}", self.expr(&mut q, &mut s, *v)?));
        }
        let select = format!("SELECT {} FROM {universe} u {} ORDER BY u.patient_id", columns.join(", "), s.joins.join(" "));
        Ok(with(&q, &select))
    }

    /// The query for an event table: one row per row of the frame `order.frame`, for the
    /// patients in the population, by `patient_id` then as ehrQL orders them: by the frame's
    /// sort keys (outermost first), the tie-breaks ehrQL's pick rewrite added, then row order.
    pub fn event_query(&mut self, population: NodeId, columns: &[NodeId], order: &EventOrder) -> Result<String, SqlError> {
        let mut roots = vec![population, order.frame];
        roots.extend(columns);
        let mut q = Query::default();
        let universe = self.universe(&mut q, &roots);
        let mut ps = Scope::patients();
        let population = self.expr(&mut q, &mut ps, population)?;
        q.ctes.push(("population".into(), format!("SELECT u.patient_id FROM {universe} u {} WHERE {population}", ps.joins.join(" "))));
        let chain = self.chain(order.frame);
        let mut s = Scope::rows();
        let mut out = vec!["r.patient_id AS patient_id".to_string()];
        for (i, c) in columns.iter().enumerate() {
            out.push(format!("{} AS c{i}", self.output(&mut q, &mut s, *c)?));
        }
        let (from, conds) = self.frame_from(&mut q, &mut s, &chain)?;
        let mut conds = conds;
        conds.push("r.patient_id IN (SELECT patient_id FROM population)".into());
        let mut by = vec!["r.patient_id".to_string()];
        for &k in &order.keys {
            by.push(format!("{} ASC NULLS FIRST", self.expr(&mut q, &mut s, k)?));
        }
        let table = &self.graph.table(crate::kernels::frame_table(self.graph, order.frame)).columns;
        by.extend(order.ties.iter().map(|&t| format!("r.{} ASC NULLS FIRST", quote(&table[t].name))));
        match self.row_order {
            RowOrder::RowColumn => by.push("r.__row".into()),
            RowOrder::OutputColumns => by.extend((0..columns.len()).map(|i| format!("c{i}"))),
        }
        let select =
            format!("SELECT {} FROM {from} {} WHERE {} ORDER BY {}", out.join(", "), s.joins.join(" "), conds.join(" AND "), by.join(", "));
        Ok(with(&q, &select))
    }

    /// An output column: like `expr`, except that `int ** int` keeps ehrQL's in-memory quirk
    /// (an integer where the exponent is not negative) as a struct of both forms.
    fn output(&mut self, q: &mut Query, s: &mut Scope, n: NodeId) -> Result<String, SqlError> {
        if let Node::Function(F::Power(a, b)) = self.graph.node(n)
            && self.graph.type_of(*a) == Some(&Type::Int)
            && self.graph.type_of(*b) == Some(&Type::Int)
        {
            let (x, y) = (self.expr(q, s, *a)?, self.expr(q, s, *b)?);
            let float = self.expr(q, s, n)?;
            return Ok(format!("named_struct('int', {}, 'float', {float})", int_power(&x, &y)));
        }
        self.expr(q, s, n)
    }

    fn chain(&self, frame: NodeId) -> Chain {
        let (mut conditions, mut cur, mut key) = (vec![], frame, None);
        loop {
            match self.graph.node(cur) {
                Node::Sort { source, .. } => cur = *source,
                Node::PickOneRowPerPatient { .. } => {
                    conditions.reverse();
                    return Chain { base: Base::Pick(cur), conditions, key: key.unwrap_or(cur) };
                }
                Node::Filter { source, condition } => {
                    key.get_or_insert(cur);
                    conditions.push(*condition);
                    cur = *source;
                }
                Node::SelectTable(t) | Node::SelectPatientTable(t) => {
                    conditions.reverse();
                    return Chain { base: Base::Table(*t), conditions, key: key.unwrap_or(cur) };
                }
                Node::InlinePatientTable { table, rows } => {
                    conditions.reverse();
                    return Chain { base: Base::Inline(*table, *rows), conditions, key: key.unwrap_or(cur) };
                }
                other => unreachable!("a frame, not {other:?}"),
            }
        }
    }

    /// `FROM` and `WHERE` parts of a frame's rows (aliased `r`) in the row scope `s`.
    fn frame_from(&mut self, q: &mut Query, s: &mut Scope, chain: &Chain) -> Result<(String, Vec<String>), SqlError> {
        let rel = match chain.base {
            Base::Table(t) => (self.relation)(&self.graph.table(t).name),
            Base::Inline(t, rows) => self.inline_view(t, rows),
            Base::Pick(p) => self.pick(q, p)?,
        };
        let mut conds = vec![];
        for &c in &chain.conditions {
            conds.push(self.expr(q, s, c)?);
        }
        Ok((format!("{rel} r"), conds))
    }

    /// The domain (frame node) whose rows an aggregation reads; `None` for a patient frame.
    fn agg_domain(&self, a: &A) -> Option<NodeId> {
        let input = quarry_queries::qm::aggregate_input(a);
        match self.graph.domain(input) {
            Domain::Rows(d) => Some(d),
            Domain::Patient => None,
        }
    }

    fn cte(&self, q: &mut Query, key: NodeId, prefix: &str, body: String) -> String {
        let name = format!("{prefix}{}", q.ctes.len());
        q.ctes.push((name.clone(), body));
        q.built.insert(key, name.clone());
        name
    }

    /// A patient frame's rows (at most one per patient), all columns.
    fn patient_frame(&mut self, q: &mut Query, frame: NodeId) -> Result<String, SqlError> {
        let chain = self.chain(frame);
        if let Some(name) = q.built.get(&chain.key) {
            return Ok(name.clone());
        }
        if let (Base::Pick(p), true) = (&chain.base, chain.conditions.is_empty()) {
            return self.pick(q, *p);
        }
        let mut s = Scope::rows();
        let (from, conds) = self.frame_from(q, &mut s, &chain)?;
        let body = format!("SELECT r.* FROM {from} {}{}", s.joins.join(" "), where_(&conds));
        Ok(self.cte(q, chain.key, "pf", body))
    }

    /// One row per patient picked from a sorted frame: the selected columns.
    fn pick(&mut self, q: &mut Query, pick: NodeId) -> Result<String, SqlError> {
        if let Some(name) = q.built.get(&pick) {
            return Ok(name.clone());
        }
        let Node::PickOneRowPerPatient { source, position } = self.graph.node(pick).clone() else { unreachable!("a pick") };
        let chain = self.chain(source);
        let table = crate::kernels::frame_table(self.graph, source);
        let columns = &self.graph.table(table).columns;
        let plan = &self.picks[&pick];
        let (keys, ties) = (plan.keys.clone(), plan.tie_columns.clone());
        let mut s = Scope::rows();
        let dir = match position {
            Position::First => "ASC NULLS FIRST",
            Position::Last => "DESC NULLS LAST",
        };
        let mut order = vec![];
        for k in keys {
            order.push(format!("{} {dir}", self.expr(q, &mut s, k)?));
        }
        for t in ties {
            order.push(format!("r.{} {dir}", quote(&columns[t].name)));
        }
        // Rows equal on every key and tie-break: the local engines' sorts are stable, so the
        // first (last) of them in the input order. The tie-breaks need not cover the selected
        // columns when another pick's rewrite of the sort won (kernels::pick_plans); catalog
        // tables have no input order (docs/event-tables.md).
        if self.row_order == RowOrder::RowColumn {
            order.push(format!("r.__row {dir}"));
        }
        let (from, conds) = self.frame_from(q, &mut s, &chain)?;
        let body = format!(
            "SELECT * FROM (SELECT r.*, row_number() OVER (PARTITION BY r.patient_id ORDER BY {}) AS __pick FROM {from} {}{}) WHERE __pick = 1",
            if order.is_empty() { "r.patient_id".into() } else { order.join(", ") },
            s.joins.join(" "),
            where_(&conds)
        );
        Ok(self.cte(q, pick, "pk", body))
    }

    /// The aggregations over one domain's rows, one column each (`a<node>`), and `n`, the
    /// patient's number of rows.
    fn aggregates(&mut self, q: &mut Query, domain: NodeId) -> Result<String, SqlError> {
        if let Some(name) = q.built.get(&domain) {
            return Ok(name.clone());
        }
        let chain = self.chain(domain);
        let mut s = Scope::rows();
        let mut columns = vec!["r.patient_id".to_string(), "count(*) AS n".to_string()];
        for agg in q.aggs.get(&domain).cloned().unwrap_or_default() {
            let Node::AggregateByPatient(a) = self.graph.node(agg).clone() else { unreachable!("an aggregation") };
            let column = match &a {
                A::Exists(_) | A::Count(_) => continue,
                A::CountDistinct(x) => format!("count(DISTINCT {})", self.expr(q, &mut s, *x)?),
                A::Min(x) => format!("min({})", self.expr(q, &mut s, *x)?),
                A::Max(x) => format!("max({})", self.expr(q, &mut s, *x)?),
                A::Sum(x) if self.graph.type_of(*x) == Some(&Type::Int) => format!("sum({})", self.expr(q, &mut s, *x)?),
                A::Sum(x) => {
                    let x = format!("CAST({} AS DOUBLE)", self.expr(q, &mut s, *x)?);
                    format!("CASE WHEN count({x}) = 0 THEN NULL ELSE {} END", float_sum(&x))
                }
                A::Mean(x) => {
                    let x = format!("CAST({} AS DOUBLE)", self.expr(q, &mut s, *x)?);
                    format!("CASE WHEN count({x}) = 0 THEN NULL ELSE {} / count({x}) END", float_sum(&x))
                }
                A::CombineAsSet(x) => format!("array_sort(collect_set({}))", self.expr(q, &mut s, *x)?),
                A::CountEpisodes { .. } => unreachable!("episodes have their own CTE"),
            };
            columns.push(format!("{column} AS a{}", agg.index()));
        }
        let (from, conds) = self.frame_from(q, &mut s, &chain)?;
        let body = format!("SELECT {} FROM {from} {}{} GROUP BY r.patient_id", columns.join(", "), s.joins.join(" "), where_(&conds));
        Ok(self.cte(q, domain, "ag", body))
    }

    fn aggregate(&mut self, q: &mut Query, s: &mut Scope, n: NodeId, a: &A) -> Result<String, SqlError> {
        if let A::CountEpisodes { source, maximum_gap_days } = a {
            let name = match q.built.get(&n) {
                Some(name) => name.clone(),
                None => {
                    let Domain::Rows(d) = self.graph.domain(*source) else {
                        return Err(err("count_episodes_for_patient needs an event series"));
                    };
                    let chain = self.chain(d);
                    let mut rs = Scope::rows();
                    let x = self.expr(q, &mut rs, *source)?;
                    let (from, conds) = self.frame_from(q, &mut rs, &chain)?;
                    let body = format!(
                        "SELECT patient_id, CASE WHEN size(d) = 0 THEN 0L ELSE CAST(1 + size(filter(zip_with(slice(d, 2, size(d)), slice(d, 1, size(d) - 1), (b, a) -> datediff(b, a)), g -> g > {maximum_gap_days})) AS BIGINT) END AS v \
                         FROM (SELECT r.patient_id, array_sort(collect_list({x})) AS d FROM {from} {}{} GROUP BY r.patient_id)",
                        rs.joins.join(" "),
                        where_(&conds)
                    );
                    self.cte(q, n, "ep", body)
                }
            };
            return Ok(format!("coalesce({}.v, 0L)", s.join(&name)));
        }
        let Some(domain) = self.agg_domain(a) else {
            // Exists / Count of a patient frame: whether the patient has its row.
            let frame = quarry_queries::qm::aggregate_input(a);
            let pf = self.patient_frame(q, frame)?;
            let alias = s.join(&pf);
            return Ok(match a {
                A::Exists(_) => format!("({alias}.patient_id IS NOT NULL)"),
                A::Count(_) => format!("CASE WHEN {alias}.patient_id IS NULL THEN 0L ELSE 1L END"),
                _ => return Err(err("cannot aggregate a series that has one row per patient")),
            });
        };
        // `universe` collected every aggregation the query reaches, so the domain's CTE has it.
        debug_assert!(q.aggs.get(&domain).is_some_and(|v| v.contains(&n)), "aggregation collected up front");
        let name = self.aggregates(q, domain)?;
        let alias = s.join(&name);
        let col = format!("{alias}.a{}", n.index());
        Ok(match a {
            A::Exists(_) => format!("({alias}.n IS NOT NULL)"),
            A::Count(_) => format!("coalesce({alias}.n, 0L)"),
            A::CountDistinct(_) => format!("coalesce({col}, 0L)"),
            A::CombineAsSet(x) => {
                let t = self.graph.type_of(*x).cloned().unwrap_or(Type::Int);
                format!("coalesce({col}, CAST(array() AS ARRAY<{}>))", sql_type(&t))
            }
            _ => col,
        })
    }

    /// The SQL expression of a series node in scope `s`.
    fn expr(&mut self, q: &mut Query, s: &mut Scope, n: NodeId) -> Result<String, SqlError> {
        let node = self.graph.node(n).clone();
        Ok(match &node {
            Node::Value(v) => literal(v),
            Node::Parameter { name, .. } => literal(self.params.get(name).ok_or_else(|| err(format!("parameter `{name}` has no value")))?),
            Node::SelectColumn { source, name } => {
                if s.rows && matches!(self.graph.domain(n), Domain::Rows(_)) {
                    format!("r.{}", quote(name))
                } else {
                    let pf = self.patient_frame(q, *source)?;
                    format!("{}.{}", s.join(&pf), quote(name))
                }
            }
            Node::AggregateByPatient(a) => self.aggregate(q, s, n, a)?,
            Node::Case { cases, default } => {
                let t = self.graph.type_of(n).cloned().unwrap_or(Type::Bool);
                let mut out = String::from("CASE");
                for (c, v) in cases {
                    let c = self.expr(q, s, *c)?;
                    let v = match v {
                        Some(v) => self.expr(q, s, *v)?,
                        None => "NULL".into(),
                    };
                    let _ = write!(out, " WHEN {c} THEN {v}");
                }
                if let Some(d) = default {
                    let _ = write!(out, " ELSE {}", self.expr(q, s, *d)?);
                }
                format!("CAST({out} END AS {})", sql_type(&t))
            }
            Node::Function(f) => self.function(q, s, f)?,
            Node::SelectTable(_)
            | Node::SelectPatientTable(_)
            | Node::InlinePatientTable { .. }
            | Node::Filter { .. }
            | Node::Sort { .. }
            | Node::PickOneRowPerPatient { .. } => {
                return Err(err("a frame where a series was expected"));
            }
        })
    }

    fn function(&mut self, q: &mut Query, s: &mut Scope, f: &F) -> Result<String, SqlError> {
        let graph = self.graph;
        let ty = |n: &NodeId| graph.type_of(*n).cloned();
        let mut e = |n: &NodeId| -> Result<String, SqlError> { self.expr(q, s, *n) };
        Ok(match f {
            F::Eq(a, b) => format!("({} = {})", e(a)?, e(b)?),
            F::Ne(a, b) => format!("({} <> {})", e(a)?, e(b)?),
            F::Lt(a, b) => format!("({} < {})", e(a)?, e(b)?),
            F::Le(a, b) => format!("({} <= {})", e(a)?, e(b)?),
            F::Gt(a, b) => format!("({} > {})", e(a)?, e(b)?),
            F::Ge(a, b) => format!("({} >= {})", e(a)?, e(b)?),
            F::And(xs) | F::Or(xs) => {
                let op = if matches!(f, F::And(_)) { " AND " } else { " OR " };
                let parts = xs.iter().map(&mut e).collect::<Result<Vec<_>, _>>()?;
                format!("({})", parts.join(op))
            }
            F::Not(a) => format!("(NOT {})", e(a)?),
            F::IsNull(a) => format!("({} IS NULL)", e(a)?),
            F::Negate(a) => format!("(- {})", e(a)?),
            F::Absolute(a) => format!("abs({})", e(a)?),
            F::Add(a, b) => format!("({} + {})", e(a)?, e(b)?),
            F::Subtract(a, b) => format!("({} - {})", e(a)?, e(b)?),
            F::Multiply(a, b) => format!("({} * {})", e(a)?, e(b)?),
            F::TrueDivide(a, b) => format!("(CAST({} AS DOUBLE) / NULLIF(CAST({} AS DOUBLE), 0))", e(a)?, e(b)?),
            F::FloorDivide(a, b) => {
                let (x, y) = (e(a)?, e(b)?);
                if ty(a) == Some(Type::Int) && ty(b) == Some(Type::Int) {
                    let y0 = format!("NULLIF({y}, 0)");
                    format!("(({x} div {y0}) - CASE WHEN {x} % {y0} <> 0 AND (({x} < 0) <> ({y} < 0)) THEN 1L ELSE 0L END)")
                } else {
                    float_floor_div(&format!("CAST({x} AS DOUBLE)"), &format!("NULLIF(CAST({y} AS DOUBLE), 0)"))
                }
            }
            F::Power(a, b) => {
                let (x, y) = (format!("CAST({} AS DOUBLE)", e(a)?), format!("CAST({} AS DOUBLE)", e(b)?));
                format!(
                    "CASE WHEN ({x} = 0 AND {y} < 0) OR ({x} < 0 AND {y} <> floor({y})) THEN NULL \
                     WHEN {y} < 0 AND {y} = floor({y}) AND {x} = floor({x}) AND abs(power({x}, - {y})) < 9007199254740992 THEN 1 / power({x}, - {y}) \
                     WHEN isnan(power({x}, {y})) = FALSE AND abs(power({x}, {y})) = CAST('Infinity' AS DOUBLE) AND abs({x}) < CAST('Infinity' AS DOUBLE) AND abs({y}) < CAST('Infinity' AS DOUBLE) \
                     THEN {} ELSE power({x}, {y}) END",
                    raise("OverflowError: (34, 'Numerical result out of range')")
                )
            }
            F::CastToInt(a) => match ty(a) {
                Some(Type::Float) => {
                    let x = e(a)?;
                    format!(
                        "CASE WHEN isnan({x}) OR abs({x}) = CAST('Infinity' AS DOUBLE) THEN {} ELSE CAST({x} AS BIGINT) END",
                        raise("OverflowError: cannot convert float infinity or NaN to integer")
                    )
                }
                _ => format!("CAST({} AS BIGINT)", e(a)?),
            },
            F::CastToFloat(a) => format!("CAST({} AS DOUBLE)", e(a)?),
            F::DateAddDays(d, n) => {
                let (d, n) = (e(d)?, e(n)?);
                let r = format!("date_add({d}, CAST({n} AS INT))");
                format!(
                    "CASE WHEN abs({n}) > 999999999 THEN {} WHEN year({r}) < 1 OR year({r}) > 9999 THEN {} ELSE {r} END",
                    raise("ValueError: days must have magnitude <= 999999999"),
                    raise("OverflowError: date value out of range")
                )
            }
            F::DateAddMonths(d, n) => add_months(&e(d)?, &e(n)?),
            F::DateAddYears(d, n) => add_months(&e(d)?, &format!("({} * 12)", e(n)?)),
            F::DateDifferenceInDays(end, start) => format!("CAST(datediff({}, {}) AS BIGINT)", e(end)?, e(start)?),
            F::DateDifferenceInMonths(end, start) => {
                let (x, y) = (e(end)?, e(start)?);
                format!(
                    "CAST(12 * (year({x}) - year({y})) + (month({x}) - month({y})) - CASE WHEN day({x}) < day({y}) THEN 1 ELSE 0 END AS BIGINT)"
                )
            }
            F::DateDifferenceInYears(end, start) => {
                let (x, y) = (e(end)?, e(start)?);
                format!(
                    "CAST((year({x}) - year({y})) - CASE WHEN month({x}) < month({y}) OR (month({x}) = month({y}) AND day({x}) < day({y})) THEN 1 ELSE 0 END AS BIGINT)"
                )
            }
            F::YearFromDate(d) => format!("CAST(year({}) AS BIGINT)", e(d)?),
            F::MonthFromDate(d) => format!("CAST(month({}) AS BIGINT)", e(d)?),
            F::DayFromDate(d) => format!("CAST(day({}) AS BIGINT)", e(d)?),
            F::ToFirstOfYear(d) => format!("trunc({}, 'year')", e(d)?),
            F::ToFirstOfMonth(d) => format!("trunc({}, 'month')", e(d)?),
            F::StringContains(a, b) => format!("contains({}, {})", e(a)?, e(b)?),
            F::MinimumOf(xs) | F::MaximumOf(xs) => {
                let parts = xs.iter().map(&mut e).collect::<Result<Vec<_>, _>>()?;
                let name = if matches!(f, F::MinimumOf(_)) { "least" } else { "greatest" };
                if parts.len() == 1 { parts[0].clone() } else { format!("{name}({})", parts.join(", ")) }
            }
            F::In(x, set) => {
                let xe = e(x)?;
                match self.graph.node(*set).clone() {
                    Node::Value(Value::Set(element, members)) => {
                        if members.is_empty() {
                            "FALSE".into()
                        } else if members.len() <= self.inline_set_max {
                            format!("({xe} IN ({}))", members.iter().map(literal).collect::<Vec<_>>().join(", "))
                        } else {
                            let view = match self.set_views.get(set) {
                                Some(v) => v.clone(),
                                None => {
                                    let name = format!("quarry_set_{}", self.set_views.len());
                                    self.set_views.insert(*set, name.clone());
                                    self.views.push(View::Set { name: name.clone(), element, members });
                                    name
                                }
                            };
                            q.fresh += 1;
                            let alias = format!("s{}", q.fresh);
                            s.joins.push(format!("LEFT JOIN {view} {alias} ON {alias}.v = {xe}"));
                            format!("CASE WHEN {xe} IS NULL THEN NULL ELSE {alias}.v IS NOT NULL END")
                        }
                    }
                    _ => {
                        let se = self.expr(q, s, *set)?;
                        format!(
                            "CASE WHEN {se} IS NULL OR size({se}) = 0 THEN FALSE WHEN {xe} IS NULL THEN NULL ELSE array_contains({se}, {xe}) END"
                        )
                    }
                }
            }
        })
    }
}

fn where_(conds: &[String]) -> String {
    if conds.is_empty() { String::new() } else { format!(" WHERE {}", conds.join(" AND ")) }
}

fn with(q: &Query, select: &str) -> String {
    if q.ctes.is_empty() {
        return select.to_string();
    }
    let ctes: Vec<String> = q.ctes.iter().map(|(name, body)| format!("{name} AS ({body})")).collect();
    format!("WITH {}\n{select}", ctes.join(",\n"))
}

/// Month arithmetic rolling a day that does not exist forward to the 1st of the next month
/// (Spark's `add_months` clamps to the month's last day instead).
fn add_months(d: &str, n: &str) -> String {
    let m = format!("add_months({d}, CAST({n} AS INT))");
    format!(
        "CASE WHEN year({d}) * 12 + month({d}) - 1 + {n} < 12 OR year({d}) * 12 + month({d}) - 1 + {n} >= 120000 THEN {} \
         WHEN day({m}) < day({d}) THEN date_add(last_day({m}), 1) ELSE {m} END",
        raise("ValueError: year is out of range")
    )
}

/// Python's `a // b` on floats (semantics::float_floor_div), as an integer; `b` is NULL when 0.
fn float_floor_div(a: &str, b: &str) -> String {
    let m = format!("({a} % {b})");
    let div = format!("(({a} - {m}) / {b} - CASE WHEN {m} <> 0 AND (({b} < 0) <> ({m} < 0)) THEN 1 ELSE 0 END)");
    format!(
        "CASE WHEN {b} IS NULL OR {a} IS NULL THEN NULL WHEN isnan({div}) OR abs({div}) = CAST('Infinity' AS DOUBLE) THEN {} \
         WHEN {div} = 0 THEN 0L WHEN {div} - floor({div}) > 0.5 THEN CAST(floor({div}) + 1 AS BIGINT) ELSE CAST(floor({div}) AS BIGINT) END",
        raise("OverflowError: cannot convert float infinity to integer")
    )
}

/// `x ** y` for integers with `y >= 0`, exactly (NULL otherwise; overflow fails).
fn int_power(x: &str, y: &str) -> String {
    format!(
        "CASE WHEN {y} < 0 THEN NULL WHEN {x} = 0 THEN CASE WHEN {y} = 0 THEN 1L ELSE 0L END WHEN {x} = 1 THEN 1L \
         WHEN {x} = -1 THEN CASE WHEN {y} % 2 = 0 THEN 1L ELSE -1L END WHEN {y} = 0 THEN 1L WHEN {y} > 64 THEN {} \
         ELSE aggregate(sequence(1, CAST({y} AS INT)), 1L, (acc, i) -> acc * {x}) END",
        raise("OverflowError: integer result out of range")
    )
}

/// Python's `sum()` of floats (Neumaier-compensated, semantics::float_sum) over a group.
fn float_sum(x: &str) -> String {
    format!(
        "aggregate(collect_list({x}), named_struct('s', CAST(0 AS DOUBLE), 'c', CAST(0 AS DOUBLE)), \
         (acc, v) -> named_struct('s', acc.s + v, 'c', acc.c + CASE WHEN abs(acc.s) >= abs(v) THEN (acc.s - (acc.s + v)) + v ELSE (v - (acc.s + v)) + acc.s END), \
         acc -> CASE WHEN isnan(acc.c) OR abs(acc.c) = CAST('Infinity' AS DOUBLE) THEN acc.s ELSE acc.s + acc.c END)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals() {
        assert_eq!(string_literal("it's a \\ test"), "'it\\'s a \\\\ test'");
        assert_eq!(literal(&Value::Int(i64::MIN)), "CAST('-9223372036854775808' AS BIGINT)");
        assert_eq!(literal(&Value::Float(Float(1e16))), "CAST('1e16' AS DOUBLE)");
        assert_eq!(quote("a`b"), "`a``b`");
    }
}
