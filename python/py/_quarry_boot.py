# How quarry starts the embedded Python and runs a definition, as ehrQL's `load_module`
# does: the definition is a module named after its file's stem, run with the project root
# as the working directory, `sys.argv = [path, *user_args]`, the definition's directory
# first on `sys.path`, and its output sent to stderr. quarry's own code.

import sys

import _quarry_compat
import _quarry_io


def install(write, sys_path, image):
    """Installs the sandboxed file layer, the guards against runaway nesting and recursion,
    the path-based import system, and the modules `image` (`"v0"`, `"v1"` or None: either)
    has."""
    _quarry_io.install(write)
    _install_depth_guards()
    _quarry_compat.install_builtins()
    _install_image(image)
    import _frozen_importlib

    _frozen_importlib._install_external_importers()
    sys.dont_write_bytecode = True
    sys.path[:] = sys_path
    _reorder_finders()


# The most frames a definition's Python may nest. CPython's default limit is 1,000 and
# a definition may raise it; quarry lets it, up to this cap, which the interpreter's stack
# holds with room to spare: deeper recursion ends in RecursionError, never in a crash.
RECURSION_CAP = 50_000


def _install_depth_guards():
    import builtins

    import _quarry

    def check(source, filename):
        if not isinstance(source, (str, bytes, bytearray)):
            return
        problem = _quarry.source_depth_problem(source)
        if problem is None:
            return
        kind, line, column = problem
        if kind == "brackets":
            text = source if isinstance(source, str) else bytes(source).decode("utf-8", "replace")
            lines = text.splitlines()
            error = SyntaxError("too many nested parentheses", (str(filename), line, column, lines[line - 1] if line <= len(lines) else None))
            raise error
        if kind == "parser":
            raise MemoryError("Parser stack overflowed - Python source too complex to parse")
        raise RecursionError("maximum recursion depth exceeded during compilation")

    real_compile, real_exec, real_eval = builtins.compile, builtins.exec, builtins.eval

    def compile(source, filename, mode, *args, **kwargs):
        check(source, filename)
        return real_compile(source, filename, mode, *args, **kwargs)

    def exec(source, *args, **kwargs):
        check(source, "<string>")
        return real_exec(source, *args, **kwargs)

    def eval(source, *args, **kwargs):
        check(source, "<string>")
        return real_eval(source, *args, **kwargs)

    for f, real in ((compile, real_compile), (exec, real_exec), (eval, real_eval)):
        f.__doc__ = real.__doc__
    builtins.compile, builtins.exec, builtins.eval = compile, exec, eval

    real_setrecursionlimit = sys.setrecursionlimit

    def setrecursionlimit(limit):
        """Set the maximum depth of the Python interpreter stack (quarry: at most 50,000)."""
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > RECURSION_CAP:
            limit = RECURSION_CAP
        real_setrecursionlimit(limit)

    sys.setrecursionlimit = setrecursionlimit
    real_setrecursionlimit(1000)


# The modules quarry has that an ehrQL image does not (read from ehrQL's source: `ehrql:v0` is
# the last ehrQL before 1.0, 5b1b98d of 2023-12-07 — of quarry's modules it has the same as
# 5176506, which the conformance suite's legacy_api chapter ran; `ehrql:v1` is current
# ehrQL, which moved `ehrql.tables.beta` out and dropped `databuilder`). quarry runs
# definitions of either, so an import of one of these from the definition's own code fails as
# it does in that image when the definition runs as the image (`quarry exec ehrql:vN`, which
# is how `quarry run` runs an action), and is noted, for a warning, when it runs as neither
# (the direct commands). Each name covers its submodules.
_NOT_IN_IMAGE = {
    "v0": (
        "ehrql.debugger", "ehrql.exceptions", "ehrql.permissions", "ehrql.user_parameters",
        "ehrql.tables.core", "ehrql.tables.emis", "ehrql.tables.emisv2", "ehrql.tables.raw",
        "ehrql.tables.smoketest", "ehrql.tables.tpp",
    ),
    "v1": ("databuilder", "ehrql.tables.beta"),
}

# Names of the `ehrql` package that an image lacks (its `__init__`), for `from ehrql import
# NAME`. Only these are checked by name: the names inside other modules are not.
_NAMES_NOT_IN_IMAGE = {
    "v0": {"ehrql": ("Error", "claim_permissions", "get_parameter", "show", "table_from_file")},
    "v1": {},
}


def _missing_from(image, name):
    """The outermost module of `name` (itself or a package above it) that `image` lacks."""
    for module in _NOT_IN_IMAGE[image]:
        if name == module or name.startswith(module + "."):
            return module
    return None


def _user_file(globals):
    """The file of the user's code with these globals: a module from a `.py` file of the
    project (None for quarry's ehrQL and the standard library, frozen in with no file)."""
    file = globals.get("__file__") if isinstance(globals, dict) else None
    return file if isinstance(file, str) and file.endswith(".py") else None


def _install_image(image):
    import builtins
    import importlib

    import _quarry

    def check(name, fromlist, file):
        for lacking in _NOT_IN_IMAGE if image is None else (image,):
            missing = _missing_from(lacking, name)
            if missing is not None:
                if image is not None:
                    raise ModuleNotFoundError(f"No module named {missing!r}", name=missing)
                _quarry.note_missing_from(lacking, name, file)
            names = _NAMES_NOT_IN_IMAGE[lacking].get(name, ())
            for item in fromlist or ():
                if not isinstance(item, str):
                    continue
                if item in names or _missing_from(lacking, f"{name}.{item}") is not None:
                    if image is not None:
                        raise ImportError(f"cannot import name {item!r} from {name!r} (unknown location)", name=name)
                    _quarry.note_missing_from(lacking, f"{name}.{item}", file)

    real_import = builtins.__import__

    def __import__(name, globals=None, locals=None, fromlist=(), level=0):
        file = _user_file(globals) if level == 0 else None
        if file is not None:
            check(name, fromlist, file)
        return real_import(name, globals, locals, fromlist, level)

    __import__.__doc__ = real_import.__doc__
    builtins.__import__ = __import__

    real_import_module = importlib.import_module

    def import_module(name, package=None):
        file = _user_file(sys._getframe(1).f_globals)
        if file is not None and isinstance(name, str) and not name.startswith("."):
            check(name, (), file)
        return real_import_module(name, package)

    import_module.__doc__ = real_import_module.__doc__
    importlib.import_module = import_module


# Modules CPython 3.13 freezes into its binary: a project file of the same name cannot
# shadow these. Every other standard-library module is found after `sys.path`, as CPython
# finds its stdlib directory after the script's directory.
_ALWAYS_FROZEN = {
    "abc", "codecs", "encodings", "io", "_collections_abc", "_sitebuiltins", "genericpath", "ntpath",
    "posixpath", "os", "os.path", "site", "stat", "importlib.util", "importlib.machinery", "runpy",
    "zipimport", "_quarry_io", "_quarry_posix", "_quarry_boot", "_quarry_compat",
}


class _StdlibAfterPath:
    """Finds the frozen standard library after the project's own modules."""

    def __init__(self, frozen):
        self._frozen = frozen

    def find_spec(self, name, path=None, target=None):
        return _with_after_import(self._frozen.find_spec(name, path, target))

    def invalidate_caches(self):
        pass


class _CoreFrozen:
    def __init__(self, frozen):
        self._frozen = frozen

    def find_spec(self, name, path=None, target=None):
        root = name.partition(".")[0]
        if name in _ALWAYS_FROZEN or root in _ALWAYS_FROZEN or root == "ehrql" or root.startswith("_"):
            return _with_after_import(self._frozen.find_spec(name, path, target))
        return None

    def invalidate_caches(self):
        pass


def _configure_logging(module):
    """Sets `logging` up as ehrQL's command line has it while a definition runs:
    `[level  ] message` lines on stderr from INFO up (ehrQL configures logging when `ehrql`
    is imported; quarry does it when a definition first needs `logging`)."""
    from ehrql.utils.log_utils import init_logging

    init_logging()
    root = module.getLogger()
    root.setLevel(min(root.level, module.INFO))


_AFTER_IMPORT = {"logging": _configure_logging, **_quarry_compat.AFTER_IMPORT}


class _AfterImport:
    """A loader that runs a module, then quarry's set-up for it."""

    def __init__(self, loader, then):
        self._loader = loader
        self._then = then

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        self._then(module)


def _with_after_import(spec):
    if spec is not None and spec.name in _AFTER_IMPORT:
        spec.loader = _AfterImport(spec.loader, _AFTER_IMPORT[spec.name])
    return spec


def _reorder_finders():
    from importlib.machinery import BuiltinImporter, FrozenImporter, PathFinder

    sys.meta_path[:] = [BuiltinImporter, _CoreFrozen(FrozenImporter), PathFinder, _StdlibAfterPath(FrozenImporter)]


def run_definition(shown_path, stem, argv):
    """Runs the definition file as ehrQL does and returns its module."""
    import importlib.util

    sys.argv = list(argv)
    spec = importlib.util.spec_from_file_location(stem, shown_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def describe_error(exc, definition_file):
    """(class name, message, [(file, line, function, source)], formatted traceback) of an
    exception raised while loading the definition, its traceback trimmed to the user's own
    code as ehrQL trims it."""
    import traceback

    name = type(exc).__name__
    module = type(exc).__module__
    if module not in ("builtins", "__main__", None):
        name = f"{module}.{name}"
    tb = exc.__traceback__
    if isinstance(exc, SyntaxError) and exc.filename == definition_file:
        tb = None
    else:
        first = tb
        while first is not None and first.tb_frame.f_code.co_filename != definition_file:
            first = first.tb_next
        if first is not None:
            # The user's frames up to the first of ehrQL's (or the standard library's). Frames
            # of quarry's own start-up shims (the import and depth hooks) between two of the
            # user's are left out: CPython has no such frames, so an error in a module the
            # definition imports shows the import line and then the module's line, as there.
            last = first
            while True:
                after = last.tb_next
                while after is not None and after.tb_frame.f_code.co_filename.startswith("_quarry"):
                    after = after.tb_next
                if after is None or not _is_user_file(after.tb_frame.f_code.co_filename):
                    break
                last.tb_next = after
                last = after
            last.tb_next = None
        tb = first
    frames = []
    walk = tb
    while walk is not None:
        code = walk.tb_frame.f_code
        frames.append((code.co_filename, walk.tb_lineno, code.co_name))
        walk = walk.tb_next
    if isinstance(exc, SyntaxError) and exc.filename and exc.lineno:
        frames.append((exc.filename, exc.lineno, "<module>"))
    text = "".join(traceback.format_exception(type(exc), value=exc, tb=tb))
    message = str(exc) if not isinstance(exc, SyntaxError) else (exc.msg or "")
    return name, message, frames, text


def _is_user_file(filename):
    # The definition, its sibling modules and the project's packages are files; quarry's
    # ehrQL and the standard library are frozen into the binary and named by module.
    return filename.endswith(".py")


def exit_code(exc):
    """ehrQL's exit code for an exception raised while loading a definition."""
    return getattr(type(exc), "_quarry_exit_code", 10)


def extract(module):
    """The dataset, measures and assurance test data a definition module made, as quarry reads
    them: `None` (not defined), `("error", message)` or `("ok", ...)`, as ehrQL's loader decides."""
    from ehrql.measures.measures import Measures
    from ehrql.query_language import Dataset

    namespace = vars(module)
    dataset = measures = None
    if "dataset" in namespace:
        value = namespace["dataset"]
        if not isinstance(value, Dataset):
            dataset = ("error", "'dataset' must be an instance of ehrql.Dataset")
        elif "population" not in vars(value):
            dataset = ("error", "A population has not been defined; define one with define_population()")
        else:
            dataset = ("ok", *value._quarry_compile())
    if "measures" in namespace:
        value = namespace["measures"]
        if not isinstance(value, Measures):
            measures = ("error", "'measures' must be an instance of ehrql.Measures")
        elif len(value) == 0:
            measures = ("error", "No measures defined")
        else:
            measures = ("ok", *value._quarry_compile())
    test_data = None
    if "test_data" in namespace and dataset is not None and dataset[0] == "ok":
        import _quarry_test_data as assurance

        population, variables, events = dataset[1], dataset[2], dataset[3]
        nodes = [population, *(n for _, n in variables), *(n for _, columns in events for _, n in columns)]
        try:
            test_data = ("ok", *assurance.extract(nodes, namespace["test_data"]))
        except assurance.AssuranceDataError as exc:
            test_data = ("error", str(exc))
        except Exception as exc:
            test_data = ("error", f"test_data: {type(exc).__name__}: {exc}")
    return dataset, measures, test_data
