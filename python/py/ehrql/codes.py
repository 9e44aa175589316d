# quarry's `ehrql.codes`: clinical code classes and codelists. Codes are validated by
# quarry's native matchers, which implement ehrQL's regexes exactly (queries/src/codes.rs);
# the `regex` attribute is compiled only when a definition asks for it.

import _quarry


class CodelistError(ValueError):
    ...


class _LazyRegex:
    """`cls.regex`: ehrQL's pattern, compiled on first use (importing `re` costs time)."""

    def __set_name__(self, owner, name):
        self._name = name

    def __get__(self, instance, owner):
        pattern = _quarry.code_regex(owner.__name__)
        if pattern is None:
            raise AttributeError(f"type object '{owner.__name__}' has no attribute 'regex'")
        import re

        compiled = re.compile(pattern, re.VERBOSE)
        setattr(owner, "regex", compiled)
        return compiled


class BaseCode:
    __match_args__ = ("value",)

    def __init__(self, value):
        object.__setattr__(self, "value", value)
        self.__post_init__()

    def __post_init__(self):
        if not isinstance(self.value, str) or not _quarry.valid_code(self.__class__.__name__, self.value):
            raise ValueError(f"Invalid {self.__class__.__name__}: {self.value}")

    def __setattr__(self, name, value):
        raise AttributeError(f"cannot assign to field '{name}'")

    def __delattr__(self, name):
        raise AttributeError(f"cannot delete field '{name}'")

    def __repr__(self):
        return f"{self.__class__.__qualname__}(value={self.value!r})"

    def __eq__(self, other):
        if other.__class__ is self.__class__:
            return self.value == other.value
        return NotImplemented

    def __hash__(self):
        return hash((self.value,))

    @classmethod
    def _primitive_type(cls):
        return str

    def _to_primitive_type(self):
        return self.value


class BaseMultiCodeString(str):
    @classmethod
    def _code_type(cls):
        raise NotImplementedError("BaseMultiCodeString subclasses must implement the _code_type method")

    @classmethod
    def _primitive_type(cls):
        return str

    @classmethod
    def is_valid(cls, value):
        return _quarry.valid_code_prefix(cls.__name__, value)


class BNFCode(BaseCode):
    "Pharmacy products (medicines, devices) from the BNF."
    regex = _LazyRegex()


class CTV3Code(BaseCode):
    "CTV3 (Read V3) codes."
    regex = _LazyRegex()


class ICD10Code(BaseCode):
    "ICD-10 codes."
    regex = _LazyRegex()


class OPCS4Code(BaseCode):
    "OPCS-4 codes."
    regex = _LazyRegex()


class SNOMEDCTCode(BaseCode):
    "SNOMED-CT codes."
    regex = _LazyRegex()


class DMDCode(BaseCode):
    "Dictionary of Medicines and Devices (dm+d) codes."
    regex = _LazyRegex()


class ICD10MultiCodeString(BaseMultiCodeString):
    "Multiple ICD-10 codes in one string."
    regex = _LazyRegex()

    @classmethod
    def _code_type(cls):
        return ICD10Code


class OPCS4MultiCodeString(BaseMultiCodeString):
    "Multiple OPCS-4 codes in one string."
    regex = _LazyRegex()

    @classmethod
    def _code_type(cls):
        return OPCS4Code


_CODE_CLASSES = {cls.__name__: cls for cls in (BNFCode, CTV3Code, ICD10Code, OPCS4Code, SNOMEDCTCode, DMDCode)}
_MULTI_CLASSES = {cls.__name__: cls for cls in (ICD10MultiCodeString, OPCS4MultiCodeString)}


def _code_class_for_tag(tag):
    kind, _, name = tag.partition(":")
    if kind == "code":
        return _CODE_CLASSES[name]
    if kind == "multi":
        return _MULTI_CLASSES[name]
    raise KeyError(tag)


def _code_tag(type_):
    for name, cls in _CODE_CLASSES.items():
        if type_ is cls:
            return f"code:{name}"
    for name, cls in _MULTI_CLASSES.items():
        if type_ is cls:
            return f"multi:{name}"
    return None


def codelist_from_csv(filename, *, column, category_column=None):
    """Read a codelist from a CSV file as either a list or a dictionary."""
    import os

    path = os.fspath(filename)
    if not os.path.exists(path):
        hint = "\n\nHINT: Use forward slash (/) instead of backslash (\\) in file paths" if "\\" in repr(path) else ""
        raise CodelistError(f"No CSV file at {path}{hint}")
    with open(path, "r") as f:
        return codelist_from_csv_lines(f, column=column, category_column=category_column)


def codelist_from_csv_lines(lines, *, column, category_column=None):
    if category_column is None:
        category_column = column
        return_list = True
    else:
        return_list = False
    text = lines if isinstance(lines, str) else "".join(lines)
    result = _quarry.codelist_from_csv_text(text, column, category_column)
    if isinstance(result, str):
        raise CodelistError(result)
    if return_list:
        return list(result)
    return result


from ehrql import _lazy  # noqa: E402

_lazy.attach(globals(), imported=["csv", "dataclasses", "re", "Path=pathlib:Path"])
