# quarry's implementation of ehrQL's query language: datasets, series, frames, tables,
# durations, case expressions. Each operation builds a query-model node in quarry's graph
# through the native `_quarry` module, which validates it as ehrQL's query model does.
#
# Written for quarry from ehrQL's documented behaviour and observed outputs: class names,
# the class hierarchy (so `isinstance` checks behave), method names and error messages are
# ehrQL's, because definitions observe them; the code is quarry's own.

import datetime

import _quarry

from ehrql.codes import BaseCode, BaseMultiCodeString, _code_class_for_tag, _code_tag
from ehrql.exceptions import Error
from ehrql.utils import date_utils

# Series classes by (type, has one row per patient), filled as the classes are defined.
REGISTERED_TYPES = {}

# Whether the definition uses pre-1.0 ehrQL (the `ehrql:v0` image): importing one of its
# `ehrql.tables.beta` modules, which current ehrQL does not have, turns on its spellings
# (`case(..., default=)`, `if_null_then`, `configure_dummy_dataset`). Current definitions
# get current ehrQL's errors for them.
_legacy_api = False


def _enable_legacy_api():
    global _legacy_api
    _legacy_api = True


class _LegacyMethod:
    """A pre-1.0 method: there only for definitions that use the pre-1.0 modules."""

    def __init__(self, method):
        self._method = method

    def __set_name__(self, owner, name):
        self._name = name

    def __get__(self, instance, owner):
        if instance is None:
            return self
        if not _legacy_api:
            raise AttributeError(
                f"'{type(instance).__name__}' object has no attribute '{self._name}'", name=self._name, obj=instance
            )
        return self._method.__get__(instance, owner)

TRAILING_COMMA_HINT = """
This is probably because there is a trailing comma left on one of the values.
For example, you might have:

    x = something(),

where you should have:

    x = something()"""


def _valid_attribute_name(name):
    # ehrQL's `^[A-Za-z]+[A-Za-z0-9_]*$`, without importing `re` on every run.
    return (
        isinstance(name, str)
        and name != ""
        and name.isascii()
        and name[0].isalpha()
        and all(c.isalnum() or c == "_" for c in name)
    )


class _AttributeNamePattern:
    """ehrQL's `VALID_ATTRIBUTE_NAME_RE`: only `match` is offered."""

    pattern = "^[A-Za-z]+[A-Za-z0-9_]*$"

    def match(self, name):
        return _valid_attribute_name(name) or None

    def __repr__(self):
        return f"re.compile({self.pattern!r})"


VALID_ATTRIBUTE_NAME_RE = _AttributeNamePattern()


class DummyDataConfig:
    def __init__(self, population_size=10, legacy=False, timeout=60, additional_population_constraint=None):
        self.population_size = population_size
        self.legacy = legacy
        self.timeout = timeout
        self.additional_population_constraint = additional_population_constraint

    def configure(self, population_size, legacy, timeout, additional_population_constraint):
        """`configure_dummy_data(...)` of a dataset or of measures."""
        self.population_size = population_size
        self.legacy = legacy
        self.timeout = timeout
        self._configured = True
        self.set_additional_population_constraint(additional_population_constraint)

    def set_additional_population_constraint(self, additional_population_constraint):
        if additional_population_constraint is not None:
            validate_patient_series_type(
                additional_population_constraint, types=[bool], context="additional population constraint"
            )
            self.additional_population_constraint = additional_population_constraint._qm_node
        if self.legacy and self.additional_population_constraint is not None:
            raise ValueError("Cannot provide an additional population constraint in legacy mode.")

    def _fields(self):
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._fields() == other._fields()

    def __repr__(self):
        fields = ", ".join(f"{k}={v!r}" for k, v in self._fields().items())
        return f"DummyDataConfig({fields})"


# Class-level defaults, as ehrQL's dataclass exposes them (`DummyDataConfig.population_size`).
DummyDataConfig.population_size = 10
DummyDataConfig.legacy = False
DummyDataConfig.timeout = 60
DummyDataConfig.additional_population_constraint = None


class Dataset:
    """To create a dataset use the `create_dataset` function."""

    def __init__(self):
        object.__setattr__(self, "_variables", {})
        object.__setattr__(self, "dummy_data_config", DummyDataConfig())
        object.__setattr__(self, "_events", {})

    def define_population(self, population_condition):
        if hasattr(self, "population"):
            raise AttributeError("define_population() should be called no more than once")
        validate_patient_series_type(population_condition, types=[bool], context="population definition")
        message = _quarry.population_problem(population_condition._qm_node)
        if message is not None:
            raise Error(message)
        object.__setattr__(self, "population", population_condition)

    def add_column(self, column_name, ehrql_query):
        setattr(self, column_name, ehrql_query)

    def configure_dummy_data(
        self,
        *,
        population_size=DummyDataConfig.population_size,
        legacy=DummyDataConfig.legacy,
        timeout=DummyDataConfig.timeout,
        additional_population_constraint=None,
    ):
        self.dummy_data_config.configure(population_size, legacy, timeout, additional_population_constraint)

    def __setattr__(self, name, value):
        if name == "population":
            raise AttributeError("Cannot set variable 'population'; use define_population() instead")
        _validate_attribute_name(name, self._variables | self._events, context="variable")
        validate_patient_series(value, context=f"variable '{name}'")
        self._variables[name] = value

    @_LegacyMethod
    def configure_dummy_dataset(self, *, population_size=DummyDataConfig.population_size):
        self.configure_dummy_data(population_size=population_size)

    def __getattr__(self, name):
        if name == "add_event_table":
            return self._internal
        if name in self._variables:
            return self._variables[name]
        if name in self._events:
            return self._events[name]
        if name == "population":
            raise AttributeError("A population has not been defined; define one with define_population()")
        raise AttributeError(f"Variable '{name}' has not been defined")

    def _internal(self, name, **event_series):
        _validate_attribute_name(name, self._variables | self._events, context="table")
        self._events[name] = EventTable(self, **event_series)

    def _quarry_compile(self):
        population = self.__dict__.get("population")
        config = self.dummy_data_config
        return (
            None if population is None else population._qm_node,
            [(name, series._qm_node) for name, series in self._variables.items()],
            [(name, [(c, s._qm_node) for c, s in table._series.items()]) for name, table in self._events.items()],
            _dummy_config_tuple(config),
        )


def _dummy_config_tuple(config):
    """What quarry's dummy-data generator needs; the size only when the definition set it
    (otherwise the command line or project.yaml decides)."""
    configured = getattr(config, "_configured", False)
    return (
        config.population_size if configured else None,
        bool(config.legacy),
        float(config.timeout) if configured and config.timeout is not None else None,
        config.additional_population_constraint,
    )


class EventTable:
    def __init__(self, dataset, **series):
        object.__setattr__(self, "_dataset", dataset)
        object.__setattr__(self, "_series", {})
        if not series:
            raise ValueError("event tables must be defined with at least one column")
        for name, value in series.items():
            self.add_column(name, value)

    def add_column(self, name, value):
        _validate_attribute_name(name, self._series, context="column")
        validate_ehrql_series(value, context=f"column {name!r}")
        nodes = [s._qm_node for s in self._series.values()] + [value._qm_node]
        problem = _quarry.event_table_problem(nodes)
        if problem == "patient":
            raise TypeError(
                "event tables must have columns with more than one value per patient; "
                "for single values per patient use dataset variables"
            )
        if problem == "domain":
            raise Error("cannot combine series drawn from different tables; create a new event table for these series")
        self._series[name] = value

    def __setattr__(self, name, value):
        self.add_column(name, value)

    def __getattr__(self, name):
        return self._series[name]


def _validate_attribute_name(name, defined_names, context):
    if name in defined_names:
        raise AttributeError(f"'{name}' is already set and cannot be reassigned")
    if name in ("patient_id", "population", "dummy_data_config"):
        raise AttributeError(f"'{name}' is not an allowed {context} name")
    if not _valid_attribute_name(name):
        raise AttributeError(
            f"{context} names must start with a letter, and contain only "
            f"alphanumeric characters and underscores (you defined a "
            f"{context} '{name}')"
        )


def create_dataset():
    """A dataset defines the patients you want to include and the variables to extract."""
    return Dataset()


# ---------------------------------------------------------------------------------------
# Series


class BaseSeries:
    def __init__(self, _qm_node):
        object.__setattr__(self, "_qm_node", _qm_node)

    def __setattr__(self, name, value):
        raise AttributeError(f"cannot assign to field '{name}'")

    def __delattr__(self, name):
        raise AttributeError(f"cannot delete field '{name}'")

    def __repr__(self):
        return f"{self.__class__.__qualname__}(_qm_node={_quarry.describe(self._qm_node)})"

    def __hash__(self):
        # `==` builds a series, so series would be ill-behaved dict keys.
        raise TypeError(f"unhashable type: {self.__class__.__name__!r}")

    def __bool__(self):
        raise TypeError(
            "The keywords 'and', 'or', and 'not' cannot be used with ehrQL, please "
            "use the operators '&', '|' and '~' instead.\n"
            "(You will also see this error if you try use a chained comparison, "
            "such as 'a < b < c'.)"
        )

    @staticmethod
    def _cast(value):
        return value

    def __eq__(self, other):
        other = self._cast(other)
        return _apply("EQ", self, other)

    def __ne__(self, other):
        other = self._cast(other)
        return _apply("NE", self, other)

    def is_null(self):
        return _apply("IsNull", self)

    def is_not_null(self):
        return self.is_null().__invert__()

    def when_null_then(self, other):
        return case(when(self.is_not_null()).then(self), otherwise=self._cast(other))

    def is_in(self, other):
        if isinstance(other, (tuple, list, set, frozenset, dict)):
            other = frozenset(map(self._cast, other))
            return _wrap_node(_quarry.is_in(self._qm_node, other))
        if isinstance(other, EventSeries):
            as_set = _quarry.aggregate("CombineAsSet", _convert(other))
            return _wrap_node(_quarry.function("In", [_convert(self), as_set]))
        if isinstance(other, PatientSeries):
            raise TypeError(
                "Argument must be an EventSeries (i.e. have many values per patient); "
                "you supplied a PatientSeries with only one value per patient"
            )
        _convert(other)
        raise TypeError(
            f"Invalid type: {type(other).__qualname__}\n"
            "Note `is_in()` usually expects a list of values rather than a single value"
        )

    def is_not_in(self, other):
        return self.is_in(other).__invert__()

    @_LegacyMethod
    def if_null_then(self, other):
        return self.when_null_then(other)

    def map_values(self, mapping, default=None):
        return case(
            *[when(self == from_value).then(to_value) for from_value, to_value in mapping.items()],
            otherwise=default,
        )


class PatientSeries(BaseSeries):
    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        REGISTERED_TYPES[cls._type, True] = cls


class EventSeries(BaseSeries):
    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        REGISTERED_TYPES[cls._type, False] = cls

    def count_distinct_for_patient(self):
        return _apply_aggregate("CountDistinct", self)


class BoolFunctions:
    def __and__(self, other):
        return self._apply_op_to_other("And", other)

    def __rand__(self, other):
        return self.__and__(other)

    def __or__(self, other):
        return self._apply_op_to_other("Or", other)

    def __ror__(self, other):
        return self.__or__(other)

    def _apply_op_to_other(self, op, other):
        other = self._cast(other)
        try:
            return _apply(op, self, other)
        except TypeError as exc:
            # A type error with notes is a real error; one without is Python's cue to try
            # the other operand (`int & series` then says "unsupported operand").
            if getattr(exc, "__notes__", None):
                raise
            return NotImplemented

    def __invert__(self):
        return _apply("Not", self)

    def as_int(self):
        return _apply("CastToInt", self)


class BoolPatientSeries(BoolFunctions, PatientSeries):
    _type = bool


class BoolEventSeries(BoolFunctions, EventSeries):
    _type = bool


class ComparableFunctions:
    def __lt__(self, other):
        other = self._cast(other)
        return _apply("LT", self, other)

    def __le__(self, other):
        other = self._cast(other)
        return _apply("LE", self, other)

    def __ge__(self, other):
        other = self._cast(other)
        return _apply("GE", self, other)

    def __gt__(self, other):
        other = self._cast(other)
        return _apply("GT", self, other)


class ComparableAggregations:
    def minimum_for_patient(self):
        return _apply_aggregate("Min", self)

    def maximum_for_patient(self):
        return _apply_aggregate("Max", self)


class StrFunctions(ComparableFunctions):
    def contains(self, other):
        other = self._cast(other)
        return _apply("StringContains", self, other)


class StrAggregations(ComparableAggregations):
    pass


class StrPatientSeries(StrFunctions, PatientSeries):
    _type = str


class StrEventSeries(StrFunctions, StrAggregations, EventSeries):
    _type = str


class NumericFunctions(ComparableFunctions):
    def __add__(self, other):
        other = self._cast(other)
        return _apply("Add", self, other)

    def __radd__(self, other):
        return self + other

    def __sub__(self, other):
        other = self._cast(other)
        return _apply("Subtract", self, other)

    def __rsub__(self, other):
        return other + -self

    def __mul__(self, other):
        other = self._cast(other)
        return _apply("Multiply", self, other)

    def __rmul__(self, other):
        return self * other

    def __truediv__(self, other):
        other = self._cast(other)
        return _apply("TrueDivide", self, other)

    def __rtruediv__(self, other):
        other = self._cast(other)
        return _apply("TrueDivide", other, self)

    def __floordiv__(self, other):
        other = self._cast(other)
        return _apply("FloorDivide", self, other)

    def __rfloordiv__(self, other):
        other = self._cast(other)
        return _apply("FloorDivide", other, self)

    def __neg__(self):
        return _apply("Negate", self)

    def absolute(self):
        return _apply("Absolute", self)

    def __abs__(self):
        raise Error("Instead of `abs(x)` use `x.absolute()`")

    def as_int(self):
        return _apply("CastToInt", self)

    def as_float(self):
        return _apply("CastToFloat", self)

    def __pow__(self, other):
        other = self._cast(other)
        return _apply("Power", self, other)

    def __rpow__(self, other):
        other = self._cast(other)
        return _apply("Power", other, self)


class NumericAggregations(ComparableAggregations):
    def sum_for_patient(self):
        return _apply_aggregate("Sum", self)

    def mean_for_patient(self):
        return _apply_aggregate("Mean", self)


class IntFunctions(NumericFunctions):
    pass


class IntPatientSeries(IntFunctions, PatientSeries):
    _type = int


class IntEventSeries(IntFunctions, NumericAggregations, EventSeries):
    _type = int


class FloatFunctions(NumericFunctions):
    @staticmethod
    def _cast(value):
        if isinstance(value, int):
            return float(value)
        return value


class FloatPatientSeries(FloatFunctions, PatientSeries):
    _type = float


class FloatEventSeries(FloatFunctions, NumericAggregations, EventSeries):
    _type = float


def parse_date_if_str(value):
    if isinstance(value, str):
        if not _is_iso_date_shape(value):
            raise ValueError(f"Dates must be in YYYY-MM-DD format: {value!r}")
        try:
            return datetime.date.fromisoformat(value)
        except ValueError as e:
            raise ValueError(f"{e} in {value!r}") from None
    return value


def _is_iso_date_shape(value):
    # ehrQL's `^\d{4}-\d{2}-\d{2}$` (`\d` matches any Unicode digit; `$` a final newline).
    text = value[:-1] if value.endswith("\n") else value
    return (
        len(text) == 10
        and text[4] == "-"
        and text[7] == "-"
        and all(c.isdecimal() for i, c in enumerate(text) if i not in (4, 7))
    )


def cast_all_arguments(args):
    series_args = [arg for arg in args if isinstance(arg, BaseSeries)]
    if series_args:
        cast = series_args[0]._cast
        return tuple(map(cast, args))
    return args


class int_property:
    """A read-only property typed as returning an integer series (`date.year`)."""

    def __init__(self, getter):
        self.__doc__ = getter.__doc__
        self.getter = getter

    def __set__(self, instance, value):
        raise AttributeError("can't set attribute")

    def __get__(self, obj, objtype=None):
        if obj is None:
            return self
        return self.getter(obj)


class DateFunctions(ComparableFunctions):
    @staticmethod
    def _cast(value):
        return parse_date_if_str(value)

    @int_property
    def year(self):
        return _apply("YearFromDate", self)

    @int_property
    def month(self):
        return _apply("MonthFromDate", self)

    @int_property
    def day(self):
        return _apply("DayFromDate", self)

    def to_first_of_year(self):
        return _apply("ToFirstOfYear", self)

    def to_first_of_month(self):
        return _apply("ToFirstOfMonth", self)

    def is_before(self, other):
        return self.__lt__(other)

    def is_on_or_before(self, other):
        return self.__le__(other)

    def is_after(self, other):
        return self.__gt__(other)

    def is_on_or_after(self, other):
        return self.__ge__(other)

    def is_between_but_not_on(self, start, end):
        return (self > start) & (self < end)

    def is_on_or_between(self, start, end):
        return (self >= start) & (self <= end)

    def is_during(self, interval):
        start, end = interval
        return self.is_on_or_between(start, end)

    def __sub__(self, other):
        other = self._cast(other)
        if isinstance(other, (datetime.date, DateEventSeries, DatePatientSeries)):
            return DateDifference(self, other)
        return NotImplemented

    def __rsub__(self, other):
        other = self._cast(other)
        if isinstance(other, (datetime.date, DateEventSeries, DatePatientSeries)):
            return DateDifference(other, self)
        return NotImplemented


class DateAggregations(ComparableAggregations):
    def count_episodes_for_patient(self, maximum_gap):
        if isinstance(maximum_gap, days):
            maximum_gap_days = maximum_gap.value
        elif isinstance(maximum_gap, weeks):
            maximum_gap_days = maximum_gap.value * 7
        else:
            raise TypeError("`maximum_gap` must be supplied as `days()` or `weeks()`")
        if not isinstance(maximum_gap_days, int):
            raise ValueError(f"`maximum_gap` must be a single, fixed number of {type(maximum_gap).__name__}")
        return _wrap_node(_quarry.aggregate("CountEpisodes", self._qm_node, maximum_gap_days))


class DatePatientSeries(DateFunctions, PatientSeries):
    _type = datetime.date


class DateEventSeries(DateFunctions, DateAggregations, EventSeries):
    _type = datetime.date


class DateDifference:
    """The difference between two dates, before it is measured in days, weeks, months or years."""

    def __init__(self, lhs, rhs):
        self.lhs = lhs
        self.rhs = rhs

    def __repr__(self):
        return f"DateDifference(lhs={self.lhs!r}, rhs={self.rhs!r})"

    @property
    def days(self):
        return _apply("DateDifferenceInDays", self.lhs, self.rhs)

    @property
    def weeks(self):
        return self.days // 7

    @property
    def months(self):
        return _apply("DateDifferenceInMonths", self.lhs, self.rhs)

    @property
    def years(self):
        return _apply("DateDifferenceInYears", self.lhs, self.rhs)


class Duration:
    def __init__(self, value):
        self.value = value

    def __repr__(self):
        return f"{self.__class__.__qualname__}(value={self.value!r})"

    __hash__ = None

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return False
        return self.value == other.value

    def __ne__(self, other):
        is_equal = self == other
        if isinstance(is_equal, bool):
            return not is_equal
        return is_equal.__invert__()

    def __add__(self, other):
        other = parse_date_if_str(other)
        if isinstance(self.value, int) and isinstance(other, datetime.date):
            return self._date_add_static(other, self.value)
        if isinstance(other, (datetime.date, DateEventSeries, DatePatientSeries)):
            return _wrap_node(self._date_add_node(_convert(other), _convert(self.value)))
        if isinstance(other, self.__class__):
            return self.__class__(self.value + other.value)
        return NotImplemented

    def __sub__(self, other):
        return self.__add__(other.__neg__())

    def __radd__(self, other):
        return self.__add__(other)

    def __rsub__(self, other):
        return self.__neg__().__add__(other)

    def __neg__(self):
        return self.__class__(self.value.__neg__())

    def starting_on(self, date):
        return self._generate_intervals(date, self.value, 1, "starting_on")

    def ending_on(self, date):
        return self._generate_intervals(date, self.value, -1, "ending_on")

    @classmethod
    def _generate_intervals(cls, date, value, sign, method_name):
        date = parse_date_if_str(date)
        if not isinstance(date, datetime.date):
            raise TypeError(f"{cls.__name__}.{method_name}() can only be used with a literal date, not a date series")
        if not isinstance(value, int):
            raise TypeError(
                f"{cls.__name__}.{method_name}() can only be used with a literal integer value, not an integer series"
            )
        if value < 0:
            raise ValueError(f"{cls.__name__}.{method_name}() can only be used with positive numbers")
        return date_utils.generate_intervals(cls._date_add_static, date, value * sign)


class days(Duration):
    _date_add_static = staticmethod(date_utils.date_add_days)

    @staticmethod
    def _date_add_node(date, num_days):
        return _quarry.function("DateAddDays", [date, num_days])


class weeks(Duration):
    _date_add_static = staticmethod(date_utils.date_add_weeks)

    @staticmethod
    def _date_add_node(date, num_weeks):
        num_days = _quarry.function("Multiply", [num_weeks, _quarry.value(7)])
        return _quarry.function("DateAddDays", [date, num_days])


class months(Duration):
    _date_add_static = staticmethod(date_utils.date_add_months)

    @staticmethod
    def _date_add_node(date, num_months):
        return _quarry.function("DateAddMonths", [date, num_months])


class years(Duration):
    _date_add_static = staticmethod(date_utils.date_add_years)

    @staticmethod
    def _date_add_node(date, num_years):
        return _quarry.function("DateAddYears", [date, num_years])


class CodeFunctions:
    def _cast(self, value):
        if isinstance(value, str):
            return self._type(value)
        return value

    def to_category(self, categorisation, default=None):
        return self.map_values(categorisation, default=default)


class CodePatientSeries(CodeFunctions, PatientSeries):
    _type = BaseCode


class CodeEventSeries(CodeFunctions, EventSeries):
    _type = BaseCode


class MultiCodeStringFunctions:
    def _cast(self, value):
        code_type = self._type._code_type()
        if isinstance(value, code_type):
            return value._to_primitive_type()
        if isinstance(value, str) and self._type.is_valid(value):
            return value
        raise TypeError(f"Expecting a {code_type}, or a string prefix of a {code_type}")

    def __eq__(self, other):
        raise TypeError(
            "This column contains multiple clinical codes combined together in a single "
            "string. If you want to know if a particular code is contained in the string, "
            "please use the `contains()` method"
        )

    def __ne__(self, other):
        raise TypeError(
            "This column contains multiple clinical codes combined together in a single "
            "string. If you want to know if a particular code is not contained in the string, "
            "please use the `contains()` method."
        )

    def is_in(self, other):
        raise TypeError(
            "You are attempting to use `.is_in()` on a column that contains multiple "
            "clinical codes joined together. This is not allowed. If you want to know if "
            "the field contains any of the codes from a codelist, then please use "
            "`.contains_any_of(codelist)` instead."
        )

    def is_not_in(self, other):
        raise TypeError(
            "You are attempting to use `.is_not_in()` on a column that contains multiple "
            "clinical codes joined together. This is not allowed. If you want to know if "
            "the column does not contain any of the codes from a codelist, then please "
            "use `~column.contains_any_of(codelist)` instead."
        )

    def contains(self, code):
        code = self._cast(code)
        return _apply("StringContains", self, code)

    def contains_any_of(self, codelist):
        # One n-ary Or of all the tests (ehrQL nests binary Ors; the values are the same).
        conditions = [self.contains(code) for code in codelist]
        if not conditions:
            raise TypeError("reduce() of empty iterable with no initial value")
        if len(conditions) == 1:
            return conditions[0]
        return _wrap_node(_quarry.function("Or", [c._qm_node for c in conditions]))


class MultiCodeStringPatientSeries(MultiCodeStringFunctions, PatientSeries):
    _type = BaseMultiCodeString


class MultiCodeStringEventSeries(MultiCodeStringFunctions, EventSeries):
    _type = BaseMultiCodeString


_SIMPLE_TYPES = {"bool": bool, "int": int, "float": float, "str": str, "date": datetime.date}


def _python_type(tag):
    simple = _SIMPLE_TYPES.get(tag)
    if simple is not None:
        return simple
    return _code_class_for_tag(tag)


def _wrap_node(node):
    """The query-language object for a node: a series of the right class, by type and
    dimension (ehrQL's `_wrap`)."""
    tag, patient_level = _quarry.series_info(node)
    type_ = _python_type(tag)
    cls = REGISTERED_TYPES.get((type_, patient_level))
    if cls is not None:
        return cls(node)
    # Codes and multi-code strings: the nearest registered base class, keeping the type.
    for base in type_.__mro__:
        cls = REGISTERED_TYPES.get((base, patient_level))
        if cls is not None:
            wrapped = cls(node)
            object.__setattr__(wrapped, "_type", type_)
            return wrapped
    raise AssertionError(f"No matching query language class for {type_}")


def _apply(op, *args):
    return _wrap_node(_quarry.function(op, [_convert(a) for a in args]))


def _apply_aggregate(kind, series):
    return _wrap_node(_quarry.aggregate(kind, _convert(series)))


def _convert(arg):
    """A node for a series or a literal (ehrQL's `_convert`)."""
    if arg is None:
        return None
    if isinstance(arg, tuple):
        return tuple(_convert(a) for a in arg)
    if isinstance(arg, BaseSeries):
        return arg._qm_node
    if isinstance(arg, (bool, int, float, datetime.date, str, BaseCode, frozenset)):
        return _quarry.value(arg)
    raise_helpful_error_if_possible(arg)
    raise TypeError(f"Not a valid ehrQL type: {arg!r}")


def Parameter(name, type_):
    return _wrap_node(_quarry.parameter(name, _type_tag(type_)))


def _type_tag(type_):
    for tag, simple in _SIMPLE_TYPES.items():
        if type_ is simple:
            return tag
    tag = _code_tag(type_)
    if tag is None:
        raise TypeError(f"Not a valid ehrQL column type: {type_!r}")
    return tag


# ---------------------------------------------------------------------------------------
# Frames


class BaseFrame:
    def __init__(self, qm_node):
        self._qm_node = qm_node

    def _select_column(self, name):
        return _wrap_node(_quarry.select_column(self._qm_node, name))

    def exists_for_patient(self):
        return _wrap_node(_quarry.aggregate("Exists", self._qm_node))

    def count_for_patient(self):
        return _wrap_node(_quarry.aggregate("Count", self._qm_node))


class PatientFrame(BaseFrame):
    pass


class EventFrame(BaseFrame):
    def where(self, condition):
        return self.__class__(_quarry.filter(self._qm_node, _convert(condition)))

    def except_where(self, condition):
        node = _convert(condition)
        keep = _quarry.function("Or", [_quarry.function("Not", [node]), _quarry.function("IsNull", [node])])
        return self.__class__(_quarry.filter(self._qm_node, keep))

    def sort_by(self, *sort_values):
        string_arg = next((v for v in sort_values if isinstance(v, str)), None)
        if string_arg:
            raise TypeError(
                f"to sort by a column use a table attribute like "
                f'`{self.__class__.__name__}.{string_arg}` rather than the string "{string_arg}"'
            )
        node = self._qm_node
        for series in reversed(sort_values):
            node = _quarry.sort(node, _convert(series))
        cls = make_sorted_event_frame_class(self.__class__)
        return cls(node)


class SortedEventFrameMethods:
    def first_for_patient(self):
        cls = make_patient_frame_class(self.__class__)
        return cls(_quarry.pick(self._qm_node, "first"))

    def last_for_patient(self):
        cls = make_patient_frame_class(self.__class__)
        return cls(_quarry.pick(self._qm_node, "last"))


_sorted_classes = {}
_patient_classes = {}


def make_sorted_event_frame_class(cls):
    if issubclass(cls, SortedEventFrameMethods):
        return cls
    made = _sorted_classes.get(cls)
    if made is None:
        made = type(cls.__name__, (SortedEventFrameMethods, cls), {})
        _sorted_classes[cls] = made
    return made


def make_patient_frame_class(cls):
    made = _patient_classes.get(cls)
    if made is None:
        made = type(cls.__name__, (PatientFrame,), get_all_series_and_properties_from_class(cls))
        _patient_classes[cls] = made
    return made


def _class_attributes(cls):
    # Nearest definition wins, as attribute lookup does.
    attrs = {}
    for base in reversed(cls.__mro__):
        attrs.update(vars(base))
    return attrs


def get_all_series_from_class(cls):
    return {key: value for key, value in _class_attributes(cls).items() if isinstance(value, Series)}


def get_all_series_and_properties_from_class(cls):
    return {key: value for key, value in _class_attributes(cls).items() if isinstance(value, (Series, property))}


def table(cls):
    """Decorator: the class becomes a table of the query model (ehrQL's `@table`)."""
    if PatientFrame in cls.__mro__:
        patient_level = True
    elif EventFrame in cls.__mro__:
        patient_level = False
    else:
        raise Error("Schema class must subclass either `PatientFrame` or `EventFrame`")
    validate_inner_metadata_class(cls)
    meta = getattr(cls, "_meta", None)
    table_name = getattr(meta, "table_name", cls.__name__)
    required_permission = getattr(meta, "required_permission", None)
    catalogue = vars(cls).get("_quarry_catalogue")
    if catalogue is not None:
        node = _quarry.catalogue_table(*catalogue)
    else:
        node = _quarry.define_table(table_name, patient_level, _schema_of(cls), required_permission)
    return cls(node)


def validate_inner_metadata_class(cls):
    inner = {
        name
        for name, value in vars(cls).items()
        if isinstance(value, type) and value.__qualname__ == f"{cls.__qualname__}.{name}"
    }
    unexpected = inner - {"_meta"}
    if unexpected:
        raise Error(f"Expecting a single inner class called '_meta' but found: {', '.join(unexpected)}")
    if "_meta" in inner:
        public = {name for name in dir(cls._meta) if not name.startswith("_")}
        allowed = {"table_name", "required_permission", "activation_filter_field"}
        unexpected = public - allowed
        if unexpected:
            raise Error(
                f"Unexpected attributes on {cls.__qualname__}._meta\n"
                f"Found: {', '.join(unexpected)}\n"
                f"Allowed are: {', '.join(allowed)}"
            )


def _schema_of(cls):
    return [
        (series.name, _type_tag(series.type_), [c._quarry_spec() for c in series.constraints])
        for series in get_all_series_from_class(cls).values()
    ]


def table_from_rows(rows):
    def decorator(cls):
        if cls.__bases__ != (PatientFrame,):
            raise Error("`@table_from_rows` can only be used with `PatientFrame`")
        return cls(_quarry.inline_table(_schema_of(cls), [tuple(row) for row in rows]))

    return decorator


def table_from_file(path, *, columns=None):
    if columns is None:
        return TableFromFileDecorator(path)
    schema = [(name, _type_tag(type_), []) for name, type_ in columns.items()]
    node = _quarry.table_from_file(_path_text(path), schema)
    file_table = type("PatientFrameFromFile", (PatientFrame,), {name: Series(type_) for name, type_ in columns.items()})
    return file_table(node)


def _path_text(path):
    import os

    return os.fspath(path)


class TableFromFileDecorator:
    def __init__(self, path):
        self._path = path

    def __call__(self, target_cls):
        if target_cls.__bases__ != (PatientFrame,):
            raise Error("`@table_from_file` can only be used with `PatientFrame`")
        return target_cls(_quarry.table_from_file(_path_text(self._path), _schema_of(target_cls)))

    def __getattr__(self, name):
        exc = AttributeError(f"{self.__class__.__name__!r} object has no attribute {name!r}")
        exc.add_note(
            "\nDid you forget to supply a `columns` argument to define the columns on your\n"
            "table? For example:\n\n"
            "    my_table = table_from_file(\n"
            '        "outputs/my_table.arrow",\n'
            "        columns={\n"
            '            "age": int,\n'
            '            "sex": str,\n'
            '            "index_date": datetime.date,\n'
            "        }\n"
            "    )\n"
        )
        raise exc


class Series:
    """A column of a table, declared in the table's class."""

    def __init__(
        self,
        type_,
        *,
        description="",
        constraints=(),
        dummy_data_constraints=(),
        required=True,
        implementation_notes_to_add_to_description="",
        notes_for_implementors="",
    ):
        self.type_ = type_
        self.description = description
        self.constraints = constraints
        self.dummy_data_constraints = dummy_data_constraints
        self.required = required
        self.implementation_notes_to_add_to_description = implementation_notes_to_add_to_description
        self.notes_for_implementors = notes_for_implementors

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, instance, owner):
        if instance is None:
            return self
        return instance._select_column(self.name)

    def __class_getitem__(cls, item):
        return cls


def get_tables_from_namespace(namespace):
    for attr, value in vars(namespace).items():
        if isinstance(value, BaseFrame):
            yield attr, value


# ---------------------------------------------------------------------------------------
# case / when


class when:
    def __init__(self, condition):
        condition_node = _convert(condition)
        tag, _ = _quarry.series_info(condition_node)
        if tag != "bool":
            raise TypeError(
                f"invalid case condition:\nExpecting a boolean series, got series of type '{_python_type(tag).__qualname__}'"
            )
        self._condition = condition_node

    def then(self, value):
        return WhenThen(self._condition, _convert(value))


class WhenThen:
    def __init__(self, condition, value):
        self._condition = condition
        self._value = value

    def otherwise(self, value):
        return case(self, otherwise=value)


def case(*when_thens, otherwise=None, **legacy):
    if legacy:
        name = next(iter(legacy))
        if not (_legacy_api and name == "default" and len(legacy) == 1 and otherwise is None):
            raise TypeError(f"case() got an unexpected keyword argument '{name}'")
        otherwise = legacy["default"]
    cases = {}
    for case_ in when_thens:
        if isinstance(case_, when):
            raise TypeError("`when(...)` clause missing a `.then(...)` value in `case()` expression")
        elif isinstance(case_, BaseSeries) and _quarry.is_single_case(case_._qm_node):
            raise TypeError(
                "invalid syntax for `otherwise` in `case()` expression, instead of:\n\n"
                "    case(\n"
                "        when(...).then(...).otherwise(...)\n"
                "    )\n\n"
                "You should write:\n\n"
                "    case(\n"
                "        when(...).then(...),\n"
                "        otherwise=...\n"
                "    )\n\n"
            )
        elif not isinstance(case_, WhenThen):
            raise TypeError("cases must be specified in the form:\n\n    when(<CONDITION>).then(<VALUE>)\n\n")
        elif case_._condition in cases:
            raise TypeError("duplicated condition in `case()` expression")
        else:
            cases[case_._condition] = case_._value
    if not cases:
        raise TypeError("`case()` expression requires at least one case")
    if otherwise is None and all(value is None for value in cases.values()):
        raise TypeError("`case()` expression cannot have all `None` values")
    return _wrap_node(_quarry.case(list(cases.items()), _convert(otherwise)))


def maximum_of(value, other_value, *other_values):
    args = cast_all_arguments((value, other_value, *other_values))
    return _wrap_node(_quarry.function("MaximumOf", [_convert(a) for a in args]))


def minimum_of(value, other_value, *other_values):
    args = cast_all_arguments((value, other_value, *other_values))
    return _wrap_node(_quarry.function("MinimumOf", [_convert(a) for a in args]))


# ---------------------------------------------------------------------------------------
# Validation and messages


def raise_helpful_error_if_possible(arg):
    if isinstance(arg, BaseFrame):
        raise TypeError(f"Expecting a series but got a frame (`{arg.__class__.__name__}`): are you missing a column name?")
    if callable(arg):
        raise TypeError(f"Function referenced but not called: are you missing parentheses on `{arg.__name__}()`?")
    if isinstance(arg, when):
        raise TypeError("Missing `.then(...).otherwise(...)` conditions on a `when(...)` expression")
    if isinstance(arg, WhenThen):
        raise TypeError(
            "Missing `.otherwise(...)` condition on a `when(...).then(...)` expression\n"
            "Note: you can use `.otherwise(None)` to get NULL values"
        )


def validate_ehrql_series(arg, context):
    try:
        raise_helpful_error_if_possible(arg)
    except TypeError as e:
        raise TypeError(f"invalid {context}:\n{e})") from None
    if not isinstance(arg, BaseSeries):
        exc = TypeError(f"invalid {context}:\nExpecting an ehrQL series, got type '{type(arg).__qualname__}'")
        if isinstance(arg, tuple) and len(arg) == 1 and isinstance(arg[0], BaseSeries):
            exc.add_note(TRAILING_COMMA_HINT)
        raise exc


def validate_patient_series(arg, context):
    validate_ehrql_series(arg, context)
    if not isinstance(arg, PatientSeries):
        raise TypeError(f"invalid {context}:\nExpecting a series with only one value per patient")


def validate_patient_series_type(arg, types, context):
    validate_patient_series(arg, context)
    if arg._type not in types:
        types_desc = humanize_list_of_types(types)
        article = "an" if types_desc[0] in "aeiou" else "a"
        raise TypeError(
            f"invalid {context}:\nExpecting {article} {types_desc} series, got series of type '{arg._type.__qualname__}'"
        )


HUMAN_TYPES = {bool: "boolean", int: "integer"}


def humanize_list_of_types(types):
    type_names = [HUMAN_TYPES.get(type_, type_.__qualname__) for type_ in types]
    initial = ", ".join(type_names[:-1])
    return f"{initial} or {type_names[-1]}" if initial else type_names[-1]


def modify_exception(exc):
    operator = _get_operator_error(exc)
    if operator:
        exc.add_note(_format_operator_error_note(operator))
    return exc


def _get_operator_error(exc):
    if not isinstance(exc, TypeError):
        return None
    text = str(exc)
    for prefix in ("unsupported operand type(s) for ", "bad operand type for unary "):
        if text.startswith(prefix):
            rest = text[len(prefix) :]
            if len(rest) >= 2 and rest[0] in "|&~" and rest[1] == ":":
                return rest[0]
    return None


def _format_operator_error_note(operator):
    examples = {
        "|": ("a == b | x == y", "(a == b) | (x == y)"),
        "&": ("a == b & x == y", "(a == b) & (x == y)"),
        "~": ("~ a == b", "~ (a == b)"),
    }
    bad, good = examples[operator]
    return (
        f"\nWARNING: The `{operator}` operator has surprising precedence rules, meaning\n"
        "you may need to add more parentheses to get the correct behaviour.\n\n"
        "For example, instead of writing:\n\n"
        f"    {bad}\n\n"
        "You should write:\n\n"
        f"    {good}"
    )


from ehrql import _lazy  # noqa: E402

_lazy.attach(
    globals(),
    imported=[
        "dataclasses", "functools", "operator", "re", "ChainMap=collections:ChainMap", "Callable=collections.abc:Callable",
        "Path=pathlib:Path", "Any=typing:Any", "TypeVar=typing:TypeVar", "overload=typing:overload",
    ],
    internal=[
        "serializer_registry", "read_rows", "qm", "get_column_specs_from_schema", "get_series_type",
        "has_one_row_per_patient", "validate_population_definition", "strip_indent", "T", "CodeT", "MultiCodeStringT",
        "FloatT", "DateT", "IntT", "StrT", "_wrap", "_build", "_format_typespec", "get_table_schema_from_class",
    ],
)
