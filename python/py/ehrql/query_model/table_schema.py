# Column constraints of ehrQL's table schemas (`Constraint.NotNull()`, …), for tables a
# definition declares itself. quarry's own code.


class BaseConstraint:
    _fields = ()

    def __init__(self, *args, **kwargs):
        names = self._fields
        values = dict(self._defaults) if hasattr(self, "_defaults") else {}
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__}.__init__() takes {len(names) + 1} positional arguments but {len(args) + 1} were given")
        values.update(zip(names, args))
        for key, value in kwargs.items():
            if key not in names:
                raise TypeError(f"{type(self).__name__}.__init__() got an unexpected keyword argument '{key}'")
            values[key] = value
        missing = [n for n in names if n not in values]
        if missing:
            raise TypeError(f"{type(self).__name__}.__init__() missing required argument: '{missing[0]}'")
        for key, value in values.items():
            object.__setattr__(self, key, value)
        self._check()

    def _check(self):
        pass

    def __setattr__(self, name, value):
        raise AttributeError(f"cannot assign to field '{name}'")

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in self._fields)

    def __hash__(self):
        return hash(tuple(getattr(self, f) for f in self._fields))

    def __repr__(self):
        fields = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._fields)
        return f"Constraint.{type(self).__name__}({fields})"


class Constraint:
    class Categorical(BaseConstraint):
        _fields = ("values",)

        def _check(self):
            object.__setattr__(self, "values", tuple(self.values))

        @property
        def description(self):
            if len(self.values) == 1:
                return f"Always `{self.values[0]}`"
            return "Possible values: " + ", ".join(f"`{v}`" for v in self.values)

        def validate(self, value):
            return value in self.values if value is not None else True

        def _quarry_spec(self):
            return ("Categorical", list(self.values))

    class NotNull(BaseConstraint):
        description = "Never `NULL`"

        def validate(self, value):
            return value is not None

        def _quarry_spec(self):
            return ("NotNull",)

    class Unique(BaseConstraint):
        description = "Always unique"

        def validate(self, value):
            return True

        def _quarry_spec(self):
            return ("Unique",)

    class FirstOfMonth(BaseConstraint):
        description = "Always the first day of a month"

        def validate(self, value):
            return value.day == 1 if value else True

        def _quarry_spec(self):
            return ("FirstOfMonth",)

    class Regex(BaseConstraint):
        _fields = ("regex",)

        @property
        def description(self):
            return f"Matches regular expression: `{self.regex}`"

        def validate(self, value):
            import re

            return bool(re.match(self.regex, value)) if value is not None else True

        def _quarry_spec(self):
            return ("Regex", self.regex)

    class ClosedRange(BaseConstraint):
        _fields = ("minimum", "maximum", "step")
        _defaults = {"step": 1}

        @property
        def description(self):
            if self.step == 1:
                return f"Always `>= {self.minimum}` and `<= {self.maximum}`"
            return f"Always `>= {self.minimum}`, `<= {self.maximum}`, and a multiple of `{self.step}`"

        def validate(self, value):
            return self.minimum <= value <= self.maximum if value is not None else True

        def _quarry_spec(self):
            return ("ClosedRange", self.minimum, self.maximum, self.step)

    class GeneralRange(BaseConstraint):
        _fields = ("minimum", "maximum", "includes_minimum", "includes_maximum")
        _defaults = {"minimum": None, "maximum": None, "includes_minimum": True, "includes_maximum": True}

        @property
        def description(self):
            parts = []
            if self.minimum is not None:
                parts.append(f"`>= {self.minimum}`" if self.includes_minimum else f"`> {self.minimum}`")
            if self.maximum is not None:
                parts.append(f"`<= {self.maximum}`" if self.includes_maximum else f"`< {self.maximum}`")
            return "Always " + ", ".join(parts) if parts else "Any value"

        def validate(self, value):
            if value is None:
                return True
            if self.minimum is not None:
                if self.minimum > value:
                    return False
                if self.minimum == value:
                    return self.includes_minimum
            if self.maximum is not None:
                if self.maximum < value:
                    return False
                if self.maximum == value:
                    return self.includes_maximum
            return True

        def _quarry_spec(self):
            return ("GeneralRange", self.minimum, self.maximum, self.includes_minimum, self.includes_maximum)

    class DateAfter(BaseConstraint):
        _fields = ("column_names",)

        def _check(self):
            if isinstance(self.column_names, str):
                raise TypeError("'column_names' must be a tuple or list of column names")
            object.__setattr__(self, "column_names", tuple(self.column_names))

        @property
        def description(self):
            return "Date must be on or after " + ", ".join(f"`{c}`" for c in self.column_names)

        def validate(self, value):
            return True

        def _quarry_spec(self):
            return ("DateAfter", list(self.column_names))


from ehrql import _lazy  # noqa: E402

_lazy.attach(
    globals(),
    imported=["dataclasses", "datetime", "graphlib", "match=re:match", "Any=typing:Any"],
    internal=["validate_regex", "Column", "TableSchema", "_setattrs"],
)
