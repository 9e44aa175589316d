#!/usr/bin/env bash
# Large-backend throughput (issue 8): for each N, a TPP-shaped backend made by
# `quarry make-backend` (cached by N and seed under $HOME/.cache/quarry/backends), then the seed
# study's two datasets — dataset_definition_v1.py and dataset_definition_pivoted.py — and, as
# the unfavourable case where no filter can be pushed into the scan,
# benches/definitions/whole_table.py ("whole"), with `quarry generate-dataset --backend` and as
# hand-written SQL in DuckDB (benches/peers/seed_duckdb.py) over the same Parquet files, both to .csv.gz; the outputs are
# checked to agree (rows and values, after normalising booleans and numbers); then the seed's
# initial_analysis recipe on quarry's dataset. Median wall time of RUNS runs, peak RSS (GNU
# time), rows and events per second, and the quarry/DuckDB ratio.
#
#   benches/backend.sh [N ...]          default: 100000 1000000
#   RUNS=3 SEED=1 PEER_PYTHON=python3 QUARRY=path/to/quarry BACKEND_CACHE=DIR benches/backend.sh 10000000
#   DATASETS="dataset pivoted" benches/backend.sh 1000000   (default: dataset pivoted whole)
#
# DuckDB is installed from PyPI into $HOME/.cache/quarry/bench-venv if PEER_PYTHON lacks it.
# Results go to docs/performance.md by hand, with this command.
set -euo pipefail
source "$(dirname "$0")/duckdb_peer.sh"

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GB", $2/1048576}' /proc/meminfo); quarry $(git -C "$ROOT" rev-parse --short HEAD); duckdb $("$PY" -c 'import duckdb; print(duckdb.__version__)')"
printf '%-10s %-9s %7s %10s %10s %11s %10s %10s %8s %12s\n' patients dataset rows "quarry s" "quarry MB" "events/s" "duckdb s" "duckdb MB" ratio "analysis s"
for n in "${SIZES[@]}"; do
    backend="$CACHE/$n-$SEED"
    if [ ! -f "$backend/patients.parquet" ]; then
        "$QUARRY" make-backend --patients "$n" --seed "$SEED" --out "$backend" >/dev/null 2>"$TMP/make.log" || { cat "$TMP/make.log" >&2; exit 1; }
    fi
    events=$("$PY" -c "import duckdb; print(duckdb.sql(\"select count(*) from read_parquet('$backend/clinical_events.parquet')\").fetchall()[0][0])")
    for which in ${DATASETS:-dataset pivoted whole}; do
        def=analysis/dataset_definition_v1.py
        [ $which = pivoted ] && def=analysis/dataset_definition_pivoted.py
        [ $which = whole ] && def="$ROOT/benches/definitions/whole_table.py"
        q=() d=() qrss=0 drss=0
        for _ in $(seq "$RUNS"); do
            (cd "$VTE" && "${TIME[@]}" "$QUARRY" generate-dataset "$def" --backend "$backend" --output "$TMP/q.csv.gz" 2>"$TMP/q.log") || { cat "$TMP/q.log" >&2; exit 1; }
            read -r wall kb <"$TMP/time"; q+=("$wall"); (( kb > qrss )) && qrss=$kb
            "${TIME[@]}" "$PY" "$ROOT/benches/peers/seed_duckdb.py" "$backend" "$VTE/codelists" "$which" "$TMP/d.csv.gz" "$(nproc)" >/dev/null
            read -r wall kb <"$TMP/time"; d+=("$wall"); (( kb > drss )) && drss=$kb
        done
        # Same rows and values (DuckDB writes true/false, drops trailing .0s, quotes nothing).
        "$PY" - "$TMP/q.csv.gz" "$TMP/d.csv.gz" <<'PY'
import csv, gzip, sys
def rows(path):
    with gzip.open(path, "rt", newline="") as f:
        r = list(csv.reader(f))
    def norm(v):
        v = {"true": "T", "false": "F"}.get(v, v)
        try:
            return repr(float(v)) if v not in ("T", "F") and "-" not in v[1:] else v
        except ValueError:
            return v
    return r[0], sorted(tuple(norm(v) for v in row) for row in r[1:])
(qh, qr), (dh, dr) = rows(sys.argv[1]), rows(sys.argv[2])
assert qh == dh, f"headers differ:\n{qh}\n{dh}"
assert len(qr) == len(dr), f"{len(qr)} rows from quarry, {len(dr)} from duckdb"
diff = [(a, b) for a, b in zip(qr, dr) if a != b]
assert not diff, f"{len(diff)} rows differ, e.g.\n{diff[0][0]}\n{diff[0][1]}"
PY
        rows=$(( $(gzip -dc "$TMP/q.csv.gz" | wc -l) - 1 ))
        qm=$(median "${q[@]}"); dm=$(median "${d[@]}")
        analysis=-
        if [ $which = dataset ]; then
            work="$TMP/project"; rm -rf "$work"; mkdir -p "$work/output"; cp -r "$VTE/analysis" "$work/"
            cp "$TMP/q.csv.gz" "$work/output/dataset.csv.gz"
            (cd "$work" && "${TIME[@]}" "$QUARRY" exec analysis:v1 analysis/initial_analysis.yaml >/dev/null 2>&1)
            read -r analysis _ <"$TMP/time"
        fi
        printf '%-10s %-9s %7d %10.2f %10.0f %11.0f %10.2f %10.0f %8.2f %12s\n' "$n" "$which" "$rows" "$qm" "$(echo "$qrss/1024" | bc -l)" \
            "$(echo "$events / $qm" | bc -l)" "$dm" "$(echo "$drss/1024" | bc -l)" "$(echo "$qm / $dm" | bc -l)" "$analysis"
    done
done
