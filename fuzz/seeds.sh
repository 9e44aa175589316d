#!/usr/bin/env bash
# Seed corpora for the fuzz targets, from the project's fixtures (fuzz/corpus/<target>/).
# Run from anywhere; needs a built quarry for the Parquet seeds (QUARRY, default: cargo run).
set -euo pipefail
cd "$(dirname "$0")"
root=..
quarry=${QUARRY:-}
if [ -z "$quarry" ]; then
    (cd "$root" && cargo build --quiet)
    quarry="${CARGO_TARGET_DIR:-$root/target}/debug/quarry"
fi
mkdir -p corpus/dummy_table_csv corpus/project_yaml corpus/recipe corpus/parquet_backend corpus/definition

# dummy_table_csv: the first byte picks the table (even: patients, odd: clinical_events;
# +2: gzip), the rest is the file.
n=0
for f in "$root"/fixtures/projects/vte/example-data/*.csv "$root"/fixtures/projects/vte/vte-tables/*.csv \
         $(find "$root"/../shared/conformance/cases -path '*/tables/*.csv' 2>/dev/null | head -200); do
    [ -f "$f" ] || continue
    case "$(basename "$f")" in
        patients.csv) b='\x00' ;;
        *) b='\x01' ;;
    esac
    { printf "$b"; cat "$f"; } > "corpus/dummy_table_csv/seed-$n"
    n=$((n + 1))
done

# project_yaml: every project.yaml among the fixtures and the shared material.
n=0
for f in $(find "$root"/fixtures "$root"/../shared -name project.yaml 2>/dev/null); do
    cp "$f" "corpus/project_yaml/seed-$n"
    n=$((n + 1))
done

# recipe: the fixtures' recipes (their inputs are replaced by the target's own dataset).
n=0
for f in $(find "$root"/fixtures -path '*analysis/*.yaml'); do
    cp "$f" "corpus/recipe/seed-$n"
    n=$((n + 1))
done

# definition: the fixtures' definitions and the conformance suite's.
n=0
for f in $(find "$root"/fixtures -name '*.py' -not -path '*/support/*') \
         $(find "$root"/../shared/conformance/cases -name definition.py 2>/dev/null | head -300); do
    cp "$f" "corpus/definition/seed-$n"
    n=$((n + 1))
done

# parquet_backend: patients tables as quarry writes them (make-backend and a dataset).
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$quarry" make-backend --patients 50 --out "$tmp/backend" >/dev/null 2>&1
cp "$tmp/backend/patients.parquet" corpus/parquet_backend/seed-make-backend
printf 'patient_id,date_of_birth,sex\n1,1980-01-01,female\n2,1990-06-01,male\n' > "$tmp/rows.csv"
cat > "$tmp/d.py" <<'PY'
from ehrql import create_dataset
from ehrql.tables.core import patients
dataset = create_dataset()
dataset.define_population(patients.exists_for_patient())
dataset.date_of_birth = patients.date_of_birth
dataset.sex = patients.sex
PY
(cd "$tmp" && "$quarry" generate-dataset d.py --dummy-data-file rows.csv --output patients.parquet >/dev/null 2>&1)
cp "$tmp/patients.parquet" corpus/parquet_backend/seed-dataset
ls corpus | while read -r t; do echo "$t: $(ls "corpus/$t" | wc -l) seeds"; done
