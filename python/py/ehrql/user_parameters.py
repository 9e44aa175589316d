# `get_parameter()`: a definition's own command-line parameters, after `--`, read with
# argparse exactly as ehrQL reads them.

import sys

from ehrql.exceptions import ParameterError


def convert_string_to_bool(value):
    if value in ("true", "True", "1"):
        return True
    if value in ("false", "False", "0"):
        return False
    raise ParameterError(f"'{value}' is an invalid value for `bool` type parameter\n\nValid values are 1/True/true or 0/False/false.")


def get_parameter(name, type=str, default=None):
    from argparse import ArgumentParser

    parser = ArgumentParser(allow_abbrev=False)
    if type in [list, set, tuple]:
        raise ParameterError(
            f"{sys.argv[0]} error: {type} is not a valid type\n\n"
            "To define a parameter as a sequence, define `get_parameter()`  with a type applicable "
            "to a single string argument, e.g.\n\n"
            '\tget_parameter("sex", type=str)\n\n'
            "and pass multiple values to the generate-dataset command:\n\n"
            f"\tgenerate-dataset {sys.argv[0]} -- --sex male female"
        )
    if type is bool:
        type = convert_string_to_bool
    parser.add_argument(f"--{name}", type=type, action="extend", nargs="+", default=[])
    namespace, _ = parser.parse_known_args(sys.argv[1:])
    value = getattr(namespace, name)
    if not value:
        if default is not None:
            return default
        raise ParameterError(
            f"{sys.argv[0]} error: parameter `{name}` defined but no values found. Pass parameters in the form "
            f"`--{name} <value>` or provide a default value to `get_parameter()`\n\n"
            "Note that custom parameters MUST be provided last, and must follow a double-dash `--`."
        )
    if len(value) == 1:
        value = value[0]
    import logging

    logging.getLogger(__name__).info("Parsed parameter: `%s` = %r", name, value)
    return value


from ehrql import _lazy  # noqa: E402

_lazy.attach(globals(), imported=["logging", "ArgumentParser=argparse:ArgumentParser", "Any=typing:Any"], internal=["logger"])
