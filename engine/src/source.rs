//! Where the columnar engine's tables come from: a [`Source`] hands over patient batches in
//! ascending patient order, round by round, each with the upper bound of its ids. A backend
//! (`backend::Backend`: Parquet or Arrow files of any size, scanned in rounds) and tables held
//! in memory ([`Tables`]: `--dummy-tables`, or generated dummy data for measures, one round)
//! are the two kinds; [`crate::stream_dataset`] and [`crate::measures::stream_measures`] read
//! either the same way, so a definition's output does not depend on where its tables were.
//!
//! Not sources: generated dummy data for a dataset (`dummy::Plan::generate_with`), which
//! evaluates each round itself to keep only the patients the population takes and makes new
//! ones for the rest; Spark, which is handed the whole query rather than batches; and the
//! reference evaluator, which reads a row store patient by patient (it is the oracle).

use quarry_queries::qm::{Graph, NodeId};

use crate::StreamError;
use crate::batch::Batch;
use crate::store::Store;

/// What [`Source::each_round`] hands each round to: the batch, the upper bound of its patient
/// ids (`None`: the last round) and how many patients have been read so far.
pub type EachRound<'a> = &'a mut dyn FnMut(Batch, Option<i64>, usize) -> Result<(), StreamError>;

/// Patient batches in ascending patient order.
pub trait Source {
    /// Hands every round of about `patients` patients to `each`, in order.
    fn each_round(&mut self, patients: usize, each: EachRound<'_>) -> Result<(), StreamError>;

    /// How many patients have been read so far.
    fn patients_read(&self) -> usize;
}

impl Source for crate::backend::Backend {
    fn each_round(&mut self, patients: usize, each: EachRound<'_>) -> Result<(), StreamError> {
        crate::backend::Backend::each_round(self, patients, each)
    }

    fn patients_read(&self) -> usize {
        crate::backend::Backend::patients_read(self)
    }
}

/// Tables held in memory (a row store's), typed once into one batch: one round.
pub struct Tables {
    batch: Option<Batch>,
    patients: usize,
    read: usize,
}

impl Tables {
    /// The tables that the nodes `roots` read, from `store`.
    pub fn new(graph: &Graph, roots: &[NodeId], store: &Store) -> Tables {
        let batch = Batch::from_store(graph, store, &crate::store::used_tables(graph, roots));
        Tables { patients: batch.ids.len(), batch: Some(batch), read: 0 }
    }
}

impl Source for Tables {
    fn each_round(&mut self, _patients: usize, each: EachRound<'_>) -> Result<(), StreamError> {
        if let Some(batch) = self.batch.take() {
            self.read = self.patients;
            each(batch, None, self.read)?;
        }
        Ok(())
    }

    fn patients_read(&self) -> usize {
        self.read
    }
}
