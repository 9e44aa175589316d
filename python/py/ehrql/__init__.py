# quarry's `ehrql` package: ehrQL's public API, built on quarry's query model.

from ehrql.codes import codelist_from_csv
from ehrql.debugger import show
from ehrql.measures import INTERVAL, Measures, create_measures
from ehrql.permissions import claim_permissions
from ehrql.query_language import (
    Dataset,
    Error,
    case,
    create_dataset,
    days,
    maximum_of,
    minimum_of,
    months,
    table_from_file,
    weeks,
    when,
    years,
)
from ehrql.user_parameters import get_parameter
from ehrql.utils.log_utils import init_logging
from ehrql import _lazy

# The ehrQL release whose behaviour quarry reproduces.
__version__ = "v1.53.2"

__all__ = [
    "claim_permissions",
    "codelist_from_csv",
    "INTERVAL",
    "Measures",
    "Dataset",
    "Error",
    "case",
    "create_dataset",
    "create_measures",
    "days",
    "get_parameter",
    "show",
    "maximum_of",
    "minimum_of",
    "months",
    "table_from_file",
    "weeks",
    "when",
    "years",
]

_lazy.attach(globals(), imported=["Path=pathlib:Path"])
