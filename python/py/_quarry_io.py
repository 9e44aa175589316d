# quarry's file objects: `open()` and `io.open()` for reading, through the sandbox gate.
#
# The embedded Python has no file access of its own. `FileIO` here is the raw layer of
# CPython's io stack, filled once from the gate (posix._q_read); the buffered and text
# layers above it are the interpreter's own `_io.BufferedReader` and `_io.TextIOWrapper`,
# so decoding, newline translation, `readline`, iteration and `with` behave as CPython's.
# Opening for writing raises PermissionError naming the file.
#
# This file is quarry's own code; the argument checks follow CPython's `io.open`.

import _io
import posix

DEFAULT_BUFFER_SIZE = _io.DEFAULT_BUFFER_SIZE


class FileIO(_io._RawIOBase):
    """A read-only raw file, its bytes read through quarry's sandbox when opened."""

    def __init__(self, file, mode="r", closefd=True, opener=None):
        if isinstance(file, float):
            raise TypeError("integer argument expected, got float")
        if isinstance(file, int):
            raise posix._q_refuse(f"<file descriptor {file}>")
        if opener is not None:
            raise posix._q_refuse(file)
        path = posix.fspath(file)
        if not isinstance(mode, str):
            raise TypeError(f"FileIO() argument 'mode' must be str, not {type(mode).__name__}")
        if set(mode) - set("rb") or mode.count("r") != 1 or len(mode) != len(set(mode)):
            if set(mode) & set("wax+"):
                raise posix._q_refuse(path)
            raise ValueError(f"invalid mode: {mode}")
        text = path.decode("utf-8", "surrogateescape") if isinstance(path, bytes) else path
        self._data = posix._q_read(text)
        self._pos = 0
        self.name = file
        self.mode = "rb"
        self.closefd = closefd

    def readable(self):
        self._checkClosed()
        return True

    def writable(self):
        self._checkClosed()
        return False

    def seekable(self):
        self._checkClosed()
        return True

    def isatty(self):
        self._checkClosed()
        return False

    def fileno(self):
        raise _io.UnsupportedOperation("fileno")

    def readinto(self, buffer):
        self._checkClosed()
        view = memoryview(buffer).cast("B")
        chunk = self._data[self._pos : self._pos + len(view)]
        view[: len(chunk)] = chunk
        self._pos += len(chunk)
        return len(chunk)

    def readall(self):
        self._checkClosed()
        chunk = self._data[self._pos :]
        self._pos = len(self._data)
        return chunk

    def read(self, size=-1):
        if size is None or size < 0:
            return self.readall()
        self._checkClosed()
        chunk = self._data[self._pos : self._pos + size]
        self._pos += len(chunk)
        return chunk

    def seek(self, offset, whence=0):
        self._checkClosed()
        if whence == 0:
            position = offset
        elif whence == 1:
            position = self._pos + offset
        elif whence == 2:
            position = len(self._data) + offset
        else:
            raise ValueError(f"invalid whence ({whence}, should be 0, 1 or 2)")
        if position < 0:
            raise OSError(22, "Invalid argument")
        self._pos = position
        return position

    def tell(self):
        self._checkClosed()
        return self._pos

    def truncate(self, size=None):
        raise posix._q_refuse(self.name)

    def write(self, b):
        raise posix._q_refuse(self.name)

    def __repr__(self):
        state = "closed" if self.closed else f"name={self.name!r} mode='rb' closefd={self.closefd}"
        return f"<_io.FileIO [{state}]>" if self.closed else f"<_io.FileIO {state}>"

    def _checkClosed(self):
        if self.closed:
            raise ValueError("I/O operation on closed file")


def open(file, mode="r", buffering=-1, encoding=None, errors=None, newline=None, closefd=True, opener=None):
    """Open a file for reading (quarry: inside the project only; writing is refused)."""
    if not isinstance(file, int):
        file = posix.fspath(file)
    if not isinstance(file, (str, bytes, int)):
        raise TypeError(f"invalid file: {file!r}")
    if not isinstance(mode, str):
        raise TypeError(f"open() argument 'mode' must be str, not {type(mode).__name__}")
    if not isinstance(buffering, int):
        raise TypeError(f"'{type(buffering).__name__}' object cannot be interpreted as an integer")
    if encoding is not None and not isinstance(encoding, str):
        raise TypeError(f"open() argument 'encoding' must be str or None, not {type(encoding).__name__}")
    if errors is not None and not isinstance(errors, str):
        raise TypeError(f"open() argument 'errors' must be str or None, not {type(errors).__name__}")
    modes = set(mode)
    if modes - set("axrwb+t") or len(mode) > len(modes):
        raise ValueError(f"invalid mode: '{mode}'")
    creating = "x" in modes
    reading = "r" in modes
    writing = "w" in modes
    appending = "a" in modes
    updating = "+" in modes
    text = "t" in modes
    binary = "b" in modes
    if text and binary:
        raise ValueError("can't have text and binary mode at once")
    if creating + reading + writing + appending > 1:
        raise ValueError("must have exactly one of create/read/write/append mode")
    if not (creating or reading or writing or appending):
        raise ValueError("Must have exactly one of create/read/write/append mode and at most one plus")
    if binary and encoding is not None:
        raise ValueError("binary mode doesn't take an encoding argument")
    if binary and errors is not None:
        raise ValueError("binary mode doesn't take an errors argument")
    if binary and newline is not None:
        raise ValueError("binary mode doesn't take a newline argument")
    if binary and buffering == 1:
        import warnings

        warnings.warn("line buffering (buffering=1) isn't supported in binary mode, the default buffer size will be used", RuntimeWarning, 2)
    if creating or writing or appending or updating:
        raise posix._q_refuse(file)
    if newline is not None and newline not in ("", "\n", "\r", "\r\n"):
        raise ValueError(f"illegal newline value: {newline}")
    if encoding == "locale":
        # ehrQL's image runs under a UTF-8 locale.
        encoding = "utf-8"
    if encoding is not None:
        import codecs

        codecs.lookup(encoding)
    raw = FileIO(file, "r", closefd, opener=opener)
    result = raw
    try:
        if buffering == 0:
            if binary:
                return result
            raise ValueError("can't have unbuffered text I/O")
        buffer_size = DEFAULT_BUFFER_SIZE if buffering in (-1, 1) else buffering
        if buffer_size < 0:
            raise ValueError("invalid buffering size")
        buffer = _io.BufferedReader(raw, buffer_size)
        result = buffer
        if binary:
            return result
        wrapper = _io.TextIOWrapper(buffer, encoding or "utf-8", errors, newline, buffering == 1)
        result = wrapper
        wrapper.mode = mode
        return result
    except:
        result.close()
        raise


def open_code(path):
    if not isinstance(path, str):
        raise TypeError(f"open_code() argument 'path' must be str, not {type(path).__name__}")
    return open(path, "rb")


class Console(_io._TextIOBase):
    """`sys.stdout` and `sys.stderr`: text written by the definition goes to quarry's log
    (stderr), as ehrQL sends a definition's output to stderr."""

    def __init__(self, name, write):
        self._name = name
        self._write = write

    @property
    def name(self):
        return self._name

    @property
    def encoding(self):
        return "utf-8"

    @property
    def errors(self):
        return "backslashreplace"

    def writable(self):
        return True

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        self._write(s)
        return len(s)

    def flush(self):
        pass

    def isatty(self):
        return False

    def fileno(self):
        raise _io.UnsupportedOperation("fileno")


class Stdin(_io._TextIOBase):
    """`sys.stdin`: empty, as for a job (`input()` raises EOFError)."""

    name = "<stdin>"
    encoding = "utf-8"

    def readable(self):
        return True

    def read(self, size=-1):
        return ""

    def readline(self, size=-1):
        return ""

    def isatty(self):
        return False

    def fileno(self):
        raise _io.UnsupportedOperation("fileno")


def install(write):
    """Puts quarry's file layer in place before anything imports `io`."""
    import builtins
    import sys

    _io.FileIO = FileIO
    _io.open = open
    _io.open_code = open_code
    builtins.open = open
    sys.stdout = Console("<stdout>", write)
    sys.stderr = Console("<stderr>", write)
    sys.stdin = Stdin()
    sys.__stdout__ = sys.stdout
    sys.__stderr__ = sys.stderr
    sys.__stdin__ = sys.stdin
