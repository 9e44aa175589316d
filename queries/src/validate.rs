//! Population validation (ehrQL's `population_validation.py`): a population must not be True
//! for a patient who has no rows in any table, so that results never depend on the universe of
//! patients an engine happens to consider.

use std::collections::HashMap;

use crate::qm::{AggregateByPatient as A, Graph, Node, NodeId, Value, function_inputs};
use crate::semantics::{Scalar, apply};

/// Evaluates `series` (patient-level) for a patient with no rows anywhere.
pub fn evaluate_for_empty_patient(graph: &Graph, series: NodeId) -> Scalar {
    let mut memo: HashMap<NodeId, Scalar> = HashMap::new();
    for (id, node) in graph.iter().take(series.index() + 1) {
        if !graph.is_patient_level(id) || graph.type_of(id).is_none() {
            continue;
        }
        let get = |n: &NodeId| memo.get(n).cloned().flatten();
        let v: Scalar = match node {
            Node::Value(v) => Some(v.clone()),
            Node::Parameter { .. } | Node::SelectColumn { .. } => None,
            Node::AggregateByPatient(a) => match a {
                A::Exists(_) => Some(Value::Bool(false)),
                A::Count(_) | A::CountDistinct(_) | A::CountEpisodes { .. } => Some(Value::Int(0)),
                A::CombineAsSet(s) => Some(Value::Set(graph.type_of(*s).cloned().expect("series"), vec![])),
                A::Min(_) | A::Max(_) | A::Sum(_) | A::Mean(_) => None,
            },
            Node::Function(f) => {
                let args: Vec<Scalar> = function_inputs(f).iter().map(get).collect();
                apply(f, &args).ok().flatten()
            }
            Node::Case { cases, default } => {
                let mut out = default.as_ref().and_then(get);
                for (c, v) in cases {
                    if get(c) == Some(Value::Bool(true)) {
                        out = v.as_ref().and_then(get);
                        break;
                    }
                }
                out
            }
            _ => None,
        };
        memo.insert(id, v);
    }
    memo.remove(&series).flatten()
}

pub fn true_for_empty_patient(graph: &Graph, population: NodeId) -> bool {
    evaluate_for_empty_patient(graph, population) == Some(Value::Bool(true))
}
