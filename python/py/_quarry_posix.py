# quarry's `posix` module, the layer CPython's `os`, `os.path`, `pathlib`, `glob` and the
# import system stand on. It runs inside the native `posix` module (python/src/native/
# posix.rs), whose `_q_*` functions are the sandbox gate: reads of regular files and
# listings of directories inside the project. Everything that would write, delete, run a
# program or reach outside raises PermissionError naming the path.
#
# This file is quarry's own code. Names and signatures follow CPython's posix module so the
# standard library above it works unchanged.

error = OSError

F_OK = 0
R_OK = 4
W_OK = 2
X_OK = 1
O_RDONLY = 0
O_WRONLY = 1
O_RDWR = 2
O_CREAT = 0o100
O_EXCL = 0o200
O_NOCTTY = 0o400
O_TRUNC = 0o1000
O_APPEND = 0o2000
O_NONBLOCK = 0o4000
O_DIRECTORY = 0o200000
O_NOFOLLOW = 0o400000
O_CLOEXEC = 0o2000000
SEEK_SET = 0
SEEK_CUR = 1
SEEK_END = 2
EX_OK = 0

_have_functions = ["HAVE_LSTAT"]


class stat_result(tuple):
    """stat_result: Result from stat, fstat, or lstat."""

    n_sequence_fields = 10
    n_fields = 19
    n_unnamed_fields = 3

    def __new__(cls, values, ns=(0, 0, 0)):
        self = tuple.__new__(cls, values[:10])
        self._ns = ns
        return self

    st_mode = property(lambda self: self[0])
    st_ino = property(lambda self: self[1])
    st_dev = property(lambda self: self[2])
    st_nlink = property(lambda self: self[3])
    st_uid = property(lambda self: self[4])
    st_gid = property(lambda self: self[5])
    st_size = property(lambda self: self[6])
    st_atime = property(lambda self: self._ns[0] / 1e9)
    st_mtime = property(lambda self: self._ns[1] / 1e9)
    st_ctime = property(lambda self: self._ns[2] / 1e9)
    st_atime_ns = property(lambda self: self._ns[0])
    st_mtime_ns = property(lambda self: self._ns[1])
    st_ctime_ns = property(lambda self: self._ns[2])

    def __repr__(self):
        fields = ("st_mode", "st_ino", "st_dev", "st_nlink", "st_uid", "st_gid", "st_size", "st_atime", "st_mtime", "st_ctime")
        values = list(self[:7]) + [ns // 1_000_000_000 for ns in self._ns]
        return "os.stat_result(" + ", ".join(f"{f}={v!r}" for f, v in zip(fields, values)) + ")"

    def __reduce__(self):
        return (stat_result, (tuple(self), self._ns))


class terminal_size(tuple):
    columns = property(lambda self: self[0])
    lines = property(lambda self: self[1])


def fspath(path):
    if isinstance(path, (str, bytes)):
        return path
    path_type = type(path)
    try:
        path_repr = path_type.__fspath__(path)
    except AttributeError:
        if hasattr(path_type, "__fspath__"):
            raise
        raise TypeError("expected str, bytes or os.PathLike object, not " + path_type.__name__) from None
    if isinstance(path_repr, (str, bytes)):
        return path_repr
    raise TypeError(f"expected {path_type.__name__}.__fspath__() to return str or bytes, not {type(path_repr).__name__}")


def _text(path, allow_fd=False):
    if isinstance(path, int) and not isinstance(path, bool):
        raise _q_refuse(f"<file descriptor {path}>")
    path = fspath(path)
    if isinstance(path, bytes):
        return path.decode("utf-8", "surrogateescape"), True
    return path, False


def _stat(path, follow_symlinks):
    text, _ = _text(path)
    values = _q_stat(text, follow_symlinks)
    return stat_result(values[:7] + tuple(ns // 1_000_000_000 for ns in values[7:]), values[7:])


def stat(path, *, dir_fd=None, follow_symlinks=True):
    if dir_fd is not None:
        raise NotImplementedError("dir_fd unavailable on this platform")
    return _stat(path, follow_symlinks)


def lstat(path, *, dir_fd=None):
    if dir_fd is not None:
        raise NotImplementedError("dir_fd unavailable on this platform")
    return _stat(path, False)


def fstat(fd):
    raise _q_refuse(f"<file descriptor {fd}>")


def access(path, mode, *, dir_fd=None, effective_ids=False, follow_symlinks=True):
    try:
        st = _stat(path, follow_symlinks)
    except OSError:
        return False
    if mode & W_OK:
        return False
    return True


def listdir(path=None):
    if path is None:
        path = "."
    text, as_bytes = _text(path)
    names = _q_listdir(text)
    if as_bytes:
        return [n.encode("utf-8", "surrogateescape") for n in names]
    return names


class DirEntry:
    def __init__(self, directory, name, as_bytes):
        self.name = name.encode("utf-8", "surrogateescape") if as_bytes else name
        if directory in (".", b"."):
            self.path = self.name
        else:
            sep, empty = (b"/", b"") if as_bytes else ("/", "")
            self.path = directory + (empty if directory.endswith(sep) else sep) + self.name
        self._lstat = None
        self._stat = None

    def __fspath__(self):
        return self.path

    def __repr__(self):
        return f"<DirEntry {self.name!r}>"

    def stat(self, *, follow_symlinks=True):
        if follow_symlinks:
            if self._stat is None:
                self._stat = stat(self.path)
            return self._stat
        if self._lstat is None:
            self._lstat = lstat(self.path)
        return self._lstat

    def _mode(self, follow_symlinks):
        try:
            return self.stat(follow_symlinks=follow_symlinks).st_mode
        except FileNotFoundError:
            return 0

    def is_dir(self, *, follow_symlinks=True):
        return (self._mode(follow_symlinks) & 0o170000) == 0o040000

    def is_file(self, *, follow_symlinks=True):
        return (self._mode(follow_symlinks) & 0o170000) == 0o100000

    def is_symlink(self):
        return (self._mode(False) & 0o170000) == 0o120000

    def is_junction(self):
        return False

    def inode(self):
        return self.stat(follow_symlinks=False).st_ino


class _ScandirIterator:
    def __init__(self, entries):
        self._entries = iter(entries)

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._entries)

    def __enter__(self):
        return self

    def __exit__(self, *args):
        self.close()

    def close(self):
        self._entries = iter(())


def scandir(path=None):
    if path is None:
        path = "."
    text, as_bytes = _text(path)
    directory = fspath(path)
    return _ScandirIterator([DirEntry(directory, n, as_bytes) for n in _q_listdir(text)])


def readlink(path, *, dir_fd=None):
    text, as_bytes = _text(path)
    target = _q_readlink(text)
    return target.encode("utf-8", "surrogateescape") if as_bytes else target


def getcwd():
    return _q_getcwd()


def getcwdb():
    return _q_getcwd().encode("utf-8", "surrogateescape")


def _environ_bytes():
    return {k.encode("utf-8", "surrogateescape"): v.encode("utf-8", "surrogateescape") for k, v in _q_environ()}


environ = _environ_bytes()


def putenv(key, value):
    raise _q_refuse(f"os.environ[{key!r}]")


def unsetenv(key):
    raise _q_refuse(f"os.environ[{key!r}]")


def urandom(size):
    if size < 0:
        raise ValueError("negative argument not allowed")
    return _q_urandom(size)


def strerror(code):
    return {2: "No such file or directory", 13: "Permission denied", 20: "Not a directory", 21: "Is a directory"}.get(code, f"Unknown error {code}")


def cpu_count():
    return _q_cpu_count()


def getpid():
    return _q_getpid()


def get_terminal_size(fd=1):
    raise OSError(25, "Inappropriate ioctl for device")


def device_encoding(fd):
    return None


def isatty(fd):
    return False


def _exit(code):
    raise SystemExit(code)


def _refused(name):
    def refused(path=None, *args, **kwargs):
        raise _q_refuse(path if isinstance(path, (str, bytes)) else f"os.{name}()")

    refused.__name__ = name
    refused.__qualname__ = name
    return refused


# Everything that writes, deletes, changes the process or runs a program.
for _name in (
    "open", "close", "read", "write", "lseek", "dup", "dup2", "pipe", "mkdir", "rmdir", "remove",
    "unlink", "rename", "replace", "symlink", "link", "chmod", "lchmod", "fchmod", "chown", "lchown", "fchown",
    "utime", "truncate", "ftruncate", "chdir", "fchdir", "chroot", "mkfifo", "mknod", "system", "execv", "execve",
    "kill", "killpg", "posix_spawn", "posix_spawnp", "spawnv", "waitpid", "wait", "setsid",
    "setuid", "setgid", "nice", "fsync", "fdatasync", "sendfile", "setxattr", "removexattr", "getxattr",
    "listxattr", "statvfs", "fstatvfs", "umask", "getppid", "getuid", "geteuid", "getgid", "getegid",
    "times", "uname",
):
    globals()[_name] = _refused(_name)
del _name
