//! quarry-queries: ehrQL's query model (IR), table schemas, codes and codelists, and the
//! Python-subset interpreter that builds the IR from unchanged dataset definitions.
//!
//! Depends on nothing else of quarry's: the engines translate this IR, they never parse.
