//! `_quarry`: what quarry's Python code needs from Rust — the output sink, and the
//! query-model builder under quarry's `ehrql` package.
//!
//! Nodes cross into Python as integers (their index in the run's [`Graph`]); every function
//! checks the integers it is given. Building a node validates it as ehrQL's query model
//! does, and a failure is raised as the exception ehrQL raises for it (`TypeError` with
//! ehrQL's "Expected type" wording, `ehrql.Error` for domain errors).

pub(crate) use module::module_def;

#[rustpython_vm::pymodule(name = "_quarry")]
mod module {
    use quarry_queries::codes::{self, Codelist};
    use quarry_queries::qm::{
        AggregateByPatient as A, CodeSystem, Column, Constraint, Float, Function as F, Graph, Kind, Node, NodeId, Position,
        QueryModelError, TableSchema, Type, Value,
    };
    use quarry_queries::tables;
    use rustpython_vm::builtins::{PyBaseExceptionRef, PyFrozenSet, PyInt, PyStr, PyStrRef, PyTuple, PyTypeRef};
    use rustpython_vm::function::OptionalArg;
    use rustpython_vm::{AsObject, PyObjectRef, PyResult, TryFromObject, VirtualMachine};

    use crate::state;

    /// Writes text from `print()`, `sys.stdout` and `sys.stderr` to quarry's log.
    #[pyfunction]
    fn write(text: PyStrRef) {
        state::with(|s| {
            // A closed log (a broken pipe) must not turn into a definition error.
            let _ = s.out.write_all(text.to_string_lossy().as_bytes());
        });
    }

    /// An import in `file`, from a definition run as no particular ehrQL image, of `module`,
    /// which the ehrQL image `image` does not have (`_quarry_boot._NOT_IN_IMAGE`): the first
    /// for each image is kept, for a warning.
    #[pyfunction]
    fn note_missing_from(image: PyStrRef, module: PyStrRef, file: PyStrRef) {
        let [image, module, file] = [image, module, file].map(|s| s.to_string_lossy().into_owned());
        state::with(|s| {
            if !s.missing_from.iter().any(|m| m.image == image) {
                s.missing_from.push(crate::MissingFrom { image, module, file });
            }
        });
    }

    // --- Conversions ---------------------------------------------------------------------

    fn text(obj: &PyObjectRef) -> Option<String> {
        obj.downcast_ref::<PyStr>().map(|s| s.to_string_lossy().into_owned())
    }

    fn node_of(vm: &VirtualMachine, obj: &PyObjectRef) -> PyResult<NodeId> {
        let index = obj.downcast_ref::<PyInt>().and_then(|i| i.try_to_primitive::<usize>(vm).ok());
        index
            .and_then(|i| state::with(|s| s.graph.node_id(i)))
            .ok_or_else(|| vm.new_type_error(format!("not a query-model node: {}", repr(vm, obj))))
    }

    fn repr(vm: &VirtualMachine, obj: &PyObjectRef) -> String {
        obj.repr(vm).map(|r| r.to_string_lossy().into_owned()).unwrap_or_else(|_| "<object>".into())
    }

    /// A new node's index for Python, recording where in the user's code it was first made
    /// (the innermost frame of a `.py` file: quarry's own modules are frozen), for `explain`.
    fn located(vm: &VirtualMachine, n: NodeId) -> usize {
        let known = state::with(|s| s.locations.contains_key(&n.index()));
        if !known {
            let mut frame = vm.current_frame();
            let mut at = None;
            while let Some(f) = frame {
                let path = f.code.source_path().as_str();
                if path.ends_with(".py") {
                    at = Some((path.to_string(), f.current_location().line.get() as u32));
                    break;
                }
                frame = f.f_back(vm);
            }
            if let Some(at) = at {
                state::with(|s| s.locations.insert(n.index(), at));
            }
        }
        n.index()
    }

    /// An exception of `ehrql.exceptions` (`import a.b` gives the package `a`, so the class is
    /// read from the submodule).
    fn ehrql_exception(vm: &VirtualMachine, class: &'static str, message: String) -> PyBaseExceptionRef {
        let class = vm
            .import("ehrql.exceptions", 0)
            .and_then(|m| m.get_attr("exceptions", vm))
            .and_then(|m| m.get_attr(class, vm))
            .and_then(|c| PyTypeRef::try_from_object(vm, c));
        match class {
            Ok(cls) => vm.invoke_exception(cls, vec![vm.ctx.new_str(message).into()]).unwrap_or_else(|e| e),
            Err(e) => e,
        }
    }

    fn ehrql_error(vm: &VirtualMachine, message: String) -> PyBaseExceptionRef {
        ehrql_exception(vm, "Error", message)
    }

    const DOMAIN_HINTS: &str = " * Reduce one series to have only one value per patient by using\n   an aggregation like `maximum_for_patient()`.\n\n * Pick a single row for each patient from the table using\n   `first_for_patient()`.";

    /// The exception ehrQL raises when a node cannot be built (its `_build`).
    fn qm_error(vm: &VirtualMachine, op: &str, e: QueryModelError) -> PyBaseExceptionRef {
        match e {
            QueryModelError::Type { .. } => vm.new_type_error(e.to_string()),
            QueryModelError::DomainMismatch | QueryModelError::PatientDomain => {
                let hints = if op == "EQ" {
                    format!(
                        " * Use `x.is_in(y)` instead of `x == y` to check if values from\n   one series match any of the patient's values in the other.\n\n{DOMAIN_HINTS}"
                    )
                } else {
                    DOMAIN_HINTS.to_string()
                };
                ehrql_error(
                    vm,
                    format!(
                        "\nCannot combine series which are drawn from different tables and both\nhave more than one value per patient.\n\nTo address this, try one of the following:\n\n{hints}"
                    ),
                )
            }
            QueryModelError::SortByConstant => ehrql_error(vm, "Cannot sort by a constant value".into()),
            QueryModelError::UnsortedPick => vm.new_type_error("Expected type 'SortedFrame' but got 'UnsortedFrame'".to_string()),
            QueryModelError::UnknownColumn { table, column } => {
                vm.new_attribute_error(format!("'{table}' object has no attribute '{column}'"))
            }
            QueryModelError::Invalid(m) => vm.new_value_error(m),
        }
    }

    fn with_graph<T>(f: impl FnOnce(&mut Graph) -> T) -> T {
        state::with(|s| f(&mut s.graph))
    }

    /// A Python value as an ehrQL literal (`bool`, `int`, `float`, `str`, `datetime.date`,
    /// a code object).
    fn literal(vm: &VirtualMachine, obj: &PyObjectRef) -> PyResult<Value> {
        let cls = obj.class();
        let class_name = cls.name().to_string();
        if obj.fast_isinstance(vm.ctx.types.bool_type) {
            return Ok(Value::Bool(obj.clone().try_to_bool(vm)?));
        }
        if let Some(i) = obj.downcast_ref::<PyInt>() {
            let v = i.try_to_primitive::<i64>(vm).map_err(|_| vm.new_overflow_error("Python int too large to convert to C long"))?;
            return Ok(Value::Int(v));
        }
        if let Some(f) = obj.downcast_ref::<rustpython_vm::builtins::PyFloat>() {
            return Ok(Value::Float(Float(f.to_f64())));
        }
        if let Some(s) = obj.downcast_ref::<PyStr>() {
            return Ok(Value::Str(s.to_string_lossy().into_owned()));
        }
        let module = cls.as_object().get_attr("__module__", vm).ok().and_then(|m| text(&m));
        if class_name == "date" && module.as_deref() == Some("datetime") {
            let y: i16 = obj.get_attr("year", vm)?.try_into_value(vm)?;
            let m: i8 = obj.get_attr("month", vm)?.try_into_value(vm)?;
            let d: i8 = obj.get_attr("day", vm)?.try_into_value(vm)?;
            return jiff::civil::Date::new(y, m, d).map(Value::Date).map_err(|e| vm.new_value_error(e.to_string()));
        }
        if let Some(system) = CodeSystem::from_class_name(&class_name) {
            let v = obj.get_attr("value", vm)?;
            let v = text(&v).ok_or_else(|| vm.new_type_error("a code's value must be a string"))?;
            return Ok(Value::Code(system, v));
        }
        Err(vm.new_type_error(format!("Not a valid ehrQL type: {}", repr(vm, obj))))
    }

    /// A type tag (`int`, `date`, `code:SNOMEDCTCode`, `multi:ICD10MultiCodeString`).
    fn tag(t: &Type) -> String {
        match t {
            Type::Bool => "bool".into(),
            Type::Int => "int".into(),
            Type::Float => "float".into(),
            Type::Str => "str".into(),
            Type::Date => "date".into(),
            Type::Code(c) => format!("code:{}", c.class_name()),
            Type::MultiCodeString(_) => format!("multi:{}", t.name()),
            Type::Set(inner) => format!("set:{}", tag(inner)),
        }
    }

    fn type_of_tag(vm: &VirtualMachine, tag: &str) -> PyResult<Type> {
        let parsed = match tag.split_once(':') {
            None => tables::parse_type(tag),
            Some(("code", name)) | Some(("multi", name)) => tables::parse_type(name),
            _ => None,
        };
        parsed.ok_or_else(|| vm.new_type_error(format!("not an ehrQL column type: {tag}")))
    }

    /// Whether source nests too deeply to compile (see `depth`): `None`, or `(kind, line,
    /// column)` with kind `brackets`, `parser` or `compile`.
    #[pyfunction]
    fn source_depth_problem(source: PyObjectRef, vm: &VirtualMachine) -> PyResult<Option<(String, usize, usize)>> {
        let text = match source.downcast_ref::<PyStr>() {
            Some(s) => s.to_string_lossy().into_owned(),
            None => {
                let bytes: rustpython_vm::function::ArgBytesLike = source.try_into_value(vm)?;
                String::from_utf8_lossy(&bytes.borrow_buf()).into_owned()
            }
        };
        Ok(match crate::depth::check(&text) {
            Ok(()) => None,
            Err(crate::depth::TooDeep::Brackets { line, column }) => Some(("brackets".into(), line, column)),
            Err(crate::depth::TooDeep::ParserStack { line }) => Some(("parser".into(), line, 1)),
            Err(crate::depth::TooDeep::Compile { line }) => Some(("compile".into(), line, 1)),
        })
    }

    /// `round(x, ndigits)` for a float, correctly rounded as CPython rounds it (half to even
    /// on the exact binary value: `round(2.675, 2) == 2.67`).
    #[pyfunction]
    fn round_float(x: f64, ndigits: i64) -> f64 {
        crate::numbers::round_float(x, ndigits)
    }

    // --- Series and frames ---------------------------------------------------------------

    /// A literal's node.
    #[pyfunction]
    fn value(obj: PyObjectRef, vm: &VirtualMachine) -> PyResult<usize> {
        if let Some(set) = obj.downcast_ref::<PyFrozenSet>() {
            let items: Vec<Value> = set.elements().iter().map(|o| literal(vm, o)).collect::<PyResult<_>>()?;
            let Some(first) = items.first() else {
                return Err(vm.new_type_error("an empty set has no type: use is_in() on a series"));
            };
            let set = Value::set(first.type_(), items).map_err(|e| qm_error(vm, "Value", e))?;
            return Ok(located(vm, with_graph(|g| g.value(set))));
        }
        let v = literal(vm, &obj)?;
        Ok(located(vm, with_graph(|g| g.value(v))))
    }

    /// `(type tag, has one row per patient)` of a series node.
    #[pyfunction]
    fn series_info(node: PyObjectRef, vm: &VirtualMachine) -> PyResult<(String, bool)> {
        let n = node_of(vm, &node)?;
        with_graph(|g| match g.kind(n) {
            Kind::Series(t) => Ok((tag(t), g.is_patient_level(n))),
            _ => Err(vm.new_type_error("Expecting a series but got a frame")),
        })
    }

    /// A short description of a node, for `repr()`.
    #[pyfunction]
    fn describe(node: PyObjectRef, vm: &VirtualMachine) -> PyResult<String> {
        let n = node_of(vm, &node)?;
        Ok(with_graph(|g| {
            let what = match g.node(n) {
                Node::SelectTable(t) | Node::SelectPatientTable(t) => format!("SelectTable({})", g.table(*t).name),
                Node::InlinePatientTable { .. } => "InlinePatientTable".into(),
                Node::Filter { .. } => "Filter".into(),
                Node::Sort { .. } => "Sort".into(),
                Node::PickOneRowPerPatient { .. } => "PickOneRowPerPatient".into(),
                Node::Value(v) => format!("Value({v:?})"),
                Node::Parameter { name, .. } => format!("Parameter({name})"),
                Node::SelectColumn { name, .. } => format!("SelectColumn({name})"),
                Node::AggregateByPatient(_) => "AggregateByPatient".into(),
                Node::Function(_) => "Function".into(),
                Node::Case { .. } => "Case".into(),
            };
            format!("<{what} #{}>", n.index())
        }))
    }

    /// A function node: `op` is ehrQL's `Function` class name; `args` are nodes (or `None`,
    /// which no function takes, reported as ehrQL reports it).
    #[pyfunction]
    fn function(op: PyStrRef, args: Vec<PyObjectRef>, vm: &VirtualMachine) -> PyResult<usize> {
        let op = op.to_string_lossy().into_owned();
        let mut nodes = Vec::with_capacity(args.len());
        for a in &args {
            if vm.is_none(a) {
                return Err(vm.new_type_error("Expected type 'Series' but got 'NoneType'".to_string()));
            }
            nodes.push(node_of(vm, a)?);
        }
        let arity = |n: usize| -> PyResult<()> {
            if nodes.len() == n { Ok(()) } else { Err(vm.new_type_error(format!("{op} takes {n} arguments, got {}", nodes.len()))) }
        };
        let f = match op.as_str() {
            "And" | "Or" | "MinimumOf" | "MaximumOf" => {
                if nodes.is_empty() {
                    return Err(vm.new_type_error(format!("{op} needs at least one argument")));
                }
                match op.as_str() {
                    "And" => F::And(nodes),
                    "Or" => F::Or(nodes),
                    "MinimumOf" => F::MinimumOf(nodes),
                    _ => F::MaximumOf(nodes),
                }
            }
            "Not" | "IsNull" | "Negate" | "Absolute" | "CastToInt" | "CastToFloat" | "YearFromDate" | "MonthFromDate" | "DayFromDate"
            | "ToFirstOfYear" | "ToFirstOfMonth" => {
                arity(1)?;
                let s = nodes[0];
                match op.as_str() {
                    "Not" => F::Not(s),
                    "IsNull" => F::IsNull(s),
                    "Negate" => F::Negate(s),
                    "Absolute" => F::Absolute(s),
                    "CastToInt" => F::CastToInt(s),
                    "CastToFloat" => F::CastToFloat(s),
                    "YearFromDate" => F::YearFromDate(s),
                    "MonthFromDate" => F::MonthFromDate(s),
                    "DayFromDate" => F::DayFromDate(s),
                    "ToFirstOfYear" => F::ToFirstOfYear(s),
                    _ => F::ToFirstOfMonth(s),
                }
            }
            _ => {
                arity(2)?;
                let (l, r) = (nodes[0], nodes[1]);
                match op.as_str() {
                    "EQ" => F::Eq(l, r),
                    "NE" => F::Ne(l, r),
                    "LT" => F::Lt(l, r),
                    "LE" => F::Le(l, r),
                    "GT" => F::Gt(l, r),
                    "GE" => F::Ge(l, r),
                    "Add" => F::Add(l, r),
                    "Subtract" => F::Subtract(l, r),
                    "Multiply" => F::Multiply(l, r),
                    "TrueDivide" => F::TrueDivide(l, r),
                    "FloorDivide" => F::FloorDivide(l, r),
                    "Power" => F::Power(l, r),
                    "DateAddDays" => F::DateAddDays(l, r),
                    "DateAddMonths" => F::DateAddMonths(l, r),
                    "DateAddYears" => F::DateAddYears(l, r),
                    "DateDifferenceInDays" => F::DateDifferenceInDays(l, r),
                    "DateDifferenceInMonths" => F::DateDifferenceInMonths(l, r),
                    "DateDifferenceInYears" => F::DateDifferenceInYears(l, r),
                    "StringContains" => F::StringContains(l, r),
                    "In" => F::In(l, r),
                    other => return Err(vm.new_value_error(format!("no query-model function {other}"))),
                }
            }
        };
        with_graph(|g| g.function(f)).map(|n| located(vm, n)).map_err(|e| qm_error(vm, &op, e))
    }

    /// `series.is_in(values)`: the values (already cast by the series) as a set of the
    /// series' type, then `In`.
    #[pyfunction]
    fn is_in(series: PyObjectRef, values: PyObjectRef, vm: &VirtualMachine) -> PyResult<usize> {
        let s = node_of(vm, &series)?;
        let set = values.downcast_ref::<PyFrozenSet>().ok_or_else(|| vm.new_type_error("is_in() needs a set of values"))?;
        let items: Vec<Value> = set.elements().iter().map(|o| literal(vm, o)).collect::<PyResult<_>>()?;
        let element = with_graph(|g| g.type_of(s).cloned()).ok_or_else(|| vm.new_type_error("is_in() on a frame"))?;
        let element = match element {
            // A multi-code string's values are plain strings.
            Type::MultiCodeString(_) => Type::Str,
            t => t,
        };
        let set = Value::set(element.clone(), items).map_err(|e| match e {
            QueryModelError::Type { found, .. } => {
                let found = found.trim_start_matches("frozenset[").trim_end_matches(']').to_string();
                vm.new_type_error(format!("Expected type 'Series[Set[{}]]' but got 'Series[frozenset[{found}]]'", element.typespec()))
            }
            other => qm_error(vm, "In", other),
        })?;
        with_graph(|g| {
            let v = g.value(set);
            g.function(F::In(s, v))
        })
        .map(|n| located(vm, n))
        .map_err(|e| qm_error(vm, "In", e))
    }

    /// An aggregation: `kind` is ehrQL's `AggregateByPatient` class name.
    #[pyfunction]
    fn aggregate(kind: PyStrRef, source: PyObjectRef, maximum_gap_days: OptionalArg<i64>, vm: &VirtualMachine) -> PyResult<usize> {
        let kind = kind.to_string_lossy().into_owned();
        let s = node_of(vm, &source)?;
        let a = match kind.as_str() {
            "Exists" => A::Exists(s),
            "Count" => A::Count(s),
            "CountDistinct" => A::CountDistinct(s),
            "CountEpisodes" => A::CountEpisodes { source: s, maximum_gap_days: maximum_gap_days.unwrap_or(0) },
            "Min" => A::Min(s),
            "Max" => A::Max(s),
            "Sum" => A::Sum(s),
            "Mean" => A::Mean(s),
            "CombineAsSet" => A::CombineAsSet(s),
            other => return Err(vm.new_value_error(format!("no query-model aggregation {other}"))),
        };
        with_graph(|g| g.aggregate(a)).map(|n| located(vm, n)).map_err(|e| qm_error(vm, &kind, e))
    }

    #[pyfunction]
    fn filter(frame: PyObjectRef, condition: PyObjectRef, vm: &VirtualMachine) -> PyResult<usize> {
        let f = node_of(vm, &frame)?;
        if vm.is_none(&condition) {
            return Err(vm.new_type_error("Expected type 'Series[bool]' but got 'NoneType'".to_string()));
        }
        let c = node_of(vm, &condition)?;
        with_graph(|g| g.filter(f, c)).map(|n| located(vm, n)).map_err(|e| qm_error(vm, "Filter", e))
    }

    #[pyfunction]
    fn sort(frame: PyObjectRef, sort_by: PyObjectRef, vm: &VirtualMachine) -> PyResult<usize> {
        let f = node_of(vm, &frame)?;
        if vm.is_none(&sort_by) {
            return Err(vm.new_type_error("Expected type 'Series[~Comparable]' but got 'NoneType'".to_string()));
        }
        let s = node_of(vm, &sort_by)?;
        with_graph(|g| g.sort(f, s)).map(|n| located(vm, n)).map_err(|e| qm_error(vm, "Sort", e))
    }

    #[pyfunction]
    fn pick(frame: PyObjectRef, position: PyStrRef, vm: &VirtualMachine) -> PyResult<usize> {
        let f = node_of(vm, &frame)?;
        let position = if position.to_string_lossy() == "first" { Position::First } else { Position::Last };
        with_graph(|g| g.pick_one_row_per_patient(f, position)).map(|n| located(vm, n)).map_err(|e| qm_error(vm, "PickOneRowPerPatient", e))
    }

    #[pyfunction]
    fn select_column(frame: PyObjectRef, name: PyStrRef, vm: &VirtualMachine) -> PyResult<usize> {
        let f = node_of(vm, &frame)?;
        let name = name.to_string_lossy().into_owned();
        with_graph(|g| g.select_column(f, &name)).map(|n| located(vm, n)).map_err(|e| qm_error(vm, "SelectColumn", e))
    }

    /// `case(...)`: `cases` are `(condition, value or None)` pairs in order.
    #[pyfunction]
    fn case(cases: Vec<PyObjectRef>, default: PyObjectRef, vm: &VirtualMachine) -> PyResult<usize> {
        let mut pairs = Vec::with_capacity(cases.len());
        for pair in &cases {
            let t = pair.downcast_ref::<PyTuple>().ok_or_else(|| vm.new_type_error("case pairs are tuples"))?;
            let [c, v] = t.as_slice() else { return Err(vm.new_type_error("case pairs are (condition, value)")) };
            let value = if vm.is_none(v) { None } else { Some(node_of(vm, v)?) };
            pairs.push((node_of(vm, c)?, value));
        }
        let default = if vm.is_none(&default) { None } else { Some(node_of(vm, &default)?) };
        with_graph(|g| g.case(pairs, default)).map(|n| located(vm, n)).map_err(|e| qm_error(vm, "Case", e))
    }

    /// Whether a node is a `case` with exactly one condition (the shape
    /// `when(...).then(...).otherwise(...)` makes).
    #[pyfunction]
    fn is_single_case(node: PyObjectRef, vm: &VirtualMachine) -> PyResult<bool> {
        let n = node_of(vm, &node)?;
        Ok(with_graph(|g| matches!(g.node(n), Node::Case { cases, .. } if cases.len() == 1)))
    }

    #[pyfunction]
    fn parameter(name: PyStrRef, type_tag: PyStrRef, vm: &VirtualMachine) -> PyResult<usize> {
        let t = type_of_tag(vm, &type_tag.to_string_lossy())?;
        let name = name.to_string_lossy().into_owned();
        Ok(located(vm, with_graph(|g| g.parameter(&name, t))))
    }

    /// Why a series cannot be a population (ehrQL's `validate_population_definition`).
    #[pyfunction]
    fn population_problem(node: PyObjectRef, vm: &VirtualMachine) -> PyResult<Option<String>> {
        let n = node_of(vm, &node)?;
        Ok(with_graph(|g| quarry_queries::validate::true_for_empty_patient(g, n))
            .then(|| "population definition must not evaluate as True for NULL inputs".to_string()))
    }

    /// Why series cannot be the columns of one event table: `"patient"` (none has more than
    /// one value per patient) or `"domain"` (they come from different frames).
    #[pyfunction]
    fn event_table_problem(nodes: Vec<PyObjectRef>, vm: &VirtualMachine) -> PyResult<Option<String>> {
        let nodes: Vec<NodeId> = nodes.iter().map(|n| node_of(vm, n)).collect::<PyResult<_>>()?;
        // As ehrQL's SeriesCollectionFrame: at least one column with many rows per patient,
        // and all of those from one frame; one-value-per-patient columns repeat on each row.
        Ok(with_graph(|g| {
            let mut event_domains = nodes.iter().filter(|&&n| !g.is_patient_level(n)).map(|&n| g.domain(n));
            let Some(first) = event_domains.next() else {
                return Some("patient".to_string());
            };
            event_domains.any(|d| d != first).then(|| "domain".to_string())
        }))
    }

    // --- Tables --------------------------------------------------------------------------

    /// The tables a module of ehrQL's declares or re-exports, for building its classes:
    /// `(name, patient_level, columns [(name, type tag, description)], description,
    /// source module, source name, extended table or None, helpers)`; the source module
    /// differs from `module` for a re-export.
    #[pyfunction]
    fn catalogue(module: PyStrRef, vm: &VirtualMachine) -> PyResult<PyObjectRef> {
        let module = module.to_string_lossy().into_owned();
        let Some(tables) = tables::catalog().module(&module) else {
            return Ok(vm.ctx.none());
        };
        let entries = tables
            .iter()
            .map(|(name, def)| {
                let columns: Vec<PyObjectRef> = def
                    .schema
                    .columns
                    .iter()
                    .map(|c| {
                        vm.ctx
                            .new_tuple(vec![
                                vm.ctx.new_str(c.name.as_str()).into(),
                                vm.ctx.new_str(tag(&c.type_)).into(),
                                vm.ctx.new_str(c.description.as_str()).into(),
                            ])
                            .into()
                    })
                    .collect();
                vm.ctx
                    .new_tuple(vec![
                        vm.ctx.new_str(name.as_str()).into(),
                        vm.ctx.new_bool(def.schema.patient_level).into(),
                        vm.ctx.new_list(columns).into(),
                        vm.ctx.new_str(def.description.as_str()).into(),
                        vm.ctx.new_str(def.module.as_str()).into(),
                        vm.ctx.new_str(def.python_name.as_str()).into(),
                        match &def.extends {
                            Some((m, t)) => {
                                vm.ctx.new_tuple(vec![vm.ctx.new_str(m.as_str()).into(), vm.ctx.new_str(t.as_str()).into()]).into()
                            }
                            None => vm.ctx.none(),
                        },
                        vm.ctx.new_list(def.helpers.iter().map(|h| vm.ctx.new_str(h.as_str()).into()).collect()).into(),
                    ])
                    .into()
            })
            .collect();
        Ok(vm.ctx.new_list(entries).into())
    }

    /// The tables a dataset reads (from its nodes), by name, each as `(name, patient_level,
    /// [(column, type tag, [constraint spec, ...])])` with its constraints (not its
    /// dummy-data ones) as specs `_quarry_test_data` turns into `Constraint`s.
    #[pyfunction]
    fn dataset_tables(nodes: Vec<PyObjectRef>, vm: &VirtualMachine) -> PyResult<PyObjectRef> {
        let nodes: Vec<NodeId> = nodes.iter().map(|n| node_of(vm, n)).collect::<PyResult<_>>()?;
        let mut schemas: Vec<TableSchema> = with_graph(|g| {
            let mut seen = Vec::new();
            for id in g.reachable_from(&nodes) {
                if let Node::SelectTable(t) | Node::SelectPatientTable(t) = g.node(id)
                    && !seen.iter().any(|s: &TableSchema| *s == *g.table(*t))
                {
                    seen.push(g.table(*t).clone());
                }
            }
            seen
        });
        schemas.sort_by(|a, b| a.name.cmp(&b.name));
        let out = schemas
            .iter()
            .map(|schema| -> PyResult<PyObjectRef> {
                let columns = schema
                    .columns
                    .iter()
                    .map(|c| -> PyResult<PyObjectRef> {
                        let specs = c.constraints.iter().map(|k| constraint_spec(vm, k)).collect::<PyResult<Vec<_>>>()?;
                        Ok(vm
                            .ctx
                            .new_tuple(vec![
                                vm.ctx.new_str(c.name.as_str()).into(),
                                vm.ctx.new_str(tag(&c.type_)).into(),
                                vm.ctx.new_list(specs).into(),
                            ])
                            .into())
                    })
                    .collect::<PyResult<Vec<_>>>()?;
                Ok(vm
                    .ctx
                    .new_tuple(vec![
                        vm.ctx.new_str(schema.name.as_str()).into(),
                        vm.ctx.new_bool(schema.patient_level).into(),
                        vm.ctx.new_list(columns).into(),
                    ])
                    .into())
            })
            .collect::<PyResult<Vec<_>>>()?;
        Ok(vm.ctx.new_list(out).into())
    }

    /// A constraint as the tuple `_quarry_test_data` builds a `Constraint` from.
    fn constraint_spec(vm: &VirtualMachine, c: &Constraint) -> PyResult<PyObjectRef> {
        let s = |x: &str| -> PyObjectRef { vm.ctx.new_str(x).into() };
        let items: Vec<PyObjectRef> = match c {
            Constraint::Categorical(values) => {
                vec![s("Categorical"), vm.ctx.new_list(values.iter().map(|v| python_value(vm, v)).collect::<PyResult<_>>()?).into()]
            }
            Constraint::NotNull => vec![s("NotNull")],
            Constraint::Unique => vec![s("Unique")],
            Constraint::FirstOfMonth => vec![s("FirstOfMonth")],
            Constraint::Regex(r) => vec![s("Regex"), s(r)],
            Constraint::ClosedRange { minimum, maximum, step } => {
                vec![s("ClosedRange"), vm.ctx.new_int(*minimum).into(), vm.ctx.new_int(*maximum).into(), vm.ctx.new_int(*step).into()]
            }
            Constraint::GeneralRange { minimum, maximum, includes_minimum, includes_maximum } => vec![
                s("GeneralRange"),
                minimum.as_ref().map(|v| python_value(vm, v)).transpose()?.unwrap_or_else(|| vm.ctx.none()),
                maximum.as_ref().map(|v| python_value(vm, v)).transpose()?.unwrap_or_else(|| vm.ctx.none()),
                vm.ctx.new_bool(*includes_minimum).into(),
                vm.ctx.new_bool(*includes_maximum).into(),
            ],
            Constraint::DateAfter(columns) => vec![s("DateAfter"), vm.ctx.new_list(columns.iter().map(|c| s(c)).collect()).into()],
        };
        Ok(vm.ctx.new_tuple(items).into())
    }

    /// A literal as the Python value ehrQL holds (codes as their strings).
    fn python_value(vm: &VirtualMachine, v: &Value) -> PyResult<PyObjectRef> {
        Ok(match v {
            Value::Bool(b) => vm.ctx.new_bool(*b).into(),
            Value::Int(i) => vm.ctx.new_int(*i).into(),
            Value::Float(f) => vm.ctx.new_float(f.0).into(),
            Value::Str(s) | Value::Code(_, s) => vm.ctx.new_str(s.as_str()).into(),
            Value::Date(d) => {
                let date = vm.import("datetime", 0)?.get_attr("date", vm)?;
                date.call((i64::from(d.year()), i64::from(d.month()), i64::from(d.day())), vm)?
            }
            Value::Set(..) => return Err(vm.new_type_error("a set is not a column value")),
        })
    }

    /// Whether `show()` renders (`quarry debug`) or is ignored.
    #[pyfunction]
    fn debug_active() -> bool {
        state::with(|s| s.debugger.is_some())
    }

    /// Renders a `show()` request: `("ok", text)`, `("type", "")` when the elements cannot
    /// be shown together (ehrQL's TypeError), `("error", message)`.
    /// `kind` is `"dataset"` (`a`: the population node or None, `b`: `[(name, node)]`) or
    /// `"elements"` (`a`: `[(node, is_date_difference)]`).
    #[pyfunction]
    fn debug_show(
        kind: PyStrRef,
        a: PyObjectRef,
        b: PyObjectRef,
        head: usize,
        tail: usize,
        vm: &VirtualMachine,
    ) -> PyResult<(String, String)> {
        let request = if kind.to_string_lossy() == "dataset" {
            let population = if vm.is_none(&a) { None } else { Some(node_of(vm, &a)?) };
            let pairs: Vec<PyObjectRef> = b.try_to_value(vm)?;
            let variables = pairs
                .iter()
                .map(|p| Ok((p.get_item(&0, vm)?.str(vm)?.to_string(), node_of(vm, &p.get_item(&1, vm)?)?)))
                .collect::<PyResult<_>>()?;
            crate::ShowRequest::Dataset { population, variables }
        } else {
            let items: Vec<PyObjectRef> = a.try_to_value(vm)?;
            let elements = items
                .iter()
                .map(|p| Ok((node_of(vm, &p.get_item(&0, vm)?)?, p.get_item(&1, vm)?.try_to_bool(vm)?)))
                .collect::<PyResult<_>>()?;
            crate::ShowRequest::Elements(elements)
        };
        let result = state::with(|s| match s.debugger.as_mut() {
            Some(d) => d.show(&s.graph, &request, head, tail),
            None => Err(crate::ShowError::Failed("show() called outside debug mode".into())),
        });
        Ok(match result {
            Ok(text) => ("ok".into(), text),
            Err(crate::ShowError::NotShowable) => ("type".into(), String::new()),
            Err(crate::ShowError::Failed(m)) => ("error".into(), m),
        })
    }

    /// The node that selects a catalogue table.
    #[pyfunction]
    fn catalogue_table(module: PyStrRef, name: PyStrRef, vm: &VirtualMachine) -> PyResult<usize> {
        let (module, name) = (module.to_string_lossy().into_owned(), name.to_string_lossy().into_owned());
        let def = tables::catalog().table(&module, &name).ok_or_else(|| vm.new_attribute_error(format!("no table {module}.{name}")))?;
        select(vm, def.schema.clone())
    }

    fn select(vm: &VirtualMachine, schema: TableSchema) -> PyResult<usize> {
        let patient_level = schema.patient_level;
        with_graph(|g| {
            let t = g.declare_table(schema)?;
            if patient_level { g.select_patient_table(t) } else { g.select_table(t) }
        })
        .map(|n| located(vm, n))
        .map_err(|e| qm_error(vm, "SelectTable", e))
    }

    fn columns_of(vm: &VirtualMachine, schema: &[PyObjectRef]) -> PyResult<Vec<Column>> {
        schema
            .iter()
            .map(|c| {
                let t = c.downcast_ref::<PyTuple>().ok_or_else(|| vm.new_type_error("a column is (name, type, constraints)"))?;
                let [name, type_tag, constraints] = t.as_slice() else {
                    return Err(vm.new_type_error("a column is (name, type, constraints)"));
                };
                let name = text(name).ok_or_else(|| vm.new_type_error("column names are strings"))?;
                let type_ = type_of_tag(vm, &text(type_tag).unwrap_or_default())?;
                let specs: Vec<PyObjectRef> = constraints.clone().try_to_value(vm)?;
                let constraints = specs.iter().map(|s| constraint(vm, s, &type_)).collect::<PyResult<_>>()?;
                Ok(Column { name, type_, constraints, description: String::new() })
            })
            .collect()
    }

    /// A constraint from its Python spec: `(kind, *arguments)`.
    fn constraint(vm: &VirtualMachine, spec: &PyObjectRef, type_: &Type) -> PyResult<Constraint> {
        let parts: Vec<PyObjectRef> = spec.clone().try_to_value(vm)?;
        let kind = parts.first().and_then(text).unwrap_or_default();
        let arg = |i: usize| parts.get(i).cloned().unwrap_or_else(|| vm.ctx.none());
        let opt_value = |o: PyObjectRef| -> PyResult<Option<Value>> { if vm.is_none(&o) { Ok(None) } else { literal(vm, &o).map(Some) } };
        Ok(match kind.as_str() {
            "NotNull" => Constraint::NotNull,
            "Unique" => Constraint::Unique,
            "FirstOfMonth" => Constraint::FirstOfMonth,
            "Categorical" => {
                let values: Vec<PyObjectRef> = arg(1).try_to_value(vm)?;
                Constraint::Categorical(values.iter().filter(|v| !vm.is_none(v)).map(|v| literal(vm, v)).collect::<PyResult<_>>()?)
            }
            "Regex" => Constraint::Regex(text(&arg(1)).unwrap_or_default()),
            "ClosedRange" => Constraint::ClosedRange {
                minimum: arg(1).try_into_value(vm)?,
                maximum: arg(2).try_into_value(vm)?,
                step: arg(3).try_into_value(vm)?,
            },
            "GeneralRange" => Constraint::GeneralRange {
                minimum: opt_value(arg(1))?,
                maximum: opt_value(arg(2))?,
                includes_minimum: arg(3).try_to_bool(vm)?,
                includes_maximum: arg(4).try_to_bool(vm)?,
            },
            "DateAfter" => {
                let names: Vec<PyObjectRef> = arg(1).try_to_value(vm)?;
                Constraint::DateAfter(names.iter().map(|n| text(n).unwrap_or_default()).collect())
            }
            other => return Err(vm.new_value_error(format!("unknown constraint {other} on a {} column", type_.name()))),
        })
    }

    /// A table declared by a definition's own `@table` class.
    #[pyfunction]
    fn define_table(
        name: PyStrRef,
        patient_level: bool,
        schema: Vec<PyObjectRef>,
        permission: Option<PyStrRef>,
        vm: &VirtualMachine,
    ) -> PyResult<usize> {
        let columns = columns_of(vm, &schema)?;
        select(
            vm,
            TableSchema {
                name: name.to_string_lossy().into_owned(),
                columns,
                patient_level,
                required_permission: permission.map(|p| p.to_string_lossy().into_owned()),
            },
        )
    }

    /// `@table_from_rows(rows)`: rows of `(patient_id, value, …)`.
    #[pyfunction]
    fn inline_table(schema: Vec<PyObjectRef>, rows: Vec<PyObjectRef>, vm: &VirtualMachine) -> PyResult<usize> {
        let columns = columns_of(vm, &schema)?;
        let mut parsed = Vec::with_capacity(rows.len());
        for row in &rows {
            let items: Vec<PyObjectRef> = row.clone().try_to_value(vm)?;
            let Some((pid, values)) = items.split_first() else { return Err(vm.new_value_error("an inline row needs a patient_id")) };
            let pid: i64 = pid.clone().try_into_value(vm)?;
            let values = values.iter().map(|v| if vm.is_none(v) { Ok(None) } else { literal(vm, v).map(Some) }).collect::<PyResult<_>>()?;
            parsed.push((pid, values));
        }
        inline(vm, "inline_rows".into(), columns, parsed)
    }

    fn inline(vm: &VirtualMachine, name: String, columns: Vec<Column>, rows: Vec<(i64, Vec<Option<Value>>)>) -> PyResult<usize> {
        let schema = TableSchema { name, columns, patient_level: true, required_permission: None };
        with_graph(|g| {
            let t = g.declare_table(schema)?;
            g.inline_patient_table(t, rows)
        })
        .map(|n| located(vm, n))
        .map_err(|e| qm_error(vm, "InlinePatientTable", e))
    }

    /// `table_from_file(path, columns=...)`: a CSV read through the sandbox.
    #[pyfunction]
    fn table_from_file(path: PyStrRef, schema: Vec<PyObjectRef>, vm: &VirtualMachine) -> PyResult<usize> {
        let path = path.to_string_lossy().into_owned();
        let columns = columns_of(vm, &schema)?;
        let file_error = |message: String| ehrql_exception(vm, "FileValidationError", message);
        // As ehrQL: a missing file is named first, whatever its format.
        let missing = state::with(|s| matches!(s.sandbox.stat(&path, true), Err(e) if e.errno == crate::sandbox::ENOENT));
        if missing {
            return Err(file_error(format!("Missing file: {path}")));
        }
        if path.ends_with(".arrow") || path.ends_with(".gz") {
            return Err(file_error(format!("{path}: quarry reads table_from_file() tables from .csv files only")));
        }
        let bytes = state::with(|s| s.sandbox.read(&path)).map_err(|e| crate::native::posix::fs_error(vm, e))?;
        let text = String::from_utf8_lossy(&bytes);
        let rows = quarry_queries::inline::parse_inline_table(&text, &path, &columns).map_err(file_error)?;
        let stem = std::path::Path::new(&path).file_stem().map(|s| s.to_string_lossy().replace('.', "_")).unwrap_or_default();
        inline(vm, format!("inline_{stem}"), columns, rows)
    }

    // --- Codes and codelists -------------------------------------------------------------

    #[pyfunction]
    fn valid_code(class_name: PyStrRef, value: PyStrRef) -> bool {
        CodeSystem::from_class_name(&class_name.to_string_lossy()).is_some_and(|c| codes::is_valid(c, &value.to_string_lossy()))
    }

    /// A multi-code string's prefix check (`ICD10MultiCodeString.is_valid`).
    #[pyfunction]
    fn valid_code_prefix(class_name: PyStrRef, value: PyObjectRef) -> bool {
        let Some(value) = text(&value) else { return false };
        let system = match class_name.to_string_lossy().as_ref() {
            "ICD10MultiCodeString" => CodeSystem::ICD10,
            "OPCS4MultiCodeString" => CodeSystem::OPCS4,
            _ => return false,
        };
        codes::is_valid_prefix(system, &value)
    }

    #[pyfunction]
    fn code_regex(class_name: PyStrRef) -> Option<String> {
        codes::regex_pattern(&class_name.to_string_lossy()).map(str::to_string)
    }

    /// The codes (a list) or code → category map (a dict) in a codelist CSV's text, or the
    /// `CodelistError` message.
    #[pyfunction]
    fn codelist_from_csv_text(text: PyStrRef, column: PyStrRef, category_column: PyStrRef, vm: &VirtualMachine) -> PyResult<PyObjectRef> {
        let (column, category) = (column.to_string_lossy().into_owned(), category_column.to_string_lossy().into_owned());
        let category = (category != column).then_some(category);
        match codes::codelist_from_text(&text.to_string_lossy(), &column, category.as_deref()) {
            Err(message) => Ok(vm.ctx.new_str(message).into()),
            Ok(Codelist::Codes(codes)) => Ok(vm.ctx.new_list(codes.into_iter().map(|c| vm.ctx.new_str(c).into()).collect()).into()),
            Ok(Codelist::Categorised(pairs)) => {
                let dict = vm.ctx.new_dict();
                for (code, category) in pairs {
                    dict.set_item(code.as_str(), vm.ctx.new_str(category).into(), vm)?;
                }
                Ok(dict.into())
            }
        }
    }

    #[pyfunction]
    fn claimed_permissions(vm: &VirtualMachine) -> PyObjectRef {
        let claimed = state::with(|s| s.claimed_permissions.clone());
        vm.ctx.new_list(claimed.into_iter().map(|p| vm.ctx.new_str(p).into()).collect()).into()
    }

    /// `claim_permissions(...)`.
    #[pyfunction]
    fn claim_permissions(permissions: Vec<PyStrRef>) {
        state::with(|s| {
            for p in permissions {
                let p = p.to_string_lossy().into_owned();
                if !s.claimed_permissions.contains(&p) {
                    s.claimed_permissions.push(p);
                }
            }
        });
    }
}
