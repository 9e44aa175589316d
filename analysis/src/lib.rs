//! quarry-analysis: native aggregation steps with disclosure control built in.
