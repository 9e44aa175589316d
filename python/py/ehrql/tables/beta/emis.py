# ehrQL v0's `ehrql.tables.beta.emis` (the `ehrql:v0` image): the EMIS backend's tables, which
# that version took from `ehrql.tables.beta.core`.
from ehrql.tables.beta.core import clinical_events, medications, ons_deaths, patients

__all__ = [
    "clinical_events",
    "medications",
    "ons_deaths",
    "patients",
]
