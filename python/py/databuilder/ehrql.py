# databuilder.ehrql: the ehrql package under its pre-rename name (see databuilder/__init__.py).
from ehrql import *  # noqa: F403
