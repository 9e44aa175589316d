//! Python values of the interpreter.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use jiff::civil::Date;

use crate::qm::{CodeSystem, NodeId};

use super::api::{DatasetObj, Duration, FrameObj, MeasuresObj};
use super::interp::FunctionDef;

/// A Python value.
#[derive(Clone)]
pub enum V {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Rc<str>),
    List(Rc<RefCell<Vec<V>>>),
    Tuple(Rc<Vec<V>>),
    Dict(Rc<RefCell<Dict>>),
    Set(Rc<RefCell<Dict>>),
    Date(Date),
    /// `datetime.timedelta`, in whole days.
    TimeDelta(i64),
    Function(Rc<FunctionDef>),
    Builtin(&'static str),
    /// A method bound to its receiver, e.g. `dataset.define_population`.
    Method(Rc<V>, Rc<str>),
    Module(Rc<Module>),
    /// A plain object with attributes (argparse namespaces, `INTERVAL`, …).
    Object(Rc<Object>),
    /// A type used as a value: `int`, `str`, `datetime.date`, a code class, ….
    Type(&'static str),
    Code(CodeSystem, Rc<str>),
    // ehrQL.
    Series(NodeId),
    Frame(Rc<FrameObj>),
    Dataset(Rc<RefCell<DatasetObj>>),
    Measures(Rc<RefCell<MeasuresObj>>),
    Duration(Rc<Duration>),
    /// `date_a - date_b` before `.days`/`.months`/….
    DateDifference(NodeId, NodeId),
    When(NodeId),
    WhenThen(NodeId, Option<NodeId>),
    /// `when(...).then(...).otherwise(...)`: a finished case, remembering its shape for the
    /// "otherwise inside case()" error.
    CaseOtherwise(NodeId),
    ArgParser(Rc<RefCell<ArgParser>>),
}

#[derive(Debug, Default)]
pub struct Module {
    pub name: String,
    pub attrs: RefCell<HashMap<String, V>>,
}

pub struct Object {
    pub class: &'static str,
    pub attrs: RefCell<Vec<(String, V)>>,
}

impl Object {
    pub fn get(&self, name: &str) -> Option<V> {
        self.attrs.borrow().iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
    }
}

/// `argparse.ArgumentParser`: `add_argument` records options; `parse_args` reads them.
#[derive(Default)]
pub struct ArgParser {
    pub arguments: Vec<ArgSpec>,
}

pub struct ArgSpec {
    pub flags: Vec<String>,
    pub dest: String,
    pub default: V,
    pub type_: Option<V>,
    pub action: Option<String>,
    pub nargs: Option<V>,
    pub required: bool,
}

/// A hashable key: Python's equality of keys (`1 == 1.0 == True`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HKey {
    None,
    Int(i64),
    Float(u64),
    Str(Rc<str>),
    Date(Date),
    Tuple(Vec<HKey>),
    Code(CodeSystem, Rc<str>),
    TimeDelta(i64),
    Type(&'static str),
}

/// An insertion-ordered dict (also the storage of sets).
#[derive(Default, Clone)]
pub struct Dict {
    pub entries: Vec<Option<(V, V)>>,
    pub index: HashMap<HKey, usize>,
    pub len: usize,
}

impl Dict {
    pub fn get(&self, key: &HKey) -> Option<&V> {
        self.index.get(key).and_then(|&i| self.entries[i].as_ref().map(|(_, v)| v))
    }

    pub fn insert(&mut self, hkey: HKey, key: V, value: V) {
        match self.index.get(&hkey) {
            Some(&i) => {
                if let Some(e) = self.entries[i].as_mut() {
                    e.1 = value;
                }
            }
            None => {
                self.index.insert(hkey, self.entries.len());
                self.entries.push(Some((key, value)));
                self.len += 1;
            }
        }
    }

    pub fn remove(&mut self, key: &HKey) -> Option<V> {
        let i = self.index.remove(key)?;
        self.len -= 1;
        self.entries[i].take().map(|(_, v)| v)
    }

    pub fn iter(&self) -> impl Iterator<Item = &(V, V)> {
        self.entries.iter().flatten()
    }

    pub fn keys(&self) -> Vec<V> {
        self.iter().map(|(k, _)| k.clone()).collect()
    }
}

impl V {
    pub fn str(s: &str) -> V {
        V::Str(Rc::from(s))
    }

    pub fn list(items: Vec<V>) -> V {
        V::List(Rc::new(RefCell::new(items)))
    }

    pub fn tuple(items: Vec<V>) -> V {
        V::Tuple(Rc::new(items))
    }

    /// Python's `type(x).__name__`.
    pub fn type_name(&self) -> String {
        match self {
            V::None => "NoneType".into(),
            V::Bool(_) => "bool".into(),
            V::Int(_) => "int".into(),
            V::Float(_) => "float".into(),
            V::Str(_) => "str".into(),
            V::List(_) => "list".into(),
            V::Tuple(_) => "tuple".into(),
            V::Dict(_) => "dict".into(),
            V::Set(_) => "set".into(),
            V::Date(_) => "date".into(),
            V::TimeDelta(_) => "timedelta".into(),
            V::Function(_) => "function".into(),
            V::Builtin(_) => "builtin_function_or_method".into(),
            V::Method(..) => "method".into(),
            V::Module(_) => "module".into(),
            V::Object(o) => o.class.into(),
            V::Type(_) => "type".into(),
            V::Code(c, _) => c.class_name().into(),
            V::Series(_) => "Series".into(),
            V::Frame(f) => f.class_name(),
            V::Dataset(_) => "Dataset".into(),
            V::Measures(_) => "Measures".into(),
            V::Duration(d) => d.unit.class_name().into(),
            V::DateDifference(..) => "DateDifference".into(),
            V::When(_) => "When".into(),
            V::WhenThen(..) => "WhenThen".into(),
            V::CaseOtherwise(_) => "Series".into(),
            V::ArgParser(_) => "ArgumentParser".into(),
        }
    }

    /// The key of a hashable value; `None` for unhashable ones.
    pub fn hkey(&self) -> Option<HKey> {
        Some(match self {
            V::None => HKey::None,
            V::Bool(b) => HKey::Int(*b as i64),
            V::Int(i) => HKey::Int(*i),
            V::Float(f) => {
                if f.fract() == 0.0 && f.abs() < 9.0e15 {
                    HKey::Int(*f as i64)
                } else {
                    HKey::Float(f.to_bits())
                }
            }
            V::Str(s) => HKey::Str(s.clone()),
            V::Date(d) => HKey::Date(*d),
            V::TimeDelta(d) => HKey::TimeDelta(*d),
            V::Tuple(items) => HKey::Tuple(items.iter().map(V::hkey).collect::<Option<_>>()?),
            V::Code(c, s) => HKey::Code(*c, s.clone()),
            V::Type(t) => HKey::Type(t),
            _ => return None,
        })
    }
}

/// Python's `repr(float)`: the shortest string that round-trips, in Python's layout.
pub fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0".into() } else { "0.0".into() };
    }
    // Shortest round-trip digits and exponent, from Rust's `{:e}`.
    let e = format!("{:e}", f);
    let (mantissa, exp) = e.split_once('e').expect("exponent form");
    let exp: i32 = exp.parse().expect("exponent");
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    let sign = if negative { "-" } else { "" };
    if (-4..16).contains(&exp) {
        // Positional.
        let n = digits.len() as i32;
        let s = if exp >= 0 {
            if n <= exp + 1 {
                format!("{}{}.0", digits, "0".repeat((exp + 1 - n) as usize))
            } else {
                format!("{}.{}", &digits[..(exp + 1) as usize], &digits[(exp + 1) as usize..])
            }
        } else {
            format!("0.{}{}", "0".repeat((-exp - 1) as usize), digits)
        };
        format!("{sign}{s}")
    } else {
        let m = if digits.len() == 1 { digits.clone() } else { format!("{}.{}", &digits[..1], &digits[1..]) };
        let es = if exp < 0 { format!("-{:02}", -exp) } else { format!("+{:02}", exp) };
        format!("{sign}{m}e{es}")
    }
}

#[cfg(test)]
mod tests {
    use super::float_repr;

    #[test]
    fn python_float_repr() {
        for (f, s) in [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (1e-05, "1e-05"),
            (2.5e-07, "2.5e-07"),
            (1e16, "1e+16"),
            (1.2345678901234568e16, "1.2345678901234568e+16"),
            (123456789012345.6, "123456789012345.6"),
            (0.0001, "0.0001"),
            (-3.5, "-3.5"),
            (1e15, "1000000000000000.0"),
            (f64::NAN, "nan"),
        ] {
            assert_eq!(float_repr(f), s);
        }
    }
}
