# quarry's `ehrql.measures.measures`: `Measures`, `INTERVAL` and `create_measures`, with
# ehrQL's validation and messages.

import datetime

from ehrql.query_language import (
    VALID_ATTRIBUTE_NAME_RE,
    DummyDataConfig,
    Duration,
    Error,
    Parameter,
    _dummy_config_tuple,
    validate_patient_series,
    validate_patient_series_type,
)


class _Interval(tuple):
    """The placeholder for the interval a measure is calculated over (a namedtuple in
    ehrQL: `INTERVAL.start_date`, `INTERVAL.end_date`, and unpacking, work alike)."""

    __slots__ = ()
    _fields = ("start_date", "end_date")

    def __new__(cls, start_date, end_date):
        return tuple.__new__(cls, (start_date, end_date))

    start_date = property(lambda self: self[0], doc="Placeholder for the start date (inclusive) of the interval.")
    end_date = property(lambda self: self[1], doc="Placeholder for the end date (inclusive) of the interval.")

    def __repr__(self):
        return f"INTERVAL(start_date={self[0]!r}, end_date={self[1]!r})"

    def _asdict(self):
        return {"start_date": self[0], "end_date": self[1]}


_Interval.__name__ = "INTERVAL"
_Interval.__qualname__ = "INTERVAL"

INTERVAL = _Interval(
    start_date=Parameter("interval_start_date", datetime.date),
    end_date=Parameter("interval_end_date", datetime.date),
)


class Measure:
    def __init__(self, name, numerator, denominator, group_by, intervals):
        self.name = name
        self.numerator = numerator
        self.denominator = denominator
        self.group_by = group_by
        self.intervals = intervals

    def __repr__(self):
        return (
            f"Measure(name={self.name!r}, numerator={self.numerator!r}, denominator={self.denominator!r}, "
            f"group_by={self.group_by!r}, intervals={self.intervals!r})"
        )


class DisclosureControlConfig:
    def __init__(self, enabled=True):
        self.enabled = enabled

    def __repr__(self):
        return f"DisclosureControlConfig(enabled={self.enabled!r})"

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self.enabled == other.enabled


class MeasureCollection:
    def __init__(self, measures):
        self.measures = measures

    def __iter__(self):
        return iter(self.measures)


class Measures:
    """Create a collection of measures with `create_measures`."""

    RESERVED_NAMES = {"measure", "numerator", "denominator", "ratio", "interval_start", "interval_end"}

    def __init__(self):
        self._measures = {}
        self._defaults = {}
        self.dummy_data_config = DummyDataConfig(population_size=None)
        self.disclosure_control_config = DisclosureControlConfig()

    def define_measure(self, name, numerator=None, denominator=None, group_by=None, intervals=None):
        supplied = {"numerator": numerator, "denominator": denominator, "group_by": group_by, "intervals": intervals}
        kwargs = {key: value if value is not None else self._defaults.get(key) for key, value in supplied.items()}
        self._validate_kwargs(kwargs)
        if kwargs["group_by"] is None:
            kwargs["group_by"] = {}
        for key, value in kwargs.items():
            if value is None:
                raise Error(f"No value supplied for '{key}' and no default defined")
        if not VALID_ATTRIBUTE_NAME_RE.match(name):
            raise Error(
                "Measure names must start with a letter and contain only alphanumeric characters "
                f"and underscores, got: {name!r}"
            )
        if name in self._measures:
            raise Error(f"Measure already defined with name: {name}")
        for group_name, definition in get_all_group_by_columns(self._measures.values()).items():
            if group_name not in kwargs["group_by"]:
                continue
            if kwargs["group_by"][group_name]._qm_node != definition:
                raise Error(f"Inconsistent definition for `group_by` column: {group_name}")
        self._measures[name] = Measure(
            name=name,
            numerator=kwargs["numerator"]._qm_node,
            denominator=kwargs["denominator"]._qm_node,
            group_by={group_name: series._qm_node for group_name, series in kwargs["group_by"].items()},
            intervals=tuple(sorted(set(kwargs["intervals"]))),
        )

    def define_defaults(self, numerator=None, denominator=None, group_by=None, intervals=None):
        kwargs = {"numerator": numerator, "denominator": denominator, "group_by": group_by, "intervals": intervals}
        if self._defaults:
            raise Error("Defaults already set; cannot call `define_defaults()` more than once")
        self._validate_kwargs(kwargs)
        self._defaults = kwargs

    def _validate_kwargs(self, kwargs):
        self._validate_num_denom(kwargs["numerator"], "numerator")
        self._validate_num_denom(kwargs["denominator"], "denominator")
        self._validate_intervals(kwargs["intervals"])
        self._validate_group_by(kwargs["group_by"])

    def _validate_num_denom(self, value, name):
        if value is None:
            return
        validate_patient_series_type(value, types=(bool, int), context=name)

    def _validate_intervals(self, intervals):
        if intervals is None:
            return
        if isinstance(intervals, Duration):
            raise Error(
                f"You must supply a date using `{intervals!r}.starting_on('<DATE>')`"
                f" or `{intervals!r}.ending_on('<DATE>')`"
            )
        if not isinstance(intervals, list):
            raise Error(f"`intervals` must be a list, got '{type(intervals)}': {intervals!r}")
        for interval in intervals:
            self._validate_interval(interval)

    def _validate_interval(self, interval):
        if (
            not isinstance(interval, tuple)
            or len(interval) != 2
            or not all(isinstance(i, datetime.date) for i in interval)
        ):
            raise Error(f"`intervals` must contain pairs of dates, got: {interval!r}")
        if interval[0] > interval[1]:
            raise Error(f"Interval start date must be before end date, got: {interval!r}")

    def _validate_group_by(self, group_by):
        if group_by is None:
            return
        if not isinstance(group_by, dict):
            raise Error(f"`group_by` must be a dictionary, got '{type(group_by)}': {group_by!r}")
        for key, value in group_by.items():
            if not isinstance(key, str):
                raise Error(f"`group_by` names must be strings, got '{type(key)}': {key!r}")
            if not VALID_ATTRIBUTE_NAME_RE.match(key):
                raise Error(
                    "`group_by` names must start with a letter and contain only alphanumeric "
                    f"characters and underscores, got: {key!r}"
                )
            validate_patient_series(value, context=f"`group_by` value for '{key}'")
        disallowed = self.RESERVED_NAMES.intersection(group_by)
        if disallowed:
            raise Error(f"disallowed `group_by` column name: {', '.join(disallowed)}")

    def configure_dummy_data(
        self,
        *,
        population_size=DummyDataConfig.population_size,
        legacy=DummyDataConfig.legacy,
        timeout=DummyDataConfig.timeout,
        additional_population_constraint=None,
    ):
        self.dummy_data_config.configure(population_size, legacy, timeout, additional_population_constraint)

    def configure_disclosure_control(self, *, enabled=True):
        self.disclosure_control_config.enabled = enabled

    def _compile(self):
        return MeasureCollection(measures=list(self._measures.values()))

    def __iter__(self):
        return iter(self._measures.values())

    def __len__(self):
        return len(self._measures)

    def _quarry_compile(self):
        return (
            [
                (m.name, m.numerator, m.denominator, list(m.group_by.items()), [tuple(i) for i in m.intervals])
                for m in self._measures.values()
            ],
            _dummy_config_tuple(self.dummy_data_config),
            bool(self.disclosure_control_config.enabled),
        )


def create_measures():
    """A measures definition must define a collection of measures called `measures`."""
    return Measures()


def get_all_group_by_columns(measures):
    return {name: column for measure in measures for name, column in measure.group_by.items()}


from ehrql import _lazy  # noqa: E402

_lazy.attach(
    globals(),
    imported=[
        "dataclasses", "namedtuple=collections:namedtuple", "BoolPatientSeries=ehrql.query_language:BoolPatientSeries",
        "IntPatientSeries=ehrql.query_language:IntPatientSeries", "PatientSeries=ehrql.query_language:PatientSeries",
    ],
    internal=["Series", "get_input_nodes", "get_input_nodes_for_measure_collection"],
)
