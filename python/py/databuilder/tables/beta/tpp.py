# databuilder.tables.beta.tpp: ehrql.tables.beta.tpp under its pre-rename name.
from ehrql.tables.beta.tpp import *  # noqa: F403
