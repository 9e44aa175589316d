//! The native modules quarry adds to the embedded Python: `posix` (the sandbox gate under
//! `os`, `pathlib` and imports) and `_quarry` (output, and the query-model builder under
//! quarry's `ehrql` package).

use rustpython_vm::Context;
use rustpython_vm::builtins::PyModuleDef;

pub(crate) mod posix;

/// Native modules left out in favour of CPython's pure-Python implementations.
pub(crate) const REPLACED_BY_PYTHON: [&str; 2] = ["_datetime", "_json"];
pub(crate) mod quarry;

/// Every native module of the interpreter: RustPython's standard library (without host
/// access) and quarry's own.
pub(crate) fn module_defs(ctx: &Context) -> Vec<&'static PyModuleDef> {
    let mut defs = rustpython_stdlib::stdlib_module_defs(ctx);
    // Accelerators whose messages differ from CPython's, where CPython's own pure-Python
    // module takes over when they are absent (`datetime` from `_pydatetime`, `json`'s
    // scanner and encoder): definitions see CPython's exact errors.
    defs.retain(|d| !REPLACED_BY_PYTHON.contains(&d.name.as_str()));
    defs.push(posix::module_def(ctx));
    defs.push(quarry::module_def(ctx));
    defs
}
