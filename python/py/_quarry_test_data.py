# Assurance tests (`test_data`): the half that needs Python. ehrQL checks each patient's test
# rows against the tables' constraints, whose reprs and Python's str() of the offending values
# appear in its report; quarry does that here and writes that part of the report. The rows and
# the expectations go to Rust (src/assure.rs in the binary), which evaluates the dataset over
# the rows with quarry's reference evaluator, compares with Python's equality and writes the
# rest of the report in ehrQL's words. quarry's own code.

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
    """Checks `test_data` against the tables the dataset reads and returns
    `(constraint report lines or None, [(table, [(patient, [value, ...])])],
    [(patient, expected_in_population, [(column, value)] or None)])`."""
    if not isinstance(test_data, dict):
        raise AssuranceDataError(f"test_data must be a dict of patient ids to test data, not {type(test_data).__name__}")
    tables = _quarry.dataset_tables(dataset_nodes)
    problems = {}
    rows = {name: [] for name, _, _ in tables}
    patients = []
    for patient_id, patient in test_data.items():
        if not isinstance(patient_id, int) or isinstance(patient_id, bool) or not -(2**63) <= patient_id < 2**63:
            raise AssuranceDataError(f"test_data: patient ids must be 64-bit integers, got {patient_id!r}")
        if not isinstance(patient, dict):
            raise AssuranceDataError(f"test_data: patient {patient_id}: the test data must be a dict, not {type(patient).__name__}")
        found = []
        for name, patient_level, columns in tables:
            if name not in patient:
                empty = "{}" if patient_level else "[]"
                raise AssuranceDataError(
                    f"test_data: patient {patient_id} has no entry for table '{name}', which the dataset uses "
                    f"(ehrQL stops with KeyError: '{name}'); give \"{name}\": {empty} for no rows"
                )
            records = patient[name]
            if isinstance(records, dict):
                records = [records]
            if not isinstance(records, (list, tuple)):
                raise AssuranceDataError(
                    f"test_data: patient {patient_id}, table '{name}': expected a dict or a list of dicts, not {type(records).__name__}"
                )
            for record in records:
                if not isinstance(record, dict):
                    raise AssuranceDataError(
                        f"test_data: patient {patient_id}, table '{name}': each row must be a dict, not {type(record).__name__}"
                    )
            types = {c: tag for c, tag, _ in columns}
            for record in records:
                for column, value in record.items():
                    if column in types and not _is_of_type(value, types[column]):
                        raise AssuranceDataError(
                            f"test_data: patient {patient_id}, table '{name}', column '{column}': "
                            f"expected {_type_name(types[column])}, got {value!r} ({type(value).__name__})"
                        )
            found.extend(_check_constraints(records, name, patient_level, columns))
            column_names = [c for c, _, _ in columns]
            for record in records:
                rows[name].append((patient_id, [value_of(record.get(c)) for c in column_names]))
        if found:
            problems[patient_id] = found
        expected_in_population = bool(patient.get("expected_in_population", True))
        expected_columns = None
        if expected_in_population:
            if "expected_columns" not in patient:
                raise AssuranceDataError(
                    f"test_data: patient {patient_id} is expected in the population but has no 'expected_columns' "
                    "(ehrQL stops with KeyError: 'expected_columns')"
                )
            expected = patient["expected_columns"]
            if not isinstance(expected, dict):
                raise AssuranceDataError(f"test_data: patient {patient_id}: expected_columns must be a dict, not {type(expected).__name__}")
            expected_columns = [(str(k), value_of(v)) for k, v in expected.items()]
        patients.append((patient_id, expected_in_population, expected_columns))
    report = None
    if problems:
        report = [f"Validate test data: Found errors with {len(problems)} patient(s)"]
        for patient_id, found in problems.items():
            report.extend(f" * Patient {patient_id} {line}" for line in found)
    return report, [(name, rows[name]) for name, _, _ in tables], patients


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


def _check_constraints(records, table, patient_level, columns):
    """The report's lines (after ` * Patient N `) for one patient's rows of one table, in
    the order ehrQL reports them: values breaking a constraint, columns the table lacks, then
    too many rows for a patient-level table."""
    constraints = {name: [_constraint(s) for s in specs] for name, _, specs in columns}
    cells = [(column, value) for record in records for column, value in record.items()]
    failures = [
        f"   * for column '{column}' with '{rule}', got '{value}'"
        for column, value in cells
        if column in constraints
        for rule in constraints[column]
        if not rule.validate(value)
    ]
    strangers = list(dict.fromkeys(column for column, _ in cells if column not in constraints))
    lines = []
    if failures:
        head = f"had {len(failures)} test data value(s) in table '{table}' that did not meet the constraint(s)"
        lines.append("\n".join([head] + failures))
    if strangers:
        invalid = ", ".join(map(repr, strangers))
        valid = ", ".join(map(repr, constraints))
        lines.append(f"had invalid columns in the test data for table '{table}'\n       invalid columns: {invalid}\n     valid columns are: {valid}")
    if patient_level and len(records) > 1:
        lines.append(f"had {len(records)} rows of test data for table '{table}' but this table accepts at most one row per patient")
    return lines
