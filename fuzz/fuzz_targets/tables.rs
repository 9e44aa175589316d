//! A definition's tables for the reader targets: a graph that uses the named `ehrql.tables.core`
//! tables, and a directory to put their files in.

use std::path::PathBuf;

use quarry_queries::qm::{Graph, NodeId};

pub struct Fixture {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
    pub graph: Graph,
    pub roots: Vec<NodeId>,
}

pub fn fixture(tables: &[&str]) -> Fixture {
    // As quarry's binary does: a panic inside a reader that turns panics into errors
    // (`parquet_guard::contain`) is not a crash; any other still aborts (libFuzzer's hook).
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if quarry_engine::parquet_guard::CONTAINED.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            previous(info);
        }
    }));
    let catalog = quarry_queries::tables::catalog();
    let mut graph = Graph::new();
    let mut roots = vec![];
    for name in tables {
        let schema = catalog.table("ehrql.tables.core", name).expect("a core table").schema.clone();
        let patient_level = schema.patient_level;
        let table = graph.declare_table(schema).unwrap();
        roots.push(if patient_level { graph.select_patient_table(table) } else { graph.select_table(table) }.unwrap());
    }
    let dir = tempfile::tempdir().unwrap();
    Fixture { path: dir.path().to_path_buf(), _dir: dir, graph, roots }
}
