# Where the interpreter's standard library (RustPython's, from CPython 3.14 sources, and
# CPython's pure-Python fallbacks) would tell a definition something different from the
# CPython 3.13 that ehrQL runs on, quarry puts CPython 3.13's behaviour back. Each patch is
# applied when its module is first imported. quarry's own code.

import builtins


def install_builtins():
    import _quarry

    real_round = builtins.round

    def round(number, ndigits=None):
        """Round a number to a given precision in decimal digits (CPython's rounding)."""
        if ndigits is not None and type(number) is float:
            return _quarry.round_float(number, ndigits.__index__())
        if ndigits is None:
            return real_round(number)
        return real_round(number, ndigits)

    builtins.round = round


def pydatetime(module):
    """`datetime` runs on CPython's pure-Python `_pydatetime`; its messages are put back to
    those of the C `_datetime` that CPython 3.13 uses."""

    def check_date_fields(year, month, day):
        year, month, day = module._index(year), module._index(month), module._index(day)
        if not module.MINYEAR <= year <= module.MAXYEAR:
            raise ValueError(f"year {year} is out of range")
        if not 1 <= month <= 12:
            raise ValueError("month must be in 1..12")
        if not 1 <= day <= module._days_in_month(year, month):
            raise ValueError("day is out of range for month")
        return year, month, day

    def check_time_fields(hour, minute, second, microsecond, fold):
        hour, minute, second = module._index(hour), module._index(minute), module._index(second)
        microsecond = module._index(microsecond)
        for value, low, high, name in ((hour, 0, 23, "hour"), (minute, 0, 59, "minute"), (second, 0, 59, "second"), (microsecond, 0, 999999, "microsecond")):
            if not low <= value <= high:
                raise ValueError(f"{name} must be in {low}..{high}")
        if fold not in (0, 1):
            raise ValueError("fold must be either 0 or 1")
        return hour, minute, second, microsecond, fold

    module._check_date_fields = check_date_fields
    module._check_time_fields = check_time_fields

    def date_fromisoformat(cls, date_string):
        """Construct a date from a string in ISO 8601 format."""
        if not isinstance(date_string, str):
            raise TypeError("fromisoformat: argument must be str")
        if len(date_string) not in (7, 8, 10) or not date_string.isascii():
            raise ValueError(f"Invalid isoformat string: {date_string!r}")
        try:
            fields = module._parse_isoformat_date(date_string)
        except Exception:
            raise ValueError(f"Invalid isoformat string: {date_string!r}") from None
        # As the C implementation: a well-formed string with an impossible date gets the
        # constructor's message.
        return cls(*fields)

    module.date.fromisoformat = classmethod(date_fromisoformat)


# Module name -> what to do once it is loaded.
AFTER_IMPORT = {"_pydatetime": pydatetime}
