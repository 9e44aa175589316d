//! quarry-engine: evaluates ehrQL's query model over a table store and writes the results.
//!
//! Today: the reference evaluator (`reference`) over `--dummy-tables` CSV directories
//! (`store`), and ehrQL's CSV output (`output`). Measures are computed in `measures`.

pub mod measures;
pub mod output;
pub mod reference;
pub mod store;

use std::collections::BTreeSet;

use quarry_queries::python::DatasetSpec;
use quarry_queries::qm::{Domain, Graph, NodeId};
use quarry_queries::semantics::{EvalError, Scalar};

use output::Table;
use store::Store;

/// Evaluates a dataset: the main table and any event tables.
pub fn evaluate_dataset(graph: &Graph, dataset: &DatasetSpec, store: &Store) -> Result<Vec<Table>, EvalError> {
    let mut outputs: Vec<NodeId> = vec![dataset.population];
    outputs.extend(dataset.variables.iter().map(|(_, n)| *n));
    let mut event_domains = vec![];
    for (_, cols) in &dataset.events {
        let domain = cols
            .iter()
            .find_map(|(_, n)| match graph.domain(*n) {
                Domain::Rows(d) => Some(d),
                Domain::Patient => None,
            })
            .expect("an event table has an event-level column");
        event_domains.push(domain);
        outputs.push(domain);
        outputs.extend(cols.iter().map(|(_, n)| *n));
    }
    let evaluator = reference::Evaluator::new(graph, &outputs);
    let mut patients: BTreeSet<i64> = store.patients.keys().copied().collect();
    patients.extend(evaluator.inline_patients());
    let mut header = vec!["patient_id".to_string()];
    header.extend(dataset.variables.iter().map(|(n, _)| n.clone()));
    let mut main = Table { name: "dataset".into(), header, rows: vec![] };
    let mut events: Vec<Table> = dataset
        .events
        .iter()
        .map(|(name, cols)| {
            let mut header = vec!["patient_id".to_string()];
            header.extend(cols.iter().map(|(c, _)| c.clone()));
            Table { name: name.clone(), header, rows: vec![] }
        })
        .collect();
    for p in patients {
        let values = evaluator.patient(p, store.patients.get(&p))?;
        if values.scalar(dataset.population) != Some(quarry_queries::qm::Value::Bool(true)) {
            continue;
        }
        let mut row: Vec<Scalar> = vec![Some(quarry_queries::qm::Value::Int(p))];
        row.extend(dataset.variables.iter().map(|(_, n)| values.scalar(*n)));
        main.rows.push(row);
        for ((table, (_, cols)), domain) in events.iter_mut().zip(&dataset.events).zip(&event_domains) {
            let ids: Vec<NodeId> = cols.iter().map(|(_, n)| *n).collect();
            for r in values.event_rows(*domain, &ids) {
                let mut row = vec![Some(quarry_queries::qm::Value::Int(p))];
                row.extend(r);
                table.rows.push(row);
            }
        }
    }
    let mut out = vec![main];
    out.extend(events);
    Ok(out)
}
