#!/usr/bin/env bash
# Loading definitions (issue 19): `serialize-definition` (start the embedded Python, run the
# definition, build the query model) on an empty file, the seed study's definitions, a
# 500-variable dataset and a 5,000-code contains_any_of; median wall time of RUNS runs (21).
# With EHRQL set to a command that runs real ehrQL (e.g. a script running `python -m ehrql`),
# its `serialize-definition` of the same current-ehrQL definitions is timed beside quarry's.
#
#   benches/definition_load.sh            EHRQL=/path/to/ehrql benches/definition_load.sh
#
# Results go to docs/performance.md by hand, with this command.
source "$(dirname "$0")/lib.sh"
RUNS=${RUNS:-21}
cp -r "$ROOT/fixtures/projects/vte/." "$TMP/"
python3 - "$TMP" <<'PY'
import sys, pathlib
d = pathlib.Path(sys.argv[1])
(d / "empty.py").write_text("")
codes = [f"{chr(65 + i // 1000)}{i % 1000:03d}" for i in range(5000)]
(d / "codes.csv").write_text("code\n" + "\n".join(codes) + "\n")
(d / "contains.py").write_text('''from ehrql import create_dataset, codelist_from_csv
from ehrql.tables.tpp import patients, apcs
codes = codelist_from_csv("codes.csv", column="code")
dataset = create_dataset()
dataset.define_population(patients.exists_for_patient())
dataset.has_code = apcs.where(apcs.all_diagnoses.contains_any_of(codes)).exists_for_patient()
''')
lines = ["from ehrql import create_dataset", "from ehrql.tables.core import patients, clinical_events",
         "dataset = create_dataset()", "dataset.define_population(patients.exists_for_patient())"]
for i in range(500):
    lines.append(f"dataset.v{i} = clinical_events.where(clinical_events.numeric_value > {i}).count_for_patient()")
(d / "wide.py").write_text("\n".join(lines) + "\n")
PY
cd "$TMP"
seconds() { # seconds COMMAND...: median wall time of RUNS runs, or "error" if it fails
    local walls=()
    for _ in $(seq "$RUNS"); do
        local t0 t1
        t0=$(date +%s.%N)
        "$@" >/dev/null 2>&1 || { echo error; return; }
        t1=$(date +%s.%N)
        walls+=("$(echo "$t1 - $t0" | bc -l)")
    done
    printf '%.3f' "$(median "${walls[@]}")"
}
echo "machine: $(nproc) cores; quarry $(cd "$ROOT" && git rev-parse --short HEAD); $RUNS runs, median"
printf '%-42s %12s %12s %8s\n' definition "quarry s" "ehrQL s" ratio
for def in empty.py analysis/dataset_definition.py analysis/dataset_definition_v1.py analysis/dataset_definition_pivoted.py wide.py contains.py; do
    q=$(seconds "$QUARRY" serialize-definition "$def")
    [ "$q" != error ] || { echo "quarry failed on $def" >&2; exit 1; }
    e=- r=-
    # ehrQL 1.x has no pre-1.0 `beta` modules, which some of the seed definitions use.
    if [ -n "${EHRQL:-}" ] && ! grep -q "ehrql.tables.beta" "$def"; then
        e=$(seconds "$EHRQL" serialize-definition "$def")
        [ "$e" = error ] || r=$(printf '%.2f' "$(echo "$q / $e" | bc -l)")
    fi
    printf '%-42s %12s %12s %8s\n' "$def" "$q" "$e" "$r"
done
