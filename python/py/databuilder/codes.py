# databuilder.codes: ehrql.codes under its pre-rename name (see databuilder/__init__.py).
from ehrql.codes import *  # noqa: F403
