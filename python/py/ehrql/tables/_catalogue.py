# Builds a table module (`ehrql.tables.core`, `ehrql.tables.tpp`, …) from quarry's table
# catalogue (queries/src/tables/tables.txt): one `@table` class per table, with its columns
# as `Series` and ehrQL's helper methods; re-exported tables are the same objects as in the
# module that declares them, as in ehrQL.

import importlib

import _quarry

from ehrql.query_language import EventFrame, PatientFrame, Series, _python_type, table
from ehrql import _lazy
from ehrql.tables._helpers import MIXINS

# Where the names each of ehrQL's table modules imports come from.
_SOURCES = {
    "datetime": "datetime",
    "functools": "functools",
    "operator": "operator",
    "ehrql": "ehrql",
    "case": "ehrql.query_language:case",
    "when": "ehrql.query_language:when",
    "Constraint": "ehrql.query_model.table_schema:Constraint",
    "EventFrame": "ehrql.query_language:EventFrame",
    "PatientFrame": "ehrql.query_language:PatientFrame",
    "Series": "ehrql.query_language:Series",
    "table": "ehrql.query_language:table",
    **{
        code: f"ehrql.codes:{code}"
        for code in (
            "BNFCode", "CTV3Code", "DMDCode", "ICD10Code", "OPCS4Code", "SNOMEDCTCode", "ICD10MultiCodeString",
            "OPCS4MultiCodeString",
        )
    },
}

# The names each module binds by importing them (from ehrQL's source), beyond its tables.
_IMPORTS = {
    "ehrql.tables.core": "datetime functools operator DMDCode ICD10Code SNOMEDCTCode Constraint EventFrame PatientFrame Series table",
    "ehrql.tables.tpp": (
        "datetime ehrql case when CTV3Code ICD10Code ICD10MultiCodeString OPCS4Code OPCS4MultiCodeString SNOMEDCTCode "
        "Constraint EventFrame PatientFrame Series table"
    ),
    "ehrql.tables.emis": "datetime ehrql SNOMEDCTCode Constraint EventFrame PatientFrame Series table",
    "ehrql.tables.emisv2": "datetime Constraint EventFrame Series table",
    "ehrql.tables.smoketest": "datetime Constraint PatientFrame Series table",
    "ehrql.tables.raw.core": "datetime ICD10Code EventFrame Series table",
    "ehrql.tables.raw.tpp": "datetime DMDCode ICD10Code Constraint EventFrame Series table",
}

# Other module-level names of ehrQL's table modules.
_INTERNAL = {"ehrql.tables.tpp": ["eca_diagnosis_description"]}
_CONSTANTS = {"ehrql.tables.emisv2": {"exclude_from_docs": True}}


def _mixin(module, name, extends):
    """The helpers of a table's class: its own, or those of the table it extends."""
    mixin = MIXINS.get((module, name))
    while mixin is None and extends is not None:
        mixin = MIXINS.get(tuple(extends))
        extends = next((e[6] for e in _quarry.catalogue(extends[0]) if e[0] == extends[1]), None)
    return mixin


def populate(namespace):
    module = namespace["__name__"]
    names = []
    for name, patient_level, columns, description, source_module, source_name, extends, _ in _quarry.catalogue(module):
        if source_module != module:
            namespace[name] = getattr(importlib.import_module(source_module), source_name)
        else:
            base = PatientFrame if patient_level else EventFrame
            mixin = _mixin(module, name, extends)
            attrs = {"__module__": module, "__qualname__": name, "__doc__": description, "_quarry_catalogue": (module, name)}
            for column, tag, column_description in columns:
                attrs[column] = Series(_python_type(tag), description=column_description)
            bases = (mixin, base) if mixin is not None else (base,)
            namespace[name] = table(type(name, bases, attrs))
        names.append(name)
    namespace["__all__"] = sorted(names)
    namespace.update(_CONSTANTS.get(module, {}))
    imported = [f"{name}={_SOURCES[name]}" for name in _IMPORTS.get(module, "").split()]
    _lazy.attach(namespace, imported=imported, internal=_INTERNAL.get(module, ()))
