# ehrQL v0's `ehrql.tables.beta.raw.emis` (the `ehrql:v0` image): its raw `ons_deaths`, from
# `ehrql.tables.beta.raw.core`.
from ehrql.tables.beta.raw.core import ons_deaths

__all__ = [
    "ons_deaths",
]
