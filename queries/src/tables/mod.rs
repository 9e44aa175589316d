//! ehrQL's table schemas (`ehrql.tables.*`), declared once as data in `tables.txt` and parsed
//! here on first use. The interpreter resolves `from ehrql.tables.tpp import clinical_events`
//! against [`catalog()`]; `docs/tables.md` is rendered from it by [`markdown`].

use std::collections::BTreeMap;
use std::sync::OnceLock;

use crate::qm::{CodeSystem, Column, Constraint, TableSchema, Type, Value};

const SOURCE: &str = include_str!("tables.txt");

/// One table as a module exports it.
#[derive(Debug, Clone, PartialEq)]
pub struct TableDef {
    /// The module that declares it (`ehrql.tables.core`).
    pub module: String,
    /// Its Python name in that module (`ons_deaths`).
    pub python_name: String,
    pub schema: TableSchema,
    pub description: String,
    /// Dummy-data-only constraints per column.
    pub dummy_constraints: BTreeMap<String, Vec<Constraint>>,
    /// The helper methods and properties the table's class defines.
    pub helpers: Vec<String>,
    pub permission: Option<String>,
    /// The table whose class this one's subclasses (`module`, `python_name`), as ehrQL's
    /// tpp tables extend core's: its columns and helpers are inherited.
    pub extends: Option<(String, String)>,
}

/// Every module and the tables it exports (declared or re-exported), in file order.
#[derive(Debug, Default)]
pub struct Catalog {
    pub modules: Vec<(String, Vec<(String, TableDef)>)>,
}

impl Catalog {
    pub fn module(&self, name: &str) -> Option<&[(String, TableDef)]> {
        self.modules.iter().find(|(m, _)| m == name).map(|(_, t)| t.as_slice())
    }

    pub fn table(&self, module: &str, name: &str) -> Option<&TableDef> {
        self.module(module)?.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// Every module path that is a package prefix of a table module (`ehrql.tables`,
    /// `ehrql.tables.raw`, …).
    pub fn is_package(&self, name: &str) -> bool {
        self.modules.iter().any(|(m, _)| m.starts_with(name) && m[name.len()..].starts_with('.'))
    }
}

/// The parsed catalogue.
pub fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| match parse(SOURCE) {
        Ok(c) => c,
        // The file is part of the binary and tested; a failure here is a build defect.
        Err(e) => panic!("queries/src/tables/tables.txt: {e}"),
    })
}

pub fn parse_type(s: &str) -> Option<Type> {
    Some(match s {
        "bool" => Type::Bool,
        "int" => Type::Int,
        "float" => Type::Float,
        "str" => Type::Str,
        "date" => Type::Date,
        "ICD10MultiCodeString" => Type::MultiCodeString(CodeSystem::ICD10),
        "OPCS4MultiCodeString" => Type::MultiCodeString(CodeSystem::OPCS4),
        other => Type::Code(CodeSystem::from_class_name(other)?),
    })
}

fn parse(source: &str) -> Result<Catalog, String> {
    let mut catalog = Catalog::default();
    let mut current: Option<TableDef> = None;
    fn finish(catalog: &mut Catalog, table: Option<TableDef>) {
        if let Some(t) = table {
            let module = catalog.modules.last_mut().expect("table outside a module");
            module.1.push((t.python_name.clone(), t));
        }
    }
    for (n, raw) in source.lines().enumerate() {
        let line_no = n + 1;
        let err = |m: String| format!("line {line_no}: {m}");
        let line = raw.trim_end();
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("module ") {
            finish(&mut catalog, current.take());
            catalog.modules.push((rest.trim().to_string(), Vec::new()));
        } else if let Some(rest) = line.strip_prefix("use ") {
            finish(&mut catalog, current.take());
            let (target, alias) = match rest.split_once(" as ") {
                Some((t, a)) => (t.trim(), Some(a.trim())),
                None => (rest.trim(), None),
            };
            let (module, table) = target.split_once(':').ok_or_else(|| err(format!("bad use `{rest}`")))?;
            let def = catalog.table(module, table).ok_or_else(|| err(format!("unknown table {target}")))?.clone();
            let name = alias.unwrap_or(table).to_string();
            let mut def = def;
            if catalog.modules.last().is_some_and(|(m, _)| m.starts_with("ehrql.tables.beta")) {
                // Pre-1.0 ehrQL had no permissions.
                def.permission = None;
                def.schema.required_permission = None;
            }
            let (_, tables) = catalog.modules.last_mut().ok_or_else(|| err("use outside a module".into()))?;
            tables.push((name, def));
        } else if line.starts_with("patient ") || line.starts_with("event ") {
            finish(&mut catalog, current.take());
            let mut words = line.split_whitespace();
            let patient_level = words.next() == Some("patient");
            let python_name = words.next().ok_or_else(|| err("no table name".into()))?.to_string();
            let module = catalog.modules.last().ok_or_else(|| err("table outside a module".into()))?.0.clone();
            let mut def = TableDef {
                module,
                python_name: python_name.clone(),
                schema: TableSchema { name: python_name, columns: vec![], patient_level, required_permission: None },
                description: String::new(),
                dummy_constraints: BTreeMap::new(),
                helpers: vec![],
                permission: None,
                extends: None,
            };
            for w in words {
                let (k, v) = w.split_once('=').ok_or_else(|| err(format!("bad option `{w}`")))?;
                match k {
                    "table" => def.schema.name = v.to_string(),
                    "permission" => {
                        def.permission = Some(v.to_string());
                        def.schema.required_permission = Some(v.to_string());
                    }
                    "extends" => {
                        let (m, t) = v.split_once(':').ok_or_else(|| err(format!("bad extends `{v}`")))?;
                        let base = catalog.table(m, t).ok_or_else(|| err(format!("unknown table {v}")))?;
                        def.schema.columns = base.schema.columns.clone();
                        def.dummy_constraints = base.dummy_constraints.clone();
                        def.helpers = base.helpers.clone();
                        def.extends = Some((m.to_string(), t.to_string()));
                    }
                    _ => return Err(err(format!("unknown option `{k}`"))),
                }
            }
            current = Some(def);
        } else {
            let def = current.as_mut().ok_or_else(|| err("column outside a table".into()))?;
            let body = line.trim();
            if let Some(d) = body.strip_prefix("= ") {
                def.description = d.to_string();
            } else if let Some(h) = body.strip_prefix("helpers:") {
                for name in h.split_whitespace() {
                    if !def.helpers.iter().any(|x| x == name) {
                        def.helpers.push(name.to_string());
                    }
                }
            } else {
                let (name, spec) = body.split_once(':').ok_or_else(|| err(format!("bad column `{body}`")))?;
                let (main, dummy) = match spec.split_once(";;") {
                    Some((m, d)) => (m, d),
                    None => (spec, ""),
                };
                let mut parts = main.split(';').map(str::trim);
                let type_name = parts.next().unwrap_or("");
                let type_ = parse_type(type_name).ok_or_else(|| err(format!("unknown type `{type_name}`")))?;
                let constraints =
                    parts.filter(|p| !p.is_empty()).map(|p| parse_constraint(p, &type_).map_err(&err)).collect::<Result<Vec<_>, _>>()?;
                let dummy = dummy
                    .split(';')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(|p| parse_constraint(p, &type_).map_err(&err))
                    .collect::<Result<Vec<_>, _>>()?;
                for column_name in expand(name.trim()).map_err(&err)? {
                    if !dummy.is_empty() {
                        def.dummy_constraints.insert(column_name.clone(), dummy.clone());
                    }
                    def.schema.columns.push(Column {
                        name: column_name,
                        type_: type_.clone(),
                        constraints: constraints.clone(),
                        description: String::new(),
                    });
                }
            }
        }
    }
    finish(&mut catalog, current.take());
    Ok(catalog)
}

/// `cause_of_death_{01..15}` → `cause_of_death_01` … `cause_of_death_15`.
fn expand(name: &str) -> Result<Vec<String>, String> {
    let Some((prefix, rest)) = name.split_once('{') else {
        return Ok(vec![name.to_string()]);
    };
    let (range, suffix) = rest.split_once('}').ok_or("unclosed {")?;
    let (a, b) = range.split_once("..").ok_or("bad range")?;
    let width = a.len();
    let (a, b): (u32, u32) = (a.parse().map_err(|_| "bad range")?, b.parse().map_err(|_| "bad range")?);
    Ok((a..=b).map(|i| format!("{prefix}{i:0width$}{suffix}")).collect())
}

fn parse_value(s: &str, type_: &Type) -> Result<Option<Value>, String> {
    if s == "None" {
        return Ok(None);
    }
    Ok(Some(match type_ {
        Type::Int => Value::Int(s.parse().map_err(|_| format!("bad int `{s}`"))?),
        Type::Float => Value::Float(crate::qm::Float(s.parse().map_err(|_| format!("bad float `{s}`"))?)),
        Type::Date => Value::Date(s.parse().map_err(|_| format!("bad date `{s}`"))?),
        Type::Str => Value::Str(s.to_string()),
        other => return Err(format!("no literal values for {}", other.name())),
    }))
}

fn parse_constraint(s: &str, type_: &Type) -> Result<Constraint, String> {
    let (name, args) = match s.split_once('(') {
        Some((n, a)) => (n, Some(a.strip_suffix(')').ok_or_else(|| format!("bad constraint `{s}`"))?)),
        None => (s, None),
    };
    Ok(match (name, args) {
        ("NotNull", None) => Constraint::NotNull,
        ("Unique", None) => Constraint::Unique,
        ("FirstOfMonth", None) => Constraint::FirstOfMonth,
        ("Categorical", Some(a)) => Constraint::Categorical(
            a.split('|').map(|v| parse_value(v, type_)).collect::<Result<Vec<_>, _>>()?.into_iter().flatten().collect(),
        ),
        ("Regex", Some(a)) => Constraint::Regex(a.to_string()),
        ("DateAfter", Some(a)) => Constraint::DateAfter(a.split('|').map(str::to_string).collect()),
        ("ClosedRange", Some(a)) => {
            let n: Vec<i64> = a.split(',').map(|x| x.trim().parse().map_err(|_| format!("bad range `{a}`"))).collect::<Result<_, _>>()?;
            match n[..] {
                [minimum, maximum] => Constraint::ClosedRange { minimum, maximum, step: 1 },
                [minimum, maximum, step] => Constraint::ClosedRange { minimum, maximum, step },
                _ => return Err(format!("bad range `{a}`")),
            }
        }
        ("GeneralRange", Some(a)) => {
            let mut minimum = None;
            let mut maximum = None;
            for part in a.split(',') {
                match part.trim().split_once('=') {
                    Some(("min", v)) => minimum = parse_value(v, type_)?,
                    Some(("max", v)) => maximum = parse_value(v, type_)?,
                    _ => return Err(format!("bad range `{a}`")),
                }
            }
            Constraint::GeneralRange { minimum, maximum, includes_minimum: true, includes_maximum: true }
        }
        _ => return Err(format!("unknown constraint `{s}`")),
    })
}

fn constraint_text(c: &Constraint) -> String {
    let v = |v: &Value| match v {
        Value::Str(s) => format!("'{s}'"),
        Value::Date(d) => format!("date({}, {}, {})", d.year(), d.month(), d.day()),
        Value::Int(i) => i.to_string(),
        other => format!("{other:?}"),
    };
    match c {
        Constraint::Categorical(values) if values.is_empty() => "Categorical([None])".into(),
        Constraint::Categorical(values) => format!("Categorical([{}])", values.iter().map(v).collect::<Vec<_>>().join(", ")),
        Constraint::NotNull => "NotNull()".into(),
        Constraint::Unique => "Unique()".into(),
        Constraint::FirstOfMonth => "FirstOfMonth()".into(),
        Constraint::Regex(r) => format!("Regex('{r}')"),
        Constraint::ClosedRange { minimum, maximum, step: 1 } => format!("ClosedRange({minimum}, {maximum})"),
        Constraint::ClosedRange { minimum, maximum, step } => format!("ClosedRange({minimum}, {maximum}, {step})"),
        Constraint::GeneralRange { minimum, maximum, .. } => {
            let mut parts = vec![];
            if let Some(m) = minimum {
                parts.push(format!("minimum={}", v(m)));
            }
            if let Some(m) = maximum {
                parts.push(format!("maximum={}", v(m)));
            }
            format!("GeneralRange({})", parts.join(", "))
        }
        Constraint::DateAfter(cols) => format!("DateAfter({})", cols.join(", ")),
    }
}

/// `docs/tables.md`: every module and table with columns, types and constraints.
pub fn markdown() -> String {
    let mut out = String::from(
        "# Tables\n\n<!-- Generated from queries/src/tables/tables.txt by `quarry tables-doc > docs/tables.md`; do not edit. -->\n\n\
         Every table a dataset definition can import, by module. `patient` tables have at most one row per\n\
         patient; `event` tables many. The *file* is the dummy-table / backend file name (`<file>.csv`,\n\
         `.csv.gz`, `.arrow`, `.parquet`). Dummy-data constraints only shape generated data.\n",
    );
    for (module, tables) in &catalog().modules {
        out.push_str(&format!("\n## `{module}`\n"));
        for (name, t) in tables {
            let kind = if t.schema.patient_level { "patient" } else { "event" };
            out.push_str(&format!("\n### `{name}` — {kind} table, file `{}`", t.schema.name));
            if t.module != *module {
                out.push_str(&format!(" (the table of `{}`)", t.module));
            }
            out.push('\n');
            if !t.description.is_empty() {
                out.push_str(&format!("\n{}\n", t.description));
            }
            if let Some(p) = &t.permission {
                out.push_str(&format!("\nRequires the permission `{p}` (`claim_permissions(\"{p}\")` for dummy data).\n"));
            }
            out.push_str("\n| column | type | constraints | dummy-data constraints |\n|---|---|---|---|\n");
            for c in &t.schema.columns {
                let cons = c.constraints.iter().map(constraint_text).collect::<Vec<_>>().join(", ");
                let dummy = t
                    .dummy_constraints
                    .get(&c.name)
                    .map(|d| d.iter().map(constraint_text).collect::<Vec<_>>().join(", "))
                    .unwrap_or_default();
                out.push_str(&format!("| `{}` | {} | {} | {} |\n", c.name, c.type_.name(), cons, dummy));
            }
            if !t.helpers.is_empty() {
                out.push_str(&format!("\nHelpers: {}\n", t.helpers.iter().map(|h| format!("`{h}`")).collect::<Vec<_>>().join(", ")));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_parses_and_resolves_reexports() {
        let c = catalog();
        let p = c.table("ehrql.tables.tpp", "patients").unwrap();
        assert_eq!(p.module, "ehrql.tables.core");
        let deaths = c.table("ehrql.tables.tpp", "ons_deaths").unwrap();
        assert!(deaths.schema.column("cause_of_death_15").is_some());
        assert!(deaths.schema.column("place").is_some());
        assert!(deaths.schema.patient_level);
        let raw = c.table("ehrql.tables.raw.core", "ons_deaths").unwrap();
        assert_eq!(raw.schema.name, "ons_deaths_raw");
        assert!(!raw.schema.patient_level);
        assert!(c.is_package("ehrql.tables.beta"));
        assert_eq!(c.table("ehrql.tables.tpp", "appointments").unwrap().permission.as_deref(), Some("appointments"));
    }
}
