#!/usr/bin/env bash
# Definitions at the sizes real studies reach (issue 4): a 500-variable dataset and a 5,000-code
# contains_any_of (the same files tests/big_definitions.rs checks), three runs each: median wall
# time and peak RSS (GNU time) of serialize-definition (interpreting and building the query
# model) and of generate-dataset on 1,000 generated patients.
#
#   benches/big_definitions.sh
#
# Results go to docs/performance.md by hand, with this command.
source "$(dirname "$0")/lib.sh"
python3 - "$TMP" <<'PY'
import sys, pathlib
d = pathlib.Path(sys.argv[1])
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
    e = [f"clinical_events.where(clinical_events.numeric_value > {i}).count_for_patient()",
         f'clinical_events.where(clinical_events.date.is_after("{2000 + i % 24}-01-01")).exists_for_patient()',
         f"clinical_events.sort_by(clinical_events.date).first_for_patient().numeric_value + {i}",
         f'patients.age_on("{2000 + i % 24}-06-01") > {i % 90}',
         f"clinical_events.where(clinical_events.numeric_value < {i}).numeric_value.mean_for_patient()"][i % 5]
    lines.append(f"dataset.v{i} = {e}")
(d / "wide.py").write_text("\n".join(lines) + "\n")
PY
cd "$TMP"
echo "machine: $(nproc) cores; quarry $(cd - >/dev/null && git rev-parse --short HEAD)"
printf '%-40s %10s %12s\n' run "median s" "peak RSS MB"
for def in wide.py contains.py; do
    for what in serialize generate; do
        walls=() rss=0
        for _ in 1 2 3; do
            if [ $what = serialize ]; then cmd=("$QUARRY" serialize-definition "$def" --output out.json)
            else cmd=("$QUARRY" generate-dataset "$def" --population-size 1000 --output out.csv); fi
            /usr/bin/time -f '%e %M' -o time "${cmd[@]}" 2>/dev/null
            read -r wall kb <time; walls+=("$wall"); (( kb > rss )) && rss=$kb
        done
        printf '%-40s %10.2f %12.1f\n' "$def $what" "$(printf '%s\n' "${walls[@]}" | sort -g | sed -n 2p)" "$(echo "$rss/1024" | bc -l)"
    done
done
