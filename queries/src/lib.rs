//! quarry-queries: ehrQL's query model (IR), table schemas, codes and codelists, and the
//! Python-subset interpreter that builds the IR from unchanged dataset definitions.
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
pub mod inputs;
pub mod python;
pub mod qm;
pub mod semantics;
pub mod serialize;
pub mod suggest;
pub mod tables;
pub mod validate;
