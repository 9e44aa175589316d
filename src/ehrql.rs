//! ehrQL's commands, run in-process: `generate-dataset`, `generate-measures`,
//! `serialize-definition` (also reached as `quarry exec ehrql:vN <command> ...`).

use std::path::{Path, PathBuf};

use clap::{Args, Parser};
use quarry_engine::output::{self, Target};
use quarry_queries::python::{self, Definition, DefinitionError};
use quarry_queries::qm::{Graph, NodeId};

/// Arguments shared by `generate-dataset` and `generate-measures`.
#[derive(Args, Debug, Clone)]
pub struct GenerateArgs {
    /// The dataset (or measures) definition, a Python file.
    pub definition: PathBuf,
    /// Where to write: a file (.csv, .csv.gz), or `DIR:csv` for one file per table. CSV on
    /// stdout when omitted.
    #[arg(long)]
    pub output: Option<String>,
    /// A directory with one file per table the definition uses (`<table>.csv` or `.csv.gz`).
    #[arg(long, value_name = "DIR")]
    pub dummy_tables: Option<PathBuf>,
    /// A ready-made dummy dataset to validate and copy instead of evaluating the definition.
    #[arg(long, value_name = "FILE")]
    pub dummy_data_file: Option<PathBuf>,
    /// Which evaluator to use.
    #[arg(long, value_enum, default_value_t = Engine::Reference)]
    pub engine: Engine,
    /// Arguments for the definition itself (`sys.argv[1:]`, `get_parameter`), after `--`.
    #[arg(last = true, value_name = "DEFINITION_ARGS")]
    pub user_args: Vec<String>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum Engine {
    /// One patient at a time: obviously correct, not fast.
    Reference,
    /// The patient-partitioned columnar engine.
    Columnar,
}

#[derive(Args, Debug, Clone)]
pub struct SerializeArgs {
    pub definition: PathBuf,
    /// Write the JSON here instead of stdout.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    #[arg(last = true, value_name = "DEFINITION_ARGS")]
    pub user_args: Vec<String>,
}

/// `quarry exec ehrql:vN ...` arguments.
#[derive(Parser, Debug)]
#[command(name = "ehrql", no_binary_name = true)]
enum ExecCommand {
    GenerateDataset(GenerateArgs),
    GenerateMeasures(GenerateArgs),
    SerializeDefinition(SerializeArgs),
}

/// A failure with ehrQL's exit code.
pub struct Failure {
    pub code: u8,
    pub message: String,
}

fn fail(code: u8, message: impl Into<String>) -> Failure {
    Failure { code, message: message.into() }
}

fn definition_error(e: DefinitionError) -> Failure {
    fail(10, format!("error in dataset definition: {e}"))
}

fn load(path: &Path, user_args: &[String]) -> Result<Definition, Failure> {
    if !path.is_file() {
        return Err(fail(10, format!("{}: no such definition file", path.display())));
    }
    eprintln!("[info] Compiling definition from {}", path.display());
    python::load_definition(path, user_args, Box::new(std::io::stderr())).map_err(definition_error)
}

/// Tables that need permissions the definition has not claimed.
fn check_permissions(graph: &Graph, roots: &[NodeId], claimed: &[String], event_tables: bool) -> Result<(), Failure> {
    let mut missing: Vec<String> = vec![];
    for t in quarry_engine::store::used_tables(graph, roots) {
        if let Some(p) = &graph.table(t).required_permission
            && !claimed.contains(p)
            && !missing.contains(p)
        {
            missing.push(p.clone());
        }
    }
    if event_tables && !claimed.iter().any(|c| c == "event_level_data") {
        missing.push("event_level_data".into());
    }
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.iter().map(|m| format!("\"{m}\"")).collect::<Vec<_>>().join(", ");
    Err(fail(
        12,
        format!(
            "Access to the following data requires permissions: {}\n\nYou can continue to work on your code using dummy data by \"claiming\" the required permissions:\n\n    from ehrql import claim_permissions\n    claim_permissions({list})\n\nYou will only be able to run it against real data if the OpenSAFELY team has assigned you these permissions.",
            missing.join(", ")
        ),
    ))
}

fn store_for(graph: &Graph, roots: &[NodeId], args: &GenerateArgs) -> Result<quarry_engine::store::Store, Failure> {
    if args.dummy_data_file.is_some() {
        return Err(fail(2, "--dummy-data-file is not supported by quarry yet; use --dummy-tables DIR"));
    }
    let Some(dir) = &args.dummy_tables else {
        return Err(fail(
            2,
            "quarry cannot generate dummy data yet: give --dummy-tables DIR (one CSV per table the definition uses)",
        ));
    };
    eprintln!("[info] Reading table data from {}", dir.display());
    quarry_engine::store::load_dummy_tables(graph, roots, dir).map_err(|e| fail(11, format!("FileValidationError: {e}")))
}

fn engine_note(args: &GenerateArgs) {
    if args.engine == Engine::Columnar {
        eprintln!("[info] the columnar engine is not built yet; evaluating with the reference evaluator");
    }
}

pub fn generate_dataset(args: &GenerateArgs) -> Result<(), Failure> {
    let target = output::parse_target(args.output.as_deref()).map_err(|m| fail(2, m))?;
    let def = load(&args.definition, &args.user_args)?;
    let Some(dataset) = &def.dataset else {
        return Err(definition_error(def.dataset_error.clone().expect("a reason when there is no dataset")));
    };
    let roots = dataset.roots();
    check_permissions(&def.graph, &roots, &def.claimed_permissions, !dataset.events.is_empty())?;
    let store = store_for(&def.graph, &roots, args)?;
    engine_note(args);
    let tables = quarry_engine::evaluate_dataset(&def.graph, dataset, &store).map_err(|e| fail(1, format!("error evaluating the dataset: {e}")))?;
    output::write_tables(&target, &tables).map_err(|m| fail(1, m))
}

pub fn generate_measures(args: &GenerateArgs) -> Result<(), Failure> {
    let target = output::parse_target(args.output.as_deref()).map_err(|m| fail(2, m))?;
    let def = load(&args.definition, &args.user_args)?;
    let Some(spec) = &def.measures else {
        return Err(fail(10, "error in measures definition: Did not find a variable called 'measures' in measures definition file"));
    };
    if spec.measures.is_empty() {
        return Err(fail(10, "error in measures definition: No measures defined"));
    }
    let roots = spec.roots();
    check_permissions(&def.graph, &roots, &def.claimed_permissions, false)?;
    let store = store_for(&def.graph, &roots, args)?;
    engine_note(args);
    let tables = quarry_engine::measures::evaluate_measures(&def.graph, spec, &store).map_err(|e| fail(1, format!("error evaluating the measures: {e}")))?;
    let tables = match target {
        Target::Directory(..) => quarry_engine::measures::per_measure_tables(spec, &tables[0]),
        _ => tables,
    };
    output::write_tables(&target, &tables).map_err(|m| fail(1, m))
}

pub fn serialize_definition(args: &SerializeArgs) -> Result<(), Failure> {
    let def = load(&args.definition, &args.user_args)?;
    let json = quarry_queries::serialize::serialize(&def.graph, def.dataset.as_ref(), def.measures.as_ref());
    let text = serde_json::to_string_pretty(&json).map_err(|e| fail(1, e.to_string()))? + "\n";
    match &args.output {
        Some(p) => std::fs::write(p, text).map_err(|e| fail(1, format!("cannot write {}: {e}", p.display()))),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

/// `quarry exec ehrql:vN <command> ...`.
pub fn exec(args: &[String]) -> Result<(), Failure> {
    let command = ExecCommand::try_parse_from(args).map_err(|e| fail(2, e.to_string()))?;
    match command {
        ExecCommand::GenerateDataset(a) => generate_dataset(&a),
        ExecCommand::GenerateMeasures(a) => generate_measures(&a),
        ExecCommand::SerializeDefinition(a) => serialize_definition(&a),
    }
}
