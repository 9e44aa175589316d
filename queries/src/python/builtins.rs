//! Python builtins, the standard-library modules definitions use, and the methods of
//! Python's own types.

use std::cell::RefCell;
use std::rc::Rc;

use super::interp::{Args, Flow, Interp, PyErr, R, err, type_err, value_err};
use super::value::{ArgParser, ArgSpec, Dict, HKey, Module, Object, V};

const BUILTINS: &[&str] = &[
    "print",
    "len",
    "range",
    "sorted",
    "min",
    "max",
    "sum",
    "any",
    "all",
    "isinstance",
    "enumerate",
    "zip",
    "getattr",
    "setattr",
    "hasattr",
    "abs",
    "round",
    "reversed",
    "map",
    "filter",
    "repr",
    "iter",
    "next",
    "hash",
    "id",
    "callable",
    "divmod",
    "format",
    "type",
    "vars",
];

const TYPES: &[&str] = &[
    "int",
    "float",
    "str",
    "bool",
    "list",
    "tuple",
    "dict",
    "set",
    "frozenset",
    "object",
    "Exception",
    "BaseException",
    "ValueError",
    "TypeError",
    "KeyError",
    "IndexError",
    "AttributeError",
    "RuntimeError",
    "AssertionError",
    "NameError",
    "ImportError",
    "ModuleNotFoundError",
    "ZeroDivisionError",
    "ArithmeticError",
    "LookupError",
    "FileNotFoundError",
    "OSError",
    "NotImplementedError",
    "StopIteration",
    "OverflowError",
];

pub fn builtin(name: &str) -> Option<V> {
    if let Some(b) = BUILTINS.iter().find(|b| **b == name) {
        return Some(V::Builtin(b));
    }
    if let Some(t) = TYPES.iter().find(|t| **t == name) {
        return Some(V::Type(t));
    }
    match name {
        "True" => Some(V::Bool(true)),
        "False" => Some(V::Bool(false)),
        "None" => Some(V::None),
        _ => None,
    }
}

fn module(name: &str, attrs: Vec<(&str, V)>) -> V {
    V::Module(Rc::new(Module { name: name.to_string(), attrs: RefCell::new(attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()) }))
}

/// Standard-library and ehrQL modules; `None` for anything else (a user module).
pub fn builtin_module(interp: &mut Interp, name: &str) -> R<Option<V>> {
    Ok(Some(match name {
        "datetime" => module(name, vec![("date", V::Type("date")), ("timedelta", V::Type("timedelta")), ("datetime", V::Type("datetime"))]),
        "functools" => module(name, vec![("reduce", V::Builtin("functools.reduce"))]),
        "operator" => module(
            name,
            ["or_", "and_", "add", "sub", "mul", "truediv", "floordiv", "not_", "invert", "eq", "ne", "lt", "le", "gt", "ge", "neg"]
                .iter()
                .map(|op| (*op, V::Builtin(Box::leak(format!("operator.{op}").into_boxed_str()))))
                .collect(),
        ),
        "sys" => module(name, vec![("argv", V::list(interp.argv.iter().map(|a| V::str(a)).collect()))]),
        "argparse" => module(name, vec![("ArgumentParser", V::Type("ArgumentParser"))]),
        "math" => module(
            name,
            vec![
                ("floor", V::Builtin("math.floor")),
                ("ceil", V::Builtin("math.ceil")),
                ("sqrt", V::Builtin("math.sqrt")),
                ("log", V::Builtin("math.log")),
                ("inf", V::Float(f64::INFINITY)),
                ("pi", V::Float(std::f64::consts::PI)),
            ],
        ),
        "itertools" => module(name, vec![("product", V::Builtin("itertools.product")), ("chain", V::Builtin("itertools.chain"))]),
        "collections" => module(name, vec![("OrderedDict", V::Type("dict"))]),
        "typing" => module(name, vec![]),
        "__future__" => module(name, vec![("annotations", V::None)]),
        _ => return super::api::module(interp, name),
    }))
}

fn want_int(v: &V, what: &str) -> R<i64> {
    match v {
        V::Int(i) => Ok(*i),
        V::Bool(b) => Ok(*b as i64),
        other => Err(type_err(format!("{what}: expected an int, got {}", other.type_name()))),
    }
}

fn one(args: Args, name: &str) -> R<V> {
    let mut a = args.bind(name, &["x"])?;
    a.remove(0).ok_or_else(|| type_err(format!("{name}() takes exactly one argument (0 given)")))
}

pub fn call_builtin(interp: &mut Interp, name: &'static str, mut args: Args) -> R<V> {
    match name {
        "print" => {
            let sep = args.take_kw("sep").map(|v| interp.to_str(&v)).transpose()?.unwrap_or_else(|| " ".into());
            let end = args.take_kw("end").map(|v| interp.to_str(&v)).transpose()?.unwrap_or_else(|| "\n".into());
            args.take_kw("file");
            args.take_kw("flush");
            let parts = args.pos.iter().map(|v| interp.to_str(v)).collect::<R<Vec<_>>>()?;
            let text = format!("{}{end}", parts.join(&sep));
            let _ = interp.out.write_all(text.as_bytes());
            Ok(V::None)
        }
        "len" => {
            let v = one(args, "len")?;
            Ok(V::Int(match &v {
                V::Str(s) => s.chars().count() as i64,
                V::List(l) => l.borrow().len() as i64,
                V::Tuple(t) => t.len() as i64,
                V::Dict(d) | V::Set(d) => d.borrow().len as i64,
                V::Series(_) | V::Frame(_) => {
                    return Err(type_err("len() cannot be used with ehrQL series or frames; use count_for_patient()"));
                }
                other => return Err(type_err(format!("object of type '{}' has no len()", other.type_name()))),
            }))
        }
        "range" => {
            let n: Vec<i64> = args.pos.iter().map(|v| want_int(v, "range()")).collect::<R<_>>()?;
            let (start, stop, step) = match n[..] {
                [stop] => (0, stop, 1),
                [start, stop] => (start, stop, 1),
                [start, stop, step] => (start, stop, step),
                _ => return Err(type_err("range expected 1 to 3 arguments")),
            };
            if step == 0 {
                return Err(value_err("range() arg 3 must not be zero"));
            }
            let mut out = vec![];
            let mut i = start;
            while (step > 0 && i < stop) || (step < 0 && i > stop) {
                out.push(V::Int(i));
                i += step;
                if out.len() > 50_000_000 {
                    return Err(value_err("range() too large"));
                }
            }
            Ok(V::list(out))
        }
        "sorted" => {
            let key = args.take_kw("key");
            let reverse = args.take_kw("reverse").map(|v| interp.truthy(&v)).transpose()?.unwrap_or(false);
            let v = one(args, "sorted")?;
            let items = interp.iterate(&v)?;
            let sorted = sort_values(interp, items, key, reverse)?;
            Ok(V::list(sorted))
        }
        "min" | "max" => {
            let key = args.take_kw("key");
            let default = args.take_kw("default");
            let items = if args.pos.len() == 1 { interp.iterate(&args.pos[0])? } else { args.pos.clone() };
            if items.iter().any(|v| matches!(v, V::Series(_))) {
                return Err(type_err(format!(
                    "{name}() cannot be used with ehrQL series; use {}() instead",
                    if name == "min" { "minimum_of" } else { "maximum_of" }
                )));
            }
            if items.is_empty() {
                return default.ok_or_else(|| value_err(format!("{name}() arg is an empty sequence")));
            }
            let mut best = items[0].clone();
            let mut best_key = match &key {
                Some(k) => interp.call(k.clone(), Args::new(vec![best.clone()]))?,
                None => best.clone(),
            };
            for item in items.into_iter().skip(1) {
                let k = match &key {
                    Some(kf) => interp.call(kf.clone(), Args::new(vec![item.clone()]))?,
                    None => item.clone(),
                };
                let ord = interp.order(&k, &best_key)?;
                let better = if name == "min" { ord == std::cmp::Ordering::Less } else { ord == std::cmp::Ordering::Greater };
                if better {
                    best = item;
                    best_key = k;
                }
            }
            Ok(best)
        }
        "sum" => {
            let start = args.take_kw("start").or_else(|| args.pos.get(1).cloned()).unwrap_or(V::Int(0));
            let items = interp.iterate(&args.pos.first().cloned().unwrap_or(V::None))?;
            let mut acc = start;
            for item in items {
                acc = interp.binop(ruff_python_ast::Operator::Add, acc, item)?;
            }
            Ok(acc)
        }
        "any" | "all" => {
            let v = one(args, name)?;
            for item in interp.iterate(&v)? {
                let t = interp.truthy(&item)?;
                if name == "any" && t {
                    return Ok(V::Bool(true));
                }
                if name == "all" && !t {
                    return Ok(V::Bool(false));
                }
            }
            Ok(V::Bool(name == "all"))
        }
        "isinstance" => {
            let a = args.bind("isinstance", &["obj", "class_or_tuple"])?;
            let (Some(obj), Some(cls)) = (&a[0], &a[1]) else {
                return Err(type_err("isinstance expected 2 arguments"));
            };
            Ok(V::Bool(isinstance(interp, obj, cls)))
        }
        "enumerate" => {
            let start = args.take_kw("start").map(|v| want_int(&v, "enumerate()")).transpose()?;
            let start = match start {
                Some(s) => s,
                None => args.pos.get(1).map(|v| want_int(v, "enumerate()")).transpose()?.unwrap_or(0),
            };
            let items = interp.iterate(args.pos.first().ok_or_else(|| type_err("enumerate() missing iterable"))?)?;
            Ok(V::list(items.into_iter().enumerate().map(|(i, v)| V::tuple(vec![V::Int(start + i as i64), v])).collect()))
        }
        "zip" => {
            let lists = args.pos.iter().map(|v| interp.iterate(v)).collect::<R<Vec<_>>>()?;
            let n = lists.iter().map(Vec::len).min().unwrap_or(0);
            Ok(V::list((0..n).map(|i| V::tuple(lists.iter().map(|l| l[i].clone()).collect())).collect()))
        }
        "getattr" => {
            let obj = args.pos.first().cloned().ok_or_else(|| type_err("getattr expected at least 2 arguments"))?;
            let name = match args.pos.get(1) {
                Some(V::Str(s)) => s.clone(),
                _ => return Err(type_err("attribute name must be string")),
            };
            match (interp.get_attr(&obj, &name), args.pos.get(2)) {
                (Ok(v), _) => Ok(v),
                (Err(Flow::Err(e)), Some(default)) if e.kind == "AttributeError" => Ok(default.clone()),
                (Err(e), _) => Err(e),
            }
        }
        "hasattr" => {
            let obj = args.pos.first().cloned().unwrap_or(V::None);
            let Some(V::Str(name)) = args.pos.get(1) else {
                return Err(type_err("attribute name must be string"));
            };
            match interp.get_attr(&obj, name) {
                Ok(_) => Ok(V::Bool(true)),
                Err(Flow::Err(e)) if e.kind == "AttributeError" => Ok(V::Bool(false)),
                Err(e) => Err(e),
            }
        }
        "setattr" => {
            let a = args.bind("setattr", &["obj", "name", "value"])?;
            let (Some(obj), Some(name), Some(value)) = (&a[0], &a[1], &a[2]) else {
                return Err(type_err("setattr expected 3 arguments"));
            };
            let V::Str(name) = name else {
                return Err(type_err("attribute name must be string"));
            };
            interp.set_attr(obj, name, value.clone())?;
            Ok(V::None)
        }
        "abs" => match one(args, "abs")? {
            V::Int(i) => Ok(V::Int(i.abs())),
            V::Float(f) => Ok(V::Float(f.abs())),
            V::Series(_) => Err(type_err("abs() cannot be used with ehrQL series; use .absolute() instead")),
            other => Err(type_err(format!("bad operand type for abs(): '{}'", other.type_name()))),
        },
        "round" => {
            let a = args.bind("round", &["number", "ndigits"])?;
            let x = match &a[0] {
                Some(V::Int(i)) => return Ok(V::Int(*i)),
                Some(V::Float(f)) => *f,
                _ => return Err(type_err("round() needs a number")),
            };
            match &a[1] {
                None | Some(V::None) => Ok(V::Int(round_half_even(x) as i64)),
                Some(V::Int(n)) => {
                    let m = 10f64.powi(*n as i32);
                    Ok(V::Float(round_half_even(x * m) / m))
                }
                _ => Err(type_err("ndigits must be an int")),
            }
        }
        "reversed" => {
            let v = one(args, "reversed")?;
            let mut items = interp.iterate(&v)?;
            items.reverse();
            Ok(V::list(items))
        }
        "iter" => Ok(V::list(interp.iterate(&one(args, "iter")?)?)),
        "map" => {
            let f = args.pos.first().cloned().ok_or_else(|| type_err("map() needs a function"))?;
            let lists = args.pos[1..].iter().map(|v| interp.iterate(v)).collect::<R<Vec<_>>>()?;
            let n = lists.iter().map(Vec::len).min().unwrap_or(0);
            let mut out = vec![];
            for i in 0..n {
                out.push(interp.call(f.clone(), Args::new(lists.iter().map(|l| l[i].clone()).collect()))?);
            }
            Ok(V::list(out))
        }
        "filter" => {
            let f = args.pos.first().cloned().unwrap_or(V::None);
            let items = interp.iterate(args.pos.get(1).ok_or_else(|| type_err("filter() needs an iterable"))?)?;
            let mut out = vec![];
            for item in items {
                let keep = match &f {
                    V::None => interp.truthy(&item)?,
                    f => {
                        let r = interp.call(f.clone(), Args::new(vec![item.clone()]))?;
                        interp.truthy(&r)?
                    }
                };
                if keep {
                    out.push(item);
                }
            }
            Ok(V::list(out))
        }
        "repr" => Ok(V::str(&interp.repr(&one(args, "repr")?)?)),
        "format" => {
            let v = args.pos.first().cloned().unwrap_or(V::None);
            let spec = match args.pos.get(1) {
                Some(V::Str(s)) => s.to_string(),
                _ => String::new(),
            };
            Ok(V::str(&interp.format_value(&v, &spec)?))
        }
        "hash" => {
            let v = one(args, "hash")?;
            interp.hkey(&v)?;
            Ok(V::Int(0))
        }
        "callable" => Ok(V::Bool(matches!(one(args, "callable")?, V::Function(_) | V::Builtin(_) | V::Method(..) | V::Type(_)))),
        "divmod" => {
            let a = args.pos.first().cloned().unwrap_or(V::None);
            let b = args.pos.get(1).cloned().unwrap_or(V::None);
            let q = interp.binop(ruff_python_ast::Operator::FloorDiv, a.clone(), b.clone())?;
            let r = interp.binop(ruff_python_ast::Operator::Mod, a, b)?;
            Ok(V::tuple(vec![q, r]))
        }
        "type" => {
            let v = one(args, "type")?;
            Ok(match v {
                V::Int(_) => V::Type("int"),
                V::Float(_) => V::Type("float"),
                V::Str(_) => V::Type("str"),
                V::Bool(_) => V::Type("bool"),
                V::List(_) => V::Type("list"),
                V::Tuple(_) => V::Type("tuple"),
                V::Dict(_) => V::Type("dict"),
                V::Date(_) => V::Type("date"),
                _ => return Err(unsupported_builtin("type() of this value")),
            })
        }
        "functools.reduce" => {
            let f = args.pos.first().cloned().ok_or_else(|| type_err("reduce() needs a function"))?;
            let items = interp.iterate(args.pos.get(1).ok_or_else(|| type_err("reduce() needs an iterable"))?)?;
            let mut iter = items.into_iter();
            let mut acc = match args.pos.get(2) {
                Some(init) => init.clone(),
                None => iter.next().ok_or_else(|| type_err("reduce() of empty iterable with no initial value"))?,
            };
            for item in iter {
                acc = interp.call(f.clone(), Args::new(vec![acc, item]))?;
            }
            Ok(acc)
        }
        "math.floor" | "math.ceil" | "math.sqrt" | "math.log" => {
            let x = match args.pos.first() {
                Some(V::Int(i)) => *i as f64,
                Some(V::Float(f)) => *f,
                _ => return Err(type_err("must be real number")),
            };
            Ok(match name {
                "math.floor" => V::Int(x.floor() as i64),
                "math.ceil" => V::Int(x.ceil() as i64),
                "math.sqrt" => V::Float(x.sqrt()),
                _ => V::Float(x.ln()),
            })
        }
        "itertools.chain" => {
            let mut out = vec![];
            for v in &args.pos {
                out.extend(interp.iterate(v)?);
            }
            Ok(V::list(out))
        }
        "itertools.product" => {
            let lists = args.pos.iter().map(|v| interp.iterate(v)).collect::<R<Vec<_>>>()?;
            let mut out: Vec<Vec<V>> = vec![vec![]];
            for l in lists {
                out = out
                    .into_iter()
                    .flat_map(|prefix| {
                        l.iter().map(move |x| {
                            let mut p = prefix.clone();
                            p.push(x.clone());
                            p
                        })
                    })
                    .collect();
            }
            Ok(V::list(out.into_iter().map(V::tuple).collect()))
        }
        op if op.starts_with("operator.") => {
            use ruff_python_ast::{CmpOp, Operator};
            let a = args.pos.first().cloned().unwrap_or(V::None);
            let b = args.pos.get(1).cloned().unwrap_or(V::None);
            match &op[9..] {
                "or_" => interp.binop(Operator::BitOr, a, b),
                "and_" => interp.binop(Operator::BitAnd, a, b),
                "add" => interp.binop(Operator::Add, a, b),
                "sub" => interp.binop(Operator::Sub, a, b),
                "mul" => interp.binop(Operator::Mult, a, b),
                "truediv" => interp.binop(Operator::Div, a, b),
                "floordiv" => interp.binop(Operator::FloorDiv, a, b),
                "eq" => interp.compare(CmpOp::Eq, &a, &b),
                "ne" => interp.compare(CmpOp::NotEq, &a, &b),
                "lt" => interp.compare(CmpOp::Lt, &a, &b),
                "le" => interp.compare(CmpOp::LtE, &a, &b),
                "gt" => interp.compare(CmpOp::Gt, &a, &b),
                "ge" => interp.compare(CmpOp::GtE, &a, &b),
                "not_" => Ok(V::Bool(!interp.truthy(&a)?)),
                "invert" => super::api::invert(interp, a),
                "neg" => super::api::negate(interp, a),
                _ => Err(unsupported_builtin(op)),
            }
        }
        other => {
            if let Some(api_name) = other.strip_prefix("ehrql.") {
                return super::api::call_function(interp, api_name, args);
            }
            Err(unsupported_builtin(other))
        }
    }
}

fn unsupported_builtin(what: &str) -> Flow {
    err("quarry.UnsupportedError", format!("{what} is not supported by quarry's Python interpreter"))
}

fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 { 2.0 * (x / 2.0).round() } else { r }
}

fn sort_values(interp: &mut Interp, items: Vec<V>, key: Option<V>, reverse: bool) -> R<Vec<V>> {
    let mut keyed = Vec::with_capacity(items.len());
    for item in items {
        let k = match &key {
            Some(V::None) | None => item.clone(),
            Some(f) => interp.call(f.clone(), Args::new(vec![item.clone()]))?,
        };
        keyed.push((k, item));
    }
    // Stable merge sort with a fallible comparison.
    let mut error = None;
    keyed.sort_by(|a, b| {
        if error.is_some() {
            return std::cmp::Ordering::Equal;
        }
        match interp.order(&a.0, &b.0) {
            Ok(o) => {
                if reverse {
                    o.reverse()
                } else {
                    o
                }
            }
            Err(e) => {
                error = Some(e);
                std::cmp::Ordering::Equal
            }
        }
    });
    if let Some(e) = error {
        return Err(e);
    }
    Ok(keyed.into_iter().map(|(_, v)| v).collect())
}

fn isinstance(interp: &Interp, obj: &V, cls: &V) -> bool {
    match cls {
        V::Tuple(items) => items.iter().any(|c| isinstance(interp, obj, c)),
        V::Type(t) => match (*t, obj) {
            ("int", V::Int(_) | V::Bool(_)) => true,
            ("float", V::Float(_)) => true,
            ("str", V::Str(_)) => true,
            ("bool", V::Bool(_)) => true,
            ("list", V::List(_)) => true,
            ("tuple", V::Tuple(_)) => true,
            ("dict", V::Dict(_)) => true,
            ("set", V::Set(_)) => true,
            ("date", V::Date(_)) => true,
            ("object", _) => true,
            (t, V::Code(c, _)) => c.class_name() == t,
            (t, other) => super::api::isinstance(interp, other, t),
        },
        _ => false,
    }
}

pub fn exception_is_subclass(kind: &str, handler: &str) -> bool {
    if kind == handler || handler == "Exception" || handler == "BaseException" {
        return kind != "quarry.UnsupportedError" || handler == kind;
    }
    matches!(
        (kind, handler),
        ("KeyError" | "IndexError", "LookupError")
            | ("ZeroDivisionError" | "OverflowError", "ArithmeticError")
            | ("ModuleNotFoundError", "ImportError")
            | ("FileNotFoundError", "OSError")
    )
}

pub fn exception_object(e: &PyErr) -> V {
    if let Some(v) = &e.value {
        return v.clone();
    }
    V::Object(Rc::new(Object {
        class: Box::leak(e.kind.clone().into_boxed_str()),
        attrs: RefCell::new(vec![("__exception__".into(), V::Bool(true)), ("args".into(), V::str(&e.message))]),
    }))
}

/// Calls a type: `int("3")`, `str(x)`, `datetime.date(2020, 1, 1)`, `ValueError("...")`, ….
pub fn call_type(interp: &mut Interp, t: &'static str, mut args: Args) -> R<V> {
    if TYPES.contains(&t) && t.ends_with("Error") || t == "Exception" || t == "BaseException" {
        let msg = args.pos.first().cloned().unwrap_or_else(|| V::str(""));
        return Ok(V::Object(Rc::new(Object {
            class: t,
            attrs: RefCell::new(vec![("__exception__".into(), V::Bool(true)), ("args".into(), msg)]),
        })));
    }
    let first = args.pos.first().cloned();
    match t {
        "int" => Ok(match first {
            None => V::Int(0),
            Some(V::Int(i)) => V::Int(i),
            Some(V::Bool(b)) => V::Int(b as i64),
            Some(V::Float(f)) => {
                if !f.is_finite() {
                    return Err(err("OverflowError", "cannot convert float infinity or NaN to integer"));
                }
                V::Int(f.trunc() as i64)
            }
            Some(V::Str(s)) => V::Int(
                s.trim()
                    .replace('_', "")
                    .parse()
                    .map_err(|_| value_err(format!("invalid literal for int() with base 10: {}", super::interp::py_str_repr(&s))))?,
            ),
            Some(V::Series(_)) => return Err(type_err("int() cannot convert an ehrQL series; use .as_int()")),
            Some(other) => return Err(type_err(format!("int() argument must be a string or a number, not '{}'", other.type_name()))),
        }),
        "float" => Ok(match first {
            None => V::Float(0.0),
            Some(V::Int(i)) => V::Float(i as f64),
            Some(V::Bool(b)) => V::Float(b as i64 as f64),
            Some(V::Float(f)) => V::Float(f),
            Some(V::Str(s)) => V::Float(
                parse_py_float(&s)
                    .ok_or_else(|| value_err(format!("could not convert string to float: {}", super::interp::py_str_repr(&s))))?,
            ),
            Some(other) => return Err(type_err(format!("float() argument must be a string or a number, not '{}'", other.type_name()))),
        }),
        "str" => Ok(V::str(&match first {
            None => String::new(),
            Some(v) => interp.to_str(&v)?,
        })),
        "bool" => Ok(V::Bool(match first {
            None => false,
            Some(v) => interp.truthy(&v)?,
        })),
        "list" => Ok(V::list(match first {
            None => vec![],
            Some(v) => interp.iterate(&v)?,
        })),
        "tuple" => Ok(V::tuple(match first {
            None => vec![],
            Some(v) => interp.iterate(&v)?,
        })),
        "set" | "frozenset" => {
            let items = match first {
                None => vec![],
                Some(v) => interp.iterate(&v)?,
            };
            interp.make_set(items)
        }
        "dict" => {
            let mut d = Dict::default();
            if let Some(v) = first {
                match v {
                    V::Dict(o) => d = o.borrow().clone(),
                    other => {
                        for pair in interp.iterate(&other)? {
                            let kv = interp.iterate(&pair)?;
                            if kv.len() != 2 {
                                return Err(value_err("dictionary update sequence element has wrong length"));
                            }
                            let k = interp.hkey(&kv[0])?;
                            d.insert(k, kv[0].clone(), kv[1].clone());
                        }
                    }
                }
            }
            for (k, v) in args.kw {
                d.insert(HKey::Str(Rc::from(k.as_str())), V::str(&k), v);
            }
            Ok(V::Dict(Rc::new(RefCell::new(d))))
        }
        "date" => {
            let a = args.bind("date", &["year", "month", "day"])?;
            let part = |v: &Option<V>, n: &str| -> R<i64> {
                match v {
                    Some(V::Int(i)) => Ok(*i),
                    _ => Err(type_err(format!("date() argument '{n}' must be an int"))),
                }
            };
            let (y, m, d) = (part(&a[0], "year")?, part(&a[1], "month")?, part(&a[2], "day")?);
            jiff::civil::Date::new(y as i16, m as i8, d as i8).map(V::Date).map_err(|_| value_err(format!("invalid date: {y}-{m}-{d}")))
        }
        "timedelta" => {
            let days = args.take_kw("days").or_else(|| args.pos.first().cloned()).unwrap_or(V::Int(0));
            let weeks = args.take_kw("weeks").unwrap_or(V::Int(0));
            Ok(V::TimeDelta(want_int(&days, "timedelta days")? + 7 * want_int(&weeks, "timedelta weeks")?))
        }
        "ArgumentParser" => Ok(V::ArgParser(Rc::new(RefCell::new(ArgParser::default())))),
        other => super::api::call_type(interp, other, args),
    }
}

/// Python's `float()` of a string.
pub fn parse_py_float(s: &str) -> Option<f64> {
    let t = s.trim().replace('_', "");
    match t.to_ascii_lowercase().as_str() {
        "nan" | "+nan" | "-nan" => return Some(f64::NAN),
        "inf" | "+inf" | "infinity" | "+infinity" => return Some(f64::INFINITY),
        "-inf" | "-infinity" => return Some(f64::NEG_INFINITY),
        _ => {}
    }
    if t.is_empty() || !t.chars().all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-')) {
        return None;
    }
    t.parse().ok()
}

pub fn get_attr(interp: &mut Interp, obj: &V, name: &str) -> R<V> {
    let no_attr = |obj: &V| err("AttributeError", format!("'{}' object has no attribute '{name}'", obj.type_name()));
    match obj {
        V::Module(m) => {
            if let Some(v) = m.attrs.borrow().get(name) {
                return Ok(v.clone());
            }
            let full = format!("{}.{name}", m.name);
            if let Ok(Some(sub)) = builtin_module(interp, &full) {
                return Ok(sub);
            }
            Err(err("AttributeError", format!("module '{}' has no attribute '{name}'", m.name)))
        }
        V::Object(o) => o.get(name).ok_or_else(|| no_attr(obj)),
        V::Date(d) => Ok(match name {
            "year" => V::Int(d.year() as i64),
            "month" => V::Int(d.month() as i64),
            "day" => V::Int(d.day() as i64),
            "isoformat" | "replace" | "strftime" | "weekday" | "isoweekday" => V::Method(Rc::new(obj.clone()), Rc::from(name)),
            _ => return Err(no_attr(obj)),
        }),
        V::TimeDelta(d) => match name {
            "days" => Ok(V::Int(*d)),
            _ => Err(no_attr(obj)),
        },
        V::Type("date") => match name {
            "fromisoformat" | "today" => Ok(V::Method(Rc::new(obj.clone()), Rc::from(name))),
            _ => Err(no_attr(obj)),
        },
        V::Str(_) | V::List(_) | V::Dict(_) | V::Set(_) | V::Tuple(_) | V::ArgParser(_) | V::Int(_) | V::Float(_) => {
            if python_method_exists(obj, name) { Ok(V::Method(Rc::new(obj.clone()), Rc::from(name))) } else { Err(no_attr(obj)) }
        }
        _ => super::api::get_attr(interp, obj, name),
    }
}

fn python_method_exists(obj: &V, name: &str) -> bool {
    let methods: &[&str] = match obj {
        V::Str(_) => &[
            "upper",
            "lower",
            "strip",
            "lstrip",
            "rstrip",
            "split",
            "rsplit",
            "join",
            "replace",
            "startswith",
            "endswith",
            "format",
            "title",
            "capitalize",
            "zfill",
            "isdigit",
            "isalpha",
            "isalnum",
            "find",
            "count",
            "splitlines",
            "ljust",
            "rjust",
            "center",
            "removeprefix",
            "removesuffix",
            "index",
            "casefold",
            "isupper",
            "islower",
        ],
        V::List(_) => &["append", "extend", "insert", "pop", "index", "count", "sort", "reverse", "copy", "remove", "clear"],
        V::Tuple(_) => &["index", "count"],
        V::Dict(_) => &["keys", "values", "items", "get", "update", "pop", "setdefault", "copy", "clear"],
        V::Set(_) => &[
            "add",
            "update",
            "union",
            "difference",
            "intersection",
            "issubset",
            "issuperset",
            "discard",
            "remove",
            "copy",
            "symmetric_difference",
            "pop",
            "clear",
        ],
        V::ArgParser(_) => &["add_argument", "parse_args", "parse_known_args", "add_argument_group", "set_defaults"],
        V::Int(_) => &["bit_length", "to_bytes"],
        V::Float(_) => &["is_integer"],
        _ => &[],
    };
    methods.contains(&name)
}

fn str_arg(v: Option<&V>, what: &str) -> R<String> {
    match v {
        Some(V::Str(s)) => Ok(s.to_string()),
        _ => Err(type_err(format!("{what} must be a str"))),
    }
}

pub fn call_method(interp: &mut Interp, obj: V, name: &str, mut args: Args) -> R<V> {
    match &obj {
        V::Object(o) if o.class == "TableFromFile" && name == "__call__" => super::api::table_from_file_class(interp, o, args),
        V::Str(s) => string_method(interp, s, name, args),
        V::List(l) => {
            let l = l.clone();
            match name {
                "append" => {
                    l.borrow_mut().push(one(args, "append")?);
                    Ok(V::None)
                }
                "extend" => {
                    let items = interp.iterate(&one(args, "extend")?)?;
                    l.borrow_mut().extend(items);
                    Ok(V::None)
                }
                "insert" => {
                    let i = want_int(args.pos.first().unwrap_or(&V::None), "insert")?;
                    let v = args.pos.get(1).cloned().unwrap_or(V::None);
                    let len = l.borrow().len() as i64;
                    let i = if i < 0 { (i + len).max(0) } else { i.min(len) };
                    l.borrow_mut().insert(i as usize, v);
                    Ok(V::None)
                }
                "pop" => {
                    let len = l.borrow().len();
                    if len == 0 {
                        return Err(err("IndexError", "pop from empty list"));
                    }
                    let i = match args.pos.first() {
                        Some(k) => interp.index(k, len)?,
                        None => len - 1,
                    };
                    Ok(l.borrow_mut().remove(i))
                }
                "index" | "count" | "remove" => {
                    let target = one(args, name)?;
                    let items = l.borrow().clone();
                    let positions = positions_of(interp, &items, &target)?;
                    match name {
                        "count" => Ok(V::Int(positions.len() as i64)),
                        _ => {
                            let Some(&p) = positions.first() else {
                                return Err(value_err(format!("{} is not in list", interp.repr(&target)?)));
                            };
                            if name == "remove" {
                                l.borrow_mut().remove(p);
                                Ok(V::None)
                            } else {
                                Ok(V::Int(p as i64))
                            }
                        }
                    }
                }
                "sort" => {
                    let key = args.take_kw("key");
                    let reverse = args.take_kw("reverse").map(|v| interp.truthy(&v)).transpose()?.unwrap_or(false);
                    let items = l.borrow().clone();
                    let sorted = sort_values(interp, items, key, reverse)?;
                    *l.borrow_mut() = sorted;
                    Ok(V::None)
                }
                "reverse" => {
                    l.borrow_mut().reverse();
                    Ok(V::None)
                }
                "copy" => Ok(V::list(l.borrow().clone())),
                "clear" => {
                    l.borrow_mut().clear();
                    Ok(V::None)
                }
                _ => Err(err("AttributeError", format!("'list' object has no attribute '{name}'"))),
            }
        }
        V::Tuple(t) => {
            let target = one(args, name)?;
            let positions = positions_of(interp, t, &target)?;
            match name {
                "count" => Ok(V::Int(positions.len() as i64)),
                _ => positions.first().map(|p| V::Int(*p as i64)).ok_or_else(|| value_err("tuple.index(x): x not in tuple")),
            }
        }
        V::Dict(d) => {
            let d = d.clone();
            match name {
                "keys" => Ok(V::list(d.borrow().keys())),
                "values" => Ok(V::list(d.borrow().iter().map(|(_, v)| v.clone()).collect())),
                "items" => Ok(V::list(d.borrow().iter().map(|(k, v)| V::tuple(vec![k.clone(), v.clone()])).collect())),
                "get" => {
                    let key = args.pos.first().cloned().unwrap_or(V::None);
                    let k = interp.hkey(&key)?;
                    Ok(d.borrow().get(&k).cloned().unwrap_or_else(|| args.pos.get(1).cloned().unwrap_or(V::None)))
                }
                "setdefault" => {
                    let key = args.pos.first().cloned().unwrap_or(V::None);
                    let k = interp.hkey(&key)?;
                    if let Some(v) = d.borrow().get(&k) {
                        return Ok(v.clone());
                    }
                    let v = args.pos.get(1).cloned().unwrap_or(V::None);
                    d.borrow_mut().insert(k, key, v.clone());
                    Ok(v)
                }
                "pop" => {
                    let key = args.pos.first().cloned().unwrap_or(V::None);
                    let k = interp.hkey(&key)?;
                    match d.borrow_mut().remove(&k) {
                        Some(v) => Ok(v),
                        None => args.pos.get(1).cloned().ok_or_else(|| err("KeyError", format!("{key:?}"))),
                    }
                }
                "update" => {
                    let mut pairs = vec![];
                    if let Some(other) = args.pos.first() {
                        match other {
                            V::Dict(o) => pairs.extend(o.borrow().iter().cloned()),
                            other => {
                                for pair in interp.iterate(other)? {
                                    let kv = interp.iterate(&pair)?;
                                    pairs.push((kv[0].clone(), kv[1].clone()));
                                }
                            }
                        }
                    }
                    for (k, v) in args.kw {
                        pairs.push((V::str(&k), v));
                    }
                    for (k, v) in pairs {
                        let hk = interp.hkey(&k)?;
                        d.borrow_mut().insert(hk, k, v);
                    }
                    Ok(V::None)
                }
                "copy" => Ok(V::Dict(Rc::new(RefCell::new(d.borrow().clone())))),
                "clear" => {
                    *d.borrow_mut() = Dict::default();
                    Ok(V::None)
                }
                _ => Err(err("AttributeError", format!("'dict' object has no attribute '{name}'"))),
            }
        }
        V::Set(d) => {
            let d = d.clone();
            match name {
                "add" => {
                    let v = one(args, "add")?;
                    let k = interp.hkey(&v)?;
                    d.borrow_mut().insert(k, v, V::None);
                    Ok(V::None)
                }
                "discard" | "remove" => {
                    let v = one(args, name)?;
                    let k = interp.hkey(&v)?;
                    if d.borrow_mut().remove(&k).is_none() && name == "remove" {
                        return Err(err("KeyError", interp.repr(&v)?));
                    }
                    Ok(V::None)
                }
                "update" => {
                    for a in args.pos {
                        for v in interp.iterate(&a)? {
                            let k = interp.hkey(&v)?;
                            d.borrow_mut().insert(k, v, V::None);
                        }
                    }
                    Ok(V::None)
                }
                "copy" => Ok(V::Set(Rc::new(RefCell::new(d.borrow().clone())))),
                "union" | "difference" | "intersection" | "symmetric_difference" => {
                    use ruff_python_ast::Operator as O;
                    let op = match name {
                        "union" => O::BitOr,
                        "difference" => O::Sub,
                        "intersection" => O::BitAnd,
                        _ => O::BitXor,
                    };
                    let mut acc = V::Set(Rc::new(RefCell::new(d.borrow().clone())));
                    for a in args.pos {
                        let items = interp.iterate(&a)?;
                        let other = interp.make_set(items)?;
                        acc = interp.binop(op, acc, other)?;
                    }
                    Ok(acc)
                }
                "issubset" | "issuperset" => {
                    let items = interp.iterate(&one(args, name)?)?;
                    let other = interp.make_set(items)?;
                    let V::Set(o) = other else { unreachable!("make_set returns a set") };
                    let (a, b) = if name == "issubset" {
                        (d.borrow().clone(), o.borrow().clone())
                    } else {
                        (o.borrow().clone(), d.borrow().clone())
                    };
                    Ok(V::Bool(a.iter().all(|(k, _)| b.get(&k.hkey().expect("set member")).is_some())))
                }
                _ => Err(err("AttributeError", format!("'set' object has no attribute '{name}'"))),
            }
        }
        V::Date(d) => match name {
            "isoformat" => Ok(V::str(&d.to_string())),
            "weekday" => Ok(V::Int(d.weekday().to_monday_zero_offset() as i64)),
            "isoweekday" => Ok(V::Int(d.weekday().to_monday_one_offset() as i64)),
            "replace" => {
                let mut y = d.year() as i64;
                let mut m = d.month() as i64;
                let mut day = d.day() as i64;
                for (k, v) in args.kw {
                    let n = want_int(&v, "replace()")?;
                    match k.as_str() {
                        "year" => y = n,
                        "month" => m = n,
                        "day" => day = n,
                        _ => return Err(type_err(format!("'{k}' is an invalid keyword argument for replace()"))),
                    }
                }
                jiff::civil::Date::new(y as i16, m as i8, day as i8).map(V::Date).map_err(|_| value_err("day is out of range for month"))
            }
            "strftime" => {
                let fmt = str_arg(args.pos.first(), "strftime format")?;
                Ok(V::str(&d.strftime(&fmt).to_string()))
            }
            _ => Err(err("AttributeError", format!("'date' object has no attribute '{name}'"))),
        },
        V::Type("date") => match name {
            "fromisoformat" => {
                let s = str_arg(args.pos.first(), "fromisoformat argument")?;
                parse_iso_date(&s)
                    .map(V::Date)
                    .ok_or_else(|| value_err(format!("Invalid isoformat string: {}", super::interp::py_str_repr(&s))))
            }
            "today" => Ok(V::Date(jiff::Zoned::now().date())),
            _ => Err(err("AttributeError", format!("type object 'date' has no attribute '{name}'"))),
        },
        V::ArgParser(p) => argparse_method(interp, p, name, args),
        V::Int(i) if name == "bit_length" => Ok(V::Int(64 - i.unsigned_abs().leading_zeros() as i64)),
        V::Float(f) if name == "is_integer" => Ok(V::Bool(f.fract() == 0.0)),
        _ => super::api::call_method(interp, obj, name, args),
    }
}

/// Where `target` occurs in `items` (Python `==`).
fn positions_of(interp: &mut Interp, items: &[V], target: &V) -> R<Vec<usize>> {
    let mut out = vec![];
    for (i, x) in items.iter().enumerate() {
        if interp.equal(x, target)? {
            out.push(i);
        }
    }
    Ok(out)
}

pub fn parse_iso_date(s: &str) -> Option<jiff::civil::Date> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y: i16 = s[0..4].parse().ok()?;
    let m: i8 = s[5..7].parse().ok()?;
    let d: i8 = s[8..10].parse().ok()?;
    if !s[0..4].bytes().all(|c| c.is_ascii_digit())
        || !s[5..7].bytes().all(|c| c.is_ascii_digit())
        || !s[8..10].bytes().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    jiff::civil::Date::new(y, m, d).ok()
}

fn string_method(interp: &mut Interp, s: &str, name: &str, mut args: Args) -> R<V> {
    let arg0 = args.pos.first().cloned();
    let chars_arg = |v: &Option<V>| -> R<Option<String>> {
        match v {
            None | Some(V::None) => Ok(None),
            Some(V::Str(c)) => Ok(Some(c.to_string())),
            Some(other) => Err(type_err(format!("expected str, got {}", other.type_name()))),
        }
    };
    Ok(match name {
        "upper" => V::str(&s.to_uppercase()),
        "lower" | "casefold" => V::str(&s.to_lowercase()),
        "title" => {
            let mut out = String::new();
            let mut prev_alpha = false;
            for c in s.chars() {
                out.extend(if prev_alpha { c.to_lowercase().collect::<Vec<_>>() } else { c.to_uppercase().collect() });
                prev_alpha = c.is_alphabetic();
            }
            V::str(&out)
        }
        "capitalize" => {
            let mut cs = s.chars();
            V::str(&match cs.next() {
                Some(f) => f.to_uppercase().collect::<String>() + &cs.as_str().to_lowercase(),
                None => String::new(),
            })
        }
        "strip" | "lstrip" | "rstrip" => {
            let set = chars_arg(&arg0)?;
            let is_strip = |c: char| match &set {
                Some(cs) => cs.contains(c),
                None => c.is_whitespace(),
            };
            V::str(match name {
                "strip" => s.trim_matches(is_strip),
                "lstrip" => s.trim_start_matches(is_strip),
                _ => s.trim_end_matches(is_strip),
            })
        }
        "split" | "rsplit" => {
            let sep = chars_arg(&args.take_kw("sep").or(arg0.clone()))?;
            let maxsplit =
                args.take_kw("maxsplit").or_else(|| args.pos.get(1).cloned()).map(|v| want_int(&v, "maxsplit")).transpose()?.unwrap_or(-1);
            let parts: Vec<String> = match (&sep, maxsplit) {
                (Some(sep), m) if m < 0 => s.split(sep.as_str()).map(str::to_string).collect(),
                (Some(sep), m) if name == "split" => s.splitn(m as usize + 1, sep.as_str()).map(str::to_string).collect(),
                (Some(sep), m) => {
                    let mut v: Vec<String> = s.rsplitn(m as usize + 1, sep.as_str()).map(str::to_string).collect();
                    v.reverse();
                    v
                }
                (None, _) => s.split_whitespace().map(str::to_string).collect(),
            };
            V::list(parts.iter().map(|p| V::str(p)).collect())
        }
        "splitlines" => V::list(s.lines().map(V::str).collect()),
        "join" => {
            let items = interp.iterate(&arg0.unwrap_or(V::None))?;
            let parts = items
                .iter()
                .map(|v| match v {
                    V::Str(x) => Ok(x.to_string()),
                    other => Err(type_err(format!("sequence item: expected str instance, {} found", other.type_name()))),
                })
                .collect::<R<Vec<_>>>()?;
            V::str(&parts.join(s))
        }
        "replace" => {
            let a = str_arg(args.pos.first(), "replace() argument 1")?;
            let b = str_arg(args.pos.get(1), "replace() argument 2")?;
            V::str(&s.replace(&a, &b))
        }
        "startswith" | "endswith" => {
            let prefixes = match arg0 {
                Some(V::Tuple(t)) => t.iter().map(|v| str_arg(Some(v), name)).collect::<R<Vec<_>>>()?,
                other => vec![str_arg(other.as_ref(), name)?],
            };
            V::Bool(prefixes.iter().any(|p| if name == "startswith" { s.starts_with(p.as_str()) } else { s.ends_with(p.as_str()) }))
        }
        "removeprefix" => V::str(s.strip_prefix(str_arg(arg0.as_ref(), name)?.as_str()).unwrap_or(s)),
        "removesuffix" => V::str(s.strip_suffix(str_arg(arg0.as_ref(), name)?.as_str()).unwrap_or(s)),
        "find" | "index" => {
            let sub = str_arg(arg0.as_ref(), name)?;
            match s.find(&sub) {
                Some(i) => V::Int(s[..i].chars().count() as i64),
                None if name == "find" => V::Int(-1),
                None => return Err(value_err("substring not found")),
            }
        }
        "count" => V::Int(s.matches(str_arg(arg0.as_ref(), name)?.as_str()).count() as i64),
        "zfill" => {
            let w = want_int(&arg0.unwrap_or(V::Int(0)), "zfill")? as usize;
            let n = s.chars().count();
            if n >= w {
                V::str(s)
            } else if let Some(rest) = s.strip_prefix(['-', '+']) {
                V::str(&format!("{}{}{}", &s[..1], "0".repeat(w - n), rest))
            } else {
                V::str(&format!("{}{s}", "0".repeat(w - n)))
            }
        }
        "ljust" | "rjust" | "center" => {
            let w = want_int(&arg0.unwrap_or(V::Int(0)), name)? as usize;
            let fill = match args.pos.get(1) {
                Some(V::Str(f)) => f.chars().next().unwrap_or(' '),
                _ => ' ',
            };
            let spec = format!(
                "{fill}{}{w}",
                match name {
                    "ljust" => '<',
                    "rjust" => '>',
                    _ => '^',
                }
            );
            V::str(&interp.format_value(&V::str(s), &spec)?)
        }
        "isdigit" => V::Bool(!s.is_empty() && s.chars().all(|c| c.is_ascii_digit())),
        "isalpha" => V::Bool(!s.is_empty() && s.chars().all(char::is_alphabetic)),
        "isalnum" => V::Bool(!s.is_empty() && s.chars().all(char::is_alphanumeric)),
        "isupper" => V::Bool(s.chars().any(char::is_alphabetic) && !s.chars().any(char::is_lowercase)),
        "islower" => V::Bool(s.chars().any(char::is_alphabetic) && !s.chars().any(char::is_uppercase)),
        "format" => V::str(&str_format(interp, s, &args)?),
        _ => return Err(err("AttributeError", format!("'str' object has no attribute '{name}'"))),
    })
}

/// `"...".format(...)`.
fn str_format(interp: &mut Interp, fmt: &str, args: &Args) -> R<String> {
    let mut out = String::new();
    let mut auto = 0usize;
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                let mut field = String::new();
                for c in chars.by_ref() {
                    if c == '}' {
                        break;
                    }
                    field.push(c);
                }
                let (name, spec) = match field.split_once(':') {
                    Some((n, s)) => (n.to_string(), s.to_string()),
                    None => (field.clone(), String::new()),
                };
                let (name, conv) = match name.split_once('!') {
                    Some((n, c)) => (n.to_string(), Some(c.to_string())),
                    None => (name, None),
                };
                let mut parts = name.split('.');
                let head = parts.next().unwrap_or("");
                let mut v = if head.is_empty() {
                    auto += 1;
                    args.pos.get(auto - 1).cloned().ok_or_else(|| err("IndexError", "Replacement index out of range"))?
                } else if let Ok(i) = head.parse::<usize>() {
                    args.pos.get(i).cloned().ok_or_else(|| err("IndexError", "Replacement index out of range"))?
                } else {
                    args.kw.iter().find(|(k, _)| k == head).map(|(_, v)| v.clone()).ok_or_else(|| err("KeyError", format!("'{head}'")))?
                };
                for attr in parts {
                    v = interp.get_attr(&v, attr)?;
                }
                if conv.as_deref() == Some("r") {
                    v = V::str(&interp.repr(&v)?);
                }
                out.push_str(&interp.format_value(&v, &spec)?);
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

/// `"..." % value`.
pub fn percent_format(interp: &mut Interp, fmt: &str, arg: &V) -> R<String> {
    let values: Vec<V> = match arg {
        V::Tuple(t) => (**t).clone(),
        other => vec![other.clone()],
    };
    let mut next = values.into_iter();
    let mut out = String::new();
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = String::new();
        while let Some(&d) = chars.peek() {
            if d.is_ascii_digit() || matches!(d, '.' | '-' | '+' | ' ' | '0') {
                spec.push(d);
                chars.next();
            } else {
                break;
            }
        }
        let Some(conv) = chars.next() else {
            return Err(value_err("incomplete format"));
        };
        if conv == '%' {
            out.push('%');
            continue;
        }
        let v = next.next().ok_or_else(|| type_err("not enough arguments for format string"))?;
        let spec = spec.replacen('-', "<", 1);
        out.push_str(&match conv {
            's' => interp.format_value(&V::str(&interp.to_str(&v)?), &spec)?,
            'r' => interp.format_value(&V::str(&interp.repr(&v)?), &spec)?,
            'd' | 'i' => {
                let n = match v {
                    V::Float(f) => V::Int(f.trunc() as i64),
                    other => other,
                };
                interp.format_value(&n, &format!("{spec}d"))?
            }
            'f' | 'e' | 'g' => interp.format_value(&v, &format!("{spec}{conv}"))?,
            other => return Err(value_err(format!("unsupported format character '{other}'"))),
        });
    }
    if next.next().is_some() {
        return Err(type_err("not all arguments converted during string formatting"));
    }
    Ok(out)
}

fn argparse_method(interp: &mut Interp, p: &Rc<RefCell<ArgParser>>, name: &str, mut args: Args) -> R<V> {
    match name {
        "add_argument" => {
            let flags: Vec<String> = args.pos.iter().map(|v| str_arg(Some(v), "add_argument name")).collect::<R<_>>()?;
            let dest = match args.take_kw("dest") {
                Some(V::Str(d)) => d.to_string(),
                _ => {
                    let long = flags.iter().find(|f| f.starts_with("--")).or(flags.first()).cloned().unwrap_or_default();
                    long.trim_start_matches('-').replace('-', "_")
                }
            };
            let action = args.take_kw("action").map(|v| interp.to_str(&v)).transpose()?;
            let default = args.take_kw("default").unwrap_or(match action.as_deref() {
                Some("store_true") => V::Bool(false),
                Some("store_false") => V::Bool(true),
                _ => V::None,
            });
            let spec = ArgSpec {
                flags,
                dest,
                default,
                type_: args.take_kw("type"),
                action,
                nargs: args.take_kw("nargs"),
                required: args.take_kw("required").map(|v| interp.truthy(&v)).transpose()?.unwrap_or(false),
            };
            args.take_kw("help");
            args.take_kw("choices");
            args.take_kw("metavar");
            p.borrow_mut().arguments.push(spec);
            Ok(V::None)
        }
        "set_defaults" => {
            for (k, v) in args.kw {
                let mut parser = p.borrow_mut();
                if let Some(a) = parser.arguments.iter_mut().find(|a| a.dest == k) {
                    a.default = v;
                }
            }
            Ok(V::None)
        }
        "add_argument_group" => Ok(V::ArgParser(p.clone())),
        "parse_args" | "parse_known_args" => {
            let argv: Vec<String> = match args.pos.first() {
                Some(v) => interp.iterate(v)?.iter().map(|a| interp.to_str(a)).collect::<R<_>>()?,
                None => interp.argv[1..].to_vec(),
            };
            let parser = p.borrow();
            let mut values: Vec<(String, V)> = parser.arguments.iter().map(|a| (a.dest.clone(), a.default.clone())).collect();
            let mut positional: Vec<&ArgSpec> = parser.arguments.iter().filter(|a| !a.flags.iter().any(|f| f.starts_with('-'))).collect();
            positional.reverse();
            let mut unknown = vec![];
            let mut i = 0;
            let convert = |interp: &mut Interp, spec: &ArgSpec, raw: &str| -> R<V> {
                match &spec.type_ {
                    Some(t) => interp.call(t.clone(), Args::new(vec![V::str(raw)])),
                    None => Ok(V::str(raw)),
                }
            };
            while i < argv.len() {
                let a = &argv[i];
                let (flag, inline) = match a.split_once('=') {
                    Some((f, v)) if a.starts_with("--") => (f.to_string(), Some(v.to_string())),
                    _ => (a.clone(), None),
                };
                if flag.starts_with('-') && flag.len() > 1 {
                    let Some(spec) = parser.arguments.iter().find(|s| s.flags.contains(&flag)) else {
                        if name == "parse_known_args" {
                            unknown.push(a.clone());
                            i += 1;
                            continue;
                        }
                        return Err(err(
                            "SystemExit",
                            format!(
                                "argparse: unrecognized arguments: {a} (the definition's own ArgumentParser rejected its user arguments)"
                            ),
                        ));
                    };
                    let slot = values.iter_mut().position(|(d, _)| *d == spec.dest).expect("every argument has a slot");
                    match spec.action.as_deref() {
                        Some("store_true") => values[slot].1 = V::Bool(true),
                        Some("store_false") => values[slot].1 = V::Bool(false),
                        _ => {
                            let many = matches!(&spec.nargs, Some(V::Str(n)) if &**n == "+" || &**n == "*");
                            if many {
                                let mut items = vec![];
                                if let Some(v) = inline {
                                    items.push(convert(interp, spec, &v)?);
                                }
                                while i + 1 < argv.len() && !argv[i + 1].starts_with("--") {
                                    i += 1;
                                    items.push(convert(interp, spec, &argv[i])?);
                                }
                                values[slot].1 = V::list(items);
                            } else {
                                let raw = match inline {
                                    Some(v) => v,
                                    None => {
                                        i += 1;
                                        argv.get(i)
                                            .cloned()
                                            .ok_or_else(|| err("SystemExit", format!("argparse: argument {flag}: expected one argument")))?
                                    }
                                };
                                values[slot].1 = convert(interp, spec, &raw)?;
                            }
                        }
                    }
                } else if let Some(spec) = positional.pop() {
                    let slot = values.iter().position(|(d, _)| *d == spec.dest).expect("every argument has a slot");
                    values[slot].1 = convert(interp, spec, a)?;
                } else if name == "parse_known_args" {
                    unknown.push(a.clone());
                } else {
                    return Err(err("SystemExit", format!("argparse: unrecognized arguments: {a}")));
                }
                i += 1;
            }
            for spec in parser.arguments.iter().filter(|s| s.required) {
                if !argv.iter().any(|a| spec.flags.iter().any(|f| a == f || a.starts_with(&format!("{f}=")))) {
                    return Err(err("SystemExit", format!("argparse: the following arguments are required: {}", spec.flags.join("/"))));
                }
            }
            let ns = V::Object(Rc::new(Object { class: "Namespace", attrs: RefCell::new(values) }));
            if name == "parse_known_args" { Ok(V::tuple(vec![ns, V::list(unknown.iter().map(|u| V::str(u)).collect())])) } else { Ok(ns) }
        }
        _ => Err(err("AttributeError", format!("'ArgumentParser' object has no attribute '{name}'"))),
    }
}
