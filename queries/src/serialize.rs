//! `quarry serialize-definition`: the query model as JSON, modelled on ehrQL's serializer
//! (`ehrql/serializer.py`, ehrql.md §1.9): every node once, by id, children before parents;
//! the root refers to nodes as `{"ref": "<id>"}`. The format is documented in
//! docs/serialization.md.

use serde_json::{Value as J, json};

use crate::qm::{AggregateByPatient as A, Constraint, Graph, Node, NodeId, Position, Type, Value, function_inputs};
use crate::spec::{DatasetSpec, MeasuresSpec};

fn r(id: NodeId) -> J {
    json!({ "ref": id.index().to_string() })
}

fn value(v: &Value) -> J {
    match v {
        Value::Bool(b) => json!(b),
        Value::Int(i) => json!(i),
        Value::Float(f) => json!(f.0),
        Value::Str(s) => json!(s),
        Value::Date(d) => json!({ "date": d.to_string() }),
        Value::Code(c, s) => json!({ c.class_name(): s }),
        Value::Set(_, items) => json!({ "frozenset": items.iter().map(value).collect::<Vec<_>>() }),
    }
}

fn type_name(t: &Type) -> J {
    json!({ "type": t.name() })
}

fn function_name(f: &crate::qm::Function) -> String {
    let debug = format!("{f:?}");
    let name = debug.split(['(', ' ']).next().unwrap_or("").to_string();
    match name.as_str() {
        "Eq" => "EQ".into(),
        "Ne" => "NE".into(),
        "Lt" => "LT".into(),
        "Le" => "LE".into(),
        "Gt" => "GT".into(),
        "Ge" => "GE".into(),
        other => other.into(),
    }
}

/// Every node kind, as the key a serialized node is written under (docs/serialization.md).
pub const NODE_KINDS: &[&str] = &[
    "SelectTable",
    "SelectPatientTable",
    "InlinePatientTable",
    "Filter",
    "Sort",
    "PickOneRowPerPatient",
    "Value",
    "Parameter",
    "SelectColumn",
    "Case",
    "AggregateByPatient.Exists",
    "AggregateByPatient.Count",
    "AggregateByPatient.CountDistinct",
    "AggregateByPatient.CountEpisodes",
    "AggregateByPatient.Min",
    "AggregateByPatient.Max",
    "AggregateByPatient.Sum",
    "AggregateByPatient.Mean",
    "AggregateByPatient.CombineAsSet",
    "Function.EQ",
    "Function.NE",
    "Function.LT",
    "Function.LE",
    "Function.GT",
    "Function.GE",
    "Function.And",
    "Function.Or",
    "Function.Not",
    "Function.IsNull",
    "Function.Negate",
    "Function.Absolute",
    "Function.Add",
    "Function.Subtract",
    "Function.Multiply",
    "Function.TrueDivide",
    "Function.FloorDivide",
    "Function.Power",
    "Function.CastToInt",
    "Function.CastToFloat",
    "Function.DateAddDays",
    "Function.DateAddMonths",
    "Function.DateAddYears",
    "Function.DateDifferenceInDays",
    "Function.DateDifferenceInMonths",
    "Function.DateDifferenceInYears",
    "Function.YearFromDate",
    "Function.MonthFromDate",
    "Function.DayFromDate",
    "Function.ToFirstOfYear",
    "Function.ToFirstOfMonth",
    "Function.StringContains",
    "Function.In",
    "Function.MinimumOf",
    "Function.MaximumOf",
];

/// The key a node is serialized under: one of [`NODE_KINDS`].
pub fn node_kind(n: &Node) -> String {
    let variant = |debug: String| debug.split(['(', ' ', '{']).next().unwrap_or_default().to_string();
    match n {
        Node::Function(f) => format!("Function.{}", function_name(f)),
        Node::AggregateByPatient(a) => format!("AggregateByPatient.{}", variant(format!("{a:?}"))),
        other => variant(format!("{other:?}")),
    }
}

fn node(g: &Graph, n: &Node) -> J {
    match n {
        Node::SelectTable(t) | Node::SelectPatientTable(t) => {
            let s = g.table(*t);
            let columns: serde_json::Map<String, J> = s
                .columns
                .iter()
                .map(|c| {
                    let cons: Vec<J> = c
                        .constraints
                        .iter()
                        .map(|k| match k {
                            Constraint::Categorical(v) => json!({ "Categorical": v.iter().map(value).collect::<Vec<_>>() }),
                            other => json!(format!("{other:?}")),
                        })
                        .collect();
                    (c.name.clone(), json!({ "type": c.type_.name(), "constraints": cons }))
                })
                .collect();
            let kind = if matches!(n, Node::SelectTable(_)) { "SelectTable" } else { "SelectPatientTable" };
            json!({ kind: { "name": s.name, "schema": columns } })
        }
        Node::InlinePatientTable { table, rows } => {
            let s = g.table(*table);
            let rows: Vec<J> = g
                .inline_rows(*rows)
                .iter()
                .map(|row| J::Array(row.iter().map(|v| v.as_ref().map(value).unwrap_or(J::Null)).collect()))
                .collect();
            json!({ "InlinePatientTable": { "schema": s.columns.iter().map(|c| json!([c.name, c.type_.name()])).collect::<Vec<_>>(), "rows": rows } })
        }
        Node::Filter { source, condition } => json!({ "Filter": { "source": r(*source), "condition": r(*condition) } }),
        Node::Sort { source, sort_by } => json!({ "Sort": { "source": r(*source), "sort_by": r(*sort_by) } }),
        Node::PickOneRowPerPatient { source, position } => json!({ "PickOneRowPerPatient": {
            "source": r(*source),
            "position": { "Position": if *position == Position::First { "first" } else { "last" } },
        } }),
        Node::Value(v) => json!({ "Value": { "value": value(v) } }),
        Node::Parameter { name, type_ } => json!({ "Parameter": { "name": name, "type": type_name(type_) } }),
        Node::SelectColumn { source, name } => json!({ "SelectColumn": { "source": r(*source), "name": name } }),
        Node::AggregateByPatient(a) => {
            let (name, fields) = match a {
                A::Exists(s) => ("Exists", json!({ "source": r(*s) })),
                A::Count(s) => ("Count", json!({ "source": r(*s) })),
                A::CountDistinct(s) => ("CountDistinct", json!({ "source": r(*s) })),
                A::CountEpisodes { source, maximum_gap_days } => {
                    ("CountEpisodes", json!({ "source": r(*source), "maximum_gap_days": maximum_gap_days }))
                }
                A::Min(s) => ("Min", json!({ "source": r(*s) })),
                A::Max(s) => ("Max", json!({ "source": r(*s) })),
                A::Sum(s) => ("Sum", json!({ "source": r(*s) })),
                A::Mean(s) => ("Mean", json!({ "source": r(*s) })),
                A::CombineAsSet(s) => ("CombineAsSet", json!({ "source": r(*s) })),
            };
            json!({ format!("AggregateByPatient.{name}"): fields })
        }
        Node::Function(f) => {
            let inputs: Vec<J> = function_inputs(f).into_iter().map(r).collect();
            json!({ format!("Function.{}", function_name(f)): { "inputs": inputs } })
        }
        Node::Case { cases, default } => json!({ "Case": {
            "cases": cases.iter().map(|(c, v)| json!([r(*c), v.map(r).unwrap_or(J::Null)])).collect::<Vec<_>>(),
            "default": default.map(r).unwrap_or(J::Null),
        } }),
    }
}

/// The whole definition as one JSON document: the nodes the dataset and measures use (not
/// those of tables merely imported), by id, children first.
pub fn serialize(g: &Graph, dataset: Option<&DatasetSpec>, measures: Option<&MeasuresSpec>) -> J {
    let mut roots: Vec<NodeId> = vec![];
    if let Some(d) = dataset {
        roots.extend(d.roots());
        roots.extend(d.dummy.additional_population_constraint);
    }
    if let Some(m) = measures {
        roots.extend(m.roots());
    }
    let mut nodes = serde_json::Map::new();
    for id in g.reachable_from(&roots) {
        nodes.insert(id.index().to_string(), node(g, g.node(id)));
    }
    let dataset = dataset.map(|d| {
        json!({
            "population": r(d.population),
            "variables": d.variables.iter().map(|(n, v)| json!([n, r(*v)])).collect::<Vec<_>>(),
            "events": d.events.iter().map(|(n, cols)| json!([n, cols.iter().map(|(c, v)| json!([c, r(*v)])).collect::<Vec<_>>()])).collect::<Vec<_>>(),
            "dummy_data": { "population_size": d.dummy.population_size, "timeout": d.dummy.timeout,
                "additional_population_constraint": d.dummy.additional_population_constraint.map(r) },
        })
    });
    let measures = measures.map(|m| {
        json!({
            "disclosure_control": m.disclosure_control,
            "measures": m.measures.iter().map(|x| json!({
                "name": x.name, "numerator": r(x.numerator), "denominator": r(x.denominator),
                "group_by": x.group_by.iter().map(|(n, v)| json!([n, r(*v)])).collect::<Vec<_>>(),
                "intervals": x.intervals.iter().map(|(a, b)| json!([a.to_string(), b.to_string()])).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })
    });
    json!({ "format": "quarry-query-model/1", "nodes": nodes, "dataset": dataset, "measures": measures })
}
