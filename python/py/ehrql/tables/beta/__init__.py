# Pre-1.0 ehrQL's table modules (the `ehrql:v0` image). Importing them marks the definition
# as pre-1.0, which turns on that version's spellings (see ehrql.query_language).
from ehrql.query_language import _enable_legacy_api

_enable_legacy_api()
