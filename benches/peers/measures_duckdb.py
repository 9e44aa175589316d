"""benches/definitions/measures.py as hand-written DuckDB SQL over a `make-backend` backend: the
peer of `benches/measures.sh`. Writes ehrQL's measures columns (raw counts: the definition
turns disclosure control off so that the two can be compared) to a CSV and prints the wall time.

    python measures_duckdb.py BACKEND_DIR CODELIST_DIR OUT.csv [THREADS]
"""
import sys
import time

import duckdb

backend, codelists, out = sys.argv[1:4]
threads = int(sys.argv[4]) if len(sys.argv) > 4 else 2


def table(name):
    return f"read_parquet('{backend}/{name}.parquet')"


# 24 months from 2022-01-01: interval i is [start, end], a date's interval is its month.
def month(col):
    return f"((year({col}) - 2022) * 12 + month({col}) - 1)"


in_range = "BETWEEN DATE '2022-01-01' AND DATE '2023-12-31'"

sql = f"""
WITH
months AS (SELECT i, (DATE '2022-01-01' + to_months(i::INTEGER))::DATE AS start,
                  (DATE '2022-01-01' + to_months(i::INTEGER + 1) - INTERVAL 1 DAY)::DATE AS stop FROM range(24) t(i)),
vte AS (SELECT CTV3Code AS code FROM read_csv('{codelists}/opensafely-venous-thromboembolic-disease.csv', header=true, all_varchar=true)),
-- practice_registrations.for_patient_on(start): spanning the start, the latest started (ties:
-- end date, NULLs first, then practice).
reg AS (SELECT i, start, patient_id, practice_pseudo_id AS practice FROM (
          SELECT m.i, m.start, r.patient_id, r.practice_pseudo_id,
                 row_number() OVER (PARTITION BY m.i, r.patient_id
                                    ORDER BY r.start_date DESC, r.end_date DESC NULLS LAST, r.practice_pseudo_id DESC NULLS LAST) AS rn
          FROM months m JOIN {table('practice_registrations')} r
            ON r.start_date <= m.start AND (r.end_date >= m.start OR r.end_date IS NULL)) WHERE rn = 1),
ev AS (SELECT DISTINCT patient_id, {month('date')} AS i FROM {table('clinical_events')} WHERE date {in_range}),
vte_ev AS (SELECT DISTINCT patient_id, {month('date')} AS i FROM {table('clinical_events')}
           WHERE date {in_range} AND ctv3_code IN (SELECT code FROM vte)),
med AS (SELECT DISTINCT patient_id, {month('date')} AS i FROM {table('medications')} WHERE date {in_range}),
pts AS (SELECT patient_id, sex, date_of_birth AS dob FROM {table('patients')}),
base AS (
  SELECT r.i, r.practice, p.sex,
    CASE WHEN age < 20 THEN '0-19' WHEN age < 40 THEN '20-39' WHEN age < 60 THEN '40-59'
         WHEN age < 80 THEN '60-79' WHEN age >= 80 THEN '80+' END AS age_band,
    e.patient_id IS NOT NULL AS any_event, v.patient_id IS NOT NULL AS vte_event, m.patient_id IS NOT NULL AS medication
  FROM (SELECT r.*, year(r.start) - year(p.dob) - CASE WHEN month(r.start) < month(p.dob) OR
               (month(r.start) = month(p.dob) AND day(r.start) < day(p.dob)) THEN 1 ELSE 0 END AS age
        FROM reg r LEFT JOIN pts p USING (patient_id)) r
  LEFT JOIN pts p USING (patient_id)
  LEFT JOIN ev e ON e.patient_id = r.patient_id AND e.i = r.i
  LEFT JOIN vte_ev v ON v.patient_id = r.patient_id AND v.i = r.i
  LEFT JOIN med m ON m.patient_id = r.patient_id AND m.i = r.i),
sums AS (SELECT i, sex, age_band, practice, count(*) AS den,
           count(*) FILTER (WHERE any_event) AS any_event, count(*) FILTER (WHERE vte_event) AS vte_event,
           count(*) FILTER (WHERE medication) AS medication
         FROM base GROUP BY ALL)
SELECT measure, m.start AS interval_start, m.stop AS interval_end, num / den AS ratio, num AS numerator, den AS denominator,
       sex, age_band, practice
FROM (UNPIVOT sums ON any_event, vte_event, medication INTO NAME measure VALUE num) s JOIN months m USING (i)
ORDER BY measure, interval_start, sex, age_band, practice
"""

start = time.perf_counter()
con = duckdb.connect()
con.execute(f"SET threads = {threads}")
con.execute(f"COPY ({sql}) TO '{out}' (HEADER)")
print(f"duckdb measures: {time.perf_counter() - start:.2f} s")
