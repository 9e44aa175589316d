#!/usr/bin/env bash
# The seed study's job request on a large backend (issue 8): generate_dataset (with --backend)
# and initial_analysis through `quarry run`, timed end to end, against the 18 min 09 s the real
# job request took on TPP. The backend is the one benches/backend.sh caches.
#
#   benches/job_request.sh [N]          default 10000000
#
# Results go to docs/performance.md by hand, with this command.
source "$(dirname "$0")/lib.sh"
N=${1:-10000000}
SEED=${SEED:-1}
backend="${BACKEND_CACHE:-$HOME/.cache/quarry/backends}/$N-$SEED"
[ -f "$backend/patients.parquet" ] || "$QUARRY" make-backend --patients "$N" --seed "$SEED" --out "$backend" >/dev/null
project="$TMP/vte"
cp -r "$ROOT/fixtures/projects/vte" "$project"
sed -i "s|generate-dataset analysis/dataset_definition.py --output|generate-dataset analysis/dataset_definition.py --backend $backend --output|" "$project/project.yaml"
grep -q -- "--backend" "$project/project.yaml" || { echo "could not point generate_dataset at the backend" >&2; exit 1; }
/usr/bin/time -f '%e %M' -o "$TMP/time" "$QUARRY" run initial_analysis --project-dir "$project" >"$TMP/run.log" 2>&1 || { cat "$TMP/run.log" >&2; exit 1; }
read -r wall kb <"$TMP/time"
rows=$(( $(gzip -dc "$project/output/dataset.csv.gz" | wc -l) - 1 ))
echo "machine: $(nproc) cores; quarry $(git -C "$ROOT" rev-parse --short HEAD)"
printf 'job request (generate_dataset + initial_analysis) at %d patients: %.1f s wall, peak RSS %.0f MB, %d dataset rows (the real job: 18 min 09 s)\n' \
    "$N" "$wall" "$(echo "$kb/1024" | bc -l)" "$rows"
