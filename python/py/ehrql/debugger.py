# `show()`. In debug mode (`quarry debug`) the element is evaluated over the dummy tables and
# rendered by quarry's Rust side (src/debug.rs), as ehrQL's debugger does; otherwise ehrQL
# prints where it was called and that it was ignored, and so does quarry. quarry's own code.

import sys

import _quarry

_HOW = (
    "\n\nshow() can be used in two ways. Either:\n"
    " - call it with a single argument such as:\n"
    "     show(dataset)\n"
    "     show(patients)\n"
    '     show(clinical_events.date.is_after("2024-01-01"))\n'
    " - or call it with multiple columns/series:\n"
    "     show(patients.sex, patients.date_of_birth)\n"
    '     show(patients.sex == "male", patients.date_of_birth.is_before("2006-01-01"))\n\n'
    "If passing in multiple arguments, they must either have:\n"
    " - one row per patient (e.g. patients.sex, clinical_events.count_for_patient()), or\n"
    " - multiple rows per patient AND be from the same table (e.g. clinical_events.date, "
    "clinical_events.numeric_values)"
)


class DebugError(Exception):
    """show() could not evaluate its element (a missing table file, a bad value)."""


def show(element, *other_elements, label=None, head=None, tail=None):
    line_no = sys._getframe(1).f_lineno
    label = f" {label}" if label else ""
    print(f"Show line {line_no}:{label}", file=sys.stderr)
    if not _quarry.debug_active():
        print(" - show() ignored because we're not running in debug mode", file=sys.stderr)
        return
    status, text = _show(element, other_elements, head or 0, tail or 0)
    if status == "type":
        raise TypeError(_HOW)
    if status == "error":
        raise DebugError(text)
    print(text, file=sys.stderr)


def _show(element, others, head, tail):
    from ehrql.query_language import Dataset, DateDifference

    if not others and isinstance(element, Dataset):
        population = vars(element).get("population")
        variables = [(name, series._qm_node) for name, series in element._variables.items()]
        return _quarry.debug_show("dataset", None if population is None else population._qm_node, variables, head, tail)
    items = []
    for e in (element, *others):
        is_difference = isinstance(e, DateDifference)
        if is_difference:
            e = e.days
        node = getattr(e, "_qm_node", None)
        if not isinstance(node, int):
            return ("type", "")
        items.append((node, is_difference))
    return _quarry.debug_show("elements", items, None, head, tail)


from ehrql import _lazy  # noqa: E402

_lazy.attach(
    globals(),
    imported=[
        "contextlib", "inspect", "typing", "dataclass=dataclasses:dataclass", "BaseSeries=ehrql.query_language:BaseSeries",
        "Dataset=ehrql.query_language:Dataset", "DateDifference=ehrql.query_language:DateDifference",
    ],
    internal=[
        "DebugQueryEngine", "EventColumn", "PatientColumn", "render_value", "qm", "DEBUG_CONTEXT", "activate_debug_context",
        "DebugContext", "elements_are_related_series", "related_columns_to_records", "related_patient_columns_to_records",
        "related_event_columns_to_records", "is_ehrql_object",
    ],
)
