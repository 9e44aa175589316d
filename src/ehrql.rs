//! ehrQL's commands, run in-process: `generate-dataset`, `generate-measures`,
//! `serialize-definition` (also reached as `quarry exec ehrql:vN <command> ...`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser};
use quarry_engine::DatasetShape;
use quarry_engine::dummy;
use quarry_engine::output::{self, Target};
use quarry_python::{Definition, DefinitionError};
use quarry_queries::qm::{Graph, NodeId, TableId, Value};
use quarry_queries::spec::{DatasetSpec, MeasuresSpec};

/// Arguments shared by `generate-dataset` and `generate-measures`.
#[derive(Args, Debug, Clone)]
pub struct GenerateArgs {
    /// The dataset (or measures) definition, a Python file.
    pub definition: PathBuf,
    /// Where to write: a file (.csv, .csv.gz, .arrow, .parquet), or `DIR:csv` for one file
    /// per table. CSV on stdout when omitted.
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
    /// table once, into a cache), streamed in rounds of patients (docs/backend.md). With `--engine spark`, a
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
    /// Arguments for the definition itself (`sys.argv[1:]`, `get_parameter`), after `--`.
    #[arg(last = true, value_name = "DEFINITION_ARGS")]
    pub user_args: Vec<String>,
}

/// How generated dummy data is sized and seeded (used when no tables are given).
#[derive(Args, Debug, Clone)]
pub struct DummyArgs {
    /// How many dummy patients to generate. Overrides `configure_dummy_data(population_size=)`
    /// and project.yaml's `expectations: population_size` (default 10, as ehrQL).
    #[arg(long, value_name = "N")]
    pub population_size: Option<usize>,
    /// The seed for generated dummy data: the same definition, size and seed give the same data.
    #[arg(long, default_value_t = quarry_engine::dummy::DEFAULT_SEED)]
    pub seed: u64,
}

/// `create-dummy-tables` arguments.
#[derive(Args, Debug, Clone)]
pub struct CreateDummyTablesArgs {
    /// The dataset (or measures) definition, a Python file.
    pub definition: PathBuf,
    /// Where to write the tables: `DIR`, `DIR:csv` or `DIR:csv.gz` (one file per used table).
    pub dummy_tables_path: String,
    #[command(flatten)]
    pub dummy: DummyArgs,
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
    /// (`--spark-remote`; docs/spark.md).
    Spark,
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
    CreateDummyTables(CreateDummyTablesArgs),
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
    fail(e.exit_code, e.to_string())
}

fn load(path: &Path, user_args: &[String]) -> Result<Definition, Failure> {
    if !path.is_file() {
        return Err(fail(10, format!("{}: no such definition file", path.display())));
    }
    eprintln!("[info] Compiling definition from {}", path.display());
    quarry_python::load_definition(path, user_args, Box::new(std::io::stderr())).map_err(definition_error)
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
        return n;
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

fn store_for(graph: &Graph, roots: &[NodeId], args: &GenerateArgs) -> Result<quarry_engine::store::Store, Failure> {
    let Some(dir) = &args.dummy_tables else { unreachable!("callers generate dummy data when no tables are given") };
    eprintln!("[info] Reading table data from {}", dir.display());
    quarry_engine::store::load_dummy_tables(graph, roots, dir).map_err(|e| fail(11, format!("FileValidationError: {e}")))
}

pub fn generate_dataset(args: &GenerateArgs) -> Result<(), Failure> {
    let target = output::parse_target(args.output.as_deref()).map_err(|m| fail(2, m))?;
    let def = load(&args.definition, &args.user_args)?;
    let Some(dataset) = &def.dataset else {
        return Err(definition_error(def.dataset_error.clone().expect("a reason when there is no dataset")));
    };
    let roots = dataset.roots();
    check_permissions(&def.graph, &roots, &def.claimed_permissions, !dataset.events.is_empty())?;
    if let Some(file) = &args.dummy_data_file {
        return copy_dummy_data_file(&def.graph, dataset, file, &target);
    }
    if args.engine == Engine::Spark {
        let started = std::time::Instant::now();
        let rows = on_spark(&def.graph, &roots, args, |spark, tables| {
            quarry_spark::generate_dataset(spark, &def.graph, dataset, tables, &target)
        })?;
        eprintln!("[info] {rows} rows written in {:.2} s (Spark)", started.elapsed().as_secs_f64());
        return Ok(());
    }
    if let Some(dir) = &args.backend {
        return generate_from_backend(&def.graph, dataset, &roots, dir, &target, args);
    }
    if args.dummy_tables.is_none() {
        return generate_dummy_dataset(&def.graph, dataset, &target, args);
    }
    let store = store_for(&def.graph, &roots, args)?;
    let tables = match args.engine {
        Engine::Reference => quarry_engine::evaluate_dataset(&def.graph, dataset, &store),
        Engine::Columnar => quarry_engine::evaluate_dataset_columnar(&def.graph, dataset, &store),
        Engine::Spark => unreachable!("--engine spark returned above"),
    }
    .map_err(|e| fail(1, format!("error evaluating the dataset: {e}")))?;
    output::write_tables(&target, tables).map_err(|m| fail(1, m))
}

pub fn generate_measures(args: &GenerateArgs) -> Result<(), Failure> {
    let target = output::parse_target(args.output.as_deref()).map_err(|m| fail(2, m))?;
    if let Some(file) = &args.dummy_data_file
        && !file.exists()
    {
        return Err(fail(2, format!("argument --dummy-data-file: {} does not exist", file.display())));
    }
    let def = load(&args.definition, &args.user_args)?;
    let Some(spec) = &def.measures else {
        return Err(definition_error(def.measures_error.clone().expect("a reason when there are no measures")));
    };
    let roots = spec.roots();
    check_permissions(&def.graph, &roots, &def.claimed_permissions, false)?;
    for quirk in quarry_engine::measures::grouping_quirks(spec) {
        eprintln!("[warning] {quirk}");
    }
    let mut table = if let Some(file) = &args.dummy_data_file {
        // ehrQL's rule: the file's rows, validated against the measures' columns, instead of
        // evaluating anything.
        if args.engine == Engine::Spark {
            return Err(fail(2, "--dummy-data-file is copied, not evaluated: leave out --engine spark"));
        }
        eprintln!("[info] Reading dummy data from {}", file.display());
        quarry_engine::measures::read_dummy_measures(&def.graph, spec, file).map_err(|e| fail(11, format!("FileValidationError: {e}")))?
    } else if args.engine == Engine::Spark {
        on_spark(&def.graph, &roots, args, |spark, tables| quarry_spark::generate_measures(spark, &def.graph, spec, tables))?
    } else if let Some(dir) = &args.backend {
        measures_from_backend(&def.graph, spec, &roots, dir, args)?
    } else {
        let store = if args.dummy_tables.is_none() && args.backend.is_none() {
            let plan = measures_plan(&def.graph, spec, &roots);
            let size = population_size(&args.dummy, spec.dummy.population_size, measures_default_size(spec));
            generated_store(&plan, &gen_options(size, &args.dummy, &spec.dummy))?
        } else {
            store_for(&def.graph, &roots, args)?
        };
        quarry_engine::measures::evaluate_measures(&def.graph, spec, &store, args.engine == Engine::Columnar)
            .map_err(|e| fail(1, format!("error evaluating the measures: {e}")))?
    };
    quarry_engine::measures::apply_disclosure_control(spec, &mut table).map_err(|m| fail(1, m))?;
    let tables = match target {
        Target::Directory(..) => quarry_engine::measures::per_measure_tables(spec, &table),
        _ => vec![table],
    };
    output::write_tables(&target, tables).map_err(|m| fail(1, m))
}

/// The Spark session for `--engine spark`.
fn spark_session(args: &GenerateArgs) -> Result<quarry_spark::Spark, Failure> {
    let Some(remote) = args.spark_remote.as_deref() else {
        return Err(fail(
            2,
            "--engine spark needs a Spark Connect server: give --spark-remote sc://HOST:PORT or set SPARK_REMOTE (scripts/spark-cluster.sh start runs a local one)",
        ));
    };
    if args.dummy_tables.is_none() && args.backend.is_none() && args.spark_tables.is_none() {
        return Err(fail(
            2,
            "--engine spark evaluates existing tables: give --backend DIR|URI (Parquet files every executor can read), --spark-tables PREFIX (catalog tables) or --dummy-tables DIR; dummy data is generated by the local engines (leave out --engine spark)",
        ));
    }
    eprintln!("[info] Connecting to Spark at {remote}");
    quarry_spark::Spark::connect(remote).map_err(spark_failure)
}

/// Runs `run` on Spark over the tables the arguments name: --spark-tables, --backend, or
/// --dummy-tables (read here and sent to Spark).
fn on_spark<T>(
    graph: &Graph,
    roots: &[NodeId],
    args: &GenerateArgs,
    run: impl FnOnce(&quarry_spark::Spark, &quarry_spark::Tables) -> Result<T, quarry_spark::SparkFailure>,
) -> Result<T, Failure> {
    if args.dummy_data_file.is_some() {
        return Err(fail(2, "--dummy-data-file is copied, not evaluated: leave out --engine spark"));
    }
    let spark = spark_session(args)?;
    let store;
    let tables = if let Some(prefix) = &args.spark_tables {
        quarry_spark::Tables::Catalog(prefix.clone())
    } else if let Some(dir) = &args.backend {
        quarry_spark::Tables::Parquet(dir.to_string_lossy().into_owned())
    } else {
        store = store_for(graph, roots, args)?;
        quarry_spark::Tables::Dummy(&store)
    };
    run(&spark, &tables).map_err(spark_failure)
}

fn spark_failure(e: quarry_spark::SparkFailure) -> Failure {
    match e {
        quarry_spark::SparkFailure::Input(m) => fail(11, format!("FileValidationError: {m}")),
        other => fail(1, other.to_string()),
    }
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

/// `--backend DIR`: the dataset evaluated round by round over the backend's tables and
/// written as it goes.
fn generate_from_backend(
    graph: &Graph,
    dataset: &DatasetSpec,
    roots: &[NodeId],
    dir: &std::path::Path,
    target: &Target,
    args: &GenerateArgs,
) -> Result<(), Failure> {
    if args.engine == Engine::Reference {
        return Err(fail(
            2,
            "--backend is evaluated by the columnar engine; leave out --engine reference (use --dummy-tables DIR to compare with the reference evaluator)",
        ));
    }
    eprintln!("[info] Reading the backend in {}", dir.display());
    let mut backend = quarry_engine::backend::Backend::open(graph, roots, Some(dataset.population), dir)
        .map_err(|e| fail(11, format!("FileValidationError: {e}")))?;
    for note in backend.notes() {
        eprintln!("[info] {note}");
    }
    let started = std::time::Instant::now();
    let mut last = std::time::Instant::now();
    let rows = quarry_engine::stream_dataset_backend(graph, dataset, &mut backend, target, |patients| {
        if last.elapsed().as_secs() >= 1 {
            eprintln!("[info] {patients} patients read ({:.1} s)", started.elapsed().as_secs_f64());
            last = std::time::Instant::now();
        }
    })
    .map_err(|e| match e {
        quarry_engine::StreamError::Input(e) => fail(11, format!("FileValidationError: {e}")),
        quarry_engine::StreamError::Eval(e) => fail(1, format!("error evaluating the dataset: {e}")),
        quarry_engine::StreamError::Output(m) => fail(1, m),
    })?;
    eprintln!("[info] {rows} rows written in {:.2} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// `generate-measures --backend DIR`: the backend read once, round by round, every interval
/// evaluated on each round (`measures::stream_measures_backend`).
fn measures_from_backend(
    graph: &Graph,
    spec: &MeasuresSpec,
    roots: &[NodeId],
    dir: &std::path::Path,
    args: &GenerateArgs,
) -> Result<output::Table, Failure> {
    if args.engine == Engine::Reference {
        return Err(fail(
            2,
            "--backend is evaluated by the columnar engine; leave out --engine reference (use --dummy-tables DIR to compare with the reference evaluator)",
        ));
    }
    eprintln!("[info] Reading the backend in {}", dir.display());
    let mut backend =
        quarry_engine::backend::Backend::open(graph, roots, None, dir).map_err(|e| fail(11, format!("FileValidationError: {e}")))?;
    for note in backend.notes() {
        eprintln!("[info] {note}");
    }
    let started = std::time::Instant::now();
    let mut last = std::time::Instant::now();
    let table = quarry_engine::measures::stream_measures_backend(graph, spec, &mut backend, |patients| {
        if last.elapsed().as_secs() >= 1 {
            eprintln!("[info] {patients} patients read ({:.1} s)", started.elapsed().as_secs_f64());
            last = std::time::Instant::now();
        }
    })
    .map_err(|e| match e {
        quarry_engine::StreamError::Input(e) => fail(11, format!("FileValidationError: {e}")),
        quarry_engine::StreamError::Eval(e) => fail(1, format!("error evaluating the measures: {e}")),
        quarry_engine::StreamError::Output(m) => fail(1, m),
    })?;
    eprintln!(
        "[info] {} measures rows over {} patients in {:.2} s",
        table.rows.len(),
        backend.patients_read(),
        started.elapsed().as_secs_f64()
    );
    Ok(table)
}

/// Generates dummy patients and evaluates the dataset over them as they are made, writing
/// the output as it goes (a million patients never sit in memory at once).
fn generate_dummy_dataset(graph: &Graph, dataset: &DatasetSpec, target: &Target, args: &GenerateArgs) -> Result<(), Failure> {
    let shape = DatasetShape::new(graph, dataset);
    let plan = dataset_plan(graph, dataset, &shape.outputs());
    let size = population_size(&args.dummy, dataset.dummy.population_size, 10);
    let options = gen_options(size, &args.dummy, &dataset.dummy);
    eprintln!("[info] Generating dummy data for {size} patients (seed {}); give --dummy-tables DIR to use your own tables", options.seed);
    stream_generated(&plan, &options, target, shape.layouts(), |pid, _, values| shape.rows(pid, values))
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
        &quarry_engine::reference::PatientValues,
    ) -> Vec<Vec<Vec<quarry_queries::semantics::Scalar>>>
    + Sync,
) -> Result<(), Failure> {
    let mut stream = output::TableStream::open(target, layouts).map_err(|m| fail(1, m))?;
    let encoder = stream.encoder();
    let report = plan
        .generate(
            options,
            |pid, tables, values| {
                rows(pid, tables, values)
                    .into_iter()
                    .map(|table_rows| (!table_rows.is_empty()).then(|| encoder.chunk(table_rows)))
                    .collect::<Vec<_>>()
            },
            |parts| {
                for (i, chunk) in parts.into_iter().enumerate() {
                    if let Some(chunk) = chunk {
                        stream.write(i, chunk)?;
                    }
                }
                Ok(())
            },
        )
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
    let Target::Directory(dir, _) = &target else { unreachable!("a directory target") };
    let def = load(&args.definition, &args.user_args)?;
    let (plan, size, config) = match (&def.dataset, &def.measures) {
        (Some(dataset), _) => {
            let shape = DatasetShape::new(&def.graph, dataset);
            (
                dataset_plan(&def.graph, dataset, &shape.outputs()),
                population_size(&args.dummy, dataset.dummy.population_size, 10),
                dataset.dummy.clone(),
            )
        }
        (None, Some(spec)) if !spec.measures.is_empty() => (
            measures_plan(&def.graph, spec, &spec.roots()),
            population_size(&args.dummy, spec.dummy.population_size, measures_default_size(spec)),
            spec.dummy.clone(),
        ),
        _ => return Err(definition_error(def.dataset_error.clone().expect("a reason when there is no dataset"))),
    };
    let options = gen_options(size, &args.dummy, &config);
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
    stream_generated(&plan, &options, &target, &layouts, |pid, tables, _| {
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
    })
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
        ExecCommand::CreateDummyTables(a) => create_dummy_tables(&a),
    }
}
