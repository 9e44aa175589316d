"""The seed study's two datasets (and benches/definitions/whole_table.py, `whole`) as
hand-written DuckDB SQL over a `make-backend` backend: the peer of `benches/backend.sh`. Writes
the same columns as quarry (T/F booleans, ISO dates) to a .csv.gz and prints the wall time.

    python seed_duckdb.py BACKEND_DIR CODELIST_DIR dataset|pivoted|whole OUT.csv.gz [THREADS]
"""
import sys
import time

import duckdb

backend, codelists, which, out = sys.argv[1:5]
threads = int(sys.argv[5]) if len(sys.argv) > 5 else 2


def age(at, dob):
    # ehrQL's DateDifferenceInYears: whole years, one fewer before the birthday.
    return (f"(year({at}) - year({dob}) - CASE WHEN month({at}) < month({dob}) OR "
            f"(month({at}) = month({dob}) AND day({at}) < day({dob})) THEN 1 ELSE 0 END)")


def table(name):
    return f"read_parquet('{backend}/{name}.parquet')"


admissions = "apcs" if which == "dataset" else "hospital_admissions"
diagnosis = "primary_diagnosis" if which == "dataset" else "primary_diagnoses"

sql = f"""
WITH
ctv3 AS (SELECT CTV3Code AS code FROM read_csv('{codelists}/opensafely-venous-thromboembolic-disease.csv', header=true, all_varchar=true)),
icd AS (SELECT ICD_code AS code FROM read_csv('{codelists}/opensafely-venous-thromboembolic-disease-hospital.csv', header=true, all_varchar=true)),
icd_mb AS (SELECT code FROM read_csv('{codelists}/user-matthewberesford92-venous-thromboembolism.csv', header=true, all_varchar=true)),
prim AS (SELECT patient_id, date, ctv3_code FROM {table('clinical_events')}
         WHERE ctv3_code IN (SELECT code FROM ctv3) AND date BETWEEN DATE '2018-01-01' AND DATE '2022-12-31'),
adm AS (SELECT patient_id, admission_date, {diagnosis} AS diagnosis FROM {table(admissions)} WHERE admission_date >= DATE '2018-01-01'),
sec AS (SELECT patient_id, min(admission_date) AS first, count(*) AS n FROM adm WHERE diagnosis IN (SELECT code FROM icd) GROUP BY 1),
sec_mb AS (SELECT patient_id, min(admission_date) AS first, count(*) AS n FROM adm WHERE diagnosis IN (SELECT code FROM icd_mb) GROUP BY 1),
prim_n AS (SELECT patient_id, count(*) AS n FROM prim GROUP BY 1),
last_prim AS (SELECT patient_id, date, ctv3_code FROM
              (SELECT *, row_number() OVER (PARTITION BY patient_id ORDER BY date DESC NULLS LAST, ctv3_code DESC NULLS LAST) AS rn FROM prim) WHERE rn = 1),
pop AS (SELECT patient_id FROM prim UNION SELECT patient_id FROM sec UNION SELECT patient_id FROM sec_mb),
deaths AS (SELECT patient_id, date FROM {table('ons_deaths')}),
pts AS (SELECT patient_id, date_of_birth, sex FROM {table('patients')}),
bmi AS (SELECT patient_id, numeric_value FROM
        (SELECT *, row_number() OVER (PARTITION BY patient_id ORDER BY date DESC NULLS LAST, numeric_value DESC NULLS LAST) AS rn
         FROM {table('clinical_events')} WHERE ctv3_code = '22K..') WHERE rn = 1),
pivoted AS (SELECT patient_id,
          {", ".join(f"max(CASE WHEN k = {k} THEN date END) AS vte_primary_events_{k}_date, max(CASE WHEN k = {k} THEN code END) AS vte_primary_events_{k}_code" for k in range(1, 6))}
          FROM (SELECT patient_id, date, code, row_number() OVER (PARTITION BY patient_id ORDER BY date) AS k
                FROM (SELECT patient_id, date, min(ctv3_code) AS code FROM prim GROUP BY 1, 2))
          WHERE k <= 5 GROUP BY 1)
SELECT p.patient_id,
  lp.date AS date_of_last_vte_primary_diagnosis,
  lp.ctv3_code AS code_of_last_vte_primary_diagnosis,
  coalesce(pn.n, 0) AS vte_count_primary_diagnoses,
  CASE WHEN d.patient_id IS NULL THEN 'F' ELSE 'T' END AS has_died,
  d.date AS date_of_death,
  {age('d.date', 'pt.date_of_birth')} AS age_at_death,
  {age('lp.date', 'pt.date_of_birth')} AS age_at_last_vte,
  pt.sex,
  s.first AS first_vte_hospitalisation_date,
  coalesce(s.n, 0) AS vte_count_secondary_admissions,
  smb.first AS first_vte_hospitalisation_date_mb,
  coalesce(smb.n, 0) AS vte_count_secondary_admissions_mb,
  b.numeric_value AS bmi
  {"" if which == "dataset" else ", " + ", ".join(f"pv.vte_primary_events_{k}_date, pv.vte_primary_events_{k}_code" for k in range(1, 6))}
FROM pop p
LEFT JOIN last_prim lp USING (patient_id) LEFT JOIN prim_n pn USING (patient_id)
LEFT JOIN deaths d USING (patient_id) LEFT JOIN pts pt USING (patient_id)
LEFT JOIN sec s USING (patient_id) LEFT JOIN sec_mb smb USING (patient_id)
LEFT JOIN bmi b USING (patient_id) LEFT JOIN pivoted pv USING (patient_id)
ORDER BY p.patient_id
"""

if which == "whole":
    sql = f"""
SELECT p.patient_id, count(e.patient_id) AS events, max(e.date) AS last_event_date, p.sex
FROM {table('patients')} p LEFT JOIN {table('clinical_events')} e USING (patient_id)
GROUP BY p.patient_id, p.sex ORDER BY p.patient_id
"""

start = time.perf_counter()
con = duckdb.connect()
con.execute(f"SET threads = {threads}")
con.execute(f"COPY ({sql}) TO '{out}' (HEADER, COMPRESSION gzip)")
print(f"duckdb {which}: {time.perf_counter() - start:.2f} s")
