#!/usr/bin/env bash
# Measures at scale (issue 22): for each N, a TPP-shaped backend made by `quarry make-backend`
# (cached by N and seed, as benches/backend.sh does), then benches/definitions/measures.py —
# three measures over 24 monthly intervals grouped by sex, age band and practice — with
# `quarry generate-measures --backend` and as hand-written SQL in DuckDB
# (benches/peers/measures_duckdb.py) over the same Parquet files. The outputs are checked to
# hold the same rows (numbers compared as numbers) before anything is reported. Median wall
# time of RUNS runs, peak RSS (GNU time), and the quarry/DuckDB ratio.
#
#   benches/measures.sh [N ...]          default: 100000 1000000
#   RUNS=3 SEED=1 PEER_PYTHON=python3 QUARRY=path/to/quarry BACKEND_CACHE=DIR benches/measures.sh 1000000
#
# DuckDB is installed from PyPI into $HOME/.cache/quarry/bench-venv if PEER_PYTHON lacks it.
# Results go to docs/performance.md by hand, with this command.
set -euo pipefail
source "$(dirname "$0")/duckdb_peer.sh"
DEF="$ROOT/benches/definitions/measures.py"

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GB", $2/1048576}' /proc/meminfo); quarry $(git -C "$ROOT" rev-parse --short HEAD); duckdb $("$PY" -c 'import duckdb; print(duckdb.__version__)')"
printf '%-10s %-9s %7s %10s %10s %10s %10s %8s\n' patients measures rows "quarry s" "quarry MB" "duckdb s" "duckdb MB" ratio
for n in "${SIZES[@]}"; do
    backend="$CACHE/$n-$SEED"
    if [ ! -f "$backend/patients.parquet" ]; then
        "$QUARRY" make-backend --patients "$n" --seed "$SEED" --out "$backend" >/dev/null 2>"$TMP/make.log" || { cat "$TMP/make.log" >&2; exit 1; }
    fi
    q=() d=() qrss=0 drss=0
    for _ in $(seq "$RUNS"); do
        (cd "$VTE" && "${TIME[@]}" "$QUARRY" generate-measures "$DEF" --backend "$backend" --output "$TMP/q.csv" 2>"$TMP/q.log") || { cat "$TMP/q.log" >&2; exit 1; }
        read -r wall kb <"$TMP/time"; q+=("$wall"); (( kb > qrss )) && qrss=$kb
        "${TIME[@]}" "$PY" "$ROOT/benches/peers/measures_duckdb.py" "$backend" "$VTE/codelists" "$TMP/d.csv" "$(nproc)" >/dev/null
        read -r wall kb <"$TMP/time"; d+=("$wall"); (( kb > drss )) && drss=$kb
    done
    # Same rows: DuckDB writes true/false and its own float digits; numbers compare as numbers.
    "$PY" - "$TMP/q.csv" "$TMP/d.csv" <<'PY'
import csv, sys
def rows(path):
    with open(path, newline="") as f:
        r = list(csv.reader(f))
    def norm(i, v):
        if i == 3 and v:
            return round(float(v), 12)
        if i in (4, 5, 8) and v:
            return int(float(v))
        return v
    return r[0], sorted(tuple(norm(i, v) for i, v in enumerate(row)) for row in r[1:])
(qh, qr), (dh, dr) = rows(sys.argv[1]), rows(sys.argv[2])
assert qh == dh, f"headers differ:\n{qh}\n{dh}"
assert len(qr) == len(dr), f"{len(qr)} rows from quarry, {len(dr)} from duckdb"
diff = [(a, b) for a, b in zip(qr, dr) if a != b]
assert not diff, f"{len(diff)} rows differ, e.g.\n{diff[0][0]}\n{diff[0][1]}"
PY
    rows=$(( $(wc -l <"$TMP/q.csv") - 1 ))
    qm=$(median "${q[@]}"); dm=$(median "${d[@]}")
    printf '%-10s %-9s %7d %10.2f %10.0f %10.2f %10.0f %8.2f\n' "$n" "3x24" "$rows" "$qm" "$(echo "$qrss/1024" | bc -l)" \
        "$dm" "$(echo "$drss/1024" | bc -l)" "$(echo "$qm / $dm" | bc -l)"
done
