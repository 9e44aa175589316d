//! quarry-engine: evaluates ehrQL's query model over a table store and writes the results.
//!
//! Today: the reference evaluator (`reference`) over `--dummy-tables` CSV directories
//! (`store`), and ehrQL's CSV output (`output`). Measures are computed in `measures`.

pub mod arrow_io;
pub mod backend;
pub mod batch;
pub mod column;
pub mod column_kernels;
pub mod columnar;
pub mod columns;
pub mod dummy;
pub mod kernels;
pub mod make_backend;
pub mod measures;
pub mod output;
pub mod parquet_guard;
pub mod plan;
pub mod pushdown;
pub mod reference;
pub mod sink;
pub mod source;
pub mod sql;
pub mod store;

use std::collections::BTreeSet;

use quarry_queries::qm::Value;
use quarry_queries::qm::{Graph, NodeId};
use quarry_queries::semantics::{EvalError, Scalar};
use quarry_queries::spec::DatasetSpec;

use reference::PatientValues;

use columns::ColumnSpec;
use output::Table;
use store::Store;

/// What a dataset outputs: the main table (population, variables) and any event tables,
/// and how one patient's evaluated values become rows of them.
///
/// An event table lists a patient's rows in the order ehrQL's in-memory engine gives them
/// (`kernels::EventOrder`): the order of its first event-level column's frame, sorted or
/// not. An event table whose columns (names and series) equal an earlier one's, in another
/// order, is written as that earlier table, columns and rows: ehrQL's engine caches each
/// table by its query-model node, and the two nodes are equal (docs/event-tables.md).
pub struct DatasetShape<'a> {
    dataset: &'a DatasetSpec,
    /// Each event table's columns, in output order.
    events: Vec<Vec<(String, NodeId)>>,
    orders: Vec<kernels::EventOrder>,
    layouts: Vec<output::Layout>,
}

impl<'a> DatasetShape<'a> {
    pub fn new(graph: &Graph, dataset: &'a DatasetSpec) -> DatasetShape<'a> {
        let mut events: Vec<Vec<(String, NodeId)>> = vec![];
        for (_, cols) in &dataset.events {
            let key = |c: &[(String, NodeId)]| c.iter().cloned().collect::<BTreeSet<_>>();
            let same = events.iter().find(|earlier| key(earlier) == key(cols)).cloned();
            events.push(same.unwrap_or_else(|| cols.clone()));
        }
        let ties = kernels::sort_ties(graph, &reference::reachable(graph, &dataset.roots()).into_iter().collect::<Vec<_>>());
        let orders =
            events.iter().map(|cols| kernels::EventOrder::new(graph, &cols.iter().map(|(_, n)| *n).collect::<Vec<_>>(), &ties)).collect();
        let columns = |cols: &[(String, NodeId)]| {
            let mut out = vec![ColumnSpec::patient_id()];
            out.extend(cols.iter().map(|(name, n)| ColumnSpec::of_series(graph, name, *n)));
            out
        };
        let mut layouts = vec![("dataset".to_string(), columns(&dataset.variables))];
        layouts.extend(dataset.events.iter().zip(&events).map(|((name, _), cols)| (name.clone(), columns(cols))));
        DatasetShape { dataset, events, orders, layouts }
    }

    /// The nodes the evaluator must compute (population first).
    pub fn outputs(&self) -> Vec<NodeId> {
        let mut outputs: Vec<NodeId> = vec![self.dataset.population];
        outputs.extend(self.dataset.variables.iter().map(|(_, n)| *n));
        for (cols, order) in self.events.iter().zip(&self.orders) {
            outputs.push(order.frame);
            outputs.extend(cols.iter().map(|(_, n)| *n));
        }
        outputs
    }

    /// Each output table's name and columns.
    pub fn layouts(&self) -> &[output::Layout] {
        &self.layouts
    }

    /// Event table `t`'s columns, in output order, and how its rows are ordered.
    pub fn event_table(&self, t: usize) -> (&[(String, NodeId)], &kernels::EventOrder) {
        (&self.events[t], &self.orders[t])
    }

    pub fn in_population(&self, values: &dyn PatientView) -> bool {
        values.scalar(self.dataset.population) == Some(Value::Bool(true))
    }

    /// One patient's rows, per output table (the main table has exactly one).
    pub fn rows(&self, patient_id: i64, values: &dyn PatientView) -> Vec<Vec<Vec<Scalar>>> {
        let pid = Some(Value::Int(patient_id));
        let mut row: Vec<Scalar> = vec![pid.clone()];
        row.extend(self.dataset.variables.iter().map(|(_, n)| values.scalar(*n)));
        let mut out = vec![vec![row]];
        for (cols, order) in self.events.iter().zip(&self.orders) {
            let ids: Vec<NodeId> = cols.iter().map(|(_, n)| *n).collect();
            out.push(
                values
                    .event_rows(order.frame, &ids)
                    .into_iter()
                    .map(|r| {
                        let mut row = vec![pid.clone()];
                        row.extend(r);
                        row
                    })
                    .collect(),
            );
        }
        out
    }
}

impl DatasetShape<'_> {
    /// A partition's rows as typed columns, per output table (patient_id first), for the
    /// patients in the population; no value is made per cell.
    pub fn partition_columns(&self, graph: &Graph, p: &columnar::Partition) -> Vec<Vec<column::Array>> {
        self.columns_of(graph, p, &p.where_true(self.dataset.population)).into_iter().map(|(columns, _)| columns).collect()
    }

    /// The partition's patients `keep` (indexes) as CSV text rendered from typed columns: per
    /// patient, in `keep`'s order, per output table, its rows (`None` where it has none).
    pub fn patients_csv(&self, graph: &Graph, p: &columnar::Partition, keep: &[u32]) -> Vec<Vec<Option<String>>> {
        let mut at = vec![usize::MAX; p.len()];
        for (j, &i) in keep.iter().enumerate() {
            at[i as usize] = j;
        }
        let mut out = vec![vec![None; self.layouts.len()]; keep.len()];
        for (t, (columns, owners)) in self.columns_of(graph, p, keep).into_iter().enumerate() {
            let (text, ends) = sink::csv_rows(&columns);
            let (mut start, mut r) = (0, 0);
            // A patient's rows are consecutive.
            while r < owners.len() {
                let mut e = r + 1;
                while e < owners.len() && owners[e] == owners[r] {
                    e += 1;
                }
                out[at[owners[r] as usize]][t] = Some(text[start..ends[e - 1]].to_string());
                (start, r) = (ends[e - 1], e);
            }
        }
        out
    }

    /// The rows of the partition's patients `keep` (indexes, in that order) as typed columns,
    /// per output table, with each row's patient (its index in the partition).
    pub fn columns_of(&self, graph: &Graph, p: &columnar::Partition, keep: &[u32]) -> Vec<(Vec<column::Array>, Vec<u32>)> {
        let ids = |at: &[u32]| column::Array::Int(std::sync::Arc::new(at.iter().map(|&i| p.patients[i as usize]).collect()), None);
        let mut main = vec![ids(keep)];
        main.extend(self.dataset.variables.iter().map(|(_, n)| p.patient_column(graph, *n, keep)));
        let mut out = vec![(main, keep.to_vec())];
        for (cols, order) in self.events.iter().zip(&self.orders) {
            let (rows, owners) = p.frame_rows(order.frame, keep);
            let mut table = vec![ids(&owners)];
            table.extend(cols.iter().map(|(_, n)| p.row_column(graph, *n, &rows, &owners)));
            out.push((table, owners));
        }
        out
    }
}

/// One patient's evaluated values, whichever evaluator computed them: the reference's
/// `PatientValues`, or a patient of a columnar partition (`columnar::PartitionPatient`).
pub trait PatientView {
    /// A patient-level series' value.
    fn scalar(&self, n: NodeId) -> Scalar;
    /// The patient's rows of an event frame, in the frame's order: each the `columns`' values.
    fn event_rows(&self, frame: NodeId, columns: &[NodeId]) -> Vec<Vec<Scalar>>;
}

impl PatientView for PatientValues {
    fn scalar(&self, n: NodeId) -> Scalar {
        PatientValues::scalar(self, n)
    }

    fn event_rows(&self, frame: NodeId, columns: &[NodeId]) -> Vec<Vec<Scalar>> {
        PatientValues::event_rows(self, frame, columns)
    }
}

impl PatientView for columnar::PartitionPatient<'_> {
    fn scalar(&self, n: NodeId) -> Scalar {
        self.0.scalar(n, self.1)
    }

    fn event_rows(&self, frame: NodeId, columns: &[NodeId]) -> Vec<Vec<Scalar>> {
        self.0.event_rows(frame, columns, self.1)
    }
}

/// What an evaluation is given beyond the definition and the tables: parameter values (as a
/// measures run sets an interval's dates) and, for the columnar evaluator, the patients per
/// partition (`None`: [`columnar::partition_size`]).
#[derive(Debug, Clone, Default)]
pub struct EvalOptions {
    pub params: Vec<(String, Scalar)>,
    pub partition: Option<usize>,
}

/// Evaluates a dataset over a row store with the columnar evaluator (patient partitions in
/// parallel), with parameters and a partition size, into tables of rows: for tests that
/// compare it with the reference evaluator (the CLI streams a [`source::Source`] instead,
/// [`stream_dataset`]).
pub fn evaluate_dataset_columnar_with(
    graph: &Graph,
    dataset: &DatasetSpec,
    store: &Store,
    options: &EvalOptions,
) -> Result<Vec<Table>, EvalError> {
    let outputs = DatasetShape::new(graph, dataset).outputs();
    let batch = batch::Batch::from_store(graph, store, &store::used_tables(graph, &outputs));
    evaluate_batch_columnar(graph, dataset, &batch, options)
}

/// As [`evaluate_dataset_columnar_with`], over tables already typed into a batch
/// (`Batch::from_store` with the dataset's `store::used_tables`): for a caller evaluating
/// several definitions over the same tables, who types them once.
pub fn evaluate_batch_columnar(
    graph: &Graph,
    dataset: &DatasetSpec,
    batch: &batch::Batch,
    options: &EvalOptions,
) -> Result<Vec<Table>, EvalError> {
    let shape = DatasetShape::new(graph, dataset);
    let mut evaluator = columnar::Evaluator::new(graph, &shape.outputs());
    for (name, value) in &options.params {
        evaluator.set_param(name, value.clone());
    }
    if let Some(size) = options.partition {
        evaluator.set_partition_size(size);
    }
    let mut tables: Vec<Table> =
        shape.layouts().iter().map(|(name, columns)| Table { name: name.clone(), columns: columns.clone(), rows: vec![] }).collect();
    // Through the typed output columns the backend's stream writes (so the property tests
    // and the conformance cases check them against the reference evaluator).
    evaluator.run(
        batch,
        |p| shape.partition_columns(graph, p).iter().map(|c| sink::rows_of(c)).collect::<Vec<_>>(),
        |parts| {
            for (t, rows) in tables.iter_mut().zip(parts) {
                t.rows.extend(rows);
            }
            Ok(())
        },
    )?;
    Ok(tables)
}

/// Rounds of a backend hold this many patients (of the driving table): a few partitions per
/// thread, so reading one round overlaps little memory with evaluating the last.
pub fn round_patients() -> usize {
    round_patients_of(columnar::partition_size())
}

/// Rounds for partitions of `partition` patients.
pub fn round_patients_of(partition: usize) -> usize {
    partition * rayon::current_num_threads().max(1) * 4
}

/// Why a streamed evaluation stopped.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("{0}")]
    Input(#[from] store::InputError),
    #[error("{0}")]
    Eval(#[from] EvalError),
    #[error("{0}")]
    Output(String),
}

/// Evaluates a dataset over a source's tables (a backend, or tables in memory), round by
/// round, writing each round's rows as they come; returns the number of dataset rows.
/// `progress` is told the patients read so far.
pub fn stream_dataset(
    graph: &Graph,
    dataset: &DatasetSpec,
    source: &mut dyn source::Source,
    target: &output::Target,
    mut progress: impl FnMut(usize),
) -> Result<usize, StreamError> {
    let shape = DatasetShape::new(graph, dataset);
    let evaluator = columnar::Evaluator::new(graph, &shape.outputs());
    let mut stream = output::TableStream::open(target, shape.layouts()).map_err(StreamError::Output)?;
    let encoder = stream.encoder();
    let (mut lo, mut rows) = (None, 0);
    source.each_round(round_patients(), &mut |batch, hi, read| -> Result<(), StreamError> {
        evaluator.run_range(
            &batch,
            lo,
            hi,
            |p| shape.partition_columns(graph, p).into_iter().map(|c| encoder.columns(c)).collect::<Vec<_>>(),
            |chunks| -> Result<(), StreamError> {
                rows += chunks.first().map_or(0, |(n, _)| *n);
                for (i, (_, chunk)) in chunks.into_iter().enumerate() {
                    stream.write(i, chunk).map_err(StreamError::Output)?;
                }
                Ok(())
            },
        )?;
        progress(read);
        lo = hi;
        Ok(())
    })?;
    stream.finish().map_err(StreamError::Output)?;
    Ok(rows)
}

/// Evaluates a dataset: the main table and any event tables.
pub fn evaluate_dataset(graph: &Graph, dataset: &DatasetSpec, store: &Store) -> Result<Vec<Table>, EvalError> {
    evaluate_dataset_with(graph, dataset, store, &EvalOptions::default())
}

/// As [`evaluate_dataset`], with parameters (the reference evaluator has no partitions).
pub fn evaluate_dataset_with(graph: &Graph, dataset: &DatasetSpec, store: &Store, options: &EvalOptions) -> Result<Vec<Table>, EvalError> {
    let shape = DatasetShape::new(graph, dataset);
    let mut evaluator = reference::Evaluator::new(graph, &shape.outputs());
    for (name, value) in &options.params {
        evaluator.set_param(name, value.clone());
    }
    let mut patients: BTreeSet<i64> = store.patients.keys().copied().collect();
    patients.extend(evaluator.inline_patients());
    let mut tables: Vec<Table> =
        shape.layouts().iter().map(|(name, columns)| Table { name: name.clone(), columns: columns.clone(), rows: vec![] }).collect();
    for p in patients {
        let values = evaluator.patient(p, store.patients.get(&p))?;
        if !shape.in_population(&values) {
            continue;
        }
        for (table, rows) in tables.iter_mut().zip(shape.rows(p, &values)) {
            table.rows.extend(rows);
        }
    }
    Ok(tables)
}
