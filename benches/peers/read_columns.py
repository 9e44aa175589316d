"""The floor for the seed definition on a backend: DuckDB merely reading the columns
dataset_definition_v1.py uses (every value hashed, so each is decoded), with `threads` threads.

    python read_columns.py BACKEND_DIR THREADS
"""
import sys
import time

import duckdb

backend, threads = sys.argv[1], int(sys.argv[2])
columns = {
    "clinical_events": ["patient_id", "date", "ctv3_code", "numeric_value"],
    "apcs": ["patient_id", "admission_date", "primary_diagnosis"],
    "ons_deaths": ["patient_id", "date"],
    "patients": ["patient_id", "date_of_birth", "sex"],
}
con = duckdb.connect()
con.execute(f"SET threads = {threads}")
started = time.perf_counter()
for table, cols in columns.items():
    hashed = " + ".join(f"sum(hash({c}))" for c in cols)
    con.execute(f"SELECT {hashed} FROM read_parquet('{backend}/{table}.parquet')").fetchall()
print(f"{time.perf_counter() - started:.2f}")
