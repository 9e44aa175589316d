//! ehrQL's Python API (`ehrql/query_language.py`, `ehrql/measures`), building query-model
//! nodes. Messages follow ehrQL's so researchers can search for them.

use std::cell::RefCell;
use std::rc::Rc;

use jiff::civil::Date;
use ruff_python_ast::{CmpOp, Operator};

use super::builtins::parse_iso_date;
use super::interp::{Args, Flow, Interp, R, err, type_err, value_err};
use super::value::{Dict, HKey, Module, Object, V};
use crate::codes;
use crate::qm::{AggregateByPatient as A, CodeSystem, Float, Function as F, Kind, NodeId, Position, QueryModelError, Type, Value};
use crate::tables::{self, TableDef};

// --- Objects -----------------------------------------------------------------------------

pub struct FrameObj {
    pub node: NodeId,
    /// The table's definition (helpers, names); `None` for `table_from_file` tables.
    pub table: Option<Rc<TableDef>>,
    pub name: String,
    /// A frame picked with first/last_for_patient keeps properties but not methods.
    pub picked: bool,
}

impl FrameObj {
    pub fn class_name(&self) -> String {
        self.name.clone()
    }

    fn has_helper(&self, name: &str) -> bool {
        self.table.as_ref().is_some_and(|t| t.helpers.iter().any(|h| h == name))
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Unit {
    Days,
    Weeks,
    Months,
    Years,
}

impl Unit {
    pub fn class_name(self) -> &'static str {
        match self {
            Unit::Days => "days",
            Unit::Weeks => "weeks",
            Unit::Months => "months",
            Unit::Years => "years",
        }
    }
}

#[derive(Clone)]
pub enum DurValue {
    Int(i64),
    Series(NodeId),
}

pub struct Duration {
    pub unit: Unit,
    pub value: DurValue,
}

/// `configure_dummy_data(...)`.
#[derive(Debug, Clone, Default)]
pub struct DummyConfig {
    pub population_size: Option<i64>,
    pub timeout: Option<f64>,
    pub additional_population_constraint: Option<NodeId>,
    pub legacy: bool,
}

#[derive(Default)]
pub struct DatasetObj {
    pub population: Option<NodeId>,
    pub variables: Vec<(String, NodeId)>,
    pub events: Vec<(String, Vec<(String, NodeId)>)>,
    pub dummy: DummyConfig,
}

#[derive(Debug, Clone)]
pub struct MeasureDef {
    pub name: String,
    pub numerator: NodeId,
    pub denominator: NodeId,
    pub group_by: Vec<(String, NodeId)>,
    pub intervals: Vec<(Date, Date)>,
}

#[derive(Default)]
struct MeasureDefaults {
    numerator: Option<V>,
    denominator: Option<V>,
    group_by: Option<V>,
    intervals: Option<V>,
}

#[derive(Default)]
pub struct MeasuresObj {
    pub measures: Vec<MeasureDef>,
    defaults: Option<MeasureDefaults>,
    pub dummy: DummyConfig,
    pub disclosure_control: bool,
}

// --- Helpers -------------------------------------------------------------------------------

fn ehrql_err(message: impl Into<String>) -> Flow {
    err("ehrql.Error", message)
}

fn attr_err(obj: &str, name: &str) -> Flow {
    err("AttributeError", format!("'{obj}' object has no attribute '{name}'"))
}

/// Turns a query-model error into the exception ehrQL raises for it.
pub fn qm_err(e: QueryModelError) -> Flow {
    match e {
        QueryModelError::Type { .. } => type_err(e.to_string()),
        QueryModelError::DomainMismatch => ehrql_err(
            "\nCannot combine series which are drawn from different tables and both\nhave more than one value per patient.\n\n\
             To address this, try one of the following:\n\n \
             * Use `x.is_in(y)` instead of `x == y` to check if values from\n   one series match any of the patient's values in the other.\n\n \
             * Reduce one series to have only one value per patient by using\n   an aggregation like `maximum_for_patient()`.\n\n \
             * Pick a single row for each patient from the table using\n   `first_for_patient()`.",
        ),
        other => ehrql_err(other.to_string()),
    }
}

/// A series node from a value that is a series (`CaseOtherwise` counts).
fn as_series(v: &V) -> Option<NodeId> {
    match v {
        V::Series(n) | V::CaseOtherwise(n) => Some(*n),
        _ => None,
    }
}

fn stype(interp: &Interp, n: NodeId) -> Type {
    interp.graph.type_of(n).cloned().unwrap_or(Type::Bool)
}

fn patient(interp: &Interp, n: NodeId) -> bool {
    interp.graph.is_patient_level(n)
}

/// ehrQL's series class name, e.g. `DatePatientSeries`.
pub fn series_class(interp: &Interp, n: NodeId) -> String {
    let t = match stype(interp, n) {
        Type::Bool => "Bool",
        Type::Int => "Int",
        Type::Float => "Float",
        Type::Str => "Str",
        Type::Date => "Date",
        Type::Code(_) => "Code",
        Type::MultiCodeString(_) => "MultiCodeString",
        Type::Set(_) => "Set",
    };
    format!("{t}{}Series", if patient(interp, n) { "Patient" } else { "Event" })
}

pub fn python_type_name(interp: &Interp, v: &V) -> String {
    match v {
        V::Series(n) | V::CaseOtherwise(n) => series_class(interp, *n),
        other => other.type_name(),
    }
}

pub fn isinstance(interp: &Interp, v: &V, t: &str) -> bool {
    match (v, t) {
        (V::Series(_) | V::CaseOtherwise(_), "Series") => true,
        (V::Series(n), t) => series_class(interp, *n) == t,
        (V::Frame(_), "EventFrame" | "PatientFrame") => true,
        _ => false,
    }
}

fn python_type_for(t: &Type) -> String {
    match t {
        Type::Date => "datetime.date".into(),
        Type::Code(c) => format!("ehrql.codes.{}", c.class_name()),
        other => other.name(),
    }
}

/// Converts a Python value to a node, cast to the type of the series it meets (ehrQL's
/// `_cast` then `_convert`). `None` stays `None`.
fn cast_to(interp: &mut Interp, target: &Type, v: &V) -> R<Option<NodeId>> {
    if let Some(n) = as_series(v) {
        return Ok(Some(n));
    }
    let value = match (target, v) {
        (_, V::None) => return Ok(None),
        (Type::Float, V::Int(i)) => Value::Float(Float(*i as f64)),
        (Type::Date, V::Str(s)) => Value::Date(parse_date_literal(s)?),
        (Type::Code(c), V::Str(s)) => Value::Code(*c, validate_code(*c, s)?),
        (Type::MultiCodeString(_), V::Str(s)) => Value::Str(s.to_string()),
        _ => return convert(interp, v),
    };
    Ok(Some(interp.graph.value(value)))
}

fn parse_date_literal(s: &str) -> R<Date> {
    let ok = s.len() == 10 && s.bytes().enumerate().all(|(i, b)| if i == 4 || i == 7 { b == b'-' } else { b.is_ascii_digit() });
    if !ok {
        return Err(value_err(format!("Dates must be in YYYY-MM-DD format: {}", super::interp::py_str_repr(s))));
    }
    parse_iso_date(s).ok_or_else(|| value_err(format!("Invalid isoformat string: {}", super::interp::py_str_repr(s))))
}

fn validate_code(c: CodeSystem, s: &str) -> R<String> {
    if codes::is_valid(c, s) { Ok(s.to_string()) } else { Err(value_err(format!("Invalid {}: {s}", c.class_name()))) }
}

fn literal(v: &V) -> R<Option<Value>> {
    Ok(Some(match v {
        V::None => return Ok(None),
        V::Bool(b) => Value::Bool(*b),
        V::Int(i) => Value::Int(*i),
        V::Float(f) => Value::Float(Float(*f)),
        V::Str(s) => Value::Str(s.to_string()),
        V::Date(d) => Value::Date(*d),
        V::Code(c, s) => Value::Code(*c, s.to_string()),
        other => {
            return Err(type_err(format!(
                "Not a valid ehrQL value: {} (expected a series, a number, a string, a date or a code)",
                other.type_name()
            )));
        }
    }))
}

/// ehrQL's `_convert`: a series, or a literal as a `Value` node.
fn convert(interp: &mut Interp, v: &V) -> R<Option<NodeId>> {
    if let Some(n) = as_series(v) {
        return Ok(Some(n));
    }
    if let V::Set(_) = v {
        return Err(type_err("a set is only allowed as the argument of is_in()"));
    }
    if let V::Tuple(t) = v
        && t.len() == 1
    {
        return Err(type_err("a tuple is not an ehrQL value; is there a trailing comma?"));
    }
    Ok(literal(v)?.map(|val| interp.graph.value(val)))
}

fn build(interp: &mut Interp, f: F) -> R<V> {
    interp.graph.function(f).map(V::Series).map_err(qm_err)
}

fn agg(interp: &mut Interp, a: A) -> R<V> {
    interp.graph.aggregate(a).map(V::Series).map_err(qm_err)
}

fn need_series(interp: &mut Interp, target: &Type, v: &V) -> R<NodeId> {
    cast_to(interp, target, v)?.ok_or_else(|| type_err("None is not a valid ehrQL value here"))
}

fn frame_value(f: &FrameObj, node: NodeId) -> V {
    V::Frame(Rc::new(FrameObj { node, table: f.table.clone(), name: f.name.clone(), picked: f.picked }))
}

fn column(interp: &mut Interp, frame: &FrameObj, name: &str) -> R<V> {
    interp.graph.select_column(frame.node, name).map(V::Series).map_err(|_| attr_err(&frame.name, name))
}

// --- Modules -------------------------------------------------------------------------------

fn table_value(def: &TableDef, interp: &mut Interp) -> R<V> {
    let table = interp.graph.declare_table(def.schema.clone()).map_err(qm_err)?;
    let node = if def.schema.patient_level { interp.graph.select_patient_table(table) } else { interp.graph.select_table(table) }
        .map_err(qm_err)?;
    Ok(V::Frame(Rc::new(FrameObj { node, table: Some(Rc::new(def.clone())), name: def.python_name.clone(), picked: false })))
}

pub fn module(interp: &mut Interp, name: &str) -> R<Option<V>> {
    let f = |n: &'static str| V::Builtin(n);
    let attrs: Vec<(String, V)> = match name {
        "ehrql" => {
            let mut a: Vec<(String, V)> = [
                ("create_dataset", f("ehrql.create_dataset")),
                ("Dataset", f("ehrql.create_dataset")),
                ("create_measures", f("ehrql.create_measures")),
                ("Measures", f("ehrql.create_measures")),
                ("codelist_from_csv", f("ehrql.codelist_from_csv")),
                ("case", f("ehrql.case")),
                ("when", f("ehrql.when")),
                ("days", f("ehrql.days")),
                ("weeks", f("ehrql.weeks")),
                ("months", f("ehrql.months")),
                ("years", f("ehrql.years")),
                ("maximum_of", f("ehrql.maximum_of")),
                ("minimum_of", f("ehrql.minimum_of")),
                ("get_parameter", f("ehrql.get_parameter")),
                ("claim_permissions", f("ehrql.claim_permissions")),
                ("show", f("ehrql.show")),
                ("table_from_file", f("ehrql.table_from_file")),
                ("Error", V::Type("ehrql.Error")),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            a.push(("INTERVAL".into(), interval(interp)));
            a
        }
        "ehrql.codes" => {
            let mut a: Vec<(String, V)> = ["BNFCode", "CTV3Code", "ICD10Code", "OPCS4Code", "SNOMEDCTCode", "DMDCode"]
                .into_iter()
                .map(|c| (c.to_string(), V::Type(c)))
                .collect();
            a.push(("codelist_from_csv".into(), f("ehrql.codelist_from_csv")));
            a.push(("CodelistError".into(), V::Type("ehrql.codes.CodelistError")));
            a
        }
        "ehrql.tables" => vec![
            ("table_from_file".into(), f("ehrql.table_from_file")),
            ("table_from_rows".into(), f("ehrql.table_from_rows")),
            ("EventFrame".into(), V::Type("EventFrame")),
            ("PatientFrame".into(), V::Type("PatientFrame")),
            ("Series".into(), V::Type("Series")),
        ],
        "ehrql.query_language" => vec![
            ("EventFrame".into(), V::Type("EventFrame")),
            ("PatientFrame".into(), V::Type("PatientFrame")),
            ("Series".into(), V::Type("Series")),
        ],
        _ => {
            let cat = tables::catalog();
            if let Some(tables) = cat.module(name) {
                let mut a = vec![];
                for (pyname, def) in tables {
                    a.push((pyname.clone(), table_value(def, interp)?));
                }
                a
            } else if cat.is_package(name) || name == "ehrql.tables.beta.raw" || name == "ehrql.tables.raw" {
                vec![]
            } else if name.starts_with("ehrql") || name.starts_with("databuilder") {
                return Err(err(
                    "ModuleNotFoundError",
                    format!(
                        "No module named '{name}' (quarry knows ehrql, ehrql.codes, ehrql.tables and the table modules listed in docs/tables.md)"
                    ),
                ));
            } else {
                return Ok(None);
            }
        }
    };
    Ok(Some(V::Module(Rc::new(Module { name: name.into(), attrs: RefCell::new(attrs.into_iter().collect()) }))))
}

fn interval(interp: &mut Interp) -> V {
    let s = interp.graph.parameter("interval_start_date", Type::Date);
    let e = interp.graph.parameter("interval_end_date", Type::Date);
    V::Object(Rc::new(Object {
        class: "Interval",
        attrs: RefCell::new(vec![("start_date".into(), V::Series(s)), ("end_date".into(), V::Series(e))]),
    }))
}

// --- Functions -----------------------------------------------------------------------------

pub fn call_function(interp: &mut Interp, name: &str, mut args: Args) -> R<V> {
    match name {
        "create_dataset" => {
            args.bind("create_dataset", &[])?;
            Ok(V::Dataset(Rc::new(RefCell::new(DatasetObj::default()))))
        }
        "create_measures" => {
            args.bind("create_measures", &[])?;
            Ok(V::Measures(Rc::new(RefCell::new(MeasuresObj { disclosure_control: true, ..Default::default() }))))
        }
        "codelist_from_csv" => {
            let a = args.bind("codelist_from_csv", &["filename", "column", "category_column"])?;
            let file = match &a[0] {
                Some(V::Str(s)) => s.to_string(),
                _ => return Err(type_err("codelist_from_csv() needs a filename")),
            };
            let column = match &a[1] {
                Some(V::Str(s)) => s.to_string(),
                _ => return Err(type_err("codelist_from_csv() missing 1 required keyword-only argument: 'column'")),
            };
            let category = match &a[2] {
                Some(V::Str(s)) => Some(s.to_string()),
                None | Some(V::None) => None,
                _ => return Err(type_err("category_column must be a string")),
            };
            let path = interp.data_path(&file);
            match codes::codelist_from_csv(&path, &file, &column, category.as_deref()) {
                Ok(codes::Codelist::Codes(c)) => Ok(V::list(c.iter().map(|s| V::str(s)).collect())),
                Ok(codes::Codelist::Categorised(pairs)) => {
                    let mut d = Dict::default();
                    for (c, cat) in pairs {
                        d.insert(HKey::Str(Rc::from(c.as_str())), V::str(&c), V::str(&cat));
                    }
                    Ok(V::Dict(Rc::new(RefCell::new(d))))
                }
                Err(codes::CodelistError::Missing(f)) => Err(err("ehrql.codes.CodelistError", format!("No CSV file at {f}"))),
                Err(e) => Err(err("ehrql.codes.CodelistError", e.to_string())),
            }
        }
        "days" | "weeks" | "months" | "years" => {
            let unit = match name {
                "days" => Unit::Days,
                "weeks" => Unit::Weeks,
                "months" => Unit::Months,
                _ => Unit::Years,
            };
            let a = args.bind(name, &["value"])?;
            let value = match &a[0] {
                Some(V::Int(i)) => DurValue::Int(*i),
                Some(v) if as_series(v).is_some_and(|n| stype(interp, n) == Type::Int) => DurValue::Series(as_series(v).expect("series")),
                _ => return Err(type_err(format!("{name}() expects an integer or an integer series"))),
            };
            Ok(V::Duration(Rc::new(Duration { unit, value })))
        }
        "when" => {
            let a = args.bind("when", &["condition"])?;
            let c = a[0].clone().unwrap_or(V::None);
            let n = convert(interp, &c)?.ok_or_else(|| type_err("when() needs a boolean series"))?;
            if stype(interp, n) != Type::Bool {
                return Err(type_err(format!("Expected type 'Series[bool]' but got 'Series[{}]'", python_type_for(&stype(interp, n)))));
            }
            Ok(V::When(n))
        }
        "case" => {
            let otherwise = match (args.take_kw("otherwise"), args.take_kw("default")) {
                (Some(o), _) | (None, Some(o)) => o,
                (None, None) => V::None,
            };
            if !args.kw.is_empty() {
                return Err(type_err(format!("case() got an unexpected keyword argument '{}'", args.kw[0].0)));
            }
            case(interp, args.pos, otherwise)
        }
        "maximum_of" | "minimum_of" => {
            if args.pos.len() < 2 {
                return Err(type_err(format!("{name}() takes at least two arguments")));
            }
            let target = args.pos.iter().find_map(as_series).map(|n| stype(interp, n));
            let Some(target) = target else {
                return Err(type_err(format!("{name}() needs at least one ehrQL series")));
            };
            let mut nodes = vec![];
            for v in &args.pos {
                nodes.push(need_series(interp, &target, v)?);
            }
            build(interp, if name == "maximum_of" { F::MaximumOf(nodes) } else { F::MinimumOf(nodes) })
        }
        "get_parameter" => get_parameter(interp, args),
        "claim_permissions" => {
            for p in args.pos {
                let s = interp.to_str(&p)?;
                interp.claimed_permissions.push(s);
            }
            Ok(V::None)
        }
        "show" => Ok(V::None),
        "table_from_file" => table_from_file(interp, args),
        "table_from_rows" => Err(err("quarry.UnsupportedError", "table_from_rows() is for ehrQL's own tests; use table_from_file()")),
        other => Err(err("quarry.UnsupportedError", format!("ehrql.{other} is not supported"))),
    }
}

fn case(interp: &mut Interp, whens: Vec<V>, otherwise: V) -> R<V> {
    if whens.is_empty() {
        return Err(type_err("`case()` expression requires at least one `when(...)` clause"));
    }
    let mut cases: Vec<(NodeId, Option<NodeId>)> = vec![];
    for w in whens {
        match w {
            V::WhenThen(c, v) => {
                if cases.iter().any(|(x, _)| *x == c) {
                    return Err(type_err("duplicated condition in `case()` expression"));
                }
                cases.push((c, v));
            }
            V::When(_) => return Err(type_err("`when(...)` clause missing a `.then(...)` value in `case()` expression")),
            V::CaseOtherwise(_) => {
                return Err(type_err(
                    "invalid syntax for `otherwise` in `case()` expression, instead of:\n\n    case(\n        when(...).then(...).otherwise(...)\n    )\n\nYou should write:\n\n    case(\n        when(...).then(...),\n        otherwise=...\n    )\n",
                ));
            }
            other => {
                return Err(type_err(format!(
                    "cases must be specified in the form:\n\n    when(<CONDITION>).then(<VALUE>)\n\n(got {})",
                    python_type_name(interp, &other)
                )));
            }
        }
    }
    let default = convert(interp, &otherwise)?;
    if cases.iter().all(|(_, v)| v.is_none()) && default.is_none() {
        return Err(type_err("`case()` expression requires at least one `then` value that is not None"));
    }
    // Values are not cast: every one must already have the first one's type.
    let mut first: Option<Type> = None;
    for v in cases.iter().filter_map(|(_, v)| *v).chain(default) {
        let t = stype(interp, v);
        match &first {
            None => first = Some(t),
            Some(f) if *f == t => {}
            Some(f) => {
                return Err(type_err(format!(
                    "Expected type 'Series[{}] | None' but got 'Series[{}]'",
                    python_type_for(f),
                    python_type_for(&t)
                )));
            }
        }
    }
    interp.graph.case(cases, default).map(V::Series).map_err(qm_err)
}

fn get_parameter(interp: &mut Interp, args: Args) -> R<V> {
    let a = args.bind("get_parameter", &["name", "type", "default"])?;
    let Some(V::Str(name)) = &a[0] else {
        return Err(type_err("get_parameter() needs a parameter name"));
    };
    let ty = a[1].clone().unwrap_or(V::Type("str"));
    if matches!(ty, V::Type("list" | "set" | "tuple")) {
        return Err(type_err("get_parameter() does not accept list, set or tuple types; several values give a list"));
    }
    let flag = format!("--{name}");
    let user = &interp.argv[1..];
    let mut values = vec![];
    let mut i = 0;
    let mut found = false;
    while i < user.len() {
        if user[i] == flag {
            found = true;
            i += 1;
            while i < user.len() && !user[i].starts_with("--") {
                values.push(user[i].clone());
                i += 1;
            }
        } else if let Some(v) = user[i].strip_prefix(&format!("{flag}=")) {
            found = true;
            values.push(v.to_string());
            i += 1;
        } else {
            i += 1;
        }
    }
    if !found || values.is_empty() {
        if let Some(d) = &a[2] {
            return Ok(d.clone());
        }
        let file = interp.files.first().map(|f| f.shown.clone()).unwrap_or_default();
        return Err(err(
            "ehrql.exceptions.ParameterError",
            format!(
                "{file} error: parameter `{name}` defined but no values found. Pass parameters in the form `--{name} <value>` or provide a default value to `get_parameter()`\nNote that custom parameters MUST be provided last, and must follow a double-dash `--`."
            ),
        ));
    }
    let mut out = vec![];
    for raw in values {
        out.push(match &ty {
            V::Type("bool") => match raw.as_str() {
                "true" | "True" | "1" => V::Bool(true),
                "false" | "False" | "0" => V::Bool(false),
                _ => return Err(value_err(format!("parameter `{name}`: invalid boolean value '{raw}'"))),
            },
            t => interp.call(t.clone(), Args::new(vec![V::str(&raw)]))?,
        });
    }
    Ok(if out.len() == 1 { out.pop().expect("one value") } else { V::list(out) })
}

fn table_from_file(interp: &mut Interp, mut args: Args) -> R<V> {
    let columns = args.take_kw("columns");
    let a = args.bind("table_from_file", &["path"])?;
    let Some(V::Str(path)) = &a[0] else {
        return Err(type_err("table_from_file() needs a path"));
    };
    match columns {
        Some(V::Dict(cols)) => {
            let cols: Vec<(V, V)> = cols.borrow().iter().map(|(k, t)| (k.clone(), t.clone())).collect();
            inline_table(interp, path, &cols)
        }
        // The older decorator form: `@table_from_file(path)` on a `PatientFrame` class.
        None => {
            let decorator = Object { class: "TableFromFile", attrs: std::cell::RefCell::new(vec![("path".into(), V::Str(path.clone()))]) };
            Ok(V::Method(Rc::new(V::Object(Rc::new(decorator))), Rc::from("__call__")))
        }
        Some(other) => Err(type_err(format!("table_from_file() columns must be a dict of {{name: type}}, not {}", other.type_name()))),
    }
}

/// `@table_from_file(path)` applied to a class: its `Series(type)` attributes are the columns.
pub fn table_from_file_class(interp: &mut Interp, decorator: &Object, args: Args) -> R<V> {
    let a = args.bind("table_from_file", &["cls"])?;
    let Some(V::Object(class)) = &a[0] else {
        return Err(type_err("@table_from_file(...) decorates a class (class name(PatientFrame): ...)"));
    };
    if class.get("__base__").is_some_and(|b| !matches!(b, V::Type("PatientFrame"))) {
        return Err(type_err("@table_from_file(...) makes a PatientFrame: the class must subclass PatientFrame"));
    }
    let Some(V::Str(path)) = decorator.get("path") else { unreachable!("the decorator holds its path") };
    let Some(V::List(columns)) = class.get("__columns__") else { unreachable!("a frame class lists its columns") };
    let cols: Vec<(V, V)> = columns
        .borrow()
        .iter()
        .map(|pair| match pair {
            V::Tuple(t) => (t[0].clone(), t[1].clone()),
            _ => unreachable!("(name, type) pairs"),
        })
        .collect();
    inline_table(interp, &path, &cols)
}

/// A `table_from_file` table: `cols` are `(name, type)` pairs, in file-independent order.
fn inline_table(interp: &mut Interp, path: &Rc<str>, cols: &[(V, V)]) -> R<V> {
    let mut schema_cols = vec![];
    for (k, t) in cols {
        let V::Str(name) = k else { return Err(type_err("column names must be strings")) };
        let type_ = match t {
            V::Type("int") => Type::Int,
            V::Type("float") => Type::Float,
            V::Type("str") => Type::Str,
            V::Type("bool") => Type::Bool,
            V::Type("date") => Type::Date,
            V::Type(c) => match CodeSystem::from_class_name(c) {
                Some(cs) => Type::Code(cs),
                None => return Err(type_err(format!("unsupported column type {c}"))),
            },
            other => return Err(type_err(format!("column types must be types, not {}", other.type_name()))),
        };
        schema_cols.push(crate::qm::Column { name: name.to_string(), type_, constraints: vec![], description: String::new() });
    }
    let file = interp.data_path(path);
    let rows = crate::inline::read_inline_table(&file, path, &schema_cols).map_err(|m| err("FileValidationError", m))?;
    let stem = std::path::Path::new(&**path).file_stem().map(|s| s.to_string_lossy().replace('.', "_")).unwrap_or_default();
    let schema =
        crate::qm::TableSchema { name: format!("inline_{stem}"), columns: schema_cols, patient_level: true, required_permission: None };
    let table = interp.graph.declare_table(schema).map_err(qm_err)?;
    let node = interp.graph.inline_patient_table(table, rows).map_err(qm_err)?;
    Ok(V::Frame(Rc::new(FrameObj { node, table: None, name: "PatientFrame".into(), picked: false })))
}

pub fn call_type(interp: &mut Interp, t: &str, mut args: Args) -> R<V> {
    if t == "Series" {
        // A column of a frame class: `Series(int)`, `Series(str, constraints=[...])`; only
        // the type matters here.
        args.kw.clear();
        let a = args.bind("Series", &["type"])?;
        let Some(ty @ V::Type(_)) = &a[0] else { return Err(type_err("Series() needs a type, e.g. Series(int)")) };
        return Ok(V::Object(Rc::new(Object { class: "SeriesSpec", attrs: std::cell::RefCell::new(vec![("type".into(), ty.clone())]) })));
    }
    if let Some(c) = CodeSystem::from_class_name(t) {
        let a = args.bind(t, &["value"])?;
        let Some(V::Str(s)) = &a[0] else { return Err(type_err(format!("{t}() needs a string"))) };
        return Ok(V::Code(c, Rc::from(validate_code(c, s)?.as_str())));
    }
    let _ = interp;
    Err(err("quarry.UnsupportedError", format!("calling {t}() is not supported")))
}

// --- Attributes ----------------------------------------------------------------------------

pub fn get_attr(interp: &mut Interp, obj: &V, name: &str) -> R<V> {
    let method = |obj: &V| Ok(V::Method(Rc::new(obj.clone()), Rc::from(name)));
    match obj {
        V::Series(n) | V::CaseOtherwise(n) => {
            let n = *n;
            let t = stype(interp, n);
            if t == Type::Date && matches!(name, "year" | "month" | "day") {
                return build(
                    interp,
                    match name {
                        "year" => F::YearFromDate(n),
                        "month" => F::MonthFromDate(n),
                        _ => F::DayFromDate(n),
                    },
                );
            }
            if series_has_method(interp, n, name) { method(&V::Series(n)) } else { Err(attr_err(&series_class(interp, n), name)) }
        }
        V::Frame(f) => {
            if let Ok(col) = interp.graph.select_column(f.node, name) {
                return Ok(V::Series(col));
            }
            if matches!(name, "imd_quintile" | "imd_decile") && f.has_helper(name) {
                return imd_band(interp, f, name == "imd_quintile");
            }
            let event = matches!(interp.graph.kind(f.node), Kind::EventFrame { .. });
            let sorted = matches!(interp.graph.kind(f.node), Kind::EventFrame { sorted: true, .. });
            let ok = match name {
                "exists_for_patient" | "count_for_patient" => true,
                "where" | "except_where" | "sort_by" => event,
                "first_for_patient" | "last_for_patient" => sorted,
                h => !f.picked && f.has_helper(h),
            };
            if ok {
                method(obj)
            } else {
                let hint = if name.ends_with("_for_patient") { ". Did you mean: 'count_for_patient'?" } else { "" };
                Err(err("AttributeError", format!("'{}' object has no attribute '{name}'{hint}", f.name)))
            }
        }
        V::Dataset(d) => match name {
            "define_population"
            | "add_column"
            | "configure_dummy_data"
            | "configure_dummy_dataset"
            | "add_event_table"
            | "__setattr__"
            | "__getattr__" => method(obj),
            "population" => d.borrow().population.map(V::Series).ok_or_else(|| attr_err("Dataset", "population")),
            _ => d
                .borrow()
                .variables
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| V::Series(*v))
                .ok_or_else(|| err("AttributeError", format!("Variable '{name}' has not been defined"))),
        },
        V::Measures(_) => match name {
            "define_measure" | "define_defaults" | "configure_dummy_data" | "configure_disclosure_control" => method(obj),
            _ => Err(attr_err("Measures", name)),
        },
        V::When(_) if name == "then" => method(obj),
        V::WhenThen(..) if name == "otherwise" => method(obj),
        V::Duration(_) if matches!(name, "starting_on" | "ending_on") => method(obj),
        V::Duration(d) if name == "value" => Ok(match &d.value {
            DurValue::Int(i) => V::Int(*i),
            DurValue::Series(n) => V::Series(*n),
        }),
        V::DateDifference(end, start) => {
            let (end, start) = (*end, *start);
            match name {
                "days" => build(interp, F::DateDifferenceInDays(end, start)),
                "weeks" => {
                    let days = interp.graph.function(F::DateDifferenceInDays(end, start)).map_err(qm_err)?;
                    let seven = interp.graph.value(Value::Int(7));
                    build(interp, F::FloorDivide(days, seven))
                }
                "months" => build(interp, F::DateDifferenceInMonths(end, start)),
                "years" => build(interp, F::DateDifferenceInYears(end, start)),
                _ => Err(attr_err("DateDifference", name)),
            }
        }
        V::Code(_, s) if name == "value" => Ok(V::Str(s.clone())),
        other => Err(attr_err(&python_type_name(interp, other), name)),
    }
}

fn series_has_method(interp: &Interp, n: NodeId, name: &str) -> bool {
    let t = stype(interp, n);
    let event = !patient(interp, n);
    let common = matches!(name, "is_null" | "is_not_null" | "when_null_then" | "if_null_then" | "is_in" | "is_not_in" | "map_values");
    let multi = matches!(t, Type::MultiCodeString(_));
    if common {
        return !multi || matches!(name, "is_null" | "is_not_null" | "when_null_then" | "if_null_then" | "is_in" | "is_not_in");
    }
    match name {
        "count_distinct_for_patient" => event,
        "as_int" => matches!(t, Type::Bool | Type::Int | Type::Float),
        "as_float" | "absolute" => matches!(t, Type::Int | Type::Float),
        "sum_for_patient" | "mean_for_patient" => event && matches!(t, Type::Int | Type::Float),
        "minimum_for_patient" | "maximum_for_patient" => event && matches!(t, Type::Int | Type::Float | Type::Str | Type::Date),
        "contains" => matches!(t, Type::Str | Type::MultiCodeString(_)),
        "contains_any_of" => multi,
        "to_category" => matches!(t, Type::Code(_)),
        "to_first_of_year"
        | "to_first_of_month"
        | "is_before"
        | "is_on_or_before"
        | "is_after"
        | "is_on_or_after"
        | "is_between_but_not_on"
        | "is_on_or_between"
        | "is_during" => t == Type::Date,
        "count_episodes_for_patient" => event && t == Type::Date,
        _ => false,
    }
}

fn imd_band(interp: &mut Interp, f: &FrameObj, quintile: bool) -> R<V> {
    let imd = column(interp, f, "imd_rounded")?;
    let imd = as_series(&imd).expect("column");
    let k = if quintile { 5 } else { 10 };
    let mut cases = vec![];
    for i in 1..=k {
        let upper = interp.graph.value(Value::Int(32844 * i / k));
        let lt = interp.graph.function(F::Lt(imd, upper)).map_err(qm_err)?;
        let cond = if i == 1 {
            let zero = interp.graph.value(Value::Int(0));
            let ge = interp.graph.function(F::Ge(imd, zero)).map_err(qm_err)?;
            interp.graph.function(F::And(vec![ge, lt])).map_err(qm_err)?
        } else {
            lt
        };
        let label = match i {
            1 => "1 (most deprived)".to_string(),
            i if i == k => format!("{k} (least deprived)"),
            i => i.to_string(),
        };
        let v = interp.graph.value(Value::Str(label));
        cases.push((cond, Some(v)));
    }
    let unknown = interp.graph.value(Value::Str("unknown".into()));
    interp.graph.case(cases, Some(unknown)).map(V::Series).map_err(qm_err)
}

// --- Dataset -------------------------------------------------------------------------------

fn valid_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic()) && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn add_variable(interp: &mut Interp, d: &Rc<RefCell<DatasetObj>>, name: &str, value: V) -> R<()> {
    if name == "population" {
        return Err(err("AttributeError", "Cannot set variable 'population'; use define_population() instead"));
    }
    if matches!(name, "patient_id" | "dummy_data_config") {
        return Err(err("AttributeError", format!("'{name}' is not an allowed variable name")));
    }
    if !valid_variable_name(name) {
        return Err(err(
            "AttributeError",
            format!(
                "variable names must start with a letter, and contain only alphanumeric characters and underscores (you defined a variable '{name}')"
            ),
        ));
    }
    if d.borrow().variables.iter().any(|(n, _)| n == name) {
        return Err(err("AttributeError", format!("'{name}' is already set and cannot be reassigned")));
    }
    let node = match &value {
        v if as_series(v).is_some() => {
            let n = as_series(v).expect("series");
            if !patient(interp, n) {
                return Err(type_err(format!("invalid variable '{name}':\nExpecting a series with only one value per patient")));
            }
            n
        }
        V::Frame(f) => {
            return Err(type_err(format!(
                "invalid variable '{name}':\nExpecting a series but got a frame (`{}`): are you missing a column name?)",
                f.name
            )));
        }
        V::Tuple(t) if t.len() == 1 => {
            return Err(type_err(format!("invalid variable '{name}':\nExpecting a series but got a tuple: is there a trailing comma?")));
        }
        other => {
            return Err(type_err(format!(
                "invalid variable '{name}':\nExpecting an ehrQL series, got type '{}'",
                python_type_name(interp, other)
            )));
        }
    };
    d.borrow_mut().variables.push((name.to_string(), node));
    Ok(())
}

pub fn set_attr(interp: &mut Interp, obj: &V, name: &str, value: V) -> R<()> {
    match obj {
        V::Dataset(d) => add_variable(interp, d, name, value),
        _ => Err(err("AttributeError", format!("cannot set attribute '{name}' on {}", python_type_name(interp, obj)))),
    }
}

fn define_population(interp: &mut Interp, value: &V) -> R<NodeId> {
    let Some(n) = as_series(value) else {
        return Err(type_err(format!("invalid population definition:\nExpecting a series, got {}", python_type_name(interp, value))));
    };
    if stype(interp, n) != Type::Bool {
        return Err(type_err(format!(
            "invalid population definition:\nExpecting a boolean series, got series of type '{}'",
            python_type_for(&stype(interp, n))
        )));
    }
    if !patient(interp, n) {
        return Err(type_err("invalid population definition:\nExpecting a series with only one value per patient"));
    }
    if crate::validate::true_for_empty_patient(&interp.graph, n) {
        return Err(ehrql_err("population definition must not evaluate as True for NULL inputs"));
    }
    Ok(n)
}

fn dummy_config(interp: &mut Interp, args: Args, what: &str) -> R<DummyConfig> {
    let a = args.bind(what, &["population_size", "legacy", "timeout", "additional_population_constraint"])?;
    let population_size = match &a[0] {
        None | Some(V::None) => None,
        Some(V::Int(i)) if *i >= 0 => Some(*i),
        _ => return Err(type_err("population_size must be a non-negative integer")),
    };
    let legacy = match &a[1] {
        Some(v) => interp.truthy(v)?,
        None => false,
    };
    let timeout = match &a[2] {
        None | Some(V::None) => None,
        Some(V::Int(i)) => Some(*i as f64),
        Some(V::Float(f)) => Some(*f),
        _ => return Err(type_err("timeout must be a number of seconds")),
    };
    let additional_population_constraint = match &a[3] {
        None | Some(V::None) => None,
        Some(v) => {
            let n = define_population(interp, v)?;
            if legacy {
                return Err(value_err("Cannot use `additional_population_constraint` with legacy dummy data"));
            }
            Some(n)
        }
    };
    Ok(DummyConfig { population_size, timeout, additional_population_constraint, legacy })
}

fn dataset_method(interp: &mut Interp, d: &Rc<RefCell<DatasetObj>>, name: &str, args: Args) -> R<V> {
    match name {
        "define_population" => {
            let a = args.bind("define_population", &["population_condition"])?;
            if d.borrow().population.is_some() {
                return Err(err("AttributeError", "define_population() should be called no more than once"));
            }
            let n = define_population(interp, &a[0].clone().unwrap_or(V::None))?;
            d.borrow_mut().population = Some(n);
            Ok(V::None)
        }
        "add_column" | "__setattr__" => {
            let a = args.bind(name, &["column_name", "ehrql_query"])?;
            let Some(V::Str(col)) = &a[0] else { return Err(type_err("column name must be a string")) };
            add_variable(interp, d, col, a[1].clone().unwrap_or(V::None))?;
            Ok(V::None)
        }
        "__getattr__" => {
            let a = args.bind(name, &["name"])?;
            let Some(V::Str(n)) = &a[0] else { return Err(type_err("attribute name must be a string")) };
            get_attr(interp, &V::Dataset(d.clone()), n)
        }
        "configure_dummy_data" | "configure_dummy_dataset" => {
            let cfg = dummy_config(interp, args, name)?;
            d.borrow_mut().dummy = cfg;
            Ok(V::None)
        }
        "add_event_table" => {
            let table_name = match args.pos.first() {
                Some(V::Str(s)) => s.to_string(),
                _ => return Err(type_err("add_event_table() needs a table name")),
            };
            if !valid_variable_name(&table_name) || table_name == "dataset" {
                return Err(value_err(format!("invalid event table name '{table_name}'")));
            }
            if d.borrow().events.iter().any(|(n, _)| *n == table_name) {
                return Err(value_err(format!("event table '{table_name}' is already defined")));
            }
            let mut cols = vec![];
            let mut domain = None;
            for (k, v) in args.kw {
                let Some(n) = as_series(&v) else {
                    return Err(type_err(format!("event table column '{k}' must be an ehrQL series")));
                };
                if !patient(interp, n) {
                    match domain {
                        None => domain = Some(interp.graph.domain(n)),
                        Some(dm) if dm == interp.graph.domain(n) => {}
                        Some(_) => {
                            return Err(ehrql_err(
                                "cannot combine series drawn from different tables; create a new event table for these series",
                            ));
                        }
                    }
                }
                cols.push((k, n));
            }
            if domain.is_none() {
                return Err(type_err("an event table needs at least one series with many values per patient"));
            }
            d.borrow_mut().events.push((table_name, cols));
            Ok(V::None)
        }
        _ => Err(attr_err("Dataset", name)),
    }
}

// --- Measures ------------------------------------------------------------------------------

fn intervals_of(interp: &mut Interp, v: &V) -> R<Vec<(Date, Date)>> {
    let mut out = vec![];
    for item in interp.iterate(v)? {
        let pair = interp.iterate(&item)?;
        match pair.as_slice() {
            [V::Date(a), V::Date(b)] => {
                if a > b {
                    return Err(value_err(format!("Interval start date must be before end date: {a} > {b}")));
                }
                out.push((*a, *b));
            }
            _ => {
                return Err(type_err(
                    "intervals must be a list of (start_date, end_date) pairs, e.g. months(12).starting_on(\"2020-01-01\")",
                ));
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn measures_method(interp: &mut Interp, m: &Rc<RefCell<MeasuresObj>>, name: &str, args: Args) -> R<V> {
    match name {
        "define_defaults" => {
            let a = args.bind(name, &["numerator", "denominator", "group_by", "intervals"])?;
            if m.borrow().defaults.is_some() {
                return Err(value_err("Defaults already set; cannot call `define_defaults()` more than once"));
            }
            let mut it = a.into_iter();
            m.borrow_mut().defaults = Some(MeasureDefaults {
                numerator: it.next().flatten(),
                denominator: it.next().flatten(),
                group_by: it.next().flatten(),
                intervals: it.next().flatten(),
            });
            Ok(V::None)
        }
        "define_measure" => {
            let a = args.bind(name, &["name", "numerator", "denominator", "group_by", "intervals"])?;
            let Some(V::Str(mname)) = &a[0] else { return Err(type_err("define_measure() needs a name")) };
            let mname = mname.to_string();
            if !valid_variable_name(&mname) {
                return Err(value_err(format!(
                    "Measure names must start with a letter and contain only alphanumeric characters and underscores, got: {mname}"
                )));
            }
            if m.borrow().measures.iter().any(|x| x.name == mname) {
                return Err(value_err(format!("Measure already defined with name: {mname}")));
            }
            let pick = |given: &Option<V>, field: &str, m: &MeasuresObj| -> Option<V> {
                given.clone().filter(|v| !matches!(v, V::None)).or_else(|| {
                    m.defaults.as_ref().and_then(|d| match field {
                        "numerator" => d.numerator.clone(),
                        "denominator" => d.denominator.clone(),
                        "group_by" => d.group_by.clone(),
                        _ => d.intervals.clone(),
                    })
                })
            };
            let (num, den, gb, iv) = {
                let mb = m.borrow();
                (
                    pick(&a[1], "numerator", &mb),
                    pick(&a[2], "denominator", &mb),
                    pick(&a[3], "group_by", &mb),
                    pick(&a[4], "intervals", &mb),
                )
            };
            let series_arg = |v: Option<V>, field: &str| -> R<NodeId> {
                let v = v.ok_or_else(|| value_err(format!("No value supplied for '{field}' and no default defined")))?;
                let n = as_series(&v).ok_or_else(|| type_err(format!("{field} must be a boolean or integer series")))?;
                let t = stype(interp, n);
                if !matches!(t, Type::Bool | Type::Int) || !patient(interp, n) {
                    return Err(type_err(format!("{field} must be a one-value-per-patient boolean or integer series")));
                }
                Ok(n)
            };
            let numerator = series_arg(num, "numerator")?;
            let denominator = series_arg(den, "denominator")?;
            let mut group_by = vec![];
            if let Some(V::Dict(g)) = gb {
                for (k, v) in g.borrow().iter() {
                    let V::Str(k) = k else { return Err(type_err("group_by names must be strings")) };
                    if matches!(&**k, "measure" | "numerator" | "denominator" | "ratio" | "interval_start" | "interval_end")
                        || !valid_variable_name(k)
                    {
                        return Err(value_err(format!("disallowed group_by column name: {k}")));
                    }
                    let n = as_series(v)
                        .filter(|n| patient(interp, *n))
                        .ok_or_else(|| type_err(format!("group_by '{k}' must be a one-value-per-patient series")))?;
                    group_by.push((k.to_string(), n));
                }
            }
            for (k, n) in &group_by {
                for other in m.borrow().measures.iter() {
                    if let Some((_, n2)) = other.group_by.iter().find(|(k2, _)| k2 == k)
                        && n2 != n
                    {
                        return Err(value_err(format!("Inconsistent definition for `group_by` column: {k}")));
                    }
                }
            }
            let intervals = match iv {
                Some(v) => intervals_of(interp, &v)?,
                None => return Err(value_err("No value supplied for 'intervals' and no default defined")),
            };
            m.borrow_mut().measures.push(MeasureDef { name: mname, numerator, denominator, group_by, intervals });
            Ok(V::None)
        }
        "configure_dummy_data" => {
            let cfg = dummy_config(interp, args, name)?;
            m.borrow_mut().dummy = cfg;
            Ok(V::None)
        }
        "configure_disclosure_control" => {
            let a = args.bind(name, &["enabled"])?;
            let enabled = match &a[0] {
                Some(v) => interp.truthy(v)?,
                None => true,
            };
            m.borrow_mut().disclosure_control = enabled;
            Ok(V::None)
        }
        _ => Err(attr_err("Measures", name)),
    }
}

// --- Methods -------------------------------------------------------------------------------

pub fn call_method(interp: &mut Interp, obj: V, name: &str, args: Args) -> R<V> {
    match &obj {
        V::Series(n) | V::CaseOtherwise(n) => series_method(interp, *n, name, args),
        V::Frame(f) => frame_method(interp, f, name, args),
        V::Dataset(d) => dataset_method(interp, d, name, args),
        V::Measures(m) => measures_method(interp, m, name, args),
        V::When(c) if name == "then" => {
            let a = args.bind("then", &["value"])?;
            let v = convert(interp, &a[0].clone().unwrap_or(V::None))?;
            Ok(V::WhenThen(*c, v))
        }
        V::WhenThen(c, v) if name == "otherwise" => {
            let a = args.bind("otherwise", &["value"])?;
            match case(interp, vec![V::WhenThen(*c, *v)], a[0].clone().unwrap_or(V::None))? {
                V::Series(n) => Ok(V::CaseOtherwise(n)),
                other => Ok(other),
            }
        }
        V::Duration(d) if matches!(name, "starting_on" | "ending_on") => {
            let a = args.bind(name, &["date"])?;
            let base = match &a[0] {
                Some(V::Str(s)) => parse_date_literal(s)?,
                Some(V::Date(d)) => *d,
                _ => return Err(type_err(format!("{name}() needs a date"))),
            };
            let DurValue::Int(n) = d.value else { return Err(type_err(format!("{name}() needs a literal number of units"))) };
            if n < 0 {
                return Err(value_err("Duration must not be negative"));
            }
            let add = |k: i64| -> R<Date> { duration_add(base, d.unit, k) };
            let mut out = vec![];
            if name == "starting_on" {
                for k in 0..n {
                    out.push(V::tuple(vec![V::Date(add(k)?), V::Date(day_before(add(k + 1)?)?)]));
                }
            } else {
                for k in -(n - 1)..=0 {
                    out.push(V::tuple(vec![V::Date(day_after(add(k - 1)?)?), V::Date(add(k)?)]));
                }
            }
            Ok(V::list(out))
        }
        other => Err(attr_err(&python_type_name(interp, other), name)),
    }
}

fn day_before(d: Date) -> R<Date> {
    crate::semantics::add_days(d, -1).map_err(|e| value_err(e.message))
}

fn day_after(d: Date) -> R<Date> {
    crate::semantics::add_days(d, 1).map_err(|e| value_err(e.message))
}

fn duration_add(d: Date, unit: Unit, n: i64) -> R<Date> {
    let r = match unit {
        Unit::Days => crate::semantics::add_days(d, n),
        Unit::Weeks => crate::semantics::add_days(d, n * 7),
        Unit::Months => crate::semantics::add_months(d, n),
        Unit::Years => crate::semantics::add_months(d, n * 12),
    };
    r.map_err(|e| value_err(e.message))
}

fn set_of(interp: &mut Interp, t: &Type, items: Vec<V>) -> R<NodeId> {
    let mut values = vec![];
    for v in items {
        let value = match (t, &v) {
            (Type::Float, V::Int(i)) => Value::Float(Float(*i as f64)),
            (Type::Date, V::Str(s)) => Value::Date(parse_date_literal(s)?),
            (Type::Code(c), V::Str(s)) => Value::Code(*c, validate_code(*c, s)?),
            _ => match literal(&v)? {
                Some(x) => x,
                None => continue,
            },
        };
        if value.type_() != *t {
            return Err(type_err(format!("Expected type '{}' but got '{}'", python_type_for(t), python_type_for(&value.type_()))));
        }
        values.push(value);
    }
    let set = Value::set(t.clone(), values).map_err(qm_err)?;
    Ok(interp.graph.value(set))
}

fn is_in(interp: &mut Interp, n: NodeId, other: &V) -> R<NodeId> {
    let t = stype(interp, n);
    if let Type::MultiCodeString(_) = t {
        return Err(multi_code_err());
    }
    let rhs = match other {
        V::List(_) | V::Tuple(_) | V::Set(_) | V::Dict(_) => {
            let items = interp.iterate(other)?;
            set_of(interp, &t, items)?
        }
        v if as_series(v).is_some() => {
            let o = as_series(v).expect("series");
            if patient(interp, o) {
                return Err(type_err(
                    "Argument must be an EventSeries (i.e. have many values per patient); you supplied a PatientSeries with only one value per patient",
                ));
            }
            interp.graph.aggregate(A::CombineAsSet(o)).map_err(qm_err)?
        }
        _ => return Err(type_err("`is_in()` usually expects a list of values (or a codelist)")),
    };
    interp.graph.function(F::In(n, rhs)).map_err(qm_err)
}

fn multi_code_err() -> Flow {
    type_err(
        "This column contains multiple clinical codes combined together in a single string. If you want to know if a particular code is contained in the string, please use the `contains()` method",
    )
}

fn multi_contains(interp: &mut Interp, n: NodeId, sys: CodeSystem, code: &V) -> R<NodeId> {
    let s = match code {
        V::Code(c, s) if *c == sys => s.to_string(),
        V::Str(s) if codes::is_valid_prefix(sys, s) => s.to_string(),
        _ => {
            let cls = format!("<class 'ehrql.codes.{}'>", sys.class_name());
            return Err(type_err(format!("Expecting a {cls}, or a string prefix of a {cls}")));
        }
    };
    let v = interp.graph.value(Value::Str(s));
    interp.graph.function(F::StringContains(n, v)).map_err(qm_err)
}

fn series_method(interp: &mut Interp, n: NodeId, name: &str, mut args: Args) -> R<V> {
    let t = stype(interp, n);
    let one = |args: Args, param: &str| -> R<V> {
        let a = args.bind(name, &[param])?;
        a.into_iter().next().flatten().ok_or_else(|| type_err(format!("{name}() missing 1 required positional argument: '{param}'")))
    };
    match name {
        "is_null" => {
            args.bind(name, &[])?;
            build(interp, F::IsNull(n))
        }
        "is_not_null" => {
            args.bind(name, &[])?;
            let isnull = interp.graph.function(F::IsNull(n)).map_err(qm_err)?;
            build(interp, F::Not(isnull))
        }
        "when_null_then" | "if_null_then" => {
            let other = one(args, "other")?;
            let o = need_series(interp, &t, &other)?;
            let isnull = interp.graph.function(F::IsNull(n)).map_err(qm_err)?;
            let notnull = interp.graph.function(F::Not(isnull)).map_err(qm_err)?;
            if stype(interp, o) != t {
                return Err(type_err(format!(
                    "Expected type 'Series[{}] | None' but got 'Series[{}]'",
                    python_type_for(&t),
                    python_type_for(&stype(interp, o))
                )));
            }
            interp.graph.case(vec![(notnull, Some(n))], Some(o)).map(V::Series).map_err(qm_err)
        }
        "is_in" => {
            let other = one(args, "other")?;
            is_in(interp, n, &other).map(V::Series)
        }
        "is_not_in" => {
            let other = one(args, "other")?;
            let i = is_in(interp, n, &other)?;
            build(interp, F::Not(i))
        }
        "map_values" | "to_category" => {
            let default =
                args.take_kw("default").or_else(|| if args.pos.len() > 1 { Some(args.pos.remove(1)) } else { None }).unwrap_or(V::None);
            let mapping = one(args, if name == "map_values" { "mapping" } else { "categorisation" })?;
            let V::Dict(d) = &mapping else { return Err(type_err(format!("{name}() expects a dict"))) };
            let pairs: Vec<(V, V)> = d.borrow().iter().cloned().collect();
            let mut whens = vec![];
            for (k, v) in pairs {
                let key = need_series(interp, &t, &k)?;
                let eq = interp.graph.function(F::Eq(n, key)).map_err(qm_err)?;
                let val = convert(interp, &v)?;
                whens.push(V::WhenThen(eq, val));
            }
            if whens.is_empty() {
                return Err(value_err(format!("{name}() needs a non-empty mapping")));
            }
            case(interp, whens, default)
        }
        "count_distinct_for_patient" => agg(interp, A::CountDistinct(n)),
        "minimum_for_patient" => agg(interp, A::Min(n)),
        "maximum_for_patient" => agg(interp, A::Max(n)),
        "sum_for_patient" => agg(interp, A::Sum(n)),
        "mean_for_patient" => agg(interp, A::Mean(n)),
        "count_episodes_for_patient" => {
            let gap = one(args, "maximum_gap")?;
            let days = match &gap {
                V::Duration(d) => match (d.unit, &d.value) {
                    (Unit::Days, DurValue::Int(i)) => *i,
                    (Unit::Weeks, DurValue::Int(i)) => i * 7,
                    _ => return Err(type_err("`maximum_gap` must be supplied as `days()` or `weeks()`")),
                },
                _ => return Err(type_err("`maximum_gap` must be supplied as `days()` or `weeks()`")),
            };
            agg(interp, A::CountEpisodes { source: n, maximum_gap_days: days })
        }
        "as_int" => build(interp, F::CastToInt(n)),
        "as_float" => build(interp, F::CastToFloat(n)),
        "absolute" => build(interp, F::Absolute(n)),
        "contains" => {
            let other = one(args, "other")?;
            match t {
                Type::MultiCodeString(sys) => multi_contains(interp, n, sys, &other).map(V::Series),
                _ => {
                    let o = need_series(interp, &t, &other)?;
                    build(interp, F::StringContains(n, o))
                }
            }
        }
        "contains_any_of" => {
            let codelist = one(args, "codelist")?;
            let Type::MultiCodeString(sys) = t else { return Err(attr_err(&series_class(interp, n), name)) };
            let items = interp.iterate(&codelist)?;
            if items.is_empty() {
                return Err(value_err("contains_any_of() needs at least one code"));
            }
            let mut parts = Vec::with_capacity(items.len());
            for c in items {
                parts.push(multi_contains(interp, n, sys, &c)?);
            }
            // One n-ary OR, built at once (ehrQL's left-deep chain is quadratic and deep).
            if parts.len() == 1 { Ok(V::Series(parts[0])) } else { build(interp, F::Or(parts)) }
        }
        "to_first_of_year" => build(interp, F::ToFirstOfYear(n)),
        "to_first_of_month" => build(interp, F::ToFirstOfMonth(n)),
        "is_before" | "is_on_or_before" | "is_after" | "is_on_or_after" => {
            let other = one(args, "other")?;
            let o = need_series(interp, &t, &other)?;
            build(
                interp,
                match name {
                    "is_before" => F::Lt(n, o),
                    "is_on_or_before" => F::Le(n, o),
                    "is_after" => F::Gt(n, o),
                    _ => F::Ge(n, o),
                },
            )
        }
        "is_between_but_not_on" | "is_on_or_between" | "is_during" => {
            let (s, e) = if name == "is_during" {
                let iv = one(args, "interval")?;
                match &iv {
                    V::Object(o) if o.class == "Interval" => (o.get("start_date").unwrap_or(V::None), o.get("end_date").unwrap_or(V::None)),
                    other => {
                        let items = interp.iterate(other)?;
                        if items.len() != 2 {
                            return Err(type_err("is_during() needs a (start, end) pair"));
                        }
                        (items[0].clone(), items[1].clone())
                    }
                }
            } else {
                let a = args.bind(name, &["start", "end"])?;
                (a[0].clone().unwrap_or(V::None), a[1].clone().unwrap_or(V::None))
            };
            let s = need_series(interp, &t, &s)?;
            let e = need_series(interp, &t, &e)?;
            let (l, r) = if name == "is_between_but_not_on" { (F::Gt(n, s), F::Lt(n, e)) } else { (F::Ge(n, s), F::Le(n, e)) };
            let l = interp.graph.function(l).map_err(qm_err)?;
            let r = interp.graph.function(r).map_err(qm_err)?;
            build(interp, F::And(vec![l, r]))
        }
        _ => Err(attr_err(&series_class(interp, n), name)),
    }
}

fn frame_method(interp: &mut Interp, f: &Rc<FrameObj>, name: &str, args: Args) -> R<V> {
    let col = |interp: &mut Interp, c: &str| -> R<NodeId> { Ok(as_series(&column(interp, f, c)?).expect("column")) };
    match name {
        "exists_for_patient" => {
            args.bind(name, &[])?;
            agg(interp, A::Exists(f.node))
        }
        "count_for_patient" => {
            args.bind(name, &[])?;
            agg(interp, A::Count(f.node))
        }
        "where" | "except_where" => {
            let a = args.bind(name, &["condition"])?;
            let c = a[0].clone().unwrap_or(V::None);
            let cond = match &c {
                V::Bool(b) => interp.graph.value(Value::Bool(*b)),
                v => as_series(v).ok_or_else(|| type_err(format!("{name}() needs a boolean series")))?,
            };
            if stype(interp, cond) != Type::Bool {
                return Err(type_err(format!("Expected type 'Series[bool]' but got 'Series[{}]'", python_type_for(&stype(interp, cond)))));
            }
            let cond = if name == "except_where" {
                let not = interp.graph.function(F::Not(cond)).map_err(qm_err)?;
                let isnull = interp.graph.function(F::IsNull(cond)).map_err(qm_err)?;
                interp.graph.function(F::Or(vec![not, isnull])).map_err(qm_err)?
            } else {
                cond
            };
            let node = interp.graph.filter(f.node, cond).map_err(qm_err)?;
            Ok(frame_value(f, node))
        }
        "sort_by" => {
            if args.pos.is_empty() {
                return Err(type_err("sort_by() needs at least one series"));
            }
            let mut node = f.node;
            for v in args.pos.iter().rev() {
                let s = match v {
                    V::Str(s) => {
                        return Err(type_err(format!("sort_by() takes series, not strings: did you mean sort_by({}.{s})?", f.name)));
                    }
                    v => as_series(v).ok_or_else(|| type_err("sort_by() arguments must be series"))?,
                };
                let st = stype(interp, s);
                if !matches!(st, Type::Int | Type::Float | Type::Str | Type::Date | Type::Code(_)) {
                    return Err(type_err(format!("Expected type 'Series[~Comparable]' but got 'Series[{}]'", python_type_for(&st))));
                }
                node = interp.graph.sort(node, s).map_err(qm_err)?;
            }
            Ok(frame_value(f, node))
        }
        "first_for_patient" | "last_for_patient" => {
            args.bind(name, &[])?;
            let pos = if name == "first_for_patient" { Position::First } else { Position::Last };
            let node = interp.graph.pick_one_row_per_patient(f.node, pos).map_err(qm_err)?;
            Ok(V::Frame(Rc::new(FrameObj { node, table: f.table.clone(), name: f.name.clone(), picked: true })))
        }
        // Table helpers.
        "age_on" => {
            let a = args.bind(name, &["date"])?;
            let dob = col(interp, "date_of_birth")?;
            let d = need_series(interp, &Type::Date, &a[0].clone().unwrap_or(V::None))?;
            build(interp, F::DateDifferenceInYears(d, dob))
        }
        "is_alive_on" | "is_dead_on" => {
            let a = args.bind(name, &["date"])?;
            let dod = col(interp, "date_of_death")?;
            let d = need_series(interp, &Type::Date, &a[0].clone().unwrap_or(V::None))?;
            let isnull = interp.graph.function(F::IsNull(dod)).map_err(qm_err)?;
            if name == "is_alive_on" {
                let after = interp.graph.function(F::Gt(dod, d)).map_err(qm_err)?;
                build(interp, F::Or(vec![after, isnull]))
            } else {
                let notnull = interp.graph.function(F::Not(isnull)).map_err(qm_err)?;
                let before = interp.graph.function(F::Lt(dod, d)).map_err(qm_err)?;
                build(interp, F::And(vec![notnull, before]))
            }
        }
        // emis.patients: `registration_start_date.is_on_or_before(start) &
        // (registration_end_date.is_after(end) | registration_end_date.is_null())`.
        "has_practice_registration_spanning" => {
            let a = args.bind(name, &["start_date", "end_date"])?;
            let s = need_series(interp, &Type::Date, &a[0].clone().unwrap_or(V::None))?;
            let e = need_series(interp, &Type::Date, &a[1].clone().unwrap_or(V::None))?;
            let start = col(interp, "registration_start_date")?;
            let end = col(interp, "registration_end_date")?;
            let started = interp.graph.function(F::Le(start, s)).map_err(qm_err)?;
            let after = interp.graph.function(F::Gt(end, e)).map_err(qm_err)?;
            let open = interp.graph.function(F::IsNull(end)).map_err(qm_err)?;
            let ongoing = interp.graph.function(F::Or(vec![after, open])).map_err(qm_err)?;
            build(interp, F::And(vec![started, ongoing]))
        }
        "spanning" | "spanning_with_systmone" => {
            let a = args.bind(name, &["start_date", "end_date"])?;
            let s = need_series(interp, &Type::Date, &a[0].clone().unwrap_or(V::None))?;
            let e = need_series(interp, &Type::Date, &a[1].clone().unwrap_or(V::None))?;
            let node = registrations_spanning(interp, f, s, e)?;
            let node = if name == "spanning_with_systmone" {
                let golive = col(interp, "practice_systmone_go_live_date")?;
                let c = interp.graph.function(F::Le(golive, s)).map_err(qm_err)?;
                interp.graph.filter(node, c).map_err(qm_err)?
            } else {
                node
            };
            Ok(frame_value(f, node))
        }
        "exists_for_patient_on" => {
            let a = args.bind(name, &["date"])?;
            let d = need_series(interp, &Type::Date, &a[0].clone().unwrap_or(V::None))?;
            let node = registrations_spanning(interp, f, d, d)?;
            agg(interp, A::Exists(node))
        }
        "for_patient_on" => {
            let a = args.bind(name, &["date"])?;
            let d = need_series(interp, &Type::Date, &a[0].clone().unwrap_or(V::None))?;
            let node = if f.table.as_ref().is_some_and(|t| t.schema.name == "addresses") {
                let start = col(interp, "start_date")?;
                let end = col(interp, "end_date")?;
                let c1 = interp.graph.function(F::Le(start, d)).map_err(qm_err)?;
                let n1 = interp.graph.filter(f.node, c1).map_err(qm_err)?;
                let lt = interp.graph.function(F::Lt(end, d)).map_err(qm_err)?;
                let not = interp.graph.function(F::Not(lt)).map_err(qm_err)?;
                let isnull = interp.graph.function(F::IsNull(lt)).map_err(qm_err)?;
                let c2 = interp.graph.function(F::Or(vec![not, isnull])).map_err(qm_err)?;
                let n2 = interp.graph.filter(n1, c2).map_err(qm_err)?;
                let has_postcode = col(interp, "has_postcode")?;
                let one = interp.graph.value(Value::Int(1));
                let zero = interp.graph.value(Value::Int(0));
                let pc = interp.graph.case(vec![(has_postcode, Some(one))], Some(zero)).map_err(qm_err)?;
                let address_id = col(interp, "address_id")?;
                let mut node = n2;
                for key in [address_id, end, start, pc] {
                    node = interp.graph.sort(node, key).map_err(qm_err)?;
                }
                node
            } else {
                let node = registrations_spanning(interp, f, d, d)?;
                let start = col(interp, "start_date")?;
                let end = col(interp, "end_date")?;
                let practice = col(interp, "practice_pseudo_id")?;
                let mut node = node;
                for key in [practice, end, start] {
                    node = interp.graph.sort(node, key).map_err(qm_err)?;
                }
                node
            };
            let picked = interp.graph.pick_one_row_per_patient(node, Position::Last).map_err(qm_err)?;
            Ok(V::Frame(Rc::new(FrameObj { node: picked, table: f.table.clone(), name: f.name.clone(), picked: true })))
        }
        "cause_of_death_is_in" => {
            let a = args.bind(name, &["codelist"])?;
            let codelist = a[0].clone().unwrap_or(V::None);
            let mut parts = vec![];
            let mut columns = vec!["underlying_cause_of_death".to_string()];
            columns.extend((1..=15).map(|i| format!("cause_of_death_{i:02}")));
            for c in columns {
                let s = col(interp, &c)?;
                parts.push(is_in(interp, s, &codelist)?);
            }
            build(interp, F::Or(parts))
        }
        "electronic_frailty_index" => {
            args.bind(name, &[])?;
            let desc = col(interp, "algorithm_description")?;
            let v1 = interp.graph.value(Value::Str("UK Electronic Frailty Index (eFI)".into()));
            let c1 = interp.graph.function(F::Eq(desc, v1)).map_err(qm_err)?;
            let n1 = interp.graph.filter(f.node, c1).map_err(qm_err)?;
            let ver = col(interp, "algorithm_version")?;
            let v2 = interp.graph.value(Value::Str("1.0".into()));
            let c2 = interp.graph.function(F::Eq(ver, v2)).map_err(qm_err)?;
            let n2 = interp.graph.filter(n1, c2).map_err(qm_err)?;
            Ok(frame_value(f, n2))
        }
        _ => Err(attr_err(&f.name, name)),
    }
}

fn registrations_spanning(interp: &mut Interp, f: &FrameObj, s: NodeId, e: NodeId) -> R<NodeId> {
    let start = as_series(&column(interp, f, "start_date")?).expect("column");
    let end = as_series(&column(interp, f, "end_date")?).expect("column");
    let c1 = interp.graph.function(F::Le(start, s)).map_err(qm_err)?;
    let c2 = interp.graph.function(F::Ge(end, e)).map_err(qm_err)?;
    let c3 = interp.graph.function(F::IsNull(end)).map_err(qm_err)?;
    let or = interp.graph.function(F::Or(vec![c2, c3])).map_err(qm_err)?;
    let cond = interp.graph.function(F::And(vec![c1, or])).map_err(qm_err)?;
    interp.graph.filter(f.node, cond).map_err(qm_err)
}

// --- Operators -----------------------------------------------------------------------------

fn duration_to_series(interp: &mut Interp, d: &Duration) -> NodeId {
    match &d.value {
        DurValue::Int(i) => interp.graph.value(Value::Int(*i)),
        DurValue::Series(n) => *n,
    }
}

fn date_plus_duration(interp: &mut Interp, date: NodeId, d: &Duration, negate: bool) -> R<V> {
    let mut amount = duration_to_series(interp, d);
    if d.unit == Unit::Weeks {
        let seven = interp.graph.value(Value::Int(7));
        amount = interp.graph.function(F::Multiply(amount, seven)).map_err(qm_err)?;
    }
    if negate {
        amount = match interp.graph.node(amount).clone() {
            crate::qm::Node::Value(Value::Int(i)) => interp.graph.value(Value::Int(-i)),
            _ => interp.graph.function(F::Negate(amount)).map_err(qm_err)?,
        };
    }
    build(
        interp,
        match d.unit {
            Unit::Days | Unit::Weeks => F::DateAddDays(date, amount),
            Unit::Months => F::DateAddMonths(date, amount),
            Unit::Years => F::DateAddYears(date, amount),
        },
    )
}

fn literal_date(v: &V) -> Option<Date> {
    match v {
        V::Date(d) => Some(*d),
        V::Str(s) => parse_iso_date(s),
        _ => None,
    }
}

pub fn binop(interp: &mut Interp, op: Operator, l: V, r: V) -> R<V> {
    let l = match l {
        V::CaseOtherwise(n) => V::Series(n),
        other => other,
    };
    let r = match r {
        V::CaseOtherwise(n) => V::Series(n),
        other => other,
    };
    // Durations.
    match (&l, &r, op) {
        (V::Duration(a), V::Duration(b), Operator::Add | Operator::Sub) => {
            if a.unit != b.unit {
                return Err(interp.bad_operands(op, &l, &r));
            }
            return Ok(match (&a.value, &b.value) {
                (DurValue::Int(x), DurValue::Int(y)) => {
                    V::Duration(Rc::new(Duration { unit: a.unit, value: DurValue::Int(if op == Operator::Add { x + y } else { x - y }) }))
                }
                _ => {
                    let (x, y) = (duration_to_series(interp, a), duration_to_series(interp, b));
                    let s = interp.graph.function(if op == Operator::Add { F::Add(x, y) } else { F::Subtract(x, y) }).map_err(qm_err)?;
                    V::Duration(Rc::new(Duration { unit: a.unit, value: DurValue::Series(s) }))
                }
            });
        }
        (date, V::Duration(d), Operator::Add | Operator::Sub) | (V::Duration(d), date, Operator::Add)
            if !matches!(date, V::Duration(_)) =>
        {
            let negate = op == Operator::Sub;
            if let (Some(base), DurValue::Int(n)) = (literal_date(date), &d.value) {
                return Ok(V::Date(duration_add(base, d.unit, if negate { -n } else { *n })?));
            }
            let dn = need_series(interp, &Type::Date, date)?;
            if stype(interp, dn) != Type::Date {
                return Err(interp.bad_operands(op, &l, &r));
            }
            return date_plus_duration(interp, dn, d, negate);
        }
        _ => {}
    }
    let ls = as_series(&l);
    let rs = as_series(&r);
    let (ln, rn) = match (ls, rs) {
        (Some(a), Some(b)) => (a, b),
        (Some(a), None) => {
            let t = stype(interp, a);
            if !operand_ok(&t, op) || matches!(r, V::Duration(_)) {
                return Err(interp.bad_operands(op, &l, &r));
            }
            let b = match (&t, &r, op) {
                (Type::Bool, V::Bool(x), Operator::BitAnd | Operator::BitOr) => interp.graph.value(Value::Bool(*x)),
                _ => need_series(interp, &t, &r)?,
            };
            (a, b)
        }
        (None, Some(b)) => {
            let t = stype(interp, b);
            if !operand_ok(&t, op) {
                return Err(interp.bad_operands(op, &l, &r));
            }
            let a = need_series(interp, &t, &l)?;
            (a, b)
        }
        (None, None) => return Err(interp.bad_operands(op, &l, &r)),
    };
    let (lt, rt) = (stype(interp, ln), stype(interp, rn));
    if !operand_ok(&lt, op) || !operand_ok(&rt, op) {
        return Err(interp.bad_operands(op, &l, &r));
    }
    if lt == Type::Date && op == Operator::Sub {
        if rt != Type::Date {
            return Err(interp.bad_operands(op, &l, &r));
        }
        return Ok(V::DateDifference(ln, rn));
    }
    build(
        interp,
        match op {
            Operator::Add => F::Add(ln, rn),
            Operator::Sub => F::Subtract(ln, rn),
            Operator::Mult => F::Multiply(ln, rn),
            Operator::Div => F::TrueDivide(ln, rn),
            Operator::FloorDiv => F::FloorDivide(ln, rn),
            Operator::Pow => F::Power(ln, rn),
            Operator::BitAnd => F::And(vec![ln, rn]),
            Operator::BitOr => F::Or(vec![ln, rn]),
            _ => return Err(interp.bad_operands(op, &l, &r)),
        },
    )
}

fn operand_ok(t: &Type, op: Operator) -> bool {
    match op {
        Operator::Add | Operator::Mult | Operator::Div | Operator::FloorDiv | Operator::Pow => matches!(t, Type::Int | Type::Float),
        Operator::Sub => matches!(t, Type::Int | Type::Float | Type::Date),
        Operator::BitAnd | Operator::BitOr => *t == Type::Bool,
        _ => false,
    }
}

pub fn compare(interp: &mut Interp, op: CmpOp, l: V, r: V) -> R<V> {
    let (ln, rn) = match (as_series(&l), as_series(&r)) {
        (Some(a), Some(b)) => (a, b),
        (Some(a), None) => {
            let t = stype(interp, a);
            (a, need_series(interp, &t, &r)?)
        }
        (None, Some(b)) => {
            let t = stype(interp, b);
            (need_series(interp, &t, &l)?, b)
        }
        (None, None) => {
            return Err(type_err(format!("cannot compare {} and {}", python_type_name(interp, &l), python_type_name(interp, &r))));
        }
    };
    let t = stype(interp, ln);
    if matches!(t, Type::MultiCodeString(_)) || matches!(stype(interp, rn), Type::MultiCodeString(_)) {
        return Err(multi_code_err());
    }
    let ordered = matches!(op, CmpOp::Lt | CmpOp::LtE | CmpOp::Gt | CmpOp::GtE);
    if ordered {
        for side in [ln, rn] {
            let st = stype(interp, side);
            if !matches!(st, Type::Int | Type::Float | Type::Str | Type::Date) {
                return Err(type_err(format!("Expected type 'Series[~Comparable]' but got 'Series[{}]'", python_type_for(&st))));
            }
        }
    }
    build(
        interp,
        match op {
            CmpOp::Eq => F::Eq(ln, rn),
            CmpOp::NotEq => F::Ne(ln, rn),
            CmpOp::Lt => F::Lt(ln, rn),
            CmpOp::LtE => F::Le(ln, rn),
            CmpOp::Gt => F::Gt(ln, rn),
            CmpOp::GtE => F::Ge(ln, rn),
            _ => return Err(type_err("`is`/`in` are not ehrQL operators")),
        },
    )
}

pub fn negate(interp: &mut Interp, v: V) -> R<V> {
    match &v {
        V::Duration(d) => Ok(V::Duration(Rc::new(Duration {
            unit: d.unit,
            value: match &d.value {
                DurValue::Int(i) => DurValue::Int(-i),
                DurValue::Series(n) => DurValue::Series(interp.graph.function(F::Negate(*n)).map_err(qm_err)?),
            },
        }))),
        _ => match as_series(&v) {
            Some(n) if matches!(stype(interp, n), Type::Int | Type::Float) => build(interp, F::Negate(n)),
            _ => Err(type_err(format!("bad operand type for unary -: '{}'", python_type_name(interp, &v)))),
        },
    }
}

pub fn invert(interp: &mut Interp, v: V) -> R<V> {
    match as_series(&v) {
        Some(n) if stype(interp, n) == Type::Bool => build(interp, F::Not(n)),
        _ => Err(type_err(format!("bad operand type for unary ~: '{}'", python_type_name(interp, &v)))),
    }
}
