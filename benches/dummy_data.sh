#!/usr/bin/env bash
# Dummy-data generation at scale (issue 6): the seed study's dataset definition at 1,000,
# 100,000 and 1,000,000 patients, three runs each, median wall time, rows per second and
# peak RSS (GNU time). With --all-cases it also generates 100,000 patients for every dataset
# definition in the conformance suite that ehrQL accepts and checks the row count (the tests
# do 10 and 1,000 on every case, and 100,000 on the seed definitions).
#
#   benches/dummy_data.sh [--all-cases]
#
# Results go to docs/performance.md by hand, with this command.
source "$(dirname "$0")/lib.sh"

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GB", $2/1048576}' /proc/meminfo); quarry $(git rev-parse --short HEAD)"
printf '%-40s %10s %10s %14s %12s\n' definition patients "median s" "rows/s" "peak RSS MB"
for def in analysis/dataset_definition.py analysis/dataset_definition_pivoted.py; do
    for n in 1000 100000 1000000; do
        walls=()
        rss=0
        for _ in 1 2 3; do
            (cd fixtures/projects/vte && /usr/bin/time -f '%e %M' -o "$TMP/time" \
                "$QUARRY" generate-dataset "$def" --population-size "$n" --output "$TMP/out.csv.gz" 2>/dev/null)
            read -r wall kb <"$TMP/time"
            walls+=("$wall")
            (( kb > rss )) && rss=$kb
            rows=$(( $(gzip -dc "$TMP/out.csv.gz" | wc -l) - 1 ))
            [ "$rows" = "$n" ] || { echo "$def at $n: $rows rows" >&2; exit 1; }
        done
        median=$(printf '%s\n' "${walls[@]}" | sort -g | sed -n 2p)
        printf '%-40s %10d %10.2f %14.0f %12.1f\n' "$def" "$n" "$median" "$(echo "$n / $median" | bc -l)" "$(echo "$rss / 1024" | bc -l)"
    done
done

if [ "${1:-}" = --all-cases ]; then
    SUITE=${QUARRY_CONFORMANCE:-../shared/conformance}
    bad=0 total=0
    while IFS=$'\t' read -r id _ features kind code; do
        [ "$code" = 0 ] || continue
        [ "$kind" = dataset ] || [ "$kind" = multi-table ] || continue
        [[ "$features" == *generate-measures* ]] && continue
        dir="$SUITE/cases/$id"
        args=()
        if [ -f "$dir/args" ]; then
            args=(--)
            while IFS= read -r l || [ -n "$l" ]; do l=${l%$'\r'}; [ -n "$l" ] && args+=("$l"); done <"$dir/args"
        fi
        if [ "$kind" = multi-table ]; then out="$TMP/multi:csv"; file="$TMP/multi/dataset.csv"; else out="$TMP/out.csv"; file=$out; fi
        (cd "$dir" && "$QUARRY" generate-dataset definition.py --population-size 100000 --output "$out" "${args[@]}" 2>/dev/null) || true
        rows=$(( $(wc -l <"$file" 2>/dev/null || echo 0) - 1 ))
        total=$((total + 1))
        if [ "$rows" != 100000 ] && ! grep -q table_from_file "$dir/definition.py"; then
            echo "FAIL $id: $rows rows"; bad=$((bad + 1))
        fi
        rm -rf "$TMP/out.csv" "$TMP/multi"
    done < <(tail -n +2 "$SUITE/MANIFEST.tsv")
    echo "all cases at 100,000: $((total - bad)) of $total gave exactly 100,000 rows (table_from_file populations excepted)"
    [ "$bad" = 0 ]
fi
