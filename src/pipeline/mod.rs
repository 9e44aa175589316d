//! The pipeline runner: `project.yaml` in, jobs run natively, outputs checked, every run
//! recorded as a job request.
//!
//! - [`project`] parses and validates `project.yaml` (with [`patterns`] and [`shlex`]).
//! - [`run`] resolves what to run and schedules jobs; [`executor`] starts their processes;
//!   [`console`] shows them running.
//! - [`jobs`] is the job-request model, [`state`] stores it under `metadata/`.
//! - [`level4`] checks moderately_sensitive outputs; [`log`] writes `metadata/<action>.log`.

pub mod console;
pub mod executor;
pub mod jobs;
pub mod level4;
pub mod log;
pub mod patterns;
pub mod project;
pub mod run;
pub mod shlex;
pub mod state;
