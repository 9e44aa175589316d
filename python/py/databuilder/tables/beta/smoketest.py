# databuilder.tables.beta.smoketest: ehrql.tables.beta.smoketest under its pre-rename name.
from ehrql.tables.beta.smoketest import *  # noqa: F403
