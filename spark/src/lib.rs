//! quarry-spark: runs a definition's query model on an existing Apache Spark cluster through
//! Spark Connect (docs/spark.md). The SQL comes from `quarry_engine::sql`; this crate
//! registers the tables and views it reads, runs the queries with progress on stderr, and
//! turns the Arrow batches that come back into rows for quarry's own writers, so the bytes
//! written are the same as the local engines'.
//!
//! The Spark Connect client generates its protobuf code at build time and needs `protoc`, so
//! it is behind this crate's `connect` feature (and the binary's `spark` feature): without it
//! the crate is empty, and a build of quarry needs nothing but cargo.

#[cfg(feature = "connect")]
mod connect;
#[cfg(feature = "connect")]
pub use connect::*;
