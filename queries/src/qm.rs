//! ehrQL's query model: one set of node types, named as ehrQL names them
//! (`ehrql/query_model/nodes.py`), held in a [`Graph`] arena.
//!
//! Why an arena: every node is interned (hash-consed), so identical sub-expressions are one
//! node and engines can cache per [`NodeId`]; children always have smaller ids than their
//! parents, so every traversal is a loop over ids — no recursion, no stack to overflow on a
//! 5,000-code `contains_any_of` or a 500-variable dataset; dropping or hashing a node never
//! recurses either. n-ary `And`/`Or` are flattened as they are built.
//!
//! Constructors validate as ehrQL's `validate_node` does — types (with `bool` never an
//! `int`, and one concrete type per type variable), the "same domain" rule, sort before pick —
//! so an invalid graph cannot be built, and engines never meet one.
//!
//! This module depends on nothing else of quarry's.

use std::collections::HashMap;

use jiff::civil::Date;

/// Index of a node in its [`Graph`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct NodeId(u32);

impl NodeId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Index of a table schema in its [`Graph`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableId(u32);

/// Index of an inline patient table's rows in its [`Graph`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RowsId(u32);

/// Clinical coding systems (ehrQL's `BaseCode` subclasses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CodeSystem {
    BNF,
    CTV3,
    ICD10,
    OPCS4,
    SNOMEDCT,
    DMD,
}

impl CodeSystem {
    /// The ehrQL class name, e.g. `CTV3Code`.
    pub fn class_name(self) -> &'static str {
        match self {
            CodeSystem::BNF => "BNFCode",
            CodeSystem::CTV3 => "CTV3Code",
            CodeSystem::ICD10 => "ICD10Code",
            CodeSystem::OPCS4 => "OPCS4Code",
            CodeSystem::SNOMEDCT => "SNOMEDCTCode",
            CodeSystem::DMD => "DMDCode",
        }
    }

    pub fn from_class_name(name: &str) -> Option<CodeSystem> {
        [CodeSystem::BNF, CodeSystem::CTV3, CodeSystem::ICD10, CodeSystem::OPCS4, CodeSystem::SNOMEDCT, CodeSystem::DMD]
            .into_iter()
            .find(|c| c.class_name() == name)
    }
}

/// The value type of a series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Type {
    Bool,
    Int,
    Float,
    Str,
    Date,
    Code(CodeSystem),
    /// A string of several codes (`ICD10MultiCodeString`, `OPCS4MultiCodeString`).
    MultiCodeString(CodeSystem),
    Set(Box<Type>),
}

impl Type {
    fn is_numeric(&self) -> bool {
        matches!(self, Type::Int | Type::Float)
    }

    /// ehrQL's `Comparable`: int, float, str, date and codes (not bool).
    fn is_comparable(&self) -> bool {
        matches!(self, Type::Int | Type::Float | Type::Str | Type::Date | Type::Code(_))
    }

    /// A `str` or a subclass of it (codes, multi-code strings).
    fn is_str_like(&self) -> bool {
        matches!(self, Type::Str | Type::Code(_) | Type::MultiCodeString(_))
    }

    /// `Series[<python type>]`, as ehrQL's type errors print it.
    /// `Series[...]` as ehrQL's type errors print a series of this type.
    pub fn series_name(&self) -> String {
        format!("Series[{}]", self.typespec())
    }

    /// The Python type as `typing` prints it in ehrQL's messages (`datetime.date`,
    /// `ehrql.codes.SNOMEDCTCode`).
    pub fn typespec(&self) -> String {
        match self {
            Type::Bool => "bool".into(),
            Type::Int => "int".into(),
            Type::Float => "float".into(),
            Type::Str => "str".into(),
            Type::Date => "datetime.date".into(),
            Type::Code(_) | Type::MultiCodeString(_) => format!("ehrql.codes.{}", self.name()),
            Type::Set(t) => format!("frozenset[{}]", t.typespec()),
        }
    }

    /// The Python-facing name, for messages.
    pub fn name(&self) -> String {
        match self {
            Type::Bool => "bool".into(),
            Type::Int => "int".into(),
            Type::Float => "float".into(),
            Type::Str => "str".into(),
            Type::Date => "date".into(),
            Type::Code(c) => c.class_name().into(),
            Type::MultiCodeString(c) => format!("{}MultiCodeString", &c.class_name()[..c.class_name().len() - 4]),
            Type::Set(t) => format!("Set[{}]", t.name()),
        }
    }
}

/// A float that can be hashed and compared for identity (by bits), as a node field.
#[derive(Debug, Clone, Copy)]
pub struct Float(pub f64);

impl PartialEq for Float {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}
impl Eq for Float {}
impl std::hash::Hash for Float {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state);
    }
}
impl PartialOrd for Float {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Float {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// A constant. Equality is type-strict, as in ehrQL (`1 != True`, `10 != 10.0`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Float(Float),
    Str(String),
    Date(Date),
    Code(CodeSystem, String),
    /// A frozenset: the element type and the sorted, distinct elements.
    Set(Type, Vec<Value>),
}

impl Value {
    pub fn type_(&self) -> Type {
        match self {
            Value::Bool(_) => Type::Bool,
            Value::Int(_) => Type::Int,
            Value::Float(_) => Type::Float,
            Value::Str(_) => Type::Str,
            Value::Date(_) => Type::Date,
            Value::Code(s, _) => Type::Code(*s),
            Value::Set(t, _) => Type::Set(Box::new(t.clone())),
        }
    }

    /// A set of values of one type (sorted and deduplicated, so equal sets are one node).
    pub fn set(element_type: Type, mut values: Vec<Value>) -> Result<Value, QueryModelError> {
        if let Some(bad) = values.iter().find(|v| v.type_() != element_type) {
            return Err(QueryModelError::Type {
                node: "Value".into(),
                expected: format!("frozenset[{}]", element_type.typespec()),
                found: format!("frozenset[{}]", bad.type_().typespec()),
            });
        }
        values.sort();
        values.dedup();
        Ok(Value::Set(element_type, values))
    }
}

/// `first_for_patient()` or `last_for_patient()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Position {
    First,
    Last,
}

/// Column constraints, as ehrQL declares them (documentation, dummy data, input validation).
#[derive(Debug, Clone, PartialEq)]
pub enum Constraint {
    Categorical(Vec<Value>),
    NotNull,
    Unique,
    FirstOfMonth,
    Regex(String),
    ClosedRange { minimum: i64, maximum: i64, step: i64 },
    GeneralRange { minimum: Option<Value>, maximum: Option<Value>, includes_minimum: bool, includes_maximum: bool },
    DateAfter(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub type_: Type,
    pub constraints: Vec<Constraint>,
    pub description: String,
}

/// A table's columns (`patient_id` is implicit).
#[derive(Debug, Clone, PartialEq)]
pub struct TableSchema {
    pub name: String,
    pub columns: Vec<Column>,
    /// One row per patient (a `PatientFrame` table).
    pub patient_level: bool,
    /// The permission needed to use it (ehrQL's `required_permission`), if any.
    pub required_permission: Option<String>,
}

impl TableSchema {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// ehrQL's `AggregateByPatient.*`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AggregateByPatient {
    Exists(NodeId),
    Count(NodeId),
    CountDistinct(NodeId),
    CountEpisodes { source: NodeId, maximum_gap_days: i64 },
    Min(NodeId),
    Max(NodeId),
    Sum(NodeId),
    Mean(NodeId),
    CombineAsSet(NodeId),
}

/// ehrQL's `Function.*`. `And` and `Or` are n-ary here (ehrQL nests binary ones).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Function {
    Eq(NodeId, NodeId),
    Ne(NodeId, NodeId),
    Lt(NodeId, NodeId),
    Le(NodeId, NodeId),
    Gt(NodeId, NodeId),
    Ge(NodeId, NodeId),
    And(Vec<NodeId>),
    Or(Vec<NodeId>),
    Not(NodeId),
    IsNull(NodeId),
    Negate(NodeId),
    Absolute(NodeId),
    Add(NodeId, NodeId),
    Subtract(NodeId, NodeId),
    Multiply(NodeId, NodeId),
    TrueDivide(NodeId, NodeId),
    FloorDivide(NodeId, NodeId),
    Power(NodeId, NodeId),
    CastToInt(NodeId),
    CastToFloat(NodeId),
    DateAddDays(NodeId, NodeId),
    DateAddMonths(NodeId, NodeId),
    DateAddYears(NodeId, NodeId),
    /// `lhs - rhs` in days (`lhs` is the end).
    DateDifferenceInDays(NodeId, NodeId),
    DateDifferenceInMonths(NodeId, NodeId),
    DateDifferenceInYears(NodeId, NodeId),
    YearFromDate(NodeId),
    MonthFromDate(NodeId),
    DayFromDate(NodeId),
    ToFirstOfYear(NodeId),
    ToFirstOfMonth(NodeId),
    StringContains(NodeId, NodeId),
    In(NodeId, NodeId),
    MinimumOf(Vec<NodeId>),
    MaximumOf(Vec<NodeId>),
}

/// One node of the query model.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Node {
    // Frames.
    SelectTable(TableId),
    SelectPatientTable(TableId),
    InlinePatientTable {
        table: TableId,
        rows: RowsId,
    },
    Filter {
        source: NodeId,
        condition: NodeId,
    },
    Sort {
        source: NodeId,
        sort_by: NodeId,
    },
    PickOneRowPerPatient {
        source: NodeId,
        position: Position,
    },
    // Series.
    Value(Value),
    Parameter {
        name: String,
        type_: Type,
    },
    SelectColumn {
        source: NodeId,
        name: String,
    },
    AggregateByPatient(AggregateByPatient),
    Function(Function),
    /// Ordered `(condition, value)` pairs (`None`: NULL) and the default.
    Case {
        cases: Vec<(NodeId, Option<NodeId>)>,
        default: Option<NodeId>,
    },
}

/// Where a node's rows live: one per patient, or the rows of one table after one chain of
/// filters (identified by the `SelectTable` or `Filter` node that made it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Domain {
    Patient,
    Rows(NodeId),
}

/// What a node is.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A frame with many rows per patient; `sorted` once a `Sort` is applied.
    EventFrame {
        table: TableId,
        sorted: bool,
    },
    /// A frame with at most one row per patient.
    PatientFrame {
        table: TableId,
    },
    Series(Type),
}

#[derive(Debug, Clone)]
struct NodeInfo {
    kind: Kind,
    domain: Domain,
}

/// Why a node cannot be built. Messages follow ehrQL's where it has one.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueryModelError {
    #[error("Expected type '{expected}' but got '{found}'")]
    Type { node: String, expected: String, found: String },
    #[error(
        "Cannot combine series drawn from different tables (or differently filtered frames of one table); \
         use an aggregation such as `count_for_patient()` or `first_for_patient()` to get one value per patient"
    )]
    DomainMismatch,
    #[error("Cannot aggregate a series that has one row per patient")]
    PatientDomain,
    #[error("Cannot sort by a constant value")]
    SortByConstant,
    #[error("Cannot pick a row from a frame that is not sorted: call `sort_by(...)` first")]
    UnsortedPick,
    #[error("Table `{table}` has no column `{column}`")]
    UnknownColumn { table: String, column: String },
    #[error("{0}")]
    Invalid(String),
}

/// All nodes of a query, interned.
#[derive(Debug, Default, Clone)]
pub struct Graph {
    nodes: Vec<Node>,
    info: Vec<NodeInfo>,
    index: HashMap<Node, NodeId>,
    tables: Vec<TableSchema>,
    inline_rows: Vec<Vec<Vec<Option<Value>>>>,
}

impl Graph {
    pub fn new() -> Graph {
        Graph::default()
    }

    /// The id of the `index`th node, if there is one (ids cross into Python as integers).
    pub fn node_id(&self, index: usize) -> Option<NodeId> {
        (index < self.nodes.len()).then_some(NodeId(index as u32))
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Every node, children before parents.
    pub fn iter(&self) -> impl Iterator<Item = (NodeId, &Node)> {
        self.nodes.iter().enumerate().map(|(i, n)| (NodeId(i as u32), n))
    }

    pub fn kind(&self, id: NodeId) -> &Kind {
        &self.info[id.index()].kind
    }

    pub fn domain(&self, id: NodeId) -> Domain {
        self.info[id.index()].domain
    }

    pub fn is_patient_level(&self, id: NodeId) -> bool {
        self.domain(id) == Domain::Patient
    }

    /// The value type of a series node.
    pub fn type_of(&self, id: NodeId) -> Option<&Type> {
        match self.kind(id) {
            Kind::Series(t) => Some(t),
            _ => None,
        }
    }

    pub fn table(&self, id: TableId) -> &TableSchema {
        &self.tables[id.0 as usize]
    }

    pub fn inline_rows(&self, id: RowsId) -> &[Vec<Option<Value>>] {
        &self.inline_rows[id.0 as usize]
    }

    /// Declares a table schema; an identical schema is declared once. Tables of different
    /// modules may share a name (and so a data file) with different columns.
    pub fn declare_table(&mut self, schema: TableSchema) -> Result<TableId, QueryModelError> {
        if let Some(i) = self.tables.iter().position(|t| *t == schema) {
            return Ok(TableId(i as u32));
        }
        self.tables.push(schema);
        Ok(TableId(self.tables.len() as u32 - 1))
    }

    fn intern(&mut self, node: Node, info: NodeInfo) -> NodeId {
        if let Some(&id) = self.index.get(&node) {
            return id;
        }
        let id = NodeId(self.nodes.len() as u32);
        self.nodes.push(node.clone());
        self.info.push(info);
        self.index.insert(node, id);
        id
    }

    /// Interns a frame whose rows are a domain of their own (`SelectTable`, `Filter`).
    fn intern_rows_frame(&mut self, node: Node, table: TableId, sorted: bool) -> NodeId {
        if let Some(&id) = self.index.get(&node) {
            return id;
        }
        let id = NodeId(self.nodes.len() as u32);
        let info = NodeInfo { kind: Kind::EventFrame { table, sorted }, domain: Domain::Rows(id) };
        self.intern(node, info)
    }

    fn series_type(&self, id: NodeId, node: &str) -> Result<Type, QueryModelError> {
        match self.kind(id) {
            Kind::Series(t) => Ok(t.clone()),
            _ => Err(QueryModelError::Type { node: node.into(), expected: "Series".into(), found: "Frame".into() }),
        }
    }

    fn expect(&self, id: NodeId, node: &str, expected: &str, ok: impl Fn(&Type) -> bool) -> Result<Type, QueryModelError> {
        let t = self.series_type(id, node)?;
        if ok(&t) { Ok(t) } else { Err(QueryModelError::Type { node: node.into(), expected: expected.into(), found: t.series_name() }) }
    }

    /// The single non-patient domain of the inputs, or `Patient`; an error if there are two.
    fn combined_domain(&self, inputs: &[NodeId]) -> Result<Domain, QueryModelError> {
        let mut found = Domain::Patient;
        for &i in inputs {
            match (found, self.domain(i)) {
                (_, Domain::Patient) => {}
                (Domain::Patient, d) => found = d,
                (a, b) if a == b => {}
                _ => return Err(QueryModelError::DomainMismatch),
            }
        }
        Ok(found)
    }

    /// The domain a frame's rows make: its own domain, or `Patient` for one-row frames.
    fn frame_domain(&self, frame: NodeId) -> Domain {
        self.domain(frame)
    }

    /// Whether `ancestor` is `descendant` or one of the domains it was filtered from.
    fn domain_is_ancestor(&self, ancestor: Domain, descendant: Domain) -> bool {
        let target = match ancestor {
            Domain::Patient => return true,
            Domain::Rows(n) => n,
        };
        let mut current = descendant;
        loop {
            match current {
                Domain::Patient => return false,
                Domain::Rows(n) if n == target => return true,
                Domain::Rows(n) => {
                    current = match self.node(n) {
                        Node::Filter { source, .. } => self.domain(*source),
                        _ => Domain::Patient,
                    }
                }
            }
        }
    }

    // --- Frames -------------------------------------------------------------------------

    pub fn select_table(&mut self, table: TableId) -> Result<NodeId, QueryModelError> {
        if self.table(table).patient_level {
            return Err(QueryModelError::Invalid(format!(
                "`{}` has one row per patient: select it with SelectPatientTable",
                self.table(table).name
            )));
        }
        Ok(self.intern_rows_frame(Node::SelectTable(table), table, false))
    }

    pub fn select_patient_table(&mut self, table: TableId) -> Result<NodeId, QueryModelError> {
        if !self.table(table).patient_level {
            return Err(QueryModelError::Invalid(format!(
                "`{}` has many rows per patient: select it with SelectTable",
                self.table(table).name
            )));
        }
        Ok(self.intern(Node::SelectPatientTable(table), NodeInfo { kind: Kind::PatientFrame { table }, domain: Domain::Patient }))
    }

    /// An inline patient table: rows of `(patient_id, column values…)` in schema order.
    pub fn inline_patient_table(&mut self, table: TableId, rows: Vec<(i64, Vec<Option<Value>>)>) -> Result<NodeId, QueryModelError> {
        let schema = self.table(table).clone();
        let mut stored = Vec::with_capacity(rows.len());
        let mut seen = std::collections::HashSet::new();
        for (patient_id, values) in rows {
            if !seen.insert(patient_id) {
                return Err(QueryModelError::Invalid(format!(
                    "Inline table `{}` has more than one row for patient {patient_id}",
                    schema.name
                )));
            }
            if values.len() != schema.columns.len() {
                return Err(QueryModelError::Invalid(format!(
                    "Inline table `{}`: a row has {} values for {} columns",
                    schema.name,
                    values.len(),
                    schema.columns.len()
                )));
            }
            for (v, c) in values.iter().zip(&schema.columns) {
                if let Some(v) = v
                    && v.type_() != c.type_
                {
                    return Err(QueryModelError::Type {
                        node: format!("column `{}`", c.name),
                        expected: c.type_.name(),
                        found: v.type_().name(),
                    });
                }
            }
            let mut row = vec![Some(Value::Int(patient_id))];
            row.extend(values);
            stored.push(row);
        }
        stored.sort_by_key(|r| match &r[0] {
            Some(Value::Int(p)) => *p,
            _ => 0,
        });
        let rows_id = match self.inline_rows.iter().position(|r| *r == stored) {
            Some(i) => RowsId(i as u32),
            None => {
                self.inline_rows.push(stored);
                RowsId(self.inline_rows.len() as u32 - 1)
            }
        };
        Ok(self.intern(
            Node::InlinePatientTable { table, rows: rows_id },
            NodeInfo { kind: Kind::PatientFrame { table }, domain: Domain::Patient },
        ))
    }

    pub fn filter(&mut self, source: NodeId, condition: NodeId) -> Result<NodeId, QueryModelError> {
        let Kind::EventFrame { table, sorted } = *self.kind(source) else {
            return Err(QueryModelError::Type {
                node: "Filter".into(),
                expected: "a frame with many rows per patient".into(),
                found: "a patient frame or series".into(),
            });
        };
        self.expect(condition, "Filter", "Series[bool]", |t| *t == Type::Bool)?;
        if !self.domain_is_ancestor(self.domain(condition), self.frame_domain(source)) {
            return Err(QueryModelError::DomainMismatch);
        }
        Ok(self.intern_rows_frame(Node::Filter { source, condition }, table, sorted))
    }

    pub fn sort(&mut self, source: NodeId, sort_by: NodeId) -> Result<NodeId, QueryModelError> {
        let Kind::EventFrame { table, .. } = *self.kind(source) else {
            return Err(QueryModelError::Type {
                node: "Sort".into(),
                expected: "a frame with many rows per patient".into(),
                found: "a patient frame or series".into(),
            });
        };
        self.expect(sort_by, "Sort", "Series[~Comparable]", Type::is_comparable)?;
        if self.domain(sort_by) == Domain::Patient {
            return Err(QueryModelError::SortByConstant);
        }
        if !self.domain_is_ancestor(self.domain(sort_by), self.frame_domain(source)) {
            return Err(QueryModelError::DomainMismatch);
        }
        let domain = self.domain(source);
        Ok(self.intern(Node::Sort { source, sort_by }, NodeInfo { kind: Kind::EventFrame { table, sorted: true }, domain }))
    }

    pub fn pick_one_row_per_patient(&mut self, source: NodeId, position: Position) -> Result<NodeId, QueryModelError> {
        match *self.kind(source) {
            Kind::EventFrame { table, sorted: true } => Ok(self.intern(
                Node::PickOneRowPerPatient { source, position },
                NodeInfo { kind: Kind::PatientFrame { table }, domain: Domain::Patient },
            )),
            Kind::EventFrame { sorted: false, .. } => Err(QueryModelError::UnsortedPick),
            _ => Err(QueryModelError::Type {
                node: "PickOneRowPerPatient".into(),
                expected: "a sorted frame with many rows per patient".into(),
                found: "a patient frame or series".into(),
            }),
        }
    }

    // --- Series -------------------------------------------------------------------------

    pub fn value(&mut self, value: Value) -> NodeId {
        let t = value.type_();
        self.intern(Node::Value(value), NodeInfo { kind: Kind::Series(t), domain: Domain::Patient })
    }

    pub fn parameter(&mut self, name: &str, type_: Type) -> NodeId {
        self.intern(
            Node::Parameter { name: name.to_string(), type_: type_.clone() },
            NodeInfo { kind: Kind::Series(type_), domain: Domain::Patient },
        )
    }

    pub fn select_column(&mut self, source: NodeId, name: &str) -> Result<NodeId, QueryModelError> {
        let table = match self.kind(source) {
            Kind::EventFrame { table, .. } | Kind::PatientFrame { table } => *table,
            Kind::Series(_) => {
                return Err(QueryModelError::Type { node: "SelectColumn".into(), expected: "a frame".into(), found: "a series".into() });
            }
        };
        let schema = self.table(table);
        let Some(column) = schema.column(name) else {
            return Err(QueryModelError::UnknownColumn { table: schema.name.clone(), column: name.to_string() });
        };
        let t = column.type_.clone();
        let domain = self.domain(source);
        Ok(self.intern(Node::SelectColumn { source, name: name.to_string() }, NodeInfo { kind: Kind::Series(t), domain }))
    }

    pub fn aggregate(&mut self, aggregate: AggregateByPatient) -> Result<NodeId, QueryModelError> {
        use AggregateByPatient as A;
        let result = match &aggregate {
            A::Exists(frame) | A::Count(frame) => {
                if matches!(self.kind(*frame), Kind::Series(_)) {
                    return Err(QueryModelError::Type {
                        node: "AggregateByPatient".into(),
                        expected: "a frame".into(),
                        found: "a series".into(),
                    });
                }
                if matches!(aggregate, A::Exists(_)) { Type::Bool } else { Type::Int }
            }
            A::CountDistinct(s) => {
                self.series_type(*s, "CountDistinct")?;
                Type::Int
            }
            A::CountEpisodes { source, maximum_gap_days } => {
                self.expect(*source, "CountEpisodes", "Series[datetime.date]", |t| *t == Type::Date)?;
                if *maximum_gap_days < 0 {
                    return Err(QueryModelError::Invalid("maximum_gap must not be negative".into()));
                }
                Type::Int
            }
            A::Min(s) | A::Max(s) => self.expect(*s, "Min/Max", "Series[~Comparable]", Type::is_comparable)?,
            A::Sum(s) => self.expect(*s, "Sum", "Series[~Numeric]", Type::is_numeric)?,
            A::Mean(s) => {
                self.expect(*s, "Mean", "Series[~Numeric]", Type::is_numeric)?;
                Type::Float
            }
            A::CombineAsSet(s) => Type::Set(Box::new(self.series_type(*s, "CombineAsSet")?)),
        };
        let is_series_aggregate = !matches!(aggregate, A::Exists(_) | A::Count(_));
        if is_series_aggregate {
            let source = match &aggregate {
                A::CountDistinct(s) | A::Min(s) | A::Max(s) | A::Sum(s) | A::Mean(s) | A::CombineAsSet(s) => *s,
                A::CountEpisodes { source, .. } => *source,
                A::Exists(_) | A::Count(_) => unreachable!("not a series aggregate"),
            };
            if self.domain(source) == Domain::Patient {
                return Err(QueryModelError::PatientDomain);
            }
        }
        Ok(self.intern(Node::AggregateByPatient(aggregate), NodeInfo { kind: Kind::Series(result), domain: Domain::Patient }))
    }

    /// Builds a function node, checking types and domains. `And`/`Or` are flattened: an
    /// argument that is itself an `And` (`Or`) contributes its arguments.
    pub fn function(&mut self, function: Function) -> Result<NodeId, QueryModelError> {
        use Function as F;
        let function = match function {
            F::And(args) => F::And(self.flatten(args, true)),
            F::Or(args) => F::Or(self.flatten(args, false)),
            other => other,
        };
        let inputs = function_inputs(&function);
        let result = self.function_type(&function)?;
        let domain = self.combined_domain(&inputs)?;
        Ok(self.intern(Node::Function(function), NodeInfo { kind: Kind::Series(result), domain }))
    }

    fn flatten(&self, args: Vec<NodeId>, and: bool) -> Vec<NodeId> {
        let mut out = Vec::with_capacity(args.len());
        for a in args {
            match (self.node(a), and) {
                (Node::Function(Function::And(inner)), true) | (Node::Function(Function::Or(inner)), false) => {
                    out.extend(inner.iter().copied())
                }
                _ => out.push(a),
            }
        }
        out
    }

    fn function_type(&self, function: &Function) -> Result<Type, QueryModelError> {
        use Function as F;
        let same = |name: &str, l: NodeId, r: NodeId, what: &str, ok: &dyn Fn(&Type) -> bool| -> Result<Type, QueryModelError> {
            let lt = self.expect(l, name, what, ok)?;
            let rt = self.expect(r, name, what, ok)?;
            if lt != rt {
                return Err(QueryModelError::Type { node: name.into(), expected: lt.series_name(), found: rt.series_name() });
            }
            Ok(lt)
        };
        let any = |_: &Type| true;
        let numeric = |t: &Type| t.is_numeric();
        let comparable = |t: &Type| t.is_comparable();
        let bool_ = |t: &Type| *t == Type::Bool;
        let date = |t: &Type| *t == Type::Date;
        Ok(match function {
            F::Eq(l, r) | F::Ne(l, r) => {
                same("EQ/NE", *l, *r, "Series[~T]", &any)?;
                Type::Bool
            }
            F::Lt(l, r) | F::Le(l, r) | F::Gt(l, r) | F::Ge(l, r) => {
                same("comparison", *l, *r, "Series[~Comparable]", &comparable)?;
                Type::Bool
            }
            F::And(args) | F::Or(args) => {
                if args.is_empty() {
                    return Err(QueryModelError::Invalid("And/Or need at least one argument".into()));
                }
                for a in args {
                    self.expect(*a, "And/Or", "Series[bool]", bool_)?;
                }
                Type::Bool
            }
            F::Not(s) => self.expect(*s, "Not", "Series[bool]", bool_)?,
            F::IsNull(s) => {
                self.series_type(*s, "IsNull")?;
                Type::Bool
            }
            F::Negate(s) | F::Absolute(s) => self.expect(*s, "Negate/Absolute", "Series[~Numeric]", numeric)?,
            F::Add(l, r) | F::Subtract(l, r) | F::Multiply(l, r) => same("arithmetic", *l, *r, "Series[~Numeric]", &numeric)?,
            F::TrueDivide(l, r) | F::Power(l, r) => {
                same("TrueDivide/Power", *l, *r, "Series[~Numeric]", &numeric)?;
                Type::Float
            }
            F::FloorDivide(l, r) => {
                same("FloorDivide", *l, *r, "Series[~Numeric]", &numeric)?;
                Type::Int
            }
            F::CastToInt(s) => {
                self.expect(*s, "CastToInt", "Series[~Numeric] | Series[bool]", |t| t.is_numeric() || *t == Type::Bool)?;
                Type::Int
            }
            F::CastToFloat(s) => {
                self.expect(*s, "CastToFloat", "Series[~Numeric]", numeric)?;
                Type::Float
            }
            F::DateAddDays(l, r) | F::DateAddMonths(l, r) | F::DateAddYears(l, r) => {
                self.expect(*l, "DateAdd", "Series[datetime.date]", date)?;
                self.expect(*r, "DateAdd", "Series[int]", |t| *t == Type::Int)?;
                Type::Date
            }
            F::DateDifferenceInDays(l, r) | F::DateDifferenceInMonths(l, r) | F::DateDifferenceInYears(l, r) => {
                same("DateDifference", *l, *r, "Series[datetime.date]", &date)?;
                Type::Int
            }
            F::YearFromDate(s) | F::MonthFromDate(s) | F::DayFromDate(s) => {
                self.expect(*s, "date part", "Series[datetime.date]", date)?;
                Type::Int
            }
            F::ToFirstOfYear(s) | F::ToFirstOfMonth(s) => self.expect(*s, "ToFirstOf", "Series[datetime.date]", date)?,
            F::StringContains(l, r) => {
                self.expect(*l, "StringContains", "Series[str]", Type::is_str_like)?;
                self.expect(*r, "StringContains", "Series[str]", Type::is_str_like)?;
                Type::Bool
            }
            F::In(l, r) => {
                let lt = self.series_type(*l, "In")?;
                let rt = self.series_type(*r, "In")?;
                if rt != Type::Set(Box::new(lt.clone())) {
                    return Err(QueryModelError::Type {
                        node: "In".into(),
                        expected: format!("Series[Set[{}]]", lt.typespec()),
                        found: rt.series_name(),
                    });
                }
                Type::Bool
            }
            F::MinimumOf(args) | F::MaximumOf(args) => {
                let Some((first, rest)) = args.split_first() else {
                    return Err(QueryModelError::Invalid("minimum_of/maximum_of need at least one argument".into()));
                };
                let t = self.expect(*first, "MinimumOf/MaximumOf", "Series[~Comparable]", comparable)?;
                for a in rest {
                    same("MinimumOf/MaximumOf", *first, *a, "a comparable series", &comparable)?;
                }
                t
            }
        })
    }

    /// `Case`: conditions are `bool`; every value and the default share one type.
    pub fn case(&mut self, cases: Vec<(NodeId, Option<NodeId>)>, default: Option<NodeId>) -> Result<NodeId, QueryModelError> {
        if cases.is_empty() {
            return Err(QueryModelError::Invalid("A case expression needs at least one `when`".into()));
        }
        let mut result: Option<Type> = None;
        let mut inputs = Vec::new();
        for (condition, value) in &cases {
            self.expect(*condition, "Case", "Series[bool]", |t| *t == Type::Bool)?;
            inputs.push(*condition);
            inputs.extend(*value);
        }
        inputs.extend(default);
        for v in cases.iter().filter_map(|(_, v)| *v).chain(default) {
            let t = self.series_type(v, "Case")?;
            match &result {
                None => result = Some(t),
                Some(r) if *r == t => {}
                Some(r) => {
                    return Err(QueryModelError::Type {
                        node: "Case".into(),
                        expected: format!("{} | None", r.series_name()),
                        found: t.series_name(),
                    });
                }
            }
        }
        let Some(result) = result else {
            return Err(QueryModelError::Invalid("A case expression needs at least one value that is not None".into()));
        };
        let domain = self.combined_domain(&inputs)?;
        Ok(self.intern(Node::Case { cases, default }, NodeInfo { kind: Kind::Series(result), domain }))
    }
}

/// The series a function reads.
/// The frame or series an aggregation reads.
pub fn aggregate_input(a: &AggregateByPatient) -> NodeId {
    use AggregateByPatient as A;
    match a {
        A::Exists(s) | A::Count(s) | A::CountDistinct(s) | A::Min(s) | A::Max(s) | A::Sum(s) | A::Mean(s) | A::CombineAsSet(s) => *s,
        A::CountEpisodes { source, .. } => *source,
    }
}

impl Graph {
    /// A node's direct inputs.
    pub fn children(&self, n: NodeId) -> Vec<NodeId> {
        match self.node(n) {
            Node::SelectTable(_)
            | Node::SelectPatientTable(_)
            | Node::InlinePatientTable { .. }
            | Node::Value(_)
            | Node::Parameter { .. } => vec![],
            Node::Filter { source, condition } => vec![*source, *condition],
            Node::Sort { source, sort_by } => vec![*source, *sort_by],
            Node::PickOneRowPerPatient { source, .. } | Node::SelectColumn { source, .. } => vec![*source],
            Node::AggregateByPatient(a) => vec![aggregate_input(a)],
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

    /// Every node `roots` depend on (themselves included), in id order.
    pub fn reachable_from(&self, roots: &[NodeId]) -> std::collections::BTreeSet<NodeId> {
        let mut seen = std::collections::BTreeSet::new();
        let mut stack = roots.to_vec();
        while let Some(n) = stack.pop() {
            if seen.insert(n) {
                stack.extend(self.children(n));
            }
        }
        seen
    }
}

pub fn function_inputs(function: &Function) -> Vec<NodeId> {
    use Function as F;
    match function {
        F::Eq(l, r)
        | F::Ne(l, r)
        | F::Lt(l, r)
        | F::Le(l, r)
        | F::Gt(l, r)
        | F::Ge(l, r)
        | F::Add(l, r)
        | F::Subtract(l, r)
        | F::Multiply(l, r)
        | F::TrueDivide(l, r)
        | F::FloorDivide(l, r)
        | F::Power(l, r)
        | F::DateAddDays(l, r)
        | F::DateAddMonths(l, r)
        | F::DateAddYears(l, r)
        | F::DateDifferenceInDays(l, r)
        | F::DateDifferenceInMonths(l, r)
        | F::DateDifferenceInYears(l, r)
        | F::StringContains(l, r)
        | F::In(l, r) => vec![*l, *r],
        F::And(args) | F::Or(args) | F::MinimumOf(args) | F::MaximumOf(args) => args.clone(),
        F::Not(s)
        | F::IsNull(s)
        | F::Negate(s)
        | F::Absolute(s)
        | F::CastToInt(s)
        | F::CastToFloat(s)
        | F::YearFromDate(s)
        | F::MonthFromDate(s)
        | F::DayFromDate(s)
        | F::ToFirstOfYear(s)
        | F::ToFirstOfMonth(s) => vec![*s],
    }
}

/// A dataset definition: the population and the variables, in the order they were added.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    pub population: Option<NodeId>,
    pub variables: Vec<(String, NodeId)>,
}

impl Dataset {
    /// Checks what ehrQL checks of a finished dataset: a population is defined, it and every
    /// variable are patient-level, and the population is boolean.
    pub fn validate(&self, graph: &Graph) -> Result<(), QueryModelError> {
        let Some(population) = self.population else {
            return Err(QueryModelError::Invalid("A population has not been defined; define one with define_population()".into()));
        };
        if graph.type_of(population) != Some(&Type::Bool) {
            return Err(QueryModelError::Type {
                node: "population".into(),
                expected: "a boolean series".into(),
                found: graph.type_of(population).map(Type::name).unwrap_or_else(|| "a frame".into()),
            });
        }
        for (name, node) in std::iter::once(("population", population)).chain(self.variables.iter().map(|(n, v)| (n.as_str(), *v))) {
            if !graph.is_patient_level(node) || graph.type_of(node).is_none() {
                return Err(QueryModelError::Invalid(format!("`{name}` must have one value per patient (a patient-level series)")));
            }
        }
        Ok(())
    }
}
