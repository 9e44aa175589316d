//! quarry's `posix` module: the operating-system module CPython's `os`, `os.path`, `pathlib`,
//! `glob` and the import system build on, answered by the sandbox gate.
//!
//! The native part is only the gate (`_q_*` functions); the module's Python surface
//! (`stat_result`, `stat`, `listdir`, `scandir`, `environ`, the refused operations) is
//! quarry's `_quarry_posix.py`, run into this module when it is created.

pub(crate) use module::module_def;

use rustpython_vm::builtins::PyBaseExceptionRef;
use rustpython_vm::{PyObjectRef, VirtualMachine};

use crate::sandbox::FsError;

/// The `OSError` subclass CPython raises for `errno`, with `filename` set.
pub(crate) fn fs_error(vm: &VirtualMachine, e: FsError) -> PyBaseExceptionRef {
    let class = match e.errno {
        crate::sandbox::ENOENT => "FileNotFoundError",
        crate::sandbox::EACCES | 1 => "PermissionError",
        crate::sandbox::ENOTDIR => "NotADirectoryError",
        crate::sandbox::EISDIR => "IsADirectoryError",
        _ => "OSError",
    };
    let args: Vec<PyObjectRef> = vec![vm.ctx.new_int(e.errno).into(), vm.ctx.new_str(e.message).into(), vm.ctx.new_str(e.path).into()];
    match vm.builtins.get_attr(class, vm).and_then(|c| c.downcast().map_err(|_| vm.new_type_error("not a type"))) {
        Ok(cls) => vm.invoke_exception(cls, args).unwrap_or_else(|e| e),
        Err(e) => e,
    }
}

#[rustpython_vm::pymodule(name = "posix")]
mod module {
    use rustpython_vm::builtins::{PyBaseExceptionRef, PyBytesRef, PyModule, PyStrRef};
    use rustpython_vm::scope::Scope;
    use rustpython_vm::{Py, PyObjectRef, PyResult, VirtualMachine};

    use super::fs_error;
    use crate::sandbox::Sandbox;
    use crate::state;

    pub(crate) fn module_exec(vm: &VirtualMachine, module: &Py<PyModule>) -> PyResult<()> {
        __module_exec(vm, module);
        let code = rustpython_vm::import::make_frozen(vm, "_quarry_posix")?;
        vm.run_code_obj(code, Scope::with_builtins(None, module.dict(), vm))?;
        Ok(())
    }

    #[pyfunction]
    fn _q_stat(path: PyStrRef, follow_symlinks: bool, vm: &VirtualMachine) -> PyResult<PyObjectRef> {
        let st = state::with(|s| s.sandbox.stat(&path.to_string_lossy(), follow_symlinks)).map_err(|e| fs_error(vm, e))?;
        let ns = |v: i128| -> PyObjectRef { vm.ctx.new_int(v).into() };
        Ok(vm
            .ctx
            .new_tuple(vec![
                vm.ctx.new_int(st.mode).into(),
                vm.ctx.new_int(st.ino).into(),
                vm.ctx.new_int(st.dev).into(),
                vm.ctx.new_int(st.nlink).into(),
                vm.ctx.new_int(st.uid).into(),
                vm.ctx.new_int(st.gid).into(),
                vm.ctx.new_int(st.size).into(),
                ns(st.atime_ns),
                ns(st.mtime_ns),
                ns(st.ctime_ns),
            ])
            .into())
    }

    #[pyfunction]
    fn _q_listdir(path: PyStrRef, vm: &VirtualMachine) -> PyResult<PyObjectRef> {
        let names = state::with(|s| s.sandbox.listdir(&path.to_string_lossy())).map_err(|e| fs_error(vm, e))?;
        Ok(vm.ctx.new_list(names.into_iter().map(|n| vm.ctx.new_str(n).into()).collect()).into())
    }

    #[pyfunction]
    fn _q_read(path: PyStrRef, vm: &VirtualMachine) -> PyResult<PyBytesRef> {
        let bytes = state::with(|s| s.sandbox.read(&path.to_string_lossy())).map_err(|e| fs_error(vm, e))?;
        Ok(vm.ctx.new_bytes(bytes))
    }

    #[pyfunction]
    fn _q_readlink(path: PyStrRef, vm: &VirtualMachine) -> PyResult<String> {
        state::with(|s| s.sandbox.readlink(&path.to_string_lossy())).map_err(|e| fs_error(vm, e))
    }

    #[pyfunction]
    fn _q_getcwd() -> String {
        state::with(|s| s.sandbox.cwd().display().to_string())
    }

    #[pyfunction]
    fn _q_environ(vm: &VirtualMachine) -> PyObjectRef {
        let pairs = state::with(|s| s.environ.clone());
        let items = pairs.into_iter().map(|(k, v)| vm.ctx.new_tuple(vec![vm.ctx.new_str(k).into(), vm.ctx.new_str(v).into()]).into());
        vm.ctx.new_list(items.collect()).into()
    }

    /// Raises the sandbox's `PermissionError` for an operation that would write, delete,
    /// run a program or leave the project.
    #[pyfunction]
    fn _q_refuse(path: PyObjectRef, vm: &VirtualMachine) -> PyBaseExceptionRef {
        let shown = match path.downcast_ref::<rustpython_vm::builtins::PyStr>() {
            Some(s) => s.to_string_lossy().into_owned(),
            None => path.repr(vm).map(|r| r.to_string_lossy().into_owned()).unwrap_or_default(),
        };
        fs_error(vm, Sandbox::refuse(&shown))
    }

    #[pyfunction]
    fn _q_getpid() -> u32 {
        std::process::id()
    }

    #[pyfunction]
    fn _q_cpu_count() -> usize {
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    }

    #[pyfunction]
    fn _q_urandom(n: usize, vm: &VirtualMachine) -> PyResult<PyBytesRef> {
        let mut buf = vec![0u8; n];
        getrandom::fill(&mut buf).map_err(|e| vm.new_os_error(format!("urandom: {e}")))?;
        Ok(vm.ctx.new_bytes(buf))
    }
}
