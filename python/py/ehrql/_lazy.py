# Names that ehrQL's modules bind only because they import them (`datetime`, `Path`,
# `ChainMap`, …) and names of ehrQL's internal machinery. Python lets a definition import
# them from those modules, so quarry's modules offer them too — lazily, so that a definition
# pays for `typing` or `dataclasses` only if it asks for them. ehrQL's internals that quarry
# does not have (its serializer, query engines, dummy-data generators) import as objects
# that raise a clear error when used.


class Internal:
    """One of ehrQL's internals that quarry does not provide."""

    def __init__(self, qualified_name):
        self._name = qualified_name

    def _refuse(self, *args, **kwargs):
        raise NotImplementedError(
            f"{self._name} is part of ehrQL's internal machinery, which quarry does not provide; "
            "definitions that run on quarry use ehrQL's public API"
        )

    __call__ = _refuse

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        self._refuse()

    def __repr__(self):
        return f"<ehrQL internal {self._name} (not provided by quarry)>"


def attach(namespace, imported=(), internal=()):
    """Gives a module a `__getattr__` for `imported` names (`"name=module"` or
    `"name=module:attribute"`) and `internal` ones."""
    sources = {}
    for spec in imported:
        name, _, source = spec.partition("=")
        sources[name] = source or name
    internal = set(internal)
    module_name = namespace["__name__"]

    def __getattr__(name):
        source = sources.get(name)
        if source is not None:
            import importlib

            module, _, attribute = source.partition(":")
            value = importlib.import_module(module)
            if attribute:
                value = getattr(value, attribute)
            namespace[name] = value
            return value
        if name in internal:
            value = Internal(f"{module_name}.{name}")
            namespace[name] = value
            return value
        raise AttributeError(f"module {module_name!r} has no attribute {name!r}")

    namespace["__getattr__"] = __getattr__
