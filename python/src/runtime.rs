//! One definition run: a fresh interpreter on its own thread, the sandbox installed, the
//! definition executed as ehrQL's `load_module` does, and its dataset or measures read back.

use std::io::Write;
use std::path::Path;

use quarry_queries::qm::{Graph, NodeId};
use rustpython_vm::builtins::{PyBaseExceptionRef, PyStr};
use rustpython_vm::{AsObject, Interpreter, InterpreterBuilder, PyObjectRef, PyResult, Settings, VirtualMachine};

use crate::sandbox::Sandbox;
use crate::state::{self, RunState};
use crate::{
    DatasetSpec, Definition, DefinitionError, DummyConfig, Image, MeasureDef, MeasuresSpec, PyValue, TestData, TestPatient, native,
};

/// The interpreter thread's stack. Deep Python (long operator chains, recursion up to the
/// recursion limit, deeply nested data) needs far more than a default thread's 2 MiB; the
/// memory is reserved, not used, until it is touched.
const STACK_BYTES: usize = 1 << 30;

/// The environment a definition sees: what ehrQL gives the subprocess that loads a
/// definition (`ehrql/loaders.py`: PYTHONPATH, PYTHONHASHSEED, TMPDIR, with its Docker
/// image's values), plus the LC_CTYPE that Python's locale coercion adds there. Read-only.
const ENVIRON: [(&str, &str); 4] = [("PYTHONPATH", "/app"), ("PYTHONHASHSEED", "0"), ("TMPDIR", "/tmp"), ("LC_CTYPE", "C.UTF-8")];

/// Runs the definition at `path` (as given on the command line, relative to the working
/// directory or absolute) with `sys.argv = [path, *user_args]`; what it prints goes to `out`.
///
/// The error is boxed: it carries the whole traceback, and is made once per run.
pub fn load_definition(path: &Path, user_args: &[String], out: Box<dyn Write + Send>) -> Result<Definition, Box<DefinitionError>> {
    run_on_thread(path, user_args, out, None, Image::Any)
}

/// [`load_definition`], run as the ehrQL image `image`.
pub fn load_definition_as(
    path: &Path,
    user_args: &[String],
    out: Box<dyn Write + Send>,
    image: Image,
) -> Result<Definition, Box<DefinitionError>> {
    run_on_thread(path, user_args, out, None, image)
}

/// Runs a definition in debug mode, as `ehrql debug` does: each `show()` is rendered by
/// `debugger` and written to `out`.
pub fn debug_definition(
    path: &Path,
    user_args: &[String],
    out: Box<dyn Write + Send>,
    debugger: crate::BoxedDebugger,
    image: Image,
) -> Result<Definition, Box<DefinitionError>> {
    run_on_thread(path, user_args, out, Some(debugger), image)
}

fn run_on_thread(
    path: &Path,
    user_args: &[String],
    out: Box<dyn Write + Send>,
    debugger: Option<crate::BoxedDebugger>,
    image: Image,
) -> Result<Definition, Box<DefinitionError>> {
    let path = path.to_path_buf();
    let user_args = user_args.to_vec();
    let shown = path.display().to_string();
    let worker = std::thread::Builder::new()
        .name("definition".into())
        .stack_size(STACK_BYTES)
        .spawn(move || run(&path, &user_args, out, debugger, image))
        .map_err(|e| DefinitionError::plain(&shown, "OSError", format!("could not start the definition's thread: {e}")))?;
    match worker.join() {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(Box::new(DefinitionError::plain(
                &shown,
                "SystemError",
                format!("internal error in quarry while running the definition: {what}"),
            )))
        }
    }
}

/// Runs Python `source` (not a definition: no dataset is looked for) in a scratch directory
/// and returns what it printed; for quarry's own introspection (docs/python.md).
pub(crate) fn run_source(source: &str) -> Result<String, Box<DefinitionError>> {
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let dir = tempfile::tempdir().map_err(|e| DefinitionError::plain("<source>", "OSError", e.to_string()))?;
    let path = dir.path().join("probe.py");
    std::fs::write(&path, source).map_err(|e| DefinitionError::plain("<source>", "OSError", e.to_string()))?;
    let out = Captured::default();
    load_definition(&path, &[], Box::new(out.clone()))?;
    let printed = out.0.lock().map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    Ok(printed)
}

fn run(
    path: &Path,
    user_args: &[String],
    out: Box<dyn Write + Send>,
    debugger: Option<crate::BoxedDebugger>,
    image: Image,
) -> Result<Definition, Box<DefinitionError>> {
    let shown = path.display().to_string();
    let plain = |kind: &str, message: String| DefinitionError::plain(&shown, kind, message);
    let cwd = std::env::current_dir().map_err(|e| plain("OSError", format!("cannot read the working directory: {e}")))?;
    let absolute = if path.is_absolute() { path.to_path_buf() } else { cwd.join(path) };
    let dir = absolute.parent().map(Path::to_path_buf).unwrap_or_else(|| cwd.clone());
    let sandbox = Sandbox::new(&cwd, std::slice::from_ref(&dir)).map_err(|e| plain("OSError", format!("{}: {e}", dir.display())))?;
    // As CPython's `spec_from_file_location` makes it: joined to the (real) working directory.
    let absolute = if path.is_absolute() { path.to_path_buf() } else { sandbox.cwd().join(path) };
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "definition".into());
    let mut argv = vec![shown.clone()];
    argv.extend(user_args.iter().cloned());
    // ehrQL puts the definition's directory first; `python -m ehrql` run from the project
    // root adds the root, so project packages (`analysis.codelists`) import too.
    let sys_path: Vec<String> = [dir.display().to_string(), cwd.display().to_string()].into_iter().fold(Vec::new(), |mut v, p| {
        if !v.contains(&p) {
            v.push(p);
        }
        v
    });
    state::install(RunState {
        sandbox,
        graph: Graph::new(),
        out: Box::new(out),
        environ: ENVIRON.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        claimed_permissions: Vec::new(),
        locations: std::collections::HashMap::new(),
        debugger,
        missing_from: Vec::new(),
    });
    let interp = interpreter(&argv);
    let outcome = interp.enter(|vm| -> Result<Extracted, Box<DefinitionError>> {
        python_float_repr(vm);
        let result = (|| -> PyResult<PyObjectRef> {
            let boot = vm.import("_quarry_boot", 0)?;
            let write = vm.import("_quarry", 0)?.get_attr("write", vm)?;
            let path_list: Vec<PyObjectRef> = sys_path.iter().map(|p| vm.ctx.new_str(p.as_str()).into()).collect();
            let image = image.python_name().map_or_else(|| vm.ctx.none(), |i| vm.ctx.new_str(i).into());
            boot.get_attr("install", vm)?.call((write, vm.ctx.new_list(path_list), image), vm)?;
            let argv_list: Vec<PyObjectRef> = argv.iter().map(|a| vm.ctx.new_str(a.as_str()).into()).collect();
            boot.get_attr("run_definition", vm)?.call((shown.as_str(), stem.as_str(), vm.ctx.new_list(argv_list)), vm)
        })();
        let module = match result {
            Ok(module) => module,
            Err(exc) => return Err(Box::new(describe(vm, exc, &shown, &absolute.display().to_string()))),
        };
        extract(vm, &module).map_err(|exc| Box::new(describe(vm, exc, &shown, &absolute.display().to_string())))
    });
    let state = state::take();
    let extracted = outcome?;
    let state = state.ok_or_else(|| plain("SystemError", "the definition's state was lost".into()))?;
    let error = |m: String| plain("ehrql.Error", m);
    let (dataset, dataset_error) = match extracted.dataset {
        Part::Missing => (None, Some(error("Did not find a variable called 'dataset' in dataset definition file".into()))),
        Part::Error(m) => (None, Some(error(m))),
        Part::Ok(d) => (Some(d), None),
    };
    let (measures, measures_error) = match extracted.measures {
        Part::Missing => (None, Some(error("Did not find a variable called 'measures' in measures definition file".into()))),
        Part::Error(m) => (None, Some(error(m))),
        Part::Ok(m) => (Some(m), None),
    };
    let (test_data, test_data_error) = match extracted.test_data {
        Part::Missing => (None, Some(plain("ehrql.Error", "No 'test_data' variable defined".into()))),
        Part::Error(m) => (None, Some(plain("AssuranceDataError", m))),
        Part::Ok(t) => (Some(t), None),
    };
    let locations = state.locations.into_iter().filter_map(|(i, at)| state.graph.node_id(i).map(|n| (n, at))).collect();
    Ok(Definition {
        files_read: state.sandbox.files_read().to_vec(),
        locations,
        graph: state.graph,
        dataset,
        measures,
        dataset_error,
        measures_error,
        claimed_permissions: state.claimed_permissions,
        test_data,
        test_data_error,
        missing_from: state.missing_from,
    })
}

/// What a definition defined under one of the names ehrQL reads.
enum Part<T> {
    Missing,
    Error(String),
    Ok(T),
}

struct Extracted {
    dataset: Part<DatasetSpec>,
    measures: Part<MeasuresSpec>,
    test_data: Part<TestData>,
}

/// Reads the module's `dataset` and `measures` (through `_quarry_boot.extract`).
fn extract(vm: &VirtualMachine, module: &PyObjectRef) -> PyResult<Extracted> {
    let boot = vm.import("_quarry_boot", 0)?;
    let both = boot.get_attr("extract", vm)?.call((module.clone(),), vm)?;
    let dataset = part(vm, both.get_item(&0, vm)?, |vm, items| {
        let population = node(vm, &items[1])?.ok_or_else(|| vm.new_value_error("no population"))?;
        let variables = named_nodes(vm, &items[2])?;
        let events = items[3]
            .clone()
            .try_to_value::<Vec<PyObjectRef>>(vm)?
            .into_iter()
            .map(|t| Ok((string(vm, &t.get_item(&0, vm)?)?, named_nodes(vm, &t.get_item(&1, vm)?)?)))
            .collect::<PyResult<_>>()?;
        Ok(DatasetSpec { population, variables, events, dummy: dummy_config(vm, &items[4])? })
    })?;
    let measures = part(vm, both.get_item(&1, vm)?, |vm, items| {
        let list: Vec<PyObjectRef> = items[1].clone().try_to_value(vm)?;
        let measures = list
            .iter()
            .map(|m| {
                let intervals: Vec<PyObjectRef> = m.get_item(&4, vm)?.try_to_value(vm)?;
                let intervals = intervals
                    .iter()
                    .map(|i| Ok((date(vm, &i.get_item(&0, vm)?)?, date(vm, &i.get_item(&1, vm)?)?)))
                    .collect::<PyResult<_>>()?;
                Ok(MeasureDef {
                    name: string(vm, &m.get_item(&0, vm)?)?,
                    numerator: node(vm, &m.get_item(&1, vm)?)?.ok_or_else(|| vm.new_value_error("no numerator"))?,
                    denominator: node(vm, &m.get_item(&2, vm)?)?.ok_or_else(|| vm.new_value_error("no denominator"))?,
                    group_by: named_nodes(vm, &m.get_item(&3, vm)?)?,
                    intervals,
                })
            })
            .collect::<PyResult<_>>()?;
        Ok(MeasuresSpec { measures, dummy: dummy_config(vm, &items[2])?, disclosure_control: items[3].clone().try_to_bool(vm)? })
    })?;
    let test_data = part(vm, both.get_item(&2, vm)?, |vm, items| {
        let strings =
            |o: PyObjectRef| -> PyResult<Vec<String>> { o.try_to_value::<Vec<PyObjectRef>>(vm)?.iter().map(|x| string(vm, x)).collect() };
        let findings = items[1]
            .clone()
            .try_to_value::<Vec<PyObjectRef>>(vm)?
            .iter()
            .map(|f| {
                let (patient, table) = (f.get_item(&1, vm)?.try_into_value(vm)?, string(vm, &f.get_item(&2, vm)?)?);
                Ok(match string(vm, &f.get_item(&0, vm)?)?.as_str() {
                    "values" => crate::Finding::Values {
                        patient,
                        table,
                        broken: f
                            .get_item(&3, vm)?
                            .try_to_value::<Vec<PyObjectRef>>(vm)?
                            .into_iter()
                            .map(|t| {
                                Ok(<[String; 3]>::try_from(strings(t)?)
                                    .map_err(|_| vm.new_value_error("a broken value is 3 strings"))?
                                    .into())
                            })
                            .collect::<PyResult<_>>()?,
                    },
                    "columns" => crate::Finding::Columns {
                        patient,
                        table,
                        unknown: strings(f.get_item(&3, vm)?)?,
                        known: strings(f.get_item(&4, vm)?)?,
                    },
                    _ => crate::Finding::Rows { patient, table, rows: f.get_item(&3, vm)?.try_into_value(vm)? },
                })
            })
            .collect::<PyResult<_>>()?;
        let tables = items[2]
            .clone()
            .try_to_value::<Vec<PyObjectRef>>(vm)?
            .iter()
            .map(|t| {
                let rows = t
                    .get_item(&1, vm)?
                    .try_to_value::<Vec<PyObjectRef>>(vm)?
                    .iter()
                    .map(|r| {
                        let values: Vec<PyObjectRef> = r.get_item(&1, vm)?.try_to_value(vm)?;
                        Ok((r.get_item(&0, vm)?.try_into_value(vm)?, values.iter().map(|v| py_value(vm, v)).collect::<PyResult<_>>()?))
                    })
                    .collect::<PyResult<_>>()?;
                Ok((string(vm, &t.get_item(&0, vm)?)?, rows))
            })
            .collect::<PyResult<_>>()?;
        let patients = items[3]
            .clone()
            .try_to_value::<Vec<PyObjectRef>>(vm)?
            .iter()
            .map(|p| {
                let expected = p.get_item(&2, vm)?;
                let expected_columns = if vm.is_none(&expected) {
                    vec![]
                } else {
                    expected
                        .try_to_value::<Vec<PyObjectRef>>(vm)?
                        .iter()
                        .map(|kv| Ok((string(vm, &kv.get_item(&0, vm)?)?, py_value(vm, &kv.get_item(&1, vm)?)?)))
                        .collect::<PyResult<_>>()?
                };
                Ok(TestPatient {
                    id: p.get_item(&0, vm)?.try_into_value(vm)?,
                    expected_in_population: p.get_item(&1, vm)?.try_to_bool(vm)?,
                    expected_columns,
                })
            })
            .collect::<PyResult<_>>()?;
        Ok(TestData { findings, tables, patients })
    })?;
    Ok(Extracted { dataset, measures, test_data })
}

/// A value tagged by `_quarry_test_data.value_of`.
fn py_value(vm: &VirtualMachine, obj: &PyObjectRef) -> PyResult<PyValue> {
    let items: Vec<PyObjectRef> = obj.clone().try_to_value(vm)?;
    Ok(match string(vm, &items[0])?.as_str() {
        "none" => PyValue::None,
        "bool" => PyValue::Bool(items[1].clone().try_to_bool(vm)?),
        "int" => {
            let text = string(vm, &items[1])?;
            match text.parse::<i128>() {
                Ok(i) => PyValue::Int(i),
                Err(_) => PyValue::Other { type_name: "int".into(), text },
            }
        }
        "float" => PyValue::Float(items[1].clone().try_into_value(vm)?),
        "str" => PyValue::Str(string(vm, &items[1])?),
        "date" => {
            let y: i16 = items[1].clone().try_into_value(vm)?;
            let m: i8 = items[2].clone().try_into_value(vm)?;
            let d: i8 = items[3].clone().try_into_value(vm)?;
            PyValue::Date(jiff::civil::Date::new(y, m, d).map_err(|e| vm.new_value_error(e.to_string()))?)
        }
        _ => PyValue::Other { type_name: string(vm, &items[1])?, text: string(vm, &items[2])? },
    })
}

fn part<T>(vm: &VirtualMachine, obj: PyObjectRef, ok: impl FnOnce(&VirtualMachine, &[PyObjectRef]) -> PyResult<T>) -> PyResult<Part<T>> {
    if vm.is_none(&obj) {
        return Ok(Part::Missing);
    }
    let items: Vec<PyObjectRef> = obj.try_to_value(vm)?;
    match string(vm, &items[0])?.as_str() {
        "error" => Ok(Part::Error(string(vm, &items[1])?)),
        _ => ok(vm, &items).map(Part::Ok),
    }
}

fn string(vm: &VirtualMachine, obj: &PyObjectRef) -> PyResult<String> {
    obj.downcast_ref::<PyStr>().map(|s| s.to_string_lossy().into_owned()).ok_or_else(|| vm.new_type_error("expected a string"))
}

fn node(vm: &VirtualMachine, obj: &PyObjectRef) -> PyResult<Option<NodeId>> {
    if vm.is_none(obj) {
        return Ok(None);
    }
    let index: usize = obj.clone().try_into_value(vm)?;
    state::with(|s| s.graph.node_id(index)).map(Some).ok_or_else(|| vm.new_value_error("not a query-model node"))
}

fn named_nodes(vm: &VirtualMachine, obj: &PyObjectRef) -> PyResult<Vec<(String, NodeId)>> {
    let pairs: Vec<PyObjectRef> = obj.clone().try_to_value(vm)?;
    pairs
        .iter()
        .map(|p| Ok((string(vm, &p.get_item(&0, vm)?)?, node(vm, &p.get_item(&1, vm)?)?.ok_or_else(|| vm.new_value_error("no node"))?)))
        .collect()
}

fn date(vm: &VirtualMachine, obj: &PyObjectRef) -> PyResult<jiff::civil::Date> {
    let y: i16 = obj.get_attr("year", vm)?.try_into_value(vm)?;
    let m: i8 = obj.get_attr("month", vm)?.try_into_value(vm)?;
    let d: i8 = obj.get_attr("day", vm)?.try_into_value(vm)?;
    jiff::civil::Date::new(y, m, d).map_err(|e| vm.new_value_error(e.to_string()))
}

/// `(population_size or None, legacy, timeout or None, constraint node or None)`.
fn dummy_config(vm: &VirtualMachine, obj: &PyObjectRef) -> PyResult<DummyConfig> {
    let size = obj.get_item(&0, vm)?;
    let timeout = obj.get_item(&2, vm)?;
    Ok(DummyConfig {
        population_size: if vm.is_none(&size) { None } else { Some(size.try_into_value(vm)?) },
        legacy: obj.get_item(&1, vm)?.try_to_bool(vm)?,
        timeout: if vm.is_none(&timeout) { None } else { Some(timeout.try_into_value(vm)?) },
        additional_population_constraint: node(vm, &obj.get_item(&3, vm)?)?,
    })
}

/// A fresh interpreter: CPython's standard library and quarry's Python frozen in, no host
/// access, hashing fixed as ehrQL fixes it (`PYTHONHASHSEED=0`).
fn interpreter(argv: &[String]) -> Interpreter {
    let mut settings = Settings::default();
    settings.hash_seed = Some(0);
    settings.import_site = false;
    settings.isolated = true;
    settings.safe_path = true;
    settings.ignore_environment = true;
    settings.write_bytecode = false;
    settings.user_site_directory = false;
    settings.argv = argv.to_vec();
    let builder = InterpreterBuilder::new().settings(settings);
    let defs = native::module_defs(&builder.ctx);
    builder
        .add_native_modules(&defs)
        .add_frozen_modules(rustpython_pylib::FROZEN_STDLIB)
        .add_frozen_modules(rustpython_vm::py_freeze!(dir = "../py"))
        .interpreter()
}

/// `repr()` and `str()` of floats as CPython writes them: the interpreter's own rounds ties
/// between two shortest strings up (`670597701678940.3` where CPython has `.2`).
fn python_float_repr(vm: &VirtualMachine) {
    fn repr(obj: &rustpython_vm::PyObject, vm: &VirtualMachine) -> PyResult<rustpython_vm::PyRef<PyStr>> {
        let value =
            obj.downcast_ref::<rustpython_vm::builtins::PyFloat>().map(|f| f.to_f64()).ok_or_else(|| vm.new_type_error("not a float"))?;
        Ok(vm.ctx.new_str(quarry_queries::pyrepr::float_repr(value)))
    }
    fn method(value: f64) -> String {
        quarry_queries::pyrepr::float_repr(value)
    }
    let float = vm.ctx.types.float_type;
    float.slots.repr.store(Some(repr));
    float.slots.str.store(Some(repr));
    // `float.__repr__(x)` (json's encoder calls it so) reads the type's attribute, not the slot.
    let mut attributes = float.attributes.write();
    for name in ["__repr__", "__str__"] {
        attributes.insert(vm.ctx.intern_str(name), vm.new_method(name, float, method).into());
    }
}

/// A Python exception from the definition as a located [`DefinitionError`].
fn describe(vm: &VirtualMachine, exc: PyBaseExceptionRef, shown: &str, absolute: &str) -> DefinitionError {
    let fallback = |vm: &VirtualMachine, exc: &PyBaseExceptionRef| {
        let kind = exc.class().name().to_string();
        let message = exc.as_object().str(vm).map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        DefinitionError::plain(shown, &kind, message)
    };
    let described = (|| -> PyResult<DefinitionError> {
        let boot = vm.import("_quarry_boot", 0)?;
        let t = boot.get_attr("describe_error", vm)?.call((exc.clone(), absolute), vm)?;
        let text = |o: PyObjectRef| o.downcast::<PyStr>().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let kind = text(t.get_item(&0, vm)?);
        let message = text(t.get_item(&1, vm)?);
        let frames = t.get_item(&2, vm)?;
        let traceback = text(t.get_item(&3, vm)?);
        let n = frames.length(vm)?;
        let (location, source_line) = if n > 0 {
            let last = frames.get_item(&(n - 1), vm)?;
            let file = text(last.get_item(&0, vm)?);
            let line: usize = last.get_item(&1, vm)?.try_into_value(vm)?;
            let source = state::with(|s| s.sandbox.read(&file).ok())
                .and_then(|bytes| String::from_utf8_lossy(&bytes).lines().nth(line.saturating_sub(1)).map(|l| l.trim().to_string()));
            let cwd = state::with(|s| s.sandbox.cwd().to_path_buf());
            let shown_file = Path::new(&file).strip_prefix(&cwd).map(|p| p.display().to_string()).unwrap_or(file);
            (Some(format!("{shown_file}:{line}")), source)
        } else {
            (None, None)
        };
        let exit_code = boot
            .get_attr("exit_code", vm)
            .ok()
            .and_then(|f| f.call((exc.clone(),), vm).ok())
            .and_then(|c| c.try_into_value::<u8>(vm).ok())
            .unwrap_or(10);
        Ok(DefinitionError { kind, message, location, source_line, traceback: Some(traceback), file: shown.to_string(), exit_code })
    })();
    described.unwrap_or_else(|_| fallback(vm, &exc))
}
