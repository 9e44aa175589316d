# ehrQL's logging set-up: the root logger writes `[level  ] message` lines to stderr and
# is silent below CRITICAL unless LOG_LEVEL says otherwise. quarry applies it when a
# definition first imports `logging` (ehrQL applies it when `ehrql` is imported; the effect
# on what a definition logs is the same, and definitions that never log don't pay for it).

LOG_INDENT = " " * 10


def _formatter_class():
    import logging

    class EHRQLFormatter(logging.Formatter):
        def format(self, record):
            record.levelname_lower = record.levelname.lower()
            return logging.Formatter.format(self, record)

    return EHRQLFormatter


def init_logging():
    import logging
    import os

    handler = logging.StreamHandler()
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(_formatter_class()("[{levelname_lower:<7}] {message}", "%Y-%m-%d %H:%M:%S", "{"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(os.getenv("LOG_LEVEL", "CRITICAL"))


def kv(kv_pairs):
    return " ".join(f"{k}={v}" for k, v in kv_pairs.items())


def indent(s, prefix=LOG_INDENT):
    lines = s.splitlines(keepends=True)
    return lines[0] + "".join(prefix + line for line in lines[1:]) if lines else s
