# `show()`. Outside debug mode ehrQL prints where it was called and that it was ignored;
# quarry does the same.

import sys


def show(element, *other_elements, label=None, head=None, tail=None):
    line_no = sys._getframe(1).f_lineno
    label = f" {label}" if label else ""
    print(f"Show line {line_no}:{label}", file=sys.stderr)
    print(" - show() ignored because we're not running in debug mode", file=sys.stderr)


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
