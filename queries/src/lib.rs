//! quarry-queries: ehrQL's query model (IR), the specs of datasets and measures, table
//! schemas, codes and codelists, and ehrQL's scalar semantics. The Python front end that
//! builds the IR from definitions is the quarry-python crate.
//!
//! Depends on nothing else of quarry's: the engines translate this IR, they never parse.
//!
//! ```
//! use quarry_queries::qm::*;
//! let mut g = Graph::new();
//! let events = g.declare_table(TableSchema {
//!     name: "clinical_events".into(),
//!     columns: vec![Column { name: "date".into(), type_: Type::Date, constraints: vec![], description: String::new() }],
//!     patient_level: false,
//!     required_permission: None,
//! }).unwrap();
//! let e = g.select_table(events).unwrap();
//! let has_events = g.aggregate(AggregateByPatient::Exists(e)).unwrap();
//! assert!(g.is_patient_level(has_events));
//! ```

pub mod codes;
pub mod csv;
pub mod inline;
pub mod pyrepr;
pub mod qm;
pub mod semantics;
pub mod serialize;
pub mod spec;
pub mod suggest;
pub mod tables;
pub mod validate;
