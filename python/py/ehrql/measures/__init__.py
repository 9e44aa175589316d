from ehrql.exceptions import MeasuresTimeout
from ehrql.measures.measures import INTERVAL, Measures, create_measures
from ehrql import _lazy

__all__ = [
    "combine_measure_tables_as_results",
    "get_column_specs_for_measures",
    "get_measure_results",
    "get_table_specs_for_measures",
    "apply_sdc_to_measure_results",
    "DummyMeasuresDataGenerator",
    "INTERVAL",
    "Measures",
    "MeasuresTimeout",
    "create_measures",
    "split_measure_results_into_tables",
]

_lazy.attach(
    globals(),
    internal=[
        "DummyMeasuresDataGenerator", "combine_measure_tables_as_results", "get_column_specs_for_measures",
        "get_measure_results", "get_table_specs_for_measures", "split_measure_results_into_tables",
        "apply_sdc_to_measure_results",
    ],
)
