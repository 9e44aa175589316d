from ehrql.query_language import EventFrame, PatientFrame, Series, table, table_from_file, table_from_rows
from ehrql.query_model.table_schema import Constraint

__all__ = [
    "Constraint",
    "EventFrame",
    "PatientFrame",
    "Series",
    "table",
    "table_from_rows",
    "table_from_file",
]
