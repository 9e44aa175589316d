# Assurance tests (`test_data`): the part that needs Python. Each patient's test rows are
# type-checked and tested against the tables' constraints here, because the report quotes
# Python's str() of a rule and of a value and its repr() of column names. Everything goes to
# Rust as plain tuples (src/assure.rs in the binary words the report, evaluates the dataset
# over the rows with quarry's reference evaluator and compares with Python's equality).

import datetime

import _quarry

from ehrql.query_model.table_schema import Constraint


class AssuranceDataError(Exception):
    """test_data quarry cannot use (ehrQL stops on it with a KeyError or a TypeError)."""


def _constraint(spec):
    kind, *args = spec
    if kind == "Categorical":
        return Constraint.Categorical(tuple(args[0]))
    if kind == "ClosedRange":
        return Constraint.ClosedRange(*args)
    if kind == "GeneralRange":
        return Constraint.GeneralRange(*args)
    if kind == "Regex":
        return Constraint.Regex(args[0])
    if kind == "DateAfter":
        return Constraint.DateAfter(tuple(args[0]))
    return getattr(Constraint, kind)()


def value_of(value):
    """A Python value as a tagged tuple Rust reads."""
    if value is None:
        return ("none",)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):
        return ("int", str(int(value)))
    if isinstance(value, float):
        return ("float", float(value))
    if isinstance(value, str):
        return ("str", str(value))
    if type(value) is datetime.date:
        return ("date", value.year, value.month, value.day)
    return ("other", type(value).__name__, f"{value}")


def extract(dataset_nodes, test_data):
    """Reads `test_data` for the tables the dataset uses. Returns `(findings, tables,
    patients)`: what breaks the tables' rules (tuples Rust words as ehrQL's report:
    `("values", id, table, [(column, str(rule), str(value))])`, `("columns", id, table,
    [repr(unknown)], [repr(known)])`, `("rows", id, table, n)`), each table's rows as
    `(table, [(id, [tagged value, ...])])`, and each patient's expectations as
    `(id, expected_in_population, [(column, tagged value)] or None)`."""
    if not isinstance(test_data, dict):
        raise AssuranceDataError(f"test_data must be a dict of patient ids to test data, not {type(test_data).__name__}")
    schemas = _quarry.dataset_tables(dataset_nodes)
    findings = []
    table_rows = {name: [] for name, _, _ in schemas}
    expectations = []
    for pid, entry in test_data.items():
        _check_patient(pid, entry)
        for name, one_row, columns in schemas:
            rows = _rows_of(pid, entry, name, one_row, columns)
            findings.extend((kind, pid, name, *detail) for kind, *detail in _breaches(rows, one_row, columns))
            order = [column for column, _, _ in columns]
            table_rows[name].extend((pid, [value_of(row.get(column)) for column in order]) for row in rows)
        expectations.append(_expectation(pid, entry))
    return findings, [(name, table_rows[name]) for name, _, _ in schemas], expectations


def _check_patient(pid, entry):
    if isinstance(pid, bool) or not isinstance(pid, int) or not -(2**63) <= pid < 2**63:
        raise AssuranceDataError(f"test_data: patient ids must be 64-bit integers, got {pid!r}")
    if not isinstance(entry, dict):
        raise AssuranceDataError(f"test_data: patient {pid}: the test data must be a dict, not {type(entry).__name__}")


def _rows_of(pid, entry, name, one_row, columns):
    """The patient's rows of one table (a lone dict is one row), their types checked."""
    try:
        given = entry[name]
    except KeyError:
        none = "{}" if one_row else "[]"
        raise AssuranceDataError(
            f"test_data: patient {pid} has no entry for table '{name}', which the dataset uses "
            f"(ehrQL stops with KeyError: '{name}'); give \"{name}\": {none} for no rows"
        ) from None
    rows = [given] if isinstance(given, dict) else given
    where = f"test_data: patient {pid}, table '{name}'"
    if not isinstance(rows, (list, tuple)):
        raise AssuranceDataError(f"{where}: expected a dict or a list of dicts, not {type(rows).__name__}")
    tags = {column: tag for column, tag, _ in columns}
    for row in rows:
        if not isinstance(row, dict):
            raise AssuranceDataError(f"{where}: each row must be a dict, not {type(row).__name__}")
        bad = next(((c, v) for c, v in row.items() if c in tags and not _is_of_type(v, tags[c])), None)
        if bad is not None:
            column, value = bad
            raise AssuranceDataError(
                f"{where}, column '{column}': expected {_type_name(tags[column])}, got {value!r} ({type(value).__name__})"
            )
    return rows


def _expectation(pid, entry):
    if not entry.get("expected_in_population", True):
        return (pid, False, None)
    if "expected_columns" not in entry:
        raise AssuranceDataError(
            f"test_data: patient {pid} is expected in the population but has no 'expected_columns' "
            "(ehrQL stops with KeyError: 'expected_columns')"
        )
    wanted = entry["expected_columns"]
    if not isinstance(wanted, dict):
        raise AssuranceDataError(f"test_data: patient {pid}: expected_columns must be a dict, not {type(wanted).__name__}")
    return (pid, True, [(str(column), value_of(value)) for column, value in wanted.items()])


def _is_of_type(value, tag):
    """Whether a test value can stand in a column of the type tagged `tag` (as ehrQL's
    in-memory engine would use it: an int for a float, a string for a code)."""
    if value is None:
        return True
    if tag == "bool":
        return isinstance(value, bool)
    if tag == "int":
        return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63
    if tag == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tag == "date":
        return type(value) is datetime.date
    return isinstance(value, str)


def _type_name(tag):
    names = {"bool": "a bool", "int": "a 64-bit int", "float": "a float", "date": "a datetime.date", "str": "a str"}
    return names.get(tag, "a code as a str")


def _breaches(rows, one_row, columns):
    """What in one patient's rows of a table breaks its rules, in the order ehrQL reports it:
    values a column's constraints refuse, names that are no column, a second row where one
    is allowed."""
    rules = {column: [_constraint(spec) for spec in specs] for column, _, specs in columns}
    broken, unknown = [], {}
    for row in rows:
        for column, value in row.items():
            if column not in rules:
                unknown.setdefault(column)
                continue
            broken.extend((column, str(rule), str(value)) for rule in rules[column] if not rule.validate(value))
    found = []
    if broken:
        found.append(("values", broken))
    if unknown:
        found.append(("columns", [repr(c) for c in unknown], [repr(c) for c in rules]))
    if one_row and len(rows) > 1:
        found.append(("rows", len(rows)))
    return found
