//! quarry-engine: evaluates the query model over a table store and writes datasets
//! byte-compatible with ehrQL.
