//! quarry: OpenSAFELY-style research pipelines run natively, in one binary.

mod analysis_cli;
mod assure;
mod check_outputs;
mod codelists;
mod debug;
mod ehrql;
mod explain;
mod pipeline;
mod report;
mod term;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use pipeline::run::{INTERRUPTED, RunOptions, Verbosity};

// Evaluation allocates many small values per patient; mimalloc is markedly faster than
// glibc's allocator at that (docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use pipeline::state::Workspace;

#[derive(Parser)]
#[command(
    name = "quarry",
    version,
    about = "Run OpenSAFELY-style project.yaml pipelines natively: no Docker, no Python",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum CodelistsCommand {
    /// Check codelists/ as `opensafely codelists check` does (all but the upstream check,
    /// which needs the network): exit 1 with every problem found.
    Check {
        /// The project directory (holding codelists/).
        #[arg(long, default_value = ".")]
        project_dir: PathBuf,
    },
    /// `opensafely codelists update` needs the network: names the downloads it would make.
    Update {
        /// The project directory (holding codelists/).
        #[arg(long, default_value = ".")]
        project_dir: PathBuf,
    },
    /// `opensafely codelists add URL` needs the network: names the download it would make.
    Add {
        /// An OpenCodelists codelist URL.
        codelist_url: String,
    },
}

#[derive(Subcommand)]
enum Commands {
    /// Validate project.yaml and print the plan: actions in dependency order.
    Check {
        /// The directory holding project.yaml.
        #[arg(long, default_value = ".")]
        project_dir: PathBuf,
    },
    /// Run actions (and what they need) from project.yaml.
    Run {
        /// Actions to run, or `run_all` for every action.
        actions: Vec<String>,
        /// Re-run dependencies even if their outputs exist.
        #[arg(short = 'f', long)]
        force_run_dependencies: bool,
        /// Keep running independent actions after a failure.
        #[arg(long)]
        continue_on_error: bool,
        /// How many jobs may run at once (1 to 1024).
        #[arg(short = 'c', long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=1024))]
        concurrency: u16,
        /// The directory holding project.yaml.
        #[arg(long, default_value = ".")]
        project_dir: PathBuf,
        /// Prefix console lines with UTC timestamps.
        #[arg(long)]
        timestamps: bool,
        /// Stop any job that runs longer than this many seconds (1 or more).
        #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
        timeout: Option<u64>,
        /// Also print every line the jobs print.
        #[arg(short, long, conflicts_with = "quiet")]
        verbose: bool,
        /// Print only the result: no progress, no per-job lines.
        #[arg(short, long)]
        quiet: bool,
    },
    /// The opensafely CLI's codelist commands, offline: `check` verifies codelists/ against
    /// codelists.txt and codelists.json; `update` and `add` name what they would download.
    Codelists {
        #[command(subcommand)]
        command: CodelistsCommand,
    },
    /// Show a job request (the latest, or the one with this id) like the jobs page.
    Status {
        /// A job request id (or a unique prefix of one).
        id: Option<String>,
        /// Write (or rewrite) the request's HTML page, metadata/job-requests/<id>.html, and
        /// print its path.
        #[arg(long)]
        html: bool,
        /// The directory holding project.yaml.
        #[arg(long, default_value = ".")]
        project_dir: PathBuf,
    },
    /// Run an ehrQL dataset definition and write the dataset (ehrQL's `generate-dataset`).
    GenerateDataset(ehrql::GenerateArgs),
    /// Run an ehrQL measures definition and write the measures (ehrQL's `generate-measures`).
    GenerateMeasures(ehrql::GenerateArgs),
    /// Run a definition's assurance tests (`test_data`), as ehrQL's `assure`: the report on
    /// stdout, or on stderr with exit code 13 when a test fails.
    Assure(ehrql::AssureArgs),
    /// Run a definition in debug mode, as ehrQL's `debug`: every `show()` is evaluated over
    /// the dummy tables and rendered on stderr.
    Debug(ehrql::DebugArgs),
    /// Explain one patient: whether they are in the population and why (the population
    /// condition as a tree of values), and where each variable's value came from.
    Explain(ehrql::ExplainArgs),
    /// Generate dummy tables from a definition (ehrQL's `create-dummy-tables`), readable back
    /// with `generate-dataset --dummy-tables`.
    CreateDummyTables(ehrql::CreateDummyTablesArgs),
    /// Print the query model a definition builds, as JSON (quarry's serialization docs).
    SerializeDefinition(ehrql::SerializeArgs),
    /// Run one analysis step (frequency, crosstab, value-counts, summary, histogram) with
    /// disclosure control, without a recipe (quarry's recipes docs).
    Analysis(analysis_cli::AnalysisArgs),
    /// Check files for release: the job runner's level-4 rules and the disclosure checks of
    /// CSV contents (small and unrounded counts), with a per-column summary. Without paths,
    /// the project's moderately_sensitive outputs.
    CheckOutputs {
        /// Files or directories to check.
        paths: Vec<PathBuf>,
        /// The directory holding project.yaml (used when no paths are given).
        #[arg(long, default_value = ".")]
        project_dir: PathBuf,
    },
    /// Write a TPP-shaped synthetic backend (Parquet, the --backend layout) for throughput
    /// benchmarks (quarry's backend docs).
    MakeBackend {
        /// How many patients (1 or more).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        patients: u64,
        /// The directory to write (one .parquet file per table).
        #[arg(long)]
        out: PathBuf,
        /// The same seed gives the same backend (any whole number from 0 to 2^64-1).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Mean clinical events per patient, long-tailed (more than 0, at most 10000).
        #[arg(long, default_value_t = 40.0, value_parser = events_per_patient)]
        events_per_patient: f64,
    },
    /// Print a shell completion script for bash, zsh or fish.
    ///
    /// For example `quarry completions bash > ~/.local/share/bash-completion/completions/quarry`,
    /// `quarry completions zsh > ~/.zfunc/_quarry` or `quarry completions fish >
    /// ~/.config/fish/completions/quarry.fish`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the reference of every table a definition can import (Markdown, generated from
    /// the table declarations).
    TablesDoc,
    /// Print the reference of the Python that definitions run on (Markdown, generated by
    /// importing every registered standard-library module).
    PythonDoc,
    /// Run one action command directly, e.g. `quarry exec ehrql:v1 generate-dataset ...`.
    Exec {
        /// The image and tag, e.g. `ehrql:v1`.
        image: String,
        /// The command's arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn events_per_patient(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 10_000.0 => Ok(v),
        Ok(v) => Err(format!("{v} is not in the range: more than 0, at most 10000")),
        Err(_) => Err(format!("`{s}` is not a number")),
    }
}

/// mimalloc's `mi_option_purge_delay`, which the Rust bindings do not name (mimalloc.h, v2 and
/// v3: the option just before `use_numa_nodes`; the test below checks its v3 default, 1000 ms).
const PURGE_DELAY: libmimalloc_sys::mi_option_t = libmimalloc_sys::mi_option_use_numa_nodes - 1;

/// Keeps freed memory instead of returning it to the OS a second later (mimalloc's default). The
/// columnar engine frees and re-allocates each partition's value vectors, and the kernel's
/// zeroing of re-faulted pages was 41 % of a backend run (docs/performance.md). Peak memory
/// is unchanged: the same pages are reused. `MIMALLOC_PURGE_DELAY`, when set, still decides.
#[allow(unsafe_code)]
fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: mi_option_set only stores an option's value; it is called once, at start-up.
        unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, -1) }
    }
}

fn main() -> ExitCode {
    keep_freed_memory();
    // A bug in quarry must still end with one readable line, never a backtrace.
    std::panic::set_hook(Box::new(|info| {
        // A panic in a reader of untrusted files is turned into that file's error message.
        if quarry_engine::parquet_guard::CONTAINED.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            return;
        }
        let location = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        term::error(format!("internal error{location}: {message}\nThis is a bug in quarry; please report it with the command you ran."));
    }));
    let cli = Cli::parse();
    // All of quarry's work runs on one thread with a known, large stack, so that no input can
    // overflow it: the main thread's stack is whatever the platform gives (8 MiB with a
    // default `ulimit -s`, less elsewhere). Only the pages touched are ever committed.
    let worker = std::thread::Builder::new().name("quarry".into()).stack_size(WORK_STACK).spawn(move || dispatch(cli));
    let outcome = match worker {
        Ok(handle) => handle.join(),
        Err(e) => {
            term::error(format!("could not start quarry's worker thread: {e}"));
            return ExitCode::from(1);
        }
    };
    match outcome {
        Ok(Ok(code)) => ExitCode::from(code),
        Ok(Err(e)) => {
            term::error(format!("{e:#}"));
            ExitCode::from(1)
        }
        // The panic hook has printed the message.
        Err(_) => ExitCode::from(101),
    }
}

/// The stack of the thread that does quarry's work (address space, committed as used).
const WORK_STACK: usize = 512 << 20;

fn dispatch(cli: Cli) -> Result<u8> {
    match cli.command {
        Commands::Check { project_dir } => {
            let path = project_dir.join("project.yaml");
            match pipeline::project::load(&path) {
                Ok(project) => {
                    for w in &project.warnings {
                        term::warning(w);
                    }
                    print!("{}", report::plan_text(&project, &path.display().to_string()));
                    Ok(0)
                }
                Err(e) => {
                    term::error(e);
                    Ok(1)
                }
            }
        }
        Commands::Codelists { command } => Ok(match command {
            CodelistsCommand::Check { project_dir } => {
                let report = codelists::check(&project_dir);
                print!("{}", report.text);
                u8::from(!report.ok)
            }
            CodelistsCommand::Update { project_dir } => {
                eprintln!("{}", codelists::update(&project_dir));
                1
            }
            CodelistsCommand::Add { codelist_url } => {
                eprintln!("{}", codelists::add(&codelist_url));
                1
            }
        }),
        Commands::Run {
            actions,
            force_run_dependencies,
            continue_on_error,
            concurrency,
            project_dir,
            timestamps,
            timeout,
            verbose,
            quiet,
        } => {
            // As `opensafely codelists check` in a project's CI: a warning, not a stop.
            if codelists::dir(&project_dir).exists() {
                let report = codelists::check(&project_dir);
                if !report.ok {
                    let first = report.text.lines().next().unwrap_or_default();
                    term::warning(format!("the codelists check failed ({first}); `quarry codelists check` lists every problem"));
                }
            }
            ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst)).context("could not install the Ctrl-C handler")?;
            let options = RunOptions {
                project_dir,
                actions,
                force_run_dependencies,
                continue_on_error,
                concurrency: usize::from(concurrency),
                timestamps,
                timeout: timeout.map(Duration::from_secs),
                verbosity: if quiet {
                    Verbosity::Quiet
                } else if verbose {
                    Verbosity::Verbose
                } else {
                    Verbosity::Normal
                },
            };
            let code = pipeline::run::run(&options)?;
            Ok(u8::try_from(code).unwrap_or(1))
        }
        Commands::Status { id, html, project_dir } => {
            let workspace = Workspace::open_read_only(&project_dir);
            let requests = workspace.load_requests()?;
            // After a "nothing to do" run, the last run that did something is the one to show.
            let mut note = None;
            let request = match &id {
                None => {
                    let latest = requests.last();
                    match latest {
                        Some(r) if r.status == pipeline::jobs::RequestStatus::NothingToDo => {
                            let worked = requests.iter().rev().find(|r| r.status != pipeline::jobs::RequestStatus::NothingToDo);
                            if worked.is_some() {
                                note = Some(format!(
                                    "Note: the latest run ({}, {}) had nothing to do; this is the last run that did something.\n\n",
                                    r.id,
                                    report::utc(r.created_at)
                                ));
                            }
                            worked.or(latest)
                        }
                        other => other,
                    }
                }
                Some(id) => {
                    let matching: Vec<_> = requests.iter().filter(|r| r.id.starts_with(id.as_str())).collect();
                    if matching.len() > 1 {
                        bail!("`{id}` matches {} job requests; give more of the id", matching.len());
                    }
                    matching.into_iter().next()
                }
            };
            let Some(request) = request else {
                match id {
                    Some(id) => bail!("no job request `{id}` in {}", workspace.requests_dir().display()),
                    None => bail!("no job requests yet in {}: run `quarry run ACTION` first", workspace.requests_dir().display()),
                }
            };
            if html {
                let path = report::html::write_request_page(request, &project_dir, &workspace.requests_dir())?;
                println!("{}", path.display());
            } else {
                print!("{}{}", note.unwrap_or_default(), report::request_text(request));
            }
            Ok(0)
        }
        Commands::Exec { image, args } => exec(&image, &args),
        Commands::GenerateDataset(a) => Ok(ehrql_result(ehrql::generate_dataset(&a))),
        Commands::GenerateMeasures(a) => Ok(ehrql_result(ehrql::generate_measures(&a))),
        Commands::Assure(a) => Ok(ehrql_result(ehrql::assure(&a.test_data_file, &a.user_args, a.image))),
        Commands::Debug(a) => Ok(ehrql_result(ehrql::debug(&a))),
        Commands::Explain(a) => Ok(ehrql_result(ehrql::explain(&a))),
        Commands::SerializeDefinition(a) => Ok(ehrql_result(ehrql::serialize_definition(&a))),
        Commands::CreateDummyTables(a) => Ok(ehrql_result(ehrql::create_dummy_tables(&a))),
        Commands::Analysis(a) => Ok(analysis_cli::run(a)),
        Commands::CheckOutputs { paths, project_dir } => check_outputs::run(&paths, &project_dir),
        Commands::MakeBackend { patients, out, seed, events_per_patient } => {
            let options = quarry_engine::make_backend::Options { patients, seed, events_per_patient };
            eprintln!("[info] Writing a backend of {patients} patients (seed {seed}) into {}", out.display());
            let started = std::time::Instant::now();
            let mut last = std::time::Instant::now();
            let report = quarry_engine::make_backend::make_backend(&out, &options, |done| {
                if last.elapsed().as_secs() >= 1 || done == patients {
                    let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-3);
                    eprintln!(
                        "[info] {done} of {patients} patients ({:.0}%), {:.0} patients/s",
                        100.0 * done as f64 / patients.max(1) as f64,
                        rate
                    );
                    last = std::time::Instant::now();
                }
            });
            match report {
                Ok(r) => {
                    for (table, rows) in &r.rows {
                        println!("{}  {rows} rows", out.join(format!("{table}.parquet")).display());
                    }
                    eprintln!("[info] {} patients in {:.1} s", r.patients, r.seconds);
                    Ok(0)
                }
                Err(e) => {
                    term::error(e);
                    Ok(1)
                }
            }
        }
        Commands::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "quarry", &mut std::io::stdout());
            Ok(0)
        }
        Commands::TablesDoc => {
            print!("{}", quarry_queries::tables::markdown());
            Ok(0)
        }
        Commands::PythonDoc => match quarry_python::stdlib::markdown() {
            Ok(page) => {
                print!("{page}");
                Ok(0)
            }
            Err(e) => {
                term::error(e);
                Ok(1)
            }
        },
    }
}

/// `quarry exec IMAGE:TAG ARGS…`: what an action's `run:` line does, run directly.
fn exec(image: &str, args: &[String]) -> Result<u8> {
    let (name, tag) = image.split_once(':').unwrap_or((image, ""));
    match name {
        "ehrql" => Ok(ehrql_result(ehrql::exec(tag, args))),
        "analysis" => {
            let [recipe] = args else {
                bail!("usage: `analysis:v1 RECIPE.yaml` (one recipe file; see quarry's recipes docs)");
            };
            match quarry_analysis::run_recipe(std::path::Path::new(recipe), std::path::Path::new(".")) {
                Ok(files) => {
                    for f in files {
                        eprintln!("[analysis] wrote {}", f.display());
                    }
                    Ok(0)
                }
                Err(e) => {
                    term::error(e);
                    Ok(1)
                }
            }
        }
        other => bail!("`quarry exec` runs quarry's own runtimes (ehrql, analysis); `{other}` is not one of them"),
    }
}

/// Prints an ehrQL command's failure and returns its exit code.
fn ehrql_result(r: std::result::Result<(), ehrql::Failure>) -> u8 {
    match r {
        Ok(()) => 0,
        Err(f) if f.ehrql_text => {
            eprintln!("{}", f.message);
            f.code
        }
        Err(f) => {
            term::error(&f.message);
            f.code
        }
    }
}

#[cfg(test)]
mod allocator_tests {
    #[test]
    #[allow(unsafe_code)]
    fn the_purge_delay_option_is_the_one_documented() {
        // SAFETY: reading an option's value.
        let value = unsafe { libmimalloc_sys::mi_option_get(super::PURGE_DELAY) };
        assert_eq!(value, 1000, "mimalloc v3's purge delay defaults to 1000 ms; the option number may have moved");
    }
}
