# ehrQL's exception classes, with the exit codes ehrQL gives them (`_quarry_exit_code`).


class EHRQLException(Exception):
    pass


class Error(EHRQLException):
    __module__ = "ehrql"


class EHRQLUserException(EHRQLException):
    pass


class DefinitionError(EHRQLUserException):
    def __init__(self, message, exit_code=None):
        super().__init__(message)
        self.exit_code = exit_code


class AssuranceTestError(EHRQLUserException):
    _quarry_exit_code = 13


class FileValidationError(EHRQLUserException):
    _quarry_exit_code = 11


class EHRQLPermissionError(EHRQLUserException):
    _quarry_exit_code = 12


class MeasuresTimeout(EHRQLUserException):
    _quarry_exit_code = 14


class DummyDataException(EHRQLException):
    pass


class CannotGenerate(DummyDataException):
    pass


class ParameterError(EHRQLException):
    pass


def get_exit_code_for_exception(exc):
    if isinstance(exc, DefinitionError):
        return exc.exit_code or 10
    return getattr(type(exc), "_quarry_exit_code", None)
