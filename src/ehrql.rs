//! ehrQL's commands, run in-process: `generate-dataset`, `generate-measures`,
//! `serialize-definition` (also reached as `quarry exec ehrql:vN <command> ...`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser};
use quarry_engine::DatasetShape;
use quarry_engine::dummy;
use quarry_engine::output::{self, Target};
use quarry_python::{Definition, DefinitionError, Image};
use quarry_queries::qm::{Graph, NodeId, TableId, Value};
use quarry_queries::spec::{DatasetSpec, MeasuresSpec};

mod spark;

/// Arguments shared by `generate-dataset` and `generate-measures`.
#[derive(Args, Debug, Clone)]
pub struct GenerateArgs {
    /// The dataset (or measures) definition, a Python file.
    pub definition: PathBuf,
    /// Where to write: a file (.csv, .csv.gz, .arrow, .parquet), or `DIR:csv` (`:csv.gz`,
    /// `:arrow`, `:parquet`) for one file per table. CSV on stdout when omitted. Never one of
    /// the definition's inputs.
    #[arg(long)]
    pub output: Option<String>,
    /// A directory with one file per table the definition uses (`<table>.csv`, `.csv.gz`,
    /// `.arrow` or `.parquet`), read into memory.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["dummy_data_file", "backend"])]
    pub dummy_tables: Option<PathBuf>,
    /// A ready-made dummy dataset (or measures table, or a directory of one file per measure)
    /// to validate and copy instead of evaluating the definition.
    #[arg(long, value_name = "FILE", conflicts_with = "backend")]
    pub dummy_data_file: Option<PathBuf>,
    /// A backend of any size: a directory of `<table>.parquet` (or `.arrow`) files or
    /// `<table>/` directories of Parquet part files, in any order (quarry sorts an unsorted
    /// table once, into a cache), streamed in rounds of patients (quarry's backend docs). With
    /// `--engine spark`, a
    /// directory or URI every executor can read. Also from QUARRY_BACKEND.
    #[arg(long, value_name = "DIR", env = "QUARRY_BACKEND")]
    pub backend: Option<PathBuf>,
    /// Which evaluator to use (also from QUARRY_ENGINE, e.g. for project.yaml actions).
    #[arg(long, value_enum, default_value_t = Engine::Columnar, env = "QUARRY_ENGINE")]
    pub engine: Engine,
    /// The Spark Connect server that `--engine spark` runs on.
    #[arg(long, value_name = "sc://HOST:PORT", env = "SPARK_REMOTE")]
    pub spark_remote: Option<String>,
    /// With `--engine spark`: read the cluster's existing catalog tables named
    /// PREFIX<table> (e.g. `tpp.` for tpp.clinical_events) instead of files.
    #[arg(long, value_name = "PREFIX", env = "QUARRY_SPARK_TABLES", conflicts_with_all = ["dummy_tables", "backend", "dummy_data_file"])]
    pub spark_tables: Option<String>,
    #[command(flatten)]
    pub dummy: DummyArgs,
    /// Run the assurance tests (`test_data`) in FILE first, as `quarry assure FILE`; a failing
    /// test stops the run before any output is written (generate-dataset only).
    #[arg(long, value_name = "FILE")]
    pub test_data_file: Option<PathBuf>,
    /// Which ehrQL image the definition runs as (set by `quarry exec ehrql:TAG`).
    #[arg(skip)]
    pub image: Image,
    /// Arguments for the definition itself (`sys.argv[1:]`, `get_parameter`), after `--`.
    #[arg(last = true, value_name = "DEFINITION_ARGS")]
    pub user_args: Vec<String>,
}

/// `debug` arguments.
#[derive(Args, Debug, Clone)]
pub struct DebugArgs {
    /// The dataset definition, a Python file; its `show()` calls are rendered.
    pub definition: PathBuf,
    /// The dummy tables `show()` evaluates over (`<table>.csv`; event tables must be CSV).
    #[arg(long, value_name = "DIR")]
    pub dummy_tables: Option<PathBuf>,
    /// How `show()` renders: text tables, or HTML tables (as ehrQL's VS Code extension reads).
    #[arg(long, value_enum, default_value = "ascii")]
    pub display_format: crate::debug::Format,
    /// Which ehrQL image the definition runs as (set by `quarry exec ehrql:TAG`).
    #[arg(skip)]
    pub image: Image,
    /// Arguments for the definition itself (`sys.argv[1:]`, `get_parameter`), after `--`.
    #[arg(last = true, value_name = "DEFINITION_ARGS")]
    pub user_args: Vec<String>,
}

/// `quarry debug`: runs the definition in debug mode (ehrQL's `debug`); `show()` output on
/// stderr.
pub fn debug(args: &DebugArgs) -> Result<(), Failure> {
    if !args.definition.is_file() {
        return Err(fail(10, format!("{}: no such definition file", args.definition.display())));
    }
    // Past ehrQL (whose debugger needs dummy tables): without them, the dataset's dummy
    // tables are generated first, from a run that prints nothing.
    let scratch;
    let dir = match &args.dummy_tables {
        Some(dir) => Some(dir.clone()),
        None => match quarry_python::load_definition_as(&args.definition, &args.user_args, Box::new(std::io::sink()), args.image) {
            Ok(def) if def.dataset.is_some() => {
                scratch = tempfile::tempdir().map_err(|e| fail(1, format!("cannot create a scratch directory: {e}")))?;
                let size = def.dataset.as_ref().and_then(|d| d.dummy.population_size).map_or(1000, |n| n.max(1) as u64);
                let dummy = DummyArgs { population_size: Some(size), seed: quarry_engine::dummy::DEFAULT_SEED };
                write_dummy_tables(&def, &Target::Directory(scratch.path().to_path_buf(), output::Format::Csv), &dummy, &[])?;
                eprintln!(
                    "[info] No --dummy-tables: show() uses dummy tables generated from the dataset; \
                     what the dataset does not read (other tables and columns) is empty"
                );
                Some(scratch.path().to_path_buf())
            }
            _ => None,
        },
    };
    let debugger = crate::debug::TablesDebugger { dir, format: args.display_format };
    quarry_python::debug_definition(&args.definition, &args.user_args, Box::new(std::io::stderr()), Box::new(debugger), args.image)
        .map(|_| ())
        .map_err(|e| definition_error(*e))
}

/// `explain` arguments.
#[derive(Args, Debug, Clone)]
pub struct ExplainArgs {
    /// The dataset definition, a Python file.
    pub definition: PathBuf,
    /// The patient to explain.
    #[arg(long, value_name = "ID")]
    pub patient: i64,
    /// Dummy tables to read the patient from (otherwise dummy data is generated from the
    /// definition, with --population-size and --seed).
    #[arg(long, value_name = "DIR", conflicts_with = "backend")]
    pub dummy_tables: Option<PathBuf>,
    /// A backend (as generate-dataset's --backend) to read the patient from: read until the
    /// patient's rows are complete.
    #[arg(long, value_name = "DIR")]
    pub backend: Option<PathBuf>,
    #[command(flatten)]
    pub dummy: DummyArgs,
    /// Explain only this variable (and the population).
    #[arg(long, value_name = "NAME")]
    pub variable: Option<String>,
    /// Text for a terminal, or JSON for tools.
    #[arg(long, value_enum, default_value = "text")]
    pub format: ExplainFormat,
    /// Arguments for the definition itself (`sys.argv[1:]`, `get_parameter`), after `--`.
    #[arg(last = true, value_name = "DEFINITION_ARGS")]
    pub user_args: Vec<String>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum ExplainFormat {
    Text,
    Json,
}

/// `quarry explain`: whether a patient is in the population and why (docs/explain.md).
pub fn explain(args: &ExplainArgs) -> Result<(), Failure> {
    let def = load(&args.definition, &args.user_args, Image::Any)?;
    let Some(dataset) = &def.dataset else {
        return Err(definition_error(def.dataset_error.clone().expect("a reason when there is no dataset")));
    };
    if let Some(name) = &args.variable
        && !dataset.variables.iter().any(|(n, _)| n == name)
    {
        let names: Vec<&str> = dataset.variables.iter().map(|(n, _)| n.as_str()).collect();
        return Err(fail(2, format!("--variable {name}: the dataset has no such variable (it has: {})", names.join(", "))));
    }
    let roots = dataset.roots();
    let store = match (&args.dummy_tables, &args.backend) {
        (Some(dir), _) => {
            eprintln!("[info] Reading table data from {}", dir.display());
            quarry_engine::store::load_dummy_tables(&def.graph, &roots, dir).map_err(|e| fail(11, format!("FileValidationError: {e}")))?
        }
        (None, Some(dir)) => patient_from_backend(&def.graph, &roots, dir, args.patient)?,
        (None, None) => {
            let shape = DatasetShape::new(&def.graph, dataset);
            let plan = dataset_plan(&def.graph, dataset, &shape.outputs());
            let size = population_size(&args.dummy, dataset.dummy.population_size, 10);
            generated_store(&plan, &gen_options(size, &args.dummy, &dataset.dummy))?
        }
    };
    if !store.patients.contains_key(&args.patient) {
        eprintln!("[warning] patient {} has no rows in any table the dataset reads", args.patient);
    }
    let e = crate::explain::explain(&def, dataset, &store, args.patient, args.variable.as_deref()).map_err(|m| fail(1, m))?;
    match args.format {
        ExplainFormat::Text => print!("{}", crate::explain::text(&e)),
        ExplainFormat::Json => println!("{}", crate::explain::json(&e)),
    }
    Ok(())
}

/// One patient's rows from a backend: rounds are read (in patient order, as generate-dataset
/// reads them, nothing dropped for the population) until one ends past the patient.
fn patient_from_backend(graph: &Graph, roots: &[NodeId], dir: &Path, patient: i64) -> Result<quarry_engine::store::Store, Failure> {
    eprintln!("[info] Reading patient {patient} from the backend in {}", dir.display());
    let input = |e: quarry_engine::store::InputError| fail(11, format!("FileValidationError: {e}"));
    let mut backend = quarry_engine::backend::Backend::open(graph, roots, None, &[], dir).map_err(input)?;
    let mut found = quarry_engine::store::Store::default();
    while let Some((batch, hi)) = backend.next_round(100_000).map_err(input)? {
        if let Some(rows) = batch.patient_rows(patient) {
            found.patients.insert(patient, rows);
        }
        if hi.is_none_or(|hi| hi > patient) {
            break;
        }
    }
    Ok(found)
}

/// A backend opened for the columnar engine (the only one that streams it), its notes printed.
fn open_backend(
    graph: &Graph,
    roots: &[NodeId],
    population: Option<NodeId>,
    bindings: &[quarry_engine::pushdown::Bindings],
    dir: &Path,
) -> Result<quarry_engine::backend::Backend, Failure> {
    eprintln!("[info] Reading the backend in {}", dir.display());
    let backend = quarry_engine::backend::Backend::open(graph, roots, population, bindings, dir)
        .map_err(|e| fail(11, format!("FileValidationError: {e}")))?;
    for note in backend.notes() {
        eprintln!("[info] {note}");
    }
    Ok(backend)
}

/// A progress callback for streaming a source: for a backend (`shown`), a line at most once a
/// second; tables in memory are one round, with nothing to show.
fn progress(shown: bool) -> impl FnMut(usize) {
    let started = std::time::Instant::now();
    let mut last = started;
    move |patients| {
        if shown && last.elapsed().as_secs() >= 1 {
            eprintln!("[info] {patients} patients read ({:.1} s)", started.elapsed().as_secs_f64());
            last = std::time::Instant::now();
        }
    }
}

/// A streamed evaluation's failure with ehrQL's exit code; `what`: "dataset" or "measures".
fn stream_failure(what: &str) -> impl Fn(quarry_engine::StreamError) -> Failure + '_ {
    move |e| match e {
        quarry_engine::StreamError::Input(e) => fail(11, format!("FileValidationError: {e}")),
        quarry_engine::StreamError::Eval(e) => fail(1, format!("error evaluating the {what}: {e}")),
        quarry_engine::StreamError::Output(m) => fail(1, m),
    }
}

/// `assure` arguments.
#[derive(Args, Debug, Clone)]
pub struct AssureArgs {
    /// A Python file that defines `dataset` and `test_data` (often importing the dataset
    /// from the definition it tests).
    pub test_data_file: PathBuf,
    /// Which ehrQL image the definition runs as (set by `quarry exec ehrql:TAG`).
    #[arg(skip)]
    pub image: Image,
    /// Arguments for the definition itself (`sys.argv[1:]`, `get_parameter`), after `--`.
    #[arg(last = true, value_name = "DEFINITION_ARGS")]
    pub user_args: Vec<String>,
}

/// How generated dummy data is sized and seeded (used when no tables are given).
#[derive(Args, Debug, Clone)]
pub struct DummyArgs {
    /// How many dummy patients to generate. Overrides `configure_dummy_data(population_size=)`
    /// and project.yaml's `expectations: population_size` (default 10, as ehrQL); 1 or more.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=u64::from(u32::MAX)))]
    pub population_size: Option<u64>,
    /// The seed for generated dummy data: the same definition, size and seed give the same data
    /// (any whole number from 0 to 2^64-1).
    #[arg(long, default_value_t = quarry_engine::dummy::DEFAULT_SEED)]
    pub seed: u64,
}

/// `create-dummy-tables` arguments.
#[derive(Args, Debug, Clone)]
pub struct CreateDummyTablesArgs {
    /// The dataset (or measures) definition, a Python file.
    pub definition: PathBuf,
    /// Where to write the tables: `DIR`, `DIR:csv`, `DIR:csv.gz`, `DIR:arrow` or `DIR:parquet`
    /// (one file per used table).
    pub dummy_tables_path: String,
    #[command(flatten)]
    pub dummy: DummyArgs,
    /// Which ehrQL image the definition runs as (set by `quarry exec ehrql:TAG`).
    #[arg(skip)]
    pub image: Image,
    #[arg(last = true, value_name = "DEFINITION_ARGS")]
    pub user_args: Vec<String>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum Engine {
    /// One patient at a time: obviously correct, not fast.
    Reference,
    /// The patient-partitioned columnar engine.
    Columnar,
    /// Translate to Spark SQL and run on a Spark cluster through Spark Connect
    /// (`--spark-remote`; quarry's Spark docs; needs a build with the `spark` feature).
    Spark,
}

#[derive(Args, Debug, Clone)]
pub struct SerializeArgs {
    pub definition: PathBuf,
    /// Write the JSON here instead of stdout.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Which ehrQL image the definition runs as (set by `quarry exec ehrql:TAG`).
    #[arg(skip)]
    pub image: Image,
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
    CreateDummyTables(CreateDummyTablesArgs),
    Assure(AssureArgs),
    Debug(DebugArgs),
}

/// A failure with ehrQL's exit code.
pub struct Failure {
    pub code: u8,
    pub message: String,
    /// The message is ehrQL's own text (a definition's traceback, an assurance report), printed
    /// as ehrQL prints it rather than as quarry's `error:` line, so it can be compared with
    /// ehrQL's byte for byte.
    pub ehrql_text: bool,
}

fn fail(code: u8, message: impl Into<String>) -> Failure {
    Failure { code, message: message.into(), ehrql_text: false }
}

fn ehrql_text(code: u8, message: impl Into<String>) -> Failure {
    Failure { code, message: message.into(), ehrql_text: true }
}

fn definition_error(e: DefinitionError) -> Failure {
    ehrql_text(e.exit_code, e.to_string())
}

/// A loaded definition and the files it read (itself, codelists, `table_from_file` tables).
struct Loaded {
    def: Definition,
    inputs: Vec<(PathBuf, &'static str)>,
}

impl std::ops::Deref for Loaded {
    type Target = Definition;
    fn deref(&self) -> &Definition {
        &self.def
    }
}

fn load(path: &Path, user_args: &[String], image: Image) -> Result<Loaded, Failure> {
    if !path.is_file() {
        return Err(fail(10, format!("{}: no such definition file", path.display())));
    }
    eprintln!("[info] Compiling definition from {}", path.display());
    let def = quarry_python::load_definition_as(path, user_args, Box::new(std::io::stderr()), image).map_err(|e| definition_error(*e))?;
    if let Some(warning) = image_warning(&def.missing_from) {
        eprintln!("[warning] {warning}");
    }
    let mut inputs = vec![(path.to_path_buf(), "the definition")];
    inputs.extend(def.files_read.iter().map(|p| (p.clone(), "a file the definition reads")));
    Ok(Loaded { def, inputs })
}

/// What to say when a definition run as no particular image imported modules an image lacks
/// (the first for each image): the file that imported them (relative to the working
/// directory when it is inside it) and why.
fn image_warning(missing_from: &[quarry_python::MissingFrom]) -> Option<String> {
    let lacking = |image: &str| missing_from.iter().find(|m| m.image == image);
    let shown = |m: &quarry_python::MissingFrom| {
        let file = Path::new(&m.file);
        let relative = std::env::current_dir().ok().and_then(|cwd| file.strip_prefix(cwd).ok().map(Path::to_path_buf));
        relative.unwrap_or_else(|| file.to_path_buf()).display().to_string()
    };
    match (lacking("v0"), lacking("v1")) {
        (Some(current), Some(old)) => Some(format!(
            "{}: imports {}, which only ehrQL's ehrql:v0 image has, and {} imports {}, which it does not have: \
             no ehrQL image has both, so on OpenSAFELY one of these imports fails whichever image runs it",
            shown(old),
            old.module,
            shown(current),
            current.module
        )),
        (None, Some(old)) => Some(format!(
            "{}: imports {}, which only ehrQL's ehrql:v0 image has: as an `ehrql:v1` action (current ehrQL) \
             this import fails",
            shown(old),
            old.module
        )),
        _ => None,
    }
}

/// The inputs of a run over `args`' tables besides the definition's own: the tables it reads
/// and a `--dummy-data-file`.
fn table_inputs(graph: &Graph, roots: &[NodeId], args: &GenerateArgs) -> Vec<(PathBuf, &'static str)> {
    let mut inputs = vec![];
    if let Some(dir) = &args.dummy_tables {
        let files = quarry_engine::store::table_files(graph, roots, dir, quarry_engine::store::DUMMY_TABLE_EXTENSIONS);
        inputs.extend(files.into_iter().map(|p| (p, "an input table")));
    }
    if let Some(dir) = &args.backend {
        let files = quarry_engine::store::table_files(graph, roots, dir, quarry_engine::backend::TABLE_EXTENSIONS);
        inputs.extend(files.into_iter().map(|p| (p, "a backend table")));
    }
    if let Some(file) = &args.dummy_data_file {
        if file.is_dir() {
            // Measures' dummy data may be a directory of one file per measure.
            let files = std::fs::read_dir(file).into_iter().flatten().filter_map(|e| e.ok()).map(|e| e.path());
            inputs.extend(files.filter(|p| p.is_file()).map(|p| (p, "a file of the --dummy-data-file directory")));
        } else {
            inputs.push((file.clone(), "the --dummy-data-file"));
        }
    }
    inputs
}

/// Refuses, before anything runs, an output that would replace one of the run's inputs
/// (compared as files: through symbolic links and hard links too).
fn refuse_replacing_inputs(outputs: &[PathBuf], inputs: &[(PathBuf, &str)]) -> Result<(), Failure> {
    for output in outputs {
        for (input, what) in inputs {
            if output::same_file(output, input) {
                return Err(fail(
                    2,
                    format!(
                        "the output {} would replace {}, which is {what} of this run: write the output somewhere else",
                        output.display(),
                        input.display()
                    ),
                ));
            }
        }
    }
    Ok(())
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

/// Where the population size comes from, in ehrQL's order plus quarry's flag and the
/// project's expectations.
fn population_size(dummy: &DummyArgs, configured: Option<i64>, fallback: usize) -> usize {
    if let Some(n) = dummy.population_size {
        return usize::try_from(n).unwrap_or(usize::MAX);
    }
    if let Some(n) = configured {
        return n.max(0) as usize;
    }
    std::env::var("QUARRY_EXPECTATIONS_POPULATION_SIZE").ok().and_then(|v| v.parse().ok()).unwrap_or(fallback)
}

fn gen_options(size: usize, dummy: &DummyArgs, config: &quarry_queries::spec::DummyConfig) -> dummy::Options {
    dummy::Options {
        population_size: size,
        seed: dummy.seed,
        timeout: config.timeout.filter(|t| *t > 0.0).map(Duration::from_secs_f64),
        progress: true,
    }
}

fn report_generation(report: &dummy::Report, options: &dummy::Options) {
    if report.timed_out {
        eprintln!(
            "[warning] Failed to find {} matching patients within {} seconds — giving up (generated {})",
            options.population_size,
            options.timeout.map(|t| t.as_secs_f64()).unwrap_or_default(),
            report.generated
        );
    }
    if report.gave_up {
        eprintln!(
            "[warning] Only {} of {} generated patients satisfied the population; stopped trying. \
             The population may need patients that only a `table_from_file` table or a rare combination provides.",
            report.generated, options.population_size
        );
    }
    eprintln!("[info] {}", report.summary(options.population_size));
}

/// The dataset's population for the generator (with `additional_population_constraint`).
fn dataset_plan<'g>(graph: &'g Graph, dataset: &DatasetSpec, outputs: &[NodeId]) -> dummy::Plan<'g> {
    let mut goal = vec![dataset.population];
    goal.extend(dataset.dummy.additional_population_constraint);
    dummy::Plan::new(graph, vec![goal], outputs, HashMap::new())
}

/// The measures' population for the generator: any denominator, over the whole period.
fn measures_plan<'g>(graph: &'g Graph, spec: &MeasuresSpec, outputs: &[NodeId]) -> dummy::Plan<'g> {
    let mut goals: Vec<Vec<NodeId>> = vec![];
    for m in &spec.measures {
        if !goals.contains(&vec![m.denominator]) {
            goals.push(vec![m.denominator]);
        }
    }
    let mut params = HashMap::new();
    let intervals = spec.measures.iter().flat_map(|m| m.intervals.iter());
    if let Some(start) = intervals.clone().map(|i| i.0).min() {
        params.insert("interval_start_date".to_string(), Value::Date(start));
    }
    if let Some(end) = intervals.map(|i| i.1).max() {
        params.insert("interval_end_date".to_string(), Value::Date(end));
    }
    dummy::Plan::new(graph, goals, outputs, params)
}

/// ehrQL's default size for measures: 10 × denominators × intervals × max(1, group-by columns).
fn measures_default_size(spec: &MeasuresSpec) -> usize {
    let mut denominators: Vec<NodeId> = spec.measures.iter().map(|m| m.denominator).collect();
    denominators.sort();
    denominators.dedup();
    let mut intervals: Vec<_> = spec.measures.iter().flat_map(|m| m.intervals.iter().copied()).collect();
    intervals.sort();
    intervals.dedup();
    let mut groups: Vec<&String> = spec.measures.iter().flat_map(|m| m.group_by.iter().map(|(g, _)| g)).collect();
    groups.sort();
    groups.dedup();
    10 * denominators.len() * intervals.len().max(1) * groups.len().max(1)
}

/// Generates dummy patients into an in-memory store.
fn generated_store(plan: &dummy::Plan, options: &dummy::Options) -> Result<quarry_engine::store::Store, Failure> {
    eprintln!("[info] Generating dummy data for {} patients (seed {})", options.population_size, options.seed);
    let mut store = quarry_engine::store::Store::default();
    let report = plan
        .generate(
            options,
            |pid, tables, _| (pid, tables.clone()),
            |(pid, tables)| {
                store.patients.insert(pid, tables);
                Ok(())
            },
        )
        .map_err(|e| fail(1, e.to_string()))?;
    report_generation(&report, options);
    Ok(store)
}

/// The `--dummy-tables` in memory (`--backend` is streamed by the columnar engine only).
fn store_for(graph: &Graph, roots: &[NodeId], args: &GenerateArgs) -> Result<quarry_engine::store::Store, Failure> {
    if args.backend.is_some() {
        return Err(fail(
            2,
            "--backend is evaluated by the columnar engine; leave out --engine reference (use --dummy-tables DIR to compare with the reference evaluator)",
        ));
    }
    let Some(dir) = &args.dummy_tables else { unreachable!("callers generate dummy data when no tables are given") };
    eprintln!("[info] Reading table data from {}", dir.display());
    quarry_engine::store::load_dummy_tables(graph, roots, dir).map_err(|e| fail(11, format!("FileValidationError: {e}")))
}

pub fn generate_dataset(args: &GenerateArgs) -> Result<(), Failure> {
    let target = output::parse_target(args.output.as_deref()).map_err(|m| fail(2, m))?;
    let def = load(&args.definition, &args.user_args, args.image)?;
    let Some(dataset) = &def.dataset else {
        return Err(definition_error(def.dataset_error.clone().expect("a reason when there is no dataset")));
    };
    if let Some(file) = &args.test_data_file {
        assure(file, &args.user_args, args.image)?;
    }
    let roots = dataset.roots();
    check_permissions(&def.graph, &roots, &def.claimed_permissions, !dataset.events.is_empty())?;
    let names: Vec<String> = DatasetShape::new(&def.graph, dataset).layouts().iter().map(|(n, _)| n.clone()).collect();
    let mut inputs = def.inputs.clone();
    inputs.extend(table_inputs(&def.graph, &roots, args));
    refuse_replacing_inputs(&target.files(&names), &inputs)?;
    if let Some(file) = &args.dummy_data_file {
        return copy_dummy_data_file(&def.graph, dataset, file, &target);
    }
    if args.engine == Engine::Spark {
        return spark::generate_dataset(&def.graph, dataset, &roots, args, &target);
    }
    if args.backend.is_none() && args.dummy_tables.is_none() {
        return generate_dummy_dataset(&def.graph, dataset, &target, args);
    }
    if args.engine == Engine::Reference {
        let store = store_for(&def.graph, &roots, args)?;
        let tables = quarry_engine::evaluate_dataset(&def.graph, dataset, &store)
            .map_err(|e| fail(1, format!("error evaluating the dataset: {e}")))?;
        return output::write_tables(&target, tables).map_err(|m| fail(1, m));
    }
    // The columnar engine: the backend's tables or the dummy tables, through one path.
    let mut source = open_source(&def.graph, &roots, Some(dataset.population), &[], args)?;
    let started = std::time::Instant::now();
    let rows = quarry_engine::stream_dataset(&def.graph, dataset, source.as_mut(), &target, progress(args.backend.is_some()))
        .map_err(stream_failure("dataset"))?;
    if args.backend.is_some() {
        eprintln!("[info] {rows} rows written in {:.2} s", started.elapsed().as_secs_f64());
    }
    Ok(())
}

/// Where the columnar engine reads a run's tables: `--backend` (scanned in rounds) or
/// `--dummy-tables` (read into memory). `population`: the dataset's, and `bindings`: the
/// parameters' values (measures' intervals), for the backend's scan.
fn open_source(
    graph: &Graph,
    roots: &[NodeId],
    population: Option<NodeId>,
    bindings: &[quarry_engine::pushdown::Bindings],
    args: &GenerateArgs,
) -> Result<Box<dyn quarry_engine::source::Source>, Failure> {
    Ok(match &args.backend {
        Some(dir) => Box::new(open_backend(graph, roots, population, bindings, dir)?),
        None => Box::new(quarry_engine::source::Tables::new(graph, roots, &store_for(graph, roots, args)?)),
    })
}

pub fn generate_measures(args: &GenerateArgs) -> Result<(), Failure> {
    if args.test_data_file.is_some() {
        return Err(fail(
            2,
            "--test-data-file runs a dataset's assurance tests: use it with generate-dataset (ehrQL's generate-measures has no such option)",
        ));
    }
    let target = output::parse_target(args.output.as_deref()).map_err(|m| fail(2, m))?;
    if let Some(file) = &args.dummy_data_file
        && !file.exists()
    {
        return Err(fail(2, format!("argument --dummy-data-file: {} does not exist", file.display())));
    }
    let def = load(&args.definition, &args.user_args, args.image)?;
    let Some(spec) = &def.measures else {
        return Err(definition_error(def.measures_error.clone().expect("a reason when there are no measures")));
    };
    let roots = spec.roots();
    check_permissions(&def.graph, &roots, &def.claimed_permissions, false)?;
    let names: Vec<String> = match target {
        Target::Directory(..) => spec.measures.iter().map(|m| m.name.clone()).collect(),
        _ => vec!["measures".to_string()],
    };
    let mut inputs = def.inputs.clone();
    inputs.extend(table_inputs(&def.graph, &roots, args));
    refuse_replacing_inputs(&target.files(&names), &inputs)?;
    for quirk in quarry_engine::measures::grouping_quirks(spec) {
        eprintln!("[warning] {quirk}");
    }
    let table = if let Some(file) = &args.dummy_data_file {
        // ehrQL's rule: the file's rows, validated against the measures' columns, instead of
        // evaluating anything.
        if args.engine == Engine::Spark {
            return Err(fail(2, "--dummy-data-file is copied, not evaluated: leave out --engine spark"));
        }
        eprintln!("[info] Reading dummy data from {}", file.display());
        quarry_engine::measures::read_dummy_measures(&def.graph, spec, file).map_err(|e| fail(11, format!("FileValidationError: {e}")))?
    } else if args.engine == Engine::Spark {
        spark::generate_measures(&def.graph, spec, &roots, args)?
    } else {
        let generated = || {
            let plan = measures_plan(&def.graph, spec, &roots);
            let size = population_size(&args.dummy, spec.dummy.population_size, measures_default_size(spec));
            generated_store(&plan, &gen_options(size, &args.dummy, &spec.dummy))
        };
        let tables_given = args.backend.is_some() || args.dummy_tables.is_some();
        if args.engine == Engine::Reference {
            let store = if tables_given { store_for(&def.graph, &roots, args)? } else { generated()? };
            quarry_engine::measures::evaluate_measures(&def.graph, spec, &store)
                .map_err(|e| fail(1, format!("error evaluating the measures: {e}")))?
        } else {
            // The columnar engine: the backend's tables, the dummy tables or generated
            // patients, through one path.
            let mut source = match tables_given {
                true => open_source(&def.graph, &roots, None, &quarry_engine::measures::Measures::new(spec).parameters(), args)?,
                false => Box::new(quarry_engine::source::Tables::new(&def.graph, &roots, &generated()?)),
            };
            return measures_from(&def.graph, spec, source.as_mut(), &target, args.backend.is_some());
        }
    };
    quarry_engine::measures::write_table(spec, table, &target).map(|_| ()).map_err(|m| fail(1, m))
}

/// `--dummy-data-file`: the file's rows, validated against the dataset's columns, written in
/// the output format (ehrQL does no further validation).
fn copy_dummy_data_file(graph: &Graph, dataset: &DatasetSpec, file: &std::path::Path, target: &Target) -> Result<(), Failure> {
    if !dataset.events.is_empty() {
        return Err(fail(
            2,
            "--dummy-data-file holds one table; this definition also has event tables (add_event_table): use --dummy-tables DIR",
        ));
    }
    let shape = DatasetShape::new(graph, dataset);
    let (name, columns) = shape.layouts()[0].clone();
    eprintln!("[info] Reading dummy data from {}", file.display());
    let rows = quarry_engine::store::read_dummy_dataset(file, &columns).map_err(|e| fail(11, format!("FileValidationError: {e}")))?;
    output::write_tables(target, vec![output::Table { name, columns, rows }]).map_err(|m| fail(1, m))
}

/// The measures by the columnar engine over `source`, read once, round by round, every
/// interval evaluated on each round, written to `target` with disclosure control as the rows
/// are made (`measures::stream_measures`); `report`: show progress and say how long it took
/// (for a backend).
fn measures_from(
    graph: &Graph,
    spec: &MeasuresSpec,
    source: &mut dyn quarry_engine::source::Source,
    target: &Target,
    report: bool,
) -> Result<(), Failure> {
    let started = std::time::Instant::now();
    let rows =
        quarry_engine::measures::stream_measures(graph, spec, source, target, progress(report)).map_err(stream_failure("measures"))?;
    if report {
        eprintln!("[info] {rows} measures rows over {} patients in {:.2} s", source.patients_read(), started.elapsed().as_secs_f64());
    }
    Ok(())
}

/// Generates dummy patients and evaluates the dataset over them as they are made, writing
/// the output as it goes (a million patients never sit in memory at once).
fn generate_dummy_dataset(graph: &Graph, dataset: &DatasetSpec, target: &Target, args: &GenerateArgs) -> Result<(), Failure> {
    let shape = DatasetShape::new(graph, dataset);
    let plan = dataset_plan(graph, dataset, &shape.outputs());
    let size = population_size(&args.dummy, dataset.dummy.population_size, 10);
    let options = gen_options(size, &args.dummy, &dataset.dummy);
    eprintln!("[info] Generating dummy data for {size} patients (seed {}); give --dummy-tables DIR to use your own tables", options.seed);
    stream_generated(&plan, &options, target, shape.layouts(), |pid, _, values| shape.rows(pid, values), Some((graph, &shape)))
}

/// Generates patients and writes, per kept patient, the rows `rows` gives for each table.
fn stream_generated(
    plan: &dummy::Plan,
    options: &dummy::Options,
    target: &Target,
    layouts: &[output::Layout],
    rows: impl Fn(
        i64,
        &std::collections::BTreeMap<TableId, quarry_engine::store::Rows>,
        &dyn quarry_engine::PatientView,
    ) -> Vec<Vec<Vec<quarry_queries::semantics::Scalar>>>
    + Sync,
    dataset: Option<(&Graph, &DatasetShape)>,
) -> Result<(), Failure> {
    let mut stream = output::TableStream::open(target, layouts).map_err(|m| fail(1, m))?;
    let encoder = stream.encoder();
    let each = |pid, tables: &_, values: &dyn quarry_engine::PatientView| {
        rows(pid, tables, values)
            .into_iter()
            .map(|table_rows| (!table_rows.is_empty()).then(|| encoder.chunk(table_rows)))
            .collect::<Vec<_>>()
    };
    // A dataset's CSV is rendered from the typed columns of each round's kept patients.
    let typed = |p: &quarry_engine::columnar::Partition, keep: &[u32]| -> Vec<Vec<Option<output::Chunk>>> {
        let (graph, shape) = dataset.expect("only given for a dataset");
        shape
            .patients_csv(graph, p, keep)
            .into_iter()
            .map(|tables| tables.into_iter().map(|t| t.map(output::Chunk::Text)).collect())
            .collect()
    };
    let each_round: Option<dummy::EachRound<'_, _>> = (dataset.is_some() && encoder.is_text()).then_some(&typed);
    let report = plan
        .generate_with(options, &each, each_round, |parts| {
            for (i, chunk) in parts.into_iter().enumerate() {
                if let Some(chunk) = chunk {
                    stream.write(i, chunk)?;
                }
            }
            Ok(())
        })
        .map_err(|e| fail(1, e.to_string()))?;
    report_generation(&report, options);
    stream.finish().map_err(|m| fail(1, m))
}

/// `create-dummy-tables`: the generator's tables (used tables and columns only), readable
/// back with `--dummy-tables`.
pub fn create_dummy_tables(args: &CreateDummyTablesArgs) -> Result<(), Failure> {
    let target = match args.dummy_tables_path.rsplit_once(':') {
        Some((_, ext)) if !ext.contains('/') => output::parse_target(Some(&args.dummy_tables_path)).map_err(|m| fail(2, m))?,
        _ => Target::Directory(PathBuf::from(&args.dummy_tables_path), output::Format::Csv),
    };
    let def = load(&args.definition, &args.user_args, args.image)?;
    write_dummy_tables(&def, &target, &args.dummy, &def.inputs)
}

/// Generates the definition's dummy tables into a directory target.
/// `inputs`: files the tables may not replace (the definition and what it read).
fn write_dummy_tables(def: &Definition, target: &Target, dummy: &DummyArgs, inputs: &[(PathBuf, &'static str)]) -> Result<(), Failure> {
    let Target::Directory(dir, _) = target else { unreachable!("a directory target") };
    let (plan, size, config) = match (&def.dataset, &def.measures) {
        (Some(dataset), _) => {
            let shape = DatasetShape::new(&def.graph, dataset);
            (
                dataset_plan(&def.graph, dataset, &shape.outputs()),
                population_size(dummy, dataset.dummy.population_size, 10),
                dataset.dummy.clone(),
            )
        }
        (None, Some(spec)) if !spec.measures.is_empty() => (
            measures_plan(&def.graph, spec, &spec.roots()),
            population_size(dummy, spec.dummy.population_size, measures_default_size(spec)),
            spec.dummy.clone(),
        ),
        _ => return Err(definition_error(def.dataset_error.clone().expect("a reason when there is no dataset"))),
    };
    let names: Vec<String> = plan.tables.iter().map(|t| t.name.clone()).collect();
    refuse_replacing_inputs(&target.files(&names), inputs)?;
    let options = gen_options(size, dummy, &config);
    // Only used columns are written, in schema order.
    let layout: Vec<(TableId, Vec<usize>)> =
        plan.tables.iter().map(|t| (t.id, t.columns.iter().enumerate().filter(|(_, c)| c.used).map(|(i, _)| i).collect())).collect();
    let layouts: Vec<output::Layout> = plan
        .tables
        .iter()
        .zip(&layout)
        .map(|(t, (id, cols))| {
            let schema = def.graph.table(*id);
            let mut columns = vec![output::ColumnSpec::patient_id()];
            columns
                .extend(cols.iter().map(|&i| output::ColumnSpec::of_column(schema.column(&t.columns[i].name).expect("a schema column"))));
            (t.name.clone(), columns)
        })
        .collect();
    eprintln!("[info] Generating dummy tables for {size} patients (seed {}) into {}", options.seed, dir.display());
    stream_generated(
        &plan,
        &options,
        target,
        &layouts,
        |pid, tables, _| {
            layout
                .iter()
                .map(|(t, cols)| {
                    tables
                        .get(t)
                        .map(Vec::as_slice)
                        .unwrap_or(&[])
                        .iter()
                        .map(|row| std::iter::once(Some(Value::Int(pid))).chain(cols.iter().map(|&i| row[i].clone())).collect())
                        .collect()
                })
                .collect()
        },
        None,
    )
}

pub fn serialize_definition(args: &SerializeArgs) -> Result<(), Failure> {
    let def = load(&args.definition, &args.user_args, args.image)?;
    refuse_replacing_inputs(args.output.as_slice(), &def.inputs)?;
    let json = quarry_queries::serialize::serialize(&def.graph, def.dataset.as_ref(), def.measures.as_ref());
    let text = serde_json::to_string_pretty(&json).map_err(|e| fail(1, e.to_string()))? + "\n";
    match &args.output {
        Some(p) => crate::pipeline::state::write_atomically(p, text.as_bytes()).map_err(|e| fail(1, format!("{e:#}"))),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

/// `quarry exec ehrql:TAG <command> ...`: the command as the image `tag` names runs it — its
/// definition sees that image's modules ([`Image`]), and what the ehrql:v0 image (ehrQL of
/// 2023-12, before 1.0) did not have yet is refused as its command line refused it.
pub fn exec(tag: &str, args: &[String]) -> Result<(), Failure> {
    let mut command = ExecCommand::try_parse_from(args).map_err(|e| fail(2, e.to_string()))?;
    let image = Image::from_tag(tag).ok_or_else(|| {
        fail(2, format!("there is no ehrql:{tag} image: OpenSAFELY's ehrQL images are ehrql:v1 (current ehrQL) and ehrql:v0"))
    })?;
    if image == Image::V0 {
        let newer = match &command {
            ExecCommand::Debug(_) => Some("ehrql:v0 has no debug command (it came in 2024, after ehrQL 1.0): use ehrql:v1"),
            ExecCommand::GenerateDataset(a) if a.test_data_file.is_some() => Some(
                "ehrql:v0's generate-dataset has no --test-data-file (it came in 2024, after ehrQL 1.0): use \
                 ehrql:v1, or run the tests with `ehrql:v0 assure TEST_FILE` (`quarry assure TEST_FILE`)",
            ),
            _ => None,
        };
        if let Some(message) = newer {
            return Err(fail(2, message));
        }
    }
    match &mut command {
        ExecCommand::GenerateDataset(a) | ExecCommand::GenerateMeasures(a) => a.image = image,
        ExecCommand::SerializeDefinition(a) => a.image = image,
        ExecCommand::CreateDummyTables(a) => a.image = image,
        ExecCommand::Assure(a) => a.image = image,
        ExecCommand::Debug(a) => a.image = image,
    }
    match command {
        ExecCommand::GenerateDataset(a) => generate_dataset(&a),
        ExecCommand::GenerateMeasures(a) => generate_measures(&a),
        ExecCommand::SerializeDefinition(a) => serialize_definition(&a),
        ExecCommand::CreateDummyTables(a) => create_dummy_tables(&a),
        ExecCommand::Assure(a) => assure(&a.test_data_file, &a.user_args, a.image),
        ExecCommand::Debug(a) => debug(&a),
    }
}

/// `quarry assure FILE`: ehrQL's assurance tests. The report goes to stdout when every test
/// passes; otherwise to stderr as ehrQL's `AssuranceTestError`, followed by quarry's
/// explanation, with exit code 13.
pub fn assure(file: &Path, user_args: &[String], image: Image) -> Result<(), Failure> {
    let def = load(file, user_args, image)?;
    let Some(dataset) = &def.dataset else {
        return Err(definition_error(def.dataset_error.clone().expect("a reason when there is no dataset")));
    };
    let Some(test_data) = &def.test_data else {
        return Err(definition_error(def.test_data_error.clone().expect("a reason when there is no test data")));
    };
    eprintln!("[info] Testing dataset definition with tests in {}", file.display());
    let outcome = crate::assure::run(&def, dataset, test_data).map_err(|m| fail(10, m))?;
    if outcome.passed {
        println!("{}", outcome.report);
        Ok(())
    } else {
        Err(ehrql_text(13, format!("AssuranceTestError: \n{}{}", outcome.report, outcome.why)))
    }
}
