#!/usr/bin/env bash
# The seed study's two definitions on a make-backend backend, on the columnar engine and on a
# local Spark through Spark Connect (scripts/spark-cluster.sh, local[2] on this machine), side
# by side: wall time (median of RUNS), peak memory, and a check that both wrote the same rows.
#
# Usage: benches/spark.sh [N ...]        (default: 1000000 10000000)
# Env:   RUNS (default 3), SEED (default 1), BACKEND_CACHE (default ~/.cache/quarry/backends),
#        SPARK_DRIVER_MEMORY (default 8g: Spark's heap; local mode runs everything in the driver)
#
# Spark's server is started afresh for each N on its own port, so its peak RSS (VmHWM of the
# JVM) is that N's. The client's RSS is quarry's own process.
source "$(dirname "$0")/lib.sh"
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(1000000 10000000)
RUNS=${RUNS:-3}
SEED=${SEED:-1}
CACHE="${BACKEND_CACHE:-$HOME/.cache/quarry/backends}"
VTE="$ROOT/fixtures/projects/vte"
TIME=(/usr/bin/time -f '%e %M' -o "$TMP/time")
export SPARK_DRIVER_MEMORY=${SPARK_DRIVER_MEMORY:-8g} SPARK_PORT=${SPARK_BENCH_PORT:-15012} SPARK_RUN="$TMP/spark-run"
REMOTE="sc://127.0.0.1:$SPARK_PORT"
trap 'scripts/spark-cluster.sh stop >/dev/null 2>&1 || true; rm -rf "$TMP"' EXIT

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GB", $2/1048576}' /proc/meminfo); quarry $(git -C "$ROOT" rev-parse --short HEAD); Spark $(ls -d "${SPARK_VENV:-$HOME/.cache/quarry/spark-venv}"/lib/python3*/site-packages/pyspark 2>/dev/null | head -n 1 | xargs -I{} sh -c 'ls {}/jars/spark-core_*.jar' | sed 's/.*spark-core_[0-9.]*-\(.*\)\.jar/\1/') local[2], driver memory $SPARK_DRIVER_MEMORY"
printf '%-10s %-9s %7s %12s %12s %9s %11s %11s %7s\n' patients dataset rows "columnar s" "columnar MB" "spark s" "client MB" "server MB" ratio
for n in "${SIZES[@]}"; do
    backend="$CACHE/$n-$SEED"
    if [ ! -f "$backend/patients.parquet" ]; then
        "$QUARRY" make-backend --patients "$n" --seed "$SEED" --out "$backend" >/dev/null 2>"$TMP/make.log" || { cat "$TMP/make.log" >&2; exit 1; }
    fi
    scripts/spark-cluster.sh start >/dev/null
    for which in dataset pivoted; do
        def=analysis/dataset_definition_v1.py
        [ $which = pivoted ] && def=analysis/dataset_definition_pivoted.py
        c=() s=() crss=0 srss=0
        for _ in $(seq "$RUNS"); do
            (cd "$VTE" && "${TIME[@]}" "$QUARRY" generate-dataset "$def" --backend "$backend" --output "$TMP/c.csv.gz" 2>"$TMP/c.log") || { cat "$TMP/c.log" >&2; exit 1; }
            read -r wall kb <"$TMP/time"; c+=("$wall"); (( kb > crss )) && crss=$kb
            (cd "$VTE" && "${TIME[@]}" "$QUARRY" generate-dataset "$def" --backend "$backend" --engine spark --spark-remote "$REMOTE" --output "$TMP/s.csv.gz" 2>"$TMP/s.log") || { cat "$TMP/s.log" >&2; exit 1; }
            read -r wall kb <"$TMP/time"; s+=("$wall"); (( kb > srss )) && srss=$kb
        done
        if ! cmp -s <(gzip -dc "$TMP/c.csv.gz") <(gzip -dc "$TMP/s.csv.gz"); then
            keep="$HOME/.cache/quarry/bench-differences/$n-$which"
            mkdir -p "$keep" && cp "$TMP/c.csv.gz" "$keep/columnar.csv.gz" && cp "$TMP/s.csv.gz" "$keep/spark.csv.gz"
            echo "$n $which: Spark's rows differ from the columnar engine's (both kept in $keep)" >&2
            exit 1
        fi
        rows=$(( $(gzip -dc "$TMP/c.csv.gz" | wc -l) - 1 ))
        cm=$(median "${c[@]}"); sm=$(median "${s[@]}")
        server=$(awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$(cat "$SPARK_RUN"/pid/*.pid)/status")
        printf '%-10s %-9s %7s %12s %12.0f %9s %11.0f %11s %7.2f\n' "$n" "$which" "$rows" "$cm" "$((crss / 1024))" "$sm" "$((srss / 1024))" "$server" "$(echo "$sm / $cm" | bc -l)"
    done
    scripts/spark-cluster.sh stop >/dev/null 2>&1
done
